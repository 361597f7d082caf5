//! Encryption at rest of the bodies in the message log with the member's own key, as
//! X-Road's message-log encryption: AES-256-GCM (ring), a fresh random nonce per body,
//! and the message's X-Road-Id, side and part as associated data, so that a stored body
//! moved to another record does not open. Heads, hashes and signatures stay in the clear:
//! they are what the batch time-stamps and the ledger cover.
//!
//! A sealed body is `MAGIC ‖ key id (8 bytes) ‖ nonce (12) ‖ ciphertext ‖ tag`; bodies
//! logged before encryption was turned on stay readable as they were.

use std::io::Write;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Digest;
use xalo_core::{Error, ErrorCode};

use crate::message_log::LoggedMessage;

const MAGIC: &[u8] = b"xalo-log-aes256gcm-1:";
const KEY_ID_LEN: usize = 8;

fn key_error(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::ExchMessageLogKey, m.into())
}

/// The member's message-log key.
pub struct LogKey {
    key: LessSafeKey,
    /// The first bytes of the key's SHA-256, so a body sealed under another key is told
    /// apart from a corrupted one.
    id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey")
            .field("id", &hex::encode(self.id))
            .finish_non_exhaustive()
    }
}

impl LogKey {
    pub fn from_bytes(raw: &[u8; 32]) -> Result<LogKey, Error> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, raw).map_err(|_| key_error("not an AES-256 key"))?;
        let digest = sha2::Sha256::digest(raw);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Ok(LogKey {
            key: LessSafeKey::new(unbound),
            id,
        })
    }

    /// Read the key (64 hex digits) from `path`, or, when there is no such file, make one
    /// and keep it there, readable by the gateway's user only.
    pub fn load_or_create(path: &Path) -> Result<LogKey, Error> {
        let shown = path.display();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let raw = hex::decode(text.trim())
                    .map_err(|e| key_error(format!("{shown}: not hex: {e}")))?;
                let raw: [u8; 32] = raw
                    .try_into()
                    .map_err(|_| key_error(format!("{shown}: an AES-256 key has 32 bytes")))?;
                LogKey::from_bytes(&raw)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let raw = xalo_trust::key::random_bytes::<32>()?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options
                    .open(path)
                    .map_err(|e| key_error(format!("{shown}: {e}")))?;
                file.write_all(format!("{}\n", hex::encode(raw)).as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(|e| key_error(format!("{shown}: {e}")))?;
                LogKey::from_bytes(&raw)
            }
            Err(e) => Err(key_error(format!("{shown}: {e}"))),
        }
    }

    /// Seal `plain` for the record named by `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, Error> {
        let nonce_bytes = xalo_trust::key::random_bytes::<NONCE_LEN>()?;
        let mut out = Vec::with_capacity(MAGIC.len() + KEY_ID_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce_bytes);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut out[start..],
            )
            .map_err(|_| key_error("sealing a logged body failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Open what [`LogKey::seal`] made for the same `aad`.
    pub fn open(&self, aad: &[u8], stored: &[u8]) -> Result<Vec<u8>, Error> {
        let rest = stored
            .strip_prefix(MAGIC)
            .ok_or_else(|| key_error("the body is not sealed"))?;
        if rest.len() < KEY_ID_LEN + NONCE_LEN {
            return Err(key_error("a sealed body is truncated"));
        }
        let (id, rest) = rest.split_at(KEY_ID_LEN);
        if id != self.id {
            return Err(key_error(format!(
                "the body was sealed under another key (id {})",
                hex::encode(id)
            )));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| key_error("a sealed body's nonce is malformed"))?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| {
                key_error("a sealed body does not open: changed, or moved from another record")
            })?;
        Ok(plain.to_vec())
    }
}

/// Whether stored bytes are a sealed body.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// The associated data of a body: which message, which side logged it, which part.
pub fn aad(side: &str, x_road_id: &str, part: &str) -> Vec<u8> {
    format!("{side}\n{x_road_id}\n{part}").into_bytes()
}

/// Seal the bodies of a message about to be logged.
pub fn seal_message(key: &LogKey, m: &mut LoggedMessage) -> Result<(), Error> {
    if let Some(body) = &m.request_body {
        m.request_body = Some(key.seal(&aad(m.side, &m.x_road_id, "request"), body)?);
    }
    if let Some(body) = &m.response_body {
        m.response_body = Some(key.seal(&aad(m.side, &m.x_road_id, "response"), body)?);
    }
    Ok(())
}

/// A body as it was exchanged: opened when sealed, as stored otherwise.
pub fn open_body(
    key: Option<&LogKey>,
    side: &str,
    x_road_id: &str,
    part: &str,
    stored: Vec<u8>,
) -> Result<Vec<u8>, Error> {
    if !is_sealed(&stored) {
        return Ok(stored);
    }
    key.ok_or_else(|| {
        key_error("the body is sealed but the gateway has no message_log_encryption_key_file")
    })?
    .open(&aad(side, x_road_id, part), &stored)
}
