//! The message log: every signed message a gateway sent or received, with its signature,
//! kept for the configured retention, so a member can prove what it was asked and what it
//! answered. Writes are batched (one transaction per batch) off the response path; bodies
//! larger than the in-memory limit are kept as their hash, which the signature covers.

use std::time::Duration;

use tokio::sync::mpsc;
use xalo_core::Error;
use xalo_store::{Database, DbResultExt};

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

/// The writer's handle.
#[derive(Clone, Debug)]
pub struct MessageLog {
    queue: mpsc::Sender<LoggedMessage>,
    db: Database,
}

const BATCH: usize = 256;

impl MessageLog {
    /// Start the writer and the retention sweep; abort the returned task to stop both.
    pub fn start(db: Database, retention_days: u64) -> (MessageLog, tokio::task::AbortHandle) {
        let (queue, rx) = mpsc::channel(BATCH * 16);
        let task = tokio::spawn(run(db.clone(), rx, retention_days)).abort_handle();
        (MessageLog { queue, db }, task)
    }

    /// Queue a message; waits only when the writer is far behind (back-pressure).
    pub async fn append(&self, m: LoggedMessage) {
        if self.queue.send(m).await.is_err() {
            tracing::error!("the message log writer has stopped; a message was not logged");
        }
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
}

async fn run(db: Database, mut rx: mpsc::Receiver<LoggedMessage>, retention_days: u64) {
    let mut last_sweep = tokio::time::Instant::now();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if let Err(e) = write(&db, &batch).await {
            tracing::error!(error = %e, count = batch.len(), "writing the message log failed");
        }
        if last_sweep.elapsed() > Duration::from_secs(3600) {
            last_sweep = tokio::time::Instant::now();
            let cutoff = crate::unix_now() - (retention_days as i64) * 86_400;
            if let Err(e) =
                xalo_store::sqlx::query("DELETE FROM gateway_message_log WHERE logged_unix < $1")
                    .bind(cutoff)
                    .execute(db.pool())
                    .await
                    .db("sweeping the message log")
            {
                tracing::warn!(error = %e, "message log retention sweep failed");
            }
        }
    }
}

async fn write(db: &Database, batch: &[LoggedMessage]) -> Result<(), Error> {
    let what = "writing the message log";
    let mut tx = db.begin_write().await?;
    let now = crate::unix_now();
    for m in batch {
        xalo_store::sqlx::query(
            "INSERT INTO gateway_message_log (logged_unix, side, x_road_id, client, service, \
             request_hash, request_head, request_signature, request_body, response_hash, \
             response_head, response_signature, response_body, status, ledger_index) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(now)
        .bind(m.side)
        .bind(&m.x_road_id)
        .bind(&m.client)
        .bind(&m.service)
        .bind(&m.request_hash)
        .bind(m.request_head.clone())
        .bind(&m.request_signature)
        .bind(m.request_body.clone())
        .bind(m.response_hash.clone())
        .bind(m.response_head.clone())
        .bind(m.response_signature.clone())
        .bind(m.response_body.clone())
        .bind(i64::from(m.status))
        .bind(m.ledger_index.map(|i| i as i64))
        .execute(&mut *tx)
        .await
        .db(what)?;
    }
    tx.commit().await.db(what)
}
