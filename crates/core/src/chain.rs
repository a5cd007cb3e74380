//! Verification of a whole chain, as an auditor does it: every signature, every
//! hash link, contiguous sequences, and the validity of each signing key at the
//! time of signing, all through THE step in [`crate::verify`]. The report names
//! the first failure precisely.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use crate::envelope::{EventHash, ZERO_HASH};
use crate::identity::{IdentityState, SignerCheck};
use crate::proto;
use crate::stored::StoredEvent;
use crate::subjects::{Aggregate, AggregateKind};
use crate::verify::{self, ChainState, FailureKind};
use crate::Position;

/// The first thing wrong with a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainFailure {
    /// Aggregate sequence where it failed (expected sequence for gaps).
    pub aggregate_seq: u64,
    /// Stream position of the offending event.
    pub position: Position,
    /// What kind of failure.
    pub kind: FailureKind,
    /// Human detail.
    pub detail: String,
}

/// The result of verifying a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// The aggregate.
    pub aggregate: String,
    /// Events checked (up to and including a failure).
    pub events_checked: u64,
    /// Hash of the last valid event.
    pub head_hash: EventHash,
    /// The first failure, if any.
    pub failure: Option<ChainFailure>,
}

impl ChainReport {
    /// An empty report for `aggregate`, before any event is checked.
    pub fn new(aggregate: &Aggregate) -> Self {
        Self {
            aggregate: aggregate.to_string(),
            events_checked: 0,
            head_hash: ZERO_HASH,
            failure: None,
        }
    }

    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> proto::ChainReport {
        proto::ChainReport {
            aggregate: self.aggregate.clone(),
            events_checked: self.events_checked,
            ok: self.ok(),
            head_hash: self.head_hash.to_vec(),
            failure: self.failure.as_ref().map(|f| proto::ChainFailure {
                aggregate_seq: f.aggregate_seq,
                position: Some(f.position.clone().into()),
                kind: f.kind.to_proto() as i32,
                detail: f.detail.clone(),
            }),
        }
    }
}

/// A chain verification that takes events a page at a time (so a chain of any
/// length is verified in bounded memory) through THE verification step.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    report: ChainReport,
    state: ChainState,
}

impl ChainVerifier {
    /// Starts verifying `aggregate` from its first event.
    pub fn new(aggregate: &Aggregate) -> Self {
        Self {
            report: ChainReport::new(aggregate),
            state: ChainState::EMPTY,
        }
    }

    /// Verifies the next events in chain order; `signers` resolves foreign
    /// signers (judged at the positions the events cite). Returns false once a
    /// failure was found (further events are ignored).
    pub fn feed(
        &mut self,
        events: &[StoredEvent],
        trust_root: Option<&VerifyingKey>,
        signers: &HashMap<String, IdentityState>,
    ) -> bool {
        if self.report.failure.is_some() {
            return false;
        }
        let (state, failure) = verify::fold(self.state.clone(), events, trust_root, |req| {
            verify::resolve(
                req,
                req.identity().and_then(|id| signers.get(id)),
                SignerCheck::AtPosition,
            )
        });
        let checked = failure.as_ref().map_or(events.len(), |(i, _)| i + 1);
        self.report.events_checked += checked as u64;
        self.state = state;
        self.report.head_hash = self.state.hash;
        if let Some((index, f)) = failure {
            self.report.failure = Some(ChainFailure {
                aggregate_seq: self.state.seq + 1,
                position: events[index].position.clone(),
                kind: f.kind,
                detail: f.detail,
            });
            return false;
        }
        true
    }

    /// The chain state of the valid prefix verified so far.
    pub fn state(&self) -> &ChainState {
        &self.state
    }

    /// The report so far.
    pub fn finish(self) -> ChainReport {
        self.report
    }
}

/// Verifies the events of one aggregate, in stream order. `signers` resolves
/// foreign signers (operators, services) to their states.
pub fn verify_events(
    aggregate: &Aggregate,
    events: &[StoredEvent],
    trust_root: Option<&VerifyingKey>,
    signers: &HashMap<String, IdentityState>,
) -> ChainReport {
    let mut v = ChainVerifier::new(aggregate);
    v.feed(events, trust_root, signers);
    v.finish()
}

