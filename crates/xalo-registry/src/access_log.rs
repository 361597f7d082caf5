//! Access records, written with group commit: requests that arrive together share one
//! transaction (one disk sync), and each request answers only after its records are
//! committed. Every read of personal data writes a record, so this is the register's
//! hottest write path.
//!
//! Each record is later anchored in the ledger ([`anchor_pending`], off the request path)
//! as a salted commitment ([`commitment`]): the public ledger learns nothing about who was
//! read, by whom or why, while the person, who alone gets their records and salts through
//! the data tracker, can recompute each entry and check its inclusion proof.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use xalo_core::{Error, ErrorCode};
use xalo_ledger::client::Recorder;
use xalo_ledger::entry::{Entry, EntryKind};
use xalo_store::{Database, DbResultExt};

/// One read of one person's data.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub subject: String,
    pub client: String,
    pub user_id: String,
    pub purpose: String,
    pub service: String,
    pub message_id: Option<String>,
    pub at_ms: i64,
}

struct Pending {
    records: Vec<AccessRecord>,
    ack: oneshot::Sender<Result<(), Error>>,
}

/// Records taken into one transaction at most.
const MAX_GROUP: usize = 2000;
/// Rows per INSERT (7 parameters each).
const ROWS_PER_STATEMENT: usize = 400;

#[derive(Clone)]
pub struct AccessLog {
    queue: mpsc::Sender<Pending>,
}

impl AccessLog {
    pub fn start(db: Database) -> AccessLog {
        let (queue, rx) = mpsc::channel(4096);
        tokio::spawn(run(db, rx));
        AccessLog { queue }
    }

    /// Write `records`; returns once they are committed.
    pub async fn record(&self, records: Vec<AccessRecord>) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let stopped = || {
            Error::new(
                ErrorCode::HttpUnavailable,
                "the access log writer has stopped",
            )
        };
        let (ack, done) = oneshot::channel();
        self.queue
            .send(Pending { records, ack })
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

async fn run(db: Database, mut rx: mpsc::Receiver<Pending>) {
    // On a SQLite file the writer keeps a single held connection of its own (see
    // `Database::single_writer`): a group's statements run in this task, where a pooled
    // connection takes `BEGIN`, each INSERT and `COMMIT` to its worker thread and back.
    let db = db.single_writer_or_pool("the access log").await;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut n = group[0].records.len();
        while n < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => {
                    n += p.records.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let result = write(&db, &group).await;
        for p in group {
            let _ = p.ack.send(result.clone());
        }
    }
}

async fn write(db: &Database, group: &[Pending]) -> Result<(), Error> {
    let rows: Vec<&AccessRecord> = group.iter().flat_map(|p| &p.records).collect();
    let statements = rows
        .chunks(ROWS_PER_STATEMENT)
        .map(|chunk| {
            let sql = format!(
                "INSERT INTO registry_access (subject, client, user_id, purpose, service, message_id, at_ms) VALUES {}",
                db.backend().value_rows(chunk.len(), 7)
            );
            chunk.iter().fold(
                sqlx::query(sqlx::AssertSqlSafe(sql)),
                |q, r| {
                    q.bind(r.subject.clone())
                        .bind(r.client.clone())
                        .bind(r.user_id.clone())
                        .bind(r.purpose.clone())
                        .bind(r.service.clone())
                        .bind(r.message_id.clone())
                        .bind(r.at_ms)
                },
            )
        })
        .collect();
    // The group is cut already: nothing another task could add to it.
    db.execute_gathered(statements, "recording accesses")
        .await
        .map(drop)
}

/// The ledger entry kind of an access record's commitment.
pub const ENTRY_KIND: &str = "registry.access";

/// An access to a person's data, as the data tracker shows it to that person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Access {
    /// The record's number in the register.
    #[serde(default)]
    pub id: i64,
    /// Whose data was read.
    #[serde(default)]
    pub subject: String,
    pub client: String,
    pub user_id: String,
    pub purpose: String,
    pub service: String,
    pub message_id: Option<String>,
    pub at_ms: i64,
    /// The random salt of the ledger commitment (hex), once anchored.
    #[serde(default)]
    pub salt: Option<String>,
    /// Where the commitment is in the ledger, once anchored.
    #[serde(default)]
    pub ledger_index: Option<i64>,
}

impl Access {
    /// The commitment to this record: SHA-256 over its fields, each length-prefixed (so
    /// no two different records give the same bytes), and the salt.
    pub fn commitment(&self, salt: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"xalo registry access v1\n");
        let id = self.id.to_string();
        let at = self.at_ms.to_string();
        for part in [
            id.as_str(),
            &self.subject,
            &self.client,
            &self.user_id,
            &self.purpose,
            &self.service,
            self.message_id.as_deref().unwrap_or(""),
            &at,
            salt,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// The ledger entry of this record with `salt`: kind `registry.access`, the
    /// commitment in hex as its data.
    pub fn ledger_entry(&self, salt: &str) -> Result<Entry, Error> {
        let kind: EntryKind = ENTRY_KIND.parse()?;
        Entry::new(kind, hex::encode(self.commitment(salt)).into_bytes())
    }
}

/// Records anchored per pass.
pub const ANCHOR_PASS: usize = 2000;

/// Anchor access records not yet in the ledger; returns how many were anchored. Safe to
/// run on several instances at once: a record keeps the first salt and index written.
pub async fn anchor_pending(db: &Database, recorder: &Recorder) -> Result<usize, Error> {
    let what = "anchoring access records";
    let rows = sqlx::query(
        "SELECT id, subject, client, user_id, purpose, service, message_id, at_ms \
         FROM registry_access WHERE ledger_index IS NULL ORDER BY id LIMIT $1",
    )
    .bind(ANCHOR_PASS as i64)
    .fetch_all(db.pool())
    .await
    .db(what)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pending = Vec::with_capacity(rows.len());
    for r in &rows {
        use sqlx::Row;
        let a = Access {
            id: r.try_get(0).db(what)?,
            subject: r.try_get(1).db(what)?,
            client: r.try_get(2).db(what)?,
            user_id: r.try_get(3).db(what)?,
            purpose: r.try_get(4).db(what)?,
            service: r.try_get(5).db(what)?,
            message_id: r.try_get(6).db(what)?,
            at_ms: r.try_get(7).db(what)?,
            salt: None,
            ledger_index: None,
        };
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = hex::encode(salt);
        let entry = a.ledger_entry(&salt)?;
        pending.push((a.id, salt, entry));
    }
    // Submitted together, the recorder batches these into few requests.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (_, _, entry)) in pending.iter().enumerate() {
        let (recorder, entry) = (recorder.clone(), entry.clone());
        tasks.spawn(async move { (i, recorder.record(entry).await) });
    }
    let mut indexes = vec![None; pending.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, index) =
            done.map_err(|e| Error::new(ErrorCode::Internal, format!("{what}: {e}")))?;
        indexes[i] = Some(index?);
    }
    let mut tx = db.begin_write().await?;
    let mut n = 0;
    for ((id, salt, _), index) in pending.iter().zip(indexes) {
        let Some(index) = index else { continue };
        sqlx::query(
            "UPDATE registry_access SET salt = $1, ledger_index = $2 \
             WHERE id = $3 AND ledger_index IS NULL",
        )
        .bind(salt)
        .bind(index as i64)
        .bind(*id)
        .execute(&mut *tx)
        .await
        .db(what)?;
        n += 1;
    }
    tx.commit().await.db(what)?;
    Ok(n)
}
