//! The OCSP responder (RFC 6960) and the client side of certificate status.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use der::Decode;
use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier as Oid, OctetString};
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, Request, ResponderId, ResponseBytes, ResponseData, RevokedInfo,
    SingleResponse, TbsRequest, Version,
};
use xalo_core::{Error, ErrorCode};

use crate::authority::{AuthorityName, Pki, parse_certificate, serial_hex};
use crate::chain::{TrustAnchors, has_extended_key_usage, verify_path_cached};
use crate::key::{oid, to_der, verify_signature};
use crate::store::{self, RevocationReason};

pub const ID_PKIX_OCSP_BASIC: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1.1");
pub const ID_PKIX_OCSP_NONCE: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1.2");
const ID_KP_OCSP_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.9");

/// How long answers stay good and cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OcspSettings {
    /// Seconds a signed answer is reused for the same question (0: sign every time).
    pub cache_secs: u64,
    /// Seconds between thisUpdate and nextUpdate.
    pub next_update_secs: u64,
}

impl Default for OcspSettings {
    fn default() -> Self {
        OcspSettings {
            cache_secs: 60,
            next_update_secs: 3600,
        }
    }
}

fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

fn hash_for(alg: &Oid, data: &[u8]) -> Option<Vec<u8>> {
    match *alg {
        oid::SHA1 => Some(sha1(data)),
        _ => crate::key::DigestAlgorithm::from_oid(alg).map(|d| d.digest(data)),
    }
}

/// The CertID of `cert` under `issuer`, with SHA-1 as openssl and browsers send it.
pub fn cert_id(cert: &Certificate, issuer: &Certificate) -> Result<CertId, Error> {
    let name = to_der(&issuer.tbs_certificate.subject)?;
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let octets = |b: Vec<u8>| {
        OctetString::new(b).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
    };
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: oid::SHA1,
            parameters: None,
        },
        issuer_name_hash: octets(sha1(&name))?,
        issuer_key_hash: octets(sha1(key))?,
        serial_number: cert.tbs_certificate.serial_number.clone(),
    })
}

/// Parse a DER OCSPRequest: what the fuzz target drives.
pub fn parse_request(der: &[u8]) -> Result<OcspRequest, Error> {
    OcspRequest::from_der(der)
        .map_err(|e| Error::new(ErrorCode::TrustBadOcspRequest, e.to_string()))
}

/// The DER OCSPResponse for a request that could not be parsed.
pub fn malformed_response() -> Vec<u8> {
    to_der(&OcspResponse {
        response_status: OcspResponseStatus::MalformedRequest,
        response_bytes: None,
    })
    .unwrap_or_default()
}

/// The responder: answers for the three authorities, each with its own OCSP certificate.
pub struct OcspResponder {
    pki: Pki,
    settings: OcspSettings,
    cache: Mutex<HashMap<Vec<u8>, CachedAnswer>>,
    /// Per authority, in [`AuthorityName::ALL`]'s order.
    issuers: Vec<Issuer>,
}

/// What the responder compares and sends for one authority, worked out once rather than
/// at every question: a request names its issuer by digests of the issuer's name and key,
/// and every answer of the authority carries the same responder ID and certificates.
struct Issuer {
    name: AuthorityName,
    name_der: Vec<u8>,
    key: Vec<u8>,
    /// The SHA-1 digests of the name and key, as openssl and browsers ask.
    sha1: (Vec<u8>, Vec<u8>),
    /// The responder's key ID (SHA-1 of its public key).
    responder_key_hash: Vec<u8>,
    /// Serials of the authority's own service certificates, good without the register.
    own_serials: Vec<String>,
    /// `[0] EXPLICIT SEQUENCE OF Certificate`: the responder's certificate, then the
    /// issuing CA's (below the root), as encoded once.
    certs: Vec<u8>,
}

