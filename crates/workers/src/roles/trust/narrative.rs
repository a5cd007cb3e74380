//! The LLM narrative of trust reports: when configured ([`NarrativeConfig`]),
//! `amai.query.trust.report` asks an LLM, through Amai's own LLM proxy (the
//! llm role) in a recorded session, for a short human-readable report on the
//! agent, written from the deterministic markdown of the model.
//!
//! This module owns:
//! - the settings ([`NarrativeConfig`]: the proxy's address, the model, the
//!   time the whole narrative may take);
//! - the request ([`request_body`]): a pure function of the model and the
//!   deterministic markdown (a fixed system prompt, `temperature: 0`), so a
//!   replay session of the recording answers the same request with the same
//!   bytes;
//! - the session: for every narrated report the trust service (`svc-trust`)
//!   opens a RECORD session on its own chain (`llm.session_opened`, OpenAI
//!   upstream, the SHA-256 of a key generated here and never stored; not
//!   when nothing listens at the proxy's address), waits
//!   (bounded) until the llm role knows the key, and makes one
//!   `POST /v1/chat/completions` call with it;
//! - the answer ([`compose`]): the narrative followed by the deterministic
//!   markdown under `## Model report`, with source `llm:<session_id>`.
//!
//! The numeric score never depends on any of this: the narrative reads the
//! model's markdown, nothing reads the narrative. Any failure (proxy
//! unreachable, upstream error, refusal, timeout) is logged as a warning and
//! the report is the deterministic markdown with source `model`.

use std::net::SocketAddr;
use std::time::Duration;

use amai_bus::llm::{key_sha256, session_id, SessionKey};
use amai_bus::proto::{self, payload::Kind};
use amai_bus::store::AppendErrorKind;
use amai_bus::subjects::Aggregate;
use amai_bus::{EventDraft, EventStore};

use crate::reactor::ServiceSigner;

/// The llm role's default address (`AMAI_LLM_ADDR`'s default).
pub const DEFAULT_PROXY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8088);
/// How long a narrative may take by default (session, wait, LLM call).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The proxy's path the narrative calls (OpenAI chat completions).
pub const CHAT_PATH: &str = "/v1/chat/completions";
/// Heading of the deterministic markdown after the narrative.
pub const MODEL_REPORT_HEADING: &str = "## Model report";
/// The system prompt of every narrative request (part of the request hash:
/// changing it changes which recordings a replay matches).
pub const SYSTEM_PROMPT: &str = "You are Amai's trust analyst. You are given the \
deterministic trust report of one agent, computed by Amai's behavioural model from \
signed events: its score, the components of the score, recent score changes with \
their reasons, and anomaly alerts. Write a short report for an operator: what the \
agent does, what moved its score and why, and what deserves attention. Do not \
invent numbers, events or facts; the numbers in the model report are authoritative \
and the only ones you may quote. Answer in plain markdown, at most a few short \
paragraphs, without a title.";

/// How often a call refused for an unknown key is retried while the llm role
/// catches up on the session just opened.
const UNKNOWN_KEY_RETRY: Duration = Duration::from_millis(100);
/// How long an unknown key is retried (within the overall timeout).
const UNKNOWN_KEY_PATIENCE: Duration = Duration::from_secs(5);
/// Appends of the session's opening tried before giving up (conflicts on the
/// service's own chain, e.g. another instance opening one at the same time).
const APPEND_ATTEMPTS: usize = 5;
/// Largest answer body read from the proxy.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Settings of the LLM narrative of trust reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarrativeConfig {
    /// The llm role's HTTP address (its OpenAI-compatible API is at `/v1`).
    pub proxy: SocketAddr,
    /// The upstream model (`model` of the chat completion request).
    pub model: String,
    /// How long the whole narrative may take (opening the session, waiting
    /// for the llm role to know it, the LLM call); past it the report is the
    /// deterministic markdown.
    pub timeout: Duration,
}

impl NarrativeConfig {
    /// Narratives from `model` through the proxy at [`DEFAULT_PROXY`], at
    /// most [`DEFAULT_TIMEOUT`] each.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            proxy: DEFAULT_PROXY,
            model: model.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The llm role's HTTP address.
    pub fn proxy(mut self, addr: SocketAddr) -> Self {
        self.proxy = addr;
        self
    }

    /// How long a narrative may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn url(&self) -> String {
        format!("http://{}{CHAT_PATH}", self.proxy)
    }
}

