//! `did:key` for Ed25519 keys (multicodec `0xed01`, base58btc), the same
//! rendering as `amai_core::keys::did_key`, and its inverse.

use ed25519_dalek::VerifyingKey;

const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];

/// Renders an Ed25519 public key as a `did:key`.
pub fn did_key(key: &VerifyingKey) -> String {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&ED25519_MULTICODEC);
    bytes.extend_from_slice(key.as_bytes());
    format!(
        "did:key:{}",
        multibase::encode(multibase::Base::Base58Btc, bytes)
    )
}

/// The verification method id of a `did:key`: `did:key:z6Mk...#z6Mk...`.
pub fn did_key_kid(key: &VerifyingKey) -> String {
    let did = did_key(key);
    let fragment = did.trim_start_matches("did:key:").to_owned();
    format!("{did}#{fragment}")
}

/// Resolves a `did:key` (optionally with its `#<fragment>`, which must then
/// repeat the method-specific id) to an Ed25519 public key.
pub fn resolve_did_key(kid: &str) -> Result<(String, VerifyingKey), String> {
    let (did, fragment) = match kid.split_once('#') {
        Some((d, f)) => (d, Some(f)),
        None => (kid, None),
    };
    let id = did
        .strip_prefix("did:key:")
        .ok_or_else(|| format!("{kid:?} is not a did:key"))?;
    if let Some(f) = fragment {
        if f != id {
            return Err(format!("{kid:?}: the fragment must repeat the key ({id})"));
        }
    }
    if !id.starts_with('z') {
        return Err(format!("{kid:?}: not base58btc (must start with z)"));
    }
    let (base, bytes) =
        multibase::decode(id).map_err(|e| format!("{kid:?}: not multibase: {e}"))?;
    if base != multibase::Base::Base58Btc {
        return Err(format!("{kid:?}: not base58btc"));
    }
    let key = bytes
        .strip_prefix(&ED25519_MULTICODEC)
        .ok_or_else(|| format!("{kid:?}: not an Ed25519 key (multicodec 0xed01)"))?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| format!("{kid:?}: an Ed25519 key is 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&key)
        .map_err(|_| format!("{kid:?}: not a valid Ed25519 point"))?;
    Ok((did.to_owned(), key))
}
