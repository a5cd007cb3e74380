//! What a rogue NATS publisher or a malicious client tries against the write
//! path, against a real nats-server. Each test names the hole it closes (issue 5
//! of the project): the write path folds chains exactly as an auditor does.

use amai_bus::proto::{self, payload::Kind, IdentityKind, SignedEvent};
use amai_bus::store::{AppendErrorKind, ReadError};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventStore, EventStoreConfig, IdentityKeys};
use amai_testkit::NatsServer;
use prost::Message;

mod common;
use common::{action, claim, genesis, register, setup};

fn rotation(
    agg: &Aggregate,
    seq: u64,
    hash: [u8; 32],
    old: &IdentityKeys,
    new: &IdentityKeys,
    prover: &IdentityKeys,
) -> SignedEvent {
    EventDraft::new(
        agg.clone(),
        Kind::AgentKeyRotated(proto::AgentKeyRotated {
            new_signing_key: new.public_key().as_bytes().to_vec(),
            new_x25519_key: new.x25519_public().to_vec(),
            reason: "test".into(),
            new_key_proof: prover
                .rotation_proof(&agg.to_string(), seq + 1, &old.public_key())
                .to_vec(),
        }),
    )
    .after(seq, hash)
    .sign(old, &agg.id)
}

async fn publish_raw(store: &EventStore, agg: &Aggregate, signed: &SignedEvent) {
    store
        .jetstream()
        .publish(agg.subject(), signed.encode_to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

/// Hole 1: a forged `agent.key_rotated` to K2, published raw onto alice's chain
/// (signed by K2 itself, correctly positioned), must not make the write path
/// treat K2 as alice's key; alice's chain answers a precise error.
#[tokio::test]
async fn a_forged_rotation_published_raw_never_changes_key_state() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let alice = IdentityKeys::generate();
    let agg = register(&store, &alice, "alice").await;
    let mallory = IdentityKeys::generate();
    let head = store.chain_head(&agg).await.expect("head");
    // Signed by mallory (not alice's key) with a valid proof by mallory.
    let forged = rotation(
        &agg,
        head.aggregate_seq,
        head.hash,
        &mallory,
        &mallory,
        &mallory,
    );
    publish_raw(&store, &agg, &forged).await;

    // A second store (cold cache) and the first (warm cache) agree.
    let cold = setup(&server, EventStoreConfig::default()).await;
    for s in [&store, &cold] {
        let state = s.identity_state(&agg.id).await.expect("state");
        assert_eq!(state.current_key().signing_key, alice.public_key());
        assert_eq!(state.keys.len(), 1, "the forged rotation is not folded");
    }
    // Mallory cannot append as alice, and alice's chain answers Corrupted.
    let as_mallory = EventDraft::action(agg.clone(), "task.done", "{}")
        .after(2, store.chain_head(&agg).await.expect("head").hash)
        .sign(&mallory, &agg.id);
    let err = cold.append(as_mallory).await.expect_err("refused");
    assert_eq!(err.kind(), AppendErrorKind::Corrupted);
    let as_alice = EventDraft::action(agg.clone(), "task.done", "{}")
        .after(head.aggregate_seq, head.hash)
        .sign(&alice, &agg.id);
    let err = cold.append(as_alice).await.expect_err("refused");
    assert_eq!(err.kind(), AppendErrorKind::Corrupted);
    assert!(cold.corruption(&agg).await.expect("read").is_some());
}

/// Hole 1: a raw revocation with a skipped sequence does not make bob look revoked.
#[tokio::test]
async fn a_raw_revocation_with_a_skipped_seq_does_not_revoke() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let bob = IdentityKeys::generate();
    let agg = register(&store, &bob, "bob").await;
    let head = store.chain_head(&agg).await.expect("head");
    let revocation = EventDraft::new(
        agg.clone(),
        Kind::AgentRevoked(proto::AgentRevoked {
            reason: "forged".into(),
        }),
    )
    .after(head.aggregate_seq + 3, head.hash)
    .sign(&bob, &agg.id);
    publish_raw(&store, &agg, &revocation).await;
    let cold = setup(&server, EventStoreConfig::default()).await;
    let state = cold.identity_state(&agg.id).await.expect("state");
    assert!(
        state.revoked.is_none(),
        "an invalid event never changes state"
    );
    let c = cold
        .corruption(&agg)
        .await
        .expect("read")
        .expect("corrupted");
    assert_eq!(c.failure.kind, amai_bus::verify::FailureKind::Gap);
}

