//! Reactor inputs are never lost silently, and never applied twice, against a
//! real nats-server: transient failures past JetStream's old delivery cap,
//! failure records that cannot be stored, and redeliveries after the dedup
//! window. Faults are injected through the reactor's [`FaultHook`], not a mock.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amai_bus::consumer::WorkConsumerConfig;
use amai_bus::proto::{self, payload::Kind};
use amai_bus::streams::StreamSettings;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventStore, VerifiedEvent};
use amai_workers::reactor::{
    run_reactor_with, Backoff, FaultHook, FaultPoint, PlannedOutput, ReactError, ReactFuture,
    Reactor, ReactorOptions, ReactorStats, DEFAULT_REDELIVERY,
};
use common::{deploy, deploy_with, genesis_id, register, trust_seq, wait_until};

/// The delivery cap reactor consumers had before (inputs beyond it were lost).
const OLD_MAX_DELIVER: u32 = 8;

/// A head-dependent reactor: for every registration named `<prefix>...`, appends
/// `trust.initialized` at the *current* head of `trust/<id>` (not only at seq 1),
/// so only the causation check keeps a late redelivery from applying twice.
/// Registrations named `poison...` are poison. Inputs listed in `gate` wait
/// for the test's go-ahead on every delivery after the first.
struct TestReactor {
    role: &'static str,
    durable: &'static str,
    prefix: &'static str,
    ack_wait: Duration,
    calls: Mutex<HashMap<String, u32>>,
    gate: Option<(String, tokio::sync::watch::Receiver<bool>)>,
}

impl TestReactor {
    fn new(role: &'static str, durable: &'static str, prefix: &'static str) -> Self {
        Self {
            role,
            durable,
            prefix,
            ack_wait: Duration::from_secs(30),
            calls: Mutex::default(),
            gate: None,
        }
    }

    fn calls(&self, input_id: &str) -> u32 {
        self.calls
            .lock()
            .expect("lock")
            .get(input_id)
            .copied()
            .unwrap_or(0)
    }
}

impl Reactor for TestReactor {
    fn role(&self) -> &'static str {
        self.role
    }

    fn subscription(&self) -> WorkConsumerConfig {
        WorkConsumerConfig::new("AMAI_AGENTS", self.durable)
            .filter_subject("amai.agent.*")
            .ack_wait(self.ack_wait)
    }

    fn react<'a>(&'a self, store: &'a EventStore, input: &'a VerifiedEvent) -> ReactFuture<'a> {
        Box::pin(async move {
            let calls = {
                let mut c = self.calls.lock().expect("lock");
                let n = c.entry(input.body.id.clone()).or_default();
                *n += 1;
                *n
            };
            let Kind::AgentRegistered(r) = &input.payload else {
                return Ok(Vec::new());
            };
            if r.name.starts_with("poison") {
                return Err(ReactError::Poison(
                    "this input can never be processed".into(),
                ));
            }
            if !r.name.starts_with(self.prefix) {
                return Ok(Vec::new());
            }
            if let Some((gated, rx)) = &self.gate {
                if *gated == input.body.id && calls > 1 {
                    let mut rx = rx.clone();
                    let _ = rx.wait_for(|go| *go).await;
                }
            }
            let trust = Aggregate::new(AggregateKind::Trust, &input.aggregate.id)
                .map_err(|e| ReactError::Poison(e.to_string()))?;
            let head = store
                .chain_head(&trust)
                .await
                .map_err(|e| ReactError::Transient(e.to_string()))?;
            Ok(vec![PlannedOutput {
                aggregate: trust,
                payload: Kind::TrustInitialized(proto::TrustInitialized {
                    agent_id: input.aggregate.id.clone(),
                    score: 1.0,
                }),
                head_seq: head.aggregate_seq,
                head_hash: head.hash,
                after_previous: false,
                slot: None,
            }])
        })
    }
}

/// A hook failing `point` for `input_id` the first `times` calls; counts calls.
fn failing(point: FaultPoint, input_id: String, times: u32) -> (FaultHook, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let hook: FaultHook = Arc::new(move |p, id| {
        if p != point || id != input_id {
            return Ok(());
        }
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= times {
            Err(format!("injected failure {n} of {times}"))
        } else {
            Ok(())
        }
    });
    (hook, calls)
}

/// Quick retries: JetStream spaces naks by the consumer's redelivery schedule
/// when it has one, so the tests use a short one.
fn fast_retries() -> ReactorOptions {
    ReactorOptions::default()
        .backoff(Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        })
        .redelivery(vec![Duration::from_millis(50)])
}

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), amai_workers::reactor::ReactorError>>,
    stats: Arc<ReactorStats>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.expect("join").expect("reactor");
    }
}

