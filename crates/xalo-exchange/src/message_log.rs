//! The message log: every signed message a gateway sent or received, with its signature,
//! kept for the configured retention, so a member can prove what it was asked and what it
//! answered. A message is committed to the log before it is answered, so an answer never
//! outruns its evidence, also across `kill -9`; the writes of concurrent messages share
//! one transaction (group commit). Bodies larger than the in-memory limit are kept as
//! their hash, which the signature covers, and so are all bodies when body logging is off.
//!
//! The log is time-stamped in batches, as X-Road's is: one RFC 3161 token from the
//! global configuration's TSA over the digest of the messages logged since the previous
//! token (their ids, hashes and signatures), so each signature is shown to have existed
//! by then (component `gateway-message-log`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::Digest;
use tokio::sync::oneshot;
use xalo_core::Error;
use xalo_store::{Database, DbResultExt, Migration, Row};

/// The refusals' columns after the id, and their indexes (migration 5, both backends).
macro_rules! refusal_table {
    () => {
        "refused_unix BIGINT NOT NULL, side TEXT NOT NULL, kind TEXT NOT NULL, \
         status BIGINT NOT NULL, message TEXT NOT NULL, detail TEXT NOT NULL, \
         upstream_detail TEXT NOT NULL, x_road_id TEXT NOT NULL, client TEXT NOT NULL, \
         service TEXT NOT NULL, peer TEXT NOT NULL, request TEXT NOT NULL); \
         CREATE INDEX gateway_refusal_time ON gateway_refusal (refused_unix); \
         CREATE INDEX gateway_refusal_detail ON gateway_refusal (detail);"
    };
}

const MIGRATIONS: &[Migration] = &[
    Migration::per_backend(
        1,
        "message log time-stamps",
        "CREATE TABLE gateway_message_timestamp (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        first_id BIGINT NOT NULL,
        last_id BIGINT NOT NULL,
        digest TEXT NOT NULL,
        token BLOB NOT NULL,
        stamped_unix BIGINT NOT NULL
    );",
        "CREATE TABLE gateway_message_timestamp (
        id BIGSERIAL PRIMARY KEY,
        first_id BIGINT NOT NULL,
        last_id BIGINT NOT NULL,
        digest TEXT NOT NULL,
        token BYTEA NOT NULL,
        stamped_unix BIGINT NOT NULL
    );",
    ),
    Migration::portable(
        2,
        "how far missed evidence was sent to the ledger",
        "CREATE TABLE gateway_evidence_cursor (id INTEGER PRIMARY KEY, last_id BIGINT NOT NULL);",
    ),
    Migration::portable(
        3,
        "one instance of a gateway at a time sends missed evidence",
        "ALTER TABLE gateway_evidence_cursor ADD COLUMN holder TEXT NOT NULL DEFAULT ''; \
         ALTER TABLE gateway_evidence_cursor ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0; \
         INSERT INTO gateway_evidence_cursor (id, last_id) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;",
    ),
    Migration::per_backend(
        4,
        "refusals",
        "CREATE TABLE gateway_refusal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        refused_unix BIGINT NOT NULL,
        side TEXT NOT NULL,
        kind TEXT NOT NULL,
        status BIGINT NOT NULL,
        message TEXT NOT NULL,
        detail TEXT NOT NULL,
        x_road_id TEXT NOT NULL,
        client TEXT NOT NULL,
        service TEXT NOT NULL,
        request_head BLOB NOT NULL
    );
    CREATE INDEX gateway_refusal_time ON gateway_refusal (refused_unix);",
        "CREATE TABLE gateway_refusal (
        id BIGSERIAL PRIMARY KEY,
        refused_unix BIGINT NOT NULL,
        side TEXT NOT NULL,
        kind TEXT NOT NULL,
        status BIGINT NOT NULL,
        message TEXT NOT NULL,
        detail TEXT NOT NULL,
        x_road_id TEXT NOT NULL,
        client TEXT NOT NULL,
        service TEXT NOT NULL,
        request_head BYTEA NOT NULL
    );
    CREATE INDEX gateway_refusal_time ON gateway_refusal (refused_unix);",
    ),
    // Refusals as `crate::refusal` keeps them: the request line and identifiers only, not
    // the head that 4 kept (what was recorded in its one version is let go).
    Migration::per_backend(
        5,
        "refusals without request heads",
        concat!(
            "DROP TABLE gateway_refusal; CREATE TABLE gateway_refusal (",
            "id INTEGER PRIMARY KEY AUTOINCREMENT, ",
            refusal_table!()
        ),
        concat!(
            "DROP TABLE gateway_refusal; CREATE TABLE gateway_refusal (",
            "id BIGSERIAL PRIMARY KEY, ",
            refusal_table!()
        ),
    ),
    Migration::portable(
        6,
        "refusals of admitted requests, for the replay guard",
        "ALTER TABLE gateway_refusal ADD COLUMN request_signature TEXT NOT NULL DEFAULT ''; \
         ALTER TABLE gateway_refusal ADD COLUMN request_hash TEXT NOT NULL DEFAULT '';",
    ),
];

