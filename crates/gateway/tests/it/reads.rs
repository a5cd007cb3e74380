//! Read access (docs/architecture.md, "Read access"): every read RPC needs a
//! request signature, and an authenticated caller reads only what the access
//! rule allows. Asserts codes and `ErrorInfo` kinds, never message text.

use std::collections::BTreeMap;
use std::time::Duration;

use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{IdentityKeys, Position};
use amai_client::error::status_kind;
use amai_client::{read_grant, Agent, ClientError, ErrorKind, READ_CHAIN_METHOD};
use futures::StreamExt;
use prost::Message;
use tonic::Code;

use crate::common::{agg, Env};

fn denied(err: ClientError) {
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    assert_eq!(err.kind(), ErrorKind::ReadNotPermitted, "{err}");
}

fn unsigned(err: ClientError) {
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert_eq!(err.kind(), ErrorKind::SignatureMissing, "{err}");
}

fn position(r: &proto::AppendResponse) -> Position {
    r.position.clone().expect("position").into()
}

fn body(ev: &proto::StoredEvent) -> proto::EventBody {
    proto::EventBody::decode(ev.event.as_ref().expect("event").body.as_slice()).expect("body")
}

/// Registers a reader identity whose genesis carries `grant` metadata.
async fn reader(
    env: &Env,
    name: &str,
    grant: BTreeMap<String, String>,
    keys: IdentityKeys,
) -> Agent {
    let agent = env.anonymous.agent(keys);
    agent
        .register(name, IdentityKind::Agent, grant)
        .await
        .expect("register reader");
    agent
}

/// An operator's grant of `streams` to the holder of `keys`.
fn grant(env: &Env, keys: &IdentityKeys, streams: &[&str]) -> BTreeMap<String, String> {
    let streams: Vec<String> = streams.iter().map(|s| s.to_string()).collect();
    read_grant::grant(
        &env.operator,
        &env.operator.identity_id(),
        &keys.public_key(),
        &streams,
    )
}

/// Events delivered on `sub` until (and including) the first one satisfying `last`.
async fn until(
    sub: &mut tonic::Streaming<proto::StoredEvent>,
    last: impl Fn(&proto::StoredEvent) -> bool,
) -> Vec<proto::StoredEvent> {
    let mut got = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the marker arrives")
            .expect("open")
            .expect("ok");
        let done = last(&ev);
        got.push(ev);
        if done {
            return got;
        }
    }
}

#[tokio::test]
async fn every_read_rpc_refuses_an_unsigned_request() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let blob = alice.put_blob(vec![1, 2, 3]).await.expect("put");
    let anon = &env.anonymous;
    let a = agg(&alice);
    unsigned(anon.chain_head(&a).await.expect_err("head"));
    unsigned(anon.read_chain(&a, 1, 10).await.expect_err("read"));
    unsigned(anon.read_key_events(&a, 1, 10, 0).await.expect_err("keys"));
    unsigned(
        anon.get_event(Position::new("AMAI_AGENTS", 1))
            .await
            .expect_err("event"),
    );
    unsigned(
        anon.subscribe(proto::SubscribeRequest {
            stream: "AMAI_AGENTS".into(),
            ..Default::default()
        })
        .await
        .expect_err("subscribe"),
    );
    let digest: [u8; 32] = blob.sha256.as_slice().try_into().expect("32");
    unsigned(anon.get_blob(&digest).await.expect_err("blob"));
    unsigned(anon.verify_chain_on_server(&a).await.expect_err("verify"));
    // The public metadata stays open.
    anon.deployment_id().await.expect("GetDeployment is open");
    env.stop().await;
}

