//! # amai-console
//!
//! The local operator console of Amai: server-rendered HTML pages over the
//! worker roles' queries, and live event views over server-sent events, fed
//! from JetStream and verified with the core's verification step. No
//! front-end build: pages are [`maud`] templates, and one small static script
//! drives the `EventSource` of the live views.
//!
//! The console acts as **one operator**: it is started with that operator's
//! keys ([`ConsoleConfigBuilder::operator_keys`]), and every action it takes
//! is that operator's. A browser proves it holds the operator's authority by
//! signing in, either with the random login token the console was started
//! with ([`token_login_link`]) or with a one-time link signed by a registered
//! operator's key ([`signed_login_link`]).
//!
//! - [`security`] — Host, Origin and CSRF checks, security headers;
//! - [`session`] — server-side sessions behind an `HttpOnly`, `SameSite=Strict`
//!   cookie;
//! - [`login`] — both ways of signing in, and signing out;
//! - [`pages`] — one module per page, and the navigation list;
//! - [`roles`] — asking the worker roles, and saying precisely which one
//!   did not answer.
//!
//! ```no_run
//! # async fn run(nats: async_nats::Client, store: amai_bus::EventStore, keys: amai_bus::IdentityKeys) -> Result<(), amai_console::ConsoleError> {
//! let config = amai_console::ConsoleConfig::builder()
//!     .nats(nats)
//!     .store(store)
//!     .operator_keys(keys)
//!     .login_token(amai_console::generate_login_token())
//!     .build()?;
//! let listener = config.bind().await?;
//! let origin = amai_console::origin_of(listener.local_addr().map_err(amai_console::ConsoleError::Serve)?);
//! println!("{}", config.login_link(&origin));
//! amai_console::serve(config, listener, std::future::pending()).await
//! # }
//! ```
#![warn(missing_docs)]

pub mod login;
pub mod pages;
pub mod roles;
pub mod security;
pub mod session;

mod layout;
mod render;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::{EventStore, IdentityId, IdentityKeys};
use base64::Engine as _;

pub use login::{signed_login_link, SignedLoginClaims, LOGIN_DOMAIN, SIGNED_LINK_TTL};

