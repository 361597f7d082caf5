//! RFC 9162 hashes and proofs for trees of 0 to 8 leaves, checked against the test
//! vectors of Certificate Transparency's implementations, as carried in
//! transparency-dev/merkle `proof/verify_test.go` (commit eb3bd59, "Move LogVerifier to
//! proof package", 2022; they come from google/certificate-transparency's C++ tests) and
//! transparency-dev/merkle `rfc6962/rfc6962_test.go`.

use xalo_ledger::merkle::{EMPTY_ROOT, leaf_hash, root_from_leaf_hashes};
use xalo_ledger::proof::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};
use xalo_ledger::{Hash, MemoryTree};

fn h(hex_str: &str) -> Hash {
    Hash::from_slice(&hex::decode(hex_str).unwrap()).unwrap()
}

/// The eight leaves of the vector tree.
fn leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|x| hex::decode(x).unwrap())
    .collect()
}

/// Roots of the trees of the first 1 to 8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf number counted from 1, tree size, proof).
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        3,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        2,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (first size, second size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|x| h(x)).collect()
}

fn tree() -> MemoryTree {
    MemoryTree::from_entries(&leaves())
}

#[test]
fn hash_definitions() {
    // echo -n | sha256sum
    assert_eq!(
        EMPTY_ROOT,
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(MemoryTree::new().root(), EMPTY_ROOT);
    // The empty leaf is not the empty tree.
    assert_eq!(
        leaf_hash(b""),
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    );
    assert_eq!(
        leaf_hash(b"L123456"),
        h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    );
}

#[test]
fn roots_of_trees_of_one_to_eight_leaves() {
    let leaves = leaves();
    let leaf_hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
    let mut t = MemoryTree::new();
    for (n, leaf) in leaves.iter().enumerate() {
        t.append_entry(leaf);
        assert_eq!(t.root(), h(ROOTS[n]), "size {}", n + 1);
        assert_eq!(root_from_leaf_hashes(&leaf_hashes[..=n]), h(ROOTS[n]));
        assert_eq!(
            xalo_ledger::merkle::tree_root(&t, n as u64 + 1).unwrap(),
            h(ROOTS[n])
        );
    }
    // Roots of smaller trees from the full tree's stored hashes.
    for size in 1..=8u64 {
        assert_eq!(
            xalo_ledger::merkle::tree_root(&t, size).unwrap(),
            h(ROOTS[size as usize - 1])
        );
    }
}

#[test]
fn inclusion_proofs_match_and_verify() {
    let t = tree();
    let leaves = leaves();
    for (leaf, size, proof) in INCLUSION {
        let index = leaf - 1;
        let want = hashes(proof);
        assert_eq!(
            inclusion_proof(&t, index, size).unwrap(),
            want,
            "leaf {leaf} size {size}"
        );
        let leaf_hash = leaf_hash(&leaves[index as usize]);
        verify_inclusion(index, size, &leaf_hash, &want, &h(ROOTS[size as usize - 1])).unwrap();
    }
}

#[test]
fn consistency_proofs_match_and_verify() {
    let t = tree();
    for (first, second, proof) in CONSISTENCY {
        let want = hashes(proof);
        assert_eq!(
            consistency_proof(&t, first, second).unwrap(),
            want,
            "{first} -> {second}"
        );
        verify_consistency(
            first,
            second,
            &h(ROOTS[first as usize - 1]),
            &h(ROOTS[second as usize - 1]),
            &want,
        )
        .unwrap();
    }
}

#[test]
fn known_proofs_fail_when_tampered() {
    let leaves = leaves();
    let (leaf, size, proof) = INCLUSION[2];
    let index = leaf - 1;
    let root = h(ROOTS[size as usize - 1]);
    let lh = leaf_hash(&leaves[index as usize]);
    let proof = hashes(proof);
    // Wrong index, wrong size, wrong leaf, shortened, lengthened, reordered.
    assert!(verify_inclusion(index + 1, size, &lh, &proof, &root).is_err());
    assert!(verify_inclusion(index - 1, size, &lh, &proof, &root).is_err());
    // (size - 1 = 7 would not do: the proof has the same shape there and leads to the same
    // root, which verifiers compare, so it is no forgery.)
    assert!(verify_inclusion(index, size / 2, &lh, &proof, &root).is_err());
    assert!(verify_inclusion(index, size * 2, &lh, &proof, &root).is_err());
    assert!(verify_inclusion(index, size, &leaf_hash(b"x"), &proof, &root).is_err());
    assert!(verify_inclusion(index, size, &lh, &proof[..2], &root).is_err());
    let mut longer = proof.clone();
    longer.push(EMPTY_ROOT);
    assert!(verify_inclusion(index, size, &lh, &longer, &root).is_err());
    let mut swapped = proof.clone();
    swapped.swap(0, 1);
    assert!(verify_inclusion(index, size, &lh, &swapped, &root).is_err());

    let (first, second, proof) = CONSISTENCY[2];
    let (r1, r2) = (h(ROOTS[first as usize - 1]), h(ROOTS[second as usize - 1]));
    let proof = hashes(proof);
    assert!(verify_consistency(first, second, &r2, &r1, &proof).is_err());
    assert!(verify_consistency(first - 1, second, &r1, &r2, &proof).is_err());
    assert!(verify_consistency(first, second + 1, &r1, &r2, &proof).is_err());
    assert!(verify_consistency(first, second, &r1, &r2, &proof[1..]).is_err());
    assert!(verify_consistency(second, first, &r1, &r2, &proof).is_err());
}
