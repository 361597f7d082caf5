//! Archives of the message log as hash-linked files: oldest records first, at most N per
//! file, each file a JSON header line naming the SHA-256 of the file before it (zeros for
//! the first) and then one JSON line per record and per batch time-stamp of its records.
//! A changed, removed or reordered file breaks the chain; the last file's hash, which the
//! export reports, pins the end. Bodies are archived as stored: sealed bodies stay sealed
//! under the member's key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};

use crate::evidence_export::{LogRecord, query_value, record_columns};
use crate::gateway::GatewayState;
use crate::nation::GatewayAdmin;

pub const FORMAT: &str = "xalo-message-log-archive/1";
/// What a first file names as the hash before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Most records one file may hold.
pub const MAX_RECORDS: i64 = 10_000;

fn broken(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::ExchArchiveChain, m.into())
}

/// A file's first line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub format: String,
    pub gateway: String,
    /// 1 for the first file, one more for each next.
    pub sequence: u64,
    /// SHA-256 (hex) of the previous file, or [`GENESIS`].
    pub previous: String,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub records: u64,
}

/// A logged record as archived (binary fields in base64).
#[derive(Debug, Serialize, Deserialize)]
pub struct ArchivedRecord {
    pub id: i64,
    pub logged_unix: i64,
    pub side: String,
    pub x_road_id: String,
    pub client: String,
    pub service: String,
    pub request_hash: String,
    pub request_head: String,
    pub request_signature: String,
    pub request_body: Option<String>,
    pub response_hash: Option<String>,
    pub response_head: Option<String>,
    pub response_signature: Option<String>,
    pub response_body: Option<String>,
    pub status: i64,
    pub ledger_index: Option<i64>,
}

