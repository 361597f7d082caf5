//! `xalo bench exchange`: round-trips per second and the latency the exchange adds, with
//! many concurrent clients: information system → client gateway → provider gateway →
//! backend, against calling the backend directly, on loopback, with the message log on
//! and, when asked, the ledger recording evidence.
//!
//! Given the `xalo` binary, the two gateways run as their own processes (`xalo serve
//! gateway` with a generated configuration file), so each one's memory can be read from
//! `/proc/PID/status` under load; the trust service, central server, backend and load
//! generator stay in this process. Without it (`cargo bench`), the gateways run in this
//! process and only the growth of the whole process's memory can be reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde::Serialize;
use xalo_core::{Error, ErrorCode, ServiceId, SubsystemId};

use crate::nation::{MemberSpec, NationOptions, client_subject};
use crate::service_registry::NewService;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub concurrency: usize,
    /// Round-trips per measurement (after a warm-up of a tenth of that).
    pub requests: usize,
    /// Record evidence in a ledger started for the run.
    pub ledger: bool,
    /// The `xalo` binary, to run each gateway as its own process.
    pub gateway_binary: Option<std::path::PathBuf>,
    /// Threads each gateway process runs its tasks on (`xalo --workers`); `None`: one per
    /// core. The two gateways share the machine's cores with each other and the load.
    pub gateway_workers: Option<u16>,
    /// Also measure latency at this offered rate (round-trips/s, spread over the clients
    /// on a fixed schedule), directly and through the gateways; `None` or 0 to skip.
    pub rate: Option<f64>,
    /// Other members in the registry (each with a subsystem and a gateway, all in one
    /// global group), which the gateways look up for every message; each subsystem is
    /// granted the benchmark's service too.
    pub members: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            concurrency: 64,
            requests: 20_000,
            ledger: false,
            gateway_binary: None,
            gateway_workers: None,
            rate: Some(5_000.0),
            members: 0,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub concurrency: usize,
    pub ledger: bool,
    /// Members registered besides the two exchanging.
    pub members: usize,
    pub direct: Measurement,
    pub exchange: Measurement,
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    /// Entries in the ledger after the run (two per exchanged message), when recording.
    pub ledger_entries: Option<u64>,
    /// Exchange round-trips per second over the 110/s X-Road users report for a pair of
    /// 32-core security servers.
    pub ratio_to_x_road: f64,
    pub memory: Memory,
    /// CPU time of both gateways together per round trip at saturation, in µs, when
    /// each runs in its own process (Linux).
    pub gateway_cpu_us: Option<f64>,
    /// The machine's cores.
    pub cores: usize,
    /// Threads of each gateway process (`None`: one per core, or in-process gateways).
    pub gateway_workers: Option<u16>,
    /// How many messages shared each batched piece of work at saturation.
    pub batches: Option<BatchSizes>,
    /// Latency at a fixed offered rate, when asked for.
    pub paced: Option<Paced>,
    /// How the central server answers the gateways' polls of the global configuration
    /// (`None`: a poll failed).
    pub polls: Option<Polls>,
}

/// The central server answering polls of the global configuration, one after another.
#[derive(Debug, Clone, Serialize)]
pub struct Polls {
    pub count: usize,
    /// Size of the signed document.
    pub bytes: usize,
    /// p50 of a poll downloading the document, in ms.
    pub full_p50_ms: f64,
    /// p50 of a poll by a gateway that holds the document already (`304`), in ms.
    pub not_modified_p50_ms: f64,
}

/// Messages per batch at each gateway over a run, as (client's gateway, provider's):
/// signed under one signature, checked by one verification, written in one commit.
/// Work that is batched costs a message less the more messages share it.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSizes {
    pub signed: (f64, f64),
    pub verified: (f64, f64),
    pub committed: (f64, f64),
}

impl std::fmt::Display for BatchSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "signed {:.1} / {:.1}, verified {:.1} / {:.1}, committed {:.1} / {:.1} (client's / provider's gateway)",
            self.signed.0,
            self.signed.1,
            self.verified.0,
            self.verified.1,
            self.committed.0,
            self.committed.1
        )
    }
}

/// The gateways' batching counters (see [`crate::metrics::Batching`]), in the order of
/// [`BATCHING_COUNTERS`].
type BatchingCounters = [u64; 6];

const BATCHING_COUNTERS: [&str; 6] = [
    "xalo_exchange_signature_batches_total",
    "xalo_exchange_signed_messages_total",
    "xalo_exchange_signature_verifications_total",
    "xalo_exchange_verified_messages_total",
    "xalo_exchange_log_commits_total",
    "xalo_exchange_logged_messages_total",
];

/// What a gateway's `/metrics` said at one time: its batching counters, and its stage
/// histograms by (side, stage) as cumulative counts per upper bound.
#[derive(Debug, Clone)]
struct GatewayReading {
    counters: BatchingCounters,
    stages: StageBuckets,
}

/// A histogram's cumulative counts by upper bound (seconds; the last `+Inf`).
type Buckets = Vec<(f64, u64)>;

/// Each (side, stage)'s buckets.
type StageBuckets = Vec<((String, String), Buckets)>;

const STAGE_BUCKET: &str = "xalo_exchange_stage_duration_seconds_bucket{";

/// The stage histograms' buckets in a `/metrics` text.
fn stage_buckets(text: &str) -> StageBuckets {
    let mut out: StageBuckets = Vec::new();
    for line in text.lines() {
        let Some((labels, count)) = line
            .strip_prefix(STAGE_BUCKET)
            .and_then(|rest| rest.split_once("} "))
        else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix("=\"")?
                    .strip_suffix('"')
                    .map(str::to_owned)
            })
        };
        let (Some(side), Some(stage), Some(le), Ok(count)) = (
            label("side"),
            label("stage"),
            label("le"),
            count.trim().parse::<f64>(),
        ) else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        let key = (side, stage);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, buckets)) => buckets.push((bound, count as u64)),
            None => out.push((key, vec![(bound, count as u64)])),
        }
    }
    out
}

