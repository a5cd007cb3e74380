//! The cassette: a session's recordings exported as one JSON document, readable by
//! people and byte-exact for machines. The JSON Schema is
//! `schemas/llm-cassette.schema.json`.
//!
//! ```text
//! {"format": "amai.llm.cassette", "version": 1, "exported_at": "<RFC 3339>",
//!  "session": {"session_id", "owner", "mode": "record"|"replay",
//!              "upstreams": ["openai"|"anthropic", ...],
//!              "options": {"ignore_fields", "keep_default_fields", "order": "strict"|"any",
//!                          "allow_repeats", "timing": "instant"|"recorded"}},
//!  "interactions": [{"seq", "event_id", "event_hash" (hex), "request_hash" (hex),
//!                    "occurrence", "upstream", "method", "path", "request": Body,
//!                    "status", "headers": {name: value}, "streamed",
//!                    "response": Body|null, "events": [{"offset_us", "data": Body}]|null,
//!                    "outcome": "completed"|"upstream_error"|"truncated"|"unreachable",
//!                    "usage": {"input_tokens", "output_tokens"}, "latency_us",
//!                    "upstream_model", "detail", "event_b64"}],
//!  "misses": [{"seq", "event_id", "request_hash", "occurrence", "method", "path",
//!              "run_id", "step", "nearest_seq", "diff": [..], "reason", "event_b64"}]}
//! ```
//!
//! A `Body` is `{"text": "<utf-8>"}` when its bytes are valid UTF-8 (so cassettes stay
//! readable) and `{"base64": "<standard, padded>"}` otherwise (so bytes stay exact).
//! `event_b64` is the stored signed event, which a verifier checks against
//! `event_hash`; the other fields are a readable copy of what it carries.
//!
//! [`Cassette::from_json`] is strict: unknown fields are refused with their JSON path,
//! `format` must be `amai.llm.cassette` and `version` 1, hashes are 64 hex digits,
//! base64 is well formed, `exported_at` is RFC 3339, an interaction's `status` is
//! 100–599, a streamed interaction has `events` and no `response` (and the reverse),
//! `seq` increases, and there are at most [`MAX_INTERACTIONS`] interactions and
//! [`MAX_MISSES`] misses. The caller bounds the document's size before reading it.
//!
//! A cassette is data only: nothing in it is executed, and no field (not even
//! `path`) is used as a URL.

use std::collections::BTreeMap;
use std::fmt;

use amai_proto::v1::{LlmMatchOptions, LlmOutcome, LlmReplayOrder, LlmReplayTiming, LlmUpstream};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `format` of every cassette.
pub const CASSETTE_FORMAT: &str = "amai.llm.cassette";
/// The only cassette version this build reads and writes.
pub const CASSETTE_VERSION: u32 = 1;
/// The most interactions a cassette may hold.
pub const MAX_INTERACTIONS: usize = 100_000;
/// The most replay misses a cassette may hold.
pub const MAX_MISSES: usize = 100_000;

