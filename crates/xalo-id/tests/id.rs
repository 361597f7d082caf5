#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

//! The sign-in with real servers: trust services, the Mobile-ID operator and the provider,
//! driven by a standard OIDC client library, by raw HTTP for the refusals, over TLS client
//! authentication for the ID-card, and by a real browser.

mod browser;
mod browser_id_card;
mod grant;
mod id_card;
mod interop;
mod nation;
mod oauth_errors;
mod signing;
mod sms;
