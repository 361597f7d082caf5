//! The log: sequenced entries integrated into a tiled Merkle tree, with signed checkpoints.
//!
//! Three steps, each durable before the next starts:
//! 1. the [`Sequencer`] commits entries with their indexes (the acknowledgement point);
//! 2. integration appends their leaf hashes to the hash tiles and records the new tree size
//!    and root, in one transaction; the sequencer does it from the right edge of the tree it
//!    keeps in memory, between two commits, whenever a checkpoint is due (or many entries
//!    wait), and a restart first integrates from the stored entries;
//! 3. the checkpoint signer checks that the new tree extends the last signed one (the root
//!    of the old size, recomputed from the stored tiles, must equal the signed root) and
//!    only then signs. It checks again after every restart, since the check reads only
//!    what is stored.
//!
//! Reads (tiles, entry bundles, proofs) come from the stored tiles, so any number of
//! read-only replicas could serve them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};

use crate::checkpoint::Checkpoint;
use crate::entry::Entry;
use crate::leaf_index::LeafIndex;
use crate::log_store::{self, MIGRATIONS, with_tiles};
use crate::merkle;
use crate::note::{Ed25519Signer, NoteSigner};
use crate::sequencer::Sequencer;
use crate::tile::{EntryBundle, TileHashSource, TileId};
use crate::{Hash, LedgerError, proof};

use xalo_core::unix_now_ms as now_ms;

fn ledger(e: LedgerError) -> Error {
    e.into()
}

/// A signed checkpoint as published, with whatever cosignatures were gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub checkpoint: Checkpoint,
    /// The signed note: the checkpoint text, a blank line, the signature lines.
    pub note: String,
}

/// Configuration of a log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The checkpoint origin line, e.g. `xalo.gov.vn/ledger`.
    pub origin: String,
    /// How often new entries are integrated and a checkpoint signed.
    pub checkpoint_interval: Duration,
}

/// A transparency log backed by a database.
#[derive(Clone)]
pub struct Log {
    db: Database,
    origin: Arc<str>,
    signer: Arc<Ed25519Signer>,
    sequencer: Sequencer,
    leaves: LeafIndex,
    published: watch::Sender<Option<Published>>,
}

