//! The citizen signs the application: the canonical JSON of the dossier (procedure,
//! agency, applicant, form data) with the name, type, size and SHA-256 of every
//! attachment, as one data file `hoso-{code}.json` in an ASiC-E container, signed with
//! Mobile-ID through the `id` role's remote signing service (PIN2 on the person's phone),
//! or with the ID card: the citizen downloads the same document, signs it with their
//! card's signing software (`xalo sign`, a DigiDoc client) and uploads the container
//! ([`store_signed`]).
//!
//! The container that comes back is believed only after it verifies against the national
//! trust anchors, holds exactly the document the portal computed, and is signed by the
//! dossier's applicant; then it is stored with the dossier (`xalo verify` accepts it as it
//! is). A signature covers one version of the application: when the form or the
//! attachments change, [`current`] no longer finds it and the citizen signs again.
//!
//! Table `portal_signature` (component `portal-signature`): one row per signing session.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_store::{Database, DbResultExt, Migration, Row};
use xalo_trust::chain::TrustAnchors;
use xalo_trust::container::{self, Container, DataFile};
use xalo_trust::remote::{MobileIdSigningRequest, RemoteSigningClient, SigningFile};

use crate::attachment::Attachment;
use crate::dossier::{self, Actor, Dossier, State};

const MIGRATIONS: &[Migration] = &[Migration::per_backend(
    1,
    "signing sessions and signed applications",
    "CREATE TABLE portal_signature (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dossier TEXT NOT NULL,
        session_id TEXT NOT NULL UNIQUE,
        document_sha256 TEXT NOT NULL,
        state TEXT NOT NULL,
        verification_code TEXT NOT NULL,
        container BLOB,
        signer TEXT,
        error TEXT,
        started_unix BIGINT NOT NULL,
        finished_unix BIGINT
    );
    CREATE INDEX portal_signature_dossier ON portal_signature (dossier);",
    "CREATE TABLE portal_signature (
        id BIGSERIAL PRIMARY KEY,
        dossier TEXT NOT NULL,
        session_id TEXT NOT NULL UNIQUE,
        document_sha256 TEXT NOT NULL,
        state TEXT NOT NULL,
        verification_code TEXT NOT NULL,
        container BYTEA,
        signer TEXT,
        error TEXT,
        started_unix BIGINT NOT NULL,
        finished_unix BIGINT
    );
    CREATE INDEX portal_signature_dossier ON portal_signature (dossier);",
)];

/// Create or update the signature table.
pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate("portal-signature", MIGRATIONS).await
}

/// `signing` in `[roles.portal]`: the remote signing service and what to trust.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    /// The `id` role's base URL.
    pub url: String,
    /// The portal's client at that service (HTTP Basic).
    pub client_id: String,
    pub secret: String,
    /// The trust service, whose national root (`/ca/root.crt`) signed containers must
    /// chain to.
    pub trust_url: String,
}

/// The portal's signing service and the anchors its containers must chain to.
#[derive(Clone)]
pub struct Signing {
    client: RemoteSigningClient,
    trust_url: String,
    anchors: std::sync::Arc<tokio::sync::OnceCell<TrustAnchors>>,
}

impl Signing {
    pub fn new(s: &SigningSettings) -> Result<Signing, Error> {
        Ok(Signing {
            client: RemoteSigningClient::new(&s.url, &s.client_id, &s.secret)?,
            trust_url: s.trust_url.trim_end_matches('/').to_owned(),
            anchors: Default::default(),
        })
    }

    /// The national root, fetched once from the trust service.
    async fn anchors(&self) -> Result<&TrustAnchors, Error> {
        self.anchors
            .get_or_try_init(|| async {
                let url = format!("{}/ca/root.crt", self.trust_url);
                let failed =
                    |e: String| Error::new(ErrorCode::SignatureUpstream, format!("{url}: {e}"));
                let r = reqwest::get(&url)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                if !r.status().is_success() {
                    return Err(failed(r.status().to_string()));
                }
                let der = r.bytes().await.map_err(|e| failed(e.to_string()))?;
                Ok(TrustAnchors::new(vec![der.to_vec()]))
            })
            .await
    }
}

/// `value` as canonical JSON: object keys sorted (by UTF-16 code units, as RFC 8785
/// orders them), no insignificant space, numbers and strings as serde_json writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(*k) {
                    write_canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The name of the signed data file of dossier `code`.
