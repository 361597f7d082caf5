//! C2SP tlog-cosignature/v1 with Ed25519: a witness's timestamped statement that a
//! checkpoint is the largest consistent one it has seen for the log.
//!
//! The signature line is an ordinary note signature of type 0x04 whose bytes are
//! `timestamp (u64, big-endian) || Ed25519 signature` over
//! `cosignature/v1\ntime <timestamp>\n<checkpoint text>`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::LedgerError;
use crate::checkpoint::Checkpoint;
use crate::note::{
    self, NoteSignature, NoteSigner, NoteVerifier, check_name, ed25519_verify, encode_key, key_id,
    random_seed, signing_key_from, verifying_key, verifying_key_from,
};

/// Signature type byte of Ed25519 cosignature/v1.
pub const SIG_TYPE_COSIGNATURE_V1: u8 = 0x04;
/// The largest timestamp the spec allows (2^63 − 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The bytes a cosigner signs for `checkpoint_text` at `timestamp`.
pub fn cosigned_message(timestamp: u64, checkpoint_text: &str) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}").into_bytes()
}

/// The timestamp a cosignature carries, if the signature has the cosignature shape.
pub fn timestamp_of(signature: &NoteSignature) -> Option<u64> {
    if signature.signature.len() != 72 {
        return None;
    }
    let ts: [u8; 8] = signature.signature.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(ts))
}

fn now() -> Result<u64, LedgerError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| LedgerError::Timestamp("the clock is before 1970".into()))
}

/// A witness's cosigning key.
#[derive(Clone)]
pub struct CosignatureSigner {
    name: String,
    key: SigningKey,
    key_id: u32,
}

impl fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignatureSigner({}+{:08x})", self.name, self.key_id)
    }
}

impl CosignatureSigner {
    pub fn generate(name: &str) -> Result<CosignatureSigner, LedgerError> {
        CosignatureSigner::from_seed(name, &random_seed())
    }

    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<CosignatureSigner, LedgerError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(
            name,
            SIG_TYPE_COSIGNATURE_V1,
            key.verifying_key().as_bytes(),
        );
        Ok(CosignatureSigner {
            name: name.to_owned(),
            key,
            key_id,
        })
    }

    /// From `PRIVATE+KEY+name+id+base64(0x04 || seed)`.
    pub fn from_signer_key(skey: &str) -> Result<CosignatureSigner, LedgerError> {
        let (name, key, key_id) = signing_key_from(skey, SIG_TYPE_COSIGNATURE_V1)?;
        Ok(CosignatureSigner { name, key, key_id })
    }

    /// The secret key string; keep it as secret as the key.
    pub fn signer_key(&self) -> String {
        format!(
            "PRIVATE+KEY+{}",
            encode_key(
                &self.name,
                self.key_id,
                SIG_TYPE_COSIGNATURE_V1,
                self.key.as_bytes()
            )
        )
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
            key_id: self.key_id,
        }
    }

    /// Cosign a checkpoint's text at `timestamp` (seconds since the epoch).
    pub fn cosign(
        &self,
        checkpoint_text: &str,
        timestamp: u64,
    ) -> Result<NoteSignature, LedgerError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(LedgerError::Timestamp(format!(
                "{timestamp} is above 2^63-1"
            )));
        }
        // Only checkpoints are cosigned: the statement is about a log's tree head.
        Checkpoint::parse(checkpoint_text)?;
        let sig = self.key.sign(&cosigned_message(timestamp, checkpoint_text));
        let mut bytes = timestamp.to_be_bytes().to_vec();
        bytes.extend_from_slice(&sig.to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: bytes,
        })
    }
}

impl NoteSigner for CosignatureSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.key_id
    }
    /// Cosigns at the current time.
    fn sign(&self, text: &[u8]) -> Result<Vec<u8>, LedgerError> {
        let text = std::str::from_utf8(text)
            .map_err(|_| LedgerError::NoteMalformed("not valid UTF-8".into()))?;
        Ok(self.cosign(text, now()?)?.signature)
    }
}

/// A witness's public cosigning key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key: VerifyingKey,
    key_id: u32,
}

impl CosignatureVerifier {
    pub fn new(name: &str, public_key: &[u8]) -> Result<CosignatureVerifier, LedgerError> {
        check_name(name)?;
        let key = verifying_key(public_key)?;
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            key_id: key_id(name, SIG_TYPE_COSIGNATURE_V1, key.as_bytes()),
            key,
        })
    }

    /// From `name+id+base64(0x04 || public key)`.
    pub fn from_verifier_key(vkey: &str) -> Result<CosignatureVerifier, LedgerError> {
        let (name, key, key_id) = verifying_key_from(vkey, SIG_TYPE_COSIGNATURE_V1)?;
        Ok(CosignatureVerifier { name, key, key_id })
    }

    pub fn verifier_key(&self) -> String {
        encode_key(
            &self.name,
            self.key_id,
            SIG_TYPE_COSIGNATURE_V1,
            self.key.as_bytes(),
        )
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Check a cosignature (the bytes after the key id) over `checkpoint_text`; returns its
    /// timestamp.
    pub fn verify_cosignature(
        &self,
        checkpoint_text: &[u8],
        signature: &[u8],
    ) -> Result<u64, LedgerError> {
        let invalid = || LedgerError::SignatureInvalid {
            name: self.name.clone(),
            key_id: self.key_id,
        };
        if signature.len() != 72 {
            return Err(invalid());
        }
        let (ts, sig) = signature.split_at(8);
        let ts: [u8; 8] = ts.try_into().map_err(|_| invalid())?;
        let timestamp = u64::from_be_bytes(ts);
        if timestamp > MAX_TIMESTAMP {
            return Err(LedgerError::Timestamp(format!(
                "{timestamp} is above 2^63-1"
            )));
        }
        let text = std::str::from_utf8(checkpoint_text)
            .map_err(|_| LedgerError::NoteMalformed("not valid UTF-8".into()))?;
        if !ed25519_verify(&self.key, &cosigned_message(timestamp, text), sig) {
            return Err(invalid());
        }
        Ok(timestamp)
    }
}

impl NoteVerifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.key_id
    }
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        self.verify_cosignature(text, signature).is_ok()
    }
}

/// Add `signer`'s cosignature at `timestamp` to a signed checkpoint note.
pub fn cosign_note(
    signed_note: &[u8],
    signer: &CosignatureSigner,
    timestamp: u64,
) -> Result<String, LedgerError> {
    let mut n = note::Note::parse(signed_note, &note::Limits::default())?;
    let sig = signer.cosign(n.text(), timestamp)?;
    n.add_signature(sig);
    Ok(n.to_text())
}
