//! [`RoleRuntime`]: runs any [`Role`]. One instance of a role =
//!
//! 1. its state directory `<state-root>/<role>-<instance>` (`<state-root>/<role>`
//!    for an unnamed instance, so `amai up` keeps its state across restarts)
//!    holding one sled store `<role>.sled`;
//! 2. its projections, each a [`ProjectionRunner`] into that sled;
//! 3. its reactors, each on its shared durable consumer, signing with the role's
//!    service key and allowed to write only the declared aggregate kinds;
//! 4. its query service and its extra listeners (the runtime binds them);
//! 5. health ([`RoleRuntime::health`]) and counters labelled by role name
//!    ([`RoleRuntime::metrics`]), so the binary has no per-role code.
//!
//! Everything stops on one shutdown signal ([`RoleRuntime::run_until`]); if a
//! component stops on its own, the whole role stops and says which one.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amai_bus::EventStore;
use amai_projections::{ProjectionHandle, ProjectionRunner};
use tokio::sync::watch;

use crate::query_service::start_queries;
use crate::reactor::{run_reactor_with, ReactorOptions, ReactorStats, ServiceSigner};
use crate::role::{Role, RoleContext, RoleError, ShutdownSignal};

/// How to run one instance of a role (builder style).
#[derive(Clone)]
pub struct RoleRuntimeConfig {
    client: async_nats::Client,
    store: EventStore,
    state_root: PathBuf,
    instance: Option<String>,
    signer: ServiceSigner,
    min_position_timeout: Duration,
    listen: HashMap<String, SocketAddr>,
    reactor_options: ReactorOptions,
}

impl RoleRuntimeConfig {
    /// An instance keeping its state under `state_root` (`<data-dir>/state`),
    /// signing with `signer` (the role's service identity).
    pub fn new(
        client: async_nats::Client,
        store: EventStore,
        state_root: impl Into<PathBuf>,
        signer: ServiceSigner,
    ) -> Self {
        Self {
            client,
            store,
            state_root: state_root.into(),
            instance: None,
            signer,
            min_position_timeout: Duration::from_secs(2),
            listen: HashMap::new(),
            reactor_options: ReactorOptions::default(),
        }
    }

    /// The instance name (state dir `<role>-<instance>`); unset: `<role>`.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// How long a query waits for its `min_position` (default 2 s).
    pub fn min_position_timeout(mut self, d: Duration) -> Self {
        self.min_position_timeout = d;
        self
    }

    /// The address of the role's listener `name` (instead of its default).
    pub fn listen_addr(mut self, name: impl Into<String>, addr: SocketAddr) -> Self {
        self.listen.insert(name.into(), addr);
        self
    }

    /// Options of every reactor of the role (backoff, fault hooks). The
    /// aggregate kinds they may write always come from the role's declaration.
    pub fn reactor_options(mut self, options: ReactorOptions) -> Self {
        self.reactor_options = options;
        self
    }
}

/// The state directory of an instance of `role` under `state_root`.
pub fn state_dir(state_root: &Path, role: &str, instance: Option<&str>) -> PathBuf {
    match instance {
        Some(i) => state_root.join(format!("{role}-{i}")),
        None => state_root.join(role),
    }
}

/// The sled store of a role inside its state directory.
pub fn sled_path(state_dir: &Path, role: &str) -> PathBuf {
    state_dir.join(format!("{role}.sled"))
}

/// Health of a running role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleHealth {
    /// The role.
    pub role: &'static str,
    /// Every component is running.
    pub live: bool,
    /// Live, and every projection has caught up with its streams at least once.
    pub ready: bool,
    /// Components that stopped, with why.
    pub failed: Vec<(String, String)>,
}

/// The counters of one role, for a metrics endpoint (labels: the role name).
#[derive(Clone, Debug)]
pub struct RoleMetrics {
    /// The role.
    pub role: &'static str,
    /// Counters of all its reactors together.
    pub reactors: Arc<ReactorStats>,
    /// Its projections (positions, violations).
    pub projections: Vec<ProjectionHandle>,
    /// Its health, read when asked.
    pub health: HealthProbe,
}

#[derive(Default)]
struct HealthState {
    failed: Vec<(String, String)>,
}

type Task = (String, Result<(), String>);