pub fn document_name(code: &str) -> String {
    let safe: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    format!("hoso-{safe}.json")
}

/// The application as the citizen signs it.
pub fn document(d: &Dossier, attachments: &[Attachment]) -> Vec<u8> {
    let files: Vec<Value> = attachments
        .iter()
        .map(|a| {
            serde_json::json!({
                "name": a.name,
                "media_type": a.media_type,
                "size": a.size,
                "sha256": a.sha256,
            })
        })
        .collect();
    canonical_json(&serde_json::json!({
        "type": "xalo.portal.application/v1",
        "dossier": d.code,
        "procedure": d.procedure_code,
        "agency": d.agency,
        "applicant": d.applicant,
        "applicant_name": d.applicant_name,
        "form": d.form,
        "attachments": files,
    }))
    .into_bytes()
}

/// The ETSI semantics identifier a person's certificate carries (`PNOVN-001203012345`).
fn serial_of(code: &str) -> String {
    let (country, number) = code.split_at(code.len().min(2));
    format!("PNO{country}-{number}")
}

fn signable(d: &Dossier) -> Result<(), Error> {
    if matches!(
        d.state,
        State::Draft | State::Submitted | State::SupplementRequested
    ) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::SignatureState,
            format!("a dossier in state {} is not signed any more", d.state),
        ))
    }
}

fn upstream(e: Error) -> Error {
    // The person's own refusals and timeouts keep their codes; the rest is the service's.
    if e.code.status() < 500 {
        e
    } else {
        Error::new(ErrorCode::SignatureUpstream, e.message)
    }
}

/// A started signature: show the code, then poll.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Started {
    pub session_id: String,
    pub verification_code: String,
}

/// Ask the applicant of `d` to sign its application on their phone (`phone`, E.164).
/// Callers checked that the signed-in person owns `d`.
pub async fn start(
    db: &Database,
    signing: &Signing,
    d: &Dossier,
    attachments: &[Attachment],
    phone: &str,
) -> Result<Started, Error> {
    signable(d)?;
    let doc = document(d, attachments);
    let file = DataFile {
        name: document_name(&d.code),
        bytes: doc.clone(),
    };
    let started = signing
        .client
        .start_mobile_id(&MobileIdSigningRequest {
            phone_number: phone.trim().to_owned(),
            national_identity_number: d.applicant.clone(),
            files: vec![SigningFile::from(&file)],
            container: None,
            display_text: Some(format!("Hồ sơ {}", d.code)),
            language: Some("VIE".into()),
        })
        .await
        .map_err(upstream)?;
    xalo_store::sqlx::query(
        "INSERT INTO portal_signature (dossier, session_id, document_sha256, state, \
         verification_code, started_unix) VALUES ($1, $2, $3, 'pending', $4, $5)",
    )
    .bind(&d.code)
    .bind(&started.session_id)
    .bind(hex::encode(Sha256::digest(&doc)))
    .bind(&started.verification_code)
    .bind(dossier::unix_now())
    .execute(db.pool())
    .await
    .db("recording a signing session")?;
    Ok(Started {
        session_id: started.session_id,
        verification_code: started.verification_code,
    })
}

/// The verification code of signing session `session_id` of dossier `code`, to show
/// again while the person has not answered.
pub async fn verification_code(
    db: &Database,
    code: &str,
    session_id: &str,
) -> Result<String, Error> {
    let what = "reading a signing session";
    xalo_store::sqlx::query(
        "SELECT verification_code FROM portal_signature WHERE session_id = $1 AND dossier = $2",
    )
    .bind(session_id)
    .bind(code)
    .fetch_optional(db.pool())
    .await
    .db(what)?
    .ok_or_else(|| Error::new(ErrorCode::PortalDossierNotFound, "no such signing session"))?
    .try_get(0)
    .db(what)
}

/// Where a signing session is.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Progress {
    /// Waiting for PIN2 on the phone.
    Running,
    /// Signed, checked and stored.
    Signed { signer: String },
}

