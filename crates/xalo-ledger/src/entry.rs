//! What the ledger records: an entry is a kind and a byte string.
//!
//! The kind says which system put the evidence there (`exchange.message`,
//! `document.issued`, `registry.change`, …). In the tree and in entry bundles an entry is
//! written as `kind`, a newline, then the data, so a proof of inclusion also proves the kind.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xalo_core::{Error, ErrorCode};

use crate::tile::MAX_ENTRY_LEN;

/// Longest kind accepted.
pub const MAX_KIND_LEN: usize = 64;

/// The kind of an entry: lowercase dotted words, `system.event`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKind(String);

impl EntryKind {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EntryKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        let parts: Vec<&str> = s.split('.').collect();
        if s.len() > MAX_KIND_LEN || parts.len() < 2 || !parts.iter().all(|w| word(w)) {
            return Err(Error::new(
                ErrorCode::LedgerEntryKind,
                format!(
                    "entry kind {s:?}: expected dotted lowercase words such as \"registry.change\", \
                     at most {MAX_KIND_LEN} characters"
                ),
            ));
        }
        Ok(EntryKind(s.to_owned()))
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EntryKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntryKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One piece of evidence to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

impl Entry {
    /// A checked entry: its encoding must fit an entry bundle.
    pub fn new(kind: EntryKind, data: Vec<u8>) -> Result<Entry, Error> {
        let len = kind.as_str().len() + 1 + data.len();
        if len > MAX_ENTRY_LEN {
            return Err(Error::new(
                ErrorCode::LedgerEntryTooLarge,
                format!(
                    "an entry is at most {MAX_ENTRY_LEN} bytes with its kind; this one has {len} \
                     (record a hash of large documents instead)"
                ),
            ));
        }
        Ok(Entry { kind, data })
    }

    /// The bytes that the tree hashes and that entry bundles carry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.kind.as_str().len() + 1 + self.data.len());
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.data);
        out
    }

    /// Read an entry from its encoding.
    pub fn decode(bytes: &[u8]) -> Result<Entry, Error> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| Error::new(ErrorCode::LedgerTileContent, "entry has no kind line"))?;
        let kind = std::str::from_utf8(&bytes[..nl])
            .map_err(|_| Error::new(ErrorCode::LedgerTileContent, "entry kind is not UTF-8"))?
            .parse()?;
        Entry::new(kind, bytes[nl + 1..].to_vec())
    }

    /// The RFC 9162 leaf hash of this entry.
    pub fn leaf_hash(&self) -> crate::Hash {
        crate::merkle::leaf_hash(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds() {
        assert!("exchange.message".parse::<EntryKind>().is_ok());
        assert!("cabinet.decision.v2".parse::<EntryKind>().is_ok());
        for bad in [
            "",
            "exchange",
            "Exchange.message",
            "a..b",
            "a.b\n",
            &"a.".repeat(40),
        ] {
            let e = bad.parse::<EntryKind>().unwrap_err();
            assert_eq!(e.code, ErrorCode::LedgerEntryKind, "{bad:?}");
        }
    }

    #[test]
    fn size_limit() {
        let kind: EntryKind = "document.issued".parse().unwrap();
        let room = MAX_ENTRY_LEN - kind.as_str().len() - 1;
        assert!(Entry::new(kind.clone(), vec![0; room]).is_ok());
        let e = Entry::new(kind, vec![0; room + 1]).unwrap_err();
        assert_eq!(e.code, ErrorCode::LedgerEntryTooLarge);
    }

    proptest! {
        #[test]
        fn encoding_round_trips(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let e = Entry::new("registry.change".parse().unwrap(), data).unwrap();
            prop_assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        }
    }
}
