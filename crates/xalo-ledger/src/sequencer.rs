//! Durable sequencing with group commit; the log's one writer.
//!
//! Submitters hand batches of entries to one sequencer task per log. The task drains
//! whatever has queued up, writes it in one transaction with consecutive indexes, and only
//! after the commit tells each submitter its indexes. An acknowledged entry is therefore on
//! disk, in order, before anyone hears of it; one transaction per burst instead of per entry
//! is what makes this fast.
//!
//! The same task integrates (from the leaf hashes it keeps in memory, see [`Edge`]) and
//! runs the log's other writes, between two commits. SQLite has one writer at a time, and
//! writers that meet wait in its busy handler, which sleeps for milliseconds; with every
//! write in one task they never meet, and on PostgreSQL no two of them race on the tiles.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot, watch};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt};

use crate::Hash;
use crate::edge::Edge;
use crate::entry::Entry;
use crate::log_store;

/// Entries one commit takes at most; the rest wait for the next commit.
const MAX_COMMIT_ENTRIES: usize = 8192;
/// Rows per INSERT statement. Binding looks each `$N` up in a list as long as the
/// statement's parameters, so binding costs grow with the square of this; 64 rows (320
/// parameters) keeps that small while a burst of 64 single entries is still one statement.
const ROWS_PER_STATEMENT: usize = 64;
/// Jobs waiting for the sequencer before submitters are slowed down.
const QUEUE_DEPTH: usize = 1024;
/// Times the sequencer yields to other tasks before taking a group.
const GATHER_YIELDS: usize = 2;
/// Pending leaves that make the sequencer integrate without being asked, so that memory
/// stays bounded when nobody signs checkpoints for a while.
const INTEGRATE_AT: usize = 1 << 16;

struct Pending {
    entries: Vec<Entry>,
    ack: oneshot::Sender<Result<Range<u64>, Error>>,
}

type WriteJob = Box<dyn FnOnce(Database) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

enum Job {
    Append(Pending),
    Integrate(oneshot::Sender<Result<(u64, Hash), Error>>),
    Write(WriteJob),
}

/// A handle to submit entries; cheap to clone.
#[derive(Clone)]
pub struct Sequencer {
    queue: mpsc::Sender<Job>,
    size: watch::Receiver<u64>,
    integrated: watch::Receiver<(u64, Hash)>,
    commits: Arc<AtomicU64>,
}

fn stopped() -> Error {
    Error::new(
        ErrorCode::HttpUnavailable,
        "the ledger sequencer has stopped",
    )
}