/// Foreign identities (other than the chain's own) whose states the events'
/// checks need: signers of foreign-signed events, endorsers, name owners.
pub fn foreign_signers(aggregate: &Aggregate, events: &[StoredEvent]) -> Vec<String> {
    let mut out = Vec::new();
    for stored in events {
        if let Ok(ev) = stored.verify() {
            let mut push = |id: &str| {
                if !out.iter().any(|o| o == id) {
                    out.push(id.to_string());
                }
            };
            if ev.actor() != aggregate.id || aggregate.kind != AggregateKind::Agent {
                push(ev.actor());
            }
            match &ev.payload {
                proto::payload::Kind::AgentRegistered(r) => {
                    if let Some(e) = &r.endorsement {
                        push(&e.operator_id);
                    }
                }
                proto::payload::Kind::NameClaimed(c) => push(&c.agent_id),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{hash_bytes, EventDraft};
    use crate::keys::IdentityKeys;
    use crate::proto::{payload::Kind, SignedEvent};
    use prost::Message;

    /// Builds stored events for a chain as the store would lay them out.
    struct Chain {
        keys: IdentityKeys,
        agg: Aggregate,
        events: Vec<StoredEvent>,
        head: (u64, EventHash),
    }

    impl Chain {
        fn new() -> Self {
            let keys = IdentityKeys::generate();
            let agg = Aggregate::agent(keys.identity_id()).expect("agg");
            let mut c = Chain {
                keys,
                agg,
                events: Vec::new(),
                head: (0, ZERO_HASH),
            };
            let genesis = EventDraft::new(
                c.agg.clone(),
                Kind::AgentRegistered(proto::AgentRegistered {
                    name: "audited".into(),
                    kind: proto::IdentityKind::Agent as i32,
                    signing_key: c.keys.public_key().as_bytes().to_vec(),
                    x25519_key: c.keys.x25519_public().to_vec(),
                    ..Default::default()
                }),
            )
            .sign(&c.keys, &c.agg.id);
            c.push(genesis);
            c
        }

        fn push(&mut self, signed: SignedEvent) {
            let payload = bytes::Bytes::from(signed.encode_to_vec());
            let seq = self.events.len() as u64 + 1;
            let hash = hash_bytes(&payload);
            self.events.push(StoredEvent {
                position: Position::new("AMAI_AGENTS", seq * 10),
                subject: self.agg.subject(),
                published_ms: 1_000 * seq as i64,
                payload,
                hash,
                event_type: None,
            });
            self.head = (self.head.0 + 1, hash);
        }

        fn action(&mut self, keys: &IdentityKeys) -> SignedEvent {
            EventDraft::action(self.agg.clone(), "task.done", "{}")
                .after(self.head.0, self.head.1)
                .sign(keys, &self.agg.id)
        }

        fn verify(&self) -> ChainReport {
            verify_events(&self.agg, &self.events, None, &HashMap::new())
        }
    }

    #[test]
    fn a_valid_chain_verifies_to_its_head() {
        let mut c = Chain::new();
        let keys = c.keys.clone();
        for _ in 0..3 {
            let ev = c.action(&keys);
            c.push(ev);
        }
        let r = c.verify();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.events_checked, 4);
        assert_eq!(r.head_hash, c.head.1);
    }

    fn first_failure(c: &Chain) -> ChainFailure {
        c.verify().failure.expect("a failure")
    }

    #[test]
    fn a_tampered_signature_is_reported_at_its_sequence() {
        let mut c = Chain::new();
        let keys = c.keys.clone();
        let mut ev = c.action(&keys);
        ev.signature[5] ^= 1;
        c.push(ev);
        let f = first_failure(&c);
        assert_eq!(
            (f.kind, f.aggregate_seq, f.position.seq),
            (FailureKind::BadSignature, 2, 20)
        );
    }

    #[test]
    fn a_missing_event_is_a_gap() {
        let mut c = Chain::new();
        let keys = c.keys.clone();
        let skipped = c.action(&keys);
        c.head = (c.head.0 + 1, hash_bytes(&skipped.encode_to_vec()));
        let ev = c.action(&keys);
        c.push(ev);
        let f = first_failure(&c);
        assert_eq!((f.kind, f.aggregate_seq), (FailureKind::Gap, 2));
    }

    #[test]
    fn a_wrong_link_breaks_the_chain() {
        let mut c = Chain::new();
        let keys = c.keys.clone();
        c.head.1 = [3u8; 32];
        let ev = c.action(&keys);
        c.push(ev);
        assert_eq!(first_failure(&c).kind, FailureKind::ChainBroken);
    }

    #[test]
    fn keys_must_be_current_at_their_position() {
        // Signed by a stranger's key.
        let mut c = Chain::new();
        let ev = c.action(&IdentityKeys::generate());
        c.push(ev);
        assert_eq!(first_failure(&c).kind, FailureKind::UnknownKey);

        // Signed by a key rotated out earlier in the chain.
        let mut c = Chain::new();
        let (old, new) = (c.keys.clone(), IdentityKeys::generate());
        let rot = EventDraft::new(
            c.agg.clone(),
            Kind::AgentKeyRotated(proto::AgentKeyRotated {
                new_signing_key: new.public_key().as_bytes().to_vec(),
                new_x25519_key: new.x25519_public().to_vec(),
                reason: "test".into(),
                new_key_proof: new
                    .rotation_proof(&c.agg.to_string(), c.head.0 + 1, &old.public_key())
                    .to_vec(),
            }),
        )
        .after(c.head.0, c.head.1)
        .sign(&old, &c.agg.id);
        c.push(rot);
        let good = c.action(&new);
        c.push(good);
        assert!(c.verify().ok(), "the new key signs after the rotation");
        let stale = c.action(&old);
        c.push(stale);
        let f = first_failure(&c);
        assert_eq!((f.kind, f.aggregate_seq), (FailureKind::RevokedKey, 4));
    }

    #[test]
    fn an_event_of_another_aggregate_is_out_of_place() {
        let mut c = Chain::new();
        let mut other = Chain::new();
        let okeys = other.keys.clone();
        let foreign = other.action(&okeys);
        c.push(foreign);
        assert_eq!(first_failure(&c).kind, FailureKind::WrongAggregate);
    }

    #[test]
    fn garbage_is_malformed_and_stops_the_walk() {
        let mut c = Chain::new();
        c.events.push(StoredEvent {
            position: Position::new("AMAI_AGENTS", 99),
            subject: c.agg.subject(),
            published_ms: 0,
            payload: bytes::Bytes::from_static(b"\xff\xfe"),
            hash: ZERO_HASH,
            event_type: None,
        });
        let keys = c.keys.clone();
        let ev = c.action(&keys);
        c.push(ev);
        let r = c.verify();
        assert_eq!(r.failure.expect("failure").kind, FailureKind::Malformed);
        assert_eq!(r.events_checked, 2, "the walk stops at the first failure");
    }

    #[test]
    fn service_results_need_a_registered_service_signer() {
        let operator = IdentityKeys::generate();
        let service = IdentityKeys::generate();
        let sid = service.identity_id();
        let genesis = EventDraft::new(
            Aggregate::agent(&sid).expect("agg"),
            Kind::AgentRegistered(proto::AgentRegistered {
                name: "svc".into(),
                kind: proto::IdentityKind::Service as i32,
                signing_key: service.public_key().as_bytes().to_vec(),
                x25519_key: service.x25519_public().to_vec(),
                endorsement: Some(proto::Endorsement {
                    operator_id: operator.identity_id(),
                    operator_key: operator.public_key().as_bytes().to_vec(),
                    signature: operator
                        .endorse(&service.public_key(), "service", &["trust".to_string()])
                        .to_vec(),
                    operator_seq: 0,
                    scopes: vec!["trust".into()],
                }),
                ..Default::default()
            }),
        )
        .sign(&service, &sid);
        let verified = crate::envelope::VerifiedEvent::from_signed(genesis).expect("genesis");
        let (state, _) = IdentityState::from_genesis(&verified, 0, Some(&operator.public_key()))
            .expect("service state");

        let trust = Aggregate::new(AggregateKind::Trust, "someone").expect("agg");
        let ev = EventDraft::new(
            trust.clone(),
            Kind::TrustInitialized(proto::TrustInitialized {
                agent_id: "someone".into(),
                score: 60.0,
            }),
        )
        .signer_seq(1)
        .sign(&service, &sid);
        let payload = bytes::Bytes::from(ev.encode_to_vec());
        let stored = vec![StoredEvent {
            position: Position::new("AMAI_TRUST", 1),
            subject: trust.subject(),
            published_ms: 5,
            hash: hash_bytes(&payload),
            payload,
            event_type: None,
        }];

        let signers = HashMap::from([(sid.clone(), state)]);
        assert!(verify_events(&trust, &stored, Some(&operator.public_key()), &signers).ok());
        let unknown = verify_events(
            &trust,
            &stored,
            Some(&operator.public_key()),
            &HashMap::new(),
        );
        assert_eq!(
            unknown.failure.expect("failure").kind,
            FailureKind::UnknownKey
        );
    }
}
