//! One exchange as evidence: every record this gateway logged under an X-Road-Id (the
//! request and answer of each side it played, with heads, bodies or their hashes,
//! signatures, the batch time-stamp that covers them and the ledger index) packed into an
//! ASiC-E container and sealed by the gateway's owner with its signing ("seal") key
//! (CAdES-T: TSA time-stamp and OCSP embedded), so `xalo verify` checks it offline.
//!
//! The administration routes of the message log (evidence, archives, the data tracker)
//! are mounted from here.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};
use xalo_trust::container::{self, DataFile};

use crate::certificate_status::Authorities;
use crate::gateway::GatewayState;
use crate::log_encryption::{self, LogKey};
use crate::nation::GatewayAdmin;

/// The routes, behind the administration token.
pub(crate) fn admin_routes() -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/api/v1/message-log/evidence", get(evidence))
        .route("/api/v1/message-log/archive", get(crate::archive::archive))
        .route(
            "/api/v1/message-log/users/{user_id}",
            get(crate::data_tracker::by_user),
        )
}

/// One row of the message log, as stored.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub id: i64,
    pub logged_unix: i64,
    pub side: String,
    pub x_road_id: String,
    pub client: String,
    pub service: String,
    pub request_hash: String,
    pub request_head: Vec<u8>,
    pub request_signature: String,
    pub request_body: Option<Vec<u8>>,
    pub response_hash: Option<String>,
    pub response_head: Option<Vec<u8>>,
    pub response_signature: Option<String>,
    pub response_body: Option<Vec<u8>>,
    pub status: i64,
    pub ledger_index: Option<i64>,
}

/// The columns [`LogRecord::from_row`] reads, in its order (a macro, for `concat!`: queries
/// are static strings).
macro_rules! record_columns {
    () => {
        "id, logged_unix, side, x_road_id, client, service, request_hash, request_head, \
         request_signature, request_body, response_hash, response_head, response_signature, \
         response_body, status, ledger_index"
    };
}
pub(crate) use record_columns;

impl LogRecord {
    pub(crate) fn from_row(r: &xalo_store::sqlx::any::AnyRow) -> Result<LogRecord, Error> {
        let what = "reading the message log";
        Ok(LogRecord {
            id: r.try_get(0).db(what)?,
            logged_unix: r.try_get(1).db(what)?,
            side: r.try_get(2).db(what)?,
            x_road_id: r.try_get(3).db(what)?,
            client: r.try_get(4).db(what)?,
            service: r.try_get(5).db(what)?,
            request_hash: r.try_get(6).db(what)?,
            request_head: r.try_get(7).db(what)?,
            request_signature: r.try_get(8).db(what)?,
            request_body: r.try_get(9).db(what)?,
            response_hash: r.try_get(10).db(what)?,
            response_head: r.try_get(11).db(what)?,
            response_signature: r.try_get(12).db(what)?,
            response_body: r.try_get(13).db(what)?,
            status: r.try_get(14).db(what)?,
            ledger_index: r.try_get(15).db(what)?,
        })
    }

    /// A header's value in the logged request head (`name:value` lines).
    pub fn request_header(&self, name: &str) -> Option<String> {
        header_in(&self.request_head, name)
    }

    /// Method and target from the head's first line (`xalo-request/1 METHOD TARGET`).
    pub fn request_line(&self) -> (String, String) {
        request_line_in(&self.request_head)
    }
}

/// Method and target from a logged request head's first line.
pub(crate) fn request_line_in(head: &[u8]) -> (String, String) {
    let first = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let text = String::from_utf8_lossy(first);
    let mut parts = text.splitn(3, ' ').skip(1);
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    (method, target)
}

pub(crate) fn header_in(head: &[u8], name: &str) -> Option<String> {
    head.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let text = std::str::from_utf8(line).ok()?;
        let (n, v) = text.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.to_owned())
    })
}

/// The records with this X-Road-Id, oldest first.
pub async fn records(db: &Database, x_road_id: &str) -> Result<Vec<LogRecord>, Error> {
    xalo_store::sqlx::query(concat!(
        "SELECT ",
        record_columns!(),
        " FROM gateway_message_log WHERE x_road_id = $1 ORDER BY id"
    ))
    .bind(x_road_id)
    .fetch_all(db.pool())
    .await
    .db("reading the message log")?
    .iter()
    .map(LogRecord::from_row)
    .collect()
}

