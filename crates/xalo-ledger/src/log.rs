//! The log: sequenced entries integrated into a tiled Merkle tree, with signed checkpoints.
//!
//! Three steps, each durable before the next starts:
//! 1. the [`Sequencer`] commits entries with their indexes (the acknowledgement point);
//! 2. the integrator reads new entries, appends their leaf hashes to the hash tiles and
//!    records the new tree size and root, in one transaction;
//! 3. the checkpoint signer checks that the new tree extends the last signed one (the root
//!    of the old size, recomputed from the stored tiles, must equal the signed root) and
//!    only then signs. It checks again after every restart, since the check reads only
//!    what is stored.
//!
//! Reads (tiles, entry bundles, proofs) come from the stored tiles, so any number of
//! read-only replicas could serve them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Migration, Row};

use crate::checkpoint::Checkpoint;
use crate::entry::Entry;
use crate::merkle;
use crate::note::{Ed25519Signer, NoteSigner};
use crate::sequencer::Sequencer;
use crate::tile::{self, EntryBundle, HashTile, TileHashSource, TileId, TileReader};
use crate::{Hash, LedgerError, proof};

pub const MIGRATIONS: &[Migration] = &[Migration::per_backend(
    1,
    "log",
    "CREATE TABLE ledger_entry (idx BIGINT PRIMARY KEY, kind TEXT NOT NULL, data BLOB NOT NULL,
        leaf_hash BLOB NOT NULL, sequenced_ms BIGINT NOT NULL);
     CREATE INDEX ledger_entry_leaf_hash ON ledger_entry (leaf_hash);
     CREATE TABLE ledger_tile (level BIGINT NOT NULL, idx BIGINT NOT NULL, width BIGINT NOT NULL,
        data BLOB NOT NULL, PRIMARY KEY (level, idx));
     CREATE TABLE ledger_state (id BIGINT PRIMARY KEY, size BIGINT NOT NULL, root BLOB NOT NULL);
     CREATE TABLE ledger_checkpoint (size BIGINT PRIMARY KEY, root BLOB NOT NULL,
        note TEXT NOT NULL, signed_ms BIGINT NOT NULL, time_stamp BLOB);",
    "CREATE TABLE ledger_entry (idx BIGINT PRIMARY KEY, kind TEXT NOT NULL, data BYTEA NOT NULL,
        leaf_hash BYTEA NOT NULL, sequenced_ms BIGINT NOT NULL);
     CREATE INDEX ledger_entry_leaf_hash ON ledger_entry (leaf_hash);
     CREATE TABLE ledger_tile (level BIGINT NOT NULL, idx BIGINT NOT NULL, width BIGINT NOT NULL,
        data BYTEA NOT NULL, PRIMARY KEY (level, idx));
     CREATE TABLE ledger_state (id BIGINT PRIMARY KEY, size BIGINT NOT NULL, root BYTEA NOT NULL);
     CREATE TABLE ledger_checkpoint (size BIGINT PRIMARY KEY, root BYTEA NOT NULL,
        note TEXT NOT NULL, signed_ms BIGINT NOT NULL, time_stamp BYTEA);",
)];

/// Entries integrated per transaction.
const INTEGRATE_CHUNK: i64 = 16_384;
/// Tiles read per query.
const TILES_PER_QUERY: usize = 64;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

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

/// The stored tiles of a tree, fetched ahead so that the synchronous proof code can read
/// them. The first pass of [`with_tiles`] learns which tiles a computation needs.
#[derive(Default)]
pub struct TileSnapshot {
    tiles: BTreeMap<TileId, Vec<u8>>,
    wanted: Mutex<BTreeSet<TileId>>,
    recording: bool,
}

impl TileReader for TileSnapshot {
    type Error = LedgerError;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, LedgerError> {
        tiles
            .iter()
            .map(|id| {
                if self.recording {
                    if let Ok(mut w) = self.wanted.lock() {
                        w.insert(*id);
                    }
                    return Ok(vec![0; usize::from(id.width) * 32]);
                }
                self.tiles
                    .get(id)
                    .cloned()
                    .ok_or_else(|| LedgerError::HashSource(format!("{} is not stored", id.path())))
            })
            .collect()
    }
}

