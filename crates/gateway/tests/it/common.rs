//! A nats-server, the streams and a gateway on 127.0.0.1:0, plus an SDK client;
//! optionally an identity worker (so queries are answered), an llm worker, a
//! jail worker and a trust worker.

use std::collections::BTreeMap;
use std::time::Duration;

use amai_bus::proto::{self, IdentityKind};
use amai_bus::streams::{ensure_streams, StreamSettings};
use amai_bus::subjects::AggregateKind;
use amai_bus::{Aggregate, EventStore, EventStoreConfig, IdentityKeys};
use amai_client::{Agent, AmaiClient};
use amai_gateway::{serve, GatewayConfig};
use amai_testkit::NatsServer;
use amai_workers::bootstrap::{ensure_operator, ensure_service};
use amai_workers::reactor::ServiceSigner;
use amai_workers::role::Role;
use amai_workers::roles::identity::IdentityRole;
use amai_workers::roles::jail::{JailConfig, JailRole};
use amai_workers::roles::llm::{LlmConfig, LlmRole};
use amai_workers::roles::trust::{TrustRole, TrustRoleConfig};
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};

/// Event size limit used by the tests (small, to test the limit cheaply).
pub(crate) const MAX_EVENT_BYTES: usize = 8 * 1024;

/// Blob size limit used by the tests.
pub(crate) const MAX_BLOB_BYTES: usize = 256 * 1024;

pub(crate) struct Env {
    /// Reads as the operator (the trust root).
    pub(crate) client: AmaiClient,
    /// Signs nothing.
    #[allow(dead_code)]
    pub(crate) anonymous: AmaiClient,
    /// The deployment's trust root.
    #[allow(dead_code)]
    pub(crate) operator: IdentityKeys,
    pub(crate) url: String,
    pub(crate) metrics: std::sync::Arc<amai_gateway::metrics::GatewayMetrics>,
    pub(crate) js: async_nats::jetstream::Context,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), amai_gateway::GatewayError>>>,
    roles: Vec<(RoleRuntime, tempfile::TempDir)>,
    _nats: NatsServer,
    /// Removes what the jail worker left on the engine, last (also after a
    /// failed assertion).
    _jail_scope: Option<JailScopeCleanup>,
}

/// Removes the deployment's jail leftovers from the engine when dropped.
pub(crate) struct JailScopeCleanup(String);

impl Drop for JailScopeCleanup {
    fn drop(&mut self) {
        amai_testkit::remove_jail_scope(&self.0);
    }
}

impl Env {
    /// Gateway only (queries are unavailable), small event limit.
    pub(crate) async fn start() -> Env {
        Self::start_with(MAX_EVENT_BYTES, false).await
    }

    /// Gateway and an identity worker, events up to `max_event_bytes`.
    pub(crate) async fn with_worker(max_event_bytes: usize) -> Env {
        Self::start_with(max_event_bytes, true).await
    }

    /// Gateway, an identity worker and an llm worker (its proxy on a free port).
    pub(crate) async fn with_llm() -> Env {
        Self::start_roles(MAX_EVENT_BYTES, true, true).await
    }

    async fn start_with(max_event_bytes: usize, worker: bool) -> Env {
        Self::start_roles(max_event_bytes, worker, false).await
    }

    /// Gateway, an identity worker and a jail worker on the local Docker Engine.
    pub(crate) async fn with_jail(config: JailConfig) -> Env {
        Self::start_full(
            MAX_EVENT_BYTES,
            true,
            None,
            Some(config),
            false,
            false,
            false,
        )
        .await
    }

    /// Gateway, an identity worker and an audit worker (checkpoints on request only).
    pub(crate) async fn with_audit() -> Env {
        Self::start_full(MAX_EVENT_BYTES, true, None, None, false, true, false).await
    }

    /// Gateway, identity, llm (with `llm`) and jail workers; the jails reach
    /// the llm role's proxy.
    pub(crate) async fn with_jail_llm(jail: JailConfig, llm: LlmConfig) -> Env {
        Self::start_full(
            MAX_EVENT_BYTES,
            true,
            Some(llm),
            Some(jail),
            false,
            false,
            false,
        )
        .await
    }

    async fn start_roles(max_event_bytes: usize, worker: bool, llm: bool) -> Env {
        let llm = llm.then(|| LlmConfig::default().blob_threshold(MAX_EVENT_BYTES / 2));
        Self::start_full(max_event_bytes, worker, llm, None, false, false, false).await
    }

    /// Gateway, identity, jail and trust workers.
    pub(crate) async fn with_jail_trust(jail: JailConfig) -> Env {
        Self::start_full(MAX_EVENT_BYTES, true, None, Some(jail), true, false, false).await
    }

    /// Gateway, an identity worker and a lifecycle worker.
    pub(crate) async fn with_lifecycle() -> Env {
        Self::start_full(MAX_EVENT_BYTES, true, None, None, false, false, true).await
    }

    /// Gateway, an identity worker and a trust worker.
    pub(crate) async fn with_trust() -> Env {
        Self::start_full(MAX_EVENT_BYTES, true, None, None, true, false, false).await
    }

