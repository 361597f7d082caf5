//! Every login is evidence: a row here, and its hash in the transparency ledger. The
//! ledger sees only the hash; the record (who, which service, how, when) stays with the
//! provider, which can prove later that it was logged then. A login that could not be
//! anchored at once is anchored by the background task, never lost.

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use xalo_core::Error;
use xalo_ledger::client::{LedgerClient, Recorder};
use xalo_ledger::entry::Entry;
use xalo_store::{Backend, Database, DbResultExt, Row};
use xalo_web::SessionUpdate;

use crate::grant::{self, NewCode};
use crate::identity::Identity;
use crate::store::unix_now;

/// The ledger entry kind of a login.
pub const ENTRY_KIND: &str = "id.login";

const INSERT_LOGIN: &str = "INSERT INTO id_login (login_id, sub, client_id, amr, acr, at_unix, record_hash, ledger_index) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)";

/// [`INSERT_LOGIN`] and then [`grant::INSERT_CODE`] with its parameters moved up by seven.
const INSERT_LOGIN_AND_CODE: &str = "INSERT INTO id_login (login_id, sub, client_id, amr, acr, at_unix, record_hash, ledger_index) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL); \
     INSERT INTO id_code (code_hash, client_id, redirect_uri, code_challenge, grant_json, claims_json, expires_unix, used) \
     VALUES ($8, $9, $10, $11, $12, $13, $14, 0)";

/// [`SessionUpdate::SQL`] and then [`INSERT_LOGIN_AND_CODE`] with its parameters moved up
/// by four.
const UPDATE_SESSION_INSERT_LOGIN_AND_CODE: &str = "UPDATE web_session SET lang = $1, data = $2, expires_unix = $3 WHERE id = $4; \
     INSERT INTO id_login (login_id, sub, client_id, amr, acr, at_unix, record_hash, ledger_index) \
     VALUES ($5, $6, $7, $8, $9, $10, $11, NULL); \
     INSERT INTO id_code (code_hash, client_id, redirect_uri, code_challenge, grant_json, claims_json, expires_unix, used) \
     VALUES ($12, $13, $14, $15, $16, $17, $18, 0)";

/// One login's record, before it is stored.
struct Login {
    id: String,
    sub: String,
    client_id: String,
    amr: String,
    acr: &'static str,
    at: i64,
    hash: String,
}

type AnyQuery<'q> =
    xalo_store::sqlx::query::Query<'q, xalo_store::sqlx::Any, xalo_store::sqlx::any::AnyArguments>;

impl Login {
    fn new(identity: &Identity, client_id: &str) -> Login {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let at = unix_now();
        let record = json!({
            "login": id,
            "sub": identity.code.to_string(),
            "client_id": client_id,
            "amr": identity.amr(),
            "acr": identity.method.acr().as_str(),
            "at": at,
        });
        Login {
            hash: hex::encode(Sha256::digest(record.to_string().as_bytes())),
            id,
            sub: identity.code.to_string(),
            client_id: client_id.to_owned(),
            amr: identity.amr().join(" "),
            acr: identity.method.acr().as_str(),
            at,
        }
    }

    /// Bind `$1`…`$7` of [`INSERT_LOGIN`].
    fn bind<'q>(&self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        q.bind(self.id.clone())
            .bind(self.sub.clone())
            .bind(self.client_id.clone())
            .bind(self.amr.clone())
            .bind(self.acr)
            .bind(self.at)
            .bind(self.hash.clone())
    }
}

/// Records logins and anchors them.
#[derive(Clone)]
pub struct Evidence {
    db: Database,
    recorder: Option<Recorder>,
}

impl Evidence {
    pub fn new(db: Database, ledger_url: Option<&str>) -> Result<Evidence, Error> {
        let recorder = match ledger_url {
            Some(url) => Some(Recorder::start(
                LedgerClient::new(url)?,
                64,
                Duration::from_millis(20),
            )),
            None => None,
        };
        Ok(Evidence { db, recorder })
    }