/// Messages covered by one time-stamp at most.
const STAMP_BATCH: i64 = 10_000;

/// One time-stamp of the log: the token covers [`MessageLog::batch_digest`] of the
/// messages `first_id..=last_id`.
#[derive(Debug, Clone)]
pub struct BatchTimestamp {
    pub first_id: i64,
    pub last_id: i64,
    pub digest: String,
    pub token: Vec<u8>,
    pub stamped_unix: i64,
}

/// What one time-stamping run did.
#[derive(Debug, Default)]
pub struct StampRun {
    /// When a token was stored (none when nothing was waiting).
    pub stamped_unix: Option<i64>,
    /// When the oldest message the run left unstamped was logged.
    pub oldest_unstamped_unix: Option<i64>,
    pub error: Option<Error>,
    /// Time-stamps stored.
    pub tokens: usize,
    /// The last batch was full: more messages may be waiting.
    pub more: bool,
}

/// One exchanged message, as logged.
#[derive(Debug, Clone, Default)]
pub struct LoggedMessage {
    /// `client` (this gateway sent the request) or `provider` (it served it).
    pub side: &'static str,
    pub x_road_id: String,
    pub client: String,
    pub service: String,
    pub request_hash: String,
    pub request_head: Vec<u8>,
    pub request_signature: String,
    pub request_body: Option<Vec<u8>>,
    pub response_hash: Option<String>,
    pub response_head: Option<Vec<u8>>,
    pub response_signature: Option<String>,
    pub response_body: Option<Vec<u8>>,
    pub status: u16,
    pub ledger_index: Option<u64>,
}

/// Where the answer to a caller waiting for a commit goes.
type Committed = oneshot::Sender<Result<(), Error>>;

/// What waits for the next commit.
#[derive(Debug, Default)]
struct Waiting {
    /// Messages, each with its caller's answer.
    messages: Vec<(LoggedMessage, Committed)>,
    /// Ledger entries of messages logged before their evidence was recorded.
    indexes: Vec<LedgerIndex>,
    /// Callers to answer once everything queued before them is committed, each with how
    /// many messages had been queued by then and how many commits had failed.
    flushes: Vec<(Committed, u64, u64)>,
    /// Messages queued so far, and taken to be committed.
    queued: u64,
    taken: u64,
    /// Commits that failed so far, and the last one's error: a flush after which one
    /// failed is answered with it (what it waited for may be among what was lost).
    failed: u64,
    last_failure: Option<Error>,
}

/// What one commit takes from [`Waiting`].
struct Batch {
    messages: Vec<LoggedMessage>,
    answers: Vec<Committed>,
    /// The flushes this commit answers, each with the failures counted when it was asked.
    flushes: Vec<(Committed, u64)>,
    indexes: Vec<LedgerIndex>,
}

/// What the log's handles share: what waits, and the turn to commit it.
#[derive(Debug)]
struct Shared {
    db: Database,
    waiting: std::sync::Mutex<Waiting>,
    /// Held by whoever commits a batch, until it is committed and answered.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The handle the log writes with, opened once: on SQLite a single held connection,
    /// which what is written beside the log shares, so both queue in this process rather
    /// than for the file's lock.
    writer: tokio::sync::OnceCell<Database>,
    /// Wakes the log's task to commit the ledger indexes handed over without waiting.
    wake: tokio::sync::Notify,
    /// The messages the gateway is working on, which may join a batch (unknown: gather).
    in_flight: Option<xalo_core::batch::InFlight>,
    /// Commits of messages, and the messages committed.
    batching: crate::metrics::Batching,
}

/// Which logged message a ledger entry belongs to.
#[derive(Debug, Clone)]
pub struct LedgerIndex {
    pub x_road_id: String,
    pub side: &'static str,
    pub request_hash: String,
    pub index: u64,
}

/// The log's handle.
#[derive(Clone, Debug)]
pub struct MessageLog {
    shared: Arc<Shared>,
    db: Database,
    bodies: Arc<AtomicBool>,
    retention_days: Arc<AtomicU64>,
    /// The member's key that seals logged bodies (see [`crate::log_encryption`]).
    key: Arc<std::sync::RwLock<Option<Arc<crate::log_encryption::LogKey>>>>,
    /// Ends the log's task with the last handle (a gateway that failed to start drops its
    /// handles without aborting the task).
    _task: Arc<EndsTask>,
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct EndsTask(tokio::task::AbortHandle);

impl Drop for EndsTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Messages per transaction at most.
const BATCH: usize = 256;

impl MessageLog {
    /// Commits of messages and the messages in them.
    pub fn batching(&self) -> &crate::metrics::Batching {
        &self.shared.batching
    }

