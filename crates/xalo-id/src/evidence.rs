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
use xalo_store::{Database, DbResultExt, Row};

use crate::identity::Identity;
use crate::store::unix_now;

/// The ledger entry kind of a login.
pub const ENTRY_KIND: &str = "id.login";

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
        let login_id = hex::encode(rand::random::<[u8; 16]>());
        let at = unix_now();
        let record = json!({
            "login": login_id,
            "sub": identity.code.to_string(),
            "client_id": client_id,
            "amr": identity.amr(),
            "acr": identity.method.acr().as_str(),
            "at": at,
        });
        let hash = hex::encode(Sha256::digest(record.to_string().as_bytes()));
        xalo_store::sqlx::query(
            "INSERT INTO id_login (login_id, sub, client_id, amr, acr, at_unix, record_hash, ledger_index) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(login_id.clone())
        .bind(identity.code.to_string())
        .bind(client_id.to_owned())
        .bind(identity.amr().join(" "))
        .bind(identity.method.acr().as_str())
        .bind(at)
        .bind(hash.clone())
        .execute(self.db.pool())
        .await
        .db("recording a login")?;
        if let Err(e) = self.anchor(&login_id, &hash).await {
            tracing::warn!(error = %e, "login not yet anchored in the ledger; will retry");
        }
        Ok(login_id)
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
        xalo_store::sqlx::query("UPDATE id_login SET ledger_index = $1 WHERE login_id = $2")
            .bind(index as i64)
            .bind(login_id.to_owned())
            .execute(self.db.pool())
            .await
            .db("noting a login's ledger index")?;
        Ok(())
    }

    /// Anchor logins that were stored but not yet anchored.
    pub async fn retry(&self) -> Result<usize, Error> {
        if self.recorder.is_none() {
            return Ok(0);
        }
        let rows = xalo_store::sqlx::query(
            "SELECT login_id, record_hash FROM id_login WHERE ledger_index IS NULL ORDER BY at_unix LIMIT 500",
        )
        .fetch_all(self.db.pool())
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
        let row = xalo_store::sqlx::query("SELECT ledger_index FROM id_login WHERE login_id = $1")
            .bind(login_id.to_owned())
            .fetch_optional(self.db.pool())
            .await
            .db("reading a login")?;
        match row {
            Some(r) => r.try_get(0).db("reading a login"),
            None => Ok(None),
        }
    }
}
