//! [`ExportError`]: the one error of reading and writing export files, with
//! a [`kind`](ExportError::kind) to match on (async-nats style) and a message
//! that says where in the file and what to do.

use std::fmt;

/// What went wrong with an export file. Match on this, never on the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExportErrorKind {
    /// Reading or writing the underlying file failed.
    Io,
    /// The file ends before its trailer (at a record boundary or inside a
    /// record): it was cut short, or never finished.
    Truncated,
    /// Bytes follow the trailer.
    TrailingData,
    /// The trailer's SHA-256 is not the digest of the bytes before it: a byte
    /// changed somewhere.
    DigestMismatch,
    /// The trailer's message or blob count is not what the file holds.
    CountMismatch,
    /// The manifest's `format` is not `amai-export`: not an export file.
    UnknownFormat,
    /// The manifest's `version` is one this build does not read.
    UnsupportedVersion,
    /// The manifest is not valid JSON of the documented shape
    /// (`schemas/export.schema.json`), or breaks one of its rules.
    InvalidManifest,
    /// The records disagree with the manifest: a message of a stream the
    /// manifest does not list, outside its listed range, or counts and ranges
    /// that differ from the listed ones.
    ManifestMismatch,
    /// A record is longer than the size cap.
    RecordTooLarge,
    /// A record's length prefix or protobuf encoding is undecodable, or a
    /// field is out of its domain (sequence 0, an empty stream name).
    Malformed,
    /// A record where the layout does not allow one: the manifest not first,
    /// a second manifest, a message after a blob, an empty record.
    UnexpectedRecord,
    /// A message whose sequence does not follow the previous message of its
    /// stream, or a blob whose digest does not follow the previous blob's.
    OutOfOrder,
    /// A blob whose data does not hash to its `sha256`.
    BlobDigestMismatch,
    /// A record read again at its location is not the one read before: the
    /// file changed since it was verified.
    Changed,
}

impl ExportErrorKind {
    /// The snake_case name (for JSON output and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ExportErrorKind::Io => "io",
            ExportErrorKind::Truncated => "truncated",
            ExportErrorKind::TrailingData => "trailing_data",
            ExportErrorKind::DigestMismatch => "digest_mismatch",
            ExportErrorKind::CountMismatch => "count_mismatch",
            ExportErrorKind::UnknownFormat => "unknown_format",
            ExportErrorKind::UnsupportedVersion => "unsupported_version",
            ExportErrorKind::InvalidManifest => "invalid_manifest",
            ExportErrorKind::ManifestMismatch => "manifest_mismatch",
            ExportErrorKind::RecordTooLarge => "record_too_large",
            ExportErrorKind::Malformed => "malformed",
            ExportErrorKind::UnexpectedRecord => "unexpected_record",
            ExportErrorKind::OutOfOrder => "out_of_order",
            ExportErrorKind::BlobDigestMismatch => "blob_digest_mismatch",
            ExportErrorKind::Changed => "changed",
        }
    }
}

impl fmt::Display for ExportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an export file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    kind: ExportErrorKind,
    message: String,
    #[source]
    source: Option<std::io::Error>,
}

impl ExportError {
    pub(crate) fn new(kind: ExportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn io(context: impl fmt::Display, e: std::io::Error) -> Self {
        Self {
            kind: ExportErrorKind::Io,
            message: format!("{context}: {e}"),
            source: Some(e),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ExportErrorKind {
        self.kind
    }

    /// Whether the same call may succeed later: only I/O failures may be
    /// transient; everything else is in the file's bytes.
    pub fn is_retryable(&self) -> bool {
        self.kind == ExportErrorKind::Io
    }

    /// A copy of the error (without the I/O source): a reader that failed
    /// answers every later call with it.
    pub(crate) fn duplicate(&self) -> Self {
        Self::new(self.kind, self.message.clone())
    }
}