/// Why a narrative could not be had (the report is then the model's alone).
#[derive(Debug, thiserror::Error)]
pub enum NarrativeError {
    /// Nothing listens at the proxy's address (checked before a session is
    /// opened, so a stopped llm role costs no event).
    #[error("nothing answers at the llm proxy's address {addr}: {source}")]
    Unreachable {
        /// The proxy's address.
        addr: SocketAddr,
        /// The connection error.
        #[source]
        source: std::io::Error,
    },
    /// The session's opening could not be signed or appended.
    #[error("cannot open the llm session on the trust service's chain: {0}")]
    Open(String),
    /// The proxy could not be reached, or its answer not read.
    #[error("llm proxy at {addr}: {source}")]
    Proxy {
        /// The proxy's address.
        addr: SocketAddr,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The llm role did not know the session's key in time.
    #[error("the llm role did not know the new session {session} within {waited:?}")]
    UnknownSession {
        /// The session.
        session: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The proxy or the upstream answered an error.
    #[error("the llm answered {status}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// `x-amai-error` and the start of the body.
        detail: String,
    },
    /// The answer is not a chat completion with a text.
    #[error("the llm's answer has no text: {0}")]
    NoText(String),
    /// The narrative took longer than [`NarrativeConfig::timeout`].
    #[error("no narrative within {0:?}")]
    Timeout(Duration),
}

/// The chat completion request of a narrative of `markdown` by `model`: a
/// pure function of both (the same arguments give the same bytes).
pub fn request_body(model: &str, markdown: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": markdown},
        ],
    });
    // Serialising a `Value` cannot fail (string keys only).
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The narrated report: the narrative, then the deterministic markdown under
/// [`MODEL_REPORT_HEADING`].
pub fn compose(narrative: &str, markdown: &str) -> String {
    format!(
        "{}\n\n{MODEL_REPORT_HEADING}\n\n{}",
        narrative.trim_end(),
        markdown.trim_start()
    )
}

/// The text of a chat completion answer (`choices[0].message.content`).
pub fn answer_text(body: &[u8]) -> Result<String, NarrativeError> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| NarrativeError::NoText(format!("not JSON: {e}")))?;
    let text = json
        .pointer("/choices/0/message/content")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| NarrativeError::NoText("no choices[0].message.content".into()))?;
    if text.trim().is_empty() {
        return Err(NarrativeError::NoText("an empty content".into()));
    }
    Ok(text.to_string())
}

/// A report as the query answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Narrated {
    /// The markdown.
    pub markdown: String,
    /// `model`, or `llm:<session_id>` when an LLM wrote the narrative.
    pub source: String,
}

/// Asks the LLM for narratives, as the trust service.
pub(crate) struct Narrator {
    config: NarrativeConfig,
    store: EventStore,
    signer: ServiceSigner,
    http: reqwest::Client,
}

