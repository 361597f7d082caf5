//! The registers on a real database (SQLite, or PostgreSQL under
//! XALO_TEST_DATABASE=postgres) and over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod registry {
    mod events;
    mod generate;
    mod service;
}
