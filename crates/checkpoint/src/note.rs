//! Signed checkpoints: signing with the log key, opening (verifying) a note
//! against the log's verifier key, and the diagnosis of malformed notes.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use signed_note::{Note, NoteError, VerifierList};

use crate::checkpoint::{excerpt, Checkpoint, CheckpointError};
use crate::keys::{check_key_name, LogKey, NoteSigner, NoteVerifier, SignatureType, VerifierKey};

/// The most signature lines a note may hold (the limit of Go's
/// `note.Open` and of `signed_note`).
pub const MAX_SIGNATURES: usize = 100;

/// The largest note `signed_note` accepts, in bytes.
pub const MAX_NOTE_BYTES: usize = 1_000_000;

/// A checkpoint signed by its log: the note text and the checkpoint it
/// holds. Made by [`LogKey::sign`] or [`SignedCheckpoint::open`] (so its log
/// signature has been made or checked), and grown by
/// [`with_cosignature`](SignedCheckpoint::with_cosignature).
#[derive(Clone)]
pub struct SignedCheckpoint {
    pub(crate) text: String,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) log_name: String,
    pub(crate) log_key_id: u32,
    pub(crate) log_signature: [u8; 64],
    /// The parsed note, kept so that cosignature checks need no new parse.
    pub(crate) note: Arc<Note>,
}

impl SignedCheckpoint {
    /// Parses a signed note and checks it as a checkpoint of the log `log`:
    /// the note must carry a valid Ed25519 signature by that key (the first
    /// line with its name and key id decides, as in Go's `note.Open`), its
    /// text must be a checkpoint body, and the origin must equal the key
    /// name. Signature lines of other keys are ignored (that is where
    /// cosignatures live); more than [`MAX_SIGNATURES`] lines reject the note.
    pub fn open(note: &str, log: &VerifierKey) -> Result<SignedCheckpoint, OpenError> {
        if log.signature_type() != SignatureType::Ed25519 {
            return Err(OpenError::NotALogKey {
                key: log.to_string(),
            });
        }
        if let Some(count) = signature_line_count(note) {
            if count > MAX_SIGNATURES {
                return Err(OpenError::TooManySignatures { count });
            }
        }
        let parsed = Note::from_bytes(note.as_bytes()).map_err(|_| OpenError::Malformed {
            reason: diagnose_note(note),
        })?;

        let verifiers = VerifierList::new(vec![Box::new(NoteVerifier(log.clone()))]);
        let log_signature = match parsed.verify(&verifiers) {
            Ok((verified, _)) => verified
                .first()
                .and_then(|sig| <[u8; 64]>::try_from(sig.signature()).ok()),
            Err(NoteError::UnverifiedNote) => {
                return Err(OpenError::NotSignedByLog {
                    name: log.name().to_owned(),
                    key_id: log.key_id(),
                })
            }
            // `InvalidSignature`; the other errors (ambiguous or mismatched
            // verifier) cannot come from a list of one verifier.
            Err(_) => None,
        };
        // The verifier accepts only 64-byte signatures, so `None` here means
        // the library reported a failed signature of the log's key.
        let log_signature = log_signature.ok_or_else(|| OpenError::BadSignature {
            name: log.name().to_owned(),
            key_id: log.key_id(),
        })?;

        // `Note` checked that the text is UTF-8; it is a prefix of `note`.
        let body = String::from_utf8_lossy(parsed.text());
        let checkpoint = Checkpoint::parse_body(&body).map_err(OpenError::BadCheckpoint)?;
        if checkpoint.origin != log.name() {
            return Err(OpenError::OriginMismatch {
                origin: excerpt(&checkpoint.origin),
                key_name: log.name().to_owned(),
            });
        }
        Ok(SignedCheckpoint {
            text: note.to_owned(),
            checkpoint,
            log_name: log.name().to_owned(),
            log_key_id: log.key_id(),
            log_signature,
            note: Arc::new(parsed),
        })
    }

    /// The whole note: body, blank line, signature lines.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The checkpoint the note holds.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The raw Ed25519 signature of the log over the checkpoint body.
    pub fn log_signature(&self) -> [u8; 64] {
        self.log_signature
    }
}