impl Narrator {
    pub(crate) fn new(config: NarrativeConfig, store: EventStore, signer: ServiceSigner) -> Self {
        // Loopback only, never through a proxy of the environment.
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            config,
            store,
            signer,
            http,
        }
    }

    /// The report of `agent` whose deterministic markdown is `markdown`:
    /// narrated when the LLM answers in time, else the markdown alone. Never
    /// fails.
    pub(crate) async fn report(&self, agent: &str, markdown: String) -> Narrated {
        let timeout = self.config.timeout;
        let outcome = match tokio::time::timeout(timeout, self.narrate(&markdown)).await {
            Ok(r) => r,
            Err(_) => Err(NarrativeError::Timeout(timeout)),
        };
        match outcome {
            Ok((session, text)) => Narrated {
                markdown: compose(&text, &markdown),
                source: format!("llm:{session}"),
            },
            Err(e) => {
                tracing::warn!(%agent, error = %e, "trust report without its LLM narrative; answering the model's report");
                Narrated {
                    markdown,
                    source: "model".to_string(),
                }
            }
        }
    }

    /// Opens a session and asks for the narrative; returns the session and the text.
    async fn narrate(&self, markdown: &str) -> Result<(String, String), NarrativeError> {
        let addr = self.config.proxy;
        drop(
            tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| NarrativeError::Unreachable { addr, source })?,
        );
        let key = SessionKey::generate();
        let key = key.expose();
        let session = self.open_session(key).await?;
        let body = request_body(&self.config.model, markdown);
        let text = self.ask(&session, key, body).await?;
        Ok((session, text))
    }

    /// Appends `llm.session_opened` (RECORD, OpenAI) on the service's own chain.
    async fn open_session(&self, key: &str) -> Result<String, NarrativeError> {
        let agg =
            Aggregate::agent(&self.signer.id).map_err(|e| NarrativeError::Open(e.to_string()))?;
        let mut head = self
            .store
            .chain_head(&agg)
            .await
            .map_err(|e| NarrativeError::Open(e.to_string()))?;
        let mut last = String::new();
        for _ in 0..APPEND_ATTEMPTS {
            let event_id = uuid::Uuid::now_v7();
            let session = session_id(&self.signer.id, &event_id.to_string());
            let signed = EventDraft::new(
                agg.clone(),
                Kind::LlmSessionOpened(proto::LlmSessionOpened {
                    session_id: session.clone(),
                    mode: proto::LlmMode::Record as i32,
                    upstreams: vec![proto::LlmUpstream::Openai as i32],
                    options: Some(proto::LlmMatchOptions::default()),
                    key_sha256: key_sha256(key).to_vec(),
                    replay_from: String::new(),
                    cassette: None,
                }),
            )
            .id(event_id)
            .after(head.aggregate_seq, head.hash)
            .sign(&self.signer.keys, &self.signer.id);
            match self.store.append(signed).await {
                Ok(_) => return Ok(session),
                Err(e) if e.kind() == AppendErrorKind::Conflict => {
                    last = e.to_string();
                    head = match e.current_head() {
                        Some(h) => h.clone(),
                        None => self
                            .store
                            .chain_head(&agg)
                            .await
                            .map_err(|e| NarrativeError::Open(e.to_string()))?,
                    };
                }
                Err(e) if e.is_retryable() => {
                    last = e.to_string();
                    tokio::time::sleep(UNKNOWN_KEY_RETRY).await;
                }
                Err(e) => return Err(NarrativeError::Open(e.to_string())),
            }
        }
        Err(NarrativeError::Open(format!(
            "still conflicting after {APPEND_ATTEMPTS} attempts: {last}"
        )))
    }

    /// One chat completion with `key`, retried while the llm role does not
    /// know the key yet (it learns it from `AMAI_AGENTS`).
    async fn ask(&self, session: &str, key: &str, body: Vec<u8>) -> Result<String, NarrativeError> {
        let addr = self.config.proxy;
        let transport = |source| NarrativeError::Proxy { addr, source };
        let started = tokio::time::Instant::now();
        loop {
            let resp = self
                .http
                .post(self.config.url())
                .bearer_auth(key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .map_err(transport)?;
            let status = resp.status();
            let kind = resp
                .headers()
                .get("x-amai-error")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if status.as_u16() == 401 && kind == "invalid_key" {
                if started.elapsed() >= UNKNOWN_KEY_PATIENCE {
                    return Err(NarrativeError::UnknownSession {
                        session: session.to_string(),
                        waited: started.elapsed(),
                    });
                }
                tokio::time::sleep(UNKNOWN_KEY_RETRY).await;
                continue;
            }
            let bytes = read_limited(resp).await.map_err(transport)?;
            if !status.is_success() {
                let excerpt: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
                let detail = if kind.is_empty() {
                    excerpt
                } else {
                    format!("{kind}: {excerpt}")
                };
                return Err(NarrativeError::Refused {
                    status: status.as_u16(),
                    detail,
                });
            }
            return answer_text(&bytes);
        }
    }
}

/// Reads an answer's body, at most [`MAX_ANSWER_BYTES`] of it.
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_pure_function_of_model_and_markdown() {
        let a = request_body("gpt-test", "# Trust report\n\nscore 61.2");
        assert_eq!(a, request_body("gpt-test", "# Trust report\n\nscore 61.2"));
        assert_ne!(a, request_body("gpt-other", "# Trust report\n\nscore 61.2"));
        assert_ne!(a, request_body("gpt-test", "# Trust report\n\nscore 61.3"));
        let json: serde_json::Value = serde_json::from_slice(&a).expect("json");
        assert_eq!(json["temperature"], 0);
        assert_eq!(json["messages"][0]["content"], SYSTEM_PROMPT);
        assert_eq!(json["messages"][1]["role"], "user");
        assert_eq!(
            json["messages"][1]["content"],
            "# Trust report\n\nscore 61.2"
        );
        assert!(json.get("stream").is_none());
    }

    #[test]
    fn the_narrative_comes_first_and_the_model_report_follows() {
        let md = compose("The agent is fine.\n", "# Trust report\n");
        assert_eq!(
            md,
            "The agent is fine.\n\n## Model report\n\n# Trust report\n"
        );
    }

    #[test]
    fn answers_without_text_are_refused() {
        let ok = br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#;
        assert_eq!(answer_text(ok).expect("text"), "hi");
        for bad in [
            &b"not json"[..],
            br#"{"choices":[]}"#,
            br#"{"choices":[{"message":{"content":null}}]}"#,
            br#"{"choices":[{"message":{"content":"  "}}]}"#,
        ] {
            assert!(answer_text(bad).is_err());
        }
    }
}
