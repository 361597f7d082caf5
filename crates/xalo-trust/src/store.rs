//! The trust role's tables: the authorities' keys and every certificate they issued.

use serde::Serialize;
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Migration, Row};

use crate::authority::{AuthorityName, Profile, parse_certificate, serial_hex};

const MIGRATIONS: &[Migration] = &[Migration::per_backend(
    1,
    "authorities and certificates",
    "CREATE TABLE trust_signer (
        name TEXT PRIMARY KEY,
        certificate BLOB NOT NULL,
        private_key BLOB NOT NULL,
        created_unix BIGINT NOT NULL
    );
    CREATE TABLE trust_certificate (
        serial TEXT PRIMARY KEY,
        authority TEXT NOT NULL,
        profile TEXT NOT NULL,
        subject TEXT NOT NULL,
        certificate BLOB NOT NULL,
        private_key BLOB,
        not_after_unix BIGINT NOT NULL,
        issued_unix BIGINT NOT NULL,
        revoked_unix BIGINT,
        revocation_reason BIGINT
    );
    CREATE INDEX trust_certificate_issued ON trust_certificate (issued_unix);",
    "CREATE TABLE trust_signer (
        name TEXT PRIMARY KEY,
        certificate BYTEA NOT NULL,
        private_key BYTEA NOT NULL,
        created_unix BIGINT NOT NULL
    );
    CREATE TABLE trust_certificate (
        serial TEXT PRIMARY KEY,
        authority TEXT NOT NULL,
        profile TEXT NOT NULL,
        subject TEXT NOT NULL,
        certificate BYTEA NOT NULL,
        private_key BYTEA,
        not_after_unix BIGINT NOT NULL,
        issued_unix BIGINT NOT NULL,
        revoked_unix BIGINT,
        revocation_reason BIGINT
    );
    CREATE INDEX trust_certificate_issued ON trust_certificate (issued_unix);",
)];

pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate("trust", MIGRATIONS).await
}

/// CRLReason (RFC 5280 5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    Unspecified = 0,
    KeyCompromise = 1,
    CaCompromise = 2,
    AffiliationChanged = 3,
    Superseded = 4,
    CessationOfOperation = 5,
    CertificateHold = 6,
    PrivilegeWithdrawn = 9,
}

impl RevocationReason {
    pub fn from_code(code: i64) -> RevocationReason {
        match code {
            1 => Self::KeyCompromise,
            2 => Self::CaCompromise,
            3 => Self::AffiliationChanged,
            4 => Self::Superseded,
            5 => Self::CessationOfOperation,
            6 => Self::CertificateHold,
            9 => Self::PrivilegeWithdrawn,
            _ => Self::Unspecified,
        }
    }
    pub fn crl_reason(self) -> x509_cert::ext::pkix::CrlReason {
        use x509_cert::ext::pkix::CrlReason as R;
        match self {
            Self::Unspecified => R::Unspecified,
            Self::KeyCompromise => R::KeyCompromise,
            Self::CaCompromise => R::CaCompromise,
            Self::AffiliationChanged => R::AffiliationChanged,
            Self::Superseded => R::Superseded,
            Self::CessationOfOperation => R::CessationOfOperation,
            Self::CertificateHold => R::CertificateHold,
            Self::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        }
    }
}

/// One issued certificate as the authority remembers it.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateRecord {
    pub serial: String,
    pub authority: AuthorityName,
    pub profile: Profile,
    pub subject: String,
    #[serde(skip)]
    pub certificate: Vec<u8>,
    pub not_after_unix: i64,
    pub issued_unix: i64,
    pub revoked_unix: Option<i64>,
    pub revocation_reason: Option<RevocationReason>,
}

impl CertificateRecord {
    pub fn new(
        authority: AuthorityName,
        profile: Profile,
        der: &[u8],
        issued_unix: i64,
    ) -> Result<Self, Error> {
        let cert = parse_certificate(der)?;
        let not_after = cert
            .tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs() as i64;
        Ok(CertificateRecord {
            serial: serial_hex(&cert),
            authority,
            profile,
            subject: cert.tbs_certificate.subject.to_string(),
            certificate: der.to_vec(),
            not_after_unix: not_after,
            issued_unix,
            revoked_unix: None,
            revocation_reason: None,
        })
    }
}

