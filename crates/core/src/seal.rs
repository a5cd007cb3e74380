//! Sealed message content: anonymous-sender sealed boxes (X25519 + XSalsa20-Poly1305,
//! libsodium `crypto_box_seal` compatible) to the recipient's X25519 key. The
//! sender's authenticity comes from the signed event that carries the box.

/// Why a sealed box could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The recipient key is not 32 bytes.
    #[error("recipient X25519 key must be 32 bytes")]
    BadKey,
    /// Wrong key, or the ciphertext was tampered with.
    #[error("sealed box cannot be opened with this key (wrong recipient or tampered content)")]
    Open,
    /// Sealing failed.
    #[error("sealing failed")]
    Seal,
}

/// Seals `plaintext` to `recipient_x25519`.
pub fn seal(recipient_x25519: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let key: [u8; 32] = recipient_x25519.try_into().map_err(|_| SealError::BadKey)?;
    crypto_box::PublicKey::from_bytes(key)
        .seal(&mut rand_core::OsRng, plaintext)
        .map_err(|_| SealError::Seal)
}

/// Opens a sealed box with the recipient's secret key.
pub fn open(secret: &crypto_box::SecretKey, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    secret.unseal(sealed).map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdentityKeys;

    #[test]
    fn only_the_recipient_opens_a_sealed_box() {
        let bob = IdentityKeys::generate();
        let eve = IdentityKeys::generate();
        let boxed = seal(&bob.x25519_public(), b"hi bob").expect("seal");
        assert_eq!(open(bob.x25519_secret(), &boxed).expect("open"), b"hi bob");
        assert!(matches!(
            open(eve.x25519_secret(), &boxed),
            Err(SealError::Open)
        ));
    }
}
