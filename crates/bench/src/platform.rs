//! The platform under test, wired as `amai up` wires it: the store opened by
//! [`deploy::open_store`], the identity role taken from the registry and run by
//! [`RoleRuntime`] with its service identity registered by
//! [`deploy::register_service`], and the gateway on `127.0.0.1:0`. The llm
//! role (its HTTP API on `127.0.0.1:0`) starts on demand for the llm phases,
//! and the registry's jail role (on the local Docker Engine) for the jail
//! phase, and the audit role (auditing one stream, automatic checkpoints off)
//! for the audit phase, each with its own service identity endorsed by the
//! same operator for what the role writes (and failures).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use amai_bus::{EventStore, EventStoreConfig, IdentityKeys};
use amai_projections::ProjectionHandle;
use amai_workers::deploy;
use amai_workers::role::Role;
use amai_workers::roles::audit::{AuditRole, AuditRoleConfig, StreamTree};
use amai_workers::roles::jail;
use amai_workers::roles::llm::{self, LlmConfig, LlmRole};
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};
use async_nats::jetstream;

use crate::error::{Context as _, Fail};
use crate::{
    projection_stream_ends, stream_ends, wait_positions, BenchConfig, Progress, BENCH_STREAM,
};

/// The role the bench runs (from the registry, like `amai up`).
const ROLE: &str = "identity";

/// The running platform: NATS client, store, identity role, gateway.
pub(crate) struct Platform {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) store: EventStore,
    pub(crate) store_config: EventStoreConfig,
    /// Started after the append throughput phases, so they measure the append
    /// path alone (see [`Platform::start_role`]).
    role: Option<RoleRuntime>,
    role_def: Arc<dyn Role>,
    role_config: RoleRuntimeConfig,
    pub(crate) gateway_url: String,
    stop_gateway: Option<tokio::sync::oneshot::Sender<()>>,
    gateway: tokio::task::JoinHandle<Result<(), amai_gateway::GatewayError>>,
    pub(crate) run_id: String,
    pub(crate) replicas: usize,
    progress: Progress,
    /// The run's trust root, kept to endorse the llm role's service identity.
    operator: IdentityKeys,
    operator_registered_at: prost_types::Timestamp,
    state_root: std::path::PathBuf,
    query_timeout: std::time::Duration,
    /// The llm role, once [`Platform::start_llm_role`] started it.
    llm_role: Option<RoleRuntime>,
    /// The jail role, once [`Platform::start_jail_role`] started it.
    jail_role: Option<RoleRuntime>,
    /// The trust role, once [`Platform::start_trust_role`] started it.
    trust_role: Option<RoleRuntime>,
    /// The audit role, once [`Platform::start_audit_role`] started it.
    audit_role: Option<RoleRuntime>,
    /// The NATS belongs to a deployment (`--nats-url`), not to the bench.
    pub(crate) shared_nats: bool,
}

/// A short id for this run's names (lowercase hex: names allow `[a-z0-9_-]`),
/// so runs against a shared NATS do not collide.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:08x}",
        (nanos as u32) ^ std::process::id().rotate_left(16)
    )
}

impl Platform {
    pub(crate) async fn start(
        config: &BenchConfig,
        scratch: &Path,
        progress: Progress,
    ) -> Result<Platform, Fail> {
        let url = &config.nats_url;
        // A fresh trust root per run: the bench registers its own operator.
        let operator = IdentityKeys::generate();
        let client = deploy::connect_nats(url, "amai-bench").await?;
        let store = deploy::open_store(&client, &config.store, operator.public_key()).await?;
        let js = store.jetstream().clone();
        let store_config = store.config().clone();
        let run_id = run_id();
        let role_def = amai_workers::roles::find(ROLE)?;
        let now = amai_bus::envelope::now_timestamp();
        let service = IdentityKeys::generate();
        let signer = deploy::register_service(
            &store,
            deploy::Operator {
                keys: &operator,
                name: &format!("bench-op-{run_id}"),
                registered_at: now,
            },
            deploy::Service {
                keys: &service,
                name: &format!("bench-svc-{run_id}"),
                registered_at: now,
            },
            role_def.as_ref(),
        )
        .await?;
        let role_config =
            RoleRuntimeConfig::new(client.clone(), store.clone(), scratch.join("state"), signer)
                .min_position_timeout(config.query_timeout);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let cfg = amai_gateway::GatewayConfig::new(client.clone(), store.clone())
            .listen_addr(addr)
            .query_timeout(config.query_timeout)
            .freshness_window(config.request_freshness)
            .max_event_bytes(config.store.max_event_bytes)
            .replicas(config.store.replicas);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let gateway = tokio::spawn(amai_gateway::serve(cfg, listener, async move {
            let _ = stop_rx.await;
        }));
        progress.say(&format!(
            "platform up: nats {url}, gateway {addr}, state in {}",
            scratch.display()
        ));
        Ok(Platform {
            client,
            js,
            store,
            store_config,
            role: None,
            role_def,
            role_config,
            gateway_url: format!("http://{addr}"),
            stop_gateway: Some(stop_tx),
            gateway,
            run_id,
            replicas: config.store.replicas,
            progress,
            operator,
            operator_registered_at: now,
            state_root: scratch.join("state"),
            query_timeout: config.query_timeout,
            llm_role: None,
            jail_role: None,
            trust_role: None,
            audit_role: None,
            shared_nats: config.shared_nats,
        })
    }