/// The median, in ms, of the observations between two readings of a histogram's
/// cumulative buckets, placed linearly within its bucket; `None` without observations.
/// One in the last, unbounded bucket reads as the last finite bound.
fn median_ms(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<f64> {
    let counts: Vec<(f64, u64)> = after
        .iter()
        .map(|(bound, n)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0, |(_, n)| *n);
            (*bound, n.saturating_sub(earlier))
        })
        .collect();
    let total = counts.last()?.1;
    if total == 0 {
        return None;
    }
    let half = total as f64 / 2.0;
    let (mut low, mut below) = (0.0, 0u64);
    for (bound, cumulative) in counts {
        if cumulative as f64 >= half {
            if bound.is_infinite() {
                return Some(low * 1e3);
            }
            let within = (cumulative - below).max(1) as f64;
            return Some((low + (bound - low) * (half - below as f64) / within) * 1e3);
        }
        (low, below) = (bound, cumulative);
    }
    None
}

/// Each gateway's batching counters and stage histograms, read from its `/metrics`.
async fn batching_counters(
    http: &reqwest::Client,
    gateways: &[String],
) -> Option<Vec<GatewayReading>> {
    let mut all = Vec::new();
    for url in gateways {
        let text = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let mut counters = [0u64; 6];
        for (value, name) in counters.iter_mut().zip(BATCHING_COUNTERS) {
            *value = text.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })? as u64;
        }
        all.push(GatewayReading {
            counters,
            stages: stage_buckets(&text),
        });
    }
    Some(all)
}

/// Messages per batch between two readings of both gateways' counters.
fn batch_sizes(
    before: Option<&[GatewayReading]>,
    after: Option<&[GatewayReading]>,
) -> Option<BatchSizes> {
    let (Some([b0, b1]), Some([a0, a1])) = (before, after) else {
        return None;
    };
    let (b0, b1, a0, a1) = (&b0.counters, &b1.counters, &a0.counters, &a1.counters);
    let per = |a: &BatchingCounters, b: &BatchingCounters, i: usize| {
        let batches = a[i].saturating_sub(b[i]);
        let items = a[i + 1].saturating_sub(b[i + 1]);
        if batches == 0 {
            0.0
        } else {
            items as f64 / batches as f64
        }
    };
    let pair = |i: usize| (per(a0, b0, i), per(a1, b1, i));
    Some(BatchSizes {
        signed: pair(0),
        verified: pair(2),
        committed: pair(4),
    })
}

/// The median time a message spent in a stage at a gateway, at the offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct StageMedian {
    /// `client` (at the client's gateway) or `provider`.
    pub side: String,
    /// A [`crate::metrics::Stage`]'s name.
    pub stage: String,
    pub p50_ms: f64,
}

/// The client's side's stages at the first gateway and the provider's at the second,
/// between two readings, in the order a message meets them.
fn stage_medians(
    before: Option<&[GatewayReading]>,
    after: Option<&[GatewayReading]>,
) -> Vec<StageMedian> {
    use crate::metrics::Stage;
    let (Some([b0, b1]), Some([a0, a1])) = (before, after) else {
        return Vec::new();
    };
    let order = [
        ("client", Stage::Held, b0, a0),
        ("client", Stage::Sign, b0, a0),
        ("client", Stage::ProviderGateway, b0, a0),
        ("provider", Stage::Held, b1, a1),
        ("provider", Stage::Backend, b1, a1),
        ("provider", Stage::Sign, b1, a1),
        ("provider", Stage::Log, b1, a1),
        ("client", Stage::Log, b0, a0),
    ];
    let mut out = Vec::new();
    for (side, stage, before, after) in order {
        let key = (side.to_owned(), stage.name().to_owned());
        let find = |r: &GatewayReading| {
            r.stages
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, buckets)| buckets.clone())
        };
        let Some(after) = find(after) else { continue };
        if let Some(p50_ms) = median_ms(&find(before).unwrap_or_default(), &after) {
            out.push(StageMedian {
                side: side.into(),
                stage: stage.name().into(),
                p50_ms,
            });
        }
    }
    out
}

/// Latency at a fixed offered rate: (backend directly, through both gateways).
#[derive(Debug, Clone, Serialize)]
pub struct Paced {
    pub rate: f64,
    pub direct: Measurement,
    pub exchange: Measurement,
    /// Where the machine's CPU went at this rate, when the gateways run as processes.
    pub cpu: Option<PacedCpu>,
    /// How many messages shared each batched piece of work at this rate.
    pub batches: Option<BatchSizes>,
    /// Where a message waited at each gateway at this rate, from their histograms.
    pub stages: Vec<StageMedian>,
    /// The same load through two bare relays (see [`crate::relay`]) in processes of their
    /// own, when the gateways run as processes: what the hops alone add on this machine
    /// (or why they could not be measured).
    pub relays: Option<Result<Measurement, String>>,
}

/// CPU time per request at a paced rate, in µs: what keeps the cores busy, and so how
/// long a request waits for one.
#[derive(Debug, Clone, Serialize)]
pub struct PacedCpu {
    /// Both gateways together, per round trip.
    pub gateways_us: f64,
    /// This process (load generator, echo backend, central server) per round trip
    /// through the gateways.
    pub harness_us: f64,
    /// This process per request when the backend was called directly.
    pub direct_us: f64,
    /// The ledger's process per round trip (its two entries), when it runs as one.
    pub ledger_us: Option<f64>,
    /// Both bare relays together, per request through them.
    pub relays_us: Option<f64>,
    /// How long the gateways' threads waited for a core, runnable while others ran, per
    /// round trip (both together): the machine's share of the added latency.
    pub gateways_wait_us: Option<f64>,
    /// This process's threads' wait for a core per round trip through the gateways.
    pub harness_wait_us: Option<f64>,
    /// Both bare relays' threads' wait for a core per request through them.
    pub relays_wait_us: Option<f64>,
}

