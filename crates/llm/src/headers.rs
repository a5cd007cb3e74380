//! Header policy: which upstream response headers are recorded (and so replayed) and
//! which client request headers are forwarded upstream. Names compare
//! case-insensitively.
//!
//! Recorded: `content-type`, `retry-after`, `retry-after-ms`, `x-request-id`,
//! `request-id`, `x-should-retry`, `openai-*`, `anthropic-*`, `x-ratelimit-*`; never
//! `set-cookie`, `date`, `server`, `content-length`, `transfer-encoding`,
//! `connection`, `cf-*`, anything naming auth or cookies, nor the account headers
//! `openai-organization`, `openai-project` and `anthropic-organization-id` (cassettes
//! are shared; the account that recorded is not part of the answer).
//!
//! Forwarded: `content-type`, `accept`, `anthropic-version`, `anthropic-beta`,
//! `openai-beta`, nothing else: not `authorization`, `x-api-key`, `cookie`, `host`,
//! `content-length`, `connection`, `transfer-encoding`, `x-amai-*`, nor
//! `openai-organization` / `openai-project` (account data, set by the proxy's own
//! upstream credentials if at all), nor the SDKs' `x-stainless-*`.

/// Response headers that are account data, never recorded.
const ACCOUNT_RESPONSE_HEADERS: &[&str] = &[
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
];

/// Whether an upstream response header is recorded.
pub fn is_recorded_response_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.contains("auth")
        || name.contains("cookie")
        || name.starts_with("cf-")
        || ACCOUNT_RESPONSE_HEADERS.contains(&name.as_str())
    {
        return false;
    }
    matches!(
        name.as_str(),
        "content-type"
            | "retry-after"
            | "retry-after-ms"
            | "x-request-id"
            | "request-id"
            | "x-should-retry"
    ) || name.starts_with("openai-")
        || name.starts_with("anthropic-")
        || name.starts_with("x-ratelimit-")
}

/// Whether a client request header is forwarded upstream.
pub fn is_forwarded_request_header(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "content-type" | "accept" | "anthropic-version" | "anthropic-beta" | "openai-beta"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_response_headers() {
        for name in [
            "content-type",
            "Content-Type",
            "retry-after",
            "retry-after-ms",
            "x-request-id",
            "request-id",
            "x-should-retry",
            "openai-processing-ms",
            "openai-version",
            "anthropic-ratelimit-requests-remaining",
            "x-ratelimit-remaining-tokens",
        ] {
            assert!(is_recorded_response_header(name), "{name}");
        }
        for name in [
            "set-cookie",
            "date",
            "server",
            "content-length",
            "transfer-encoding",
            "connection",
            "cf-ray",
            "CF-Cache-Status",
            "www-authenticate",
            "x-ratelimit-auth-token",
            "openai-organization",
            "openai-project",
            "anthropic-organization-id",
            "via",
            "strict-transport-security",
        ] {
            assert!(!is_recorded_response_header(name), "{name}");
        }
    }

    #[test]
    fn forwarded_request_headers() {
        for name in [
            "content-type",
            "Accept",
            "anthropic-version",
            "anthropic-beta",
            "OpenAI-Beta",
        ] {
            assert!(is_forwarded_request_header(name), "{name}");
        }
        for name in [
            "authorization",
            "x-api-key",
            "cookie",
            "host",
            "content-length",
            "connection",
            "transfer-encoding",
            "x-amai-session",
            "openai-organization",
            "openai-project",
            "x-stainless-retry-count",
            "idempotency-key",
            "user-agent",
            "accept-encoding",
        ] {
            assert!(!is_forwarded_request_header(name), "{name}");
        }
    }
}
