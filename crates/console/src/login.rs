//! Signing in and out.
//!
//! **Token link.** `GET /login?token=<token>` with the console's login token
//! (compared in constant time) opens a session, sets its cookie and redirects
//! to `/`. A wrong or missing token gets a 401 page and no cookie.
//!
//! **Signed link.** The CLI signs the claims [`SignedLoginClaims`] (JSON) with
//! the operator's key under the PAE domain [`LOGIN_DOMAIN`] and prints
//! `<origin>/login/signed?c=<base64url claims>&s=<base64url signature>`
//! ([`signed_login_link`]). The console accepts it once, checked cheapest
//! first: well-formed; `console_origin` is one of this console's origins;
//! issued within [`SIGNED_LINK_TTL`] (and not more than
//! [`MAX_CLOCK_SKEW`] in the future); the signer is a registered, unrevoked
//! **operator** whose current key verifies the signature (its chain read from
//! JetStream, like the gateway's request authentication); and only then the
//! nonce was never used (a bounded replay cache, written only for valid
//! signatures so nobody else can burn nonces). Each refusal is a 401 naming
//! the check that failed.
//!
//! `POST /logout` (same-origin, CSRF token) ends the session and clears the
//! cookie.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use amai_bus::proto::IdentityKind;
use amai_bus::IdentityKeys;

use crate::security::{check_post, secret_eq};
use crate::session::{clear_cookie, session_cookie, ApiSession, SignIn};
use crate::AppState;

/// PAE domain of signed console sign-in links.
pub const LOGIN_DOMAIN: &str = "amai.console-login.v1";
/// How long a signed link is valid after it was issued.
pub const SIGNED_LINK_TTL: Duration = Duration::from_secs(5 * 60);
/// How far in the future a link's `issued_at_ms` may be (clock skew).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Longest encoded claims accepted (checked before decoding).
const MAX_CLAIMS_CHARS: usize = 2048;
/// Nonces remembered (links are only valid for 5 minutes, and only operators
/// can make them).
const NONCE_CAPACITY: usize = 16_384;

/// What a signed sign-in link claims (signed as this JSON, byte for byte).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedLoginClaims {
    /// The console the link is for (`http://127.0.0.1:6767`).
    pub console_origin: String,
    /// The signing operator's identity id.
    pub operator_id: String,
    /// When the link was made, unix milliseconds.
    pub issued_at_ms: i64,
    /// Random, single use (base64url, 16 to 64 characters).
    pub nonce: String,
}

/// A one-time sign-in link for the console at `origin`, signed by operator
/// `operator_id` with its current `keys` at `now_ms` (unix milliseconds).
pub fn signed_login_link(
    origin: &str,
    keys: &IdentityKeys,
    operator_id: &str,
    now_ms: i64,
) -> String {
    let origin = origin.trim_end_matches('/');
    let claims = SignedLoginClaims {
        console_origin: origin.to_string(),
        operator_id: operator_id.to_string(),
        issued_at_ms: now_ms,
        nonce: crate::random_b64(24),
    };
    // Serializing a struct of strings and an integer cannot fail.
    let json = serde_json::to_vec(&claims).unwrap_or_default();
    let sig = keys.sign(LOGIN_DOMAIN, &json);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{origin}/login/signed?c={}&s={}",
        b64.encode(&json),
        b64.encode(sig)
    )
}

/// Nonces of signed links already used.
pub struct NonceCache {
    seen: quick_cache::sync::Cache<String, ()>,
    gate: std::sync::Mutex<()>,
}

impl NonceCache {
    pub(crate) fn new() -> Self {
        Self {
            seen: quick_cache::sync::Cache::new(NONCE_CAPACITY),
            gate: std::sync::Mutex::new(()),
        }
    }

