//! # amai-projections
//!
//! The projection engine and Amai's read models.
//!
//! - [`projection`]: the [`Projection`] trait a read model implements, and the
//!   [`AppliedEvent`] it is fed;
//! - [`runner`]: the [`ProjectionRunner`], which replays the projection's streams
//!   from its checkpoints, **verifies** every event (signature, hash link,
//!   contiguous sequence, key validity), applies valid events and advances the
//!   checkpoint in the same sled transaction (exactly-once effect across
//!   crashes), records invalid ones as [`IntegrityViolation`]s, and answers
//!   `min_position` consistency waits; [`ProjectionDigest`] names a
//!   projection's whole state in one SHA-256 (`runner::digest`);
//! - [`identity_model`]: the identity read model (identities, key history,
//!   names, inboxes, stats) and its query API.
//!
//! ## Storage layout
//!
//! Every projection owns exactly one sled tree, named after it. Keys starting with
//! the byte `0x00` ([`runner::RESERVED_PREFIX`]) belong to the runner: the
//! projection version, one checkpoint per stream, the verification state of every
//! aggregate (sequence, hash and, for identity chains, the folded key history)
//! and the integrity violations. A projection must only write keys that do not
//! start with `0x00`.
#![warn(missing_docs)]

mod codec;
pub mod identity_model;
pub mod projection;
pub mod runner;

pub use identity_model::{IdentityProjection, IdentityReadModel, ReadModelError};
pub use projection::{AppliedEvent, ApplyError, ApplyResult, Projection};
pub use runner::{
    rebuild_projection, IntegrityViolation, ProjectionDigest, ProjectionError, ProjectionHandle,
    ProjectionRunner, ViolationKind, WaitError,
};