    /// Start the log's task (it commits what no caller commits, and sweeps by the
    /// retention); abort the returned task to stop it.
    pub fn start(db: Database, retention_days: u64) -> (MessageLog, tokio::task::AbortHandle) {
        Self::start_with(db, retention_days, None)
    }

    /// [`MessageLog::start`] for a gateway whose messages under way are `in_flight`: a
    /// batch is gathered only while more of them are under way than are waiting in it.
    pub fn start_with(
        db: Database,
        retention_days: u64,
        in_flight: Option<xalo_core::batch::InFlight>,
    ) -> (MessageLog, tokio::task::AbortHandle) {
        let retention_days = Arc::new(AtomicU64::new(retention_days));
        let shared = Arc::new(Shared {
            db: db.clone(),
            waiting: Default::default(),
            turn: Default::default(),
            writer: Default::default(),
            wake: Default::default(),
            in_flight,
            batching: Default::default(),
        });
        let task = tokio::spawn(run(shared.clone(), retention_days.clone())).abort_handle();
        (
            MessageLog {
                shared,
                db,
                bodies: Arc::new(AtomicBool::new(true)),
                retention_days,
                key: Default::default(),
                _task: Arc::new(EndsTask(task.clone())),
            },
            task,
        )
    }

    /// Create the time-stamp table (the message table is the service registry's).
    pub async fn migrate(db: &Database) -> Result<(), Error> {
        db.migrate("gateway-message-log", MIGRATIONS).await
    }

    /// Whether bodies are logged (otherwise only heads, hashes and signatures).
    pub fn set_bodies(&self, on: bool) {
        self.bodies.store(on, Ordering::Relaxed);
    }

    /// Seal bodies logged from now on with `key` (none: log them as they are).
    pub fn set_encryption_key(&self, key: Option<crate::log_encryption::LogKey>) {
        if let Ok(mut k) = self.key.write() {
            *k = key.map(Arc::new);
        }
    }

    /// The key logged bodies are sealed with, if any.
    pub fn encryption_key(&self) -> Option<Arc<crate::log_encryption::LogKey>> {
        self.key.read().ok().and_then(|k| k.clone())
    }

    /// The database the log is kept in, for exports.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The handle the log writes with.
    pub async fn writer(&self) -> Database {
        self.shared.writer().await
    }

    /// The retention in days, shared with what is kept beside the log.
    pub fn retention(&self) -> Arc<AtomicU64> {
        self.retention_days.clone()
    }

    pub fn set_retention_days(&self, days: u64) {
        self.retention_days.store(days, Ordering::Relaxed);
    }

    /// Log a message; returns once it is committed, so the caller may answer.
    pub async fn append(&self, mut m: LoggedMessage) -> Result<(), Error> {
        if !self.bodies.load(Ordering::Relaxed) {
            m.request_body = None;
            m.response_body = None;
        }
        if let Some(key) = self.encryption_key()
            && let Err(e) = crate::log_encryption::seal_message(&key, &mut m)
        {
            // Never store in the clear what was meant to be sealed; the hashes remain.
            tracing::error!(error = %e, "sealing logged bodies failed; keeping their hashes only");
            m.request_body = None;
            m.response_body = None;
        }
        self.ask(|waiting, done| {
            waiting.messages.push((m, done));
            waiting.queued += 1;
        })
        .await
    }

    /// Queue what `push` adds, with the answer its caller waits for, and wait for the
    /// commit that answers it. No task of its own: the caller that finds no commit under
    /// way commits what waits, its own among it, and the others are answered as they wait
    /// for their turn. An idle gateway thus commits a lone message where it is, with no
    /// hand-off to another thread and back (two thread wake-ups on a request's critical
    /// path, at each gateway).
    async fn ask(&self, push: impl FnOnce(&mut Waiting, Committed)) -> Result<(), Error> {
        let (done, mut committed) = oneshot::channel();
        push(&mut *self.shared.waiting()?, done);
        let mut asked = Asked {
            shared: &self.shared,
            answered: false,
        };
        // Turns are taken in order (tokio's mutex is fair), and each taker commits what
        // waits from the front: whoever waits is answered within a few turns.
        loop {
            let turn = tokio::select! {
                biased;
                answer = &mut committed => {
                    asked.answered = true;
                    return answer.map_err(|_| stopped())?;
                }
                turn = self.shared.turn.clone().lock_owned() => turn,
            };
            if let Ok(answer) = committed.try_recv() {
                asked.answered = true;
                return answer;
            }
            self.shared.commit_waiting(turn, true).await?;
        }
    }

