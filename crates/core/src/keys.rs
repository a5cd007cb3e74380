//! Identity key pairs: an Ed25519 signing key and an X25519 key for sealed
//! messages, their on-disk form, identity ids and `did:key` rendering.

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::OsRng;
use sha2::{Digest, Sha256};

use crate::pae;

/// An identity id: 32 lowercase hex characters, the first 16 bytes of the SHA-256
/// of the identity's *first* signing key. It never changes, even across rotations,
/// and nobody can register an id whose key they do not hold.
pub type IdentityId = String;

/// Derives the identity id from the genesis signing key.
pub fn identity_id(genesis_key: &VerifyingKey) -> IdentityId {
    hex::encode(&Sha256::digest(genesis_key.as_bytes())[..16])
}

/// Renders an Ed25519 public key as a W3C `did:key` (multicodec `0xed01`, base58btc).
pub fn did_key(key: &VerifyingKey) -> String {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&[0xed, 0x01]);
    bytes.extend_from_slice(key.as_bytes());
    format!(
        "did:key:{}",
        multibase::encode(multibase::Base::Base58Btc, bytes)
    )
}

/// Parses 32 bytes as an Ed25519 public key.
///
/// Parsing decompresses the curve point (a field exponentiation, a sizeable part
/// of a signature check), and the same few signers sign most events, so parsed
/// keys are kept in a small process-wide cache. It only ever holds the result of
/// `VerifyingKey::from_bytes` for the same bytes, so it cannot change an answer.
pub fn verifying_key(bytes: &[u8]) -> Option<VerifyingKey> {
    let arr: [u8; 32] = bytes.try_into().ok()?;
    static CACHE: std::sync::OnceLock<quick_cache::sync::Cache<[u8; 32], VerifyingKey>> =
        std::sync::OnceLock::new();
    const MAX_CACHED_KEYS: usize = 16_384;
    // Bounded: a flood of junk keys evicts the coldest entries, never the lot.
    let cache = CACHE.get_or_init(|| quick_cache::sync::Cache::new(MAX_CACHED_KEYS));
    if let Some(key) = cache.get(&arr) {
        return Some(key);
    }
    let key = VerifyingKey::from_bytes(&arr).ok()?;
    cache.insert(arr, key);
    Some(key)
}

/// Errors reading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid Amai key file.
    #[error("key file {path} is not a valid amai key file: {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    /// Hex of the 32-byte Ed25519 seed.
    signing_key: String,
    /// Hex of the 32-byte X25519 secret.
    x25519_key: String,
}

/// The secret keys of one identity.
#[derive(Clone)]
pub struct IdentityKeys {
    signing: SigningKey,
    x25519: crypto_box::SecretKey,
}

impl std::fmt::Debug for IdentityKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKeys")
            .field("public", &hex::encode(self.public_key().as_bytes()))
            .finish_non_exhaustive()
    }
}

