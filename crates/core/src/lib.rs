//! # amai-core
//!
//! Amai's pure domain, with no NATS and no async runtime: what the SDK, auditors and
//! third-party Rust code link to check Amai's events themselves.
//!
//! - [`envelope`]: building, signing, decoding and verifying events
//!   (`EventBody` carried verbatim inside `SignedEvent`, Ed25519 over PAE, SHA-256
//!   over the stored bytes);
//! - [`pae`]: the DSSE-style pre-authentication encoding and its domain tags;
//! - [`keys`]: identity key pairs (Ed25519 + X25519), key files, identity ids, `did:key`;
//! - [`seal`]: sender-authenticated sealed messages bound to sender, recipient and event;
//! - [`subjects`]: aggregates, subjects, names and their validation;
//! - [`identity`]: the identity rules and an identity's key history;
//! - [`verify`]: THE per-event verification step and its one failure-kind enum;
//! - [`chain`]: whole-chain verification reports built on that step;
//! - [`stored`]: [`StoredEvent`] (an event exactly as stored) and [`Position`];
//! - [`request`]: the gateway request-signature format;
//! - [`read_grant`]: operator grants that let a reader identity read streams;
//! - [`llm`]: LLM session ids (derived from the opening action) and session key hashes;
//! - [`jail`]: jail ids (derived from the `jail.requested` action).
#![warn(missing_docs)]

pub mod chain;
pub mod envelope;
pub mod identity;
pub mod jail;
pub mod keys;
pub mod llm;
pub mod pae;
pub mod read_grant;
pub mod request;
pub mod seal;
pub mod stored;
pub mod subjects;
pub mod verify;

pub use amai_proto::v1 as proto;
pub use envelope::{EventDraft, EventHash, VerifiedEvent, ZERO_HASH};
pub use keys::{IdentityId, IdentityKeys};
pub use stored::{Position, StoredEvent};
pub use subjects::Aggregate;