/// Memory of the gateways, in MiB.
#[derive(Debug, Clone, Serialize)]
pub enum Memory {
    /// Each gateway in its own process: (client gateway, provider gateway).
    PerGateway {
        /// Highest resident set sampled while the exchange was under load.
        under_load: (f64, f64),
        /// The processes' high-water marks (VmHWM), start-up included.
        peak: (f64, f64),
    },
    /// Both gateways inside this process (no `xalo` binary): growth of this process's
    /// resident set from before the exchange started to its highest under load, which
    /// also counts the trust service, central server and load generator.
    InProcess { growth: f64 },
    /// Not measurable here (no `/proc`).
    Unknown,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, m: &Measurement| {
            writeln!(
                f,
                "  {name:<28} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests, {} errors)",
                m.per_second, m.p50_ms, m.p99_ms, m.requests, m.errors
            )
        };
        writeln!(
            f,
            "Exchange benchmark, {} concurrent clients{}{}",
            self.concurrency,
            if self.ledger {
                ", evidence in the ledger"
            } else {
                ""
            },
            registry_size(self.members)
        )?;
        line(f, "backend directly", &self.direct)?;
        line(f, "through both gateways", &self.exchange)?;
        writeln!(
            f,
            "  added latency: p50 {:.2} ms, p99 {:.2} ms",
            self.added_p50_ms, self.added_p99_ms
        )?;
        if let Some(n) = self.ledger_entries {
            writeln!(
                f,
                "  ledger entries after the run: {n} (two per message, warm-up included)"
            )?;
        }
        writeln!(
            f,
            "  {:.0} round-trips/s through one pair of gateways on this machine is {:.1}× the ~110/s X-Road users report for a pair of 32-core security servers",
            self.exchange.per_second, self.ratio_to_x_road
        )?;
        let rss = match &self.memory {
            Memory::PerGateway { under_load, peak } => {
                writeln!(
                    f,
                    "  gateway memory (own processes{}): client {:.1} MiB, provider {:.1} MiB resident under load; high-water marks {:.1} / {:.1} MiB",
                    match self.gateway_workers {
                        Some(1) => ", each on one worker thread".to_owned(),
                        Some(n) => format!(", each on {n} worker threads"),
                        None => ", each with a worker thread per core".to_owned(),
                    },
                    under_load.0,
                    under_load.1,
                    peak.0,
                    peak.1
                )?;
                format!(", rss {:.1}/{:.1} MiB", peak.0, peak.1)
            }
            Memory::InProcess { growth } => {
                writeln!(
                    f,
                    "  memory: both gateways ran in this process (no xalo binary to spawn them); it grew by {growth:.1} MiB under load, trust service, central server and load generator included"
                )?;
                format!(", rss +{growth:.1} MiB in-process")
            }
            Memory::Unknown => String::new(),
        };
        if let Some(us) = self.gateway_cpu_us {
            writeln!(
                f,
                "  gateway CPU: {us:.0} µs per round trip, both gateways together; the gateways alone would take {:.0} round-trips/s on {} cores (the load generator and the echo backend took the rest)",
                self.cores as f64 * 1e6 / us.max(1e-9),
                self.cores
            )?;
        }
        if let Some(b) = &self.batches {
            writeln!(f, "  messages per batch: {b}")?;
        }
        match &self.polls {
            Some(p) => writeln!(
                f,
                "  global configuration: {} bytes; the central server answers a poll in p50 {:.2} ms with the document, {:.2} ms to a gateway that holds it ({} polls each)",
                p.bytes, p.full_p50_ms, p.not_modified_p50_ms, p.count
            )?,
            None => writeln!(
                f,
                "  global configuration: a poll of the central server failed; not measured"
            )?,
        }
        let mut paced = String::new();
        if let Some(p) = &self.paced {
            writeln!(
                f,
                "At {:.0} round-trips/s offered by {} clients on a fixed schedule (latency from each request's scheduled start):",
                p.rate, self.concurrency
            )?;
            line(f, "backend directly", &p.direct)?;
            line(f, "through both gateways", &p.exchange)?;
            if let Some(Ok(r)) = &p.relays {
                line(f, "through two bare relays", r)?;
            }
            // CPU time per request times the requests per second served: cores kept busy.
            let cores = |us: f64, m: &Measurement| us * m.per_second / 1e6;
            let mut busy = String::new();
            if let Some(c) = &p.cpu {
                writeln!(
                    f,
                    "  CPU at this rate: the gateways {:.0} µs per round trip ({:.2} of {} cores), the load generator and echo backend {:.0} µs ({:.2} cores){}; called directly, {:.0} µs per request ({:.2} cores)",
                    c.gateways_us,
                    cores(c.gateways_us, &p.exchange),
                    self.cores,
                    c.harness_us,
                    cores(c.harness_us, &p.exchange),
                    c.ledger_us.map_or(String::new(), |us| format!(
                        ", the ledger {us:.0} µs ({:.2} cores)",
                        cores(us, &p.exchange)
                    )),
                    c.direct_us,
                    cores(c.direct_us, &p.direct)
                )?;
                let ledger = c.ledger_us.map_or(String::new(), |us| {
                    format!("+{:.2}", cores(us, &p.exchange))
                });
                busy = format!(
                    ", cores busy {:.2}+{:.2}{ledger} of {}",
                    cores(c.gateways_us, &p.exchange),
                    cores(c.harness_us, &p.exchange),
                    self.cores
                );
            }
            if let Some(c) = &p.cpu
                && let (Some(gateways), Some(harness)) = (c.gateways_wait_us, c.harness_wait_us)
            {
                writeln!(
                    f,
                    "  waiting for a core at this rate (threads ready to run while others ran, from the scheduler's accounts): the gateways' {gateways:.0} µs per round trip, the load generator's and echo backend's {harness:.0} µs{}",
                    c.relays_wait_us.map_or(String::new(), |us| format!(
                        "; the bare relays' {us:.0} µs per request"
                    ))
                )?;
            }
            if let Some(b) = &p.batches {
                writeln!(f, "  messages per batch at this rate: {b}")?;
            }
            if !p.stages.is_empty() {
                let stages: Vec<String> = p
                    .stages
                    .iter()
                    .map(|s| format!("{} {} {:.2} ms", s.side, s.stage, s.p50_ms))
                    .collect();
                writeln!(
                    f,
                    "  a message's p50 in each stage at this rate (the gateways' histograms, in the order it meets them): {}",
                    stages.join(", ")
                )?;
            }
            if let Some(Err(e)) = &p.relays {
                writeln!(f, "  the bare relays: not measured ({e})")?;
            }
            if let Some(Ok(r)) = &p.relays {
                writeln!(
                    f,
                    "  the bare relays (the gateways' HTTP, mutual TLS and pooled hops; no exchange work, nor its signature, certificate and OCSP headers) add p50 +{:.2} ms, p99 +{:.2} ms{}: what passing a message through two more processes and a TLS hop costs at this rate, at the least",
                    r.p50_ms - p.direct.p50_ms,
                    r.p99_ms - p.direct.p99_ms,
                    p.cpu
                        .as_ref()
                        .and_then(|c| c.relays_us)
                        .map_or(String::new(), |us| format!(
                            ", with {us:.0} µs of CPU per request ({:.2} cores)",
                            cores(us, r)
                        )),
                )?;
            }
            let relays = match &p.relays {
                Some(Ok(r)) => format!(", bare relays p50 +{:.2} ms", r.p50_ms - p.direct.p50_ms),
                _ => String::new(),
            };
            paced = format!(
                "; at {:.0}/s offered p50 +{:.2} ms, p99 +{:.2} ms{busy}{relays}",
                p.rate,
                p.exchange.p50_ms - p.direct.p50_ms,
                p.exchange.p99_ms - p.direct.p99_ms
            );
        }
        writeln!(
            f,
            "exchange: {:.0} round-trips/s, p50 +{:.2} ms, p99 +{:.2} ms at saturation, ratio {:.3} to direct{rss}{paced}{}",
            self.exchange.per_second,
            self.added_p50_ms,
            self.added_p99_ms,
            self.exchange.per_second / self.direct.per_second.max(1e-9),
            registry_size(self.members)
        )
    }
}