impl IdentityKeys {
    /// Generates fresh keys from the OS random source.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(&mut OsRng),
            x25519: crypto_box::SecretKey::generate(&mut OsRng),
        }
    }

    /// Rebuilds keys from their secret bytes.
    pub fn from_secrets(signing_seed: [u8; 32], x25519_secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&signing_seed),
            x25519: crypto_box::SecretKey::from_bytes(x25519_secret),
        }
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The X25519 public key others seal messages to.
    pub fn x25519_public(&self) -> [u8; 32] {
        self.x25519.public_key().to_bytes()
    }

    /// The X25519 secret key, to open sealed messages.
    pub fn x25519_secret(&self) -> &crypto_box::SecretKey {
        &self.x25519
    }

    /// The X25519 secret key's bytes (for [`crate::seal`]).
    pub fn x25519_secret_bytes(&self) -> [u8; 32] {
        self.x25519.to_bytes()
    }

    /// The id an identity registered with these keys gets.
    pub fn identity_id(&self) -> IdentityId {
        identity_id(&self.public_key())
    }

    /// `did:key` of the signing key.
    pub fn did(&self) -> String {
        did_key(&self.public_key())
    }

    /// The Ed25519 signing key, for formats that are not Amai events and
    /// carry their own domain separation: a C2SP signed note (a checkpoint)
    /// signs text that starts with its origin line, which no PAE encoding
    /// (`DSSEv1 ...`) can equal.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Signs `body` under the PAE domain `domain`.
    pub fn sign(&self, domain: &str, body: &[u8]) -> [u8; 64] {
        self.signing.sign(&pae::pae(domain, body)).to_bytes()
    }

    /// Writes the keys to `path` (JSON, file mode 0600), refusing to overwrite.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = KeyFile {
            version: 1,
            signing_key: hex::encode(self.signing.to_bytes()),
            x25519_key: hex::encode(self.x25519.to_bytes()),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| KeyFileError::Invalid {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(path).map_err(io)?;
        std::io::Write::write_all(&mut f, &json).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads keys written by [`IdentityKeys::save`].
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let p = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| KeyFileError::Io {
            path: p.clone(),
            source,
        })?;
        let file: KeyFile = serde_json::from_slice(&data).map_err(|e| KeyFileError::Invalid {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        if file.version != 1 {
            return Err(KeyFileError::Invalid {
                path: p,
                detail: format!("unsupported version {}", file.version),
            });
        }
        let decode = |s: &str, what: &str| -> Result<[u8; 32], KeyFileError> {
            hex::decode(s)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| KeyFileError::Invalid {
                    path: p.clone(),
                    detail: format!("{what} must be 64 hex characters"),
                })
        };
        Ok(Self::from_secrets(
            decode(&file.signing_key, "signing_key")?,
            decode(&file.x25519_key, "x25519_key")?,
        ))
    }

    /// Loads the keys at `path`, generating and saving new ones if it does not exist.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyFileError> {
        if path.exists() {
            return Self::load(path);
        }
        let keys = Self::generate();
        keys.save(path)?;
        Ok(keys)
    }

    /// Signs an endorsement of `endorsed_key` for an identity of kind `kind_name`
    /// (`operator` or `service`) that may write the aggregate kinds `scopes`
    /// (services; empty for operators).
    pub fn endorse(
        &self,
        endorsed_key: &VerifyingKey,
        kind_name: &str,
        scopes: &[String],
    ) -> [u8; 64] {
        self.sign(
            pae::ENDORSEMENT_DOMAIN,
            &endorsement_body(endorsed_key, kind_name, scopes),
        )
    }

    /// The proof of possession a key rotation carries: this (new) key signs the
    /// rotation of `aggregate` at `aggregate_seq` from `old_key` to itself.
    pub fn rotation_proof(
        &self,
        aggregate: &str,
        aggregate_seq: u64,
        old_key: &VerifyingKey,
    ) -> [u8; 64] {
        self.sign(
            pae::ROTATION_DOMAIN,
            &rotation_body(
                aggregate,
                aggregate_seq,
                old_key,
                &self.public_key(),
                &self.x25519_public(),
            ),
        )
    }
}

/// The bytes an operator signs to endorse a key: the key, the kind, a newline and
/// the scopes joined by commas.
pub fn endorsement_body(
    endorsed_key: &VerifyingKey,
    kind_name: &str,
    scopes: &[String],
) -> Vec<u8> {
    let mut b = endorsed_key.as_bytes().to_vec();
    b.extend_from_slice(kind_name.as_bytes());
    b.push(b'\n');
    b.extend_from_slice(scopes.join(",").as_bytes());
    b
}

/// The bytes a new key signs to prove possession in a rotation.
pub fn rotation_body(
    aggregate: &str,
    aggregate_seq: u64,
    old_key: &VerifyingKey,
    new_key: &VerifyingKey,
    new_x25519: &[u8],
) -> Vec<u8> {
    format!(
        "{aggregate}\n{aggregate_seq}\n{}\n{}\n{}",
        hex::encode(old_key.as_bytes()),
        hex::encode(new_key.as_bytes()),
        hex::encode(new_x25519)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_key_has_the_ed25519_multicodec_prefix() {
        let keys = IdentityKeys::generate();
        let did = keys.did();
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        let decoded = multibase::decode(&did["did:key:".len()..])
            .expect("multibase")
            .1;
        assert_eq!(&decoded[..2], &[0xed, 0x01]);
        assert_eq!(&decoded[2..], keys.public_key().as_bytes());
    }

    #[test]
    fn key_files_round_trip_with_mode_0600_and_refuse_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.json");
        let keys = IdentityKeys::generate();
        keys.save(&path).expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
                0o600
            );
        }
        let loaded = IdentityKeys::load(&path).expect("load");
        assert_eq!(loaded.public_key(), keys.public_key());
        assert_eq!(loaded.x25519_public(), keys.x25519_public());
        assert!(keys.save(&path).is_err());
    }

    #[test]
    fn identity_id_is_stable_and_32_hex() {
        let keys = IdentityKeys::generate();
        assert_eq!(keys.identity_id().len(), 32);
        assert_eq!(keys.identity_id(), identity_id(&keys.public_key()));
    }
}
