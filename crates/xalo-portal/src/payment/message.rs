//! What the payment provider signs, and how a merchant checks it.
//!
//! Three messages leave the provider: the callback (server to server, JSON body), the
//! return (the payer's browser carries it back to the merchant as query parameters) and
//! the day's statement (JSON body). Each is signed with the provider's Ed25519 key, whose
//! public half the merchant is configured with:
//!
//! - a JSON message is signed over the exact bytes of its body, which the provider writes
//!   canonically (fields in declaration order, no whitespace); the signature travels in
//!   the `X-Payment-Signature` header as `ed25519=BASE64`. The merchant verifies the bytes
//!   it received before it parses them, so no re-serialisation can disagree;
//! - the return is signed, as gateways such as VNPay do with their secure hash, over its
//!   parameters sorted by name, percent-encoded and joined with `&`; the signature is the
//!   `signature` parameter (base64url).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode};

/// The header of a signed JSON body.
pub const SIGNATURE_HEADER: &str = "x-payment-signature";

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting for the payer.
    Pending,
    Paid,
    /// The payer cancelled on the payment page.
    Cancelled,
    /// Nobody paid before the order expired.
    Expired,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 4] = [
        PaymentStatus::Pending,
        PaymentStatus::Paid,
        PaymentStatus::Cancelled,
        PaymentStatus::Expired,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Paid => "paid",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Result<PaymentStatus, Error> {
        PaymentStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| malformed(format!("unknown payment status {s:?}")))
    }
}

fn malformed(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::PayMalformedMessage, m)
}

fn bad_signature(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::PayBadSignature, m)
}

/// The outcome of one payment, as the callback body and the return parameters carry it.
/// `event_id` names this outcome: the callback and the return of one payment carry the
/// same one, and every retry of the callback too, so the merchant applies it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    pub event_id: String,
    pub merchant_id: String,
    pub payment_id: String,
    pub order_ref: String,
    pub amount_vnd: i64,
    pub status: PaymentStatus,
    /// When it was settled (paid or cancelled), Unix seconds.
    pub settled_unix: i64,
    /// The bank's transaction reference, for a paid one.
    pub bank_reference: Option<String>,
}

impl Notification {
    /// The canonical body.
    pub fn to_body(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
    }

    /// The return parameters, unsigned, sorted by name.
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("amount_vnd", self.amount_vnd.to_string()),
            ("event_id", self.event_id.clone()),
            ("merchant_id", self.merchant_id.clone()),
            ("order_ref", self.order_ref.clone()),
            ("payment_id", self.payment_id.clone()),
            ("settled_unix", self.settled_unix.to_string()),
            ("status", self.status.as_str().to_owned()),
        ];
        if let Some(r) = &self.bank_reference {
            p.push(("bank_reference", r.clone()));
        }
        p.sort_by_key(|(k, _)| *k);
        p
    }

    /// The signed query string of the return to the merchant.
    pub fn to_signed_query(&self, key: &ProviderKey) -> String {
        let canonical = canonical_query(
            self.params()
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        );
        let signature = URL_SAFE_NO_PAD.encode(key.key.sign(canonical.as_bytes()).to_bytes());
        format!("{canonical}&signature={signature}")
    }

    /// Read and verify a signed return query: a missing or wrong signature, or any
    /// parameter changed, added or dropped, fails with `XALO-PAY-006`.
    pub fn from_signed_query(query: &str, key: &VerifyingKey) -> Result<Notification, Error> {
        let mut params = Vec::new();
        let mut signature = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k)?;
            let v = decode(v)?;
            if k == "signature" {
                if signature.replace(v).is_some() {
                    return Err(malformed("two signatures in the return"));
                }
            } else if k == "lang" {
                // The page kit's language switch may add it; it is not part of the payment.
            } else {
                params.push((k, v));
            }
        }
        let signature = signature.ok_or_else(|| bad_signature("the return is not signed"))?;
        let mut names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(malformed("a parameter of the return appears twice"));
        }
        verify(
            key,
            canonical_query(params.clone()).as_bytes(),
            &URL_SAFE_NO_PAD
                .decode(signature.trim())
                .map_err(|_| bad_signature("the return's signature is not base64url"))?,
        )?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| malformed(format!("the return has no {name}")))
        };
        let number = |name: &str| -> Result<i64, Error> {
            get(name)?
                .parse()
                .map_err(|_| malformed(format!("{name} is not a number")))
        };
        let n = Notification {
            event_id: get("event_id")?,
            merchant_id: get("merchant_id")?,
            payment_id: get("payment_id")?,
            order_ref: get("order_ref")?,
            amount_vnd: number("amount_vnd")?,
            status: PaymentStatus::parse(&get("status")?)?,
            settled_unix: number("settled_unix")?,
            bank_reference: get("bank_reference").ok(),
        };
        // Unknown parameters would be signed but ignored; refuse them instead.
        let known = n.params().len();
        if params.len() != known {
            return Err(malformed(
                "the return has parameters this merchant does not know",
            ));
        }
        Ok(n)
    }
}

/// One line of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementLine {
    pub payment_id: String,
    pub order_ref: String,
    pub amount_vnd: i64,
    pub status: PaymentStatus,
    pub settled_unix: i64,
    pub bank_reference: Option<String>,
}

