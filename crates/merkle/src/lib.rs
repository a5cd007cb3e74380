//! # amai-merkle
//!
//! The Merkle tree of RFC 9162 (Certificate Transparency v2, same hashing
//! and tree shape as RFC 6962) that Amai's audit role keeps over every
//! stream: the leaves are the event hashes in stream order.
//!
//! - [`leaf_hash`] is `SHA-256(0x00 || leaf)`, [`node_hash`] is
//!   `SHA-256(0x01 || left || right)`.
//! - [`root`] is the Merkle Tree Hash (MTH) of a list of leaf hashes, with
//!   the RFC's shape for sizes that are not powers of two (the left subtree
//!   holds the largest power of two strictly below the size); the empty tree
//!   hashes to `SHA-256("")`.
//! - [`inclusion_proof`] and [`consistency_proof`] build the RFC's PATH and
//!   PROOF (§2.1.3.1, §2.1.4.1) from an in-memory list of leaf hashes.
//! - [`stored`] keeps the tree as stored nodes (the roots of its complete
//!   subtrees, addressed by [`NodeId`]) behind a key-value [`NodeReader`]:
//!   [`append_leaves`] says which nodes a batch of new leaves adds, and
//!   [`root_at`], [`inclusion_proof_at`] and [`consistency_proof_at`] give the
//!   same bytes as the in-memory functions, at the stored size or any past
//!   one, reading O(log n) nodes (bounds in the module docs) instead of
//!   rehashing the leaves. The module does no I/O either: the audit role
//!   implements [`NodeReader`] over its store and writes what
//!   [`append_leaves`] returns.
//! - [`verify_inclusion`] and [`verify_consistency`] implement the
//!   verification algorithms of §2.1.3.2 and §2.1.4.2 on plain RFC inputs
//!   (sizes, index, hashes, proof as a list of hashes), so they check proofs
//!   from any RFC 9162 log, not only ours. They check the proof length
//!   before hashing, so a wrong length is reported as such, and every failure
//!   has a [`kind`](VerifyInclusionError::kind) to match on.
//!
//! ```
//! use amai_merkle::{consistency_proof, inclusion_proof, leaf_hash, root};
//! use amai_merkle::{verify_consistency, verify_inclusion};
//!
//! let events: Vec<[u8; 32]> = (0u8..5).map(|i| [i; 32]).collect();
//! let leaves: Vec<_> = events.iter().map(|e| leaf_hash(e)).collect();
//! let (old_root, new_root) = (root(&leaves[..3]), root(&leaves));
//!
//! let proof = inclusion_proof(&leaves, 2)?;
//! verify_inclusion(&leaves[2], 2, 5, &proof, &new_root)?;
//!
//! let proof = consistency_proof(&leaves, 3)?;
//! verify_consistency(3, 5, &old_root, &new_root, &proof)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Why hand-written
//!
//! The algorithms are short and fully specified. The best-kept Rust crate,
//! `ct-merkle` (0.3), implements both proofs but is built on
//! `digest`/`sha2` 0.11 (the workspace is on `sha2` 0.10, so it would bring a
//! second SHA-256 stack), hashes leaf *items* through its own trait rather
//! than taking the 32-byte leaf hashes we already have, wraps proofs and
//! roots in its own types, and its README says it has not been audited. The
//! code here is checked against the transparency-dev/merkle reference
//! vectors and exhaustively for every tree size up to 64 (see `tests/`).

#![warn(missing_docs)]

use sha2::{Digest, Sha256};

pub mod stored;

pub use stored::{
    append_leaves, consistency_proof_at, inclusion_proof_at, root_at, MemNodes, NodeId, NodeReader,
    StoredTreeError, StoredTreeErrorKind,
};

/// A SHA-256 hash: a leaf hash, an inner node hash or a root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The RFC 9162 leaf hash: `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(leaf);
    h.finalize().into()
}

/// The RFC 9162 inner node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The Merkle Tree Hash of a list of leaf hashes (already hashed with
/// [`leaf_hash`]); the empty list gives [`empty_root`].
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => empty_root(),
        [only] => *only,
        _ => {
            let k = split_point(leaf_hashes.len());
            node_hash(&root(&leaf_hashes[..k]), &root(&leaf_hashes[k..]))
        }
    }
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// Why [`inclusion_proof`] could not build a proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InclusionProofError {
    /// The index is not that of a leaf of the tree.
    #[error("leaf index {index} is beyond the tree of size {tree_size}")]
    IndexBeyondSize {
        /// The requested index.
        index: u64,
        /// The number of leaves.
        tree_size: u64,
    },
}

