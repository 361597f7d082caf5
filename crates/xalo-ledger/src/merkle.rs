//! RFC 9162 §2.1 Merkle tree hashing.
//!
//! A tree of `n` leaves is described here by its *perfect subtrees*: a [`NodeId`] at
//! `level` h and `index` k covers leaves `[k·2^h, (k+1)·2^h)`. Every hash a proof or a tree
//! head needs is either such a node or a fold of several of them along the tree's right
//! edge, so a store only ever has to answer for perfect subtrees.

use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::{Hash, LedgerError};

/// The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// The hash of a log entry: SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    Hash(h.finalize().into())
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// A perfect subtree: `2^level` leaves starting at leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }

    /// The leaf node for entry `index`.
    pub fn leaf(index: u64) -> NodeId {
        NodeId { level: 0, index }
    }

    /// The leaves this node covers, or `None` where that range does not fit in a u64.
    pub fn leaves(&self) -> Option<Range<u64>> {
        let start = self.index.checked_shl(u32::from(self.level))?;
        if start >> self.level != self.index {
            return None;
        }
        let width = 1u64.checked_shl(u32::from(self.level))?;
        Some(start..start.checked_add(width)?)
    }

    /// Whether the node is complete in a tree of `size` leaves.
    pub fn is_within(&self, size: u64) -> bool {
        self.leaves().is_some_and(|r| r.end <= size)
    }
}

/// The perfect subtrees that exactly cover `range`, left to right, each as large as the
/// alignment allows (a "compact range"). For the RFC tree's own nodes `[k·2^h, min((k+1)·2^h,
/// n))` the sizes strictly decrease, which is what [`fold_right`] expects.
pub fn perfect_subtrees(range: Range<u64>) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut begin = range.start;
    while begin < range.end {
        let remaining = range.end - begin;
        // The largest aligned block at `begin` that still fits before the end.
        let mut level = begin.trailing_zeros().min(63);
        while level > 0 && (1u64 << level) > remaining {
            level -= 1;
        }
        let level_u8 = level as u8; // level <= 63
        nodes.push(NodeId::new(level_u8, begin >> level));
        begin += 1u64 << level;
    }
    nodes
}

/// The Merkle Tree Hash of a run of subtrees of strictly decreasing size: the right edge of
/// an RFC 9162 tree hashes right to left. Returns `None` for an empty run.
pub fn fold_right(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)))
}

/// Where a store of tree hashes answers from: a database, a directory of tiles, memory.
///
/// Only perfect subtrees inside the tree are asked for, all in one call, so an
/// implementation can fetch them in one query.
pub trait HashSource {
    /// The store's own error; ledger errors (a bad argument, a missing hash) convert into it.
    type Error: From<LedgerError>;

    /// The hashes of `nodes`, in the order asked.
    fn node_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Self::Error>;
}

impl<S: HashSource + ?Sized> HashSource for &S {
    type Error = S::Error;
    fn node_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Self::Error> {
        (**self).node_hashes(nodes)
    }
}

/// Ask `source` for `nodes` and check that it answered each.
pub(crate) fn read_nodes<S: HashSource>(
    source: &S,
    nodes: &[NodeId],
) -> Result<Vec<Hash>, S::Error> {
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = source.node_hashes(nodes)?;
    if hashes.len() != nodes.len() {
        return Err(LedgerError::HashSource(format!(
            "asked for {} hashes, got {}",
            nodes.len(),
            hashes.len()
        ))
        .into());
    }
    Ok(hashes)
}

/// The Merkle Tree Hash of the first `size` leaves, read from `source`.
pub fn tree_root<S: HashSource>(source: &S, size: u64) -> Result<Hash, S::Error> {
    let nodes = perfect_subtrees(0..size);
    let hashes = read_nodes(source, &nodes)?;
    Ok(fold_right(&hashes).unwrap_or(EMPTY_ROOT))
}

/// The Merkle Tree Hash of a list of leaf hashes, computed in memory.
pub fn root_from_leaf_hashes(leaf_hashes: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for h in leaf_hashes {
        frontier.push(*h);
    }
    frontier.root()
}

