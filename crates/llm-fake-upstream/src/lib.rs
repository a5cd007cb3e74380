//! A fake LLM upstream for Amai's tests and `amai bench`.
//!
//! [`FakeUpstream`] is an HTTP/1.1 server on `127.0.0.1` (random port) that speaks
//! enough of the **OpenAI** and **Anthropic** HTTP APIs for the official SDKs
//! (Python `openai` and `anthropic`) to work against it unchanged, JSON and SSE
//! streaming alike:
//!
//! | API       | Endpoint                          | Notes                                   |
//! |-----------|-----------------------------------|-----------------------------------------|
//! | OpenAI    | `POST /v1/chat/completions`       | text or `tool_calls`; SSE with `[DONE]` |
//! | OpenAI    | `POST /v1/responses`              | `message` or `function_call` output     |
//! | OpenAI    | `POST /v1/embeddings`             | `float` and `base64` encodings          |
//! | OpenAI    | `GET /v1/models`, `/v1/models/{id}` | Anthropic format for Anthropic clients |
//! | Anthropic | `POST /v1/messages`               | `text` / `tool_use` blocks; SSE events  |
//! | Anthropic | `POST /v1/messages/count_tokens`  | `{"input_tokens": n}`                   |
//!
//! Answers follow the shapes of the official API references (ids such as
//! `chatcmpl-…`, `resp_…`, `msg_…`, `object`, `created`, `usage`, the request's
//! `model` echoed back) and **differ between calls**: every generated answer
//! carries a per-server counter (`"fake answer #7 to: <last user text>"`) and ids
//! that embed a per-server random nonce and that counter, so a test can tell a
//! replayed answer from a fresh upstream call.
//!
//! When the request has `tools` (and its last message is not a tool result, and
//! `tool_choice` is not `"none"`), the answer is a call of the first tool with
//! arguments made up from its JSON schema (`{"city":"Paris"}` for a required
//! string property `city`).
//!
//! # Behaviour switches
//!
//! The request's `model` selects failure modes, so SDK-driven tests can trigger them:
//!
//! - `fake-429`: 429 with `retry-after: 1` and the API's `rate_limit` error body.
//! - `fake-529`: Anthropic 529 `overloaded_error`; on OpenAI endpoints a 503
//!   `server_error` ("The server is overloaded…").
//! - `fake-500`: 500 with the API's server error body.
//! - `fake-404`: 404 with the API's "model not found" body (never retried by SDKs).
//! - `fake-429-once`, `fake-529-once`, `fake-500-once`: fail only the first request
//!   with that model on this server, then answer normally (to test retries).
//! - `fake-cut`: a stream that sends a few events and then aborts the connection
//!   (no terminal event, no final HTTP chunk); a non-streamed answer is cut after
//!   half of its JSON body.
//! - `fake-cut-clean`: like `fake-cut`, but the HTTP body ends cleanly (only the
//!   terminal SSE event is missing).
//! - `fake-midstream-error`: a stream that sends some events, then the API's error
//!   event (Anthropic `event: error` with `overloaded_error`; chat completions a
//!   `data: {"error": {…}}` chunk; responses `event: error`) and ends. A
//!   non-streamed request gets a 500.
//! - `fake-slow`: 20 ms between stream events (20 ms before a JSON answer).
//! - `fake-gated`: a stream that sends its first event, then waits until the
//!   test calls [`FakeUpstream::open_gate`] (to observe what a client gets
//!   while a stream is still running, without timing).
//!
//! # Realism
//!
//! - Auth: OpenAI endpoints require `Authorization: Bearer <openai key>`, Anthropic
//!   ones `x-api-key: <anthropic key>` (or `Authorization: Bearer <anthropic key>`,
//!   which the `anthropic` Python SDK 2.x sends instead) and an
//!   `anthropic-version` header (keys set
//!   with [`FakeUpstream::builder`]; defaults [`DEFAULT_OPENAI_KEY`] and
//!   [`DEFAULT_ANTHROPIC_KEY`]); failures are 401 (400 for the version) in the
//!   API's error format.
//! - Validation: a body that is not a JSON object, or without `model` (Anthropic:
//!   also `messages`, and `max_tokens` for messages), is a 400 in the API's format.
//! - Headers: OpenAI answers carry `x-request-id`, `openai-processing-ms`,
//!   `openai-version` and `x-ratelimit-*`; Anthropic answers carry `request-id` and
//!   `anthropic-ratelimit-*`.
//!
//! Every request is counted ([`FakeUpstream::hits`], [`FakeUpstream::hits_for`])
//! and the last [`REQUEST_LOG_CAPACITY`] are kept ([`FakeUpstream::requests`],
//! [`FakeUpstream::last_request_headers`]) so a proxy test can assert what was
//! forwarded (say, that the upstream API key arrived and the client's session key
//! did not).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let fake = amai_llm_fake_upstream::FakeUpstream::builder()
//!     .openai_key("sk-test")
//!     .start()
//!     .await?;
//! println!("OPENAI_BASE_URL={}", fake.openai_base_url());
//! println!("ANTHROPIC_BASE_URL={}", fake.anthropic_base_url());
//! fake.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
// Helpers return a ready HTTP error `Response` on their error paths; its size does
// not matter for a test server.
#![allow(clippy::result_large_err)]

