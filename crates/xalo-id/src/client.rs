//! Relying parties, registered by an operator with the CLI (no dynamic registration, as
//! TARA). A confidential client authenticates with `client_secret_basic` (the secret is
//! stored hashed; it is 32 random bytes, so a fast hash suffices) or `private_key_jwt`
//! (its JWKS); a public client has no secret and must use PKCE with S256.

use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};

use crate::store::{sha256_hex, unix_now};

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A public client (a browser or mobile app): no secret, PKCE S256 required.
    None,
    ClientSecretBasic,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
    fn parse(s: &str) -> AuthMethod {
        match s {
            "client_secret_basic" => AuthMethod::ClientSecretBasic,
            "private_key_jwt" => AuthMethod::PrivateKeyJwt,
            _ => AuthMethod::None,
        }
    }
}

/// What an operator registers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub client_id: String,
    pub name: String,
    pub auth_method: AuthMethod,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// The client's public keys for `private_key_jwt`, a JWK set as JSON.
    #[serde(default)]
    pub jwks: Option<String>,
    /// Use this secret instead of drawing one (the demo's fixed client).
    #[serde(default)]
    pub secret: Option<String>,
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub auth_method: AuthMethod,
    secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub jwks: Option<serde_json::Value>,
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.auth_method == AuthMethod::None
    }
    pub fn check_secret(&self, secret: &str) -> bool {
        self.secret_hash.as_deref().is_some_and(|h| {
            xalo_web::session::constant_time_eq(h.as_bytes(), sha256_hex(secret).as_bytes())
        })
    }
}

fn invalid(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::AuthClientRegistration, m)
}

/// Register (or replace) a client; returns the secret to hand to its operator, once.
pub async fn register(db: &Database, r: &Registration) -> Result<Option<String>, Error> {
    let id_ok = !r.client_id.is_empty()
        && r.client_id.len() <= 64
        && r.client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !id_ok {
        return Err(invalid("client_id: 1–64 letters, digits, '-', '_' or '.'"));
    }
    if r.redirect_uris.is_empty() {
        return Err(invalid("at least one redirect URI"));
    }
    for uri in r.redirect_uris.iter().chain(&r.post_logout_redirect_uris) {
        let ok = (uri.starts_with("https://") || uri.starts_with("http://")) && !uri.contains('#');
        if !ok {
            return Err(invalid(format!(
                "{uri}: an absolute http(s) URI without fragment"
            )));
        }
    }
    let secret = match r.auth_method {
        AuthMethod::ClientSecretBasic => Some(
            r.secret
                .clone()
                .unwrap_or_else(xalo_web::session::random_token),
        ),
        _ => None,
    };
    let jwks = match r.auth_method {
        AuthMethod::PrivateKeyJwt => {
            let text = r
                .jwks
                .as_deref()
                .ok_or_else(|| invalid("private_key_jwt needs a JWKS"))?;
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| invalid(format!("JWKS: {e}")))?;
            if crate::jws::keys_of_jwks(&v).is_empty() {
                return Err(invalid("the JWKS has no P-256 key"));
            }
            Some(v.to_string())
        }
        _ => None,
    };
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let mut tx = db.begin_write().await?;
    sqlx_delete(&mut tx, &r.client_id).await?;
    xalo_store::sqlx::query(
        "INSERT INTO id_client (client_id, name, auth_method, secret_hash, redirect_uris, \
         post_logout_redirect_uris, jwks, created_unix) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(r.client_id.clone())
    .bind(r.name.clone())
    .bind(r.auth_method.as_str())
    .bind(secret.as_deref().map(sha256_hex))
    .bind(json(&r.redirect_uris))
    .bind(json(&r.post_logout_redirect_uris))
    .bind(jwks)
    .bind(unix_now())
    .execute(&mut *tx)
    .await
    .db("registering a client")?;
    tx.commit().await.db("registering a client")?;
    Ok(secret)
}

async fn sqlx_delete(tx: &mut xalo_store::WriteTx, client_id: &str) -> Result<(), Error> {
    xalo_store::sqlx::query("DELETE FROM id_client WHERE client_id = $1")
        .bind(client_id.to_owned())
        .execute(&mut **tx)
        .await
        .db("replacing a client")?;
    Ok(())
}

pub async fn find(db: &Database, client_id: &str) -> Result<Option<Client>, Error> {
    let row = xalo_store::sqlx::query(
        "SELECT client_id, name, auth_method, secret_hash, redirect_uris, post_logout_redirect_uris, jwks \
         FROM id_client WHERE client_id = $1",
    )
    .bind(client_id.to_owned())
    .fetch_optional(db.pool())
    .await
    .db("reading a client")?;
    let Some(row) = row else { return Ok(None) };
    let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    let jwks: Option<String> = row.try_get(6).db("reading a client")?;
    Ok(Some(Client {
        client_id: row.try_get(0).db("reading a client")?,
        name: row.try_get(1).db("reading a client")?,
        auth_method: AuthMethod::parse(&row.try_get::<String, _>(2).db("reading a client")?),
        secret_hash: row.try_get(3).db("reading a client")?,
        redirect_uris: list(row.try_get(4).db("reading a client")?),
        post_logout_redirect_uris: list(row.try_get(5).db("reading a client")?),
        jwks: jwks.and_then(|j| serde_json::from_str(&j).ok()),
    }))
}

/// Every client id, for `xalo id client list`.
pub async fn list(db: &Database) -> Result<Vec<(String, String, String)>, Error> {
    let rows = xalo_store::sqlx::query(
        "SELECT client_id, name, auth_method FROM id_client ORDER BY client_id",
    )
    .fetch_all(db.pool())
    .await
    .db("listing clients")?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0).db("listing clients")?,
                r.try_get(1).db("listing clients")?,
                r.try_get(2).db("listing clients")?,
            ))
        })
        .collect()
}

/// Registered clients as recently read, so that an authorization and a token request need
/// not each read the client's row. An entry is used for at most its bound (the setting
/// `client_cache_ms`; 0 reads every time): a re-registration (new secret, redirect URIs,
/// keys) by the CLI or another instance is in force everywhere after that bound, and at
/// once in the instance that made it through [`ClientCache::forget`]. Unknown clients
/// are not remembered, so a new registration is usable at once.
pub struct ClientCache {
    ttl: std::time::Duration,
    entries: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Client)>>,
}

/// Bound the cache so that many distinct client ids cannot grow memory without end.
const CLIENT_CACHE_LIMIT: usize = 10_000;

impl ClientCache {
    pub fn new(ttl: std::time::Duration) -> ClientCache {
        ClientCache {
            ttl,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The client, from the cache while its entry is younger than the bound.
    pub async fn find(&self, db: &Database, client_id: &str) -> Result<Option<Client>, Error> {
        if self.ttl.is_zero() {
            return find(db, client_id).await;
        }
        if let Ok(entries) = self.entries.lock()
            && let Some((at, client)) = entries.get(client_id)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(client.clone()));
        }
        let read_at = std::time::Instant::now();
        let found = find(db, client_id).await?;
        if let Ok(mut entries) = self.entries.lock() {
            match &found {
                Some(c) => {
                    if entries.len() >= CLIENT_CACHE_LIMIT {
                        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
                        if entries.len() >= CLIENT_CACHE_LIMIT {
                            entries.clear();
                        }
                    }
                    entries.insert(client_id.to_owned(), (read_at, c.clone()));
                }
                None => {
                    entries.remove(client_id);
                }
            }
        }
        Ok(found)
    }

    /// Drop what is remembered of a client (after registering it in this process).
    pub fn forget(&self, client_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(client_id);
        }
    }
}
