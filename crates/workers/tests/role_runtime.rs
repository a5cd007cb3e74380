//! The role runtime against a real nats-server, with roles declared in the
//! test: state directory, projections, reactors, query service and an extra
//! listener from one declaration; health; one shutdown signal; the declared
//! write permissions; declaration and bind errors.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::consumer::WorkConsumerConfig;
use amai_bus::proto::{self, payload::Kind};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventStore, VerifiedEvent};
use amai_projections::{IdentityProjection, Projection};
use amai_workers::query_service::QueryHandler;
use amai_workers::reactor::{PlannedOutput, ReactError, ReactFuture, Reactor};
use amai_workers::role::{Listener, QueryService, Role, RoleContext, RoleError};
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};
use bytes::Bytes;
use common::{deploy, register, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Appends `trust.initialized` for registrations named `probe...`.
struct ProbeReactor(&'static str);

impl Reactor for ProbeReactor {
    fn role(&self) -> &'static str {
        self.0
    }
    fn subscription(&self) -> WorkConsumerConfig {
        WorkConsumerConfig::new("AMAI_AGENTS", self.0).filter_subject("amai.agent.*")
    }
    fn react<'a>(&'a self, store: &'a EventStore, input: &'a VerifiedEvent) -> ReactFuture<'a> {
        Box::pin(async move {
            let Kind::AgentRegistered(r) = &input.payload else {
                return Ok(Vec::new());
            };
            if !r.name.starts_with("probe") {
                return Ok(Vec::new());
            }
            let trust = Aggregate::new(AggregateKind::Trust, &input.aggregate.id)
                .map_err(|e| ReactError::Poison(e.to_string()))?;
            let head = store
                .chain_head(&trust)
                .await
                .map_err(|e| ReactError::Transient(e.to_string()))?;
            if head.aggregate_seq > 0 {
                return Ok(Vec::new());
            }
            Ok(vec![PlannedOutput {
                aggregate: trust,
                payload: Kind::TrustInitialized(proto::TrustInitialized {
                    agent_id: input.aggregate.id.clone(),
                    score: 1.0,
                }),
                head_seq: 0,
                head_hash: head.hash,
                after_previous: false,
                slot: None,
            }])
        })
    }
}

/// How the test role's listener behaves.
#[derive(Clone, Copy)]
enum ListenerKind {
    /// Answers `hello` to every connection until shutdown.
    Hello,
    /// Fails at once.
    Broken,
}

/// A role declared in the test: the identity projection, a reactor, a query
/// endpoint and a listener.
struct TestRole {
    name: &'static str,
    writes: &'static [AggregateKind],
    reactor_role: &'static str,
    listener: ListenerKind,
    addr: SocketAddr,
}

impl TestRole {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            writes: &[AggregateKind::Trust],
            reactor_role: name,
            listener: ListenerKind::Hello,
            addr: "127.0.0.1:0".parse().expect("addr"),
        }
    }
}

fn subject(role: &str) -> &'static str {
    Box::leak(format!("amai.query.{role}.ping").into_boxed_str())
}

impl Role for TestRole {
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> &'static str {
        "a role declared by a test"
    }
    fn writes(&self) -> &'static [AggregateKind] {
        self.writes
    }
    fn projections(&self) -> Vec<Arc<dyn Projection>> {
        vec![Arc::new(IdentityProjection)]
    }
    fn reactors(&self) -> Vec<Arc<dyn Reactor>> {
        vec![Arc::new(ProbeReactor(self.reactor_role))]
    }
    fn queries(&self, ctx: &RoleContext) -> Result<Option<QueryService>, RoleError> {
        let projection = ctx.projection("identity")?;
        let handler: QueryHandler = Arc::new(move |_req: Bytes| {
            let identities = projection.position("AMAI_AGENTS");
            Box::pin(async move { Ok(Bytes::from(format!("pong {identities}"))) })
        });
        Ok(Some(QueryService {
            name: self.name,
            description: "test queries",
            endpoints: vec![(subject(self.name), handler)],
        }))
    }
    fn listeners(&self, _ctx: &RoleContext) -> Result<Vec<Listener>, RoleError> {
        let kind = self.listener;
        Ok(vec![Listener {
            name: "hello",
            default_addr: self.addr,
            serve: Box::new(move |socket, shutdown| {
                Box::pin(async move {
                    if let ListenerKind::Broken = kind {
                        return Err("broken on purpose".to_string());
                    }
                    tokio::pin!(shutdown);
                    loop {
                        tokio::select! {
                            _ = &mut shutdown => return Ok(()),
                            accepted = socket.accept() => {
                                let (mut conn, _) = accepted.map_err(|e| e.to_string())?;
                                let _ = conn.write_all(b"hello").await;
                            }
                        }
                    }
                })
            }),
        }])
    }
}

async fn hello(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let mut out = String::new();
    conn.read_to_string(&mut out).await?;
    Ok(out)
}

fn config(d: &common::Deployment, root: &std::path::Path) -> RoleRuntimeConfig {
    RoleRuntimeConfig::new(d.client.clone(), d.store.clone(), root, d.signer.clone())
}

