//! Certificate checks for the exchange: does a certificate chain to an authority in the
//! global configuration, and does a fresh OCSP answer say it is good?
//!
//! A gateway fetches OCSP answers for its own certificates and passes them to peers (the
//! TLS answer stapled, the signing certificate's in a header), so a peer only verifies a
//! signature instead of asking the responder per message. Answers are cached by the
//! certificate's hash; verified passed-on answers too, so a busy pair of gateways checks
//! each answer once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use xalo_core::{Error, ErrorCode};
use xalo_trust::chain::{TrustAnchors, issued_by, verify_path};
use xalo_trust::ocsp::{CertificateStatus, basic_response, verify_basic};

use crate::global_conf::GlobalConf;

/// Bound the caches so a flood of distinct certificates cannot grow memory without end.
const CACHE_LIMIT: usize = 10_000;

fn status_error(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::ExchCertificateStatus, m)
}

/// The roots and intermediates of a global configuration.
#[derive(Clone, Debug)]
pub struct Authorities {
    pub anchors: TrustAnchors,
    pub intermediates: Vec<Vec<u8>>,
}

impl Authorities {
    pub fn of(conf: &GlobalConf) -> Authorities {
        let (roots, intermediates) = conf.ca_certificates();
        Authorities {
            anchors: TrustAnchors::new(roots),
            intermediates,
        }
    }

    /// The certificate that issued `cert`, among the authorities.
    pub fn issuer_of(&self, cert: &x509_cert::Certificate) -> Option<Vec<u8>> {
        self.intermediates
            .iter()
            .chain(self.anchors.roots().iter())
            .find(|c| {
                xalo_trust::authority::parse_certificate(c).is_ok_and(|ca| issued_by(cert, &ca))
            })
            .cloned()
    }
}

struct Cached {
    at: Instant,
    der: Arc<Vec<u8>>,
}

/// A cache keyed by exact byte strings (certificates, OCSP answers), found through a cheap
/// fingerprint and confirmed by comparing every byte: no cryptographic hash of kilobytes
/// per message, and no way to be confused by a collision.
struct ExactCache<V> {
    buckets: HashMap<u64, Vec<Exact<V>>>,
    len: usize,
}

/// The byte strings of a key, and the value.
type Exact<V> = (Vec<Vec<u8>>, V);

/// Entries kept under one fingerprint (a flood of colliding inputs evicts, never grows).
const BUCKET_LIMIT: usize = 8;

impl<V> Default for ExactCache<V> {
    fn default() -> Self {
        ExactCache {
            buckets: HashMap::new(),
            len: 0,
        }
    }
}

impl<V> ExactCache<V> {
    /// Lengths and the last bytes of each part (DER ends in a signature, so the tail
    /// tells different objects apart).
    fn fingerprint(parts: &[&[u8]]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in parts {
            p.len().hash(&mut h);
            p[p.len().saturating_sub(32)..].hash(&mut h);
        }
        h.finish()
    }

    fn get(&self, parts: &[&[u8]]) -> Option<&V> {
        self.buckets
            .get(&Self::fingerprint(parts))?
            .iter()
            .find(|(k, _)| k.len() == parts.len() && k.iter().zip(parts).all(|(a, b)| a == b))
            .map(|(_, v)| v)
    }

    fn insert(&mut self, parts: &[&[u8]], value: V) {
        if self.len >= CACHE_LIMIT {
            self.clear();
        }
        let bucket = self.buckets.entry(Self::fingerprint(parts)).or_default();
        if let Some(i) = bucket
            .iter()
            .position(|(k, _)| k.len() == parts.len() && k.iter().zip(parts).all(|(a, b)| a == b))
        {
            bucket[i].1 = value;
            return;
        }
        if bucket.len() >= BUCKET_LIMIT {
            bucket.remove(0);
            self.len -= 1;
        }
        bucket.push((parts.iter().map(|p| p.to_vec()).collect(), value));
        self.len += 1;
    }

    fn clear(&mut self) {
        self.buckets.clear();
        self.len = 0;
    }
}

/// OCSP answers for certificates, fetched or verified, with their age.
pub struct StatusCache {
    http: reqwest::Client,
    /// How long a fetched good answer is reused, and how old (since the responder
    /// produced it) an answer a peer passes on may be; a reload changes them.
    limits: RwLock<(Duration, Duration)>,
    fetched: Mutex<ExactCache<Cached>>,
    verified: Mutex<ExactCache<Instant>>,
}

