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

pub(crate) const INSERT_CODE: &str = "INSERT INTO id_code (code_hash, client_id, redirect_uri, code_challenge, grant_json, claims_json, expires_unix, used) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 0)";

/// A new code and what its row holds besides the request's fields.
pub(crate) struct CodeRow {
    pub code: String,
    hash: String,
    grant: String,
    /// The userinfo claims its access token will carry, stored with the code so that
    /// redeeming it can issue the token in the same script (see [`redeem_and_issue`]).
    claims: String,
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
        claims: c.grant.identity.claims(&c.grant.scope).to_string(),
        expires: unix_now() + c.ttl_secs.clamp(1, MAX_CODE_TTL_SECS),
    })
}

type AnyQuery<'q> =
    xalo_store::sqlx::query::Query<'q, xalo_store::sqlx::Any, xalo_store::sqlx::any::AnyArguments>;

impl CodeRow {
    /// Bind the seven parameters of [`INSERT_CODE`] (after any already bound).
    pub(crate) fn bind<'q>(&self, q: AnyQuery<'q>, c: &NewCode<'_>) -> AnyQuery<'q> {
        q.bind(self.hash.clone())
            .bind(c.client_id.to_owned())
            .bind(c.redirect_uri.to_owned())
            .bind(c.code_challenge.map(str::to_owned))
            .bind(self.grant.clone())
            .bind(self.claims.clone())
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

/// What a code was issued for, read back when it is spent.
struct SpentCode {
    client_id: String,
    redirect_uri: String,
    challenge: Option<String>,
    grant: String,
    expires: i64,
    /// How many times the code has been claimed, this time included.
    claims: i64,
}

/// Spend the code `$1`, returning the columns [`SpentCode`] reads; a macro so that
/// [`SPEND_CODE_AND_ISSUE`] is built from the same text.
macro_rules! spend_code {
    () => {
        "UPDATE id_code SET used = used + 1 WHERE code_hash = $1 \
         RETURNING client_id, redirect_uri, code_challenge, grant_json, expires_unix, used"
    };
}
const SPEND_CODE: &str = spend_code!();

impl SpentCode {
    fn of_row(row: &xalo_store::sqlx::any::AnyRow) -> Result<SpentCode, Error> {
        Ok(SpentCode {
            client_id: row.try_get(0).db("reading a code")?,
            redirect_uri: row.try_get(1).db("reading a code")?,
            challenge: row.try_get(2).db("reading a code")?,
            grant: row.try_get(3).db("reading a code")?,
            expires: row.try_get(4).db("reading a code")?,
            claims: row.try_get(5).db("reading a code")?,
        })
    }
}

/// A redemption's request: the code and what the client sent with it.
pub struct Redemption<'a> {
    pub code: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub verifier: Option<&'a str>,
    /// `now` for the expiry check, so that the check and a script that repeats it agree.
    pub now: i64,
}

impl Redemption<'_> {
    /// Whether the spent code may be exchanged: use, client, expiry, redirect URI, PKCE.
    fn check(&self, spent: &SpentCode) -> Result<(), Error> {
        if spent.claims != 1 {
            return Err(grant_error("the authorization code was already used"));
        }
        if spent.client_id != self.client_id {
            return Err(grant_error(
                "the authorization code was issued to another client",
            ));
        }
        if spent.expires < self.now {
            return Err(grant_error("the authorization code has expired"));
        }
        if self.redirect_uri != Some(spent.redirect_uri.as_str()) {
            return Err(grant_error(
                "redirect_uri differs from the authorization request",
            ));
        }
        match (&spent.challenge, self.verifier) {
            (Some(_), None) => Err(grant_error("code_verifier is required")),
            (Some(challenge), Some(verifier)) => {
                if verifier_is_well_formed(verifier)
                    && xalo_web::session::constant_time_eq(
                        s256(verifier).as_bytes(),
                        challenge.as_bytes(),
                    )
                {
                    Ok(())
                } else {
                    Err(grant_error(
                        "code_verifier does not match the code_challenge",
                    ))
                }
            }
            (None, Some(_)) => Err(grant_error(
                "code_verifier sent, but the request had no code_challenge",
            )),
            (None, None) => Ok(()),
        }
    }

    /// The challenge a stored code must have for this request's verifier to match it
    /// (`None` when no verifier was sent), and whether the verifier is well formed.
    fn challenge(&self) -> (Option<String>, bool) {
        match self.verifier {
            Some(v) => (Some(s256(v)), verifier_is_well_formed(v)),
            None => (None, true),
        }
    }
}

