//! The `ledger` role: the log over HTTP, in the C2SP tlog-tiles layout, with an API to add
//! entries and fetch proofs, and a background task that integrates, signs, gathers witness
//! cosignatures and time-stamps checkpoints.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode};
use xalo_store::{Database, PoolOptions};

use crate::entry::{Entry, EntryKind};
use crate::keys;
use crate::log::{Log, Published};
use crate::note::Ed25519Signer;
use crate::tile::TilePath;
use crate::witness_client::WitnessPeers;
use crate::{Hash, LedgerError};

/// Entries one request may add.
pub const MAX_ENTRIES_PER_REQUEST: usize = 10_000;
/// Largest body of an add request.
pub const MAX_ADD_BODY: usize = 32 * 1024 * 1024;

/// `[roles.ledger]` settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerSettings {
    /// The checkpoint origin (and log key name); default `PUBLIC_HOST/ledger`.
    pub origin: Option<String>,
    /// The log's secret key file; default `DATA_DIR/ledger/log.key`, made on first start.
    pub key_file: Option<PathBuf>,
    /// Milliseconds between checkpoints: the bound on how long an entry waits to be
    /// integrated and signed. Default 1000.
    pub checkpoint_interval_ms: Option<u64>,
    /// Witnesses asked to cosign every checkpoint.
    pub witnesses: Vec<WitnessPeer>,
    /// The RFC 3161 time-stamping authority that dates every checkpoint.
    pub tsa_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WitnessPeer {
    /// Base URL of the witness (its `add-checkpoint` endpoint is below it).
    pub url: String,
    /// The witness's cosignature verifier key (`name+hash+key`).
    pub key: String,
}

impl LedgerSettings {
    pub fn origin(&self, config: &Config) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| format!("{}/ledger", config.public_host))
    }
    pub fn key_file(&self, config: &Config) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("ledger").join("log.key"))
    }
}

/// Open the log the configuration describes (creating its key on first start).
pub async fn open_log(config: &Config) -> Result<Log, Error> {
    let settings: LedgerSettings = config.role_settings("ledger")?;
    let origin = settings.origin(config);
    let skey = keys::load_or_create(&settings.key_file(config), || {
        Ed25519Signer::generate(&origin)
            .map(|s| s.signer_key())
            .map_err(Error::from)
    })?;
    let signer = Ed25519Signer::from_signer_key(&skey).map_err(Error::from)?;
    let db = Database::connect_with(
        &config.database_url("ledger"),
        PoolOptions {
            power_loss_durable: true,
            ..PoolOptions::default()
        },
    )
    .await?;
    Log::open(db, &origin, signer).await
}

/// Serve the ledger on `listener`.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let settings: LedgerSettings = config.role_settings("ledger")?;
    let log = open_log(&config).await?;
    let interval = Duration::from_millis(settings.checkpoint_interval_ms.unwrap_or(1000).max(10));
    let peers = WitnessPeers::new(&settings.witnesses)?;
    let db = log.database().clone();
    let router = router(log.clone());
    let mut handle = Server::new("ledger", router, &config.http)
        .health_check(db.health_check())
        .spawn(listener)?;
    let task = tokio::spawn(publish_loop(log, peers, settings.tsa_url.clone(), interval));
    handle.attach(task.abort_handle());
    Ok(handle)
}

