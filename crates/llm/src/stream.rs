//! What a streamed answer's events mean for its outcome: per endpoint, which event
//! ends the stream ([`StreamEventClass::Terminal`]), which reports an error
//! ([`StreamEventClass::Error`]), and [`StreamOutcome`], which turns the events seen
//! into the recorded [`LlmOutcome`].
//!
//! - OpenAI chat completions: `data: [DONE]` is terminal; a data JSON with a top-level
//!   `error` is an error.
//! - OpenAI responses: `response.completed` and `response.incomplete` are terminal;
//!   `response.failed` and `error` are errors.
//! - Anthropic messages: `message_stop` is terminal; `error` is an error.
//!
//! An event's name is its `event:` field, else its data's JSON `type`.

use amai_proto::v1::LlmOutcome;

use crate::endpoint::Endpoint;
use crate::sse::SseEvent;

/// What one stream event means for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEventClass {
    /// The stream's normal end.
    Terminal,
    /// The upstream reported an error.
    Error,
    /// Anything else.
    Other,
}

/// The class of an event in a stream from `endpoint` (endpoints that do not stream
/// classify everything as [`StreamEventClass::Other`]).
pub fn classify(endpoint: Endpoint, event: &SseEvent) -> StreamEventClass {
    match endpoint {
        Endpoint::ChatCompletions => {
            if event.data.trim() == "[DONE]" {
                StreamEventClass::Terminal
            } else if event.json().is_some_and(|data| data.get("error").is_some()) {
                StreamEventClass::Error
            } else {
                StreamEventClass::Other
            }
        }
        Endpoint::Responses => match event.name().as_deref() {
            Some("response.completed" | "response.incomplete") => StreamEventClass::Terminal,
            Some("response.failed" | "error") => StreamEventClass::Error,
            _ => StreamEventClass::Other,
        },
        Endpoint::Messages => match event.name().as_deref() {
            Some("message_stop") => StreamEventClass::Terminal,
            Some("error") => StreamEventClass::Error,
            _ => StreamEventClass::Other,
        },
        Endpoint::Embeddings | Endpoint::Models | Endpoint::CountTokens => StreamEventClass::Other,
    }
}

/// Follows a stream's events to its outcome.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    endpoint: Endpoint,
    terminal_seen: bool,
    error_seen: bool,
}

impl StreamOutcome {
    /// Nothing seen yet.
    pub fn new(endpoint: Endpoint) -> StreamOutcome {
        StreamOutcome {
            endpoint,
            terminal_seen: false,
            error_seen: false,
        }
    }

    /// Notes one event; returns its class.
    pub fn observe(&mut self, event: &SseEvent) -> StreamEventClass {
        let class = classify(self.endpoint, event);
        match class {
            StreamEventClass::Terminal => self.terminal_seen = true,
            StreamEventClass::Error => self.error_seen = true,
            StreamEventClass::Other => {}
        }
        class
    }

    /// Whether a terminal event was seen.
    pub fn terminal_seen(&self) -> bool {
        self.terminal_seen
    }

    /// Whether an error event was seen.
    pub fn error_seen(&self) -> bool {
        self.error_seen
    }

    /// The outcome so far: `UPSTREAM_ERROR` if an error event was seen (even if a
    /// terminal event followed it), else `COMPLETED` if a terminal event was seen,
    /// else `TRUNCATED`.
    pub fn outcome(&self) -> LlmOutcome {
        if self.error_seen {
            LlmOutcome::UpstreamError
        } else if self.terminal_seen {
            LlmOutcome::Completed
        } else {
            LlmOutcome::Truncated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(endpoint: Endpoint, raw: &str) -> StreamEventClass {
        classify(endpoint, &SseEvent::parse(raw.as_bytes()))
    }

    #[test]
    fn chat_completions() {
        let chat = Endpoint::ChatCompletions;
        assert_eq!(class(chat, "data: [DONE]\n\n"), StreamEventClass::Terminal);
        assert_eq!(
            class(chat, "data: {\"error\":{\"message\":\"overloaded\"}}\n\n"),
            StreamEventClass::Error
        );
        assert_eq!(
            class(
                chat,
                "data: {\"choices\":[{\"delta\":{\"content\":\"[DONE]\"}}]}\n\n"
            ),
            StreamEventClass::Other
        );
        assert_eq!(class(chat, ": ping\n\n"), StreamEventClass::Other);
    }

    #[test]
    fn responses() {
        let responses = Endpoint::Responses;
        for (raw, expected) in [
            (
                "event: response.completed\ndata: {}\n\n",
                StreamEventClass::Terminal,
            ),
            (
                "event: response.incomplete\ndata: {}\n\n",
                StreamEventClass::Terminal,
            ),
            (
                "event: response.failed\ndata: {}\n\n",
                StreamEventClass::Error,
            ),
            ("event: error\ndata: {}\n\n", StreamEventClass::Error),
            (
                "data: {\"type\":\"response.completed\"}\n\n",
                StreamEventClass::Terminal,
            ),
            (
                "event: response.output_text.delta\ndata: {}\n\n",
                StreamEventClass::Other,
            ),
        ] {
            assert_eq!(class(responses, raw), expected, "{raw}");
        }
    }

    #[test]
    fn anthropic_messages() {
        let messages = Endpoint::Messages;
        assert_eq!(
            class(
                messages,
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
            ),
            StreamEventClass::Terminal
        );
        assert_eq!(
            class(messages, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n"),
            StreamEventClass::Error
        );
        assert_eq!(
            class(messages, "event: ping\ndata: {}\n\n"),
            StreamEventClass::Other
        );
        assert_eq!(
            class(Endpoint::Embeddings, "data: [DONE]\n\n"),
            StreamEventClass::Other
        );
    }

    #[test]
    fn outcomes() {
        let events = |raws: &[&str]| {
            let mut outcome = StreamOutcome::new(Endpoint::Messages);
            for raw in raws {
                outcome.observe(&SseEvent::parse(raw.as_bytes()));
            }
            outcome.outcome()
        };
        assert_eq!(events(&[]), LlmOutcome::Truncated);
        assert_eq!(
            events(&["event: message_start\ndata: {}\n\n"]),
            LlmOutcome::Truncated
        );
        assert_eq!(
            events(&[
                "event: message_start\ndata: {}\n\n",
                "event: message_stop\ndata: {}\n\n"
            ]),
            LlmOutcome::Completed
        );
        assert_eq!(
            events(&["event: error\ndata: {}\n\n"]),
            LlmOutcome::UpstreamError
        );
        assert_eq!(
            events(&[
                "event: error\ndata: {}\n\n",
                "event: message_stop\ndata: {}\n\n"
            ]),
            LlmOutcome::UpstreamError
        );
    }
}
