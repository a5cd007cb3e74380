//! The audit role against a real nats-server: signed C2SP checkpoints of
//! every stream whose roots are the RFC 9162 roots of the stream's bytes,
//! proofs from stored nodes that verify, a tree that resumes where it was
//! after a restart, a forged checkpoint on AMAI_AUDIT that is never served, a
//! rogue message in a stream that the tree still commits to, and an instance
//! that refuses to sign over a stream rewritten under it.

mod common;

use common::{deploy, register, service, wait_until, Deployment};

use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto;
use amai_bus::query::{self, QueryCode};
use amai_bus::subjects::AggregateKind;
use amai_checkpoint::{SignedCheckpoint, VerifierKey};
use amai_merkle::{leaf_hash, root, verify_consistency, verify_inclusion, Hash};
use amai_workers::reactor::ServiceSigner;
use amai_workers::roles::audit::{origin, AuditRole, AuditRoleConfig};
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};

const AGENTS: &str = "AMAI_AGENTS";

struct World {
    d: Deployment,
    audit: ServiceSigner,
}

impl World {
    async fn new() -> Self {
        let d = deploy().await;
        let audit = service(&d.store, &d.operator, "svc-audit", &[AggregateKind::Audit]).await;
        Self { d, audit }
    }

    async fn start(&self, dir: &std::path::Path, config: AuditRoleConfig) -> RoleRuntime {
        RoleRuntime::start(
            Arc::new(AuditRole::with_config(config)),
            RoleRuntimeConfig::new(
                self.d.client.clone(),
                self.d.store.clone(),
                dir,
                self.audit.clone(),
            ),
        )
        .await
        .expect("audit role")
    }

    fn deployment(&self) -> String {
        amai_workers::role::PreflightContext {
            trust_root: Some(self.d.operator.public_key()),
        }
        .deployment()
    }

    fn vkey(&self, stream: &str) -> VerifierKey {
        VerifierKey::ed25519(
            origin(&self.deployment(), stream),
            &self.audit.keys.public_key(),
        )
        .expect("vkey")
    }

    async fn ask<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        subject: &str,
        req: &Req,
    ) -> Result<Resp, query::QueryError> {
        query::request(&self.d.client, subject, req, Duration::from_secs(5)).await
    }

    async fn checkpoint(
        &self,
        stream: &str,
        size: u64,
    ) -> Result<proto::Checkpoint, query::QueryError> {
        self.ask(
            query::AUDIT_CHECKPOINT,
            &proto::GetCheckpointRequest {
                stream: stream.to_string(),
                tree_size: size,
            },
        )
        .await
    }

    async fn request_checkpoint(
        &self,
        stream: &str,
    ) -> Result<proto::Checkpoint, query::QueryError> {
        self.ask(
            query::AUDIT_REQUEST_CHECKPOINT,
            &proto::RequestCheckpointRequest {
                stream: stream.to_string(),
            },
        )
        .await
    }

    async fn status(&self) -> proto::AuditStatus {
        self.ask(query::AUDIT_STATUS, &proto::GetAuditStatusRequest {})
            .await
            .expect("status")
    }

    async fn tree_size(&self, stream: &str) -> u64 {
        self.status()
            .await
            .streams
            .into_iter()
            .find(|s| s.stream == stream)
            .map_or(0, |s| s.tree_size)
    }

    /// The leaf hashes of a stream, computed here from the stored bytes.
    async fn leaves(&self, stream: &str) -> Vec<Hash> {
        let js = self.d.store.jetstream();
        let mut s = js.get_stream(stream).await.expect("stream");
        let last = s.info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = s.get_raw_message(seq).await.expect("message");
            out.push(leaf_hash(&amai_bus::envelope::hash_bytes(&m.payload)));
        }
        out
    }

    async fn last_seq(&self, stream: &str) -> u64 {
        let js = self.d.store.jetstream();
        let mut s = js.get_stream(stream).await.expect("stream");
        s.info().await.expect("info").state.last_sequence
    }
}

