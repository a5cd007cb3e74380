//! Crash recovery: a worker killed with SIGKILL in the middle of the traffic
//! resumes from its durable state and counts every event exactly once; the
//! reactor never initialises an agent twice; a client re-sending an event whose
//! ack it lost gets a duplicate answer, not a second event.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amai_bus::{Aggregate, EventDraft};
use amai_client::AmaiClient;

use crate::util::*;

/// Sends one message, retrying while the identity worker (needed to look up the
/// recipient's keys) is down. Errors before the append leave nothing behind,
/// so the retry cannot send twice.
async fn send_one(client: &AmaiClient, from: &Registered, to: &Registered, text: String) -> u64 {
    let agent = client.agent(from.keys.clone());
    let resp = wait_until("a message is sent", Duration::from_secs(40), || {
        let (agent, text) = (agent.clone(), text.clone());
        async move { agent.send_message(&to.id, text.as_bytes()).await }
    })
    .await;
    assert!(!resp.duplicate);
    resp.position.expect("position").seq
}

/// Waits until the projection behind `client` has caught up with everything in
/// AMAI_AGENTS, AMAI_NAMES and AMAI_TRUST, then asserts its counters match the
/// streams exactly: no event lost, none applied twice.
async fn assert_stats_exact(
    client: &AmaiClient,
    js: &async_nats::jetstream::Context,
    agents: &[Registered],
    last_agents_seq: u64,
    expected_messages: u64,
) {
    let last = amai_bus::proto::Position {
        stream: "AMAI_AGENTS".into(),
        seq: last_agents_seq,
    };
    // AMAI_AGENTS is covered by the consistency token; every agent's name claim
    // (AMAI_NAMES) and trust score (AMAI_TRUST) must be visible too.
    wait_until("the projection has caught up", DEADLINE, || async {
        stats_at(client, Some(last.clone()))
            .await
            .map_err(|e| e.to_string())?;
        for a in agents {
            let i = client
                .get_identity(&a.name)
                .await
                .map_err(|e| e.to_string())?;
            if i.id != a.id || i.trust_score != Some(60.0) {
                return Err(format!("{} not complete: {i:?}", a.name));
            }
        }
        Ok(())
    })
    .await;
    let stats = stats_at(client, Some(last)).await.expect("stats");
    let in_streams = stream_messages(js, "AMAI_AGENTS").await
        + stream_messages(js, "AMAI_NAMES").await
        + stream_messages(js, "AMAI_TRUST").await;
    // + operator and svc-identity.
    assert_eq!(stats.identities, agents.len() as u64 + 2, "{stats:?}");
    assert_eq!(
        stats.per_kind.get("agent").copied(),
        Some(agents.len() as u64)
    );
    assert_eq!(stats.messages, expected_messages, "{stats:?}");
    assert_eq!(
        stats.events, in_streams,
        "every stored event applied exactly once: {stats:?}"
    );
    assert_eq!(stats.integrity_violations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_stream_resumes_exactly() {
    const AGENTS: usize = 10;
    const MESSAGES: usize = 60;
    let world = World::new();
    let mut worker = world.worker("w1").await;
    let (_gateway, client) = world.gateway().await;
    let js = world.jetstream().await;

    // Registrations and messages flow in the background while the worker crashes.
    let progress = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (client, progress) = (client.clone(), progress.clone());
        tokio::spawn(async move {
            let mut agents = Vec::new();
            let mut last_seq = 0;
            for i in 0..AGENTS {
                let a = register_one(&client, &format!("agent-{i}")).await;
                last_seq = last_seq.max(a.position.seq);
                agents.push(a);
                progress.fetch_add(1, Ordering::SeqCst);
            }
            for m in 0..MESSAGES {
                let (from, to) = (&agents[m % AGENTS], &agents[(m + 1) % AGENTS]);
                let seq = send_one(&client, from, to, format!("message {m}")).await;
                last_seq = last_seq.max(seq);
                progress.fetch_add(1, Ordering::SeqCst);
            }
            (agents, last_seq)
        })
    };

    // Crash the worker once a third of the traffic is through, then restart it
    // with the same instance (same sled state).
    wait_until("a third of the traffic is through", DEADLINE, || async {
        let p = progress.load(Ordering::SeqCst);
        if p >= (AGENTS + MESSAGES) / 3 {
            Ok(())
        } else {
            Err(p)
        }
    })
    .await;
    worker.kill9();
    let at_kill = progress.load(Ordering::SeqCst);
    assert!(
        at_kill < AGENTS + MESSAGES,
        "the traffic finished before the crash"
    );
    // Let the traffic hit the dead worker before it comes back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _worker = world.worker("w1").await;

    let (agents, last_seq) = tokio::time::timeout(Duration::from_secs(90), traffic)
        .await
        .expect("traffic finishes")
        .expect("traffic task");
    assert_eq!(
        stream_messages(&js, "AMAI_AGENTS").await,
        (2 + AGENTS + MESSAGES) as u64,
        "the stream holds exactly the appended events"
    );
    assert_stats_exact(&client, &js, &agents, last_seq, MESSAGES as u64).await;
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    assert_one_trust_init_each(&js, &ids).await;
    // Every message is in its recipient's inbox exactly once.
    for (i, a) in agents.iter().enumerate() {
        let inbox = client
            .agent(a.keys.clone())
            .inbox(0, 1000)
            .await
            .expect("inbox");
        let expected = (0..MESSAGES).filter(|m| (m + 1) % AGENTS == i).count();
        assert_eq!(inbox.len(), expected, "inbox of {}", a.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_publish_and_ack_is_deduplicated() {
    let world = World::new();
    let mut worker = world.worker("w1").await;
    let (_gateway, client) = world.gateway().await;
    let js = world.jetstream().await;

    // (a) Client side: the same signed event sent twice (a client that lost the
    // ack) is stored once; the second answer is the first position, flagged.
    let alice = register_one(&client, "alice").await;
    let agg = Aggregate::agent(&alice.id).expect("aggregate");
    let head = client.chain_head(&agg).await.expect("head");
    assert_eq!(head.aggregate_seq, 1);
    let event = EventDraft::action(agg.clone(), "note.written", r#"{"n":1}"#)
        .after(head.aggregate_seq, head.hash)
        .sign(&alice.keys, &alice.id);
    let first = client.append(event.clone()).await.expect("first append");
    assert!(!first.duplicate);
    assert_eq!(first.aggregate_seq, 2);
    let again = client.append(event).await.expect("re-sent append");
    assert!(
        again.duplicate,
        "a re-sent event is reported as a duplicate"
    );
    assert_eq!(again.position, first.position);
    assert_eq!(again.hash, first.hash);
    assert_eq!(again.aggregate_seq, 2);
    let chain = client.read_chain(&agg, 1, 0).await.expect("read chain");
    assert_eq!(chain.events.len(), 2, "genesis + the note, once");
    assert_eq!(
        client.chain_head(&agg).await.expect("head").aggregate_seq,
        2
    );
    let report = client.verify_chain(&agg).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        subject_counts(&js, "AMAI_AGENTS", &agg.subject())
            .await
            .get(&agg.subject()),
        Some(&2)
    );

    // (b) Reactor side, the window itself: a worker told by AMAI_FAULT to die
    // right after storing the outputs of its first input and before acking it.
    // Restarted, it gets the input again; its outputs are not stored twice.
    wait_until("the trust reactor has acked everything", DEADLINE, || {
        trust_durable(&js)
    })
    .await;
    worker.sigterm();
    assert!(worker.wait_exit(DEADLINE).await.success(), "clean stop");
    let mut worker = world
        .worker_with_env("w1", &[("AMAI_FAULT", "crash-after-publish:1")])
        .await;
    let victim = register_one(&client, "victim").await;
    let status = worker.wait_exit(DEADLINE).await;
    assert_eq!(
        status.code(),
        Some(FAULT_EXIT_CODE),
        "the worker died in the injected window: {status:?}; log:\n{}",
        worker.log()
    );
    assert!(worker
        .log()
        .contains("injected crash after publish, before ack"));
    // In the window: the output is stored, the input is not acknowledged.
    let trust_subject = format!("amai.trust.{}", victim.id);
    assert_eq!(
        subject_counts(&js, "AMAI_TRUST", &trust_subject)
            .await
            .get(&trust_subject),
        Some(&1),
        "the output was stored before the crash"
    );
    let ack_floor = trust_durable_info(&js).await.ack_floor.stream_sequence;
    assert!(
        ack_floor < victim.position.seq,
        "the input (AMAI_AGENTS seq {}) was not acked (ack floor {ack_floor})",
        victim.position.seq
    );

    // Restarted without the fault: the input comes back and is acked; the
    // redelivered decision finds its output already there.
    let mut worker = world.worker("w1").await;
    wait_until("the redelivered input is acked", DEADLINE, || async {
        let info = trust_durable_info(&js).await;
        if info.ack_floor.stream_sequence >= victim.position.seq && info.num_ack_pending == 0 {
            Ok(())
        } else {
            Err(format!("ack floor {}", info.ack_floor.stream_sequence))
        }
    })
    .await;
    assert_one_trust_init_each(&js, &[alice.id.clone(), victim.id.clone()]).await;
    // operator + svc-identity + alice + victim: one each.
    assert_eq!(stream_messages(&js, "AMAI_TRUST").await, 4);
    assert_eq!(
        stream_messages(&js, "AMAI_FAILURES").await,
        0,
        "no reactor.failed"
    );
    let last_seq = victim
        .position
        .seq
        .max(first.position.as_ref().expect("pos").seq);
    assert_stats_exact(&client, &js, &[alice, victim], last_seq, 0).await;
    assert!(worker.is_running());
}

/// Exit code of a crash injected with `AMAI_FAULT` (`src/fault.rs`).
const FAULT_EXIT_CODE: i32 = 86;

/// The identity role's trust reactor durable.
const TRUST_DURABLE: &str = "identity-trust-init";

async fn trust_durable_info(
    js: &async_nats::jetstream::Context,
) -> async_nats::jetstream::consumer::Info {
    let stream = js.get_stream("AMAI_AGENTS").await.expect("stream");
    let mut consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(TRUST_DURABLE)
        .await
        .expect("the trust reactor's durable");
    consumer.info().await.expect("consumer info").clone()
}

/// Ok once the trust reactor's durable has nothing pending or unacked.
async fn trust_durable(js: &async_nats::jetstream::Context) -> Result<(), String> {
    let info = trust_durable_info(js).await;
    if info.num_pending == 0 && info.num_ack_pending == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} pending, {} unacked",
            info.num_pending, info.num_ack_pending
        ))
    }
}