/// Redeem a code for `client_id`: checks use, expiry, redirect URI and PKCE.
pub async fn redeem(db: &Database, r: &Redemption<'_>) -> Result<(String, Grant), Error> {
    let hash = sha256_hex(r.code);
    // Claim and read the code in one statement, so that it is spent even by a failed try
    // and two concurrent redemptions cannot both see it unused: `used` counts claims.
    let row = db
        .fetch_optional(xalo_store::sqlx::query(SPEND_CODE).bind(hash.clone()))
        .await
        .db("spending an authorization code")?
        .ok_or_else(|| grant_error("unknown authorization code"))?;
    let spent = SpentCode::of_row(&row)?;
    if let Err(e) = r.check(&spent) {
        if spent.claims != 1 {
            revoke_tokens_of(db, &hash).await?;
        }
        return Err(e);
    }
    Ok((hash, parse_grant(&spent.grant)?))
}

fn parse_grant(json: &str) -> Result<Grant, Error> {
    serde_json::from_str(json)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("stored grant: {e}")))
}

/// A redeemed code: what it granted, and the access token issued for it.
pub struct Redeemed {
    pub grant: Grant,
    pub access_token: String,
}

/// [`SPEND_CODE`], then the access token inserted from the code's row only if the code
/// passes every check of [`Redemption::check`] (repeated here in SQL), then how many rows
/// that insert made: one transaction, one hand-off to the writer.
const SPEND_CODE_AND_ISSUE: &str = concat!(
    "BEGIN IMMEDIATE; ",
    spend_code!(),
    "; INSERT INTO id_access_token (token_hash, code_hash, client_id, claims_json, expires_unix) \
     SELECT $2, code_hash, client_id, claims_json, $3 FROM id_code \
     WHERE code_hash = $1 AND used = 1 AND client_id = $4 AND expires_unix >= $5 \
     AND redirect_uri = $6 AND code_challenge IS $7 AND $8 = 1 AND claims_json IS NOT NULL; \
     SELECT changes(); \
     COMMIT;"
);

/// Redeem a code (as [`redeem`]) and issue its access token, valid for `ttl_secs`. On
/// SQLite both happen in one script on the writer: the token endpoint's two writes were
/// two hand-offs to the single writer, and the second one queued behind every other
/// request's first. Elsewhere, and for a code stored without its claims, one after the
/// other.
pub async fn redeem_and_issue(
    db: &Database,
    r: &Redemption<'_>,
    ttl_secs: i64,
) -> Result<Redeemed, Error> {
    if db.backend() != xalo_store::Backend::Sqlite {
        let (code_hash, grant) = redeem(db, r).await?;
        return issued(db, code_hash, grant, r.client_id, ttl_secs).await;
    }
    let hash = sha256_hex(r.code);
    let token = xalo_web::session::random_token();
    let (challenge, well_formed) = r.challenge();
    let rows = db
        .write_script(
            xalo_store::sqlx::query(SPEND_CODE_AND_ISSUE)
                .bind(hash.clone())
                .bind(sha256_hex(&token))
                .bind(r.now + ttl_secs)
                .bind(r.client_id.to_owned())
                .bind(r.now)
                .bind(r.redirect_uri.map(str::to_owned))
                .bind(challenge)
                .bind(i64::from(well_formed)),
            "spending an authorization code",
        )
        .await?;
    let (inserted, spent) = match rows.as_slice() {
        [spent, inserted] => (inserted, Some(spent)),
        [inserted] => (inserted, None),
        _ => {
            return Err(Error::new(
                ErrorCode::Internal,
                "spending an authorization code: unexpected rows",
            ));
        }
    };
    let inserted: i64 = inserted.try_get(0).db("spending an authorization code")?;
    let spent = SpentCode::of_row(spent.ok_or_else(|| grant_error("unknown authorization code"))?)?;
    if let Err(e) = r.check(&spent) {
        // The script's condition is the check's; should they ever differ, a refused
        // code keeps no token.
        if spent.claims != 1 || inserted != 0 {
            revoke_tokens_of(db, &hash).await?;
        }
        return Err(e);
    }
    let grant = parse_grant(&spent.grant)?;
    if inserted == 0 {
        // A code stored before its claims were kept with it.
        return issued(db, hash, grant, r.client_id, ttl_secs).await;
    }
    Ok(Redeemed {
        grant,
        access_token: token,
    })
}

/// The redeemed code with an access token issued by a statement of its own.
async fn issued(
    db: &Database,
    code_hash: String,
    grant: Grant,
    client_id: &str,
    ttl_secs: i64,
) -> Result<Redeemed, Error> {
    let claims = grant.identity.claims(&grant.scope);
    let access_token = issue_access_token(db, &code_hash, client_id, &claims, ttl_secs).await?;
    Ok(Redeemed {
        grant,
        access_token,
    })
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
