//! # amai-bus
//!
//! Amai's event model on NATS JetStream. This crate owns:
//!
//! - [`envelope`]: building, signing, decoding and verifying events
//!   (`EventBody` carried verbatim inside `SignedEvent`, Ed25519 over PAE, SHA-256 hashes);
//! - [`pae`]: the DSSE-style pre-authentication encoding and its domain tags;
//! - [`keys`]: identity key pairs (Ed25519 + X25519), key files, identity ids, `did:key`;
//! - [`seal`]: sealing message content to a recipient's X25519 key;
//! - [`subjects`]: aggregates, subjects, names and their validation;
//! - [`streams`]: the stream specs, created or updated idempotently;
//! - [`identity`]: an identity's key history folded from its chain;
//! - [`chain`]: verification of a whole chain with a precise first-failure report;
//! - [`store`]: [`EventStore`], the one way events get appended (optimistic
//!   concurrency, deduplication, key checks) and read back;
//! - [`consumer`]: shared durable pull consumers and ordered replays;
//! - [`blob`]: the SHA-256 keyed blob store on a JetStream object store;
//! - [`trace`]: W3C trace context in NATS headers.
#![warn(missing_docs)]

pub mod blob;
pub mod chain;
pub mod consumer;
pub mod envelope;
pub mod identity;
pub mod keys;
pub mod pae;
pub mod query;
pub mod seal;
pub mod store;
pub mod streams;
pub mod subjects;
pub mod trace;

pub use amai_proto::v1 as proto;
pub use envelope::{EventDraft, EventHash, VerifiedEvent, ZERO_HASH};
pub use keys::{IdentityId, IdentityKeys};
pub use store::{
    AppendError, AppendErrorKind, AppendOutcome, ChainHeadInfo, EventStore, EventStoreConfig,
};
pub use subjects::Aggregate;

/// A position in a JetStream stream: the consistency token every append returns.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    /// Stream name, e.g. `AMAI_AGENTS`.
    pub stream: String,
    /// Stream sequence (1-based).
    pub seq: u64,
}

impl Position {
    /// Builds a position.
    pub fn new(stream: impl Into<String>, seq: u64) -> Self {
        Self {
            stream: stream.into(),
            seq,
        }
    }
}

impl From<Position> for proto::Position {
    fn from(p: Position) -> Self {
        proto::Position {
            stream: p.stream,
            seq: p.seq,
        }
    }
}

impl From<proto::Position> for Position {
    fn from(p: proto::Position) -> Self {
        Position {
            stream: p.stream,
            seq: p.seq,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.stream, self.seq)
    }
}
