//! Key names, verifier keys (the C2SP `vkey` text), the log's and a witness's
//! signing keys, and the adapters that plug them into `signed_note`.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::checkpoint::excerpt;

/// The signature type byte of plain Ed25519 note signatures (c2sp.org/signed-note).
const TYPE_ED25519: u8 = 0x01;
/// The signature type byte of timestamped Ed25519 cosignatures
/// (c2sp.org/tlog-cosignature).
const TYPE_COSIGNATURE_V1: u8 = 0x04;

/// The signature algorithms this crate knows, identified in key ids and
/// verifier keys by their c2sp.org/signed-note signature type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureType {
    /// `0x01`: Ed25519 over the note text. Logs sign checkpoints with it.
    Ed25519,
    /// `0x04`: timestamped Ed25519 witness cosignatures
    /// (c2sp.org/tlog-cosignature, `cosignature/v1`).
    CosignatureV1,
}

impl SignatureType {
    /// The type's identifier byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::Ed25519 => TYPE_ED25519,
            Self::CosignatureV1 => TYPE_COSIGNATURE_V1,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            TYPE_ED25519 => Some(Self::Ed25519),
            TYPE_COSIGNATURE_V1 => Some(Self::CosignatureV1),
            _ => None,
        }
    }
}

/// Checks a key name: non-empty, no Unicode space, no `+` (the rules of
/// c2sp.org/signed-note, decided by `signed_note::is_key_name_valid`), and,
/// since a note may hold no control character, none of those either.
pub(crate) fn check_key_name(name: &str) -> Result<(), KeyNameError> {
    let controls = name.chars().any(|c| c < '\u{20}');
    if signed_note::is_key_name_valid(name) && !controls {
        return Ok(());
    }
    let shown = excerpt(name);
    Err(if name.is_empty() {
        KeyNameError::Empty
    } else if controls {
        KeyNameError::ControlCharacter { name: shown }
    } else if name.contains('+') {
        KeyNameError::Plus { name: shown }
    } else {
        KeyNameError::Whitespace { name: shown }
    })
}

/// `SHA-256(name || 0x0A || type || public key)[:4]` as a big-endian `u32`.
fn key_id(name: &str, sig_type: SignatureType, key: &VerifyingKey) -> u32 {
    signed_note::key_id(name, &typed_key(sig_type, key))
}

fn typed_key(sig_type: SignatureType, key: &VerifyingKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(33);
    bytes.push(sig_type.byte());
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

/// A key name that breaks the rules of c2sp.org/signed-note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyNameError {
    /// The name is empty.
    #[error("key name is empty")]
    Empty,
    /// The name holds a Unicode space.
    #[error("key name {name:?} holds a space")]
    Whitespace {
        /// The name (at most 64 characters of it).
        name: String,
    },
    /// The name holds a `+`.
    #[error("key name {name:?} holds a '+'")]
    Plus {
        /// The name (at most 64 characters of it).
        name: String,
    },
    /// The name holds an ASCII control character, which no note may hold.
    #[error("key name {name:?} holds a control character")]
    ControlCharacter {
        /// The name (at most 64 characters of it).
        name: String,
    },
}

/// The kinds of [`KeyNameError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyNameErrorKind {
    /// See [`KeyNameError::Empty`].
    Empty,
    /// See [`KeyNameError::Whitespace`].
    Whitespace,
    /// See [`KeyNameError::Plus`].
    Plus,
    /// See [`KeyNameError::ControlCharacter`].
    ControlCharacter,
}

impl KeyNameError {
    /// The kind of failure.
    pub fn kind(&self) -> KeyNameErrorKind {
        match self {
            Self::Empty => KeyNameErrorKind::Empty,
            Self::Whitespace { .. } => KeyNameErrorKind::Whitespace,
            Self::Plus { .. } => KeyNameErrorKind::Plus,
            Self::ControlCharacter { .. } => KeyNameErrorKind::ControlCharacter,
        }
    }
}

/// A public key as a verifier configures it: name, key id, signature type
/// and Ed25519 key. Its text form (`Display`/`FromStr`) is the
/// c2sp.org/signed-note verifier key,
/// `<name>+<key id, 8 hex digits>+<base64(type || public key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    sig_type: SignatureType,
    key: VerifyingKey,
}

impl VerifierKey {
    /// The verifier key of a log: plain Ed25519 signatures (type `0x01`).
    pub fn ed25519(name: impl Into<String>, key: &VerifyingKey) -> Result<Self, KeyNameError> {
        Self::new(name.into(), SignatureType::Ed25519, *key)
    }

    /// The verifier key of a witness: `cosignature/v1` (type `0x04`).
    pub fn cosignature(name: impl Into<String>, key: &VerifyingKey) -> Result<Self, KeyNameError> {
        Self::new(name.into(), SignatureType::CosignatureV1, *key)
    }

