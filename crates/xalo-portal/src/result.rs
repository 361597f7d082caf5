//! The result of an approved dossier: a document sealed by the agency, evidenced in the
//! ledger and delivered to the citizen.
//!
//! [`Results::issue`] writes the result (an HTML certificate for people and the same
//! content as JSON for machines), seals both in an ASiC-E container with the agency's seal
//! certificate (an organisation certificate of the national CAs) and an RFC 3161
//! time-stamp, so `xalo verify` and any ASiC-E verifier accept it; stores it; records its
//! SHA-256 in the transparency ledger as `document.issued` (the ledger sees the hash, never
//! the content); and delivers it: a message in the citizen's portal mailbox with the
//! download, an e-mail through SMTP with the container attached, and a text in the SMS
//! outbox. Storage, mailbox message and outboxes are one transaction; the ledger and the
//! mail relay come after the commit, and what failed there is retried by
//! [`Results::retry`], never lost.
//!
//! Tables (migration component `portal_result`): `portal_document`, `portal_mailbox`,
//! `portal_email_outbox`, `portal_sms_outbox`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_ledger::client::{LedgerClient, Recorder};
use xalo_ledger::entry::Entry;
use xalo_store::{Database, DbResultExt, Migration, Row, sqlx};
use xalo_trust::container::{self, DataFile, SignOptions};
use xalo_trust::{Signer, SigningKey};
use xalo_web::{Lang, Page, Session};

use crate::payment::{unix_now, vietnam};
use crate::smtp::{self, Attachment, Mail, SmtpSettings};

/// The migration component of the result tables.
pub const COMPONENT: &str = "portal_result";
/// The ledger entry kind of an issued document.
pub const ENTRY_KIND: &str = "document.issued";

const MIGRATIONS: &[Migration] = &[
    Migration::per_backend(
        1,
        "result documents, mailbox, e-mail and SMS outboxes",
        "CREATE TABLE portal_document (
        document_id TEXT PRIMARY KEY,
        dossier_code TEXT NOT NULL UNIQUE,
        person_code TEXT NOT NULL,
        file_name TEXT NOT NULL,
        container BLOB NOT NULL,
        sha256 TEXT NOT NULL,
        issued_unix BIGINT NOT NULL,
        ledger_index BIGINT
    );
    CREATE INDEX portal_document_person ON portal_document (person_code);
    CREATE TABLE portal_mailbox (
        message_id TEXT PRIMARY KEY,
        person_code TEXT NOT NULL,
        dossier_code TEXT,
        subject_vi TEXT NOT NULL,
        subject_en TEXT NOT NULL,
        body_vi TEXT NOT NULL,
        body_en TEXT NOT NULL,
        document_id TEXT,
        created_unix BIGINT NOT NULL,
        read_unix BIGINT
    );
    CREATE INDEX portal_mailbox_person ON portal_mailbox (person_code, created_unix);
    CREATE TABLE portal_email_outbox (
        id TEXT PRIMARY KEY,
        person_code TEXT NOT NULL,
        address TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        document_id TEXT,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        last_error TEXT,
        created_unix BIGINT NOT NULL,
        sent_unix BIGINT
    );
    CREATE INDEX portal_email_outbox_status ON portal_email_outbox (status, created_unix);
    CREATE TABLE portal_sms_outbox (
        id TEXT PRIMARY KEY,
        person_code TEXT NOT NULL,
        phone TEXT NOT NULL,
        text TEXT NOT NULL,
        status TEXT NOT NULL,
        created_unix BIGINT NOT NULL,
        sent_unix BIGINT
    );
    CREATE INDEX portal_sms_outbox_status ON portal_sms_outbox (status, created_unix);",
        "CREATE TABLE portal_document (
        document_id TEXT PRIMARY KEY,
        dossier_code TEXT NOT NULL UNIQUE,
        person_code TEXT NOT NULL,
        file_name TEXT NOT NULL,
        container BYTEA NOT NULL,
        sha256 TEXT NOT NULL,
        issued_unix BIGINT NOT NULL,
        ledger_index BIGINT
    );
    CREATE INDEX portal_document_person ON portal_document (person_code);
    CREATE TABLE portal_mailbox (
        message_id TEXT PRIMARY KEY,
        person_code TEXT NOT NULL,
        dossier_code TEXT,
        subject_vi TEXT NOT NULL,
        subject_en TEXT NOT NULL,
        body_vi TEXT NOT NULL,
        body_en TEXT NOT NULL,
        document_id TEXT,
        created_unix BIGINT NOT NULL,
        read_unix BIGINT
    );
    CREATE INDEX portal_mailbox_person ON portal_mailbox (person_code, created_unix);
    CREATE TABLE portal_email_outbox (
        id TEXT PRIMARY KEY,
        person_code TEXT NOT NULL,
        address TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        document_id TEXT,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        last_error TEXT,
        created_unix BIGINT NOT NULL,
        sent_unix BIGINT
    );
    CREATE INDEX portal_email_outbox_status ON portal_email_outbox (status, created_unix);
    CREATE TABLE portal_sms_outbox (
        id TEXT PRIMARY KEY,
        person_code TEXT NOT NULL,
        phone TEXT NOT NULL,
        text TEXT NOT NULL,
        status TEXT NOT NULL,
        created_unix BIGINT NOT NULL,
        sent_unix BIGINT
    );
    CREATE INDEX portal_sms_outbox_status ON portal_sms_outbox (status, created_unix);",
    ),
    Migration::portable(
        2,
        "SMS delivery attempts",
        "ALTER TABLE portal_sms_outbox ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE portal_sms_outbox ADD COLUMN last_error TEXT;",
    ),
];

