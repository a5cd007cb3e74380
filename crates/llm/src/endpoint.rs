//! The proxied endpoints: which method and path a request must have, which API and
//! upstream it belongs to, and the path to append to that upstream's base URL.
//!
//! Paths match exactly (no trailing slash, no query string: the caller passes the
//! request's path without its query).

use amai_proto::v1::LlmUpstream;
use http::Method;
use serde_json::Value;

/// OpenAI's default base URL; it ends in `/v1`, so upstream paths leave it out.
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Anthropic's default base URL; it has no `/v1`, so upstream paths carry it.
pub const ANTHROPIC_DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The HTTP API an endpoint belongs to (and whose error format it answers in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// The OpenAI API.
    OpenAi,
    /// The Anthropic API.
    Anthropic,
}

impl Api {
    /// The upstream serving this API.
    pub fn upstream(self) -> LlmUpstream {
        match self {
            Api::OpenAi => LlmUpstream::Openai,
            Api::Anthropic => LlmUpstream::Anthropic,
        }
    }

    /// The API of an upstream (`None` for `UNSPECIFIED`).
    pub fn from_upstream(upstream: LlmUpstream) -> Option<Api> {
        match upstream {
            LlmUpstream::Openai => Some(Api::OpenAi),
            LlmUpstream::Anthropic => Some(Api::Anthropic),
            LlmUpstream::Unspecified => None,
        }
    }

    /// The public base URL used when none is configured.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Api::OpenAi => OPENAI_DEFAULT_BASE_URL,
            Api::Anthropic => ANTHROPIC_DEFAULT_BASE_URL,
        }
    }
}

/// One proxied endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// OpenAI `GET /v1/models`.
    Models,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::ChatCompletions,
        Endpoint::Responses,
        Endpoint::Embeddings,
        Endpoint::Models,
        Endpoint::Messages,
        Endpoint::CountTokens,
    ];

    /// The endpoint a request is for, if any: the method and the exact path.
    pub fn from_request(method: &Method, path: &str) -> Option<Endpoint> {
        Endpoint::ALL
            .into_iter()
            .find(|endpoint| endpoint.method() == method && endpoint.path() == path)
    }

    /// The request method.
    pub fn method(self) -> Method {
        match self {
            Endpoint::Models => Method::GET,
            _ => Method::POST,
        }
    }

    /// The path the proxy serves (the same as the public API's).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Models => "/v1/models",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// The path to append to the upstream's base URL: OpenAI's base URL already ends
    /// in `/v1`, Anthropic's does not.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Responses => "/responses",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Models => "/models",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// The API this endpoint belongs to.
    pub fn api(self) -> Api {
        match self {
            Endpoint::ChatCompletions
            | Endpoint::Responses
            | Endpoint::Embeddings
            | Endpoint::Models => Api::OpenAi,
            Endpoint::Messages | Endpoint::CountTokens => Api::Anthropic,
        }
    }

    /// The upstream serving this endpoint.
    pub fn upstream(self) -> LlmUpstream {
        self.api().upstream()
    }

    /// Whether the endpoint can answer with a server-sent-events stream.
    pub fn can_stream(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages
        )
    }
}

/// Whether a request body asks for a streamed answer (`"stream": true`).
pub fn is_streaming_request(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_endpoint_is_found_by_its_own_method_and_path() {
        for endpoint in Endpoint::ALL {
            assert_eq!(
                Endpoint::from_request(&endpoint.method(), endpoint.path()),
                Some(endpoint)
            );
        }
    }

    #[test]
    fn paths_match_exactly() {
        assert_eq!(
            Endpoint::from_request(&Method::POST, "/v1/chat/completions/"),
            None
        );
        assert_eq!(Endpoint::from_request(&Method::POST, "/v1/messages/"), None);
        assert_eq!(
            Endpoint::from_request(&Method::POST, "/chat/completions"),
            None
        );
        assert_eq!(
            Endpoint::from_request(&Method::GET, "/v1/chat/completions"),
            None
        );
        assert_eq!(Endpoint::from_request(&Method::POST, "/v1/models"), None);
        assert_eq!(
            Endpoint::from_request(&Method::GET, "/v1/models"),
            Some(Endpoint::Models)
        );
    }

    #[test]
    fn upstream_paths_follow_each_base_url() {
        assert_eq!(
            format!(
                "{}{}",
                OPENAI_DEFAULT_BASE_URL,
                Endpoint::ChatCompletions.upstream_path()
            ),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            format!(
                "{}{}",
                ANTHROPIC_DEFAULT_BASE_URL,
                Endpoint::CountTokens.upstream_path()
            ),
            "https://api.anthropic.com/v1/messages/count_tokens"
        );
        assert_eq!(Endpoint::Messages.upstream(), LlmUpstream::Anthropic);
        assert_eq!(Endpoint::Embeddings.upstream(), LlmUpstream::Openai);
        assert_eq!(Endpoint::Models.api(), Api::OpenAi);
    }

    #[test]
    fn streaming_is_stream_true_only() {
        assert!(is_streaming_request(&json!({"stream": true})));
        assert!(!is_streaming_request(&json!({"stream": false})));
        assert!(!is_streaming_request(&json!({"stream": "true"})));
        assert!(!is_streaming_request(&json!({})));
        assert!(!is_streaming_request(&json!([1])));
    }
}
