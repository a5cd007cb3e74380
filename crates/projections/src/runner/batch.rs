//! One batch of a stream's replay: the events read without waiting
//! ([`Batch`]), their verification in order against the chain states the batch
//! itself produces ([`Overlay`]), and what each verdict means for the tree
//! ([`Step`]). [`Ctx::handle_batch`] drives a batch from verification
//! ([`super::verify`]) to its commit ([`super::commit`]).

use std::collections::HashMap;

use amai_bus::identity::IdentityState;
use amai_bus::store::StoredEvent;
use amai_bus::{Position, VerifiedEvent};

use super::handle::StreamState;
use super::keys::chain_key;
use super::verify::verify_signatures;
use super::violation::IntegrityViolation;
use super::{Ctx, Transient};
use crate::codec::{ChainState, StoredIdentity};
use crate::projection::AppliedEvent;

/// At most this many events are verified and written in one transaction.
const MAX_BATCH: usize = 64;

/// The outcome of checking one event.
pub(super) enum Verdict {
    Valid {
        event: Box<VerifiedEvent>,
        identity: Option<IdentityState>,
    },
    Invalid(IntegrityViolation),
}

/// One verified event, ready to be written: what [`Verdict`] means for the tree.
pub(super) enum Step {
    /// Valid: store the aggregate's new chain state and apply the effect.
    Apply {
        /// `\0chain/<aggregate>`.
        chain_key: Vec<u8>,
        /// The encoded [`ChainState`] after this event.
        chain: Vec<u8>,
        applied: Box<AppliedEvent>,
    },
    /// Invalid: record the violation (the chain state does not move).
    Record(IntegrityViolation),
}

impl Step {
    pub(super) fn new(stored: StoredEvent, verdict: Verdict) -> Self {
        match verdict {
            Verdict::Valid { event, identity } => Step::Apply {
                chain_key: chain_key(&event.aggregate.to_string()),
                chain: ChainState {
                    seq: event.aggregate_seq(),
                    hash: event.hash,
                    identity: identity.as_ref().map(StoredIdentity::from_state),
                }
                .encode(),
                applied: Box::new(AppliedEvent {
                    event: *event,
                    stored,
                    identity,
                }),
            },
            Verdict::Invalid(v) => Step::Record(v),
        }
    }

    pub(super) fn position(&self) -> Position {
        match self {
            Step::Apply { applied, .. } => applied.stored.position.clone(),
            Step::Record(v) => v.position(),
        }
    }

    pub(super) fn seq(&self) -> u64 {
        match self {
            Step::Apply { applied, .. } => applied.stored.position.seq,
            Step::Record(v) => v.seq,
        }
    }
}

/// Consecutive events of one stream that were available without waiting (the
/// first one awaited, then whatever the replay had buffered), with the replay's
/// `pending` count at each.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) events: Vec<(StoredEvent, u64)>,
    /// The replay said nothing more was pending: do not read further.
    caught_up: bool,
}

impl Batch {
    /// Adds a replayed event, unless it was already handled (`seq <= handled`).
    pub(super) fn push(&mut self, (stored, pending): (StoredEvent, u64), handled: u64) {
        self.caught_up = pending == 0;
        let after = self.last_seq().unwrap_or(handled);
        if stored.position.seq > after {
            self.events.push((stored, pending));
        }
    }

    /// Nothing more is read into this batch.
    pub(super) fn is_complete(&self) -> bool {
        self.caught_up || self.events.len() >= MAX_BATCH
    }

    pub(super) fn last_seq(&self) -> Option<u64> {
        self.events.last().map(|(s, _)| s.position.seq)
    }
}

/// Chain states (encoded, keyed by aggregate) written by the earlier events of
/// the batch being verified, which are not in the tree yet: event k+1 of an
/// aggregate is checked against event k's state, exactly as if k had been
/// committed on its own.
#[derive(Default)]
pub(super) struct Overlay(pub(super) HashMap<String, Vec<u8>>);

impl Overlay {
    pub(super) fn record(&mut self, step: &Step) {
        if let Step::Apply { chain, applied, .. } = step {
            self.0
                .insert(applied.event.aggregate.to_string(), chain.clone());
        }
    }
}

impl Ctx {
    /// Verifies a batch in order (each event against the chain states left by
    /// the previous ones, see [`Overlay`]), writes it in one transaction
    /// ([`Self::commit_batch`]), then publishes the position. If a projection's
    /// `apply` aborts, nothing of the batch is written and its events are written
    /// one transaction each instead ([`Self::commit_one`], today's per-event
    /// path): the refused event becomes a `Rejected` violation, the others apply.
    ///
    /// If verifying an event fails transiently, the events verified before it
    /// are written (and published) and the error is returned.
    pub(super) async fn handle_batch(
        &self,
        stream: &str,
        st: &StreamState,
        last: u64,
        batch: Batch,
    ) -> Result<(), Transient> {
        let mut overlay = Overlay::default();
        let mut steps = Vec::with_capacity(batch.events.len());
        let mut pending = u64::MAX;
        let mut failed = None;
        let checked = verify_signatures(&batch.events).await?;
        for ((stored, p), sig) in batch.events.into_iter().zip(checked) {
            match self.verify(&stored, sig, &overlay).await {
                Ok(verdict) => {
                    let step = Step::new(stored, verdict);
                    overlay.record(&step);
                    steps.push(step);
                    pending = p;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(seq) = steps.last().map(Step::seq) {
            if !self.commit_batch(stream, &steps)? {
                for step in &steps {
                    self.commit_one(stream, step)?;
                    st.position.send_replace(step.seq());
                }
            }
            st.position.send_replace(seq);
            if pending == 0 || seq >= last {
                st.caught_up.send_replace(true);
            }
        }
        failed.map_or(Ok(()), Err)
    }
}
