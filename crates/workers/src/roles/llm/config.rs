//! The llm role's settings: upstream base URLs and API keys, the blob
//! threshold, limits. Built from `AMAI_LLM_*`, `OPENAI_API_KEY` and
//! `ANTHROPIC_API_KEY` by [`LlmConfig::from_env`], or with the builder.
//!
//! The upstream API keys are secrets: they are added to upstream requests
//! server-side only, and `Debug` never prints them.

use std::net::SocketAddr;
use std::time::Duration;

/// Default address of the HTTP API (`--llm-addr` / `AMAI_LLM_ADDR`).
pub const DEFAULT_LLM_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8088);
/// Default OpenAI base URL (`AMAI_LLM_OPENAI_URL`); it ends in `/v1`.
pub const DEFAULT_OPENAI_URL: &str = "https://api.openai.com/v1";
/// Default Anthropic base URL (`AMAI_LLM_ANTHROPIC_URL`); it has no `/v1`.
pub const DEFAULT_ANTHROPIC_URL: &str = "https://api.anthropic.com";
/// Bodies (and encoded streams) above this many bytes go to the blob store.
pub const DEFAULT_BLOB_THRESHOLD: usize = 64 * 1024;
/// Largest request body the proxy accepts.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// The llm role's settings (builder style).
#[derive(Clone)]
pub struct LlmConfig {
    pub(crate) openai_url: String,
    pub(crate) anthropic_url: String,
    pub(crate) openai_api_key: Option<String>,
    pub(crate) anthropic_api_key: Option<String>,
    pub(crate) blob_threshold: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) upstream_timeout: Duration,
    pub(crate) wait_for_projection: Duration,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("openai_url", &self.openai_url)
            .field("anthropic_url", &self.anthropic_url)
            .field(
                "openai_api_key",
                &self.openai_api_key.as_ref().map(|_| "<set>"),
            )
            .field(
                "anthropic_api_key",
                &self.anthropic_api_key.as_ref().map(|_| "<set>"),
            )
            .field("blob_threshold", &self.blob_threshold)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("upstream_timeout", &self.upstream_timeout)
            .finish()
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            openai_url: DEFAULT_OPENAI_URL.to_string(),
            anthropic_url: DEFAULT_ANTHROPIC_URL.to_string(),
            openai_api_key: None,
            anthropic_api_key: None,
            blob_threshold: DEFAULT_BLOB_THRESHOLD,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            upstream_timeout: Duration::from_secs(600),
            wait_for_projection: Duration::from_secs(2),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl LlmConfig {
    /// Settings from the environment: `AMAI_LLM_OPENAI_URL`,
    /// `AMAI_LLM_ANTHROPIC_URL`, `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`,
    /// `AMAI_LLM_BLOB_THRESHOLD` (bytes); defaults for the rest.
    pub fn from_env() -> Self {
        let mut c = Self::default();
        if let Some(u) = env("AMAI_LLM_OPENAI_URL") {
            c.openai_url = u;
        }
        if let Some(u) = env("AMAI_LLM_ANTHROPIC_URL") {
            c.anthropic_url = u;
        }
        c.openai_api_key = env("OPENAI_API_KEY");
        c.anthropic_api_key = env("ANTHROPIC_API_KEY");
        if let Some(n) = env("AMAI_LLM_BLOB_THRESHOLD").and_then(|v| v.parse().ok()) {
            c.blob_threshold = n;
        }
        c
    }

    /// The OpenAI base URL (ending in `/v1`).
    pub fn openai_url(mut self, url: impl Into<String>) -> Self {
        self.openai_url = url.into();
        self
    }

    /// The Anthropic base URL (without `/v1`).
    pub fn anthropic_url(mut self, url: impl Into<String>) -> Self {
        self.anthropic_url = url.into();
        self
    }

    /// The OpenAI API key added to upstream requests.
    pub fn openai_api_key(mut self, key: impl Into<String>) -> Self {
        self.openai_api_key = Some(key.into());
        self
    }

    /// The Anthropic API key added to upstream requests.
    pub fn anthropic_api_key(mut self, key: impl Into<String>) -> Self {
        self.anthropic_api_key = Some(key.into());
        self
    }

    /// Bodies above this many bytes go to the blob store (default 64 KiB).
    pub fn blob_threshold(mut self, bytes: usize) -> Self {
        self.blob_threshold = bytes;
        self
    }

    /// How long an upstream call may take (default 10 minutes).
    pub fn upstream_timeout(mut self, timeout: Duration) -> Self {
        self.upstream_timeout = timeout;
        self
    }

    /// The secrets, so callers (tests, log scrubbers) can make sure they never
    /// appear anywhere.
    pub fn secrets(&self) -> Vec<&str> {
        [&self.openai_api_key, &self.anthropic_api_key]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_api_keys() {
        let c = LlmConfig::default()
            .openai_api_key("sk-secret-openai")
            .anthropic_api_key("sk-secret-anthropic");
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
        assert_eq!(c.secrets(), vec!["sk-secret-openai", "sk-secret-anthropic"]);
    }
}
