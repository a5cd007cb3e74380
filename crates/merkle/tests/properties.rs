//! Exhaustive checks for every tree size 1..=64: every generated proof
//! verifies against `root`, and flipping any byte of any proof hash, moving
//! the index by one, or moving a size by one (with that size's root) makes
//! verification fail.
//!
//! A size moved by one while keeping the *same* root can still verify when
//! both sizes give the path the same shape (index 0 in trees of 3 and 4
//! leaves: two right siblings either way). That is inherent to RFC 9162: a
//! proof does not commit to the size, the signed tree head binding size and
//! root does. So the size checks pair each size with its own root.

use amai_merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion, Hash,
};

const MAX: u64 = 64;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

#[test]
fn every_inclusion_proof_verifies_and_every_corruption_fails() {
    let all = leaves(MAX + 1);
    let roots: Vec<Hash> = (0..=MAX + 1).map(|n| root(&all[..n as usize])).collect();
    for size in 1..=MAX {
        let tree = &all[..size as usize];
        let r = &roots[size as usize];
        for index in 0..size {
            let lh = &tree[index as usize];
            let proof = inclusion_proof(tree, index).expect("proof");
            verify_inclusion(lh, index, size, &proof, r).expect("verifies");
            for j in 0..proof.len() {
                for byte in 0..32 {
                    let mut bad = proof.clone();
                    bad[j][byte] ^= 1;
                    assert!(verify_inclusion(lh, index, size, &bad, r).is_err());
                }
            }
            if index > 0 {
                assert!(verify_inclusion(lh, index - 1, size, &proof, r).is_err());
            }
            assert!(verify_inclusion(lh, index + 1, size, &proof, r).is_err());
            for other in [size - 1, size + 1] {
                let other_root = &roots[other as usize];
                assert!(verify_inclusion(lh, index, other, &proof, other_root).is_err());
            }
        }
    }
}

#[test]
fn every_consistency_proof_verifies_and_every_corruption_fails() {
    let all = leaves(MAX + 1);
    let roots: Vec<Hash> = (0..=MAX + 1).map(|n| root(&all[..n as usize])).collect();
    for new in 1..=MAX {
        let tree = &all[..new as usize];
        for old in 1..=new {
            let (r1, r2) = (&roots[old as usize], &roots[new as usize]);
            let proof = consistency_proof(tree, old).expect("proof");
            verify_consistency(old, new, r1, r2, &proof).expect("verifies");
            for j in 0..proof.len() {
                for byte in 0..32 {
                    let mut bad = proof.clone();
                    bad[j][byte] ^= 1;
                    assert!(verify_consistency(old, new, r1, r2, &bad).is_err());
                }
            }
            if old < new {
                for other in [old - 1, old + 1] {
                    let other_root = &roots[other as usize];
                    assert!(verify_consistency(other, new, other_root, r2, &proof).is_err());
                }
                for other in [new - 1, new + 1] {
                    let other_root = &roots[other as usize];
                    assert!(verify_consistency(old, other, r1, other_root, &proof).is_err());
                }
                // Each root with the right sizes but the other's hash.
                assert!(verify_consistency(old, new, r2, r2, &proof).is_err());
                assert!(verify_consistency(old, new, r1, r1, &proof).is_err());
            }
        }
    }
}
