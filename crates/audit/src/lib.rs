//! # amai-audit
//!
//! The offline auditor of Amai's history (`amai audit verify`, issue 9):
//! given a deployment's trust root and its streams' messages exactly as
//! stored (an export file, or pages read through the gateway), it checks
//!
//! 1. per stream: sequences strictly increasing, none missing inside the
//!    range given (`missing_event`, `out_of_order`);
//! 2. per message: decoding, canonical bytes, the Ed25519 signature and the
//!    subject and stream the aggregate maps to: THE core's
//!    `amai_core::verify::verify_stored`, on all cores;
//! 3. per aggregate, in stream order: sequence and `prev_hash` links, key
//!    validity at signing time (rotations, revocations), the identity rules
//!    and the foreign signers (services, operators, endorsers, name owners),
//!    resolved causally against the identity chains of AMAI_AGENTS *as the
//!    input holds them*: THE core's `step`, `check_position` and `resolve`,
//!    with the trust root anchoring operators;
//! 4. causation references and unique event ids per stream;
//! 5. checkpoints (`audit.checkpointed` on `audit/<stream>`): the note opens
//!    with the key that signed the event, under the origin
//!    `amai/<deployment>/<stream>`; the note says what the event says; sizes
//!    grow; and the RFC 9162 root recomputed from the input's messages is
//!    the signed one; a complete stream shorter than a checkpoint was cut;
//! 6. coverage: every event under a verified checkpoint;
//! 7. witnesses: `audit.checkpoint_cosigned` records of trusted witnesses,
//!    k of n per checkpoint when required;
//!
//! and classifies the evidence as [`Evidence::Authoritative`],
//! [`Evidence::Partial`] or [`Evidence::Invalid`] in an [`AuditReport`]
//! (JSON: `schemas/audit-report.schema.json`; [`AuditReport::human_summary`];
//! [`AuditReport::exit_code`]). No rule of the core is re-implemented here:
//! this crate decides what to feed the core and how to report what it says.
//! It does no I/O and needs no async runtime.
//!
//! ```
//! use amai_audit::{Auditor, Evidence, Scope};
//!
//! let trust_root = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
//! let mut auditor = Auditor::new(trust_root).on_progress(|n| eprintln!("{n} verified"));
//! auditor.add_stream("AMAI_AGENTS", Scope::Complete, Vec::new())?;
//! let report = auditor.finish();
//! // Nothing failed, but the other streams of the deployment are missing.
//! assert_eq!(report.evidence, Evidence::Partial);
//! assert_eq!(report.exit_code(), 3);
//! # Ok::<(), amai_audit::InputError>(())
//! ```
//!
//! Modules: [`input`] (scopes, options, unusable input), [`report`] (the
//! report, failure kinds, partial reasons), `auditor` (batching on all cores
//! and the final classification), `engine` (the sequential fold and foreign
//! signers), `checkpoints` (notes, roots, witnesses, coverage), `tree` (the
//! rebuilt Merkle tree of a stream).

#![warn(missing_docs)]

mod auditor;
mod checkpoints;
mod engine;
pub mod input;
pub mod report;
mod tree;

pub use amai_proto::v1::ExportedMessage;
pub use auditor::{deployment_streams, Auditor, DEFAULT_BATCH, DEFAULT_MAX_FAILURES};
pub use checkpoints::{deployment_id, origin};
pub use input::{InputError, InputErrorKind, Scope};
pub use report::{
    AuditReport, CheckpointFinding, Counts, Evidence, Failure, FailureKind, PartialFinding,
    PartialKind, StreamReport, WitnessPolicy, EXIT_AUTHORITATIVE, EXIT_INVALID, EXIT_PARTIAL,
    EXIT_UNUSABLE_INPUT, REPORT_VERSION,
};