/// A merchant's settled payments of one day (Vietnam's time zone), signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub merchant_id: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub generated_unix: i64,
    pub lines: Vec<StatementLine>,
    /// Sum of the paid lines.
    pub total_paid_vnd: i64,
}

fn decode(s: &str) -> Result<String, Error> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| malformed("a parameter is not UTF-8"))
}

const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn canonical_query(mut params: Vec<(String, String)>) -> String {
    params.sort();
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, QUERY),
                percent_encoding::utf8_percent_encode(v, QUERY)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn verify(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
    let signature = Signature::from_slice(signature)
        .map_err(|_| bad_signature("the signature has the wrong length"))?;
    key.verify(message, &signature)
        .map_err(|_| bad_signature("the signature does not match the provider's key"))
}

/// The provider's signing key.
#[derive(Clone)]
pub struct ProviderKey {
    key: SigningKey,
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKey")
            .field("public", &self.public_text())
            .finish_non_exhaustive()
    }
}

impl ProviderKey {
    pub fn from_secret(secret: [u8; 32]) -> ProviderKey {
        ProviderKey {
            key: SigningKey::from_bytes(&secret),
        }
    }
    pub fn generate() -> ProviderKey {
        ProviderKey::from_secret(rand::random())
    }
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
    /// The public key as merchants configure it: `ed25519:BASE64`.
    pub fn public_text(&self) -> String {
        format!(
            "ed25519:{}",
            STANDARD.encode(self.key.verifying_key().to_bytes())
        )
    }
    /// The value of [`SIGNATURE_HEADER`] for `body`.
    pub fn sign_body(&self, body: &[u8]) -> String {
        format!(
            "ed25519={}",
            STANDARD.encode(self.key.sign(body).to_bytes())
        )
    }
}

/// Read a public key written as [`ProviderKey::public_text`] does.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, Error> {
    let config = |m: &str| {
        Error::new(
            ErrorCode::ConfigInvalid,
            format!("payment provider key: {m}"),
        )
    };
    let b64 = text
        .trim()
        .strip_prefix("ed25519:")
        .ok_or_else(|| config("expected ed25519:BASE64"))?;
    let bytes: [u8; 32] = STANDARD
        .decode(b64)
        .map_err(|_| config("not base64"))?
        .try_into()
        .map_err(|_| config("an Ed25519 public key has 32 bytes"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| config("not a valid Ed25519 point"))
}

/// Check the signature header of a JSON body against the provider's key.
pub fn verify_body(key: &VerifyingKey, body: &[u8], header: Option<&str>) -> Result<(), Error> {
    let header = header.ok_or_else(|| bad_signature("the message is not signed"))?;
    let b64 = header
        .trim()
        .strip_prefix("ed25519=")
        .ok_or_else(|| bad_signature("the signature header is not ed25519=BASE64"))?;
    let signature = STANDARD
        .decode(b64)
        .map_err(|_| bad_signature("the signature is not base64"))?;
    verify(key, body, &signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Notification {
        Notification {
            event_id: "ev1".into(),
            merchant_id: "portal".into(),
            payment_id: "P1".into(),
            order_ref: "G01.07-261128-0001".into(),
            amount_vnd: 8000,
            status: PaymentStatus::Paid,
            settled_unix: 1_800_000_000,
            bank_reference: Some("VCB 12/34".into()),
        }
    }

    #[test]
    fn signed_query_round_trips_and_refuses_changes() {
        let key = ProviderKey::generate();
        let public = parse_public_key(&key.public_text()).unwrap();
        let q = sample().to_signed_query(&key);
        assert_eq!(
            Notification::from_signed_query(&q, &public).unwrap(),
            sample()
        );
        let with_lang = format!("{q}&lang=en");
        assert!(Notification::from_signed_query(&with_lang, &public).is_ok());
        let tampered = q.replace("amount_vnd=8000", "amount_vnd=1");
        assert_eq!(
            Notification::from_signed_query(&tampered, &public)
                .unwrap_err()
                .code,
            ErrorCode::PayBadSignature
        );
        let unsigned = q.split("&signature=").next().unwrap();
        assert_eq!(
            Notification::from_signed_query(unsigned, &public)
                .unwrap_err()
                .code,
            ErrorCode::PayBadSignature
        );
        let other = parse_public_key(&ProviderKey::generate().public_text()).unwrap();
        assert!(Notification::from_signed_query(&q, &other).is_err());
    }

    #[test]
    fn body_signature() {
        let key = ProviderKey::generate();
        let public = parse_public_key(&key.public_text()).unwrap();
        let body = sample().to_body().unwrap();
        let header = key.sign_body(&body);
        verify_body(&public, &body, Some(&header)).unwrap();
        let mut changed = body.clone();
        changed[10] ^= 1;
        assert_eq!(
            verify_body(&public, &changed, Some(&header))
                .unwrap_err()
                .code,
            ErrorCode::PayBadSignature
        );
        assert!(verify_body(&public, &body, None).is_err());
        assert!(parse_public_key("rsa:xx").is_err());
    }
}
