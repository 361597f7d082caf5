//! The `witness` role: another member's check on the log. It remembers, per log, the last
//! checkpoint it cosigned; it cosigns a new one only with a valid consistency proof from
//! that one (C2SP tlog-witness), so a log cannot fork without the witness noticing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Migration, Row};

use crate::checkpoint::Checkpoint;
use crate::cosignature::CosignatureSigner;
use crate::keys;
use crate::note::{Ed25519Verifier, Limits, VerifierSet};
use crate::{Hash, LedgerError, merkle, proof};

pub const MIGRATIONS: &[Migration] = &[Migration::per_backend(
    1,
    "witnessed logs",
    "CREATE TABLE witness_log (origin TEXT PRIMARY KEY, size BIGINT NOT NULL, root BLOB NOT NULL,
        cosigned_ms BIGINT NOT NULL)",
    "CREATE TABLE witness_log (origin TEXT PRIMARY KEY, size BIGINT NOT NULL, root BYTEA NOT NULL,
        cosigned_ms BIGINT NOT NULL)",
)];

/// Largest add-checkpoint request: a note and a proof of at most 63 hashes.
const MAX_REQUEST: usize = 64 * 1024;

/// `[roles.witness]` settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WitnessSettings {
    /// The witness's key name; default `PUBLIC_HOST/witness`.
    pub name: Option<String>,
    /// Secret key file; default `DATA_DIR/witness/witness.key`, made on first start.
    pub key_file: Option<PathBuf>,
    /// Verifier keys (`name+hash+key`) of the logs this witness follows; the key name is
    /// the log's origin.
    pub logs: Vec<String>,
}

impl WitnessSettings {
    pub fn name(&self, config: &Config) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}/witness", config.public_host))
    }
    pub fn key_file(&self, config: &Config) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("witness").join("witness.key"))
    }
}

/// The witness's state: its key, the logs it follows, where it remembers them.
pub struct Witness {
    signer: CosignatureSigner,
    logs: VerifierSet,
    db: Database,
}

impl Witness {
    pub async fn open(
        db: Database,
        signer: CosignatureSigner,
        log_keys: &[String],
    ) -> Result<Witness, Error> {
        db.migrate("witness", MIGRATIONS).await?;
        let mut logs = VerifierSet::new();
        for k in log_keys {
            logs.add(Box::new(Ed25519Verifier::from_verifier_key(k)?))?;
        }
        Ok(Witness { signer, logs, db })
    }

    /// The witness's cosignature verifier key.
    pub fn verifier_key(&self) -> String {
        self.signer.verifier().verifier_key()
    }

    /// Handle one add-checkpoint request body.
    pub async fn add_checkpoint(&self, body: &[u8]) -> Result<String, WitnessRefusal> {
        let text =
            std::str::from_utf8(body).map_err(|_| WitnessRefusal::bad("request is not UTF-8"))?;
        let (head, note) = text
            .split_once("\n\n")
            .ok_or_else(|| WitnessRefusal::bad("no blank line before the checkpoint"))?;
        let mut lines = head.lines();
        let old: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| WitnessRefusal::bad("first line must be `old <size>`"))?;
        let proof = lines
            .map(Hash::from_base64)
            .collect::<Result<Vec<Hash>, LedgerError>>()
            .map_err(|e| WitnessRefusal::bad(&e.to_string()))?;
        if proof.len() > 63 {
            return Err(WitnessRefusal::bad("consistency proof is too long"));
        }
        let parsed = crate::note::Note::parse(note.as_bytes(), &Limits::default())
            .map_err(|e| WitnessRefusal::bad(&e.to_string()))?;
        let checkpoint =
            Checkpoint::parse(parsed.text()).map_err(|e| WitnessRefusal::bad(&e.to_string()))?;
        let known = !self.logs.is_empty()
            && parsed.signatures().iter().any(|s| {
                s.name == checkpoint.origin && self.logs.find(&s.name, s.key_id).is_some()
            });
        if !known {
            return Err(WitnessRefusal::new(
                StatusCode::NOT_FOUND,
                ErrorCode::LedgerUnknownLog,
                format!(
                    "this witness does not follow a log named {:?}",
                    checkpoint.origin
                ),
            ));
        }
        let verified = parsed
            .verify(&self.logs)
            .map_err(|e| WitnessRefusal::new(StatusCode::FORBIDDEN, e.code(), e.to_string()))?;
        if !verified
            .verified
            .iter()
            .any(|s| s.name == checkpoint.origin)
        {
            return Err(WitnessRefusal::new(
                StatusCode::FORBIDDEN,
                ErrorCode::LedgerNoteUnverified,
                "the checkpoint is not signed by its log".into(),
            ));
        }

