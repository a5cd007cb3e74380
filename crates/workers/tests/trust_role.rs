//! The trust role against a real nats-server: scores that rise and fall for
//! the right cited reasons, dampened endorsement rings, bursts raising alerts
//! with the right window, decay in event time, byte-identical trust chains on
//! a replay of the feed into a fresh deployment, and no double effect with
//! two instances, lost acks and crashes between outputs.
//!
//! The jail and LLM services' records are appended here by the test holding
//! those services' keys, exactly as the roles write them (the roles are tested
//! on their own; the trust role only reads their events).

mod common;

use common::{bootstrap, service, wait_until};

use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::query;
use amai_bus::streams::{StreamSettings, TRUST_FEED_STREAM};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventStore, IdentityKeys};
use amai_testkit::NatsServer;
use amai_trust::TrustConfig;
use amai_workers::bootstrap::ensure_identity;
use amai_workers::reactor::{FaultHook, FaultPoint, ReactorOptions, ServiceSigner};
use amai_workers::roles::identity::IdentityRole;
use amai_workers::roles::trust::{TrustRole, TrustRoleConfig};
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};
use prost::Message;

const MINUTE: i64 = 60_000;
/// The tests' rate bucket: event time only moves forward (dating back changes
/// nothing) and the store takes dates up to 5 minutes ahead, so a history of
/// buckets fits in the next few minutes.
const BUCKET: i64 = 10_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn model_config() -> TrustConfig {
    TrustConfig {
        half_life_ms: 3_600_000,
        bucket_ms: BUCKET,
        ..TrustConfig::default()
    }
}

/// A deployment with the identity role (slot 1 of every trust chain) and the
/// services whose records are evidence.
struct World {
    _server: NatsServer,
    client: async_nats::Client,
    store: EventStore,
    operator: IdentityKeys,
    identity_signer: ServiceSigner,
    trust_signer: ServiceSigner,
    jail: ServiceSigner,
    llm: ServiceSigner,
    lifecycle: ServiceSigner,
    runtimes: Vec<RoleRuntime>,
    dirs: Vec<tempfile::TempDir>,
}

struct Agent {
    id: String,
    keys: IdentityKeys,
}

impl World {
    async fn new() -> Self {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.expect("connect");
        let (store, operator, identity_signer) =
            bootstrap(&client, &StreamSettings::default()).await;
        let trust_signer = service(
            &store,
            &operator,
            "svc-trust",
            &[AggregateKind::Trust, AggregateKind::Failure],
        )
        .await;
        let jail = service(&store, &operator, "svc-jail", &[AggregateKind::Jail]).await;
        let llm = service(&store, &operator, "svc-llm", &[AggregateKind::Llm]).await;
        let lifecycle = service(
            &store,
            &operator,
            "svc-lifecycle",
            &[AggregateKind::Lifecycle],
        )
        .await;
        let mut w = Self {
            _server: server,
            client,
            store,
            operator,
            identity_signer,
            trust_signer,
            jail,
            llm,
            lifecycle,
            runtimes: Vec::new(),
            dirs: Vec::new(),
        };
        w.start_identity().await;
        w
    }

    async fn start_identity(&mut self) {
        let dir = tempfile::tempdir().expect("dir");
        let rt = RoleRuntime::start(
            Arc::new(IdentityRole),
            RoleRuntimeConfig::new(
                self.client.clone(),
                self.store.clone(),
                dir.path(),
                self.identity_signer.clone(),
            ),
        )
        .await
        .expect("identity role");
        self.runtimes.push(rt);
        self.dirs.push(dir);
    }

    /// Starts a trust instance on its own state dir; returns its index.
    async fn start_trust(&mut self, options: Option<ReactorOptions>) -> usize {
        self.start_trust_with(options, model_config()).await
    }

    async fn start_trust_with(
        &mut self,
        options: Option<ReactorOptions>,
        model: TrustConfig,
    ) -> usize {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = RoleRuntimeConfig::new(
            self.client.clone(),
            self.store.clone(),
            dir.path(),
            self.trust_signer.clone(),
        );
        if let Some(o) = options {
            config = config.reactor_options(o);
        }
        let role = TrustRole::with_config(TrustRoleConfig::default().model(model));
        let rt = RoleRuntime::start(Arc::new(role), config)
            .await
            .expect("trust role");
        self.runtimes.push(rt);
        self.dirs.push(dir);
        self.runtimes.len() - 1
    }

    async fn agent(&self, name: &str) -> Agent {
        self.identity(name, IdentityKind::Agent).await
    }

    async fn identity(&self, name: &str, kind: IdentityKind) -> Agent {
        let keys = IdentityKeys::generate();
        let id = ensure_identity(
            &self.store,
            &keys,
            name,
            kind,
            None,
            amai_bus::envelope::now_timestamp(),
        )
        .await
        .expect("register");
        Agent { id, keys }
    }

