//! Pieces shared by the OpenAI and Anthropic handlers: request context, error
//! bodies, behaviour switches, SSE bodies and made-up content.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use crate::Shared;

/// Delay between stream events for `fake-slow`.
pub(crate) const SLOW_DELAY: Duration = Duration::from_millis(20);

/// Pause before `fake-cut` aborts the connection, so what came before is flushed.
const CUT_DELAY: Duration = Duration::from_millis(50);

/// Which API an endpoint belongs to (error format and response headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    OpenAi,
    Anthropic,
}

/// What the request's `model` asks the fake to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Normal,
    RateLimited,
    Overloaded,
    ServerError,
    NotFound,
    Cut,
    CutClean,
    MidstreamError,
    Slow,
    Gated,
}

impl Behaviour {
    /// The behaviour for `model`; `-once` variants fail only their first request.
    pub(crate) fn of(shared: &Shared, model: &str) -> Behaviour {
        let failing = match model.strip_suffix("-once") {
            Some(base) => {
                if !shared.first_failure(model) {
                    return Behaviour::Normal;
                }
                base
            }
            None => model,
        };
        match failing {
            "fake-429" => Behaviour::RateLimited,
            "fake-529" => Behaviour::Overloaded,
            "fake-500" => Behaviour::ServerError,
            "fake-404" => Behaviour::NotFound,
            "fake-cut" => Behaviour::Cut,
            "fake-cut-clean" => Behaviour::CutClean,
            "fake-midstream-error" => Behaviour::MidstreamError,
            "fake-slow" => Behaviour::Slow,
            "fake-gated" => Behaviour::Gated,
            _ => Behaviour::Normal,
        }
    }

    /// Delay between stream events.
    pub(crate) fn delay(self) -> Option<Duration> {
        (self == Behaviour::Slow).then_some(SLOW_DELAY)
    }
}

/// Per-request context: API flavour, request id, start time.
pub(crate) struct Ctx {
    pub(crate) api: Api,
    pub(crate) request_id: String,
    started: Instant,
}

impl Ctx {
    pub(crate) fn new(shared: &Shared, api: Api) -> Ctx {
        let n = shared.next_request();
        let request_id = match api {
            Api::OpenAi => format!("req_{:012x}{:020}", shared.nonce, n),
            Api::Anthropic => format!("req_011CFake{:012x}{:010}", shared.nonce, n),
        };
        Ctx {
            api,
            request_id,
            started: Instant::now(),
        }
    }

    /// A JSON response with this API's headers.
    pub(crate) fn json(&self, status: StatusCode, body: &Value) -> Response {
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.decorate(response.headers_mut());
        response
    }

    /// A `text/event-stream` response with this API's headers.
    pub(crate) fn sse(&self, body: Body) -> Response {
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        self.decorate(headers);
        response
    }

    /// A JSON body sent in full, or (for `fake-cut`) cut after half of its bytes.
    pub(crate) fn json_body(&self, body: &Value, behaviour: Behaviour) -> Response {
        match behaviour {
            Behaviour::Cut | Behaviour::CutClean => {
                let text = body.to_string();
                let half = Bytes::from(text.as_bytes()[..text.len() / 2].to_vec());
                let stream = futures::stream::iter([Ok(half)])
                    .chain(abort_after_flush(behaviour == Behaviour::Cut));
                let mut response = Response::new(Body::from_stream(stream));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                self.decorate(response.headers_mut());
                response
            }
            _ => self.json(StatusCode::OK, body),
        }
    }

    fn decorate(&self, headers: &mut HeaderMap) {
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        match self.api {
            Api::OpenAi => {
                put("x-request-id", self.request_id.clone());
                put(
                    "openai-processing-ms",
                    self.started.elapsed().as_millis().max(1).to_string(),
                );
                put("openai-version", "2020-10-01".to_owned());
                put("openai-organization", "fake-org".to_owned());
                put("x-ratelimit-limit-requests", "10000".to_owned());
                put("x-ratelimit-remaining-requests", "9999".to_owned());
                put("x-ratelimit-reset-requests", "6ms".to_owned());
                put("x-ratelimit-limit-tokens", "10000000".to_owned());
                put("x-ratelimit-remaining-tokens", "9999000".to_owned());
                put("x-ratelimit-reset-tokens", "0s".to_owned());
            }
            Api::Anthropic => {
                put("request-id", self.request_id.clone());
                put("anthropic-organization-id", "fake-org".to_owned());
                put("anthropic-ratelimit-requests-limit", "4000".to_owned());
                put("anthropic-ratelimit-requests-remaining", "3999".to_owned());
                put(
                    "anthropic-ratelimit-requests-reset",
                    "2026-01-01T00:00:00Z".to_owned(),
                );
            }
        }
    }