    fn new(name: String, sig_type: SignatureType, key: VerifyingKey) -> Result<Self, KeyNameError> {
        check_key_name(&name)?;
        Ok(Self {
            key_id: key_id(&name, sig_type, &key),
            name,
            sig_type,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id, `SHA-256(name || 0x0A || type || public key)[:4]` read as
    /// a big-endian number.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature type.
    pub fn signature_type(&self) -> SignatureType {
        self.sig_type
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(typed_key(self.sig_type, &self.key))
        )
    }
}

impl FromStr for VerifierKey {
    type Err = VerifierKeyError;

    /// Parses `<name>+<key id>+<base64(type || key)>`. As in Go's
    /// `note.NewVerifier`, the text is cut at its first two `+` (the base64
    /// may hold more) and the key id may be upper- or lower-case hex; it must
    /// be the id the name and key give.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, rest) = text
            .split_once('+')
            .ok_or(VerifierKeyError::NotThreeFields)?;
        let (id_text, key_text) = rest
            .split_once('+')
            .ok_or(VerifierKeyError::NotThreeFields)?;
        check_key_name(name).map_err(VerifierKeyError::BadName)?;
        if id_text.len() != 8 || !id_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(VerifierKeyError::BadKeyId {
                text: excerpt(id_text),
            });
        }
        let stated = u32::from_str_radix(id_text, 16).map_err(|_| VerifierKeyError::BadKeyId {
            text: excerpt(id_text),
        })?;
        let bytes = STANDARD
            .decode(key_text)
            .map_err(|_| VerifierKeyError::BadBase64)?;
        let (&type_byte, key_bytes) = bytes.split_first().ok_or(VerifierKeyError::NoKey)?;
        let sig_type = SignatureType::from_byte(type_byte)
            .ok_or(VerifierKeyError::UnknownSignatureType { byte: type_byte })?;
        let key_bytes: &[u8; 32] =
            key_bytes
                .try_into()
                .map_err(|_| VerifierKeyError::BadKeyLength {
                    len: key_bytes.len(),
                })?;
        let key =
            VerifyingKey::from_bytes(key_bytes).map_err(|_| VerifierKeyError::NotAnEd25519Key)?;
        let computed = key_id(name, sig_type, &key);
        if computed != stated {
            return Err(VerifierKeyError::KeyIdMismatch { stated, computed });
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: computed,
            sig_type,
            key,
        })
    }
}

/// Why a verifier key text was rejected; see [`VerifierKeyError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierKeyError {
    /// The text is not `<name>+<key id>+<key>`.
    #[error("verifier key is not <name>+<key id>+<key>")]
    NotThreeFields,
    /// The name field breaks the key name rules.
    #[error("verifier key name: {0}")]
    BadName(#[source] KeyNameError),
    /// The key id field is not 8 hex digits.
    #[error("verifier key id {text:?} is not 8 hex digits")]
    BadKeyId {
        /// The field (at most 64 characters of it).
        text: String,
    },
    /// The key field is not standard, padded base64.
    #[error("verifier key data is not standard base64")]
    BadBase64,
    /// The key field decodes to nothing.
    #[error("verifier key data is empty")]
    NoKey,
    /// The signature type byte is neither `0x01` nor `0x04`.
    #[error("verifier key has signature type 0x{byte:02x}, known: 0x01 (Ed25519), 0x04 (cosignature/v1)")]
    UnknownSignatureType {
        /// The type byte.
        byte: u8,
    },
    /// The public key is not 32 bytes.
    #[error("verifier key holds a {len}-byte public key, Ed25519 keys are 32 bytes")]
    BadKeyLength {
        /// The length after the type byte.
        len: usize,
    },
    /// The 32 bytes are not an Ed25519 public key.
    #[error("verifier key data is not an Ed25519 public key")]
    NotAnEd25519Key,
    /// The stated key id is not the one name, type and key give.
    #[error("verifier key id {stated:08x} is not {computed:08x}, the id of its name and key")]
    KeyIdMismatch {
        /// The id in the text.
        stated: u32,
        /// The id computed from name, type and key.
        computed: u32,
    },
}

/// The kinds of [`VerifierKeyError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifierKeyErrorKind {
    /// See [`VerifierKeyError::NotThreeFields`].
    NotThreeFields,
    /// See [`VerifierKeyError::BadName`].
    BadName,
    /// See [`VerifierKeyError::BadKeyId`].
    BadKeyId,
    /// See [`VerifierKeyError::BadBase64`].
    BadBase64,
    /// See [`VerifierKeyError::NoKey`].
    NoKey,
    /// See [`VerifierKeyError::UnknownSignatureType`].
    UnknownSignatureType,
    /// See [`VerifierKeyError::BadKeyLength`].
    BadKeyLength,
    /// See [`VerifierKeyError::NotAnEd25519Key`].
    NotAnEd25519Key,
    /// See [`VerifierKeyError::KeyIdMismatch`].
    KeyIdMismatch,
}

