//! Token usage and the model that answered: [`extract`] for a whole JSON answer,
//! [`UsageFromStream`] for a stream, fed its events one by one.
//!
//! | endpoint | answer | stream |
//! | --- | --- | --- |
//! | chat completions | `usage.prompt_tokens` / `completion_tokens`, `model` | the last chunk with a `usage` object; the last `model` |
//! | responses | `usage.input_tokens` / `output_tokens`, `model` | `response.completed` (also `.incomplete`, `.failed`): `response.usage`, `response.model` |
//! | embeddings | `usage.prompt_tokens`, `model` | — |
//! | messages | `usage.input_tokens` / `output_tokens`, `model` | `message_start`: `message.usage.input_tokens`, `message.model`; `message_delta`: `usage.output_tokens` (cumulative) |
//! | count_tokens | `input_tokens` | — |
//! | models | nothing | — |
//!
//! Missing or malformed fields count as 0 (usage) or absent (model).

use amai_proto::v1::LlmUsage;
use serde_json::Value;

use crate::endpoint::Endpoint;
use crate::sse::SseEvent;

fn tokens(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|model| !model.is_empty())
        .map(str::to_owned)
}

/// The usage and model of a non-streamed answer's JSON body.
pub fn extract(endpoint: Endpoint, body: &Value) -> (LlmUsage, Option<String>) {
    let (input, output) = match endpoint {
        Endpoint::ChatCompletions => ("/usage/prompt_tokens", Some("/usage/completion_tokens")),
        Endpoint::Responses | Endpoint::Messages => {
            ("/usage/input_tokens", Some("/usage/output_tokens"))
        }
        Endpoint::Embeddings => ("/usage/prompt_tokens", None),
        Endpoint::CountTokens => ("/input_tokens", None),
        Endpoint::Models => return (LlmUsage::default(), None),
    };
    let usage = LlmUsage {
        input_tokens: tokens(body, input).unwrap_or(0),
        output_tokens: output
            .and_then(|pointer| tokens(body, pointer))
            .unwrap_or(0),
    };
    let model = match endpoint {
        Endpoint::CountTokens => None,
        _ => text(body, "/model"),
    };
    (usage, model)
}

/// Usage and model gathered from a stream's events.
#[derive(Debug, Clone)]
pub struct UsageFromStream {
    endpoint: Endpoint,
    usage: LlmUsage,
    model: Option<String>,
}

impl UsageFromStream {
    /// Nothing seen yet.
    pub fn new(endpoint: Endpoint) -> UsageFromStream {
        UsageFromStream {
            endpoint,
            usage: LlmUsage::default(),
            model: None,
        }
    }

    /// Notes one event (events without JSON data are skipped).
    pub fn observe(&mut self, event: &SseEvent) {
        let Some(data) = event.json() else {
            return;
        };
        match self.endpoint {
            Endpoint::ChatCompletions => {
                if let Some(model) = text(&data, "/model") {
                    self.model = Some(model);
                }
                if data.get("usage").is_some_and(Value::is_object) {
                    self.usage = LlmUsage {
                        input_tokens: tokens(&data, "/usage/prompt_tokens").unwrap_or(0),
                        output_tokens: tokens(&data, "/usage/completion_tokens").unwrap_or(0),
                    };
                }
            }
            Endpoint::Responses => match event.name().as_deref() {
                Some("response.created" | "response.in_progress") => {
                    if let Some(model) = text(&data, "/response/model") {
                        self.model = Some(model);
                    }
                }
                Some("response.completed" | "response.incomplete" | "response.failed") => {
                    if let Some(model) = text(&data, "/response/model") {
                        self.model = Some(model);
                    }
                    if data
                        .pointer("/response/usage")
                        .is_some_and(Value::is_object)
                    {
                        self.usage = LlmUsage {
                            input_tokens: tokens(&data, "/response/usage/input_tokens")
                                .unwrap_or(0),
                            output_tokens: tokens(&data, "/response/usage/output_tokens")
                                .unwrap_or(0),
                        };
                    }
                }
                _ => {}
            },
            Endpoint::Messages => match event.name().as_deref() {
                Some("message_start") => {
                    if let Some(model) = text(&data, "/message/model") {
                        self.model = Some(model);
                    }
                    if let Some(input) = tokens(&data, "/message/usage/input_tokens") {
                        self.usage.input_tokens = input;
                    }
                    if let Some(output) = tokens(&data, "/message/usage/output_tokens") {
                        self.usage.output_tokens = output;
                    }
                }
                Some("message_delta") => {
                    if let Some(output) = tokens(&data, "/usage/output_tokens") {
                        self.usage.output_tokens = output;
                    }
                    if let Some(input) = tokens(&data, "/usage/input_tokens") {
                        self.usage.input_tokens = input;
                    }
                }
                _ => {}
            },
            Endpoint::Embeddings | Endpoint::Models | Endpoint::CountTokens => {}
        }
    }