    /// Record which ledger entry holds a logged message's evidence, without waiting:
    /// written with the next commit (the message itself is already logged).
    pub fn note_ledger_index(&self, index: LedgerIndex) {
        match self.shared.waiting() {
            Ok(mut waiting) => waiting.indexes.push(index),
            Err(e) => {
                tracing::error!(error = %e, "a ledger index was not kept");
                return;
            }
        }
        self.shared.wake.notify_one();
    }

    /// Returns once everything queued before is committed: the messages and the ledger
    /// indexes; an error if a commit failed since it was asked.
    pub async fn flush(&self) -> Result<(), Error> {
        self.ask(|waiting, done| {
            let (queued, failed) = (waiting.queued, waiting.failed);
            waiting.flushes.push((done, queued, failed));
        })
        .await
    }

    /// How many messages with this X-Road-Id the log holds, and their ledger indexes.
    pub async fn find(&self, x_road_id: &str) -> Result<Vec<(String, Option<i64>)>, Error> {
        use xalo_store::Row;
        xalo_store::sqlx::query(
            "SELECT side, ledger_index FROM gateway_message_log WHERE x_road_id = $1 ORDER BY id",
        )
        .bind(x_road_id)
        .fetch_all(self.db.pool())
        .await
        .db("reading the message log")?
        .into_iter()
        .map(|r| Ok((r.try_get(0).db("side")?, r.try_get(1).db("ledger index")?)))
        .collect()
    }