impl Sequencer {
    /// Start the sequencer task of the log in `db`, integrating what an earlier run left
    /// sequenced but not integrated.
    pub async fn start(db: Database) -> Result<Sequencer, Error> {
        // A store whose tiles do not match its state still sequences (nothing acknowledged
        // is refused), but integrating and so signing fail until it is repaired.
        let (edge, stale) = match Edge::load(&db).await {
            Ok(edge) => (edge, false),
            Err(e) if e.code == ErrorCode::LedgerInconsistent => (Edge::empty(), true),
            Err(e) => return Err(e),
        };
        let next = log_store::sequenced_size(&db).await?;
        let (integrated_tx, integrated) = watch::channel(log_store::integrated(&db).await?);
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let (size_tx, size) = watch::channel(next);
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            db,
            next,
            edge,
            stale,
            size: size_tx,
            integrated: integrated_tx,
            commits: commits.clone(),
        };
        tokio::spawn(writer.run(rx));
        Ok(Sequencer {
            queue,
            size,
            integrated,
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
        self.queue
            .send(Job::Append(Pending { entries, ack }))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Integrate every entry acknowledged so far; returns the tree's size and root.
    pub async fn integrate(&self) -> Result<(u64, Hash), Error> {
        let (tx, done) = oneshot::channel();
        self.queue
            .send(Job::Integrate(tx))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Run a write to the log's tables in the sequencer's turn, between two commits.
    pub async fn write<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Database) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let (tx, done) = oneshot::channel();
        let job: WriteJob = Box::new(move |db| {
            Box::pin(async move {
                let _ = tx.send(f(db).await);
            })
        });
        self.queue
            .send(Job::Write(job))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// The number of durable entries, which changes after every commit.
    pub fn size(&self) -> watch::Receiver<u64> {
        self.size.clone()
    }

    /// The integrated tree's size and root, as the last integration committed them: what
    /// readers may serve, without asking the database.
    pub fn integrated(&self) -> (u64, Hash) {
        *self.integrated.borrow()
    }

    /// Transactions committed since the start: each is one sync to disk, so entries per
    /// commit is what group commit achieves.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

use xalo_core::unix_now_ms as now_ms;

struct Writer {
    db: Database,
    /// The next index to give.
    next: u64,
    edge: Edge,
    /// Set when a write failed: the edge may not match the store, so the next integration
    /// reloads it from the store first.
    stale: bool,
    size: watch::Sender<u64>,
    integrated: watch::Sender<(u64, Hash)>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.recv().await {
            // Let the submitters just acknowledged run and send their next entries before
            // taking the group: one commit then carries nearly all of them, instead of
            // only those whose tasks happened to be scheduled first.
            for _ in 0..GATHER_YIELDS {
                tokio::task::yield_now().await;
            }
            let mut group = Vec::new();
            let mut others = Vec::new();
            let mut count = 0;
            let mut job = Some(first);
            while let Some(j) = job.take() {
                match j {
                    Job::Append(p) => {
                        count += p.entries.len();
                        group.push(p);
                    }
                    other => others.push(other),
                }
                if count < MAX_COMMIT_ENTRIES {
                    job = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.append(group).await;
            }
            for job in others {
                match job {
                    Job::Integrate(reply) => {
                        let _ = reply.send(self.integrate().await);
                    }
                    Job::Write(f) => f(self.db.clone()).await,
                    Job::Append(_) => {} // appends never land here
                }
            }
            if !self.stale
                && self.edge.pending() >= INTEGRATE_AT
                && let Err(e) = self.integrate().await
            {
                tracing::error!(error = %e, "ledger integration failed; retrying later");
            }
        }
    }

    async fn append(&mut self, group: Vec<Pending>) {
        match commit(&self.db, self.next, &group).await {
            Ok(leaves) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                // A stale edge is reloaded from the store, entries included, before use.
                if !self.stale {
                    self.edge.sequenced(leaves);
                }
                for p in group {
                    let n = p.entries.len() as u64;
                    let _ = p.ack.send(Ok(self.next..self.next + n));
                    self.next += n;
                }
                self.size.send_replace(self.next);
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger commit failed; the batch was not recorded");
                for p in group {
                    let _ = p.ack.send(Err(e.clone()));
                }
                // Another writer may have moved the log on; start again from what is stored.
                self.stale = true;
                if let Ok(n) = log_store::sequenced_size(&self.db).await {
                    self.next = n;
                }
            }
        }
    }

    async fn integrate(&mut self) -> Result<(u64, Hash), Error> {
        if self.stale {
            self.edge = Edge::load(&self.db).await?;
            self.stale = false;
        }
        let result = self.edge.integrate(&self.db).await;
        match &result {
            Ok(state) => {
                self.integrated.send_replace(*state);
            }
            Err(_) => self.stale = true,
        }
        result
    }
}

/// Insert the group's entries from index `first` in one transaction; returns their leaf
/// hashes.
async fn commit(db: &Database, first: u64, group: &[Pending]) -> Result<Vec<Hash>, Error> {
    let now = now_ms();
    let rows: Vec<(u64, &Entry, Hash)> = group
        .iter()
        .flat_map(|p| p.entries.iter())
        .enumerate()
        .map(|(i, e)| (first + i as u64, e, e.leaf_hash()))
        .collect();
    // The ledger opens its database with `power_loss_durable`, so this commit is on disk.
    let mut tx = db.begin_write().await?;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO ledger_entry (idx, kind, data, leaf_hash, sequenced_ms) VALUES {}",
            db.backend().value_rows(chunk.len(), 5)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (idx, e, leaf) in chunk {
            q = q
                .bind(*idx as i64)
                .bind(e.kind.as_str().to_owned())
                .bind(e.data.clone())
                .bind(leaf.as_bytes().to_vec())
                .bind(now);
        }
        q.execute(&mut *tx).await.db("recording entries")?;
    }
    tx.commit().await.db("committing entries")?;
    Ok(rows.into_iter().map(|(_, _, leaf)| leaf).collect())
}
