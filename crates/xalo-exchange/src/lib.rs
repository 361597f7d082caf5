//! Xalo's data exchange layer, after X-Road: the `central` role keeps the registry of
//! members, subsystems, gateways and global groups and publishes it as a signed, expiring
//! global configuration; the `gateway` role (one or more per member) lets the member's
//! information systems call other members' services through `/r1/…` (X-Road's REST message
//! protocol) and serves the member's own services to other gateways over mutual TLS, every
//! message signed, access-checked, logged and recorded in the transparency ledger.

pub mod access_right;
pub mod archive;
pub mod bench;
pub mod central;
pub mod certificate_status;
pub mod client_proxy;
pub mod data_tracker;
pub mod demo;
pub mod evidence;
pub mod evidence_export;
pub mod gateway;
pub mod global_conf;
pub mod health;
pub mod hop;
pub mod inbox;
pub mod log_encryption;
pub mod management_client;
pub mod message;
pub mod message_log;
pub mod metaservice;
pub mod metrics;
pub mod nation;
pub mod openapi;
pub mod protocol_error;
pub mod pubsub;
pub mod refusal;
pub mod registry;
pub mod relay;
pub mod reload;
pub mod replay;
pub mod server_proxy;
pub mod service_registry;
pub mod signature;
pub mod spool;
pub mod tls;
pub mod topic;

pub use central::{CentralSettings, ROLE as CENTRAL_ROLE};
pub use gateway::{GatewaySettings, ROLE as GATEWAY_ROLE};

pub(crate) use xalo_core::unix_now;

/// `list` in an allocation of its length. A list read to its end grows by doubling, and
/// with a nation's tens of thousands of entries the unused room is up to half of it;
/// `shrink_to_fit` may leave it there, as an allocator keeps a block shrunk by less than
/// half where it is.
pub(crate) fn exact<T>(list: Vec<T>) -> Vec<T> {
    if list.capacity() == list.len() {
        return list;
    }
    let mut exact = Vec::with_capacity(list.len());
    exact.extend(list);
    exact
}

pub(crate) fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// SHA-256 of a certificate, in lower-case hex: how administrators and logs name it.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

/// A random bearer token (hex), for registration-authority and client keys.
pub fn random_token() -> Result<String, xalo_core::Error> {
    Ok(xalo_trust::key::random_bytes::<24>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