    /// Whether the logged message with this X-Road-Id (on `side`) kept its bodies.
    pub async fn has_bodies(&self, x_road_id: &str, side: &str) -> Result<Option<bool>, Error> {
        let row = xalo_store::sqlx::query(
            "SELECT CAST(CASE WHEN request_body IS NULL AND response_body IS NULL THEN 0 ELSE 1 END \
             AS BIGINT) FROM gateway_message_log WHERE x_road_id = $1 AND side = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(x_road_id)
        .bind(side)
        .fetch_optional(self.db.pool())
        .await
        .db("reading the message log")?;
        row.map(|r| r.try_get::<i64, _>(0).db("bodies").map(|b| b == 1))
            .transpose()
    }

    /// The digest a batch time-stamp covers: SHA-256 over, per message in id order, its
    /// id, request hash and signature, answer hash and signature, tab-separated lines.
    pub async fn batch_digest(&self, first_id: i64, last_id: i64) -> Result<[u8; 32], Error> {
        let rows = xalo_store::sqlx::query(
            "SELECT id, logged_unix, request_hash, request_signature, \
             COALESCE(response_hash, ''), COALESCE(response_signature, '') \
             FROM gateway_message_log WHERE id >= $1 AND id <= $2 ORDER BY id",
        )
        .bind(first_id)
        .bind(last_id)
        .fetch(self.db.pool());
        Ok(digest_rows(rows).await?.0)
    }

    /// The logged signature and request hash of each request this gateway served (as
    /// provider) since `unix`, and of each it admitted and then refused (on record beside
    /// the log, see [`crate::refusal`]), row by row: the replay guard reads back its window
    /// with them after a restart.
    pub async fn served_signatures_since(
        &self,
        unix: i64,
        mut each: impl FnMut(&str, &str),
    ) -> Result<(), Error> {
        signatures_since(
            &self.db,
            "SELECT request_signature, request_hash FROM gateway_message_log \
             WHERE logged_unix >= $1 AND side = 'provider'",
            unix,
            &mut each,
        )
        .await?;
        crate::refusal::admitted_since(&self.db, unix, &mut each).await
    }

    /// When the log was last time-stamped.
    pub async fn last_timestamp_unix(&self) -> Result<Option<i64>, Error> {
        let row = xalo_store::sqlx::query(
            "SELECT stamped_unix FROM gateway_message_timestamp ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(self.db.pool())
        .await
        .db("reading the message log time-stamps")?;
        row.map(|r| r.try_get::<i64, _>(0).db("stamped_unix"))
            .transpose()
    }

    /// Every time-stamp of the log, oldest first.
    pub async fn timestamps(&self) -> Result<Vec<BatchTimestamp>, Error> {
        xalo_store::sqlx::query(
            "SELECT first_id, last_id, digest, token, stamped_unix \
             FROM gateway_message_timestamp ORDER BY id",
        )
        .fetch_all(self.db.pool())
        .await
        .db("reading the message log time-stamps")?
        .into_iter()
        .map(|r| {
            Ok(BatchTimestamp {
                first_id: r.try_get(0).db("first_id")?,
                last_id: r.try_get(1).db("last_id")?,
                digest: r.try_get(2).db("digest")?,
                token: r.try_get(3).db("token")?,
                stamped_unix: r.try_get(4).db("stamped_unix")?,
            })
        })
        .collect()
    }

    /// When the oldest message not covered by a time-stamp was logged, if any.
    pub async fn oldest_unstamped_unix(&self) -> Result<Option<i64>, Error> {
        let what = "reading the message log";
        let row = xalo_store::sqlx::query(
            "SELECT MIN(logged_unix) FROM gateway_message_log WHERE id > \
             (SELECT COALESCE(MAX(last_id), 0) FROM gateway_message_timestamp)",
        )
        .fetch_one(self.db.pool())
        .await
        .db(what)?;
        row.try_get::<Option<i64>, _>(0).db(what)
    }

    /// Time-stamp everything logged since the last time-stamp with tokens from the TSA at
    /// `tsa_url`, a batch of at most `STAMP_BATCH` messages per token, until none is left
    /// or the TSA fails (reported in the run, not as `Err`, with the age of what is left
    /// waiting). One batch per run fell behind for good above `STAMP_BATCH` messages per
    /// interval (166/s at the default minute).
    pub async fn timestamp_all(
        &self,
        http: &reqwest::Client,
        tsa_url: &str,
    ) -> Result<StampRun, Error> {
        self.timestamp_all_up_to(http, tsa_url, STAMP_BATCH).await
    }

    /// [`MessageLog::timestamp_all`] with batches of at most `batch` messages.
    pub async fn timestamp_all_up_to(
        &self,
        http: &reqwest::Client,
        tsa_url: &str,
        batch: i64,
    ) -> Result<StampRun, Error> {
        let mut total = StampRun::default();
        loop {
            let run = self.timestamp_batch(http, tsa_url, batch).await?;
            total.tokens += run.tokens;
            total.stamped_unix = run.stamped_unix.or(total.stamped_unix);
            total.oldest_unstamped_unix = run.oldest_unstamped_unix;
            total.more = run.more;
            if run.error.is_some() || !run.more {
                total.error = run.error;
                return Ok(total);
            }
        }
    }

    /// One time-stamp over the first `batch` messages logged since the last one.
    async fn timestamp_batch(
        &self,
        http: &reqwest::Client,
        tsa_url: &str,
        batch: i64,
    ) -> Result<StampRun, Error> {
        let batch = batch.max(1);
        let what = "time-stamping the message log";
        let last: i64 = xalo_store::sqlx::query(
            "SELECT COALESCE(MAX(last_id), 0) FROM gateway_message_timestamp",
        )
        .fetch_one(self.db.pool())
        .await
        .db(what)?
        .try_get(0)
        .db(what)?;
        let rows = xalo_store::sqlx::query(
            "SELECT id, logged_unix, request_hash, request_signature, \
             COALESCE(response_hash, ''), COALESCE(response_signature, '') \
             FROM gateway_message_log WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(last)
        .bind(batch)
        .fetch(self.db.pool());
        let (digest, first_id, last_id, oldest, count) = digest_rows(rows).await?;
        if first_id > last_id {
            return Ok(StampRun::default());
        }
        let more = count >= batch;
        let token = match xalo_trust::timestamp::request_token(http, tsa_url, &digest).await {
            Ok(t) => t,
            Err(e) => {
                return Ok(StampRun {
                    stamped_unix: None,
                    oldest_unstamped_unix: Some(oldest),
                    error: Some(e),
                    tokens: 0,
                    more,
                });
            }
        };
        let now = crate::unix_now();
        xalo_store::sqlx::query(
            "INSERT INTO gateway_message_timestamp (first_id, last_id, digest, token, stamped_unix) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(first_id)
        .bind(last_id)
        .bind(hex::encode(digest))
        .bind(token)
        .bind(now)
        .execute(self.db.pool())
        .await
        .db(what)?;
        Ok(StampRun {
            stamped_unix: Some(now),
            oldest_unstamped_unix: None,
            error: None,
            tokens: 1,
            more,
        })
    }
}

/// The batch digest of rows `(id, logged_unix, request_hash, request_signature,
/// response_hash, response_signature)`, with the first and last id and the oldest time
/// (`first > last` when there were none). Row by row: a batch is thousands of messages
/// with their signatures, several megabytes read whole.
async fn digest_rows(
    mut rows: impl futures_util::Stream<
        Item = Result<xalo_store::sqlx::any::AnyRow, xalo_store::sqlx::Error>,
    > + Unpin,
) -> Result<([u8; 32], i64, i64, i64, i64), Error> {
    use futures_util::TryStreamExt;
    let what = "reading the message log";
    let mut h = sha2::Sha256::new();
    let (mut first, mut last, mut oldest, mut count) = (i64::MAX, 0, i64::MAX, 0);
    while let Some(r) = rows.try_next().await.db(what)? {
        count += 1;
        let id: i64 = r.try_get(0).db(what)?;
        let logged: i64 = r.try_get(1).db(what)?;
        first = first.min(id);
        last = last.max(id);
        oldest = oldest.min(logged);
        h.update(id.to_string().as_bytes());
        for col in 2..6 {
            let text: &str = r.try_get(col).db(what)?;
            h.update(b"\t");
            h.update(text.as_bytes());
        }
        h.update(b"\n");
    }
    Ok((h.finalize().into(), first, last, oldest, count))
}

/// Each `(request_signature, request_hash)` row `sql` selects for `$1 = unix`, row by row.
pub(crate) async fn signatures_since(
    db: &Database,
    sql: &'static str,
    unix: i64,
    each: &mut impl FnMut(&str, &str),
) -> Result<(), Error> {
    use futures_util::TryStreamExt;
    let mut rows = xalo_store::sqlx::query(sql).bind(unix).fetch(db.pool());
    while let Some(r) = rows.try_next().await.db("reading the message log")? {
        let signature: String = r.try_get(0).db("request_signature")?;
        let hash: String = r.try_get(1).db("request_hash")?;
        each(&signature, &hash);
    }
    Ok(())
}

/// The Unix time before which a retention of `days` lets records go (a retention too long
/// to count keeps everything).
pub(crate) fn retention_cutoff(days: u64) -> i64 {
    crate::unix_now().saturating_sub(
        i64::try_from(days)
            .unwrap_or(i64::MAX)
            .saturating_mul(86_400),
    )
}

fn stopped() -> Error {
    Error::new(
        xalo_core::ErrorCode::StoreUnavailable,
        "the message log stopped before committing",
    )
}

/// A caller waiting for its commit. One that goes before it is answered (its client hung
/// up) leaves a task to commit what it queued, unless someone else does first: whether
/// the log's own task still runs (a stopping gateway has ended it) does not matter.
struct Asked<'a> {
    shared: &'a Arc<Shared>,
    answered: bool,
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let shared = self.shared.clone();
        let commit = async move {
            let turn = shared.turn.clone().lock_owned().await;
            if let Err(e) = shared.commit_waiting(turn, false).await {
                tracing::error!(error = %e, "committing a departed caller's message failed");
            }
        };
        spawn_or_tell(
            commit,
            "a message log caller went at shutdown, its message queued",
        );
    }
}

/// Turns of the scheduler the committer lets requests take before it cuts a batch. At a
/// busy gateway a turn waits for every task ready on the thread, so each costs the
/// messages in the batch that much: two, with the signer's two, measured better at
/// 5,000 round trips/s offered than four (added p50 lower in 12 of 16 pairs, medians
/// +3.42 against +4.51 ms, the same CPU), and none leaves batches too small to keep up.
const GATHER_TURNS: usize = 2;

impl Shared {
    fn waiting(&self) -> Result<std::sync::MutexGuard<'_, Waiting>, Error> {
        self.waiting.lock().map_err(|_| {
            Error::new(
                xalo_core::ErrorCode::Internal,
                "the message log's queue failed",
            )
        })
    }

    async fn writer(&self) -> Database {
        self.writer
            .get_or_init(|| self.db.single_writer_or_pool("the message log"))
            .await
            .clone()
    }

    /// Commit what waits, holding the `turn`: at most [`BATCH`] messages, with every
    /// ledger index waiting, and the flushes whose messages queued before them are all
    /// taken (this commit's or earlier ones, which have ended: the turn is held).
    /// With `gather`, first let the requests ready on this thread add theirs: an idle
    /// gateway commits a lone message at once, a busy one carries all that came in during
    /// the previous commit in the next.
    async fn commit_waiting(
        self: &Arc<Self>,
        turn: tokio::sync::OwnedMutexGuard<()>,
        gather: bool,
    ) -> Result<(), Error> {
        if gather {
            let queued = self.waiting()?.messages.len();
            let turns = xalo_core::batch::turns(self.in_flight.as_ref(), queued, GATHER_TURNS);
            xalo_core::batch::gather(turns, BATCH, || self.waiting().map(|w| w.messages.len()))
                .await?;
        }
        let batch = {
            let mut waiting = self.waiting()?;
            let n = waiting.messages.len().min(BATCH);
            let (messages, answers): (Vec<_>, Vec<_>) = waiting.messages.drain(..n).unzip();
            waiting.taken += n as u64;
            let taken = waiting.taken;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting.flushes)
                .into_iter()
                .partition(|(_, queued, _)| *queued <= taken);
            waiting.flushes = later;
            Batch {
                messages,
                answers,
                flushes: due.into_iter().map(|(f, _, failed)| (f, failed)).collect(),
                indexes: std::mem::take(&mut waiting.indexes),
            }
        };
        if batch.answers.is_empty() && batch.flushes.is_empty() && batch.indexes.is_empty() {
            return Ok(());
        }
        // Taken from the queue, the batch is committed and answered even if this caller
        // goes: the commit then runs on as a task of its own.
        Finish(Some(Box::pin(self.clone().commit(batch, turn)))).await;
        Ok(())
    }

