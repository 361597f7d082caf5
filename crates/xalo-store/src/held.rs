//! SQLite connections a handle keeps out of its pool and runs statements on in the calling
//! task (see [`crate::Database::connect_held`]).
//!
//! sqlx gives each SQLite connection a worker thread and hands it every statement over a
//! channel, and every row back: two thread wake-ups per statement, which on a busy
//! two-core machine cost more than the statement (a sign-in's seven short statements spent
//! more time in those hand-offs than in SQLite). A held connection is a `rusqlite`
//! connection to the same file, used under an async lock: the statement runs where the
//! task is, in microseconds, and the lock queues the next task without blocking a thread.
//!
//! The statements stay sqlx queries, so that a crate writes each query once for SQLite and
//! PostgreSQL: their SQL and `$N` arguments are taken out of the query and the rows are
//! given back as sqlx's `AnyRow`, built as sqlx's own SQLite driver builds them (a value's
//! kind is its SQLite storage class). sqlx marks those fields as exempt from semver:
//! `sqlx-core` is the one `sqlx` pins itself to, and the store's tests compare the two
//! paths on every storage class.
//!
//! Architecture invariant: only short statements belong on a held connection (a lookup by
//! key, a write of a few rows, a write script); a scan of a table goes to the pool, as the
//! calling task's thread is busy for as long as the statement runs.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use sqlx::Execute;
use sqlx_core::any::{
    AnyArguments, AnyColumn, AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue,
    AnyValueKind,
};
use sqlx_core::ext::ustr::UStr;
use xalo_core::{Error, ErrorCode};

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, AnyArguments>;

/// The held connections of one handle, used in turn.
pub(crate) struct Held {
    connections: Vec<Arc<tokio::sync::Mutex<rusqlite::Connection>>>,
    next: AtomicUsize,
    /// Statements that wrote since the log was last checkpointed.
    writes: AtomicUsize,
    checkpoint: Arc<tokio::sync::Notify>,
    busy_retries: AtomicU64,
    /// A single writer's scripts waiting to run together (see [`Held::run_grouped`]).
    queue: std::sync::Mutex<VecDeque<Job>>,
    /// Transactions that ran more than one script, and the scripts they ran.
    groups: AtomicU64,
    grouped: AtomicU64,
}

/// A script waiting for a single writer's connection, and where its answer goes.
struct Job {
    parts: Vec<(sqlx::SqlStr, Vec<AnyValueKind>)>,
    /// Each part's statements to run (see [`group_body`]), as byte ranges of its SQL:
    /// split once, when the script is queued.
    bodies: Vec<Vec<std::ops::Range<usize>>>,
    limit: Option<usize>,
    /// Until when a locked file is waited for, as [`BUSY_PATIENCE`] says.
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

type Answer = Result<(Outcome, i64), sqlx::Error>;

/// Times a single writer lets ready tasks add their scripts before it runs those waiting
/// (each costs at most one turn of the scheduler, microseconds).
const MAX_YIELDS: usize = 4;

/// Scripts run in one transaction at most.
const MAX_GROUP: usize = 128;

/// How long a statement waits for another connection's write lock, as the pool's
/// connections do (their `busy_timeout`).
const BUSY_PATIENCE: Duration = Duration::from_millis(crate::SQLITE_BUSY_TIMEOUT_MS);

/// Writes between two checkpoints of the write-ahead log: about the thousand pages of log
/// at which SQLite's own automatic checkpoint runs. A checkpoint writes each changed page
/// once however often it changed, and makes every connection read its pages again: after
/// 64 writes, sign-ins ran 8–12% slower than after 256.
const WRITES_PER_CHECKPOINT: usize = 256;

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("connections", &self.connections.len())
            .finish()
    }
}

impl Drop for Held {
    /// The checkpointing task ends with its connections.
    fn drop(&mut self) {
        self.checkpoint.notify_one();
    }
}

/// A gate for a pool transaction: holds the single writer's connection lock.
pub(crate) type Gate = tokio::sync::OwnedMutexGuard<rusqlite::Connection>;