fn quick() -> AuditRoleConfig {
    AuditRoleConfig::default()
        .every_events(1_000_000)
        .interval(Duration::from_secs(3600))
        .only_streams(vec![AGENTS.to_string(), "AMAI_NAMES".to_string()])
}

fn hashes(v: &[Vec<u8>]) -> Vec<Hash> {
    v.iter()
        .map(|h| <[u8; 32]>::try_from(h.as_slice()).expect("32 bytes"))
        .collect()
}

async fn caught_up(w: &World, stream: &str) {
    let last = w.last_seq(stream).await;
    wait_until("the audit tree to reach the stream's end", || async {
        w.tree_size(stream).await >= last
    })
    .await;
}

#[tokio::test]
async fn a_requested_checkpoint_is_a_signed_c2sp_note_over_the_streams_own_bytes() {
    let w = World::new().await;
    for i in 0..5 {
        register(&w.d.store, &format!("agent-{i}")).await;
    }
    let dir = tempfile::tempdir().expect("dir");
    let _rt = w.start(dir.path(), quick()).await;
    caught_up(&w, AGENTS).await;

    let c = w.request_checkpoint(AGENTS).await.expect("checkpoint");
    let payload = c.checkpoint.clone().expect("payload");
    let leaves = w.leaves(AGENTS).await;
    assert_eq!(payload.tree_size, leaves.len() as u64);
    assert_eq!(
        payload.root_hash,
        root(&leaves).to_vec(),
        "the root of the stream's bytes"
    );
    assert!(payload.gaps.is_empty());

    // The note verifies against the audit service's key under the origin name,
    // says what the event says, and carries the event's log signature.
    let note = SignedCheckpoint::open(&payload.note, &w.vkey(AGENTS)).expect("note verifies");
    assert_eq!(note.checkpoint().size, payload.tree_size);
    assert_eq!(note.checkpoint().root.to_vec(), payload.root_hash);
    assert_eq!(note.log_signature().to_vec(), payload.log_signature);
    assert_eq!(c.log_vkey, w.vkey(AGENTS).to_string());
    // The checkpoint event is the audit service's, on audit/<stream>.
    let ev =
        amai_bus::envelope::VerifiedEvent::decode(&c.event.expect("event").raw).expect("event");
    assert_eq!(ev.aggregate.to_string(), format!("audit/{AGENTS}"));
    assert_eq!(ev.actor(), w.audit.id);

    // Nothing new: asking again answers the same checkpoint, appends nothing.
    let again = w.request_checkpoint(AGENTS).await.expect("again");
    assert_eq!(again.checkpoint, c.checkpoint);
    assert_eq!(w.last_seq("AMAI_AUDIT").await, 1);

    // Another key's view of the note is refused.
    let stranger =
        VerifierKey::ed25519(origin(&w.deployment(), AGENTS), &w.d.operator.public_key())
            .expect("vkey");
    assert!(SignedCheckpoint::open(&payload.note, &stranger).is_err());
}