fn registry_size(members: usize) -> String {
    if members == 0 {
        String::new()
    } else {
        format!(", {members} other members registered")
    }
}

async fn measure(
    http: &LoadClient,
    concurrency: usize,
    total: usize,
    make: Arc<Maker>,
) -> Measurement {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, make, http) = (next.clone(), make.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                if !round_trip(&http, make.as_ref()).await {
                    errors += 1;
                }
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (latencies, errors)
        }));
    }
    gather(tasks, total, started).await
}

/// `total` requests at `rate` per second in all, each of `concurrency` clients sending on
/// its own fixed schedule (open loop, as wrk2 does). A request's latency counts from when
/// it was due, not from when it was sent, so a client held up by a slow answer does not
/// hide the wait of the requests it sent late.
async fn measure_paced(
    http: &LoadClient,
    concurrency: usize,
    rate: f64,
    total: usize,
    make: Arc<Maker>,
) -> Measurement {
    let clients = concurrency.max(1);
    let interval = Duration::from_secs_f64(clients as f64 / rate.max(1.0));
    let per_client = total.div_ceil(clients);
    // The schedule starts a little ahead, so every client is waiting when it begins.
    let started = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    let mut wakers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (make, http) = (make.clone(), http.clone());
        let (waker, mut due_now) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        wakers.push(waker);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            while let Some(due) = due_now.recv().await {
                if !round_trip(&http, make.as_ref()).await {
                    errors += 1;
                }
                latencies.push(due.elapsed().as_secs_f64() * 1000.0);
            }
            (latencies, errors)
        }));
    }
    // Clients start spread over one interval, so the requests are evenly spaced: the k-th
    // request of all is due at `started + k / rate`, and is client k mod C's.
    let step = interval.div_f64(clients as f64);
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || pace(started, step, clients * per_client, wakers));
    if pacer.is_err() {
        tracing::error!("the benchmark's pacer thread did not start");
    }
    gather(tasks, total, started).await
}

/// Hand each request to its client when it is due, from a thread of its own: tokio's
/// timer counts whole milliseconds, so clients sleeping on it would send in bursts at each
/// tick (five requests at once at 5,000/s), not on the schedule; a thread's sleep wakes
/// within tens of microseconds.
fn pace(
    started: Instant,
    step: Duration,
    requests: usize,
    wakers: Vec<tokio::sync::mpsc::UnboundedSender<Instant>>,
) {
    for k in 0..requests {
        let due = started + step.mul_f64(k as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if let Some(w) = wakers.get(k % wakers.len().max(1)) {
            let _ = w.send(due);
        }
    }
}

/// The load generator's HTTP client: hyper's pooled client as it is, so that the CPU it
/// takes from the machine's cores, which the gateways share, is little (reqwest parses
/// each request's URL three times).
type LoadClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    axum::body::Body,
>;

fn load_client(idle_per_host: usize) -> LoadClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(idle_per_host)
        .build(connector)
}

/// Makes one request of a run.
type Maker = dyn Fn() -> axum::http::Request<axum::body::Body> + Send + Sync;

/// A GET of `uri` with `headers`, as a [`Maker`].
fn get_with(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Arc<Maker> {
    Arc::new(move || {
        let mut r = axum::http::Request::new(axum::body::Body::empty());
        *r.uri_mut() = uri.clone();
        *r.headers_mut() = headers.clone();
        r
    })
}

/// One request, its answer read to the end; whether it succeeded.
async fn round_trip(http: &LoadClient, make: &Maker) -> bool {
    use http_body_util::BodyExt;
    match http.request(make()).await {
        Ok(r) if r.status().is_success() => r.into_body().collect().await.is_ok(),
        _ => false,
    }
}

/// The clients' latencies (ms) and errors, summarised from `started`.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<(Vec<f64>, usize)>>,
    total: usize,
    started: Instant,
) -> Measurement {
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    summarise(all, errors, started.elapsed().as_secs_f64())
}

