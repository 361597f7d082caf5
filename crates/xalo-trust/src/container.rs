//! ASiC-E containers (ETSI EN 319 162-1) with CAdES signatures: `mimetype`, the data
//! files, one `META-INF/ASiCManifest*.xml` per signature listing the files' digests, and
//! the `META-INF/signature*.p7s` that signs it (CAdES-T with embedded OCSP: long-term
//! validation). Co-signing adds a manifest and a signature; nothing signed is touched.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use der::Encode;
use serde::Serialize;
use xalo_core::{Error, ErrorCode};

use crate::authority::{Signer, parse_certificate};
use crate::cades::{
    self, REVOCATION_VALUES, RevocationValues, SIGNATURE_TIME_STAMP, attribute, decode_any,
    find_attribute,
};
use crate::chain::{TrustAnchors, verify_path};
use crate::key::{DigestAlgorithm, to_der};
use crate::ocsp::CertificateStatus;

pub const MIMETYPE: &str = "application/vnd.etsi.asic-e+zip";
const SHA256_URI: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// Refuse containers that would unpack to more than this (zip bombs).
pub const MAX_UNPACKED_BYTES: u64 = 512 * 1024 * 1024;

/// A file to sign.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl DataFile {
    fn mime_type(&self) -> &'static str {
        match self
            .name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("pdf") => "application/pdf",
            Some("txt") => "text/plain",
            Some("xml") => "application/xml",
            Some("json") => "application/json",
            Some("html" | "htm") => "text/html",
            Some("png") => "image/png",
            Some("jpg" | "jpeg") => "image/jpeg",
            _ => "application/octet-stream",
        }
    }
}

/// The pieces of a container, in their order.
#[derive(Debug, Clone, Default)]
pub struct Container {
    pub data_files: Vec<DataFile>,
    /// `META-INF/…` entries, by name.
    pub meta: BTreeMap<String, Vec<u8>>,
}

fn bad(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::TrustBadContainer, m.into())
}

fn uri_encode(name: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'.')
        .remove(b'-')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(name, SET).to_string()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Container {
    /// Read a container: what the fuzz target drives.
    pub fn read(bytes: &[u8]) -> Result<Container, Error> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| bad(format!("not a ZIP file: {e}")))?;
        let mut total = 0u64;
        let mut container = Container::default();
        let mut saw_mimetype = false;
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| bad(format!("entry {i}: {e}")))?;
            if entry.is_dir() {
                continue;
            }
            let name = entry.name().to_owned();
            total = total.saturating_add(entry.size());
            if total > MAX_UNPACKED_BYTES {
                return Err(bad("the container unpacks to more than allowed"));
            }
            let mut data = Vec::new();
            entry
                .by_ref()
                .take(MAX_UNPACKED_BYTES)
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            if name == "mimetype" {
                if i != 0
                    || entry.compression() != zip::CompressionMethod::Stored
                    || data != MIMETYPE.as_bytes()
                {
                    return Err(bad(
                        "the first entry must be an uncompressed mimetype of application/vnd.etsi.asic-e+zip",
                    ));
                }
                saw_mimetype = true;
            } else if name.starts_with("META-INF/") {
                container.meta.insert(name, data);
            } else {
                container.data_files.push(DataFile { name, bytes: data });
            }
        }
        if !saw_mimetype {
            return Err(bad("no mimetype entry"));
        }
        Ok(container)
    }

    /// Write the container: `mimetype` first and stored, as the standard requires.
    pub fn write(&self) -> Result<Vec<u8>, Error> {
        let io = |e: zip::result::ZipError| {
            Error::new(ErrorCode::ServerIo, format!("writing the container: {e}"))
        };
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("mimetype", stored).map_err(io)?;
        zip.write_all(MIMETYPE.as_bytes())?;
        for f in &self.data_files {
            zip.start_file(f.name.as_str(), deflated).map_err(io)?;
            zip.write_all(&f.bytes)?;
        }
        for (name, data) in &self.meta {
            zip.start_file(name.as_str(), deflated).map_err(io)?;
            zip.write_all(data)?;
        }
        Ok(zip.finish().map_err(io)?.into_inner())
    }

    fn signature_names(&self) -> Vec<String> {
        self.meta
            .keys()
            .filter(|n| n.starts_with("META-INF/signature") && n.ends_with(".p7s"))
            .cloned()
            .collect()
    }
}

