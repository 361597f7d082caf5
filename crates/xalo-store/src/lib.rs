//! One database handle for every Xalo role.
//!
//! SQLite is the embedded default (a file under the data directory, in WAL mode); PostgreSQL
//! is the production backend. Both are reached through sqlx's `Any` driver so that a crate
//! writes each query once, with `$1`-style placeholders that both backends accept, and
//! sticks to the portable types (`BIGINT`, `TEXT`, byte strings; flags as `BIGINT` 0/1,
//! since the `Any` driver cannot read SQLite's `BOOLEAN` columns). Where the two
//! dialects differ (auto-increment keys, `BLOB` vs `BYTEA`), a [`Migration`] carries one
//! script per backend.
//!
//! Each crate owns its tables and migrates them itself ([`Database::migrate`]) under its
//! own component name, so crates never collide on migration versions and a member's
//! database holds only the components it runs.

mod held;
mod migrate;
pub mod testing;

use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use xalo_core::server::HealthCheck;
use xalo_core::{Error, ErrorCode};

pub use migrate::Migration;
pub use sqlx;
pub use sqlx::Row;

/// Which database engine a handle talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The placeholders of a multi-row `VALUES` list: `rows` groups of `columns`, bound in
    /// order, row by row. SQLite gets anonymous `?`: it finds a numbered parameter's name
    /// by a linear scan for each one bound, which makes a statement of many numbered
    /// parameters quadratic to bind. PostgreSQL gets `$1`, `$2`, ….
    pub fn value_rows(self, rows: usize, columns: usize) -> String {
        let mut sql = String::with_capacity(rows * columns * 5);
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for col in 0..columns {
                if col > 0 {
                    sql.push_str(", ");
                }
                match self {
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => {
                        sql.push('$');
                        sql.push_str(&(row * columns + col + 1).to_string());
                    }
                }
            }
            sql.push(')');
        }
        sql
    }

    pub fn of_url(url: &str) -> Result<Backend, Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::new(
                ErrorCode::StoreUrl,
                format!("{}: expected sqlite:// or postgres://", redact(url)),
            ))
        }
    }
}

/// A pool of connections to one database.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    url: Arc<str>,
    /// Whether SQLite connections sync every commit (see [`PoolOptions`]).
    power_loss_durable: bool,
    /// Each SQLite connection's page cache (see [`PoolOptions`]).
    sqlite_cache_kib: u32,
    /// Connections kept out of the pool (see [`Database::connect_held`]).
    held: Option<Arc<held::Held>>,
}

/// A write transaction from [`Database::begin_write`], used as the connection it runs on
/// (`&mut *tx`). On a single writer with a held connection (see
/// [`Database::connect_held`]) it also holds that connection's lock, so that the pool's
/// transactions and the held connection's statements queue in this process, in order,
/// rather than on SQLite's busy timeout, which polls.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _gate: Option<held::Gate>,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("gated", &self._gate.is_some())
            .finish()
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// How a pool behaves: its size, and how long to wait for a connection before reporting
/// the database unavailable.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// On SQLite, sync every commit to disk (`synchronous = FULL`), so commits survive power
    /// loss and not only a process crash. PostgreSQL always does.
    pub power_loss_durable: bool,
    /// On SQLite, each connection's page cache, in KiB (SQLite's own default, 2,000 KiB,
    /// unless a role sets less). Each connection keeps its own copies of the pages it
    /// read, so a full pool may hold this many times `max_connections`; the operating
    /// system's file cache is behind it either way.
    pub sqlite_cache_kib: u32,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            power_loss_durable: false,
            sqlite_cache_kib: 2_000,
        }
    }
}

