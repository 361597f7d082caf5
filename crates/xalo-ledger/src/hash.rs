//! The 32-byte SHA-256 hash every tree node, leaf and root is.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::LedgerError;

/// A SHA-256 hash: a leaf hash, an interior node or a tree root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The length of a hash in bytes.
    pub const LEN: usize = 32;

    /// A hash from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Hash, LedgerError> {
        <[u8; 32]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| LedgerError::HashLength(bytes.len()))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as logs and test vectors print hashes.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Standard base64 with padding, as checkpoints carry root hashes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parse standard base64; only the canonical encoding of 32 bytes is accepted.
    pub fn from_base64(text: &str) -> Result<Hash, LedgerError> {
        let bytes = STANDARD
            .decode(text)
            .map_err(|e| LedgerError::CheckpointMalformed(format!("root hash {text:?}: {e}")))?;
        Hash::from_slice(&bytes)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl From<[u8; 32]> for Hash {
    fn from(bytes: [u8; 32]) -> Self {
        Hash(bytes)
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_length() {
        let h = Hash([7; 32]);
        assert_eq!(Hash::from_base64(&h.to_base64()), Ok(h));
        assert_eq!(Hash::from_slice(&[0; 31]), Err(LedgerError::HashLength(31)));
        assert!(Hash::from_base64("AAAA").is_err());
        assert_eq!(h.to_hex().len(), 64);
    }
}