/// The ledger entry of an issued document: its id and the SHA-256 of the container the
/// citizen holds, so anyone with the file can find it in the ledger.
pub fn ledger_entry(document_id: &str, sha256_hex: &str) -> Result<Entry, Error> {
    Entry::new(
        ENTRY_KIND.parse()?,
        format!("{document_id} sha256:{sha256_hex}").into_bytes(),
    )
}

/// Create the result tables.
pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate(COMPONENT, MIGRATIONS).await
}

/// `[roles.portal.result]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResultSettings {
    /// PEM: the agency's seal certificate, then its issuing CA and the root.
    pub seal_certificate: Option<PathBuf>,
    /// PEM (PKCS#8): the seal's private key.
    pub seal_key: Option<PathBuf>,
    /// The time-stamping authority (the trust role's `/tsa`).
    pub tsa_url: Option<String>,
    /// The transparency ledger.
    pub ledger_url: Option<String>,
    pub smtp: Option<SmtpSettings>,
    /// The operator's SMS centre that sends the SMS outbox.
    pub sms: Option<SmsSettings>,
    /// The portal's public URL, for links in e-mails.
    pub public_url: Option<String>,
}

/// `[roles.portal.result.sms]`: the mobile operator's SMS centre (the `mobile-id` role's
/// `/sms-api/messages`) and the portal's sender token there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSettings {
    pub url: String,
    pub token: String,
}

#[derive(Debug, Clone, Copy)]
enum Outbox {
    Email,
    Sms,
}

/// What [`Results::retry`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retried {
    pub anchored: usize,
    pub emails: usize,
    pub sms: usize,
}

/// The agency's seal: who signs results, and where their time-stamps come from.
pub struct Seal {
    pub signer: Signer,
    /// The seal certificate's issuing CA, then the root.
    pub chain: Vec<Vec<u8>>,
    pub tsa_url: String,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("signer", &self.signer.subject())
            .field("tsa_url", &self.tsa_url)
            .finish_non_exhaustive()
    }
}

fn seal_error(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::ResultSeal, m)
}

impl Seal {
    /// A seal from a PEM chain (certificate first) and a PEM private key.
    pub fn from_pem(chain_pem: &str, key_pem: &str, tsa_url: &str) -> Result<Seal, Error> {
        let mut certificates = xalo_trust::authority::read_certificates(chain_pem.as_bytes())
            .map_err(|e| seal_error(format!("the seal certificate: {}", e.message)))?;
        if certificates.len() < 2 {
            return Err(seal_error(
                "the seal certificate file must hold the certificate and its CA chain",
            ));
        }
        let certificate = certificates.remove(0);
        let key = SigningKey::from_pem(key_pem)
            .map_err(|e| seal_error(format!("the seal key: {}", e.message)))?;
        Ok(Seal {
            signer: Signer::new(certificate, key)?,
            chain: certificates,
            tsa_url: tsa_url.to_owned(),
        })
    }

    fn load(settings: &ResultSettings) -> Result<Option<Seal>, Error> {
        let (Some(cert), Some(key)) = (&settings.seal_certificate, &settings.seal_key) else {
            return Ok(None);
        };
        let tsa = settings
            .tsa_url
            .as_deref()
            .ok_or_else(|| seal_error("[roles.portal.result] tsa_url is needed with a seal"))?;
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| seal_error(format!("{}: {e}", p.display())))
        };
        Seal::from_pem(&read(cert)?, &read(key)?, tsa).map(Some)
    }
}

/// What the result says.
#[derive(Debug, Clone)]
pub struct ResultRequest {
    pub dossier_code: String,
    pub person: PersonalCode,
    pub person_name: String,
    pub procedure_code: String,
    /// The document's title, e.g. "Trích lục khai sinh" / "Birth registration extract".
    pub title_vi: String,
    pub title_en: String,
    /// The agency that decided, as it signs.
    pub agency: String,
    /// The content, in order: label and value (Vietnamese labels, as the registers write).
    pub fields: Vec<(String, String)>,
    /// Where else to deliver: an e-mail address, a phone number.
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// An issued result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedResult {
    pub document_id: String,
    pub file_name: String,
    /// Hex SHA-256 of the container, as the ledger records it.
    pub sha256: String,
    /// Its index in the ledger, when the ledger took it at once.
    pub ledger_index: Option<u64>,
    pub message_id: String,
    /// Whether the e-mail left (false when there is none or it waits for a retry).
    pub emailed: bool,
}

/// A message in a citizen's mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailboxMessage {
    pub message_id: String,
    pub dossier_code: Option<String>,
    pub subject_vi: String,
    pub subject_en: String,
    pub body_vi: String,
    pub body_en: String,
    pub document_id: Option<String>,
    pub created_unix: i64,
    pub read_unix: Option<i64>,
}

