//! The Merkle tree kept as stored nodes: how the audit role appends leaves to
//! a tree that lives in a key-value store and answers roots, inclusion
//! proofs and consistency proofs at any size up to the stored one without
//! recomputing the tree.
//!
//! This module owns:
//!
//! - the node addressing [`NodeId`] (`level`, `index`: the root of the
//!   complete subtree over leaves `[index << level, (index + 1) << level)`;
//!   level 0 nodes are the leaf hashes) and its key encoding
//!   ([`NodeId::to_key`], [`NodeId::from_key`]);
//! - the read side of a store, [`NodeReader`] (a key-value lookup), and an
//!   in-memory store, [`MemNodes`];
//! - [`append_leaves`], which says which nodes to write when leaves are
//!   appended (only complete subtrees are ever stored, and a stored node
//!   never changes: the tree is append-only);
//! - [`root_at`], [`inclusion_proof_at`] and [`consistency_proof_at`], which
//!   give the same bytes as [`root`](crate::root),
//!   [`inclusion_proof`](crate::inclusion_proof) and
//!   [`consistency_proof`](crate::consistency_proof) over the first
//!   `tree_size` leaves, for any `tree_size` up to the stored size (the nodes
//!   of a past size are a subset of the stored ones);
//! - their errors, [`StoredTreeError`] and its [`StoredTreeErrorKind`].
//!
//! Writing the nodes, and remembering the stored size, is the caller's job:
//! every function takes the size the caller has stored and trusts that all
//! complete nodes of that size are readable. A node that should be there and
//! is not is reported as [`StoredTreeErrorKind::MissingNode`] (a corrupt
//! store, or a stored size larger than what was written).
//!
//! ## How many nodes a query reads
//!
//! Let `D = ⌈log2 tree_size⌉`, the number of levels of the RFC recursion.
//! Every subtree that recursion hashes is either complete (one stored node)
//! or the right border `[a, tree_size)` of the tree, whose hash is that of
//! the complete subtrees given by the binary digits of `tree_size − a` (one
//! read per set bit). A proof touches the right border at most once: where
//! the leaf's (or the old tree's) path leaves it, at a split of `2^j` leaves.
//! The `D − 1 − j` levels above give one complete node each, that border
//! piece (shorter than `2^j`) at most `j` reads, and the `j` levels below
//! one each again, plus one for the consistency proof's starting node:
//! `D − 1 + j ≤ 2D − 2` reads (`2D − 1` for consistency). A proof that never
//! touches the border reads one node per level, at most `D` (`D + 1`).
//! [`append_leaves`] reads, per level, the stored left sibling of the
//! batch's first new node if it has one: at most one node per set bit of
//! the old size.
//!
//! Hence these bounds on [`NodeReader::node`] calls (no node is read twice
//! in one call). The tests assert them, and check that for every `D` from 2
//! to 6 some tree and index (or old size) reaches them:
//!
//! | query | node reads |
//! |---|---|
//! | [`root_at`] | `popcount(tree_size)` (≤ `D`, 1 for a single leaf, 0 for the empty tree) |
//! | [`inclusion_proof_at`] | ≤ `max(D, 2D − 2)` |
//! | [`consistency_proof_at`] | ≤ `max(D + 1, 2D − 1)` (0 for equal sizes) |
//! | [`append_leaves`] | ≤ `popcount(size)` per batch, whatever its length |
//!
//! So for a million leaves (`D = 20`): a root reads at most 20 nodes, an
//! inclusion proof 38, a consistency proof 39. Hashing is one node hash per
//! extra node read, beyond the hashes the proof itself holds.
//!
//! ```
//! use amai_merkle::stored::{
//!     append_leaves, consistency_proof_at, inclusion_proof_at, root_at, MemNodes,
//! };
//! use amai_merkle::{leaf_hash, root, verify_consistency, verify_inclusion};
//!
//! let leaves: Vec<_> = (0u32..10).map(|i| leaf_hash(&i.to_be_bytes())).collect();
//!
//! // Two batches: 6 leaves, then 4 more. The caller keeps the stored size.
//! let mut store = MemNodes::new();
//! let mut stored = 0;
//! for batch in [&leaves[..6], &leaves[6..]] {
//!     let nodes = append_leaves(&store, stored, batch)?;
//!     store.insert_all(nodes);
//!     stored += batch.len() as u64;
//! }
//!
//! // The current root and a past one, the same as over the leaves in memory.
//! let new_root = root_at(&store, stored, 10)?;
//! let old_root = root_at(&store, stored, 7)?;
//! assert_eq!(new_root, root(&leaves));
//! assert_eq!(old_root, root(&leaves[..7]));
//!
//! let proof = inclusion_proof_at(&store, stored, 3, 10)?;
//! verify_inclusion(&leaves[3], 3, 10, &proof, &new_root)?;
//!
//! let proof = consistency_proof_at(&store, stored, 7, 10)?;
//! verify_consistency(7, 10, &old_root, &new_root, &proof)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use crate::{empty_root, node_hash, Hash};

