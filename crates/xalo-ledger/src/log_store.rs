//! The log's tables: entries, hash tiles, the integrated tree's size and root, signed
//! checkpoints; and the queries on them that the sequencer and the log share.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use xalo_core::Error;
use xalo_store::{Database, DbResultExt, Migration, Row};

use crate::entry::Entry;
use crate::merkle;
use crate::tile::{self, HashTile, TileHashSource, TileId, TileReader};
use crate::{Hash, LedgerError};

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
),
// Leaf hashes are looked up in the leaf index, which follows the log (see `leaf_index`);
// an index on this table cost a random page per acknowledged entry.
Migration::per_backend(
    2,
    "leaf hashes indexed apart",
    "DROP INDEX ledger_entry_leaf_hash;",
    "DROP INDEX ledger_entry_leaf_hash;",
)];

/// Entries integrated per transaction.
const INTEGRATE_CHUNK: i64 = 16_384;
/// Tiles read per query.
const TILES_PER_QUERY: usize = 64;

fn ledger(e: LedgerError) -> Error {
    e.into()
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

/// The number of entries already sequenced in `db`.
pub async fn sequenced_size(db: &Database) -> Result<u64, Error> {
    let row = sqlx::query("SELECT COALESCE(MAX(idx) + 1, 0) FROM ledger_entry")
        .fetch_one(db.pool())
        .await
        .db("reading the log size")?;
    let n: i64 = row.try_get(0).db("reading the log size")?;
    Ok(n as u64)
}

/// The tree size and root integrated so far.
pub async fn integrated(db: &Database) -> Result<(u64, Hash), Error> {
    let row = sqlx::query("SELECT size, root FROM ledger_state WHERE id = 1")
        .fetch_optional(db.pool())
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
pub async fn fetch_tiles(
    db: &Database,
    ids: Vec<TileId>,
) -> Result<BTreeMap<TileId, Vec<u8>>, Error> {
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
        let rows = q.fetch_all(db.pool()).await.db("reading tiles")?;
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

/// Entries with indexes in `from..to`, in order.
pub async fn entries(db: &Database, from: i64, to: i64) -> Result<Vec<Entry>, Error> {
    let rows = sqlx::query(
        "SELECT kind, data FROM ledger_entry WHERE idx >= $1 AND idx < $2 ORDER BY idx",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db.pool())
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

/// Record the tiles of a grown tree and its new size and root, in the caller's transaction.
pub async fn store_integration(
    tx: &mut xalo_store::WriteTx,
    tiles: &[HashTile],
    size: u64,
    root: &Hash,
) -> Result<(), Error> {
    for t in tiles {
        sqlx::query(
            "INSERT INTO ledger_tile (level, idx, width, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (level, idx) DO UPDATE SET width = excluded.width, data = excluded.data",
        )
        .bind(i64::from(t.id.level))
        .bind(t.id.index as i64)
        .bind(i64::from(t.id.width))
        .bind(t.to_bytes())
        .execute(&mut **tx)
        .await
        .db("storing a tile")?;
    }
    sqlx::query(
        "INSERT INTO ledger_state (id, size, root) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root",
    )
    .bind(size as i64)
    .bind(root.as_bytes().to_vec())
    .execute(&mut **tx)
    .await
    .db("storing the tree state")?;
    Ok(())
}

/// Integrate every sequenced entry not yet in the tree, reading them back from the store.
/// The sequencer integrates from memory; this is how a log catches up after a restart (or
/// after a failed write) with entries that were sequenced but not integrated.
pub async fn integrate_stored(db: &Database) -> Result<(u64, Hash), Error> {
    loop {
        let (size, _) = integrated(db).await?;
        let entries = entries(db, size as i64, size as i64 + INTEGRATE_CHUNK).await?;
        if entries.is_empty() {
            return integrated(db).await;
        }
        let leaves: Vec<Hash> = entries.iter().map(Entry::leaf_hash).collect();
        let new_size = size + leaves.len() as u64;
        let partial = fetch_tiles(db, tile::tiles_to_extend(size, new_size)).await?;
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
                    let mut out = fetch_tiles(db, ids.clone()).await?;
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
        let mut tx = db.begin_write().await?;
        store_integration(&mut tx, &tiles, new_size, &new_root).await?;
        tx.commit().await.db("committing integration")?;
    }
}