#[tokio::test]
async fn one_runtime_runs_a_declared_role_and_stops_it_on_one_signal() {
    let d = deploy().await;
    let root = tempfile::tempdir().expect("dir");
    let runtime = RoleRuntime::start(
        Arc::new(TestRole::new("probe-role")),
        config(&d, root.path()).instance("i1"),
    )
    .await
    .expect("start");

    // State: <state-root>/<role>-<instance>/<role>.sled.
    assert_eq!(runtime.state_dir(), root.path().join("probe-role-i1"));
    assert!(root.path().join("probe-role-i1/probe-role.sled").is_dir());

    // Reactor.
    let (id, position) = register(&d.store, "probe-1").await;
    wait_until("the reactor's output", || async {
        common::trust_seq(&d.store, &id).await == 1
    })
    .await;
    assert_eq!(runtime.reactor_stats().appended.load(Ordering::Relaxed), 1);

    // Projection, query service, health.
    let projection = runtime.projection("identity").expect("projection").clone();
    projection
        .wait_for(&position, Duration::from_secs(10))
        .await
        .expect("projection");
    let reply = d
        .client
        .request(subject("probe-role"), Bytes::new())
        .await
        .expect("query");
    assert!(reply.payload.starts_with(b"pong "), "{:?}", reply.payload);
    let metrics = runtime.metrics();
    assert_eq!(metrics.role, "probe-role");
    wait_until("ready", || {
        let ready = metrics.health.health().ready;
        async move { ready }
    })
    .await;
    assert!(metrics.health.health().live);

    // Listener: bound by the runtime, served by the role.
    let addr = runtime.listener_addr("hello").expect("listener");
    assert_eq!(hello(addr).await.expect("hello"), "hello");

    // One signal stops everything.
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(runtime.run_until(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    stop.send_replace(true);
    run.await.expect("join").expect("clean stop");
    assert!(hello(addr).await.is_err(), "the listener is closed");
    let err = d
        .client
        .request(subject("probe-role"), Bytes::new())
        .await
        .expect_err("no query service after the stop");
    assert_eq!(
        err.kind(),
        async_nats::client::RequestErrorKind::NoResponders,
        "{err}"
    );
    // The sled store was released: it opens again.
    drop((projection, metrics));
    drop(sled::open(root.path().join("probe-role-i1/probe-role.sled")).expect("reopen"));
}

#[tokio::test]
async fn a_component_that_stops_stops_the_role_and_is_reported() {
    let d = deploy().await;
    let root = tempfile::tempdir().expect("dir");
    let mut role = TestRole::new("broken-role");
    role.listener = ListenerKind::Broken;
    let runtime = RoleRuntime::start(Arc::new(role), config(&d, root.path()))
        .await
        .expect("start");
    let probe = runtime.metrics().health;
    let err = runtime
        .run_until(futures::future::pending::<()>())
        .await
        .expect_err("the broken listener stops the role");
    match err {
        RoleError::Component {
            role, component, ..
        } => {
            assert_eq!(role, "broken-role");
            assert_eq!(component, "listener hello");
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let health = probe.health();
    assert!(!health.live && !health.ready);
    assert_eq!(health.failed[0].0, "listener hello");
    assert!(health.failed[0].1.contains("broken on purpose"));
}

#[tokio::test]
async fn outputs_outside_the_declared_aggregates_are_refused_and_recorded() {
    let d = deploy().await;
    let root = tempfile::tempdir().expect("dir");
    let mut role = TestRole::new("llm-only");
    role.writes = &[AggregateKind::Llm];
    let mut runtime = RoleRuntime::start(Arc::new(role), config(&d, root.path()))
        .await
        .expect("start");
    let (id, _) = register(&d.store, "probe-2").await;
    let stats = runtime.reactor_stats().clone();
    wait_until("poison record", || async {
        stats.poisoned.load(Ordering::Relaxed) == 1
    })
    .await;
    runtime.stop().await;
    assert_eq!(common::trust_seq(&d.store, &id).await, 0, "nothing written");
    let failures = Aggregate::new(AggregateKind::Failure, "llm-only").expect("agg");
    let events = d.store.read_chain(&failures, 1, 10).await.expect("read");
    let Kind::ReactorFailed(f) = events[0].verify().expect("valid").payload else {
        panic!("not reactor.failed")
    };
    assert!(f.reason.contains("may not write trust"), "{}", f.reason);
}

#[tokio::test]
async fn inconsistent_declarations_and_busy_addresses_are_start_errors() {
    let d = deploy().await;
    let root = tempfile::tempdir().expect("dir");
    let mut role = TestRole::new("mixed-up");
    role.reactor_role = "someone-else";
    let err = RoleRuntime::start(Arc::new(role), config(&d, root.path()))
        .await
        .expect_err("declaration");
    assert!(matches!(err, RoleError::Declaration { .. }), "{err:?}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut role = TestRole::new("busy-port");
    role.addr = busy.local_addr().expect("addr");
    let err = RoleRuntime::start(Arc::new(role), config(&d, root.path()))
        .await
        .expect_err("busy");
    assert!(
        matches!(&err, RoleError::Listen { listener, .. } if listener == "hello"),
        "{err:?}"
    );
    // The configured address wins over the declared default.
    let mut role = TestRole::new("moved-port");
    role.addr = busy.local_addr().expect("addr");
    let mut runtime = RoleRuntime::start(
        Arc::new(role),
        config(&d, root.path()).listen_addr("hello", "127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("start on the configured address");
    assert_ne!(
        runtime.listener_addr("hello"),
        Some(busy.local_addr().expect("addr"))
    );
    runtime.stop().await;
}
