//! The RFC 6962 reference vectors of transparency-dev/merkle
//! (`testonly/constants.go`: leaf inputs, node and root hashes;
//! `proof/verify_test.go`: inclusion and consistency proofs and the
//! corruptions a verifier must reject), copied here as data.

use amai_merkle::{
    consistency_proof, empty_root, inclusion_proof, leaf_hash, node_hash, root, verify_consistency,
    verify_inclusion, ConsistencyProofError, Hash, InclusionProofError, VerifyConsistencyErrorKind,
    VerifyInclusionErrorKind,
};

fn h(s: &str) -> Hash {
    let bytes = hex::decode(s).expect("hex");
    bytes.try_into().expect("32 bytes")
}

/// `testonly.LeafInputs()`.
const LEAF_INPUTS: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// `testonly.NodeHashes()[0]`: the leaf hashes.
const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

/// `testonly.NodeHashes()[1]`: the level-1 nodes.
const LEVEL1: [&str; 4] = [
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
];

/// `testonly.RootHashes()`, indexed by tree size 0..=8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// `sha256SomeHash` of `proof/verify_test.go`.
const SOME_HASH: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";

/// `inclusionProofs` of `proof/verify_test.go`: (1-based leaf, size, proof).
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            3,
            3,
            vec![h(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            2,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// `consistencyProofs` of `proof/verify_test.go`: (old size, new size, proof).
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

fn leaf_hashes() -> Vec<Hash> {
    LEAF_INPUTS
        .iter()
        .map(|s| leaf_hash(&hex::decode(s).expect("hex")))
        .collect()
}

#[test]
fn leaf_and_node_hashes_match_the_reference() {
    let leaves = leaf_hashes();
    for (got, want) in leaves.iter().zip(LEAF_HASHES) {
        assert_eq!(*got, h(want));
    }
    for (i, want) in LEVEL1.iter().enumerate() {
        assert_eq!(node_hash(&leaves[2 * i], &leaves[2 * i + 1]), h(want));
    }
}

#[test]
fn roots_for_every_size_match_the_reference() {
    assert_eq!(empty_root(), h(ROOTS[0]));
    let leaves = leaf_hashes();
    for (size, want) in ROOTS.iter().enumerate() {
        assert_eq!(root(&leaves[..size]), h(want), "size {size}");
    }
}

#[test]
fn inclusion_proofs_are_generated_and_verified_like_the_reference() {
    let leaves = leaf_hashes();
    for (leaf, size, proof) in inclusion_vectors() {
        let index = leaf - 1;
        let tree = &leaves[..size as usize];
        assert_eq!(
            inclusion_proof(tree, index).expect("proof"),
            proof,
            "{index}/{size}"
        );
        let r = h(ROOTS[size as usize]);
        verify_inclusion(&leaves[index as usize], index, size, &proof, &r).expect("verifies");
    }
}

#[test]
fn consistency_proofs_are_generated_and_verified_like_the_reference() {
    let leaves = leaf_hashes();
    for (old, new, proof) in consistency_vectors() {
        let tree = &leaves[..new as usize];
        assert_eq!(
            consistency_proof(tree, old).expect("proof"),
            proof,
            "{old}/{new}"
        );
        let (r1, r2) = (h(ROOTS[old as usize]), h(ROOTS[new as usize]));
        verify_consistency(old, new, &r1, &r2, &proof).expect("verifies");
    }
}

/// `corruptInclusionProof` of `proof/verify_test.go`.
#[test]
fn corrupted_inclusion_proofs_are_rejected_with_their_kind() {
    use VerifyInclusionErrorKind as K;
    let leaves = leaf_hashes();
    let some = h(SOME_HASH);
    for (leaf, size, proof) in inclusion_vectors() {
        let i = leaf - 1;
        let lh = leaves[i as usize];
        let r = h(ROOTS[size as usize]);
        let fails = |lh: &Hash, i: u64, size: u64, proof: &[Hash], r: &Hash| {
            verify_inclusion(lh, i, size, proof, r)
                .expect_err("corrupted proof must fail")
                .kind()
        };
        // Wrong index.
        if i > 0 {
            assert_ne!(verify_inclusion(&lh, i - 1, size, &proof, &r), Ok(()));
        }
        assert_ne!(verify_inclusion(&lh, i + 1, size, &proof, &r), Ok(()));
        if i ^ 2 < size {
            assert_ne!(verify_inclusion(&lh, i ^ 2, size, &proof, &r), Ok(()));
        } else {
            assert_eq!(fails(&lh, i ^ 2, size, &proof, &r), K::IndexBeyondSize);
        }
        // Wrong size.
        assert_ne!(verify_inclusion(&lh, i, size * 2, &proof, &r), Ok(()));
        assert_ne!(verify_inclusion(&lh, i, size / 2, &proof, &r), Ok(()));
        // Wrong leaf or root.
        assert_eq!(fails(&some, i, size, &proof, &r), K::RootMismatch);
        assert_eq!(fails(&lh, i, size, &proof, &empty_root()), K::RootMismatch);
        assert_eq!(fails(&lh, i, size, &proof, &some), K::RootMismatch);
        // Hashes added at the end or the front.
        for extra in [r, some, [0; 32]] {
            let mut longer = proof.clone();
            longer.push(extra);
            assert_eq!(fails(&lh, i, size, &longer, &r), K::WrongProofLength);
            longer.pop();
            longer.insert(0, extra);
            assert_eq!(fails(&lh, i, size, &longer, &r), K::WrongProofLength);
        }
        // One bit flipped in each hash.
        for j in 0..proof.len() {
            let mut bad = proof.clone();
            bad[j][0] ^= 8;
            assert_eq!(fails(&lh, i, size, &bad, &r), K::RootMismatch);
        }
        // A hash removed, a hash inserted.
        if !proof.is_empty() {
            let shorter = &proof[..proof.len() - 1];
            assert_eq!(fails(&lh, i, size, shorter, &r), K::WrongProofLength);
        }
        if proof.len() > 1 {
            let mut inserted = vec![proof[0], some];
            inserted.extend_from_slice(&proof[1..]);
            assert_eq!(fails(&lh, i, size, &inserted, &r), K::WrongProofLength);
        }
    }
}

/// `TestVerifyInclusion` probes: sizes and indexes with no leaf.
#[test]
fn inclusion_into_no_leaf_is_rejected() {
    let some = h(SOME_HASH);
    for (index, size) in [(0, 0), (1, 0), (1, 1), (2, 1)] {
        let err = verify_inclusion(&some, index, size, &[], &empty_root()).expect_err("no leaf");
        assert_eq!(err.kind(), VerifyInclusionErrorKind::IndexBeyondSize);
    }
    // `TestVerifyInclusionSingleEntry`: root and leaf hash are the same.
    let lh = leaf_hash(b"data");
    verify_inclusion(&lh, 0, 1, &[], &lh).expect("single leaf");
    let err = verify_inclusion(&lh, 0, 1, &[], &some).expect_err("other root");
    assert_eq!(err.kind(), VerifyInclusionErrorKind::RootMismatch);
}

/// `corruptConsistencyProof` of `proof/verify_test.go`.
#[test]
fn corrupted_consistency_proofs_are_rejected_with_their_kind() {
    use VerifyConsistencyErrorKind as K;
    let some = h(SOME_HASH);
    for (s1, s2, proof) in consistency_vectors() {
        if proof.is_empty() {
            continue;
        }
        let (r1, r2) = (h(ROOTS[s1 as usize]), h(ROOTS[s2 as usize]));
        let fails = |s1: u64, s2: u64, r1: &Hash, r2: &Hash, proof: &[Hash]| {
            verify_consistency(s1, s2, r1, r2, proof)
                .expect_err("corrupted proof must fail")
                .kind()
        };
        // Wrong sizes.
        for (a, b) in [
            (s1 - 1, s2),
            (s1 + 1, s2),
            (s1 ^ 2, s2),
            (s1, s2 * 2),
            (s1, s2 / 2),
        ] {
            assert_ne!(
                verify_consistency(a, b, &r1, &r2, &proof),
                Ok(()),
                "{a}/{b}"
            );
        }
        // Wrong roots.
        assert_ne!(verify_consistency(s1, s2, &some, &r2, &proof), Ok(()));
        assert_eq!(fails(s1, s2, &r1, &some, &proof), K::NewRootMismatch);
        assert_ne!(verify_consistency(s1, s2, &r2, &r1, &proof), Ok(()));
        // Empty proof.
        assert_eq!(fails(s1, s2, &r1, &r2, &[]), K::WrongProofLength);
        // Hashes added at the end or the front.
        for extra in [[0; 32], r1, r2, proof[0]] {
            let mut longer = proof.clone();
            longer.push(extra);
            assert_eq!(fails(s1, s2, &r1, &r2, &longer), K::WrongProofLength);
            longer.pop();
            longer.insert(0, extra);
            assert_eq!(fails(s1, s2, &r1, &r2, &longer), K::WrongProofLength);
        }
        // Truncated.
        assert_eq!(
            fails(s1, s2, &r1, &r2, &proof[..proof.len() - 1]),
            K::WrongProofLength
        );
        // One bit flipped in each hash.
        for j in 0..proof.len() {
            let mut bad = proof.clone();
            bad[j][0] ^= 16;
            assert_ne!(verify_consistency(s1, s2, &r1, &r2, &bad), Ok(()), "{j}");
        }
    }
}

/// `TestVerifyConsistency` edge cases. Unlike transparency-dev we reject old
/// size 0 (RFC 9162 defines proofs for `0 < m`).
#[test]
fn consistency_edge_cases_are_rejected_with_their_kind() {
    use VerifyConsistencyErrorKind as K;
    let (a, b) = (h(SOME_HASH), empty_root());
    let kind = |s1, s2, r1: &Hash, r2: &Hash, p: &[Hash]| {
        verify_consistency(s1, s2, r1, r2, p).map_err(|e| e.kind())
    };
    assert_eq!(kind(0, 0, &a, &a, &[]), Err(K::OldSizeZero));
    assert_eq!(kind(0, 1, &a, &b, &[]), Err(K::OldSizeZero));
    assert_eq!(kind(1, 1, &a, &a, &[]), Ok(()));
    assert_eq!(kind(1, 1, &a, &b, &[]), Err(K::NewRootMismatch));
    assert_eq!(kind(1, 1, &b, &b, &[b]), Err(K::WrongProofLength));
    assert_eq!(kind(1, 0, &a, &b, &[]), Err(K::OldSizeBeyondNew));
    assert_eq!(kind(2, 1, &a, &b, &[]), Err(K::OldSizeBeyondNew));
    assert_eq!(kind(1, 2, &a, &b, &[]), Err(K::WrongProofLength));
}

#[test]
fn proof_generation_rejects_impossible_requests() {
    let leaves = leaf_hashes();
    assert_eq!(
        inclusion_proof(&leaves, 8),
        Err(InclusionProofError::IndexBeyondSize {
            index: 8,
            tree_size: 8
        })
    );
    assert!(inclusion_proof(&[], 0).is_err());
    assert_eq!(
        consistency_proof(&leaves, 0),
        Err(ConsistencyProofError::OldSizeZero)
    );
    assert_eq!(
        consistency_proof(&leaves, 9),
        Err(ConsistencyProofError::OldSizeBeyondSize {
            old_size: 9,
            tree_size: 8
        })
    );
    assert_eq!(consistency_proof(&leaves, 8), Ok(vec![]));
}