    /// Records `key`; `false` when it was already there.
    fn first_use(&self, key: String) -> bool {
        let _g = self
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.seen.get(&key).is_some() {
            return false;
        }
        self.seen.insert(key, ());
        true
    }
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/login", get(token_login))
        .route("/login/signed", get(signed_login))
        .route("/logout", post(logout))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn unauthorized(reason: &str) -> Response {
    crate::layout::login_page(StatusCode::UNAUTHORIZED, reason)
}

/// Opens a session and sends the browser to `/`.
fn signed_in(state: &AppState, how: SignIn) -> Response {
    let id = state.sessions.create(how);
    (
        [(
            header::SET_COOKIE,
            session_cookie(&id, state.sessions.ttl()),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

async fn token_login(State(state): State<Arc<AppState>>, Query(q): Query<TokenQuery>) -> Response {
    let Some(token) = q.token.filter(|t| !t.is_empty()) else {
        return unauthorized("sign in with the link `amai up` or `amai console` printed");
    };
    if !secret_eq(&token, &state.login_token) {
        tracing::warn!("console sign-in with a wrong token");
        return unauthorized("this login token is not this console's: use the link the console printed when it started");
    }
    if let Err(reason) = state.authority.check(&state).await {
        return crate::layout::error_page(StatusCode::FORBIDDEN, "No operator authority", &reason);
    }
    tracing::info!("console sign-in with the login token");
    signed_in(&state, SignIn::Token)
}

#[derive(Deserialize)]
struct SignedQuery {
    c: Option<String>,
    s: Option<String>,
}

/// Why a signed link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedLoginError {
    /// `c` or `s` is missing, too long, or not base64url / JSON of the claims.
    #[error("malformed sign-in link: {0}")]
    Malformed(String),
    /// The link is for another console.
    #[error("this link is for the console at {link:?}, not this one ({this}): make a link for this console")]
    WrongOrigin {
        /// The link's origin.
        link: String,
        /// This console's origin.
        this: String,
    },
    /// Issued more than [`SIGNED_LINK_TTL`] ago.
    #[error("this link expired: it was issued {age_s} s ago and links are valid for {ttl_s} s; make a new one with `amai console`")]
    Expired {
        /// Its age in seconds.
        age_s: i64,
        /// The validity in seconds.
        ttl_s: u64,
    },
    /// Issued in the future, beyond the clock skew allowed.
    #[error("this link was issued {ahead_s} s in the future: check the clocks")]
    FromTheFuture {
        /// How far ahead, in seconds.
        ahead_s: i64,
    },
    /// No registered identity of that id.
    #[error("{0} is not a registered identity")]
    UnknownSigner(String),
    /// The signer is no operator.
    #[error("{id} is an identity of kind {kind}, not an operator: only operators sign in to the console")]
    NotAnOperator {
        /// The identity.
        id: String,
        /// Its kind.
        kind: String,
    },
    /// The operator is revoked.
    #[error("operator {0} is revoked")]
    Revoked(String),
    /// The signature does not verify with the operator's current key.
    #[error("the signature does not verify with operator {0}'s current key")]
    BadSignature(String),
    /// The nonce was used before.
    #[error(
        "this link was already used: sign-in links work once; make a new one with `amai console`"
    )]
    Replayed,
    /// The operator's chain could not be read.
    #[error("cannot read the operator's chain: {0}; retry shortly")]
    Unavailable(String),
}

impl SignedLoginError {
    /// Whether trying the same link again may work.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SignedLoginError::Unavailable(_))
    }
}

/// Checks a signed link against this console, cheapest checks first.
async fn check_signed(
    state: &AppState,
    c: Option<String>,
    s: Option<String>,
    now_ms: i64,
) -> Result<SignedLoginClaims, SignedLoginError> {
    let malformed = |m: &str| SignedLoginError::Malformed(m.to_string());
    let (c, s) = match (c, s) {
        (Some(c), Some(s)) if !c.is_empty() && !s.is_empty() => (c, s),
        _ => return Err(malformed("it needs both c (claims) and s (signature)")),
    };
    if c.len() > MAX_CLAIMS_CHARS || s.len() > 128 {
        return Err(malformed("c or s is too long"));
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims_bytes = b64
        .decode(c.trim_end_matches('='))
        .map_err(|_| malformed("c is not base64url"))?;
    let sig_bytes: [u8; 64] = b64
        .decode(s.trim_end_matches('='))
        .map_err(|_| malformed("s is not base64url"))?
        .try_into()
        .map_err(|_| malformed("s is not a 64-byte Ed25519 signature"))?;
    let claims: SignedLoginClaims = serde_json::from_slice(&claims_bytes)
        .map_err(|e| SignedLoginError::Malformed(format!("the claims are not valid: {e}")))?;
    let nonce_ok = (16..=64).contains(&claims.nonce.len())
        && claims
            .nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !nonce_ok {
        return Err(malformed("the nonce must be 16 to 64 base64url characters"));
    }
    if !state.site.is_own_origin(&claims.console_origin) {
        return Err(SignedLoginError::WrongOrigin {
            link: claims.console_origin,
            this: state.site.origin().to_string(),
        });
    }
    let age = now_ms - claims.issued_at_ms;
    if age > SIGNED_LINK_TTL.as_millis() as i64 {
        return Err(SignedLoginError::Expired {
            age_s: age / 1000,
            ttl_s: SIGNED_LINK_TTL.as_secs(),
        });
    }
    if -age > MAX_CLOCK_SKEW.as_millis() as i64 {
        return Err(SignedLoginError::FromTheFuture {
            ahead_s: -age / 1000,
        });
    }
    amai_bus::subjects::validate_id(&claims.operator_id)
        .map_err(|e| SignedLoginError::Malformed(format!("operator_id: {e}")))?;
    let identity = match state.store.identity_state(&claims.operator_id).await {
        Ok(s) => s,
        Err(amai_bus::store::ReadError::Unavailable(m)) => {
            return Err(SignedLoginError::Unavailable(m))
        }
        Err(_) => return Err(SignedLoginError::UnknownSigner(claims.operator_id)),
    };
    if identity.kind != IdentityKind::Operator {
        return Err(SignedLoginError::NotAnOperator {
            id: claims.operator_id,
            kind: identity.kind.as_str_name().to_string(),
        });
    }
    if identity.revoked.is_some() {
        return Err(SignedLoginError::Revoked(claims.operator_id));
    }
    let signature = ed25519_dalek::Signature::from_bytes(&sig_bytes);
    identity
        .current_key()
        .signing_key
        .verify_strict(&amai_bus::pae::pae(LOGIN_DOMAIN, &claims_bytes), &signature)
        .map_err(|_| SignedLoginError::BadSignature(claims.operator_id.clone()))?;
    if !state
        .nonces
        .first_use(format!("{}.{}", claims.operator_id, claims.nonce))
    {
        return Err(SignedLoginError::Replayed);
    }
    Ok(claims)
}

async fn signed_login(
    State(state): State<Arc<AppState>>,
    Query(q): Query<SignedQuery>,
) -> Response {
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    match check_signed(&state, q.c, q.s, now_ms as i64).await {
        Ok(claims) => {
            if let Err(reason) = state.authority.check(&state).await {
                return crate::layout::error_page(
                    StatusCode::FORBIDDEN,
                    "No operator authority",
                    &reason,
                );
            }
            tracing::info!(operator = %claims.operator_id, "console sign-in with a signed link");
            signed_in(&state, SignIn::SignedBy(claims.operator_id))
        }
        Err(e) if e.is_retryable() => crate::layout::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            &e.to_string(),
        ),
        Err(e) => {
            tracing::warn!(reason = %e, "console sign-in link refused");
            unauthorized(&e.to_string())
        }
    }
}

/// The form of every POST: its CSRF token.
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    pub(crate) csrf: Option<String>,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    ApiSession(session): ApiSession,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refusal) = check_post(&state.site, &headers, &session.csrf, form.csrf.as_deref()) {
        return refusal.into_response();
    }
    state.sessions.remove(&session);
    (
        [(header::SET_COOKIE, clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}
