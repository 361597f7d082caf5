//! The time-stamping authority (RFC 3161): requests in, signed tokens out, and the check
//! of a token that signature verification uses.

use std::time::{SystemTime, UNIX_EPOCH};

use cmpv2::status::{PkiStatus, PkiStatusInfo};
use der::Decode;
use der::asn1::{GeneralizedTime, Int, ObjectIdentifier as Oid};
use serde::{Deserialize, Serialize};
use x509_tsp::{Accuracy, MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};
use xalo_core::{Error, ErrorCode};

use crate::authority::{Pki, Signer, parse_certificate};
use crate::cades::{self, ID_CT_TST_INFO};
use crate::chain::{TrustAnchors, has_extended_key_usage, verify_path};
use crate::key::{DigestAlgorithm, to_der};

/// ETSI EN 319 421 best-practices time-stamp policy.
pub const DEFAULT_POLICY: &str = "0.4.0.2023.1.1";
const ID_KP_TIME_STAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");

/// How the unit stamps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TsaSettings {
    pub policy: String,
    /// Accuracy promised in the token, in milliseconds (at least 1000: genTime is whole seconds).
    pub accuracy_ms: u32,
}

impl Default for TsaSettings {
    fn default() -> Self {
        TsaSettings {
            policy: DEFAULT_POLICY.into(),
            accuracy_ms: 1000,
        }
    }
}

/// A time-stamping unit: the TSA certificate and key, its chain and its policy.
#[derive(Clone)]
pub struct TimeStampAuthority {
    pki: Pki,
    policy: Oid,
    accuracy: Accuracy,
    chain: Vec<Vec<u8>>,
}

/// PKIFailureInfo bits (RFC 3161 2.4.2).
#[derive(Debug, Clone, Copy)]
enum Failure {
    BadAlg = 0,
    BadDataFormat = 5,
    UnacceptedPolicy = 15,
    UnacceptedExtension = 16,
}

/// A rejection. cmpv2's flag set encodes PKIFailureInfo in the wrong bit order, so the
/// BIT STRING is written here: bit n is the n-th bit from the most significant end.
fn reject(fail: Failure, text: &str) -> Result<Vec<u8>, Error> {
    #[derive(der::Sequence)]
    struct StatusInfo {
        status: u8,
        #[asn1(optional = "true")]
        status_string: Option<Vec<String>>,
        #[asn1(optional = "true")]
        fail_info: Option<der::asn1::BitString>,
    }
    #[derive(der::Sequence)]
    struct Rejection {
        status: StatusInfo,
    }
    let bit = fail as usize;
    let mut bytes = vec![0u8; bit / 8 + 1];
    bytes[bit / 8] = 0x80 >> (bit % 8);
    let unused = (7 - bit % 8) as u8;
    let _ = text;
    to_der(&Rejection {
        status: StatusInfo {
            status: 2,
            status_string: None,
            fail_info: Some(
                der::asn1::BitString::new(unused, bytes)
                    .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
            ),
        },
    })
}

/// Parse a TimeStampReq: what the fuzz target drives.
pub fn parse_request(der: &[u8]) -> Result<TimeStampReq, Error> {
    TimeStampReq::from_der(der)
        .map_err(|e| Error::new(ErrorCode::TrustBadTimeStampRequest, e.to_string()))
}

/// The reply to a request that could not even be parsed (badDataFormat).
pub fn malformed_reply() -> Vec<u8> {
    reject(Failure::BadDataFormat, "malformed").unwrap_or_default()
}

/// Serial numbers: nanoseconds since the epoch, then 64 random bits. Unique across
/// instances without a shared counter; ordered by time for the reader.
fn serial() -> Result<Int, Error> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&nanos.to_be_bytes());
    bytes[8..].copy_from_slice(&crate::key::random_bytes::<8>()?);
    bytes[0] &= 0x7f;
    Int::new(&bytes).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
}

impl TimeStampAuthority {
    pub fn new(pki: Pki, settings: &TsaSettings) -> Result<Self, Error> {
        let policy = Oid::new(&settings.policy).map_err(|e| {
            Error::new(
                ErrorCode::ConfigInvalid,
                format!("TSA policy {}: {e}", settings.policy),
            )
        })?;
        let ms = settings.accuracy_ms.max(1000);
        let accuracy = Accuracy {
            seconds: Some(u64::from(ms / 1000)),
            millis: match ms % 1000 {
                0 => None,
                m => Some(m as i16),
            },
            micros: None,
        };
        let chain = pki.chain_of(crate::AuthorityName::Organisations);
        Ok(TimeStampAuthority {
            pki,
            policy,
            accuracy,
            chain,
        })
    }

    fn signer(&self) -> &Signer {
        self.pki.tsa_signer()
    }

