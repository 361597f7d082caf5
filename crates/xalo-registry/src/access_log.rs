//! Access records, written with group commit: requests that arrive together share one
//! transaction (one disk sync), and each request answers only after its records are
//! committed. Every read of personal data writes a record, so this is the register's
//! hottest write path.

use tokio::sync::{mpsc, oneshot};
use xalo_core::{Error, ErrorCode};
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
    let mut tx = db.begin_write().await?;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = i * 7;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO registry_access (subject, client, user_id, purpose, service, message_id, at_ms) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.subject.clone())
                .bind(r.client.clone())
                .bind(r.user_id.clone())
                .bind(r.purpose.clone())
                .bind(r.service.clone())
                .bind(r.message_id.clone())
                .bind(r.at_ms);
        }
        q.execute(&mut *tx).await.db("recording accesses")?;
    }
    tx.commit().await.db("committing access records")
}