impl Issuer {
    fn new(pki: &Pki, name: AuthorityName) -> Result<Issuer, Error> {
        let ca = pki.authority(name);
        let name_der = to_der(&ca.certificate.tbs_certificate.subject)?;
        let key = ca
            .certificate
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let signer = pki.ocsp_signer(name);
        // The authorities' own service certificates are not in the issued table.
        let own: Vec<&crate::Signer> = match name {
            AuthorityName::Root => vec![
                pki.authority(AuthorityName::Organisations),
                pki.authority(AuthorityName::Persons),
                pki.ocsp_signer(AuthorityName::Root),
            ],
            AuthorityName::Organisations => vec![
                pki.ocsp_signer(AuthorityName::Organisations),
                pki.tsa_signer(),
            ],
            AuthorityName::Persons => vec![pki.ocsp_signer(AuthorityName::Persons)],
        };
        let mut chain = signer.certificate_der.clone();
        if name != AuthorityName::Root {
            chain.extend_from_slice(&ca.certificate_der);
        }
        let certs = tlv(
            der::Tag::ContextSpecific {
                constructed: true,
                number: der::TagNumber::N0,
            },
            &tlv(der::Tag::Sequence, &chain)?,
        )?;
        Ok(Issuer {
            name,
            sha1: (sha1(&name_der), sha1(&key)),
            name_der,
            key,
            responder_key_hash: sha1(
                signer
                    .certificate
                    .tbs_certificate
                    .subject_public_key_info
                    .subject_public_key
                    .raw_bytes(),
            ),
            own_serials: own.iter().map(|s| serial_hex(&s.certificate)).collect(),
            certs,
        })
    }

    /// Whether `id` names this issuer.
    fn named_by(&self, id: &CertId) -> bool {
        let (name_hash, key_hash) = (
            id.issuer_name_hash.as_bytes(),
            id.issuer_key_hash.as_bytes(),
        );
        if id.hash_algorithm.oid == oid::SHA1 {
            return self.sha1.0 == name_hash && self.sha1.1 == key_hash;
        }
        hash_for(&id.hash_algorithm.oid, &self.name_der).as_deref() == Some(name_hash)
            && hash_for(&id.hash_algorithm.oid, &self.key).as_deref() == Some(key_hash)
    }
}

/// One DER element: `tag`, its length, `content`.
fn tlv(tag: der::Tag, content: &[u8]) -> Result<Vec<u8>, Error> {
    let any = der::asn1::AnyRef::new(tag, content)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("DER element: {e}")))?;
    to_der(&any)
}

const CACHE_LIMIT: usize = 100_000;

/// A signed answer, when it was made, and the statuses it states.
type CachedAnswer = (Instant, Vec<CertStatus>, std::sync::Arc<Vec<u8>>);

impl OcspResponder {
    pub fn new(pki: Pki, settings: OcspSettings) -> Result<Self, Error> {
        let issuers = AuthorityName::ALL
            .into_iter()
            .map(|a| Issuer::new(&pki, a))
            .collect::<Result<_, _>>()?;
        Ok(OcspResponder {
            pki,
            settings,
            cache: Mutex::new(HashMap::new()),
            issuers,
        })
    }

