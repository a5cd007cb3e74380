//! Integrity violations: the events a projection did not apply and why
//! ([`ViolationKind`], the projection-side face of the one verification failure
//! enum [`FailureKind`]), how the runner records them in the projection's tree
//! and how read models list and count them.

use amai_bus::identity::Millis;
use amai_bus::proto::ChainFailureKind;
use amai_bus::store::StoredEvent;
use amai_bus::subjects::Aggregate;
use amai_bus::verify::FailureKind;
use amai_bus::{Position, VerifiedEvent};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::keys::{viol_key, META_VIOLATIONS, VIOL_PREFIX};
use super::ProjectionError;
use crate::codec;
use crate::projection::ApplyError;

/// What is wrong with an event that was not applied: it failed THE
/// verification step (with the one failure enum, [`FailureKind`]), or it was
/// valid on its chain and the projection itself refused it. Stored and shown as
/// the failure kind's name, or `rejected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// The event failed verification.
    Failed(FailureKind),
    /// Valid on its chain, but the projection refused it ([`ApplyError`]).
    Rejected,
}

impl ViolationKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Failed(k) => k.as_str(),
            ViolationKind::Rejected => "rejected",
        }
    }

    /// The chain-report failure kind (a projection's own refusal reports as invalid).
    pub fn to_proto(self) -> ChainFailureKind {
        match self {
            ViolationKind::Failed(k) => k.to_proto(),
            ViolationKind::Rejected => ChainFailureKind::Invalid,
        }
    }
}

impl From<FailureKind> for ViolationKind {
    fn from(k: FailureKind) -> Self {
        ViolationKind::Failed(k)
    }
}

impl Serialize for ViolationKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ViolationKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if name == "rejected" {
            return Ok(ViolationKind::Rejected);
        }
        FailureKind::parse(&name)
            .map(ViolationKind::Failed)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown violation kind {name:?}")))
    }
}

impl std::fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event a projection refused to apply, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityViolation {
    /// The stream.
    pub stream: String,
    /// Its stream sequence.
    pub seq: u64,
    /// The aggregate the event named (or the one of its subject if undecodable).
    pub aggregate: String,
    /// The aggregate sequence the event claimed (0 if undecodable).
    pub aggregate_seq: u64,
    /// The event type (empty if undecodable).
    pub event_type: String,
    /// What is wrong.
    pub kind: ViolationKind,
    /// Human detail.
    pub detail: String,
    /// JetStream publish time, unix milliseconds.
    pub published_ms: Millis,
}

impl IntegrityViolation {
    /// The protobuf form.
    pub fn to_proto(&self) -> amai_bus::proto::IntegrityViolation {
        amai_bus::proto::IntegrityViolation {
            position: Some(self.position().into()),
            aggregate: self.aggregate.clone(),
            aggregate_seq: self.aggregate_seq,
            event_type: self.event_type.clone(),
            kind: self.kind.to_proto() as i32,
            detail: self.detail.clone(),
            published_at: Some(prost_types::Timestamp {
                seconds: self.published_ms.div_euclid(1000),
                nanos: (self.published_ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
        }
    }

    /// The stream position of the offending event.
    pub fn position(&self) -> Position {
        Position::new(self.stream.clone(), self.seq)
    }
}

/// Reads a projection tree's violation count (for read models' stats).
pub fn violation_count(tree: &sled::Tree) -> Result<u64, ProjectionError> {
    Ok(codec::read_u64(tree.get(META_VIOLATIONS)?.as_deref()))
}

/// Reads a projection tree's integrity violations, in (stream, sequence) order.
pub fn violations(tree: &sled::Tree) -> Result<Vec<IntegrityViolation>, ProjectionError> {
    let mut out = Vec::new();
    for item in tree.scan_prefix(VIOL_PREFIX) {
        let (_, v) = item?;
        out.push(
            serde_json::from_slice(&v)
                .map_err(|e| ProjectionError::Corrupt(format!("undecodable violation: {e}")))?,
        );
    }
    Ok(out)
}

/// The violation record of `stored` (decoded as `ev` when it got that far).
pub(super) fn violation(
    stored: &StoredEvent,
    ev: Option<&VerifiedEvent>,
    kind: ViolationKind,
    detail: String,
) -> IntegrityViolation {
    let (aggregate, aggregate_seq, event_type) = match ev {
        Some(ev) => (
            ev.aggregate.to_string(),
            ev.aggregate_seq(),
            ev.event_type().to_string(),
        ),
        None => {
            let aggregate = Aggregate::from_subject(&stored.subject)
                .map(|a| a.to_string())
                .unwrap_or_else(|_| stored.subject.clone());
            let seq = amai_bus::store::aggregate_seq_of(stored).unwrap_or(0);
            (
                aggregate,
                seq,
                stored.event_type.clone().unwrap_or_default(),
            )
        }
    };
    IntegrityViolation {
        stream: stored.position.stream.clone(),
        seq: stored.position.seq,
        aggregate,
        aggregate_seq,
        event_type,
        kind,
        detail,
        published_ms: stored.published_ms,
    }
}

/// Records `v` (once: a replayed violation is not counted twice) and bumps the count.
pub(super) fn record_violation(
    tx: &TransactionalTree,
    v: &IntegrityViolation,
) -> Result<(), ConflictableTransactionError<ApplyError>> {
    let k = viol_key(&v.stream, v.seq);
    if tx.get(&k)?.is_some() {
        return Ok(());
    }
    // Invariant: a violation is plain data and always serializes.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    tx.insert(k, bytes)?;
    let count = codec::read_u64(tx.get(META_VIOLATIONS)?.as_deref());
    tx.insert(META_VIOLATIONS, &codec::u64_bytes(count + 1))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_stored_names() {
        let all = FailureKind::ALL
            .into_iter()
            .map(ViolationKind::Failed)
            .chain([ViolationKind::Rejected]);
        for kind in all {
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(
                serde_json::from_str::<ViolationKind>(&json).expect("deserialize"),
                kind
            );
        }
        assert!(serde_json::from_str::<ViolationKind>("\"nonsense\"").is_err());
    }
}
