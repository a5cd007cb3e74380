//! Writing verified batches: chain states, the projection's effects,
//! violations and the stream's checkpoint in one sled transaction
//! ([`Ctx::commit_batch`]), or one transaction per event when the projection
//! refused one ([`Ctx::commit_one`]), so the refusal is recorded alone.

use std::sync::atomic::Ordering;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use tracing::warn;

use super::batch::Step;
use super::keys::ckpt_key;
use super::violation::{record_violation, violation, IntegrityViolation, ViolationKind};
use super::{Ctx, Transient};
use crate::codec;
use crate::projection::ApplyError;

impl Ctx {
    /// Writes verified events (chain states, effects, violations) and the
    /// checkpoint (the last event's sequence) in one sled transaction. Returns
    /// `false`, having written nothing, if a projection's `apply` aborted.
    pub(super) fn commit_batch(&self, stream: &str, steps: &[Step]) -> Result<bool, Transient> {
        let Some(last) = steps.last() else {
            return Ok(true);
        };
        let ckpt = ckpt_key(stream);
        let seq_bytes = codec::u64_bytes(last.seq());
        let r = self.shared.tree.transaction(|tx| {
            for step in steps {
                self.write_step(tx, step)?;
            }
            tx.insert(ckpt.as_slice(), &seq_bytes)?;
            Ok(())
        });
        match r {
            Ok(()) => {
                self.dirty.store(true, Ordering::Release);
                for step in steps {
                    if let Step::Record(v) = step {
                        self.warn_violation(v);
                    }
                }
                Ok(true)
            }
            Err(TransactionError::Abort(_)) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(Transient(format!(
                "sled transaction failed at {}: {e}",
                last.position()
            ))),
        }
    }

    /// Writes one verified event's chain state and effect, or its violation.
    fn write_step(
        &self,
        tx: &TransactionalTree,
        step: &Step,
    ) -> Result<(), ConflictableTransactionError<ApplyError>> {
        match step {
            Step::Apply {
                chain_key,
                chain,
                applied,
            } => {
                tx.insert(chain_key.as_slice(), chain.as_slice())?;
                self.projection.apply(tx, applied)
            }
            Step::Record(v) => record_violation(tx, v),
        }
    }

    /// Writes (applies or records) one verified event with its checkpoint, in
    /// one transaction.
    pub(super) fn commit_one(&self, stream: &str, step: &Step) -> Result<(), Transient> {
        let tree = &self.shared.tree;
        let ckpt = ckpt_key(stream);
        let seq_bytes = codec::u64_bytes(step.seq());
        let write = |tx: &TransactionalTree, step: &Step| {
            self.write_step(tx, step)?;
            tx.insert(ckpt.as_slice(), &seq_bytes)?;
            Ok(())
        };
        let result = match tree.transaction(|tx| write(tx, step)) {
            Err(TransactionError::Abort(e)) => match step {
                Step::Apply {
                    chain_key,
                    chain,
                    applied,
                } => {
                    // The projection refused a valid event: the chain moves on
                    // (the event is valid), the projection's effect does not.
                    let v = violation(
                        &applied.stored,
                        Some(&applied.event),
                        ViolationKind::Rejected,
                        e.to_string(),
                    );
                    tree.transaction(|tx| {
                        tx.insert(chain_key.as_slice(), chain.as_slice())?;
                        record_violation(tx, &v)?;
                        tx.insert(ckpt.as_slice(), &seq_bytes)?;
                        Ok::<_, ConflictableTransactionError<ApplyError>>(())
                    })
                    .map(|_| Some(v))
                }
                Step::Record(_) => Err(TransactionError::Abort(e)),
            },
            other => other.map(|_| match step {
                Step::Apply { .. } => None,
                Step::Record(v) => Some(v.clone()),
            }),
        };
        self.dirty.store(true, Ordering::Release);
        match result {
            Ok(None) => Ok(()),
            Ok(Some(v)) => {
                self.warn_violation(&v);
                Ok(())
            }
            Err(e) => Err(Transient(format!(
                "sled transaction failed at {}: {e}",
                step.position()
            ))),
        }
    }

    fn warn_violation(&self, v: &IntegrityViolation) {
        warn!(
            projection = self.name(), stream = %v.stream, seq = v.seq, aggregate = %v.aggregate, kind = %v.kind,
            "integrity violation: event not applied: {}", v.detail
        );
    }
}