    /// An error response in this API's format.
    pub(crate) fn error(&self, status: StatusCode, kind: ErrorKind, message: &str) -> Response {
        match self.api {
            Api::OpenAi => {
                let (kind, code) = kind.openai();
                self.json(
                    status,
                    &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
                )
            }
            Api::Anthropic => self.json(
                status,
                &json!({
                    "type": "error",
                    "error": {"type": kind.anthropic(), "message": message},
                    "request_id": self.request_id,
                }),
            ),
        }
    }

    /// The error response for a failing behaviour switch, if `behaviour` is one.
    pub(crate) fn behaviour_error(&self, behaviour: Behaviour, model: &str) -> Option<Response> {
        let mut response = match (behaviour, self.api) {
            (Behaviour::RateLimited, Api::OpenAi) => self.error(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::RateLimit,
                &format!(
                    "Rate limit reached for {model} in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s."
                ),
            ),
            (Behaviour::RateLimited, Api::Anthropic) => self.error(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::RateLimit,
                "This request would exceed the rate limit for your organization of 50 requests per minute. Please try again in 1s.",
            ),
            (Behaviour::Overloaded, Api::OpenAi) => self.error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Overloaded,
                "The server is overloaded or not ready yet.",
            ),
            (Behaviour::Overloaded, Api::Anthropic) => self.error(
                overloaded_status(),
                ErrorKind::Overloaded,
                "Overloaded",
            ),
            (Behaviour::ServerError | Behaviour::MidstreamError, Api::OpenAi) => self.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::Server,
                "The server had an error while processing your request. Sorry about that!",
            ),
            (Behaviour::ServerError | Behaviour::MidstreamError, Api::Anthropic) => self.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::Server,
                "Internal server error",
            ),
            (Behaviour::NotFound, Api::OpenAi) => self.error(
                StatusCode::NOT_FOUND,
                ErrorKind::ModelNotFound,
                &format!("The model `{model}` does not exist or you do not have access to it."),
            ),
            (Behaviour::NotFound, Api::Anthropic) => self.error(
                StatusCode::NOT_FOUND,
                ErrorKind::ModelNotFound,
                &format!("model: {model}"),
            ),
            _ => return None,
        };
        if behaviour == Behaviour::RateLimited {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Some(response)
    }

    /// Checks the API key (and, for Anthropic, the `anthropic-version` header).
    pub(crate) fn authenticate(&self, shared: &Shared, headers: &HeaderMap) -> Option<Response> {
        match self.api {
            Api::OpenAi => {
                let presented = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
                match presented {
                    Some(key) if key == shared.openai_key => None,
                    Some(key) => Some(self.error(
                        StatusCode::UNAUTHORIZED,
                        ErrorKind::InvalidKey,
                        &format!(
                            "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                            redact(key)
                        ),
                    )),
                    None => Some(self.error(
                        StatusCode::UNAUTHORIZED,
                        ErrorKind::InvalidRequest,
                        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    )),
                }
            }
            Api::Anthropic => {
                // `x-api-key` as documented; recent SDKs (anthropic 2.x) send the API
                // key as `Authorization: Bearer` instead, which the API accepts too.
                let presented = headers
                    .get("x-api-key")
                    .or_else(|| headers.get(http::header::AUTHORIZATION))
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
                match presented {
                    Some(key) if key == shared.anthropic_key => {}
                    Some(_) => {
                        return Some(self.error(
                            StatusCode::UNAUTHORIZED,
                            ErrorKind::InvalidKey,
                            "invalid x-api-key",
                        ))
                    }
                    None => {
                        return Some(self.error(
                            StatusCode::UNAUTHORIZED,
                            ErrorKind::InvalidKey,
                            "x-api-key header is required",
                        ))
                    }
                }
                if headers.get("anthropic-version").is_none() {
                    return Some(self.error(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::InvalidRequest,
                        "anthropic-version: header is required",
                    ));
                }
                None
            }
        }
    }

    /// Parses the body as a JSON object with a string `model`.
    pub(crate) fn parse(&self, body: &[u8]) -> Result<(Value, String), Response> {
        let value: Value = match serde_json::from_slice(body) {
            Ok(value @ Value::Object(_)) => value,
            Ok(_) | Err(_) => {
                let message = match self.api {
                    Api::OpenAi => "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
                    Api::Anthropic => "There was an issue with the request body: the body must be a JSON object.",
                };
                return Err(self.error(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::InvalidRequest,
                    message,
                ));
            }
        };
        match value.get("model").and_then(Value::as_str) {
            Some(model) if !model.is_empty() => {
                let model = model.to_owned();
                Ok((value, model))
            }
            _ => {
                let message = match self.api {
                    Api::OpenAi => "you must provide a model parameter",
                    Api::Anthropic => "model: Field required",
                };
                Err(self.error(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, message))
            }
        }
    }
}