impl Held {
    /// `count` connections to the SQLite file at `path`, each set up with `pragmas`.
    pub(crate) fn open(path: &str, count: usize, pragmas: &str) -> Result<Held, Error> {
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            let conn = rusqlite::Connection::open(path).map_err(|e| {
                Error::new(ErrorCode::StoreUnavailable, format!("opening {path}: {e}"))
            })?;
            // A commit that fills the log past SQLite's threshold would checkpoint it there
            // and then, syncing the file on the calling task's thread; the pool checkpoints
            // instead, on its own thread (see `checkpoints`).
            conn.execute_batch(&format!(
                "{pragmas} PRAGMA wal_autocheckpoint = 0; PRAGMA busy_timeout = 0;"
            ))
            .map_err(|e| failure(e, "configuring a connection"))?;
            // sqlx keeps up to 100 statements of a connection prepared; a role's hot set
            // is a few dozen.
            conn.set_prepared_statement_cache_capacity(100);
            connections.push(Arc::new(tokio::sync::Mutex::new(conn)));
        }
        Ok(Held {
            connections,
            next: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            checkpoint: Arc::new(tokio::sync::Notify::new()),
            busy_retries: AtomicU64::new(0),
            queue: std::sync::Mutex::new(VecDeque::new()),
            groups: AtomicU64::new(0),
            grouped: AtomicU64::new(0),
        })
    }

    /// Checkpoint the write-ahead log after every few writes on the held connections, for
    /// as long as they and `pool` are open. First on a pool connection, beside the writers,
    /// which copies most of the log; then the frames added meanwhile, holding every held
    /// connection so that nothing of this handle writes, on a blocking thread (a checkpoint
    /// syncs the files). The next write then starts the log over from its beginning. The
    /// first step alone never caught up with the frames a busy writer kept adding, so
    /// SQLite never started the log over: under steady load it grew by every commit (half a
    /// gigabyte in 25 s of the exchange benchmark), each commit's frames going to new
    /// blocks of the file. The second step alone made the writers wait for the whole copy.
    pub(crate) fn checkpoints(self: &Arc<Self>, pool: sqlx::AnyPool) {
        let held = Arc::downgrade(self);
        let wake = self.checkpoint.clone();
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                let Some(connections) = held.upgrade().map(|h| h.connections.clone()) else {
                    return;
                };
                if pool.is_closed() {
                    return;
                }
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(error = %e, "checkpointing the write-ahead log");
                }
                // In order, as no other task holds more than one.
                let mut guards = Vec::with_capacity(connections.len());
                for c in connections {
                    guards.push(c.lock_owned().await);
                }
                let done = tokio::task::spawn_blocking(move || {
                    let Some(conn) = guards.first() else {
                        return Ok((0, 0, 0));
                    };
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                })
                .await;
                match done {
                    Ok(Ok((busy, log, copied))) if busy != 0 || copied < log => {
                        // A reader of another connection kept part of the log: the log
                        // grows on until a later checkpoint copies it all.
                        tracing::debug!(log, copied, "checkpoint left part of the log");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "checkpointing the write-ahead log"),
                    Err(e) => tracing::warn!(error = %e, "the checkpoint's thread failed"),
                }
            }
        });
    }

    fn wrote(&self, statements: usize) {
        if statements > 0
            && self.writes.fetch_add(statements, Ordering::Relaxed) + statements
                >= WRITES_PER_CHECKPOINT
        {
            self.writes.store(0, Ordering::Relaxed);
            self.checkpoint.notify_one();
        }
    }

    async fn lock(&self) -> Option<tokio::sync::MutexGuard<'_, rusqlite::Connection>> {
        for c in &self.connections {
            if let Ok(g) = c.try_lock() {
                return Some(g);
            }
        }
        let n = self.connections.len().max(1);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        Some(self.connections.get(i)?.lock().await)
    }

    /// A single writer's one connection, locked for as long as the guard lives.
    pub(crate) async fn gate(&self) -> Option<Gate> {
        match self.connections.as_slice() {
            [writer] => Some(writer.clone().lock_owned().await),
            _ => None,
        }
    }

    pub(crate) async fn execute(&self, query: Query<'_>) -> Result<AnyQueryResult, sqlx::Error> {
        self.execute_together(vec![query], true).await
    }

    /// The rows of a query (of each statement of a script), at most `limit` of them.
    pub(crate) async fn fetch(
        &self,
        query: Query<'_>,
        limit: Option<usize>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        Ok(self.run(query, limit).await?.0.rows)
    }

    /// Run the query's statements on one of the connections: what they answered (at most
    /// `limit` rows) and the last row id inserted. A transaction a failed statement left open is rolled back.
    ///
    /// When another connection holds the file's write lock, SQLite's busy handler would
    /// sleep on the calling task's thread, and a pool transaction holding the lock may need
    /// that very thread to finish; so held connections do not wait in SQLite
    /// (`busy_timeout = 0`) but here, asleep on the runtime's timer, then run again —
    /// unless a statement committed before the refusal — for as long as SQLite would have
    /// waited.
    async fn run(
        &self,
        query: Query<'_>,
        limit: Option<usize>,
    ) -> Result<(Outcome, i64), sqlx::Error> {
        self.run_parts(vec![taken(query)?], limit, true).await
    }

    /// Run several queries as one transaction (one query runs as [`Held::run`] does); a
    /// single writer first lets other tasks add theirs if `gather`.
    pub(crate) async fn execute_together(
        &self,
        queries: Vec<Query<'_>>,
        gather: bool,
    ) -> Result<AnyQueryResult, sqlx::Error> {
        let parts = queries
            .into_iter()
            .map(taken)
            .collect::<Result<Vec<_>, _>>()?;
        let (outcome, last_insert_id) = self.run_parts(parts, Some(0), gather).await?;
        Ok(AnyQueryResult {
            rows_affected: outcome.changes,
            last_insert_id: Some(last_insert_id),
        })
    }

    /// [`Held::run`] of one or more queries; several run as one transaction.
    async fn run_parts(
        &self,
        parts: Vec<(sqlx::SqlStr, Vec<AnyValueKind>)>,
        limit: Option<usize>,
        gather: bool,
    ) -> Result<(Outcome, i64), sqlx::Error> {
        if self.connections.len() == 1
            && let Some(bodies) = groupable(&parts)
        {
            return self.run_grouped(parts, bodies, limit, gather).await;
        }
        let deadline = Instant::now() + BUSY_PATIENCE;
        let mut pause = Duration::from_millis(1);
        loop {
            {
                let conn = self.lock().await.ok_or(sqlx::Error::PoolClosed)?;
                let mut outcome = Outcome::new(limit);
                let ran = match parts.as_slice() {
                    [(sql, args)] => run(&conn, sql, args, &mut outcome),
                    _ => run_together(&conn, &parts, &mut outcome),
                };
                self.wrote(outcome.writes);
                let error = match ran {
                    Ok(()) => return Ok((outcome, conn.last_insert_rowid())),
                    Err(e) => e,
                };
                let in_transaction = roll_back(&conn);
                let nothing_kept = in_transaction || outcome.writes == 0;
                if !(busy(&error) && nothing_kept && Instant::now() < deadline) {
                    return Err(error);
                }
                self.busy_retries.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Run a single writer's script with those other tasks are waiting to run: one
    /// transaction, each script in a savepoint of its own, commits them all. A commit
    /// writes every page it changed to the log, with a lock taken and released around it;
    /// scripts of concurrent requests share their pages and that work (a sign-in's three
    /// commits were a fifth of its servers' CPU).
    ///
    /// The task that takes the connection runs every script waiting, its own included, and
    /// answers each; a task whose script another ran takes its answer without the lock.
    /// Whoever holds the lock finds its own script answered or waiting, never half-run:
    /// scripts leave the queue only under the lock and are answered or put back before it
    /// is let go, so a task dropped midway loses no one's script (and its own is dropped
    /// unrun by whoever takes it next).
    async fn run_grouped(
        &self,
        parts: Vec<(sqlx::SqlStr, Vec<AnyValueKind>)>,
        bodies: Vec<Vec<std::ops::Range<usize>>>,
        limit: Option<usize>,
        gather: bool,
    ) -> Answer {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.queued()?.push_back(Job {
            parts,
            bodies,
            limit,
            deadline: Instant::now() + BUSY_PATIENCE,
            reply,
        });
        let mut pause = Duration::from_millis(1);
        loop {
            let conn = tokio::select! {
                biased;
                a = &mut answer => return a.unwrap_or(Err(sqlx::Error::PoolClosed)),
                c = self.lock() => c.ok_or(sqlx::Error::PoolClosed)?,
            };
            let turns = if gather { MAX_YIELDS } else { 0 };
            xalo_core::batch::gather(turns, MAX_GROUP, || self.queued().map(|q| q.len())).await?;
            let batch: Vec<Job> = {
                let mut queue = self.queued()?;
                let n = queue.len().min(MAX_GROUP);
                queue.drain(..n).collect()
            };
            let again = self.run_batch(&conn, batch);
            let waits = !again.is_empty();
            if waits {
                let mut queue = self.queued()?;
                for job in again.into_iter().rev() {
                    queue.push_front(job);
                }
            }
            drop(conn);
            if let Ok(a) = answer.try_recv() {
                return a;
            }
            if waits {
                self.busy_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }

    fn queued(&self) -> Result<std::sync::MutexGuard<'_, VecDeque<Job>>, sqlx::Error> {
        self.queue.lock().map_err(|_| sqlx::Error::WorkerCrashed)
    }

    /// Run `batch` (one script as [`Held::run_parts`] runs it, several as one transaction)
    /// and answer each script; returns those to run again after a pause, as the file was
    /// locked by another connection.
    fn run_batch(&self, conn: &rusqlite::Connection, batch: Vec<Job>) -> Vec<Job> {
        // A script whose caller has gone (its request cancelled) is not run: as before
        // grouping, a task dropped before its turn writes nothing.
        let mut batch: Vec<Job> = batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if !conn.is_autocommit() {
            // Left open by a script outside the groups (its own `BEGIN` without `COMMIT`):
            // never carried into another caller's statements.
            tracing::warn!("a held connection was left in a transaction; rolled back");
            roll_back(conn);
        }
        if batch.len() <= 1 {
            let Some(job) = batch.pop() else {
                return Vec::new();
            };
            let mut outcome = Outcome::new(job.limit);
            // Alone, a script runs as in a group without the savepoint; one statement
            // commits by itself.
            let ran = if job.bodies.iter().map(Vec::len).sum::<usize>() == 1 {
                run_bodies(conn, &job, &mut outcome)
            } else {
                execute_control(conn, "BEGIN IMMEDIATE")
                    .and_then(|()| run_bodies(conn, &job, &mut outcome))
                    .and_then(|()| execute_control(conn, "COMMIT"))
            };
            self.wrote(outcome.writes);
            let error = match ran {
                Ok(()) => {
                    let _ = job.reply.send(Ok((outcome, conn.last_insert_rowid())));
                    return Vec::new();
                }
                Err(e) => e,
            };
            let in_transaction = roll_back(conn);
            if busy(&error) && (in_transaction || outcome.writes == 0) {
                return again_or_fail(vec![job], &error);
            }
            let _ = job.reply.send(Err(error));
            return Vec::new();
        }
        // Every script here writes: the write lock is taken first, so a file another
        // connection holds costs nothing but the pause, and no snapshot goes stale.
        if let Err(e) = execute_control(conn, "BEGIN IMMEDIATE") {
            return again_or_fail(batch, &e);
        }
        let mut done: Vec<(Job, Answer)> = Vec::with_capacity(batch.len());
        let mut writes = 0;
        let mut rest = batch.into_iter();
        while let Some(job) = rest.next() {
            let mut outcome = Outcome::new(job.limit);
            let ran = execute_control(conn, "SAVEPOINT held_script")
                .and_then(|()| run_bodies(conn, &job, &mut outcome))
                .and_then(|()| execute_control(conn, "RELEASE held_script"));
            let error = match ran {
                Ok(()) => {
                    writes += outcome.writes;
                    done.push((job, Ok((outcome, conn.last_insert_rowid()))));
                    continue;
                }
                Err(e) => e,
            };
            if !ends_transaction(conn, &error) {
                // The script's own failure (a constraint, say): only its statements are
                // undone, and the others go on.
                let undone = execute_control(conn, "ROLLBACK TO held_script")
                    .and_then(|()| execute_control(conn, "RELEASE held_script"));
                match undone {
                    Ok(()) => {
                        done.push((job, Err(error)));
                        continue;
                    }
                    Err(u) => {
                        roll_back(conn);
                        let _ = job.reply.send(Err(error));
                        return fail_all(done.into_iter().map(|(j, _)| j).chain(rest), &u);
                    }
                }
            }
            // The transaction cannot go on: nothing of it stays. After a refusal of the
            // file every script runs again; after a failure of the file or the disk, each
            // is answered with it.
            roll_back(conn);
            let others = done.into_iter().map(|(j, _)| j);
            if busy(&error) {
                let again: Vec<Job> = others.chain(std::iter::once(job)).chain(rest).collect();
                return again_or_fail(again, &error);
            }
            let failed = fail_all(others.chain(rest), &error);
            let _ = job.reply.send(Err(error));
            return failed;
        }
        if let Err(e) = execute_control(conn, "COMMIT") {
            roll_back(conn);
            return again_or_fail(done.into_iter().map(|(j, _)| j).collect(), &e);
        }
        self.wrote(writes);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.grouped.fetch_add(done.len() as u64, Ordering::Relaxed);
        for (job, answer) in done {
            let _ = job.reply.send(answer);
        }
        Vec::new()
    }

    /// Transactions that ran several scripts of a single writer, and the scripts in them.
    pub(crate) fn groups(&self) -> (u64, u64) {
        (
            self.groups.load(Ordering::Relaxed),
            self.grouped.load(Ordering::Relaxed),
        )
    }

    /// How often a statement found the file locked by another connection and ran again.
    pub(crate) fn busy_retries(&self) -> u64 {
        self.busy_retries.load(Ordering::Relaxed)
    }
}

/// What a run collects: rows (up to `limit`), the count of changed rows and of the
/// statements that wrote.
struct Outcome {
    rows: Vec<AnyRow>,
    limit: Option<usize>,
    changes: u64,
    writes: usize,
}

impl Outcome {
    fn new(limit: Option<usize>) -> Outcome {
        Outcome {
            rows: Vec::new(),
            limit,
            changes: 0,
            writes: 0,
        }
    }

    fn full(&self) -> bool {
        self.limit.is_some_and(|l| self.rows.len() >= l)
    }
}

/// Roll back the transaction a failure left open, if any; whether there was one.
fn roll_back(conn: &rusqlite::Connection) -> bool {
    let in_transaction = !conn.is_autocommit();
    if in_transaction && let Err(r) = conn.execute_batch("ROLLBACK") {
        // The next `BEGIN` on this connection fails rather than nesting.
        tracing::error!(error = %r, "rolling back after a failed statement");
    }
    in_transaction
}

/// Run each part's statements of `job` (without the part's own `BEGIN` and `COMMIT`, see
/// [`group_body`]).
fn run_bodies(
    conn: &rusqlite::Connection,
    job: &Job,
    outcome: &mut Outcome,
) -> Result<(), sqlx::Error> {
    job.parts
        .iter()
        .zip(&job.bodies)
        .try_for_each(|((sql, args), ranges)| {
            let sql = sql.as_str();
            let body: Vec<&str> = ranges.iter().filter_map(|r| sql.get(r.clone())).collect();
            run_statements(conn, &body, args, outcome)
        })
}

/// Whether after `error` the open transaction cannot go on: SQLite ended it, or the file
/// refused or failed (SQLite's advice after a full disk, an I/O error or no memory is to
/// roll back), as opposed to a failure of the statement alone (a constraint, bad SQL).
fn ends_transaction(conn: &rusqlite::Connection, error: &sqlx::Error) -> bool {
    use rusqlite::ffi;
    let primary = match error {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map_or(ffi::SQLITE_ERROR, |c| c & 0xff),
        _ => ffi::SQLITE_ERROR,
    };
    conn.is_autocommit()
        || [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_FULL,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_INTERRUPT,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_PROTOCOL,
        ]
        .contains(&primary)
}

/// Answer every job with `error` (a copy each); nothing to run again.
fn fail_all(jobs: impl Iterator<Item = Job>, error: &sqlx::Error) -> Vec<Job> {
    for job in jobs {
        let _ = job.reply.send(Err(copy_error(error)));
    }
    Vec::new()
}

/// The jobs to run again after `error`: those still within their patience if it is a
/// locked file; the others are answered with it.
fn again_or_fail(jobs: Vec<Job>, error: &sqlx::Error) -> Vec<Job> {
    let now = Instant::now();
    let mut again = Vec::new();
    for job in jobs {
        if busy(error) && now < job.deadline {
            again.push(job);
        } else {
            let _ = job.reply.send(Err(copy_error(error)));
        }
    }
    again
}

/// The same failure again, for each of the scripts a transaction held.
fn copy_error(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::Database(d) => sqlx::Error::Database(Box::new(SqliteFailure {
            message: d.message().to_owned(),
            extended_code: d.code().and_then(|c| c.parse().ok()).unwrap_or(0),
        })),
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// Whether SQLite refused for a lock another connection holds.
fn busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.code().is_some_and(|c| c.parse::<i32>().is_ok_and(|c| c & 0xff == rusqlite::ffi::SQLITE_BUSY)))
}

/// The query's SQL and its arguments.
fn taken(mut query: Query<'_>) -> Result<(sqlx::SqlStr, Vec<AnyValueKind>), sqlx::Error> {
    let args = query
        .take_arguments()
        .map_err(sqlx::Error::Encode)?
        .map(|a| a.values.0)
        .unwrap_or_default();
    Ok((query.sql(), args))
}

/// Run each statement of `sql` in turn, binding its `$N` parameters from `args`.
fn run(
    conn: &rusqlite::Connection,
    sql: &sqlx::SqlStr,
    args: &[AnyValueKind],
    outcome: &mut Outcome,
) -> Result<(), sqlx::Error> {
    let pieces = statements(sql.as_str());
    // A script of several data statements runs as one transaction, as the caller means it
    // (a login with its code, say): otherwise each statement commits on its own, a later
    // one may find the write lock taken after an earlier one committed, and the script can
    // then neither be run again nor undone. In a transaction a refusal leaves nothing
    // behind and the whole script runs again. A deferred `BEGIN` takes the write lock only
    // at the first write, so a script that only reads takes none.
    let wrap = pieces.len() > 1 && conn.is_autocommit() && pieces.iter().all(|s| data_statement(s));
    if wrap {
        execute_control(conn, "BEGIN")?;
    }
    run_statements(conn, &pieces, args, outcome)?;
    if wrap {
        execute_control(conn, "COMMIT")?;
    }
    Ok(())
}

/// Run `pieces`, the statements of one query, in turn, binding their parameters from
/// `args`.
fn run_statements(
    conn: &rusqlite::Connection,
    pieces: &[&str],
    args: &[AnyValueKind],
    outcome: &mut Outcome,
) -> Result<(), sqlx::Error> {
    let mut anonymous = 0;
    for &statement in pieces {
        let mut stmt = conn
            .prepare_cached(statement)
            .map_err(|e| failure_sqlx(e, statement))?;
        for i in 1..=stmt.parameter_count() {
            let value = parameter(stmt.parameter_name(i), &mut anonymous, args)?;
            stmt.raw_bind_parameter(i, value)
                .map_err(|e| failure_sqlx(e, statement))?;
        }
        let writes = !stmt.readonly();
        // Named once per statement, and only for one that answers rows the caller keeps.
        let columns = (!outcome.full() && stmt.column_count() > 0).then(|| Columns::of(&stmt));
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(|e| failure_sqlx(e, statement))? {
            match &columns {
                Some(columns) if !outcome.full() => outcome.rows.push(any_row(row, columns)?),
                // A read has nothing more to give; a write still runs to its end.
                _ if !writes => break,
                _ => {}
            }
        }
        if writes {
            outcome.changes += conn.changes();
            outcome.writes += 1;
        }
    }
    Ok(())
}

/// Queries run one after the other in one transaction.
fn run_together(
    conn: &rusqlite::Connection,
    parts: &[(sqlx::SqlStr, Vec<AnyValueKind>)],
    outcome: &mut Outcome,
) -> Result<(), sqlx::Error> {
    execute_control(conn, "BEGIN IMMEDIATE")?;
    for (sql, args) in parts {
        run(conn, sql, args, outcome)?;
    }
    execute_control(conn, "COMMIT")
}

/// Run a transaction's `BEGIN` or `COMMIT` (prepared once per connection).
fn execute_control(conn: &rusqlite::Connection, sql: &str) -> Result<(), sqlx::Error> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.raw_execute())
        .map(|_| ())
        .map_err(|e| failure_sqlx(e, sql))
}

