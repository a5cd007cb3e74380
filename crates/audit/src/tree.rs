//! One stream's RFC 9162 Merkle tree, rebuilt from the input the way the
//! audit role builds it from the stream: leaf `i` is `leaf_hash(event hash)`
//! of the message at stream sequence `i + 1`, and a sequence with no message
//! has the leaf of 32 zero bytes. The tree keeps every complete subtree's
//! hash (level by level, so `2n` hashes for `n` leaves) and answers roots at
//! any size through `amai_merkle::root_at`, so each checkpoint costs
//! `O(log n)` however many there are.
//!
//! A tree stops growing where the input no longer says what the stream held
//! (an unknown sequence of a selection, or an absurdly long run of missing
//! sequences): roots are only answered up to [`StreamTree::len`].

use std::convert::Infallible;

use amai_merkle::{leaf_hash, node_hash, root_at, Hash, NodeId, NodeReader};

/// Longest run of missing sequences filled with gap leaves; a longer one
/// stops the tree (a checkpoint beyond it cannot match anyway).
pub(crate) const MAX_HOLE: u64 = 1 << 20;

/// The leaf of a sequence that holds no message.
pub(crate) fn gap_leaf() -> Hash {
    leaf_hash(&[0u8; 32])
}

/// The complete subtrees of the leaves appended so far.
#[derive(Debug, Default)]
pub(crate) struct StreamTree {
    /// `levels[l][i]`: the root of the complete subtree over leaves
    /// `[i << l, (i + 1) << l)` ([`NodeId`] `{ level: l, index: i }`).
    levels: Vec<Vec<Hash>>,
    stopped: bool,
}

impl StreamTree {
    /// Leaves appended.
    pub(crate) fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether the tree stopped growing.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Stops the tree: nothing more is appended.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    /// Appends a leaf hash (ignored once stopped).
    pub(crate) fn push(&mut self, leaf: Hash) {
        if self.stopped {
            return;
        }
        let mut node = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let nodes = &mut self.levels[level];
            nodes.push(node);
            let n = nodes.len();
            if n % 2 == 1 {
                return;
            }
            node = node_hash(&nodes[n - 2], &nodes[n - 1]);
            level += 1;
        }
    }

    /// The root over the first `size` leaves, if the tree holds them.
    pub(crate) fn root(&self, size: u64) -> Option<Hash> {
        if size > self.len() {
            return None;
        }
        root_at(self, self.len(), size).ok()
    }
}

impl NodeReader for StreamTree {
    type Error = Infallible;

    fn node(&self, id: NodeId) -> Result<Option<Hash>, Infallible> {
        Ok(self
            .levels
            .get(usize::from(id.level))
            .and_then(|l| usize::try_from(id.index).ok().and_then(|i| l.get(i)))
            .copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_at_every_size_are_the_rfc_roots() {
        let leaves: Vec<Hash> = (0u32..37).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tree = StreamTree::default();
        for l in &leaves {
            tree.push(*l);
        }
        for size in 0..=leaves.len() {
            assert_eq!(
                tree.root(size as u64),
                Some(amai_merkle::root(&leaves[..size])),
                "size {size}"
            );
        }
        assert_eq!(tree.root(38), None);
    }

    #[test]
    fn a_stopped_tree_keeps_what_it_had() {
        let mut tree = StreamTree::default();
        tree.push(gap_leaf());
        tree.stop();
        tree.push(gap_leaf());
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.root(1), Some(gap_leaf()));
    }
}