/// A running instance of a role.
pub struct RoleRuntime {
    role: Arc<dyn Role>,
    state_dir: PathBuf,
    db: sled::Db,
    projections: Vec<ProjectionHandle>,
    reactor_stats: Arc<ReactorStats>,
    listeners: Vec<(&'static str, SocketAddr)>,
    health: Arc<Mutex<HealthState>>,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<Task>,
}

impl std::fmt::Debug for RoleRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleRuntime")
            .field("role", &self.role.name())
            .field("state_dir", &self.state_dir)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

fn stopped(mut rx: watch::Receiver<bool>) -> ShutdownSignal {
    Box::pin(async move {
        let _ = rx.wait_for(|s| *s).await;
    })
}

impl RoleRuntime {
    /// Starts every component of `role`. Returns once projections run, the
    /// query service is subscribed and listeners are bound.
    pub async fn start(
        role: Arc<dyn Role>,
        config: RoleRuntimeConfig,
    ) -> Result<RoleRuntime, RoleError> {
        let name = role.name();
        // What the role needs outside NATS (a Docker Engine, ...): without it
        // the role does not start, and says why.
        let preflight = crate::role::PreflightContext {
            trust_root: config.store.config().get_trust_root().copied(),
        };
        role.preflight(&preflight).await?;
        let state_dir = state_dir(&config.state_root, name, config.instance.as_deref());
        let path = sled_path(&state_dir, name);
        let storage = |detail: String| RoleError::Storage {
            role: name.to_string(),
            path: path.display().to_string(),
            detail,
        };
        std::fs::create_dir_all(&state_dir).map_err(|e| storage(e.to_string()))?;
        let db = sled::open(&path).map_err(|e| storage(e.to_string()))?;
        let component = |component: String, detail: String| RoleError::Component {
            role: name.to_string(),
            component,
            detail,
        };
        let (stop, stop_rx) = watch::channel(false);
        let mut runtime = RoleRuntime {
            role: role.clone(),
            state_dir,
            db: db.clone(),
            projections: Vec::new(),
            reactor_stats: Arc::new(ReactorStats::default()),
            listeners: Vec::new(),
            health: Arc::default(),
            stop,
            tasks: tokio::task::JoinSet::new(),
        };
        // From here on, a failure stops what already runs.
        match runtime.start_components(config, &stop_rx, &component).await {
            Ok(()) => Ok(runtime),
            Err(e) => {
                runtime.stop().await;
                Err(e)
            }
        }
    }

    async fn start_components(
        &mut self,
        config: RoleRuntimeConfig,
        stop_rx: &watch::Receiver<bool>,
        component: &dyn Fn(String, String) -> RoleError,
    ) -> Result<(), RoleError> {
        let role = self.role.clone();
        let name = role.name();
        for projection in role.projections() {
            let pname = projection.name();
            let handle = ProjectionRunner::spawn(
                self.db.clone(),
                config.store.clone(),
                projection,
                stopped(stop_rx.clone()),
            )
            .await
            .map_err(|e| component(format!("projection {pname}"), e.to_string()))?;
            self.projections.push(handle);
        }
        let options = config.reactor_options.clone().writes(role.writes());
        for reactor in role.reactors() {
            if reactor.role() != name {
                return Err(RoleError::Declaration {
                    role: name.to_string(),
                    detail: format!(
                        "one of its reactors says it belongs to role {:?}",
                        reactor.role()
                    ),
                });
            }
            let (store, signer, stats, options, shutdown) = (
                config.store.clone(),
                config.signer.clone(),
                self.reactor_stats.clone(),
                reactor.options(options.clone()),
                stopped(stop_rx.clone()),
            );
            self.tasks.spawn(async move {
                let r = run_reactor_with(reactor, store, signer, stats, options, shutdown)
                    .await
                    .map_err(|e| e.to_string());
                ("reactor".to_string(), r)
            });
        }
        let ctx = RoleContext {
            role: name,
            client: config.client.clone(),
            store: config.store.clone(),
            db: self.db.clone(),
            signer: config.signer.clone(),
            min_position_timeout: config.min_position_timeout,
            projections: self.projections.clone(),
        };
        if let Some(service) = role.queries(&ctx)? {
            let queries = start_queries(
                config.client.clone(),
                service.name,
                env!("CARGO_PKG_VERSION"),
                service.description,
                service.endpoints,
            )
            .await
            .map_err(|e| component("queries".into(), e.to_string()))?;
            let shutdown = stopped(stop_rx.clone());
            self.tasks.spawn(async move {
                queries.run_until(shutdown).await;
                ("queries".to_string(), Ok(()))
            });
        }
        for listener in role.listeners(&ctx)? {
            let addr = config
                .listen
                .get(listener.name)
                .copied()
                .unwrap_or(listener.default_addr);
            let socket =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| RoleError::Listen {
                        role: name.to_string(),
                        listener: listener.name.to_string(),
                        addr,
                        detail: e.to_string(),
                    })?;
            let bound = socket.local_addr().unwrap_or(addr);
            tracing::info!(role = name, listener = listener.name, addr = %bound, "listening");
            self.listeners.push((listener.name, bound));
            let label = format!("listener {}", listener.name);
            let served = (listener.serve)(socket, stopped(stop_rx.clone()));
            self.tasks.spawn(async move { (label, served.await) });
        }
        for task in role.tasks(&ctx)? {
            let label = format!("task {}", task.name);
            let ran = (task.run)(stopped(stop_rx.clone()));
            self.tasks.spawn(async move { (label, ran.await) });
        }
        Ok(())
    }