impl MailboxMessage {
    pub fn subject(&self, lang: Lang) -> &str {
        match lang {
            Lang::Vi => &self.subject_vi,
            Lang::En => &self.subject_en,
        }
    }
    pub fn body(&self, lang: Lang) -> &str {
        match lang {
            Lang::Vi => &self.body_vi,
            Lang::En => &self.body_en,
        }
    }
}

/// A queued SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sms {
    pub id: String,
    pub person_code: String,
    pub phone: String,
    pub text: String,
    pub status: String,
    pub created_unix: i64,
}

/// The result issuer and the citizen's mailbox.
#[derive(Clone)]
pub struct Results {
    inner: Arc<Inner>,
    /// Where the pages' reads go (mailbox, documents, evidence): on SQLite the readers'
    /// pool, so that they do not queue behind writes on the one writer connection.
    reads: Database,
}

struct Inner {
    db: Database,
    seal: Option<Seal>,
    recorder: Option<Recorder>,
    smtp: Option<SmtpSettings>,
    sms: Option<SmsSettings>,
    public_url: Option<String>,
    http: reqwest::Client,
}

fn not_found(what: &str) -> Error {
    Error::new(
        ErrorCode::ResultNotFound,
        format!("no {what} for the signed-in person"),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A Vietnamese phone number: `+84` and 9 digits, or `0` and 9 digits.
pub fn normalise_phone(phone: &str) -> Result<String, Error> {
    let digits: String = phone
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.'))
        .collect();
    let national = digits
        .strip_prefix("+84")
        .or_else(|| digits.strip_prefix('0'))
        .filter(|n| n.len() == 9 && n.bytes().all(|b| b.is_ascii_digit()));
    national.map(|n| format!("+84{n}")).ok_or_else(|| {
        Error::new(
            ErrorCode::ResultBadAddress,
            format!("{phone:?} is not a Vietnamese phone number"),
        )
    })
}

impl Results {
    /// The issuer on the portal's database; without a seal it refuses to issue (the
    /// mailbox still works), without a ledger it stores hashes for later anchoring.
    pub async fn open(db: Database, settings: &ResultSettings) -> Result<Results, Error> {
        let seal = Seal::load(settings)?;
        Results::with_seal(db, seal, settings).await
    }

    /// The issuer with a seal made elsewhere (tests, a hardware key).
    pub async fn with_seal(
        db: Database,
        seal: Option<Seal>,
        settings: &ResultSettings,
    ) -> Result<Results, Error> {
        migrate(&db).await?;
        let recorder = match &settings.ledger_url {
            Some(url) => Some(Recorder::start(
                LedgerClient::new(url)?,
                64,
                Duration::from_millis(20),
            )),
            None => None,
        };
        if let Some(s) = &settings.smtp {
            smtp::check_address(&s.from)?;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        Ok(Results {
            reads: db.clone(),
            inner: Arc::new(Inner {
                db,
                seal,
                recorder,
                smtp: settings.smtp.clone(),
                sms: settings.sms.clone(),
                public_url: settings.public_url.clone(),
                http,
            }),
        })
    }

    fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Serve the pages' reads from `reads` (the portal's readers) instead of the writer.
    pub fn with_reader(mut self, reads: Database) -> Results {
        self.reads = reads;
        self
    }

    /// Seal, store, anchor and deliver the result of an approved dossier.
    pub async fn issue(&self, req: &ResultRequest) -> Result<IssuedResult, Error> {
        let seal =
            self.inner.seal.as_ref().ok_or_else(|| {
                seal_error("no agency seal is configured ([roles.portal.result])")
            })?;
        check_request(req)?;
        let email = req
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        if let Some(e) = email {
            smtp::check_address(e)?;
        }
        let phone = req
            .phone
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(normalise_phone)
            .transpose()?;
        if self.document_of_dossier(&req.dossier_code).await?.is_some() {
            return Err(Error::new(
                ErrorCode::ResultAlreadyIssued,
                format!("the result of {} was issued already", req.dossier_code),
            ));
        }
        let issued_unix = unix_now();
        let document_id = format!("KQ{}", hex::encode_upper(rand::random::<[u8; 10]>()));
        let files = vec![
            DataFile {
                name: "ket-qua.html".into(),
                bytes: render_html(req, &document_id, issued_unix).into_bytes(),
            },
            DataFile {
                name: "ket-qua.json".into(),
                bytes: render_json(req, &document_id, issued_unix)?,
            },
        ];
        let bytes = container::sign(
            None,
            files,
            &SignOptions {
                signer: &seal.signer,
                chain: &seal.chain,
                tsa_url: &seal.tsa_url,
                http: &self.inner.http,
            },
        )
        .await
        .map_err(|e| {
            Error::new(
                ErrorCode::ResultSigning,
                format!("sealing {}: {}: {}", req.dossier_code, e.code, e.message),
            )
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let file_name = format!("ket-qua-{}.asice", req.dossier_code);
        let message_id = format!("TB{}", hex::encode_upper(rand::random::<[u8; 10]>()));
        let person = req.person.to_string();
        let (subject_vi, subject_en) = (
            format!("Kết quả hồ sơ {}: {}", req.dossier_code, req.title_vi),
            format!("Result of dossier {}: {}", req.dossier_code, req.title_en),
        );
        let (body_vi, body_en) = (
            format!(
                "{} đã giải quyết hồ sơ {} của bạn. Kết quả ({}) được đóng dấu số của cơ quan và gắn dấu thời gian; bạn có thể tải về và kiểm tra chữ ký.",
                req.agency, req.dossier_code, req.title_vi
            ),
            format!(
                "{} has decided your dossier {}. The result ({}) carries the agency's digital seal and a time-stamp; you can download it and check the signature.",
                req.agency, req.dossier_code, req.title_en
            ),
        );
        let mut tx = self.db().begin_write().await?;
        sqlx::query(
            "INSERT INTO portal_document (document_id, dossier_code, person_code, file_name, \
             container, sha256, issued_unix) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(document_id.clone())
        .bind(req.dossier_code.clone())
        .bind(person.clone())
        .bind(file_name.clone())
        .bind(bytes.clone())
        .bind(sha256.clone())
        .bind(issued_unix)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            let e = xalo_store::db_error(e, "storing a result");
            if e.code == ErrorCode::StoreConflict {
                Error::new(ErrorCode::ResultAlreadyIssued, e.message)
            } else {
                e
            }
        })?;
        sqlx::query(
            "INSERT INTO portal_mailbox (message_id, person_code, dossier_code, subject_vi, \
             subject_en, body_vi, body_en, document_id, created_unix) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(message_id.clone())
        .bind(person.clone())
        .bind(req.dossier_code.clone())
        .bind(subject_vi.clone())
        .bind(subject_en)
        .bind(body_vi.clone())
        .bind(body_en)
        .bind(document_id.clone())
        .bind(issued_unix)
        .execute(&mut *tx)
        .await
        .db("writing to the mailbox")?;
        let mail_id = match email {
            Some(address) => {
                let id = format!("EM{}", hex::encode_upper(rand::random::<[u8; 10]>()));
                let link = self
                    .inner
                    .public_url
                    .as_deref()
                    .map(|u| format!("\n\n{}/mailbox", u.trim_end_matches('/')))
                    .unwrap_or_default();
                sqlx::query(
                    "INSERT INTO portal_email_outbox (id, person_code, address, subject, body, \
                     document_id, status, attempts, created_unix) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7)",
                )
                .bind(id.clone())
                .bind(person.clone())
                .bind(address.to_owned())
                .bind(subject_vi)
                .bind(format!("{body_vi}{link}"))
                .bind(document_id.clone())
                .bind(issued_unix)
                .execute(&mut *tx)
                .await
                .db("queuing an e-mail")?;
                Some(id)
            }
            None => None,
        };
        let sms_id = phone
            .as_ref()
            .map(|_| format!("SMS{}", hex::encode_upper(rand::random::<[u8; 10]>())));
        if let (Some(phone), Some(id)) = (phone, &sms_id) {
            sqlx::query(
                "INSERT INTO portal_sms_outbox (id, person_code, phone, text, status, created_unix) \
                 VALUES ($1, $2, $3, $4, 'queued', $5)",
            )
            .bind(id.clone())
            .bind(person.clone())
            .bind(phone)
            .bind(format!(
                "Ho so {} da co ket qua. Xem tai hop thu tren Cong dich vu cong.",
                req.dossier_code
            ))
            .bind(issued_unix)
            .execute(&mut *tx)
            .await
            .db("queuing an SMS")?;
        }
        tx.commit().await.db("committing a result")?;
        tracing::info!(dossier = %req.dossier_code, document_id, sha256, "result issued");
        let ledger_index = match self.anchor(&document_id, &sha256).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(document_id, error = %e, "result not yet anchored in the ledger; will retry");
                None
            }
        };
        let emailed = match &mail_id {
            Some(id) => match self.send_email(id).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(id, error = %e, "result e-mail not sent; will retry");
                    false
                }
            },
            None => false,
        };
        if let (Some(id), Some(_)) = (&sms_id, &self.inner.sms)
            && let Err(e) = self.send_sms(id).await
        {
            tracing::warn!(id, error = %e, "result SMS not sent; will retry");
        }
        Ok(IssuedResult {
            document_id,
            file_name,
            sha256,
            ledger_index,
            message_id,
            emailed,
        })
    }

    /// Record the document's hash in the ledger; `None` without a ledger.
    async fn anchor(&self, document_id: &str, sha256: &str) -> Result<Option<u64>, Error> {
        let Some(recorder) = &self.inner.recorder else {
            return Ok(None);
        };
        let index = recorder.record(ledger_entry(document_id, sha256)?).await?;
        sqlx::query("UPDATE portal_document SET ledger_index = $1 WHERE document_id = $2")
            .bind(index as i64)
            .bind(document_id.to_owned())
            .execute(self.db().pool())
            .await
            .db("noting a document's ledger index")?;
        Ok(Some(index))
    }

    async fn send_email(&self, id: &str) -> Result<(), Error> {
        let Some(settings) = &self.inner.smtp else {
            return Err(Error::new(
                ErrorCode::ResultSmtp,
                "no mail relay is configured ([roles.portal.result.smtp])",
            ));
        };
        let row = sqlx::query(
            "SELECT o.address, o.subject, o.body, d.file_name, d.container \
             FROM portal_email_outbox o LEFT JOIN portal_document d ON d.document_id = o.document_id \
             WHERE o.id = $1 AND o.status = 'queued'",
        )
        .bind(id.to_owned())
        .fetch_optional(self.db().pool())
        .await
        .db("reading an e-mail")?;
        let Some(row) = row else { return Ok(()) };
        let ctx = "reading an e-mail";
        let file_name: Option<String> = row.try_get(3).db(ctx)?;
        let container: Option<Vec<u8>> = row.try_get(4).db(ctx)?;
        let mail = Mail {
            to: row.try_get(0).db(ctx)?,
            subject: row.try_get(1).db(ctx)?,
            text: row.try_get(2).db(ctx)?,
            attachment: file_name.zip(container).map(|(name, bytes)| Attachment {
                name,
                mime_type: container::MIMETYPE.into(),
                bytes,
            }),
        };
        let sent = smtp::send(settings, &mail).await;
        let (status, error) = match &sent {
            Ok(()) => ("sent", None),
            Err(e) if e.code == ErrorCode::ResultBadAddress => ("failed", Some(e.to_string())),
            Err(e) => ("queued", Some(e.to_string())),
        };
        self.note_attempt(Outbox::Email, id, status, error, sent.is_ok())
            .await?;
        sent
    }

    /// Hand a queued SMS to the operator's SMS centre. The outbox id is the message id
    /// there, so a send repeated after a lost answer is shown once.
    async fn send_sms(&self, id: &str) -> Result<(), Error> {
        let Some(settings) = &self.inner.sms else {
            return Err(Error::new(
                ErrorCode::ResultSms,
                "no SMS centre is configured ([roles.portal.result.sms])",
            ));
        };
        let row = sqlx::query(
            "SELECT phone, text FROM portal_sms_outbox WHERE id = $1 AND status = 'queued'",
        )
        .bind(id.to_owned())
        .fetch_optional(self.db().pool())
        .await
        .db("reading an SMS")?;
        let Some(row) = row else { return Ok(()) };
        let phone: String = row.try_get(0).db("reading an SMS")?;
        let text: String = row.try_get(1).db("reading an SMS")?;
        let answer = self
            .inner
            .http
            .post(format!(
                "{}/sms-api/messages",
                settings.url.trim_end_matches('/')
            ))
            .bearer_auth(&settings.token)
            .json(&serde_json::json!({ "id": id, "to": phone, "text": text }))
            .send()
            .await;
        let sent = match answer {
            Ok(r) if r.status().is_success() => Ok(()),
            // The centre refused the message itself: sending it again cannot help.
            Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => Err((
                "failed",
                format!(
                    "the SMS centre refused it: {}",
                    r.text().await.unwrap_or_default()
                ),
            )),
            Ok(r) => Err(("queued", format!("the SMS centre answered {}", r.status()))),
            Err(e) => Err(("queued", format!("the SMS centre did not answer: {e}"))),
        };
        let (status, error) = match &sent {
            Ok(()) => ("sent", None),
            Err((status, e)) => (*status, Some(e.clone())),
        };
        self.note_attempt(Outbox::Sms, id, status, error, sent.is_ok())
            .await?;
        sent.map_err(|(_, e)| Error::new(ErrorCode::ResultSms, e))
    }

    /// Anchor documents the ledger has not taken yet and send queued e-mails and SMS.
    pub async fn retry(&self) -> Result<Retried, Error> {
        let mut anchored = 0;
        if self.inner.recorder.is_some() {
            let rows = sqlx::query(
                "SELECT document_id, sha256 FROM portal_document WHERE ledger_index IS NULL \
                 ORDER BY issued_unix LIMIT 200",
            )
            .fetch_all(self.db().pool())
            .await
            .db("reading unanchored documents")?;
            for r in rows {
                let id: String = r.try_get(0).db("reading unanchored documents")?;
                let hash: String = r.try_get(1).db("reading unanchored documents")?;
                if self.anchor(&id, &hash).await?.is_some() {
                    anchored += 1;
                }
            }
        }
        let mut emails = 0;
        if self.inner.smtp.is_some() {
            for id in self.queued(Outbox::Email).await? {
                if self.send_email(&id).await.is_ok() {
                    emails += 1;
                }
            }
        }
        let mut sms = 0;
        if self.inner.sms.is_some() {
            for id in self.queued(Outbox::Sms).await? {
                if self.send_sms(&id).await.is_ok() {
                    sms += 1;
                }
            }
        }
        Ok(Retried {
            anchored,
            emails,
            sms,
        })
    }

    /// Record one delivery attempt of message `id` of `outbox`.
    async fn note_attempt(
        &self,
        outbox: Outbox,
        id: &str,
        status: &str,
        error: Option<String>,
        sent: bool,
    ) -> Result<(), Error> {
        let sql = match outbox {
            Outbox::Email => {
                "UPDATE portal_email_outbox SET status = $1, attempts = attempts + 1, \
                 last_error = $2, sent_unix = $3 WHERE id = $4"
            }
            Outbox::Sms => {
                "UPDATE portal_sms_outbox SET status = $1, attempts = attempts + 1, \
                 last_error = $2, sent_unix = $3 WHERE id = $4"
            }
        };
        sqlx::query(sql)
            .bind(status.to_owned())
            .bind(error)
            .bind(sent.then(unix_now))
            .bind(id.to_owned())
            .execute(self.db().pool())
            .await
            .db("noting a delivery attempt")?;
        Ok(())
    }

    /// The oldest messages still queued in `outbox`, up to 100, leaving out those tried 20
    /// times.
    async fn queued(&self, outbox: Outbox) -> Result<Vec<String>, Error> {
        let sql = match outbox {
            Outbox::Email => {
                "SELECT id FROM portal_email_outbox WHERE status = 'queued' AND attempts < 20 \
                 ORDER BY created_unix LIMIT 100"
            }
            Outbox::Sms => {
                "SELECT id FROM portal_sms_outbox WHERE status = 'queued' AND attempts < 20 \
                 ORDER BY created_unix LIMIT 100"
            }
        };
        let rows = sqlx::query(sql)
            .fetch_all(self.db().pool())
            .await
            .db("reading queued messages")?;
        rows.iter()
            .map(|r| r.try_get(0).db("reading queued messages"))
            .collect()
    }

    /// Run [`Results::retry`] every `every`.
    pub fn spawn_retry(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let results = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
            loop {
                tick.tick().await;
                if let Err(e) = results.retry().await {
                    tracing::warn!(error = %e, "retrying results' ledger entries, e-mails and SMS failed");
                }
            }
        })
    }

    async fn document_of_dossier(&self, dossier_code: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT document_id FROM portal_document WHERE dossier_code = $1")
            .bind(dossier_code.to_owned())
            .fetch_optional(self.db().pool())
            .await
            .db("reading a document")?;
        row.map(|r| r.try_get(0).db("reading a document"))
            .transpose()
    }

    /// The ledger index and hash of a dossier's result, once issued.
    pub async fn evidence(
        &self,
        dossier_code: &str,
    ) -> Result<Option<(String, Option<i64>)>, Error> {
        let row =
            sqlx::query("SELECT sha256, ledger_index FROM portal_document WHERE dossier_code = $1")
                .bind(dossier_code.to_owned())
                .fetch_optional(self.reads.pool())
                .await
                .db("reading a document")?;
        row.map(|r| -> Result<_, Error> {
            Ok((
                r.try_get(0).db("reading a document")?,
                r.try_get(1).db("reading a document")?,
            ))
        })
        .transpose()
    }

    /// The person's mailbox, newest first.
    pub async fn mailbox(&self, person: &PersonalCode) -> Result<Vec<MailboxMessage>, Error> {
        let rows = sqlx::query(
            "SELECT message_id, dossier_code, subject_vi, subject_en, body_vi, body_en, \
             document_id, created_unix, read_unix FROM portal_mailbox WHERE person_code = $1 \
             ORDER BY created_unix DESC, message_id",
        )
        .bind(person.to_string())
        .fetch_all(self.reads.pool())
        .await
        .db("reading the mailbox")?;
        rows.iter().map(message_of).collect()
    }

    /// One message of the person's mailbox, marked read; another person's answers as an
    /// unknown one (`XALO-RESULT-001`), so ids cannot be probed.
    pub async fn open_message(
        &self,
        person: &PersonalCode,
        message_id: &str,
    ) -> Result<MailboxMessage, Error> {
        let row = sqlx::query(
            "SELECT message_id, dossier_code, subject_vi, subject_en, body_vi, body_en, \
             document_id, created_unix, read_unix FROM portal_mailbox \
             WHERE message_id = $1 AND person_code = $2",
        )
        .bind(message_id.to_owned())
        .bind(person.to_string())
        .fetch_optional(self.reads.pool())
        .await
        .db("reading the mailbox")?
        .ok_or_else(|| not_found("such message"))?;
        let mut m = message_of(&row)?;
        if m.read_unix.is_none() {
            let now = unix_now();
            sqlx::query("UPDATE portal_mailbox SET read_unix = $1 WHERE message_id = $2 AND read_unix IS NULL")
                .bind(now)
                .bind(message_id.to_owned())
                .execute(self.db().pool())
                .await
                .db("marking a message read")?;
            m.read_unix = Some(now);
        }
        Ok(m)
    }

    /// The person's document: file name and container bytes.
    pub async fn document(
        &self,
        person: &PersonalCode,
        document_id: &str,
    ) -> Result<(String, Vec<u8>), Error> {
        let row = sqlx::query(
            "SELECT file_name, container FROM portal_document WHERE document_id = $1 AND person_code = $2",
        )
        .bind(document_id.to_owned())
        .bind(person.to_string())
        .fetch_optional(self.reads.pool())
        .await
        .db("reading a document")?
        .ok_or_else(|| not_found("such document"))?;
        Ok((
            row.try_get(0).db("reading a document")?,
            row.try_get(1).db("reading a document")?,
        ))
    }

    /// The SMS outbox, oldest first (what an SMS gateway would take).
    pub async fn sms_outbox(&self, status: &str) -> Result<Vec<Sms>, Error> {
        let rows = sqlx::query(
            "SELECT id, person_code, phone, text, status, created_unix FROM portal_sms_outbox \
             WHERE status = $1 ORDER BY created_unix, id",
        )
        .bind(status.to_owned())
        .fetch_all(self.reads.pool())
        .await
        .db("reading the SMS outbox")?;
        rows.iter()
            .map(|r| {
                let ctx = "reading the SMS outbox";
                Ok(Sms {
                    id: r.try_get(0).db(ctx)?,
                    person_code: r.try_get(1).db(ctx)?,
                    phone: r.try_get(2).db(ctx)?,
                    text: r.try_get(3).db(ctx)?,
                    status: r.try_get(4).db(ctx)?,
                    created_unix: r.try_get(5).db(ctx)?,
                })
            })
            .collect()
    }

    /// The status of the e-mails queued for a person: (address, status) pairs.
    pub async fn email_status(
        &self,
        person: &PersonalCode,
    ) -> Result<Vec<(String, String)>, Error> {
        let rows = sqlx::query(
            "SELECT address, status FROM portal_email_outbox WHERE person_code = $1 ORDER BY created_unix",
        )
        .bind(person.to_string())
        .fetch_all(self.reads.pool())
        .await
        .db("reading the e-mail outbox")?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).db("reading")?, r.try_get(1).db("reading")?)))
            .collect()
    }

    /// The mailbox pages, for the portal's router (inside its session layer).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/mailbox", get(mailbox_page))
            .route("/mailbox/{message_id}", get(message_page))
            .route("/mailbox/documents/{document_id}", get(download))
            .with_state(self.clone())
    }
}