/// The manifest naming `signature` and covering `files`.
pub fn manifest(signature: &str, files: &[DataFile]) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n\
         <asic:ASiCManifest xmlns:asic=\"http://uri.etsi.org/02918/v1.2.1#\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">\n",
    );
    xml.push_str(&format!(
        "  <asic:SigReference URI=\"{}\" MimeType=\"application/x-pkcs7-signature\"/>\n",
        xml_escape(signature)
    ));
    for f in files {
        let digest = base64::engine::general_purpose::STANDARD
            .encode(DigestAlgorithm::Sha256.digest(&f.bytes));
        xml.push_str(&format!(
            "  <asic:DataObjectReference URI=\"{}\" MimeType=\"{}\">\n    <ds:DigestMethod Algorithm=\"{SHA256_URI}\"/>\n    <ds:DigestValue>{digest}</ds:DigestValue>\n  </asic:DataObjectReference>\n",
            xml_escape(&uri_encode(&f.name)),
            f.mime_type()
        ));
    }
    xml.push_str("</asic:ASiCManifest>\n");
    xml
}

/// A manifest as read back.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub signature: Option<String>,
    /// (file name, digest algorithm URI, digest)
    pub references: Vec<(String, String, Vec<u8>)>,
}

/// Parse an ASiCManifest.
pub fn parse_manifest(xml: &[u8]) -> Result<Manifest, Error> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut manifest = Manifest::default();
    let mut current: Option<(String, String)> = None;
    let mut in_digest = false;
    let mut buf = Vec::new();
    let attr = |e: &quick_xml::events::BytesStart<'_>, key: &[u8]| -> Option<String> {
        e.attributes()
            .flatten()
            .find(|a| a.key.local_name().as_ref() == key)
            .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
    };
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| bad(format!("manifest XML: {e}")))?
        {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"SigReference" => manifest.signature = attr(&e, b"URI"),
                b"DataObjectReference" => {
                    let uri =
                        attr(&e, b"URI").ok_or_else(|| bad("DataObjectReference without URI"))?;
                    let name = percent_encoding::percent_decode_str(&uri)
                        .decode_utf8_lossy()
                        .into_owned();
                    current = Some((name, String::new()));
                }
                b"DigestMethod" => {
                    if let (Some(c), Some(a)) = (current.as_mut(), attr(&e, b"Algorithm")) {
                        c.1 = a;
                    }
                }
                b"DigestValue" => in_digest = true,
                _ => {}
            },
            Event::Text(t) if in_digest => {
                let text = t
                    .unescape()
                    .map_err(|e| bad(format!("manifest XML: {e}")))?;
                let digest = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| bad(format!("digest value: {e}")))?;
                if let Some((name, alg)) = current.as_ref() {
                    manifest
                        .references
                        .push((name.clone(), alg.clone(), digest));
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"DigestValue" => in_digest = false,
                b"DataObjectReference" => current = None,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(manifest)
}

/// Who signs and where the time-stamps and statuses come from.
pub struct SignOptions<'a> {
    pub signer: &'a Signer,
    /// The signer's issuing CA, then the root.
    pub chain: &'a [Vec<u8>],
    pub tsa_url: &'a str,
    pub http: &'a reqwest::Client,
}

/// Sign `files` into a new container, or add a signature to `existing` (co-signing, in
/// which case `files` must be empty: the existing data files are signed).
pub async fn sign(
    existing: Option<&[u8]>,
    files: Vec<DataFile>,
    options: &SignOptions<'_>,
) -> Result<Vec<u8>, Error> {
    let pending = prepare(
        existing,
        files,
        &options.signer.certificate_der,
        options.chain,
        options.http,
    )
    .await?;
    let signature = options.signer.key.sign(&pending.to_be_signed()?)?;
    pending
        .finish(&signature, options.tsa_url, options.http)
        .await
}

/// A signature prepared in a container and waiting for its value, which a key elsewhere
/// makes (a remote signing service, a phone's SIM). It survives a round trip through
/// [`PendingSignature::to_bytes`], so the wait may outlast a request or a process.
#[derive(Debug, Clone)]
pub struct PendingSignature {
    /// The container as it will be, with the new manifest but without the signature.
    container: Vec<u8>,
    signature_name: String,
    unsigned: cades::Unsigned,
    chain: Vec<Vec<u8>>,
}

