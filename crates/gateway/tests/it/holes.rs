//! What an attacker tries through the gateway (issue 5's holes 1, 4 and 5):
//! forged key rotations published around the store, copied sealed messages,
//! request signatures replayed against another deployment or relabelled.

use amai_bus::proto::{self, payload::Kind};
use amai_bus::{EventDraft, IdentityKeys};
use amai_client::error::status_kind;
use amai_client::request_auth::{self, sign_request};
use amai_client::{ErrorKind, LIST_INBOX_METHOD};
use prost::Message;
use tonic::Code;

use crate::common::{agg, Env};

fn inbox_request(agent_id: &str) -> proto::ListInboxRequest {
    proto::ListInboxRequest {
        agent_id: agent_id.to_string(),
        limit: 10,
        ..Default::default()
    }
}

async fn list_inbox_as(
    env: &Env,
    sig: &request_auth::RequestSignature,
    req: proto::ListInboxRequest,
) -> tonic::Status {
    let mut r = tonic::Request::new(req);
    request_auth::apply(sig, r.metadata_mut());
    env.client
        .identity_service()
        .list_inbox(r)
        .await
        .expect_err("no worker runs: at best UNAVAILABLE")
}

/// Hole 1: a forged rotation to K2 published raw onto alice's chain does not
/// make the gateway accept K2's request signatures as alice's.
#[tokio::test]
async fn a_forged_rotation_published_raw_does_not_authenticate_its_key() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let aggregate = agg(&alice);
    let head = env.client.chain_head(&aggregate).await.expect("head");
    let k2 = IdentityKeys::generate();
    let forged = EventDraft::new(
        aggregate.clone(),
        Kind::AgentKeyRotated(proto::AgentKeyRotated {
            new_signing_key: k2.public_key().as_bytes().to_vec(),
            new_x25519_key: k2.x25519_public().to_vec(),
            reason: "forged".into(),
            new_key_proof: k2
                .rotation_proof(
                    &aggregate.to_string(),
                    head.aggregate_seq + 1,
                    &k2.public_key(),
                )
                .to_vec(),
        }),
    )
    .after(head.aggregate_seq, head.hash)
    .sign(&k2, alice.id());
    env.js
        .publish(aggregate.subject(), forged.encode_to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    let deployment = env.client.deployment_id().await.expect("deployment");
    let req = inbox_request(alice.id());
    let sig = sign_request(&k2, alice.id(), &deployment, LIST_INBOX_METHOD, &req);
    let err = list_inbox_as(&env, &sig, req.clone()).await;
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(status_kind(&err), ErrorKind::BadRequestSignature);

    // alice's own key still authenticates (the query itself then finds no worker).
    let sig = sign_request(
        alice.keys(),
        alice.id(),
        &deployment,
        LIST_INBOX_METHOD,
        &req,
    );
    let err = list_inbox_as(&env, &sig, req).await;
    assert_eq!(status_kind(&err), ErrorKind::WorkerUnavailable);

    // Appending to the chain now answers precisely (DATA_LOSS, CORRUPTED, naming
    // the invalid event), not UNAVAILABLE forever, and appends nothing.
    let forged_head = env.client.chain_head(&aggregate).await.expect("head");
    let action = EventDraft::action(aggregate.clone(), "task.done", "{}")
        .after(head.aggregate_seq, head.hash)
        .sign(alice.keys(), alice.id());
    let err = env
        .client
        .event_service()
        .append(proto::AppendRequest {
            event: Some(action),
        })
        .await
        .expect_err("corrupted chain");
    assert_eq!(err.code(), Code::DataLoss);
    assert_eq!(status_kind(&err), ErrorKind::Corrupted);
    assert_eq!(
        env.client.chain_head(&aggregate).await.expect("head"),
        forged_head,
        "nothing appended"
    );
    env.stop().await;
}

/// Hole 5: a request signed for another deployment, or relabelled as another
/// actor, is refused.
#[tokio::test]
async fn request_signatures_are_bound_to_deployment_and_actor() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let req = inbox_request(alice.id());
    let other_deployment = hex::encode(IdentityKeys::generate().public_key().as_bytes());
    let sig = sign_request(
        alice.keys(),
        alice.id(),
        &other_deployment,
        LIST_INBOX_METHOD,
        &req,
    );
    let err = list_inbox_as(&env, &sig, req.clone()).await;
    assert_eq!(status_kind(&err), ErrorKind::BadRequestSignature);

    // bob signs, then relabels the signature as alice's.
    let bob = env.agent("bob").await;
    let deployment = env.client.deployment_id().await.expect("deployment");
    let mut sig = sign_request(bob.keys(), bob.id(), &deployment, LIST_INBOX_METHOD, &req);
    sig.actor = alice.id().to_string();
    let err = list_inbox_as(&env, &sig, req).await;
    assert_eq!(status_kind(&err), ErrorKind::BadRequestSignature);
    env.stop().await;
}

/// Hole 4: mallory copies alice's sealed bytes to bob into her own message.
/// bob's SDK opens alice's message as from alice and refuses mallory's copy
/// (the box is bound to sender, recipient and event id), without failing the
/// rest of the inbox.
#[tokio::test]
async fn a_copied_sealed_message_is_refused_and_the_original_opens() {
    let env = Env::with_worker(64 * 1024).await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let mallory = env.agent("mallory").await;
    alice
        .send_message(bob.id(), b"the key is under the mat")
        .await
        .expect("send");
    // Read alice's message event and copy its box.
    let page = env
        .client
        .read_chain_from(&agg(&alice), 1, 100, 0)
        .await
        .expect("read");
    let original = page
        .events
        .iter()
        .filter_map(|e| e.event.as_ref())
        .filter_map(|s| proto::EventBody::decode(s.body.as_slice()).ok())
        .find_map(|b| match b.payload.and_then(|p| p.kind) {
            Some(Kind::AgentMessageSent(m)) => Some(m),
            _ => None,
        })
        .expect("alice's message");
    let aggregate = agg(&mallory);
    let (keys, id) = (mallory.keys().clone(), mallory.id().to_string());
    let copy = original.clone();
    let appended = mallory
        .append_with_retry(|seq, hash| {
            EventDraft::new(aggregate.clone(), Kind::AgentMessageSent(copy.clone()))
                .after(seq, hash)
                .sign(&keys, &id)
        })
        .await
        .expect("mallory's copy is a well-formed event");
    let min = appended.position.clone();

    // Wait (bounded, on a condition) until the worker shows both messages.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let page = loop {
        let page = bob.inbox_page(0, 10).await.expect("inbox");
        if page.messages.len() + page.refused.len() >= 2 {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "inbox never showed both messages (min position {min:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(page.messages.len(), 1, "{page:?}");
    assert_eq!(page.messages[0].from, alice.id());
    assert_eq!(page.messages[0].plaintext, b"the key is under the mat");
    assert_eq!(page.refused.len(), 1, "{page:?}");
    env.stop().await;
}