/// The statement's first word (its letters up to the first other character).
fn first_word(statement: &str) -> &str {
    let statement = statement.trim_start();
    let end = statement
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(statement.len());
    &statement[..end]
}

/// Whether a statement only reads or changes rows, and so may run inside a transaction
/// the store opens (not `BEGIN` or `COMMIT` themselves, a `PRAGMA`, `VACUUM`, `ATTACH`…).
fn data_statement(statement: &str) -> bool {
    let word = first_word(statement);
    [
        "SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "VALUES",
    ]
    .iter()
    .any(|w| word.eq_ignore_ascii_case(w))
}

/// Each part's statements (as byte ranges of its SQL) if a single writer runs these parts
/// in a group: each of data statements only (see [`group_body`]) and one at least
/// changing rows. A script that only reads commits nothing, and in a group it would wait
/// for a write lock it does not need.
fn groupable(
    parts: &[(sqlx::SqlStr, Vec<AnyValueKind>)],
) -> Option<Vec<Vec<std::ops::Range<usize>>>> {
    let mut writes = false;
    let mut bodies = Vec::with_capacity(parts.len());
    for (sql, _) in parts {
        let sql = sql.as_str();
        let body = group_body(sql)?;
        writes |= body.iter().map(|s| first_word(s)).any(|w| {
            ["INSERT", "UPDATE", "DELETE", "REPLACE"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k))
        });
        // Each statement is a slice of `sql`: where it starts, and its length.
        let start = |s: &str| (s.as_ptr() as usize).saturating_sub(sql.as_ptr() as usize);
        bodies.push(body.iter().map(|s| start(s)..start(s) + s.len()).collect());
    }
    writes.then_some(bodies)
}

