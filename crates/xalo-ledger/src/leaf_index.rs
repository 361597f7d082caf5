//! Finding an entry by its leaf hash, for inclusion proofs by hash.
//!
//! The index is derived data: an indexer task follows the log and records each entry's
//! leaf hash (its first 8 bytes, as a key) and index, in batches, in the log database's
//! companion (on SQLite a file of its own, see [`Database::companion`]). Leaf hashes are
//! random, so every entry of a B-tree index on them lands on a different page; kept in the
//! entries' table that cost a page written and synced per entry on the acknowledgement
//! path, which halved the sequencer's throughput. Followed like this, as Tessera's
//! antispam index follows its log, the acknowledgement path writes only sequential pages.
//!
//! A lookup asks the index, confirms the full hash in the entries' table (8 bytes can
//! collide), and scans the few entries the indexer has not reached yet, so an entry is
//! found as soon as it is sequenced, as before.

use std::time::Duration;

use tokio::sync::watch;
use xalo_core::Error;
use xalo_store::{Database, DbResultExt, Migration, Row};

use crate::Hash;

pub const MIGRATIONS: &[Migration] = &[Migration::per_backend(
    1,
    "leaf index",
    "CREATE TABLE ledger_leaf (leaf_key BIGINT NOT NULL, idx BIGINT NOT NULL);
     CREATE INDEX ledger_leaf_key ON ledger_leaf (leaf_key);
     CREATE TABLE ledger_leaf_state (id BIGINT PRIMARY KEY, indexed BIGINT NOT NULL);",
    "CREATE TABLE ledger_leaf (leaf_key BIGINT NOT NULL, idx BIGINT NOT NULL);
     CREATE INDEX ledger_leaf_key ON ledger_leaf (leaf_key);
     CREATE TABLE ledger_leaf_state (id BIGINT PRIMARY KEY, indexed BIGINT NOT NULL);",
)];

/// Entries indexed per transaction.
const BATCH: i64 = 8192;
/// Rows per INSERT statement (3 parameters each would be too many beyond this; see the
/// sequencer's note on binding costs).
const ROWS_PER_STATEMENT: usize = 128;
/// How long the indexer waits for new entries when it has caught up.
const IDLE: Duration = Duration::from_millis(50);

/// The index key of a leaf hash: its first 8 bytes.
fn key(hash: &Hash) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_be_bytes(b)
}

/// The leaf index of a log: where it lives, and how far it has come.
#[derive(Clone)]
pub struct LeafIndex {
    log: Database,
    index: Database,
}

impl LeafIndex {
    /// Open (migrating) the leaf index of the log in `log`.
    pub async fn open(log: Database) -> Result<LeafIndex, Error> {
        let index = log.companion("leaves").await?;
        index.migrate("ledger-leaves", MIGRATIONS).await?;
        Ok(LeafIndex { log, index })
    }

    /// The database the index is kept in.
    pub fn database(&self) -> &Database {
        &self.index
    }

    /// Entries indexed so far: every index below this is in the index.
    pub async fn indexed(&self) -> Result<u64, Error> {
        // fetch_all steps the statement to its end, which ends its read transaction; a
        // statement left after its first row keeps its snapshot, and a snapshot held by an
        // idle pooled connection keeps SQLite from ever restarting the write-ahead log.
        let row = sqlx::query("SELECT indexed FROM ledger_leaf_state WHERE id = 1")
            .fetch_all(self.index.pool())
            .await
            .db("reading the leaf index state")?
            .pop();
        match row {
            Some(r) => Ok(r.try_get::<i64, _>(0).db("reading the leaf index state")? as u64),
            None => Ok(0),
        }
    }

