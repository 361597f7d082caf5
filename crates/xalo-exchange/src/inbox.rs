//! The `inbox` role: a small subscriber backend that records the events its gateway
//! delivers, once per idempotency key, in mailboxes (`POST /inbox/{mailbox}`), and lists
//! them (`GET /inbox/{mailbox}`). The demo's subscribers (social security, tax) read their
//! events here; a member's own system would act on them instead.
//!
//! A duplicate (an event whose `Idempotency-Key` the mailbox has) is acknowledged without
//! being recorded again; the number of copies received is kept, to show that at-least-once
//! delivery and idempotency keys meet here.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Migration, Row};

pub const ROLE: &str = "inbox";

const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "received events",
    "CREATE TABLE inbox_event (
        mailbox TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        topic TEXT NOT NULL,
        event_type TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body TEXT NOT NULL,
        copies BIGINT NOT NULL,
        received_ms BIGINT NOT NULL,
        PRIMARY KEY (mailbox, idempotency_key)
    );
    CREATE INDEX inbox_event_received ON inbox_event (mailbox, received_ms);",
)];

/// One recorded event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedEvent {
    pub idempotency_key: String,
    pub topic: String,
    pub event_type: String,
    /// How many copies arrived (more than one after a lost acknowledgement).
    pub copies: i64,
    pub received_ms: i64,
    /// The event: JSON when it was JSON, else text.
    pub event: serde_json::Value,
}

/// Start the inbox on `listener`.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let db = Database::connect(&config.database_url(ROLE)).await?;
    db.migrate(ROLE, MIGRATIONS).await?;
    let router = Router::new()
        .route("/inbox/{mailbox}", post(receive).get(list))
        .with_state(Arc::new(db.clone()));
    Server::new(ROLE, router, &config.http)
        .health_check(db.health_check())
        .spawn(listener)
}

fn mailbox_name(m: &str) -> Result<(), Error> {
    if m.is_empty()
        || m.len() > 64
        || !m
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Error::new(
            ErrorCode::HttpBadRequest,
            format!("mailbox {m:?}: 1 to 64 of a-z, 0-9 and -"),
        ));
    }
    Ok(())
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn receive(
    State(db): State<Arc<Database>>,
    Path(mailbox): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>, Error> {
    mailbox_name(&mailbox)?;
    let key = header(&headers, crate::pubsub::IDEMPOTENCY_KEY);
    if key.is_empty() {
        return Err(Error::new(
            ErrorCode::HttpBadRequest,
            "an event needs its Idempotency-Key",
        ));
    }
    let what = "recording an event";
    let seen = xalo_store::sqlx::query(
        "UPDATE inbox_event SET copies = copies + 1 WHERE mailbox = $1 AND idempotency_key = $2",
    )
    .bind(&mailbox)
    .bind(&key)
    .execute(db.pool())
    .await
    .db(what)?;
    if seen.rows_affected() > 0 {
        return Ok(axum::Json(
            serde_json::json!({"status": "duplicate", "idempotency_key": key}),
        ));
    }
    let inserted = xalo_store::sqlx::query(
        "INSERT INTO inbox_event (mailbox, idempotency_key, topic, event_type, content_type, body, copies, received_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7)",
    )
    .bind(&mailbox)
    .bind(&key)
    .bind(header(&headers, "ce-source"))
    .bind(header(&headers, "ce-type"))
    .bind(header(&headers, "content-type"))
    .bind(String::from_utf8_lossy(&body).into_owned())
    .bind(crate::topic::now_ms())
    .execute(db.pool())
    .await
    .db(what);
    match inserted {
        // A copy that arrived at the same moment: it is recorded.
        Err(e) if e.code == ErrorCode::StoreConflict => Ok(axum::Json(
            serde_json::json!({"status": "duplicate", "idempotency_key": key}),
        )),
        Err(e) => Err(e),
        Ok(_) => Ok(axum::Json(
            serde_json::json!({"status": "recorded", "idempotency_key": key}),
        )),
    }
}

async fn list(
    State(db): State<Arc<Database>>,
    Path(mailbox): Path<String>,
) -> Result<axum::Json<Vec<ReceivedEvent>>, Error> {
    mailbox_name(&mailbox)?;
    let what = "listing events";
    let rows = xalo_store::sqlx::query(
        "SELECT idempotency_key, topic, event_type, body, copies, received_ms FROM inbox_event \
         WHERE mailbox = $1 ORDER BY received_ms DESC, idempotency_key LIMIT 500",
    )
    .bind(&mailbox)
    .fetch_all(db.pool())
    .await
    .db(what)?;
    rows.iter()
        .map(|r| {
            let body: String = r.try_get(3).db(what)?;
            Ok(ReceivedEvent {
                idempotency_key: r.try_get(0).db(what)?,
                topic: r.try_get(1).db(what)?,
                event_type: r.try_get(2).db(what)?,
                copies: r.try_get(4).db(what)?,
                received_ms: r.try_get(5).db(what)?,
                event: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
            })
        })
        .collect::<Result<Vec<_>, Error>>()
        .map(axum::Json)
}
