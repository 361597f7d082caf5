//! Durable sequencing with group commit.
//!
//! Submitters hand batches of entries to one sequencer task per log. The task drains
//! whatever has queued up, writes it in one transaction with consecutive indexes, and only
//! after the commit tells each submitter its indexes. An acknowledged entry is therefore on
//! disk, in order, before anyone hears of it; one transaction per burst instead of per entry
//! is what makes this fast.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};

use crate::entry::Entry;

/// Entries one commit takes at most; the rest wait for the next commit.
const MAX_COMMIT_ENTRIES: usize = 8192;
/// Rows per INSERT statement. Binding looks each `$N` up in a list as long as the
/// statement's parameters, so binding costs grow with the square of this; 64 rows (320
/// parameters) keeps that small while a burst of 64 single entries is still one statement.
const ROWS_PER_STATEMENT: usize = 64;
/// Batches waiting for the sequencer before submitters are slowed down.
const QUEUE_DEPTH: usize = 1024;

struct Pending {
    entries: Vec<Entry>,
    ack: oneshot::Sender<Result<Range<u64>, Error>>,
}

/// A handle to submit entries; cheap to clone.
#[derive(Clone)]
pub struct Sequencer {
    queue: mpsc::Sender<Pending>,
    size: watch::Receiver<u64>,
    commits: Arc<AtomicU64>,
}

impl Sequencer {
    /// Start the sequencer task of the log in `db`.
    pub async fn start(db: Database) -> Result<Sequencer, Error> {
        let next = sequenced_size(&db).await?;
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let (size_tx, size) = watch::channel(next);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(db, rx, next, size_tx, commits.clone()));
        Ok(Sequencer {
            queue,
            size,
            commits,
        })
    }

    /// Record `entries`; returns their indexes once they are durable.
    pub async fn submit(&self, entries: Vec<Entry>) -> Result<Range<u64>, Error> {
        if entries.is_empty() {
            let n = *self.size.borrow();
            return Ok(n..n);
        }
        let (ack, done) = oneshot::channel();
        let stopped = || {
            Error::new(
                ErrorCode::HttpUnavailable,
                "the ledger sequencer has stopped",
            )
        };
        self.queue
            .send(Pending { entries, ack })
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// The number of durable entries, which changes after every commit.
    pub fn size(&self) -> watch::Receiver<u64> {
        self.size.clone()
    }

    /// Transactions committed since the start: each is one sync to disk, so entries per
    /// commit is what group commit achieves.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn run(
    db: Database,
    mut rx: mpsc::Receiver<Pending>,
    mut next: u64,
    size: watch::Sender<u64>,
    commits: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut count = group[0].entries.len();
        while count < MAX_COMMIT_ENTRIES {
            match rx.try_recv() {
                Ok(p) => {
                    count += p.entries.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        match commit(&db, next, &group).await {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
                for p in group {
                    let n = p.entries.len() as u64;
                    let _ = p.ack.send(Ok(next..next + n));
                    next += n;
                }
                size.send_replace(next);
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger commit failed; the batch was not recorded");
                for p in group {
                    let _ = p.ack.send(Err(e.clone()));
                }
                // Another writer may have moved the log on; start again from what is stored.
                if let Ok(n) = sequenced_size(&db).await {
                    next = n;
                }
            }
        }
    }
}

async fn commit(db: &Database, first: u64, group: &[Pending]) -> Result<(), Error> {
    let now = now_ms();
    let rows: Vec<(u64, &Entry)> = group
        .iter()
        .flat_map(|p| p.entries.iter())
        .enumerate()
        .map(|(i, e)| (first + i as u64, e))
        .collect();
    // The ledger opens its database with `power_loss_durable`, so this commit is on disk.
    let mut tx = db.begin_write().await?;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO ledger_entry (idx, kind, data, leaf_hash, sequenced_ms) VALUES ",
        );
        for i in 0..chunk.len() {
            let p = i * 5;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (idx, e) in chunk {
            q = q
                .bind(*idx as i64)
                .bind(e.kind.as_str().to_owned())
                .bind(e.data.clone())
                .bind(e.leaf_hash().as_bytes().to_vec())
                .bind(now);
        }
        q.execute(&mut *tx).await.db("recording entries")?;
    }
    tx.commit().await.db("committing entries")
}
