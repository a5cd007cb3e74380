//! THE verification step. Every place that accepts, folds or judges an event
//! (the store's append and its chain folds, the projection runner, `chain verify`,
//! `VerifyChain`, the SDK's auditor) goes through these functions and reports
//! with the one failure enum, [`FailureKind`]. The write path therefore folds a
//! chain exactly as an auditor does: an event that fails never changes state.
//!
//! The step has three phases, so callers can run the expensive one anywhere:
//!
//! 1. [`verify_stored`]: decode and check the Ed25519 signature against the
//!    carried key, and that the event sits on the subject it names. Independent
//!    of any chain state: run it on all cores ahead of the fold.
//! 2. [`step`]: against the aggregate's [`ChainState`]: contiguous sequence,
//!    `prev_hash` link, and the identity rules (genesis, current key, rotation
//!    proof, revocation, permissions). Returns the state after the event and
//!    what must be checked about a foreign signer.
//! 3. [`resolve`]: the foreign signer's requirement against that signer's state
//!    (causally: at the position of its chain the event cites).

use ed25519_dalek::VerifyingKey;

use crate::envelope::{EnvelopeError, EventHash, VerifiedEvent, ZERO_HASH};
use crate::identity::{self, IdentityState, RuleError, SignerCheck, SignerRequirement};
use crate::proto::ChainFailureKind;
use crate::stored::StoredEvent;
use crate::subjects::AggregateKind;

/// Why an event failed verification. One enum for the store, projections,
/// auditors and the SDK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FailureKind {
    /// Not a decodable, canonically encoded, well-formed event.
    Malformed,
    /// The signature does not verify against the carried key.
    BadSignature,
    /// The event names another aggregate than the subject it is stored on.
    WrongAggregate,
    /// `aggregate_seq` is not the next one.
    Gap,
    /// `prev_hash` is not the previous event's hash.
    ChainBroken,
    /// The key is not the signer's key (at that position).
    UnknownKey,
    /// The key was rotated out, or the identity revoked.
    RevokedKey,
    /// The signer may not append this event here.
    NotPermitted,
    /// The payload breaks a domain rule.
    Invalid,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Malformed,
        FailureKind::BadSignature,
        FailureKind::WrongAggregate,
        FailureKind::Gap,
        FailureKind::ChainBroken,
        FailureKind::UnknownKey,
        FailureKind::RevokedKey,
        FailureKind::NotPermitted,
        FailureKind::Invalid,
    ];

    /// The kind named `name` ([`FailureKind::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Stable snake-case name (stored in projections, shown by the CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Malformed => "malformed",
            FailureKind::BadSignature => "bad_signature",
            FailureKind::WrongAggregate => "wrong_aggregate",
            FailureKind::Gap => "gap",
            FailureKind::ChainBroken => "chain_broken",
            FailureKind::UnknownKey => "unknown_key",
            FailureKind::RevokedKey => "revoked_key",
            FailureKind::NotPermitted => "not_permitted",
            FailureKind::Invalid => "invalid",
        }
    }

    /// The protobuf form.
    pub fn to_proto(self) -> ChainFailureKind {
        match self {
            FailureKind::Malformed => ChainFailureKind::Malformed,
            FailureKind::BadSignature => ChainFailureKind::BadSignature,
            FailureKind::WrongAggregate => ChainFailureKind::WrongAggregate,
            FailureKind::Gap => ChainFailureKind::Gap,
            FailureKind::ChainBroken => ChainFailureKind::ChainBroken,
            FailureKind::UnknownKey => ChainFailureKind::UnknownKey,
            FailureKind::RevokedKey => ChainFailureKind::RevokedKey,
            FailureKind::NotPermitted => ChainFailureKind::NotPermitted,
            FailureKind::Invalid => ChainFailureKind::Invalid,
        }
    }

    /// From the protobuf form (`None` for unspecified).
    pub fn from_proto(kind: ChainFailureKind) -> Option<Self> {
        Some(match kind {
            ChainFailureKind::Unspecified => return None,
            ChainFailureKind::Malformed => FailureKind::Malformed,
            ChainFailureKind::BadSignature => FailureKind::BadSignature,
            ChainFailureKind::WrongAggregate => FailureKind::WrongAggregate,
            ChainFailureKind::Gap => FailureKind::Gap,
            ChainFailureKind::ChainBroken => FailureKind::ChainBroken,
            ChainFailureKind::UnknownKey => FailureKind::UnknownKey,
            ChainFailureKind::RevokedKey => FailureKind::RevokedKey,
            ChainFailureKind::NotPermitted => FailureKind::NotPermitted,
            ChainFailureKind::Invalid => FailureKind::Invalid,
        })
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verification failure: its kind and a human detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What exactly is wrong.
    pub detail: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl From<EnvelopeError> for Failure {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::BadSignature => Failure::new(
                FailureKind::BadSignature,
                "signature does not verify against the carried signer key",
            ),
            EnvelopeError::Malformed(m) => Failure::new(FailureKind::Malformed, m),
        }
    }
}

