//! `EventStore` against a real nats-server: appends, optimistic concurrency,
//! idempotency and every rejection, with nothing partial appended.

use amai_bus::proto::{self, payload::Kind, IdentityKind, SignedEvent};
use amai_bus::store::AppendErrorKind;
use amai_bus::streams::{ensure_streams, StreamSettings};
use amai_bus::{EventDraft, EventStore, EventStoreConfig, IdentityKeys};
use amai_testkit::NatsServer;
use prost::Message;

mod common;
use common::{action, claim, genesis, register, setup};

#[tokio::test]
async fn appends_link_and_rejections_append_nothing() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let alice = IdentityKeys::generate();
    let agg = register(&store, &alice, "alice").await;

    let first = action(&store, &alice, &agg).await;
    let out = store.append(first.clone()).await.expect("append");
    assert_eq!(out.aggregate_seq, 2);
    assert!(!out.duplicate);

    // Re-sending the same event is idempotent: original position, nothing new.
    let again = store.append(first.clone()).await.expect("idempotent");
    assert!(again.duplicate);
    assert_eq!(again.position, out.position);

    let head = store.chain_head(&agg).await.expect("head");
    assert_eq!(head.aggregate_seq, 2);

    // Stale head: an event claiming seq 2 again (different content).
    let stale = EventDraft::action(agg.clone(), "task.other", "{}")
        .after(1, [9u8; 32])
        .sign(&alice, &agg.id);
    let stale_head = store.chain_head(&agg).await.expect("head");
    let e = store.append(stale).await.expect_err("stale");
    assert_eq!(e.kind(), AppendErrorKind::Conflict);
    assert_eq!(e.current_head().expect("head").aggregate_seq, 2);

    // Wrong prev_hash at the right seq.
    let broken = EventDraft::action(agg.clone(), "task.x", "{}")
        .after(2, [7u8; 32])
        .sign(&alice, &agg.id);
    assert_eq!(
        store.append(broken).await.expect_err("broken").kind(),
        AppendErrorKind::ChainBroken
    );

    // Gap.
    let gap = EventDraft::action(agg.clone(), "task.x", "{}")
        .after(5, head.hash)
        .sign(&alice, &agg.id);
    assert_eq!(
        store.append(gap).await.expect_err("gap").kind(),
        AppendErrorKind::Gap
    );

    // Signed by another identity's key, claiming to be alice.
    let mallory = IdentityKeys::generate();
    let forged = EventDraft::action(agg.clone(), "task.x", "{}")
        .after(head.aggregate_seq, head.hash)
        .sign(&mallory, &agg.id);
    assert_eq!(
        store.append(forged).await.expect_err("forged").kind(),
        AppendErrorKind::UnknownKey
    );

    // Wrong signature bytes.
    let mut bad = action(&store, &alice, &agg).await;
    bad.signature[0] ^= 0xff;
    assert_eq!(
        store.append(bad).await.expect_err("bad sig").kind(),
        AppendErrorKind::BadSignature
    );

    // Malformed.
    let garbage = SignedEvent {
        body: vec![0xff, 0x01, 0x02],
        signer_key: alice.public_key().as_bytes().to_vec(),
        signature: vec![0; 64],
    };
    assert_eq!(
        store.append(garbage).await.expect_err("malformed").kind(),
        AppendErrorKind::Malformed
    );

    // Too large.
    let big = EventDraft::action(agg.clone(), "task.big", "x".repeat(300 * 1024))
        .after(head.aggregate_seq, head.hash)
        .sign(&alice, &agg.id);
    assert_eq!(
        store.append(big).await.expect_err("big").kind(),
        AppendErrorKind::TooLarge
    );

    // Event id reuse with different content.
    let reuse = EventDraft::action(agg.clone(), "task.reuse", "{}")
        .after(head.aggregate_seq, head.hash)
        .id(uuid::Uuid::parse_str(
            &proto::EventBody::decode(first.body.as_slice())
                .expect("body")
                .id,
        )
        .expect("uuid"))
        .sign(&alice, &agg.id);
    let e = store.append(reuse).await.expect_err("reuse");
    assert_eq!(e.kind(), AppendErrorKind::Duplicate, "{e}");

    assert_eq!(
        store.chain_head(&agg).await.expect("head"),
        stale_head,
        "no rejected event was appended"
    );
}

