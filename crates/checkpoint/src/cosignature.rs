//! Witness cosignatures (c2sp.org/tlog-cosignature, Ed25519 `cosignature/v1`):
//! making one, its signature line, adding it to a signed checkpoint, and
//! k-of-n checks against a list of witness keys.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use signed_note::{Note, NoteError, VerifierList};

use crate::checkpoint::excerpt;
use crate::keys::{
    check_key_name, cosignature_message, split_timestamped, NoteVerifier, SignatureType,
    VerifierKey, WitnessKey, MAX_COSIGNATURE_TIME,
};
use crate::note::{check_signature_line, signature_line_count, MAX_NOTE_BYTES, MAX_SIGNATURES};
use crate::SignedCheckpoint;

/// One cosignature as a note signature line:
/// `— <name> base64(key id (4) || time (8, big-endian) || Ed25519 signature (64))`.
///
/// `Display` writes the line without its final newline; `FromStr` takes it
/// with or without one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CosignatureLine {
    name: String,
    key_id: u32,
    time: u64,
    signature: [u8; 64],
}

impl CosignatureLine {
    /// The witness key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The witness key id (of type `0x04`).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The time the witness states, in seconds since the Unix epoch.
    pub fn time(&self) -> u64 {
        self.time
    }

    /// The Ed25519 signature over `cosignature/v1\ntime <time>\n` and the
    /// checkpoint body.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

impl fmt::Display for CosignatureLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(4 + 8 + 64);
        bytes.extend_from_slice(&self.key_id.to_be_bytes());
        bytes.extend_from_slice(&self.time.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        write!(f, "\u{2014} {} {}", self.name, STANDARD.encode(bytes))
    }
}

impl FromStr for CosignatureLine {
    type Err = CosignatureLineError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let not_a_line = |line: &str| CosignatureLineError::NotASignatureLine {
            reason: check_signature_line(line)
                .err()
                .unwrap_or_else(|| "rejected by the signed-note parser".to_owned()),
        };
        let sig =
            signed_note::Signature::from_bytes(line.as_bytes()).map_err(|_| not_a_line(line))?;
        check_key_name(sig.name()).map_err(|e| CosignatureLineError::NotASignatureLine {
            reason: e.to_string(),
        })?;
        let (time, signature) =
            split_timestamped(sig.signature()).ok_or(CosignatureLineError::WrongLength {
                len: 4 + sig.signature().len(),
            })?;
        if time > MAX_COSIGNATURE_TIME {
            return Err(CosignatureLineError::TimeOutOfRange { time });
        }
        Ok(Self {
            name: sig.name().to_owned(),
            key_id: sig.id(),
            time,
            signature,
        })
    }
}

impl WitnessKey {
    /// Cosigns the checkpoint of `signed` as of `time` (seconds since the
    /// Unix epoch, at most 2^63 - 1). Checking the checkpoint's consistency
    /// with earlier ones, which is what a cosignature states, is the
    /// caller's part.
    pub fn cosign(
        &self,
        signed: &SignedCheckpoint,
        time: u64,
    ) -> Result<CosignatureLine, CosignError> {
        if time > MAX_COSIGNATURE_TIME {
            return Err(CosignError::TimeOutOfRange { time });
        }
        let message = cosignature_message(time, signed.note.text());
        Ok(CosignatureLine {
            name: self.name.clone(),
            key_id: self.key_id,
            time,
            signature: self.key.sign(&message).to_bytes(),
        })
    }
}

/// A cosignature that verified: the witness (as named in the verifier key
/// list) and the time it states.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifiedCosignature {
    /// The witness key name.
    pub name: String,
    /// The witness key id.
    pub key_id: u32,
    /// The time the witness states, in seconds since the Unix epoch.
    pub time: u64,
}

enum Check {
    Verified(VerifiedCosignature),
    Invalid,
    Absent,
}

impl SignedCheckpoint {
    /// This note with `line` added. A line of the same key (name and key id)
    /// already in the note is replaced, as Go's `note.Sign` does, so a
    /// witness that cosigns again leaves one line. The line is not checked
    /// here: [`cosignatures`](Self::cosignatures) and
    /// [`require_witnesses`](Self::require_witnesses) check it.
    pub fn with_cosignature(
        &self,
        line: &CosignatureLine,
    ) -> Result<SignedCheckpoint, AddCosignatureError> {
        if line.name == self.log_name && line.key_id == self.log_key_id {
            return Err(AddCosignatureError::SameKeyAsLog {
                name: line.name.clone(),
                key_id: line.key_id,
            });
        }
        // The note was accepted, so it has a blank line before its signatures.
        let split = self.text.rfind("\n\n").unwrap_or(self.text.len());
        let (head, block) = self.text.split_at(split);
        let mut text = String::with_capacity(self.text.len() + 160);
        text.push_str(head);
        text.push_str("\n\n");
        for old in block.split('\n').filter(|l| !l.is_empty()) {
            let same_key = signed_note::Signature::from_bytes(old.as_bytes())
                .is_ok_and(|sig| sig.name() == line.name && sig.id() == line.key_id);
            if !same_key {
                text.push_str(old);
                text.push('\n');
            }
        }
        text.push_str(&line.to_string());
        text.push('\n');

        if let Some(count) = signature_line_count(&text) {
            if count > MAX_SIGNATURES {
                return Err(AddCosignatureError::TooManySignatures { count });
            }
        }
        if text.len() > MAX_NOTE_BYTES {
            return Err(AddCosignatureError::TooLarge { bytes: text.len() });
        }
        let note =
            Note::from_bytes(text.as_bytes()).map_err(|e| AddCosignatureError::NoteRejected {
                reason: e.to_string(),
            })?;
        Ok(SignedCheckpoint {
            text,
            checkpoint: self.checkpoint.clone(),
            log_name: self.log_name.clone(),
            log_key_id: self.log_key_id,
            log_signature: self.log_signature,
            note: Arc::new(note),
        })
    }