    async fn commit(self: Arc<Self>, batch: Batch, _turn: tokio::sync::OwnedMutexGuard<()>) {
        let writer = self.writer().await;
        let count = batch.messages.len();
        let result = if batch.messages.is_empty() && batch.indexes.is_empty() {
            Ok(())
        } else {
            write(&writer, batch.messages, &batch.indexes).await
        };
        match &result {
            Err(e) => tracing::error!(error = %e, count, "writing the message log failed"),
            Ok(()) if count > 0 => self.batching.record(count),
            Ok(()) => {}
        }
        let failures = match self.waiting() {
            Ok(mut waiting) => {
                if let Err(e) = &result {
                    waiting.failed += 1;
                    waiting.last_failure = Some(e.clone());
                }
                Ok((waiting.failed, waiting.last_failure.clone()))
            }
            Err(e) => Err(e),
        };
        for done in batch.answers {
            // The caller may have gone (its client hung up); the message is logged anyway.
            let _ = done.send(result.clone());
        }
        for (done, failed_before) in batch.flushes {
            let answer = match &failures {
                Ok((failed, Some(e))) if *failed > failed_before => Err(e.clone()),
                Ok(_) => Ok(()),
                Err(e) => Err(e.clone()),
            };
            let _ = done.send(answer);
        }
    }
}

/// A commit under way, which finishes as a task of its own if its caller is dropped.
struct Finish(Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>);

impl std::future::Future for Finish {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        if let Some(commit) = this.0.as_mut() {
            std::task::ready!(commit.as_mut().poll(cx));
            this.0 = None;
        }
        std::task::Poll::Ready(())
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(commit) = self.0.take() {
            // Else its callers are answered that the log stopped before committing.
            spawn_or_tell(commit, "a message log commit was cut off by shutdown");
        }
    }
}