#[tokio::test]
async fn names_are_unique_and_identities_register_once() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let a = IdentityKeys::generate();
    register(&store, &a, "taken").await;
    let b = IdentityKeys::generate();
    let gb = genesis(&b, "taken", IdentityKind::Agent, None);
    assert_eq!(
        store
            .append(claim(&b, "taken", &gb))
            .await
            .expect_err("taken")
            .kind(),
        AppendErrorKind::NameTaken
    );
    let again = genesis(&a, "other", IdentityKind::Agent, None);
    assert_eq!(
        store.append(again).await.expect_err("registered").kind(),
        AppendErrorKind::AlreadyRegistered
    );
    let bad_name = genesis(&b, "Bad.Name", IdentityKind::Agent, None);
    assert_eq!(
        store.append(bad_name).await.expect_err("bad name").kind(),
        AppendErrorKind::Invalid
    );
    // A service needs an endorsement.
    let svc = IdentityKeys::generate();
    assert_eq!(
        store
            .append(genesis(&svc, "svc", IdentityKind::Service, None))
            .await
            .expect_err("unendorsed")
            .kind(),
        AppendErrorKind::NotPermitted
    );
}

#[tokio::test]
async fn rotation_and_revocation_retire_keys() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let old = IdentityKeys::generate();
    let agg = register(&store, &old, "rotor").await;
    let new = IdentityKeys::generate();
    let head = store.chain_head(&agg).await.expect("head");
    let rot = EventDraft::new(
        agg.clone(),
        Kind::AgentKeyRotated(proto::AgentKeyRotated {
            new_signing_key: new.public_key().as_bytes().to_vec(),
            new_x25519_key: new.x25519_public().to_vec(),
            reason: "test".into(),
            new_key_proof: new
                .rotation_proof(&agg.to_string(), head.aggregate_seq + 1, &old.public_key())
                .to_vec(),
        }),
    )
    .after(head.aggregate_seq, head.hash)
    .sign(&old, &agg.id);
    store.append(rot).await.expect("rotate");
    assert_eq!(
        store
            .append(action(&store, &old, &agg).await)
            .await
            .expect_err("old key")
            .kind(),
        AppendErrorKind::RevokedKey
    );
    store
        .append(action(&store, &new, &agg).await)
        .await
        .expect("new key works");
    let head = store.chain_head(&agg).await.expect("head");
    let revoke = EventDraft::new(
        agg.clone(),
        Kind::AgentRevoked(proto::AgentRevoked {
            reason: "done".into(),
        }),
    )
    .after(head.aggregate_seq, head.hash)
    .sign(&new, &agg.id);
    store.append(revoke).await.expect("revoke");
    assert_eq!(
        store
            .append(action(&store, &new, &agg).await)
            .await
            .expect_err("revoked")
            .kind(),
        AppendErrorKind::RevokedKey
    );
    let report = amai_bus::chain::verify_chain(&store, &agg)
        .await
        .expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        report.events_checked, 4,
        "genesis, rotation, one action, revocation"
    );
}

