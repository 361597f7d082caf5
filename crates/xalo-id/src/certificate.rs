//! Checking a person's certificate as the sign-in needs it: issued (through the persons
//! CA) by the national root, valid now, meant for authentication, and reported good by
//! the OCSP responder the certificate names. The CA certificates are fetched once from the
//! trust service and kept. A certificate found good is not asked about again for a short
//! while (as the exchange reuses its OCSP answers), never past the answer's nextUpdate
//! or the certificate's expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use der::Decode;
use tokio::sync::OnceCell;
use x509_cert::Certificate;
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_trust::chain::{TrustAnchors, verify_path_cached};
use xalo_trust::ocsp::{Asking, CertificateStatus, Parsed, VerifiedAnswers};

use crate::identity::person_of_certificate;

/// Where the trust service is, and the CA certificates once fetched.
pub struct CertificateCheck {
    trust_url: String,
    http: reqwest::Client,
    cas: OnceCell<Authorities>,
    reuse: Duration,
    asking: Asking,
    /// OCSP answers whose signatures were verified (the responder repeats cached answers).
    verified: VerifiedAnswers,
    /// Certificates found good, by the SHA-256 of their DER, until when.
    good: Mutex<HashMap<[u8; 32], (Instant, CertifiedPerson)>>,
}

/// The national root (as anchor) and the persons CA, as bytes and parsed once.
pub struct Authorities {
    pub anchors: TrustAnchors,
    pub persons: Vec<u8>,
    persons_parsed: Certificate,
}

/// Bound the cache so a flood of distinct certificates cannot grow memory without end.
const CACHE_LIMIT: usize = 100_000;

/// A person proved by a certificate.
#[derive(Debug, Clone)]
pub struct CertifiedPerson {
    pub code: PersonalCode,
    pub given_name: String,
    pub surname: String,
    pub certificate: Certificate,
}

fn bad(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::AuthCertificate, m)
}

impl CertificateCheck {
    pub fn new(trust_url: &str, http: reqwest::Client) -> CertificateCheck {
        CertificateCheck {
            trust_url: trust_url.trim_end_matches('/').to_owned(),
            http,
            cas: OnceCell::new(),
            reuse: Duration::ZERO,
            asking: Asking::default(),
            verified: VerifiedAnswers::default(),
            good: Mutex::new(HashMap::new()),
        }
    }

    /// Reuse a good answer for up to `reuse` (zero: ask the responder every time).
    pub fn reusing_answers_for(mut self, reuse: Duration) -> CertificateCheck {
        self.reuse = reuse;
        self
    }

    /// Ask the OCSP responder as `asking` says (by default with a nonce).
    pub fn asking(mut self, asking: Asking) -> CertificateCheck {
        self.asking = asking;
        self
    }

    /// Forget every certificate found good (after a revocation the operator knows of).
    pub fn clear(&self) {
        if let Ok(mut g) = self.good.lock() {
            g.clear();
        }
    }