    /// The role's name.
    pub fn name(&self) -> &'static str {
        self.role.name()
    }

    /// This instance's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// This instance's sled store.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The running projection `name`.
    pub fn projection(&self, name: &str) -> Option<&ProjectionHandle> {
        self.projections.iter().find(|p| p.name() == name)
    }

    /// Every running projection.
    pub fn projections(&self) -> &[ProjectionHandle] {
        &self.projections
    }

    /// Counters of the role's reactors.
    pub fn reactor_stats(&self) -> &Arc<ReactorStats> {
        &self.reactor_stats
    }

    /// The address listener `name` is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
    }

    /// Whether every component runs and every projection has caught up once.
    pub fn health(&self) -> RoleHealth {
        health(self.role.name(), &self.health, &self.projections)
    }

    /// The role's live counters and health, labelled by its name (cheap to
    /// clone; outlives the runtime's borrows, for a metrics endpoint).
    pub fn metrics(&self) -> RoleMetrics {
        RoleMetrics {
            role: self.role.name(),
            reactors: self.reactor_stats.clone(),
            projections: self.projections.clone(),
            health: HealthProbe {
                role: self.role.name(),
                state: self.health.clone(),
                projections: self.projections.clone(),
            },
        }
    }

    /// Runs until `shutdown`, then stops every component and flushes sled. If a
    /// component stops first, stops the rest and returns why.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RoleError> {
        let ended = tokio::select! {
            _ = shutdown => None,
            Some(done) = self.tasks.join_next() => Some(done),
        };
        let Some(done) = ended else {
            self.stop().await;
            return Ok(());
        };
        let (component, detail) = match done {
            Ok((c, Ok(()))) => (c, "stopped unexpectedly".to_string()),
            Ok((c, Err(e))) => (c, e),
            Err(e) => ("task".to_string(), e.to_string()),
        };
        self.record_failure(&component, &detail);
        tracing::error!(role = self.name(), %component, %detail, "a component stopped; stopping the role");
        self.stop().await;
        Err(RoleError::Component {
            role: self.name().to_string(),
            component,
            detail,
        })
    }

    fn record_failure(&self, component: &str, detail: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.failed.push((component.to_string(), detail.to_string()));
    }

    /// Stops every component (in-flight work finishes) and flushes sled.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        for p in &self.projections {
            p.shutdown();
            p.stopped().await;
        }
        if let Err(e) = self.db.flush_async().await {
            tracing::warn!(role = self.name(), error = %e, "cannot flush the role's sled store");
        }
    }
}

/// Reports a role's health from outside its runtime.
#[derive(Clone)]
pub struct HealthProbe {
    role: &'static str,
    state: Arc<Mutex<HealthState>>,
    projections: Vec<ProjectionHandle>,
}

impl std::fmt::Debug for HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthProbe")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl HealthProbe {
    /// The role's current health.
    pub fn health(&self) -> RoleHealth {
        health(self.role, &self.state, &self.projections)
    }
}

fn health(
    role: &'static str,
    state: &Mutex<HealthState>,
    projections: &[ProjectionHandle],
) -> RoleHealth {
    let failed = state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .failed
        .clone();
    let live = failed.is_empty();
    RoleHealth {
        role,
        live,
        ready: live && projections.iter().all(|p| p.is_caught_up()),
        failed,
    }
}
