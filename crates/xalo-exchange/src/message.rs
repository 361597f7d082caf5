//! An exchanged message as the gateways see it: X-Road's headers, which headers travel
//! and which are filtered, the canonical form that is hashed and signed, and
//! X-Road-Request-Hash.
//!
//! A message's hash is `SHA-512(SHA-512(head) ‖ SHA-512(body))` (PR-REST 4.3, the
//! request hash), where the head is the request line (or status) and the travelling
//! headers in a canonical order; a signature signs that hash, so it covers the request
//! line, the headers and the body.

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use sha2::{Digest, Sha512};

use crate::b64;

pub const X_ROAD_CLIENT: &str = "x-road-client";
pub const X_ROAD_SERVICE: &str = "x-road-service";
pub const X_ROAD_ID: &str = "x-road-id";
pub const X_ROAD_USER_ID: &str = "x-road-userid";
pub const X_ROAD_ISSUE: &str = "x-road-issue";
pub const X_ROAD_REQUEST_HASH: &str = "x-road-request-hash";
pub const X_ROAD_REQUEST_ID: &str = "x-road-request-id";
/// The provider's gateway a caller wants its request sent to (PR-REST 4.3).
pub const X_ROAD_SECURITY_SERVER: &str = "x-road-security-server";

/// How an information system proves it may act for a client subsystem, when it does not
/// use a client certificate: a key the gateway's administrator issued to it.
pub const CLIENT_KEY: &str = "x-xalo-client-key";
/// Gateway-to-gateway headers: the sending member's signature, its signing certificate
/// (base64 DER) with a recent OCSP answer, and the OCSP answer for the sending gateway's TLS
/// certificate.
pub const SIGNATURE: &str = "x-xalo-signature";
/// Where the message sits in the signed batch (see [`crate::signature::BatchProof`]).
pub const SIGNATURE_BATCH: &str = "x-xalo-signature-batch";
pub const SIGNER: &str = "x-xalo-signer";
pub const SIGNER_OCSP: &str = "x-xalo-signer-ocsp";
pub const TLS_OCSP: &str = "x-xalo-tls-ocsp";

/// Headers that do not travel through the exchange (PR-REST 4.3 "Filtered headers"), and
/// those a hop may rewrite (length, date), which therefore are not signed either.
pub fn is_filtered(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "user-agent"
            | "server"
            | "expect"
            | "content-length"
            | "date"
            | "x-road-error"
    ) || name.as_str().starts_with("x-xalo-")
}

/// The headers that travel, in the order the canonical form lists them.
pub fn travelling(headers: &HeaderMap) -> Vec<(&HeaderName, &[u8])> {
    let mut out: Vec<(&HeaderName, &[u8])> = headers
        .iter()
        .filter(|(n, _)| !is_filtered(n))
        .map(|(n, v)| (n, v.as_bytes()))
        .collect();
    // Stable sort: values of a repeated header keep their order.
    out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    out
}

