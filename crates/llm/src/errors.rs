//! The proxy's own error answers, in the API's own error format so the official SDKs
//! raise their usual exceptions:
//!
//! - OpenAI: `{"error":{"message":...,"type":...,"param":null,"code":...}}`;
//! - Anthropic: `{"type":"error","error":{"type":...,"message":...}}`.
//!
//! Every answer has `content-type: application/json`, `x-amai-error: <kind>` and
//! `x-should-retry`, which the SDKs obey over their own status-based rules: `false`
//! for every kind but [`ErrorKind::Internal`] (a retry would get the same answer:
//! a wrong key, a replay miss, an unreachable upstream that the proxy already tried),
//! `true` for `Internal` (a fault of the proxy, possibly passing).
//!
//! | kind | status | OpenAI type / code | Anthropic type |
//! | --- | --- | --- | --- |
//! | `invalid_key` | 401 | `invalid_request_error` / `invalid_api_key` | `authentication_error` |
//! | `key_revoked` | 401 | `invalid_request_error` / `invalid_api_key` | `authentication_error` |
//! | `wrong_session` | 403 | `invalid_request_error` / `wrong_session` | `permission_error` |
//! | `upstream_not_allowed` | 403 | `invalid_request_error` / `upstream_not_allowed` | `permission_error` |
//! | `session_deleted` | 403 | `invalid_request_error` / `session_deleted` | `permission_error` |
//! | `replay_miss` | 404 | `invalid_request_error` / `replay_miss` | `not_found_error` |
//! | `bad_request` | 400 | `invalid_request_error` / null | `invalid_request_error` |
//! | `upstream_unreachable` | 502 | `server_error` / `upstream_unreachable` | `api_error` |
//! | `internal` | 500 | `server_error` / null | `api_error` |
//!
//! A deleted session answers 403 rather than 404 or 410: the key is known and was
//! valid, it is the session that refuses to answer (the SDKs map 403 to their
//! permission-denied error; 410 has no class of its own in either SDK).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use serde_json::json;

use crate::endpoint::Api;

/// `x-amai-error`: the kind of a proxy error answer.
pub const AMAI_ERROR_HEADER: &str = "x-amai-error";
/// `x-should-retry`: whether the SDKs should retry.
pub const SHOULD_RETRY_HEADER: &str = "x-should-retry";

/// Why the proxy answers an error itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The key is not a session key.
    InvalidKey,
    /// The session key was revoked.
    KeyRevoked,
    /// The key belongs to another session than the one addressed.
    WrongSession,
    /// The session does not allow this endpoint's upstream.
    UpstreamNotAllowed,
    /// The session was deleted.
    SessionDeleted,
    /// Replay: no recording matches the request.
    ReplayMiss,
    /// The request is malformed (e.g. its body is not JSON).
    BadRequest,
    /// Record: the upstream could not be reached.
    UpstreamUnreachable,
    /// A fault of the proxy itself.
    Internal,
}

impl ErrorKind {
    /// The answer's status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidKey | ErrorKind::KeyRevoked => StatusCode::UNAUTHORIZED,
            ErrorKind::WrongSession | ErrorKind::UpstreamNotAllowed | ErrorKind::SessionDeleted => {
                StatusCode::FORBIDDEN
            }
            ErrorKind::ReplayMiss => StatusCode::NOT_FOUND,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The kind's name, as sent in `x-amai-error`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::KeyRevoked => "key_revoked",
            ErrorKind::WrongSession => "wrong_session",
            ErrorKind::UpstreamNotAllowed => "upstream_not_allowed",
            ErrorKind::SessionDeleted => "session_deleted",
            ErrorKind::ReplayMiss => "replay_miss",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::UpstreamUnreachable => "upstream_unreachable",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether the client may retry (only [`ErrorKind::Internal`]).
    pub fn is_retryable(self) -> bool {
        self == ErrorKind::Internal
    }