    /// Appends `payload` on `who`'s own chain at event time `at`; returns its id.
    async fn act_at(&self, who: &Agent, payload: Kind, at: i64) -> String {
        let agg = Aggregate::agent(&who.id).expect("agg");
        let head = self.store.chain_head(&agg).await.expect("head");
        let id = uuid::Uuid::now_v7();
        let signed = EventDraft::new(agg, payload)
            .after(head.aggregate_seq, head.hash)
            .id(id)
            .occurred_at(ts(at))
            .sign(&who.keys, &who.id);
        self.store.append(signed).await.expect("append action");
        id.to_string()
    }

    async fn free_action(&self, who: &Agent, ty: &str, at: i64) -> String {
        let agg = Aggregate::agent(&who.id).expect("agg");
        let head = self.store.chain_head(&agg).await.expect("head");
        let id = uuid::Uuid::now_v7();
        let signed = EventDraft::action(agg, ty, "{}")
            .after(head.aggregate_seq, head.hash)
            .id(id)
            .occurred_at(ts(at))
            .sign(&who.keys, &who.id);
        self.store.append(signed).await.expect("append action");
        id.to_string()
    }

    async fn endorse(&self, who: &Agent, endorsee: &str) -> String {
        self.act_at(
            who,
            Kind::AgentEndorsed(proto::AgentEndorsed {
                endorsee: endorsee.to_string(),
                statement: "good colleague".into(),
            }),
            now_ms(),
        )
        .await
    }

    /// A jail run of `who` requested at `at`, finished as `finished` says
    /// (the jail service's record); returns (request id, run_finished id).
    async fn jail_run(
        &self,
        who: &Agent,
        at: i64,
        finished: proto::JailRunFinished,
    ) -> (String, String) {
        let agg = Aggregate::agent(&who.id).expect("agg");
        let head = self.store.chain_head(&agg).await.expect("head");
        let request_id = uuid::Uuid::now_v7();
        let jail_id = amai_bus::jail::jail_id(&who.id, &request_id.to_string());
        let signed = EventDraft::new(
            agg,
            Kind::JailRequested(proto::JailRequested {
                jail_id: jail_id.clone(),
                spec_json: b"{}".to_vec(),
                run: true,
                ..Default::default()
            }),
        )
        .after(head.aggregate_seq, head.hash)
        .id(request_id)
        .occurred_at(ts(at))
        .sign(&who.keys, &who.id);
        self.store.append(signed).await.expect("request");
        let finished_id = self
            .service_record(
                &self.jail,
                AggregateKind::Jail,
                &jail_id,
                Kind::JailRunFinished(proto::JailRunFinished {
                    jail_id: jail_id.clone(),
                    ..finished
                }),
                at,
            )
            .await;
        (request_id.to_string(), finished_id)
    }

    async fn service_record(
        &self,
        svc: &ServiceSigner,
        kind: AggregateKind,
        id: &str,
        payload: Kind,
        at: i64,
    ) -> String {
        let agg = Aggregate::new(kind, id).expect("agg");
        let head = self.store.chain_head(&agg).await.expect("head");
        let signer_head = self
            .store
            .chain_head(&Aggregate::agent(&svc.id).expect("agg"))
            .await
            .expect("signer head");
        let event_id = uuid::Uuid::now_v7();
        let signed = EventDraft::new(agg, payload)
            .after(head.aggregate_seq, head.hash)
            .signer_seq(signer_head.aggregate_seq)
            .id(event_id)
            .occurred_at(ts(at))
            .sign(&svc.keys, &svc.id);
        self.store.append(signed).await.expect("service record");
        event_id.to_string()
    }

    async fn summary(&self, agent: &str) -> proto::TrustSummary {
        query::request(
            &self.client,
            query::TRUST_GET,
            &proto::GetTrustRequest {
                agent_id: agent.to_string(),
                last: 100,
                min_position: None,
            },
            Duration::from_secs(5),
        )
        .await
        .expect("trust get")
    }

    /// Waits until `agent`'s trust chain holds `n` events after slot 1 and the
    /// summary shows them; returns the summary.
    async fn settled(&self, agent: &str, n: u64) -> proto::TrustSummary {
        wait_until("the trust chain", || async {
            common::trust_seq(&self.store, agent).await == 1 + n
        })
        .await;
        wait_until("the summary", || async {
            self.summary(agent).await.last_deltas.len() as u64 == n
        })
        .await;
        self.summary(agent).await
    }

    async fn explain(&self, event_id: &str) -> proto::TrustExplanation {
        query::request(
            &self.client,
            query::TRUST_EXPLAIN,
            &proto::ExplainTrustRequest {
                event_id: event_id.to_string(),
            },
            Duration::from_secs(5),
        )
        .await
        .expect("explain")
    }