    async fn start_full(
        max_event_bytes: usize,
        worker: bool,
        llm: Option<LlmConfig>,
        jail: Option<JailConfig>,
        trust: bool,
        audit: bool,
        lifecycle: bool,
    ) -> Env {
        let nats = NatsServer::start();
        let nc = async_nats::connect(nats.url()).await.expect("connect nats");
        let js = async_nats::jetstream::new(nc.clone());
        ensure_streams(&js, &StreamSettings::default())
            .await
            .expect("streams");
        let operator = IdentityKeys::generate();
        let store_config = EventStoreConfig::default()
            .max_event_bytes(max_event_bytes)
            .trust_root(operator.public_key());
        let store = EventStore::new(js.clone(), store_config);
        let now = amai_bus::envelope::now_timestamp();
        // The trust root is registered: reads are signed, and the tests'
        // client reads as the operator (who reads everything).
        ensure_operator(&store, &operator, "operator", now)
            .await
            .expect("operator");
        let _jail_scope = jail.as_ref().map(|_| {
            JailScopeCleanup(
                amai_workers::role::PreflightContext {
                    trust_root: Some(operator.public_key()),
                }
                .deployment(),
            )
        });
        let mut roles = Vec::new();
        let mut wanted: Vec<(std::sync::Arc<dyn Role>, &str)> = Vec::new();
        if worker {
            wanted.push((std::sync::Arc::new(IdentityRole), "svc-identity"));
        }
        if let Some(config) = llm {
            wanted.push((std::sync::Arc::new(LlmRole::with_config(config)), "svc-llm"));
        }
        if trust {
            wanted.push((
                std::sync::Arc::new(TrustRole::with_config(TrustRoleConfig::default())),
                "svc-trust",
            ));
        }
        if audit {
            let config = amai_workers::roles::audit::AuditRoleConfig::default()
                .every_events(1_000_000)
                .interval(Duration::from_secs(3600));
            wanted.push((
                std::sync::Arc::new(amai_workers::roles::audit::AuditRole::with_config(config)),
                "svc-audit",
            ));
        }
        if lifecycle {
            wanted.push((
                std::sync::Arc::new(amai_workers::roles::lifecycle::LifecycleRole),
                "svc-lifecycle",
            ));
        }
        let jail_name = "svc-jail";
        if let Some(config) = &jail {
            wanted.push((
                std::sync::Arc::new(JailRole::with_config(config.clone())),
                jail_name,
            ));
        }
        for (role, name) in wanted {
            // Jails reach the llm role's proxy on the port it bound.
            let proxy = roles
                .iter()
                .find_map(|(r, _): &(RoleRuntime, tempfile::TempDir)| r.listener_addr("llm"));
            let role: std::sync::Arc<dyn Role> = match (&jail, proxy) {
                (Some(config), Some(addr)) if name == jail_name => {
                    std::sync::Arc::new(JailRole::with_config(config.clone().llm_proxy(addr)))
                }
                _ => role,
            };
            let service = IdentityKeys::generate();
            let mut writes = role.writes().to_vec();
            writes.push(AggregateKind::Failure);
            let id = ensure_service(&store, &operator, &service, name, &writes, now)
                .await
                .expect("service");
            let dir = tempfile::tempdir().expect("dir");
            let config = RoleRuntimeConfig::new(
                nc.clone(),
                store.clone(),
                dir.path(),
                ServiceSigner { keys: service, id },
            )
            .listen_addr("llm", std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
            let runtime = RoleRuntime::start(role, config).await.expect("role");
            roles.push((runtime, dir));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = GatewayConfig::new(nc, store)
            .query_timeout(if worker {
                // A bound, never reached when the worker runs.
                Duration::from_secs(5)
            } else {
                Duration::from_millis(500)
            })
            .max_blob_bytes(MAX_BLOB_BYTES);
        let metrics = config.get_metrics();
        let server = tokio::spawn(serve(config, listener, async move {
            let _ = rx.await;
        }));
        let url = format!("http://{addr}");
        let anonymous = AmaiClient::connect(url.clone())
            .await
            .expect("connect gateway");
        let client = anonymous
            .clone()
            .with_signer(operator.identity_id(), operator.clone());
        // The listener accepts before `serve` has created its buckets; the first
        // answer means the gateway is fully up (tests compare stream states).
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("gateway serving");
        Env {
            client,
            anonymous,
            operator,
            url,
            metrics,
            js,
            shutdown: Some(tx),
            server: Some(server),
            roles,
            _nats: nats,
            _jail_scope,
        }
    }

    /// A new agent registered under `name`.
    pub(crate) async fn agent(&self, name: &str) -> Agent {
        let agent = self.client.agent(IdentityKeys::generate());
        agent
            .register(name, IdentityKind::Agent, BTreeMap::new())
            .await
            .expect("register");
        agent
    }

    pub(crate) async fn head_seq(&self, aggregate: &Aggregate) -> u64 {
        self.client
            .chain_head(aggregate)
            .await
            .expect("head")
            .aggregate_seq
    }

    /// Last sequence of every stream (JetStream KV buckets included), but the
    /// trust feed: it only sources the other streams, asynchronously, so it
    /// may still be catching up with appends made before the snapshot.
    pub(crate) async fn stream_positions(&self) -> std::collections::BTreeMap<String, u64> {
        use futures::TryStreamExt;
        let names: Vec<String> = self
            .js
            .stream_names()
            .try_collect()
            .await
            .expect("stream names");
        let mut out = std::collections::BTreeMap::new();
        for name in names {
            if name == amai_bus::streams::TRUST_FEED_STREAM {
                continue;
            }
            let mut stream = self.js.get_stream(&name).await.expect("stream");
            let last = stream.info().await.expect("info").state.last_sequence;
            out.insert(name, last);
        }
        out
    }

    pub(crate) async fn stop(mut self) {
        for (mut role, _dir) in self.roles.drain(..) {
            role.stop().await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("shutdown in time")
                .expect("join")
                .expect("serve ok");
        }
    }
}

pub(crate) fn agg(agent: &Agent) -> Aggregate {
    agent.aggregate().expect("aggregate")
}

/// The raw `EventService` client for hand-made requests.
pub(crate) fn events(
    env: &Env,
) -> proto::event_service_client::EventServiceClient<tonic::transport::Channel> {
    env.client.event_service()
}
