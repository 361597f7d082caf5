//! Certificate paths: does a certificate lead to one of our trusted roots, and through
//! which issuer? The path validation itself is rustls-webpki's.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use der::Encode;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_cert::Certificate;
use xalo_core::{Error, ErrorCode};

/// Extended key usage is checked by each use (signing, time-stamping) itself, so the path
/// check accepts any.
struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

const ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
];

/// The roots a verifier trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    roots: Vec<Vec<u8>>,
}

impl TrustAnchors {
    pub fn new(roots: Vec<Vec<u8>>) -> Self {
        TrustAnchors { roots }
    }
    /// Roots from PEM text or DER.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Ok(TrustAnchors::new(crate::authority::read_certificates(
            bytes,
        )?))
    }
    pub fn roots(&self) -> &[Vec<u8>] {
        &self.roots
    }
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// A validated path: the end-entity certificate, then each issuer up to the root.
#[derive(Debug, Clone)]
pub struct CertificatePath {
    pub certificates: Vec<Vec<u8>>,
}

impl CertificatePath {
    /// The certificate that issued the end entity.
    pub fn issuer(&self) -> Option<&[u8]> {
        self.certificates.get(1).map(Vec::as_slice)
    }
}

/// Check that `end_entity` chains to one of `anchors` through `intermediates`, valid at `at`.
pub fn verify_path(
    end_entity: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &TrustAnchors,
    at: SystemTime,
) -> Result<CertificatePath, Error> {
    let unknown = |e: webpki::Error| {
        Error::new(
            ErrorCode::TrustUnknownCa,
            format!("certificate path: {e:?}"),
        )
    };
    // A root may itself sign (e.g. the root's own OCSP responder certificate is not
    // involved, but a self-signed end entity that is a root is trusted as is).
    if anchors.roots.iter().any(|r| r == end_entity) {
        return Ok(CertificatePath {
            certificates: vec![end_entity.to_vec()],
        });
    }
    let ee_der = CertificateDer::from(end_entity);
    let ee = EndEntityCert::try_from(&ee_der).map_err(unknown)?;
    let root_ders: Vec<CertificateDer<'_>> = anchors
        .roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let trust_anchors = root_ders
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unknown)?;
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let verified = ee
        .verify_for_usage(
            ALGORITHMS,
            &trust_anchors,
            &inter,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            AnyUsage,
            None,
            None,
        )
        .map_err(unknown)?;
    // The path webpki verified, issuer first, then the root whose anchor it ended at:
    // callers need the issuer (OCSP) or the whole chain (embedding). Taken from webpki's
    // answer rather than rebuilt, which would check every signature a second time.
    let mut path = vec![end_entity.to_vec()];
    path.extend(
        verified
            .intermediate_certificates()
            .map(|c| c.der().as_ref().to_vec()),
    );
    let anchor = verified.anchor();
    let root = anchors
        .roots
        .iter()
        .zip(&trust_anchors)
        .find(|(_, a)| std::ptr::eq(*a, anchor))
        .map(|(r, _)| r)
        .ok_or_else(|| {
            Error::new(
                ErrorCode::TrustUnknownCa,
                "certificate path: ends at an unknown anchor",
            )
        })?;
    path.push(root.clone());
    Ok(CertificatePath { certificates: path })
}

/// How long a verified path is reused: the same bytes verify the same way at any time
/// within every certificate's validity, so this only bounds how long the answer is held.
const PATH_REUSE: Duration = Duration::from_secs(600);

/// Bound the cache so a flood of distinct certificates cannot grow memory without end.
const PATH_CACHE_LIMIT: usize = 10_000;

/// A verified path, when it was verified, and the times (Unix seconds) at which every
/// certificate in it is valid.
struct VerifiedPath {
    path: CertificatePath,
    verified: Instant,
    valid_from: u64,
    valid_until: u64,
}

