//! The registration authority: how other organisations (a Mobile-ID operator, the exchange's
//! central operator, a ministry's IT) obtain certificates from the national CAs over HTTP,
//! without ever touching the CA's keys or tables.
//!
//! Each registration authority holds a bearer token; the trust role keeps only the
//! token's SHA-256 (`[roles.trust] registration_authorities`). Requests carry a PKCS#10 CSR
//! (the key stays with its holder) or ask the CA to generate the key (a citizen's card).

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xalo_core::{Config, Error, ErrorCode};

use crate::authority::{IssueRequest, KeySource, Pki, Profile, Subject};
use crate::key::{KeyAlgorithm, pem_encode};

/// One registration authority admitted by the trust role.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistrationAuthority {
    pub name: String,
    /// Hex SHA-256 of its bearer token.
    pub token_sha256: String,
}

/// `[roles.trust]` settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustRoleSettings {
    pub registration_authorities: Vec<RegistrationAuthority>,
}

impl TrustRoleSettings {
    pub fn load(config: &Config) -> Result<Self, Error> {
        config.role_settings(crate::ROLE)
    }
}

/// The hex SHA-256 under which a token is admitted.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A certificate request over HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    pub profile: Profile,
    pub subject: Subject,
    /// A PKCS#10 request in PEM; without it the CA generates the key.
    #[serde(default)]
    pub csr_pem: Option<String>,
    #[serde(default)]
    pub key_algorithm: Option<KeyAlgorithm>,
    #[serde(default = "default_validity")]
    pub validity_days: u32,
}

fn default_validity() -> u32 {
    365
}

/// What the CA issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub serial: String,
    /// DER, base64.
    pub certificate: String,
    /// Issuing CA, then root; DER, base64.
    pub chain: Vec<String>,
    /// PKCS#8 DER, base64, when the CA generated the key.
    pub private_key: Option<String>,
}

impl IssuedCertificate {
    fn decode(s: &str) -> Result<Vec<u8>, Error> {
        STANDARD
            .decode(s)
            .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("issued certificate: {e}")))
    }
    pub fn certificate_der(&self) -> Result<Vec<u8>, Error> {
        Self::decode(&self.certificate)
    }
    pub fn chain_der(&self) -> Result<Vec<Vec<u8>>, Error> {
        self.chain.iter().map(|c| Self::decode(c)).collect()
    }
    pub fn private_key_der(&self) -> Result<Option<Vec<u8>>, Error> {
        self.private_key.as_deref().map(Self::decode).transpose()
    }
    pub fn certificate_pem(&self) -> Result<String, Error> {
        Ok(pem_encode("CERTIFICATE", &self.certificate_der()?))
    }
}

/// Which registration authority a request comes from, if any.
pub fn authenticate(
    admitted: &[RegistrationAuthority],
    headers: &HeaderMap,
) -> Result<String, Error> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Error::new(
                ErrorCode::HttpUnauthorized,
                "a registration authority's bearer token is required",
            )
        })?;
    let hash = token_hash(token.trim());
    admitted
        .iter()
        .find(|ra| ra.token_sha256.eq_ignore_ascii_case(&hash))
        .map(|ra| ra.name.clone())
        .ok_or_else(|| {
            Error::new(
                ErrorCode::HttpForbidden,
                "unknown registration authority token",
            )
        })
}

/// Issue what a registration authority asked for.
pub async fn issue(
    pki: &Pki,
    ra: &str,
    req: CertificateRequest,
) -> Result<IssuedCertificate, Error> {
    if !Profile::ISSUABLE.contains(&req.profile) {
        return Err(Error::new(
            ErrorCode::TrustUnknownAuthority,
            format!(
                "{} certificates are not issued to registration authorities",
                req.profile.as_str()
            ),
        ));
    }
    if req.validity_days == 0 || req.validity_days > 5 * 366 {
        return Err(Error::new(
            ErrorCode::TrustIssue,
            "validity must be 1 day to 5 years",
        ));
    }
    let key = match &req.csr_pem {
        Some(pem) => KeySource::Csr(pem.as_bytes().to_vec()),
        None => KeySource::Generate(req.key_algorithm.unwrap_or(KeyAlgorithm::P256)),
    };
    let issued = pki
        .issue(&IssueRequest {
            profile: req.profile,
            subject: req.subject,
            key,
            validity_days: req.validity_days,
        })
        .await?;
    tracing::info!(ra, serial = %issued.record.serial, profile = req.profile.as_str(), "issued for a registration authority");
    Ok(IssuedCertificate {
        serial: issued.record.serial.clone(),
        certificate: STANDARD.encode(&issued.record.certificate),
        chain: issued.chain.iter().map(|c| STANDARD.encode(c)).collect(),
        private_key: issued.private_key.as_ref().map(|k| STANDARD.encode(k)),
    })
}

pub(crate) async fn issue_handler(
    State((pki, admitted)): State<(Pki, std::sync::Arc<Vec<RegistrationAuthority>>)>,
    headers: HeaderMap,
    body: Result<axum::Json<CertificateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::Json<IssuedCertificate>, Error> {
    let ra = authenticate(&admitted, &headers)?;
    let axum::Json(req) =
        body.map_err(|e| Error::from_rejection(ErrorCode::HttpBadRequest, &e.body_text()))?;
    Ok(axum::Json(issue(&pki, &ra, req).await?))
}

/// A registration authority's client of the trust role.
#[derive(Clone, Debug)]
pub struct RegistrationClient {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl RegistrationClient {
    /// `trust_url` is the trust role's base URL.
    pub fn new(trust_url: &str, token: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        Ok(RegistrationClient {
            url: format!("{}/ra/certificates", trust_url.trim_end_matches('/')),
            token: token.to_owned(),
            http,
        })
    }

    pub async fn issue(&self, req: &CertificateRequest) -> Result<IssuedCertificate, Error> {
        let r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(req)
            .send()
            .await
            .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("{}: {e}", self.url)))?;
        let status = r.status();
        let text = r
            .text()
            .await
            .map_err(|e| Error::new(ErrorCode::TrustUpstream, e.to_string()))?;
        if !status.is_success() {
            return Err(
                match serde_json::from_str::<xalo_core::error::ErrorBody>(&text) {
                    Ok(b) => Error::new(b.code, b.message),
                    Err(_) => Error::new(
                        ErrorCode::TrustUpstream,
                        format!("the trust role answered {status}: {text}"),
                    ),
                },
            );
        }
        serde_json::from_str(&text).map_err(|e| Error::new(ErrorCode::TrustUpstream, e.to_string()))
    }
}
