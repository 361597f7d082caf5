//! The data tracker's feed: which logged exchanges were made on behalf of a person (the
//! request's `X-Road-UserId`): when, by which client, of which service, why
//! (`X-Road-Issue`) and with what outcome, for the portal to show the person.
//!
//! The user id lives in the signed request head; an index table maps log records to it,
//! filled from the heads on each query (so the log writer stays as it is). Records swept by
//! the log's retention drop out of the answers with the log rows they join.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Migration, Row};

use crate::evidence_export::header_in;
use crate::gateway::GatewayState;
use crate::message::{X_ROAD_ISSUE, X_ROAD_USER_ID};
use crate::nation::GatewayAdmin;

const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "message log records by user",
    "CREATE TABLE gateway_message_user (
        message_id BIGINT PRIMARY KEY,
        user_id TEXT NOT NULL
    );
    CREATE INDEX gateway_message_user_user ON gateway_message_user (user_id);
    CREATE TABLE gateway_message_user_cursor (
        id BIGINT PRIMARY KEY,
        last_id BIGINT NOT NULL
    );
    INSERT INTO gateway_message_user_cursor (id, last_id) VALUES (1, 0);",
)];

/// Records indexed per pass.
const PASS: i64 = 2000;
/// Records before the cursor looked at again: rows of concurrent writers may commit
/// out of id order, and inserting an indexed record twice changes nothing.
const OVERLAP: i64 = 4096;

pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate("gateway-data-tracker", MIGRATIONS).await
}

/// Index the records logged since the last query.
pub async fn catch_up(db: &Database) -> Result<(), Error> {
    let what = "indexing the message log by user";
    let cursor: i64 =
        xalo_store::sqlx::query("SELECT last_id FROM gateway_message_user_cursor WHERE id = 1")
            .fetch_one(db.pool())
            .await
            .db(what)?
            .try_get(0)
            .db(what)?;
    let mut from = (cursor - OVERLAP).max(0);
    loop {
        let rows = xalo_store::sqlx::query(
            "SELECT id, request_head FROM gateway_message_log WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(from)
        .bind(PASS)
        .fetch_all(db.pool())
        .await
        .db(what)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let last: i64 = last.try_get(0).db(what)?;
        let mut tx = db.begin_write().await?;
        for r in &rows {
            let id: i64 = r.try_get(0).db(what)?;
            let head: Vec<u8> = r.try_get(1).db(what)?;
            if let Some(user) = header_in(&head, X_ROAD_USER_ID) {
                xalo_store::sqlx::query(
                    "INSERT INTO gateway_message_user (message_id, user_id) VALUES ($1, $2) \
                     ON CONFLICT (message_id) DO NOTHING",
                )
                .bind(id)
                .bind(user.trim())
                .execute(&mut *tx)
                .await
                .db(what)?;
            }
        }
        xalo_store::sqlx::query(
            "UPDATE gateway_message_user_cursor SET last_id = $1 WHERE id = 1 AND last_id < $1",
        )
        .bind(last)
        .execute(&mut *tx)
        .await
        .db(what)?;
        tx.commit().await.db(what)?;
        if (rows.len() as i64) < PASS {
            return Ok(());
        }
        from = last;
    }
}

/// One exchange made on a person's behalf.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub time_unix: i64,
    pub x_road_id: String,
    /// `client` or `provider`: which side this gateway played.
    pub side: String,
    pub client: String,
    pub service: String,
    pub method: String,
    pub path: String,
    /// `X-Road-Issue`, the purpose the client gave.
    pub purpose: Option<String>,
    pub status: i64,
    pub ledger_index: Option<i64>,
}

/// The exchanges made on behalf of `user_id`, newest first.
pub async fn records_of(
    db: &Database,
    user_id: &str,
    limit: i64,
) -> Result<Vec<UserRecord>, Error> {
    catch_up(db).await?;
    let rows = xalo_store::sqlx::query(concat!(
        "SELECT ",
        crate::evidence_export::record_columns!(),
        " FROM gateway_message_log WHERE id IN \
         (SELECT message_id FROM gateway_message_user WHERE user_id = $1) \
         ORDER BY id DESC LIMIT $2"
    ))
    .bind(user_id)
    .bind(limit.clamp(1, 1000))
    .fetch_all(db.pool())
    .await
    .db("reading the message log by user")?;
    rows.iter()
        .map(|row| {
            let r = crate::evidence_export::LogRecord::from_row(row)?;
            let (method, path) = r.request_line();
            Ok(UserRecord {
                time_unix: r.logged_unix,
                purpose: r.request_header(X_ROAD_ISSUE),
                x_road_id: r.x_road_id,
                side: r.side,
                client: r.client,
                service: r.service,
                method,
                path,
                status: r.status,
                ledger_index: r.ledger_index,
            })
        })
        .collect()
}

#[derive(Deserialize)]
pub(crate) struct UserQuery {
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

pub(crate) async fn by_user(
    State(s): State<Arc<GatewayState>>,
    Path(user_id): Path<String>,
    Query(q): Query<UserQuery>,
) -> Result<Response, Error> {
    if user_id.is_empty() || user_id.len() > 255 {
        return Err(Error::new(ErrorCode::HttpBadRequest, "no such user id"));
    }
    let records = records_of(s.log.database(), &user_id, q.limit).await?;
    Ok(axum::Json(records).into_response())
}

impl GatewayAdmin {
    /// The exchanges this gateway logged on behalf of `user_id`, newest first.
    pub async fn user_records(&self, user_id: &str) -> Result<Vec<UserRecord>, Error> {
        let v = self
            .get_json(&format!(
                "/api/v1/message-log/users/{}",
                crate::evidence_export::query_value(user_id)
            ))
            .await?;
        serde_json::from_value(v).map_err(|e| Error::new(ErrorCode::ExchUpstream, e.to_string()))
    }
}
