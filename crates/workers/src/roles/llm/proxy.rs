//! The llm role's HTTP API (axum): OpenAI's `/v1/chat/completions`,
//! `/v1/responses`, `/v1/embeddings`, `/v1/models` and Anthropic's
//! `/v1/messages`, `/v1/messages/count_tokens`, authenticated by session keys
//! (`Authorization: Bearer` or `x-api-key`).
//!
//! Every request is resolved to its session here (key hash → binding →
//! session, refusing unknown or revoked keys, keys of revoked owners, deleted
//! sessions, a key used with another session's `x-amai-session`, upstreams the
//! session does not allow), hashed, and handed to [`super::record`] or
//! [`super::replay`] by the session's mode. Refusals are in the API's own error
//! format with `x-should-retry: false`.

use std::sync::Arc;

use amai_bus::blob::BlobStore;
use amai_bus::proto;
use amai_bus::subjects::AggregateKind;
use amai_llm::canonical::{self, IgnoredFields};
use amai_llm::errors::{error_response, ErrorKind};
use amai_llm::{Api, Endpoint};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, Method};

use super::config::LlmConfig;
use super::model::LlmReadModel;
use super::queries::QueryState;
use super::recorder::SessionWriter;
use super::replay::ReplayRuns;

/// Header naming the session a request is meant for (optional): a key of
/// another session is refused.
pub const SESSION_HEADER: &str = "x-amai-session";
/// Header overriding the replay timing of one request (`recorded` | `instant`).
pub const REPLAY_TIMING_HEADER: &str = "x-amai-replay-timing";
/// Header whose value becomes the records' correlation id.
pub const CORRELATION_HEADER: &str = "x-amai-correlation-id";

/// Everything the handlers share.
#[derive(Clone)]
pub(crate) struct Proxy {
    pub(crate) config: Arc<LlmConfig>,
    pub(crate) model: LlmReadModel,
    pub(crate) queries: QueryState,
    pub(crate) writer: SessionWriter,
    pub(crate) blobs: BlobStore,
    pub(crate) http: reqwest::Client,
    pub(crate) replay: ReplayRuns,
}

/// A request resolved to its session.
pub(crate) struct Call {
    pub(crate) endpoint: Endpoint,
    pub(crate) session: proto::LlmSession,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) json: Option<serde_json::Value>,
    pub(crate) request_hash: [u8; 32],
    pub(crate) correlation: String,
}

impl Call {
    pub(crate) fn api(&self) -> Api {
        self.endpoint.api()
    }

    pub(crate) fn session_id(&self) -> &str {
        &self.session.session_id
    }

    /// The owner action the session's mode comes from (records cite it).
    pub(crate) fn cause(&self) -> &str {
        &self.session.mode_event_id
    }

    pub(crate) fn options(&self) -> proto::LlmMatchOptions {
        self.session.options.clone().unwrap_or_default()
    }
}

/// An answer in the API's error format.
pub(crate) fn refuse(api: Api, kind: ErrorKind, message: impl Into<String>) -> Response {
    let (status, headers, body) = error_response(api, kind, &message.into());
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// 404 for a path that is not an endpoint, in the API's error format.
fn not_an_endpoint(api: Api, message: String) -> Response {
    let body = amai_llm::errors::error_body(api, ErrorKind::BadRequest, &message);
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = http::StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert("x-should-retry", http::HeaderValue::from_static("false"));
    resp
}

/// The router of the HTTP API.
pub(crate) fn router(proxy: Proxy) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(proxy)
}

fn session_key(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))?;
        return Some(token.trim().to_string());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