    fn openai_type_and_code(self) -> (&'static str, Option<&'static str>) {
        match self {
            ErrorKind::InvalidKey | ErrorKind::KeyRevoked => {
                ("invalid_request_error", Some("invalid_api_key"))
            }
            ErrorKind::WrongSession
            | ErrorKind::UpstreamNotAllowed
            | ErrorKind::SessionDeleted
            | ErrorKind::ReplayMiss => ("invalid_request_error", Some(self.name())),
            ErrorKind::BadRequest => ("invalid_request_error", None),
            ErrorKind::UpstreamUnreachable => ("server_error", Some(self.name())),
            ErrorKind::Internal => ("server_error", None),
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidKey | ErrorKind::KeyRevoked => "authentication_error",
            ErrorKind::WrongSession | ErrorKind::UpstreamNotAllowed | ErrorKind::SessionDeleted => {
                "permission_error"
            }
            ErrorKind::ReplayMiss => "not_found_error",
            ErrorKind::BadRequest => "invalid_request_error",
            ErrorKind::UpstreamUnreachable | ErrorKind::Internal => "api_error",
        }
    }
}

/// The JSON body of an error answer in `api`'s format.
pub fn error_body(api: Api, kind: ErrorKind, message: &str) -> serde_json::Value {
    match api {
        Api::OpenAi => {
            let (error_type, code) = kind.openai_type_and_code();
            json!({"error": {"message": message, "type": error_type, "param": null, "code": code}})
        }
        Api::Anthropic => {
            json!({"type": "error", "error": {"type": kind.anthropic_type(), "message": message}})
        }
    }
}

/// A whole error answer: status, headers and body.
pub fn error_response(api: Api, kind: ErrorKind, message: &str) -> (StatusCode, HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        HeaderName::from_static(SHOULD_RETRY_HEADER),
        HeaderValue::from_static(if kind.is_retryable() { "true" } else { "false" }),
    );
    headers.insert(
        HeaderName::from_static(AMAI_ERROR_HEADER),
        HeaderValue::from_static(kind.name()),
    );
    let body = Bytes::from(error_body(api, kind, message).to_string());
    (kind.status(), headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const ALL: [ErrorKind; 9] = [
        ErrorKind::InvalidKey,
        ErrorKind::KeyRevoked,
        ErrorKind::WrongSession,
        ErrorKind::UpstreamNotAllowed,
        ErrorKind::SessionDeleted,
        ErrorKind::ReplayMiss,
        ErrorKind::BadRequest,
        ErrorKind::UpstreamUnreachable,
        ErrorKind::Internal,
    ];

    fn parsed(body: &Bytes) -> Value {
        serde_json::from_slice(body).expect("json")
    }

    #[test]
    fn openai_format() {
        let (status, headers, body) = error_response(
            Api::OpenAi,
            ErrorKind::ReplayMiss,
            "no recording matches: \"x\"",
        );
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-should-retry"], "false");
        assert_eq!(headers["x-amai-error"], "replay_miss");
        assert_eq!(
            parsed(&body),
            json!({"error": {"message": "no recording matches: \"x\"", "type": "invalid_request_error", "param": null, "code": "replay_miss"}})
        );
        let (status, _, body) = error_response(Api::OpenAi, ErrorKind::InvalidKey, "bad key");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(parsed(&body)["error"]["code"], "invalid_api_key");
    }

    #[test]
    fn anthropic_format() {
        let (status, headers, body) =
            error_response(Api::Anthropic, ErrorKind::InvalidKey, "bad key");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers["x-should-retry"], "false");
        assert_eq!(
            parsed(&body),
            json!({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}})
        );
        let (_, _, body) = error_response(Api::Anthropic, ErrorKind::ReplayMiss, "miss");
        assert_eq!(parsed(&body)["error"]["type"], "not_found_error");
        let (_, _, body) = error_response(Api::Anthropic, ErrorKind::WrongSession, "no");
        assert_eq!(parsed(&body)["error"]["type"], "permission_error");
    }

    #[test]
    fn statuses_and_retry_headers() {
        let expected = [401, 401, 403, 403, 403, 404, 400, 502, 500];
        for (kind, status) in ALL.into_iter().zip(expected) {
            for api in [Api::OpenAi, Api::Anthropic] {
                let (got, headers, _) = error_response(api, kind, "m");
                assert_eq!(got.as_u16(), status, "{kind:?}");
                let retry = if kind == ErrorKind::Internal {
                    "true"
                } else {
                    "false"
                };
                assert_eq!(headers["x-should-retry"], retry, "{kind:?}");
                assert_eq!(headers["x-amai-error"], kind.name());
            }
        }
    }
}
