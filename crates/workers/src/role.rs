//! The [`Role`] abstraction: what a worker role *declares*, so that one
//! runtime ([`crate::runtime::RoleRuntime`]) can run any role and the binary
//! never wires a role by hand (design contract §5).
//!
//! A role names, as data:
//! - its [`Role::name`] (`amai worker --role <name>`, state dir, metric label),
//! - its service key ([`Role::service_key`]) and the aggregate kinds that key
//!   may write ([`Role::writes`]; reactor outputs elsewhere are refused),
//! - its projections ([`Role::projections`], each fed into the instance's sled),
//! - its reactors ([`Role::reactors`], each on its shared durable consumer),
//! - its query service ([`Role::queries`], answered from the started projections),
//! - extra listeners ([`Role::listeners`], e.g. the LLM role's HTTP API): the
//!   runtime binds the declared address and hands the socket and the shutdown
//!   signal over, so roles never bind ports or watch signals themselves.
//!
//! Side-effecting handlers (reactors) and transactional read-side handlers
//! (projections) are separate kinds, as in primait/event_sourcing.rs.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::subjects::AggregateKind;
use amai_bus::EventStore;
use amai_projections::{Projection, ProjectionHandle};

use crate::query_service::QueryHandler;
use crate::reactor::{Reactor, ServiceSigner};

/// A future that resolves when the role must stop.
pub type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Boxed future of a listener's server.
pub type ListenerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// What [`Role::preflight`] knows of the deployment.
#[derive(Clone, Debug)]
pub struct PreflightContext {
    /// The deployment's trust root, when the store has one: it names the
    /// deployment (e.g. the jail role labels what it creates with it, so
    /// deployments sharing a Docker Engine never remove each other's jails).
    pub trust_root: Option<ed25519_dalek::VerifyingKey>,
}

impl PreflightContext {
    /// 16 lowercase hex characters naming the deployment: of the SHA-256 of
    /// the trust root, or `default` without one.
    pub fn deployment(&self) -> String {
        use sha2::Digest;
        match &self.trust_root {
            Some(key) => hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8]),
            None => "default".to_string(),
        }
    }
}

/// Boxed future of [`Role::preflight`].
pub type PreflightFuture<'a> = Pin<Box<dyn Future<Output = Result<(), RoleError>> + Send + 'a>>;

/// Serves a bound socket until the shutdown signal resolves.
pub type ServeFn =
    Box<dyn FnOnce(tokio::net::TcpListener, ShutdownSignal) -> ListenerFuture + Send>;

/// A worker role, declared. Implementations are usually unit structs
/// registered in [`crate::roles::registry`].
pub trait Role: Send + Sync + 'static {
    /// The registry name: `amai worker --role <name>`, `<data-dir>/state/<name>-<instance>`,
    /// `role="<name>"` metric labels, the failure aggregate `failure/<name>`.
    fn name(&self) -> &'static str;

    /// One line saying what the role does (CLI help and error messages).
    fn summary(&self) -> &'static str;

    /// The service key's name: `keys/service-<key>.json`, identity `svc-<key>`.
    fn service_key(&self) -> &'static str {
        self.name()
    }

    /// The aggregate kinds the role's service key may write (besides its own
    /// identity chain and its `failure/<name>` records).
    fn writes(&self) -> &'static [AggregateKind];

    /// Checks, before anything starts, what the role needs outside NATS (e.g.
    /// a Docker Engine), and prepares it (e.g. removes what a killed instance
    /// left behind). [`RoleError::Unavailable`] says the role cannot run here
    /// and why; `amai up` then runs everything else.
    fn preflight<'a>(&'a self, _ctx: &'a PreflightContext) -> PreflightFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    /// The role's projections; each instance keeps a full copy in its sled.
    fn projections(&self) -> Vec<Arc<dyn Projection>> {
        Vec::new()
    }

    /// The role's reactors; every instance shares each reactor's durable consumer.
    fn reactors(&self) -> Vec<Arc<dyn Reactor>> {
        Vec::new()
    }

    /// The role's query service, built once its projections run.
    fn queries(&self, _ctx: &RoleContext) -> Result<Option<QueryService>, RoleError> {
        Ok(None)
    }

    /// Extra listeners (an HTTP API, ...), built once its projections run.
    fn listeners(&self, _ctx: &RoleContext) -> Result<Vec<Listener>, RoleError> {
        Ok(Vec::new())
    }

    /// Background tasks (e.g. the audit role's tree builders), built last,
    /// after the query service and the listeners. The runtime runs each until
    /// the shutdown signal; a task that ends early with an error stops the
    /// role like a failed reactor.
    fn tasks(&self, _ctx: &RoleContext) -> Result<Vec<Task>, RoleError> {
        Ok(Vec::new())
    }
}

