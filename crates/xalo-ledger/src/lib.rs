//! The pure core of Xalo's transparency ledger: the math and the formats, with no storage
//! and no server.
//!
//! - [`merkle`]: RFC 9162 §2.1 hashing, tree heads, the right-edge [`merkle::Frontier`] and
//!   the [`merkle::HashSource`] trait that a database or a directory of tiles implements.
//! - [`stored_hash`]: the Go `sumdb/tlog` numbering of every hash a log ever stores, so a
//!   log can persist hashes append-only and answer any node by index.
//! - [`proof`]: inclusion and consistency proofs (RFC 9162 §2.1.3, §2.1.4).
//! - [`tile`]: C2SP tlog-tiles paths, hash tiles, entry bundles, incremental tile building
//!   and proofs computed from tiles.
//! - [`checkpoint`], [`note`], [`cosignature`], [`witness_policy`]: C2SP tlog-checkpoint,
//!   signed-note with Ed25519, tlog-cosignature/v1 and a k-of-n witness policy.
//!
//! Everything is synchronous and deterministic; callers that read from a database do the
//! reading behind the traits, in one batch per call where they can.

pub mod checkpoint;
pub mod cosignature;
pub mod error;
pub mod hash;
pub mod memory;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod stored_hash;
pub mod tile;
pub mod witness_policy;

pub use checkpoint::Checkpoint;
pub use cosignature::{CosignatureSigner, CosignatureVerifier};
pub use error::LedgerError;
pub use hash::Hash;
pub use memory::MemoryTree;
pub use merkle::{Frontier, HashSource, NodeId};
pub use note::{Ed25519Signer, Ed25519Verifier, Note, NoteSignature, VerifiedNote, VerifierSet};
pub use tile::{EntryBundle, HashTile, TileId, TilePath, TileReader};
pub use witness_policy::WitnessPolicy;

// The service on top of the core: durable sequencing, the tiled log in a database, the
// `ledger` and `witness` roles, the client other crates use, and the benchmark.
pub mod bench;
pub mod client;
pub mod edge;
pub mod entry;
pub mod keys;
pub mod leaf_index;
pub mod log;
pub mod log_store;
pub mod sequencer;
pub mod service;
pub mod verify;
pub mod witness;
pub mod witness_client;

pub use entry::{Entry, EntryKind};
