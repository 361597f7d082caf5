//! The Mobile-ID protocol, modelled on SK's Mobile-ID REST API: the relying party starts
//! an authentication or signature session at the operator with a hash, shows the
//! verification code computed from that hash, and long-polls the session until the person
//! has entered their PIN on the phone. This module holds the messages, the verification
//! code and the relying party's client; [`crate::operator`] is the operator's side.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode};

/// Start of an authentication or signature session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRequest {
    #[serde(rename = "relyingPartyUUID")]
    pub relying_party_uuid: String,
    pub relying_party_name: String,
    /// E.164, e.g. `+84901234567`.
    pub phone_number: String,
    /// The country-prefixed personal code, e.g. `VN001203012345`.
    pub national_identity_number: String,
    /// The hash to sign, base64.
    pub hash: String,
    /// `SHA256` (the only one the operator accepts).
    pub hash_type: String,
    /// `VIE` or `ENG`.
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionStarted {
    #[serde(rename = "sessionID")]
    pub session_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSignature {
    /// Base64 of the raw signature (`r‖s` for ECDSA).
    pub value: String,
    pub algorithm: String,
}

/// The state of a session, as the long poll returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionStatus {
    /// `RUNNING` or `COMPLETE`.
    pub state: String,
    /// When complete: `OK`, `TIMEOUT`, `NOT_MID_CLIENT`, `USER_CANCELLED`, or
    /// `PIN_LOCKED` (Xalo's addition: three wrong PINs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SessionSignature>,
    /// The certificate that signed, base64 DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
}

/// Which kind of session: PIN1 authenticates, PIN2 signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Authentication,
    Signature,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Authentication => "authentication",
            SessionKind::Signature => "signature",
        }
    }
    pub fn parse(s: &str) -> Option<SessionKind> {
        match s {
            "authentication" => Some(SessionKind::Authentication),
            "signature" => Some(SessionKind::Signature),
            _ => None,
        }
    }
}

/// The verification code of a hash: the first 6 bits and the last 7 bits of the hash
/// read as one 13-bit number, shown as four digits.
pub fn verification_code(hash: &[u8]) -> String {
    let (Some(first), Some(last)) = (hash.first(), hash.last()) else {
        return "0000".into();
    };
    let code = (u16::from(first >> 2) << 7) | u16::from(last & 0x7f);
    format!("{code:04}")
}

/// A phone number in E.164 form (`+` and 8 to 15 digits), spaces removed.
pub fn normalise_phone(s: &str) -> Option<String> {
    let compact: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    let digits = compact.strip_prefix('+')?;
    ((8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(compact)
}

fn upstream(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::AuthMobileIdUpstream, e.to_string())
}

/// The relying party's client of the operator.
#[derive(Clone, Debug)]
pub struct MobileIdClient {
    base: String,
    http: reqwest::Client,
}

impl MobileIdClient {
    pub fn new(base: &str) -> Result<MobileIdClient, Error> {
        // Longer than the longest long poll the client asks for.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(130))
            .build()
            .map_err(upstream)?;
        Ok(MobileIdClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub async fn start(
        &self,
        kind: SessionKind,
        request: &SessionRequest,
    ) -> Result<String, Error> {
        let r = self
            .http
            .post(format!("{}/mid-api/{}", self.base, kind.as_str()))
            .json(request)
            .send()
            .await
            .map_err(upstream)?;
        if !r.status().is_success() {
            return Err(upstream(format!("operator answered {}", r.status())));
        }
        let started: SessionStarted = r.json().await.map_err(upstream)?;
        Ok(started.session_id)
    }

    /// Wait up to `timeout_ms` for the session to complete.
    pub async fn poll(
        &self,
        kind: SessionKind,
        session_id: &str,
        timeout_ms: u64,
    ) -> Result<SessionStatus, Error> {
        let r = self
            .http
            .get(format!(
                "{}/mid-api/{}/session/{session_id}?timeoutMs={timeout_ms}",
                self.base,
                kind.as_str()
            ))
            .send()
            .await
            .map_err(upstream)?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(Error::new(
                ErrorCode::AuthMobileIdSession,
                "the operator does not know the session",
            ));
        }
        if !r.status().is_success() {
            return Err(upstream(format!("operator answered {}", r.status())));
        }
        r.json().await.map_err(upstream)
    }

    /// The signing certificate of a subscriber, base64 DER.
    pub async fn signing_certificate(&self, phone: &str, code: &str) -> Result<String, Error> {
        let r = self
            .http
            .post(format!("{}/mid-api/certificate", self.base))
            .json(&serde_json::json!({ "phoneNumber": phone, "nationalIdentityNumber": code }))
            .send()
            .await
            .map_err(upstream)?;
        let v: serde_json::Value = r.json().await.map_err(upstream)?;
        match (v["result"].as_str(), v["cert"].as_str()) {
            (Some("OK"), Some(cert)) => Ok(cert.to_owned()),
            _ => Err(Error::new(
                ErrorCode::AuthNotMobileIdClient,
                "no Mobile-ID signing certificate",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_code_of_the_specification_example() {
        let hash = hex::decode("2f665f6a6999e0ef0752e00ec9f453adf59d8cb6").unwrap();
        assert_eq!(verification_code(&hash), "1462");
        assert_eq!(verification_code(&[0u8; 32]), "0000");
        assert_eq!(verification_code(&[0xff; 32]), "8191");
    }

    #[test]
    fn phones() {
        assert_eq!(
            normalise_phone("+84 90 123 4567").as_deref(),
            Some("+84901234567")
        );
        assert_eq!(normalise_phone("0901234567"), None);
        assert_eq!(normalise_phone("+84abc"), None);
    }
}
