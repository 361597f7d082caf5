//! What a gateway's `/healthz` reports beyond its database: the global configuration's age
//! and expiry, its certificates' expiry, how fresh the OCSP answers for its own
//! certificates are, and when the message log was last time-stamped. Each check is `ok`,
//! `degraded` (working, but an operator should act: a refresh failed while the old answer
//! still holds, a certificate expires soon) or `unhealthy` (peers would refuse this
//! gateway, or it would refuse to exchange); the worst one is the gateway's state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use xalo_core::server::{HealthReport, HealthReporter, HealthState};

use crate::gateway::GatewayState;
use crate::unix_now;

/// What the gateway's background tasks last saw, for the health report.
#[derive(Debug, Default)]
pub struct Observed {
    inner: Mutex<Seen>,
    /// While time-stamping fails, when the oldest message still unstamped was logged
    /// (0: time-stamping is not failing), read by every message without the lock.
    unstamped_since: std::sync::atomic::AtomicI64,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    conf_refreshed_unix: Option<i64>,
    conf_error: Option<String>,
    tls_ocsp: OcspSeen,
    signing_ocsp: OcspSeen,
    stamp: StampSeen,
}

#[derive(Debug, Default, Clone)]
struct OcspSeen {
    produced: Option<SystemTime>,
    error: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct StampSeen {
    last_success_unix: Option<i64>,
    /// The oldest message not yet covered by a time-stamp, when the last run left some.
    oldest_unstamped_unix: Option<i64>,
    error: Option<String>,
}

/// Which of the gateway's own certificates.
#[derive(Debug, Clone, Copy)]
pub enum OwnCertificate {
    Tls,
    Signing,
}

impl Observed {
    fn update(&self, f: impl FnOnce(&mut Seen)) {
        if let Ok(mut s) = self.inner.lock() {
            f(&mut s);
        }
    }