fn head_bytes(first: &[u8], headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(first);
    out.push(b'\n');
    for (n, v) in travelling(headers) {
        out.extend_from_slice(n.as_str().as_bytes());
        out.push(b':');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// The canonical head of a request: method, target (path and query as sent) and headers.
pub fn request_head(method: &str, target: &str, headers: &HeaderMap) -> Vec<u8> {
    head_bytes(
        format!("xalo-request/1 {method} {target}").as_bytes(),
        headers,
    )
}

/// The canonical head of a response: status and headers.
pub fn response_head(status: u16, headers: &HeaderMap) -> Vec<u8> {
    head_bytes(format!("xalo-response/1 {status}").as_bytes(), headers)
}

/// `SHA-512(SHA-512(head) ‖ SHA-512(body))`, or `SHA-512(head)` without a body.
pub fn message_hash(head: &[u8], body_len: u64, body_sha512: &[u8; 64]) -> [u8; 64] {
    if body_len == 0 {
        return Sha512::digest(head).into();
    }
    let mut h = Sha512::new();
    h.update(Sha512::digest(head));
    h.update(body_sha512);
    h.finalize().into()
}

/// A signature as the message log keeps it: the signature (base64) and, after a space, its
/// batch proof (the `X-Xalo-Signature-Batch` header), so the log alone shows what the
/// member signed and when.
pub fn logged_signature(signature_base64: &str, proof_header: &str) -> String {
    format!("{signature_base64} {proof_header}")
}

/// The logged form of the signature a message carries in its headers.
pub fn logged_signature_of(headers: &HeaderMap) -> Option<String> {
    Some(logged_signature(
        header_text(headers, SIGNATURE)?,
        header_text(headers, SIGNATURE_BATCH)?,
    ))
}

/// A logged signature's signature (decoded) and batch proof.
pub fn parse_logged_signature(text: &str) -> Option<(Vec<u8>, crate::signature::BatchProof)> {
    let (signature, proof) = text.split_once(' ')?;
    Some((
        b64().decode(signature).ok()?,
        crate::signature::BatchProof::parse(proof).ok()?,
    ))
}

pub fn hash_text(hash: &[u8]) -> String {
    b64().encode(hash)
}

/// A time-ordered (version 7, RFC 9562) UUID, for X-Road-Id and error details: the
/// millisecond clock in the first 48 bits, random below. Ordered ids land at the right
/// edge of the message log's `x_road_id` index, so a commit of many messages dirties a
/// few index pages instead of one random page per message.
pub fn new_uuid() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut b: [u8; 16] = rand::random();
    b[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Base64 header values of the few long byte strings a gateway sends with every message
/// (its signing certificate, its OCSP answers), encoded once instead of per message.
/// Found by comparing every byte, so a renewed answer gets its own value.
#[derive(Debug, Default)]
pub struct EncodedHeaders {
    recent: std::sync::Mutex<Vec<(Vec<u8>, axum::http::HeaderValue)>>,
}

/// Values kept (a gateway has two certificates and their answers, old and new).
const ENCODED_LIMIT: usize = 8;

impl EncodedHeaders {
    /// `bytes` in base64, as a header value.
    pub fn value(&self, bytes: &[u8]) -> Result<axum::http::HeaderValue, xalo_core::Error> {
        if let Ok(recent) = self.recent.lock()
            && let Some((_, v)) = recent.iter().find(|(b, _)| b.as_slice() == bytes)
        {
            return Ok(v.clone());
        }
        let value = axum::http::HeaderValue::from_str(&b64().encode(bytes))
            .map_err(|e| xalo_core::Error::new(xalo_core::ErrorCode::Internal, e.to_string()))?;
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= ENCODED_LIMIT {
                recent.remove(0);
            }
            recent.push((bytes.to_vec(), value.clone()));
        }
        Ok(value)
    }
}

/// The bytes of the long base64 header values peers send with every message (their
/// signing certificates and OCSP answers), decoded once instead of per message. Found by
/// comparing every byte of the text, so a renewed answer is decoded anew.
#[derive(Debug, Default)]
pub struct DecodedHeaders {
    recent: std::sync::Mutex<std::collections::VecDeque<Decoded>>,
}

type Decoded = (axum::http::HeaderValue, std::sync::Arc<Vec<u8>>);

/// Values kept: three for each of the peers a gateway talks to most; beyond them a value
/// is decoded again, as it was before this cache.
const DECODED_LIMIT: usize = 96;

impl DecodedHeaders {
    /// The first `name` header of `headers`, decoded; `None` when absent or not base64.
    pub fn get(&self, headers: &HeaderMap, name: &str) -> Option<std::sync::Arc<Vec<u8>>> {
        let value = headers.get(name)?;
        if let Ok(recent) = self.recent.lock()
            && let Some((_, bytes)) = recent.iter().find(|(v, _)| v == value)
        {
            return Some(bytes.clone());
        }
        let bytes = std::sync::Arc::new(b64().decode(value.as_bytes()).ok()?);
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= DECODED_LIMIT {
                recent.pop_back();
            }
            recent.push_front((value.clone(), bytes.clone()));
        }
        Some(bytes)
    }
}

/// The first value of a header as text.
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The last value of a header as text: of several `X-Road-Client` headers, the one PR-REST
/// (4.3) says names the caller.
pub fn last_header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(name)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
}

/// The client a request names: its last `X-Road-Client` header (PR-REST 4.3), its parts
/// percent-decoded; `None` when there is none.
pub fn named_client(
    headers: &HeaderMap,
) -> Option<Result<xalo_core::ClientId, xalo_core::xroad::IdentifierError>> {
    last_header_text(headers, X_ROAD_CLIENT).map(xalo_core::ClientId::from_header)
}