    /// A progress line.
    pub(crate) fn say(&self, line: &str) {
        self.progress.say(line);
    }

    /// Starts the identity role (projection, reactor, queries) and waits until it
    /// has caught up with everything appended so far.
    pub(crate) async fn start_role(&mut self) -> Result<&RoleRuntime, Fail> {
        let role = RoleRuntime::start(self.role_def.clone(), self.role_config.clone())
            .await
            .with_context(|| format!("cannot start the {ROLE} role"))?;
        let ends = stream_ends(&self.js).await?;
        let projection = role
            .projection("identity")
            .context("the identity role has no identity projection")?;
        wait_positions(projection, &ends)
            .await
            .context("the identity role did not catch up")?;
        // The reactors react to the events appended before the role started
        // (one trust.initialized per agent): let them finish, and the projection
        // apply their outputs, so later phases do not measure that catch-up.
        for reactor in self.role_def.reactors() {
            let sub = reactor.subscription();
            self.wait_drained(sub.stream(), sub.durable()).await?;
        }
        let ends = stream_ends(&self.js).await?;
        wait_positions(projection, &ends)
            .await
            .context("the identity role did not apply its reactors' outputs")?;
        Ok(self.role.insert(role))
    }

    /// Starts the llm role (recording/replay proxy) with `config`, its HTTP API
    /// on `127.0.0.1:0` and its own service identity: (the API's base URL, the
    /// role's llm projection).
    pub(crate) async fn start_llm_role(
        &mut self,
        config: LlmConfig,
    ) -> Result<(String, ProjectionHandle), Fail> {
        let role: Arc<dyn Role> = Arc::new(LlmRole::with_config(config));
        let config = self
            .service_config(role.as_ref(), "llm")
            .await?
            .listen_addr(llm::LISTENER, SocketAddr::from(([127, 0, 0, 1], 0)));
        let runtime = RoleRuntime::start(role.clone(), config)
            .await
            .context("cannot start the llm role")?;
        let addr = runtime
            .listener_addr(llm::LISTENER)
            .context("the llm role has no HTTP listener")?;
        let projection = runtime
            .projection(llm::LLM_PROJECTION)
            .context("the llm role has no llm projection")?
            .clone();
        self.llm_role = Some(runtime);
        // A fresh llm projection folds every stream it consumes, and its
        // reactor reads its own: let both finish before anything is measured.
        let ends = projection_stream_ends(&self.js, &llm::LlmProjection).await?;
        wait_positions(&projection, &ends)
            .await
            .context("the llm role did not catch up")?;
        self.wait_reactors(role.as_ref()).await?;
        Ok((format!("http://{addr}"), projection))
    }

    /// Starts the registry's jail role (settings from the environment, as
    /// under `amai up`) with its own service identity, and waits until its
    /// projection and reactors have caught up with everything appended so far.
    /// The role's preflight needs the Docker Engine, and removes the jail
    /// containers an earlier instance left on it.
    pub(crate) async fn start_jail_role(&mut self) -> Result<(), Fail> {
        let role = amai_workers::roles::find(jail::NAME)?;
        let config = self.service_config(role.as_ref(), "jail").await?;
        let runtime = RoleRuntime::start(role.clone(), config)
            .await
            .context("cannot start the jail role")?;
        let projection = runtime
            .projection(jail::JAIL_PROJECTION)
            .context("the jail role has no jail projection")?
            .clone();
        self.jail_role = Some(runtime);
        let ends = projection_stream_ends(&self.js, &jail::JailProjection).await?;
        wait_positions(&projection, &ends)
            .await
            .context("the jail role did not catch up")?;
        self.wait_reactors(role.as_ref()).await
    }