#[derive(Serialize, serde::Deserialize)]
struct StoredPending {
    container: String,
    signature_name: String,
    unsigned: String,
    chain: Vec<String>,
}

/// The container's status check before signing: a revoked certificate must not sign at all.
async fn status_now(
    http: &reqwest::Client,
    certificate_der: &[u8],
    chain: &[Vec<u8>],
) -> Result<crate::ocsp::StatusAnswer, Error> {
    let issuer = chain
        .first()
        .ok_or_else(|| bad("the signer's chain is empty"))?;
    let anchors = TrustAnchors::new(chain.last().cloned().into_iter().collect());
    let (_, answer) = crate::ocsp::query(http, None, certificate_der, issuer, &anchors).await?;
    Ok(answer)
}

/// Build the manifest and the CAdES signed attributes of a new signature by the holder of
/// `certificate_der` (with `chain`: its issuing CA, then the root) over `files`, or over the
/// files of `existing` (co-signing). The certificate must be a signing certificate whose
/// status is good now.
pub async fn prepare(
    existing: Option<&[u8]>,
    files: Vec<DataFile>,
    certificate_der: &[u8],
    chain: &[Vec<u8>],
    http: &reqwest::Client,
) -> Result<PendingSignature, Error> {
    let mut container = match existing {
        Some(bytes) => {
            let c = Container::read(bytes)?;
            if !files.is_empty() {
                return Err(bad(
                    "a signed container's files cannot change; co-sign it without files",
                ));
            }
            c
        }
        None => Container {
            data_files: files,
            meta: BTreeMap::new(),
        },
    };
    if container.data_files.is_empty() {
        return Err(bad("nothing to sign"));
    }
    let mut names: Vec<&str> = container
        .data_files
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1])
        || names
            .iter()
            .any(|n| *n == "mimetype" || n.starts_with("META-INF/") || n.is_empty())
    {
        return Err(bad(
            "file names must be unique and not mimetype or META-INF/…",
        ));
    }
    let certificate = parse_certificate(certificate_der)?;
    if !crate::chain::has_non_repudiation(&certificate) {
        return Err(Error::new(
            ErrorCode::TrustWrongKeyUsage,
            "the certificate is not a signing certificate (no nonRepudiation key usage)",
        ));
    }
    let algorithm = crate::key::spki_algorithm(
        &certificate
            .tbs_certificate
            .subject_public_key_info
            .algorithm,
    )?;
    let status = status_now(http, certificate_der, chain).await?;
    if status.status != CertificateStatus::Good {
        return Err(Error::new(
            ErrorCode::TrustRevokedBeforeSigning,
            format!("the signing certificate's status is {:?}", status.status),
        ));
    }
    let n = container.signature_names().len() + 1;
    let signature_name = format!("META-INF/signature{n:03}.p7s");
    let manifest_name = if n == 1 {
        "META-INF/ASiCManifest.xml".to_owned()
    } else {
        format!("META-INF/ASiCManifest{n:03}.xml")
    };
    let manifest_xml = manifest(&signature_name, &container.data_files).into_bytes();
    let unsigned = cades::prepare(&cades::PrepareRequest {
        content_type: cades::ID_DATA,
        content: &manifest_xml,
        attach: false,
        certificate_der,
        algorithm,
        extra_certificates: chain,
        signing_time: Some(SystemTime::now()),
    })?;
    container.meta.insert(manifest_name, manifest_xml);
    Ok(PendingSignature {
        container: container.write()?,
        signature_name,
        unsigned,
        chain: chain.to_vec(),
    })
}

impl PendingSignature {
    /// What the signer signs (the DER of the signed attributes).
    pub fn to_be_signed(&self) -> Result<Vec<u8>, Error> {
        self.unsigned.to_be_signed()
    }

    /// The hash of [`PendingSignature::to_be_signed`], for signers of hashes.
    pub fn digest(&self) -> Result<Vec<u8>, Error> {
        self.unsigned.digest()
    }

    pub fn algorithm(&self) -> crate::KeyAlgorithm {
        self.unsigned.algorithm()
    }