fn summarise(mut all: Vec<f64>, errors: usize, seconds: f64) -> Measurement {
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Measurement {
        requests: all.len(),
        errors,
        seconds,
        per_second: all.len() as f64 / seconds.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

/// Run the benchmark in a temporary directory.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, Error> {
    let dir = tempfile::tempdir()?;
    let backend_listener =
        xalo_core::server::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let backend = backend_listener.local_addr()?;
    let app = Router::new().route(
        "/persons/{code}",
        get(|axum::extract::Path(code): axum::extract::Path<String>| async move {
            axum::Json(serde_json::json!({"code": code, "name": "Nguyễn Văn An", "province": "Quảng Ninh"}))
        }),
    );
    let backend_task = tokio::spawn(async move {
        let _ = axum::serve(backend_listener, app).await;
    });
    let mut ledger = None;
    let mut nation_options = NationOptions::new(
        dir.path(),
        vec![
            MemberSpec::new("VN/GOV/000007", "Văn phòng Chính phủ", &["portal"])?,
            MemberSpec::new("VN/GOV/000001", "Bộ Công an", &["population"])?,
        ],
    );
    nation_options.base.log.filter = "warn".into();
    nation_options.bystanders = options.members;
    if options.ledger {
        let mut config = nation_options.base.clone();
        let role = config.roles.entry("ledger".into()).or_default();
        role.settings
            .insert("checkpoint_interval_ms".into(), serde_json::json!(200));
        // The run's own database, whatever the environment names.
        role.database_url = Some(format!(
            "sqlite://{}",
            dir.path().join("ledger.db").display()
        ));
        match &options.gateway_binary {
            // In a process of its own, as deployed: in this one its batches would hold up
            // the load generator's and the echo backend's tasks, and be counted as theirs.
            Some(binary) => {
                // On a port of its choosing, which it announces.
                config.roles.entry("ledger".into()).or_default().listen =
                    Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
                let file = dir.path().join("ledger.toml");
                std::fs::write(&file, config.to_toml()?)?;
                let (process, url) = spawn_server(binary, None, "ledger", &file, None).await?;
                nation_options.ledger_url = Some(url.clone());
                ledger = Some(Ledger::Process(process, url));
            }
            None => {
                let listener =
                    xalo_core::server::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                        .await?;
                let handle = xalo_ledger::service::serve(config, listener).await?;
                nation_options.ledger_url = Some(handle.url());
                ledger = Some(Ledger::InProcess(handle));
            }
        }
    }
    let before = status_mib(std::process::id(), "VmRSS:");
    let mut nation = crate::nation::start(&nation_options).await?;
    // (URL, administration client) of the client's and the provider's gateway.
    let gateways: Vec<(String, crate::nation::GatewayAdmin)> = nation
        .gateways
        .iter()
        .map(|g| (g.url.clone(), g.admin.clone()))
        .collect();
    let mut children = Vec::new();
    if let Some(binary) = &options.gateway_binary {
        for gw in std::mem::take(&mut nation.gateways) {
            children.push(to_process(gw, binary, options.gateway_workers, dir.path()).await?);
        }
    }
    let service: ServiceId = "VN/GOV/000001/population/persons".parse()?;
    let client: SubsystemId = "VN/GOV/000007/portal".parse()?;
    let provider = &gateways[1].1;
    provider
        .add_service(&NewService {
            service: service.clone(),
            backend_url: format!("http://{backend}"),
            openapi: None,
        })
        .await?;
    provider
        .grant(
            &service,
            client_subject(&client),
            Some(("GET", "/persons/{code}")),
        )
        .await?;
    // A register's service is granted to many systems: with other members registered,
    // to each one's, through the administration API as its administrator would.
    for i in 0..options.members {
        let system = crate::nation::bystander(&nation_options.instance, i)?;
        provider
            .grant(
                &service,
                client_subject(&system),
                Some(("GET", "/persons/{code}")),
            )
            .await?;
    }
    let key = gateways[0].1.issue_client_key(&client).await?;
    let http = load_client(options.concurrency * 2);
    let uri = |text: String| {
        text.parse::<axum::http::Uri>()
            .map_err(|e| Error::new(ErrorCode::Internal, format!("{text}: {e}")))
    };
    let direct = get_with(
        uri(format!("http://{backend}/persons/VN022095001234"))?,
        axum::http::HeaderMap::new(),
    );
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in [
        ("x-road-client", "VN/GOV/000007/portal"),
        (crate::message::CLIENT_KEY, key.as_str()),
        ("x-road-userid", "VN001203012345"),
        ("x-road-issue", "bench"),
    ] {
        let value = axum::http::HeaderValue::from_str(value)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("{name}: {e}")))?;
        headers.insert(name, value);
    }
    let via_headers = headers.clone();
    let via = get_with(
        uri(format!(
            "{}/r1/{}/persons/VN022095001234",
            gateways[0].0,
            service.to_path()
        ))?,
        headers,
    );
    let warm = (options.requests / 10).max(options.concurrency);
    measure(&http, options.concurrency, warm, direct.clone()).await;
    let direct_measured =
        measure(&http, options.concurrency, options.requests, direct.clone()).await;
    measure(&http, options.concurrency, warm, via.clone()).await;
    let mut pids: Vec<u32> = children.iter().map(|c| c.0.id()).collect();
    if pids.is_empty() {
        pids.push(std::process::id());
    }
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (pids, sampling) = (pids.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut highest = vec![0.0f64; pids.len()];
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                for (h, pid) in highest.iter_mut().zip(&pids) {
                    *h = h.max(status_mib(*pid, "VmRSS:").unwrap_or(0.0));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            highest
        })
    };
    let of_gateways =
        |read: fn(u32) -> Option<u64>| (children.len() == 2).then(|| summed(&pids, read)).flatten();
    let gateway_ticks = || of_gateways(xalo_core::cpu_time::of_process);
    let gateway_waits = || of_gateways(xalo_core::cpu_time::run_queue_wait_us);
    let metrics_http = reqwest::Client::new();
    let gateway_urls: Vec<String> = gateways.iter().map(|(url, _)| url.clone()).collect();
    let counters = || batching_counters(&metrics_http, &gateway_urls);
    let counted_before = counters().await;
    let ticks_before = gateway_ticks();
    let exchange = measure(&http, options.concurrency, options.requests, via.clone()).await;
    let gateway_cpu_us = match (ticks_before, gateway_ticks()) {
        (Some(a), Some(b)) if exchange.requests > 0 => {
            Some(per_request_us(b.saturating_sub(a), &exchange))
        }
        _ => None,
    };
    let batches = batch_sizes(counted_before.as_deref(), counters().await.as_deref());
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let highest = sampler
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let memory = match (children.len(), highest.as_slice(), before) {
        (2, [a, b], _) if *a > 0.0 => Memory::PerGateway {
            under_load: (*a, *b),
            peak: (
                status_mib(pids[0], "VmHWM:").unwrap_or(*a),
                status_mib(pids[1], "VmHWM:").unwrap_or(*b),
            ),
        },
        (0, [now], Some(before)) if *now > 0.0 => Memory::InProcess {
            growth: now - before,
        },
        _ => Memory::Unknown,
    };
    let paced = match options.rate.filter(|r| *r > 0.0) {
        Some(rate) => {
            // Long enough at this rate for steady state: at least five seconds' worth.
            let total = options.requests.max((rate * 5.0) as usize);
            let own = || xalo_core::cpu_time::of_process(std::process::id());
            let at_start = own();
            let direct =
                measure_paced(&http, options.concurrency, rate, total, direct.clone()).await;
            let counted_before = counters().await;
            let ledger_ticks = || {
                ledger
                    .as_ref()
                    .and_then(Ledger::pid)
                    .and_then(xalo_core::cpu_time::of_process)
            };
            let own_waits = || xalo_core::cpu_time::run_queue_wait_us(std::process::id());
            let (own_between, gateways_before, ledger_before) =
                (own(), gateway_ticks(), ledger_ticks());
            let waits_before = (gateway_waits(), own_waits());
            let exchange = measure_paced(&http, options.concurrency, rate, total, via).await;
            let per_round_trip = |before: Option<u64>, after: Option<u64>| match (before, after) {
                (Some(a), Some(b)) => {
                    Some(b.saturating_sub(a) as f64 / exchange.requests.max(1) as f64)
                }
                _ => None,
            };
            let gateways_wait_us = per_round_trip(waits_before.0, gateway_waits());
            let harness_wait_us = per_round_trip(waits_before.1, own_waits());
            let ledger_us = match (ledger_before, ledger_ticks()) {
                (Some(a), Some(b)) => Some(per_request_us(b.saturating_sub(a), &exchange)),
                _ => None,
            };
            let cpu = match (
                at_start,
                own_between,
                own(),
                gateways_before,
                gateway_ticks(),
            ) {
                (Some(a), Some(b), Some(c), Some(g0), Some(g1)) => Some(PacedCpu {
                    gateways_us: per_request_us(g1.saturating_sub(g0), &exchange),
                    harness_us: per_request_us(c.saturating_sub(b), &exchange),
                    direct_us: per_request_us(b.saturating_sub(a), &direct),
                    ledger_us,
                    relays_us: None,
                    gateways_wait_us,
                    harness_wait_us,
                    relays_wait_us: None,
                }),
                _ => None,
            };
            let counted_after = counters().await;
            let batches = batch_sizes(counted_before.as_deref(), counted_after.as_deref());
            let stages = stage_medians(counted_before.as_deref(), counted_after.as_deref());
            Some(Paced {
                rate,
                direct,
                exchange,
                cpu,
                batches,
                stages,
                relays: None,
            })
        }
        None => None,
    };
    let polls = measure_polls(&reqwest::Client::new(), &nation.central_url, 20).await;
    // Let the message log and evidence catch up before stopping; with a ledger, wait
    // (bounded) until it holds both gateways' entries of every message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ledger_entries = None;
    if let Some(l) = &ledger {
        let client = xalo_ledger::client::LedgerClient::new(&l.url())?;
        // Every message answered through the gateways: the warm-up, at saturation, paced.
        let answered = |m: &Measurement| m.requests.saturating_sub(m.errors);
        let through =
            warm + answered(&exchange) + paced.as_ref().map_or(0, |p| answered(&p.exchange));
        let expected = 2 * through as u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let size =
                xalo_ledger::client::checkpoint_of_note(&client.checkpoint_note().await?)?.size;
            ledger_entries = Some(size);
            if size >= expected || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(children);
    nation.shutdown().await?;
    if let Some(Ledger::InProcess(l)) = ledger {
        l.shutdown().await?;
    }
    // The bare relays once the gateways (and the ledger) are gone, so that nothing of
    // theirs runs beside them, on as many threads as the gateways had.
    let mut paced = paced;
    if let (Some(p), Some(binary)) = (paced.as_mut(), &options.gateway_binary) {
        let load = RelayLoad {
            headers: &via_headers,
            http: &http,
            concurrency: options.concurrency,
            rate: p.rate,
            total: p.exchange.requests,
        };
        p.relays = Some(
            match measure_relays(binary, options.gateway_workers, dir.path(), &backend, load).await
            {
                Ok((m, us, wait_us)) => {
                    if let Some(c) = p.cpu.as_mut() {
                        c.relays_us = us;
                        c.relays_wait_us = wait_us;
                    }
                    Ok(m)
                }
                // A measurement beside the gateways': its failure is told, the rest stands.
                Err(e) => Err(e.to_string()),
            },
        );
    }
    backend_task.abort();
    Ok(BenchReport {
        concurrency: options.concurrency,
        ledger: options.ledger,
        added_p50_ms: exchange.p50_ms - direct_measured.p50_ms,
        added_p99_ms: exchange.p99_ms - direct_measured.p99_ms,
        ratio_to_x_road: exchange.per_second / 110.0,
        ledger_entries,
        members: options.members,
        direct: direct_measured,
        exchange,
        memory,
        gateway_cpu_us,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        gateway_workers: options.gateway_binary.as_ref().and(options.gateway_workers),
        batches,
        paced,
        polls,
    })
}