/// Wait up to `timeout_ms` for signing session `session_id` of `d`; once the service has
/// the container, check it and store it with the dossier (and note it in the timeline).
pub async fn poll(
    db: &Database,
    signing: &Signing,
    d: &Dossier,
    attachments: &[Attachment],
    session_id: &str,
    timeout_ms: u64,
) -> Result<Progress, Error> {
    let what = "reading a signing session";
    let row = xalo_store::sqlx::query(
        "SELECT state, document_sha256, signer FROM portal_signature \
         WHERE session_id = $1 AND dossier = $2",
    )
    .bind(session_id)
    .bind(&d.code)
    .fetch_optional(db.pool())
    .await
    .db(what)?
    .ok_or_else(|| Error::new(ErrorCode::PortalDossierNotFound, "no such signing session"))?;
    let state: String = row.try_get(0).db(what)?;
    let doc_hash: String = row.try_get(1).db(what)?;
    if state == "signed" {
        let signer: Option<String> = row.try_get(2).db(what)?;
        return Ok(Progress::Signed {
            signer: signer.unwrap_or_default(),
        });
    }
    let status = match signing.client.poll(session_id, timeout_ms).await {
        Ok(s) => s,
        Err(e) => {
            fail(db, session_id, &e.message).await?;
            return Err(upstream(e));
        }
    };
    if status.state != "COMPLETE" {
        return Ok(Progress::Running);
    }
    let bytes = status
        .container
        .as_deref()
        .map(|c| STANDARD.decode(c.trim()))
        .transpose()
        .map_err(|_| Error::new(ErrorCode::SignatureUpstream, "the container is not base64"))?
        .ok_or_else(|| Error::new(ErrorCode::SignatureUpstream, "complete without a container"))?;
    let anchors = signing.anchors().await?;
    let signer = match check(anchors, d, attachments, &doc_hash, &bytes) {
        Ok(s) => s,
        Err(e) => {
            fail(db, session_id, &e.message).await?;
            return Err(e);
        }
    };
    let mut tx = db.begin_write().await?;
    let updated = xalo_store::sqlx::query(
        "UPDATE portal_signature SET state = 'signed', container = $1, signer = $2, \
         finished_unix = $3 WHERE session_id = $4 AND state = 'pending'",
    )
    .bind(bytes)
    .bind(&signer)
    .bind(dossier::unix_now())
    .bind(session_id)
    .execute(&mut *tx)
    .await
    .db("storing the signed application")?
    .rows_affected();
    tx.commit().await.db("storing the signed application")?;
    // Two polls may finish together; the timeline notes the signature once.
    if updated == 1 {
        let applicant: PersonalCode = d.applicant.parse()?;
        dossier::record_event(
            db,
            &d.code,
            &Actor::Citizen(applicant),
            "signed",
            Some(&format!("Mobile-ID: {signer}")),
        )
        .await?;
    }
    Ok(Progress::Signed { signer })
}

async fn fail(db: &Database, session_id: &str, why: &str) -> Result<(), Error> {
    xalo_store::sqlx::query(
        "UPDATE portal_signature SET state = 'failed', error = $1, finished_unix = $2 \
         WHERE session_id = $3 AND state = 'pending'",
    )
    .bind(why.chars().take(500).collect::<String>())
    .bind(dossier::unix_now())
    .bind(session_id)
    .execute(db.pool())
    .await
    .db("recording a failed signature")
    .map(|_| ())
}

/// Check a container for `d`: valid against the anchors, exactly the document whose hash
/// the session started with (and still the application's current one), signed by the
/// applicant alone. Returns the signer's name.
pub fn check(
    anchors: &TrustAnchors,
    d: &Dossier,
    attachments: &[Attachment],
    started_hash: &str,
    bytes: &[u8],
) -> Result<String, Error> {
    let invalid = |m: String| Error::new(ErrorCode::SignatureInvalid, m);
    let report = container::verify(bytes, anchors);
    if !report.is_valid() {
        return Err(invalid(format!("the container does not verify: {report}")));
    }
    let c = Container::read(bytes)?;
    let name = document_name(&d.code);
    let doc = document(d, attachments);
    match c.data_files.as_slice() {
        [f] if f.name == name && f.bytes == doc => {}
        _ => {
            return Err(invalid(
                "the container does not hold exactly this application".into(),
            ));
        }
    }
    if hex::encode(Sha256::digest(&doc)) != started_hash {
        return Err(invalid(
            "the application changed while it was being signed; sign it again".into(),
        ));
    }
    let expected = serial_of(&d.applicant);
    match report.signatures.as_slice() {
        [s] if s.signer_serial_number.as_deref() == Some(expected.as_str()) => {
            Ok(s.signer.clone().unwrap_or_default())
        }
        _ => Err(invalid(
            "the application is not signed by its applicant alone".into(),
        )),
    }
}