    async fn stop(mut self) {
        for rt in &mut self.runtimes {
            rt.stop().await;
        }
    }
}

fn adjusted(d: &proto::TrustDelta) -> &proto::TrustAdjusted {
    match &d.kind {
        Some(proto::trust_delta::Kind::Adjusted(a)) => a,
        other => panic!("expected an adjustment, got {other:?}"),
    }
}

fn clean() -> proto::JailRunFinished {
    proto::JailRunFinished::default()
}

/// The stored trust chain of `agent` (decoded bodies after slot 1).
async fn trust_chain(store: &EventStore, agent: &str) -> Vec<proto::EventBody> {
    let agg = Aggregate::new(AggregateKind::Trust, agent).expect("agg");
    store
        .read_chain(&agg, 1, 10_000)
        .await
        .expect("read")
        .iter()
        .map(|s| {
            let signed = proto::SignedEvent::decode(s.payload.as_ref()).expect("signed");
            proto::EventBody::decode(signed.body.as_slice()).expect("body")
        })
        .collect()
}

#[tokio::test]
async fn a_well_behaved_agent_rises_citing_each_clean_run() {
    let mut w = World::new().await;
    w.start_trust(None).await;
    let alice = w.agent("alice").await;
    let t = now_ms() - 10 * MINUTE;
    let mut runs = Vec::new();
    for i in 0..3 {
        runs.push(w.jail_run(&alice, t + i * MINUTE, clean()).await);
    }
    let summary = w.settled(&alice.id, 3).await;
    assert!(
        summary.score_milli > 60_000,
        "score {}",
        summary.score_milli
    );
    assert_eq!(summary.score, summary.score_milli as f64 / 1000.0);
    let mut before = 60_000;
    // Oldest first: each clean run raised the score, citing run and request.
    for (delta, (request, finished)) in summary.last_deltas.iter().rev().zip(&runs) {
        let a = adjusted(delta);
        assert_eq!(a.signal, "jail_clean");
        assert!(a.positive_milli > 0 && a.negative_milli == 0);
        assert_eq!(a.score_before_milli, before);
        assert!(a.score_after_milli > before);
        before = a.score_after_milli;
        // Caused by the run, or by the request when the run's record reached
        // the feed first (the feed sources each stream on its own).
        match delta.cause_type.as_str() {
            "jail.run_finished" => assert_eq!(delta.cause_id, *finished),
            "jail.requested" => assert_eq!(delta.cause_id, *request),
            other => panic!("caused by {other}"),
        }
        assert_eq!(a.evidence, vec![finished.clone(), request.clone()]);
    }
    let component = summary
        .components
        .iter()
        .find(|c| c.signal == "jail_clean")
        .expect("component");
    assert_eq!(component.count, 3);
    // The chain holds exactly those events, signed by the trust service and
    // caused by the runs.
    let chain = trust_chain(&w.store, &alice.id).await;
    assert_eq!(chain.len(), 4);
    assert_eq!(chain[0].r#type, "trust.initialized");
    for (body, delta) in chain[1..].iter().zip(summary.last_deltas.iter().rev()) {
        assert_eq!(body.r#type, "trust.adjusted");
        assert_eq!(body.actor, w.trust_signer.id);
        assert_eq!(body.id, delta.event_id);
        assert_eq!(body.causation_id, delta.cause_id);
    }
    w.stop().await;
}

#[tokio::test]
async fn a_misbehaving_agent_falls_with_each_reason_cited_and_explained() {
    let mut w = World::new().await;
    w.start_trust(None).await;
    let mallory = w.agent("mallory").await;
    let bad = proto::JailRunFinished {
        violations: vec![
            proto::JailPolicyViolation {
                rule: "deny".into(),
                path: "/etc/passwd".into(),
                detail: "modified".into(),
            },
            proto::JailPolicyViolation {
                rule: "deny".into(),
                path: "/usr/bin/x".into(),
                detail: "added".into(),
            },
        ],
        connections_denied: 7,
        ..Default::default()
    };
    let (request, finished) = w.jail_run(&mallory, now_ms(), bad).await;
    let summary = w.settled(&mallory.id, 2).await;
    assert!(
        summary.score_milli < 60_000,
        "score {}",
        summary.score_milli
    );
    let signals: Vec<_> = summary
        .last_deltas
        .iter()
        .rev()
        .map(|d| adjusted(d).signal.clone())
        .collect();
    assert_eq!(signals, ["jail_policy_violation", "jail_network_denied"]);
    for d in &summary.last_deltas {
        let a = adjusted(d);
        assert!(a.negative_milli > 0 && a.positive_milli == 0, "{a:?}");
        assert!(a.score_after_milli < a.score_before_milli);
    }
    let violation = adjusted(&summary.last_deltas[1]);
    assert!(
        violation.reason.contains('2'),
        "names the violation count: {}",
        violation.reason
    );
    let denied = adjusted(&summary.last_deltas[0]);
    assert!(
        denied.reason.contains('7'),
        "names the attempts: {}",
        denied.reason
    );
    // Explain returns the evidence as stored, verifiable events.
    let why = w.explain(&summary.last_deltas[0].event_id).await;
    let ids: Vec<String> = why
        .evidence
        .iter()
        .map(|s| {
            let signed = s.event.clone().expect("event");
            proto::EventBody::decode(signed.body.as_slice())
                .expect("body")
                .id
        })
        .collect();
    assert_eq!(ids, vec![finished, request]);
    for s in &why.evidence {
        amai_bus::VerifiedEvent::decode(&s.raw).expect("a signed event that verifies");
    }
    let err = query::request::<_, proto::TrustExplanation>(
        &w.client,
        query::TRUST_EXPLAIN,
        &proto::ExplainTrustRequest {
            event_id: uuid::Uuid::now_v7().to_string(),
        },
        Duration::from_secs(5),
    )
    .await
    .expect_err("unknown delta");
    assert_eq!(err.reason.as_deref(), Some(query::reason::NOT_FOUND));
    w.stop().await;
}

#[tokio::test]
async fn a_crash_the_lifecycle_service_records_lowers_the_agents_score_and_a_stop_does_not() {
    let mut w = World::new().await;
    w.start_trust(None).await;
    let flaky = w.agent("flaky").await;
    let changed = |detail| {
        Kind::LifecycleChanged(proto::LifecycleChanged {
            agent_id: flaky.id.clone(),
            detail: Some(detail),
            ..Default::default()
        })
    };
    // A stop asked for by an operator is no evidence.
    w.service_record(
        &w.lifecycle,
        AggregateKind::Lifecycle,
        &flaky.id,
        changed(proto::lifecycle_changed::Detail::Stopped(Default::default())),
        now_ms(),
    )
    .await;
    let crash = w
        .service_record(
            &w.lifecycle,
            AggregateKind::Lifecycle,
            &flaky.id,
            changed(proto::lifecycle_changed::Detail::Crashed(
                proto::LifecycleCrashed {
                    exit_code: 137,
                    ..Default::default()
                },
            )),
            now_ms(),
        )
        .await;
    let summary = w.settled(&flaky.id, 1).await;
    let delta = adjusted(&summary.last_deltas[0]);
    assert_eq!(delta.signal, "crash");
    assert!(delta.negative_milli > 0 && delta.score_after_milli < delta.score_before_milli);
    let why = w.explain(&summary.last_deltas[0].event_id).await;
    let cited: Vec<String> = why
        .evidence
        .iter()
        .map(|s| {
            let signed = s.event.clone().expect("event");
            proto::EventBody::decode(signed.body.as_slice())
                .expect("body")
                .id
        })
        .collect();
    assert_eq!(cited, vec![crash]);
    w.stop().await;
}

#[tokio::test]
async fn an_endorsement_ring_of_fresh_agents_is_dampened_and_an_operator_counts() {
    let mut w = World::new().await;
    w.start_trust(None).await;
    let ring = [
        w.agent("ring-a").await,
        w.agent("ring-b").await,
        w.agent("ring-c").await,
    ];
    for i in 0..3 {
        w.endorse(&ring[i], &ring[(i + 1) % 3].id).await;
        w.endorse(&ring[i], &ring[(i + 2) % 3].id).await;
    }
    for member in &ring {
        let summary = w.settled(&member.id, 2).await;
        assert_eq!(summary.score_milli, 60_000, "the ring pumped {}", member.id);
        for d in &summary.last_deltas {
            let a = adjusted(d);
            assert_eq!(a.signal, "endorsed");
            assert_eq!(a.positive_milli, 0, "dampened: {}", a.reason);
        }
    }
    // A repeated endorsement is no second endorsement.
    w.endorse(&ring[0], &ring[1].id).await;
    // An operator is a pre-trusted peer.
    let op = Agent {
        id: w.operator.identity_id(),
        keys: w.operator.clone(),
    };
    w.endorse(&op, &ring[1].id).await;
    let summary = w.settled(&ring[1].id, 3).await;
    let last = adjusted(&summary.last_deltas[0]);
    assert_eq!(last.signal, "endorsed");
    assert!(last.positive_milli > 0);
    assert!(summary.score_milli > 60_000);
    // Endorsing an unknown identity, or an operator, has no effect at all.
    let nobody = IdentityKeys::generate().identity_id();
    w.endorse(&ring[2], &nobody).await;
    w.endorse(&ring[2], &op.id).await;
    let marker = w.jail_run(&ring[2], now_ms(), clean()).await;
    let summary = w.settled(&ring[2].id, 3).await;
    assert_eq!(summary.last_deltas[0].cause_id, marker.1, "nothing between");
    w.stop().await;
}

#[tokio::test]
async fn a_burst_raises_a_rate_alert_citing_its_window() {
    let mut w = World::new().await;
    let bucket = BUCKET;
    w.start_trust(None).await;
    let bob = w.agent("bob").await;
    let start = (now_ms() / bucket + 1) * bucket;
    // A steady history: two actions per bucket for 12 buckets.
    for m in 0..12 {
        for k in 0..2 {
            w.free_action(&bob, "task.step", start + m * bucket + k * 1000)
                .await;
        }
    }
    // Then 40 in one bucket.
    let burst_at = start + 20 * bucket;
    let mut burst = Vec::new();
    for k in 0..40 {
        burst.push(w.free_action(&bob, "task.step", burst_at + k * 100).await);
    }
    wait_until("an alert", || async {
        common::trust_seq(&w.store, &bob.id).await >= 3
    })
    .await;
    let summary = w
        .settled(&bob.id, common::trust_seq(&w.store, &bob.id).await - 1)
        .await;
    let alert = summary
        .last_deltas
        .iter()
        .rev()
        .find_map(|d| match &d.kind {
            Some(proto::trust_delta::Kind::Alert(a)) => Some((d, a)),
            _ => None,
        })
        .expect("an alert");
    let (delta, alert) = alert;
    assert_eq!(alert.kind, "rate_spike");
    assert!(alert.severity >= proto::TrustSeverity::Warning as i32);
    let window = alert.window.clone().expect("window");
    assert_eq!(window.first_event, burst[0]);
    assert!(burst.contains(&window.last_event));
    assert_eq!(
        delta.cause_id, window.last_event,
        "raised by the action that crossed the threshold"
    );
    assert!(window.from_ms >= burst_at && window.to_ms < burst_at + bucket);
    assert!(window.count >= 20 && window.count <= 40);
    assert!(alert.evidence.iter().all(|id| burst.contains(id)));
    // The burst also costs trust, and nothing was raised for the steady part.
    assert!(summary.last_deltas.iter().any(
        |d| matches!(&d.kind, Some(proto::trust_delta::Kind::Adjusted(a)) if a.signal == "burst")
    ));
    let alerts: proto::TrustAlertList = query::request(
        &w.client,
        query::TRUST_ALERTS,
        &proto::ListTrustAlertsRequest {
            agent_id: bob.id.clone(),
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .await
    .expect("alerts");
    assert!(!alerts.alerts.is_empty());
    assert!(alerts.alerts.iter().all(|d| d.event_time_ms >= burst_at));
    w.stop().await;
}

#[tokio::test]
async fn decay_returns_the_score_toward_sixty_in_event_time() {
    let mut w = World::new().await;
    w.start_trust_with(
        None,
        TrustConfig {
            half_life_ms: MINUTE,
            ..model_config()
        },
    )
    .await;
    let eve = w.agent("eve").await;
    w.jail_run(
        &eve,
        now_ms(),
        proto::JailRunFinished {
            connections_denied: 1,
            ..Default::default()
        },
    )
    .await;
    let summary = w.settled(&eve.id, 1).await;
    let fallen = adjusted(&summary.last_deltas[0]).score_after_milli;
    assert!(fallen < 60_000);
    // Dating evidence back does not make it count less.
    let back = w.agent("eve-back").await;
    w.jail_run(
        &back,
        now_ms() - 24 * 3_600_000,
        proto::JailRunFinished {
            connections_denied: 1,
            ..Default::default()
        },
    )
    .await;
    let backdated = w.settled(&back.id, 1).await;
    assert_eq!(
        adjusted(&backdated.last_deltas[0]).score_after_milli,
        fallen
    );
    // Four half-lives of event time later (any event advances the clock; the
    // store takes dates up to 5 minutes ahead).
    let later_at = now_ms() + 4 * MINUTE;
    w.free_action(&eve, "task.step", later_at).await;
    wait_until("the clock to move", || async {
        w.summary(&eve.id).await.clock_ms >= later_at
    })
    .await;
    let later = w.summary(&eve.id).await;
    assert!(
        later.score_milli > fallen,
        "{} <= {fallen}",
        later.score_milli
    );
    assert!(later.score_milli <= 60_000, "never past the baseline");
    let left = 60_000 - later.score_milli;
    let drop = 60_000 - fallen;
    assert!(
        left * 10 < drop * 2 && left * 20 > drop / 2,
        "about 1/16 of the drop is left: {left} of {drop}"
    );
    // The other agent decays with the deployment's clock too.
    assert!(w.summary(&back.id).await.score_milli > fallen);
    w.stop().await;
}

/// Everything one scenario does: clean and bad runs (two outputs from one
/// event), endorsements, a burst, an LLM replay miss.
async fn scenario(w: &World) -> Vec<String> {
    let alice = w.agent("alice").await;
    let bob = w.agent("bob").await;
    let carol = w.agent("carol").await;
    let t = now_ms() - 40 * MINUTE;
    w.jail_run(&alice, t, clean()).await;
    w.jail_run(&alice, t + MINUTE, clean()).await;
    w.jail_run(
        &bob,
        t + 2 * MINUTE,
        proto::JailRunFinished {
            violations: vec![proto::JailPolicyViolation::default()],
            connections_denied: 3,
            oom_killed: true,
            ..Default::default()
        },
    )
    .await;
    w.endorse(&alice, &carol.id).await;
    w.endorse(&bob, &carol.id).await;
    let start = (now_ms() / BUCKET + 1) * BUCKET;
    for m in 0..8 {
        for k in 0..2 {
            w.free_action(&carol, "task.step", start + m * BUCKET + k * 1000)
                .await;
        }
    }
    for k in 0..30 {
        w.free_action(&carol, "task.step", start + 12 * BUCKET + k * 100)
            .await;
    }
    // An LLM replay session of bob's that missed.
    let session = uuid::Uuid::now_v7().to_string();
    w.act_at(
        &bob,
        Kind::LlmSessionOpened(proto::LlmSessionOpened {
            session_id: session.clone(),
            mode: proto::LlmMode::Replay as i32,
            ..Default::default()
        }),
        now_ms(),
    )
    .await;
    w.service_record(
        &w.llm,
        AggregateKind::Llm,
        &session,
        Kind::LlmReplayMissed(proto::LlmReplayMissed {
            session_id: session.clone(),
            reason: "no recording matches".into(),
            ..Default::default()
        }),
        now_ms(),
    )
    .await;
    vec![alice.id, bob.id, carol.id]
}

/// Expected trust events after slot 1, per agent of [`scenario`]: alice two
/// clean runs; bob violation + denied + memory + the replay miss; carol two
/// endorsements, a burst alert and its adjustment (at least).
async fn settle_scenario(w: &World, ids: &[String]) {
    wait_until("the publisher drained", || {
        common::consumer_drained(
            &w.store,
            TRUST_FEED_STREAM,
            amai_workers::roles::trust::PUBLISHER_DURABLE,
        )
    })
    .await;
    assert_eq!(common::trust_seq(&w.store, &ids[0]).await, 3);
    assert_eq!(common::trust_seq(&w.store, &ids[1]).await, 5);
    assert!(common::trust_seq(&w.store, &ids[2]).await >= 5);
}

async fn stream_raw(js: &async_nats::jetstream::Context, stream: &str) -> Vec<(String, Vec<u8>)> {
    let s = js.get_stream(stream).await.expect("stream");
    let last = s.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = s.get_raw_message(seq).await.expect("message");
        out.push((m.subject.to_string(), m.payload.to_vec()));
    }
    out
}

#[tokio::test]
async fn replaying_the_feed_into_a_fresh_deployment_gives_byte_identical_trust_chains() {
    let mut a = World::new().await;
    a.start_trust(None).await;
    let ids = scenario(&a).await;
    settle_scenario(&a, &ids).await;
    let js_a = a.store.jetstream().clone();
    let feed = stream_raw(&js_a, TRUST_FEED_STREAM).await;
    let names = stream_raw(&js_a, "AMAI_NAMES").await;
    let trust_a = stream_raw(&js_a, "AMAI_TRUST").await;

    // A fresh deployment: its own nats-server, the same keys, the same feed.
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client.clone());
    amai_bus::streams::ensure_streams(&js, &StreamSettings::default())
        .await
        .expect("streams");
    let store = EventStore::new(
        js.clone(),
        amai_bus::EventStoreConfig::default().trust_root(a.operator.public_key()),
    );
    for (subject, payload) in &names {
        js.publish(subject.clone(), payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let fresh_feed = js.get_stream(TRUST_FEED_STREAM).await.expect("feed");
    for (i, (subject, payload)) in feed.iter().enumerate() {
        js.publish(subject.clone(), payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        // One at a time: the fresh feed takes the same order.
        let mut f = fresh_feed.clone();
        wait_until("sourced", || {
            let mut f = f.clone();
            async move { f.info().await.map(|i| i.state.messages).unwrap_or(0) >= (i + 1) as u64 }
        })
        .await;
        let _ = f.info().await;
    }
    let b = World {
        _server: server,
        client,
        store,
        operator: a.operator.clone(),
        identity_signer: a.identity_signer.clone(),
        trust_signer: a.trust_signer.clone(),
        jail: a.jail.clone(),
        llm: a.llm.clone(),
        lifecycle: a.lifecycle.clone(),
        runtimes: Vec::new(),
        dirs: Vec::new(),
    };
    let mut b = b;
    b.start_identity().await;
    b.start_trust(None).await;
    assert_eq!(
        stream_raw(&js, TRUST_FEED_STREAM).await,
        feed,
        "the same feed"
    );
    wait_until("the fresh trust stream", || async {
        js.get_stream("AMAI_TRUST")
            .await
            .expect("s")
            .get_info()
            .await
            .expect("i")
            .state
            .messages as usize
            >= trust_a.len()
    })
    .await;
    settle_scenario(&b, &ids).await;
    let trust_b = stream_raw(&js, "AMAI_TRUST").await;
    // Per chain, byte for byte (chains are independent, so only the
    // interleaving of different agents' events may differ).
    let per_subject = |all: &[(String, Vec<u8>)]| {
        let mut m: std::collections::BTreeMap<String, Vec<Vec<u8>>> = Default::default();
        for (s, p) in all {
            m.entry(s.clone()).or_default().push(p.clone());
        }
        m
    };
    assert_eq!(per_subject(&trust_b), per_subject(&trust_a));
    a.stop().await;
    b.stop().await;
}

/// Fails output 1 of every reaction once (a crash between two outputs) and
/// loses the first ack of every input (a crash after storing, before acking).
fn crashy(fired: Arc<std::sync::atomic::AtomicU64>) -> FaultHook {
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::<(
        String,
        u8,
    )>::new()));
    Arc::new(move |point: FaultPoint, input: &str| {
        let tag = match point {
            FaultPoint::AppendOutput { index: 1 } => 1,
            FaultPoint::Ack => 2,
            _ => return Ok(()),
        };
        if seen.lock().expect("lock").insert((input.to_string(), tag)) {
            fired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(format!("injected crash at {point:?}"))
        } else {
            Ok(())
        }
    })
}

#[tokio::test]
async fn two_instances_with_crashes_never_apply_an_adjustment_twice() {
    let mut w = World::new().await;
    let fast = ReactorOptions::default().redelivery(vec![Duration::from_millis(50)]);
    let fired = Arc::new(std::sync::atomic::AtomicU64::new(0));
    w.start_trust(Some(fast.clone().fault_hook(crashy(fired.clone()))))
        .await;
    w.start_trust(Some(fast.clone())).await;
    let ids = scenario(&w).await;
    // Kill one instance mid-way and bring it back on its own state.
    let first = w.runtimes.remove(1);
    let dir = w.dirs.remove(1);
    let mut first = first;
    first.stop().await;
    drop(first);
    let config = RoleRuntimeConfig::new(
        w.client.clone(),
        w.store.clone(),
        dir.path(),
        w.trust_signer.clone(),
    )
    .reactor_options(fast.fault_hook(crashy(fired.clone())));
    let role = TrustRole::with_config(TrustRoleConfig::default().model(model_config()));
    w.runtimes.push(
        RoleRuntime::start(Arc::new(role), config)
            .await
            .expect("restart"),
    );
    w.dirs.push(dir);
    settle_scenario(&w, &ids).await;
    assert!(
        fired.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the crashes happened"
    );
    for id in &ids {
        let chain = trust_chain(&w.store, id).await;
        let mut seen = std::collections::HashSet::new();
        for (i, body) in chain.iter().enumerate() {
            assert_eq!(body.aggregate_seq, i as u64 + 1, "contiguous");
            assert!(seen.insert(body.id.clone()), "{} appended twice", body.id);
        }
        // Every instance's projection planned exactly what is on the chain.
        for rt in &w.runtimes[1..] {
            let model = amai_workers::roles::trust::TrustReadModel::new(
                rt.projection("trust").expect("projection").tree().clone(),
            );
            let (history, more) = model.history(id, 0, 1000).expect("history");
            assert!(!more);
            let planned: Vec<_> = history.iter().map(|d| d.event_id.clone()).collect();
            let stored: Vec<_> = chain[1..].iter().map(|b| b.id.clone()).collect();
            assert_eq!(planned, stored, "{id}");
        }
    }
    w.stop().await;
}

fn message_to(to: &Agent) -> Kind {
    Kind::AgentMessageSent(proto::AgentMessageSent {
        to: to.id.clone(),
        sealed: b"sealed bytes".to_vec(),
        recipient_x25519_key: to.keys.x25519_public().to_vec(),
    })
}

#[tokio::test]
async fn messaging_many_new_peers_raises_a_fan_out_alert_and_known_peers_do_not_count() {
    let mut w = World::new().await;
    w.start_trust(None).await;
    let spammer = w.agent("spammer").await;
    let mut peers = Vec::new();
    for i in 0..12 {
        peers.push(w.agent(&format!("peer-{i}")).await);
    }
    // Two peers wrote to the spammer first: writing back is no new contact.
    for p in &peers[..2] {
        w.act_at(p, message_to(&spammer), now_ms()).await;
    }
    let mut sent = Vec::new();
    for p in &peers[..11] {
        sent.push(w.act_at(&spammer, message_to(p), now_ms()).await);
    }
    // 9 new peers so far: under the warning threshold (10).
    let twelfth = w.act_at(&spammer, message_to(&peers[11]), now_ms()).await;
    sent.push(twelfth.clone());
    let summary = w.settled(&spammer.id, 2).await;
    let (delta, alert) = summary
        .last_deltas
        .iter()
        .find_map(|d| match &d.kind {
            Some(proto::trust_delta::Kind::Alert(a)) => Some((d, a)),
            _ => None,
        })
        .expect("an alert");
    assert_eq!(alert.kind, "new_peers");
    assert_eq!(delta.cause_id, twelfth, "the tenth new peer raised it");
    assert_eq!(alert.window.as_ref().expect("window").count, 10);
    assert!(
        alert.evidence.iter().all(|id| sent[2..].contains(id)),
        "only new contacts are cited"
    );
    let fan_out = adjusted(&summary.last_deltas[0]);
    assert_eq!(fan_out.signal, "fan_out");
    assert!(fan_out.negative_milli > 0);
    // The peers who received messages got no adjustment for it.
    assert_eq!(common::trust_seq(&w.store, &peers[5].id).await, 1);
    w.stop().await;
}

/// A rogue publisher with NATS access but no service key: a `jail.run_finished`
/// signed by the agent itself, published raw, earns it nothing (the fold
/// verifies every event and never applies this one); an action published raw
/// with a date a year ahead (the store would refuse it) moves the event-time
/// clock at most 5 minutes past when it was stored, so it cannot age anyone's
/// evidence.
#[tokio::test]
async fn raw_published_forgeries_and_far_future_dates_change_no_score() {
    let mut w = World::new().await;
    w.start_trust(None).await;
    let mallory = w.agent("mallory").await;
    let publish_raw = |subject: String, signed: proto::SignedEvent| {
        let js = w.store.jetstream().clone();
        async move {
            js.publish(subject, signed.encode_to_vec().into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    };
    // Her own request, then a "clean run" she signed herself.
    let bad = proto::JailRunFinished {
        connections_denied: 1,
        ..Default::default()
    };
    let (_, _) = w.jail_run(&mallory, now_ms(), bad).await;
    let summary = w.settled(&mallory.id, 1).await;
    let fallen = summary.score_milli;
    // A real request of hers (its jail id derived as the jail role requires),
    // which no jail service ever runs.
    let own = Aggregate::agent(&mallory.id).expect("agg");
    let head = w.store.chain_head(&own).await.expect("head");
    let request = uuid::Uuid::now_v7();
    let jail_id = amai_bus::jail::jail_id(&mallory.id, &request.to_string());
    let signed = EventDraft::new(
        own.clone(),
        Kind::JailRequested(proto::JailRequested {
            jail_id: jail_id.clone(),
            spec_json: b"{}".to_vec(),
            run: true,
            ..Default::default()
        }),
    )
    .after(head.aggregate_seq, head.hash)
    .id(request)
    .sign(&mallory.keys, &mallory.id);
    w.store.append(signed).await.expect("request");
    let agg = Aggregate::new(AggregateKind::Jail, &jail_id).expect("agg");
    let forged = EventDraft::new(
        agg.clone(),
        Kind::JailRunFinished(proto::JailRunFinished {
            jail_id: jail_id.clone(),
            ..Default::default()
        }),
    )
    .after(0, amai_bus::ZERO_HASH)
    .sign(&mallory.keys, &mallory.id);
    publish_raw(agg.subject(), forged).await;

    // An action dated a year ahead, correctly chained and signed, published raw.
    let head = w.store.chain_head(&own).await.expect("head");
    let year = 365 * 24 * 3_600_000;
    let future = EventDraft::action(own.clone(), "task.step", "{}")
        .after(head.aggregate_seq, head.hash)
        .occurred_at(ts(now_ms() + year))
        .sign(&mallory.keys, &mallory.id);
    publish_raw(own.subject(), future).await;

    // A marker after both: once the fold reached it, it passed them.
    let marker = w.agent("marker").await;
    w.jail_run(&marker, now_ms(), clean()).await;
    w.settled(&marker.id, 1).await;
    let after = w.summary(&mallory.id).await;
    assert_eq!(
        after.last_deltas.len(),
        1,
        "the forged clean run counted: {:?}",
        after.last_deltas
    );
    assert!(
        after.clock_ms <= now_ms() + 6 * MINUTE,
        "the clock jumped to {} (now {})",
        after.clock_ms,
        now_ms()
    );
    assert!(
        60_000 - after.score_milli >= (60_000 - fallen) * 9 / 10,
        "the evidence did not age: {} vs {fallen}",
        after.score_milli
    );
    // The forgery is on record as an integrity violation of the fold.
    let projection = w.runtimes[1].projection("trust").expect("projection");
    assert!(projection.violation_count() >= 1);
    w.stop().await;
}
