//! Integration tests of the trust services, with openssl as the outside judge.
// Helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod trust {
    pub mod authority;
    pub mod container;
    pub mod service;
    pub mod support;
}