#[tokio::test]
async fn proofs_from_stored_nodes_verify_against_signed_roots_at_every_size() {
    let w = World::new().await;
    register(&w.d.store, "first").await;
    let dir = tempfile::tempdir().expect("dir");
    let _rt = w.start(dir.path(), quick()).await;
    caught_up(&w, AGENTS).await;
    let old = w
        .request_checkpoint(AGENTS)
        .await
        .expect("old")
        .checkpoint
        .expect("payload");
    for i in 0..6 {
        register(&w.d.store, &format!("later-{i}")).await;
    }
    caught_up(&w, AGENTS).await;
    let new = w
        .request_checkpoint(AGENTS)
        .await
        .expect("new")
        .checkpoint
        .expect("payload");
    assert!(new.tree_size > old.tree_size);
    let new_root: Hash = new.root_hash.as_slice().try_into().expect("32");
    let old_root: Hash = old.root_hash.as_slice().try_into().expect("32");
    let leaves = w.leaves(AGENTS).await;

    for index in 0..new.tree_size {
        let p: proto::InclusionProof = w
            .ask(
                query::AUDIT_INCLUSION,
                &proto::GetInclusionProofRequest {
                    stream: AGENTS.into(),
                    leaf_index: index,
                    tree_size: 0,
                },
            )
            .await
            .expect("inclusion");
        assert_eq!(p.tree_size, new.tree_size, "0 means the latest checkpoint");
        assert_eq!(p.leaf_hash, leaves[index as usize].to_vec());
        verify_inclusion(
            &leaves[index as usize],
            index,
            new.tree_size,
            &hashes(&p.proof),
            &new_root,
        )
        .expect("inclusion verifies against the signed root");
    }
    let p: proto::ConsistencyProof = w
        .ask(
            query::AUDIT_CONSISTENCY,
            &proto::GetConsistencyProofRequest {
                stream: AGENTS.into(),
                old_size: old.tree_size,
                new_size: 0,
            },
        )
        .await
        .expect("consistency");
    verify_consistency(
        old.tree_size,
        new.tree_size,
        &old_root,
        &new_root,
        &hashes(&p.proof),
    )
    .expect("consistency verifies between the signed roots");

    // The checkpoint of the old size is still served, exactly.
    let again = w
        .checkpoint(AGENTS, old.tree_size)
        .await
        .expect("old by size");
    assert_eq!(again.checkpoint.expect("payload"), old);

    // A size the tree has not reached is OUT_OF_RANGE with its reason; a
    // size never checkpointed is NO_CHECKPOINT; an unknown stream NOT_FOUND.
    let beyond = w
        .ask::<_, proto::InclusionProof>(
            query::AUDIT_INCLUSION,
            &proto::GetInclusionProofRequest {
                stream: AGENTS.into(),
                leaf_index: 0,
                tree_size: new.tree_size + 100,
            },
        )
        .await
        .expect_err("beyond");
    assert_eq!(beyond.code, QueryCode::OutOfRange);
    assert_eq!(
        beyond.reason.as_deref(),
        Some(query::reason::TREE_SIZE_BEYOND_END)
    );
    let none = w
        .checkpoint(AGENTS, old.tree_size + 1)
        .await
        .expect_err("never checkpointed");
    assert_eq!(none.reason.as_deref(), Some(query::reason::NO_CHECKPOINT));
    let unknown = w.checkpoint("AMAI_NOPE", 0).await.expect_err("unknown");
    assert_eq!(unknown.code, QueryCode::NotFound);
}

#[tokio::test]
async fn checkpoints_come_by_themselves_every_n_events() {
    let w = World::new().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = AuditRoleConfig::default()
        .every_events(3)
        .interval(Duration::from_secs(3600))
        .only_streams(vec![AGENTS.to_string()]);
    let _rt = w.start(dir.path(), config).await;
    for i in 0..4 {
        register(&w.d.store, &format!("agent-{i}")).await;
    }
    wait_until("a checkpoint made by the role itself", || async {
        w.checkpoint(AGENTS, 0)
            .await
            .is_ok_and(|c| c.checkpoint.is_some_and(|c| c.tree_size >= 3))
    })
    .await;
}

#[tokio::test]
async fn a_restarted_instance_resumes_its_tree_where_it_was() {
    let w = World::new().await;
    register(&w.d.store, "before").await;
    let dir = tempfile::tempdir().expect("dir");
    let rt = w.start(dir.path(), quick()).await;
    caught_up(&w, AGENTS).await;
    rt.run_until(async {}).await.expect("stop");

    for i in 0..3 {
        register(&w.d.store, &format!("while-down-{i}")).await;
    }
    let _rt = w.start(dir.path(), quick()).await;
    caught_up(&w, AGENTS).await;
    let c = w
        .request_checkpoint(AGENTS)
        .await
        .expect("checkpoint")
        .checkpoint
        .expect("payload");
    let leaves = w.leaves(AGENTS).await;
    assert_eq!(
        c.tree_size,
        leaves.len() as u64,
        "no leaf skipped or doubled"
    );
    assert_eq!(c.root_hash, root(&leaves).to_vec());
}