/// The inclusion proof (RFC 9162 §2.1.3.1 PATH) of the leaf at `index` in the
/// tree of `leaf_hashes`, from the bottom up.
pub fn inclusion_proof(leaf_hashes: &[Hash], index: u64) -> Result<Vec<Hash>, InclusionProofError> {
    let beyond = InclusionProofError::IndexBeyondSize {
        index,
        tree_size: leaf_hashes.len() as u64,
    };
    let m = usize::try_from(index).map_err(|_| beyond.clone())?;
    if m >= leaf_hashes.len() {
        return Err(beyond);
    }
    let mut proof = Vec::new();
    path(m, leaf_hashes, &mut proof);
    Ok(proof)
}

/// PATH(m, D): appends bottom-up, so recursion comes first.
fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    if d.len() <= 1 {
        return;
    }
    let k = split_point(d.len());
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// Why [`consistency_proof`] could not build a proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsistencyProofError {
    /// RFC 9162 defines no proof from the empty tree (it is a prefix of
    /// every tree, there is nothing to prove).
    #[error("no consistency proof from the empty tree")]
    OldSizeZero,
    /// The old tree is larger than the current one.
    #[error("old tree size {old_size} is beyond the tree of size {tree_size}")]
    OldSizeBeyondSize {
        /// The requested old size.
        old_size: u64,
        /// The number of leaves.
        tree_size: u64,
    },
}

/// The consistency proof (RFC 9162 §2.1.4.1 PROOF) between the tree of the
/// first `old_size` leaf hashes and the tree of all of `leaf_hashes`. Equal
/// sizes give the empty proof.
pub fn consistency_proof(
    leaf_hashes: &[Hash],
    old_size: u64,
) -> Result<Vec<Hash>, ConsistencyProofError> {
    let beyond = ConsistencyProofError::OldSizeBeyondSize {
        old_size,
        tree_size: leaf_hashes.len() as u64,
    };
    if old_size == 0 {
        return Err(ConsistencyProofError::OldSizeZero);
    }
    let m = usize::try_from(old_size).map_err(|_| beyond.clone())?;
    if m > leaf_hashes.len() {
        return Err(beyond);
    }
    let mut proof = Vec::new();
    subproof(m, leaf_hashes, true, &mut proof);
    Ok(proof)
}