/// Run `compute` over tiles fetched by `fetch`: once to learn which tiles it reads (the
/// set depends only on sizes and indexes, never on hash values), then on the real tiles.
pub async fn with_tiles<T, F, Fut>(
    fetch: F,
    compute: impl Fn(&TileSnapshot) -> Result<T, LedgerError>,
) -> Result<T, Error>
where
    F: FnOnce(Vec<TileId>) -> Fut,
    Fut: std::future::Future<Output = Result<BTreeMap<TileId, Vec<u8>>, Error>>,
{
    let recorder = TileSnapshot {
        recording: true,
        ..TileSnapshot::default()
    };
    // Errors in the recording pass come from zero hashes (a proof "not verifying") and
    // are irrelevant; argument errors show again in the real pass.
    let _ = compute(&recorder);
    let wanted: Vec<TileId> = recorder
        .wanted
        .into_inner()
        .map(|w| w.into_iter().collect())
        .unwrap_or_default();
    let tiles = fetch(wanted).await?;
    compute(&TileSnapshot {
        tiles,
        ..TileSnapshot::default()
    })
    .map_err(ledger)
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
        let log = Log {
            db,
            origin: origin.into(),
            signer: Arc::new(signer),
            sequencer,
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
        let row = sqlx::query("SELECT size, root FROM ledger_state WHERE id = 1")
            .fetch_optional(self.db.pool())
            .await
            .db("reading the tree state")?;
        match row {
            None => Ok((0, merkle::root_from_leaf_hashes(&[]))),
            Some(r) => {
                let size: i64 = r.try_get(0).db("reading the tree state")?;
                let root: Vec<u8> = r.try_get(1).db("reading the tree state")?;
                Ok((size as u64, Hash::from_slice(&root).map_err(ledger)?))
            }
        }
    }

    /// Fetch stored hash tiles, cut to the widths asked for.
    pub async fn fetch_tiles(&self, ids: Vec<TileId>) -> Result<BTreeMap<TileId, Vec<u8>>, Error> {
        let mut out = BTreeMap::new();
        // One query per group of tiles, not per tile: a proof reads a handful, and the
        // round trips were most of its time.
        for chunk in ids.chunks(TILES_PER_QUERY) {
            let mut sql = String::from("SELECT level, idx, width, data FROM ledger_tile WHERE ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&format!(
                    "(level = ${} AND idx = ${})",
                    2 * i + 1,
                    2 * i + 2
                ));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(i64::from(id.level)).bind(id.index as i64);
            }
            let rows = q.fetch_all(self.db.pool()).await.db("reading tiles")?;
            let mut stored = BTreeMap::new();
            for row in rows {
                let level: i64 = row.try_get(0).db("reading tiles")?;
                let index: i64 = row.try_get(1).db("reading tiles")?;
                let width: i64 = row.try_get(2).db("reading tiles")?;
                let data: Vec<u8> = row.try_get(3).db("reading tiles")?;
                stored.insert((level, index), (width, data));
            }
            for id in chunk {
                if let Some((width, data)) = stored.get(&(i64::from(id.level), id.index as i64)) {
                    let want = usize::from(id.width) * 32;
                    if *width >= i64::from(id.width) && data.len() >= want {
                        out.insert(*id, data[..want].to_vec());
                    }
                }
            }
        }
        Ok(out)
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
        let rows = sqlx::query(
            "SELECT kind, data FROM ledger_entry WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        )
        .bind(from)
        .bind(to)
        .fetch_all(self.db.pool())
        .await
        .db("reading entries")?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(0).db("reading entries")?;
                let data: Vec<u8> = r.try_get(1).db("reading entries")?;
                Entry::new(kind.parse()?, data)
            })
            .collect()
    }

    /// The index of the first entry with this leaf hash, if any.
    pub async fn index_of(&self, leaf_hash: &Hash) -> Result<Option<u64>, Error> {
        let row = sqlx::query("SELECT MIN(idx) FROM ledger_entry WHERE leaf_hash = $1")
            .bind(leaf_hash.as_bytes().to_vec())
            .fetch_one(self.db.pool())
            .await
            .db("looking up a leaf hash")?;
        let idx: Option<i64> = row.try_get(0).db("looking up a leaf hash")?;
        Ok(idx.map(|i| i as u64))
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

    /// Integrate every sequenced entry not yet in the tree. Returns the new size and root.
    pub async fn integrate(&self) -> Result<(u64, Hash), Error> {
        loop {
            let (size, root) = self.integrated().await?;
            let entries = self
                .entries(size as i64, size as i64 + INTEGRATE_CHUNK)
                .await?;
            if entries.is_empty() {
                return Ok((size, root));
            }
            let leaves: Vec<Hash> = entries.iter().map(Entry::leaf_hash).collect();
            let new_size = size + leaves.len() as u64;
            let partial = self
                .fetch_tiles(tile::tiles_to_extend(size, new_size))
                .await?;
            let snapshot = TileSnapshot {
                tiles: partial,
                ..TileSnapshot::default()
            };
            let tiles: Vec<HashTile> =
                tile::append_leaf_hashes(&snapshot, size, &leaves).map_err(ledger)?;
            // The new root from the right edge of the tree, read from the tiles just built.
            let mut built: BTreeMap<TileId, Vec<u8>> = BTreeMap::new();
            for t in &tiles {
                built.insert(t.id, t.to_bytes());
            }
            let new_root = with_tiles(
                |ids| {
                    let built = built.clone();
                    async move {
                        let mut out = self.fetch_tiles(ids.clone()).await?;
                        for id in ids {
                            if let Some(b) = built.get(&id) {
                                out.insert(id, b.clone());
                            }
                        }
                        Ok(out)
                    }
                },
                |t| merkle::tree_root(&TileHashSource::new(t, new_size), new_size),
            )
            .await?;
            let mut tx = self.db.begin_write().await?;
            for t in &tiles {
                sqlx::query(
                    "INSERT INTO ledger_tile (level, idx, width, data) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (level, idx) DO UPDATE SET width = excluded.width, data = excluded.data",
                )
                .bind(i64::from(t.id.level))
                .bind(t.id.index as i64)
                .bind(i64::from(t.id.width))
                .bind(t.to_bytes())
                .execute(&mut *tx)
                .await
                .db("storing a tile")?;
            }
            sqlx::query(
                "INSERT INTO ledger_state (id, size, root) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root",
            )
            .bind(new_size as i64)
            .bind(new_root.as_bytes().to_vec())
            .execute(&mut *tx)
            .await
            .db("storing the tree state")?;
            tx.commit().await.db("committing integration")?;
        }
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
        let (size, root) = self.integrate().await?;
        let last = self.latest_checkpoint().await?;
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
            let old_root = self.root_at(last.checkpoint.size).await?;
            if old_root != last.checkpoint.root {
                return Err(inconsistent(format!(
                    "the stored tree's root at size {} is {old_root}, the signed one {}",
                    last.checkpoint.size, last.checkpoint.root
                )));
            }
        }
        let checkpoint = Checkpoint::new(self.origin.to_string(), size, root).map_err(ledger)?;
        let note = checkpoint
            .sign(&[self.signer.as_ref() as &dyn NoteSigner])
            .map_err(ledger)?;
        sqlx::query(
            "INSERT INTO ledger_checkpoint (size, root, note, signed_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(size as i64)
        .bind(root.as_bytes().to_vec())
        .bind(note.clone())
        .bind(now_ms())
        .execute(self.db.pool())
        .await
        .db("storing a checkpoint")?;
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
        sqlx::query("UPDATE ledger_checkpoint SET note = $1 WHERE size = $2")
            .bind(note.clone())
            .bind(published.checkpoint.size as i64)
            .execute(self.db.pool())
            .await
            .db("storing cosignatures")?;
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
        sqlx::query("UPDATE ledger_checkpoint SET time_stamp = $1 WHERE size = $2")
            .bind(token.to_vec())
            .bind(size as i64)
            .execute(self.db.pool())
            .await
            .db("storing a time-stamp")?;
        Ok(())
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