impl From<RuleError> for Failure {
    fn from(e: RuleError) -> Self {
        let kind = match &e {
            RuleError::Invalid(_) => FailureKind::Invalid,
            RuleError::UnknownKey(_) => FailureKind::UnknownKey,
            RuleError::Revoked(_) => FailureKind::RevokedKey,
            RuleError::NotPermitted(_) => FailureKind::NotPermitted,
        };
        Failure::new(kind, e.to_string())
    }
}

/// What is known of one aggregate's chain after folding its valid events.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainState {
    /// Aggregate sequence of the last valid event (0: empty).
    pub seq: u64,
    /// Its hash (zero: empty).
    pub hash: EventHash,
    /// For agent chains: the identity folded so far.
    pub identity: Option<IdentityState>,
}

impl Default for ChainState {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl ChainState {
    /// The state before the first event.
    pub const EMPTY: ChainState = ChainState {
        seq: 0,
        hash: ZERO_HASH,
        identity: None,
    };
}

/// What [`step`] decided: the state after the event, once `requirement` holds.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The chain state including the event.
    pub next: ChainState,
    /// What must hold of a foreign signer (see [`resolve`]).
    pub requirement: SignerRequirement,
}

/// Phase 1: decode, check the signature, and check the event is stored on the
/// subject and stream its aggregate maps to. Stateless; run it in parallel.
pub fn verify_stored(stored: &StoredEvent) -> Result<VerifiedEvent, Failure> {
    let ev = VerifiedEvent::decode(&stored.payload)?;
    if stored.subject != ev.aggregate.subject()
        || !ev.aggregate.kind.may_be_stored_in(&stored.position.stream)
    {
        return Err(Failure::new(
            FailureKind::WrongAggregate,
            format!(
                "event names {} but is stored on {} in {}",
                ev.aggregate, stored.subject, stored.position.stream
            ),
        ));
    }
    Ok(ev)
}

/// Phase 1 for many events at once, on all cores (rayon): signature checks do
/// not depend on chain state, so they run ahead of the sequential fold.
pub fn verify_all(events: &[StoredEvent]) -> Vec<Result<VerifiedEvent, Failure>> {
    use rayon::prelude::*;
    events.par_iter().map(verify_stored).collect()
}

/// Phase 2: checks `ev` against its aggregate's state: position, link and rules.
/// `published_ms` is recorded in key history for display only; it decides nothing.
pub fn step(
    state: &ChainState,
    ev: &VerifiedEvent,
    published_ms: i64,
    trust_root: Option<&VerifyingKey>,
) -> Result<Pending, Failure> {
    check_position(state, ev)?;
    let mut next = ChainState {
        seq: ev.aggregate_seq(),
        hash: ev.hash,
        identity: None,
    };
    let requirement = if ev.aggregate.kind == AggregateKind::Agent {
        match &state.identity {
            None => {
                let (identity, req) = IdentityState::from_genesis(ev, published_ms, trust_root)?;
                next.identity = Some(identity);
                req
            }
            Some(identity) => {
                let req = identity.check(ev)?;
                let mut folded = identity.clone();
                folded.apply(ev, published_ms);
                next.identity = Some(folded);
                req
            }
        }
    } else {
        identity::check_foreign_aggregate_event(ev, trust_root)?
    };
    Ok(Pending { next, requirement })
}

