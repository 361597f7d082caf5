//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4).
//!
//! Generation first plans which subtrees a proof needs ([`inclusion_ranges`],
//! [`consistency_ranges`]: each element is the Merkle Tree Hash of a leaf range that is a
//! node of the RFC tree), then reads all their perfect subtrees from a [`HashSource`] in one
//! batch. Verification follows the RFC's iterative algorithms (§2.1.3.2, §2.1.4.2).

use std::ops::Range;

use crate::merkle::{HashSource, fold_right, node_hash, perfect_subtrees, read_nodes};
use crate::{Hash, LedgerError};

/// The largest power of two strictly below `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The leaf ranges whose hashes form the inclusion proof of leaf `index` in a tree of
/// `size` leaves, in proof order (nearest the leaf first).
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<Range<u64>>, LedgerError> {
    if index >= size {
        return Err(LedgerError::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    // PATH(m, D[lo:hi]) from the root down; the proof lists it bottom up.
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            ranges.push(lo + k..hi);
            hi = lo + k;
        } else {
            ranges.push(lo..lo + k);
            lo += k;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The leaf ranges whose hashes form the consistency proof from a tree of `first` leaves
/// to one of `second` leaves, in proof order. Empty when `first` is 0 or equals `second`.
pub fn consistency_ranges(first: u64, second: u64) -> Result<Vec<Range<u64>>, LedgerError> {
    if first > second {
        return Err(LedgerError::SizeOrder { first, second });
    }
    let mut ranges = Vec::new();
    if first == 0 || first == second {
        return Ok(ranges);
    }
    // SUBPROOF(m, D[lo:hi], b) from the root down, with m counted from lo.
    let (mut m, mut lo, mut hi, mut whole_old_tree) = (first, 0u64, second, true);
    loop {
        let n = hi - lo;
        if m == n {
            // The old tree's own root is known to the verifier, so it is left out.
            if !whole_old_tree {
                ranges.push(lo..hi);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            ranges.push(lo + k..hi);
            hi = lo + k;
        } else {
            ranges.push(lo..lo + k);
            lo += k;
            m -= k;
            whole_old_tree = false;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The Merkle Tree Hash of each range (each a node of the RFC tree), read in one batch.
pub fn range_hashes<S: HashSource>(
    source: &S,
    ranges: &[Range<u64>],
) -> Result<Vec<Hash>, S::Error> {
    let plans: Vec<_> = ranges.iter().map(|r| perfect_subtrees(r.clone())).collect();
    let all: Vec<_> = plans.iter().flatten().copied().collect();
    let hashes = read_nodes(source, &all)?;
    let mut out = Vec::with_capacity(plans.len());
    let mut at = 0;
    for plan in &plans {
        let part = hashes.get(at..at + plan.len()).unwrap_or_default();
        at += plan.len();
        out.push(
            fold_right(part)
                .ok_or_else(|| LedgerError::HashSource("empty range in a proof plan".to_owned()))?,
        );
    }
    Ok(out)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<S: HashSource>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    range_hashes(source, &inclusion_ranges(index, size)?)
}

/// The consistency proof from the tree of `first` leaves to the tree of `second` leaves.
pub fn consistency_proof<S: HashSource>(
    source: &S,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, S::Error> {
    range_hashes(source, &consistency_ranges(first, second)?)
}

fn invalid(why: &str) -> LedgerError {
    LedgerError::ProofInvalid(why.to_owned())
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2, steps 1 to 3).
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
) -> Result<Hash, LedgerError> {
    if index >= size {
        return Err(LedgerError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if s == 0 {
            return Err(invalid("inclusion proof is too long"));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            // Skip the levels where this node has no right sibling in the tree.
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(invalid("inclusion proof is too short"));
    }
    Ok(r)
}

/// Verify that `leaf_hash` is leaf `index` of the tree of `size` leaves with root `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), LedgerError> {
    if root_from_inclusion_proof(index, size, leaf_hash, proof)? != *root {
        return Err(invalid("inclusion proof leads to a different root"));
    }
    Ok(())
}

/// Verify that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), LedgerError> {
    if first > second {
        return Err(LedgerError::SizeOrder { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(invalid(
                "consistency proof between equal sizes must be empty",
            ));
        }
        if first_root != second_root {
            return Err(invalid("equal tree sizes with different roots"));
        }
        return Ok(());
    }
    if first == 0 {
        // The empty tree is a prefix of every tree.
        if !proof.is_empty() {
            return Err(invalid(
                "consistency proof from the empty tree must be empty",
            ));
        }
        return Ok(());
    }
    // Step 1.
    if proof.is_empty() {
        return Err(invalid("consistency proof is empty"));
    }
    // Step 2: a power-of-two old tree is itself a node of the new tree.
    let (seed, rest) = if first.is_power_of_two() {
        (*first_root, proof)
    } else {
        match proof.split_first() {
            Some((head, tail)) => (*head, tail),
            None => return Err(invalid("consistency proof is empty")),
        }
    };
    // Steps 3 and 4.
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // Steps 5 and 6.
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        if s == 0 {
            return Err(invalid("consistency proof is too long"));
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    // Step 7.
    if s != 0 {
        return Err(invalid("consistency proof is too short"));
    }
    if fr != *first_root {
        return Err(invalid("consistency proof leads to a different old root"));
    }
    if sr != *second_root {
        return Err(invalid("consistency proof leads to a different new root"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryTree;

    #[test]
    fn every_proof_of_small_trees_verifies() {
        let mut tree = MemoryTree::new();
        let mut roots = vec![tree.root()];
        for i in 0..40u32 {
            tree.append_entry(&i.to_be_bytes());
            roots.push(tree.root());
        }
        for size in 1..=40u64 {
            for index in 0..size {
                let p = inclusion_proof(&tree, index, size).unwrap();
                let leaf = tree.leaf_hash(index).unwrap();
                verify_inclusion(index, size, &leaf, &p, &roots[size as usize]).unwrap();
                assert!(
                    verify_inclusion(index, size, &leaf, &p, &roots[size as usize - 1]).is_err()
                );
            }
            for first in 0..=size {
                let p = consistency_proof(&tree, first, size).unwrap();
                verify_consistency(
                    first,
                    size,
                    &roots[first as usize],
                    &roots[size as usize],
                    &p,
                )
                .unwrap();
            }
        }
    }

    #[test]
    fn bad_arguments() {
        assert_eq!(
            inclusion_ranges(3, 3),
            Err(LedgerError::IndexOutOfRange { index: 3, size: 3 })
        );
        assert_eq!(
            consistency_ranges(4, 3),
            Err(LedgerError::SizeOrder {
                first: 4,
                second: 3
            })
        );
        let h = Hash([1; 32]);
        assert!(verify_consistency(1, 2, &h, &h, &[]).is_err());
        assert!(verify_consistency(2, 2, &h, &h, &[h]).is_err());
        assert!(verify_consistency(0, 2, &h, &h, &[h]).is_err());
        assert!(verify_consistency(0, 2, &h, &Hash([2; 32]), &[]).is_ok());
    }
}
