//! The browser-facing defences, one place:
//!
//! - **Host check** (DNS rebinding): a request whose `Host` is not this
//!   console's bound address, `localhost:<port>` or `127.0.0.1:<port>` is
//!   refused with 421 before anything else runs. A page of an attacker's
//!   domain that resolves to 127.0.0.1 thus never reaches a handler.
//! - **Same-origin writes**: every state-changing request is a POST whose
//!   `Origin` is one of this console's origins (or, when a browser sent no
//!   `Origin`, whose `Referer` is on one of them) and which carries the
//!   session's CSRF token in a form field, compared in constant time
//!   ([`check_post`]). Anything else is 403 with the precise reason.
//! - **Headers** on every response ([`security_headers`]): a
//!   Content-Security-Policy that allows scripts, styles and connections from
//!   the console's own origin only (no inline script at all: the one script
//!   is served from `/static`), `X-Frame-Options: DENY` and
//!   `frame-ancestors 'none'`, `Referrer-Policy: same-origin`,
//!   `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::AppState;

/// The Content-Security-Policy of every response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Who this console is on the network: the hosts it answers to and the
/// origins it accepts writes from.
#[derive(Clone, Debug)]
pub struct Site {
    origin: String,
    hosts: Vec<String>,
}

impl Site {
    /// The site of a console listening on `local`: its own address, and when
    /// it listens on loopback, also `localhost:<port>` and `127.0.0.1:<port>`.
    pub fn new(local: SocketAddr) -> Self {
        let port = local.port();
        let mut hosts = Vec::new();
        if !local.ip().is_unspecified() {
            hosts.push(local.to_string());
        }
        if local.ip().is_loopback() || local.ip().is_unspecified() {
            for h in [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ] {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
        let origin = format!("http://{}", hosts[0]);
        Self { origin, hosts }
    }

    /// The canonical origin (`http://127.0.0.1:6767`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether `host` (a `Host` header value) names this console.
    pub fn is_own_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Whether `origin` (an `Origin` header value, or a link's
    /// `console_origin`) is one of this console's origins.
    pub fn is_own_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|host| self.is_own_host(host))
    }

    /// Whether `referer` is a URL on one of this console's origins.
    fn is_own_referer(&self, referer: &str) -> bool {
        let Some(rest) = referer.strip_prefix("http://") else {
            return false;
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        self.is_own_host(host)
    }
}

/// A refused request: its status and the reason shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status code.
    pub status: StatusCode,
    /// Why, precisely.
    pub reason: String,
}

impl Refusal {
    pub(crate) fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        crate::layout::error_page(self.status, "Refused", &self.reason)
    }
}

/// Refuses requests whose `Host` is not this console (421 Misdirected Request).
pub(crate) async fn check_host(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        Some(h) if state.site.is_own_host(h) => next.run(request).await,
        Some(h) => {
            tracing::warn!(host = %h.escape_debug(), "refused a request for another host");
            Refusal {
                status: StatusCode::MISDIRECTED_REQUEST,
                reason: format!(
                    "this console answers to {} only, not to Host {:?} (DNS-rebinding defence): open {}",
                    state.site.hosts.join(", "),
                    h,
                    state.site.origin()
                ),
            }
            .into_response()
        }
        None => Refusal {
            status: StatusCode::MISDIRECTED_REQUEST,
            reason: "the request has no Host header".into(),
        }
        .into_response(),
    }
}

/// Adds the security headers to every response.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Checks a state-changing request: same origin first (cheap, and says
/// precisely what a cross-site page did), then the CSRF token of `session`.
pub fn check_post(
    site: &Site,
    headers: &HeaderMap,
    expected_csrf: &str,
    sent_csrf: Option<&str>,
) -> Result<(), Refusal> {
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        Some(Ok(origin)) if site.is_own_origin(origin) => {}
        Some(Ok(origin)) => {
            return Err(Refusal::forbidden(format!(
                "cross-origin request refused: Origin {origin:?} is not this console ({})",
                site.origin()
            )))
        }
        Some(Err(_)) => return Err(Refusal::forbidden("the Origin header is not ASCII")),
        None => match headers.get(header::REFERER).map(|v| v.to_str()) {
            Some(Ok(referer)) if site.is_own_referer(referer) => {}
            Some(Ok(referer)) => {
                return Err(Refusal::forbidden(format!(
                    "cross-origin request refused: no Origin header, and Referer {referer:?} is not on this console ({})",
                    site.origin()
                )))
            }
            _ => {
                return Err(Refusal::forbidden(
                    "request refused: neither an Origin nor a Referer header shows it comes from this console's pages",
                ))
            }
        },
    }
    let Some(sent) = sent_csrf.filter(|s| !s.is_empty()) else {
        return Err(Refusal::forbidden(
            "the CSRF token is missing: submit the form from the console's page",
        ));
    };
    if bool::from(sent.as_bytes().ct_eq(expected_csrf.as_bytes())) {
        Ok(())
    } else {
        Err(Refusal::forbidden(
            "the CSRF token does not match this session: reload the page and submit again",
        ))
    }
}

/// Compares two secrets in constant time (in their contents; lengths may differ).
pub(crate) fn secret_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn the_site_of_a_loopback_listener_answers_to_its_loopback_names_only() {
        let site = Site::new("127.0.0.1:6767".parse().expect("addr"));
        assert_eq!(site.origin(), "http://127.0.0.1:6767");
        for ok in ["127.0.0.1:6767", "localhost:6767", "LOCALHOST:6767"] {
            assert!(site.is_own_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:6767",
            "127.0.0.1:6768",
            "localhost",
            "127.0.0.1",
            "127.0.0.1:6767.evil.example",
        ] {
            assert!(!site.is_own_host(bad), "{bad}");
        }
        assert!(site.is_own_origin("http://localhost:6767"));
        assert!(!site.is_own_origin("https://127.0.0.1:6767"));
        assert!(!site.is_own_origin("http://127.0.0.1:6767/"));
        assert!(!site.is_own_origin("null"));
    }

    #[test]
    fn writes_need_the_own_origin_and_the_session_token() {
        let site = Site::new("127.0.0.1:6767".parse().expect("addr"));
        let origin = headers(&[("origin", "http://127.0.0.1:6767")]);
        assert!(check_post(&site, &origin, "tok", Some("tok")).is_ok());
        assert!(check_post(&site, &origin, "tok", Some("tak")).is_err());
        assert!(check_post(&site, &origin, "tok", None).is_err());
        assert!(check_post(&site, &origin, "tok", Some("")).is_err());
        let evil = headers(&[("origin", "http://evil.example")]);
        assert!(check_post(&site, &evil, "tok", Some("tok")).is_err());
        let referer = headers(&[("referer", "http://localhost:6767/audit?x=1")]);
        assert!(check_post(&site, &referer, "tok", Some("tok")).is_ok());
        let bad_referer = headers(&[("referer", "http://localhost:6767.evil.example/")]);
        assert!(check_post(&site, &bad_referer, "tok", Some("tok")).is_err());
        assert!(check_post(&site, &HeaderMap::new(), "tok", Some("tok")).is_err());
    }
}
