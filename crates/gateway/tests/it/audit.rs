//! `AuditService` against a real audit worker, from a client that trusts
//! nothing the gateway says: checkpoints open with the log key, events are
//! proven into them from their own bytes, consistency between checkpoints
//! verifies; requesting a checkpoint is an operator's signed request; bad
//! requests get precise codes and kinds; a witness's cosignature is served
//! with the checkpoint and counts for k-of-n, a cosignature recorded by an
//! identity that does not hold the witness key does not.

use amai_bus::envelope::EventDraft;
use amai_bus::proto::{self, payload::Kind};
use amai_bus::IdentityKeys;
use amai_checkpoint::{SignedCheckpoint, VerifierKey, WitnessKey};
use amai_client::checkpoints::log_vkey;
use amai_client::{Agent, ClientError, ErrorKind};
use tonic::Code;

use crate::common::{agg, Env};

const AGENTS: &str = "AMAI_AGENTS";

fn code_and_kind(e: &ClientError) -> (Option<Code>, ErrorKind) {
    (e.code(), e.kind())
}

/// Waits until the audit tree of AMAI_AGENTS holds the whole stream.
async fn tree_caught_up(env: &Env) {
    let last = env
        .stream_positions()
        .await
        .get(AGENTS)
        .copied()
        .unwrap_or(0);
    for _ in 0..500 {
        let s = env.anonymous.audit_status().await.expect("status");
        if s.streams
            .iter()
            .any(|s| s.stream == AGENTS && s.tree_size >= last)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the audit tree did not reach seq {last}");
}

async fn act(agent: &Agent, n: usize) {
    for i in 0..n {
        agent
            .append_action("note.written", &format!("{{\"n\":{i}}}"))
            .await
            .expect("action");
    }
}

#[tokio::test]
async fn events_are_proven_into_signed_checkpoints_by_a_client_that_trusts_nothing() {
    let env = Env::with_audit().await;
    let alice = env.agent("alice").await;
    act(&alice, 3).await;
    tree_caught_up(&env).await;
    env.client
        .request_checkpoint(AGENTS)
        .await
        .expect("checkpoint");

    let status = env.anonymous.audit_status().await.expect("status");
    let vkey = log_vkey(&status, AGENTS).expect("vkey");
    let old = env
        .anonymous
        .verified_checkpoint(AGENTS, 0, &vkey)
        .await
        .expect("verified checkpoint");
    // Every event of alice's chain, from its own bytes, is in the checkpoint.
    let page = env
        .client
        .read_chain(&agg(&alice), 1, 0)
        .await
        .expect("chain");
    assert_eq!(page.events.len(), 4);
    for ev in &page.events {
        env.anonymous
            .prove_included(ev, &old)
            .await
            .expect("included");
    }
    // An event with one byte changed is not.
    let mut forged = page.events[1].clone();
    let last = forged.raw.len() - 1;
    forged.raw[last] ^= 1;
    let err = env
        .anonymous
        .prove_included(&forged, &old)
        .await
        .expect_err("forged");
    assert!(matches!(err, ClientError::Integrity(_)), "{err}");

    // Later: a larger checkpoint, consistent with the first.
    act(&alice, 2).await;
    tree_caught_up(&env).await;
    env.client
        .request_checkpoint(AGENTS)
        .await
        .expect("checkpoint");
    let new = env
        .anonymous
        .verified_checkpoint(AGENTS, 0, &vkey)
        .await
        .expect("new");
    let (o, n) = (old.note.checkpoint(), new.note.checkpoint());
    assert!(n.size > o.size);
    let p = env
        .anonymous
        .consistency_proof(AGENTS, o.size, n.size)
        .await
        .expect("proof");
    let proof: Vec<[u8; 32]> = p
        .proof
        .iter()
        .map(|h| h.as_slice().try_into().expect("32"))
        .collect();
    amai_merkle::verify_consistency(o.size, n.size, &o.root, &n.root, &proof).expect("consistent");

    // A note checked against another log key is refused.
    let other = VerifierKey::ed25519(vkey.name(), &env.operator.public_key()).expect("vkey");
    let err = env
        .anonymous
        .verified_checkpoint(AGENTS, 0, &other)
        .await
        .expect_err("other key");
    assert!(matches!(err, ClientError::Integrity(_)), "{err}");
    env.stop().await;
}

#[tokio::test]
async fn only_operators_make_the_audit_service_checkpoint() {
    let env = Env::with_audit().await;
    let mallory = env.agent("mallory").await;
    tree_caught_up(&env).await;
    let before = env.stream_positions().await;

    let signed_by_agent = mallory
        .client()
        .request_checkpoint(AGENTS)
        .await
        .expect_err("agent");
    assert_eq!(
        code_and_kind(&signed_by_agent),
        (Some(Code::PermissionDenied), ErrorKind::NotOwner)
    );
    let unsigned = env
        .anonymous
        .request_checkpoint(AGENTS)
        .await
        .expect_err("unsigned");
    assert_eq!(unsigned.code(), Some(Code::Unauthenticated));
    assert_eq!(
        env.stream_positions().await.get("AMAI_AUDIT"),
        before.get("AMAI_AUDIT"),
        "no checkpoint appended"
    );

    // Reads stay public: no checkpoint yet is NOT_FOUND / NO_CHECKPOINT.
    let none = env
        .anonymous
        .checkpoint(AGENTS, 0)
        .await
        .expect_err("none yet");
    assert_eq!(
        code_and_kind(&none),
        (Some(Code::NotFound), ErrorKind::NoCheckpoint)
    );
    env.stop().await;
}

#[tokio::test]
async fn malformed_audit_requests_get_precise_refusals() {
    let env = Env::with_audit().await;
    env.agent("bob").await;
    tree_caught_up(&env).await;
    env.client
        .request_checkpoint(AGENTS)
        .await
        .expect("checkpoint");
    let c = &env.anonymous;

    let unknown = c
        .checkpoint("AMAI_NOT_A_STREAM", 0)
        .await
        .expect_err("unknown");
    assert_eq!(
        code_and_kind(&unknown),
        (Some(Code::InvalidArgument), ErrorKind::InvalidArgument)
    );
    let index = c
        .inclusion_proof(AGENTS, 5, 5)
        .await
        .expect_err("index beyond");
    assert_eq!(
        code_and_kind(&index),
        (Some(Code::InvalidArgument), ErrorKind::InvalidArgument)
    );
    let backwards = c
        .consistency_proof(AGENTS, 5, 2)
        .await
        .expect_err("old > new");
    assert_eq!(
        code_and_kind(&backwards),
        (Some(Code::InvalidArgument), ErrorKind::InvalidArgument)
    );
    let beyond = c
        .inclusion_proof(AGENTS, 0, 10_000)
        .await
        .expect_err("beyond the tree");
    assert_eq!(
        code_and_kind(&beyond),
        (Some(Code::OutOfRange), ErrorKind::TreeSizeBeyondEnd)
    );
    let size = c
        .checkpoint(AGENTS, 10_000)
        .await
        .expect_err("no checkpoint of that size");
    assert_eq!(
        code_and_kind(&size),
        (Some(Code::NotFound), ErrorKind::NoCheckpoint)
    );
    env.stop().await;
}

#[tokio::test]
async fn without_an_audit_worker_reads_are_unavailable() {
    let env = Env::start().await;
    let err = env
        .anonymous
        .checkpoint(AGENTS, 0)
        .await
        .expect_err("no worker");
    assert_eq!(
        code_and_kind(&err),
        (Some(Code::Unavailable), ErrorKind::WorkerUnavailable)
    );
    env.stop().await;
}

/// Records a cosignature of `note` by `witness_key` on `recorder`'s chain.
async fn record_cosignature(recorder: &Agent, witness_key: &WitnessKey, note: &SignedCheckpoint) {
    let line = witness_key.cosign(note, 1_800_000_000).expect("cosign");
    let c = note.checkpoint();
    let payload = proto::AuditCheckpointCosigned {
        origin: c.origin.clone(),
        tree_size: c.size,
        root_hash: c.root.to_vec(),
        cosignature: line.to_string(),
        witness_name: witness_key.name().to_string(),
        witness_vkey: witness_key.verifier().to_string(),
        time: 1_800_000_000,
        checkpoint_event_id: String::new(),
    };
    let aggregate = agg(recorder);
    let (keys, id) = (recorder.keys().clone(), recorder.id().to_string());
    recorder
        .append_with_retry(|seq, hash| {
            EventDraft::new(
                aggregate.clone(),
                Kind::AuditCheckpointCosigned(payload.clone()),
            )
            .after(seq, hash)
            .sign(&keys, &id)
        })
        .await
        .expect("cosignature recorded");
}

#[tokio::test]
async fn a_witness_cosignature_is_served_with_the_checkpoint_and_counts_for_k_of_n() {
    let env = Env::with_audit().await;
    let witness = env.agent("witness").await;
    let impostor = env.agent("impostor").await;
    tree_caught_up(&env).await;
    env.client
        .request_checkpoint(AGENTS)
        .await
        .expect("checkpoint");
    let status = env.anonymous.audit_status().await.expect("status");
    let vkey = log_vkey(&status, AGENTS).expect("vkey");
    let c = env
        .anonymous
        .verified_checkpoint(AGENTS, 0, &vkey)
        .await
        .expect("checkpoint");
    let size = c.note.checkpoint().size;

    let witness_key =
        WitnessKey::new("witness/one", witness.keys().signing_key().clone()).expect("key");
    // The impostor records a cosignature made with a key it does not hold as
    // its own: the recorded witness key is not the event's signer.
    let stolen_name = WitnessKey::new(
        "witness/two",
        IdentityKeys::generate().signing_key().clone(),
    )
    .expect("key");
    record_cosignature(&impostor, &stolen_name, &c.note).await;
    record_cosignature(&witness, &witness_key, &c.note).await;
    tree_caught_up(&env).await;

    let again = env
        .anonymous
        .verified_checkpoint(AGENTS, size, &vkey)
        .await
        .expect("again");
    let trusted = [witness_key.verifier(), stolen_name.verifier()];
    let seen = again.note.cosignatures(&trusted);
    assert_eq!(
        seen.len(),
        1,
        "only the witness's own cosignature is served"
    );
    assert_eq!(seen[0].name, "witness/one");
    again
        .note
        .require_witnesses(&trusted[..1], 1)
        .expect("1 of 1");
    assert!(
        again.note.require_witnesses(&trusted, 2).is_err(),
        "2 of 2 is not met"
    );
    env.stop().await;
}
