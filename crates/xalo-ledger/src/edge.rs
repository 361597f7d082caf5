//! The right edge of the integrated tree, kept in memory by the sequencer.
//!
//! Appending leaves to a tiled tree changes only its partial tiles (at most one per level)
//! and its frontier. Holding those in memory lets the one writer integrate what it has just
//! sequenced without reading entries or tiles back: the work per integration is
//! proportional to the new leaves, and no second writer competes for the database.

use std::collections::BTreeMap;

use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt};

use crate::log_store::{self, TileSnapshot, with_tiles};
use crate::merkle::Frontier;
use crate::tile::{self, HashTile, TileHashSource, TileId, TileReader};
use crate::{Hash, LedgerError};

/// The integrated tree's partial tiles and frontier, and the leaf hashes sequenced since.
#[derive(Debug, Clone)]
pub struct Edge {
    frontier: Frontier,
    partials: BTreeMap<u8, HashTile>,
    /// Leaf hashes of entries sequenced (durable) but not yet integrated, in index order.
    pending: Vec<Hash>,
}

/// Reads the partial tiles an append extends from the edge itself.
struct Partials<'a>(&'a BTreeMap<u8, HashTile>);

impl TileReader for Partials<'_> {
    type Error = LedgerError;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, LedgerError> {
        tiles
            .iter()
            .map(|id| {
                self.0
                    .get(&id.level)
                    .filter(|t| t.id.index == id.index && t.hashes.len() >= usize::from(id.width))
                    .map(|t| {
                        t.hashes[..usize::from(id.width)]
                            .iter()
                            .flat_map(|h| h.as_bytes().to_vec())
                            .collect()
                    })
                    .ok_or_else(|| {
                        LedgerError::TileContent(format!("{} is not on the right edge", id.path()))
                    })
            })
            .collect()
    }
}

impl Edge {
    /// Load the edge of the tree stored in `db`, after integrating whatever was sequenced
    /// but not integrated (a previous run may have stopped in between).
    pub async fn load(db: &Database) -> Result<Edge, Error> {
        let (size, root) = log_store::integrate_stored(db).await?;
        let frontier = with_tiles(
            |ids| log_store::fetch_tiles(db, ids),
            |t: &TileSnapshot| Frontier::read(&TileHashSource::new(t, size), size),
        )
        .await?;
        if frontier.root() != root {
            let why = format!(
                "the stored tiles give root {} for size {size}, the stored state {root}",
                frontier.root()
            );
            tracing::error!("{why}; refusing to integrate");
            return Err(Error::new(ErrorCode::LedgerInconsistent, why));
        }
        let ids = tile::partial_tiles_for_size(size)
            .into_iter()
            .filter(|t| !t.is_full())
            .collect::<Vec<_>>();
        let stored = log_store::fetch_tiles(db, ids.clone()).await?;
        let mut partials = BTreeMap::new();
        for id in ids {
            let bytes = stored.get(&id).ok_or_else(|| {
                Error::from(LedgerError::TileContent(format!(
                    "{} is not stored",
                    id.path()
                )))
            })?;
            partials.insert(id.level, HashTile::from_bytes(id, bytes)?);
        }
        Ok(Edge {
            frontier,
            partials,
            pending: Vec::new(),
        })
    }

    /// A placeholder for an edge that could not be loaded; integrating reloads it first.
    pub fn empty() -> Edge {
        Edge {
            frontier: Frontier::new(),
            partials: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// The integrated size.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The integrated root.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Sequenced entries waiting for integration.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Note entries that were just sequenced, in index order.
    pub fn sequenced(&mut self, leaf_hashes: impl IntoIterator<Item = Hash>) {
        self.pending.extend(leaf_hashes);
    }

    /// Integrate the pending leaves: tiles and state in one transaction. The edge changes
    /// only once that commits; on error it is as before.
    pub async fn integrate(&mut self, db: &Database) -> Result<(u64, Hash), Error> {
        if self.pending.is_empty() {
            return Ok((self.size(), self.root()));
        }
        let size = self.size();
        let tiles = tile::append_leaf_hashes(&Partials(&self.partials), size, &self.pending)?;
        let mut frontier = self.frontier.clone();
        for h in &self.pending {
            frontier.push(*h);
        }
        let (new_size, root) = (frontier.size(), frontier.root());
        let mut tx = db.begin_write().await?;
        log_store::store_integration(&mut tx, &tiles, new_size, &root).await?;
        tx.commit().await.db("committing integration")?;
        for t in tiles {
            if usize::from(t.id.width) < usize::from(tile::TILE_WIDTH) {
                self.partials.insert(t.id.level, t);
            } else {
                // A tile that filled up leaves no partial one behind it on its level until
                // a later tile of that level appears in this same list.
                if self
                    .partials
                    .get(&t.id.level)
                    .is_some_and(|p| p.id.index <= t.id.index)
                {
                    self.partials.remove(&t.id.level);
                }
            }
        }
        self.frontier = frontier;
        self.pending.clear();
        Ok((new_size, root))
    }
}