/// The statements of a script that may run in a transaction the store opens: data
/// statements only, or data statements between the script's own `BEGIN` and `COMMIT`
/// (which the store's transaction then stands for).
fn group_body(sql: &str) -> Option<Vec<&str>> {
    let mut pieces = statements(sql);
    // Whether the statement's words are `first` and then only words of `rest`.
    let made_of = |s: &str, first: &[&str], rest: &[&str]| {
        let mut words = s.split_whitespace();
        words
            .next()
            .is_some_and(|w| first.iter().any(|f| w.eq_ignore_ascii_case(f)))
            && words.all(|w| rest.iter().any(|r| w.eq_ignore_ascii_case(r)))
    };
    let begins = pieces.first().is_some_and(|s| {
        made_of(
            s,
            &["BEGIN"],
            &["DEFERRED", "IMMEDIATE", "EXCLUSIVE", "TRANSACTION"],
        )
    });
    if begins {
        let commits = pieces
            .last()
            .is_some_and(|s| made_of(s, &["COMMIT", "END"], &["TRANSACTION"]));
        if !commits || pieces.len() < 2 {
            return None;
        }
        pieces.pop();
        pieces.remove(0);
    }
    (!pieces.is_empty() && pieces.iter().all(|s| data_statement(s))).then_some(pieces)
}