fn message_of(r: &sqlx::any::AnyRow) -> Result<MailboxMessage, Error> {
    let ctx = "reading the mailbox";
    Ok(MailboxMessage {
        message_id: r.try_get(0).db(ctx)?,
        dossier_code: r.try_get(1).db(ctx)?,
        subject_vi: r.try_get(2).db(ctx)?,
        subject_en: r.try_get(3).db(ctx)?,
        body_vi: r.try_get(4).db(ctx)?,
        body_en: r.try_get(5).db(ctx)?,
        document_id: r.try_get(6).db(ctx)?,
        created_unix: r.try_get(7).db(ctx)?,
        read_unix: r.try_get(8).db(ctx)?,
    })
}

fn check_request(req: &ResultRequest) -> Result<(), Error> {
    let bad = |m: String| Error::new(ErrorCode::ResultBadDocument, m);
    let text_ok = |s: &str, max: usize| {
        let n = s.chars().count();
        n > 0 && n <= max && !s.chars().any(|c| c.is_control() && c != '\n')
    };
    for (name, value, max) in [
        ("dossier code", &req.dossier_code, 64),
        ("person's name", &req.person_name, 200),
        ("procedure code", &req.procedure_code, 64),
        ("Vietnamese title", &req.title_vi, 200),
        ("English title", &req.title_en, 200),
        ("agency", &req.agency, 200),
    ] {
        if !text_ok(value, max) {
            return Err(bad(format!("the {name} must have 1 to {max} characters")));
        }
    }
    if req.fields.len() > 100 {
        return Err(bad("at most 100 fields".into()));
    }
    for (label, value) in &req.fields {
        if !text_ok(label, 200) || value.chars().count() > 2000 {
            return Err(bad(format!(
                "field {label:?}: a label of 1 to 200 characters and a value of at most 2000"
            )));
        }
    }
    Ok(())
}

