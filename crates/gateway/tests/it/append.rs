//! Appends through the gateway: the happy path, contention, and every bad input
//! rejected with its exact code and nothing appended.

use std::collections::{BTreeMap, HashSet};

use amai_bus::envelope::{hash_bytes, sign_body, EventDraft};
use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::subjects::AggregateKind;
use amai_bus::{Aggregate, IdentityKeys};
use amai_client::{ClientError, ErrorKind};
use prost::Message;
use tonic::Code;

use crate::common::{agg, events, Env, MAX_EVENT_BYTES};

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> Code {
    r.expect_err("must be refused")
        .code()
        .expect("a grpc status")
}

/// Code and kind (the status's `ErrorInfo` reason) of a refusal.
fn failure(r: Result<impl std::fmt::Debug, ClientError>) -> (Code, ErrorKind) {
    let err = r.expect_err("must be refused");
    (err.code().expect("a grpc status"), err.kind())
}

#[tokio::test]
async fn register_append_read_and_verify_on_the_client() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let head = env.client.chain_head(&agg(&alice)).await.expect("head");
    assert_eq!(head.aggregate_seq, 1);
    assert_eq!(
        env.head_seq(&Aggregate::new(AggregateKind::Name, "alice").expect("name"))
            .await,
        1
    );

    let out = alice
        .append_action("task.completed", r#"{"task":"t1"}"#)
        .await
        .expect("append");
    assert_eq!(out.aggregate_seq, 2);
    assert!(!out.duplicate);

    let page = env
        .client
        .read_chain(&agg(&alice), 0, 0)
        .await
        .expect("read");
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.next_aggregate_seq, 0);
    let page = env
        .client
        .read_chain(&agg(&alice), 2, 1)
        .await
        .expect("read page");
    assert_eq!(page.events.len(), 1);

    let report = env.client.verify_chain(&agg(&alice)).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events_checked, 2);
    assert_eq!(report.head_hash.to_vec(), out.hash);
    let server = env
        .client
        .verify_chain_on_server(&agg(&alice))
        .await
        .expect("server verify");
    assert!(server.ok);

    // Registering the same thing again completes idempotently.
    let again = env
        .client
        .get_event(amai_bus::Position::new(
            "AMAI_AGENTS",
            page.events[0].position.as_ref().expect("pos").seq,
        ))
        .await
        .expect("get");
    assert!(again.event.is_some());
    env.stop().await;
}