    /// The valid cosignatures of the listed witnesses, in list order, one per
    /// witness public key (a key listed twice, even under two names, counts
    /// once: the cosigned message does not hold the name). Keys that are not
    /// of type `0x04`, absent cosignatures and failing ones are left out;
    /// [`require_witnesses`](Self::require_witnesses) reports the latter two.
    pub fn cosignatures(&self, witnesses: &[VerifierKey]) -> Vec<VerifiedCosignature> {
        let mut verified = Vec::new();
        let mut keys = Vec::new();
        for witness in witnesses {
            if witness.signature_type() != SignatureType::CosignatureV1 {
                continue;
            }
            if let Check::Verified(cosignature) = self.check_witness(witness) {
                push_distinct(&mut verified, &mut keys, witness, cosignature);
            }
        }
        verified
    }

    /// Requires valid cosignatures from at least `k` distinct witnesses of
    /// the list (distinct public keys, as in
    /// [`cosignatures`](Self::cosignatures)) and returns all the valid ones.
    /// A listed witness whose cosignature line fails to verify is an error
    /// (c2sp.org/signed-note: a failing signature of a known key should
    /// reject the note), and so is a listed key that is not a cosignature
    /// key.
    pub fn require_witnesses(
        &self,
        witnesses: &[VerifierKey],
        k: usize,
    ) -> Result<Vec<VerifiedCosignature>, WitnessError> {
        let mut verified = Vec::new();
        let mut keys = Vec::new();
        for witness in witnesses {
            if witness.signature_type() != SignatureType::CosignatureV1 {
                return Err(WitnessError::NotACosignatureKey {
                    key: witness.to_string(),
                });
            }
            match self.check_witness(witness) {
                Check::Verified(cosignature) => {
                    push_distinct(&mut verified, &mut keys, witness, cosignature)
                }
                Check::Invalid => {
                    return Err(WitnessError::BadCosignature {
                        name: excerpt(witness.name()),
                        key_id: witness.key_id(),
                    })
                }
                Check::Absent => {}
            }
        }
        if verified.len() < k {
            return Err(WitnessError::Quorum {
                required: k,
                verified: verified.len(),
            });
        }
        Ok(verified)
    }

    /// Checks the first line of one witness key (`signed_note` skips later
    /// lines of the same key, as Go's `note.Open` does).
    fn check_witness(&self, witness: &VerifierKey) -> Check {
        let verifiers = VerifierList::new(vec![Box::new(NoteVerifier(witness.clone()))]);
        match self.note.verify(&verifiers) {
            Ok((verified, _)) => {
                match verified
                    .first()
                    .and_then(|sig| split_timestamped(sig.signature()))
                {
                    Some((time, _)) => Check::Verified(VerifiedCosignature {
                        name: witness.name().to_owned(),
                        key_id: witness.key_id(),
                        time,
                    }),
                    // The verifier accepts only 72-byte signatures.
                    None => Check::Invalid,
                }
            }
            Err(NoteError::UnverifiedNote) => Check::Absent,
            // `InvalidSignature`; the other errors (ambiguous or mismatched
            // verifier) cannot come from a list of one verifier.
            Err(_) => Check::Invalid,
        }
    }
}

fn push_distinct(
    verified: &mut Vec<VerifiedCosignature>,
    keys: &mut Vec<[u8; 32]>,
    witness: &VerifierKey,
    cosignature: VerifiedCosignature,
) {
    let key = witness.verifying_key().to_bytes();
    if !keys.contains(&key) {
        keys.push(key);
        verified.push(cosignature);
    }
}

/// Why [`WitnessKey::cosign`] failed; see [`CosignError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosignError {
    /// The time is above 2^63 - 1, which the spec forbids.
    #[error("cosignature time {time} is above 2^63 - 1")]
    TimeOutOfRange {
        /// The time given.
        time: u64,
    },
}

/// The kinds of [`CosignError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CosignErrorKind {
    /// See [`CosignError::TimeOutOfRange`].
    TimeOutOfRange,
}

impl CosignError {
    /// The kind of failure.
    pub fn kind(&self) -> CosignErrorKind {
        match self {
            Self::TimeOutOfRange { .. } => CosignErrorKind::TimeOutOfRange,
        }
    }
}

