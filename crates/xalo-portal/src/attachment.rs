//! Attachments of dossiers: the citizen's scanned documents and photos.
//!
//! An upload is accepted only if its bytes really are one of the accepted types (PDF, PNG,
//! JPEG), judged by content, never by the name or the browser's `Content-Type`, and only if
//! the name's extension agrees with the content: a `.pdf` that is an executable, an HTML page
//! or a PNG is refused with a coded error. Accepted bytes are stored once per SHA-256
//! (content-addressed, so the same scan attached to ten dossiers is stored once) and linked
//! to a dossier and its owner. Reading one back is checked: the owner, or (after the back
//! office has checked the officer's agency) the dossier's handlers through
//! [`read_in_dossier`].

use axum::extract::DefaultBodyLimit;
use axum::extract::multipart::{Field, Multipart, MultipartError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_store::{Database, DbResultExt, Migration, Row};

/// The largest attachment accepted, in bytes (a multi-page scan at 300 dpi fits).
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// Attachments one dossier may have.
pub const MAX_PER_DOSSIER: i64 = 20;
/// The longest file name kept (characters).
const MAX_NAME: usize = 120;

const MIGRATIONS: &[Migration] = &[Migration::per_backend(
    1,
    "attachments: content-addressed blobs linked to dossiers",
    "CREATE TABLE portal_blob (
        sha256 TEXT PRIMARY KEY,
        media_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        bytes BLOB NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE portal_attachment (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dossier TEXT NOT NULL,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL REFERENCES portal_blob (sha256),
        created_ms BIGINT NOT NULL,
        UNIQUE (dossier, sha256)
    );
    CREATE INDEX portal_attachment_dossier ON portal_attachment (dossier);",
    "CREATE TABLE portal_blob (
        sha256 TEXT PRIMARY KEY,
        media_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        bytes BYTEA NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE portal_attachment (
        id BIGSERIAL PRIMARY KEY,
        dossier TEXT NOT NULL,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL REFERENCES portal_blob (sha256),
        created_ms BIGINT NOT NULL,
        UNIQUE (dossier, sha256)
    );
    CREATE INDEX portal_attachment_dossier ON portal_attachment (dossier);",
)];

/// Create or update the attachment tables (component `portal-attachment`).
pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate("portal-attachment", MIGRATIONS).await
}

/// The body limit for the upload route: the file plus room for the form's other fields.
pub fn body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_BYTES + 64 * 1024)
}

/// The accepted types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MediaType {
    Pdf,
    Png,
    Jpeg,
}

impl MediaType {
    pub fn mime(self) -> &'static str {
        match self {
            MediaType::Pdf => "application/pdf",
            MediaType::Png => "image/png",
            MediaType::Jpeg => "image/jpeg",
        }
    }

    fn from_mime(s: &str) -> Option<MediaType> {
        [MediaType::Pdf, MediaType::Png, MediaType::Jpeg]
            .into_iter()
            .find(|m| m.mime() == s)
    }

    /// The type a file name's extension claims.
    fn of_name(name: &str) -> Option<MediaType> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "pdf" => Some(MediaType::Pdf),
            "png" => Some(MediaType::Png),
            "jpg" | "jpeg" => Some(MediaType::Jpeg),
            _ => None,
        }
    }
}

/// What the bytes really are, judged by their content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Accepted(MediaType),
    /// Recognised, and refused: named so the message can say what the file really is.
    Refused(&'static str),
    Unknown,
}