/// Why a cassette was refused.
#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    /// Not JSON, or not of the cassette's shape (unknown field, wrong type, bad hex
    /// or base64...) at `path`.
    #[error("{path}: {message}")]
    Json {
        /// Where, e.g. `interactions[2].request_hash` (`.` for the whole document).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Well formed, but breaking a rule of the format at `path`.
    #[error("{path}: {message}")]
    Invalid {
        /// Where, e.g. `interactions[2].status`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The cassette could not be written as JSON.
    #[error("cannot write the cassette as JSON: {0}")]
    Write(#[source] serde_json::Error),
}

impl CassetteError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> CassetteError {
        CassetteError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Bytes shown as `{"text": ...}` when valid UTF-8, else `{"base64": ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body(pub Bytes);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum BodyRepr {
    Text(String),
    Base64(String),
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => BodyRepr::Text(text.to_owned()),
            Err(_) => BodyRepr::Base64(STANDARD.encode(&self.0)),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Body, D::Error> {
        match BodyRepr::deserialize(deserializer)? {
            BodyRepr::Text(text) => Ok(Body(Bytes::from(text))),
            BodyRepr::Base64(encoded) => decode_base64::<D::Error>(&encoded).map(Body),
        }
    }
}

fn decode_base64<E: serde::de::Error>(encoded: &str) -> Result<Bytes, E> {
    STANDARD.decode(encoded).map(Bytes::from).map_err(|error| {
        E::custom(format!(
            "invalid base64 (standard alphabet, padded): {error}"
        ))
    })
}

/// Bytes written as standard padded base64 (`event_b64`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base64Bytes(pub Bytes);

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Base64Bytes, D::Error> {
        let encoded = String::deserialize(deserializer)?;
        decode_base64::<D::Error>(&encoded).map(Base64Bytes)
    }
}

/// A SHA-256 digest written as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Sha256Hex(pub [u8; 32]);

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for Sha256Hex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sha256Hex, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(D::Error::custom(format!(
                "expected a SHA-256 digest as 64 lowercase hex digits, found {:?}",
                text
            )));
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&text, &mut digest).map_err(D::Error::custom)?;
        Ok(Sha256Hex(digest))
    }
}

/// A session's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CassetteMode {
    /// Recording.
    Record,
    /// Replaying.
    Replay,
}

/// An upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CassetteUpstream {
    /// OpenAI.
    Openai,
    /// Anthropic.
    Anthropic,
}

impl CassetteUpstream {
    /// From the proto enum (`None` for `UNSPECIFIED`).
    pub fn from_proto(upstream: LlmUpstream) -> Option<CassetteUpstream> {
        match upstream {
            LlmUpstream::Openai => Some(CassetteUpstream::Openai),
            LlmUpstream::Anthropic => Some(CassetteUpstream::Anthropic),
            LlmUpstream::Unspecified => None,
        }
    }

    /// The proto enum.
    pub fn to_proto(self) -> LlmUpstream {
        match self {
            CassetteUpstream::Openai => LlmUpstream::Openai,
            CassetteUpstream::Anthropic => LlmUpstream::Anthropic,
        }
    }
}

/// How replay requests were matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CassetteReplayOrder {
    /// The k-th request matches the k-th recording.
    #[default]
    Strict,
    /// Any order.
    Any,
}

/// How recorded streams are paced on replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CassetteReplayTiming {
    /// As fast as the client reads.
    #[default]
    Instant,
    /// At the recorded offsets.
    Recorded,
}

/// The session's match options (see `LlmMatchOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassetteMatchOptions {
    /// Extra ignored fields (dotted paths).
    pub ignore_fields: Vec<String>,
    /// Hash the default-ignored fields too.
    pub keep_default_fields: bool,
    /// Replay order.
    pub order: CassetteReplayOrder,
    /// Serve the last occurrence again once all were served.
    pub allow_repeats: bool,
    /// Replay timing.
    pub timing: CassetteReplayTiming,
}

impl From<&LlmMatchOptions> for CassetteMatchOptions {
    fn from(options: &LlmMatchOptions) -> CassetteMatchOptions {
        CassetteMatchOptions {
            ignore_fields: options.ignore_fields.clone(),
            keep_default_fields: options.keep_default_fields,
            order: match options.order() {
                LlmReplayOrder::Strict => CassetteReplayOrder::Strict,
                LlmReplayOrder::Any => CassetteReplayOrder::Any,
            },
            allow_repeats: options.allow_repeats,
            timing: match options.timing() {
                LlmReplayTiming::Instant => CassetteReplayTiming::Instant,
                LlmReplayTiming::Recorded => CassetteReplayTiming::Recorded,
            },
        }
    }
}

impl From<&CassetteMatchOptions> for LlmMatchOptions {
    fn from(options: &CassetteMatchOptions) -> LlmMatchOptions {
        let mut proto = LlmMatchOptions {
            ignore_fields: options.ignore_fields.clone(),
            keep_default_fields: options.keep_default_fields,
            allow_repeats: options.allow_repeats,
            ..LlmMatchOptions::default()
        };
        proto.set_order(match options.order {
            CassetteReplayOrder::Strict => LlmReplayOrder::Strict,
            CassetteReplayOrder::Any => LlmReplayOrder::Any,
        });
        proto.set_timing(match options.timing {
            CassetteReplayTiming::Instant => LlmReplayTiming::Instant,
            CassetteReplayTiming::Recorded => LlmReplayTiming::Recorded,
        });
        proto
    }
}

/// The exported session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassetteSession {
    /// The session id.
    pub session_id: String,
    /// The owner's identity id.
    pub owner: String,
    /// The mode at export time.
    pub mode: CassetteMode,
    /// The allowed upstreams (empty: all).
    pub upstreams: Vec<CassetteUpstream>,
    /// The match options at export time.
    pub options: CassetteMatchOptions,
}

/// A stream outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CassetteOutcome {
    /// 2xx, or a stream that reached its terminal event.
    Completed,
    /// Non-2xx, or an error event.
    UpstreamError,
    /// A stream cut before its terminal event.
    Truncated,
    /// The upstream could not be reached.
    Unreachable,
}

impl CassetteOutcome {
    /// From the proto enum (`None` for `UNSPECIFIED`).
    pub fn from_proto(outcome: LlmOutcome) -> Option<CassetteOutcome> {
        match outcome {
            LlmOutcome::Completed => Some(CassetteOutcome::Completed),
            LlmOutcome::UpstreamError => Some(CassetteOutcome::UpstreamError),
            LlmOutcome::Truncated => Some(CassetteOutcome::Truncated),
            LlmOutcome::Unreachable => Some(CassetteOutcome::Unreachable),
            LlmOutcome::Unspecified => None,
        }
    }

    /// The proto enum.
    pub fn to_proto(self) -> LlmOutcome {
        match self {
            CassetteOutcome::Completed => LlmOutcome::Completed,
            CassetteOutcome::UpstreamError => LlmOutcome::UpstreamError,
            CassetteOutcome::Truncated => LlmOutcome::Truncated,
            CassetteOutcome::Unreachable => LlmOutcome::Unreachable,
        }
    }
}

/// Token usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassetteUsage {
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
}