pub(crate) async fn load_signer(
    db: &Database,
    name: &str,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
    let row = xalo_store::sqlx::query(
        "SELECT certificate, private_key FROM trust_signer WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(db.pool())
    .await
    .db("loading a trust signer")?;
    match row {
        Some(row) => Ok(Some((
            row.try_get(0).db("certificate")?,
            row.try_get(1).db("key")?,
        ))),
        None => Ok(None),
    }
}

pub(crate) async fn insert_signer(
    db: &Database,
    name: &str,
    cert: &[u8],
    key: &[u8],
) -> Result<(), Error> {
    xalo_store::sqlx::query(
        "INSERT INTO trust_signer (name, certificate, private_key, created_unix) VALUES ($1, $2, $3, $4)",
    )
    .bind(name)
    .bind(cert.to_vec())
    .bind(key.to_vec())
    .bind(crate::authority::unix(std::time::SystemTime::now()))
    .execute(db.pool())
    .await
    .db("storing a trust signer")
    .map(|_| ())
}

pub(crate) async fn insert_certificate(
    db: &Database,
    r: &CertificateRecord,
    private_key: Option<&[u8]>,
) -> Result<(), Error> {
    xalo_store::sqlx::query(
        "INSERT INTO trust_certificate (serial, authority, profile, subject, certificate, private_key, \
         not_after_unix, issued_unix) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&r.serial)
    .bind(r.authority.as_str())
    .bind(r.profile.as_str())
    .bind(&r.subject)
    .bind(r.certificate.clone())
    .bind(private_key.map(<[u8]>::to_vec))
    .bind(r.not_after_unix)
    .bind(r.issued_unix)
    .execute(db.pool())
    .await
    .db("storing a certificate")
    .map(|_| ())
}

const COLUMNS: &str = "serial, authority, profile, subject, certificate, not_after_unix, issued_unix, \
                       revoked_unix, revocation_reason";

fn record(row: &xalo_store::sqlx::any::AnyRow) -> Result<CertificateRecord, Error> {
    let authority: String = row.try_get(1).db("authority")?;
    let profile: String = row.try_get(2).db("profile")?;
    let reason: Option<i64> = row.try_get(8).db("reason")?;
    Ok(CertificateRecord {
        serial: row.try_get(0).db("serial")?,
        authority: AuthorityName::parse(&authority)?,
        profile: Profile::parse(&profile)?,
        subject: row.try_get(3).db("subject")?,
        certificate: row.try_get(4).db("certificate")?,
        not_after_unix: row.try_get(5).db("not_after")?,
        issued_unix: row.try_get(6).db("issued")?,
        revoked_unix: row.try_get(7).db("revoked")?,
        revocation_reason: reason.map(RevocationReason::from_code),
    })
}

fn normalise(serial_hex: &str) -> String {
    serial_hex
        .trim()
        .trim_start_matches("0x")
        .replace(':', "")
        .to_ascii_lowercase()
}

pub(crate) async fn find(db: &Database, serial_hex: &str) -> Result<CertificateRecord, Error> {
    find_optional(db, serial_hex).await?.ok_or_else(|| {
        Error::new(
            ErrorCode::TrustCertificateNotFound,
            format!("no certificate {serial_hex}"),
        )
    })
}

pub(crate) async fn find_optional(
    db: &Database,
    serial_hex: &str,
) -> Result<Option<CertificateRecord>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM trust_certificate WHERE serial = $1");
    let row = db
        .fetch_optional(
            xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(sql))
                .bind(normalise(serial_hex)),
        )
        .await
        .db("finding a certificate")?;
    row.as_ref().map(record).transpose()
}

pub(crate) async fn list(db: &Database, limit: i64) -> Result<Vec<CertificateRecord>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM trust_certificate ORDER BY issued_unix DESC, serial LIMIT $1"
    );
    let rows = xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(db.pool())
        .await
        .db("listing certificates")?;
    rows.iter().map(record).collect()
}

pub(crate) async fn private_key(db: &Database, serial_hex: &str) -> Result<Option<Vec<u8>>, Error> {
    let row =
        xalo_store::sqlx::query("SELECT private_key FROM trust_certificate WHERE serial = $1")
            .bind(normalise(serial_hex))
            .fetch_optional(db.pool())
            .await
            .db("reading a key")?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::TrustCertificateNotFound,
                    format!("no certificate {serial_hex}"),
                )
            })?;
    row.try_get(0).db("private key")
}

pub(crate) async fn revoke(
    db: &Database,
    serial_hex: &str,
    reason: RevocationReason,
    at_unix: i64,
) -> Result<CertificateRecord, Error> {
    let done = xalo_store::sqlx::query(
        "UPDATE trust_certificate SET revoked_unix = $1, revocation_reason = $2 \
         WHERE serial = $3 AND revoked_unix IS NULL",
    )
    .bind(at_unix)
    .bind(reason as i64)
    .bind(normalise(serial_hex))
    .execute(db.pool())
    .await
    .db("revoking a certificate")?;
    let record = find(db, serial_hex).await?;
    if done.rows_affected() == 0 {
        return Err(Error::new(
            ErrorCode::TrustAlreadyRevoked,
            format!("{serial_hex} was already revoked"),
        ));
    }
    Ok(record)
}