/// SUBPROOF(m, D, b): appends bottom-up, so recursion comes first.
fn subproof(m: usize, d: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    if m == d.len() {
        if !complete {
            out.push(root(d));
        }
        return;
    }
    let k = split_point(d.len());
    if m <= k {
        subproof(m, &d[..k], complete, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// What went wrong in [`verify_inclusion`]; see [`VerifyInclusionError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyInclusionError {
    /// The index is not that of a leaf of a tree of that size (this includes
    /// every index for size 0).
    #[error("leaf index {index} is beyond the tree of size {tree_size}")]
    IndexBeyondSize {
        /// The claimed index.
        index: u64,
        /// The claimed tree size.
        tree_size: u64,
    },
    /// The proof does not have the number of hashes that index and size imply.
    #[error("inclusion proof has {actual} hashes, index and size imply {expected}")]
    WrongProofLength {
        /// The length implied by index and size.
        expected: usize,
        /// The length of the proof given.
        actual: usize,
    },
    /// The proof has the right shape but leads to another root.
    #[error("inclusion proof leads to another root")]
    RootMismatch,
}

/// The kinds of [`VerifyInclusionError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyInclusionErrorKind {
    /// See [`VerifyInclusionError::IndexBeyondSize`].
    IndexBeyondSize,
    /// See [`VerifyInclusionError::WrongProofLength`].
    WrongProofLength,
    /// See [`VerifyInclusionError::RootMismatch`].
    RootMismatch,
}

impl VerifyInclusionError {
    /// The kind of failure.
    pub fn kind(&self) -> VerifyInclusionErrorKind {
        match self {
            Self::IndexBeyondSize { .. } => VerifyInclusionErrorKind::IndexBeyondSize,
            Self::WrongProofLength { .. } => VerifyInclusionErrorKind::WrongProofLength,
            Self::RootMismatch => VerifyInclusionErrorKind::RootMismatch,
        }
    }
}

/// The number of hashes in the inclusion proof of leaf `index` in a tree of
/// `tree_size` leaves (`index < tree_size`).
fn inclusion_proof_len(index: u64, tree_size: u64) -> usize {
    let inner = u64::BITS - (index ^ (tree_size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Verifies (RFC 9162 §2.1.3.2) that `leaf_hash` is the leaf at `index` of
/// the tree of `tree_size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyInclusionError> {
    if index >= tree_size {
        return Err(VerifyInclusionError::IndexBeyondSize { index, tree_size });
    }
    let expected = inclusion_proof_len(index, tree_size);
    if proof.len() != expected {
        return Err(VerifyInclusionError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    let (mut f_n, mut s_n) = (index, tree_size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && r == *root {
        Ok(())
    } else {
        Err(VerifyInclusionError::RootMismatch)
    }
}

/// What went wrong in [`verify_consistency`]; see
/// [`VerifyConsistencyError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyConsistencyError {
    /// RFC 9162 defines no proof from the empty tree; a caller that trusts
    /// nothing yet has nothing to check.
    #[error("no consistency proof from the empty tree")]
    OldSizeZero,
    /// The old tree is larger than the new one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeBeyondNew {
        /// The claimed old size.
        old_size: u64,
        /// The claimed new size.
        new_size: u64,
    },
    /// The proof does not have the number of hashes that the sizes imply.
    #[error("consistency proof has {actual} hashes, the sizes imply {expected}")]
    WrongProofLength {
        /// The length implied by the sizes.
        expected: usize,
        /// The length of the proof given.
        actual: usize,
    },
    /// The proof does not lead to the old root.
    #[error("consistency proof does not lead to the old root")]
    OldRootMismatch,
    /// The proof leads to the old root but not to the new one (for equal
    /// sizes: the two roots differ).
    #[error("consistency proof does not lead to the new root")]
    NewRootMismatch,
}

/// The kinds of [`VerifyConsistencyError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyConsistencyErrorKind {
    /// See [`VerifyConsistencyError::OldSizeZero`].
    OldSizeZero,
    /// See [`VerifyConsistencyError::OldSizeBeyondNew`].
    OldSizeBeyondNew,
    /// See [`VerifyConsistencyError::WrongProofLength`].
    WrongProofLength,
    /// See [`VerifyConsistencyError::OldRootMismatch`].
    OldRootMismatch,
    /// See [`VerifyConsistencyError::NewRootMismatch`].
    NewRootMismatch,
}

impl VerifyConsistencyError {
    /// The kind of failure.
    pub fn kind(&self) -> VerifyConsistencyErrorKind {
        match self {
            Self::OldSizeZero => VerifyConsistencyErrorKind::OldSizeZero,
            Self::OldSizeBeyondNew { .. } => VerifyConsistencyErrorKind::OldSizeBeyondNew,
            Self::WrongProofLength { .. } => VerifyConsistencyErrorKind::WrongProofLength,
            Self::OldRootMismatch => VerifyConsistencyErrorKind::OldRootMismatch,
            Self::NewRootMismatch => VerifyConsistencyErrorKind::NewRootMismatch,
        }
    }
}

/// The number of hashes in the consistency proof between sizes
/// `0 < old_size < new_size`.
fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    let inner = u64::BITS - ((old_size - 1) ^ (new_size - 1)).leading_zeros();
    let border = (old_size - 1).checked_shr(inner).unwrap_or(0).count_ones();
    let seed = u32::from(!old_size.is_power_of_two());
    (seed + inner.saturating_sub(old_size.trailing_zeros()) + border) as usize
}

/// Verifies (RFC 9162 §2.1.4.2) that the tree of `old_size` leaves with root
/// `old_root` is a prefix of the tree of `new_size` leaves with root
/// `new_root`. Equal sizes need the empty proof and equal roots.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyConsistencyError> {
    if old_size == 0 {
        return Err(VerifyConsistencyError::OldSizeZero);
    }
    if old_size > new_size {
        return Err(VerifyConsistencyError::OldSizeBeyondNew { old_size, new_size });
    }
    let expected = if old_size == new_size {
        0
    } else {
        consistency_proof_len(old_size, new_size)
    };
    if proof.len() != expected {
        return Err(VerifyConsistencyError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    if old_size == new_size {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(VerifyConsistencyError::NewRootMismatch)
        };
    }
    // When the old tree is a complete subtree its root starts the path.
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => return Err(VerifyConsistencyError::OldRootMismatch),
        }
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(VerifyConsistencyError::WrongProofLength {
                expected,
                actual: proof.len(),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if f_r != *old_root {
        Err(VerifyConsistencyError::OldRootMismatch)
    } else if s_n != 0 || s_r != *new_root {
        Err(VerifyConsistencyError::NewRootMismatch)
    } else {
        Ok(())
    }
}
