//! # amai-checkpoint
//!
//! The text formats of the checkpoints that Amai's audit role publishes for
//! each stream's RFC 9162 Merkle tree (see `amai-merkle`), so that
//! transparency-log tooling and witnesses can read and cosign them:
//!
//! - **c2sp.org/tlog-checkpoint**: [`Checkpoint`] is the note body, origin,
//!   tree size in decimal (no leading zero), root hash in standard base64,
//!   optional extension lines, each ending in `\n`
//!   ([`Checkpoint::body`], [`Checkpoint::parse_body`]).
//! - **c2sp.org/signed-note**: [`LogKey::sign`] signs a checkpoint with the
//!   log's Ed25519 key (signature type `0x01`), [`SignedCheckpoint::open`]
//!   verifies one against the log's [`VerifierKey`] (the
//!   `<name>+<key id>+<base64(type || key)>` text). Amai's convention: the
//!   log key's name is the checkpoint's origin, and `open` requires it.
//!   Signature lines of unknown keys are ignored, a failing signature of the
//!   log key rejects the note, and so do more than [`MAX_SIGNATURES`] lines.
//! - **c2sp.org/tlog-cosignature** (Ed25519 `cosignature/v1`, type `0x04`):
//!   [`WitnessKey::cosign`] signs `cosignature/v1\ntime <t>\n` followed by the
//!   checkpoint body and gives a [`CosignatureLine`];
//!   [`SignedCheckpoint::with_cosignature`] adds it to the note;
//!   [`SignedCheckpoint::cosignatures`] and
//!   [`SignedCheckpoint::require_witnesses`] check them against a list of
//!   witness keys (k of n distinct witnesses).
//!
//! Nothing here does I/O or reads a clock: times are parameters.
//!
//! ```
//! use amai_checkpoint::{Checkpoint, LogKey, SignedCheckpoint, VerifierKey, WitnessKey};
//! use ed25519_dalek::SigningKey;
//!
//! // The log signs the checkpoint of a stream's tree (origin = key name).
//! let log = LogKey::new("amai.example/audit/orders", SigningKey::from_bytes(&[1; 32]))?;
//! let checkpoint = Checkpoint::new("amai.example/audit/orders", 42, [7; 32]);
//! let signed = log.sign(&checkpoint)?;
//!
//! // A witness, configured with the log's verifier key text, opens it and cosigns.
//! let log_vkey: VerifierKey = log.verifier().to_string().parse()?;
//! let opened = SignedCheckpoint::open(signed.text(), &log_vkey)?;
//! assert_eq!(opened.checkpoint(), &checkpoint);
//! let witness = WitnessKey::new("witness.example/w1", SigningKey::from_bytes(&[2; 32]))?;
//! let line = witness.cosign(&opened, 1_700_000_000)?;
//!
//! // The log adds the cosignature; a client requires 1 of its 1 witness.
//! let cosigned = signed.with_cosignature(&line)?;
//! let client_view = SignedCheckpoint::open(cosigned.text(), &log_vkey)?;
//! let witnesses = [witness.verifier()];
//! let verified = client_view.require_witnesses(&witnesses, 1)?;
//! assert_eq!(verified[0].name, "witness.example/w1");
//! assert_eq!(verified[0].time, 1_700_000_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## What `signed_note` does and what is hand-written
//!
//! Note parsing, signing and signature checking go through the `signed_note`
//! crate (Cloudflare's port of Go's `golang.org/x/mod/sumdb/note`):
//! `Note::from_bytes` parses (UTF-8, no control characters, split at the
//! last blank line, signature line syntax, the 100-signature cap),
//! `Note::add_sigs` signs through its `Signer` trait, and `Note::verify`
//! applies the trust rules (unknown keys ignored, repeated lines of one key
//! skipped, a failing known key rejects). Key ids come from its `key_id`
//! and key name rules from its `is_key_name_valid`.
//!
//! Hand-written, because `signed_note` 0.2 lacks them:
//! - `cosignature/v1`: `signed_note` only knows type `0x01`, so a
//!   `signed_note::Verifier` implementation here reads the timestamp and
//!   checks the signature over the `cosignature/v1` message (it serves type
//!   `0x01` too; both verify with `verify_strict`, which unlike Go also
//!   rejects small-order keys and points), and [`WitnessKey::cosign`] signs
//!   that message directly, since its result is one line, not a note;
//! - verifier key text for both types with the public key available:
//!   its `StandardVerifier` parses type `0x01` only and keeps the key
//!   private;
//! - the checkpoint body format, which it does not cover;
//! - precise errors: it reports every syntax problem as `MalformedNote`, so
//!   when it rejects a note a small diagnosis here names the offending line
//!   (and counts signature lines first, to report too many as such).
//!
//! It depends on `base64` 0.21 and `thiserror` 1, so the workspace builds
//! those beside its own `base64` 0.22 and `thiserror` 2.

#![warn(missing_docs)]

mod checkpoint;
mod cosignature;
mod keys;
mod note;

pub use amai_merkle::Hash;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointErrorKind};
pub use cosignature::{
    AddCosignatureError, AddCosignatureErrorKind, CosignError, CosignErrorKind, CosignatureLine,
    CosignatureLineError, CosignatureLineErrorKind, VerifiedCosignature, WitnessError,
    WitnessErrorKind,
};
pub use keys::{
    KeyNameError, KeyNameErrorKind, LogKey, SignatureType, VerifierKey, VerifierKeyError,
    VerifierKeyErrorKind, WitnessKey,
};
pub use note::{
    OpenError, OpenErrorKind, SignError, SignErrorKind, SignedCheckpoint, MAX_NOTE_BYTES,
    MAX_SIGNATURES,
};
