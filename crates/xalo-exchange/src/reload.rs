//! Configuration reload: on SIGHUP, or `POST /api/v1/reload` of the administration API, a
//! gateway started from a configuration file reads the file (and the environment) again
//! and applies what can change while it serves. Listeners, connections and requests in
//! flight are untouched: the new values are swapped in, and each request reads them when
//! it needs them.
//!
//! A change to anything else (identity, keys, addresses, databases) needs a restart; a
//! reload that contains one is refused whole, so a gateway never runs half-reloaded.

use std::time::Duration;

use serde_json::Value;
use xalo_core::{Config, Error, ErrorCode};

use crate::gateway::{GatewaySettings, GatewayState, ROLE};
use crate::spool::SpoolLimits;

/// The `[roles.gateway]` settings a running gateway takes on reload.
pub const RELOADABLE: &[&str] = &[
    "admin_token",
    "poll_secs",
    "ocsp_reuse_secs",
    "ocsp_max_age_secs",
    "message_log_retention_days",
    "message_log_bodies",
    "memory_body_bytes",
    "max_body_bytes",
    "spool_dir",
    "timestamp_interval_secs",
    "timestamp_failure_secs",
    "certificate_warning_days",
    "registry_cache_ms",
];

fn table(s: &GatewaySettings) -> Result<serde_json::Map<String, Value>, Error> {
    match serde_json::to_value(s) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Error::new(
            ErrorCode::Internal,
            "gateway settings are not a table",
        )),
    }
}

/// Everything of the configuration that only a restart applies, for comparison: the
/// configuration less the reloadable parts and the sections of other roles.
fn fixed_part(c: &Config) -> Config {
    let mut c = c.clone();
    c.log.filter.clear();
    c.http.shutdown_grace_secs = 0;
    c.roles.retain(|name, _| name == ROLE);
    if let Some(role) = c.roles.get_mut(ROLE) {
        role.settings.clear();
    }
    c
}

/// What changed between two configurations: (reloadable, needing a restart).
fn changes(old: &Config, new: &Config) -> Result<(Vec<String>, Vec<String>), Error> {
    let (a, b) = (
        table(&old.role_settings::<GatewaySettings>(ROLE)?)?,
        table(&new.role_settings::<GatewaySettings>(ROLE)?)?,
    );
    let (mut reloadable, mut restart) = (Vec::new(), Vec::new());
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        if a.get(key) != b.get(key) {
            if RELOADABLE.contains(&key.as_str()) {
                reloadable.push(format!("roles.{ROLE}.{key}"));
            } else {
                restart.push(format!("roles.{ROLE}.{key}"));
            }
        }
    }
    if old.log.filter != new.log.filter {
        reloadable.push("log.filter".into());
    }
    if old.http.shutdown_grace_secs != new.http.shutdown_grace_secs {
        reloadable.push("http.shutdown_grace_secs".into());
    }
    if fixed_part(old) != fixed_part(new) {
        restart
            .push("listen address, database, data directory, log format or HTTP body limit".into());
    }
    Ok((reloadable, restart))
}

/// Read the configuration file again and apply it; returns the names of the settings
/// that changed.
pub fn reload(gw: &GatewayState) -> Result<Vec<String>, Error> {
    let result = apply(gw);
    gw.metrics.reloaded(result.is_ok());
    match &result {
        Ok(changed) => tracing::info!(?changed, "configuration reloaded"),
        Err(e) => tracing::warn!(error = %e, "configuration reload refused"),
    }
    result
}

fn apply(gw: &GatewayState) -> Result<Vec<String>, Error> {
    // One reload at a time, so two cannot interleave their swaps.
    let _one = gw
        .reloading
        .lock()
        .map_err(|_| Error::new(ErrorCode::Internal, "an earlier reload failed midway"))?;
    let old = gw.config();
    let new = old.reload().map_err(|e| match e.code {
        // Invalid TOML stays a configuration error; a missing source is a refusal.
        ErrorCode::ConfigInvalid if old.file.is_none() => {
            Error::new(ErrorCode::ExchReloadRefused, e.message)
        }
        _ => e,
    })?;
    let settings: GatewaySettings = new.role_settings(ROLE)?;
    let (changed, restart) = changes(&old, &new)?;
    if !restart.is_empty() {
        return Err(Error::new(
            ErrorCode::ExchReloadRefused,
            format!(
                "changing {} needs a restart; nothing was reloaded",
                restart.join(", ")
            ),
        ));
    }
    // Check what can fail before changing anything.
    xalo_core::telemetry::parse_filter(&new.log.filter)?;
    let spool_dir = crate::spool::usable_dir(settings.spool_dir.as_deref())?;

    gw.set_spool(SpoolLimits {
        memory: settings.memory_body_bytes,
        max: settings.max_body_bytes,
        dir: spool_dir,
    });
    gw.status.set_limits(
        Duration::from_secs(settings.ocsp_reuse_secs),
        Duration::from_secs(settings.ocsp_max_age_secs),
    );
    gw.log.set_bodies(settings.message_log_bodies);
    gw.registry
        .set_reuse(Duration::from_millis(settings.registry_cache_ms));
    gw.log
        .set_retention_days(settings.message_log_retention_days);
    gw.grace
        .set(Duration::from_secs(new.http.shutdown_grace_secs));
    xalo_core::telemetry::set_filter(&new.log.filter)?;
    gw.set_current(settings, new);
    Ok(changed)
}

/// Reload on every SIGHUP while the gateway runs (Unix; a gateway started from a file).
pub fn on_hangup(gw: std::sync::Weak<GatewayState>) -> Option<tokio::task::AbortHandle> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the API");
                return None;
            }
        };
        Some(
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    let Some(gw) = gw.upgrade() else { return };
                    tracing::info!("SIGHUP received, reloading the configuration");
                    let _ = reload(&gw);
                }
            })
            .abort_handle(),
        )
    }
    #[cfg(not(unix))]
    {
        let _ = gw;
        None
    }
}
