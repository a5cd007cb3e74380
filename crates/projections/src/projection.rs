//! The [`Projection`] trait and the [`AppliedEvent`] a projection is fed.
//!
//! A projection is a deterministic fold of verified events into one sled tree.
//! The runner calls [`Projection::apply`] inside the sled transaction that also
//! advances the checkpoint, so whatever `apply` writes becomes durable together
//! with the fact that the event was consumed — or not at all.

use amai_bus::identity::{IdentityState, Millis};
use amai_bus::store::StoredEvent;
use amai_bus::{Position, VerifiedEvent};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

/// Why a projection could not apply a (cryptographically valid) event.
///
/// Returned through `ConflictableTransactionError::Abort`: the transaction is
/// rolled back, the runner records an integrity violation of kind
/// [`crate::ViolationKind::Rejected`] and moves on, so one bad event never wedges
/// a projection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The event is valid on its chain but makes no sense to this projection.
    #[error("rejected by the projection: {0}")]
    Rejected(String),
    /// The projection's own state could not be decoded.
    #[error("corrupt projection state: {0}")]
    Corrupt(String),
}

/// What [`Projection::apply`] returns inside its transaction.
pub type ApplyResult<T> = Result<T, ConflictableTransactionError<ApplyError>>;

impl ApplyError {
    /// Aborts the transaction: the event breaks a rule of the projection
    /// (recorded as an integrity violation; nothing it would write is kept).
    pub fn rejected(msg: impl Into<String>) -> ConflictableTransactionError<ApplyError> {
        ConflictableTransactionError::Abort(ApplyError::Rejected(msg.into()))
    }

    /// Aborts the transaction: the projection's own state did not decode.
    pub fn corrupt(msg: impl std::fmt::Display) -> ConflictableTransactionError<ApplyError> {
        ConflictableTransactionError::Abort(ApplyError::Corrupt(msg.to_string()))
    }
}

/// An event that passed every check, with where it is stored.
#[derive(Clone, Debug)]
pub struct AppliedEvent {
    /// The decoded, signature-checked event.
    pub event: VerifiedEvent,
    /// Stream metadata: position, subject, publish time and the stored bytes.
    pub stored: StoredEvent,
    /// For events of an identity chain (`agent/<id>`): the identity as folded up
    /// to and including this event. `None` for other aggregates.
    pub identity: Option<IdentityState>,
}

impl AppliedEvent {
    /// Stream and sequence of the event.
    pub fn position(&self) -> &Position {
        &self.stored.position
    }

    /// JetStream's publish time, unix milliseconds.
    pub fn published_ms(&self) -> Millis {
        self.stored.published_ms
    }

    /// The subject the event is stored on.
    pub fn subject(&self) -> &str {
        &self.stored.subject
    }
}

/// A read model built from verified events.
///
/// Implementations must be deterministic (the same events give the same tree) and
/// must only write keys that do not start with `0x00` (reserved for the runner).
/// `apply` may be retried by sled on a transaction conflict, so it must not have
/// side effects outside the transactional tree.
pub trait Projection: Send + Sync + 'static {
    /// The projection's name; also the name of its sled tree (e.g. `"identity"`).
    fn name(&self) -> &'static str;
    /// The schema version. Changing it makes the next start clear the tree and
    /// rebuild from stream sequence 1.
    fn version(&self) -> u32;
    /// The streams consumed, e.g. `&["AMAI_AGENTS", "AMAI_NAMES", "AMAI_TRUST"]`.
    fn streams(&self) -> &'static [&'static str];
    /// Applies one verified event.
    fn apply(
        &self,
        tx: &TransactionalTree,
        event: &AppliedEvent,
    ) -> Result<(), ConflictableTransactionError<ApplyError>>;
}