fn date_text(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| {
            t.with_timezone(&vietnam())
                .format("%d/%m/%Y %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// The certificate people read. Self-contained (inline style, no scripts), so the sealed
/// file shows the same anywhere and years later.
fn render_html(req: &ResultRequest, document_id: &str, issued_unix: i64) -> String {
    let e = html_escape;
    let rows: String = req
        .fields
        .iter()
        .map(|(l, v)| {
            format!(
                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>\n",
                e(l),
                e(v)
            )
        })
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"vi\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
<style>body{{font:1rem/1.5 serif;max-width:42rem;margin:2rem auto;padding:0 1rem;color:#000}}\
.head{{text-align:center}}table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;border-bottom:1px solid #777;padding:.4rem}}</style>\n\
</head>\n<body>\n<div class=\"head\">\n<p><strong>CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM</strong><br>Độc lập - Tự do - Hạnh phúc</p>\n\
<p>{agency}</p>\n<h1>{title}</h1>\n<p lang=\"en\">{title_en}</p>\n</div>\n\
<table>\n<tr><th scope=\"row\">Số hồ sơ / Dossier</th><td>{dossier}</td></tr>\n\
<tr><th scope=\"row\">Mã thủ tục / Procedure</th><td>{procedure}</td></tr>\n\
<tr><th scope=\"row\">Người yêu cầu / Applicant</th><td>{name} ({code})</td></tr>\n{rows}</table>\n\
<p>Số văn bản / Document: {document_id}<br>Ngày cấp / Issued: {date}</p>\n\
<p>Văn bản điện tử được ký bằng chứng thư số của cơ quan (dấu số) và gắn dấu thời gian; \
giá trị pháp lý như bản giấy. / This electronic document is sealed with the agency's certificate \
and time-stamped.</p>\n</body>\n</html>\n",
        title = e(&req.title_vi),
        title_en = e(&req.title_en),
        agency = e(&req.agency),
        dossier = e(&req.dossier_code),
        procedure = e(&req.procedure_code),
        name = e(&req.person_name),
        code = e(&req.person.to_string()),
        date = date_text(issued_unix),
    )
}

fn render_json(req: &ResultRequest, document_id: &str, issued_unix: i64) -> Result<Vec<u8>, Error> {
    let fields: Vec<serde_json::Value> = req
        .fields
        .iter()
        .map(|(l, v)| serde_json::json!({ "label": l, "value": v }))
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "document_id": document_id,
        "dossier_code": req.dossier_code,
        "procedure_code": req.procedure_code,
        "title": { "vi": req.title_vi, "en": req.title_en },
        "agency": req.agency,
        "applicant": { "personal_code": req.person.to_string(), "name": req.person_name },
        "fields": fields,
        "issued_unix": issued_unix,
    }))
    .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
}

// ---------------------------------------------------------------- mailbox pages

xalo_web::catalogue! {
    /// Texts of the mailbox.
    pub struct MailboxText {
        title: "Hộp thư của bạn" / "Your mailbox",
        empty: "Chưa có thư nào." / "There are no messages yet.",
        received: "Nhận lúc" / "Received",
        unread: "Chưa đọc" / "Unread",
        download: "Tải kết quả (tệp ký số .asice)" / "Download the result (signed .asice file)",
        verify_hint: "Tệp chứa văn bản và chữ ký số của cơ quan. Kiểm tra bằng phần mềm ký số hoặc lệnh xalo verify." / "The file holds the document and the agency's digital seal. Check it with signing software or the xalo verify command.",
        back: "Về hộp thư" / "Back to the mailbox",
        subject: "Tiêu đề" / "Subject",
    }
}

struct ListItem {
    href: String,
    subject: String,
    received: String,
    unread: bool,
}

#[derive(Template)]
#[template(path = "result/mailbox.html")]
struct MailboxTemplate {
    text: &'static MailboxText,
    items: Vec<ListItem>,
}

#[derive(Template)]
#[template(path = "result/message.html")]
struct MessageTemplate<'a> {
    text: &'static MailboxText,
    body: &'a str,
    received: String,
    download: Option<String>,
}

