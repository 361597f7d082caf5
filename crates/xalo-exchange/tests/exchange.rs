//! Integration tests of the exchange: a central server, real gateways on loopback with
//! mutual TLS, the trust service's OCSP responder, and backends.

// Helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod exchange {
    mod central;
    mod demo;
    mod message_log;
    mod operations;
    mod protocol;
    mod pubsub;
    mod refusals;
    mod relay;
    mod round_trip;
    mod streaming;
    mod support;
}