/// Integrate, sign, cosign and time-stamp at every tick, for as long as the server runs.
async fn publish_loop(log: Log, peers: WitnessPeers, tsa_url: Option<String>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_cosigned = None;
    let mut last_stamped = None;
    let http = reqwest::Client::new();
    loop {
        ticker.tick().await;
        match log.checkpoint().await {
            Ok(Some(published)) => {
                let size = published.checkpoint.size;
                if let Some(url) = &tsa_url
                    && last_stamped != Some(size)
                {
                    // The token covers the checkpoint text, which cosignatures never change.
                    let text = published.checkpoint.to_text();
                    match xalo_trust::timestamp::request_token(&http, url, text.as_bytes()).await {
                        Ok(token) => match log.set_time_stamp(size, &token).await {
                            Ok(()) => last_stamped = Some(size),
                            Err(e) => tracing::warn!(error = %e, "storing the time-stamp failed"),
                        },
                        Err(e) => tracing::warn!(error = %e, "time-stamping the checkpoint failed"),
                    }
                }
                if last_cosigned != Some(published.checkpoint.size) && !peers.is_empty() {
                    match peers.cosign(&log, &published).await {
                        Ok(note) => {
                            if let Err(e) = log.add_cosignatures(&published, note).await {
                                tracing::warn!(error = %e, "storing cosignatures failed");
                            }
                            last_cosigned = Some(published.checkpoint.size);
                        }
                        Err(e) => tracing::warn!(error = %e, "gathering cosignatures failed"),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "checkpoint failed"),
        }
    }
}

/// The ledger's HTTP API over `log`.
pub fn router(log: Log) -> Router {
    let state = Arc::new(log);
    Router::new()
        .route("/add", post(add).layer(DefaultBodyLimit::max(MAX_ADD_BODY)))
        .route("/checkpoint", get(checkpoint))
        .route("/checkpoints/{size}", get(checkpoint_text))
        .route("/checkpoints/{size}/timestamp", get(checkpoint_time_stamp))
        .route("/key", get(key))
        .route("/tile/{*path}", get(tile))
        .route("/proof/inclusion", get(inclusion))
        .route("/proof/consistency", get(consistency))
        .route("/entries/{index}", get(entry))
        .with_state(state)
}

type Shared = State<Arc<Log>>;

/// An entry in JSON: its kind and its data in base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryJson {
    pub kind: EntryKind,
    pub data: String,
}

impl EntryJson {
    pub fn from_entry(e: &Entry) -> EntryJson {
        EntryJson {
            kind: e.kind.clone(),
            data: STANDARD.encode(&e.data),
        }
    }
    pub fn to_entry(&self) -> Result<Entry, Error> {
        let data = STANDARD.decode(&self.data).map_err(|e| {
            Error::new(
                ErrorCode::HttpBadRequest,
                format!("entry data is not base64: {e}"),
            )
        })?;
        Entry::new(self.kind.clone(), data)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AddRequest {
    pub entries: Vec<EntryJson>,
}

/// The indexes given to the entries of one add request: `first..first+count`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddResponse {
    pub first: u64,
    pub count: u64,
}

async fn add(
    State(log): Shared,
    body: Result<axum::Json<AddRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::Json<AddResponse>, Error> {
    let axum::Json(req) = body.map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::HttpBodyTooLarge
        } else {
            ErrorCode::HttpBadRequest
        };
        Error::new(code, e.body_text())
    })?;
    if req.entries.len() > MAX_ENTRIES_PER_REQUEST {
        return Err(Error::new(
            ErrorCode::LedgerBatchTooLarge,
            format!(
                "{} entries in one request; at most {MAX_ENTRIES_PER_REQUEST}",
                req.entries.len()
            ),
        ));
    }
    let entries = req
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.to_entry()
                .map_err(|err| err.context(format!("entry {i}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let range = log.append(entries).await?;
    Ok(axum::Json(AddResponse {
        first: range.start,
        count: range.end - range.start,
    }))
}

fn text(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn checkpoint(State(log): Shared) -> Result<Response, Error> {
    let published: Option<Published> = log.published().borrow().clone();
    match published {
        Some(p) => {
            let mut r = text(p.note);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(r)
        }
        None => Err(Error::new(
            ErrorCode::HttpNotFound,
            "no checkpoint has been signed yet",
        )),
    }
}

/// The text of the checkpoint of `size` (what its time-stamp covers).
async fn checkpoint_text(State(log): Shared, Path(size): Path<u64>) -> Result<Response, Error> {
    let root = log.signed_root(size).await?.ok_or_else(|| {
        Error::new(
            ErrorCode::HttpNotFound,
            format!("no checkpoint of size {size} was signed"),
        )
    })?;
    let cp = crate::checkpoint::Checkpoint::new(log.origin().to_owned(), size, root)?;
    Ok(text(cp.to_text()))
}

/// The RFC 3161 token dating the checkpoint of `size`: check it with
/// `openssl ts -verify -token_in -in TOKEN -data CHECKPOINT -CAfile root.pem -untrusted tsa.pem`.
async fn checkpoint_time_stamp(
    State(log): Shared,
    Path(size): Path<u64>,
) -> Result<Response, Error> {
    let token = log.time_stamp(size).await?.ok_or_else(|| {
        Error::new(
            ErrorCode::HttpNotFound,
            format!("the checkpoint of size {size} has no time-stamp (yet)"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/pkcs7-mime; smime-type=signed-data"),
        )],
        token,
    )
        .into_response())
}

async fn key(State(log): Shared) -> Response {
    text(format!("{}\n", log.verifier_key()))
}

async fn tile(State(log): Shared, Path(path): Path<String>) -> Result<Response, Error> {
    let parsed = TilePath::parse(&format!("tile/{path}")).map_err(Error::from)?;
    let (body, id) = match parsed {
        TilePath::Hashes(id) => (log.hash_tile(id).await?, id),
        TilePath::Entries(id) => (log.entry_bundle(id).await?, id),
    };
    let body = body.ok_or_else(|| {
        Error::new(
            ErrorCode::HttpNotFound,
            format!("{} is not in the log yet", parsed.to_path()),
        )
    })?;
    // Full tiles never change; partial ones are superseded by wider ones, under other names.
    let cache = if id.is_full() {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=3600"
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct InclusionQuery {
    size: u64,
    index: Option<u64>,
    /// A leaf hash, hex or base64.
    hash: Option<String>,
}

/// A proof: the hashes in base64, with what it proves.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProofJson {
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first: Option<u64>,
    pub proof: Vec<String>,
}

/// A hash written in hex (64 digits) or base64.
pub fn parse_hash(s: &str) -> Result<Hash, Error> {
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex_decode(s)
    } else {
        STANDARD.decode(s).ok()
    };
    bytes
        .ok_or_else(|| Error::new(ErrorCode::LedgerHashLength, format!("{s:?} is not a hash")))
        .and_then(|b| Hash::from_slice(&b).map_err(Error::from))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn inclusion(
    State(log): Shared,
    Query(q): Query<InclusionQuery>,
) -> Result<axum::Json<ProofJson>, Error> {
    let index = match (q.index, &q.hash) {
        (Some(i), None) => i,
        (None, Some(h)) => {
            let hash = parse_hash(h)?;
            log.index_of(&hash).await?.ok_or_else(|| {
                Error::new(
                    ErrorCode::LedgerEntryNotFound,
                    format!("no entry has leaf hash {hash}"),
                )
            })?
        }
        _ => {
            return Err(Error::new(
                ErrorCode::HttpBadRequest,
                "give either index or hash, and size",
            ));
        }
    };
    if index >= q.size {
        return Err(LedgerError::IndexOutOfRange {
            index,
            size: q.size,
        }
        .into());
    }
    let proof = log.inclusion_proof(index, q.size).await?;
    Ok(axum::Json(ProofJson {
        size: q.size,
        index: Some(index),
        first: None,
        proof: proof.iter().map(Hash::to_base64).collect(),
    }))
}

#[derive(Debug, Deserialize)]
struct ConsistencyQuery {
    first: u64,
    second: u64,
}

async fn consistency(
    State(log): Shared,
    Query(q): Query<ConsistencyQuery>,
) -> Result<axum::Json<ProofJson>, Error> {
    let proof = log.consistency_proof(q.first, q.second).await?;
    Ok(axum::Json(ProofJson {
        size: q.second,
        index: None,
        first: Some(q.first),
        proof: proof.iter().map(Hash::to_base64).collect(),
    }))
}

async fn entry(State(log): Shared, Path(index): Path<u64>) -> Result<axum::Json<EntryJson>, Error> {
    let i = i64::try_from(index)
        .map_err(|_| Error::new(ErrorCode::HttpBadRequest, "index out of range"))?;
    let mut entries = log.entries(i, i.saturating_add(1)).await?;
    entries
        .pop()
        .map(|e| axum::Json(EntryJson::from_entry(&e)))
        .ok_or_else(|| Error::new(ErrorCode::LedgerEntryNotFound, format!("no entry {index}")))
}