impl PartialEq for SignedCheckpoint {
    /// Equal notes: the text decides everything else.
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for SignedCheckpoint {}

impl fmt::Debug for SignedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedCheckpoint")
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

impl LogKey {
    /// Signs `checkpoint` as a signed note with one signature line, by this
    /// key. The checkpoint must be valid ([`Checkpoint::validate`]) and its
    /// origin must be this key's name.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<SignedCheckpoint, SignError> {
        checkpoint.validate().map_err(SignError::BadCheckpoint)?;
        if checkpoint.origin != self.name {
            return Err(SignError::OriginMismatch {
                origin: excerpt(&checkpoint.origin),
                key_name: self.name.clone(),
            });
        }
        let body = checkpoint.body();
        // Body, blank line, "— " (4 bytes), name, space, base64 of 4 + 64
        // bytes (92), newline.
        let bytes = body.len() + 1 + 4 + self.name.len() + 1 + 92 + 1;
        if bytes > MAX_NOTE_BYTES {
            return Err(SignError::TooLarge { bytes });
        }
        let mut note = Note::new(body.as_bytes(), &[]).map_err(|e| SignError::NoteRejected {
            reason: e.to_string(),
        })?;
        note.add_sigs(&[&NoteSigner(self)])
            .map_err(|e| SignError::NoteRejected {
                reason: e.to_string(),
            })?;
        let text = String::from_utf8(note.to_bytes()).map_err(|e| SignError::NoteRejected {
            reason: e.to_string(),
        })?;
        let log_signature = self.sign_raw(body.as_bytes());
        Ok(SignedCheckpoint {
            text,
            checkpoint: checkpoint.clone(),
            log_name: self.name.clone(),
            log_key_id: self.key_id,
            log_signature,
            note: Arc::new(note),
        })
    }

    /// Ed25519 signing is deterministic (RFC 8032 §5.1.6): this is the
    /// signature `add_sigs` wrote into the note.
    fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.key.sign(msg).to_bytes()
    }
}

/// The number of lines after the last blank line, if the note has one.
pub(crate) fn signature_line_count(note: &str) -> Option<usize> {
    let split = note.rfind("\n\n")?;
    let block = &note[split + 2..];
    Some(block.split_terminator('\n').count())
}

/// Says why `signed_note` rejected a note, naming the line (from 1).
fn diagnose_note(note: &str) -> String {
    if note.len() > MAX_NOTE_BYTES {
        return format!("note is {} bytes, more than {MAX_NOTE_BYTES}", note.len());
    }
    for (i, line) in note.split('\n').enumerate() {
        if let Some(c) = line.chars().find(|c| *c < '\u{20}') {
            return format!("line {}: control character U+{:04X}", i + 1, u32::from(c));
        }
    }
    let Some(split) = note.rfind("\n\n") else {
        return "no blank line between text and signatures".to_owned();
    };
    let block = &note[split + 2..];
    let first = note[..split + 2].matches('\n').count() + 1;
    if block.is_empty() {
        return format!("line {first}: no signature line after the blank line");
    }
    let Some(block) = block.strip_suffix('\n') else {
        let last = first + block.matches('\n').count();
        return format!("line {last}: the last signature line does not end in a newline");
    };
    for (i, line) in block.split('\n').enumerate() {
        if let Err(reason) = check_signature_line(line) {
            return format!("line {}: {reason}", first + i);
        }
    }
    "rejected by the signed-note parser".to_owned()
}

/// The checks of `signed_note::Signature::from_bytes`, spelled out so that a
/// message can say which one failed: `— <name> <base64(id || sig)>` with a
/// valid name and at least 5 bytes.
pub(crate) fn check_signature_line(line: &str) -> Result<(), String> {
    let Some(rest) = line.strip_prefix("\u{2014} ") else {
        return Err(format!(
            "{:?} does not start with an em dash (U+2014) and a space",
            excerpt(line)
        ));
    };
    let Some((name, b64)) = rest.split_once(' ') else {
        return Err(format!(
            "{:?} has no space between key name and signature",
            excerpt(line)
        ));
    };
    check_key_name(name).map_err(|e| e.to_string())?;
    let bytes = STANDARD.decode(b64).map_err(|_| {
        format!(
            "signature of key {:?} is not standard base64",
            excerpt(name)
        )
    })?;
    if bytes.len() < 5 {
        return Err(format!(
            "signature of key {:?} has {} bytes, fewer than a key id and a signature",
            excerpt(name),
            bytes.len()
        ));
    }
    Ok(())
}

/// Why [`LogKey::sign`] failed; see [`SignError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The checkpoint does not form a body that parses back to it.
    #[error("cannot sign checkpoint: {0}")]
    BadCheckpoint(#[source] CheckpointError),
    /// The checkpoint's origin is not the log key's name.
    #[error("checkpoint origin {origin:?} is not the log key name {key_name:?}")]
    OriginMismatch {
        /// The origin (at most 64 characters of it).
        origin: String,
        /// The key name.
        key_name: String,
    },
    /// The signed note would be larger than [`MAX_NOTE_BYTES`].
    #[error("signed note would be {bytes} bytes, more than {MAX_NOTE_BYTES}")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// `signed_note` refused the text or the signer (not expected after the
    /// checks above).
    #[error("the signed-note library refused to sign: {reason}")]
    NoteRejected {
        /// The library's message.
        reason: String,
    },
}

/// The kinds of [`SignError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignErrorKind {
    /// See [`SignError::BadCheckpoint`].
    BadCheckpoint,
    /// See [`SignError::OriginMismatch`].
    OriginMismatch,
    /// See [`SignError::TooLarge`].
    TooLarge,
    /// See [`SignError::NoteRejected`].
    NoteRejected,
}

