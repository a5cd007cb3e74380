//! Crate-private encodings of what the runner and the read models keep in sled:
//! big-endian integers (so keys sort numerically) and a JSON form of
//! [`IdentityState`] (which is not serde-aware itself).

use std::collections::BTreeMap;

use amai_bus::identity::{identity_kind, IdentityState, KeyRecord, Millis};
use amai_bus::keys;
use serde::{Deserialize, Serialize};

/// Encodes a u64 so that byte order is numeric order.
pub(crate) fn u64_bytes(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Decodes [`u64_bytes`]; anything else reads as 0.
pub(crate) fn read_u64(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Concatenates key parts.
pub(crate) fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    signing_key: [u8; 32],
    x25519_key: [u8; 32],
    from_seq: u64,
    until_seq: Option<u64>,
    valid_from: Millis,
    valid_until: Option<Millis>,
}

/// The serde form of an [`IdentityState`].
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredIdentity {
    id: String,
    name: String,
    kind: i32,
    metadata: BTreeMap<String, String>,
    keys: Vec<StoredKey>,
    revoked: Option<(u64, Millis, String)>,
    #[serde(default)]
    scopes: Vec<String>,
    head_seq: u64,
    head_hash: [u8; 32],
    registered_at: Millis,
    #[serde(default)]
    genesis_hash: [u8; 32],
}

impl StoredIdentity {
    pub(crate) fn from_state(s: &IdentityState) -> Self {
        Self {
            id: s.id.clone(),
            name: s.name.clone(),
            kind: s.kind as i32,
            metadata: s.metadata.clone(),
            keys: s
                .keys
                .iter()
                .map(|k| StoredKey {
                    signing_key: k.signing_key.to_bytes(),
                    x25519_key: k.x25519_key,
                    from_seq: k.from_seq,
                    until_seq: k.until_seq,
                    valid_from: k.valid_from,
                    valid_until: k.valid_until,
                })
                .collect(),
            revoked: s.revoked.clone(),
            scopes: s.scopes.clone(),
            genesis_hash: s.genesis_hash,
            head_seq: s.head_seq,
            head_hash: s.head_hash,
            registered_at: s.registered_at,
        }
    }

    pub(crate) fn to_state(&self) -> Result<IdentityState, String> {
        let mut keys_out = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            let signing_key = keys::verifying_key(&k.signing_key)
                .ok_or_else(|| format!("stored key of {} is not an Ed25519 key", self.id))?;
            keys_out.push(KeyRecord {
                signing_key,
                x25519_key: k.x25519_key,
                from_seq: k.from_seq,
                until_seq: k.until_seq,
                valid_from: k.valid_from,
                valid_until: k.valid_until,
            });
        }
        if keys_out.is_empty() {
            return Err(format!("stored identity {} has no keys", self.id));
        }
        Ok(IdentityState {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: identity_kind(self.kind),
            metadata: self.metadata.clone(),
            keys: keys_out,
            revoked: self.revoked.clone(),
            scopes: self.scopes.clone(),
            genesis_hash: self.genesis_hash,
            head_seq: self.head_seq,
            head_hash: self.head_hash,
            registered_at: self.registered_at,
        })
    }
}

/// The runner's verification state of one aggregate.
#[derive(Serialize, Deserialize)]
pub(crate) struct ChainState {
    /// Aggregate sequence of the last valid event.
    pub(crate) seq: u64,
    /// Its hash.
    pub(crate) hash: [u8; 32],
    /// For identity chains: the folded identity.
    pub(crate) identity: Option<StoredIdentity>,
}

impl ChainState {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Invariant: plain data always serializes (see encode_identity).
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("undecodable chain state: {e}"))
    }
}
