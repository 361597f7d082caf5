//! The operator's SMS centre: agencies' systems (the portal's result notices) send text
//! messages to phone numbers over HTTP, as Vietnamese operators' brand-name SMS APIs work,
//! and the subscriber reads them on the phone screen (`/phone/NUMBER`).
//!
//! `POST /sms-api/messages` with `Authorization: Bearer TOKEN` (a sender configured in
//! `[roles.mobile-id] sms_senders`, by the token's SHA-256) and
//! `{"id": "…", "to": "+84…", "text": "…"}`. The sender's `id` makes the send idempotent:
//! a retried message is answered `duplicate` and shown once. Table `mid_sms` (migration
//! component `mobile-id`).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};

use crate::mobile_id::normalise_phone;
use crate::store::unix_now;

/// Longest text accepted: five concatenated GSM-7 parts.
pub const MAX_TEXT_CHARS: usize = 765;

/// A system allowed to send, known by the SHA-256 (hex) of its bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSender {
    pub name: String,
    pub token_sha256: String,
}

/// One message to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutgoingSms {
    /// The sender's own id of the message (1–64 letters, digits, `-`, `_`).
    pub id: String,
    pub to: String,
    pub text: String,
}

/// A message as the phone shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedSms {
    pub sender: String,
    pub text: String,
    pub received_unix: i64,
}

#[derive(Clone)]
pub struct SmsCentre {
    pub db: Database,
    pub senders: Vec<SmsSender>,
}

fn invalid(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::SmsInvalid, m)
}

impl SmsCentre {
    /// The sender whose token `headers` carry.
    fn sender(&self, headers: &HeaderMap) -> Result<&SmsSender, Error> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Error::new(ErrorCode::SmsUnauthorised, "a bearer token is needed"))?;
        let digest = hex::encode(Sha256::digest(token.trim().as_bytes()));
        self.senders
            .iter()
            .find(|s| {
                xalo_web::session::constant_time_eq(s.token_sha256.as_bytes(), digest.as_bytes())
            })
            .ok_or_else(|| Error::new(ErrorCode::SmsUnauthorised, "unknown sender token"))
    }

    /// Take `m` from `sender`: `true` when new, `false` for a repeat of its id.
    pub async fn accept(&self, sender: &str, m: &OutgoingSms) -> Result<bool, Error> {
        let id_ok = (1..=64).contains(&m.id.len())
            && m.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(invalid(
                "the message id has 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        let to = normalise_phone(&m.to)
            .ok_or_else(|| invalid(format!("{:?} is not an E.164 phone number", m.to)))?;
        let chars = m.text.chars().count();
        if chars == 0 || chars > MAX_TEXT_CHARS {
            return Err(invalid(format!(
                "the text has {chars} characters; 1 to {MAX_TEXT_CHARS} are sent"
            )));
        }
        let inserted = xalo_store::sqlx::query(
            "INSERT INTO mid_sms (sender, message_id, phone, text, received_unix) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sender, message_id) DO NOTHING",
        )
        .bind(sender.to_owned())
        .bind(m.id.clone())
        .bind(to)
        .bind(m.text.clone())
        .bind(unix_now())
        .execute(self.db.pool())
        .await
        .db("taking an SMS")?;
        Ok(inserted.rows_affected() == 1)
    }
}

/// The latest messages to `phone`, newest first.
pub async fn inbox(db: &Database, phone: &str, limit: i64) -> Result<Vec<ReceivedSms>, Error> {
    let rows = xalo_store::sqlx::query(
        "SELECT sender, text, received_unix FROM mid_sms WHERE phone = $1 \
         ORDER BY received_unix DESC, message_id DESC LIMIT $2",
    )
    .bind(phone.to_owned())
    .bind(limit)
    .fetch_all(db.pool())
    .await
    .db("reading the phone's messages")?;
    rows.iter()
        .map(|r| {
            Ok(ReceivedSms {
                sender: r.try_get(0).db("reading the phone's messages")?,
                text: r.try_get(1).db("reading the phone's messages")?,
                received_unix: r.try_get(2).db("reading the phone's messages")?,
            })
        })
        .collect()
}

/// `POST /sms-api/messages`.
pub async fn send(
    State(centre): State<SmsCentre>,
    headers: HeaderMap,
    body: Result<Json<OutgoingSms>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, Error> {
    let sender = centre.sender(&headers)?.name.clone();
    let Json(m) = body.map_err(|e| invalid(e.body_text()))?;
    let new = centre.accept(&sender, &m).await?;
    Ok(Json(serde_json::json!({
        "id": m.id,
        "status": if new { "accepted" } else { "duplicate" },
    })))
}
