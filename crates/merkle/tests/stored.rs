//! The stored tree (`amai_merkle::stored`) against the in-memory functions:
//! same bytes for every size up to 70 however the leaves were batched, at
//! the stored size and at past sizes; its errors; and how many nodes it
//! reads (counted through a wrapping `NodeReader`, no timings).

use std::cell::Cell;

use amai_merkle::stored::{
    append_leaves, consistency_proof_at, inclusion_proof_at, root_at, MemNodes, NodeId, NodeReader,
    StoredTreeError, StoredTreeErrorKind,
};
use amai_merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion,
    ConsistencyProofError, Hash, InclusionProofError,
};

const MAX: u64 = 70;
/// Batch lengths to build stores with; `usize::MAX` stands for "all at once".
const BATCHINGS: [usize; 4] = [1, 3, 7, usize::MAX];

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

/// A store of `leaves` appended in batches of `batch` leaves.
fn build(leaves: &[Hash], batch: usize) -> MemNodes {
    let mut store = MemNodes::new();
    let mut size = 0u64;
    for chunk in leaves.chunks(batch.max(1)) {
        let nodes = append_leaves(&store, size, chunk).expect("append");
        store.insert_all(nodes);
        size += chunk.len() as u64;
    }
    store
}

/// `⌈log2 n⌉` (0 for n <= 1).
fn depth(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        u64::BITS - (n - 1).leading_zeros()
    }
}

/// The bounds stated in the module docs.
fn root_bound(n: u64) -> u32 {
    n.count_ones()
}
fn inclusion_bound(n: u64) -> u32 {
    let d = depth(n);
    d.max((2 * d).saturating_sub(2))
}
fn consistency_bound(n: u64) -> u32 {
    let d = depth(n);
    (d + 1).max((2 * d).saturating_sub(1))
}

/// Counts `node` calls to the wrapped reader.
struct Counting<'a, R> {
    inner: &'a R,
    reads: Cell<u32>,
}

impl<'a, R> Counting<'a, R> {
    fn new(inner: &'a R) -> Self {
        Self {
            inner,
            reads: Cell::new(0),
        }
    }
    /// The reads since the last call.
    fn take(&self) -> u32 {
        self.reads.replace(0)
    }
}

impl<R: NodeReader> NodeReader for Counting<'_, R> {
    type Error = R::Error;
    fn node(&self, id: NodeId) -> Result<Option<Hash>, Self::Error> {
        self.reads.set(self.reads.get() + 1);
        self.inner.node(id)
    }
}

/// The in-memory results for the tree of `tree`: root, every inclusion
/// proof, every consistency proof from old sizes 1..=n.
struct Expected {
    root: Hash,
    inclusion: Vec<Vec<Hash>>,
    consistency: Vec<Vec<Hash>>,
}

fn expected(tree: &[Hash]) -> Expected {
    let n = tree.len() as u64;
    Expected {
        root: root(tree),
        inclusion: (0..n)
            .map(|i| inclusion_proof(tree, i).expect("in-memory inclusion"))
            .collect(),
        consistency: (1..=n)
            .map(|old| consistency_proof(tree, old).expect("in-memory consistency"))
            .collect(),
    }
}

/// Asserts that the store (holding `stored` leaves, a prefix of `all`)
/// answers for size `n` what the in-memory functions give over the first
/// `n` leaves, and that the verifiers accept it.
fn assert_same_as_in_memory(store: &MemNodes, stored: u64, all: &[Hash], n: u64, exp: &Expected) {
    let tree = &all[..n as usize];
    let r = root_at(store, stored, n).expect("root_at");
    assert_eq!(r, exp.root, "root, size {n}");
    for index in 0..n {
        let proof = inclusion_proof_at(store, stored, index, n).expect("inclusion_proof_at");
        assert_eq!(
            proof, exp.inclusion[index as usize],
            "inclusion {index} of {n}"
        );
        verify_inclusion(&tree[index as usize], index, n, &proof, &r).expect("verifies");
    }
    // Index n is refused by both.
    assert_eq!(
        inclusion_proof(tree, n),
        Err(InclusionProofError::IndexBeyondSize {
            index: n,
            tree_size: n
        })
    );
    assert_eq!(
        inclusion_proof_at(store, stored, n, n).map_err(|e| e.kind()),
        Err(StoredTreeErrorKind::IndexBeyondSize {
            index: n,
            tree_size: n
        })
    );
    for old in 1..=n {
        let proof = consistency_proof_at(store, stored, old, n).expect("consistency_proof_at");
        assert_eq!(
            proof,
            exp.consistency[old as usize - 1],
            "consistency {old} -> {n}"
        );
        let old_root = root(&tree[..old as usize]);
        verify_consistency(old, n, &old_root, &r, &proof).expect("verifies");
    }
    // Old size 0 is refused by both.
    assert_eq!(
        consistency_proof(tree, 0),
        Err(ConsistencyProofError::OldSizeZero)
    );
    assert_eq!(
        consistency_proof_at(store, stored, 0, n).map_err(|e| e.kind()),
        Err(StoredTreeErrorKind::OldSizeZero)
    );
}

