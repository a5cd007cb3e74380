//! Sealed messages: HPKE (RFC 9180) in Auth mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305. The sender's static X25519 key authenticates
//! the box (only its holder can seal what opens under it), and the associated
//! data binds sender id, recipient id and the event id that carries the box:
//! copying the bytes into another event, or presenting them as from another
//! sender or to another recipient, makes them fail to open.
//!
//! Layout of `sealed`: the 32-byte encapsulated key, then the ciphertext.

use hpke::{
    aead::ChaCha20Poly1305, kdf::HkdfSha256, kem::X25519HkdfSha256, Deserializable, Kem, OpModeR,
    OpModeS, Serializable,
};

use crate::pae;

type KemX = X25519HkdfSha256;
type PublicKey = <KemX as Kem>::PublicKey;
type PrivateKey = <KemX as Kem>::PrivateKey;
type EncappedKey = <KemX as Kem>::EncappedKey;

/// HPKE `info`: which protocol the keys are used in.
const INFO: &[u8] = b"amai.message.v1 hpke-auth x25519-hkdf-sha256 chacha20poly1305";
/// Length of the encapsulated key at the start of a box.
const ENC_LEN: usize = 32;

/// Why a message could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A key is not 32 bytes or not an X25519 key.
    #[error("X25519 keys must be 32 bytes")]
    BadKey,
    /// Wrong key, wrong sender, wrong recipient, another event, or tampered bytes.
    #[error("sealed message cannot be opened: wrong recipient key, not from the claimed sender, copied into another event, or tampered with")]
    Open,
    /// Sealing failed.
    #[error("sealing failed")]
    Seal,
}

/// What a sealed message is bound to (the associated data).
#[derive(Clone, Copy, Debug)]
pub struct MessageBinding<'a> {
    /// The sender's identity id (the actor of the carrying event).
    pub sender: &'a str,
    /// The recipient's identity id.
    pub recipient: &'a str,
    /// The id of the event that carries the box.
    pub event_id: &'a str,
}

impl MessageBinding<'_> {
    fn aad(&self) -> Vec<u8> {
        pae::pae(
            pae::MESSAGE_DOMAIN,
            format!("{}\n{}\n{}", self.sender, self.recipient, self.event_id).as_bytes(),
        )
    }
}

fn public(bytes: &[u8]) -> Result<PublicKey, SealError> {
    PublicKey::from_bytes(bytes).map_err(|_| SealError::BadKey)
}

fn private(bytes: &[u8; 32]) -> Result<PrivateKey, SealError> {
    PrivateKey::from_bytes(bytes).map_err(|_| SealError::BadKey)
}

/// Seals `plaintext` from the sender (its X25519 secret and public key) to the
/// recipient's X25519 key, bound to `binding`.
pub fn seal(
    sender_secret: &[u8; 32],
    sender_public: &[u8],
    recipient_public: &[u8],
    binding: MessageBinding<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let sender = (private(sender_secret)?, public(sender_public)?);
    let recipient = public(recipient_public)?;
    let mode = OpModeS::Auth(sender);
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, KemX, _>(
        &mode,
        &recipient,
        INFO,
        plaintext,
        &binding.aad(),
        &mut rand_core::OsRng,
    )
    .map_err(|_| SealError::Seal)?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a box with the recipient's X25519 secret, checking it was sealed by
/// the holder of `sender_public` and is bound to `binding`.
pub fn open(
    recipient_secret: &[u8; 32],
    sender_public: &[u8],
    binding: MessageBinding<'_>,
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    if sealed.len() < ENC_LEN {
        return Err(SealError::Open);
    }
    let (enc, ciphertext) = sealed.split_at(ENC_LEN);
    let enc = EncappedKey::from_bytes(enc).map_err(|_| SealError::Open)?;
    let mode = OpModeR::Auth(public(sender_public)?);
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, KemX>(
        &mode,
        &private(recipient_secret)?,
        &enc,
        INFO,
        ciphertext,
        &binding.aad(),
    )
    .map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdentityKeys;

    fn binding<'a>(sender: &'a str, recipient: &'a str, event: &'a str) -> MessageBinding<'a> {
        MessageBinding {
            sender,
            recipient,
            event_id: event,
        }
    }

    #[test]
    fn only_the_recipient_opens_what_the_sender_sealed_for_that_event() {
        let alice = IdentityKeys::generate();
        let bob = IdentityKeys::generate();
        let eve = IdentityKeys::generate();
        let b = binding("alice", "bob", "e1");
        let boxed = seal(
            &alice.x25519_secret_bytes(),
            &alice.x25519_public(),
            &bob.x25519_public(),
            b,
            b"hi bob",
        )
        .expect("seal");
        let open_as = |secret: &IdentityKeys, sender: &IdentityKeys, b| {
            open(
                &secret.x25519_secret_bytes(),
                &sender.x25519_public(),
                b,
                &boxed,
            )
        };
        assert_eq!(open_as(&bob, &alice, b).expect("open"), b"hi bob");
        // Another recipient key.
        assert!(matches!(open_as(&eve, &alice, b), Err(SealError::Open)));
        // Claimed to come from another sender (eve copies it as hers).
        assert!(matches!(open_as(&bob, &eve, b), Err(SealError::Open)));
        // Copied into another event, or relabelled sender/recipient.
        for other in [
            binding("alice", "bob", "e2"),
            binding("eve", "bob", "e1"),
            binding("alice", "carol", "e1"),
        ] {
            assert!(matches!(open_as(&bob, &alice, other), Err(SealError::Open)));
        }
    }
}
