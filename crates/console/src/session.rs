//! Server-side sessions. The browser holds only a random 256-bit session id in
//! an `HttpOnly`, `SameSite=Strict`, `Path=/` cookie; the store keeps, under
//! the SHA-256 of that id, who signed in, how, the session's CSRF token and
//! its expiry. Sessions live in memory: restarting the console signs everyone
//! out.
//!
//! Every authenticated request also re-checks the console's own authority
//! ([`AuthorityCheck`]): the operator it acts as must still be a registered,
//! unrevoked operator whose current key is the console's key (read from its
//! chain in JetStream, cached for a few seconds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::AppState;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "amai_console";
/// How long the console's own authority check is cached.
pub const AUTHORITY_CACHE: Duration = Duration::from_secs(5);

/// How a session was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignIn {
    /// With the console's login token.
    Token,
    /// With a link signed by this operator.
    SignedBy(String),
}

/// One signed-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// The CSRF token of this session's forms.
    pub csrf: String,
    /// How it signed in.
    pub sign_in: SignIn,
    /// When it ends.
    pub expires: Instant,
    /// A message for the next page (the result of an action).
    pub flash: Option<String>,
    key: [u8; 32],
}

/// The sessions of one console.
pub struct SessionStore {
    ttl: Duration,
    max: usize,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl SessionStore {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            sessions: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock leaves a consistent map: no invariant
        // spans two entries.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session and returns its id (the cookie value).
    pub(crate) fn create(&self, sign_in: SignIn) -> String {
        let id = crate::random_b64(32);
        let key = key_of(&id);
        let now = Instant::now();
        let session = Session {
            csrf: crate::random_b64(32),
            sign_in,
            expires: now + self.ttl,
            flash: None,
            key,
        };
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        while map.len() >= self.max {
            let Some(oldest) = map.values().min_by_key(|s| s.expires).map(|s| s.key) else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(key, session);
        id
    }

    /// The live session of cookie value `id`.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let key = key_of(id);
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Whether `session` is still open (not signed out, not expired).
    pub(crate) fn is_live(&self, session: &Session) -> bool {
        self.lock()
            .get(&session.key)
            .is_some_and(|s| s.expires > Instant::now())
    }

    /// Ends a session.
    pub(crate) fn remove(&self, session: &Session) {
        self.lock().remove(&session.key);
    }

    /// Leaves a message for the session's next page.
    pub(crate) fn set_flash(&self, session: &Session, message: String) {
        if let Some(s) = self.lock().get_mut(&session.key) {
            s.flash = Some(message);
        }
    }

    /// Takes the session's pending message.
    pub(crate) fn take_flash(&self, session: &Session) -> Option<String> {
        self.lock()
            .get_mut(&session.key)
            .and_then(|s| s.flash.take())
    }
}

/// The `Set-Cookie` value of a new session.
pub(crate) fn session_cookie(id: &str, ttl: Duration) -> String {
    format!(
        "{COOKIE_NAME}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        ttl.as_secs()
    )
}

/// The `Set-Cookie` value that clears the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session cookie's value in `parts`, if any.
fn cookie_value(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_string())
}

impl SessionStore {
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Whether the console's operator still holds its authority, cached briefly.
#[derive(Default)]
pub struct AuthorityCheck {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl AuthorityCheck {
    /// `Ok` when the console's operator is a registered, unrevoked operator
    /// whose current key is the console's; else why not.
    pub(crate) async fn check(&self, state: &AppState) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < AUTHORITY_CACHE {
                return result.clone();
            }
        }
        let result = operator_authority(state).await;
        // An unavailable store is not cached: the next request asks again.
        if !matches!(&result, Err(e) if e.starts_with("cannot read")) {
            *last = Some((Instant::now(), result.clone()));
        }
        result
    }
}

async fn operator_authority(state: &AppState) -> Result<(), String> {
    use amai_bus::proto::IdentityKind;
    let id = &state.operator_id;
    let identity = match state.store.identity_state(id).await {
        Ok(s) => s,
        Err(amai_bus::store::ReadError::NotFound(_)) => {
            return Err(format!(
                "the console's operator {id} is not registered: start the console with a registered operator's keys"
            ))
        }
        Err(e) => return Err(format!("cannot read the console operator's chain: {e}")),
    };
    if identity.kind != IdentityKind::Operator {
        return Err(format!(
            "the console's identity {id} is not an operator but {:?}: start the console with an operator's keys",
            identity.kind
        ));
    }
    if identity.revoked.is_some() {
        return Err(format!("the console's operator {id} is revoked"));
    }
    if identity.current_key().signing_key != state.operator_keys.public_key() {
        return Err(format!(
            "the console's key is no longer operator {id}'s current key (rotated): restart the console with the current keys"
        ));
    }
    Ok(())
}

/// A signed-in page request; without a session, the browser is sent to
/// `/login`.
pub struct PageSession(pub Session);

/// A signed-in live-stream or action request; without a session, 401.
pub struct ApiSession(pub Session);

/// Why a request has no usable session.
pub enum NoSession {
    /// Not signed in (or expired): go to the sign-in page.
    Redirect,
    /// Not signed in (or expired): 401.
    Unauthorized,
    /// Signed in, but the console itself lost its operator authority.
    Authority(String),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Redirect => Redirect::to("/login").into_response(),
            NoSession::Unauthorized => crate::layout::error_page(
                StatusCode::UNAUTHORIZED,
                "Not signed in",
                "this needs a console session: sign in with the link `amai up` or `amai console` printed",
            ),
            NoSession::Authority(reason) => {
                crate::layout::error_page(StatusCode::FORBIDDEN, "No operator authority", &reason)
            }
        }
    }
}

async fn session_of(
    parts: &Parts,
    state: &Arc<AppState>,
    page: bool,
) -> Result<Session, NoSession> {
    let missing = || {
        if page {
            NoSession::Redirect
        } else {
            NoSession::Unauthorized
        }
    };
    let id = cookie_value(parts).ok_or_else(missing)?;
    let session = state.sessions.get(&id).ok_or_else(missing)?;
    state
        .authority
        .check(state)
        .await
        .map_err(NoSession::Authority)?;
    Ok(session)
}

impl FromRequestParts<Arc<AppState>> for PageSession {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        session_of(parts, state, true).await.map(PageSession)
    }
}

impl FromRequestParts<Arc<AppState>> for ApiSession {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        session_of(parts, state, false).await.map(ApiSession)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_are_bounded() {
        let store = SessionStore::new(Duration::from_secs(60), 2);
        let a = store.create(SignIn::Token);
        let b = store.create(SignIn::Token);
        assert!(store.get(&a).is_some() && store.get(&b).is_some());
        let c = store.create(SignIn::Token);
        assert!(store.get(&a).is_none(), "the oldest session makes room");
        assert!(store.get(&c).is_some());
        assert!(store.get("not-a-session").is_none());
        let expired = SessionStore::new(Duration::ZERO, 2);
        let d = expired.create(SignIn::Token);
        assert!(expired.get(&d).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let c = session_cookie("abc", Duration::from_secs(10));
        assert!(c.starts_with("amai_console=abc;"));
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{attr}");
        }
    }
}