#[test]
fn append_leaves_stores_exactly_the_complete_subtrees_whatever_the_batching() {
    let all = leaves(MAX);
    for n in 0..=MAX {
        let tree = &all[..n as usize];
        let mut stores = Vec::new();
        for batch in BATCHINGS {
            // Also: no node is returned twice across batches.
            let mut store = MemNodes::new();
            let (mut size, mut returned) = (0u64, 0usize);
            for chunk in tree.chunks(batch) {
                let nodes = append_leaves(&store, size, chunk).expect("append");
                returned += nodes.len();
                store.insert_all(nodes);
                size += chunk.len() as u64;
            }
            assert_eq!(returned, store.len(), "size {n}, batch {batch}");
            assert_eq!(
                store.len() as u64,
                2 * n - u64::from(n.count_ones()),
                "size {n}"
            );
            for level in 0..8u8 {
                for index in 0..=(n >> level) {
                    let id = NodeId { level, index };
                    let (a, b) = (index << level, (index + 1) << level);
                    let got = store.node(id).expect("infallible");
                    if b <= n {
                        let want = root(&tree[a as usize..b as usize]);
                        assert_eq!(got, Some(want), "{id} in size {n}");
                    } else {
                        assert_eq!(got, None, "{id} is not complete in size {n}");
                    }
                }
            }
            stores.push(store);
        }
        assert!(stores.windows(2).all(|w| w[0] == w[1]), "size {n}");
    }
}

#[test]
fn appending_no_leaf_returns_no_node_and_reads_nothing() {
    let all = leaves(13);
    let store = build(&all, 5);
    let counting = Counting::new(&store);
    assert_eq!(append_leaves(&counting, 13, &[]).expect("append"), vec![]);
    assert_eq!(counting.take(), 0);
}

#[test]
fn stored_roots_and_proofs_equal_in_memory_for_every_size_up_to_70_and_every_batching() {
    let all = leaves(MAX);
    for n in 0..=MAX {
        let exp = expected(&all[..n as usize]);
        for batch in BATCHINGS {
            let store = build(&all[..n as usize], batch);
            assert_same_as_in_memory(&store, n, &all, n, &exp);
        }
    }
}

#[test]
fn past_sizes_of_a_70_leaf_store_give_the_prefix_roots_and_proofs() {
    let all = leaves(MAX);
    let store = build(&all, 7);
    for n in 1..=MAX {
        let exp = expected(&all[..n as usize]);
        assert_same_as_in_memory(&store, MAX, &all, n, &exp);
    }
}

#[test]
fn an_index_at_or_beyond_the_size_is_refused() {
    let store = build(&leaves(10), 3);
    for (index, tree_size) in [(5, 5), (9, 5), (0, 0), (u64::MAX, 10)] {
        let err = inclusion_proof_at(&store, 10, index, tree_size).expect_err("refused");
        assert_eq!(
            err.kind(),
            StoredTreeErrorKind::IndexBeyondSize { index, tree_size }
        );
        assert_eq!(
            err.to_string(),
            format!("leaf index {index} is beyond the tree of size {tree_size}")
        );
    }
}