/// A self-signed certificate and key for a relay, as PEM files in `dir`.
fn relay_key(
    dir: &std::path::Path,
    name: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), Error> {
    let key = rcgen::generate_simple_self_signed(vec![format!("{name}.invalid")])
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let (cert, pem) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, key.cert.pem())?;
    std::fs::write(&pem, key.signing_key.serialize_pem())?;
    Ok((cert, pem))
}

/// The paced load the relays get: the gateways' (same headers, clients, rate and count).
struct RelayLoad<'a> {
    headers: &'a axum::http::HeaderMap,
    http: &'a LoadClient,
    concurrency: usize,
    rate: f64,
    total: usize,
}

/// The paced load through two bare relays, each a process of `binary`: plain HTTP into the
/// first, mutual TLS between them with pinned certificates, plain HTTP to the backend, as
/// a message travels between the gateways. Returns the measurement and both relays' CPU per
/// request.
async fn measure_relays(
    binary: &std::path::Path,
    workers: Option<u16>,
    dir: &std::path::Path,
    backend: &std::net::SocketAddr,
    load: RelayLoad<'_>,
) -> Result<(Measurement, Option<f64>, Option<f64>), Error> {
    let RelayLoad {
        headers,
        http,
        concurrency,
        rate,
        total,
    } = load;
    let (client_cert, client_key) = relay_key(dir, "relay-client")?;
    let (provider_cert, provider_key) = relay_key(dir, "relay-provider")?;
    let arg = |p: &std::path::Path| p.as_os_str().to_owned();
    let (provider, provider_url) = spawn_process(
        binary,
        workers,
        "relay",
        &[
            "relay".into(),
            "--tls".into(),
            "--to".into(),
            format!("http://{backend}").into(),
            "--cert".into(),
            arg(&provider_cert),
            "--key".into(),
            arg(&provider_key),
        ],
        None,
        false,
    )
    .await?;
    let (client, client_url) = spawn_process(
        binary,
        workers,
        "relay",
        &[
            "relay".into(),
            "--to".into(),
            provider_url.into(),
            "--cert".into(),
            arg(&client_cert),
            "--key".into(),
            arg(&client_key),
            "--peer-cert".into(),
            arg(&provider_cert),
        ],
        None,
        true,
    )
    .await?;
    let target = format!("{client_url}/persons/VN022095001234");
    let make = get_with(
        target
            .parse()
            .map_err(|e| Error::new(ErrorCode::Internal, format!("{target}: {e}")))?,
        headers.clone(),
    );
    let warm = (total / 10).max(concurrency);
    measure(http, concurrency, warm, make.clone()).await;
    let pids = [client.0.id(), provider.0.id()];
    let ticks = || summed(&pids, xalo_core::cpu_time::of_process);
    let waits = || summed(&pids, xalo_core::cpu_time::run_queue_wait_us);
    let (before, waited_before) = (ticks(), waits());
    let measured = measure_paced(http, concurrency, rate, total, make).await;
    let us = match (before, ticks()) {
        (Some(a), Some(b)) => Some(per_request_us(b.saturating_sub(a), &measured)),
        _ => None,
    };
    let wait_us = match (waited_before, waits()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / measured.requests.max(1) as f64),
        _ => None,
    };
    Ok((measured, us, wait_us))
}