/// The right edge of a tree: the hashes of its maximal perfect subtrees, largest first.
///
/// It is all a sequencer needs to append leaves and compute the new root; a store keeps the
/// rest. Load it for a size with [`Frontier::nodes_for_size`] and [`Frontier::from_parts`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The nodes whose hashes form the frontier of a tree of `size` leaves.
    pub fn nodes_for_size(size: u64) -> Vec<NodeId> {
        perfect_subtrees(0..size)
    }

    /// A frontier from the hashes of [`Frontier::nodes_for_size`], in that order.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Frontier, LedgerError> {
        if hashes.len() != size.count_ones() as usize {
            return Err(LedgerError::HashSource(format!(
                "a tree of size {size} has {} frontier hashes, got {}",
                size.count_ones(),
                hashes.len()
            )));
        }
        Ok(Frontier { size, hashes })
    }

    /// Read the frontier of a tree of `size` leaves from `source`.
    pub fn read<S: HashSource>(source: &S, size: u64) -> Result<Frontier, S::Error> {
        let hashes = read_nodes(source, &Frontier::nodes_for_size(size))?;
        Ok(Frontier::from_parts(size, hashes)?)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier hashes, largest subtree first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Append one leaf. Returns the nodes this completes, the leaf first and then each
    /// parent it closes, bottom up: exactly the hashes a store appends for the leaf.
    pub fn push(&mut self, leaf_hash: Hash) -> Vec<(NodeId, Hash)> {
        let index = self.size;
        let mut completed = vec![(NodeId::leaf(index), leaf_hash)];
        let mut hash = leaf_hash;
        // Each trailing one bit of the old size is a left sibling waiting for this leaf.
        let merges = index.trailing_ones();
        for level in 1..=merges {
            let Some(left) = self.hashes.pop() else {
                break; // unreachable: the frontier holds one hash per one bit of the size
            };
            hash = node_hash(&left, &hash);
            completed.push((NodeId::new(level as u8, index >> level), hash));
        }
        self.hashes.push(hash);
        self.size += 1;
        completed
    }

    /// The Merkle Tree Hash of the tree so far.
    pub fn root(&self) -> Hash {
        fold_right(&self.hashes).unwrap_or(EMPTY_ROOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, Hash(Sha256::digest(b"").into()));
        assert_eq!(root_from_leaf_hashes(&[]), EMPTY_ROOT);
    }

    #[test]
    fn perfect_subtrees_cover_ranges() {
        assert_eq!(perfect_subtrees(0..0), vec![]);
        assert_eq!(
            perfect_subtrees(0..7),
            vec![NodeId::new(2, 0), NodeId::new(1, 2), NodeId::new(0, 6)]
        );
        assert_eq!(
            perfect_subtrees(3..9),
            vec![NodeId::new(0, 3), NodeId::new(2, 1), NodeId::new(0, 8)]
        );
        assert_eq!(perfect_subtrees(0..u64::MAX).len(), 64);
    }

    #[test]
    fn node_leaves_guard_overflow() {
        assert_eq!(NodeId::new(63, 1).leaves(), None);
        assert_eq!(NodeId::new(63, 0).leaves(), Some(0..1 << 63));
        assert_eq!(NodeId::new(2, 1).leaves(), Some(4..8));
        assert!(NodeId::new(2, 1).is_within(8));
        assert!(!NodeId::new(2, 1).is_within(7));
    }

    #[test]
    fn frontier_push_reports_completed_nodes() {
        let mut f = Frontier::new();
        let l: Vec<Hash> = (0u8..4).map(|i| leaf_hash(&[i])).collect();
        assert_eq!(f.push(l[0]).len(), 1);
        let c = f.push(l[1]);
        assert_eq!(c[1], (NodeId::new(1, 0), node_hash(&l[0], &l[1])));
        f.push(l[2]);
        let c = f.push(l[3]);
        assert_eq!(c.len(), 3);
        assert_eq!(c[2].0, NodeId::new(2, 0));
        assert_eq!(f.hashes().len(), 1);
        assert_eq!(f.root(), c[2].1);
        assert!(Frontier::from_parts(3, vec![]).is_err());
    }
}
