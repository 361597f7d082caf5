//! Authorization codes and access tokens.
//!
//! A code is single-use and short-lived (at most five minutes): redeeming marks it used in
//! the same statement that checks it, so two concurrent redemptions cannot both win, and a
//! second redemption also revokes the tokens the first one got (RFC 6749 §4.1.2).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};

use crate::identity::Identity;
use crate::store::{sha256_hex, unix_now};

/// The longest a code may live, whatever the settings say.
pub const MAX_CODE_TTL_SECS: i64 = 300;

/// What a code stands for: who logged in, for which client, with which request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub identity: Identity,
    pub scope: Vec<String>,
    pub nonce: Option<String>,
    pub state: Option<String>,
    pub auth_time: i64,
}

pub struct NewCode<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub code_challenge: Option<&'a str>,
    pub grant: &'a Grant,
    pub ttl_secs: i64,
}

fn grant_error(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::AuthInvalidGrant, m)
}

pub(crate) const INSERT_CODE: &str = "INSERT INTO id_code (code_hash, client_id, redirect_uri, code_challenge, grant_json, expires_unix, used) \
     VALUES ($1, $2, $3, $4, $5, $6, 0)";

/// A new code and what its row holds besides the request's fields.
pub(crate) struct CodeRow {
    pub code: String,
    hash: String,
    grant: String,
    expires: i64,
}

/// Draw a code for `c`.
pub(crate) fn code_row(c: &NewCode<'_>) -> Result<CodeRow, Error> {
    let code = xalo_web::session::random_token();
    Ok(CodeRow {
        hash: sha256_hex(&code),
        code,
        grant: serde_json::to_string(c.grant)
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
        expires: unix_now() + c.ttl_secs.clamp(1, MAX_CODE_TTL_SECS),
    })
}

type AnyQuery<'q> =
    xalo_store::sqlx::query::Query<'q, xalo_store::sqlx::Any, xalo_store::sqlx::any::AnyArguments>;

impl CodeRow {
    /// Bind the six parameters of [`INSERT_CODE`] (after any already bound).
    pub(crate) fn bind<'q>(&self, q: AnyQuery<'q>, c: &NewCode<'_>) -> AnyQuery<'q> {
        q.bind(self.hash.clone())
            .bind(c.client_id.to_owned())
            .bind(c.redirect_uri.to_owned())
            .bind(c.code_challenge.map(str::to_owned))
            .bind(self.grant.clone())
            .bind(self.expires)
    }
}

/// Store a new code; returns the code to send to the client.
pub async fn issue_code(db: &Database, c: &NewCode<'_>) -> Result<String, Error> {
    let row = code_row(c)?;
    db.execute(row.bind(xalo_store::sqlx::query(INSERT_CODE), c))
        .await
        .db("storing an authorization code")?;
    Ok(row.code)
}

