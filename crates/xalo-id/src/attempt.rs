//! Brute-force and abuse limits: a fixed-window counter per subject (a personal code, a
//! phone number, a client address, a client id), kept in the database so that every
//! instance counts together.

use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};

use crate::store::unix_now;

/// A limit: at most `max` attempts per `window_secs`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: i64,
    pub window_secs: i64,
}

/// Mobile-ID logins started for one personal code or phone number.
pub const PER_PERSON: Limit = Limit {
    max: 5,
    window_secs: 600,
};
/// Logins started from one network address.
pub const PER_ADDRESS: Limit = Limit {
    max: 60,
    window_secs: 600,
};
/// Failed client authentications of one client id at the token endpoint.
pub const PER_CLIENT: Limit = Limit {
    max: 20,
    window_secs: 60,
};

/// Count one attempt for `subject`; refuse when the limit is passed.
pub async fn count(db: &Database, subject: &str, limit: Limit) -> Result<(), Error> {
    let now = unix_now();
    let row = db.fetch_one(xalo_store::sqlx::query(
        "INSERT INTO id_attempt (subject, window_start, attempts) VALUES ($1, $2, 1) \
         ON CONFLICT (subject) DO UPDATE SET \
           attempts = CASE WHEN id_attempt.window_start < $3 THEN 1 ELSE id_attempt.attempts + 1 END, \
           window_start = CASE WHEN id_attempt.window_start < $3 THEN $2 ELSE id_attempt.window_start END \
         RETURNING attempts",
    )
    .bind(subject.to_owned())
    .bind(now)
    .bind(now - limit.window_secs))
    .await
    .db("counting an attempt")?;
    let attempts: i64 = row.try_get(0).db("counting an attempt")?;
    if attempts > limit.max {
        return Err(Error::new(
            ErrorCode::AuthTooManyAttempts,
            format!(
                "more than {} attempts in {} s",
                limit.max, limit.window_secs
            ),
        ));
    }
    Ok(())
}

/// Whether the limit is already passed, without counting.
pub async fn exceeded(db: &Database, subject: &str, limit: Limit) -> Result<bool, Error> {
    let row = db
        .fetch_optional(
            xalo_store::sqlx::query(
                "SELECT window_start, attempts FROM id_attempt WHERE subject = $1",
            )
            .bind(subject.to_owned()),
        )
        .await
        .db("reading attempts")?;
    let Some(row) = row else { return Ok(false) };
    let start: i64 = row.try_get(0).db("reading attempts")?;
    let attempts: i64 = row.try_get(1).db("reading attempts")?;
    Ok(start >= unix_now() - limit.window_secs && attempts >= limit.max)
}
