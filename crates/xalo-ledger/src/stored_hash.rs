//! The numbering of every hash a log stores, append-only (as Go's `sumdb/tlog` does).
//!
//! When leaf `m` is appended the log stores its leaf hash and then the hash of every
//! perfect subtree that leaf completes, bottom up. Numbering the hashes in that order
//! gives each node a fixed index, so a store is a plain append-only array (a table keyed
//! by index) and any node of any past tree is one lookup.

use crate::merkle::{Frontier, NodeId};
use crate::{Hash, LedgerError};

/// How many hashes a log of `size` leaves has stored: `2·size − popcount(size)`.
/// Defined for sizes below 2^63, far beyond any log.
pub fn stored_hash_count(size: u64) -> u64 {
    size.saturating_mul(2) - u64::from(size.count_ones())
}

/// The storage index of a node.
pub fn stored_hash_index(node: NodeId) -> Result<u64, LedgerError> {
    let leaves = node
        .leaves()
        .filter(|r| r.end <= 1 << 62)
        .ok_or_else(|| LedgerError::HashSource(format!("node {node:?} is out of range")))?;
    // The node is stored right after its last leaf and the `level - 1` parents below it.
    let last_leaf = leaves.end - 1;
    Ok(stored_hash_count(last_leaf) + u64::from(node.level))
}

/// The storage indexes of `nodes`, in order.
pub fn stored_hash_indexes(nodes: &[NodeId]) -> Result<Vec<u64>, LedgerError> {
    nodes.iter().map(|n| stored_hash_index(*n)).collect()
}

/// The node stored at `index`: the inverse of [`stored_hash_index`].
pub fn stored_hash_node(index: u64) -> Result<NodeId, LedgerError> {
    if index >= stored_hash_count(1 << 62) {
        return Err(LedgerError::HashSource(format!(
            "stored hash index {index} is out of range"
        )));
    }
    // The leaf whose append stored this hash: the largest m with count(m) <= index.
    let (mut lo, mut hi) = (0u64, 1u64 << 62);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if stored_hash_count(mid) <= index {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let level = index - stored_hash_count(lo);
    let level_u8 = u8::try_from(level)
        .map_err(|_| LedgerError::HashSource(format!("stored hash index {index} is invalid")))?;
    Ok(NodeId::new(level_u8, lo >> level))
}

/// Append `leaf_hashes` to the tree whose right edge is `frontier`, returning the hashes to
/// append to the store, in index order (starting at `stored_hash_count(old size)`).
pub fn stored_hashes_for_leaves(frontier: &mut Frontier, leaf_hashes: &[Hash]) -> Vec<Hash> {
    let mut out = Vec::with_capacity(leaf_hashes.len() * 2);
    for leaf in leaf_hashes {
        out.extend(frontier.push(*leaf).into_iter().map(|(_, h)| h));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::leaf_hash;

    #[test]
    fn indexes_match_the_append_order() {
        let mut f = Frontier::new();
        let mut index = 0u64;
        for i in 0..300u64 {
            for (node, _) in f.push(leaf_hash(&i.to_be_bytes())) {
                assert_eq!(stored_hash_index(node), Ok(index), "{node:?}");
                assert_eq!(stored_hash_node(index), Ok(node));
                index += 1;
            }
            assert_eq!(stored_hash_count(i + 1), index);
        }
    }

    #[test]
    fn known_indexes() {
        // Leaf 0, leaf 1, node (1,0), leaf 2, leaf 3, node (1,1), node (2,0), leaf 4 ...
        assert_eq!(stored_hash_index(NodeId::new(2, 0)), Ok(6));
        assert_eq!(stored_hash_index(NodeId::leaf(4)), Ok(7));
        assert!(stored_hash_index(NodeId::new(63, 1)).is_err());
        assert!(stored_hash_node(u64::MAX).is_err());
    }
}
