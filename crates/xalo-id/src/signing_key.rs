//! The provider's ID-token signing keys (ES256), kept in the database so every instance
//! signs with the same key. Rotation as OpenID Connect Core §10.1 and TARA describe it:
//! the new key becomes current, the old one stays published as previous until tokens
//! signed with it have expired, and the one before that is retired.

use p256::ecdsa::{SigningKey, VerifyingKey};
use serde_json::{Value, json};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};

use crate::jws;
use crate::store::unix_now;

/// The key that signs now.
#[derive(Clone)]
pub struct CurrentKey {
    pub kid: String,
    pub key: SigningKey,
    /// `key` as ring signs with it, made once when the key is read.
    pub pair: std::sync::Arc<ring::signature::EcdsaKeyPair>,
    pub created_unix: i64,
}

fn key_error(m: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::AuthSigningKey, m.to_string())
}

fn parse(secret_hex: &str) -> Result<SigningKey, Error> {
    let bytes = hex::decode(secret_hex).map_err(key_error)?;
    SigningKey::from_slice(&bytes).map_err(key_error)
}

/// The current key, creating the first one when there is none.
pub async fn current(db: &Database) -> Result<CurrentKey, Error> {
    if let Some(k) = load_current(db).await? {
        return Ok(k);
    }
    rotate(db).await
}

async fn load_current(db: &Database) -> Result<Option<CurrentKey>, Error> {
    let row = xalo_store::sqlx::query(
        "SELECT kid, secret_hex, created_unix FROM id_signing_key WHERE state = 'current' \
         ORDER BY created_unix DESC LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await
    .db("reading the signing key")?;
    let Some(row) = row else { return Ok(None) };
    let secret: String = row.try_get(1).db("reading the signing key")?;
    let key = parse(&secret)?;
    Ok(Some(CurrentKey {
        kid: row.try_get(0).db("reading the signing key")?,
        pair: std::sync::Arc::new(jws::ring_key_pair(&key)?),
        key,
        created_unix: row.try_get(2).db("reading the signing key")?,
    }))
}

/// Make a new current key; the current one becomes previous, the previous one retired.
pub async fn rotate(db: &Database) -> Result<CurrentKey, Error> {
    let key = jws::generate_key()?;
    let kid = hex::encode(rand::random::<[u8; 8]>());
    let now = unix_now();
    let mut tx = db.begin_write().await?;
    for sql in [
        "UPDATE id_signing_key SET state = 'retired' WHERE state = 'previous'",
        "UPDATE id_signing_key SET state = 'previous' WHERE state = 'current'",
    ] {
        xalo_store::sqlx::query(sql)
            .execute(&mut *tx)
            .await
            .db("rotating the signing key")?;
    }
    xalo_store::sqlx::query(
        "INSERT INTO id_signing_key (kid, secret_hex, state, created_unix) VALUES ($1, $2, 'current', $3)",
    )
    .bind(kid.clone())
    .bind(hex::encode(key.to_bytes()))
    .bind(now)
    .execute(&mut *tx)
    .await
    .db("storing the signing key")?;
    tx.commit().await.db("rotating the signing key")?;
    tracing::info!(kid, "ID-token signing key rotated");
    Ok(CurrentKey {
        kid,
        pair: std::sync::Arc::new(jws::ring_key_pair(&key)?),
        key,
        created_unix: now,
    })
}

/// The published keys: current and previous.
pub async fn published(db: &Database) -> Result<Vec<(String, VerifyingKey)>, Error> {
    let rows = xalo_store::sqlx::query(
        "SELECT kid, secret_hex FROM id_signing_key WHERE state IN ('current', 'previous') \
         ORDER BY created_unix DESC",
    )
    .fetch_all(db.pool())
    .await
    .db("reading the signing keys")?;
    rows.iter()
        .map(|r| {
            let kid: String = r.try_get(0).db("reading the signing keys")?;
            let secret: String = r.try_get(1).db("reading the signing keys")?;
            Ok((kid, *parse(&secret)?.verifying_key()))
        })
        .collect()
}

/// The JWK set the provider publishes.
pub async fn jwks(db: &Database) -> Result<Value, Error> {
    let keys: Vec<Value> = published(db)
        .await?
        .iter()
        .map(|(kid, vk)| jws::jwk(kid, vk))
        .collect();
    Ok(json!({ "keys": keys }))
}
