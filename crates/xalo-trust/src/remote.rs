//! Signing through a remote signing service: the relying party (a portal, `xalo sign`)
//! sends the files and names the person; the service builds the container, has the
//! person's own key sign it (with Mobile-ID: PIN2 on their phone, after the verification
//! code shown here matched the phone's), and returns the finished ASiC-E container.
//!
//! The service authenticates the relying party with its client credentials (HTTP Basic).
//! Xalo's `id` role serves the protocol: `POST /signing/mobile-id` starts a session,
//! `GET /signing/session/{id}?timeoutMs=…` long-polls it. A failure is a coded error body.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use xalo_core::error::ErrorBody;
use xalo_core::{Error, ErrorCode};

use crate::container::DataFile;

/// A file to sign, its bytes in base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningFile {
    pub name: String,
    pub data: String,
}

impl From<&DataFile> for SigningFile {
    fn from(f: &DataFile) -> Self {
        SigningFile {
            name: f.name.clone(),
            data: STANDARD.encode(&f.bytes),
        }
    }
}

/// Start a Mobile-ID signature: the files (or a container to co-sign) and the person.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MobileIdSigningRequest {
    /// E.164, e.g. `+84901234567`.
    pub phone_number: String,
    /// The country-prefixed personal code, e.g. `VN001203012345`.
    pub national_identity_number: String,
    #[serde(default)]
    pub files: Vec<SigningFile>,
    /// An existing container (base64) to co-sign instead of new files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Shown on the phone beside the relying party's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_text: Option<String>,
    /// `VIE` or `ENG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// A started session: show the verification code to the person, then poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningStarted {
    #[serde(rename = "sessionID")]
    pub session_id: String,
    pub verification_code: String,
}

/// A session's state: `RUNNING`, or `COMPLETE` with the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningStatus {
    pub state: String,
    /// The signed container, base64, once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The signer's certificate subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

fn upstream(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::TrustUpstream, format!("signing service: {e}"))
}

/// A relying party's client of a remote signing service.
#[derive(Debug, Clone)]
pub struct RemoteSigningClient {
    base: String,
    client_id: String,
    secret: String,
    http: reqwest::Client,
}

impl RemoteSigningClient {
    pub fn new(base: &str, client_id: &str, secret: &str) -> Result<Self, Error> {
        // Longer than the longest long poll the client asks for.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .map_err(upstream)?;
        Ok(RemoteSigningClient {
            base: base.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
            http,
        })
    }

    /// The service's answer, or its coded error.
    async fn answer<T: serde::de::DeserializeOwned>(r: reqwest::Response) -> Result<T, Error> {
        let status = r.status();
        let body = r.bytes().await.map_err(upstream)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(upstream);
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Err(Error::new(e.code, e.message)),
            Err(_) => Err(upstream(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body)
            ))),
        }
    }

    pub async fn start_mobile_id(
        &self,
        request: &MobileIdSigningRequest,
    ) -> Result<SigningStarted, Error> {
        let r = self
            .http
            .post(format!("{}/signing/mobile-id", self.base))
            .basic_auth(&self.client_id, Some(&self.secret))
            .json(request)
            .send()
            .await
            .map_err(upstream)?;
        Self::answer(r).await
    }

    /// Wait up to `timeout_ms` for the session to complete.
    pub async fn poll(&self, session_id: &str, timeout_ms: u64) -> Result<SigningStatus, Error> {
        let r = self
            .http
            .get(format!(
                "{}/signing/session/{session_id}?timeoutMs={timeout_ms}",
                self.base
            ))
            .basic_auth(&self.client_id, Some(&self.secret))
            .send()
            .await
            .map_err(upstream)?;
        Self::answer(r).await
    }

    /// Poll until the session completes; returns the container.
    pub async fn wait(&self, session_id: &str) -> Result<Vec<u8>, Error> {
        loop {
            let status = self.poll(session_id, 30_000).await?;
            if status.state == "COMPLETE" {
                let container = status
                    .container
                    .ok_or_else(|| upstream("complete without a container"))?;
                return STANDARD.decode(container).map_err(upstream);
            }
        }
    }
}