/// Store a container the citizen signed with their own software (ID card): checked as a
/// Mobile-ID one is, against the application as it is now. Returns the signer's name.
pub async fn store_signed(
    db: &Database,
    signing: &Signing,
    d: &Dossier,
    attachments: &[Attachment],
    bytes: &[u8],
) -> Result<String, Error> {
    signable(d)?;
    let doc_hash = hex::encode(Sha256::digest(document(d, attachments)));
    let anchors = signing.anchors().await?;
    let signer = check(anchors, d, attachments, &doc_hash, bytes)?;
    let now = dossier::unix_now();
    // The container's hash names the upload: the same file sent twice is stored once.
    let inserted = xalo_store::sqlx::query(
        "INSERT INTO portal_signature (dossier, session_id, document_sha256, state, \
         verification_code, container, signer, started_unix, finished_unix) \
         VALUES ($1, $2, $3, 'signed', '', $4, $5, $6, $7) ON CONFLICT (session_id) DO NOTHING",
    )
    .bind(&d.code)
    .bind(format!("upload-{}", hex::encode(Sha256::digest(bytes))))
    .bind(&doc_hash)
    .bind(bytes.to_vec())
    .bind(&signer)
    .bind(now)
    .bind(now)
    .execute(db.pool())
    .await
    .db("storing the signed application")?
    .rows_affected();
    if inserted == 1 {
        let applicant: PersonalCode = d.applicant.parse()?;
        dossier::record_event(
            db,
            &d.code,
            &Actor::Citizen(applicant),
            "signed",
            Some(&format!("ID-card: {signer}")),
        )
        .await?;
    }
    Ok(signer)
}

/// The application as a download, to sign with the citizen's own software.
pub fn document_download(d: &Dossier, attachments: &[Attachment]) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", document_name(&d.code)),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
        document(d, attachments),
    )
        .into_response()
}

/// The stored signature of the application as it is now (form and attachments), if any.
#[derive(Debug, Clone)]
pub struct Signed {
    pub signer: String,
    pub signed_unix: i64,
    /// The ASiC-E container, as `xalo verify` reads it.
    pub container: Vec<u8>,
}

/// The latest signature of `d` that covers its current form and attachments.
pub async fn current(
    db: &Database,
    d: &Dossier,
    attachments: &[Attachment],
) -> Result<Option<Signed>, Error> {
    let what = "reading the signed application";
    let hash = hex::encode(Sha256::digest(document(d, attachments)));
    let row = xalo_store::sqlx::query(
        "SELECT signer, finished_unix, container FROM portal_signature \
         WHERE dossier = $1 AND document_sha256 = $2 AND state = 'signed' \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(&d.code)
    .bind(hash)
    .fetch_optional(db.pool())
    .await
    .db(what)?;
    row.map(|r| {
        Ok(Signed {
            signer: r
                .try_get::<Option<String>, _>(0)
                .db(what)?
                .unwrap_or_default(),
            signed_unix: r.try_get::<Option<i64>, _>(1).db(what)?.unwrap_or(0),
            container: r
                .try_get::<Option<Vec<u8>>, _>(2)
                .db(what)?
                .unwrap_or_default(),
        })
    })
    .transpose()
}

/// A signed container as a download (`.asice`).
pub fn download(code: &str, container: Vec<u8>) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let name = document_name(code).replace(".json", ".asice");
    (
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.etsi.asic-e+zip".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
        container,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical() {
        let v = json!({"b": 1, "a": {"z": [1, "x", null], "é": true, "A": "hồ sơ"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"A":"hồ sơ","z":[1,"x",null],"é":true},"b":1}"#
        );
        assert_eq!(
            document_name("G01.07-261128-0001"),
            "hoso-G01.07-261128-0001.json"
        );
        assert_eq!(document_name("../x"), "hoso-..x.json");
        assert_eq!(serial_of("VN001203012345"), "PNOVN-001203012345");
    }
}
