//! Server-sent events, byte for byte: [`SseSplitter`] cuts an upstream's stream into
//! events exactly as received (each event's field lines and the blank line that ends
//! it), whatever the chunk boundaries; [`SseEvent::parse`] reads an event's type and
//! data.
//!
//! The splitter is written here because the SSE crates looked at
//! (`eventsource-stream`, `sse-stream`, `sse-codec`) parse events into fields and
//! drop the raw bytes (line endings, comments, `id:` lines, spacing after the colon),
//! which replay must send back unchanged.
//!
//! Lines end, per the WHATWG EventSource spec, at `\r\n`, `\n` or `\r`, mixed freely;
//! an event ends at an empty line. A `\r` at the end of the received bytes is held
//! until the next byte shows whether it is a `\r\n`, so the output never depends on
//! where the chunks were cut. A blank line with no field line before it (e.g. an
//! extra `\n` between events) comes out as an event of its own, so no byte is lost.

use bytes::{Bytes, BytesMut};

/// Cuts a byte stream into complete server-sent events, keeping their exact bytes.
#[derive(Debug, Default)]
pub struct SseSplitter {
    pending: BytesMut,
    scan_from: usize,
    line_start: usize,
}

impl SseSplitter {
    /// A splitter at the start of a stream.
    pub fn new() -> SseSplitter {
        SseSplitter::default()
    }

    /// Adds received bytes; returns every event they complete, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut index = self.scan_from;
        while index < self.pending.len() {
            let terminator_len = match self.pending[index] {
                b'\n' => 1,
                b'\r' => match self.pending.get(index + 1) {
                    None => break,
                    Some(b'\n') => 2,
                    Some(_) => 1,
                },
                _ => {
                    index += 1;
                    continue;
                }
            };
            let line_is_empty = index == self.line_start;
            let next_line = index + terminator_len;
            if line_is_empty {
                events.push(self.pending.split_to(next_line).freeze());
                index = 0;
                self.line_start = 0;
            } else {
                index = next_line;
                self.line_start = next_line;
            }
        }
        self.scan_from = index;
        events
    }

    /// Bytes received but not yet returned (an event still open).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The bytes left at the end of the stream, if any: an event that never ended
    /// (or one ended by a lone `\r` as the stream's very last byte, which cannot be
    /// told apart from a `\r\n` cut in two until the stream ends).
    pub fn finish(self) -> Option<Bytes> {
        if self.pending.is_empty() {
            None
        } else {
            Some(self.pending.freeze())
        }
    }
}

/// An event's type and data, read per the WHATWG EventSource spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (the last one; `None` when absent or empty, i.e. `message`).
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

impl SseEvent {
    /// Reads an event's raw bytes (as returned by [`SseSplitter`]): comment lines
    /// (starting with `:`) and other fields are skipped, one space after the colon
    /// is dropped, reading stops at the first empty line. Invalid UTF-8 is replaced.
    pub fn parse(raw: &[u8]) -> SseEvent {
        let text = String::from_utf8_lossy(raw);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut event = None;
        let mut data_lines: Vec<&str> = Vec::new();
        for line in lines(text) {
            if line.is_empty() {
                break;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "event" => event = (!value.is_empty()).then(|| value.to_owned()),
                "data" => data_lines.push(value),
                _ => {}
            }
        }
        SseEvent {
            event,
            data: data_lines.join("\n"),
        }
    }

    /// The data as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.data).ok()
    }

    /// The event's name: the `event:` field, else the data's JSON `type` field (the
    /// OpenAI Responses and Anthropic streams carry both).
    pub fn name(&self) -> Option<String> {
        self.event
            .clone()
            .or_else(|| self.json()?.get("type")?.as_str().map(str::to_owned))
    }
}