    pub fn certificate_der(&self) -> Result<Vec<u8>, Error> {
        self.unsigned.certificate_der()
    }

    /// Finish with the signature value (DER for ECDSA): check it against the certificate,
    /// time-stamp it, embed the certificate's status after the time-stamp (CAdES-T with
    /// long-term validation data) and return the container.
    pub async fn finish(
        self,
        signature: &[u8],
        tsa_url: &str,
        http: &reqwest::Client,
    ) -> Result<Vec<u8>, Error> {
        self.unsigned.check(signature)?;
        let certificate_der = self.unsigned.certificate_der()?;
        let mut sd = self.unsigned.with_signature(signature.to_vec())?;
        let token = crate::timestamp::request_token(http, tsa_url, signature).await?;
        // The status after the time-stamp proves the certificate was good when it signed.
        let after = status_now(http, &certificate_der, &self.chain).await?;
        if after.status != CertificateStatus::Good {
            return Err(Error::new(
                ErrorCode::TrustRevokedBeforeSigning,
                format!("the signing certificate's status is {:?}", after.status),
            ));
        }
        let token_ci =
            der::Decode::from_der(&token).map_err(|e: der::Error| bad(format!("token: {e}")))?;
        let token_ci: cms::content_info::ContentInfo = token_ci;
        let revocation = RevocationValues {
            crl_vals: None,
            ocsp_vals: Some(vec![after.basic.clone()]),
        };
        cades::set_unsigned_attributes(
            &mut sd,
            vec![
                attribute(SIGNATURE_TIME_STAMP, &token_ci)?,
                attribute(REVOCATION_VALUES, &revocation)?,
            ],
        )?;
        let responder_certs: Vec<Vec<u8>> = after
            .basic
            .certs
            .iter()
            .flatten()
            .filter_map(|c| c.to_der().ok())
            .collect();
        cades::add_certificates(&mut sd, &responder_certs)?;
        let mut container = Container::read(&self.container)?;
        container
            .meta
            .insert(self.signature_name, cades::encode(&sd)?);
        container.write()
    }

    /// Keep it (JSON with base64 values) while the signer works.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        serde_json::to_vec(&StoredPending {
            container: b64(&self.container),
            signature_name: self.signature_name.clone(),
            unsigned: b64(&self.unsigned.to_der()?),
            chain: self.chain.iter().map(|c| b64(c)).collect(),
        })
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
    }

    /// Read back what [`PendingSignature::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<PendingSignature, Error> {
        let stored: StoredPending =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("pending signature: {e}")))?;
        let unb64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| bad(format!("pending signature: {e}")))
        };
        Ok(PendingSignature {
            container: unb64(&stored.container)?,
            signature_name: stored.signature_name,
            unsigned: cades::Unsigned::from_der(&unb64(&stored.unsigned)?)?,
            chain: stored
                .chain
                .iter()
                .map(|c| unb64(c))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A defect found by verification, with its own error code.
#[derive(Debug, Clone, Serialize)]
pub struct Defect {
    pub code: ErrorCode,
    pub message: String,
}

impl Defect {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Defect {
            code,
            message: message.into(),
        }
    }
}

/// What verification found out about one signature.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SignatureReport {
    pub file: String,
    pub signer: Option<String>,
    /// The ETSI semantics identifier (`PNOVN-…`) of a person's certificate.
    pub signer_serial_number: Option<String>,
    pub signing_time_unix: Option<i64>,
    pub timestamp_unix: Option<i64>,
    pub certificate_status: Option<CertificateStatus>,
    pub defects: Vec<Defect>,
}

/// The verdict on a container.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ContainerReport {
    pub data_files: Vec<String>,
    pub signatures: Vec<SignatureReport>,
    pub defects: Vec<Defect>,
}

