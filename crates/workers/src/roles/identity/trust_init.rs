//! The identity role's reactor: every registration gets its initial trust score.
//!
//! For each `agent.registered` on AMAI_AGENTS it appends `trust.initialized`
//! (score [`INITIAL_TRUST_SCORE`]) at seq 1 of `trust/<agent_id>`, signed by the
//! identity service and caused by the genesis. The decision is "the trust chain
//! is empty"; seq 1 is claimed with expected-last-subject-sequence 0, so with any
//! number of instances, redeliveries or crashes exactly one exists per agent.

use amai_bus::consumer::WorkConsumerConfig;
use amai_bus::proto::{self, payload::Kind};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventStore, VerifiedEvent};

use crate::reactor::{PlannedOutput, ReactError, ReactFuture, Reactor};

/// The score every new identity starts with.
pub const INITIAL_TRUST_SCORE: f64 = 60.0;

/// Appends `trust.initialized` for each registration.
#[derive(Debug, Default)]
pub struct TrustInitializer;

impl Reactor for TrustInitializer {
    fn role(&self) -> &'static str {
        super::NAME
    }

    fn subscription(&self) -> WorkConsumerConfig {
        WorkConsumerConfig::new(AggregateKind::Agent.stream(), "identity-trust-init")
            .filter_subject(AggregateKind::Agent.stream_subject())
    }

    fn react<'a>(&'a self, store: &'a EventStore, input: &'a VerifiedEvent) -> ReactFuture<'a> {
        Box::pin(async move {
            let Kind::AgentRegistered(_) = &input.payload else {
                return Ok(Vec::new());
            };
            let agent_id = input.aggregate.id.clone();
            let trust = Aggregate::new(AggregateKind::Trust, &agent_id)
                .map_err(|e| ReactError::Poison(e.to_string()))?;
            let head = store
                .chain_head(&trust)
                .await
                .map_err(|e| ReactError::Transient(e.to_string()))?;
            if head.aggregate_seq > 0 {
                // Already initialised (by another instance, or before a crash).
                return Ok(Vec::new());
            }
            Ok(vec![PlannedOutput {
                aggregate: trust,
                payload: Kind::TrustInitialized(proto::TrustInitialized {
                    agent_id,
                    score: INITIAL_TRUST_SCORE,
                }),
                head_seq: head.aggregate_seq,
                head_hash: head.hash,
                after_previous: false,
                slot: None,
            }])
        })
    }
}