#[test]
fn a_size_beyond_the_stored_one_is_refused_before_anything_else() {
    let store = build(&leaves(10), 3);
    let beyond = StoredTreeErrorKind::SizeBeyondStored {
        tree_size: 11,
        stored: 10,
    };
    let err = root_at(&store, 10, 11).expect_err("refused");
    assert_eq!(err.kind(), beyond);
    assert_eq!(
        err.to_string(),
        "tree size 11 is beyond the 10 leaves stored"
    );
    // Even with an index that is also beyond, or an old size of 0.
    let err = inclusion_proof_at(&store, 10, 11, 11).expect_err("refused");
    assert_eq!(err.kind(), beyond);
    let err = consistency_proof_at(&store, 10, 0, 11).expect_err("refused");
    assert_eq!(err.kind(), beyond);
    let err = consistency_proof_at(&store, 10, 12, 11).expect_err("refused");
    assert_eq!(err.kind(), beyond);
    // The stored size itself is fine.
    assert!(root_at(&store, 10, 10).is_ok());
}

#[test]
fn old_size_zero_or_beyond_new_is_refused_like_in_memory() {
    let all = leaves(10);
    let store = build(&all, 3);
    let err = consistency_proof_at(&store, 10, 0, 0).expect_err("refused");
    assert_eq!(err.kind(), StoredTreeErrorKind::OldSizeZero);
    assert_eq!(err.to_string(), "no consistency proof from the empty tree");
    assert_eq!(
        consistency_proof(&all[..4], 5),
        Err(ConsistencyProofError::OldSizeBeyondSize {
            old_size: 5,
            tree_size: 4
        })
    );
    let err = consistency_proof_at(&store, 10, 5, 4).expect_err("refused");
    assert_eq!(
        err.kind(),
        StoredTreeErrorKind::OldSizeBeyondNew {
            old_size: 5,
            new_size: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "old tree size 5 is larger than new tree size 4"
    );
}

#[test]
fn the_empty_tree_has_the_empty_root_and_no_node() {
    let store = MemNodes::new();
    let counting = Counting::new(&store);
    assert_eq!(root_at(&counting, 0, 0).expect("root"), root(&[]));
    assert_eq!(counting.take(), 0);
}

#[test]
fn a_deleted_node_is_reported_as_missing_with_its_id() {
    let all = leaves(MAX);
    let mut store = build(&all, 7);
    // Leaves 0..32: read for the roots of sizes 32..64 and for the proofs
    // of leaves 32..64 (in trees of 64 and more, its parent (6, 0) stands
    // for it).
    let gone = NodeId { level: 5, index: 0 };
    assert!(store.remove(gone).is_some());
    let missing = StoredTreeErrorKind::MissingNode(gone);

    let err = root_at(&store, MAX, 40).expect_err("missing");
    assert_eq!(err.kind(), missing);
    assert_eq!(
        err.to_string(),
        "node level 5 index 0 (leaves 0..32) is missing from the store, though complete in the stored tree"
    );
    let err = inclusion_proof_at(&store, MAX, 40, MAX).expect_err("missing");
    assert_eq!(err.kind(), missing);
    let err = consistency_proof_at(&store, MAX, 40, MAX).expect_err("missing");
    assert_eq!(err.kind(), missing);
    // Sizes that do not need it still answer.
    assert_eq!(root_at(&store, MAX, 31).expect("root"), root(&all[..31]));
    assert_eq!(root_at(&store, MAX, MAX).expect("root"), root(&all));
    // Appending reads the stored left siblings of the new nodes: leaves
    // 32..64 appended to the first 32 complete node (6, 0), whose left
    // child is the deleted node.
    let err = append_leaves(&store, 32, &all[32..64]).expect_err("missing");
    assert_eq!(err.kind(), missing);

    // A missing leaf, asked for as a proof hash.
    let leaf = NodeId {
        level: 0,
        index: 69,
    };
    assert!(store.remove(leaf).is_some());
    let err = inclusion_proof_at(&store, MAX, 68, MAX).expect_err("missing");
    assert_eq!(err.kind(), StoredTreeErrorKind::MissingNode(leaf));
}

#[derive(Debug, thiserror::Error)]
#[error("disk on fire")]
struct Fire;

/// A store whose reads of one node fail.
struct Failing<'a> {
    inner: &'a MemNodes,
    bad: NodeId,
}

impl NodeReader for Failing<'_> {
    type Error = Fire;
    fn node(&self, id: NodeId) -> Result<Option<Hash>, Fire> {
        if id == self.bad {
            Err(Fire)
        } else {
            Ok(self.inner.node(id).unwrap_or_else(|never| match never {}))
        }
    }
}

