//! Xalo's national trust services: certificate authorities ([`authority`]), certificate
//! status ([`ocsp`]), RFC 3161 time-stamps ([`timestamp`]), CAdES signatures ([`cades`])
//! and ASiC-E signed documents ([`container`]); the `trust` server role ([`service`]);
//! and the chain and status checks the exchange, sign-in and portal share ([`chain`]).

pub mod authority;
pub mod key;
pub mod store;

pub use authority::{
    AuthorityName, IssueRequest, Issued, KeySource, Pki, PkiSettings, Profile, Signer, Subject,
};
pub use key::{KeyAlgorithm, SigningKey};
pub use store::{CertificateRecord, RevocationReason};
pub mod cades;
pub mod chain;
pub mod ocsp;
pub mod registration;
pub mod service;
pub mod timestamp;

pub use service::{DemoSummary, ROLE, TrustSettings, demo_summary, serve, serve_with};
pub mod benchmark;
pub mod cli;
pub mod container;
pub mod remote;