#[tokio::test]
async fn a_stranger_reads_nothing_private_of_another_agent() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let secret = alice
        .append_action("task.secret", r#"{"plan":"x"}"#)
        .await
        .expect("action");
    let a = agg(&alice);
    let b = bob.client();

    // Chain head, chain, a private event, a subscription to the aggregate,
    // server-side verification: all refused before any read.
    denied(b.chain_head(&a).await.expect_err("head"));
    denied(b.read_chain(&a, 1, 10).await.expect_err("read"));
    denied(b.get_event(position(&secret)).await.expect_err("event"));
    denied(
        b.subscribe(proto::SubscribeRequest {
            aggregate: a.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("subscribe"),
    );
    denied(b.verify_chain_on_server(&a).await.expect_err("verify"));
    // Nor alice's trust aggregate, nor streams only operators read.
    denied(
        b.read_chain(
            &Aggregate::new(AggregateKind::Trust, alice.id()).expect("agg"),
            1,
            10,
        )
        .await
        .expect_err("trust"),
    );
    for stream in ["AMAI_LLM", "AMAI_JAILS", "AMAI_AUDIT", "AMAI_FAILURES"] {
        denied(
            b.subscribe(proto::SubscribeRequest {
                stream: stream.into(),
                ..Default::default()
            })
            .await
            .expect_err(stream),
        );
    }

    // What is public to identities: alice's key events (not her actions)...
    let page = b.read_key_events(&a, 1, 100, 0).await.expect("key events");
    let types: Vec<String> = page.events.iter().map(|e| body(e).r#type).collect();
    assert_eq!(types, vec!["agent.registered".to_string()]);
    let genesis = page.events[0].position.clone().expect("pos").into();
    b.get_event(genesis).await.expect("a key event by position");
    // ...the operator's chain (infrastructure), and bob's own data.
    let operator = Aggregate::agent(env.operator.identity_id()).expect("agg");
    b.read_chain(&operator, 1, 10)
        .await
        .expect("operator chain");
    b.chain_head(&agg(&bob)).await.expect("own head");
    b.read_chain(&agg(&bob), 1, 10).await.expect("own chain");
    env.stop().await;
}

#[tokio::test]
async fn subscribing_to_everything_delivers_only_what_the_subscriber_may_read() {
    // The worker answers GetKeys (sending a message resolves the recipient).
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let carol = env.agent("carol").await;
    alice
        .append_action("task.secret", "{}")
        .await
        .expect("alice action");
    alice
        .send_message(carol.id(), b"to carol")
        .await
        .expect("to carol");
    let to_bob = alice
        .send_message(bob.id(), b"to bob")
        .await
        .expect("to bob");
    carol
        .append_action("task.other", "{}")
        .await
        .expect("carol");
    bob.append_action("test.marker", "{}")
        .await
        .expect("marker");

    let mut sub = bob
        .client()
        .subscribe(proto::SubscribeRequest {
            stream: "AMAI_AGENTS".into(),
            start: Some(proto::subscribe_request::Start::StartSeq(1)),
            ..Default::default()
        })
        .await
        .expect("subscribe");
    // The marker is the stream's last event: everything before it was decided.
    let got = until(&mut sub, |e| body(e).r#type == "test.marker").await;
    let mut saw_message = false;
    for ev in &got {
        let b = body(ev);
        if b.aggregate == agg(&bob).to_string() {
            continue;
        }
        match b.payload.and_then(|p| p.kind) {
            Some(Kind::AgentRegistered(_)) => {}
            Some(Kind::AgentMessageSent(m)) => {
                assert_eq!(m.to, bob.id(), "a message to someone else was delivered");
                assert_eq!(ev.position, to_bob.position);
                saw_message = true;
            }
            other => panic!("bob was sent {} ({other:?})", b.r#type),
        }
    }
    assert!(saw_message, "the message addressed to bob is delivered");

    // The operator reads everything: alice's action and carol's message included.
    let mut sub = env
        .client
        .subscribe(proto::SubscribeRequest {
            stream: "AMAI_AGENTS".into(),
            start: Some(proto::subscribe_request::Start::StartSeq(1)),
            ..Default::default()
        })
        .await
        .expect("operator subscribes");
    let got = until(&mut sub, |e| body(e).r#type == "test.marker").await;
    let types: Vec<String> = got.iter().map(|e| body(e).r#type).collect();
    assert!(types.contains(&"task.secret".to_string()), "{types:?}");
    assert_eq!(
        types.iter().filter(|t| *t == "agent.message_sent").count(),
        2
    );
    env.client
        .read_chain(&agg(&alice), 1, 100)
        .await
        .expect("operator reads alice");
    env.stop().await;
}

#[tokio::test]
async fn a_granted_reader_reads_its_streams_only_and_a_forged_or_revoked_one_nothing() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let (blob, action) = alice
        .append_action_with_blob("app.response", "{}", vec![5u8; 1000])
        .await
        .expect("blob action");
    let digest: [u8; 32] = blob.sha256.as_slice().try_into().expect("32");
    let a = agg(&alice);

    // Granted AMAI_AGENTS by the operator.
    let keys = IdentityKeys::generate();
    let auditor = reader(&env, "auditor", grant(&env, &keys, &["AMAI_AGENTS"]), keys).await;
    let c = auditor.client();
    c.read_chain(&a, 1, 100).await.expect("granted stream");
    c.chain_head(&a).await.expect("granted head");
    c.get_event(position(&action)).await.expect("granted event");
    assert!(c.verify_chain(&a).await.expect("audit").ok());
    // Not granted: trust aggregates, failures, blobs.
    denied(
        c.read_chain(
            &Aggregate::new(AggregateKind::Trust, alice.id()).expect("agg"),
            1,
            10,
        )
        .await
        .expect_err("trust"),
    );
    denied(
        c.subscribe(proto::SubscribeRequest {
            stream: "AMAI_FAILURES".into(),
            ..Default::default()
        })
        .await
        .expect_err("failures"),
    );
    denied(c.get_blob(&digest).await.expect_err("blob"));

    // Granted blobs only.
    let keys = IdentityKeys::generate();
    let blob_reader = reader(
        &env,
        "blob-reader",
        grant(&env, &keys, &["AMAI_BLOBS"]),
        keys,
    )
    .await;
    assert_eq!(
        blob_reader
            .client()
            .get_blob(&digest)
            .await
            .expect("granted blob"),
        vec![5u8; 1000]
    );
    denied(
        blob_reader
            .client()
            .read_chain(&a, 1, 10)
            .await
            .expect_err("no stream grant"),
    );

    // A grant signed by a key that is not an operator's grants nothing.
    let keys = IdentityKeys::generate();
    let forger = IdentityKeys::generate();
    let forged = read_grant::grant(
        &forger,
        &env.operator.identity_id(),
        &keys.public_key(),
        &["AMAI_AGENTS".to_string()],
    );
    let mallory = reader(&env, "mallory", forged, keys).await;
    denied(
        mallory
            .client()
            .read_chain(&a, 1, 10)
            .await
            .expect_err("forged"),
    );
    // Nor does a grant naming an agent as the operator.
    let keys = IdentityKeys::generate();
    let by_agent = read_grant::grant(
        alice.keys(),
        alice.id(),
        &keys.public_key(),
        &["AMAI_AGENTS".to_string()],
    );
    let eve = reader(&env, "eve", by_agent, keys).await;
    denied(
        eve.client()
            .read_chain(&a, 1, 10)
            .await
            .expect_err("agent grant"),
    );

    // A revoked reader is refused.
    auditor.revoke("retired").await.expect("revoke");
    let err = c.read_chain(&a, 1, 10).await.expect_err("revoked");
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    assert_eq!(err.kind(), ErrorKind::RevokedSigner, "{err}");
    env.stop().await;
}

#[tokio::test]
async fn a_replayed_read_signature_is_refused() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let req = proto::ReadChainRequest {
        aggregate: agg(&alice).to_string(),
        from_aggregate_seq: 1,
        limit: 10,
        ..Default::default()
    };
    let sig = alice
        .sign_request(READ_CHAIN_METHOD, &req)
        .await
        .expect("sign");
    let mut svc = env.client.event_service();
    let send = |svc: &mut proto::event_service_client::EventServiceClient<_>| {
        let mut r = tonic::Request::new(req.clone());
        amai_client::request_auth::apply(&sig, r.metadata_mut());
        let mut svc = svc.clone();
        async move { svc.read_chain(r).await }
    };
    send(&mut svc).await.expect("first use");
    let err = send(&mut svc).await.expect_err("replay");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(status_kind(&err), ErrorKind::RequestReplayed);
    env.stop().await;
}

#[tokio::test]
async fn a_blob_is_read_by_its_uploaders_and_operators_not_by_strangers() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let carol = env.agent("carol").await;
    let blob = alice
        .put_blob(b"alice's jail log".to_vec())
        .await
        .expect("put");
    let digest: [u8; 32] = blob.sha256.as_slice().try_into().expect("32");

    assert_eq!(
        alice.client().get_blob(&digest).await.expect("uploader"),
        b"alice's jail log"
    );
    env.client.get_blob(&digest).await.expect("operator");
    denied(bob.client().get_blob(&digest).await.expect_err("stranger"));
    // An unknown digest answers the same as someone else's blob.
    denied(
        bob.client()
            .get_blob(&[9u8; 32])
            .await
            .expect_err("unknown"),
    );
    // Uploading the same content makes carol an uploader too.
    carol
        .put_blob(b"alice's jail log".to_vec())
        .await
        .expect("same content");
    carol
        .client()
        .get_blob(&digest)
        .await
        .expect("second uploader");
    denied(
        bob.client()
            .get_blob(&digest)
            .await
            .expect_err("still a stranger"),
    );
    env.stop().await;
}

#[tokio::test]
async fn messages_still_seal_and_open_with_keys_from_key_events() {
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let alice = env.agent("alice").await;
    let mut bob = env.agent("bob").await;
    // A rotation: alice must fold bob's key events to seal to his new key.
    bob.rotate_key(IdentityKeys::generate(), "routine")
        .await
        .expect("rotate");
    let sent = alice
        .send_message(bob.id(), b"hello bob")
        .await
        .expect("send");
    // The inbox is a projection: wait (bounded, by the worker) for the message.
    env.client
        .identity_service()
        .get_stats(proto::GetStatsRequest {
            min_position: sent.position.clone(),
        })
        .await
        .expect("projection reaches the message");
    let messages = bob.inbox(0, 10).await.expect("inbox");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].plaintext, b"hello bob");
    assert_eq!(messages[0].from, alice.id());
    env.stop().await;
}

#[tokio::test]
async fn a_read_signed_with_a_rotated_out_key_is_refused_saying_so() {
    let env = Env::start().await;
    let mut alice = env.agent("alice").await;
    let old = alice.keys().clone();
    alice
        .rotate_key(IdentityKeys::generate(), "routine")
        .await
        .expect("rotate");
    let stale = env.anonymous.clone().with_signer(alice.id(), old);
    let err = stale
        .read_chain(&agg(&alice), 1, 10)
        .await
        .expect_err("stale key");
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    assert_eq!(err.kind(), ErrorKind::RevokedKey, "{err}");
    // The handle signs with the new key.
    alice
        .client()
        .read_chain(&agg(&alice), 1, 10)
        .await
        .expect("current key");
    env.stop().await;
}
