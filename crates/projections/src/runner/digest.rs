//! [`ProjectionDigest`]: one SHA-256 naming a projection's whole state, to
//! compare two copies of a projection (two instances, or a deployment and a
//! fresh one an export was imported into) without reading them side by side.
//!
//! ## What is included
//!
//! Every key/value pair of the projection's sled tree, in key order:
//!
//! ```text
//! SHA-256( "amai.projection.digest.v1\n"
//!          || for each (key, value): u64be(len key) || key || u64be(len value) || value )
//! ```
//!
//! That is the projection's own keys (the read model) and all of the
//! runner's reserved keys (`\0...`), because each of them is a function of the
//! consumed streams' stored messages (bytes, subjects, sequences, publish
//! times, the `Amai-Type` header) and of the build:
//!
//! - `\0meta/version`: the projection's schema version (two builds with
//!   different versions have incomparable trees, and the digest says so);
//! - `\0ckpt/<stream>`: how far each stream was applied (two copies at
//!   different positions differ);
//! - `\0chain/<aggregate>`: the verification state of every chain (sequence,
//!   hash and, for identity chains, the folded key history with the publish
//!   times of its events);
//! - `\0viol/<stream>/<seq>` and `\0meta/violations`: the events not applied
//!   and why (including their publish time and, for undecodable ones, their
//!   `Amai-Type` header).
//!
//! Nothing in a tree depends on when or by which instance an event was
//! applied, or on how events were batched: the runner writes none of that,
//! and projections must be deterministic folds ([`crate::Projection`]). So
//! nothing is excluded. Publish times survive an import (`Amai-Published-At`,
//! see `amai_bus::reads::published_time`); a header that export files do not
//! carry (only `Nats-Msg-Id` is kept, `Amai-*` are derived from the event)
//! could only make the violation record of an *undecodable* message differ.
//!
//! The digest is of the tree as it is when read: take it of a stopped
//! projection, or one whose streams do not move (sled has no snapshot read
//! of a whole tree).

use sha2::{Digest, Sha256};

use super::keys::{checkpoint, META_VERSION};
use super::ProjectionError;
use crate::projection::Projection;
use amai_bus::Position;

/// The domain tag the digest starts with.
const DOMAIN: &[u8] = b"amai.projection.digest.v1\n";

/// The digest of one projection's tree and what it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionDigest {
    /// The projection (its tree's name).
    pub projection: String,
    /// The schema version stored in the tree (0 if none).
    pub version: u32,
    /// SHA-256 over every key/value pair (see the module docs).
    pub sha256: [u8; 32],
    /// How many key/value pairs it covers.
    pub entries: u64,
    /// The checkpoint of every stream the projection consumes.
    pub checkpoints: Vec<Position>,
}

impl ProjectionDigest {
    /// The digest, lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// SHA-256 over every key/value pair of `tree` in key order, and how many
/// pairs there are (see the module docs).
pub fn digest_tree(tree: &sled::Tree) -> Result<([u8; 32], u64), ProjectionError> {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    let mut entries = 0u64;
    for item in tree.iter() {
        let (k, v) = item?;
        h.update((k.len() as u64).to_be_bytes());
        h.update(&k);
        h.update((v.len() as u64).to_be_bytes());
        h.update(&v);
        entries += 1;
    }
    Ok((h.finalize().into(), entries))
}

/// The digest of the tree named `projection` in `db`, with the checkpoints
/// of `streams`. The tree is opened (created empty) if absent.
pub fn digest(
    db: &sled::Db,
    projection: &str,
    streams: &[&str],
) -> Result<ProjectionDigest, ProjectionError> {
    let tree = db.open_tree(projection)?;
    digest_of(&tree, projection, streams)
}

/// [`digest`] of a projection declared by `p`.
pub fn digest_projection(
    db: &sled::Db,
    p: &dyn Projection,
) -> Result<ProjectionDigest, ProjectionError> {
    digest(db, p.name(), p.streams())
}

pub(super) fn digest_of(
    tree: &sled::Tree,
    projection: &str,
    streams: &[&str],
) -> Result<ProjectionDigest, ProjectionError> {
    let (sha256, entries) = digest_tree(tree)?;
    let version = tree
        .get(META_VERSION)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map_or(0, u32::from_be_bytes);
    let mut checkpoints = streams
        .iter()
        .map(|s| Ok(Position::new(*s, checkpoint(tree, s)?)))
        .collect::<Result<Vec<_>, ProjectionError>>()?;
    checkpoints.sort();
    Ok(ProjectionDigest {
        projection: projection.to_string(),
        version,
        sha256,
        entries,
        checkpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().expect("dir");
        let db = sled::open(dir.path().join("db")).expect("sled");
        (dir, db)
    }

    #[test]
    fn equal_trees_have_equal_digests_whatever_the_order_of_writes() {
        let (_a, a) = tree();
        let (_b, b) = tree();
        let ta = a.open_tree("p").expect("tree");
        let tb = b.open_tree("p").expect("tree");
        for (k, v) in [
            (&b"x"[..], &b"1"[..]),
            (b"\0ckpt/S", b"\0\0\0\0\0\0\0\x07"),
            (b"a", b""),
        ] {
            ta.insert(k, v).expect("insert");
        }
        for (k, v) in [
            (&b"a"[..], &b""[..]),
            (b"x", b"1"),
            (b"\0ckpt/S", b"\0\0\0\0\0\0\0\x07"),
        ] {
            tb.insert(k, v).expect("insert");
        }
        let da = digest(&a, "p", &["S"]).expect("digest");
        let db_ = digest(&b, "p", &["S"]).expect("digest");
        assert_eq!(da, db_);
        assert_eq!(da.entries, 3);
        assert_eq!(da.checkpoints, vec![Position::new("S", 7)]);
    }

    #[test]
    fn any_difference_in_a_key_or_value_changes_the_digest() {
        let (_d, db) = tree();
        let t = db.open_tree("p").expect("tree");
        t.insert(b"ab", b"c".to_vec()).expect("insert");
        let base = digest_tree(&t).expect("digest").0;
        // Moving a byte from the key to the value must not collide.
        t.clear().expect("clear");
        t.insert(b"a", b"bc".to_vec()).expect("insert");
        assert_ne!(digest_tree(&t).expect("digest").0, base);
        // A reserved key counts too.
        t.clear().expect("clear");
        t.insert(b"ab", b"c".to_vec()).expect("insert");
        assert_eq!(digest_tree(&t).expect("digest").0, base);
        t.insert(b"\0chain/agent/x", b"{}".to_vec())
            .expect("insert");
        assert_ne!(digest_tree(&t).expect("digest").0, base);
    }

    #[test]
    fn an_empty_tree_has_the_digest_of_the_domain_tag() {
        let (_d, db) = tree();
        let d = digest(&db, "none", &[]).expect("digest");
        assert_eq!(d.sha256, <[u8; 32]>::from(Sha256::digest(DOMAIN)));
        assert_eq!((d.entries, d.version), (0, 0));
    }
}