impl Log {
    /// Open the log in `db` (migrating it) and start its sequencer.
    pub async fn open(db: Database, origin: &str, signer: Ed25519Signer) -> Result<Log, Error> {
        db.migrate("ledger", MIGRATIONS).await?;
        if signer.name() != origin {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "the log key is named {:?} but the origin is {origin:?}; C2SP checkpoints are \
                     signed by a key named after their origin",
                    signer.name()
                ),
            ));
        }
        let sequencer = Sequencer::start(db.clone()).await?;
        let leaves = LeafIndex::open(db.clone()).await?;
        tokio::spawn(leaves.clone().follow(sequencer.size()));
        let log = Log {
            db,
            origin: origin.into(),
            signer: Arc::new(signer),
            sequencer,
            leaves,
            published: watch::channel(None).0,
        };
        let latest = log.latest_checkpoint().await?;
        log.published.send_replace(latest);
        Ok(log)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The log's public key in signed-note verifier form (`name+hash+key`).
    pub fn verifier_key(&self) -> String {
        self.signer.verifier().verifier_key()
    }

    /// Record entries; returns their indexes once durable.
    pub async fn append(&self, entries: Vec<Entry>) -> Result<std::ops::Range<u64>, Error> {
        self.sequencer.submit(entries).await
    }

    /// The latest published checkpoint, changing as the log grows.
    pub fn published(&self) -> watch::Receiver<Option<Published>> {
        self.published.subscribe()
    }

    /// The tree size and root integrated so far.
    pub async fn integrated(&self) -> Result<(u64, Hash), Error> {
        Ok(self.sequencer.integrated())
    }

    /// Fetch stored hash tiles, cut to the widths asked for.
    pub async fn fetch_tiles(&self, ids: Vec<TileId>) -> Result<BTreeMap<TileId, Vec<u8>>, Error> {
        log_store::fetch_tiles(&self.db, ids).await
    }

    /// A hash tile as served at `tile/L/N[.p/W]`, if the integrated tree has it.
    pub async fn hash_tile(&self, id: TileId) -> Result<Option<Vec<u8>>, Error> {
        let (size, _) = self.integrated().await?;
        if TileId::for_tree(id.level, id.index, size).is_none_or(|t| t.width < id.width) {
            return Ok(None);
        }
        Ok(self.fetch_tiles(vec![id]).await?.remove(&id))
    }

    /// An entry bundle as served at `tile/entries/N[.p/W]`.
    pub async fn entry_bundle(&self, id: TileId) -> Result<Option<Vec<u8>>, Error> {
        let (size, _) = self.integrated().await?;
        if TileId::for_tree(0, id.index, size).is_none_or(|t| t.width < id.width) {
            return Ok(None);
        }
        let first = id.index as i64 * 256;
        let entries = self.entries(first, first + i64::from(id.width)).await?;
        let bundle =
            EntryBundle::new(entries.iter().map(Entry::encode).collect()).map_err(ledger)?;
        Ok(Some(bundle.to_bytes()))
    }

    /// Entries with indexes in `from..to`, in order.
    pub async fn entries(&self, from: i64, to: i64) -> Result<Vec<Entry>, Error> {
        log_store::entries(&self.db, from, to).await
    }

    /// The index of the first entry with this leaf hash, if any.
    pub async fn index_of(&self, leaf_hash: &Hash) -> Result<Option<u64>, Error> {
        let sequenced = *self.sequencer.size().borrow();
        self.leaves.find(leaf_hash, sequenced).await
    }

    /// The leaf index, which follows the log.
    pub fn leaf_index(&self) -> &LeafIndex {
        &self.leaves
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(size).await?;
        with_tiles(
            |ids| self.fetch_tiles(ids),
            |tiles| proof::inclusion_proof(&TileHashSource::new(tiles, size), index, size),
        )
        .await
    }

    /// The consistency proof from the tree of `first` leaves to the tree of `second`.
    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(second).await?;
        with_tiles(
            |ids| self.fetch_tiles(ids),
            |tiles| proof::consistency_proof(&TileHashSource::new(tiles, second), first, second),
        )
        .await
    }

    /// The root of the tree of `size` leaves, recomputed from the stored tiles.
    pub async fn root_at(&self, size: u64) -> Result<Hash, Error> {
        self.check_size(size).await?;
        with_tiles(
            |ids| self.fetch_tiles(ids),
            |tiles| merkle::tree_root(&TileHashSource::new(tiles, size), size),
        )
        .await
    }

    async fn check_size(&self, size: u64) -> Result<(), Error> {
        let (integrated, _) = self.integrated().await?;
        if size > integrated {
            return Err(Error::new(
                ErrorCode::LedgerSizeOrder,
                format!("the tree has {integrated} leaves so far, not {size}"),
            ));
        }
        Ok(())
    }

    /// Integrate every acknowledged entry not yet in the tree. Returns the new size and root.
    pub async fn integrate(&self) -> Result<(u64, Hash), Error> {
        self.sequencer.integrate().await
    }

    /// The latest signed checkpoint stored.
    pub async fn latest_checkpoint(&self) -> Result<Option<Published>, Error> {
        let row = sqlx::query("SELECT note FROM ledger_checkpoint ORDER BY size DESC LIMIT 1")
            .fetch_optional(self.db.pool())
            .await
            .db("reading the latest checkpoint")?;
        let Some(row) = row else { return Ok(None) };
        let note: String = row.try_get(0).db("reading the latest checkpoint")?;
        let text = note.split("\n\n").next().unwrap_or("");
        let checkpoint = Checkpoint::parse(&format!("{text}\n")).map_err(ledger)?;
        Ok(Some(Published { checkpoint, note }))
    }

    /// Integrate, then sign a checkpoint for the new size if it grew, after checking it is
    /// consistent with the last signed one. Returns the latest published checkpoint.
    pub async fn checkpoint(&self) -> Result<Option<Published>, Error> {
        let last = self.latest_checkpoint().await?;
        // Check the stored tree before integrating: integration rewrites the right edge
        // from memory, which would mend (and so hide) a tampered partial tile.
        if let Some(last) = &last {
            let (stored, _) = self.integrated().await?;
            if last.checkpoint.size > stored {
                return Err(inconsistent(format!(
                    "the tree has {stored} leaves but a checkpoint of size {} was signed",
                    last.checkpoint.size
                )));
            }
            let old_root = self.root_at(last.checkpoint.size).await?;
            if old_root != last.checkpoint.root {
                return Err(inconsistent(format!(
                    "the stored tree's root at size {} is {old_root}, the signed one {}",
                    last.checkpoint.size, last.checkpoint.root
                )));
            }
        }
        let (size, root) = self.integrate().await?;
        if let Some(last) = &last {
            if last.checkpoint.size == size {
                return Ok(Some(last.clone()));
            }
            if last.checkpoint.size > size {
                return Err(inconsistent(format!(
                    "the tree has {size} leaves but a checkpoint of size {} was signed",
                    last.checkpoint.size
                )));
            }
        }
        let checkpoint = Checkpoint::new(self.origin.to_string(), size, root).map_err(ledger)?;
        let note = checkpoint
            .sign(&[self.signer.as_ref() as &dyn NoteSigner])
            .map_err(ledger)?;
        let stored = note.clone();
        self.sequencer
            .write(move |db| async move {
                sqlx::query(
                    "INSERT INTO ledger_checkpoint (size, root, note, signed_ms) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(size as i64)
                .bind(root.as_bytes().to_vec())
                .bind(stored)
                .bind(now_ms())
                .execute(db.pool())
                .await
                .db("storing a checkpoint")
                .map(|_| ())
            })
            .await?;
        let published = Published { checkpoint, note };
        self.published.send_replace(Some(published.clone()));
        Ok(Some(published))
    }

    /// Replace the stored note of a checkpoint by one that carries more signatures
    /// (witness cosignatures); the checkpoint text must be the same.
    pub async fn add_cosignatures(&self, published: &Published, note: String) -> Result<(), Error> {
        if !note.starts_with(&published.checkpoint.to_text()) {
            return Err(Error::new(
                ErrorCode::LedgerCheckpointMalformed,
                "cosigned note is not of the same checkpoint",
            ));
        }
        let (stored, size) = (note.clone(), published.checkpoint.size as i64);
        self.sequencer
            .write(move |db| async move {
                sqlx::query("UPDATE ledger_checkpoint SET note = $1 WHERE size = $2")
                    .bind(stored)
                    .bind(size)
                    .execute(db.pool())
                    .await
                    .db("storing cosignatures")
                    .map(|_| ())
            })
            .await?;
        self.published.send_if_modified(|p| match p {
            Some(p) if p.checkpoint == published.checkpoint => {
                p.note = note;
                true
            }
            _ => false,
        });
        Ok(())
    }

    /// Store the RFC 3161 time-stamp token of a checkpoint.
    pub async fn set_time_stamp(&self, size: u64, token: &[u8]) -> Result<(), Error> {
        let token = token.to_vec();
        self.sequencer
            .write(move |db| async move {
                sqlx::query("UPDATE ledger_checkpoint SET time_stamp = $1 WHERE size = $2")
                    .bind(token)
                    .bind(size as i64)
                    .execute(db.pool())
                    .await
                    .db("storing a time-stamp")
                    .map(|_| ())
            })
            .await
    }

    /// The root of the checkpoint of `size`, if one was signed.
    pub async fn signed_root(&self, size: u64) -> Result<Option<Hash>, Error> {
        let row = sqlx::query("SELECT root FROM ledger_checkpoint WHERE size = $1")
            .bind(size as i64)
            .fetch_optional(self.db.pool())
            .await
            .db("reading a checkpoint")?;
        match row {
            Some(r) => {
                let root: Vec<u8> = r.try_get(0).db("reading a checkpoint")?;
                Ok(Some(Hash::from_slice(&root).map_err(ledger)?))
            }
            None => Ok(None),
        }
    }

    /// The time-stamp token of the checkpoint of `size`, if it has one.
    pub async fn time_stamp(&self, size: u64) -> Result<Option<Vec<u8>>, Error> {
        let row = sqlx::query("SELECT time_stamp FROM ledger_checkpoint WHERE size = $1")
            .bind(size as i64)
            .fetch_optional(self.db.pool())
            .await
            .db("reading a time-stamp")?;
        match row {
            Some(r) => r.try_get(0).db("reading a time-stamp"),
            None => Ok(None),
        }
    }
}

fn inconsistent(why: String) -> Error {
    tracing::error!("{why}; refusing to sign");
    Error::new(ErrorCode::LedgerInconsistent, why)
}