    /// Starts the registry's trust role (settings from the environment, as
    /// under `amai up`) with its own service identity, and waits until its
    /// projection has folded the whole feed and its publisher has drained.
    pub(crate) async fn start_trust_role(&mut self) -> Result<(), Fail> {
        let role = amai_workers::roles::find(amai_workers::roles::trust::NAME)?;
        let config = self.service_config(role.as_ref(), "trust").await?;
        let runtime = RoleRuntime::start(role.clone(), config)
            .await
            .context("cannot start the trust role")?;
        let projection = runtime
            .projection(amai_workers::roles::trust::TRUST_PROJECTION)
            .context("the trust role has no trust projection")?
            .clone();
        self.trust_role = Some(runtime);
        let ends = projection_stream_ends(
            &self.js,
            &amai_workers::roles::trust::TrustProjection::new(Default::default()),
        )
        .await?;
        wait_positions(&projection, &ends)
            .await
            .context("the trust role did not catch up")?;
        self.wait_reactors(role.as_ref()).await
    }

    /// Starts an audit role auditing `stream` alone, with automatic
    /// checkpoints off (checkpoints only on request), under its own service
    /// identity; returns the instant the role's runtime was started (after
    /// the identity's registration), without waiting for its trees.
    pub(crate) async fn start_audit_role(
        &mut self,
        stream: &str,
    ) -> Result<std::time::Instant, Fail> {
        let config = AuditRoleConfig::default()
            .only_streams(vec![stream.to_string()])
            .every_events(u64::MAX)
            .interval(std::time::Duration::from_secs(24 * 3600));
        let role: Arc<dyn Role> = Arc::new(AuditRole::with_config(config));
        let config = self.service_config(role.as_ref(), "audit").await?;
        let started = std::time::Instant::now();
        let runtime = RoleRuntime::start(role, config)
            .await
            .context("cannot start the audit role")?;
        self.audit_role = Some(runtime);
        Ok(started)
    }

    /// Flushes the audit role's sled to disk.
    pub(crate) async fn flush_audit_state(&self) -> Result<(), Fail> {
        let db = self
            .audit_role
            .as_ref()
            .context("the audit role is not running")?
            .db()
            .clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await?
            .context("cannot flush the audit role's state")?;
        Ok(())
    }

    /// The audit role's stored tree of `stream` (read from its sled).
    pub(crate) fn audit_tree(&self, stream: &str) -> Result<StreamTree, Fail> {
        let role = self
            .audit_role
            .as_ref()
            .context("the audit role is not running")?;
        Ok(StreamTree::open(role.db(), stream)?)
    }

    /// A runtime configuration for `role` under a new service identity
    /// (`bench-<what>-<run id>`) that the run's operator endorses for what the
    /// role writes.
    async fn service_config(&self, role: &dyn Role, what: &str) -> Result<RoleRuntimeConfig, Fail> {
        let keys = IdentityKeys::generate();
        let signer = deploy::register_service(
            &self.store,
            deploy::Operator {
                keys: &self.operator,
                name: &format!("bench-op-{}", self.run_id),
                registered_at: self.operator_registered_at,
            },
            deploy::Service {
                keys: &keys,
                name: &format!("bench-{what}-{}", self.run_id),
                registered_at: amai_bus::envelope::now_timestamp(),
            },
            role,
        )
        .await?;
        Ok(RoleRuntimeConfig::new(
            self.client.clone(),
            self.store.clone(),
            self.state_root.clone(),
            signer,
        )
        .min_position_timeout(self.query_timeout))
    }

    /// Waits until every reactor of `role` has drained its consumer.
    async fn wait_reactors(&self, role: &dyn Role) -> Result<(), Fail> {
        for reactor in role.reactors() {
            let sub = reactor.subscription();
            self.wait_drained(sub.stream(), sub.durable()).await?;
        }
        Ok(())
    }

    /// Waits (bounded) until a durable consumer has nothing pending or unacked.
    async fn wait_drained(&self, stream: &str, durable: &str) -> Result<(), Fail> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let mut consumer = self
                .js
                .get_stream(stream)
                .await?
                .get_consumer::<jetstream::consumer::pull::Config>(durable)
                .await
                .map_err(|e| Fail::msg(format!("reactor consumer {durable}: {e}")))?;
            let info = consumer.info().await?.clone();
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Fail::msg(format!(
                    "the reactor {durable} did not drain: {} pending, {} unacked",
                    info.num_pending, info.num_ack_pending
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(tx) = self.stop_gateway.take() {
            let _ = tx.send(());
        }
        match (&mut self.gateway).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.say(&format!("gateway stopped with an error: {e}")),
            Err(e) => self.say(&format!("gateway task failed: {e}")),
        }
        if let Some(role) = self.jail_role.as_mut() {
            role.stop().await;
        }
        if let Some(role) = self.trust_role.as_mut() {
            role.stop().await;
        }
        if let Some(role) = self.audit_role.as_mut() {
            role.stop().await;
        }
        if let Some(role) = self.llm_role.as_mut() {
            role.stop().await;
        }
        if let Some(role) = self.role.as_mut() {
            role.stop().await;
        }
        let _ = self.js.delete_stream(BENCH_STREAM).await;
        let _ = self.client.flush().await;
    }
}