/// Hole 2: a bare name claim (zero genesis hash, no genesis) is refused, so a
/// later registration of that name succeeds.
#[tokio::test]
async fn a_bare_name_claim_is_refused_and_the_name_stays_free() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let squatter = IdentityKeys::generate();
    let sid = squatter.identity_id();
    let bare = EventDraft::new(
        Aggregate::new(AggregateKind::Name, "popular").expect("name"),
        Kind::NameClaimed(proto::NameClaimed {
            name: "popular".into(),
            agent_id: sid.clone(),
            genesis_hash: vec![0; 32],
            genesis: vec![],
        }),
    )
    .sign(&squatter, &sid);
    let err = store.append(bare).await.expect_err("bare claim");
    assert_eq!(err.kind(), AppendErrorKind::NotPermitted);

    // A claim carrying a genesis of another name is refused too.
    let other = genesis(&squatter, "other", IdentityKind::Agent, None);
    let wrong = claim(&squatter, "popular", &other);
    let err = store.append(wrong).await.expect_err("mismatched genesis");
    assert_eq!(err.kind(), AppendErrorKind::Invalid);

    // The name is still free.
    let owner = IdentityKeys::generate();
    register(&store, &owner, "popular").await;
}

/// Hole 2: a claim whose genesis could not be appended (a service endorsed by an
/// operator nobody registered) is refused before anything is written.
#[tokio::test]
async fn a_claim_carrying_an_unappendable_genesis_is_refused() {
    let server = NatsServer::start();
    let root = IdentityKeys::generate();
    let store = setup(
        &server,
        EventStoreConfig::default().trust_root(root.public_key()),
    )
    .await;
    let fake_operator = IdentityKeys::generate();
    let service = IdentityKeys::generate();
    let g = genesis(
        &service,
        "svc-squat",
        IdentityKind::Service,
        Some(proto::Endorsement {
            operator_seq: 1,
            ..endorsement(&fake_operator, &service, &["trust"])
        }),
    );
    let err = store
        .append(claim(&service, "svc-squat", &g))
        .await
        .expect_err("the endorser is not a registered operator");
    assert_eq!(err.kind(), AppendErrorKind::UnknownKey);
    let name = Aggregate::new(AggregateKind::Name, "svc-squat").expect("name");
    assert_eq!(
        store.chain_head(&name).await.expect("head").aggregate_seq,
        0
    );
}

/// Hole 2: a claim carries its genesis, and appending the claim alone completes
/// the registration it names: no claim ever stands without its identity.
#[tokio::test]
async fn a_claim_appended_alone_completes_its_registration() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let keys = IdentityKeys::generate();
    let g = genesis(&keys, "solo", IdentityKind::Agent, None);
    store.append(claim(&keys, "solo", &g)).await.expect("claim");
    let state = store
        .identity_state(&keys.identity_id())
        .await
        .expect("registered");
    assert_eq!(state.name, "solo");
    // The genesis sent afterwards is an idempotent duplicate.
    assert!(store.append(g).await.expect("genesis").duplicate);
}

/// Hole 5: an identity cannot rotate to a key it does not hold.
#[tokio::test]
async fn a_rotation_without_proof_of_possession_is_refused() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let alice = IdentityKeys::generate();
    let victim = IdentityKeys::generate();
    let agg = register(&store, &alice, "alice").await;
    let head = store.chain_head(&agg).await.expect("head");
    // alice signs the proof herself: the victim's key never signed it.
    let rot = rotation(&agg, head.aggregate_seq, head.hash, &alice, &victim, &alice);
    let err = store.append(rot).await.expect_err("no proof");
    assert_eq!(err.kind(), AppendErrorKind::Invalid);
    assert_eq!(
        store.chain_head(&agg).await.expect("head"),
        head,
        "nothing appended"
    );
    // With the new key's proof, it goes through.
    let next = IdentityKeys::generate();
    let rot = rotation(&agg, head.aggregate_seq, head.hash, &alice, &next, &next);
    store.append(rot).await.expect("rotated");
}

/// Hole 8: events whose signed body carries unknown fields are refused, even
/// correctly signed.
#[tokio::test]
async fn a_signed_body_with_unknown_fields_is_malformed() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let alice = IdentityKeys::generate();
    let agg = register(&store, &alice, "alice").await;
    let ev = action(&store, &alice, &agg).await;
    let mut body = ev.body.clone();
    body.extend_from_slice(&[0x98, 0x06, 0x01]); // field 99 = 1
    let signed = amai_bus::envelope::sign_body(&alice, body);
    let err = store.append(signed).await.expect_err("unknown field");
    assert_eq!(err.kind(), AppendErrorKind::Malformed);
}

fn endorsement(
    operator: &IdentityKeys,
    service: &IdentityKeys,
    scopes: &[&str],
) -> proto::Endorsement {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    proto::Endorsement {
        operator_id: operator.identity_id(),
        operator_key: operator.public_key().as_bytes().to_vec(),
        signature: operator
            .endorse(&service.public_key(), "service", &scopes)
            .to_vec(),
        operator_seq: 0,
        scopes,
    }
}