/// The batch time-stamp covering the record `id`, if it has been stamped.
pub(crate) async fn covering_stamp(
    db: &Database,
    id: i64,
) -> Result<Option<crate::message_log::BatchTimestamp>, Error> {
    let what = "reading the message log time-stamps";
    let row = xalo_store::sqlx::query(
        "SELECT first_id, last_id, digest, token, stamped_unix FROM gateway_message_timestamp \
         WHERE first_id <= $1 AND last_id >= $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(db.pool())
    .await
    .db(what)?;
    row.map(|r| {
        Ok(crate::message_log::BatchTimestamp {
            first_id: r.try_get(0).db(what)?,
            last_id: r.try_get(1).db(what)?,
            digest: r.try_get(2).db(what)?,
            token: r.try_get(3).db(what)?,
            stamped_unix: r.try_get(4).db(what)?,
        })
    })
    .transpose()
}

/// The lines a batch time-stamp's digest is computed over, when they can be rebuilt
/// exactly (their SHA-256 equals the stored digest); none otherwise.
async fn batch_lines(
    db: &Database,
    stamp: &crate::message_log::BatchTimestamp,
) -> Result<Option<Vec<u8>>, Error> {
    let rows = xalo_store::sqlx::query(
        "SELECT id, request_hash, request_signature, COALESCE(response_hash, ''), \
         COALESCE(response_signature, '') FROM gateway_message_log \
         WHERE id >= $1 AND id <= $2 ORDER BY id",
    )
    .bind(stamp.first_id)
    .bind(stamp.last_id)
    .fetch_all(db.pool())
    .await
    .db("reading the message log")?;
    let mut out = Vec::new();
    for r in &rows {
        let id: i64 = r.try_get(0).db("id")?;
        out.extend_from_slice(id.to_string().as_bytes());
        for col in 1..5 {
            let text: String = r.try_get(col).db("reading the message log")?;
            out.push(b'\t');
            out.extend_from_slice(text.as_bytes());
        }
        out.push(b'\n');
    }
    // Records swept by retention, or a changed digest format, make the lines unprovable.
    Ok((hex::encode(sha2::Sha256::digest(&out)) == stamp.digest).then_some(out))
}

/// What `summary.json` says of one record.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordSummary {
    pub log_id: i64,
    pub side: String,
    pub logged_unix: i64,
    pub client: String,
    pub service: String,
    pub status: i64,
    pub request_hash: String,
    pub response_hash: Option<String>,
    /// `full` (bodies included) or `metadata` (the hashes, which the signatures cover).
    pub body_logging: String,
    pub ledger_index: Option<i64>,
    pub timestamp: Option<StampSummary>,
    /// The container's files of this record.
    pub files: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StampSummary {
    pub first_id: i64,
    pub last_id: i64,
    /// SHA-256 (hex) the token's message imprint covers.
    pub digest: String,
    pub stamped_unix: i64,
    pub token_file: String,
    /// The exact lines hashed into `digest`, when they could be included.
    pub batch_file: Option<String>,
}

/// `summary.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EvidenceSummary {
    pub format: String,
    pub gateway: String,
    pub x_road_id: String,
    pub exported_unix: i64,
    /// SHA-256 of the certificate that seals the container.
    pub sealed_by: String,
    pub records: Vec<RecordSummary>,
}

/// The container's data files for `records`, `summary.json` first.
pub async fn data_files(
    db: &Database,
    key: Option<&LogKey>,
    gateway: &str,
    sealed_by: &str,
    x_road_id: &str,
    records: &[LogRecord],
) -> Result<Vec<DataFile>, Error> {
    let mut files: Vec<DataFile> = Vec::new();
    let mut summaries = Vec::new();
    for r in records {
        let dir = format!("{}-{}", r.side, r.id);
        let mut names = Vec::new();
        let mut add = |files: &mut Vec<DataFile>, name: String, bytes: Vec<u8>| {
            names.push(name.clone());
            files.push(DataFile { name, bytes });
        };
        add(
            &mut files,
            format!("{dir}/request-head.txt"),
            r.request_head.clone(),
        );
        add(
            &mut files,
            format!("{dir}/request-signature.txt"),
            r.request_signature.clone().into_bytes(),
        );
        if let Some(body) = &r.request_body {
            let plain =
                log_encryption::open_body(key, &r.side, &r.x_road_id, "request", body.clone())?;
            add(&mut files, format!("{dir}/request-body.bin"), plain);
        }
        if let Some(head) = &r.response_head {
            add(&mut files, format!("{dir}/response-head.txt"), head.clone());
        }
        if let Some(sig) = &r.response_signature {
            add(
                &mut files,
                format!("{dir}/response-signature.txt"),
                sig.clone().into_bytes(),
            );
        }
        if let Some(body) = &r.response_body {
            let plain =
                log_encryption::open_body(key, &r.side, &r.x_road_id, "response", body.clone())?;
            add(&mut files, format!("{dir}/response-body.bin"), plain);
        }
        let timestamp = match covering_stamp(db, r.id).await? {
            Some(stamp) => {
                let token_file = format!("{dir}/timestamp.tsr");
                add(&mut files, token_file.clone(), stamp.token.clone());
                let batch_name = format!("batch-{}-{}.tsv", stamp.first_id, stamp.last_id);
                let batch_file = if files.iter().any(|f| f.name == batch_name) {
                    Some(batch_name)
                } else if let Some(lines) = batch_lines(db, &stamp).await? {
                    files.push(DataFile {
                        name: batch_name.clone(),
                        bytes: lines,
                    });
                    Some(batch_name)
                } else {
                    None
                };
                Some(StampSummary {
                    first_id: stamp.first_id,
                    last_id: stamp.last_id,
                    digest: stamp.digest,
                    stamped_unix: stamp.stamped_unix,
                    token_file,
                    batch_file,
                })
            }
            None => None,
        };
        summaries.push(RecordSummary {
            log_id: r.id,
            side: r.side.clone(),
            logged_unix: r.logged_unix,
            client: r.client.clone(),
            service: r.service.clone(),
            status: r.status,
            request_hash: r.request_hash.clone(),
            response_hash: r.response_hash.clone(),
            body_logging: if r.request_body.is_some() || r.response_body.is_some() {
                "full".into()
            } else {
                "metadata".into()
            },
            ledger_index: r.ledger_index,
            timestamp,
            files: names,
        });
    }
    let summary = EvidenceSummary {
        format: "xalo-exchange-evidence/1".into(),
        gateway: gateway.to_owned(),
        x_road_id: x_road_id.to_owned(),
        exported_unix: crate::unix_now(),
        sealed_by: sealed_by.to_owned(),
        records: summaries,
    };
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    files.insert(
        0,
        DataFile {
            name: "summary.json".into(),
            bytes: json,
        },
    );
    Ok(files)
}

