//! Logging through `tracing`, for people (human) or for log collectors (JSON lines).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::{Error, ErrorCode};

/// Install the global subscriber. `RUST_LOG`, when set, wins over the configured filter.
pub fn init(log: &LogConfig) -> Result<(), Error> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        _ => log.filter.clone(),
    };
    let filter = EnvFilter::try_new(&filter).map_err(|e| {
        Error::new(
            ErrorCode::ConfigInvalid,
            format!("log filter {filter:?}: {e}"),
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("installing logger: {e}")))
}