fn start(d: &common::Deployment, reactor: Arc<TestReactor>, options: ReactorOptions) -> Running {
    let stats = Arc::new(ReactorStats::default());
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_reactor_with(
        reactor,
        d.store.clone(),
        d.signer.clone(),
        stats.clone(),
        options,
        async move {
            let _ = rx.wait_for(|v| *v).await;
        },
    ));
    Running { stop, task, stats }
}

async fn failure_records(store: &EventStore, role: &str) -> Vec<proto::ReactorFailed> {
    let agg = Aggregate::new(AggregateKind::Failure, role).expect("agg");
    store
        .read_chain(&agg, 1, 100)
        .await
        .expect("read")
        .iter()
        .map(|e| match e.verify().expect("valid").payload {
            Kind::ReactorFailed(f) => f,
            other => panic!("not reactor.failed: {other:?}"),
        })
        .collect()
}

/// (a) A transient failure on more deliveries than the old cap still ends with
/// the input processed: no poison record, the output stored, the consumer
/// drained. Before, delivery 8 turned the transient error into poison.
#[tokio::test]
async fn transient_failures_past_the_old_delivery_cap_still_end_processed() {
    let d = deploy().await;
    let (id, _) = register(&d.store, "flaky").await;
    let failures = OLD_MAX_DELIVER + 4;
    let (hook, calls) = failing(
        FaultPoint::AppendOutput { index: 0 },
        genesis_id(&id),
        failures,
    );
    let reactor = Arc::new(TestReactor::new(
        "transient-test",
        "transient-test",
        "flaky",
    ));
    let r = start(&d, reactor.clone(), fast_retries().fault_hook(hook));

    wait_until("the output after the transient failures", || async {
        trust_seq(&d.store, &id).await == 1
    })
    .await;
    wait_until("consumer drained", || {
        common::consumer_drained(&d.store, "AMAI_AGENTS", "transient-test")
    })
    .await;
    assert!(calls.load(Ordering::SeqCst) > failures);
    assert!(
        reactor.calls(&genesis_id(&id)) > OLD_MAX_DELIVER,
        "delivered past the old cap"
    );
    let stats = r.stats.clone();
    r.stop().await;
    assert_eq!(stats.poisoned.load(Ordering::Relaxed), 0);
    assert!(stats.retried.load(Ordering::Relaxed) >= u64::from(failures));
    assert!(
        failure_records(&d.store, "transient-test").await.is_empty(),
        "a transient failure is never recorded as poison"
    );
}

/// (b) While the `reactor.failed` record of a poison input cannot be stored,
/// the input is redelivered (nak'ed, not terminated), also past the old
/// delivery cap; once the record is stored, the input is terminated.
#[tokio::test]
async fn a_poison_input_whose_failure_cannot_be_recorded_is_redelivered_not_lost() {
    let d = deploy().await;
    let (id, _) = register(&d.store, "poison-pill").await;
    let failures = OLD_MAX_DELIVER + 4;
    let (hook, calls) = failing(FaultPoint::RecordFailure, genesis_id(&id), failures);
    let reactor = Arc::new(TestReactor::new("record-test", "record-test", "none"));
    let r = start(&d, reactor.clone(), fast_retries().fault_hook(hook));

    wait_until("the failure record", || async {
        !failure_records(&d.store, "record-test").await.is_empty()
    })
    .await;
    wait_until("consumer drained", || {
        common::consumer_drained(&d.store, "AMAI_AGENTS", "record-test")
    })
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        failures + 1,
        "one attempt per delivery"
    );
    assert_eq!(reactor.calls(&genesis_id(&id)), failures + 1, "redelivered");
    let stats = r.stats.clone();
    r.stop().await;
    let records = failure_records(&d.store, "record-test").await;
    assert_eq!(records.len(), 1, "recorded once");
    assert_eq!(records[0].input_event_id, genesis_id(&id));
    assert_eq!(records[0].deliveries, u64::from(failures + 1));
    assert_eq!(stats.poisoned.load(Ordering::Relaxed), 1);
}