/// The URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Database {
    /// Open (creating if needed) the database at `url`.
    pub async fn connect(url: &str) -> Result<Database, Error> {
        Self::connect_with(url, PoolOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: PoolOptions) -> Result<Database, Error> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = Backend::of_url(url)?;
        let mut full = url.to_owned();
        if backend == Backend::Sqlite {
            let path = sqlite_path(url);
            if let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::new(
                        ErrorCode::StoreUnavailable,
                        format!("creating {}: {e}", parent.display()),
                    )
                })?;
            }
            full = sqlite_create_url(url);
        }
        let connect = AnyConnectOptions::from_str(&full)
            .map_err(|e| Error::new(ErrorCode::StoreUrl, format!("{}: {e}", redact(url))))?;
        let pragmas = sqlite_pragmas(options.power_loss_durable, options.sqlite_cache_kib);
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A SQLite connection is a file handle in this process: it cannot go stale, so
            // a ping on every acquire would only add a round trip to the connection's worker
            // thread before each statement. PostgreSQL connections are still tested.
            .test_before_acquire(backend != Backend::Sqlite)
            .after_connect(move |conn, _meta| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; NORMAL sync in WAL mode
                        // loses nothing on a process crash (kill -9), only possibly the last
                        // transactions on power loss; `power_loss_durable` closes that gap.
                        conn.execute(sqlx::AssertSqlSafe(pragmas.as_str())).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(|e| {
                Error::new(ErrorCode::StoreUnavailable, format!("{}: {e}", redact(url)))
            })?;
        tracing::debug!(url = %redact(url), ?backend, "database opened");
        Ok(Database {
            pool,
            backend,
            url: url.into(),
            power_loss_durable: options.power_loss_durable,
            sqlite_cache_kib: options.sqlite_cache_kib,
            held: None,
        })
    }

    /// Like [`Database::connect_with`], but on a SQLite file the statements run through
    /// [`Database::execute`] and the `fetch_*` methods go to `connections` connections of
    /// the handle's own (see `Held`), one statement at a time each; `pool()` still gives
    /// the pool. One held connection makes a single writer whose statements queue on a
    /// lock in this process, and whose scripts that change rows waiting at the same time
    /// run as one transaction, each in a savepoint of its own (a constraint one violates
    /// undoes only its own statements; each answer is given once all have committed).
    /// Elsewhere (PostgreSQL, in-memory SQLite) the pool serves all.
    pub async fn connect_held(
        url: &str,
        connections: usize,
        options: PoolOptions,
    ) -> Result<Database, Error> {
        let mut db = Database::connect_with(url, options).await?;
        if connections == 0 || !db.is_sqlite_file() {
            return Ok(db);
        }
        let pragmas = sqlite_pragmas(options.power_loss_durable, options.sqlite_cache_kib);
        let path = sqlite_path(url).to_owned();
        // Opening a file and reading its schema is blocking work, done once.
        let held =
            tokio::task::spawn_blocking(move || held::Held::open(&path, connections, &pragmas))
                .await
                .map_err(|e| {
                    Error::new(ErrorCode::Internal, format!("opening connections: {e}"))
                })??;
        let held = Arc::new(held);
        held.checkpoints(db.pool.clone());
        db.held = Some(held);
        Ok(db)
    }

    /// Whether this handle is on a SQLite file (not PostgreSQL, not in-memory SQLite).
    fn is_sqlite_file(&self) -> bool {
        self.backend == Backend::Sqlite
            && !self.url.contains(":memory:")
            && !self.url.contains("mode=memory")
    }

    /// This database again as a single writer: one held connection (see
    /// [`Database::connect_held`]) set up as this handle's connections are, for a task that
    /// writes in a loop and should not hand each statement to a connection's thread; this
    /// same handle elsewhere (PostgreSQL, in-memory SQLite).
    pub async fn single_writer(&self) -> Result<Database, Error> {
        if !self.is_sqlite_file() {
            return Ok(self.clone());
        }
        let options = PoolOptions {
            // The writer's pool only checkpoints the log.
            max_connections: 1,
            power_loss_durable: self.power_loss_durable,
            sqlite_cache_kib: self.sqlite_cache_kib,
            ..PoolOptions::default()
        };
        Database::connect_held(&self.url, 1, options).await
    }

    /// [`Database::single_writer`] for `who`, or this same handle (logged) if the writer
    /// cannot be opened: a task's writes go on through the pool rather than stop.
    pub async fn single_writer_or_pool(&self, who: &str) -> Database {
        self.single_writer().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "{who} writes through the pool");
            self.clone()
        })
    }

    /// Run several statements as one transaction: on a held connection if the handle has
    /// them (in the calling task, the lock taken once), else on a pool connection.
    /// Returns the rows they changed together.
    pub async fn execute_together(
        &self,
        queries: Vec<sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>>,
        context: &str,
    ) -> Result<u64, Error> {
        self.execute_grouped(queries, context, true).await
    }

    /// [`Database::execute_together`] for a caller that gathered its batch itself (one task
    /// writing for many): a single writer runs it at once, without first letting other
    /// tasks add their scripts, which for a lone caller only costs thread wake-ups.
    pub async fn execute_gathered(
        &self,
        queries: Vec<sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>>,
        context: &str,
    ) -> Result<u64, Error> {
        self.execute_grouped(queries, context, false).await
    }

    async fn execute_grouped(
        &self,
        queries: Vec<sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>>,
        context: &str,
        gather: bool,
    ) -> Result<u64, Error> {
        if let Some(held) = &self.held {
            return held
                .execute_together(queries, gather)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| db_error(e, context));
        }
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
        for query in queries {
            changed += query
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(e, context))?
                .rows_affected();
        }
        tx.commit().await.map_err(|e| db_error(e, context))?;
        Ok(changed)
    }

    /// Run one statement (on a held connection if the handle has them, else the pool).
    pub async fn execute(
        &self,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        match &self.held {
            Some(held) => held.execute(query).await,
            None => query.execute(&self.pool).await,
        }
    }

    /// The row of a statement, if any (held connection or pool, as [`Database::execute`]).
    pub async fn fetch_optional(
        &self,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Option<sqlx::any::AnyRow>, sqlx::Error> {
        match &self.held {
            Some(held) => Ok(held.fetch(query, Some(1)).await?.into_iter().next()),
            None => query.fetch_optional(&self.pool).await,
        }
    }

    /// The one row of a statement (held connection or pool, as [`Database::execute`]).
    pub async fn fetch_one(
        &self,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyRow, sqlx::Error> {
        match &self.held {
            Some(held) => held
                .fetch(query, Some(1))
                .await?
                .into_iter()
                .next()
                .ok_or(sqlx::Error::RowNotFound),
            None => query.fetch_one(&self.pool).await,
        }
    }

    /// The rows of a statement (held connection or pool, as [`Database::execute`]).
    pub async fn fetch_all(
        &self,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        match &self.held {
            Some(held) => held.fetch(query, None).await,
            None => query.fetch_all(&self.pool).await,
        }
    }

    /// SQLite only: run `script`, several statements that open a write transaction
    /// (`BEGIN IMMEDIATE`) and commit it, in one call to the connection's worker thread,
    /// sharing one list of `$N` parameters. A transaction sent statement by statement takes
    /// one hand-off to that thread per statement, and on a busy machine each hand-off
    /// waits for the scheduler while the single writer holds the lock; sent whole, it takes
    /// one. A failing statement ends the script and its transaction is rolled back before
    /// the connection goes back to the pool. Returns the rows its statements returned
    /// (counts of changed rows cannot be summed: SQLite reports, after `BEGIN` and
    /// `COMMIT`, those of the last statement that changed rows, so a script that needs one
    /// selects `changes()` itself).
    pub async fn write_script(
        &self,
        script: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
        context: &str,
    ) -> Result<Vec<sqlx::any::AnyRow>, Error> {
        if self.backend != Backend::Sqlite {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("{context}: a write script runs on SQLite only"),
            ));
        }
        if let Some(held) = &self.held {
            return held
                .fetch(script, None)
                .await
                .map_err(|e| db_error(e, context));
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error(e, context))?;
        match script.fetch_all(&mut *conn).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                // A connection whose transaction could not be ended stays out of the pool.
                if let Some(r) = roll_back(&mut conn).await {
                    tracing::warn!(error = %r, "rolling back a failed write script");
                    let _ = conn.close().await;
                }
                Err(db_error(e, context))
            }
        }
    }

    /// How often a statement on one of the handle's held connections found the file
    /// locked by another connection and ran again (see [`Database::connect_held`]); 0
    /// without held connections. A single writer's statements should never have to.
    pub fn busy_retries(&self) -> u64 {
        self.held.as_ref().map_or(0, |h| h.busy_retries())
    }

    /// On a single writer with a held connection: the transactions that ran several
    /// scripts together, and the scripts they ran (see [`Database::connect_held`]).
    pub fn grouped_scripts(&self) -> (u64, u64) {
        self.held.as_ref().map_or((0, 0), |h| h.groups())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The URL this handle was opened with (password redacted).
    pub fn url(&self) -> String {
        redact(&self.url)
    }

    /// Start a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so that two writers queue on the busy timeout instead of one
    /// failing when it upgrades a read lock.
    pub async fn begin_write(&self) -> Result<WriteTx, Error> {
        let statement = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        let gate = match &self.held {
            Some(held) => held.gate().await,
            None => None,
        };
        let tx = self
            .pool
            .begin_with(statement)
            .await
            .map_err(|e| db_error(e, "starting a transaction"))?;
        Ok(WriteTx { tx, _gate: gate })
    }

    /// A second database beside this one for data derived from it that must not slow its
    /// writes: on SQLite a file next to this one (`NAME` appended to its path), with its own
    /// write lock and ordinary (not power-loss) durability; on PostgreSQL, which has no
    /// single writer lock, this same database.
    pub async fn companion(&self, name: &str) -> Result<Database, Error> {
        match self.backend {
            Backend::Postgres => Ok(self.clone()),
            Backend::Sqlite => {
                let (path, query) = match self.url.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (&*self.url, None),
                };
                if path.contains(":memory:") || path.trim_start_matches("sqlite:").is_empty() {
                    return Ok(self.clone());
                }
                let mut url = format!("{path}-{name}");
                if let Some(q) = query {
                    url.push('?');
                    url.push_str(q);
                }
                Database::connect_with(&url, PoolOptions::default()).await
            }
        }
    }

    /// Check that the database answers.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| Error::new(ErrorCode::StoreUnavailable, e.to_string()))
    }

    /// A `/healthz` probe that pings this database.
    pub fn health_check(&self) -> HealthCheck {
        let db = self.clone();
        Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await })
        })
    }

    /// Apply the component's migrations that this database has not seen yet.
    pub async fn migrate(&self, component: &str, migrations: &[Migration]) -> Result<(), Error> {
        migrate::run(self, component, migrations).await
    }

    /// Stream CSV rows into a PostgreSQL table with `COPY … FROM STDIN`, the fast path for
    /// bulk loads (the `Any` driver has no COPY, so this opens one native connection).
    /// `statement` is the full COPY statement with `FORMAT csv`.
    pub async fn postgres_copy(&self, statement: &str, csv: Vec<u8>) -> Result<u64, Error> {
        use sqlx::Connection;
        if self.backend != Backend::Postgres {
            return Err(Error::new(
                ErrorCode::StoreUrl,
                "COPY is a PostgreSQL feature; SQLite loads with batched INSERTs",
            ));
        }
        let mut conn = sqlx::postgres::PgConnection::connect(&self.url)
            .await
            .map_err(|e| db_error(e, "connecting for COPY"))?;
        let mut copy = conn
            .copy_in_raw(statement)
            .await
            .map_err(|e| db_error(e, "starting COPY"))?;
        copy.send(csv)
            .await
            .map_err(|e| db_error(e, "sending COPY data"))?;
        let rows = copy
            .finish()
            .await
            .map_err(|e| db_error(e, "finishing COPY"))?;
        conn.close()
            .await
            .map_err(|e| db_error(e, "closing the COPY connection"))?;
        Ok(rows)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// End the transaction a failed script left open; the error, unless there was none to end
/// (the script's `BEGIN` itself failed).
async fn roll_back(conn: &mut sqlx::AnyConnection) -> Option<sqlx::Error> {
    match sqlx::query("ROLLBACK").execute(conn).await {
        Ok(_) => None,
        Err(e) if e.to_string().contains("no transaction is active") => None,
        Err(e) => Some(e),
    }
}

/// The file a `sqlite:` URL names.
fn sqlite_path(url: &str) -> &str {
    url.trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or("")
}

/// `url` opening its SQLite file read-write and creating it when missing, unless the URL
/// names a mode itself.
fn sqlite_create_url(url: &str) -> String {
    let mut full = url.to_owned();
    if !full.contains("mode=") {
        full.push(if full.contains('?') { '&' } else { '?' });
        full.push_str("mode=rwc");
    }
    full
}

/// How long a SQLite statement waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 30_000;

/// What every SQLite connection is set to.
fn sqlite_pragmas(power_loss_durable: bool, cache_kib: u32) -> String {
    let synchronous = if power_loss_durable { "FULL" } else { "NORMAL" };
    // A negative cache size is in KiB.
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
         PRAGMA cache_size = -{cache_kib};"
    )
}

/// Turn a sqlx error into a coded error: unique violations are conflicts, a missing row is
/// not-found, connection trouble is unavailability.
pub fn db_error(e: sqlx::Error, context: &str) -> Error {
    let code = match &e {
        sqlx::Error::RowNotFound => ErrorCode::StoreNotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => ErrorCode::StoreConflict,
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => ErrorCode::StoreUnavailable,
        _ => ErrorCode::StoreQuery,
    };
    Error::new(code, format!("{context}: {e}"))
}

/// `.db("what")` on any sqlx result.
pub trait DbResultExt<T> {
    fn db(self, context: &str) -> Result<T, Error>;
}

impl<T> DbResultExt<T> for Result<T, sqlx::Error> {
    fn db(self, context: &str) -> Result<T, Error> {
        self.map_err(|e| db_error(e, context))
    }
}