#[test]
fn a_failing_reader_is_reported_as_storage_with_its_error() {
    let all = leaves(MAX);
    let store = build(&all, 7);
    let bad = NodeId {
        level: 1,
        index: 34,
    }; // leaves 68..70
    let failing = Failing { inner: &store, bad };
    let storage = StoredTreeErrorKind::Storage { node: bad };
    let err = root_at(&failing, MAX, MAX).expect_err("storage");
    assert_eq!(err.kind(), storage);
    assert!(matches!(err, StoredTreeError::Storage { source: Fire, .. }));
    assert_eq!(
        err.to_string(),
        "reading node level 1 index 34 (leaves 68..70) from the store failed"
    );
    let source = std::error::Error::source(&err).expect("source");
    assert_eq!(source.to_string(), "disk on fire");
    let err = inclusion_proof_at(&failing, MAX, 0, MAX).expect_err("storage");
    assert_eq!(err.kind(), storage);
    let err = consistency_proof_at(&failing, MAX, 3, MAX).expect_err("storage");
    assert_eq!(err.kind(), storage);
    let err = append_leaves(&failing, MAX, &all[..2]).expect_err("storage");
    assert_eq!(err.kind(), storage);
}

#[test]
fn node_keys_round_trip_and_sort_by_level_then_index() {
    let ids = [
        NodeId { level: 0, index: 0 },
        NodeId { level: 0, index: 1 },
        NodeId {
            level: 0,
            index: 256,
        },
        NodeId {
            level: 0,
            index: u64::MAX,
        },
        NodeId { level: 1, index: 0 },
        NodeId {
            level: 63,
            index: 1,
        },
    ];
    for id in ids {
        let key = id.to_key();
        assert_eq!(key.len(), NodeId::KEY_LEN);
        assert_eq!(key[0], id.level);
        assert_eq!(NodeId::from_key(&key), Some(id));
    }
    let keys: Vec<[u8; 9]> = ids.iter().map(NodeId::to_key).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys sort");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sort alike");
    assert_eq!(
        NodeId {
            level: 2,
            index: 0x0102
        }
        .to_key(),
        [2, 0, 0, 0, 0, 0, 0, 1, 2]
    );
    assert_eq!(NodeId::from_key(&[]), None);
    assert_eq!(NodeId::from_key(&[0; 8]), None);
    assert_eq!(NodeId::from_key(&[0; 10]), None);
    assert_eq!(NodeId::from_key(&[64, 0, 0, 0, 0, 0, 0, 0, 0]), None);
}

#[test]
fn append_reads_at_most_popcount_of_the_size_per_batch() {
    let all = leaves(300);
    for size in 0..=200u64 {
        let store = build(&all[..size as usize], 64);
        let counting = Counting::new(&store);
        for len in [1usize, 2, 5, 64, 100] {
            let nodes = append_leaves(&counting, size, &all[size as usize..size as usize + len])
                .expect("append");
            assert!(nodes.len() >= len);
            let reads = counting.take();
            assert!(
                reads <= size.count_ones(),
                "{reads} reads appending {len} to {size}"
            );
        }
    }
}

/// Reads of every query for every size up to 70 stay within the bounds of
/// the module docs, and for every depth 2..=6 some tree reaches each bound.
#[test]
fn node_reads_stay_within_the_stated_bounds_and_reach_them() {
    let all = leaves(MAX);
    let store = build(&all, MAX as usize);
    let counting = Counting::new(&store);
    // Per depth: the most reads seen for inclusion and consistency.
    let mut most = [(0u32, 0u32); 8];
    for n in 0..=MAX {
        root_at(&counting, MAX, n).expect("root");
        assert_eq!(counting.take(), root_bound(n), "root of {n}");
        for index in 0..n {
            inclusion_proof_at(&counting, MAX, index, n).expect("inclusion");
            let reads = counting.take();
            assert!(
                reads <= inclusion_bound(n),
                "{reads} reads: inclusion {index} of {n}"
            );
            let m = &mut most[depth(n) as usize].0;
            *m = (*m).max(reads);
        }
        for old in 1..=n {
            consistency_proof_at(&counting, MAX, old, n).expect("consistency");
            let reads = counting.take();
            assert!(
                reads <= consistency_bound(n),
                "{reads} reads: consistency {old} -> {n}"
            );
            let m = &mut most[depth(n) as usize].1;
            *m = (*m).max(reads);
        }
    }
    for d in 2..=6u32 {
        let n = 1u64 << d;
        assert_eq!(most[d as usize].0, inclusion_bound(n), "depth {d}");
        assert_eq!(most[d as usize].1, consistency_bound(n), "depth {d}");
    }
}

