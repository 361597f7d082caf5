//! The ledger's error type and its mapping onto Xalo's coded errors.

use xalo_core::{Error, ErrorCode};

/// Everything that can go wrong in the ledger's math and formats.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {first} is larger than tree size {second}")]
    SizeOrder { first: u64, second: u64 },
    #[error("proof does not verify: {0}")]
    ProofInvalid(String),
    #[error("hash has {0} bytes, expected 32")]
    HashLength(usize),
    #[error("tile path {path:?}: {reason}")]
    TilePath { path: String, reason: String },
    #[error("tile content: {0}")]
    TileContent(String),
    #[error("entry of {0} bytes is longer than an entry bundle allows (65535)")]
    EntryTooLarge(usize),
    #[error("checkpoint: {0}")]
    CheckpointMalformed(String),
    #[error("signed note: {0}")]
    NoteMalformed(String),
    #[error("signed note too large: {0}")]
    NoteTooLarge(String),
    #[error("key: {0}")]
    KeyMalformed(String),
    #[error("signature by {name}+{key_id:08x} does not verify")]
    SignatureInvalid { name: String, key_id: u32 },
    #[error("note has no signature by a trusted key")]
    NoteUnverified,
    #[error("note has more than one signature by {name}+{key_id:08x}")]
    DuplicateSignature { name: String, key_id: u32 },
    #[error("more than one verifier for key {name}+{key_id:08x}")]
    AmbiguousKey { name: String, key_id: u32 },
    #[error("checkpoint has {got} valid witness cosignatures, policy needs {needed}")]
    WitnessQuorum { got: usize, needed: usize },
    #[error("cosignature time: {0}")]
    Timestamp(String),
    #[error("hash source: {0}")]
    HashSource(String),
}

impl LedgerError {
    /// The stable code of this error in Xalo's catalogue.
    pub fn code(&self) -> ErrorCode {
        match self {
            LedgerError::IndexOutOfRange { .. } => ErrorCode::LedgerIndexOutOfRange,
            LedgerError::SizeOrder { .. } => ErrorCode::LedgerSizeOrder,
            LedgerError::ProofInvalid(_) => ErrorCode::LedgerProofInvalid,
            LedgerError::HashLength(_) => ErrorCode::LedgerHashLength,
            LedgerError::TilePath { .. } => ErrorCode::LedgerTilePath,
            LedgerError::TileContent(_) => ErrorCode::LedgerTileContent,
            LedgerError::EntryTooLarge(_) => ErrorCode::LedgerEntryTooLarge,
            LedgerError::CheckpointMalformed(_) => ErrorCode::LedgerCheckpointMalformed,
            LedgerError::NoteMalformed(_) => ErrorCode::LedgerNoteMalformed,
            LedgerError::NoteTooLarge(_) => ErrorCode::LedgerNoteTooLarge,
            LedgerError::KeyMalformed(_) => ErrorCode::LedgerKeyMalformed,
            LedgerError::SignatureInvalid { .. } => ErrorCode::LedgerSignatureInvalid,
            LedgerError::NoteUnverified => ErrorCode::LedgerNoteUnverified,
            LedgerError::DuplicateSignature { .. } => ErrorCode::LedgerDuplicateSignature,
            LedgerError::AmbiguousKey { .. } => ErrorCode::LedgerAmbiguousKey,
            LedgerError::WitnessQuorum { .. } => ErrorCode::LedgerWitnessQuorum,
            LedgerError::Timestamp(_) => ErrorCode::LedgerTimestamp,
            LedgerError::HashSource(_) => ErrorCode::LedgerHashSource,
        }
    }
}

impl From<LedgerError> for Error {
    fn from(e: LedgerError) -> Self {
        Error::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_ledger_code() {
        let all = [
            LedgerError::IndexOutOfRange { index: 1, size: 0 },
            LedgerError::SizeOrder {
                first: 2,
                second: 1,
            },
            LedgerError::ProofInvalid("x".into()),
            LedgerError::HashLength(3),
            LedgerError::TilePath {
                path: "p".into(),
                reason: "r".into(),
            },
            LedgerError::TileContent("x".into()),
            LedgerError::EntryTooLarge(70000),
            LedgerError::CheckpointMalformed("x".into()),
            LedgerError::NoteMalformed("x".into()),
            LedgerError::NoteTooLarge("x".into()),
            LedgerError::KeyMalformed("x".into()),
            LedgerError::SignatureInvalid {
                name: "n".into(),
                key_id: 1,
            },
            LedgerError::NoteUnverified,
            LedgerError::DuplicateSignature {
                name: "n".into(),
                key_id: 1,
            },
            LedgerError::AmbiguousKey {
                name: "n".into(),
                key_id: 1,
            },
            LedgerError::WitnessQuorum { got: 1, needed: 2 },
            LedgerError::Timestamp("x".into()),
            LedgerError::HashSource("x".into()),
        ];
        let mut codes = std::collections::BTreeSet::new();
        for e in all {
            let coded: Error = e.clone().into();
            assert!(coded.code.as_str().starts_with("XALO-LEDGER-"));
            assert_eq!(coded.message, e.to_string());
            codes.insert(coded.code);
        }
        assert_eq!(codes.len(), 18, "each variant has its own code");
    }
}
