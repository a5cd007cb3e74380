//! # amai-export
//!
//! The export file of `amai export` / `amai import` (and, for auditors,
//! `amai audit verify --file`), pure: no NATS, no tokio. The format is fixed by
//! `proto/amai/v1/export.proto`:
//!
//! ```text
//! varint(len) ExportRecord{manifest: JSON}          schemas/export.schema.json
//! varint(len) ExportRecord{message: ExportedMessage} each stream's messages in stream order
//! ...                                               (streams may interleave)
//! varint(len) ExportRecord{blob: ExportedBlob}      in increasing SHA-256 order, each once
//! ...
//! varint(len) ExportRecord{trailer: ExportTrailer}  counts + SHA-256 of every byte before it
//! ```
//!
//! A message is a JetStream message verbatim: stream, sequence, subject,
//! publish time, `Nats-Msg-Id` and the stored bytes (an encoded
//! `SignedEvent`, never re-encoded). Checkpoints are ordinary messages of
//! `AMAI_AUDIT`. Nothing in a file is trusted: the reader checks the format,
//! auditors and projections verify every event themselves.
//!
//! - [`manifest`]: the [`Manifest`] (deployment, selection, per-stream ranges);
//! - [`writer`]: [`ExportWriter`], which refuses whatever the reader would;
//! - [`reader`]: [`ExportReader`], which checks every rule and the trailer,
//!   and [`read_record_at`] to come back to a record of a verified file;
//! - [`blobs`]: [`referenced_blobs`], the blobs an event refers to;
//! - [`error`]: [`ExportError`] and its [`ExportErrorKind`].
#![warn(missing_docs)]

pub mod blobs;
pub mod error;
mod frame;
pub mod manifest;
pub mod reader;
pub mod writer;

pub use blobs::{referenced_blobs, BlobReference, BlobScanError};
pub use error::{ExportError, ExportErrorKind};
pub use manifest::{deployment_id, Deployment, Manifest, Selection, StreamRange, FORMAT, VERSION};
pub use reader::{read_record_at, ExportReader, Record, RecordLocation};
pub use writer::{ExportSummary, ExportWriter};

/// The protobuf types of the file (`amai.v1.ExportRecord` and the rest).
pub mod proto {
    pub use amai_proto::v1::*;
}

/// Largest record (length prefix excluded) written or read by default: 256
/// MiB. A record is held in memory whole; blobs are the large ones.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 256 * 1024 * 1024;

#[cfg(test)]
mod tests;