/// A request that passed authentication, parsing and the behaviour switches.
pub(crate) struct Prelude {
    pub(crate) ctx: Ctx,
    pub(crate) req: Value,
    pub(crate) model: String,
    pub(crate) behaviour: Behaviour,
    pub(crate) stream: bool,
    /// For `fake-gated`: opens when the test calls `FakeUpstream::open_gate`.
    pub(crate) gate: tokio::sync::watch::Receiver<bool>,
}

/// Authenticates and parses a JSON request, and answers the failing behaviour
/// switches (a streamed `fake-midstream-error` passes: the handler streams it).
pub(crate) async fn prelude(
    shared: &Shared,
    api: Api,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Prelude, Response> {
    let ctx = Ctx::new(shared, api);
    if let Some(response) = ctx.authenticate(shared, headers) {
        return Err(response);
    }
    let (req, model) = ctx.parse(body)?;
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let behaviour = Behaviour::of(shared, &model);
    if !(stream && behaviour == Behaviour::MidstreamError) {
        if let Some(response) = ctx.behaviour_error(behaviour, &model) {
            return Err(response);
        }
    }
    if behaviour == Behaviour::Slow && !stream {
        tokio::time::sleep(SLOW_DELAY).await;
    }
    Ok(Prelude {
        ctx,
        req,
        model,
        behaviour,
        stream,
        gate: shared.gate.subscribe(),
    })
}

/// 529, Anthropic's "overloaded" status.
fn overloaded_status() -> StatusCode {
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// Shows a key the way the OpenAI API does in errors (`sk-abc***********xyz`).
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// Error categories, mapped to each API's `type` (and OpenAI `code`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ErrorKind {
    InvalidRequest,
    InvalidKey,
    NotFound,
    ModelNotFound,
    RateLimit,
    Overloaded,
    Server,
}

impl ErrorKind {
    fn openai(self) -> (&'static str, Option<&'static str>) {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::NotFound => ("invalid_request_error", None),
            ErrorKind::InvalidKey => ("invalid_request_error", Some("invalid_api_key")),
            ErrorKind::ModelNotFound => ("invalid_request_error", Some("model_not_found")),
            ErrorKind::RateLimit => ("requests", Some("rate_limit_exceeded")),
            ErrorKind::Overloaded | ErrorKind::Server => ("server_error", None),
        }
    }

    fn anthropic(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::InvalidKey => "authentication_error",
            ErrorKind::NotFound | ErrorKind::ModelNotFound => "not_found_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Server => "api_error",
        }
    }
}

/// True for requests from Anthropic clients (they always send `anthropic-version`;
/// the API key header does not tell, as recent SDKs send `Authorization: Bearer`).
pub(crate) fn is_anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version") || headers.contains_key("x-api-key")
}

/// Unknown routes: 404 in the format of the API the path looks like.
pub(crate) async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let anthropic = path.starts_with("/v1/messages") || is_anthropic_client(request.headers());
    let ctx = Ctx {
        api: if anthropic {
            Api::Anthropic
        } else {
            Api::OpenAi
        },
        request_id: "req_fake_not_found".to_owned(),
        started: Instant::now(),
    };
    let message = match ctx.api {
        Api::OpenAi => format!(
            "Invalid URL ({} {path})",
            request.method().as_str().to_uppercase()
        ),
        Api::Anthropic => "Not Found".to_owned(),
    };
    ctx.error(StatusCode::NOT_FOUND, ErrorKind::NotFound, &message)
}

/// How a stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// All events are sent.
    Complete,
    /// Only the first part is sent, then the connection is aborted.
    Abort,
    /// Only the first part is sent, then the body ends cleanly.
    Truncate,
    /// The first part is sent, then the given error event, then the body ends.
    Error,
}