/// The root of the complete subtree over leaves
/// `[index << level, (index + 1) << level)`: level 0 nodes are the leaf hashes
/// (already [`leaf_hash`](crate::leaf_hash)ed), a level `l` node hashes two
/// level `l − 1` nodes. Only complete subtrees have a `NodeId`.
///
/// The derived order (level, then index) is that of [`NodeId::to_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// The height of the subtree: it covers `2^level` leaves.
    pub level: u8,
    /// The position of the subtree among those of its level, from the left.
    pub index: u64,
}

impl NodeId {
    /// The length of [`NodeId::to_key`].
    pub const KEY_LEN: usize = 9;

    /// A stable key for key-value stores: the level byte, then the index
    /// big-endian, so that keys sort by level then index and a prefix scan
    /// over one level byte walks that level in leaf order.
    pub fn to_key(&self) -> [u8; 9] {
        let mut key = [0; Self::KEY_LEN];
        key[0] = self.level;
        key[1..].copy_from_slice(&self.index.to_be_bytes());
        key
    }

    /// The inverse of [`NodeId::to_key`]: `None` for a key that is not 9
    /// bytes or whose level is above 63 (no tree of `u64` size has a
    /// complete subtree of `2^64` leaves).
    pub fn from_key(key: &[u8]) -> Option<NodeId> {
        let (&level, index) = key.split_first()?;
        let index: [u8; 8] = index.try_into().ok()?;
        (level < 64).then(|| NodeId {
            level,
            index: u64::from_be_bytes(index),
        })
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // u128: the first leaf past the subtree can be 2^64.
        let first = u128::from(self.index) << self.level;
        let end = (u128::from(self.index) + 1) << self.level;
        write!(
            f,
            "level {} index {} (leaves {first}..{end})",
            self.level, self.index
        )
    }
}

/// The read side of a node store: a key-value lookup from [`NodeId`] to the
/// node's hash (the audit role implements it over sled, keyed by
/// [`NodeId::to_key`]; [`MemNodes`] is the in-memory one).
///
/// `Ok(None)` means the store has no such node; the functions of this module
/// only ask for nodes that must be there, so they report it as
/// [`StoredTreeErrorKind::MissingNode`]. `Err` is a failure of the store
/// itself, reported as [`StoredTreeErrorKind::Storage`].
pub trait NodeReader {
    /// The store's own error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The hash of node `id`, if the store has it.
    fn node(&self, id: NodeId) -> Result<Option<Hash>, Self::Error>;
}

/// An in-memory node store, for tests and small tools: a
/// `HashMap<NodeId, Hash>` that never fails to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemNodes {
    nodes: HashMap<NodeId, Hash>,
}

impl MemNodes {
    /// An empty store (the tree of size 0 has no nodes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores nodes, typically those [`append_leaves`] returned. A node
    /// already there is overwritten.
    pub fn insert_all(&mut self, nodes: impl IntoIterator<Item = (NodeId, Hash)>) {
        self.nodes.extend(nodes);
    }

    /// Removes a node and returns its hash (to simulate a damaged store).
    pub fn remove(&mut self, id: NodeId) -> Option<Hash> {
        self.nodes.remove(&id)
    }

    /// The number of nodes stored: `2n − popcount(n)` for a tree of `n`
    /// leaves.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is stored.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl NodeReader for MemNodes {
    type Error = std::convert::Infallible;

    fn node(&self, id: NodeId) -> Result<Option<Hash>, Self::Error> {
        Ok(self.nodes.get(&id).copied())
    }
}