    fn seen(&self) -> Seen {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn conf_refresh(&self, result: &Result<(), xalo_core::Error>) {
        self.update(|s| match result {
            Ok(()) => {
                s.conf_refreshed_unix = Some(unix_now());
                s.conf_error = None;
            }
            Err(e) => s.conf_error = Some(e.to_string()),
        });
    }

    /// The outcome of asking for a good OCSP answer for one of the gateway's certificates.
    pub fn ocsp(&self, which: OwnCertificate, result: Result<&[u8], &xalo_core::Error>) {
        let produced = result.ok().and_then(|der| {
            xalo_trust::ocsp::basic_response(der)
                .ok()
                .map(|b| b.tbs_response_data.produced_at.0.to_system_time())
        });
        self.update(|s| {
            let o = match which {
                OwnCertificate::Tls => &mut s.tls_ocsp,
                OwnCertificate::Signing => &mut s.signing_ocsp,
            };
            match result {
                Ok(_) => {
                    o.produced = produced;
                    o.error = None;
                }
                Err(e) => {
                    o.error = Some(e.to_string());
                    // A certificate that is no longer good has no usable answer left.
                    if e.code == xalo_core::ErrorCode::ExchCertificateStatus
                        || e.code == xalo_core::ErrorCode::ExchCertificate
                    {
                        o.produced = None;
                    }
                }
            }
        });
    }

    pub fn stamp_succeeded(&self, at_unix: Option<i64>, oldest_unstamped_unix: Option<i64>) {
        self.update(|s| {
            if at_unix.is_some() {
                s.stamp.last_success_unix = at_unix;
            }
            s.stamp.oldest_unstamped_unix = oldest_unstamped_unix;
            s.stamp.error = None;
        });
        self.unstamped_since
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn stamp_failed(&self, error: String, oldest_unstamped_unix: Option<i64>) {
        self.update(|s| {
            s.stamp.error = Some(error);
            if oldest_unstamped_unix.is_some() {
                s.stamp.oldest_unstamped_unix = oldest_unstamped_unix;
            }
            if let Some(oldest) = s.stamp.oldest_unstamped_unix {
                self.unstamped_since
                    .store(oldest.max(1), std::sync::atomic::Ordering::Relaxed);
            }
        });
    }

    /// How long the oldest message not yet time-stamped has waited, while time-stamping
    /// fails; `None` while it succeeds.
    pub fn unstamped_for_secs(&self, now_unix: i64) -> Option<i64> {
        match self
            .unstamped_since
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            since => Some(now_unix.saturating_sub(since)),
        }
    }
}

fn check(state: HealthState, mut detail: Value) -> (HealthState, Value) {
    if let Some(o) = detail.as_object_mut() {
        o.insert("status".into(), json!(state));
    }
    (state, detail)
}

fn secs_between(later: SystemTime, earlier: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn certificate_check(der: &[u8], warning_days: u64) -> (HealthState, Value) {
    let Ok(cert) = xalo_trust::authority::parse_certificate(der) else {
        return check(
            HealthState::Unhealthy,
            json!({"error": "the certificate cannot be read"}),
        );
    };
    let now = SystemTime::now();
    let not_after = cert.tbs_certificate.validity.not_after.to_system_time();
    let not_before = cert.tbs_certificate.validity.not_before.to_system_time();
    let left = secs_between(not_after, now);
    let state = if now < not_before || left <= 0 {
        HealthState::Unhealthy
    } else if left < (warning_days as i64).saturating_mul(86_400) {
        HealthState::Degraded
    } else {
        HealthState::Ok
    };
    check(
        state,
        json!({
            "fingerprint": crate::fingerprint(der),
            "not_after_unix": secs_between(not_after, SystemTime::UNIX_EPOCH),
            "expires_in_days": left / 86_400,
        }),
    )
}

fn ocsp_check(seen: &OcspSeen, reuse: Duration, max_age: Duration) -> (HealthState, Value) {
    let now = SystemTime::now();
    let age = seen.produced.map(|p| secs_between(now, p));
    let state = match age {
        // Peers refuse an answer older than they accept, or none at all.
        None => HealthState::Unhealthy,
        Some(a) if a > max_age.as_secs() as i64 => HealthState::Unhealthy,
        Some(a) if seen.error.is_some() || a > 2 * reuse.as_secs() as i64 => HealthState::Degraded,
        Some(_) => HealthState::Ok,
    };
    check(
        state,
        json!({
            "produced_unix": seen.produced.map(|p| secs_between(p, SystemTime::UNIX_EPOCH)),
            "age_secs": age,
            "max_age_secs": max_age.as_secs(),
            "last_error": seen.error,
        }),
    )
}

/// The gateway's health report.
pub fn report(gw: &GatewayState) -> HealthReport {
    let settings = gw.current();
    let seen = gw.observed.seen();
    let now = unix_now();
    let mut checks = serde_json::Map::new();
    let mut worst = HealthState::Ok;
    let mut add = |name: &str, (state, detail): (HealthState, Value)| {
        worst = worst.max(state);
        checks.insert(name.to_owned(), detail);
    };

    // The times of the latest issue, which a renewal moves on past the document's own.
    add(
        "global_conf",
        match gw.conf.validity() {
            None => check(
                HealthState::Unhealthy,
                json!({"error": "no global configuration has been downloaded", "last_error": seen.conf_error}),
            ),
            Some(validity) => {
                let state = if validity.is_expired(now) {
                    HealthState::Unhealthy
                } else if seen.conf_error.is_some() {
                    HealthState::Degraded
                } else {
                    HealthState::Ok
                };
                check(
                    state,
                    json!({
                        "version": validity.version,
                        "age_secs": now - validity.issued_unix,
                        "expires_in_secs": validity.expires_unix - now,
                        "last_refresh_unix": seen.conf_refreshed_unix,
                        "last_error": seen.conf_error,
                    }),
                )
            }
        },
    );
    add(
        "tls_certificate",
        certificate_check(gw.tls.certificate(), settings.certificate_warning_days),
    );
    add(
        "signing_certificate",
        certificate_check(gw.signer.certificate(), settings.certificate_warning_days),
    );
    let (reuse, max_age) = gw.status.limits();
    add("tls_ocsp", ocsp_check(&seen.tls_ocsp, reuse, max_age));
    add(
        "signing_ocsp",
        ocsp_check(&seen.signing_ocsp, reuse, max_age),
    );

    let tsa = gw.conf.latest().and_then(|c| tsa_url(&c));
    let oldest_age = seen.stamp.oldest_unstamped_unix.map(|t| now - t);
    let stamp_state = if oldest_age.is_some_and(|a| a > settings.timestamp_failure_secs as i64) {
        HealthState::Unhealthy
    } else if tsa.is_none()
        || seen.stamp.error.is_some()
        || oldest_age.is_some_and(|a| a > 2 * settings.timestamp_interval_secs.max(1) as i64 + 5)
    {
        HealthState::Degraded
    } else {
        HealthState::Ok
    };
    add(
        "message_log_timestamp",
        check(
            stamp_state,
            json!({
                "tsa_url": tsa,
                "last_timestamp_unix": seen.stamp.last_success_unix,
                "since_last_timestamp_secs": seen.stamp.last_success_unix.map(|t| now - t),
                "oldest_unstamped_age_secs": oldest_age,
                "failure_period_secs": settings.timestamp_failure_secs,
                "last_error": seen.stamp.error,
            }),
        ),
    );
    HealthReport {
        state: worst,
        checks,
    }
}

/// The time-stamping authority of the global configuration.
pub fn tsa_url(conf: &crate::global_conf::GlobalConf) -> Option<String> {
    conf.authorities.iter().find_map(|a| a.tsa_url.clone())
}

/// `/healthz`'s reporter for a gateway.
pub fn reporter(gw: &Arc<GatewayState>) -> HealthReporter {
    let gw = Arc::downgrade(gw);
    Arc::new(move || {
        let gw = gw.upgrade();
        Box::pin(async move {
            match gw {
                Some(gw) => report(&gw),
                None => HealthReport {
                    state: HealthState::Unhealthy,
                    checks: serde_json::Map::new(),
                },
            }
        })
    })
}

/// Time-stamp the message log: every second, see whether the (reloadable) interval has
/// passed, then ask the global configuration's TSA for one token over the batch of
/// messages logged since the last one.
pub fn start_timestamper(gw: Arc<GatewayState>) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client for time-stamping");
                return;
            }
        };
        match gw.log.last_timestamp_unix().await {
            Ok(last) => gw.observed.stamp_succeeded(last, None),
            Err(e) => tracing::warn!(error = %e, "reading the last message log time-stamp"),
        }
        let mut last_run = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let interval = Duration::from_secs(gw.current().timestamp_interval_secs.max(1));
            if last_run.elapsed() < interval {
                continue;
            }
            last_run = tokio::time::Instant::now();
            let Some(url) = gw.conf.latest().and_then(|c| tsa_url(&c)) else {
                gw.observed.stamp_failed(
                    "the global configuration names no time-stamping authority".into(),
                    gw.log.oldest_unstamped_unix().await.ok().flatten(),
                );
                continue;
            };
            match gw.log.timestamp_all(&http, &url).await {
                Ok(run) => match run.error {
                    None => gw.observed.stamp_succeeded(run.stamped_unix, None),
                    Some(e) => {
                        tracing::warn!(error = %e, "time-stamping the message log failed");
                        gw.observed
                            .stamp_failed(e.to_string(), run.oldest_unstamped_unix);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "time-stamping the message log failed");
                    let oldest = gw.log.oldest_unstamped_unix().await.ok().flatten();
                    gw.observed.stamp_failed(e.to_string(), oldest);
                }
            }
        }
    })
    .abort_handle()
}

/// Refuse a message while the message log has gone without a time-stamp for longer than
/// the grace period (`timestamp_failure_secs`), as X-Road's acceptable time-stamp failure
/// period: evidence that cannot be time-stamped is not evidence enough to go on.
pub(crate) fn refuse_unstamped(
    gw: &GatewayState,
    kind: crate::protocol_error::Kind,
) -> Result<(), crate::protocol_error::ProtocolError> {
    match unstamped_too_long(gw) {
        None => Ok(()),
        Some(why) => Err(crate::protocol_error::ProtocolError::new(kind, why)),
    }
}

/// Why no message may be exchanged now, when the log has waited for a time-stamp past
/// the grace period (see [`refuse_unstamped`]).
pub(crate) fn unstamped_too_long(gw: &GatewayState) -> Option<String> {
    let age = gw.observed.unstamped_for_secs(crate::unix_now())?;
    let grace = gw.current().timestamp_failure_secs;
    (age > i64::try_from(grace).unwrap_or(i64::MAX)).then(|| {
        format!(
            "the message log has waited {age} s for a time-stamp, longer than the grace period of {grace} s: no message is exchanged until the time-stamping authority answers again"
        )
    })
}