/// An SSE body: `events` (already framed) ending as `behaviour` says.
/// `error_event` is the framed error event for `fake-midstream-error`.
pub(crate) fn sse_body(
    mut events: Vec<Bytes>,
    behaviour: Behaviour,
    error_event: Bytes,
    gate: tokio::sync::watch::Receiver<bool>,
) -> Body {
    let ending = match behaviour {
        Behaviour::Cut => Ending::Abort,
        Behaviour::CutClean => Ending::Truncate,
        Behaviour::MidstreamError => Ending::Error,
        _ => Ending::Complete,
    };
    if ending != Ending::Complete {
        // "A few events": about half, but at least two, and never the terminal ones.
        let keep = (events.len() / 2)
            .max(2)
            .min(events.len().saturating_sub(2));
        events.truncate(keep);
    }
    if ending == Ending::Error {
        events.push(error_event);
    }
    let delay = behaviour.delay();
    let gated = behaviour == Behaviour::Gated;
    let body = futures::stream::iter(events.into_iter().enumerate()).then(move |(i, event)| {
        let mut gate = gate.clone();
        async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if gated && i == 1 {
                // Everything after the first event waits for the test.
                let _ = gate.wait_for(|open| *open).await;
            }
            Ok::<Bytes, std::io::Error>(event)
        }
    });
    Body::from_stream(body.chain(abort_after_flush(ending == Ending::Abort)))
}

/// When `abort`, a body error after [`CUT_DELAY`] (so the head and the events
/// before it reach the client first), which makes hyper drop the connection
/// without the final chunk; otherwise nothing.
fn abort_after_flush(
    abort: bool,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::iter(abort.then_some(())).then(|()| async {
        tokio::time::sleep(CUT_DELAY).await;
        Err(std::io::Error::other("fake-cut: connection aborted"))
    })
}

/// Frames one SSE event (`event:` line only when `name` is given).
pub(crate) fn sse_event(name: Option<&str>, data: &Value) -> Bytes {
    match name {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A rough token count: one token per four bytes of JSON, at least one.
pub(crate) fn estimate_tokens(value: &Value) -> u64 {
    let len = match value {
        Value::String(s) => s.len(),
        Value::Null => 0,
        other => other.to_string().len(),
    };
    (len as u64).div_ceil(4).max(1)
}

/// Tokens of a generated text (words and punctuation, roughly).
pub(crate) fn text_tokens(text: &str) -> u64 {
    split_deltas(text).len().max(1) as u64
}

/// The answer text for call number `n`.
pub(crate) fn answer_text(n: u64, last_user_text: &str) -> String {
    let mut prompt: String = last_user_text.chars().take(200).collect();
    if prompt.is_empty() {
        prompt = "(no text)".to_owned();
    }
    format!("fake answer #{n} to: {prompt}")
}

/// Splits a text into stream deltas: words with their leading space.
pub(crate) fn split_deltas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c == ' ' && !current.is_empty() && !current.ends_with(' ') {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits JSON arguments into a few partial strings, like tool-call streams do.
pub(crate) fn split_json(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(5).map(|c| c.iter().collect()).collect()
}

/// Text of a message `content`: a string, or the `text` of its text parts.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text" | "input_text" | "output_text") | None => {
                    part.get("text").and_then(Value::as_str)
                }
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Arguments made up from a JSON schema: its required properties (or its first
/// property) with placeholder values; `{"city": "Paris"}` without a schema.
pub(crate) fn fake_arguments(schema: Option<&Value>) -> Value {
    let Some(properties) = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    else {
        return json!({"city": "Paris"});
    };
    let mut names: Vec<&str> = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .filter(|n| properties.contains_key(*n))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(properties.keys().next().map(String::as_str));
    }
    let mut out = Map::new();
    for name in names {
        let property = &properties[name];
        let value = if let Some(first) = property
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            first.clone()
        } else {
            match property.get("type").and_then(Value::as_str) {
                Some("integer") => json!(1),
                Some("number") => json!(1.5),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                Some("null") => Value::Null,
                _ => json!("Paris"),
            }
        };
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

/// A deterministic pseudo-random string of `len` letters and digits (for the
/// `obfuscation` padding the OpenAI API adds to stream events).
pub(crate) fn obfuscation(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// Standard base64 (with padding).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn deltas_rebuild_the_text() {
        let text = "fake answer #3 to:  hello world";
        assert_eq!(split_deltas(text).concat(), text);
        assert_eq!(split_deltas("a b")[1], " b");
        let args = r#"{"city":"Paris"}"#;
        assert_eq!(split_json(args).concat(), args);
    }

    #[test]
    fn arguments_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        });
        assert_eq!(
            fake_arguments(Some(&schema)),
            json!({"city": "Paris", "unit": "c"})
        );
        assert_eq!(fake_arguments(None), json!({"city": "Paris"}));
        assert_eq!(
            fake_arguments(Some(&json!({"type": "object", "properties": {}}))),
            json!({})
        );
    }

    #[test]
    fn redaction_keeps_ends() {
        assert_eq!(redact("sk-wrong-key-1234"), "sk-**********1234");
    }
}