#[tokio::test]
async fn a_retried_register_completes_idempotently() {
    let env = Env::start().await;
    let agent = env.client.agent(IdentityKeys::generate());
    let (genesis, claim) = agent
        .registration("retrier", IdentityKind::Agent, BTreeMap::new())
        .expect("build");
    let req = proto::RegisterRequest {
        genesis: Some(genesis),
        name_claim: Some(claim.clone()),
    };
    // Half-done: only the name claim landed.
    env.client.append(claim).await.expect("claim");
    let first = env
        .client
        .identity_service()
        .register(req.clone())
        .await
        .expect("complete")
        .into_inner();
    let second = env
        .client
        .identity_service()
        .register(req)
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(first.position, second.position);
    assert_eq!(first.agent_id, agent.id());
    assert_eq!(env.head_seq(&agg(&agent)).await, 1);
    env.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_writers_land_exactly_once_and_contiguously() {
    let env = Env::start().await;
    let agent = env.agent("busy").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            agent
                .append_action("work.done", &format!(r#"{{"n":{i}}}"#))
                .await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("append lands");
    }
    let page = env
        .client
        .read_chain(&agg(&agent), 1, 1000)
        .await
        .expect("read");
    let mut seqs = Vec::new();
    let mut payloads = HashSet::new();
    for ev in &page.events {
        let body = proto::EventBody::decode(ev.event.as_ref().expect("event").body.as_slice())
            .expect("body");
        seqs.push(body.aggregate_seq);
        if let Some(proto::Payload {
            kind: Some(Kind::AgentAction(a)),
        }) = body.payload
        {
            assert!(payloads.insert(a.json), "an action landed twice");
        }
    }
    assert_eq!(seqs, (1..=21).collect::<Vec<_>>());
    assert_eq!(payloads.len(), 20);
    assert!(env
        .client
        .verify_chain(&agg(&agent))
        .await
        .expect("verify")
        .ok());
    env.stop().await;
}

#[tokio::test]
async fn bad_inputs_are_refused_with_exact_codes_and_append_nothing() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let a = agg(&alice);
    let first = alice
        .append_action("note.added", "{}")
        .await
        .expect("append");
    let head = env.client.chain_head(&a).await.expect("head");
    assert_eq!(head.aggregate_seq, 2);
    let (keys, id) = (alice.keys().clone(), alice.id().to_string());
    let next =
        || EventDraft::action(a.clone(), "note.added", "{}").after(head.aggregate_seq, head.hash);
    let unchanged = |label: &'static str| {
        let env = &env;
        let a = a.clone();
        let head = head.clone();
        async move {
            let now = env.client.chain_head(&a).await.expect("head");
            assert_eq!(now, head, "{label}: the head moved");
        }
    };

    // Malformed protobuf bytes in `body` (validly signed).
    let garbage = sign_body(&keys, vec![0xff, 0xff, 0xff, 0x01]);
    assert_eq!(
        failure(env.client.append(garbage).await),
        (Code::InvalidArgument, ErrorKind::Malformed)
    );
    unchanged("malformed").await;

    // Wrong signature.
    let mut bad = next().sign(&keys, &id);
    bad.signature[0] ^= 1;
    assert_eq!(
        failure(env.client.append(bad).await),
        (Code::Unauthenticated, ErrorKind::BadSignature)
    );
    unchanged("bad signature").await;

    // Signed by another agent's key (claiming to be alice).
    assert_eq!(
        failure(env.client.append(next().sign(bob.keys(), &id)).await),
        (Code::Unauthenticated, ErrorKind::UnknownKey)
    );
    unchanged("other agent's key").await;

    // Signed by bob as bob on alice's chain: not permitted.
    assert_eq!(
        failure(env.client.append(next().sign(bob.keys(), bob.id())).await),
        (Code::PermissionDenied, ErrorKind::NotPermitted)
    );
    unchanged("foreign actor").await;

    // Unknown key: an unregistered key on an existing chain.
    assert_eq!(
        failure(
            env.client
                .append(next().sign(&IdentityKeys::generate(), &id))
                .await
        ),
        (Code::Unauthenticated, ErrorKind::UnknownKey)
    );
    unchanged("unknown key").await;

    // Stale head: a conflict carrying the current head in binary metadata.
    let stale = EventDraft::action(a.clone(), "note.added", r#"{"stale":true}"#)
        .after(1, first_prev(&env, &a).await)
        .sign(&keys, &id);
    let err = env.client.append(stale).await.expect_err("stale");
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let carried =
        amai_client::conflict_head(err.status().expect("status")).expect("head in metadata");
    assert_eq!(carried, head);
    // The head is in the ErrorInfo too, for clients that read only that.
    let info = err.error_metadata();
    assert_eq!(info.get("aggregate"), Some(&a.to_string()));
    assert_eq!(
        info.get("aggregate_seq"),
        Some(&head.aggregate_seq.to_string())
    );
    assert_eq!(info.get("hash"), Some(&hex::encode(head.hash)));
    unchanged("stale head").await;

    // Wrong prev_hash.
    let broken = EventDraft::action(a.clone(), "note.added", "{}")
        .after(head.aggregate_seq, [7u8; 32])
        .sign(&keys, &id);
    assert_eq!(
        failure(env.client.append(broken).await),
        (Code::InvalidArgument, ErrorKind::ChainBroken)
    );
    unchanged("prev_hash").await;

    // Gap in aggregate_seq.
    let gap = EventDraft::action(a.clone(), "note.added", "{}")
        .after(head.aggregate_seq + 1, head.hash)
        .sign(&keys, &id);
    assert_eq!(
        failure(env.client.append(gap).await),
        (Code::InvalidArgument, ErrorKind::Gap)
    );
    unchanged("gap").await;

    // Replayed event: the original position, duplicate = true.
    let page = env.client.read_chain(&a, 2, 1).await.expect("read");
    let original = page.events[0].event.clone().expect("event");
    let replay = env.client.append(original).await.expect("idempotent");
    assert!(replay.duplicate);
    assert_eq!(replay.position, first.position);
    unchanged("replay").await;

    // Event id reused with different content.
    let first_id =
        proto::EventBody::decode(page.events[0].event.as_ref().expect("e").body.as_slice())
            .expect("body")
            .id;
    let reuse = next()
        .id(uuid::Uuid::parse_str(&first_id).expect("uuid"))
        .sign(&keys, &id);
    assert_eq!(
        failure(env.client.append(reuse).await),
        (Code::AlreadyExists, ErrorKind::Duplicate)
    );
    unchanged("id reuse").await;

    // Oversized payload.
    let big = "x".repeat(MAX_EVENT_BYTES + 1);
    let huge = EventDraft::action(a.clone(), "note.added", format!(r#"{{"x":"{big}"}}"#))
        .after(head.aggregate_seq, head.hash)
        .sign(&keys, &id);
    assert_eq!(
        failure(env.client.append(huge).await),
        (Code::ResourceExhausted, ErrorKind::TooLarge)
    );
    unchanged("oversized").await;

    // Wrong RPC for the event type.
    let req = proto::AppendRequest {
        event: Some(next().sign(&keys, &id)),
    };
    assert_eq!(
        env.client
            .identity_service()
            .revoke(req)
            .await
            .expect_err("type")
            .code(),
        Code::InvalidArgument
    );
    unchanged("rpc/type mismatch").await;

    // Missing event.
    assert_eq!(
        events(&env)
            .append(proto::AppendRequest { event: None })
            .await
            .expect_err("none")
            .code(),
        Code::InvalidArgument
    );
    unchanged("missing").await;
    env.stop().await;
}

async fn first_prev(env: &Env, a: &Aggregate) -> [u8; 32] {
    let page = env.client.read_chain(a, 1, 1).await.expect("read");
    hash_bytes(
        &page.events[0]
            .event
            .as_ref()
            .expect("event")
            .encode_to_vec(),
    )
}

#[tokio::test]
async fn names_are_validated_and_unique() {
    let env = Env::start().await;
    let _alice = env.agent("alice").await;

    // Taken name: AlreadyExists, and no genesis for the loser.
    let loser = env.client.agent(IdentityKeys::generate());
    let err = loser
        .register("alice", IdentityKind::Agent, BTreeMap::new())
        .await
        .expect_err("taken");
    assert_eq!(err.code(), Some(Code::AlreadyExists));
    assert_eq!(env.head_seq(&agg(&loser)).await, 0);

    // Invalid name (built by hand: the SDK refuses it locally).
    assert!(matches!(
        loser.registration("Bad Name!", IdentityKind::Agent, BTreeMap::new()),
        Err(ClientError::Input(_))
    ));
    let (genesis, _) = loser
        .registration("okname", IdentityKind::Agent, BTreeMap::new())
        .expect("build");
    let mut body = proto::EventBody::decode(genesis.body.as_slice()).expect("body");
    body.id = uuid::Uuid::now_v7().to_string();
    body.r#type = "name.claimed".into();
    body.aggregate = "name/Bad Name!".into();
    body.payload = Some(proto::Payload {
        kind: Some(Kind::NameClaimed(proto::NameClaimed {
            name: "Bad Name!".into(),
            agent_id: loser.id().to_string(),
            genesis_hash: hash_bytes(&genesis.encode_to_vec()).to_vec(),
            genesis: genesis.encode_to_vec(),
        })),
    });
    let claim = sign_body(loser.keys(), body.encode_to_vec());
    let req = proto::RegisterRequest {
        genesis: Some(genesis.clone()),
        name_claim: Some(claim),
    };
    assert_eq!(
        env.client
            .identity_service()
            .register(req)
            .await
            .expect_err("bad name")
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(env.head_seq(&agg(&loser)).await, 0);

    // A claim that does not match the genesis: refused before anything is written.
    let other = env.client.agent(IdentityKeys::generate());
    let (_, other_claim) = other
        .registration("okname", IdentityKind::Agent, BTreeMap::new())
        .expect("build");
    let req = proto::RegisterRequest {
        genesis: Some(genesis),
        name_claim: Some(other_claim),
    };
    assert_eq!(
        env.client
            .identity_service()
            .register(req)
            .await
            .expect_err("mismatch")
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        env.head_seq(&Aggregate::new(AggregateKind::Name, "okname").expect("name"))
            .await,
        0
    );
    assert_eq!(env.head_seq(&agg(&loser)).await, 0);
    env.stop().await;
}

#[tokio::test]
async fn rotation_and_revocation() {
    let env = Env::start().await;
    let mut carol = env.agent("carol").await;
    let old = carol.keys().clone();
    carol
        .rotate_key(IdentityKeys::generate(), "routine")
        .await
        .expect("rotate");
    carol
        .append_action("note.added", "{}")
        .await
        .expect("new key works");
    // The rotated-out key is refused.
    let a = agg(&carol);
    let head = env.client.chain_head(&a).await.expect("head");
    let stale_key = EventDraft::action(a.clone(), "note.added", "{}")
        .after(head.aggregate_seq, head.hash)
        .sign(&old, carol.id());
    assert_eq!(
        code(env.client.append(stale_key).await),
        Code::PermissionDenied
    );

    carol.revoke("done").await.expect("revoke");
    let seq = env.head_seq(&a).await;
    assert_eq!(
        code(carol.append_action("note.added", "{}").await),
        Code::PermissionDenied
    );
    assert_eq!(env.head_seq(&a).await, seq);
    assert!(env.client.verify_chain(&a).await.expect("verify").ok());
    env.stop().await;
}

#[tokio::test]
async fn an_endorsement_by_an_unknown_operator_leaves_no_name_claim_behind() {
    let env = Env::start().await;
    let service = IdentityKeys::generate();
    let fake_operator = IdentityKeys::generate();
    let id = service.identity_id();
    let genesis = EventDraft::new(
        Aggregate::agent(&id).expect("agg"),
        Kind::AgentRegistered(proto::AgentRegistered {
            name: "svc-fake".into(),
            kind: IdentityKind::Service as i32,
            signing_key: service.public_key().as_bytes().to_vec(),
            x25519_key: service.x25519_public().to_vec(),
            metadata: BTreeMap::new(),
            endorsement: Some(proto::Endorsement {
                operator_id: fake_operator.identity_id(),
                operator_key: fake_operator.public_key().as_bytes().to_vec(),
                signature: fake_operator
                    .endorse(&service.public_key(), "service", &[])
                    .to_vec(),
                operator_seq: 1,
                scopes: vec![],
            }),
        }),
    )
    .sign(&service, &id);
    let claim = EventDraft::new(
        Aggregate::new(AggregateKind::Name, "svc-fake").expect("name"),
        Kind::NameClaimed(proto::NameClaimed {
            name: "svc-fake".into(),
            agent_id: id.clone(),
            genesis_hash: hash_bytes(&genesis.encode_to_vec()).to_vec(),
            genesis: genesis.encode_to_vec(),
        }),
    )
    .sign(&service, &id);
    let err = env
        .client
        .identity_service()
        .register(proto::RegisterRequest {
            genesis: Some(genesis),
            name_claim: Some(claim),
        })
        .await
        .expect_err("the endorser is not a registered operator");
    let err = ClientError::from(err);
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert_eq!(err.kind(), ErrorKind::UnknownKey, "{err}");
    assert_eq!(
        env.head_seq(&Aggregate::new(AggregateKind::Name, "svc-fake").expect("name"))
            .await,
        0,
        "no claim was written"
    );
    assert_eq!(env.head_seq(&Aggregate::agent(&id).expect("agg")).await, 0);
    env.stop().await;
}
