//! The runner's reserved keys in a projection's tree (all start with
//! [`RESERVED_PREFIX`]) and the offline readers of its checkpoints.

use super::ProjectionError;
use crate::codec;

/// First byte of every key the runner owns in a projection's tree.
pub const RESERVED_PREFIX: u8 = 0x00;

pub(super) const META_VERSION: &[u8] = b"\0meta/version";
pub(super) const META_VIOLATIONS: &[u8] = b"\0meta/violations";
const CKPT_PREFIX: &[u8] = b"\0ckpt/";
const CHAIN_PREFIX: &[u8] = b"\0chain/";
pub(super) const VIOL_PREFIX: &[u8] = b"\0viol/";

pub(super) fn ckpt_key(stream: &str) -> Vec<u8> {
    codec::key(&[CKPT_PREFIX, stream.as_bytes()])
}

pub(super) fn chain_key(aggregate: &str) -> Vec<u8> {
    codec::key(&[CHAIN_PREFIX, aggregate.as_bytes()])
}

pub(super) fn viol_key(stream: &str, seq: u64) -> Vec<u8> {
    codec::key(&[VIOL_PREFIX, stream.as_bytes(), b"/", &codec::u64_bytes(seq)])
}

/// Reads the checkpoint (last handled stream sequence) of `stream` in a tree.
pub fn checkpoint(tree: &sled::Tree, stream: &str) -> Result<u64, ProjectionError> {
    Ok(codec::read_u64(tree.get(ckpt_key(stream))?.as_deref()))
}