async fn handle(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let Some(endpoint) = Endpoint::from_request(&parts.method, &path) else {
        let api = if path.starts_with("/v1/messages") {
            Api::Anthropic
        } else {
            Api::OpenAi
        };
        return not_an_endpoint(
            api,
            format!(
                "{} {path} is not an endpoint of this proxy (OpenAI: /v1/chat/completions, /v1/responses, /v1/embeddings, /v1/models; Anthropic: /v1/messages, /v1/messages/count_tokens)",
                parts.method
            ),
        );
    };
    let api = endpoint.api();
    let body = match axum::body::to_bytes(body, proxy.config.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                api,
                ErrorKind::BadRequest,
                format!(
                    "cannot read the request body (at most {} bytes): {e}",
                    proxy.config.max_request_bytes
                ),
            )
        }
    };
    let session = match proxy.resolve_session(endpoint, &parts.headers).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let json = if parts.method == Method::GET {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) if v.is_object() => Some(v),
            Ok(_) => {
                return refuse(
                    api,
                    ErrorKind::BadRequest,
                    "the request body must be a JSON object",
                )
            }
            Err(e) => {
                return refuse(
                    api,
                    ErrorKind::BadRequest,
                    format!("the request body is not valid JSON: {e}"),
                )
            }
        }
    };
    let options = session.options.clone().unwrap_or_default();
    let ignored = IgnoredFields::from_options(&options);
    let request_hash =
        match canonical::request_hash(parts.method.as_str(), &path, json.as_ref(), &ignored) {
            Ok(h) => h,
            Err(e) => {
                return refuse(
                    api,
                    ErrorKind::BadRequest,
                    format!("the request body cannot be canonicalised (RFC 8785): {e}"),
                )
            }
        };
    let correlation = parts
        .headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| session.session_id.clone());
    let call = Call {
        endpoint,
        method: parts.method,
        path,
        headers: parts.headers,
        body,
        json,
        request_hash,
        correlation,
        session,
    };
    match proto::LlmMode::try_from(call.session.mode) {
        Ok(proto::LlmMode::Record) => super::record::record(&proxy, call).await,
        Ok(proto::LlmMode::Replay) => super::replay::replay(&proxy, call).await,
        _ => refuse(
            api,
            ErrorKind::Internal,
            "the session has no mode; set one with `amai llm session record|replay`",
        ),
    }
}

impl Proxy {
    /// The session of the request's key, or the refusal to answer.
    async fn resolve_session(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
    ) -> Result<proto::LlmSession, Response> {
        let api = endpoint.api();
        let internal = |e: super::model::ReadModelError| {
            tracing::error!(error = %e, "llm read model");
            refuse(
                api,
                ErrorKind::Internal,
                "the llm read model failed; see the role's log",
            )
        };
        let Some(key) = session_key(headers) else {
            return Err(refuse(
                api,
                ErrorKind::InvalidKey,
                "no session key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>` (create one with `amai llm session create`)",
            ));
        };
        let sha = amai_bus::llm::key_sha256(&key);
        let mut binding = self.model.key(&sha).map_err(internal)?;
        if binding.is_none() {
            // A session created a moment ago may not be in this instance's
            // projection yet: wait (bounded) for it to catch up on the owners'
            // actions, then look again.
            self.catch_up_on_owner_actions().await;
            binding = self.model.key(&sha).map_err(internal)?;
        }
        let Some(binding) = binding else {
            return Err(refuse(
                api,
                ErrorKind::InvalidKey,
                "unknown session key (keys are issued by `amai llm session create` / `amai llm key issue`)",
            ));
        };
        if binding.revoked {
            return Err(refuse(
                api,
                ErrorKind::KeyRevoked,
                format!("this key of llm session {} was revoked; issue a new one with `amai llm key issue`", binding.session_id),
            ));
        }
        if let Some(wanted) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
            if wanted != binding.session_id {
                return Err(refuse(
                    api,
                    ErrorKind::WrongSession,
                    format!("this key belongs to another llm session, not {wanted}"),
                ));
            }
        }
        let session = self
            .model
            .session(&binding.session_id)
            .map_err(internal)?
            .ok_or_else(|| {
                refuse(
                    api,
                    ErrorKind::Internal,
                    "the key's session is not in the read model",
                )
            })?;
        if session.owner_revoked {
            return Err(refuse(
                api,
                ErrorKind::KeyRevoked,
                format!(
                    "the owner of llm session {} was revoked; its keys no longer work",
                    session.session_id
                ),
            ));
        }
        if session.deleted {
            return Err(refuse(
                api,
                ErrorKind::SessionDeleted,
                format!("llm session {} was deleted", session.session_id),
            ));
        }
        let allowed = session.upstreams.is_empty()
            || session.upstreams.contains(&(endpoint.upstream() as i32));
        if !allowed {
            return Err(refuse(
                api,
                ErrorKind::UpstreamNotAllowed,
                format!(
                    "llm session {} does not allow the {} API",
                    session.session_id,
                    match api {
                        Api::OpenAi => "OpenAI",
                        Api::Anthropic => "Anthropic",
                    }
                ),
            ));
        }
        Ok(session)
    }

    async fn catch_up_on_owner_actions(&self) {
        let stream = AggregateKind::Agent.stream();
        let last = match self.queries.store.jetstream().get_stream(stream).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => info.state.last_sequence,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let position = amai_bus::Position::new(stream, last);
        let _ = self
            .queries
            .projection
            .wait_for(&position, self.config.wait_for_projection)
            .await;
    }
}
