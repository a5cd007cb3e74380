//! The blob store: large payloads (LLM bodies, diffs, logs) in a JetStream object
//! store, keyed by the hex SHA-256 of their content. Events carry only the digest
//! and size; readers verify the digest of what they get back.

use async_nats::jetstream::{self, object_store};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// The object store bucket name.
pub const BLOB_BUCKET: &str = "AMAI_BLOBS";

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob with that digest.
    #[error("no blob with digest {0}")]
    NotFound(String),
    /// The stored content does not hash to its key.
    #[error("blob {0} failed digest verification: stored content is corrupt")]
    DigestMismatch(String),
    /// NATS failed.
    #[error("blob store: {0}")]
    Nats(String),
}

/// A reference to a stored blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

impl BlobRef {
    /// The object name: lowercase hex of the digest.
    pub fn key(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Content-addressed blobs on a JetStream object store.
#[derive(Clone)]
pub struct BlobStore {
    store: object_store::ObjectStore,
    threshold: usize,
}

impl BlobStore {
    /// Opens (creating if needed) the blob bucket. Payloads above `threshold`
    /// bytes should be stored here rather than inline ([`BlobStore::should_offload`]).
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        threshold: usize,
    ) -> Result<Self, BlobError> {
        let store = match js.get_object_store(BLOB_BUCKET).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: BLOB_BUCKET.to_string(),
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| BlobError::Nats(e.to_string()))?,
        };
        Ok(Self { store, threshold })
    }

    /// Whether a payload of `len` bytes belongs in the blob store.
    pub fn should_offload(&self, len: usize) -> bool {
        len > self.threshold
    }

    /// Stores `data` (idempotent: the same content maps to the same key).
    pub async fn put(&self, data: &[u8]) -> Result<BlobRef, BlobError> {
        let r = BlobRef {
            sha256: Sha256::digest(data).into(),
            size: data.len() as u64,
        };
        if self.store.info(r.key()).await.is_ok() {
            return Ok(r);
        }
        let mut reader = data;
        self.store
            .put(r.key().as_str(), &mut reader)
            .await
            .map_err(|e| BlobError::Nats(e.to_string()))?;
        Ok(r)
    }

    /// Fetches a blob by digest and verifies it.
    pub async fn get(&self, sha256: &[u8; 32]) -> Result<Vec<u8>, BlobError> {
        let key = hex::encode(sha256);
        let mut obj = self.store.get(&key).await.map_err(|e| {
            if e.kind() == object_store::GetErrorKind::NotFound {
                BlobError::NotFound(key.clone())
            } else {
                BlobError::Nats(e.to_string())
            }
        })?;
        let mut data = Vec::new();
        obj.read_to_end(&mut data)
            .await
            .map_err(|e| BlobError::Nats(e.to_string()))?;
        if <[u8; 32]>::from(Sha256::digest(&data)) != *sha256 {
            return Err(BlobError::DigestMismatch(key));
        }
        Ok(data)
    }
}
