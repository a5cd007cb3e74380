//! # amai-bus
//!
//! Amai's event model on NATS JetStream. The pure domain (envelope, keys,
//! identity rules, THE verification step) lives in `amai-core` and is re-exported
//! here under the same module names. This crate owns what needs NATS:
//!
//! - [`streams`]: the stream specs, created or updated idempotently;
//! - [`chain`]: reading a whole chain and verifying it with the core's step;
//! - [`store`]: [`EventStore`], the one way events get appended (optimistic
//!   concurrency, deduplication, key checks) and read back;
//! - [`fold`]: chains folded through the core's verification step, cached;
//! - [`reads`]: heads, events and chain pages read with `STREAM.MSG.GET`;
//! - [`consumer`]: shared durable pull consumers and ordered replays;
//! - [`blob`]: the SHA-256 keyed blob store on a JetStream object store;
//! - [`trace`]: W3C trace context in NATS headers.
#![warn(missing_docs)]

pub mod blob;
pub mod chain;
pub mod consumer;
pub mod fold;
pub mod query;
pub mod reads;
pub mod store;
pub mod streams;
pub mod trace;

pub use amai_core::{
    envelope, identity, jail, keys, llm, pae, read_grant, request, seal, subjects, verify,
};
pub use amai_core::{
    proto, Aggregate, EventDraft, EventHash, IdentityId, IdentityKeys, Position, StoredEvent,
    VerifiedEvent, ZERO_HASH,
};
pub use store::{
    AppendError, AppendErrorKind, AppendOutcome, ChainHeadInfo, EventStore, EventStoreConfig,
};