/// One recorded server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassetteSseEvent {
    /// Microseconds from the start of the call.
    pub offset_us: u64,
    /// The event's exact bytes (field lines and the blank line ending it).
    pub data: Body,
}

/// One recorded interaction (`llm.interaction_recorded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassetteInteraction {
    /// The event's seq in the session aggregate.
    pub seq: u64,
    /// The event id.
    pub event_id: String,
    /// SHA-256 of the stored event.
    pub event_hash: Sha256Hex,
    /// The request hash.
    pub request_hash: Sha256Hex,
    /// 0 for the first request with this hash, 1 for the second...
    pub occurrence: u32,
    /// The upstream.
    pub upstream: CassetteUpstream,
    /// The request method.
    pub method: String,
    /// The proxy path.
    pub path: String,
    /// The request body.
    pub request: Body,
    /// The answer's status.
    pub status: u16,
    /// The recorded response headers (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// Whether the answer was a stream.
    pub streamed: bool,
    /// The body of a non-streamed answer.
    #[serde(default)]
    pub response: Option<Body>,
    /// The events of a streamed answer.
    #[serde(default)]
    pub events: Option<Vec<CassetteSseEvent>>,
    /// The outcome.
    pub outcome: CassetteOutcome,
    /// Token usage.
    pub usage: CassetteUsage,
    /// Time to the end of the answer, in microseconds.
    pub latency_us: u64,
    /// The model that answered ("" when unknown).
    pub upstream_model: String,
    /// What went wrong for truncated and unreachable outcomes.
    pub detail: String,
    /// The stored signed event.
    pub event_b64: Base64Bytes,
}

/// One replay miss (`llm.replay_missed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassetteMiss {
    /// The event's seq in the session aggregate.
    pub seq: u64,
    /// The event id.
    pub event_id: String,
    /// The request hash.
    pub request_hash: Sha256Hex,
    /// The occurrence asked for.
    pub occurrence: u32,
    /// The request method.
    pub method: String,
    /// The proxy path.
    pub path: String,
    /// The replay run.
    pub run_id: String,
    /// The request's 0-based step in the run.
    pub step: u64,
    /// The nearest recording's seq (0: none).
    pub nearest_seq: u64,
    /// Field-level differences from the nearest recording.
    pub diff: Vec<String>,
    /// Why nothing matched.
    pub reason: String,
    /// The stored signed event.
    pub event_b64: Base64Bytes,
}