/// Judge `bytes` by their magic numbers and structure.
pub fn sniff(bytes: &[u8]) -> Sniffed {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.starts_with(b"%PDF-") {
        // A PDF ends with `%%EOF` (possibly followed by line ends); a file cut short or with
        // something else appended is not a document a clerk can open.
        let tail = &bytes[bytes.len().saturating_sub(1024)..];
        return if tail.windows(5).any(|w| w == b"%%EOF") {
            Sniffed::Accepted(MediaType::Pdf)
        } else {
            Sniffed::Refused("a truncated PDF (no end-of-file marker)")
        };
    }
    if bytes.starts_with(PNG) {
        // The first chunk of a PNG is its header, IHDR.
        return if bytes.get(12..16) == Some(b"IHDR") {
            Sniffed::Accepted(MediaType::Png)
        } else {
            Sniffed::Refused("a damaged PNG (no image header)")
        };
    }
    if bytes.len() >= 4 && bytes[..3] == [0xFF, 0xD8, 0xFF] {
        return Sniffed::Accepted(MediaType::Jpeg);
    }
    if bytes.starts_with(b"MZ") {
        return Sniffed::Refused("a Windows executable");
    }
    if bytes.starts_with(b"\x7fELF") {
        return Sniffed::Refused("an ELF executable");
    }
    if [
        &[0xCF, 0xFA, 0xED, 0xFE][..],
        &[0xCE, 0xFA, 0xED, 0xFE],
        &[0xCA, 0xFE, 0xBA, 0xBE],
    ]
    .iter()
    .any(|m| bytes.starts_with(m))
    {
        return Sniffed::Refused("a macOS executable");
    }
    if bytes.starts_with(b"#!") {
        return Sniffed::Refused("a script");
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Sniffed::Refused("a ZIP archive or office document");
    }
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start: Vec<u8> = text
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(64)
        .map(u8::to_ascii_lowercase)
        .collect();
    if start.starts_with(b"<!doctype html")
        || start.starts_with(b"<html")
        || start.starts_with(b"<script")
        || start.starts_with(b"<svg")
        || start.starts_with(b"<?xml")
    {
        return Sniffed::Refused("an HTML, SVG or XML document");
    }
    Sniffed::Unknown
}

/// Check an upload: not empty, not too large, a real PDF/PNG/JPEG whose name agrees.
pub fn check(name: &str, bytes: &[u8]) -> Result<MediaType, Error> {
    if bytes.is_empty() {
        return Err(Error::new(
            ErrorCode::AttachEmpty,
            format!("{name}: the file is empty"),
        ));
    }
    if bytes.len() > MAX_BYTES {
        return Err(too_large(name));
    }
    let claimed = MediaType::of_name(name).ok_or_else(|| {
        Error::new(
            ErrorCode::AttachType,
            format!("{name}: only .pdf, .png, .jpg and .jpeg files are accepted"),
        )
    })?;
    match sniff(bytes) {
        Sniffed::Accepted(real) if real == claimed => Ok(real),
        Sniffed::Accepted(real) => Err(Error::new(
            ErrorCode::AttachMismatch,
            format!(
                "{name}: the name says {} but the content is {}",
                claimed.mime(),
                real.mime()
            ),
        )),
        Sniffed::Refused(what) => Err(Error::new(
            ErrorCode::AttachType,
            format!("{name}: the content is {what}, not a PDF, PNG or JPEG"),
        )),
        Sniffed::Unknown => Err(Error::new(
            ErrorCode::AttachType,
            format!("{name}: the content is not a PDF, PNG or JPEG"),
        )),
    }
}

fn too_large(name: &str) -> Error {
    Error::new(
        ErrorCode::AttachTooLarge,
        format!("{name}: larger than {} MiB", MAX_BYTES / (1024 * 1024)),
    )
}

/// A file name safe to show and to send back in `Content-Disposition`: the last path
/// component, without control characters or quotes, at most [`MAX_NAME`] characters.
pub fn clean_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | ';'))
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.');
    let mut out: String = cleaned.chars().rev().take(MAX_NAME).collect();
    out = out.chars().rev().collect(); // keep the extension when cutting
    if out.is_empty() { "file".into() } else { out }
}

/// One uploaded file, read from a multipart form with the other (text) fields.
#[derive(Debug, Default)]
pub struct Upload {
    pub name: String,
    pub bytes: Vec<u8>,
    /// The form's text fields, e.g. the CSRF token and the document's label.
    pub fields: Vec<(String, String)>,
}