impl From<LogRecord> for ArchivedRecord {
    fn from(r: LogRecord) -> Self {
        let b = |v: &[u8]| crate::b64().encode(v);
        ArchivedRecord {
            id: r.id,
            logged_unix: r.logged_unix,
            side: r.side,
            x_road_id: r.x_road_id,
            client: r.client,
            service: r.service,
            request_hash: r.request_hash,
            request_head: b(&r.request_head),
            request_signature: r.request_signature,
            request_body: r.request_body.as_deref().map(b),
            response_hash: r.response_hash,
            response_head: r.response_head.as_deref().map(b),
            response_signature: r.response_signature,
            response_body: r.response_body.as_deref().map(b),
            status: r.status,
            ledger_index: r.ledger_index,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ArchivedStamp {
    pub first_id: i64,
    pub last_id: i64,
    pub digest: String,
    /// The RFC 3161 token, base64 DER.
    pub token: String,
    pub stamped_unix: i64,
}

/// One line after the header.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Record(Box<ArchivedRecord>),
    Timestamp(ArchivedStamp),
}

fn to_line(value: &impl Serialize) -> Result<Vec<u8>, Error> {
    let mut v =
        serde_json::to_vec(value).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    v.push(b'\n');
    Ok(v)
}

/// One archive file: the records after `after`, at most `limit`, chained to `previous`.
pub async fn file(
    db: &Database,
    gateway: &str,
    sequence: u64,
    previous: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<u8>, Error> {
    let what = "archiving the message log";
    let records: Vec<LogRecord> = xalo_store::sqlx::query(concat!(
        "SELECT ",
        record_columns!(),
        " FROM gateway_message_log WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit.clamp(1, MAX_RECORDS))
    .fetch_all(db.pool())
    .await
    .db(what)?
    .iter()
    .map(LogRecord::from_row)
    .collect::<Result<_, _>>()?;
    let header = Header {
        format: FORMAT.into(),
        gateway: gateway.to_owned(),
        sequence,
        previous: previous.to_owned(),
        first_id: records.first().map(|r| r.id),
        last_id: records.last().map(|r| r.id),
        records: records.len() as u64,
    };
    let mut out = to_line(&header)?;
    if let (Some(first), Some(last)) = (header.first_id, header.last_id) {
        let stamps = xalo_store::sqlx::query(
            "SELECT first_id, last_id, digest, token, stamped_unix FROM gateway_message_timestamp \
             WHERE last_id >= $1 AND first_id <= $2 ORDER BY id",
        )
        .bind(first)
        .bind(last)
        .fetch_all(db.pool())
        .await
        .db(what)?;
        for r in records {
            out.extend(to_line(&Line::Record(Box::new(r.into())))?);
        }
        for s in stamps {
            let token: Vec<u8> = s.try_get(3).db(what)?;
            out.extend(to_line(&Line::Timestamp(ArchivedStamp {
                first_id: s.try_get(0).db(what)?,
                last_id: s.try_get(1).db(what)?,
                digest: s.try_get(2).db(what)?,
                token: crate::b64().encode(token),
                stamped_unix: s.try_get(4).db(what)?,
            }))?);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
pub(crate) struct ArchiveQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_records")]
    records: i64,
    #[serde(default = "genesis")]
    previous: String,
    #[serde(default = "first_sequence")]
    sequence: u64,
}

fn default_records() -> i64 {
    1000
}
fn genesis() -> String {
    GENESIS.into()
}
fn first_sequence() -> u64 {
    1
}

pub(crate) async fn archive(
    State(s): State<Arc<GatewayState>>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, Error> {
    if q.previous.len() != 64 || !q.previous.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::new(
            ErrorCode::HttpBadRequest,
            "previous must be a SHA-256 in hex",
        ));
    }
    let bytes = file(
        s.log.database(),
        &s.name,
        q.sequence,
        &q.previous.to_ascii_lowercase(),
        q.after,
        q.records,
    )
    .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        bytes,
    )
        .into_response())
}

/// The name of the file `sequence` in an archive directory.
pub fn file_name(sequence: u64) -> String {
    format!("message-log-{sequence:06}.ndjson")
}

/// What an archive directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveState {
    pub files: u64,
    pub records: u64,
    /// SHA-256 (hex) of the last file, or [`GENESIS`] when there is none.
    pub last_hash: String,
    /// The newest archived record's log id (0: none).
    pub last_id: i64,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorCode::ServerIo, format!("{}: {e}", path.display()))
}

/// The archive files in `dir`, in sequence order.
fn listed(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(n) = name
            .strip_prefix("message-log-")
            .and_then(|n| n.strip_suffix(".ndjson"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            files.push((n, path));
        }
    }
    files.sort();
    Ok(files)
}

/// Check the chain of the archive in `dir`: sequences from 1 without gaps, each file's
/// header naming the previous file's hash, ids rising, the record count as stated, and,
/// when given, the last file's hash as `expected_last`.
pub fn verify_dir(dir: &Path, expected_last: Option<&str>) -> Result<ArchiveState, Error> {
    let mut state = ArchiveState {
        files: 0,
        records: 0,
        last_hash: GENESIS.into(),
        last_id: 0,
    };
    for (n, path) in listed(dir)? {
        let shown = path.display();
        if n != state.files + 1 {
            return Err(broken(format!(
                "{shown}: file {} is missing before it",
                state.files + 1
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let header: Header = lines
            .next()
            .and_then(|l| serde_json::from_slice(l).ok())
            .ok_or_else(|| broken(format!("{shown}: no archive header")))?;
        if header.format != FORMAT || header.sequence != n {
            return Err(broken(format!("{shown}: not file {n} of an archive")));
        }
        if header.previous != state.last_hash {
            return Err(broken(format!(
                "{shown}: names {} as the previous file's hash, but it is {}",
                header.previous, state.last_hash
            )));
        }
        let mut count = 0u64;
        let mut last = state.last_id;
        for line in lines {
            let line: Line = serde_json::from_slice(line)
                .map_err(|e| broken(format!("{shown}: unreadable line: {e}")))?;
            if let Line::Record(r) = line {
                let in_range = header.first_id.is_some_and(|f| r.id >= f)
                    && header.last_id.is_some_and(|l| r.id <= l);
                if r.id <= last || !in_range {
                    return Err(broken(format!("{shown}: record {} out of order", r.id)));
                }
                last = r.id;
                count += 1;
            }
        }
        if count != header.records || header.last_id.is_some_and(|l| l != last) {
            return Err(broken(format!(
                "{shown}: holds {count} records, its header says {}",
                header.records
            )));
        }
        state.files = n;
        state.records += count;
        state.last_id = last;
        state.last_hash = hex::encode(sha2::Sha256::digest(&bytes));
    }
    if let Some(expected) = expected_last
        && !expected.eq_ignore_ascii_case(&state.last_hash)
    {
        return Err(broken(format!(
            "the last file's hash is {}, not the expected {expected}",
            state.last_hash
        )));
    }
    Ok(state)
}

impl GatewayAdmin {
    /// One archive file from the gateway (see [`file`]).
    pub async fn archive_file(
        &self,
        sequence: u64,
        previous: &str,
        after: i64,
        records: i64,
    ) -> Result<Vec<u8>, Error> {
        self.get_bytes(&format!(
            "/api/v1/message-log/archive?sequence={sequence}&previous={}&after={after}&records={records}",
            query_value(previous)
        ))
        .await
    }
}

/// Export the log into `dir` as files of at most `records` records, continuing the chain
/// already there (which is verified first); returns the state after.
pub async fn export_to_dir(
    admin: &GatewayAdmin,
    dir: &Path,
    records: i64,
) -> Result<ArchiveState, Error> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut state = verify_dir(dir, None)?;
    loop {
        let sequence = state.files + 1;
        let bytes = admin
            .archive_file(sequence, &state.last_hash, state.last_id, records)
            .await?;
        let header: Header = bytes
            .split(|b| *b == b'\n')
            .next()
            .and_then(|l| serde_json::from_slice(l).ok())
            .ok_or_else(|| broken("the gateway's archive file has no header"))?;
        let Some(last_id) = header.last_id else {
            return Ok(state);
        };
        let path = dir.join(file_name(sequence));
        std::fs::write(&path, &bytes).map_err(|e| io(&path, e))?;
        state.files = sequence;
        state.records += header.records;
        state.last_id = last_id;
        state.last_hash = hex::encode(sha2::Sha256::digest(&bytes));
    }
}