/// The statements of a script, split at the semicolons outside quotes and comments.
///
/// rusqlite prepares one statement and does not say where it ended, and its `Batch`, which
/// does, prepares every statement anew at each run; split here, each statement stays in the
/// connection's cache of prepared statements. A statement cut wrongly (a trigger's body)
/// fails to prepare with SQLite's own error, never runs in part.
fn statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut pieces = Vec::new();
    // Where the current statement starts, and whether it holds more than comments.
    let (mut start, mut i, mut words) = (0, 0, false);
    while let Some(&b) = bytes.get(i) {
        match b {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = bytes[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(bytes.len(), |p| i + 2 + p + 2);
            }
            b';' => {
                if words {
                    pieces.push(&sql[start..i]);
                }
                i += 1;
                (start, words) = (i, false);
            }
            _ => {
                words |= !b.is_ascii_whitespace();
                i = match b {
                    b'\'' | b'"' | b'`' => closing(bytes, i + 1, b),
                    b'[' => closing(bytes, i + 1, b']'),
                    _ => i + 1,
                };
            }
        }
    }
    if words {
        pieces.push(&sql[start..]);
    }
    pieces
}

/// The index after the quote `close` that ends a quoted run starting at `from` (a doubled
/// quote is part of the run).
fn closing(bytes: &[u8], from: usize, close: u8) -> usize {
    let mut i = from;
    while let Some(&b) = bytes.get(i) {
        if b == close {
            if close != b']' && bytes.get(i + 1) == Some(&close) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// The argument for a parameter, bound as sqlx's SQLite driver binds it: `$N` and `?N`
/// name the N-th argument (from 1), each bare `?` takes the next one after those the
/// script's earlier bare `?`s took (`anonymous`), and a parameter without an argument is
/// NULL.
fn parameter<'a>(
    name: Option<&str>,
    anonymous: &mut usize,
    args: &'a [AnyValueKind],
) -> Result<rusqlite::types::ToSqlOutput<'a>, sqlx::Error> {
    use rusqlite::types::{ToSqlOutput, Value};
    let number = match name {
        None => {
            *anonymous += 1;
            *anonymous
        }
        Some(n) => n
            .strip_prefix('$')
            .or_else(|| n.strip_prefix('?'))
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                sqlx::Error::InvalidArgument(format!(
                    "parameter {n}: only $N, ?N and ? placeholders are bound"
                ))
            })?,
    };
    let Some(value) = number.checked_sub(1).and_then(|i| args.get(i)) else {
        return Ok(ToSqlOutput::Owned(Value::Null));
    };
    Ok(match value {
        AnyValueKind::Null(_) => ToSqlOutput::Owned(Value::Null),
        AnyValueKind::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(*b))),
        AnyValueKind::SmallInt(v) => ToSqlOutput::Owned(Value::Integer(i64::from(*v))),
        AnyValueKind::Integer(v) => ToSqlOutput::Owned(Value::Integer(i64::from(*v))),
        AnyValueKind::BigInt(v) => ToSqlOutput::Owned(Value::Integer(*v)),
        AnyValueKind::Real(v) => ToSqlOutput::Owned(Value::Real(f64::from(*v))),
        AnyValueKind::Double(v) => ToSqlOutput::Owned(Value::Real(*v)),
        AnyValueKind::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        AnyValueKind::TextSlice(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        AnyValueKind::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        other => {
            return Err(sqlx::Error::InvalidArgument(format!(
                "parameter {number}: a value of a kind SQLite does not store ({other:?})"
            )));
        }
    })
}

