//! Every proof the generator makes verifies, and any one flipped bit in the proof, the
//! root or the leaf makes verification fail.

use std::sync::OnceLock;

use proptest::prelude::*;
use xalo_ledger::merkle::tree_root;
use xalo_ledger::proof::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};
use xalo_ledger::{Hash, MemoryTree};

const MAX_SIZE: u64 = 1500;

fn tree() -> &'static MemoryTree {
    static TREE: OnceLock<MemoryTree> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut t = MemoryTree::new();
        for i in 0..MAX_SIZE {
            t.append_entry(format!("entry {i}").as_bytes());
        }
        t
    })
}

fn root(size: u64) -> Hash {
    tree_root(tree(), size).unwrap()
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut b = h.0;
    b[(bit / 8) % 32] ^= 1 << (bit % 8);
    Hash(b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn inclusion_proofs_verify_and_detect_flips(
        size in 1..=MAX_SIZE,
        index_seed in any::<u64>(),
        target in 0usize..3,
        pick in any::<usize>(),
        bit in 0usize..256,
    ) {
        let index = index_seed % size;
        let t = tree();
        let proof = inclusion_proof(t, index, size).unwrap();
        let leaf = t.leaf_hash(index).unwrap();
        let root = root(size);
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root).is_ok());

        let (mut leaf2, mut proof2, mut root2) = (leaf, proof.clone(), root);
        match target {
            0 if !proof.is_empty() => {
                let i = pick % proof.len();
                proof2[i] = flip(&proof[i], bit);
            }
            1 => root2 = flip(&root, bit),
            _ => leaf2 = flip(&leaf, bit),
        }
        prop_assert!(verify_inclusion(index, size, &leaf2, &proof2, &root2).is_err());
    }

    #[test]
    fn consistency_proofs_verify_and_detect_flips(
        second in 1..=MAX_SIZE,
        first_seed in any::<u64>(),
        target in 0usize..3,
        pick in any::<usize>(),
        bit in 0usize..256,
    ) {
        // From 1, not 0: the empty tree is consistent with any root, so flips can't show.
        let first = 1 + first_seed % second;
        let t = tree();
        let proof = consistency_proof(t, first, second).unwrap();
        let (r1, r2) = (root(first), root(second));
        prop_assert!(verify_consistency(first, second, &r1, &r2, &proof).is_ok());

        let (mut p, mut a, mut b) = (proof.clone(), r1, r2);
        match target {
            0 if !proof.is_empty() => {
                let i = pick % proof.len();
                p[i] = flip(&proof[i], bit);
            }
            1 => a = flip(&r1, bit),
            _ => b = flip(&r2, bit),
        }
        prop_assert!(verify_consistency(first, second, &a, &b, &p).is_err());
    }

    #[test]
    fn proofs_of_other_sizes_fail(size in 2..=MAX_SIZE, index_seed in any::<u64>()) {
        let index = index_seed % (size - 1);
        let t = tree();
        let proof = inclusion_proof(t, index, size).unwrap();
        let leaf = t.leaf_hash(index).unwrap();
        prop_assert!(verify_inclusion(index, size - 1, &leaf, &proof, &root(size - 1)).is_err());
    }
}
