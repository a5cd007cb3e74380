//! The trust publisher: the role's reactor, on a shared durable consumer of the
//! trust feed. For feed event *n* it waits until this instance's projection has
//! folded *n*, then appends the trust events the fold planned for *n*, each at
//! its planned slot ([`PlannedOutput::in_slot`]).
//!
//! Instances share the feed through the durable consumer; the slots keep the
//! chains in the fold's order whatever instance appends first (an output
//! whose previous slot is still empty is handed back and retried shortly), and
//! a slot that already holds the planned event counts as applied, so a
//! redelivery or a second instance never appends an adjustment twice.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use amai_bus::consumer::WorkConsumerConfig;
use amai_bus::streams::TRUST_FEED_STREAM;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventStore, Position, VerifiedEvent};
use amai_projections::ProjectionHandle;

use super::model::delta_payload;
use super::read::TrustReadModel;
use crate::reactor::{PlannedOutput, ReactError, ReactFuture, Reactor, ReactorOptions};

/// The publisher's durable consumer.
pub const PUBLISHER_DURABLE: &str = "trust-publisher";

/// Redelivery delays of a feed event whose outputs wait for an earlier slot.
const REDELIVERY: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// The projection handle, set once the runtime has started the projection.
pub(crate) type ProjectionSlot = Arc<OnceLock<ProjectionHandle>>;

/// Appends what the trust projection planned.
#[derive(Clone)]
pub struct TrustPublisher {
    pub(crate) projection: ProjectionSlot,
    pub(crate) concurrency: usize,
    pub(crate) projection_wait: Duration,
}

impl std::fmt::Debug for TrustPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustPublisher")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl Reactor for TrustPublisher {
    fn role(&self) -> &'static str {
        super::NAME
    }

    fn subscription(&self) -> WorkConsumerConfig {
        WorkConsumerConfig::new(TRUST_FEED_STREAM, PUBLISHER_DURABLE)
    }

    fn react<'a>(&'a self, _store: &'a EventStore, _input: &'a VerifiedEvent) -> ReactFuture<'a> {
        Box::pin(async {
            Err(ReactError::Transient(
                "the trust publisher needs the input's feed position".into(),
            ))
        })
    }

    fn react_at<'a>(
        &'a self,
        _store: &'a EventStore,
        _input: &'a VerifiedEvent,
        stream_seq: u64,
    ) -> ReactFuture<'a> {
        Box::pin(async move {
            let projection = self.projection.get().ok_or_else(|| {
                ReactError::Transient("the trust projection is not started yet".into())
            })?;
            projection
                .wait_for(
                    &Position {
                        stream: TRUST_FEED_STREAM.to_string(),
                        seq: stream_seq,
                    },
                    self.projection_wait,
                )
                .await
                .map_err(|e| ReactError::Transient(format!("trust projection behind: {e}")))?;
            let model = TrustReadModel::new(projection.tree().clone());
            let planned = model
                .planned(stream_seq)
                .map_err(|e| ReactError::Poison(e.to_string()))?;
            planned
                .into_iter()
                .map(|p| {
                    let aggregate = Aggregate::new(AggregateKind::Trust, &p.agent)
                        .map_err(|e| ReactError::Poison(e.to_string()))?;
                    let kind = model
                        .delta_at(&p.agent, p.seq)
                        .map_err(|e| ReactError::Poison(e.to_string()))?
                        .as_ref()
                        .and_then(delta_payload)
                        .ok_or_else(|| {
                            ReactError::Poison(format!(
                                "the plan names slot {} of {} but the projection holds no delta there",
                                p.seq, aggregate
                            ))
                        })?;
                    Ok(PlannedOutput::in_slot(aggregate, kind, p.seq))
                })
                .collect()
        })
    }

    fn options(&self, base: ReactorOptions) -> ReactorOptions {
        base.concurrency(self.concurrency)
            .redelivery(REDELIVERY.to_vec())
    }
}