/// A background task a role declares ([`Role::tasks`]).
pub struct Task {
    /// Name, for logs and errors.
    pub name: String,
    /// The task: runs until the signal resolves.
    pub run: TaskFn,
}

/// Runs a [`Task`] until the shutdown signal resolves.
pub type TaskFn = Box<dyn FnOnce(ShutdownSignal) -> ListenerFuture + Send>;

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A query service on NATS request/reply (services API, queue group).
pub struct QueryService {
    /// Service name (`$SRV.PING.<name>` discovers instances).
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// `(subject, handler)` pairs.
    pub endpoints: Vec<(&'static str, QueryHandler)>,
}

/// An extra listener a role declares: the runtime binds `addr` (or the address
/// configured for `name`), then calls `serve` with the socket and the shutdown
/// signal.
pub struct Listener {
    /// Name, used to override the address (`RoleRuntimeConfig::listen_addr`).
    pub name: &'static str,
    /// Address when none is configured.
    pub default_addr: SocketAddr,
    /// The server.
    pub serve: ServeFn,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("default_addr", &self.default_addr)
            .finish_non_exhaustive()
    }
}

/// What a role gets to build its query service and listeners.
#[derive(Clone)]
pub struct RoleContext {
    /// The role's name.
    pub role: &'static str,
    /// NATS.
    pub client: async_nats::Client,
    /// The event store.
    pub store: EventStore,
    /// This instance's sled (one tree per projection).
    pub db: sled::Db,
    /// The role's service identity.
    pub signer: ServiceSigner,
    /// How long a query waits for its `min_position`.
    pub min_position_timeout: Duration,
    pub(crate) projections: Vec<ProjectionHandle>,
}

impl RoleContext {
    /// The running projection `name`.
    pub fn projection(&self, name: &str) -> Result<ProjectionHandle, RoleError> {
        self.projections
            .iter()
            .find(|p| p.name() == name)
            .cloned()
            .ok_or_else(|| RoleError::Declaration {
                role: self.role.to_string(),
                detail: format!("it uses projection {name:?} but does not declare it"),
            })
    }
}

/// Why a role could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The declaration is inconsistent (a bug in the role).
    #[error("role {role} is declared wrongly: {detail}")]
    Declaration {
        /// The role.
        role: String,
        /// What is wrong.
        detail: String,
    },
    /// The state directory or sled store could not be opened.
    #[error("role {role}: cannot open its state at {path}: {detail}")]
    Storage {
        /// The role.
        role: String,
        /// The path.
        path: String,
        /// What failed.
        detail: String,
    },
    /// Something the role needs outside NATS is missing (preflight).
    #[error("role {role} is unavailable: {reason}")]
    Unavailable {
        /// The role.
        role: String,
        /// What is missing and what to do.
        reason: String,
    },
    /// A declared listener could not bind its address.
    #[error(
        "role {role}: listener {listener} cannot bind {addr}: {detail} (configure another address)"
    )]
    Listen {
        /// The role.
        role: String,
        /// The listener.
        listener: String,
        /// The address.
        addr: SocketAddr,
        /// What failed.
        detail: String,
    },
    /// A component failed to start or stopped unexpectedly.
    #[error("role {role}: {component}: {detail}")]
    Component {
        /// The role.
        role: String,
        /// The component (`projection identity`, `reactor`, `queries`, `listener http`).
        component: String,
        /// What failed.
        detail: String,
    },
}

/// `amai worker --role <name>` named no registered role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {name:?}; the registry has: {}", known.join(", "))]
pub struct UnknownRole {
    /// The name asked for.
    pub name: String,
    /// The registered names.
    pub known: Vec<&'static str>,
}