mod anthropic;
mod common;
mod openai;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The OpenAI API key [`FakeUpstream::start`] accepts.
pub const DEFAULT_OPENAI_KEY: &str = "sk-fake-openai";
/// The Anthropic API key [`FakeUpstream::start`] accepts.
pub const DEFAULT_ANTHROPIC_KEY: &str = "sk-fake-anthropic";
/// How many requests [`FakeUpstream::requests`] keeps (the most recent ones).
pub const REQUEST_LOG_CAPACITY: usize = 1024;
/// Largest request body the fake accepts.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// How long [`FakeUpstream::shutdown`] waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: Method,
    /// Path, without the query string (`/v1/chat/completions`).
    pub path: String,
    /// Query string, if any (without the `?`).
    pub query: Option<String>,
    /// All request headers.
    pub headers: HeaderMap,
    /// The raw request body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Configures a [`FakeUpstream`] before it starts.
#[derive(Clone, Debug)]
pub struct FakeUpstreamBuilder {
    openai_key: String,
    anthropic_key: String,
}

impl Default for FakeUpstreamBuilder {
    fn default() -> Self {
        Self {
            openai_key: DEFAULT_OPENAI_KEY.to_owned(),
            anthropic_key: DEFAULT_ANTHROPIC_KEY.to_owned(),
        }
    }
}

impl FakeUpstreamBuilder {
    /// The key OpenAI endpoints require in `Authorization: Bearer <key>`.
    pub fn openai_key(mut self, key: impl Into<String>) -> Self {
        self.openai_key = key.into();
        self
    }

    /// The key Anthropic endpoints require in `x-api-key: <key>`.
    pub fn anthropic_key(mut self, key: impl Into<String>) -> Self {
        self.anthropic_key = key.into();
        self
    }

    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    pub async fn start(self) -> Result<FakeUpstream, std::io::Error> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            openai_key: self.openai_key,
            anthropic_key: self.anthropic_key,
            nonce: random_u64() & 0xffff_ffff_ffff,
            answers: AtomicU64::new(0),
            request_seq: AtomicU64::new(0),
            log: Mutex::new(Log::default()),
            failed_once: Mutex::new(HashSet::new()),
            gate: tokio::sync::watch::Sender::new(false),
        });
        let router = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        // SSE events are written one by one: TCP_NODELAY, or Nagle holds each
        // small write until the client's (delayed, ~40 ms) ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            // Either an explicit signal or the sender being dropped stops the server.
            let _ = rx.await;
        });
        let task = tokio::spawn(async move {
            // The only error is the listener failing, after which there is nothing to serve.
            let _ = server.await;
        });
        Ok(FakeUpstream {
            addr,
            shared,
            stop: Some(tx),
            task: Some(task),
        })
    }
}

