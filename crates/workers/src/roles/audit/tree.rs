//! One stream's RFC 9162 Merkle tree, stored in a sled tree of the audit
//! role's instance: every complete subtree's hash (`amai_merkle::NodeId`
//! keys), the number of leaves, and the stream sequences that held no message
//! when the tree was built (gaps).
//!
//! Leaf `i` is the message at stream sequence `i + 1`, its leaf hash
//! `leaf_hash(event hash)`; a gap's leaf is `leaf_hash([0; 32])`. Leaves are
//! appended a batch at a time: the batch's nodes, the new size and its gaps are
//! written in one atomic sled batch, so a crash leaves the tree at a batch
//! boundary and the builder resumes at `size + 1`: no leaf is ever appended
//! twice or skipped.

use amai_merkle::{Hash, NodeId, NodeReader, StoredTreeError};

/// Key of the number of leaves.
const SIZE_KEY: &[u8] = b"m/size";
/// Key of the number of gaps.
const GAPS_KEY: &[u8] = b"m/gaps";
/// Prefix of node keys (then `NodeId::to_key`).
const NODE_PREFIX: u8 = b'n';
/// Prefix of gap keys (then the stream sequence, big-endian).
const GAP_PREFIX: &[u8] = b"g/";
/// Prefix of witness cosignatures found in this stream (AMAI_AGENTS holds
/// them): then `<origin>\0<size BE>\0<witness name>`.
const COSIGNATURE_PREFIX: &[u8] = b"w/";

/// A witness's cosignature, as recorded on its chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundCosignature {
    /// The checkpoint's origin.
    pub origin: String,
    /// Its size.
    pub size: u64,
    /// The witness's key name.
    pub witness: String,
    /// The witness's C2SP verifier key.
    pub vkey: String,
    /// The signature line.
    pub line: String,
}

fn cosignature_prefix(origin: &str, size: u64) -> Vec<u8> {
    let mut k = COSIGNATURE_PREFIX.to_vec();
    k.extend_from_slice(origin.as_bytes());
    k.push(0);
    k.extend_from_slice(&size.to_be_bytes());
    k.push(0);
    k
}

/// The leaf of a stream sequence that held no message.
pub const GAP_LEAF: Hash = [0u8; 32];

/// Why the stored tree could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// sled failed.
    #[error("audit tree storage: {0}")]
    Storage(#[from] sled::Error),
    /// A stored value has the wrong shape (a corrupt store).
    #[error("audit tree of {stream} is corrupt: {detail}")]
    Corrupt {
        /// The stream.
        stream: String,
        /// What is wrong.
        detail: String,
    },
    /// A proof or root could not be computed.
    #[error("{0}")]
    Proof(#[from] StoredTreeError<sled::Error>),
}

/// A stream's stored tree.
#[derive(Clone, Debug)]
pub struct StreamTree {
    stream: String,
    tree: sled::Tree,
}

/// Reads nodes from the sled tree.
struct SledNodes<'a>(&'a sled::Tree);

impl NodeReader for SledNodes<'_> {
    type Error = sled::Error;

    fn node(&self, id: NodeId) -> Result<Option<Hash>, sled::Error> {
        Ok(self
            .0
            .get(node_key(id))?
            .and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok()))
    }
}

fn node_key(id: NodeId) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = NODE_PREFIX;
    k[1..].copy_from_slice(&id.to_key());
    k
}

fn u64_value(v: Option<sled::IVec>, what: &str, stream: &str) -> Result<u64, TreeError> {
    match v {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| TreeError::Corrupt {
                stream: stream.to_string(),
                detail: format!("{what} is not 8 bytes"),
            }),
    }
}

impl StreamTree {
    /// The tree of `stream` in `db` (sled tree `audit/<stream>`).
    pub fn open(db: &sled::Db, stream: &str) -> Result<Self, TreeError> {
        Ok(Self {
            stream: stream.to_string(),
            tree: db.open_tree(format!("audit/{stream}"))?,
        })
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The number of leaves.
    pub fn size(&self) -> Result<u64, TreeError> {
        u64_value(self.tree.get(SIZE_KEY)?, "the size", &self.stream)
    }

    /// How many stream sequences were found empty.
    pub fn gap_count(&self) -> Result<u64, TreeError> {
        u64_value(self.tree.get(GAPS_KEY)?, "the gap count", &self.stream)
    }

    /// The gaps among the first `size` leaves (stream sequences), ascending.
    pub fn gaps_within(&self, size: u64) -> Result<Vec<u64>, TreeError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(GAP_PREFIX) {
            let (k, _) = kv?;
            let seq = <[u8; 8]>::try_from(&k[GAP_PREFIX.len()..])
                .map(u64::from_be_bytes)
                .map_err(|_| TreeError::Corrupt {
                    stream: self.stream.clone(),
                    detail: "a gap key is not a sequence".into(),
                })?;
            if seq > size {
                break;
            }
            out.push(seq);
        }
        Ok(out)
    }