    fn issuer_of(&self, id: &CertId) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.named_by(id))
    }

    async fn status(&self, issuer: &Issuer, id: &CertId) -> Result<CertStatus, Error> {
        let serial = hex::encode(id.serial_number.as_bytes());
        if issuer.own_serials.contains(&serial) {
            return Ok(CertStatus::good());
        }
        let authority = issuer.name;
        match store::find_optional(self.pki.database(), &serial).await? {
            Some(r) if r.authority == authority => match (r.revoked_unix, r.revocation_reason) {
                (Some(at), reason) => Ok(CertStatus::revoked(RevokedInfo {
                    revocation_time: ocsp_time(
                        SystemTime::UNIX_EPOCH + Duration::from_secs(at.max(0) as u64),
                    )?,
                    revocation_reason: Some(
                        reason.unwrap_or(RevocationReason::Unspecified).crl_reason(),
                    ),
                })),
                (None, _) => Ok(CertStatus::good()),
            },
            _ => Ok(CertStatus::unknown()),
        }
    }

    /// Answer a DER OCSPRequest with a DER OCSPResponse. `Err` only when the request is
    /// not an OCSP request at all.
    pub async fn respond(&self, request_der: &[u8]) -> Result<Vec<u8>, Error> {
        let request = parse_request(request_der)?;
        let tbs = &request.tbs_request;
        if tbs.request_list.is_empty() {
            return Err(Error::new(
                ErrorCode::TrustBadOcspRequest,
                "no certificate asked about",
            ));
        }
        let nonce = tbs
            .request_extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == ID_PKIX_OCSP_NONCE)
            .cloned();
        let cache_key = if nonce.is_none() && self.settings.cache_secs > 0 {
            Some(to_der(&tbs.request_list)?)
        } else {
            None
        };
        let named: Vec<Option<&Issuer>> = tbs
            .request_list
            .iter()
            .map(|r| self.issuer_of(&r.req_cert))
            .collect();
        let Some(issuer) = named
            .iter()
            .flatten()
            .next()
            .copied()
            .or_else(|| self.issuers.first())
        else {
            return Err(Error::new(
                ErrorCode::Internal,
                "the responder has no authority",
            ));
        };
        let authority = issuer.name;
        let mut statuses = Vec::with_capacity(tbs.request_list.len());
        for (Request { req_cert, .. }, named) in tbs.request_list.iter().zip(&named) {
            statuses.push(match named {
                Some(i) if i.name == authority => self.status(i, req_cert).await?,
                _ => CertStatus::unknown(),
            });
        }
        // The statuses are read for every question, so a cached answer is given only while
        // it still says what the register says: a revocation, in this process or another,
        // is answered at once.
        if let (Some(key), Ok(cache)) = (&cache_key, self.cache.lock())
            && let Some((_, _, der)) = cache.get(key).filter(|(at, said, _)| {
                at.elapsed() < Duration::from_secs(self.settings.cache_secs) && *said == statuses
            })
        {
            return Ok(der.as_ref().clone());
        }
        let now = SystemTime::now();
        let mut responses = Vec::with_capacity(statuses.len());
        for (Request { req_cert, .. }, status) in tbs.request_list.iter().zip(&statuses) {
            responses.push(SingleResponse {
                cert_id: req_cert.clone(),
                cert_status: *status,
                this_update: ocsp_time(now)?,
                next_update: Some(ocsp_time(
                    now + Duration::from_secs(self.settings.next_update_secs),
                )?),
                single_extensions: None,
            });
        }
        let signer = self.pki.ocsp_signer(authority);
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(
                OctetString::new(issuer.responder_key_hash.clone())
                    .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
            ),
            produced_at: ocsp_time(now)?,
            responses,
            response_extensions: nonce.map(|n| vec![n]),
        };
        let tbs_der = to_der(&data)?;
        let signature = signer.key.sign(&tbs_der)?;
        // BasicOCSPResponse, put together from its encoded parts: the certificates are
        // the same in every answer and were encoded once.
        let mut basic = tbs_der;
        basic.extend_from_slice(&to_der(&signer.key.signature_algorithm())?);
        basic.extend_from_slice(&to_der(
            &BitString::from_bytes(&signature)
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
        )?);
        basic.extend_from_slice(&issuer.certs);
        let der = to_der(&OcspResponse {
            response_status: OcspResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: ID_PKIX_OCSP_BASIC,
                response: OctetString::new(tlv(der::Tag::Sequence, &basic)?)
                    .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
            }),
        })?;
        if let (Some(key), Ok(mut cache)) = (cache_key, self.cache.lock()) {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(
                key,
                (Instant::now(), statuses, std::sync::Arc::new(der.clone())),
            );
        }
        Ok(der)
    }
}

fn ocsp_time(t: SystemTime) -> Result<OcspGeneralizedTime, Error> {
    GeneralizedTime::from_system_time(t)
        .map(OcspGeneralizedTime)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
}

/// Build a DER OCSP request for `cert`, with a nonce.
pub fn build_request(cert: &Certificate, issuer: &Certificate) -> Result<Vec<u8>, Error> {
    request_for(cert, issuer, Some(nonce_extension()?))
}

/// A fresh nonce extension (RFC 8954: 16 random bytes in an OCTET STRING).
fn nonce_extension() -> Result<Extension, Error> {
    let nonce = crate::key::random_bytes::<16>()?;
    Ok(Extension {
        extn_id: ID_PKIX_OCSP_NONCE,
        critical: false,
        extn_value: OctetString::new(to_der(
            &OctetString::new(nonce.to_vec())
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
        )?)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
    })
}