/// A statement's column names, in order and as an `AnyRow` looks them up.
struct Columns {
    names: Vec<UStr>,
    index: Arc<sqlx_core::HashMap<UStr, usize>>,
}

impl Columns {
    fn of(stmt: &rusqlite::Statement<'_>) -> Columns {
        let names: Vec<UStr> = stmt.column_names().into_iter().map(UStr::new).collect();
        let mut index = sqlx_core::HashMap::default();
        for (i, name) in names.iter().enumerate() {
            // As sqlx's own driver does, a repeated name finds its first column.
            index.entry(name.clone()).or_insert(i);
        }
        Columns {
            names,
            index: Arc::new(index),
        }
    }
}

/// The row as sqlx's SQLite driver gives it through `Any`: each value of the kind of its
/// storage class.
fn any_row(row: &rusqlite::Row<'_>, columns: &Columns) -> Result<AnyRow, sqlx::Error> {
    let mut any_columns = Vec::with_capacity(columns.names.len());
    let mut values = Vec::with_capacity(columns.names.len());
    for (i, name) in columns.names.iter().enumerate() {
        let value = row
            .get_ref(i)
            .map_err(|e| sqlx::Error::AnyDriverError(Box::new(e)))?;
        let (kind, value) = match value {
            ValueRef::Null => (
                AnyTypeInfoKind::Null,
                AnyValueKind::Null(AnyTypeInfoKind::Null),
            ),
            ValueRef::Integer(v) => (AnyTypeInfoKind::BigInt, AnyValueKind::BigInt(v)),
            ValueRef::Real(v) => (AnyTypeInfoKind::Double, AnyValueKind::Double(v)),
            ValueRef::Text(t) => (
                AnyTypeInfoKind::Text,
                AnyValueKind::Text(Arc::new(String::from_utf8_lossy(t).into_owned())),
            ),
            ValueRef::Blob(b) => (
                AnyTypeInfoKind::Blob,
                AnyValueKind::Blob(Arc::new(b.to_vec())),
            ),
        };
        any_columns.push(AnyColumn {
            ordinal: i,
            name: name.clone(),
            type_info: AnyTypeInfo { kind },
        });
        values.push(AnyValue { kind: value });
    }
    Ok(AnyRow {
        column_names: columns.index.clone(),
        columns: any_columns,
        values,
    })
}