/// Default listen address of the console.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    6767,
));
/// Default lifetime of a session.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Default timeout of queries to worker roles.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of sessions kept at once (the oldest is dropped beyond it).
pub const DEFAULT_MAX_SESSIONS: usize = 256;
/// Default number of live event streams (SSE) open at once.
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// Why the console could not be configured, started, or kept serving.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A required setting was not given to the builder.
    #[error("console configuration: {0} is required")]
    MissingSetting(&'static str),
    /// A setting is unusable.
    #[error("console configuration: {0}")]
    InvalidSetting(String),
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another console running? choose another address"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("console http server: {0}")]
    Serve(#[source] std::io::Error),
}

/// Console settings; build them with [`ConsoleConfig::builder`].
#[derive(Clone)]
pub struct ConsoleConfig {
    addr: SocketAddr,
    nats: async_nats::Client,
    store: EventStore,
    operator_keys: IdentityKeys,
    operator_id: IdentityId,
    login_token: String,
    query_timeout: Duration,
    session_ttl: Duration,
    max_sessions: usize,
    max_streams: usize,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the keys.
        f.debug_struct("ConsoleConfig")
            .field("addr", &self.addr)
            .field("operator_id", &self.operator_id)
            .field("query_timeout", &self.query_timeout)
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

/// Builder of [`ConsoleConfig`]: `nats`, `store`, `operator_keys` and
/// `login_token` are required.
#[derive(Default)]
pub struct ConsoleConfigBuilder {
    addr: Option<SocketAddr>,
    nats: Option<async_nats::Client>,
    store: Option<EventStore>,
    operator_keys: Option<IdentityKeys>,
    operator_id: Option<IdentityId>,
    login_token: Option<String>,
    query_timeout: Option<Duration>,
    session_ttl: Option<Duration>,
    max_sessions: Option<usize>,
    max_streams: Option<usize>,
}

impl ConsoleConfigBuilder {
    /// Address [`ConsoleConfig::bind`] listens on (default [`DEFAULT_ADDR`],
    /// `127.0.0.1:6767`).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// The NATS connection the worker roles are asked over.
    pub fn nats(mut self, nats: async_nats::Client) -> Self {
        self.nats = Some(nats);
        self
    }

    /// The event store: identity chains (sign-in checks) and the streams the
    /// live views replay.
    pub fn store(mut self, store: EventStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The keys of the operator the console acts as (in dev, `amai up`'s trust
    /// root). Its actions are this operator's.
    pub fn operator_keys(mut self, keys: IdentityKeys) -> Self {
        self.operator_keys = Some(keys);
        self
    }

    /// The operator's identity id, when its keys were rotated since its
    /// genesis (default: the id of `operator_keys`' public key).
    pub fn operator_id(mut self, id: impl Into<IdentityId>) -> Self {
        self.operator_id = Some(id.into());
        self
    }

    /// The secret of `/login?token=...` (at least 32 characters; see
    /// [`generate_login_token`]).
    pub fn login_token(mut self, token: impl Into<String>) -> Self {
        self.login_token = Some(token.into());
        self
    }

    /// How long a page waits for a worker role (default 5 s).
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = Some(timeout);
        self
    }

    /// How long a session lasts (default 12 h).
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = Some(ttl);
        self
    }

    /// Most sessions kept at once (default 256; the oldest goes first).
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = Some(n);
        self
    }

    /// Most live event streams open at once (default 64).
    pub fn max_streams(mut self, n: usize) -> Self {
        self.max_streams = Some(n);
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<ConsoleConfig, ConsoleError> {
        let nats = self.nats.ok_or(ConsoleError::MissingSetting("nats"))?;
        let store = self.store.ok_or(ConsoleError::MissingSetting("store"))?;
        let operator_keys = self
            .operator_keys
            .ok_or(ConsoleError::MissingSetting("operator_keys"))?;
        let login_token = self
            .login_token
            .ok_or(ConsoleError::MissingSetting("login_token"))?;
        if login_token.len() < 32 {
            return Err(ConsoleError::InvalidSetting(format!(
                "the login token is {} characters; use at least 32 (generate_login_token makes 43)",
                login_token.len()
            )));
        }
        let operator_id = self
            .operator_id
            .unwrap_or_else(|| operator_keys.identity_id());
        Ok(ConsoleConfig {
            addr: self.addr.unwrap_or(DEFAULT_ADDR),
            nats,
            store,
            operator_keys,
            operator_id,
            login_token,
            query_timeout: self.query_timeout.unwrap_or(DEFAULT_QUERY_TIMEOUT),
            session_ttl: self.session_ttl.unwrap_or(DEFAULT_SESSION_TTL),
            max_sessions: self.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS).max(1),
            max_streams: self.max_streams.unwrap_or(DEFAULT_MAX_STREAMS).max(1),
        })
    }
}

impl ConsoleConfig {
    /// A builder.
    pub fn builder() -> ConsoleConfigBuilder {
        ConsoleConfigBuilder::default()
    }

    /// The configured listen address.
    pub fn get_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The operator the console acts as.
    pub fn get_operator_id(&self) -> &str {
        &self.operator_id
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<tokio::net::TcpListener, ConsoleError> {
        tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| ConsoleError::Bind {
                addr: self.addr,
                source,
            })
    }

    /// The token sign-in link of this console at `origin` (see [`origin_of`]).
    pub fn login_link(&self, origin: &str) -> String {
        token_login_link(origin, &self.login_token)
    }
}

/// A fresh login token: 256 random bits, base64url without padding.
pub fn generate_login_token() -> String {
    random_b64(32)
}

/// The origin (`http://host:port`) of a console listening on `addr`.
pub fn origin_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The token sign-in link: `<origin>/login?token=<token>`.
pub fn token_login_link(origin: &str, token: &str) -> String {
    format!(
        "{}/login?token={}",
        origin.trim_end_matches('/'),
        render::url_encode(token)
    )
}

/// `n` random bytes, base64url without padding.
pub(crate) fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Serves the console on `listener` until `shutdown` completes. Open live
/// event streams end when it does.
pub async fn serve(
    config: ConsoleConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConsoleError> {
    let local = listener.local_addr().map_err(ConsoleError::Serve)?;
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState::new(config, local, stopping));
    let app = pages::router(state.clone());
    tracing::info!(addr = %local, operator = %state.operator_id, "console listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await
        .map_err(ConsoleError::Serve)?;
    tracing::info!("console stopped");
    Ok(())
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) nats: async_nats::Client,
    pub(crate) store: EventStore,
    pub(crate) operator_keys: IdentityKeys,
    pub(crate) operator_id: IdentityId,
    pub(crate) login_token: String,
    pub(crate) query_timeout: Duration,
    pub(crate) site: security::Site,
    pub(crate) sessions: session::SessionStore,
    pub(crate) nonces: login::NonceCache,
    pub(crate) authority: session::AuthorityCheck,
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    fn new(
        config: ConsoleConfig,
        local: SocketAddr,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            nats: config.nats,
            store: config.store,
            operator_keys: config.operator_keys,
            operator_id: config.operator_id,
            login_token: config.login_token,
            query_timeout: config.query_timeout,
            site: security::Site::new(local),
            sessions: session::SessionStore::new(config.session_ttl, config.max_sessions),
            nonces: login::NonceCache::new(),
            authority: session::AuthorityCheck::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(config.max_streams)),
            stopping,
        }
    }
}
