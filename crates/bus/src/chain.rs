//! Verification of a whole chain, as an auditor does it: every signature, every
//! hash link, contiguous sequences, and the validity of each signing key at the
//! time of signing. The report names the first failure precisely.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use crate::envelope::{EnvelopeError, EventHash, ZERO_HASH};
use crate::identity::{self, IdentityState, RuleError, SignerRequirement};
use crate::proto::{self, ChainFailureKind};
use crate::store::{EventStore, ReadError, StoredEvent};
use crate::subjects::{Aggregate, AggregateKind};
use crate::Position;

/// The first thing wrong with a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainFailure {
    /// Aggregate sequence where it failed (expected sequence for gaps).
    pub aggregate_seq: u64,
    /// Stream position of the offending event.
    pub position: Position,
    /// What kind of failure.
    pub kind: ChainFailureKind,
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
                kind: f.kind as i32,
                detail: f.detail.clone(),
            }),
        }
    }
}

fn rule_kind(e: &RuleError) -> ChainFailureKind {
    match e {
        RuleError::UnknownKey(_) => ChainFailureKind::UnknownKey,
        RuleError::Revoked(_) => ChainFailureKind::RevokedKey,
        RuleError::Invalid(_) | RuleError::NotPermitted(_) => ChainFailureKind::Malformed,
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
    let mut report = ChainReport {
        aggregate: aggregate.to_string(),
        events_checked: 0,
        head_hash: ZERO_HASH,
        failure: None,
    };
    let mut identity: Option<IdentityState> = None;
    for (index, stored) in events.iter().enumerate() {
        let expected_seq = index as u64 + 1;
        report.events_checked += 1;
        let fail = |kind: ChainFailureKind, detail: String| ChainFailure {
            aggregate_seq: expected_seq,
            position: stored.position.clone(),
            kind,
            detail,
        };
        let ev = match stored.verify() {
            Ok(ev) => ev,
            Err(EnvelopeError::BadSignature) => {
                report.failure = Some(fail(
                    ChainFailureKind::BadSignature,
                    "signature does not verify".into(),
                ));
                return report;
            }
            Err(e) => {
                report.failure = Some(fail(ChainFailureKind::Malformed, e.to_string()));
                return report;
            }
        };
        if &ev.aggregate != aggregate || stored.subject != aggregate.subject() {
            report.failure = Some(fail(
                ChainFailureKind::WrongAggregate,
                format!(
                    "event names {} but is stored on {}",
                    ev.aggregate, stored.subject
                ),
            ));
            return report;
        }
        if ev.aggregate_seq() != expected_seq {
            report.failure = Some(fail(
                ChainFailureKind::Gap,
                format!(
                    "expected aggregate_seq {expected_seq}, found {}",
                    ev.aggregate_seq()
                ),
            ));
            return report;
        }
        if ev.prev_hash() != report.head_hash {
            report.failure = Some(fail(
                ChainFailureKind::ChainBroken,
                format!(
                    "prev_hash {} does not match the previous event's hash {}",
                    hex::encode(ev.prev_hash()),
                    hex::encode(report.head_hash)
                ),
            ));
            return report;
        }
        let requirement = if aggregate.kind == AggregateKind::Agent {
            match identity.as_mut() {
                None => match IdentityState::from_genesis(&ev, stored.published_ms, trust_root) {
                    Ok((s, req)) => {
                        identity = Some(s);
                        Ok(req)
                    }
                    Err(e) => Err(e),
                },
                Some(s) => s.check(&ev),
            }
        } else {
            identity::check_foreign_aggregate_event(&ev)
        };
        let checked = requirement.and_then(|req| match req {
            SignerRequirement::None => Ok(()),
            SignerRequirement::Identity { actor, key, kinds } => match signers.get(&actor) {
                Some(s) => identity::check_signer(s, &key, &kinds, Some(stored.published_ms)),
                None => Err(RuleError::UnknownKey(format!(
                    "signer {actor} is not a registered identity"
                ))),
            },
            SignerRequirement::Endorser { operator_id, key } => match signers.get(&operator_id) {
                Some(s) => identity::check_signer(
                    s,
                    &key,
                    &[proto::IdentityKind::Operator],
                    Some(stored.published_ms),
                ),
                None => Err(RuleError::UnknownKey(format!(
                    "endorser {operator_id} is not a registered identity"
                ))),
            },
        });
        if let Err(e) = checked {
            report.failure = Some(fail(rule_kind(&e), e.to_string()));
            return report;
        }
        if aggregate.kind == AggregateKind::Agent && ev.aggregate_seq() > 1 {
            if let Some(s) = identity.as_mut() {
                s.apply(&ev, stored.published_ms);
            }
        }
        report.head_hash = ev.hash;
    }
    report
}

/// Foreign signers (other than the chain's own identity) the events need.
fn foreign_signers(aggregate: &Aggregate, events: &[StoredEvent]) -> Vec<String> {
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
            if let proto::payload::Kind::AgentRegistered(r) = &ev.payload {
                if let Some(e) = &r.endorsement {
                    push(&e.operator_id);
                }
            }
        }
    }
    out
}