/// The position part of [`step`]: `ev` must directly follow `state`.
pub fn check_position(state: &ChainState, ev: &VerifiedEvent) -> Result<(), Failure> {
    if ev.aggregate_seq() != state.seq + 1 {
        return Err(Failure::new(
            FailureKind::Gap,
            format!(
                "expected aggregate_seq {}, found {}",
                state.seq + 1,
                ev.aggregate_seq()
            ),
        ));
    }
    if ev.prev_hash() != state.hash {
        return Err(Failure::new(
            FailureKind::ChainBroken,
            format!(
                "prev_hash {} does not match the previous event's hash {}",
                hex::encode(ev.prev_hash()),
                hex::encode(state.hash)
            ),
        ));
    }
    Ok(())
}

/// Phase 3: checks a foreign signer's requirement against its state (`None`
/// when it has no chain). History uses [`SignerCheck::AtPosition`]; the write
/// path [`SignerCheck::Current`] with a state read up to the signer's head.
pub fn resolve(
    requirement: &SignerRequirement,
    signer: Option<&IdentityState>,
    mode: SignerCheck,
) -> Result<(), Failure> {
    Ok(identity::check_requirement(requirement, signer, mode)?)
}

/// Folds the events of one aggregate in order through phases 1 (all events at
/// once, on all cores) and 2 and a resolver for phase 3, stopping at the first
/// failure. Returns the state of
/// the valid prefix and, if any, the index and failure of the first bad event.
pub fn fold<'a, I, R>(
    start: ChainState,
    events: I,
    trust_root: Option<&VerifyingKey>,
    mut resolver: R,
) -> (ChainState, Option<(usize, Failure)>)
where
    I: IntoIterator<Item = &'a StoredEvent>,
    R: FnMut(&SignerRequirement) -> Result<(), Failure>,
{
    let events: Vec<&StoredEvent> = events.into_iter().collect();
    let verified: Vec<Result<VerifiedEvent, Failure>> = {
        use rayon::prelude::*;
        events.par_iter().map(|s| verify_stored(s)).collect()
    };
    let mut state = start;
    for (index, (stored, checked)) in events.iter().zip(verified).enumerate() {
        let result = checked
            .and_then(|ev| step(&state, &ev, stored.published_ms, trust_root))
            .and_then(|p| resolver(&p.requirement).map(|()| p));
        match result {
            Ok(p) => state = p.next,
            Err(f) => return (state, Some((index, f))),
        }
    }
    (state, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EventDraft;
    use crate::keys::IdentityKeys;
    use crate::proto::{self, payload::Kind};
    use crate::stored::Position;
    use crate::subjects::Aggregate;
    use prost::Message;

    fn stored(signed: &proto::SignedEvent, agg: &Aggregate, seq: u64) -> StoredEvent {
        StoredEvent::new(
            Position::new(agg.stream(), seq),
            agg.subject(),
            0,
            bytes::Bytes::from(signed.encode_to_vec()),
            None,
        )
    }

    fn genesis(keys: &IdentityKeys) -> (Aggregate, proto::SignedEvent) {
        let agg = Aggregate::agent(keys.identity_id()).expect("agg");
        let ev = EventDraft::new(
            agg.clone(),
            Kind::AgentRegistered(proto::AgentRegistered {
                name: "alice".into(),
                kind: proto::IdentityKind::Agent as i32,
                signing_key: keys.public_key().as_bytes().to_vec(),
                x25519_key: keys.x25519_public().to_vec(),
                ..Default::default()
            }),
        )
        .sign(keys, &keys.identity_id());
        (agg, ev)
    }

    fn no_foreign(req: &SignerRequirement) -> Result<(), Failure> {
        match req {
            SignerRequirement::None => Ok(()),
            _ => Err(Failure::new(
                FailureKind::UnknownKey,
                "no foreign signers here",
            )),
        }
    }

    #[test]
    fn a_rotation_without_proof_of_possession_changes_nothing() {
        let alice = IdentityKeys::generate();
        let mallory = IdentityKeys::generate();
        let (agg, g) = genesis(&alice);
        let g_stored = stored(&g, &agg, 1);
        let (after_genesis, none) = fold(ChainState::EMPTY, [&g_stored], None, no_foreign);
        assert!(none.is_none());
        // alice tries to rotate to mallory's key, which she does not hold: her
        // proof is signed by her own key instead of the new one.
        let rot = EventDraft::new(
            agg.clone(),
            Kind::AgentKeyRotated(proto::AgentKeyRotated {
                new_signing_key: mallory.public_key().as_bytes().to_vec(),
                new_x25519_key: mallory.x25519_public().to_vec(),
                reason: "x".into(),
                new_key_proof: alice
                    .rotation_proof(&agg.to_string(), 2, &alice.public_key())
                    .to_vec(),
            }),
        )
        .after(after_genesis.seq, after_genesis.hash)
        .sign(&alice, &alice.identity_id());
        let r_stored = stored(&rot, &agg, 2);
        let (state, failure) = fold(after_genesis.clone(), [&r_stored], None, no_foreign);
        assert_eq!(failure.expect("refused").1.kind, FailureKind::Invalid);
        assert_eq!(state, after_genesis, "a refused event never changes state");
    }

    #[test]
    fn a_rotation_with_proof_of_possession_moves_the_key() {
        let alice = IdentityKeys::generate();
        let next = IdentityKeys::generate();
        let (agg, g) = genesis(&alice);
        let g_stored = stored(&g, &agg, 1);
        let (s1, _) = fold(ChainState::EMPTY, [&g_stored], None, no_foreign);
        let rot = EventDraft::new(
            agg.clone(),
            Kind::AgentKeyRotated(proto::AgentKeyRotated {
                new_signing_key: next.public_key().as_bytes().to_vec(),
                new_x25519_key: next.x25519_public().to_vec(),
                reason: "x".into(),
                new_key_proof: next
                    .rotation_proof(&agg.to_string(), 2, &alice.public_key())
                    .to_vec(),
            }),
        )
        .after(s1.seq, s1.hash)
        .sign(&alice, &alice.identity_id());
        let r_stored = stored(&rot, &agg, 2);
        let (s2, failure) = fold(s1, [&r_stored], None, no_foreign);
        assert!(failure.is_none(), "{failure:?}");
        let id = s2.identity.expect("identity");
        assert_eq!(id.current_key().signing_key, next.public_key());
    }

    #[test]
    fn unknown_fields_in_a_signed_body_are_malformed() {
        let alice = IdentityKeys::generate();
        let (agg, g) = genesis(&alice);
        // Append an unknown field (number 99, varint 1) to the signed body and
        // sign it properly: the signature holds, the event must still be refused.
        let mut body = g.body.clone();
        body.extend_from_slice(&[0x98, 0x06, 0x01]);
        let signed = crate::envelope::sign_body(&alice, body);
        let s = stored(&signed, &agg, 1);
        let failure = verify_stored(&s).expect_err("refused");
        assert_eq!(failure.kind, FailureKind::Malformed);
    }

    #[test]
    fn a_non_canonical_signed_event_is_malformed() {
        let alice = IdentityKeys::generate();
        let (agg, g) = genesis(&alice);
        let mut bytes = g.encode_to_vec();
        bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
        let s = StoredEvent::new(
            Position::new(agg.stream(), 1),
            agg.subject(),
            0,
            bytes::Bytes::from(bytes),
            None,
        );
        assert_eq!(
            verify_stored(&s).expect_err("refused").kind,
            FailureKind::Malformed
        );
    }

    #[test]
    fn the_hash_is_over_the_stored_bytes() {
        let alice = IdentityKeys::generate();
        let (agg, g) = genesis(&alice);
        let s = stored(&g, &agg, 1);
        let ev = verify_stored(&s).expect("valid");
        assert_eq!(ev.hash, s.hash);
        assert_eq!(ev.hash, crate::envelope::hash_bytes(&s.payload));
    }
}