/// Refuse a service's path (the part after the service id) with a `.` or `..` segment, as
/// any backend might read it: percent-encoded, with `\` or an encoded slash or backslash
/// for a separator, or with `;params` after the dots. The path goes to the backend as it
/// came, and a backend that resolved `/public/../admin` would serve what the access right,
/// granted on `/public/**`, did not (PR-REST 4.2: the incoming request URI must be strictly
/// validated).
pub fn check_service_rest(rest: &str) -> Result<(), String> {
    // Most paths hold none of these: not copied.
    if !rest.contains(['.', '%', '\\', ';']) {
        return Ok(());
    }
    let read = rest
        .to_ascii_lowercase()
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/")
        .replace("%2e", ".");
    for segment in read.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        if segment == "." || segment == ".." {
            return Err(format!(
                "the path {rest:?} has a dot segment, which is not allowed: a service's path is passed on as it is, not resolved"
            ));
        }
    }
    Ok(())
}

/// Split `/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/path]` into the service (its first
/// five segments) and the rest of the path (with its leading `/`, possibly empty).
pub fn split_service_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/r1/")?;
    let mut end = 0;
    for i in 0..5 {
        let from = if i == 0 { 0 } else { end + 1 };
        if from > rest.len() {
            return None;
        }
        end = match rest[from..].find('/') {
            Some(j) => from + j,
            None if i == 4 => rest.len(),
            None => return None,
        };
    }
    Some((&rest[..end], &rest[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_of_a_service_path_are_refused() {
        for bad in [
            "/public/../admin",
            "/..",
            "/a/./b",
            "/public/%2e%2e/admin",
            "/public/%2E./admin",
            "/public/.%2e",
            "/%2e",
            "/public/..;/admin",
            "/public/..\\admin",
            "/public/..%5Cadmin",
            "/public/x%2F..%2F..%2Fadmin",
            "/public/.;x=1/admin",
        ] {
            assert!(check_service_rest(bad).is_err(), "{bad}");
        }
        for good in [
            "",
            "/",
            "/v1/pets",
            "/a/...",
            "/a/.b",
            "/a/b.",
            "/%2e%2e%2e",
            "/a/%2ex",
        ] {
            assert!(check_service_rest(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn service_paths_split_after_five_segments() {
        assert_eq!(
            split_service_path("/r1/VN/GOV/000001/population/persons/v1/x"),
            Some(("VN/GOV/000001/population/persons", "/v1/x"))
        );
        assert_eq!(
            split_service_path("/r1/VN/GOV/000001/population/persons"),
            Some(("VN/GOV/000001/population/persons", ""))
        );
        assert_eq!(split_service_path("/r1/VN/GOV/000001/population"), None);
        assert_eq!(split_service_path("/r2/VN/GOV/1/a/b"), None);
    }

    #[test]
    fn hash_depends_on_every_part() {
        let mut h = HeaderMap::new();
        h.insert("x-road-client", "VN/GOV/1/a".parse().unwrap());
        h.insert("content-length", "3".parse().unwrap());
        let head = request_head("GET", "/r1/VN/GOV/2/b/s", &h);
        assert!(!String::from_utf8_lossy(&head).contains("content-length"));
        let body: [u8; 64] = Sha512::digest(b"abc").into();
        let a = message_hash(&head, 3, &body);
        let other: [u8; 64] = Sha512::digest(b"abd").into();
        assert_ne!(a, message_hash(&head, 3, &other));
        assert_ne!(
            a,
            message_hash(&request_head("POST", "/r1/VN/GOV/2/b/s", &h), 3, &body)
        );
    }

    #[test]
    fn ids_are_version_7_and_ordered_by_time() {
        let first = new_uuid();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = new_uuid();
        assert_eq!(first.len(), 36);
        assert_eq!(&first[14..15], "7", "version nibble of {first}");
        assert!(
            matches!(&first[19..20], "8" | "9" | "a" | "b"),
            "variant of {first}"
        );
        assert!(first < later, "{first} then {later}");
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let stamped = u64::from_str_radix(&later[..8], 16).unwrap() << 16
            | u64::from_str_radix(&later[9..13], 16).unwrap();
        assert!(millis - stamped < 1000, "{stamped} vs now {millis}");
    }
}