    /// The usage so far.
    pub fn usage(&self) -> LlmUsage {
        self.usage
    }

    /// The model so far.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The usage and model.
    pub fn finish(self) -> (LlmUsage, Option<String>) {
        (self.usage, self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usage(input_tokens: u64, output_tokens: u64) -> LlmUsage {
        LlmUsage {
            input_tokens,
            output_tokens,
        }
    }

    #[test]
    fn whole_answers() {
        let chat = json!({"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}});
        assert_eq!(
            extract(Endpoint::ChatCompletions, &chat),
            (usage(12, 3), Some("gpt-4o-2024-08-06".into()))
        );
        let responses = json!({"model": "gpt-5", "usage": {"input_tokens": 7, "output_tokens": 9}});
        assert_eq!(
            extract(Endpoint::Responses, &responses),
            (usage(7, 9), Some("gpt-5".into()))
        );
        let embeddings = json!({"model": "text-embedding-3-small", "usage": {"prompt_tokens": 5, "total_tokens": 5}});
        assert_eq!(
            extract(Endpoint::Embeddings, &embeddings),
            (usage(5, 0), Some("text-embedding-3-small".into()))
        );
        let messages = json!({"model": "claude-sonnet-4-5", "usage": {"input_tokens": 20, "output_tokens": 4}});
        assert_eq!(
            extract(Endpoint::Messages, &messages),
            (usage(20, 4), Some("claude-sonnet-4-5".into()))
        );
        assert_eq!(
            extract(Endpoint::CountTokens, &json!({"input_tokens": 42})),
            (usage(42, 0), None)
        );
        assert_eq!(
            extract(Endpoint::Models, &json!({"data": []})),
            (usage(0, 0), None)
        );
        assert_eq!(
            extract(
                Endpoint::Messages,
                &json!({"usage": {"input_tokens": "x"}, "model": 3})
            ),
            (usage(0, 0), None)
        );
    }

    fn feed(endpoint: Endpoint, raws: &[&str]) -> (LlmUsage, Option<String>) {
        let mut from_stream = UsageFromStream::new(endpoint);
        for raw in raws {
            from_stream.observe(&SseEvent::parse(raw.as_bytes()));
        }
        from_stream.finish()
    }

    #[test]
    fn chat_stream_takes_the_usage_chunk() {
        let result = feed(
            Endpoint::ChatCompletions,
            &[
                "data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
                "data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2}}\n\n",
                "data: [DONE]\n\n",
            ],
        );
        assert_eq!(result, (usage(8, 2), Some("gpt-4o".into())));
    }

    #[test]
    fn responses_stream_takes_the_completed_response() {
        let result = feed(
            Endpoint::Responses,
            &[
                "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-5\",\"usage\":null}}\n\n",
                "event: response.output_text.delta\ndata: {\"delta\":\"x\"}\n\n",
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5-2025\",\"usage\":{\"input_tokens\":11,\"output_tokens\":6}}}\n\n",
            ],
        );
        assert_eq!(result, (usage(11, 6), Some("gpt-5-2025".into())));
    }

    #[test]
    fn anthropic_stream_adds_start_and_delta() {
        let result = feed(
            Endpoint::Messages,
            &[
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-opus-4-1\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ],
        );
        assert_eq!(result, (usage(25, 15), Some("claude-opus-4-1".into())));
    }
}