/// The S256 challenge of a verifier (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn verifier_is_well_formed(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Redeem a code for `client_id`: checks use, expiry, redirect URI and PKCE.
pub async fn redeem(
    db: &Database,
    code: &str,
    client_id: &str,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
) -> Result<(String, Grant), Error> {
    let hash = sha256_hex(code);
    // Claim and read the code in one statement, so that it is spent even by a failed try
    // and two concurrent redemptions cannot both see it unused: `used` counts claims.
    let row = db
        .fetch_optional(
            xalo_store::sqlx::query(
                "UPDATE id_code SET used = used + 1 WHERE code_hash = $1 \
         RETURNING client_id, redirect_uri, code_challenge, grant_json, expires_unix, used",
            )
            .bind(hash.clone()),
        )
        .await
        .db("spending an authorization code")?
        .ok_or_else(|| grant_error("unknown authorization code"))?;
    let owner: String = row.try_get(0).db("reading a code")?;
    let stored_uri: String = row.try_get(1).db("reading a code")?;
    let challenge: Option<String> = row.try_get(2).db("reading a code")?;
    let grant: String = row.try_get(3).db("reading a code")?;
    let expires: i64 = row.try_get(4).db("reading a code")?;
    let claims: i64 = row.try_get(5).db("reading a code")?;
    if claims != 1 {
        revoke_tokens_of(db, &hash).await?;
        return Err(grant_error("the authorization code was already used"));
    }
    if owner != client_id {
        return Err(grant_error(
            "the authorization code was issued to another client",
        ));
    }
    if expires < unix_now() {
        return Err(grant_error("the authorization code has expired"));
    }
    if redirect_uri != Some(stored_uri.as_str()) {
        return Err(grant_error(
            "redirect_uri differs from the authorization request",
        ));
    }
    if let Some(challenge) = challenge {
        let verifier = verifier.ok_or_else(|| grant_error("code_verifier is required"))?;
        if !verifier_is_well_formed(verifier)
            || !xalo_web::session::constant_time_eq(s256(verifier).as_bytes(), challenge.as_bytes())
        {
            return Err(grant_error(
                "code_verifier does not match the code_challenge",
            ));
        }
    } else if verifier.is_some() {
        return Err(grant_error(
            "code_verifier sent, but the request had no code_challenge",
        ));
    }
    let grant: Grant = serde_json::from_str(&grant)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("stored grant: {e}")))?;
    Ok((hash, grant))
}

async fn revoke_tokens_of(db: &Database, code_hash: &str) -> Result<(), Error> {
    db.execute(
        xalo_store::sqlx::query("DELETE FROM id_access_token WHERE code_hash = $1")
            .bind(code_hash.to_owned()),
    )
    .await
    .db("revoking tokens of a reused code")?;
    Ok(())
}

/// Store an access token carrying the userinfo claims.
pub async fn issue_access_token(
    db: &Database,
    code_hash: &str,
    client_id: &str,
    claims: &serde_json::Value,
    ttl_secs: i64,
) -> Result<String, Error> {
    let token = xalo_web::session::random_token();
    db.execute(xalo_store::sqlx::query(
        "INSERT INTO id_access_token (token_hash, code_hash, client_id, claims_json, expires_unix) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(sha256_hex(&token))
    .bind(code_hash.to_owned())
    .bind(client_id.to_owned())
    .bind(claims.to_string())
    .bind(unix_now() + ttl_secs))
    .await
    .db("storing an access token")?;
    Ok(token)
}

/// The userinfo claims of a live access token.
pub async fn userinfo(db: &Database, token: &str) -> Result<serde_json::Value, Error> {
    let invalid = || {
        Error::new(
            ErrorCode::AuthInvalidToken,
            "the access token is invalid or expired",
        )
    };
    let row = db
        .fetch_optional(
            xalo_store::sqlx::query(
                "SELECT claims_json, expires_unix FROM id_access_token WHERE token_hash = $1",
            )
            .bind(sha256_hex(token)),
        )
        .await
        .db("reading an access token")?
        .ok_or_else(invalid)?;
    let expires: i64 = row.try_get(1).db("reading an access token")?;
    if expires < unix_now() {
        return Err(invalid());
    }
    let claims: String = row.try_get(0).db("reading an access token")?;
    serde_json::from_str(&claims).map_err(|_| invalid())
}

/// Remove expired codes and tokens.
pub async fn purge(db: &Database) -> Result<(), Error> {
    let cutoff = unix_now() - 3600;
    for sql in [
        "DELETE FROM id_code WHERE expires_unix < $1",
        "DELETE FROM id_access_token WHERE expires_unix < $1",
        "DELETE FROM id_attempt WHERE window_start < $1",
    ] {
        db.execute(xalo_store::sqlx::query(sql).bind(cutoff))
            .await
            .db("purging expired grants")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_challenge() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mJ92K9qbTFSeRNIg6T6BaDJ4PqmvmM"),
            "FUKVvr22WkWQmtB3Vi-qGNcJSDA4Ya8zNj4RhDjJzGs"
        );
        assert!(!verifier_is_well_formed("short"));
    }
}
