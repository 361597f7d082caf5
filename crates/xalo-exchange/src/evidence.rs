//! Evidence of every exchanged message in the transparency ledger: an `exchange.message`
//! entry per message and per gateway (so each side's account can be checked against the
//! other's), recorded through the ledger's batching [`Recorder`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use xalo_core::{Error, unix_now};
use xalo_ledger::client::{LedgerClient, Recorder};
use xalo_ledger::entry::{Entry, EntryKind};

/// The entry kind.
pub const KIND: &str = "exchange.message";

/// What an entry says (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageEvidence {
    /// The gateway that recorded it.
    pub gateway: String,
    /// `client` or `provider`.
    pub side: String,
    pub x_road_id: String,
    pub client: String,
    pub service: String,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    pub request_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_hash: Option<String>,
    pub status: u16,
    pub time_unix: i64,
}

/// The gateway's recorder.
#[derive(Clone)]
pub struct Evidence {
    recorder: Recorder,
}

impl Evidence {
    pub fn new(ledger_url: &str) -> Result<Evidence, Error> {
        let client = LedgerClient::new(ledger_url)?;
        Ok(Evidence {
            recorder: Recorder::start(client, 256, Duration::from_millis(20)),
        })
    }

    /// Record one message; returns its index once the ledger has it.
    pub async fn record(&self, e: &MessageEvidence) -> Result<u64, Error> {
        self.recorder.record(entry(e)?).await
    }

    /// Record one message without waiting: `then` gets its index once the ledger has it
    /// (see [`Recorder::record_then`]), or why not.
    pub fn record_then(
        &self,
        e: &MessageEvidence,
        then: impl FnOnce(Result<u64, Error>) + Send + 'static,
    ) {
        match entry(e) {
            Ok(entry) => self.recorder.record_then(entry, then),
            Err(err) => then(Err(err)),
        }
    }
}

fn entry(e: &MessageEvidence) -> Result<Entry, Error> {
    let kind: EntryKind = KIND.parse()?;
    let data = serde_json::to_vec(e)
        .map_err(|err| Error::new(xalo_core::ErrorCode::Internal, err.to_string()))?;
    Entry::new(kind, data)
}

/// Messages sent again at most per pass of the catch-up.
const CATCH_UP_BATCH: i64 = 256;

/// Start sending again the evidence of logged messages that the ledger never named: it
/// was down when they were exchanged, or the gateway stopped before their entry was
/// recorded (the log commits a message before its evidence goes out). Each pass takes the
/// messages logged before the previous pass (a whole period to be recorded the usual way)
/// and, at start, everything logged before this process began. Delivery is at least once:
/// an entry recorded just before a crash may be sent again; the log keeps the first index
/// it is given. How far it got is kept in the database, so a pass never rereads the log
/// from its start, and instances of one gateway sharing that database take turns by a
/// lease kept beside it (see [`take_lease`]), so they do not send the same messages twice.
pub fn start_catch_up(
    evidence: Evidence,
    log: crate::message_log::MessageLog,
    gateway: String,
    every: Duration,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let db = log.database().clone();
        let every = every.max(Duration::from_millis(100));
        let me = hex::encode(rand::random::<[u8; 8]>());
        let mut ripe = newest_logged(&db).await.unwrap_or(0);
        loop {
            match take_lease(&db, &me, lease_for(every)).await {
                Ok(Some(cursor)) => {
                    let (reached, failure) =
                        catch_up(&evidence, &log, &gateway, cursor, ripe).await;
                    if let Some(e) = failure {
                        tracing::warn!(error = %e, "sending missed evidence to the ledger failed; will retry");
                    }
                    if let Err(e) = release_lease(&db, &me, reached).await {
                        tracing::warn!(error = %e, "keeping the evidence cursor failed");
                    }
                }
                // Another instance of this gateway is in a pass.
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "taking the evidence lease failed"),
            }
            let seen = newest_logged(&db).await.unwrap_or(ripe);
            tokio::time::sleep(every).await;
            ripe = seen;
        }
    })
    .abort_handle()
}

/// How long a lease lasts at most: longer than a pass against a slow ledger. A pass gives
/// it back when it ends; one cut short by a crash holds the others off until it runs out.
fn lease_for(every: Duration) -> Duration {
    (every * 4).max(Duration::from_secs(120))
}

/// Take the catch-up lease for `holder` for at most `lease`: the cursor (how far missed
/// evidence was sent) when it was free, `None` while another instance holds it.
pub async fn take_lease(
    db: &xalo_store::Database,
    holder: &str,
    lease: Duration,
) -> Result<Option<i64>, Error> {
    use xalo_store::{DbResultExt, Row};
    let what = "taking the evidence lease";
    // The cursor's one row is made by the log's migration.
    let now = unix_now();
    let row = db
        .fetch_optional(
            xalo_store::sqlx::query(
                "UPDATE gateway_evidence_cursor SET holder = $1, lease_until = $2 \
                 WHERE id = 1 AND lease_until < $3 RETURNING last_id",
            )
            .bind(holder.to_owned())
            .bind(now + lease.as_secs() as i64)
            .bind(now),
        )
        .await
        .db(what)?;
    row.map(|r| r.try_get(0).db(what)).transpose()
}