#[tokio::test]
async fn fifty_concurrent_appends_to_one_chain_land_exactly_once() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let keys = IdentityKeys::generate();
    let agg = register(&store, &keys, "busy").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (store, keys, agg) = (store.clone(), keys.clone(), agg.clone());
        tasks.push(tokio::spawn(async move {
            let mut head = store.chain_head(&agg).await.expect("head");
            loop {
                let ev = EventDraft::action(agg.clone(), "task.n", format!("{{\"n\":{i}}}"))
                    .after(head.aggregate_seq, head.hash)
                    .sign(&keys, &agg.id);
                match store.append(ev).await {
                    Ok(o) => return o,
                    Err(e) if e.kind() == AppendErrorKind::Conflict => {
                        head = e.current_head().expect("head").clone()
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("join").aggregate_seq);
    }
    seqs.sort();
    assert_eq!(seqs, (2..=51).collect::<Vec<_>>());
    let report = amai_bus::chain::verify_chain(&store, &agg)
        .await
        .expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events_checked, 51);
}

#[tokio::test]
async fn r3_streams_on_a_three_node_cluster() {
    let cluster = amai_testkit::NatsCluster::start(3);
    let addrs: Vec<async_nats::ServerAddr> = cluster
        .urls()
        .iter()
        .map(|u| u.parse().expect("addr"))
        .collect();
    let client = async_nats::connect(addrs).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let settings = StreamSettings {
        replicas: 3,
        ..Default::default()
    };
    // The meta leader may need a moment after the cluster forms.
    let mut attempts = 0;
    while let Err(e) = ensure_streams(&js, &settings).await {
        attempts += 1;
        assert!(attempts < 40, "streams never created: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    ensure_streams(&js, &settings).await.expect("idempotent");
    let info = js
        .get_stream("AMAI_AGENTS")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    assert!(info.config.deny_delete && info.config.deny_purge);
    let store = EventStore::new(js, EventStoreConfig::default());
    let keys = IdentityKeys::generate();
    let agg = register(&store, &keys, "clustered").await;
    store
        .append(action(&store, &keys, &agg).await)
        .await
        .expect("append on R3");
    assert_eq!(store.chain_head(&agg).await.expect("head").aggregate_seq, 2);
}

#[tokio::test]
async fn replays_start_at_a_sequence_a_time_or_only_new_events() {
    use amai_bus::consumer::{replay, StartAt};
    use futures::StreamExt;
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let keys = IdentityKeys::generate();
    let agg = register(&store, &keys, "replayer").await; // seq 1 on AMAI_AGENTS
    store
        .append(action(&store, &keys, &agg).await)
        .await
        .expect("seq 2");
    let js = store.jetstream();
    let stored_at = |seq| async move {
        js.get_stream("AMAI_AGENTS")
            .await
            .expect("stream")
            .get_raw_message(seq)
            .await
            .expect("message")
            .time
    };
    // The cut is just after seq 2 was stored (server time, nanoseconds); seq 3
    // is appended once this host's clock (nats-server's too) is past it.
    let cut = stored_at(2).await + time::Duration::nanoseconds(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while time::OffsetDateTime::now_utc() <= cut {
        assert!(std::time::Instant::now() < deadline, "the clock is stuck");
        tokio::task::yield_now().await;
    }
    store
        .append(action(&store, &keys, &agg).await)
        .await
        .expect("seq 3");
    assert!(stored_at(3).await >= cut, "seq 3 stored after the cut");
    let first = |start| async move {
        let mut r = replay(js, "AMAI_AGENTS", Some("amai.agent.*".to_string()), start)
            .await
            .expect("replay");
        let (ev, _) = tokio::time::timeout(std::time::Duration::from_secs(5), r.next())
            .await
            .expect("an event")
            .expect("open")
            .expect("item");
        ev.position.seq
    };
    assert_eq!(first(StartAt::All).await, 1);
    assert_eq!(first(StartAt::Sequence(2)).await, 2);
    assert_eq!(first(StartAt::Time(cut)).await, 3);
    // New only: no history (seqs 1-3 exist), the first event is the next append.
    let mut live = replay(js, "AMAI_AGENTS", None, StartAt::New)
        .await
        .expect("replay");
    store
        .append(action(&store, &keys, &agg).await)
        .await
        .expect("seq 4");
    let (ev, _) = tokio::time::timeout(std::time::Duration::from_secs(5), live.next())
        .await
        .expect("live event")
        .expect("open")
        .expect("item");
    assert_eq!(ev.position.seq, 4, "New delivers no history");
}

#[tokio::test]
async fn chains_are_paged_with_a_scan_continuation() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let (alice, bob) = (IdentityKeys::generate(), IdentityKeys::generate());
    let a = register(&store, &alice, "pager-a").await;
    let b = register(&store, &bob, "pager-b").await;
    for _ in 0..7 {
        store
            .append(action(&store, &alice, &a).await)
            .await
            .expect("alice");
        store
            .append(action(&store, &bob, &b).await)
            .await
            .expect("bob");
    }
    let (mut from, mut scan, mut seqs, mut pages) = (1, 1, Vec::new(), 0);
    loop {
        let page = store
            .read_chain_page(&a, from, 3, scan)
            .await
            .expect("page");
        pages += 1;
        for e in &page.events {
            assert_eq!(e.subject, a.subject(), "only alice's events");
            seqs.push(amai_bus::store::aggregate_seq_of(e).expect("seq"));
        }
        if page.next_stream_seq == 0 {
            break;
        }
        assert!(page.next_stream_seq > scan, "the scan moves forward");
        (from, scan) = (page.next_aggregate_seq, page.next_stream_seq);
    }
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    // Starting mid-chain without a continuation scans from the start and agrees.
    let mid = store.read_chain(&a, 5, 2).await.expect("mid");
    let mid: Vec<u64> = mid
        .iter()
        .filter_map(amai_bus::store::aggregate_seq_of)
        .collect();
    assert_eq!(mid, vec![5, 6]);
}