    /// Store the login and anchor it; a ledger failure leaves it for the retry task.
    pub async fn record(&self, identity: &Identity, client_id: &str) -> Result<String, Error> {
        let login = Login::new(identity, client_id);
        self.db
            .execute(login.bind(xalo_store::sqlx::query(INSERT_LOGIN)))
            .await
            .db("recording a login")?;
        self.anchor_or_retry(&login).await;
        Ok(login.id)
    }

    /// Store the session's update (the finished sign-in taken out of it, when given), the
    /// login and the authorization code it earned, in that order, then anchor the login.
    /// On SQLite all go to the writer in one round trip (one script; its statements
    /// commit in order, as separate statements would, and a failing one stops the rest);
    /// elsewhere one after the other. `session` must be written through this store's
    /// writer. Returns the code.
    pub async fn record_with_code(
        &self,
        session: Option<&SessionUpdate>,
        identity: &Identity,
        code: &NewCode<'_>,
    ) -> Result<String, Error> {
        let login = Login::new(identity, code.client_id);
        let row = grant::code_row(code)?;
        if self.db.backend() == Backend::Sqlite {
            let query = match session {
                Some(s) => s.bind(xalo_store::sqlx::query(
                    UPDATE_SESSION_INSERT_LOGIN_AND_CODE,
                )),
                None => xalo_store::sqlx::query(INSERT_LOGIN_AND_CODE),
            };
            self.db
                .execute(row.bind(login.bind(query), code))
                .await
                .db("recording a login and its code")?;
        } else {
            if let Some(s) = session {
                self.db
                    .execute(s.bind(xalo_store::sqlx::query(SessionUpdate::SQL)))
                    .await
                    .db("saving a session")?;
            }
            self.db
                .execute(login.bind(xalo_store::sqlx::query(INSERT_LOGIN)))
                .await
                .db("recording a login")?;
            self.db
                .execute(row.bind(xalo_store::sqlx::query(grant::INSERT_CODE), code))
                .await
                .db("storing an authorization code")?;
        }
        self.anchor_or_retry(&login).await;
        Ok(row.code)
    }

    async fn anchor_or_retry(&self, login: &Login) {
        if let Err(e) = self.anchor(&login.id, &login.hash).await {
            tracing::warn!(error = %e, "login not yet anchored in the ledger; will retry");
        }
    }

    async fn anchor(&self, login_id: &str, hash: &str) -> Result<(), Error> {
        let Some(recorder) = &self.recorder else {
            return Ok(());
        };
        let entry = Entry::new(
            ENTRY_KIND.parse()?,
            format!("{login_id} {hash}").into_bytes(),
        )?;
        let index = recorder.record(entry).await?;
        self.db
            .execute(
                xalo_store::sqlx::query(
                    "UPDATE id_login SET ledger_index = $1 WHERE login_id = $2",
                )
                .bind(index as i64)
                .bind(login_id.to_owned()),
            )
            .await
            .db("noting a login's ledger index")?;
        Ok(())
    }

    /// Anchor logins that were stored but not yet anchored.
    pub async fn retry(&self) -> Result<usize, Error> {
        if self.recorder.is_none() {
            return Ok(0);
        }
        let rows = self.db.fetch_all(xalo_store::sqlx::query(
            "SELECT login_id, record_hash FROM id_login WHERE ledger_index IS NULL ORDER BY at_unix LIMIT 500",
        ))
        .await
        .db("reading unanchored logins")?;
        let mut done = 0;
        for r in rows {
            let id: String = r.try_get(0).db("reading unanchored logins")?;
            let hash: String = r.try_get(1).db("reading unanchored logins")?;
            self.anchor(&id, &hash).await?;
            done += 1;
        }
        Ok(done)
    }

    /// The ledger index of a login, once anchored.
    pub async fn ledger_index(&self, login_id: &str) -> Result<Option<i64>, Error> {
        let row = self
            .db
            .fetch_optional(
                xalo_store::sqlx::query("SELECT ledger_index FROM id_login WHERE login_id = $1")
                    .bind(login_id.to_owned()),
            )
            .await
            .db("reading a login")?;
        match row {
            Some(r) => r.try_get(0).db("reading a login"),
            None => Ok(None),
        }
    }
}