fn person_of(session: &Session) -> Result<PersonalCode, Error> {
    crate::signin::require(session)?.personal_code()
}

fn html_page(lang: Lang, uri: &Uri, title: &str, body: String) -> Result<Response, Error> {
    Ok(xalo_web::html(&Page {
        lang,
        title,
        uri,
        body,
    })?
    .into_response())
}

async fn mailbox_page(
    State(results): State<Results>,
    Extension(session): Extension<Session>,
    uri: Uri,
) -> Response {
    let result = async {
        let person = person_of(&session)?;
        let lang = session.lang;
        let text = MailboxText::get(lang);
        let items = results
            .mailbox(&person)
            .await?
            .into_iter()
            .map(|m| ListItem {
                href: format!("/mailbox/{}", m.message_id),
                subject: m.subject(lang).to_owned(),
                received: date_text(m.created_unix),
                unread: m.read_unix.is_none(),
            })
            .collect();
        let body = MailboxTemplate { text, items }
            .render()
            .map_err(xalo_web::page::template_error)?;
        html_page(lang, &uri, text.title, body)
    }
    .await;
    // The portal's own error pages: sign-in first, coded messages otherwise.
    crate::service::respond(&session, &uri, result)
}

async fn message_page(
    State(results): State<Results>,
    Extension(session): Extension<Session>,
    Path(message_id): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let person = person_of(&session)?;
        let lang = session.lang;
        let text = MailboxText::get(lang);
        let m = results.open_message(&person, &message_id).await?;
        let body = MessageTemplate {
            text,
            body: m.body(lang),
            received: date_text(m.created_unix),
            download: m
                .document_id
                .as_ref()
                .map(|d| format!("/mailbox/documents/{d}")),
        }
        .render()
        .map_err(xalo_web::page::template_error)?;
        html_page(lang, &uri, m.subject(lang), body)
    }
    .await;
    crate::service::respond(&session, &uri, result)
}

async fn download(
    State(results): State<Results>,
    Extension(session): Extension<Session>,
    Path(document_id): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let person = person_of(&session)?;
        let (name, bytes) = results.document(&person, &document_id).await?;
        let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            .unwrap_or(HeaderValue::from_static("attachment"));
        Ok((
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(container::MIMETYPE),
                ),
                (header::CONTENT_DISPOSITION, disposition),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, no-store"),
                ),
            ],
            bytes,
        )
            .into_response())
    }
    .await;
    crate::service::respond(&session, &uri, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_escaping() {
        assert_eq!(normalise_phone("0901 234 567").unwrap(), "+84901234567");
        assert_eq!(normalise_phone("+84901234567").unwrap(), "+84901234567");
        assert_eq!(
            normalise_phone("12345").unwrap_err().code,
            ErrorCode::ResultBadAddress
        );
        assert_eq!(
            html_escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