/// `read` of each process of `pids`, summed (`None` if one is unknown).
fn summed(pids: &[u32], read: fn(u32) -> Option<u64>) -> Option<u64> {
    pids.iter().map(|p| read(*p)).sum()
}

/// CPU `ticks` per request of `m`, in µs.
fn per_request_us(ticks: u64, m: &Measurement) -> f64 {
    ticks as f64 / xalo_core::cpu_time::TICKS_PER_SECOND * 1e6 / m.requests.max(1) as f64
}

/// Poll the central server `count` times for the whole document, then `count` times as a
/// gateway holding it; `None` if a poll fails.
async fn measure_polls(http: &reqwest::Client, central_url: &str, count: usize) -> Option<Polls> {
    let url = format!("{}/globalconf", central_url.trim_end_matches('/'));
    let p50 = |ms: Vec<f64>| summarise(ms, 0, 1.0).p50_ms;
    let (mut full, mut not_modified, mut bytes, mut etag) = (Vec::new(), Vec::new(), 0, None);
    for _ in 0..count {
        let started = Instant::now();
        let r = http.get(&url).send().await.ok()?;
        etag = r.headers().get(reqwest::header::ETAG).cloned();
        bytes = r.bytes().await.ok()?.len();
        full.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let etag = etag?;
    for _ in 0..count {
        let started = Instant::now();
        let r = http
            .get(&url)
            .header(reqwest::header::IF_NONE_MATCH, etag.clone())
            .send()
            .await
            .ok()?;
        if r.status() != reqwest::StatusCode::NOT_MODIFIED {
            return None;
        }
        not_modified.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Some(Polls {
        count,
        bytes,
        full_p50_ms: p50(full),
        not_modified_p50_ms: p50(not_modified),
    })
}

/// A field of `/proc/PID/status` in kB, as MiB (Linux).
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// A server process (a gateway, the ledger), stopped when dropped.
struct ServerProcess(std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Move a gateway of the nation into its own process: stop it here, write its
/// configuration (same database, same addresses) to a file and run `xalo serve gateway`
/// on it, as an operator would.
async fn to_process(
    gw: crate::nation::RunningGateway,
    binary: &std::path::Path,
    workers: Option<u16>,
    dir: &std::path::Path,
) -> Result<ServerProcess, Error> {
    let addr = gw.handle.local_addr();
    let mut config = gw.config.clone();
    config
        .roles
        .entry(crate::gateway::ROLE.into())
        .or_default()
        .listen = Some(addr);
    let file = dir.join(format!("gateway-{}.toml", gw.member.id.code()));
    std::fs::write(&file, config.to_toml()?)?;
    let tls_addr = gw.tls_addr;
    let url = gw.url.clone();
    gw.handle.shutdown().await?;
    // Wait until both ports are free again, so the process can bind them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpListener::bind(addr).is_err()
        || std::net::TcpListener::bind(tls_addr).is_err()
    {
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorCode::ServerBind,
                format!("{addr} or {tls_addr} stayed in use"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (process, _) =
        spawn_server(binary, workers, crate::gateway::ROLE, &file, Some(url)).await?;
    Ok(process)
}

/// Run `xalo serve ROLE --config FILE` and wait until it answers on `url`, or (none) on
/// the URL it announces; returns the process and its URL. The file is the whole
/// configuration: `XALO_*` variables of this environment do not reach the process.
async fn spawn_server(
    binary: &std::path::Path,
    workers: Option<u16>,
    role: &str,
    file: &std::path::Path,
    url: Option<String>,
) -> Result<(ServerProcess, String), Error> {
    let args = ["serve".into(), role.into(), "--config".into(), file.into()];
    spawn_process(binary, workers, role, &args, url, true).await
}

/// Run `binary ARGS` and wait until it answers (`health`: on `/healthz`) at `url`, or
/// (none) at the URL it announces; returns the process and its URL. `XALO_*` variables of
/// this environment do not reach the process.
async fn spawn_process(
    binary: &std::path::Path,
    workers: Option<u16>,
    role: &str,
    args: &[std::ffi::OsString],
    url: Option<String>,
    health: bool,
) -> Result<(ServerProcess, String), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut command = std::process::Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("XALO_") {
            command.env_remove(name);
        }
    }
    // The workers option comes before the subcommand.
    if let Some(n) = workers {
        command.arg(format!("--workers={n}"));
    }
    let child = command
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(ErrorCode::Internal, format!("{}: {e}", binary.display())))?;
    let mut process = ServerProcess(child);
    let announced = process.0.stdout.take().map(announced_url);
    let url = match (url, announced) {
        (Some(url), _) => url,
        (None, Some(announced)) => tokio::time::timeout_at(deadline.into(), announced)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::Internal,
                    format!("the {role} process did not say where it listens"),
                )
            })?,
        (None, None) => {
            return Err(Error::new(ErrorCode::Internal, "no output of the process"));
        }
    };
    if !health {
        // Announced once it listens.
        return Ok((process, url));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    loop {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("the {role} process exited: {status}"),
            ));
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("the {role} process did not become healthy"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((process, url))
}