/// A tree of 1,000,000 leaves built in batches of 4096: each batch reads at
/// most popcount(size) nodes, and roots and proofs at arbitrary sizes read
/// within the bounds (at most 20, 38 and 39 nodes for D = 20) and verify
/// against stored roots tied to the in-memory root of the full tree.
#[test]
fn a_million_leaf_tree_is_appended_and_answers_within_the_bounds() {
    const N: u64 = 1_000_000;
    // Any 32 bytes serve as leaf hashes; skipping `leaf_hash` here saves a
    // million SHA-256 runs of a debug build.
    let all: Vec<Hash> = (0..N)
        .map(|i| {
            let mut h = [0xa5; 32];
            h[..8].copy_from_slice(&i.to_be_bytes());
            h
        })
        .collect();
    let mut store = MemNodes::new();
    let mut size = 0u64;
    let mut total_reads = 0u32;
    let mut batches = 0u32;
    for chunk in all.chunks(4096) {
        let counting = Counting::new(&store);
        let nodes = append_leaves(&counting, size, chunk).expect("append");
        let reads = counting.take();
        assert!(
            reads <= size.count_ones(),
            "{reads} reads appending at {size}"
        );
        total_reads += reads;
        batches += 1;
        store.insert_all(nodes);
        size += chunk.len() as u64;
    }
    assert_eq!(size, N);
    assert_eq!(store.len() as u64, 2 * N - u64::from(N.count_ones()));
    // Per batch, not per leaf: at most 20 reads for each of the 245 batches.
    assert!(
        total_reads <= batches * 20,
        "{total_reads} reads in {batches} batches"
    );

    let counting = Counting::new(&store);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |below: u64| {
        // xorshift64: deterministic "arbitrary" numbers.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    let mut sizes = vec![N, N - 1, 1 << 19, (1 << 19) - 1, (1 << 19) + 1, 777_777];
    sizes.extend((0..6).map(|_| next(N) + 1));
    let sizes_checked = sizes.clone();
    for n in sizes {
        let r = root_at(&counting, N, n).expect("root");
        assert!(counting.take() <= root_bound(n), "root of {n}");
        let mut indices = vec![0, n - 1, n / 2];
        indices.extend((0..5).map(|_| next(n)));
        for index in indices {
            let proof = inclusion_proof_at(&counting, N, index, n).expect("inclusion");
            let reads = counting.take();
            assert!(reads <= inclusion_bound(n), "{reads} reads: {index} of {n}");
            verify_inclusion(&all[index as usize], index, n, &proof, &r).expect("verifies");
        }
        let mut olds = vec![1, n, n / 2 + 1, n.saturating_sub(1).max(1)];
        olds.extend((0..5).map(|_| next(n) + 1));
        for old in olds {
            let old_root = root_at(&counting, N, old).expect("old root");
            counting.take();
            let proof = consistency_proof_at(&counting, N, old, n).expect("consistency");
            let reads = counting.take();
            assert!(reads <= consistency_bound(n), "{reads} reads: {old} -> {n}");
            verify_consistency(old, n, &old_root, &r, &proof).expect("verifies");
        }
    }
    assert!(inclusion_bound(N) == 38 && consistency_bound(N) == 39);

    // The stored root of the full tree is the in-memory one, and every
    // size's stored root is consistent with it, so all the roots the proofs
    // above verified against are right. (Byte equality of the proofs
    // themselves is checked exhaustively on small trees: the in-memory
    // proofs cost a million hashes each here.)
    let full = root_at(&store, N, N).expect("root");
    assert_eq!(full, root(&all));
    for n in sizes_checked {
        let r = root_at(&store, N, n).expect("root");
        let proof = consistency_proof_at(&store, N, n, N).expect("consistency");
        verify_consistency(n, N, &r, &full, &proof).expect("verifies");
    }
}