async fn register_service(
    store: &EventStore,
    operator: &IdentityKeys,
    service: &IdentityKeys,
    name: &str,
    scopes: &[&str],
) {
    let g = genesis(
        service,
        name,
        IdentityKind::Service,
        Some(endorsement(operator, service, scopes)),
    );
    store.append(claim(service, name, &g)).await.expect("claim");
    store.append(g).await.expect("genesis");
}

fn trust_event(service: &IdentityKeys, agent: &str, signer_seq: u64) -> SignedEvent {
    EventDraft::new(
        Aggregate::new(AggregateKind::Trust, agent).expect("agg"),
        Kind::TrustInitialized(proto::TrustInitialized {
            agent_id: agent.into(),
            score: 60.0,
        }),
    )
    .signer_seq(signer_seq)
    .sign(service, &service.identity_id())
}

/// Hole 3: a rotated-out service key cannot sign a single event more, at once
/// (no cache TTL), even on a store whose cache knew the old key; validity is
/// decided by the position of the signer's chain the event cites.
#[tokio::test]
async fn a_rotated_out_service_key_stops_signing_at_once() {
    let server = NatsServer::start();
    let operator = IdentityKeys::generate();
    let config = EventStoreConfig::default().trust_root(operator.public_key());
    let store = setup(&server, config.clone()).await;
    register(&store, &operator, "root").await;
    let service = IdentityKeys::generate();
    register_service(&store, &operator, &service, "svc-trust", &["trust"]).await;
    // The warm store accepts a result citing the service's head (seq 1).
    store
        .append(trust_event(&service, "a1", 1))
        .await
        .expect("valid");

    // The service rotates through another store instance.
    let other = setup(&server, config).await;
    let sagg = Aggregate::agent(service.identity_id()).expect("agg");
    let head = other.chain_head(&sagg).await.expect("head");
    let next = IdentityKeys::generate();
    other
        .append(rotation(
            &sagg,
            head.aggregate_seq,
            head.hash,
            &service,
            &next,
            &next,
        ))
        .await
        .expect("rotate");

    // The warm store refuses the old key immediately: citing the position
    // where it was current, it is rotated out at the head; citing the head, it
    // was never current there.
    for (cited, kind) in [
        (1, AppendErrorKind::RevokedKey),
        (2, AppendErrorKind::UnknownKey),
    ] {
        let err = store
            .append(trust_event(&service, "a2", cited))
            .await
            .expect_err("rotated out");
        assert_eq!(err.kind(), kind, "cited {cited}");
    }
    // The new key signs, citing the head.
    let mut by_new = trust_event(&next, "a4", 2);
    by_new = {
        let body = proto::EventBody::decode(by_new.body.as_slice()).expect("body");
        let mut body = body;
        body.actor = service.identity_id();
        amai_bus::envelope::sign_body(&next, body.encode_to_vec())
    };
    store.append(by_new).await.expect("the new key signs");
    // A citation beyond the signer's head is refused too.
    assert_eq!(
        store
            .append(trust_event(&service, "a3", 9))
            .await
            .expect_err("future")
            .kind(),
        AppendErrorKind::UnknownKey
    );
}

/// Hole 10: a service writes only the aggregate kinds its endorsement scopes.
#[tokio::test]
async fn a_service_writes_only_its_scopes() {
    let server = NatsServer::start();
    let operator = IdentityKeys::generate();
    let store = setup(
        &server,
        EventStoreConfig::default().trust_root(operator.public_key()),
    )
    .await;
    register(&store, &operator, "root").await;
    let service = IdentityKeys::generate();
    register_service(&store, &operator, &service, "svc-llm", &["llm"]).await;
    let err = store
        .append(trust_event(&service, "a1", 1))
        .await
        .expect_err("out of scope");
    assert_eq!(err.kind(), AppendErrorKind::NotPermitted);
}

/// Two stores with stale caches race one validly positioned event each onto
/// the same chain: exactly one wins, the other gets a typed conflict.
#[tokio::test]
async fn two_stores_with_stale_caches_race_one_position() {
    let server = NatsServer::start();
    let a = setup(&server, EventStoreConfig::default()).await;
    let b = setup(&server, EventStoreConfig::default()).await;
    let alice = IdentityKeys::generate();
    let agg = register(&a, &alice, "alice").await;
    // Warm both caches at the same head.
    a.identity_state(&agg.id).await.expect("a");
    b.identity_state(&agg.id).await.expect("b");
    let e1 = action(&a, &alice, &agg).await;
    let e2 = action(&b, &alice, &agg).await;
    let (r1, r2) = tokio::join!(a.append(e1), b.append(e2));
    let kinds: Vec<_> = [&r1, &r2]
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.kind()))
        .collect();
    assert!(
        kinds.contains(&None) && kinds.contains(&Some(AppendErrorKind::Conflict)),
        "{kinds:?}"
    );
    assert_eq!(a.chain_head(&agg).await.expect("head").aggregate_seq, 2);
}