/// Reads and verifies a whole chain from the store.
pub async fn verify_chain(
    store: &EventStore,
    aggregate: &Aggregate,
) -> Result<ChainReport, ReadError> {
    let head = store.chain_head(aggregate).await?;
    if head.stream_seq == 0 {
        return Err(ReadError::NotFound(format!("{aggregate} has no events")));
    }
    let events = store.read_subject(aggregate, 1, head.stream_seq).await?;
    let mut signers = HashMap::new();
    for id in foreign_signers(aggregate, &events) {
        if crate::subjects::validate_id(&id).is_err() {
            continue;
        }
        match store.identity_state(&id).await {
            Ok(s) => {
                signers.insert(id, s);
            }
            Err(ReadError::Unavailable(m)) => return Err(ReadError::Unavailable(m)),
            Err(_) => {}
        }
    }
    Ok(verify_events(
        aggregate,
        &events,
        store.config().get_trust_root(),
        &signers,
    ))
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
            (ChainFailureKind::BadSignature, 2, 20)
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
        assert_eq!((f.kind, f.aggregate_seq), (ChainFailureKind::Gap, 2));
    }

    #[test]
    fn a_wrong_link_breaks_the_chain() {
        let mut c = Chain::new();
        let keys = c.keys.clone();
        c.head.1 = [3u8; 32];
        let ev = c.action(&keys);
        c.push(ev);
        assert_eq!(first_failure(&c).kind, ChainFailureKind::ChainBroken);
    }

    #[test]
    fn keys_must_be_current_at_their_position() {
        // Signed by a stranger's key.
        let mut c = Chain::new();
        let ev = c.action(&IdentityKeys::generate());
        c.push(ev);
        assert_eq!(first_failure(&c).kind, ChainFailureKind::UnknownKey);

        // Signed by a key rotated out earlier in the chain.
        let mut c = Chain::new();
        let (old, new) = (c.keys.clone(), IdentityKeys::generate());
        let rot = EventDraft::new(
            c.agg.clone(),
            Kind::AgentKeyRotated(proto::AgentKeyRotated {
                new_signing_key: new.public_key().as_bytes().to_vec(),
                new_x25519_key: new.x25519_public().to_vec(),
                reason: "test".into(),
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
        assert_eq!((f.kind, f.aggregate_seq), (ChainFailureKind::RevokedKey, 4));
    }

    #[test]
    fn an_event_of_another_aggregate_is_out_of_place() {
        let mut c = Chain::new();
        let mut other = Chain::new();
        let okeys = other.keys.clone();
        let foreign = other.action(&okeys);
        c.push(foreign);
        assert_eq!(first_failure(&c).kind, ChainFailureKind::WrongAggregate);
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
        assert_eq!(
            r.failure.expect("failure").kind,
            ChainFailureKind::Malformed
        );
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
                    signature: operator.endorse(&service.public_key(), "service").to_vec(),
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
            ChainFailureKind::UnknownKey
        );
    }
}
