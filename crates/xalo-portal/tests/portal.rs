//! The portal's integration tests, one binary (linking is slow).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod portal {
    mod bench;
    mod browser;
    mod citizen;
    mod dossier;
    mod evidence;
    mod http;
    mod kit;
    mod office;
    mod payment;
    mod registration;
    mod result;
    mod signin;
}