/// Why a stored-tree operation failed; [`StoredTreeError::kind`] gives what
/// to match on. `E` is the [`NodeReader`]'s error.
///
/// When a request is wrong in several ways the first of these checks wins:
/// the size against the stored size, then what the in-memory function
/// checks, in its order.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoredTreeError<E> {
    /// The index is not that of a leaf of the tree (this includes every
    /// index for size 0); as [`InclusionProofError::IndexBeyondSize`](crate::InclusionProofError::IndexBeyondSize).
    #[error("leaf index {index} is beyond the tree of size {tree_size}")]
    IndexBeyondSize {
        /// The requested index.
        index: u64,
        /// The requested tree size.
        tree_size: u64,
    },
    /// The requested tree is larger than the stored one.
    #[error("tree size {tree_size} is beyond the {stored} leaves stored")]
    SizeBeyondStored {
        /// The requested tree size.
        tree_size: u64,
        /// The stored size the caller gave.
        stored: u64,
    },
    /// RFC 9162 defines no consistency proof from the empty tree; as
    /// [`ConsistencyProofError::OldSizeZero`](crate::ConsistencyProofError::OldSizeZero).
    #[error("no consistency proof from the empty tree")]
    OldSizeZero,
    /// The old tree is larger than the new one; as
    /// [`ConsistencyProofError::OldSizeBeyondSize`](crate::ConsistencyProofError::OldSizeBeyondSize).
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeBeyondNew {
        /// The requested old size.
        old_size: u64,
        /// The requested new size.
        new_size: u64,
    },
    /// The appended tree would have more than `u64::MAX` leaves.
    #[error("appending {added} leaves to a tree of {size} overflows the tree size")]
    SizeOverflow {
        /// The stored size.
        size: u64,
        /// The number of leaves to append.
        added: usize,
    },
    /// The store does not have a node that is complete in the stored tree:
    /// the store is corrupt (or the stored size given is wrong).
    #[error("node {0} is missing from the store, though complete in the stored tree")]
    MissingNode(NodeId),
    /// The store failed to read a node.
    #[error("reading node {node} from the store failed")]
    Storage {
        /// The node being read.
        node: NodeId,
        /// The store's error.
        #[source]
        source: E,
    },
}

/// The kinds of [`StoredTreeError`], with their numbers, to match on (the
/// store's error itself stays in the [`StoredTreeError::Storage`] variant
/// and is its `source()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoredTreeErrorKind {
    /// See [`StoredTreeError::IndexBeyondSize`].
    IndexBeyondSize {
        /// The requested index.
        index: u64,
        /// The requested tree size.
        tree_size: u64,
    },
    /// See [`StoredTreeError::SizeBeyondStored`].
    SizeBeyondStored {
        /// The requested tree size.
        tree_size: u64,
        /// The stored size the caller gave.
        stored: u64,
    },
    /// See [`StoredTreeError::OldSizeZero`].
    OldSizeZero,
    /// See [`StoredTreeError::OldSizeBeyondNew`].
    OldSizeBeyondNew {
        /// The requested old size.
        old_size: u64,
        /// The requested new size.
        new_size: u64,
    },
    /// See [`StoredTreeError::SizeOverflow`].
    SizeOverflow {
        /// The stored size.
        size: u64,
        /// The number of leaves to append.
        added: usize,
    },
    /// See [`StoredTreeError::MissingNode`].
    MissingNode(NodeId),
    /// See [`StoredTreeError::Storage`].
    Storage {
        /// The node being read.
        node: NodeId,
    },
}

impl<E> StoredTreeError<E> {
    /// The kind of failure.
    pub fn kind(&self) -> StoredTreeErrorKind {
        use StoredTreeErrorKind as K;
        match *self {
            Self::IndexBeyondSize { index, tree_size } => K::IndexBeyondSize { index, tree_size },
            Self::SizeBeyondStored { tree_size, stored } => {
                K::SizeBeyondStored { tree_size, stored }
            }
            Self::OldSizeZero => K::OldSizeZero,
            Self::OldSizeBeyondNew { old_size, new_size } => {
                K::OldSizeBeyondNew { old_size, new_size }
            }
            Self::SizeOverflow { size, added } => K::SizeOverflow { size, added },
            Self::MissingNode(id) => K::MissingNode(id),
            Self::Storage { node, .. } => K::Storage { node },
        }
    }
}

