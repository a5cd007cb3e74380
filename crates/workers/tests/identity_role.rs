//! The identity role against a real nats-server: exactly-once trust
//! initialisation with several instances and redeliveries, poison inputs, and
//! `min_position` queries.

mod common;

use common::{deploy, register, trust_seq, wait_until};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::consumer::WorkConsumerConfig;
use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::query::{self, QueryCode};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventStore, IdentityKeys, Position, VerifiedEvent};
use amai_workers::bootstrap::ensure_identity;
use amai_workers::reactor::{run_reactor, ReactError, ReactFuture, Reactor, ReactorStats};
use amai_workers::roles::identity::{self, IdentityRole, TrustInitializer};
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};

/// The identity role's trust reactor durable (`TrustInitializer::subscription`).
const TRUST_INIT_DURABLE: &str = "identity-trust-init";

#[tokio::test]
async fn two_instances_initialise_trust_exactly_once_per_identity() {
    let d = deploy().await;
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let mut roles = Vec::new();
    for dir in &dirs {
        roles.push(
            RoleRuntime::start(
                Arc::new(IdentityRole),
                RoleRuntimeConfig::new(
                    d.client.clone(),
                    d.store.clone(),
                    dir.path(),
                    d.signer.clone(),
                ),
            )
            .await
            .expect("role"),
        );
    }
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(register(&d.store, &format!("agent-{i}")).await.0);
    }
    for id in &ids {
        wait_until("trust.initialized", || async {
            trust_seq(&d.store, id).await >= 1
        })
        .await;
    }
    // Every input acked and none pending on the shared durable: outputs are
    // stored before the ack, so no decision is still on its way when we count.
    wait_until("the trust reactor's durable drained", || {
        common::consumer_drained(&d.store, "AMAI_AGENTS", TRUST_INIT_DURABLE)
    })
    .await;
    for id in &ids {
        assert_eq!(
            trust_seq(&d.store, id).await,
            1,
            "exactly one trust event for {id}"
        );
    }
    let appended: u64 = roles
        .iter()
        .map(|r| r.reactor_stats().appended.load(Ordering::Relaxed))
        .sum();
    assert_eq!(
        appended, 32,
        "30 agents + operator + service, each initialised once"
    );
    // Both instances keep a full projection copy with the trust score joined in.
    for role in &roles {
        for id in &ids {
            let req = proto::GetIdentityRequest {
                selector: Some(proto::get_identity_request::Selector::Id(id.clone())),
                min_position: None,
            };
            wait_until("projection copy", || async {
                identity::read_model(role)
                    .expect("model")
                    .get_identity(&req)
                    .expect("read")
                    .and_then(|i| i.trust_score)
                    == Some(60.0)
            })
            .await;
        }
    }
    for mut r in roles {
        r.stop().await;
    }
}

/// A second consumer of the same inputs re-runs the reaction for every
/// registration, exactly as a redelivery after a crash would.
struct Redelivered;

impl Reactor for Redelivered {
    fn role(&self) -> &'static str {
        "identity"
    }
    fn subscription(&self) -> WorkConsumerConfig {
        WorkConsumerConfig::new("AMAI_AGENTS", "redelivery-test").filter_subject("amai.agent.*")
    }
    fn react<'a>(&'a self, store: &'a EventStore, input: &'a VerifiedEvent) -> ReactFuture<'a> {
        TrustInitializer.react(store, input)
    }
}

#[tokio::test]
async fn redelivered_inputs_produce_no_second_output() {
    let d = deploy().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut role = RoleRuntime::start(
        Arc::new(IdentityRole),
        RoleRuntimeConfig::new(
            d.client.clone(),
            d.store.clone(),
            dir.path(),
            d.signer.clone(),
        ),
    )
    .await
    .expect("role");
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(register(&d.store, &format!("redo-{i}")).await.0);
    }
    for id in &ids {
        wait_until("trust.initialized", || async {
            trust_seq(&d.store, id).await == 1
        })
        .await;
    }
    let stats = Arc::new(ReactorStats::default());
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_reactor(
        Arc::new(Redelivered),
        d.store.clone(),
        d.signer.clone(),
        stats.clone(),
        async move {
            let _ = rx.wait_for(|v| *v).await;
        },
    ));
    wait_until("all inputs redelivered", || async {
        stats.acked.load(Ordering::Relaxed) >= 12
    })
    .await;
    let _ = tx.send(true);
    task.await.expect("join").expect("reactor");
    assert_eq!(
        stats.appended.load(Ordering::Relaxed),
        0,
        "no output may be appended twice"
    );
    for id in &ids {
        assert_eq!(trust_seq(&d.store, id).await, 1);
    }
    role.stop().await;
}