impl Upload {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn multipart_error(e: MultipartError) -> Error {
    if e.status().as_u16() == 413 {
        return Error::new(
            ErrorCode::AttachTooLarge,
            format!(
                "the upload is larger than {} MiB",
                MAX_BYTES / (1024 * 1024)
            ),
        );
    }
    Error::new(ErrorCode::PortalBadInput, format!("malformed upload: {e}"))
}

async fn read_limited(mut field: Field<'_>, name: &str) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        // Stop reading as soon as the limit is passed rather than buffering the rest.
        if bytes.len() + chunk.len() > MAX_BYTES {
            return Err(too_large(name));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Read a multipart form with one file in the field `file_field`; text fields are kept
/// (at most 4 KiB each). The file is not checked here: [`store`] checks it.
pub async fn read_upload(mut form: Multipart, file_field: &str) -> Result<Upload, Error> {
    let mut upload = Upload::default();
    let mut seen_file = false;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let field_name = field.name().unwrap_or_default().to_owned();
        if field_name == file_field {
            if seen_file {
                return Err(Error::new(ErrorCode::PortalBadInput, "one file per upload"));
            }
            seen_file = true;
            upload.name = clean_name(field.file_name().unwrap_or_default());
            upload.bytes = read_limited(field, &upload.name).await?;
        } else {
            let text = field.text().await.map_err(multipart_error)?;
            if text.len() > 4096 || upload.fields.len() >= 32 {
                return Err(Error::new(
                    ErrorCode::PortalBadInput,
                    "too many or too long form fields",
                ));
            }
            upload.fields.push((field_name, text));
        }
    }
    if !seen_file || upload.bytes.is_empty() {
        return Err(Error::new(
            ErrorCode::AttachEmpty,
            "choose a file to upload",
        ));
    }
    Ok(upload)
}

/// An attachment of a dossier.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attachment {
    pub id: i64,
    pub dossier: String,
    /// The personal code of the dossier's owner.
    pub owner: String,
    pub name: String,
    /// Hex SHA-256 of the content: the content's address, and what the signature covers.
    pub sha256: String,
    pub media_type: String,
    pub size: i64,
    pub created_ms: i64,
}

const COLUMNS: &str =
    "a.id, a.dossier, a.owner, a.name, a.sha256, b.media_type, b.size, a.created_ms";

fn from_row(r: &xalo_store::sqlx::any::AnyRow) -> Result<Attachment, Error> {
    let ctx = "reading an attachment";
    Ok(Attachment {
        id: r.try_get(0).db(ctx)?,
        dossier: r.try_get(1).db(ctx)?,
        owner: r.try_get(2).db(ctx)?,
        name: r.try_get(3).db(ctx)?,
        sha256: r.try_get(4).db(ctx)?,
        media_type: r.try_get(5).db(ctx)?,
        size: r.try_get(6).db(ctx)?,
        created_ms: r.try_get(7).db(ctx)?,
    })
}

/// Check `bytes` and attach them to `dossier` (owned by `owner`). The content is stored
/// once whatever the number of dossiers it is attached to; attaching the same content to
/// the same dossier again returns the existing attachment.
pub async fn store(
    db: &Database,
    dossier: &str,
    owner: &PersonalCode,
    name: &str,
    bytes: &[u8],
) -> Result<Attachment, Error> {
    let owner = owner.to_string();
    let name = clean_name(name);
    let media = check(&name, bytes)?;
    let sha = hex::encode(Sha256::digest(bytes));
    let now = chrono::Utc::now().timestamp_millis();
    let what = "storing an attachment";
    let mut tx = db.begin_write().await?;
    xalo_store::sqlx::query(
        "INSERT INTO portal_blob (sha256, media_type, size, bytes, created_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&sha)
    .bind(media.mime())
    .bind(bytes.len() as i64)
    .bind(bytes.to_vec())
    .bind(now)
    .execute(&mut *tx)
    .await
    .db(what)?;
    let existing = xalo_store::sqlx::query(
        "SELECT id, owner FROM portal_attachment WHERE dossier = $1 AND sha256 = $2",
    )
    .bind(dossier)
    .bind(&sha)
    .fetch_optional(&mut *tx)
    .await
    .db(what)?;
    let id = match existing {
        Some(row) => {
            let linked_owner: String = row.try_get(1).db(what)?;
            if linked_owner != owner {
                return Err(not_found());
            }
            row.try_get::<i64, _>(0).db(what)?
        }
        None => {
            // Callers check that the dossier is the owner's; a dossier whose files are
            // someone else's is refused here too.
            let others = xalo_store::sqlx::query(
                "SELECT COUNT(*) FROM portal_attachment WHERE dossier = $1 AND owner <> $2",
            )
            .bind(dossier)
            .bind(&owner)
            .fetch_one(&mut *tx)
            .await
            .db(what)?
            .try_get::<i64, _>(0)
            .db(what)?;
            if others > 0 {
                return Err(not_found());
            }
            let row = xalo_store::sqlx::query(
                "SELECT COUNT(*) FROM portal_attachment WHERE dossier = $1",
            )
            .bind(dossier)
            .fetch_one(&mut *tx)
            .await
            .db(what)?;
            let count: i64 = row.try_get(0).db(what)?;
            if count >= MAX_PER_DOSSIER {
                return Err(Error::new(
                    ErrorCode::AttachLimit,
                    format!("a dossier has at most {MAX_PER_DOSSIER} attachments"),
                ));
            }
            xalo_store::sqlx::query(
                "INSERT INTO portal_attachment (dossier, owner, name, sha256, created_ms) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(dossier)
            .bind(&owner)
            .bind(&name)
            .bind(&sha)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .db(what)?
            .try_get::<i64, _>(0)
            .db(what)?
        }
    };
    tx.commit().await.db(what)?;
    one(db, "a.id = $1", &[Bind::Int(id)])
        .await?
        .ok_or_else(not_found)
}

enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

async fn one(db: &Database, filter: &str, binds: &[Bind<'_>]) -> Result<Option<Attachment>, Error> {
    Ok(many(db, filter, binds).await?.into_iter().next())
}

async fn many(db: &Database, filter: &str, binds: &[Bind<'_>]) -> Result<Vec<Attachment>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM portal_attachment a JOIN portal_blob b ON b.sha256 = a.sha256 \
         WHERE {filter} ORDER BY a.id"
    );
    let mut q = xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(*i),
            Bind::Text(t) => q.bind(t.to_string()),
        };
    }
    let rows = q.fetch_all(db.pool()).await.db("reading attachments")?;
    rows.iter().map(from_row).collect()
}

fn not_found() -> Error {
    Error::new(
        ErrorCode::AttachNotFound,
        "no such attachment for the signed-in person",
    )
}

/// The attachments of a dossier, oldest first. Callers have checked who may see the dossier.
pub async fn of_dossier(db: &Database, dossier: &str) -> Result<Vec<Attachment>, Error> {
    many(db, "a.dossier = $1", &[Bind::Text(dossier)]).await
}

/// Whether attachment `id` belongs to `dossier`: the back office calls this after checking
/// that the officer's agency handles the dossier.
pub async fn belongs_to(db: &Database, dossier: &str, id: i64) -> Result<bool, Error> {
    Ok(one(
        db,
        "a.id = $1 AND a.dossier = $2",
        &[Bind::Int(id), Bind::Text(dossier)],
    )
    .await?
    .is_some())
}

async fn content(db: &Database, a: Attachment) -> Result<(Attachment, Vec<u8>), Error> {
    let what = "reading an attachment's content";
    let bytes: Vec<u8> = xalo_store::sqlx::query("SELECT bytes FROM portal_blob WHERE sha256 = $1")
        .bind(&a.sha256)
        .fetch_one(db.pool())
        .await
        .db(what)?
        .try_get(0)
        .db(what)?;
    // The address is the hash: content that no longer matches it is never served.
    if hex::encode(Sha256::digest(&bytes)) != a.sha256 {
        return Err(Error::new(
            ErrorCode::Internal,
            format!("attachment {} does not match its hash", a.id),
        ));
    }
    Ok((a, bytes))
}

/// Attachment `id` with its content, for its owner only (anyone else gets "not found", so
/// ids of other people's files reveal nothing).
pub async fn read_as_owner(
    db: &Database,
    owner: &PersonalCode,
    id: i64,
) -> Result<(Attachment, Vec<u8>), Error> {
    let owner = owner.to_string();
    let a = one(
        db,
        "a.id = $1 AND a.owner = $2",
        &[Bind::Int(id), Bind::Text(&owner)],
    )
    .await?
    .ok_or_else(not_found)?;
    content(db, a).await
}

/// Attachment `id` of `dossier` with its content, for the officers handling the dossier:
/// the back office checks the officer's agency first.
pub async fn read_in_dossier(
    db: &Database,
    dossier: &str,
    id: i64,
) -> Result<(Attachment, Vec<u8>), Error> {
    let a = one(
        db,
        "a.id = $1 AND a.dossier = $2",
        &[Bind::Int(id), Bind::Text(dossier)],
    )
    .await?
    .ok_or_else(not_found)?;
    content(db, a).await
}

/// Remove attachment `id` from its owner's dossier (while the dossier may still change:
/// the caller checks its state). The content stays while another dossier links it.
pub async fn remove(db: &Database, owner: &PersonalCode, id: i64) -> Result<(), Error> {
    let owner = owner.to_string();
    let what = "removing an attachment";
    let mut tx = db.begin_write().await?;
    let row = xalo_store::sqlx::query(
        "SELECT sha256 FROM portal_attachment WHERE id = $1 AND owner = $2",
    )
    .bind(id)
    .bind(&owner)
    .fetch_optional(&mut *tx)
    .await
    .db(what)?
    .ok_or_else(not_found)?;
    let sha: String = row.try_get(0).db(what)?;
    xalo_store::sqlx::query("DELETE FROM portal_attachment WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .db(what)?;
    xalo_store::sqlx::query(
        "DELETE FROM portal_blob WHERE sha256 = $1 AND NOT EXISTS \
         (SELECT 1 FROM portal_attachment WHERE sha256 = $2)",
    )
    .bind(&sha)
    .bind(&sha)
    .execute(&mut *tx)
    .await
    .db(what)?;
    tx.commit().await.db(what)
}

/// An attachment as an HTTP download: its real type, its name as an attachment (never
/// rendered inline, so a crafted file cannot run as a page of the portal).
pub fn download(a: &Attachment, bytes: Vec<u8>) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let mime = MediaType::from_mime(&a.media_type)
        .map(MediaType::mime)
        .unwrap_or("application/octet-stream");
    let ascii: String = a
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        [
            (header::CONTENT_TYPE, mime.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{ascii}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdf() -> Vec<u8> {
        b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n".to_vec()
    }

    #[test]
    fn types_by_content() {
        assert_eq!(check("a.pdf", &pdf()).unwrap(), MediaType::Pdf);
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend([0u8; 20]);
        assert_eq!(check("a.PNG", &png).unwrap(), MediaType::Png);
        assert_eq!(
            check("photo.jpeg", &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16]).unwrap(),
            MediaType::Jpeg
        );
        let code = |name: &str, bytes: &[u8]| check(name, bytes).unwrap_err().code;
        assert_eq!(code("a.pdf", b"MZ\x90\0\x03"), ErrorCode::AttachType);
        assert_eq!(code("a.pdf", b"\x7fELF\x02\x01"), ErrorCode::AttachType);
        assert_eq!(
            code("a.pdf", b"\xEF\xBB\xBF  <!DOCTYPE html><script>"),
            ErrorCode::AttachType
        );
        assert_eq!(code("a.pdf", &png), ErrorCode::AttachMismatch);
        assert_eq!(code("a.exe", &pdf()), ErrorCode::AttachType);
        assert_eq!(code("a.pdf", b""), ErrorCode::AttachEmpty);
        assert_eq!(code("a.pdf", b"%PDF-1.7 cut short"), ErrorCode::AttachType);
        let mut big = pdf();
        big.resize(MAX_BYTES + 1, b' ');
        assert_eq!(code("a.pdf", &big), ErrorCode::AttachTooLarge);
    }

    #[test]
    fn names() {
        assert_eq!(
            clean_name("C:\\Users\\x\\giay khai sinh.pdf"),
            "giay khai sinh.pdf"
        );
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("a\"b;\n.pdf"), "ab.pdf");
        assert_eq!(clean_name(""), "file");
        let long = format!("{}.pdf", "x".repeat(500));
        assert!(clean_name(&long).ends_with(".pdf"));
    }
}