/// Why a cosignature line was rejected; see [`CosignatureLineError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosignatureLineError {
    /// The text is not a note signature line.
    #[error("not a signature line: {reason}")]
    NotASignatureLine {
        /// What is wrong.
        reason: String,
    },
    /// The signature is not 4 + 8 + 64 bytes.
    #[error(
        "cosignature is {len} bytes, a cosignature/v1 line holds 76 (key id, time, signature)"
    )]
    WrongLength {
        /// The decoded length, key id included.
        len: usize,
    },
    /// The time is above 2^63 - 1.
    #[error("cosignature time {time} is above 2^63 - 1")]
    TimeOutOfRange {
        /// The time in the line.
        time: u64,
    },
}

/// The kinds of [`CosignatureLineError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CosignatureLineErrorKind {
    /// See [`CosignatureLineError::NotASignatureLine`].
    NotASignatureLine,
    /// See [`CosignatureLineError::WrongLength`].
    WrongLength,
    /// See [`CosignatureLineError::TimeOutOfRange`].
    TimeOutOfRange,
}

impl CosignatureLineError {
    /// The kind of failure.
    pub fn kind(&self) -> CosignatureLineErrorKind {
        match self {
            Self::NotASignatureLine { .. } => CosignatureLineErrorKind::NotASignatureLine,
            Self::WrongLength { .. } => CosignatureLineErrorKind::WrongLength,
            Self::TimeOutOfRange { .. } => CosignatureLineErrorKind::TimeOutOfRange,
        }
    }
}

/// Why [`SignedCheckpoint::with_cosignature`] failed; see
/// [`AddCosignatureError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddCosignatureError {
    /// The line has the log key's name and key id: adding it would replace
    /// the log's signature.
    #[error("line of key {name}+{key_id:08x} would replace the log's signature")]
    SameKeyAsLog {
        /// The key name.
        name: String,
        /// The key id.
        key_id: u32,
    },
    /// The note would hold more than [`MAX_SIGNATURES`] signature lines,
    /// which [`SignedCheckpoint::open`] rejects.
    #[error("note would have {count} signature lines, more than {MAX_SIGNATURES}")]
    TooManySignatures {
        /// The number of lines.
        count: usize,
    },
    /// The note would be larger than [`MAX_NOTE_BYTES`].
    #[error("note would be {bytes} bytes, more than {MAX_NOTE_BYTES}")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// `signed_note` refused the new note (not expected after the checks
    /// above).
    #[error("the signed-note library refused the note: {reason}")]
    NoteRejected {
        /// The library's message.
        reason: String,
    },
}

/// The kinds of [`AddCosignatureError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddCosignatureErrorKind {
    /// See [`AddCosignatureError::SameKeyAsLog`].
    SameKeyAsLog,
    /// See [`AddCosignatureError::TooManySignatures`].
    TooManySignatures,
    /// See [`AddCosignatureError::TooLarge`].
    TooLarge,
    /// See [`AddCosignatureError::NoteRejected`].
    NoteRejected,
}

impl AddCosignatureError {
    /// The kind of failure.
    pub fn kind(&self) -> AddCosignatureErrorKind {
        match self {
            Self::SameKeyAsLog { .. } => AddCosignatureErrorKind::SameKeyAsLog,
            Self::TooManySignatures { .. } => AddCosignatureErrorKind::TooManySignatures,
            Self::TooLarge { .. } => AddCosignatureErrorKind::TooLarge,
            Self::NoteRejected { .. } => AddCosignatureErrorKind::NoteRejected,
        }
    }
}

/// Why [`SignedCheckpoint::require_witnesses`] failed; see
/// [`WitnessError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// A listed key is not a cosignature (type `0x04`) key.
    #[error("{key} is not a cosignature (type 0x04) witness key")]
    NotACosignatureKey {
        /// The verifier key text.
        key: String,
    },
    /// The first cosignature line of a listed witness does not verify.
    #[error("cosignature of witness {name}+{key_id:08x} does not verify")]
    BadCosignature {
        /// The witness key name (at most 64 characters of it).
        name: String,
        /// The witness key id.
        key_id: u32,
    },
    /// Fewer than `k` distinct listed witnesses cosigned.
    #[error("{verified} distinct witnesses cosigned, {required} required")]
    Quorum {
        /// `k`.
        required: usize,
        /// The number of distinct witnesses with a valid cosignature.
        verified: usize,
    },
}

/// The kinds of [`WitnessError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WitnessErrorKind {
    /// See [`WitnessError::NotACosignatureKey`].
    NotACosignatureKey,
    /// See [`WitnessError::BadCosignature`].
    BadCosignature,
    /// See [`WitnessError::Quorum`].
    Quorum,
}

impl WitnessError {
    /// The kind of failure.
    pub fn kind(&self) -> WitnessErrorKind {
        match self {
            Self::NotACosignatureKey { .. } => WitnessErrorKind::NotACosignatureKey,
            Self::BadCosignature { .. } => WitnessErrorKind::BadCosignature,
            Self::Quorum { .. } => WitnessErrorKind::Quorum,
        }
    }
}