/// Lines of `text`, ended by `\r\n`, `\n` or `\r` (the terminators left out).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\r', '\n']) {
            None => {
                let line = rest;
                rest = "";
                Some(line)
            }
            Some(end) => {
                let line = &rest[..end];
                let after = if rest[end..].starts_with("\r\n") {
                    end + 2
                } else {
                    end + 1
                };
                rest = &rest[after..];
                Some(line)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED: &[u8] = b": keep-alive\n\nevent: message_start\ndata: {\"type\":\"message_start\"}\n\nid: 7\r\ndata:first\r\ndata: second\r\n\r\nevent: ping\rdata: {}\r\rdata: mixed\r\n\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\ndata: [DONE]\r\n\r\ndata: unfinished";

    fn split_whole(stream: &[u8]) -> (Vec<Bytes>, Option<Bytes>) {
        let mut splitter = SseSplitter::new();
        let events = splitter.push(stream);
        (events, splitter.finish())
    }

    #[test]
    fn events_keep_their_exact_bytes() {
        let (events, rest) = split_whole(RECORDED);
        let expected: Vec<&[u8]> = vec![
            b": keep-alive\n\n",
            b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
            b"id: 7\r\ndata:first\r\ndata: second\r\n\r\n",
            b"event: ping\rdata: {}\r\r",
            b"data: mixed\r\n\n",
            b"\n",
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            b"data: [DONE]\r\n\r\n",
        ];
        assert_eq!(events, expected);
        assert_eq!(rest.as_deref(), Some(&b"data: unfinished"[..]));
        let mut joined: Vec<u8> = events.concat();
        joined.extend_from_slice(b"data: unfinished");
        assert_eq!(joined, RECORDED);
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let (whole, whole_rest) = split_whole(RECORDED);
        for first_cut in 0..=RECORDED.len() {
            let mut splitter = SseSplitter::new();
            let mut events = splitter.push(&RECORDED[..first_cut]);
            events.extend(splitter.push(&RECORDED[first_cut..]));
            assert_eq!(events, whole, "cut at {first_cut}");
            assert_eq!(splitter.finish(), whole_rest, "cut at {first_cut}");
        }
        for size in 1..=7 {
            let mut splitter = SseSplitter::new();
            let mut events = Vec::new();
            for chunk in RECORDED.chunks(size) {
                events.extend(splitter.push(chunk));
            }
            assert_eq!(events, whole, "chunks of {size}");
            assert_eq!(splitter.finish(), whole_rest, "chunks of {size}");
        }
    }

    #[test]
    fn a_trailing_carriage_return_waits_for_the_next_byte() {
        let mut splitter = SseSplitter::new();
        assert!(splitter.push(b"data: x\r\n\r").is_empty());
        assert_eq!(
            splitter.push(b"\n"),
            vec![Bytes::from_static(b"data: x\r\n\r\n")]
        );
        assert!(splitter.push(b"data: y\r\r").is_empty());
        assert_eq!(
            splitter.push(b"d"),
            vec![Bytes::from_static(b"data: y\r\r")]
        );
        assert_eq!(splitter.pending_len(), 1);
        assert_eq!(splitter.finish(), Some(Bytes::from_static(b"d")));
        assert_eq!(SseSplitter::new().finish(), None);
    }

    #[test]
    fn parse_reads_type_and_data() {
        let event = SseEvent::parse(b"event: response.completed\ndata: {\"a\":1}\n\n");
        assert_eq!(event.event.as_deref(), Some("response.completed"));
        assert_eq!(event.data, "{\"a\":1}");
        let event =
            SseEvent::parse(b": comment\r\ndata:one\r\ndata:  two\r\nid: 3\r\nevent\r\n\r\n");
        assert_eq!(event.event, None);
        assert_eq!(event.data, "one\n two");
        let event = SseEvent::parse(b"\xef\xbb\xbfdata\rdata: x\r\r");
        assert_eq!(event.data, "\nx");
        assert_eq!(SseEvent::parse(b"\n"), SseEvent::default());
    }

    #[test]
    fn name_falls_back_to_the_json_type() {
        let event = SseEvent::parse(b"data: {\"type\":\"message_stop\"}\n\n");
        assert_eq!(event.name().as_deref(), Some("message_stop"));
        let event = SseEvent::parse(b"event: error\ndata: {\"type\":\"x\"}\n\n");
        assert_eq!(event.name().as_deref(), Some("error"));
        assert_eq!(SseEvent::parse(b"data: [DONE]\n\n").name(), None);
    }
}