/// A cassette.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cassette {
    /// Always [`CASSETTE_FORMAT`].
    pub format: String,
    /// Always [`CASSETTE_VERSION`].
    pub version: u32,
    /// When it was exported (RFC 3339).
    pub exported_at: String,
    /// The session.
    pub session: CassetteSession,
    /// The recordings, by increasing seq.
    pub interactions: Vec<CassetteInteraction>,
    /// The replay misses, by increasing seq.
    pub misses: Vec<CassetteMiss>,
}

/// Just the fields that say which format a document is, read first so that a newer
/// version is refused as such rather than for its unknown fields.
#[derive(Deserialize)]
struct FormatHeader {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> CassetteError {
    CassetteError::Json {
        path: error.path().to_string(),
        message: error.into_inner().to_string(),
    }
}

impl Cassette {
    /// An empty cassette of the current format and version.
    pub fn new(exported_at: String, session: CassetteSession) -> Cassette {
        Cassette {
            format: CASSETTE_FORMAT.to_owned(),
            version: CASSETTE_VERSION,
            exported_at,
            session,
            interactions: Vec::new(),
            misses: Vec::new(),
        }
    }

    /// Reads and checks a cassette (see the module doc for the rules).
    pub fn from_json(json: &[u8]) -> Result<Cassette, CassetteError> {
        let mut header_reader = serde_json::Deserializer::from_slice(json);
        let header: FormatHeader =
            serde_path_to_error::deserialize(&mut header_reader).map_err(json_error)?;
        match header.format {
            Some(serde_json::Value::String(format)) if format == CASSETTE_FORMAT => {}
            Some(other) => {
                return Err(CassetteError::invalid(
                    "format",
                    format!("expected \"{CASSETTE_FORMAT}\", found {other}"),
                ))
            }
            None => return Err(CassetteError::invalid(".", "missing field `format`")),
        }
        match header.version {
            Some(version) if version == serde_json::json!(CASSETTE_VERSION) => {}
            Some(other) => {
                return Err(CassetteError::invalid(
                    "version",
                    format!(
                        "unsupported version {other} (this build reads version {CASSETTE_VERSION})"
                    ),
                ))
            }
            None => return Err(CassetteError::invalid(".", "missing field `version`")),
        }
        let mut reader = serde_json::Deserializer::from_slice(json);
        let cassette: Cassette =
            serde_path_to_error::deserialize(&mut reader).map_err(json_error)?;
        reader.end().map_err(|error| CassetteError::Json {
            path: ".".to_owned(),
            message: error.to_string(),
        })?;
        cassette.validate()?;
        Ok(cassette)
    }

    /// Checks the rules that the types alone do not.
    pub fn validate(&self) -> Result<(), CassetteError> {
        if self.format != CASSETTE_FORMAT {
            return Err(CassetteError::invalid(
                "format",
                format!("expected \"{CASSETTE_FORMAT}\", found {:?}", self.format),
            ));
        }
        if self.version != CASSETTE_VERSION {
            return Err(CassetteError::invalid(
                "version",
                format!(
                    "unsupported version {} (this build reads version {CASSETTE_VERSION})",
                    self.version
                ),
            ));
        }
        time::OffsetDateTime::parse(
            &self.exported_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|error| {
            CassetteError::invalid(
                "exported_at",
                format!(
                    "expected an RFC 3339 date-time, found {:?}: {error}",
                    self.exported_at
                ),
            )
        })?;
        if self.interactions.len() > MAX_INTERACTIONS {
            return Err(CassetteError::invalid(
                "interactions",
                format!(
                    "{} interactions, more than the limit of {MAX_INTERACTIONS}",
                    self.interactions.len()
                ),
            ));
        }
        if self.misses.len() > MAX_MISSES {
            return Err(CassetteError::invalid(
                "misses",
                format!(
                    "{} misses, more than the limit of {MAX_MISSES}",
                    self.misses.len()
                ),
            ));
        }
        let mut previous_seq = None;
        for (index, interaction) in self.interactions.iter().enumerate() {
            let at = |field: &str| format!("interactions[{index}].{field}");
            if !(100..=599).contains(&interaction.status) {
                return Err(CassetteError::invalid(
                    at("status"),
                    format!(
                        "expected an HTTP status (100-599), found {}",
                        interaction.status
                    ),
                ));
            }
            if interaction.streamed {
                if interaction.events.is_none() {
                    return Err(CassetteError::invalid(
                        at("events"),
                        "a streamed interaction needs its events",
                    ));
                }
                if interaction.response.is_some() {
                    return Err(CassetteError::invalid(
                        at("response"),
                        "a streamed interaction has events, not a response body",
                    ));
                }
            } else if interaction.events.is_some() {
                return Err(CassetteError::invalid(
                    at("events"),
                    "an interaction that was not streamed has no events",
                ));
            }
            check_request_line(&interaction.method, &interaction.path, &at)?;
            check_seq(&mut previous_seq, interaction.seq, &at)?;
        }
        let mut previous_seq = None;
        for (index, miss) in self.misses.iter().enumerate() {
            let at = |field: &str| format!("misses[{index}].{field}");
            check_request_line(&miss.method, &miss.path, &at)?;
            check_seq(&mut previous_seq, miss.seq, &at)?;
        }
        Ok(())
    }

