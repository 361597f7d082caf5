//! Integration tests of the ledger core against published vectors and properties.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod ledger {
    mod bench;
    mod known_vectors;
    mod notes;
    mod properties;
    mod service;
    mod tiles;
}