/// Run `work` as a task of its own from a `Drop`, where there may be no runtime left (then
/// `lost` is logged instead: `tokio::spawn` would panic).
fn spawn_or_tell(work: impl std::future::Future<Output = ()> + Send + 'static, lost: &str) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(work)),
        Err(_) => tracing::error!("{lost}"),
    }
}

/// The log's own task: commits the ledger indexes handed over without waiting (with
/// whatever else waits then), and sweeps the log by its retention once an hour, holding
/// the turn so that no commit meets the sweep's lock on the file.
async fn run(shared: Arc<Shared>, retention_days: Arc<AtomicU64>) {
    let db = shared.db.clone();
    // Opened before the first message, which would otherwise wait for it.
    shared.writer().await;
    let hour = Duration::from_secs(3600);
    let mut sweeps = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.wake.notified() => {
                let turn = shared.turn.clone().lock_owned().await;
                if let Err(e) = shared.commit_waiting(turn, false).await {
                    tracing::error!(error = %e, "the message log's task failed to commit");
                }
            }
            _ = sweeps.tick() => {
                let _turn = shared.turn.clone().lock_owned().await;
                sweep(&db, retention_days.load(Ordering::Relaxed)).await;
            }
        }
    }
}

async fn sweep(db: &Database, retention_days: u64) {
    let cutoff = retention_cutoff(retention_days);
    for (sql, what) in [
        (
            "DELETE FROM gateway_message_timestamp WHERE stamped_unix < $1",
            "sweeping the message log time-stamps",
        ),
        (
            "DELETE FROM gateway_message_log WHERE logged_unix < $1",
            "sweeping the message log",
        ),
    ] {
        if let Err(e) = xalo_store::sqlx::query(sql)
            .bind(cutoff)
            .execute(db.pool())
            .await
            .db(what)
        {
            tracing::warn!(error = %e, "message log retention sweep failed");
        }
    }
}

/// Rows per INSERT statement at most: one statement (one trip to the database's
/// connection) carries many messages, within every backend's limit of bound parameters.
const ROWS_PER_STATEMENT: usize = 32;

/// Columns of a logged message, in the order they are bound.
const COLUMNS: usize = 15;