        let internal =
            |e: Error| WitnessRefusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.code, e.message);
        let mut tx = self.db.begin_write().await.map_err(internal)?;
        let row = sqlx::query("SELECT size, root FROM witness_log WHERE origin = $1")
            .bind(checkpoint.origin.clone())
            .fetch_optional(&mut *tx)
            .await
            .db("reading the witnessed log")
            .map_err(internal)?;
        let (size, root) = match row {
            Some(r) => {
                let size: i64 = r
                    .try_get(0)
                    .db("reading the witnessed log")
                    .map_err(internal)?;
                let root: Vec<u8> = r
                    .try_get(1)
                    .db("reading the witnessed log")
                    .map_err(internal)?;
                let root = Hash::from_slice(&root).map_err(|e| internal(e.into()))?;
                (size as u64, root)
            }
            None => (0, merkle::root_from_leaf_hashes(&[])),
        };
        if old != size {
            return Err(WitnessRefusal::Conflict(size));
        }
        if checkpoint.size < size {
            return Err(WitnessRefusal::bad(
                "the checkpoint is older than the one last cosigned",
            ));
        }
        let consistent = if size == 0 {
            proof.is_empty()
        } else if checkpoint.size == size {
            proof.is_empty() && checkpoint.root == root
        } else {
            proof::verify_consistency(size, checkpoint.size, &root, &checkpoint.root, &proof)
                .is_ok()
        };
        if !consistent {
            tracing::error!(origin = %checkpoint.origin, from = size, to = checkpoint.size, "log is inconsistent");
            return Err(WitnessRefusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::LedgerProofInvalid,
                format!(
                    "checkpoint of size {} is not consistent with the size {size} this witness cosigned",
                    checkpoint.size
                ),
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        sqlx::query(
            "INSERT INTO witness_log (origin, size, root, cosigned_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, \
             cosigned_ms = excluded.cosigned_ms",
        )
        .bind(checkpoint.origin.clone())
        .bind(checkpoint.size as i64)
        .bind(checkpoint.root.as_bytes().to_vec())
        .bind((now * 1000) as i64)
        .execute(&mut *tx)
        .await
        .db("remembering the checkpoint")
        .map_err(internal)?;
        // Sign before committing: a failure leaves the old state, and the log retries.
        let sig = self
            .signer
            .cosign(&checkpoint.to_text(), now)
            .map_err(|e| internal(e.into()))?;
        tx.commit().await.db("committing").map_err(internal)?;
        Ok(sig.to_line())
    }
}

/// Why a witness did not cosign.
#[derive(Debug)]
pub enum WitnessRefusal {
    /// The log's idea of the previous size is wrong; here is the right one.
    Conflict(u64),
    Other(StatusCode, Error),
}

impl WitnessRefusal {
    fn new(status: StatusCode, code: ErrorCode, message: String) -> Self {
        WitnessRefusal::Other(status, Error::new(code, message))
    }
    fn bad(message: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::LedgerWitnessRequest,
            message.to_owned(),
        )
    }
}

impl IntoResponse for WitnessRefusal {
    fn into_response(self) -> Response {
        match self {
            WitnessRefusal::Conflict(size) => (
                StatusCode::CONFLICT,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/x.tlog.size"),
                    ),
                    (
                        axum::http::HeaderName::from_static("x-xalo-raw-error"),
                        HeaderValue::from_static("1"),
                    ),
                ],
                format!("{size}\n"),
            )
                .into_response(),
            WitnessRefusal::Other(status, e) => {
                let mut r = e.into_response();
                *r.status_mut() = status;
                r
            }
        }
    }
}

/// Open the witness the configuration describes.
pub async fn open_witness(config: &Config) -> Result<Witness, Error> {
    let settings: WitnessSettings = config.role_settings("witness")?;
    let name = settings.name(config);
    let skey = keys::load_or_create(&settings.key_file(config), || {
        CosignatureSigner::generate(&name)
            .map(|s| s.signer_key())
            .map_err(Error::from)
    })?;
    let signer = CosignatureSigner::from_signer_key(&skey)?;
    let db = Database::connect(&config.database_url("witness")).await?;
    Witness::open(db, signer, &settings.logs).await
}

/// Serve a witness on `listener`.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let witness = open_witness(&config).await?;
    serve_witness(witness, &config, listener)
}

/// Serve an opened witness (the demo opens it first to learn its key).
pub fn serve_witness(
    witness: Witness,
    config: &Config,
    listener: TcpListener,
) -> Result<ServerHandle, Error> {
    let db = witness.db.clone();
    let router = Router::new()
        .route(
            "/add-checkpoint",
            post(add_checkpoint).layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST)),
        )
        .route("/key", get(key))
        .with_state(Arc::new(witness));
    Server::new("witness", router, &config.http)
        .health_check(db.health_check())
        .spawn(listener)
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: axum::body::Bytes) -> Response {
    match w.add_checkpoint(&body).await {
        Ok(line) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            line,
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn key(State(w): State<Arc<Witness>>) -> String {
    format!("{}\n", w.verifier_key())
}