/// Reads a node that must be in the store.
fn read<R: NodeReader>(reader: &R, id: NodeId) -> Result<Hash, StoredTreeError<R::Error>> {
    match reader.node(id) {
        Ok(Some(hash)) => Ok(hash),
        Ok(None) => Err(StoredTreeError::MissingNode(id)),
        Err(source) => Err(StoredTreeError::Storage { node: id, source }),
    }
}

/// Refuses a tree larger than the stored one.
fn check_stored<E>(stored: u64, tree_size: u64) -> Result<(), StoredTreeError<E>> {
    if tree_size > stored {
        Err(StoredTreeError::SizeBeyondStored { tree_size, stored })
    } else {
        Ok(())
    }
}

/// The nodes to write so that the tree of `size + new_leaf_hashes.len()`
/// leaves has all its complete subtrees stored, given a tree of `size`
/// leaves whose complete subtrees are all readable through `reader`: the new
/// leaves (level 0, in order), then the nodes they complete, level by level.
///
/// The whole batch is hashed at once (nodes completed within the batch are
/// taken from the batch, not from the store), and the only nodes read are
/// the stored left siblings of the batch's first nodes: at most
/// `popcount(size)` reads per call, whatever the batch length. Nothing is
/// written: the caller stores the returned nodes (in one transaction if it
/// can) and then records the new size. Appending no leaf returns no node.
pub fn append_leaves<R: NodeReader>(
    reader: &R,
    size: u64,
    new_leaf_hashes: &[Hash],
) -> Result<Vec<(NodeId, Hash)>, StoredTreeError<R::Error>> {
    let new_size = u64::try_from(new_leaf_hashes.len())
        .ok()
        .and_then(|added| size.checked_add(added))
        .ok_or(StoredTreeError::SizeOverflow {
            size,
            added: new_leaf_hashes.len(),
        })?;

    let mut out = Vec::with_capacity(new_leaf_hashes.len().saturating_mul(2));
    // The new complete nodes of the current level: `hashes[i]` is node
    // (`level`, `first + i`). New nodes of level l are those with index in
    // [size >> l, new_size >> l): complete now (their end <= new_size) but
    // not before (their end > size).
    let mut level: u8 = 0;
    let mut first = size;
    let mut hashes = new_leaf_hashes.to_vec();
    out.extend(hashes.iter().zip(first..).map(|(hash, index)| {
        let id = NodeId { level, index };
        (id, *hash)
    }));
    // A level 63 node covers 2^63 leaves, no tree of u64 size completes a
    // level 64 one (and `>> 64` would overflow).
    while level < 63 {
        let up = level + 1;
        let (up_first, up_end) = (size >> up, new_size >> up);
        if up_first == up_end {
            break;
        }
        // The first new parent's children start at 2 * up_first, which is
        // `first - 1` when `first` is odd: that left child was complete in
        // the old tree, it is the one node this level reads.
        let stored_left = if first & 1 == 1 {
            Some(read(
                reader,
                NodeId {
                    level,
                    index: first - 1,
                },
            )?)
        } else {
            None
        };
        let mut children = stored_left.iter().chain(hashes.iter());
        let mut parents = Vec::with_capacity(hashes.len() / 2 + 1);
        // A trailing odd child has no complete parent yet.
        while let (Some(left), Some(right)) = (children.next(), children.next()) {
            parents.push(node_hash(left, right));
        }
        debug_assert_eq!(parents.len() as u64, up_end - up_first);
        out.extend(parents.iter().zip(up_first..).map(|(hash, index)| {
            let id = NodeId { level: up, index };
            (id, *hash)
        }));
        level = up;
        first = up_first;
        hashes = parents;
    }
    Ok(out)
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle Tree Hash of leaves `[start, start + len)`, for a range the
/// RFC recursion hashes: `start` is a multiple of a power of two `>= len`
/// (a complete subtree, or the right border of the tree). Its hash is that
/// of the complete subtrees given by the binary digits of `len`, largest
/// first, folded from the right; it reads `popcount(len)` nodes. The empty
/// range is the empty tree.
fn range_root<R: NodeReader>(
    reader: &R,
    start: u64,
    len: u64,
) -> Result<Hash, StoredTreeError<R::Error>> {
    let mut acc: Option<Hash> = None;
    // Right to left: the lowest set bit is the rightmost subtree.
    let mut end = start + len;
    for level in 0..u64::BITS as u8 {
        if len >> level & 1 == 1 {
            end -= 1 << level;
            debug_assert_eq!(end % (1 << level), 0, "range not aligned");
            let id = NodeId {
                level,
                index: end >> level,
            };
            let hash = read(reader, id)?;
            acc = Some(match acc {
                None => hash,
                Some(right) => node_hash(&hash, &right),
            });
        }
    }
    Ok(acc.unwrap_or_else(empty_root))
}

/// The Merkle Tree Hash of the first `tree_size` leaves, the same as
/// [`root`](crate::root) over them, from the `stored` leaves' nodes. Reads
/// `popcount(tree_size)` nodes; the empty tree reads none.
pub fn root_at<R: NodeReader>(
    reader: &R,
    stored: u64,
    tree_size: u64,
) -> Result<Hash, StoredTreeError<R::Error>> {
    check_stored(stored, tree_size)?;
    range_root(reader, 0, tree_size)
}

/// The inclusion proof (RFC 9162 §2.1.3.1 PATH) of the leaf at `index` in
/// the tree of the first `tree_size` leaves, the same as
/// [`inclusion_proof`](crate::inclusion_proof) over them, from the `stored`
/// leaves' nodes. Reads at most `max(D, 2D − 2)` nodes, `D = ⌈log2 tree_size⌉`.
pub fn inclusion_proof_at<R: NodeReader>(
    reader: &R,
    stored: u64,
    index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, StoredTreeError<R::Error>> {
    check_stored(stored, tree_size)?;
    if index >= tree_size {
        return Err(StoredTreeError::IndexBeyondSize { index, tree_size });
    }
    let mut proof = Vec::new();
    path(reader, index, 0, tree_size, &mut proof)?;
    Ok(proof)
}

/// PATH(m, D[start:start+len]): appends bottom-up, so recursion comes first.
fn path<R: NodeReader>(
    reader: &R,
    m: u64,
    start: u64,
    len: u64,
    out: &mut Vec<Hash>,
) -> Result<(), StoredTreeError<R::Error>> {
    if len <= 1 {
        return Ok(());
    }
    let k = split_point(len);
    if m < k {
        path(reader, m, start, k, out)?;
        out.push(range_root(reader, start + k, len - k)?);
    } else {
        path(reader, m - k, start + k, len - k, out)?;
        out.push(range_root(reader, start, k)?);
    }
    Ok(())
}

/// The consistency proof (RFC 9162 §2.1.4.1 PROOF) between the trees of the
/// first `old_size` and the first `new_size` leaves, the same as
/// [`consistency_proof`](crate::consistency_proof) over the first
/// `new_size` leaves, from the `stored` leaves' nodes. Equal sizes give the
/// empty proof. Reads at most `max(D + 1, 2D − 1)` nodes,
/// `D = ⌈log2 new_size⌉`.
pub fn consistency_proof_at<R: NodeReader>(
    reader: &R,
    stored: u64,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, StoredTreeError<R::Error>> {
    check_stored(stored, new_size)?;
    if old_size == 0 {
        return Err(StoredTreeError::OldSizeZero);
    }
    if old_size > new_size {
        return Err(StoredTreeError::OldSizeBeyondNew { old_size, new_size });
    }
    let mut proof = Vec::new();
    subproof(reader, old_size, 0, new_size, true, &mut proof)?;
    Ok(proof)
}

/// SUBPROOF(m, D[start:start+len], b): appends bottom-up, so recursion
/// comes first.
fn subproof<R: NodeReader>(
    reader: &R,
    m: u64,
    start: u64,
    len: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), StoredTreeError<R::Error>> {
    if m == len {
        if !complete {
            out.push(range_root(reader, start, len)?);
        }
        return Ok(());
    }
    let k = split_point(len);
    if m <= k {
        subproof(reader, m, start, k, complete, out)?;
        out.push(range_root(reader, start + k, len - k)?);
    } else {
        subproof(reader, m - k, start + k, len - k, false, out)?;
        out.push(range_root(reader, start, k)?);
    }
    Ok(())
}