    /// The cassette as indented JSON.
    pub fn to_json_pretty(&self) -> Result<String, CassetteError> {
        serde_json::to_string_pretty(self).map_err(CassetteError::Write)
    }
}

fn check_request_line(
    method: &str,
    path: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<(), CassetteError> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(CassetteError::invalid(
            at("method"),
            format!("expected an HTTP method in capitals, found {method:?}"),
        ));
    }
    if !path.starts_with('/') {
        return Err(CassetteError::invalid(
            at("path"),
            format!("expected a path starting with '/', found {path:?}"),
        ));
    }
    Ok(())
}

fn check_seq(
    previous: &mut Option<u64>,
    seq: u64,
    at: &dyn Fn(&str) -> String,
) -> Result<(), CassetteError> {
    if let Some(previous) = *previous {
        if seq <= previous {
            return Err(CassetteError::invalid(
                at("seq"),
                format!("{seq} does not follow the previous seq {previous}"),
            ));
        }
    }
    *previous = Some(seq);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn sample() -> Cassette {
        let mut cassette = Cassette::new(
            "2026-12-03T08:30:00Z".to_owned(),
            CassetteSession {
                session_id: "llm-s1".to_owned(),
                owner: "id-owner".to_owned(),
                mode: CassetteMode::Record,
                upstreams: vec![CassetteUpstream::Openai, CassetteUpstream::Anthropic],
                options: CassetteMatchOptions {
                    ignore_fields: vec!["temperature".to_owned()],
                    ..CassetteMatchOptions::default()
                },
            },
        );
        cassette.interactions.push(CassetteInteraction {
            seq: 1,
            event_id: "ev-1".to_owned(),
            event_hash: Sha256Hex([0xab; 32]),
            request_hash: Sha256Hex([0x01; 32]),
            occurrence: 0,
            upstream: CassetteUpstream::Openai,
            method: "POST".to_owned(),
            path: "/v1/chat/completions".to_owned(),
            request: Body(Bytes::from_static(b"{\"model\":\"m\",\"messages\":[]}")),
            status: 200,
            headers: BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
            streamed: false,
            response: Some(Body(Bytes::from_static(b"{\"id\":\"x\"}\n"))),
            events: None,
            outcome: CassetteOutcome::Completed,
            usage: CassetteUsage {
                input_tokens: 3,
                output_tokens: 4,
            },
            latency_us: 1500,
            upstream_model: "m-2026".to_owned(),
            detail: String::new(),
            event_b64: Base64Bytes(Bytes::from_static(b"\x00\x01signed")),
        });
        cassette.interactions.push(CassetteInteraction {
            seq: 3,
            streamed: true,
            response: None,
            events: Some(vec![
                CassetteSseEvent {
                    offset_us: 10,
                    data: Body(Bytes::from_static(
                        b"event: message_start\r\ndata: {}\r\n\r\n",
                    )),
                },
                CassetteSseEvent {
                    offset_us: 20,
                    data: Body(Bytes::from_static(b"data: \xff\xfe\n\n")),
                },
            ]),
            outcome: CassetteOutcome::Truncated,
            upstream: CassetteUpstream::Anthropic,
            path: "/v1/messages".to_owned(),
            ..cassette.interactions[0].clone()
        });
        cassette.misses.push(CassetteMiss {
            seq: 4,
            event_id: "ev-4".to_owned(),
            request_hash: Sha256Hex([0x02; 32]),
            occurrence: 1,
            method: "POST".to_owned(),
            path: "/v1/messages".to_owned(),
            run_id: "run-1".to_owned(),
            step: 2,
            nearest_seq: 3,
            diff: vec!["messages[0].content: \"a\" != \"b\"".to_owned()],
            reason: "no recording matches".to_owned(),
            event_b64: Base64Bytes(Bytes::from_static(b"miss")),
        });
        cassette
    }

    fn sample_json() -> Value {
        serde_json::from_str(&sample().to_json_pretty().expect("json")).expect("value")
    }

    fn refused(document: &Value) -> String {
        let bytes = serde_json::to_vec(document).expect("bytes");
        match Cassette::from_json(&bytes) {
            Ok(_) => panic!("accepted: {document}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn round_trip_keeps_every_byte() {
        let cassette = sample();
        let json = cassette.to_json_pretty().expect("json");
        let read = Cassette::from_json(json.as_bytes()).expect("read");
        assert_eq!(read, cassette);
        assert_eq!(read.to_json_pretty().expect("json"), json);
    }

    #[test]
    fn bodies_are_text_when_utf8_and_base64_otherwise() {
        let document = sample_json();
        let events = &document["interactions"][1]["events"];
        assert_eq!(
            events[0]["data"],
            json!({"text": "event: message_start\r\ndata: {}\r\n\r\n"})
        );
        assert_eq!(events[1]["data"], json!({"base64": "ZGF0YTog//4KCg=="}));
        assert_eq!(document["interactions"][0]["event_b64"], "AAFzaWduZWQ=");
        assert_eq!(document["interactions"][0]["event_hash"], "ab".repeat(32));
        assert_eq!(
            document["interactions"][0]["response"],
            json!({"text": "{\"id\":\"x\"}\n"})
        );
        assert_eq!(document["interactions"][1]["response"], Value::Null);
        assert_eq!(document["session"]["options"]["order"], "strict");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let mut document = sample_json();
        document["interactions"][1]["events"][0]["extra"] = json!(1);
        let message = refused(&document);
        assert!(
            message.starts_with("interactions[1].events[0].extra: unknown field `extra`"),
            "{message}"
        );
        let mut document = sample_json();
        document["surprise"] = json!(true);
        assert!(refused(&document).starts_with("surprise: unknown field `surprise`"));
        let mut document = sample_json();
        document["session"]["options"]["order"] = json!("random");
        assert!(refused(&document).starts_with("session.options.order: unknown variant `random`"));
    }

    #[test]
    fn format_and_version_are_checked_first() {
        let mut document = sample_json();
        document["version"] = json!(2);
        document["new_in_v2"] = json!({});
        assert_eq!(
            refused(&document),
            "version: unsupported version 2 (this build reads version 1)"
        );
        let mut document = sample_json();
        document["format"] = json!("vcr");
        assert_eq!(
            refused(&document),
            "format: expected \"amai.llm.cassette\", found \"vcr\""
        );
        assert_eq!(refused(&json!({"version": 1})), ".: missing field `format`");
        assert!(Cassette::from_json(b"not json").is_err());
        let mut bytes = serde_json::to_vec(&sample_json()).expect("bytes");
        bytes.extend_from_slice(b" {}");
        assert!(Cassette::from_json(&bytes).is_err());
    }

    #[test]
    fn hex_base64_and_dates_are_checked() {
        let mut document = sample_json();
        document["interactions"][0]["request_hash"] = json!("AB".repeat(32));
        assert_eq!(
            refused(&document).split(" at line").next(),
            Some(format!(
                "interactions[0].request_hash: expected a SHA-256 digest as 64 lowercase hex digits, found \"{}\"",
                "AB".repeat(32)
            ))
            .as_deref()
        );
        let mut document = sample_json();
        document["misses"][0]["request_hash"] = json!("00");
        assert!(refused(&document).starts_with("misses[0].request_hash: expected a SHA-256"));
        let mut document = sample_json();
        document["interactions"][1]["events"][1]["data"] = json!({"base64": "a*=="});
        assert!(refused(&document).starts_with("interactions[1].events[1].data: invalid base64"));
        let mut document = sample_json();
        document["interactions"][0]["event_b64"] = json!("AAFzaWduZWQ");
        assert!(refused(&document).starts_with("interactions[0].event_b64: invalid base64"));
        let mut document = sample_json();
        document["interactions"][0]["request"] = json!({"text": "a", "base64": "YQ=="});
        assert!(refused(&document).starts_with("interactions[0].request: "));
        let mut document = sample_json();
        document["exported_at"] = json!("yesterday");
        assert!(refused(&document)
            .starts_with("exported_at: expected an RFC 3339 date-time, found \"yesterday\""));
    }

    #[test]
    fn rules_of_the_format() {
        let mut document = sample_json();
        document["interactions"][0]["status"] = json!(99);
        assert_eq!(
            refused(&document),
            "interactions[0].status: expected an HTTP status (100-599), found 99"
        );
        let mut document = sample_json();
        document["interactions"][1]["events"] = Value::Null;
        assert_eq!(
            refused(&document),
            "interactions[1].events: a streamed interaction needs its events"
        );
        let mut document = sample_json();
        document["interactions"][0]["events"] = json!([]);
        assert_eq!(
            refused(&document),
            "interactions[0].events: an interaction that was not streamed has no events"
        );
        let mut document = sample_json();
        document["interactions"][1]["seq"] = json!(1);
        assert_eq!(
            refused(&document),
            "interactions[1].seq: 1 does not follow the previous seq 1"
        );
        let mut document = sample_json();
        document["misses"][0]["path"] = json!("https://evil.example/");
        assert_eq!(
            refused(&document),
            "misses[0].path: expected a path starting with '/', found \"https://evil.example/\""
        );
    }

    #[test]
    fn too_many_interactions_are_refused() {
        let mut cassette = sample();
        let template = cassette.interactions[0].clone();
        cassette.interactions = (1..=MAX_INTERACTIONS as u64 + 1)
            .map(|seq| CassetteInteraction {
                seq,
                ..template.clone()
            })
            .collect();
        let error = cassette.validate().map(|_| ()).expect_err("too many");
        assert_eq!(
            error.to_string(),
            "interactions: 100001 interactions, more than the limit of 100000"
        );
    }

    #[test]
    fn the_json_schema_names_the_same_fields() {
        let schema: Value =
            serde_json::from_str(include_str!("../../../schemas/llm-cassette.schema.json"))
                .expect("schema");
        let document = sample_json();
        let keys = |value: &Value| -> Vec<String> {
            let mut keys: Vec<String> =
                value.as_object().expect("object").keys().cloned().collect();
            keys.sort();
            keys
        };
        for (schema_pointer, instance) in [
            ("", &document),
            ("/$defs/session", &document["session"]),
            ("/$defs/options", &document["session"]["options"]),
            ("/$defs/interaction", &document["interactions"][0]),
            ("/$defs/miss", &document["misses"][0]),
            (
                "/$defs/sse_event",
                &document["interactions"][1]["events"][0],
            ),
        ] {
            let properties = schema
                .pointer(&format!("{schema_pointer}/properties"))
                .expect("properties");
            assert_eq!(keys(properties), keys(instance), "{schema_pointer}");
        }
    }

    #[test]
    fn options_convert_to_and_from_proto() {
        let options = CassetteMatchOptions {
            ignore_fields: vec!["a.b".to_owned()],
            keep_default_fields: true,
            order: CassetteReplayOrder::Any,
            allow_repeats: true,
            timing: CassetteReplayTiming::Recorded,
        };
        let proto = LlmMatchOptions::from(&options);
        assert_eq!(proto.order(), LlmReplayOrder::Any);
        assert_eq!(CassetteMatchOptions::from(&proto), options);
        assert_eq!(
            CassetteOutcome::from_proto(LlmOutcome::Truncated).map(CassetteOutcome::to_proto),
            Some(LlmOutcome::Truncated)
        );
        assert_eq!(CassetteUpstream::from_proto(LlmUpstream::Unspecified), None);
    }
}