/// `INSERT … VALUES (…), (…), …` for `rows` messages.
fn insert_statement(rows: usize, backend: xalo_store::Backend) -> String {
    format!(
        "INSERT INTO gateway_message_log (logged_unix, side, x_road_id, client, service, \
         request_hash, request_head, request_signature, request_body, response_hash, \
         response_head, response_signature, response_body, status, ledger_index) VALUES {}",
        backend.value_rows(rows, COLUMNS)
    )
}

type AnyQuery<'q> =
    xalo_store::sqlx::query::Query<'q, xalo_store::sqlx::Any, xalo_store::sqlx::any::AnyArguments>;

/// Bind the [`COLUMNS`] values of one row of [`insert_statement`].
fn bind_message(query: AnyQuery<'_>, now: i64, m: LoggedMessage) -> AnyQuery<'_> {
    query
        .bind(now)
        .bind(m.side)
        .bind(m.x_road_id)
        .bind(m.client)
        .bind(m.service)
        .bind(m.request_hash)
        .bind(m.request_head)
        .bind(m.request_signature)
        .bind(m.request_body)
        .bind(m.response_hash)
        .bind(m.response_head)
        .bind(m.response_signature)
        .bind(m.response_body)
        .bind(i64::from(m.status))
        .bind(m.ledger_index.map(|i| i as i64))
}

/// Name logged messages' ledger entries, [`ROWS_PER_STATEMENT`] at most per statement: a
/// statement per index would be a hand-off to the database's connection per message. A
/// message logged twice under one id and hash is one message; the first index wins.
fn index_statements(
    indexes: &[LedgerIndex],
    backend: xalo_store::Backend,
) -> Vec<AnyQuery<'static>> {
    let mut first: Vec<&LedgerIndex> = Vec::with_capacity(indexes.len());
    for i in indexes {
        let key = |j: &&LedgerIndex| {
            j.x_road_id == i.x_road_id && j.side == i.side && j.request_hash == i.request_hash
        };
        match first.iter_mut().find(|j| key(j)) {
            Some(j) if i.index < j.index => *j = i,
            Some(_) => {}
            None => first.push(i),
        }
    }
    first
        .chunks(ROWS_PER_STATEMENT)
        .map(|chunk| {
            // PostgreSQL types the VALUES columns from the bound parameters (BIGINT first).
            let sql = format!(
                "UPDATE gateway_message_log SET ledger_index = v.column1 FROM (VALUES {}) AS v \
                 WHERE gateway_message_log.x_road_id = v.column2 \
                 AND gateway_message_log.side = v.column3 \
                 AND gateway_message_log.request_hash = v.column4 \
                 AND gateway_message_log.ledger_index IS NULL",
                backend.value_rows(chunk.len(), 4)
            );
            chunk.iter().fold(
                xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(sql)),
                |query, i| {
                    query
                        .bind(i.index as i64)
                        .bind(i.x_road_id.clone())
                        .bind(i.side)
                        .bind(i.request_hash.clone())
                },
            )
        })
        .collect()
}

/// The batch as statements of [`ROWS_PER_STATEMENT`] rows and one of the rest, so that each
/// connection caches at most that many prepared statements, and a batch of up to that many
/// messages is one statement.
fn chunks(batch: Vec<LoggedMessage>) -> Vec<Vec<LoggedMessage>> {
    let mut batch = batch.into_iter();
    let mut chunks = Vec::new();
    while !batch.as_slice().is_empty() {
        chunks.push(batch.by_ref().take(ROWS_PER_STATEMENT).collect());
    }
    chunks
}

/// Write a batch at once (group commit), many rows per statement, and the ledger indexes
/// that became known, committed together. On SQLite the writer is a single held
/// connection of its own (see `Database::single_writer`): the statements run in this task, where a connection of the pool would take each to its
/// worker thread and back, two thread wake-ups a statement on a busy machine. (Sending a
/// batch as one script with the rows as one JSON parameter, so that the script's text
/// stays fixed, measured no faster: 2891–3433 against 3182–3928 round trips/s.)
async fn write(
    db: &Database,
    batch: Vec<LoggedMessage>,
    indexes: &[LedgerIndex],
) -> Result<(), Error> {
    let what = "writing the message log";
    let now = crate::unix_now();
    let backend = db.backend();
    let statements: Vec<AnyQuery<'static>> = chunks(batch)
        .into_iter()
        .map(|c| {
            let sql = xalo_store::sqlx::AssertSqlSafe(insert_statement(c.len(), backend));
            c.into_iter()
                .fold(xalo_store::sqlx::query(sql), |query, m| {
                    bind_message(query, now, m)
                })
        })
        .chain(index_statements(indexes, backend))
        .collect();
    db.execute_gathered(statements, what).await.map(drop)
}