/// Waits until JetStream no longer reports a re-publish with the same
/// `Nats-Msg-Id` as a duplicate: the stream's dedup window has passed.
async fn wait_out_dedup_window(client: &async_nats::Client) {
    let js = async_nats::jetstream::new(client.clone());
    let msg_id = format!("dedup-probe-{}", uuid::Uuid::new_v4());
    let publish = || async {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        js.publish_with_headers("amai.trust.dedup-probe", headers, "probe".into())
            .await
            .expect("publish")
            .await
            .expect("ack")
            .duplicate
    };
    assert!(!publish().await, "the first probe is new");
    wait_until("the dedup window to pass", || async { !publish().await }).await;
}

/// (3) An input redelivered after JetStream's dedup window, when the head of
/// the target aggregate has moved on, is found applied by causation id and is
/// not applied a second time.
#[tokio::test]
async fn a_redelivery_after_the_dedup_window_does_not_apply_twice() {
    let d = deploy_with(StreamSettings {
        dedup_window: Duration::from_secs(1),
        ..StreamSettings::default()
    })
    .await;
    let (id, _) = register(&d.store, "late").await;
    let input_id = genesis_id(&id);
    // The first ack is lost (as in a crash right after the output was stored),
    // so JetStream redelivers the input after the ack wait.
    let (hook, _) = failing(FaultPoint::Ack, input_id.clone(), 1);
    let (go, go_rx) = tokio::sync::watch::channel(false);
    let mut reactor = TestReactor::new("late-test", "late-test", "late");
    reactor.ack_wait = Duration::from_secs(1);
    reactor.gate = Some((input_id.clone(), go_rx));
    let reactor = Arc::new(reactor);
    let r = start(
        &d,
        reactor.clone(),
        fast_retries().redelivery(Vec::new()).fault_hook(hook),
    );

    wait_until("the first output", || async {
        trust_seq(&d.store, &id).await == 1
    })
    .await;
    wait_until("the redelivery", || async { reactor.calls(&input_id) >= 2 }).await;
    // The redelivery waits at the gate while the head moves on and the dedup
    // window passes.
    let trust = Aggregate::new(AggregateKind::Trust, &id).expect("agg");
    let head = d.store.chain_head(&trust).await.expect("head");
    let other = EventDraft::new(
        trust.clone(),
        Kind::TrustInitialized(proto::TrustInitialized {
            agent_id: id.clone(),
            score: 2.0,
        }),
    )
    .after(head.aggregate_seq, head.hash)
    .signer_seq(1)
    .sign(&d.signer.keys, &d.signer.id);
    d.store.append(other).await.expect("move the head");
    wait_out_dedup_window(&d.client).await;
    go.send_replace(true);

    wait_until("the redelivery is processed", || async {
        r.stats.already_applied.load(Ordering::Relaxed) >= 1
    })
    .await;
    wait_until("consumer drained", || {
        common::consumer_drained(&d.store, "AMAI_AGENTS", "late-test")
    })
    .await;
    let stats = r.stats.clone();
    r.stop().await;
    assert_eq!(
        trust_seq(&d.store, &id).await,
        2,
        "the reaction is applied once"
    );
    let events = d.store.read_chain(&trust, 1, 10).await.expect("read");
    let caused: Vec<_> = events
        .iter()
        .map(|e| e.verify().expect("valid"))
        .filter(|e| e.body.causation_id == input_id)
        .collect();
    assert_eq!(caused.len(), 1, "one event caused by the input");
    assert_eq!(stats.poisoned.load(Ordering::Relaxed), 0);
}

/// A reactor durable created with a delivery cap (as before this release) is
/// uncapped, with the redelivery schedule, when a reactor binds to it.
#[tokio::test]
async fn an_existing_capped_durable_is_uncapped() {
    let d = deploy().await;
    let capped = WorkConsumerConfig::new("AMAI_AGENTS", "capped-test")
        .filter_subject("amai.agent.*")
        .max_deliver(i64::from(OLD_MAX_DELIVER));
    let before = amai_bus::consumer::work_consumer(d.store.jetstream(), &capped)
        .await
        .expect("capped durable");
    assert_eq!(
        before.cached_info().config.max_deliver,
        i64::from(OLD_MAX_DELIVER)
    );
    let r = start(
        &d,
        Arc::new(TestReactor::new("capped-test", "capped-test", "none")),
        ReactorOptions::default(),
    );
    let max_deliver = || async {
        let stream = d
            .store
            .jetstream()
            .get_stream("AMAI_AGENTS")
            .await
            .expect("stream");
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("capped-test").await.expect("consumer");
        let config = c.info().await.expect("info").config.clone();
        (config.max_deliver, config.backoff)
    };
    wait_until("the cap is lifted", || async {
        max_deliver().await == (-1, DEFAULT_REDELIVERY.to_vec())
    })
    .await;
    r.stop().await;
}