impl VerifierKeyError {
    /// The kind of failure.
    pub fn kind(&self) -> VerifierKeyErrorKind {
        match self {
            Self::NotThreeFields => VerifierKeyErrorKind::NotThreeFields,
            Self::BadName(_) => VerifierKeyErrorKind::BadName,
            Self::BadKeyId { .. } => VerifierKeyErrorKind::BadKeyId,
            Self::BadBase64 => VerifierKeyErrorKind::BadBase64,
            Self::NoKey => VerifierKeyErrorKind::NoKey,
            Self::UnknownSignatureType { .. } => VerifierKeyErrorKind::UnknownSignatureType,
            Self::BadKeyLength { .. } => VerifierKeyErrorKind::BadKeyLength,
            Self::NotAnEd25519Key => VerifierKeyErrorKind::NotAnEd25519Key,
            Self::KeyIdMismatch { .. } => VerifierKeyErrorKind::KeyIdMismatch,
        }
    }
}

/// A log's signing key: a key name (Amai's convention: the origin of the
/// checkpoints it signs) and an Ed25519 key. It signs checkpoints with
/// [`LogKey::sign`](crate::LogKey::sign).
#[derive(Clone)]
pub struct LogKey {
    pub(crate) name: String,
    pub(crate) key_id: u32,
    pub(crate) key: SigningKey,
}

impl LogKey {
    /// A log key; the name must follow the key name rules.
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, KeyNameError> {
        let name = name.into();
        check_key_name(&name)?;
        Ok(Self {
            key_id: key_id(&name, SignatureType::Ed25519, &key.verifying_key()),
            name,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id of its Ed25519 (type `0x01`) signatures.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The verifier key to give readers.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            sig_type: SignatureType::Ed25519,
            key: self.key.verifying_key(),
        }
    }
}

impl fmt::Debug for LogKey {
    /// Name and key id only: never the secret key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogKey({}+{:08x})", self.name, self.key_id)
    }
}

/// A witness's signing key: a key name and an Ed25519 key, producing
/// `cosignature/v1` signatures with
/// [`WitnessKey::cosign`](crate::WitnessKey::cosign).
#[derive(Clone)]
pub struct WitnessKey {
    pub(crate) name: String,
    pub(crate) key_id: u32,
    pub(crate) key: SigningKey,
}

impl WitnessKey {
    /// A witness key; the name must follow the key name rules. The
    /// cosignature message does not hold the name, so the spec requires a
    /// distinct key for each witness name.
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, KeyNameError> {
        let name = name.into();
        check_key_name(&name)?;
        Ok(Self {
            key_id: key_id(&name, SignatureType::CosignatureV1, &key.verifying_key()),
            name,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id of its cosignatures (type `0x04`).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The verifier key to give log clients.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            sig_type: SignatureType::CosignatureV1,
            key: self.key.verifying_key(),
        }
    }
}

impl fmt::Debug for WitnessKey {
    /// Name and key id only: never the secret key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WitnessKey({}+{:08x})", self.name, self.key_id)
    }
}

/// The message a `cosignature/v1` signs: `cosignature/v1\ntime <t>\n` and the
/// checkpoint body.
pub(crate) fn cosignature_message(time: u64, body: &[u8]) -> Vec<u8> {
    let mut msg = format!("cosignature/v1\ntime {time}\n").into_bytes();
    msg.extend_from_slice(body);
    msg
}

/// The largest time a cosignature may carry (the spec: at most 2^63 - 1).
pub(crate) const MAX_COSIGNATURE_TIME: u64 = i64::MAX as u64;

/// The log's key as a `signed_note` signer (plain Ed25519 over the text).
pub(crate) struct NoteSigner<'a>(pub(crate) &'a LogKey);

impl signed_note::Signer for NoteSigner<'_> {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn key_id(&self) -> u32 {
        self.0.key_id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        Ok(self.0.key.sign(msg).to_bytes().to_vec())
    }
}

/// A verifier key as a `signed_note` verifier. Type `0x01` checks Ed25519
/// over the note text; type `0x04` reads `timestamp (8, big-endian) ||
/// signature (64)` and checks the signature over the `cosignature/v1`
/// message. Both use `verify_strict` (no small-order keys or points).
pub(crate) struct NoteVerifier(pub(crate) VerifierKey);

impl signed_note::Verifier for NoteVerifier {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn key_id(&self) -> u32 {
        self.0.key_id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self.0.sig_type {
            SignatureType::Ed25519 => match <[u8; 64]>::try_from(sig) {
                Ok(bytes) => self
                    .0
                    .key
                    .verify_strict(msg, &Signature::from_bytes(&bytes))
                    .is_ok(),
                Err(_) => false,
            },
            SignatureType::CosignatureV1 => match split_timestamped(sig) {
                Some((time, bytes)) if time <= MAX_COSIGNATURE_TIME => self
                    .0
                    .key
                    .verify_strict(
                        &cosignature_message(time, msg),
                        &Signature::from_bytes(&bytes),
                    )
                    .is_ok(),
                _ => false,
            },
        }
    }
}

/// `timestamp (8, big-endian) || signature (64)`, exactly 72 bytes.
pub(crate) fn split_timestamped(sig: &[u8]) -> Option<(u64, [u8; 64])> {
    let (time, signature) = sig.split_first_chunk::<8>()?;
    let signature: [u8; 64] = signature.try_into().ok()?;
    Some((u64::from_be_bytes(*time), signature))
}
