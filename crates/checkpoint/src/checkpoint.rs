//! The checkpoint body of c2sp.org/tlog-checkpoint: origin, tree size, root
//! hash, optional extension lines, each ending in a newline.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::Hash;

/// A transparency-log checkpoint (c2sp.org/tlog-checkpoint): the tree head of
/// a log at one size, before it is signed.
///
/// The fields are public; [`Checkpoint::validate`] says whether they form a
/// body that [`Checkpoint::parse_body`] reads back as the same checkpoint
/// (signing checks it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// The log's identity, the first line. Amai's convention: it equals the
    /// name of the log key that signs the checkpoint.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The RFC 9162 root hash of the tree at `size`.
    pub root: Hash,
    /// Opaque extension lines after the root hash, in order, without their
    /// newlines (the spec does not recommend them; usually empty).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: origin, size in decimal, root in standard base64, then
    /// the extension lines, each line ending in `\n`.
    pub fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Checks that [`body`](Self::body) parses back to this checkpoint: a
    /// non-empty origin, non-empty extension lines, and no control character
    /// (newline included) in either.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        if self.origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        check_controls(1, &self.origin)?;
        for (i, line) in self.extensions.iter().enumerate() {
            let number = i + 4;
            if line.is_empty() {
                return Err(CheckpointError::EmptyExtension { line: number });
            }
            check_controls(number, line)?;
        }
        Ok(())
    }

    /// Parses a checkpoint body (the note text, without the blank line and
    /// the signatures).
    pub fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
        let Some(body) = text.strip_suffix('\n') else {
            return Err(if text.is_empty() {
                CheckpointError::MissingLine {
                    line: 1,
                    field: "origin",
                }
            } else {
                CheckpointError::NoFinalNewline
            });
        };
        let mut lines = body.split('\n');

        // `split` yields at least one item, so the origin line is always there
        // (possibly empty).
        let origin = lines.next().unwrap_or_default();
        check_controls(1, origin)?;
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }

        let size_text = lines.next().ok_or(CheckpointError::MissingLine {
            line: 2,
            field: "tree size",
        })?;
        check_controls(2, size_text)?;
        let size = parse_size(size_text)?;

        let root_text = lines.next().ok_or(CheckpointError::MissingLine {
            line: 3,
            field: "root hash",
        })?;
        check_controls(3, root_text)?;
        let root_bytes = STANDARD
            .decode(root_text)
            .map_err(|_| CheckpointError::BadBase64 {
                text: excerpt(root_text),
            })?;
        let root: Hash =
            root_bytes
                .as_slice()
                .try_into()
                .map_err(|_| CheckpointError::RootNot32Bytes {
                    len: root_bytes.len(),
                })?;

        let mut extensions = Vec::new();
        for (i, line) in lines.enumerate() {
            let number = i + 4;
            check_controls(number, line)?;
            if line.is_empty() {
                return Err(CheckpointError::EmptyExtension { line: number });
            }
            extensions.push(line.to_owned());
        }

        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// Decimal digits only, no sign, no leading zero (except `0` itself).
fn parse_size(text: &str) -> Result<u64, CheckpointError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CheckpointError::BadSize {
            text: excerpt(text),
        });
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(CheckpointError::LeadingZero {
            text: excerpt(text),
        });
    }
    text.parse().map_err(|_| CheckpointError::BadSize {
        text: excerpt(text),
    })
}

fn check_controls(line: usize, text: &str) -> Result<(), CheckpointError> {
    match text.chars().find(|c| *c < '\u{20}') {
        Some(c) => Err(CheckpointError::ControlCharacter {
            line,
            code: u32::from(c),
        }),
        None => Ok(()),
    }
}

/// At most 64 characters of untrusted text, for an error message.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Why a checkpoint body was rejected; see [`CheckpointError::kind`]. Line
/// numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The body does not end in a newline.
    #[error("checkpoint body does not end in a newline")]
    NoFinalNewline,
    /// The body stops before one of its three mandatory lines.
    #[error("checkpoint body has no {field} line (line {line})")]
    MissingLine {
        /// The number the missing line would have.
        line: usize,
        /// Which line: `origin`, `tree size` or `root hash`.
        field: &'static str,
    },
    /// The origin line is empty.
    #[error("line 1: the origin is empty")]
    EmptyOrigin,
    /// A line holds an ASCII control character (a newline inside a field,
    /// a carriage return...).
    #[error("line {line}: control character U+{code:04X}")]
    ControlCharacter {
        /// The line.
        line: usize,
        /// The character's code point.
        code: u32,
    },
    /// The tree size is not a decimal number that fits in a `u64`.
    #[error("line 2: tree size {text:?} is not a decimal number that fits in 64 bits")]
    BadSize {
        /// The line (at most 64 characters of it).
        text: String,
    },
    /// The tree size has a leading zero.
    #[error("line 2: tree size {text:?} has a leading zero")]
    LeadingZero {
        /// The line (at most 64 characters of it).
        text: String,
    },
    /// The root hash is not standard, padded base64.
    #[error("line 3: root hash {text:?} is not standard base64")]
    BadBase64 {
        /// The line (at most 64 characters of it).
        text: String,
    },
    /// The root hash decodes to another length than 32 bytes.
    #[error("line 3: root hash decodes to {len} bytes, not 32")]
    RootNot32Bytes {
        /// The decoded length.
        len: usize,
    },
    /// An extension line is empty (which also means an empty line inside
    /// the body).
    #[error("line {line}: extension line is empty")]
    EmptyExtension {
        /// The line.
        line: usize,
    },
}

/// The kinds of [`CheckpointError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckpointErrorKind {
    /// See [`CheckpointError::NoFinalNewline`].
    NoFinalNewline,
    /// See [`CheckpointError::MissingLine`].
    MissingLine,
    /// See [`CheckpointError::EmptyOrigin`].
    EmptyOrigin,
    /// See [`CheckpointError::ControlCharacter`].
    ControlCharacter,
    /// See [`CheckpointError::BadSize`].
    BadSize,
    /// See [`CheckpointError::LeadingZero`].
    LeadingZero,
    /// See [`CheckpointError::BadBase64`].
    BadBase64,
    /// See [`CheckpointError::RootNot32Bytes`].
    RootNot32Bytes,
    /// See [`CheckpointError::EmptyExtension`].
    EmptyExtension,
}

impl CheckpointError {
    /// The kind of failure.
    pub fn kind(&self) -> CheckpointErrorKind {
        match self {
            Self::NoFinalNewline => CheckpointErrorKind::NoFinalNewline,
            Self::MissingLine { .. } => CheckpointErrorKind::MissingLine,
            Self::EmptyOrigin => CheckpointErrorKind::EmptyOrigin,
            Self::ControlCharacter { .. } => CheckpointErrorKind::ControlCharacter,
            Self::BadSize { .. } => CheckpointErrorKind::BadSize,
            Self::LeadingZero { .. } => CheckpointErrorKind::LeadingZero,
            Self::BadBase64 { .. } => CheckpointErrorKind::BadBase64,
            Self::RootNot32Bytes { .. } => CheckpointErrorKind::RootNot32Bytes,
            Self::EmptyExtension { .. } => CheckpointErrorKind::EmptyExtension,
        }
    }
}