impl StatusCache {
    pub fn new(reuse: Duration, max_age: Duration) -> Result<StatusCache, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        Ok(StatusCache {
            http,
            limits: RwLock::new((reuse, max_age)),
            fetched: Mutex::new(ExactCache::default()),
            verified: Mutex::new(ExactCache::default()),
        })
    }

    /// (reuse, max_age).
    pub fn limits(&self) -> (Duration, Duration) {
        self.limits
            .read()
            .map(|l| *l)
            .unwrap_or((Duration::ZERO, Duration::ZERO))
    }

    pub fn set_limits(&self, reuse: Duration, max_age: Duration) {
        if let Ok(mut l) = self.limits.write() {
            *l = (reuse, max_age);
        }
    }

    /// Forget every cached answer (after a revocation the operator knows of).
    pub fn clear(&self) {
        if let Ok(mut f) = self.fetched.lock() {
            f.clear();
        }
        if let Ok(mut v) = self.verified.lock() {
            v.clear();
        }
    }

    /// A good OCSP answer (DER) for `cert_der`, from the cache or the responder. Fails when
    /// the certificate does not chain to the configuration's authorities or is not good.
    pub async fn good_answer(
        &self,
        cert_der: &[u8],
        conf: &GlobalConf,
    ) -> Result<Arc<Vec<u8>>, Error> {
        let (reuse, _) = self.limits();
        if let Ok(f) = self.fetched.lock()
            && let Some(c) = f.get(&[cert_der])
            && c.at.elapsed() < reuse
        {
            return Ok(c.der.clone());
        }
        let authorities = Authorities::of(conf);
        let cert = xalo_trust::authority::parse_certificate(cert_der)
            .map_err(|e| Error::new(ErrorCode::ExchCertificate, e.message))?;
        verify_path(
            cert_der,
            &authorities.intermediates,
            &authorities.anchors,
            SystemTime::now(),
        )
        .map_err(|e| Error::new(ErrorCode::ExchCertificate, e.message))?;
        let issuer = authorities.issuer_of(&cert).ok_or_else(|| {
            Error::new(
                ErrorCode::ExchCertificate,
                "no issuer in the global configuration",
            )
        })?;
        let (der, answer) =
            xalo_trust::ocsp::query(&self.http, None, cert_der, &issuer, &authorities.anchors)
                .await
                .map_err(|e| status_error(format!("OCSP: {}", e.message)))?;
        match answer.status {
            CertificateStatus::Good => {}
            other => {
                return Err(status_error(format!(
                    "the certificate's status is {other:?}"
                )));
            }
        }
        let der = Arc::new(der);
        if let Ok(mut f) = self.fetched.lock() {
            f.insert(
                &[cert_der],
                Cached {
                    at: Instant::now(),
                    der: der.clone(),
                },
            );
        }
        Ok(der)
    }

    /// Check an OCSP answer a peer passed on for `cert_der`: signed for this certificate
    /// by its issuer's responder, recent enough, and good; the certificate must chain to the
    /// configuration's authorities.
    pub fn verify_answer(
        &self,
        cert_der: &[u8],
        ocsp_der: &[u8],
        conf: &GlobalConf,
    ) -> Result<(), Error> {
        let (reuse, max_age) = self.limits();
        if let Ok(v) = self.verified.lock()
            && let Some(at) = v.get(&[cert_der, ocsp_der])
            && at.elapsed() < reuse
        {
            return Ok(());
        }
        let authorities = Authorities::of(conf);
        let cert = xalo_trust::authority::parse_certificate(cert_der)
            .map_err(|e| Error::new(ErrorCode::ExchCertificate, e.message))?;
        verify_path(
            cert_der,
            &authorities.intermediates,
            &authorities.anchors,
            SystemTime::now(),
        )
        .map_err(|e| Error::new(ErrorCode::ExchCertificate, e.message))?;
        let issuer_der = authorities.issuer_of(&cert).ok_or_else(|| {
            Error::new(
                ErrorCode::ExchCertificate,
                "no issuer in the global configuration",
            )
        })?;
        let issuer = xalo_trust::authority::parse_certificate(&issuer_der)?;
        let basic = basic_response(ocsp_der).map_err(|e| status_error(e.message))?;
        let answer = verify_basic(&basic, &cert, &issuer, &authorities.anchors)
            .map_err(|e| status_error(e.message))?;
        let age = SystemTime::now()
            .duration_since(answer.produced_at)
            .unwrap_or_default();
        if age > max_age {
            return Err(status_error(format!(
                "the OCSP answer is {}s old, more than the {}s allowed",
                age.as_secs(),
                max_age.as_secs()
            )));
        }
        match answer.status {
            CertificateStatus::Good => {}
            other => {
                return Err(status_error(format!(
                    "the certificate's status is {other:?}"
                )));
            }
        }
        if let Ok(mut v) = self.verified.lock() {
            v.insert(&[cert_der, ocsp_der], Instant::now());
        }
        Ok(())
    }
}

/// The organisation identifier (2.5.4.97) in a certificate's subject, e.g. `NTRVN-000001`.
pub fn organisation_identifier(cert: &x509_cert::Certificate) -> Option<String> {
    const OID: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.4.97");
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == OID)
        .and_then(|atv| {
            std::str::from_utf8(atv.value.value())
                .ok()
                .map(str::to_owned)
        })
}

/// The organisation identifier a member's signing certificate must carry: ETSI EN 319
/// 412-1's national trade register form, `NTR{instance}-{member code}`, as the trust
/// service issues for organisations.
pub fn member_identifier(member: &xalo_core::MemberId) -> String {
    format!("NTR{}-{}", member.instance(), member.code())
}