impl ContainerReport {
    pub fn is_valid(&self) -> bool {
        self.defects.is_empty() && self.signatures.iter().all(|s| s.defects.is_empty())
    }
    /// Every defect's code, container-level first.
    pub fn codes(&self) -> Vec<ErrorCode> {
        self.defects
            .iter()
            .chain(self.signatures.iter().flat_map(|s| s.defects.iter()))
            .map(|d| d.code)
            .collect()
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn time_text(unix_secs: i64) -> String {
    chrono::DateTime::from_timestamp(unix_secs, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

impl std::fmt::Display for ContainerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Files: {}", self.data_files.join(", "))?;
        for d in &self.defects {
            writeln!(f, "  {}: {}", d.code, d.message)?;
        }
        for s in &self.signatures {
            writeln!(f, "Signature {}", s.file)?;
            writeln!(
                f,
                "  signer:             {}",
                s.signer.as_deref().unwrap_or("?")
            )?;
            if let Some(sn) = &s.signer_serial_number {
                writeln!(f, "  personal code:      {sn}")?;
            }
            if let Some(t) = s.signing_time_unix {
                writeln!(f, "  signing time:       {}", time_text(t))?;
            }
            if let Some(t) = s.timestamp_unix {
                writeln!(f, "  time-stamp:         {}", time_text(t))?;
            }
            match &s.certificate_status {
                Some(CertificateStatus::Good) => {
                    writeln!(f, "  certificate status: good at signing time")?
                }
                Some(CertificateStatus::Revoked {
                    revoked_unix,
                    reason,
                }) => writeln!(
                    f,
                    "  certificate status: revoked {} ({})",
                    time_text(*revoked_unix),
                    reason.as_deref().unwrap_or("no reason")
                )?,
                Some(CertificateStatus::Unknown) => writeln!(f, "  certificate status: unknown")?,
                None => writeln!(f, "  certificate status: not available")?,
            }
            for d in &s.defects {
                writeln!(f, "  {}: {}", d.code, d.message)?;
            }
        }
        write!(f, "{}", if self.is_valid() { "VALID" } else { "INVALID" })
    }
}

/// Verify every signature of a container against `anchors`.
pub fn verify(bytes: &[u8], anchors: &TrustAnchors) -> ContainerReport {
    let mut report = ContainerReport::default();
    let container = match Container::read(bytes) {
        Ok(c) => c,
        Err(e) => {
            report.defects.push(Defect::new(e.code, e.message));
            return report;
        }
    };
    report.data_files = container
        .data_files
        .iter()
        .map(|f| f.name.clone())
        .collect();
    let files: BTreeMap<&str, &[u8]> = container
        .data_files
        .iter()
        .map(|f| (f.name.as_str(), f.bytes.as_slice()))
        .collect();
    let manifests: Vec<(&String, Manifest)> = container
        .meta
        .iter()
        .filter(|(n, _)| n.starts_with("META-INF/ASiCManifest") && n.ends_with(".xml"))
        .filter_map(|(n, data)| match parse_manifest(data) {
            Ok(m) => Some((n, m)),
            Err(e) => {
                report
                    .defects
                    .push(Defect::new(e.code, format!("{n}: {}", e.message)));
                None
            }
        })
        .collect();
    let signatures = container.signature_names();
    if signatures.is_empty() {
        report.defects.push(Defect::new(
            ErrorCode::TrustNoSignature,
            "the container holds no signature",
        ));
    }
    let mut covered = std::collections::BTreeSet::new();
    for name in &signatures {
        let mut s = SignatureReport {
            file: name.clone(),
            ..SignatureReport::default()
        };
        let Some((manifest_name, manifest)) = manifests
            .iter()
            .find(|(_, m)| m.signature.as_deref() == Some(name.as_str()))
        else {
            s.defects.push(Defect::new(
                ErrorCode::TrustBadContainer,
                "no manifest names this signature",
            ));
            report.signatures.push(s);
            continue;
        };
        for (file, alg, digest) in &manifest.references {
            covered.insert(file.clone());
            match files.get(file.as_str()) {
                None => s.defects.push(Defect::new(
                    ErrorCode::TrustFileMissing,
                    format!("{file} is signed but not in the container"),
                )),
                Some(data) => {
                    let ok = alg == SHA256_URI && DigestAlgorithm::Sha256.digest(data) == *digest
                        || alg.ends_with("#sha384")
                            && DigestAlgorithm::Sha384.digest(data) == *digest
                        || alg.ends_with("#sha512")
                            && DigestAlgorithm::Sha512.digest(data) == *digest;
                    if !ok {
                        s.defects.push(Defect::new(
                            ErrorCode::TrustFileChanged,
                            format!("{file} does not match its signed digest"),
                        ));
                    }
                }
            }
        }
        let manifest_bytes = container
            .meta
            .get(*manifest_name)
            .cloned()
            .unwrap_or_default();
        let p7s = container.meta.get(name).cloned().unwrap_or_default();
        verify_signature(&p7s, &manifest_bytes, anchors, &mut s);
        report.signatures.push(s);
    }
    for f in &container.data_files {
        if !covered.contains(&f.name) && !signatures.is_empty() {
            report.defects.push(Defect::new(
                ErrorCode::TrustFileNotSigned,
                format!("{} is not covered by any signature", f.name),
            ));
        }
    }
    report
}

fn verify_signature(p7s: &[u8], manifest: &[u8], anchors: &TrustAnchors, s: &mut SignatureReport) {
    let sd = match cades::decode(p7s) {
        Ok(sd) => sd,
        Err(e) => {
            s.defects
                .push(Defect::new(ErrorCode::TrustBadSignature, e.message));
            return;
        }
    };
    let signer = match cades::verify(&sd, Some(manifest)) {
        Ok(v) => v,
        Err(e) => {
            s.defects
                .push(Defect::new(ErrorCode::TrustBadSignature, e.message));
            return;
        }
    };
    let cert = &signer.certificate;
    s.signer = Some(cert.tbs_certificate.subject.to_string());
    s.signer_serial_number = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == const_oid::db::rfc4519::SERIAL_NUMBER)
        .and_then(|atv| {
            decode_any::<der::asn1::PrintableString>(&atv.value).map(|p| p.to_string())
        });
    s.signing_time_unix = signer.signing_time.map(unix);
    let unsigned = signer.signer_info.unsigned_attrs.as_ref();
    // The time-stamp is the proof of time; the claimed signing time is only the signer's word.
    let ts_time = match find_attribute(unsigned, SIGNATURE_TIME_STAMP) {
        None => {
            s.defects.push(Defect::new(
                ErrorCode::TrustBadTimeStamp,
                "no signature time-stamp",
            ));
            None
        }
        Some(token) => match to_der(token)
            .and_then(|t| crate::timestamp::verify_token(&t, &signer.signature, anchors))
        {
            Ok(v) => {
                s.timestamp_unix = Some(unix(v.time));
                Some(v.time)
            }
            Err(e) => {
                s.defects
                    .push(Defect::new(ErrorCode::TrustBadTimeStamp, e.message));
                None
            }
        },
    };
    let at = ts_time
        .or(signer.signing_time)
        .unwrap_or_else(SystemTime::now);
    let certs = cades::certificates(&sd);
    let path = match verify_path(&signer.certificate_der, &certs, anchors, at) {
        Ok(p) => p,
        Err(e) => {
            s.defects
                .push(Defect::new(ErrorCode::TrustUnknownCa, e.message));
            return;
        }
    };
    let Some(issuer) = path.issuer().and_then(|d| parse_certificate(d).ok()) else {
        s.defects
            .push(Defect::new(ErrorCode::TrustUnknownCa, "no issuer"));
        return;
    };
    let basic = find_attribute(unsigned, REVOCATION_VALUES)
        .and_then(decode_any::<RevocationValues>)
        .and_then(|r| r.ocsp_vals)
        .and_then(|v| v.into_iter().next());
    let Some(basic) = basic else {
        s.defects.push(Defect::new(
            ErrorCode::TrustNoRevocationData,
            "no OCSP response embedded",
        ));
        return;
    };
    match crate::ocsp::verify_basic(&basic, cert, &issuer, anchors) {
        Ok(answer) => {
            match &answer.status {
                CertificateStatus::Revoked { revoked_unix, .. } if *revoked_unix <= unix(at) => {
                    s.defects.push(Defect::new(
                        ErrorCode::TrustRevokedBeforeSigning,
                        format!(
                            "revoked at {} before signing at {}",
                            time_text(*revoked_unix),
                            time_text(unix(at))
                        ),
                    ));
                }
                CertificateStatus::Unknown => {
                    s.defects.push(Defect::new(
                        ErrorCode::TrustNoRevocationData,
                        "the responder does not know the certificate",
                    ));
                }
                _ => {}
            }
            s.certificate_status = Some(answer.status);
        }
        Err(e) => s.defects.push(Defect::new(e.code, e.message)),
    }
}