/// A DER OCSP request about `cert`, with `nonce` if given.
fn request_for(
    cert: &Certificate,
    issuer: &Certificate,
    nonce: Option<Extension>,
) -> Result<Vec<u8>, Error> {
    to_der(&OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id(cert, issuer)?,
                single_request_extensions: None,
            }],
            request_extensions: nonce.map(|n| vec![n]),
        },
        optional_signature: None,
    })
}

/// The status of one certificate, as a verified OCSP response states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CertificateStatus {
    Good,
    Revoked {
        revoked_unix: i64,
        reason: Option<String>,
    },
    Unknown,
}

/// A verified OCSP answer about one certificate.
#[derive(Debug, Clone)]
pub struct StatusAnswer {
    pub status: CertificateStatus,
    pub produced_at: SystemTime,
    pub this_update: SystemTime,
    pub next_update: Option<SystemTime>,
    pub basic: BasicOcspResponse,
}

/// Extract the BasicOCSPResponse of a DER OCSPResponse.
pub fn basic_response(der: &[u8]) -> Result<BasicOcspResponse, Error> {
    let bad = |m: String| Error::new(ErrorCode::TrustNoRevocationData, m);
    let resp = OcspResponse::from_der(der).map_err(|e| bad(format!("OCSP response: {e}")))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(bad(format!(
            "OCSP responder said {:?}",
            resp.response_status
        )));
    }
    let bytes = resp
        .response_bytes
        .ok_or_else(|| bad("empty OCSP response".into()))?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(bad("not a basic OCSP response".into()));
    }
    BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| bad(format!("basic OCSP response: {e}")))
}

/// Check a basic response about `cert` (issued by `issuer`): signed by the issuer or by a
/// responder certificate the issuer gave the OCSP-signing usage, and naming `cert`.
pub fn verify_basic(
    basic: &BasicOcspResponse,
    cert: &Certificate,
    issuer: &Certificate,
    anchors: &TrustAnchors,
) -> Result<StatusAnswer, Error> {
    verify_basic_owned(basic.clone(), cert, issuer, anchors)
}

/// [`verify_basic`] of a response the caller gives up, which becomes the answer's.
fn verify_basic_owned(
    basic: BasicOcspResponse,
    cert: &Certificate,
    issuer: &Certificate,
    anchors: &TrustAnchors,
) -> Result<StatusAnswer, Error> {
    let bad = |m: String| Error::new(ErrorCode::TrustNoRevocationData, m);
    let tbs = to_der(&basic.tbs_response_data)?;
    let signature = basic.signature.raw_bytes();
    let verifies = |c: &Certificate| {
        verify_signature(
            &c.tbs_certificate.subject_public_key_info,
            &basic.signature_algorithm,
            &tbs,
            signature,
        )
        .is_ok()
    };
    // The responder ID says who signed; try that key first, so that a delegated responder's
    // answer does not cost a failed verification with the issuer's key. Any candidate that
    // verifies is still accepted, as before, and a delegated one is still checked below.
    let named = |c: &Certificate| match &basic.tbs_response_data.responder_id {
        ResponderId::ByKey(hash) => {
            sha1(
                c.tbs_certificate
                    .subject_public_key_info
                    .subject_public_key
                    .raw_bytes(),
            ) == hash.as_bytes()
        }
        ResponderId::ByName(name) => c.tbs_certificate.subject == *name,
    };
    let certs: Vec<&Certificate> = basic.certs.iter().flatten().collect();
    let delegated_named = !named(issuer) && certs.iter().any(|c| named(c));
    let signed_by_issuer = !delegated_named && verifies(issuer);
    let responder = if signed_by_issuer {
        None
    } else {
        let found = certs
            .iter()
            .filter(|c| named(c))
            .chain(certs.iter().filter(|c| !named(c)))
            .find(|c| verifies(c))
            .copied();
        match found {
            Some(r) => Some(r),
            // Named a delegated responder whose key does not verify: the issuer's last.
            None if delegated_named && verifies(issuer) => None,
            None => return Err(bad("the OCSP response's signature does not verify".into())),
        }
    };
    if let Some(responder) = responder {
        let not_authorised =
            || bad("the OCSP responder is not authorised by the certificate's issuer".into());
        if responder.tbs_certificate.issuer != issuer.tbs_certificate.subject
            || !has_extended_key_usage(responder, &ID_KP_OCSP_SIGNING)
        {
            return Err(not_authorised());
        }
        let produced = basic.tbs_response_data.produced_at.0.to_system_time();
        let issuer_der = to_der(issuer)?;
        // The same responder certificate signs every answer: its path is verified once
        // for a while (for exactly these bytes, and only at times it is valid).
        let path = verify_path_cached(
            &to_der(responder)?,
            std::slice::from_ref(&issuer_der),
            anchors,
            produced,
        )
        .map_err(|e| bad(format!("OCSP responder certificate: {}", e.message)))?;
        // The verified path says who signed the responder's certificate: it must be the
        // issuer itself (what `issued_by` checked with one more signature verification).
        if path.issuer() != Some(issuer_der.as_slice()) {
            return Err(not_authorised());
        }
    }
    let serial = &cert.tbs_certificate.serial_number;
    let issuer_name = to_der(&issuer.tbs_certificate.subject)?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            r.cert_id.serial_number == *serial
                && hash_for(&r.cert_id.hash_algorithm.oid, &issuer_name).as_deref()
                    == Some(r.cert_id.issuer_name_hash.as_bytes())
        })
        .ok_or_else(|| bad("the OCSP response is about another certificate".into()))?;
    let status = match &single.cert_status {
        CertStatus::Good(Null) => CertificateStatus::Good,
        CertStatus::Revoked(info) => CertificateStatus::Revoked {
            revoked_unix: info.revocation_time.0.to_unix_duration().as_secs() as i64,
            reason: info.revocation_reason.map(|r| format!("{r:?}")),
        },
        CertStatus::Unknown(_) => CertificateStatus::Unknown,
    };
    let (this_update, next_update) = (
        single.this_update.0.to_system_time(),
        single.next_update.map(|t| t.0.to_system_time()),
    );
    Ok(StatusAnswer {
        status,
        produced_at: basic.tbs_response_data.produced_at.0.to_system_time(),
        this_update,
        next_update,
        basic,
    })
}