    /// Appends leaves for the stream sequences `size + 1 ..= last`, given the
    /// event hashes of the messages that exist among them (ascending
    /// sequences; a missing sequence becomes a gap). Atomic.
    pub fn append(
        &self,
        messages: &[(u64, Hash)],
        cosignatures: &[FoundCosignature],
    ) -> Result<u64, TreeError> {
        let size = self.size()?;
        let mut leaves = Vec::with_capacity(messages.len());
        let mut gaps = Vec::new();
        let mut next = size + 1;
        for (seq, hash) in messages {
            if *seq < next {
                continue; // already in the tree (a replay overlap)
            }
            while next < *seq {
                gaps.push(next);
                leaves.push(amai_merkle::leaf_hash(&GAP_LEAF));
                next += 1;
            }
            leaves.push(amai_merkle::leaf_hash(hash));
            next += 1;
        }
        if leaves.is_empty() {
            return Ok(size);
        }
        let nodes = amai_merkle::append_leaves(&SledNodes(&self.tree), size, &leaves)?;
        let mut batch = sled::Batch::default();
        for (id, hash) in nodes {
            batch.insert(&node_key(id)[..], &hash[..]);
        }
        for g in &gaps {
            let mut k = GAP_PREFIX.to_vec();
            k.extend_from_slice(&g.to_be_bytes());
            batch.insert(k, &[][..]);
        }
        for c in cosignatures {
            let mut k = cosignature_prefix(&c.origin, c.size);
            k.extend_from_slice(c.witness.as_bytes());
            batch.insert(k, format!("{}\n{}", c.vkey, c.line).as_bytes());
        }
        let new_size = size + leaves.len() as u64;
        batch.insert(SIZE_KEY, &new_size.to_be_bytes()[..]);
        if !gaps.is_empty() {
            let count = self.gap_count()? + gaps.len() as u64;
            batch.insert(GAPS_KEY, &count.to_be_bytes()[..]);
        }
        self.tree.apply_batch(batch)?;
        Ok(new_size)
    }

    /// The cosignatures of the checkpoint (`origin`, `size`) found in this
    /// stream, one per witness name (unverified: whoever uses them checks
    /// them against the witness keys it trusts).
    pub fn cosignatures(
        &self,
        origin: &str,
        size: u64,
    ) -> Result<Vec<FoundCosignature>, TreeError> {
        let prefix = cosignature_prefix(origin, size);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let witness = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let v = String::from_utf8_lossy(&v).into_owned();
            if let Some((vkey, line)) = v.split_once('\n') {
                out.push(FoundCosignature {
                    origin: origin.to_string(),
                    size,
                    witness,
                    vkey: vkey.to_string(),
                    line: line.to_string(),
                });
            }
        }
        Ok(out)
    }

    /// The root of the tree of the first `tree_size` leaves.
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, TreeError> {
        let stored = self.size()?;
        Ok(amai_merkle::root_at(
            &SledNodes(&self.tree),
            stored,
            tree_size,
        )?)
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Result<Option<Hash>, TreeError> {
        Ok(SledNodes(&self.tree).node(NodeId { level: 0, index })?)
    }

    /// RFC 9162 inclusion proof of leaf `index` in the tree of `tree_size`.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, TreeError> {
        let stored = self.size()?;
        Ok(amai_merkle::inclusion_proof_at(
            &SledNodes(&self.tree),
            stored,
            index,
            tree_size,
        )?)
    }

    /// RFC 9162 consistency proof from `old_size` to `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, TreeError> {
        let stored = self.size()?;
        Ok(amai_merkle::consistency_proof_at(
            &SledNodes(&self.tree),
            stored,
            old_size,
            new_size,
        )?)
    }
}