impl SignError {
    /// The kind of failure.
    pub fn kind(&self) -> SignErrorKind {
        match self {
            Self::BadCheckpoint(_) => SignErrorKind::BadCheckpoint,
            Self::OriginMismatch { .. } => SignErrorKind::OriginMismatch,
            Self::TooLarge { .. } => SignErrorKind::TooLarge,
            Self::NoteRejected { .. } => SignErrorKind::NoteRejected,
        }
    }
}

/// Why [`SignedCheckpoint::open`] rejected a note; see [`OpenError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The verifier key given is not an Ed25519 (type `0x01`) key, so it
    /// cannot be a log's key.
    #[error("{key} is not an Ed25519 (type 0x01) log key")]
    NotALogKey {
        /// The verifier key text.
        key: String,
    },
    /// The text is not a signed note.
    #[error("malformed note: {reason}")]
    Malformed {
        /// What is wrong, naming the line.
        reason: String,
    },
    /// The note holds more than [`MAX_SIGNATURES`] signature lines.
    #[error("note has {count} signature lines, more than {MAX_SIGNATURES}")]
    TooManySignatures {
        /// The number of lines after the last blank line.
        count: usize,
    },
    /// No signature line has the log key's name and key id.
    #[error("note has no signature by the log key {name}+{key_id:08x}")]
    NotSignedByLog {
        /// The log key name.
        name: String,
        /// The log key id.
        key_id: u32,
    },
    /// The first signature line of the log key does not verify.
    #[error("signature of the log key {name}+{key_id:08x} does not verify")]
    BadSignature {
        /// The log key name.
        name: String,
        /// The log key id.
        key_id: u32,
    },
    /// The signed text is not a checkpoint body.
    #[error("signed text is not a checkpoint: {0}")]
    BadCheckpoint(#[source] CheckpointError),
    /// The checkpoint's origin is not the log key's name.
    #[error("checkpoint origin {origin:?} is not the log key name {key_name:?}")]
    OriginMismatch {
        /// The origin (at most 64 characters of it).
        origin: String,
        /// The key name.
        key_name: String,
    },
}

/// The kinds of [`OpenError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// See [`OpenError::NotALogKey`].
    NotALogKey,
    /// See [`OpenError::Malformed`].
    Malformed,
    /// See [`OpenError::TooManySignatures`].
    TooManySignatures,
    /// See [`OpenError::NotSignedByLog`].
    NotSignedByLog,
    /// See [`OpenError::BadSignature`].
    BadSignature,
    /// See [`OpenError::BadCheckpoint`].
    BadCheckpoint,
    /// See [`OpenError::OriginMismatch`].
    OriginMismatch,
}

impl OpenError {
    /// The kind of failure.
    pub fn kind(&self) -> OpenErrorKind {
        match self {
            Self::NotALogKey { .. } => OpenErrorKind::NotALogKey,
            Self::Malformed { .. } => OpenErrorKind::Malformed,
            Self::TooManySignatures { .. } => OpenErrorKind::TooManySignatures,
            Self::NotSignedByLog { .. } => OpenErrorKind::NotSignedByLog,
            Self::BadSignature { .. } => OpenErrorKind::BadSignature,
            Self::BadCheckpoint(_) => OpenErrorKind::BadCheckpoint,
            Self::OriginMismatch { .. } => OpenErrorKind::OriginMismatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    /// golang.org/x/mod/sumdb/note `TestSign`: the signer adapter, through
    /// `signed_note`'s `add_sigs`, writes Go's note byte for byte.
    #[test]
    fn signer_adapter_reproduces_go_sign_vector() {
        // PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz
        let seed: [u8; 32] = [
            0x81, 0x0a, 0x14, 0x02, 0xd5, 0x14, 0x6c, 0x8d, 0x84, 0xf2, 0x44, 0x33, 0x30, 0xf5,
            0x40, 0x80, 0xeb, 0xf9, 0x8e, 0xe1, 0x7d, 0x9c, 0x74, 0xf6, 0x25, 0x2f, 0xc5, 0xd5,
            0xc7, 0x28, 0x31, 0x73,
        ];
        let key = LogKey::new("PeterNeumann", SigningKey::from_bytes(&seed)).expect("name");
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let mut note = Note::new(text.as_bytes(), &[]).expect("text");
        note.add_sigs(&[&NoteSigner(&key)]).expect("signs");
        let want = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        assert_eq!(String::from_utf8(note.to_bytes()).expect("UTF-8"), want);
        // And `sign_raw` is that signature (the line's bytes after the key id).
        let line =
            signed_note::Signature::from_bytes(want.lines().last().expect("line").as_bytes())
                .expect("line");
        assert_eq!(line.signature(), key.sign_raw(text.as_bytes()).as_slice());
    }

    #[test]
    fn signature_lines_are_counted_after_the_last_blank_line() {
        assert_eq!(signature_line_count("a\n\nb\n\nc\nd\n"), Some(2));
        assert_eq!(signature_line_count("a\n\nc\nd"), Some(2));
        assert_eq!(signature_line_count("a\nb\n"), None);
    }
}