/// Send the evidence of the messages `after < id <= upto` that have no ledger index;
/// returns the id up to which every message has been sent (and why it stopped short).
async fn catch_up(
    evidence: &Evidence,
    log: &crate::message_log::MessageLog,
    gateway: &str,
    mut after: i64,
    upto: i64,
) -> (i64, Option<Error>) {
    while after < upto {
        let rows = match missed(log.database(), gateway, after, upto).await {
            Ok(rows) => rows,
            Err(e) => return (after, Some(e)),
        };
        let Some(last) = rows.last().map(|(id, ..)| *id) else {
            return (upto, None);
        };
        let full = rows.len() as i64 == CATCH_UP_BATCH;
        // All at once: the recorder puts them in few ledger batches.
        let sent =
            futures_util::future::join_all(rows.iter().map(|(_, e, _)| evidence.record(e))).await;
        let mut reached = if full { last } else { upto };
        let mut failure = None;
        for ((id, e, side), result) in rows.into_iter().zip(sent) {
            match result {
                Ok(index) => log.note_ledger_index(crate::message_log::LedgerIndex {
                    x_road_id: e.x_road_id,
                    side,
                    request_hash: e.request_hash,
                    index,
                }),
                Err(err) => {
                    (reached, failure) = (id - 1, Some(err));
                    break;
                }
            }
        }
        // The cursor moves only past indexes the log has committed: a message whose
        // index was lost is sent again rather than left without one.
        if let Err(e) = log.flush().await {
            return (after, Some(e));
        }
        if failure.is_some() {
            return (reached, failure);
        }
        after = reached;
    }
    (after, None)
}

type Missed = (i64, MessageEvidence, &'static str);

/// The messages `after < id <= upto` without a ledger index, oldest first, as the
/// evidence they were to be recorded with (method, user and issue read from the logged
/// request head).
async fn missed(
    db: &xalo_store::Database,
    gateway: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<Missed>, Error> {
    use xalo_store::{DbResultExt, Row};
    let what = "reading messages without evidence";
    let rows = db
        .fetch_all(
            xalo_store::sqlx::query(
                "SELECT id, logged_unix, side, x_road_id, client, service, request_hash, \
                 request_head, response_hash, status FROM gateway_message_log \
                 WHERE id > $1 AND id <= $2 AND ledger_index IS NULL ORDER BY id LIMIT $3",
            )
            .bind(after)
            .bind(upto)
            .bind(CATCH_UP_BATCH),
        )
        .await
        .db(what)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let side: String = r.try_get(2).db(what)?;
        let side = if side == "provider" {
            "provider"
        } else {
            "client"
        };
        let head: Vec<u8> = r.try_get(7).db(what)?;
        let status: i64 = r.try_get(9).db(what)?;
        let (method, _) = crate::evidence_export::request_line_in(&head);
        out.push((
            r.try_get(0).db(what)?,
            MessageEvidence {
                gateway: gateway.to_owned(),
                side: side.to_owned(),
                x_road_id: r.try_get(3).db(what)?,
                client: r.try_get(4).db(what)?,
                service: r.try_get(5).db(what)?,
                method,
                user_id: crate::evidence_export::header_in(&head, crate::message::X_ROAD_USER_ID),
                issue: crate::evidence_export::header_in(&head, crate::message::X_ROAD_ISSUE),
                request_hash: r.try_get(6).db(what)?,
                response_hash: r.try_get(8).db(what)?,
                status: u16::try_from(status).unwrap_or_default(),
                time_unix: r.try_get(1).db(what)?,
            },
            side,
        ));
    }
    Ok(out)
}

async fn newest_logged(db: &xalo_store::Database) -> Result<i64, Error> {
    use xalo_store::{DbResultExt, Row};
    let what = "reading the message log's newest id";
    let row = db
        .fetch_one(xalo_store::sqlx::query(
            "SELECT COALESCE(MAX(id), 0) FROM gateway_message_log",
        ))
        .await
        .db(what)?;
    row.try_get(0).db(what)
}

/// Give the lease back with the cursor moved to `last_id`, if `holder` still holds it.
async fn release_lease(db: &xalo_store::Database, holder: &str, last_id: i64) -> Result<(), Error> {
    use xalo_store::DbResultExt;
    db.execute(
        xalo_store::sqlx::query(
            "UPDATE gateway_evidence_cursor SET last_id = $1, lease_until = 0 \
             WHERE id = 1 AND holder = $2",
        )
        .bind(last_id)
        .bind(holder.to_owned()),
    )
    .await
    .db("keeping the evidence cursor")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn instances_of_a_gateway_take_turns_by_the_lease() {
        let t = xalo_store::testing::TestDatabase::new().await.unwrap();
        crate::message_log::MessageLog::migrate(&t.db)
            .await
            .unwrap();
        let lease = Duration::from_secs(60);
        assert_eq!(take_lease(&t.db, "a", lease).await.unwrap(), Some(0));
        // While a is in a pass, b is turned away, and a again too.
        assert_eq!(take_lease(&t.db, "b", lease).await.unwrap(), None);
        assert_eq!(take_lease(&t.db, "a", lease).await.unwrap(), None);
        // b cannot move the cursor or end a's lease.
        release_lease(&t.db, "b", 7).await.unwrap();
        assert_eq!(take_lease(&t.db, "b", lease).await.unwrap(), None);
        // a's pass ends: b goes on from where a got to.
        release_lease(&t.db, "a", 42).await.unwrap();
        assert_eq!(take_lease(&t.db, "b", lease).await.unwrap(), Some(42));
        assert_eq!(take_lease(&t.db, "a", lease).await.unwrap(), None);
        // b stops in its pass (a crash): once its lease runs out, a takes over.
        t.db.execute(xalo_store::sqlx::query(
            "UPDATE gateway_evidence_cursor SET lease_until = 1",
        ))
        .await
        .unwrap();
        assert_eq!(take_lease(&t.db, "a", lease).await.unwrap(), Some(42));
    }
}
