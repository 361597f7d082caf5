//! Logging through `tracing`, for people (human) or for log collectors (JSON lines).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogConfig, LogFormat};
use crate::{Error, ErrorCode};

/// The installed subscriber's filter, which a configuration reload replaces.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The filter to use: `RUST_LOG` when set, else the configured one.
pub fn parse_filter(configured: &str) -> Result<EnvFilter, Error> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        _ => configured.to_owned(),
    };
    EnvFilter::try_new(&filter).map_err(|e| {
        Error::new(
            ErrorCode::ConfigInvalid,
            format!("log filter {filter:?}: {e}"),
        )
    })
}

/// Install the global subscriber. `RUST_LOG`, when set, wins over the configured filter.
pub fn init(log: &LogConfig) -> Result<(), Error> {
    let (filter, handle) = reload::Layer::new(parse_filter(&log.filter)?);
    let result = match log.format {
        LogFormat::Human => tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("installing logger: {e}")))?;
    let _ = FILTER.set(handle);
    Ok(())
}

/// Replace the running subscriber's filter (on a configuration reload). Returns whether
/// there was one to replace: a process that installed no subscriber (tests) has none.
pub fn set_filter(filter: &str) -> Result<bool, Error> {
    let filter = parse_filter(filter)?;
    match FILTER.get() {
        Some(handle) => handle.reload(filter).map(|()| true).map_err(|e| {
            Error::new(
                ErrorCode::Internal,
                format!("replacing the log filter: {e}"),
            )
        }),
        None => Ok(false),
    }
}
