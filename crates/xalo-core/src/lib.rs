//! The ground floor of Xalo: identifiers of people, members and services; the coded error
//! type; configuration; and the plumbing every server role shares.
//!
//! Nothing here knows about any particular system of the platform.

pub mod batch;
pub mod config;
pub mod cpu_time;
pub mod error;
pub mod personal_code;
pub mod server;
pub mod telemetry;
pub mod xroad;

pub use config::Config;
pub use error::{Error, ErrorCode, ResultExt};
pub use personal_code::{Country, Gender, PersonalCode, PersonalCodeError};
pub use xroad::{ClientId, IdentifierError, MemberId, ServiceId, SubsystemId};

/// Seconds since the Unix epoch, the time every stored row and signed document carries
/// (0 on a clock set before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 on a clock set before 1970).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The version of this build of Xalo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