    async fn fetch(&self, name: &str) -> Result<Vec<u8>, Error> {
        let url = format!("{}/ca/{name}.crt", self.trust_url);
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("{url}: {e}")))?;
        if !r.status().is_success() {
            return Err(Error::new(
                ErrorCode::TrustUpstream,
                format!("{url}: {}", r.status()),
            ));
        }
        Ok(r.bytes()
            .await
            .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("{url}: {e}")))?
            .to_vec())
    }

    /// The national root (as anchor) and the persons CA.
    pub async fn authorities(&self) -> Result<&Authorities, Error> {
        self.cas
            .get_or_try_init(|| async {
                let root = self.fetch("root").await?;
                let persons = self.fetch("persons").await?;
                let persons_parsed = Certificate::from_der(&persons)
                    .map_err(|e| bad(format!("the persons CA's certificate: {e}")))?;
                Ok(Authorities {
                    anchors: TrustAnchors::new(vec![root]),
                    persons,
                    persons_parsed,
                })
            })
            .await
    }

    /// Check `der` fully (or take a recent check of the same certificate); returns the
    /// person it names.
    pub async fn check(&self, der: &[u8]) -> Result<CertifiedPerson, Error> {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(der).into();
        if let Ok(g) = self.good.lock()
            && let Some((until, person)) = g.get(&key)
            && Instant::now() < *until
        {
            return Ok(person.clone());
        }
        let (person, until) = self.check_now(der).await?;
        if let Some(until) = until
            && let Ok(mut g) = self.good.lock()
        {
            if g.len() >= CACHE_LIMIT {
                g.retain(|_, (u, _)| Instant::now() < *u);
                if g.len() >= CACHE_LIMIT {
                    g.clear();
                }
            }
            g.insert(key, (until, person.clone()));
        }
        Ok(person)
    }

    /// Check `der` with the responder; returns the person and until when the answer may
    /// be reused, if at all.
    async fn check_now(&self, der: &[u8]) -> Result<(CertifiedPerson, Option<Instant>), Error> {
        let Authorities {
            anchors,
            persons,
            persons_parsed,
        } = self.authorities().await?;
        let certificate = Parsed::new(der).map_err(|e| bad(e.message))?;
        // A card's path is the same at every login: verified once for a while, for exactly
        // these bytes and only while every certificate in it is valid. OCSP is still asked.
        let path = verify_path_cached(
            der,
            std::slice::from_ref(persons),
            anchors,
            SystemTime::now(),
        )
        .map_err(|e| {
            bad(format!(
                "not issued by the national persons CA: {}",
                e.message
            ))
        })?;
        let issuer = path
            .issuer()
            .ok_or_else(|| bad("the certificate has no issuer in the path"))?;
        // The path ends in the persons CA, parsed once; another issuer is parsed here.
        let other;
        let issuer = if issuer == persons.as_slice() {
            persons_parsed
        } else {
            other = Certificate::from_der(issuer).map_err(|e| bad(format!("issuer: {e}")))?;
            &other
        };
        let asked = (Instant::now(), SystemTime::now());
        let (_, answer) = xalo_trust::ocsp::query_parsed(
            &self.http,
            None,
            &certificate,
            issuer,
            anchors,
            self.asking,
            // An answer to a nonce is never sent again: nothing to remember.
            (!self.asking.nonce).then_some(&self.verified),
        )
        .await
        .map_err(|e| bad(format!("certificate status: {}", e.message)))?;
        match answer.status {
            CertificateStatus::Good => {}
            CertificateStatus::Revoked { .. } => return Err(bad("the certificate is revoked")),
            CertificateStatus::Unknown => return Err(bad("the certificate's status is unknown")),
        }
        let (code, given_name, surname) = person_of_certificate(certificate.certificate())?;
        // Reuse ends at the earliest of: the configured reuse, the answer's nextUpdate
        // (of every response in it), the certificate's notAfter.
        let mut ends = vec![
            certificate
                .certificate()
                .tbs_certificate
                .validity
                .not_after
                .to_system_time(),
        ];
        ends.extend(
            answer
                .basic
                .tbs_response_data
                .responses
                .iter()
                .filter_map(|r| r.next_update.map(|t| t.0.to_system_time())),
        );
        let until = if self.reuse.is_zero() {
            None
        } else {
            ends.into_iter()
                .min()
                .and_then(|end| end.duration_since(asked.1).ok())
                .map(|left| asked.0 + left.min(self.reuse))
        };
        let person = CertifiedPerson {
            code,
            given_name,
            surname,
            certificate: certificate.into_certificate(),
        };
        Ok((person, until))
    }
}

/// Verify an ECDSA P-256 signature over a SHA-256 hash with the certificate's key.
pub fn verify_hash_signature(
    cert: &Certificate,
    hash: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::ecdsa::{Signature, VerifyingKey};
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key = VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
        .map_err(|_| bad("the certificate's key is not a P-256 key"))?;
    let sig = Signature::from_slice(signature).map_err(|_| bad("malformed signature"))?;
    key.verify_prehash(hash, &sig).map_err(|_| {
        Error::new(
            ErrorCode::AuthLoginFailed,
            "the signature does not match the certificate",
        )
    })
}