    /// Index the entries sequenced beyond what is indexed, up to `size`. Returns the new
    /// indexed size.
    pub async fn catch_up(&self, size: u64) -> Result<u64, Error> {
        let mut indexed = self.indexed().await?;
        while indexed < size {
            let to = (indexed as i64 + BATCH).min(size as i64);
            let rows = sqlx::query(
                "SELECT idx, leaf_hash FROM ledger_entry WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            )
            .bind(indexed as i64)
            .bind(to)
            .fetch_all(self.log.pool())
            .await
            .db("reading leaf hashes")?;
            let mut keyed = Vec::with_capacity(rows.len());
            for r in &rows {
                let idx: i64 = r.try_get(0).db("reading leaf hashes")?;
                let leaf: Vec<u8> = r.try_get(1).db("reading leaf hashes")?;
                keyed.push((key(&Hash::from_slice(&leaf)?), idx));
            }
            let mut tx = self.index.begin_write().await?;
            // Another follower of the same log (a second instance) may have got here first.
            let now: Option<i64> =
                sqlx::query("SELECT indexed FROM ledger_leaf_state WHERE id = 1")
                    .fetch_all(&mut *tx)
                    .await
                    .db("reading the leaf index state")?
                    .pop()
                    .map(|r| r.try_get(0))
                    .transpose()
                    .db("reading the leaf index state")?;
            if now.unwrap_or(0) as u64 != indexed {
                tx.rollback().await.db("leaving the leaf index")?;
                indexed = self.indexed().await?;
                continue;
            }
            for chunk in keyed.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO ledger_leaf (leaf_key, idx) VALUES {}",
                    self.index.backend().value_rows(chunk.len(), 2)
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (k, idx) in chunk {
                    q = q.bind(*k).bind(*idx);
                }
                q.execute(&mut *tx).await.db("indexing leaf hashes")?;
            }
            // Entries are sequenced without gaps, so the last one read is where this ends.
            let reached = keyed.last().map_or(to, |(_, idx)| idx + 1);
            sqlx::query(
                "INSERT INTO ledger_leaf_state (id, indexed) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET indexed = excluded.indexed",
            )
            .bind(reached)
            .execute(&mut *tx)
            .await
            .db("recording the leaf index state")?;
            tx.commit().await.db("committing the leaf index")?;
            if keyed.is_empty() {
                break;
            }
            indexed = reached as u64;
        }
        Ok(indexed)
    }

    /// Follow the log's sequenced size and index what it adds, until the log is dropped.
    pub async fn follow(self, mut size: watch::Receiver<u64>) {
        loop {
            let target = *size.borrow_and_update();
            if let Err(e) = self.catch_up(target).await {
                tracing::warn!(error = %e, "leaf index fell behind; retrying");
                tokio::time::sleep(IDLE).await;
                continue;
            }
            if size.changed().await.is_err() {
                return;
            }
            // Let a few commits gather: a bigger batch shares index pages.
            tokio::time::sleep(IDLE).await;
        }
    }

    /// The index of the first entry with this leaf hash among the `sequenced` entries.
    pub async fn find(&self, leaf_hash: &Hash, sequenced: u64) -> Result<Option<u64>, Error> {
        let indexed = self.indexed().await?;
        let candidates =
            sqlx::query("SELECT idx FROM ledger_leaf WHERE leaf_key = $1 ORDER BY idx")
                .bind(key(leaf_hash))
                .fetch_all(self.index.pool())
                .await
                .db("looking up a leaf hash")?;
        for c in candidates {
            let idx: i64 = c.try_get(0).db("looking up a leaf hash")?;
            let row = sqlx::query("SELECT leaf_hash FROM ledger_entry WHERE idx = $1")
                .bind(idx)
                .fetch_all(self.log.pool())
                .await
                .db("looking up a leaf hash")?
                .pop();
            if let Some(row) = row {
                let stored: Vec<u8> = row.try_get(0).db("looking up a leaf hash")?;
                if stored == leaf_hash.as_bytes() {
                    return Ok(Some(idx as u64));
                }
            }
        }
        // Entries the indexer has not reached: a short range scan by primary key.
        let row = sqlx::query(
            "SELECT MIN(idx) FROM ledger_entry WHERE idx >= $1 AND idx < $2 AND leaf_hash = $3",
        )
        .bind(indexed as i64)
        .bind(sequenced as i64)
        .bind(leaf_hash.as_bytes().to_vec())
        .fetch_all(self.log.pool())
        .await
        .db("looking up a leaf hash")?;
        let idx: Option<i64> = match row.first() {
            Some(r) => r.try_get(0).db("looking up a leaf hash")?,
            None => None,
        };
        Ok(idx.map(|i| i as u64))
    }
}