/// The signing certificate's issuing CA, then the CAs above it up to the root, from the
/// global configuration.
fn chain_of(certificate: &[u8], authorities: &Authorities) -> Result<Vec<Vec<u8>>, Error> {
    let mut chain: Vec<Vec<u8>> = Vec::new();
    let mut current = xalo_trust::authority::parse_certificate(certificate)?;
    // A short bound: the trust service's hierarchy is a root and one level of CAs.
    for _ in 0..4 {
        let Some(issuer) = authorities.issuer_of(&current) else {
            break;
        };
        if chain.contains(&issuer) {
            break;
        }
        let parsed = xalo_trust::authority::parse_certificate(&issuer)?;
        let self_signed = parsed.tbs_certificate.subject == parsed.tbs_certificate.issuer;
        chain.push(issuer);
        if self_signed {
            return Ok(chain);
        }
        current = parsed;
    }
    if chain.is_empty() {
        return Err(Error::new(
            ErrorCode::ExchCertificate,
            "the signing certificate's issuer is not in the global configuration",
        ));
    }
    Ok(chain)
}

/// The sealed container of the exchange `x_road_id`.
pub async fn export(state: &GatewayState, x_road_id: &str) -> Result<Vec<u8>, Error> {
    let db = state.log.database();
    let found = records(db, x_road_id).await?;
    if found.is_empty() {
        return Err(Error::new(
            ErrorCode::ExchUnknownMessage,
            format!("the message log has no message {x_road_id}"),
        ));
    }
    let conf = state.conf.get()?;
    let tsa = crate::health::tsa_url(&conf).ok_or_else(|| {
        Error::new(
            ErrorCode::ExchGlobalConfInvalid,
            "the global configuration names no time-stamping authority",
        )
    })?;
    let certificate = state.signer.certificate();
    let chain = chain_of(certificate, &Authorities::of(&conf))?;
    let key = state.log.encryption_key();
    let files = data_files(
        db,
        key.as_deref(),
        &state.name,
        &crate::fingerprint(certificate),
        x_road_id,
        &found,
    )
    .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let pending = container::prepare(None, files, certificate, &chain, &http).await?;
    let signature = state.signer.sign(&pending.to_be_signed()?)?;
    pending.finish(&signature, &tsa, &http).await
}

#[derive(Deserialize)]
struct EvidenceQuery {
    x_road_id: String,
}

async fn evidence(
    State(s): State<Arc<GatewayState>>,
    Query(q): Query<EvidenceQuery>,
) -> Result<Response, Error> {
    let bytes = export(&s, &q.x_road_id).await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, container::MIMETYPE),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"evidence.asice\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Percent-encode a query value.
pub(crate) fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl GatewayAdmin {
    /// The evidence container of the exchange `x_road_id` (ASiC-E bytes).
    pub async fn evidence(&self, x_road_id: &str) -> Result<Vec<u8>, Error> {
        self.get_bytes(&format!(
            "/api/v1/message-log/evidence?x_road_id={}",
            query_value(x_road_id)
        ))
        .await
    }
}