/// A SQLite error as sqlx reports one, so that callers (and [`crate::db_error`]) see the
/// same error whichever path ran the statement.
#[derive(Debug)]
struct SqliteFailure {
    message: String,
    extended_code: i32,
}

impl std::fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.extended_code, self.message)
    }
}

impl std::error::Error for SqliteFailure {}

impl sqlx::error::DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.extended_code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        use sqlx::error::ErrorKind;
        match self.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

fn failure_sqlx(e: rusqlite::Error, statement: &str) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            sqlx::Error::Database(Box::new(SqliteFailure {
                message: message.unwrap_or_else(|| code.to_string()),
                extended_code: code.extended_code,
            }))
        }
        other => sqlx::Error::AnyDriverError(Box::new(DriverFailure {
            statement: statement.chars().take(80).collect(),
            source: other,
        })),
    }
}

/// An error of the connection itself (not of a statement's SQL).
fn failure(e: rusqlite::Error, context: &str) -> Error {
    crate::db_error(failure_sqlx(e, ""), context)
}

#[derive(Debug)]
struct DriverFailure {
    statement: String,
    source: rusqlite::Error,
}

impl std::fmt::Display for DriverFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (in {:?})", self.source, self.statement)
    }
}

impl std::error::Error for DriverFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::{group_body, statements};

    #[test]
    fn only_data_statements_run_in_a_group() {
        assert_eq!(
            group_body("INSERT INTO t VALUES (1); SELECT changes()"),
            Some(vec!["INSERT INTO t VALUES (1)", " SELECT changes()"])
        );
        // The script's own transaction is the group's.
        assert_eq!(
            group_body("begin immediate transaction; UPDATE t SET a = 1; end"),
            Some(vec![" UPDATE t SET a = 1"])
        );
        assert_eq!(
            group_body("BEGIN; UPDATE t SET a = 1; COMMIT;"),
            Some(vec![" UPDATE t SET a = 1"])
        );
        for alone in [
            "BEGIN IMMEDIATE; UPDATE t SET a = 1",
            "BEGIN; COMMIT",
            "BEGIN; UPDATE t SET a = 1; ROLLBACK",
            "PRAGMA user_version = 2",
            "UPDATE t SET a = 1; VACUUM",
            "SAVEPOINT s; UPDATE t SET a = 1; RELEASE s",
            "CREATE TABLE u (a)",
            "",
        ] {
            assert_eq!(group_body(alone), None, "{alone}");
        }
    }

    #[test]
    fn a_script_splits_at_semicolons_outside_quotes_and_comments() {
        let script = "BEGIN IMMEDIATE; INSERT INTO t (a, b) VALUES ('x;y', \"c;d\"); \
                      -- a comment; still a comment\n\
                      /* and; this */ UPDATE t SET a = 'it''s;' WHERE [b;c] = 1;COMMIT;  ";
        let pieces: Vec<&str> = statements(script).into_iter().map(str::trim).collect();
        assert_eq!(
            pieces,
            vec![
                "BEGIN IMMEDIATE",
                "INSERT INTO t (a, b) VALUES ('x;y', \"c;d\")",
                "-- a comment; still a comment\n/* and; this */ UPDATE t SET a = 'it''s;' WHERE [b;c] = 1",
                "COMMIT",
            ]
        );
        assert_eq!(statements("SELECT 1"), vec!["SELECT 1"]);
        assert!(statements("  ;; -- nothing; here\n /* at all */").is_empty());
        // An unterminated quote keeps the rest in one statement, for SQLite to refuse.
        assert_eq!(statements("SELECT 'a;b"), vec!["SELECT 'a;b"]);
    }
}