/// The URL in a server's `ROLE listening on URL` line, read on a thread that then reads the
/// rest of its output (unread, a full pipe would stop the process).
fn announced_url(
    stdout: std::process::ChildStdout,
) -> tokio::sync::oneshot::Receiver<Option<String>> {
    use std::io::BufRead;
    let (tell, told) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let url = lines.by_ref().map_while(Result::ok).find_map(|l| {
            l.split_once(" listening on ")
                .map(|(_, url)| url.trim().to_owned())
        });
        let _ = tell.send(url);
        lines.map_while(Result::ok).for_each(drop);
    });
    told
}

/// The ledger the gateways record evidence in.
enum Ledger {
    /// A process of this binary, at its URL.
    Process(ServerProcess, String),
    /// Served by this process (no binary to run it with).
    InProcess(xalo_core::server::ServerHandle),
}

impl Ledger {
    fn url(&self) -> String {
        match self {
            Ledger::Process(_, url) => url.clone(),
            Ledger::InProcess(handle) => handle.url(),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Ledger::Process(p, _) => Some(p.0.id()),
            Ledger::InProcess(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_median_is_read_from_the_buckets_filled_between_two_readings() {
        use crate::metrics::{ExchangeMetrics, Stage};
        // Read as a gateway serves them: its families in a registry prefixed as a server's.
        let metrics = ExchangeMetrics::default();
        let mut registry = prometheus_client::registry::Registry::with_prefix("xalo");
        metrics.register(&mut registry);
        let read = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            stage_buckets(&text)
        };
        let log = |r: &StageBuckets| {
            r.iter()
                .find(|(k, _)| k == &("client".to_owned(), "log".to_owned()))
                .map(|(_, b)| b.clone())
                .unwrap()
        };
        let observe = |n: usize, us: u64| {
            for _ in 0..n {
                metrics.stage("client", Stage::Log, Duration::from_micros(us));
            }
        };
        observe(100, 40);
        metrics.stage("provider", Stage::Sign, Duration::from_millis(1));
        let before = read();
        assert_eq!(before.len(), 2, "{before:?}");
        observe(40, 250);
        let after = read();
        let buckets = log(&after);
        assert_eq!(buckets.len(), crate::metrics::STAGE_BUCKETS.len() + 1);
        assert_eq!(buckets[0], (0.000_05, 100));
        assert_eq!(buckets[3], (0.000_3, 140));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 140)));
        // All 40 observed in between fell in (0.2 ms, 0.3 ms]: the median halfway there.
        let p50 = median_ms(&log(&before), &buckets).unwrap();
        assert!((p50 - 0.25).abs() < 1e-9, "{p50}");
        // Over all 140 since the start: the 70th is in the first bucket.
        let p50 = median_ms(&[], &buckets).unwrap();
        assert!((p50 - 0.035).abs() < 1e-9, "{p50}");
        // Nothing observed between two equal readings; one only in +Inf reads as the
        // last finite bound.
        assert_eq!(median_ms(&buckets, &buckets), None);
        let unbounded = [(0.001, 0), (f64::INFINITY, 5)];
        assert_eq!(median_ms(&[], &unbounded), Some(1.0));
    }
}