/// Paths verified recently, by the SHA-256 of everything the verification read.
static VERIFIED: LazyLock<Mutex<HashMap<[u8; 32], VerifiedPath>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn path_key(end_entity: &[u8], intermediates: &[Vec<u8>], anchors: &TrustAnchors) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    // Lengths and a tag per group, so no two different questions hash the same input.
    let mut part = |tag: u8, bytes: &[u8]| {
        h.update([tag]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    part(0, end_entity);
    for c in intermediates {
        part(1, c);
    }
    for r in &anchors.roots {
        part(2, r);
    }
    h.finalize().into()
}

/// The times (Unix seconds) at which every certificate of `path` is valid.
fn validity_window(path: &CertificatePath) -> Option<(u64, u64)> {
    use der::Decode;
    let mut window = (0u64, u64::MAX);
    for der in &path.certificates {
        let c = Certificate::from_der(der).ok()?;
        let v = &c.tbs_certificate.validity;
        window.0 = window.0.max(v.not_before.to_unix_duration().as_secs());
        window.1 = window.1.min(v.not_after.to_unix_duration().as_secs());
    }
    Some(window)
}

/// [`verify_path`], answered from a recent verification of exactly the same certificates
/// and anchors when `at` lies within the validity of every certificate of that path (the
/// only thing besides the bytes that the verification depends on). Failures are not kept.
pub fn verify_path_cached(
    end_entity: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &TrustAnchors,
    at: SystemTime,
) -> Result<CertificatePath, Error> {
    let key = path_key(end_entity, intermediates, anchors);
    // verify_path checks validity at whole seconds too.
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Ok(cache) = VERIFIED.lock()
        && let Some(v) = cache.get(&key)
        && v.verified.elapsed() < PATH_REUSE
        && v.valid_from <= secs
        && secs <= v.valid_until
    {
        return Ok(v.path.clone());
    }
    let path = verify_path(end_entity, intermediates, anchors, at)?;
    if let Some((valid_from, valid_until)) = validity_window(&path)
        && let Ok(mut cache) = VERIFIED.lock()
    {
        if cache.len() >= PATH_CACHE_LIMIT {
            cache.retain(|_, v| v.verified.elapsed() < PATH_REUSE);
            if cache.len() >= PATH_CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(
            key,
            VerifiedPath {
                path: path.clone(),
                verified: Instant::now(),
                valid_from,
                valid_until,
            },
        );
    }
    Ok(path)
}

/// Whether `issuer` signed `cert`.
pub fn issued_by(cert: &Certificate, issuer: &Certificate) -> bool {
    let (Ok(name), Ok(tbs)) = (
        cert.tbs_certificate.issuer.to_der(),
        cert.tbs_certificate.to_der(),
    ) else {
        return false;
    };
    if issuer.tbs_certificate.subject.to_der().ok().as_deref() != Some(name.as_slice()) {
        return false;
    }
    crate::key::verify_signature(
        &issuer.tbs_certificate.subject_public_key_info,
        &cert.signature_algorithm,
        &tbs,
        cert.signature.raw_bytes(),
    )
    .is_ok()
}

/// Whether the certificate lists `oid` among its extended key usages.
pub fn has_extended_key_usage(cert: &Certificate, oid: &der::asn1::ObjectIdentifier) -> bool {
    use der::Decode;
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE)
        .filter_map(|e| {
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok()
        })
        .any(|eku| eku.0.contains(oid))
}

/// Whether the certificate's key usage commits to content (nonRepudiation), as a signing
/// certificate's does and an authentication certificate's does not.
pub fn has_non_repudiation(cert: &Certificate) -> bool {
    use der::Decode;
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_KEY_USAGE)
        .filter_map(|e| x509_cert::ext::pkix::KeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .any(|ku| ku.non_repudiation())
}

/// The OCSP URL in a certificate's authority information access.
pub fn ocsp_url(cert: &Certificate) -> Option<String> {
    use der::Decode;
    use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
    use x509_cert::ext::pkix::name::GeneralName;
    let ext = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_PE_AUTHORITY_INFO_ACCESS)?;
    let aia = AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes()).ok()?;
    aia.0
        .into_iter()
        .find_map(|d| match (d.access_method, d.access_location) {
            (m, GeneralName::UniformResourceIdentifier(u))
                if m == const_oid::db::rfc5280::ID_AD_OCSP =>
            {
                Some(u.to_string())
            }
            _ => None,
        })
}
