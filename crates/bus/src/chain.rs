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
                Some(s) => s.check(&ev, Some(stored.published_ms)),
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