/// How a relying party asks a responder and which answers it takes.
#[derive(Debug, Clone, Copy)]
pub struct Asking {
    /// Send a nonce and take only an answer that echoes it: a fresh signature for every
    /// question. Without one (RFC 5019's profile for high volume) the responder may answer
    /// from its cache, and the answer must have been produced at most `max_age` ago.
    pub nonce: bool,
    pub max_age: Duration,
}

impl Default for Asking {
    fn default() -> Self {
        Asking {
            nonce: true,
            max_age: Duration::from_secs(300),
        }
    }
}

/// Clocks of a responder and its relying parties may differ by this much.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Answers whose signature this relying party has verified, by the SHA-256 of the
/// certificate asked about and of the response's bytes: a responder that answers from its
/// cache sends the same bytes again, which need no second verification. Each use still
/// checks the answer's freshness.
#[derive(Debug, Default)]
pub struct VerifiedAnswers {
    answers: Mutex<HashMap<[u8; 32], StatusAnswer>>,
}

/// Bound [`VerifiedAnswers`], so that many certificates cannot grow memory without end.
const VERIFIED_LIMIT: usize = 10_000;

impl VerifiedAnswers {
    fn key(cert_der: &[u8], response: &[u8]) -> [u8; 32] {
        let mut key = [0u8; 32];
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[
                ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref(),
                response,
            ]
            .concat(),
        );
        key.copy_from_slice(digest.as_ref());
        key
    }
}

/// Ask the responder named in `cert` (or `url`) about it with a nonce; returns the raw DER
/// and the verified answer.
pub async fn query(
    http: &reqwest::Client,
    url: Option<&str>,
    cert_der: &[u8],
    issuer_der: &[u8],
    anchors: &TrustAnchors,
) -> Result<(Vec<u8>, StatusAnswer), Error> {
    query_with(
        http,
        url,
        cert_der,
        issuer_der,
        anchors,
        Asking::default(),
        None,
    )
    .await
}

/// [`query`], asking as `asking` says, and taking an answer already in `verified` without
/// verifying its signature again.
pub async fn query_with(
    http: &reqwest::Client,
    url: Option<&str>,
    cert_der: &[u8],
    issuer_der: &[u8],
    anchors: &TrustAnchors,
    asking: Asking,
    verified: Option<&VerifiedAnswers>,
) -> Result<(Vec<u8>, StatusAnswer), Error> {
    let cert = Parsed::new(cert_der)?;
    let issuer = parse_certificate(issuer_der)?;
    query_parsed(http, url, &cert, &issuer, anchors, asking, verified).await
}