    /// Answer a DER TimeStampReq with a DER TimeStampResp. `Err` only for a request that
    /// is not DER at all (the HTTP layer answers 400 with [`malformed_reply`]).
    pub fn respond(&self, request_der: &[u8]) -> Result<Vec<u8>, Error> {
        let req = parse_request(request_der)?;
        let imprint = &req.message_imprint;
        let Some(alg) = DigestAlgorithm::from_oid(&imprint.hash_algorithm.oid) else {
            return reject(Failure::BadAlg, "unsupported hash algorithm");
        };
        if imprint.hashed_message.as_bytes().len() != alg.output_len() {
            return reject(
                Failure::BadDataFormat,
                "digest length does not match the algorithm",
            );
        }
        if req.req_policy.is_some_and(|policy| policy != self.policy) {
            return reject(Failure::UnacceptedPolicy, "unknown policy");
        }
        if req
            .extensions
            .as_ref()
            .is_some_and(|e| e.iter().any(|x| x.critical))
        {
            return reject(Failure::UnacceptedExtension, "critical extension");
        }
        let now = SystemTime::now();
        let info = TstInfo {
            version: TspVersion::V1,
            policy: self.policy,
            message_imprint: MessageImprint {
                hash_algorithm: imprint.hash_algorithm.clone(),
                hashed_message: imprint.hashed_message.clone(),
            },
            serial_number: serial()?,
            gen_time: GeneralizedTime::from_system_time(now)
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
            accuracy: Some(self.accuracy.clone()),
            ordering: false,
            nonce: req.nonce.clone(),
            tsa: None,
            extensions: None,
        };
        let tst = to_der(&info)?;
        let extra: &[Vec<u8>] = if req.cert_req { &self.chain } else { &[] };
        let mut sd = cades::sign(&cades::SignRequest {
            content_type: ID_CT_TST_INFO,
            content: &tst,
            attach: true,
            signer: self.signer(),
            extra_certificates: extra,
            signing_time: Some(now),
        })?;
        if !req.cert_req {
            sd.certificates = None;
        }
        let token_der = cades::encode(&sd)?;
        let token = cms::content_info::ContentInfo::from_der(&token_der)
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        to_der(&TimeStampResp {
            status: PkiStatusInfo {
                status: PkiStatus::Accepted,
                status_string: None,
                fail_info: None,
            },
            time_stamp_token: Some(token),
        })
    }
}

/// Build a DER TimeStampReq for `digest` (of `alg`), asking for the TSA's certificate.
pub fn build_request(
    alg: DigestAlgorithm,
    digest: &[u8],
    nonce: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: x509_cert::spki::AlgorithmIdentifier {
                oid: alg.oid(),
                parameters: None,
            },
            hashed_message: der::asn1::OctetString::new(digest)
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
        },
        req_policy: None,
        nonce: nonce
            .map(Int::new)
            .transpose()
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
        cert_req: true,
        extensions: None,
    };
    to_der(&req)
}

/// The token out of a reply, or the reason the TSA refused.
pub fn token_from_reply(reply: &[u8]) -> Result<Vec<u8>, Error> {
    let resp = TimeStampResp::from_der(reply)
        .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("time-stamp reply: {e}")))?;
    match (resp.status.status, resp.time_stamp_token) {
        (PkiStatus::Accepted | PkiStatus::GrantedWithMods, Some(token)) => to_der(&token),
        (status, _) => Err(Error::new(
            ErrorCode::TrustUpstream,
            format!("the TSA refused: {status:?} {:?}", resp.status.fail_info),
        )),
    }
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct VerifiedTimeStamp {
    pub time: SystemTime,
    pub serial: Vec<u8>,
    pub policy: String,
    pub authority: String,
}

/// Check a token: its signature, that it covers `data_digest`, that the signer is a TSA
/// (critical timeStamping EKU) under `anchors`.
pub fn verify_token(
    token_der: &[u8],
    data: &[u8],
    anchors: &TrustAnchors,
) -> Result<VerifiedTimeStamp, Error> {
    let bad = |m: String| Error::new(ErrorCode::TrustBadTimeStamp, m);
    let sd = cades::decode(token_der).map_err(|e| bad(e.message))?;
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(bad("not a TSTInfo".into()));
    }
    let signer =
        cades::verify(&sd, None).map_err(|e| bad(format!("token signature: {}", e.message)))?;
    let tst_der = cades::attached_content(&sd).ok_or_else(|| bad("no TSTInfo".into()))?;
    let info = TstInfo::from_der(&tst_der).map_err(|e| bad(format!("TSTInfo: {e}")))?;
    let alg = DigestAlgorithm::from_oid(&info.message_imprint.hash_algorithm.oid)
        .ok_or_else(|| bad("unsupported imprint hash".into()))?;
    if info.message_imprint.hashed_message.as_bytes() != alg.digest(data).as_slice() {
        return Err(bad("the time-stamp covers other data".into()));
    }
    if !has_extended_key_usage(&signer.certificate, &ID_KP_TIME_STAMPING) {
        return Err(bad(
            "the token's signer is not a time-stamping authority".into()
        ));
    }
    let time = info.gen_time.to_system_time();
    verify_path(
        &signer.certificate_der,
        &cades::certificates(&sd),
        anchors,
        time,
    )
    .map_err(|e| bad(format!("TSA certificate: {}", e.message)))?;
    let _ = parse_certificate(&signer.certificate_der)?;
    Ok(VerifiedTimeStamp {
        time,
        serial: info.serial_number.as_bytes().to_vec(),
        policy: info.policy.to_string(),
        authority: signer.certificate.tbs_certificate.subject.to_string(),
    })
}

/// Ask a TSA over HTTP for a token over `data`.
pub async fn request_token(
    http: &reqwest::Client,
    url: &str,
    data: &[u8],
) -> Result<Vec<u8>, Error> {
    let alg = DigestAlgorithm::Sha256;
    let nonce = crate::key::random_bytes::<8>()?;
    let mut nonce = nonce.to_vec();
    // A positive INTEGER whose first byte is not zero, so its DER encoding is minimal as
    // written (a leading zero byte would make the request malformed).
    if let Some(b) = nonce.first_mut() {
        *b = (*b & 0x7f) | 0x01;
    }
    let body = build_request(alg, &alg.digest(data), Some(&nonce))?;
    let response = http
        .post(url)
        .header("content-type", "application/timestamp-query")
        .body(body)
        .send()
        .await
        .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("{url}: {e}")))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("{url}: {e}")))?;
    if !status.is_success() {
        return Err(Error::new(
            ErrorCode::TrustUpstream,
            format!("{url} answered {status}"),
        ));
    }
    let token = token_from_reply(&bytes)?;
    Ok(token)
}