#[tokio::test]
async fn a_rogue_message_is_committed_to_and_a_forged_checkpoint_is_never_served() {
    let w = World::new().await;
    register(&w.d.store, "honest").await;
    let js = w.d.store.jetstream();
    // A rogue publisher with NATS access puts garbage on an agent subject...
    js.publish("amai.agent.rogue", "not an event".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    // ...and a checkpoint of its own making on AMAI_AUDIT, signed by itself.
    let rogue = amai_bus::IdentityKeys::generate();
    let forged = amai_bus::EventDraft::new(
        amai_bus::subjects::Aggregate::new(AggregateKind::Audit, AGENTS).expect("agg"),
        proto::payload::Kind::AuditCheckpointed(proto::AuditCheckpointed {
            stream: AGENTS.into(),
            origin: "forged".into(),
            tree_size: 1,
            root_hash: vec![0; 32],
            note: "forged".into(),
            log_signature: vec![0; 64],
            gaps: vec![],
        }),
    )
    .signer_seq(1)
    .sign(&rogue, &w.audit.id);
    js.publish(
        format!("amai.audit.{AGENTS}"),
        prost::Message::encode_to_vec(&forged).into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");

    let dir = tempfile::tempdir().expect("dir");
    let _rt = w.start(dir.path(), quick()).await;
    caught_up(&w, AGENTS).await;
    // The tree commits to the stream as it is, garbage included.
    let leaves = w.leaves(AGENTS).await;
    assert_eq!(w.tree_size(AGENTS).await, leaves.len() as u64);
    // The forged checkpoint of size 1 is not served by size...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let by_size = w.checkpoint(AGENTS, 1).await.expect_err("forged");
    assert_eq!(
        by_size.reason.as_deref(),
        Some(query::reason::NO_CHECKPOINT)
    );
}

#[tokio::test]
async fn an_instance_refuses_to_sign_over_a_stream_rewritten_under_it() {
    let w = World::new().await;
    register(&w.d.store, "original").await;
    let dir = tempfile::tempdir().expect("dir");
    let rt = w.start(dir.path(), quick()).await;
    caught_up(&w, AGENTS).await;
    w.request_checkpoint(AGENTS).await.expect("checkpoint");
    rt.run_until(async {}).await.expect("stop");

    // An admin deletes AMAI_NAMES' messages... here: rebuilds the instance's
    // state from a rewritten AMAI_AGENTS: same length, other bytes.
    let js = w.d.store.jetstream();
    let info = js
        .get_stream(AGENTS)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    let last = w.last_seq(AGENTS).await;
    let mut messages = Vec::new();
    {
        let s = js.get_stream(AGENTS).await.expect("stream");
        for seq in 1..=last {
            messages.push(s.get_raw_message(seq).await.expect("message"));
        }
    }
    js.delete_stream(AGENTS).await.expect("delete stream");
    js.create_stream(info).await.expect("recreate");
    for (i, m) in messages.iter().enumerate() {
        let mut payload = m.payload.to_vec();
        if i == 0 {
            payload.push(0); // one byte more in the first message
        }
        js.publish(m.subject.to_string(), payload.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    // A fresh instance (its state rebuilt) builds the rewritten tree...
    let fresh = tempfile::tempdir().expect("dir");
    let _rt = w.start(fresh.path(), quick()).await;
    caught_up(&w, AGENTS).await;
    register(&w.d.store, "after").await;
    caught_up(&w, AGENTS).await;
    // ...and refuses to sign anything over it.
    let refused = w.request_checkpoint(AGENTS).await.expect_err("diverged");
    assert_eq!(refused.code, QueryCode::FailedPrecondition);
    assert_eq!(refused.reason.as_deref(), Some(query::reason::LOG_DIVERGED));
    let s = w.status().await;
    assert!(s.streams.iter().any(|s| s.stream == AGENTS && s.diverged));
    assert_eq!(w.last_seq("AMAI_AUDIT").await, 1, "no second checkpoint");
}