/// Reads of an unregistered identity are NotFound, not Invalid or Unavailable.
#[tokio::test]
async fn an_unknown_identity_is_not_found() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let id = IdentityKeys::generate().identity_id();
    assert!(matches!(
        store.identity_state(&id).await,
        Err(ReadError::NotFound(_))
    ));
}

/// Hole 6: looking up an event by aggregate sequence (re-sends of old events,
/// pages without a continuation) is a binary search over stream sequences,
/// correct with other chains interleaved on the same stream.
#[tokio::test]
async fn old_events_are_found_by_search_with_chains_interleaved() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let alice = IdentityKeys::generate();
    let bob = IdentityKeys::generate();
    let a = register(&store, &alice, "alice").await;
    let b = register(&store, &bob, "bob").await;
    let mut sent = Vec::new();
    for _ in 0..30 {
        let ev = action(&store, &alice, &a).await;
        store.append(ev.clone()).await.expect("alice");
        sent.push(ev);
        let ev = action(&store, &bob, &b).await;
        store.append(ev).await.expect("bob");
    }
    let head = store.chain_head(&a).await.expect("head");
    for seq in [1, 2, 7, 16, 30, 31] {
        let found = store
            .search_aggregate_seq(&a, seq, head.stream_seq)
            .await
            .expect("search")
            .expect("found");
        assert_eq!(amai_bus::store::aggregate_seq_of(&found), Some(seq));
        assert_eq!(found.subject, a.subject());
    }
    assert!(store
        .search_aggregate_seq(&a, 99, head.stream_seq)
        .await
        .expect("search")
        .is_none());
    // A re-send of an old event is answered idempotently with its position.
    let old = store.append(sent[9].clone()).await.expect("re-send");
    assert!(old.duplicate);
    assert_eq!(old.aggregate_seq, 11);
    // A page without a continuation starts where it should.
    let page = store.read_chain_page(&a, 25, 100, 1).await.expect("page");
    let seqs: Vec<_> = page
        .events
        .iter()
        .filter_map(amai_bus::store::aggregate_seq_of)
        .collect();
    assert_eq!(seqs, (25..=31).collect::<Vec<_>>());
}

/// A crash between the claim and the genesis (the claim stored, the genesis
/// not): re-sending the claim alone completes the registration.
#[tokio::test]
async fn a_resent_claim_completes_a_half_done_registration() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let keys = IdentityKeys::generate();
    let g = genesis(&keys, "halfway", IdentityKind::Agent, None);
    let claim = claim(&keys, "halfway", &g);
    let name = Aggregate::new(AggregateKind::Name, "halfway").expect("name");
    publish_raw(&store, &name, &claim).await;
    assert!(matches!(
        store.identity_state(&keys.identity_id()).await,
        Err(ReadError::NotFound(_))
    ));
    let again = store.append(claim).await.expect("re-send");
    assert!(again.duplicate);
    let state = store
        .identity_state(&keys.identity_id())
        .await
        .expect("the genesis followed");
    assert_eq!(state.name, "halfway");
}

/// An identity dating its actions ahead would age its own trust evidence (trust
/// decays in event time): the store refuses `occurred_at` beyond the allowed
/// skew, precisely, and appends nothing; an event within the skew is fine.
#[tokio::test]
async fn events_dated_in_the_future_are_refused() {
    let server = NatsServer::start();
    let store = setup(&server, EventStoreConfig::default()).await;
    let alice = IdentityKeys::generate();
    let agg = register(&store, &alice, "alice").await;
    let head = store.chain_head(&agg).await.expect("head");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let at = |secs: i64| prost_types::Timestamp {
        seconds: now + secs,
        nanos: 0,
    };
    let future = EventDraft::action(agg.clone(), "task.done", "{}")
        .after(head.aggregate_seq, head.hash)
        .occurred_at(at(24 * 3600))
        .sign(&alice, &agg.id);
    let err = store.append(future).await.expect_err("future-dated");
    assert_eq!(err.kind(), AppendErrorKind::Invalid);
    assert!(err.to_string().contains("ahead"), "{err}");
    assert_eq!(
        store.chain_head(&agg).await.expect("head").aggregate_seq,
        head.aggregate_seq,
        "nothing appended"
    );
    let slightly = EventDraft::action(agg.clone(), "task.done", "{}")
        .after(head.aggregate_seq, head.hash)
        .occurred_at(at(60))
        .sign(&alice, &agg.id);
    store.append(slightly).await.expect("within the skew");
}
