//! What the auditor is fed and how it may refuse it: the scope of each
//! stream's messages ([`Scope`]), the options ([`Witnesses`]) and the errors
//! of unusable input ([`InputError`], which the CLI turns into exit code 2).
//! The messages themselves are `amai_proto::v1::ExportedMessage`s, exactly as
//! an export file or the gateway carries them.

use amai_checkpoint::{SignatureType, VerifierKey};
use serde::Serialize;

/// How the messages given for a stream relate to the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every message from stream sequence 1 to the stream's end at export
    /// time. A sequence with no message was deleted; a checkpoint larger than
    /// the stream means its tail was cut.
    Complete,
    /// A contiguous run of sequences, from the first message given to the
    /// last: a sequence missing inside it was deleted, but the run may start
    /// after 1 and end before the stream's end, so chains may start before it
    /// and checkpoints may reach past it.
    Range,
    /// Any subset of the stream, in stream order (e.g. one aggregate's
    /// subject): sequences absent from it say nothing.
    Selection,
}

impl Scope {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Complete => "complete",
            Scope::Range => "range",
            Scope::Selection => "selection",
        }
    }
}

/// The witnesses an audit trusts and how many must cosign each checkpoint.
#[derive(Clone, Debug, Default)]
pub struct Witnesses {
    pub(crate) keys: Vec<VerifierKey>,
    pub(crate) required: usize,
}

impl Witnesses {
    /// Trusts `keys` (C2SP cosignature verifier keys, type 0x04) and requires
    /// `required` distinct ones of them per checkpoint.
    pub fn new(keys: Vec<VerifierKey>, required: usize) -> Result<Self, InputError> {
        for key in &keys {
            if key.signature_type() != SignatureType::CosignatureV1 {
                return Err(InputError::NotACosignatureKey {
                    key: key.to_string(),
                });
            }
        }
        let mut distinct: Vec<[u8; 32]> =
            keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if required > distinct.len() {
            return Err(InputError::QuorumUnreachable {
                required,
                distinct: distinct.len(),
            });
        }
        Ok(Self { keys, required })
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[VerifierKey] {
        &self.keys
    }

    /// Cosignatures required per checkpoint.
    pub fn required(&self) -> usize {
        self.required
    }
}

/// Why the input cannot be audited at all (the CLI's exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A message of a stream that was not declared.
    #[error(
        "stream {stream} was not declared: declare each stream with its scope before its messages"
    )]
    UndeclaredStream {
        /// The stream.
        stream: String,
    },
    /// A stream declared twice.
    #[error("stream {stream} is declared twice: give each stream's messages together, once")]
    DeclaredTwice {
        /// The stream.
        stream: String,
    },
    /// A message of a stream that was already ended.
    #[error(
        "stream {stream} was already ended: give each stream's messages together, in stream order"
    )]
    StreamEnded {
        /// The stream.
        stream: String,
    },
    /// A message given with the messages of another stream.
    #[error("a message of stream {message} was given among the messages of {stream}")]
    MessageOfAnotherStream {
        /// The stream being given.
        stream: String,
        /// The message's stream.
        message: String,
    },
    /// A stream name that is no JetStream stream name of Amai's form.
    #[error(
        "{stream:?} is not a stream name (capital letters, digits and '_', starting with a letter)"
    )]
    BadStreamName {
        /// The name.
        stream: String,
    },
    /// A witness key that is not a cosignature key.
    #[error("witness key {key} is not a C2SP cosignature key (type 0x04)")]
    NotACosignatureKey {
        /// The key's text.
        key: String,
    },
    /// More witnesses required than distinct keys trusted.
    #[error("{required} witnesses are required per checkpoint but only {distinct} distinct witness keys are trusted")]
    QuorumUnreachable {
        /// Witnesses required.
        required: usize,
        /// Distinct keys given.
        distinct: usize,
    },
}

/// The kinds of [`InputError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InputErrorKind {
    /// See [`InputError::UndeclaredStream`].
    UndeclaredStream,
    /// See [`InputError::DeclaredTwice`].
    DeclaredTwice,
    /// See [`InputError::StreamEnded`].
    StreamEnded,
    /// See [`InputError::MessageOfAnotherStream`].
    MessageOfAnotherStream,
    /// See [`InputError::BadStreamName`].
    BadStreamName,
    /// See [`InputError::NotACosignatureKey`].
    NotACosignatureKey,
    /// See [`InputError::QuorumUnreachable`].
    QuorumUnreachable,
}

impl InputError {
    /// The kind of error.
    pub fn kind(&self) -> InputErrorKind {
        match self {
            InputError::UndeclaredStream { .. } => InputErrorKind::UndeclaredStream,
            InputError::DeclaredTwice { .. } => InputErrorKind::DeclaredTwice,
            InputError::StreamEnded { .. } => InputErrorKind::StreamEnded,
            InputError::MessageOfAnotherStream { .. } => InputErrorKind::MessageOfAnotherStream,
            InputError::BadStreamName { .. } => InputErrorKind::BadStreamName,
            InputError::NotACosignatureKey { .. } => InputErrorKind::NotACosignatureKey,
            InputError::QuorumUnreachable { .. } => InputErrorKind::QuorumUnreachable,
        }
    }
}

/// Whether `name` has the form of a JetStream stream name of Amai
/// (`^[A-Z][A-Z0-9_]*$`).
pub(crate) fn valid_stream_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Unix milliseconds of a message's publish time (0 when absent).
pub(crate) fn published_ms(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000)
    })
}