/// A running fake OpenAI + Anthropic upstream on `127.0.0.1` (see the crate docs).
///
/// Dropping it stops the server (in-flight streams are told to finish); use
/// [`FakeUpstream::shutdown`] to wait for that.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Starts a fake with the default keys ([`DEFAULT_OPENAI_KEY`],
    /// [`DEFAULT_ANTHROPIC_KEY`]) on `127.0.0.1:0`.
    pub async fn start() -> Result<FakeUpstream, std::io::Error> {
        Self::builder().start().await
    }

    /// A builder to choose the accepted API keys.
    pub fn builder() -> FakeUpstreamBuilder {
        FakeUpstreamBuilder::default()
    }

    /// The socket address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for OpenAI clients: `http://127.0.0.1:PORT/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for Anthropic clients: `http://127.0.0.1:PORT` (no `/v1`, as the
    /// Anthropic SDKs add it to every path).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OpenAI key this fake accepts.
    pub fn openai_key(&self) -> &str {
        &self.shared.openai_key
    }

    /// The Anthropic key this fake accepts.
    pub fn anthropic_key(&self) -> &str {
        &self.shared.anthropic_key
    }

    /// Lets every `fake-gated` stream go on past its first event (they all
    /// wait until this is called).
    pub fn open_gate(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Total number of HTTP requests received (any path, any outcome).
    pub fn hits(&self) -> u64 {
        self.shared.log().total
    }

    /// Number of HTTP requests received for `path` (without query string), e.g.
    /// `hits_for("/v1/chat/completions")`.
    pub fn hits_for(&self, path: &str) -> u64 {
        self.shared.log().by_path.get(path).copied().unwrap_or(0)
    }

    /// Number of answers generated so far (the counter in `"fake answer #N"`).
    pub fn answers(&self) -> u64 {
        self.shared.answers.load(Ordering::Relaxed)
    }

    /// Headers of the most recent request, if any.
    pub fn last_request_headers(&self) -> Option<HeaderMap> {
        self.shared.log().recent.back().map(|r| r.headers.clone())
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.log().recent.back().cloned()
    }

    /// The most recent requests, oldest first (at most [`REQUEST_LOG_CAPACITY`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log().recent.iter().cloned().collect()
    }

    /// Stops accepting connections and waits (up to 2 s) for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// State shared by the handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) openai_key: String,
    pub(crate) anthropic_key: String,
    /// Random per-server value embedded in ids, so two fakes never produce the same id.
    pub(crate) nonce: u64,
    answers: AtomicU64,
    request_seq: AtomicU64,
    log: Mutex<Log>,
    failed_once: Mutex<HashSet<String>>,
    gate: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Log {
    total: u64,
    by_path: HashMap<String, u64>,
    recent: VecDeque<RecordedRequest>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next answer number (1, 2, …), shared by all endpoints.
    pub(crate) fn next_answer(&self) -> u64 {
        self.answers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The next request number, for request ids.
    pub(crate) fn next_request(&self) -> u64 {
        self.request_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// True the first time it is called for `model` (for the `-once` switches).
    pub(crate) fn first_failure(&self, model: &str) -> bool {
        self.failed_once
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(model.to_owned())
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/responses", post(openai::responses))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{model}", get(openai::get_model))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .fallback(common::not_found)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

/// Counts and records every request (buffering its body) before routing it.
async fn record(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => Bytes::new(),
    };
    {
        let mut log = shared.log();
        log.total += 1;
        *log.by_path.entry(parts.uri.path().to_owned()).or_insert(0) += 1;
        if log.recent.len() == REQUEST_LOG_CAPACITY {
            log.recent.pop_front();
        }
        log.recent.push_back(RecordedRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// A random u64 from the standard library's per-process random hasher keys.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}