/// A certificate's DER and its parsed form, made together so that they always agree
/// (verified answers are remembered by the DER, checked against the parsed form).
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    der: &'a [u8],
    certificate: Certificate,
}

impl<'a> Parsed<'a> {
    pub fn new(der: &'a [u8]) -> Result<Parsed<'a>, Error> {
        Ok(Parsed {
            der,
            certificate: parse_certificate(der)?,
        })
    }

    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    pub fn into_certificate(self) -> Certificate {
        self.certificate
    }
}

/// [`query_with`] for a certificate and issuer the caller has parsed already (a relying
/// party asks about many certificates of the same few issuers).
pub async fn query_parsed(
    http: &reqwest::Client,
    url: Option<&str>,
    cert: &Parsed<'_>,
    issuer: &Certificate,
    anchors: &TrustAnchors,
    asking: Asking,
    verified: Option<&VerifiedAnswers>,
) -> Result<(Vec<u8>, StatusAnswer), Error> {
    let (cert_der, cert) = (cert.der, &cert.certificate);
    let url = match url {
        Some(u) => u.to_owned(),
        None => crate::chain::ocsp_url(cert).ok_or_else(|| {
            Error::new(
                ErrorCode::TrustNoRevocationData,
                "the certificate names no OCSP responder",
            )
        })?,
    };
    let nonce = if asking.nonce {
        Some(nonce_extension()?)
    } else {
        None
    };
    let body = request_for(cert, issuer, nonce.clone())?;
    let response = http
        .post(&url)
        .header("content-type", "application/ocsp-request")
        .body(body)
        .send()
        .await
        .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("{url}: {e}")))?;
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("{url}: {e}")))?
        .to_vec();
    let key = verified.map(|_| VerifiedAnswers::key(cert_der, &bytes));
    let known = match (verified, &key) {
        (Some(v), Some(k)) => v.answers.lock().ok().and_then(|a| a.get(k).cloned()),
        _ => None,
    };
    let answer = match known {
        Some(answer) => answer,
        None => {
            let basic = basic_response(&bytes)?;
            verify_basic_owned(basic, cert, issuer, anchors)?
        }
    };
    check_fresh(&answer, nonce.as_ref(), asking.max_age, SystemTime::now())?;
    if let (Some(v), Some(k)) = (verified, key)
        && let Ok(mut a) = v.answers.lock()
    {
        if a.len() >= VERIFIED_LIMIT {
            a.clear();
        }
        a.insert(k, answer.clone());
    }
    Ok((bytes, answer))
}

/// An answer is taken only if it is current: it echoes the nonce that was sent (or, asked
/// without one, was produced at most `max_age` ago), its thisUpdate is not in the future
/// and its nextUpdate not in the past. So a replayed or outdated answer is refused.
pub fn check_fresh(
    answer: &StatusAnswer,
    nonce: Option<&Extension>,
    max_age: Duration,
    now: SystemTime,
) -> Result<(), Error> {
    let stale = |m: String| Error::new(ErrorCode::TrustNoRevocationData, m);
    match nonce {
        Some(sent) => {
            let echoed = answer
                .basic
                .tbs_response_data
                .response_extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id == ID_PKIX_OCSP_NONCE);
            if echoed.map(|e| &e.extn_value) != Some(&sent.extn_value) {
                return Err(stale(
                    "the OCSP response does not echo the request's nonce (replayed?)".into(),
                ));
            }
        }
        None => {
            if let Ok(age) = now.duration_since(answer.produced_at)
                && age > max_age + CLOCK_SKEW
            {
                return Err(stale(format!(
                    "the OCSP response was produced {} s ago, more than the {} s accepted",
                    age.as_secs(),
                    max_age.as_secs()
                )));
            }
        }
    }
    if answer.this_update > now + CLOCK_SKEW {
        return Err(stale(
            "the OCSP response's thisUpdate is in the future".into(),
        ));
    }
    if let Some(next) = answer.next_update
        && next + CLOCK_SKEW < now
    {
        return Err(stale("the OCSP response's nextUpdate has passed".into()));
    }
    Ok(())
}