struct Poisoned;

impl Reactor for Poisoned {
    fn role(&self) -> &'static str {
        "poison-test"
    }
    fn subscription(&self) -> WorkConsumerConfig {
        WorkConsumerConfig::new("AMAI_AGENTS", "poison-test").filter_subject("amai.agent.*")
    }
    fn react<'a>(&'a self, _store: &'a EventStore, input: &'a VerifiedEvent) -> ReactFuture<'a> {
        let name = match &input.payload {
            Kind::AgentRegistered(r) => r.name.clone(),
            _ => String::new(),
        };
        Box::pin(async move {
            if name == "poison" {
                Err(ReactError::Poison(
                    "this input can never be processed".into(),
                ))
            } else {
                Ok(Vec::new())
            }
        })
    }
}

#[tokio::test]
async fn poison_inputs_are_recorded_and_terminated() {
    let d = deploy().await;
    let (poison_id, _) = register(&d.store, "poison").await;
    register(&d.store, "healthy").await;
    let stats = Arc::new(ReactorStats::default());
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_reactor(
        Arc::new(Poisoned),
        d.store.clone(),
        d.signer.clone(),
        stats.clone(),
        async move {
            let _ = rx.wait_for(|v| *v).await;
        },
    ));
    wait_until("poison recorded", || async {
        stats.poisoned.load(Ordering::Relaxed) == 1 && stats.acked.load(Ordering::Relaxed) >= 4
    })
    .await;
    let failures = Aggregate::new(AggregateKind::Failure, "poison-test").expect("agg");
    let head = d.store.chain_head(&failures).await.expect("head");
    assert_eq!(head.aggregate_seq, 1, "one reactor.failed");
    let events = d.store.read_chain(&failures, 1, 10).await.expect("read");
    let ev = events[0].verify().expect("valid");
    let Kind::ReactorFailed(f) = &ev.payload else {
        panic!("not reactor.failed: {}", ev.event_type())
    };
    assert_eq!(f.role, "poison-test");
    assert!(f.reason.contains("never be processed"), "{}", f.reason);
    assert!(f.input_subject.ends_with(&poison_id));
    // Terminated, not redelivered: nothing stays pending on the consumer.
    wait_until("consumer drained", || {
        common::consumer_drained(&d.store, "AMAI_AGENTS", "poison-test")
    })
    .await;
    let _ = tx.send(true);
    task.await.expect("join").expect("reactor");
    assert_eq!(stats.poisoned.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn queries_wait_for_min_position_and_refuse_tokens_they_cannot_honour() {
    let d = deploy().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut role = RoleRuntime::start(
        Arc::new(IdentityRole),
        RoleRuntimeConfig::new(
            d.client.clone(),
            d.store.clone(),
            dir.path(),
            d.signer.clone(),
        )
        .min_position_timeout(Duration::from_millis(300)),
    )
    .await
    .expect("role");
    let (id, position) = register(&d.store, "reader").await;
    let req = proto::GetIdentityRequest {
        selector: Some(proto::get_identity_request::Selector::Name("reader".into())),
        min_position: Some(position.clone().into()),
    };
    let got: proto::Identity =
        query::request(&d.client, query::IDENTITY_GET, &req, Duration::from_secs(5))
            .await
            .expect("read your write");
    assert_eq!(got.id, id);
    let ahead = proto::GetIdentityRequest {
        min_position: Some(Position::new("AMAI_AGENTS", position.seq + 1000).into()),
        ..req.clone()
    };
    let err = query::request::<_, proto::Identity>(
        &d.client,
        query::IDENTITY_GET,
        &ahead,
        Duration::from_secs(5),
    )
    .await
    .expect_err("beyond");
    // Beyond the stream's end: at once, naming the last sequence.
    assert_eq!(err.code, QueryCode::OutOfRange, "{err}");
    assert_eq!(
        err.reason.as_deref(),
        Some(query::reason::POSITION_BEYOND_END)
    );
    assert_eq!(
        err.metadata.get("last_seq"),
        Some(
            &d.store
                .jetstream()
                .get_stream("AMAI_AGENTS")
                .await
                .expect("stream")
                .cached_info()
                .state
                .last_sequence
                .to_string()
        )
    );
    let foreign = proto::GetIdentityRequest {
        min_position: Some(Position::new("AMAI_LLM", 1).into()),
        ..req.clone()
    };
    let err = query::request::<_, proto::Identity>(
        &d.client,
        query::IDENTITY_GET,
        &foreign,
        Duration::from_secs(5),
    )
    .await
    .expect_err("not consumed");
    assert_eq!(err.code, QueryCode::InvalidArgument, "{err}");
    assert_eq!(
        err.reason.as_deref(),
        Some(query::reason::STREAM_NOT_CONSUMED)
    );
    let missing = proto::GetIdentityRequest {
        selector: Some(proto::get_identity_request::Selector::Name("nobody".into())),
        min_position: None,
    };
    let err = query::request::<_, proto::Identity>(
        &d.client,
        query::IDENTITY_GET,
        &missing,
        Duration::from_secs(5),
    )
    .await
    .expect_err("missing");
    assert_eq!(err.code, QueryCode::NotFound);
    role.stop().await;
}

#[tokio::test]
async fn deterministic_bootstrap_is_idempotent_across_racing_instances() {
    let d = deploy().await;
    let keys = IdentityKeys::generate();
    let at = amai_bus::envelope::now_timestamp();
    // A second store (its own caches), as another process would have.
    let other = EventStore::new(d.store.jetstream().clone(), d.store.config().clone());
    let (a, b) = tokio::join!(
        ensure_identity(&d.store, &keys, "racer", IdentityKind::Agent, None, at),
        ensure_identity(&other, &keys, "racer", IdentityKind::Agent, None, at)
    );
    assert_eq!(a.expect("a"), b.expect("b"));
    let head = d
        .store
        .chain_head(&Aggregate::agent(keys.identity_id()).expect("agg"))
        .await
        .expect("head");
    assert_eq!(head.aggregate_seq, 1);
    let report = amai_bus::chain::verify_chain(
        &d.store,
        &Aggregate::agent(keys.identity_id()).expect("agg"),
    )
    .await
    .expect("verify");
    assert!(report.ok());
    let claim = d
        .store
        .chain_head(&Aggregate::new(AggregateKind::Name, "racer").expect("agg"))
        .await
        .expect("head");
    assert_eq!(claim.aggregate_seq, 1);
}

#[tokio::test]
async fn the_role_survives_a_nats_server_restart() {
    let mut d = deploy().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut role = RoleRuntime::start(
        Arc::new(IdentityRole),
        RoleRuntimeConfig::new(
            d.client.clone(),
            d.store.clone(),
            dir.path(),
            d.signer.clone(),
        ),
    )
    .await
    .expect("role");
    let (before, _) = register(&d.store, "before-restart").await;
    wait_until("trust before", || async {
        trust_seq(&d.store, &before).await == 1
    })
    .await;

    // Kill nats-server hard and bring it back on the same port and store, once
    // the role's client has seen the outage (so it must really reconnect).
    d.server.kill();
    wait_until("the client to see nats-server gone", || async {
        d.client.connection_state() != async_nats::connection::State::Connected
    })
    .await;
    d.server.restart();

    // Appends work again once the client has reconnected.
    let after = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let keys = IdentityKeys::generate();
            match ensure_identity(
                &d.store,
                &keys,
                "after-restart",
                IdentityKind::Agent,
                None,
                amai_bus::envelope::now_timestamp(),
            )
            .await
            {
                Ok(id) => break id,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no append after the restart: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    // The reactor resumes on its durable consumer, the projection from its checkpoint,
    // and queries are answered again.
    wait_until("trust after restart", || async {
        trust_seq(&d.store, &after).await == 1
    })
    .await;
    let req = proto::GetIdentityRequest {
        selector: Some(proto::get_identity_request::Selector::Name(
            "after-restart".into(),
        )),
        min_position: None,
    };
    wait_until("query after restart", || async {
        let r = query::request::<_, proto::Identity>(
            &d.client,
            query::IDENTITY_GET,
            &req,
            Duration::from_secs(2),
        )
        .await;
        matches!(r, Ok(i) if i.id == after && i.trust_score == Some(60.0))
    })
    .await;
    assert_eq!(
        trust_seq(&d.store, &before).await,
        1,
        "nothing was applied twice"
    );
    let stats = identity::read_model(&role)
        .expect("model")
        .stats()
        .expect("stats");
    assert_eq!(
        stats.identities, 4,
        "operator, service and the two agents, each once"
    );
    role.stop().await;
}
