//! An in-memory log, for tests and small tools: the stored-hash array of
//! [`crate::stored_hash`] in a `Vec`.

use crate::merkle::{Frontier, HashSource, NodeId, leaf_hash};
use crate::stored_hash::{stored_hash_index, stored_hashes_for_leaves};
use crate::{Hash, LedgerError};

/// A whole log held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    stored: Vec<Hash>,
    frontier: Frontier,
}

impl MemoryTree {
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// A tree of the given entries.
    pub fn from_entries<E: AsRef<[u8]>>(entries: &[E]) -> MemoryTree {
        let mut tree = MemoryTree::new();
        for e in entries {
            tree.append_entry(e.as_ref());
        }
        tree
    }

    /// Append an entry; returns its index.
    pub fn append_entry(&mut self, entry: &[u8]) -> u64 {
        self.append_leaf_hashes(&[leaf_hash(entry)])
    }

    /// Append leaf hashes; returns the index of the first.
    pub fn append_leaf_hashes(&mut self, leaf_hashes: &[Hash]) -> u64 {
        let first = self.frontier.size();
        let new = stored_hashes_for_leaves(&mut self.frontier, leaf_hashes);
        self.stored.extend(new);
        first
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Every stored hash, in storage order.
    pub fn stored_hashes(&self) -> &[Hash] {
        &self.stored
    }

    /// The leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, LedgerError> {
        let mut h = self.node_hashes(&[NodeId::leaf(index)])?;
        h.pop()
            .ok_or_else(|| LedgerError::HashSource("no hash".into()))
    }
}

impl HashSource for MemoryTree {
    type Error = LedgerError;

    fn node_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, LedgerError> {
        nodes
            .iter()
            .map(|node| {
                if !node.is_within(self.size()) {
                    return Err(LedgerError::HashSource(format!(
                        "node {node:?} is not in a tree of size {}",
                        self.size()
                    )));
                }
                let i = stored_hash_index(*node)?;
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.stored.get(i))
                    .copied()
                    .ok_or_else(|| LedgerError::HashSource(format!("no stored hash {i}")))
            })
            .collect()
    }
}
