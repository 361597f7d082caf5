//! How the log holds up: durable appends/s with many concurrent submitters, the time from
//! acknowledgement to inclusion in a signed checkpoint, inclusion-proof time in a large
//! log, and storage bytes per entry.
//!
//! Everything goes through the code the `ledger` role runs: [`Log::open`] on a database
//! opened `power_loss_durable`, the group-commit sequencer, integration into stored tiles,
//! checkpoint signing, and proofs computed from the stored tiles.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use sha2::{Digest, Sha256};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Backend, Database, DbResultExt, PoolOptions, Row};

use crate::entry::{Entry, EntryKind};
use crate::log::Log;
use crate::note::Ed25519Signer;
use crate::{Hash, proof};

/// The checkpoint origin of the benchmark's log.
const ORIGIN: &str = "bench.xalo.invalid/ledger";
/// Entries per append while building the log: one sequencer commit each.
const BUILD_BATCH: u64 = 8192;
/// Appends in flight while building, so that the sequencer always has the next batch.
const BUILD_APPENDERS: usize = 3;
/// How long the log may take to sign the last acknowledged entry once submitters stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The log's database; it must hold no ledger entries yet.
    pub database_url: String,
    /// Entries to build the log to before measuring (appended in batches).
    pub entries: u64,
    /// How long the concurrent submitters run.
    pub duration: Duration,
    /// Concurrent submitters, each appending one entry at a time.
    pub submitters: usize,
    /// How often new entries are integrated and a checkpoint signed (the role's
    /// `checkpoint_interval_ms`).
    pub checkpoint_interval: Duration,
    /// Inclusion proofs timed, at random indexes.
    pub proofs: usize,
    /// Show a progress bar while building the log.
    pub progress: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            database_url: String::new(),
            entries: 1_000_000,
            duration: Duration::from_secs(10),
            submitters: 64,
            checkpoint_interval: Duration::from_millis(100),
            proofs: 2000,
            progress: false,
        }
    }
}

/// Figures of one run.
#[derive(Debug, Clone, Default)]
pub struct LedgerBench {
    pub backend: String,
    /// Building the log to `options.entries`: entries/s appended and integrated.
    pub built: u64,
    pub build_per_sec: f64,
    /// The concurrent-submitter phase.
    pub submitters: usize,
    pub appends: u64,
    pub appends_per_sec: f64,
    /// Sequencer commits (one sync to disk each) in that phase.
    pub commits: u64,
    /// Submission to acknowledgement.
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    /// Acknowledgement to the first signed checkpoint that includes the entry.
    pub checkpoint_interval_ms: f64,
    pub checkpoints: u64,
    pub ack_to_checkpoint_p50_ms: f64,
    pub ack_to_checkpoint_p99_ms: f64,
    pub ack_to_checkpoint_max_ms: f64,
    /// Inclusion proofs from stored tiles, each verified against the signed checkpoint.
    pub proof_size: u64,
    pub proofs: usize,
    pub proof_p50_ms: f64,
    pub proof_p99_ms: f64,
    /// Storage of the ledger's tables.
    pub entry_data_bytes: usize,
    pub storage_bytes: u64,
    pub bytes_per_entry: f64,
}

impl LedgerBench {
    /// The one headline line.
    pub fn headline(&self) -> String {
        format!(
            "ledger: {:.0} appends/s, p99 ack-to-checkpoint {:.0} ms, proof p99 {:.3} ms at {} entries, {:.0} bytes/entry",
            self.appends_per_sec,
            self.ack_to_checkpoint_p99_ms,
            self.proof_p99_ms,
            self.proof_size,
            self.bytes_per_entry
        )
    }
}

impl fmt::Display for LedgerBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "database      {} (power-loss durable), entries of {} bytes",
            self.backend, self.entry_data_bytes
        )?;
        writeln!(
            f,
            "build         {} entries at {:.0} entries/s (batches of {BUILD_BATCH}, appended and integrated)",
            self.built, self.build_per_sec
        )?;
        writeln!(
            f,
            "appends       {:.0}/s durable ({} in {:.0} s by {} submitters, one entry each; {} commits, {:.1} entries per commit)",
            self.appends_per_sec,
            self.appends,
            self.appends as f64 / self.appends_per_sec.max(1e-9),
            self.submitters,
            self.commits,
            self.appends as f64 / self.commits.max(1) as f64
        )?;
        writeln!(
            f,
            "ack           p50 {:.2} ms, p99 {:.2} ms (submission to durable acknowledgement)",
            self.ack_p50_ms, self.ack_p99_ms
        )?;
        writeln!(
            f,
            "checkpoint    ack to signed checkpoint p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} checkpoints, every {:.0} ms)",
            self.ack_to_checkpoint_p50_ms,
            self.ack_to_checkpoint_p99_ms,
            self.ack_to_checkpoint_max_ms,
            self.checkpoints,
            self.checkpoint_interval_ms
        )?;
        writeln!(
            f,
            "proof         inclusion p50 {:.3} ms, p99 {:.3} ms in a tree of {} ({} random indexes, from stored tiles, verified; measured once the leaf index has caught up)",
            self.proof_p50_ms, self.proof_p99_ms, self.proof_size, self.proofs
        )?;
        writeln!(
            f,
            "storage       {} bytes, {:.0} bytes/entry (entries, tiles, checkpoints, leaf index)",
            self.storage_bytes, self.bytes_per_entry
        )?;
        writeln!(f, "{}", self.headline())
    }
}

fn internal(e: impl fmt::Display) -> Error {
    Error::new(ErrorCode::Internal, e.to_string())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The `n`th benchmark entry, shaped like the registers' anchors: a small JSON object
/// carrying a SHA-256 digest.
fn bench_entry(kind: &EntryKind, n: u64) -> Result<Entry, Error> {
    let digest = Hash::from(<[u8; 32]>::from(Sha256::digest(n.to_be_bytes())));
    let data = format!(
        "{{\"register\":\"bench\",\"seq\":{n},\"evidence\":\"{}\"}}",
        digest.to_hex()
    );
    Entry::new(kind.clone(), data.into_bytes())
}

/// Run the benchmark on the database `options` names, which must hold no ledger entries.
pub async fn run(options: &BenchOptions) -> Result<LedgerBench, Error> {
    let db = Database::connect_with(
        &options.database_url,
        PoolOptions {
            power_loss_durable: true,
            ..PoolOptions::default()
        },
    )
    .await?;
    let signer = Ed25519Signer::generate(ORIGIN).map_err(Error::from)?;
    let log = Log::open(db.clone(), ORIGIN, signer).await?;
    let start_size = *log.sequencer().size().borrow();
    if start_size != 0 {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!(
                "the database {} already holds a ledger of {start_size} entries; the benchmark \
                 needs an empty one",
                db.url()
            ),
        ));
    }
    let kind: EntryKind = "bench.entry".parse()?;
    let counter = Arc::new(AtomicU64::new(0));
    let mut out = LedgerBench {
        backend: match db.backend() {
            Backend::Sqlite => "SQLite".to_owned(),
            Backend::Postgres => "PostgreSQL".to_owned(),
        },
        entry_data_bytes: bench_entry(&kind, 0)?.data.len(),
        submitters: options.submitters,
        checkpoint_interval_ms: ms(options.checkpoint_interval),
        ..LedgerBench::default()
    };

    build(&log, &kind, &counter, options, &mut out).await?;
    appends(&log, &kind, &counter, options, &mut out).await?;
    // Proofs and storage are measured once the leaf index's follower has caught up with
    // the build, as a log that is not being bulk-loaded runs; otherwise its catching up
    // shares the machine with the proofs. (A second writer catching it up beside the
    // follower would keep SQLite from restarting the index's write-ahead log, so this
    // waits instead.)
    let size = *log.sequencer().size().borrow();
    while log.leaf_index().indexed().await? < size {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proofs(&log, options, &mut out).await?;

    out.storage_bytes = storage_bytes(&db).await?;
    if db.backend() == Backend::Sqlite {
        // The leaf index's own file (on PostgreSQL its table is counted above).
        out.storage_bytes += storage_bytes(log.leaf_index().database()).await?;
    }
    out.bytes_per_entry = out.storage_bytes as f64 / size.max(1) as f64;
    db.close().await;
    Ok(out)
}

/// Append `options.entries` in large batches while a second task integrates them, then sign.
async fn build(
    log: &Log,
    kind: &EntryKind,
    counter: &Arc<AtomicU64>,
    options: &BenchOptions,
    out: &mut LedgerBench,
) -> Result<(), Error> {
    let target = options.entries;
    let bar = if options.progress {
        indicatif::ProgressBar::new(target).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {wide_bar} {human_pos}/{human_len} entries {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message("building the log");
    let started = Instant::now();
    let next_batch = Arc::new(AtomicU64::new(0));
    let mut appenders = Vec::new();
    for _ in 0..BUILD_APPENDERS {
        let (log, kind, counter, next_batch) = (
            log.clone(),
            kind.clone(),
            counter.clone(),
            next_batch.clone(),
        );
        appenders.push(tokio::spawn(async move {
            loop {
                let first = next_batch.fetch_add(BUILD_BATCH, Ordering::Relaxed);
                if first >= target {
                    return Ok::<(), Error>(());
                }
                let n = BUILD_BATCH.min(target - first);
                let start = counter.fetch_add(n, Ordering::Relaxed);
                let batch = (start..start + n)
                    .map(|i| bench_entry(&kind, i))
                    .collect::<Result<Vec<_>, _>>()?;
                log.append(batch).await?;
            }
        }));
    }
    // Integration runs beside the appends, as the role's publishing task does.
    let appending = Arc::new(AtomicBool::new(true));
    let integrator = {
        let (log, appending, bar) = (log.clone(), appending.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                let still_appending = appending.load(Ordering::Relaxed);
                let (size, _) = log.integrate().await?;
                bar.set_position(size);
                if !still_appending {
                    return Ok::<(), Error>(());
                }
                if size == *log.sequencer().size().borrow() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let mut result = Ok(());
    for a in appenders {
        let r = a.await.map_err(internal).and_then(|r| r);
        if result.is_ok() {
            result = r;
        }
    }
    appending.store(false, Ordering::Relaxed);
    let integrated = integrator.await.map_err(internal).and_then(|r| r);
    result?;
    integrated?;
    log.checkpoint().await?;
    bar.finish_and_clear();
    out.built = target;
    out.build_per_sec = target as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(())
}

/// One acknowledged append: its index, when it was acknowledged and how long that took.
struct Ack {
    index: u64,
    at: Instant,
    latency: Duration,
}

/// `options.submitters` tasks append one entry at a time for `options.duration` while the log
/// integrates and signs every `options.checkpoint_interval`; a watcher notes when each signed
/// size is published.
async fn appends(
    log: &Log,
    kind: &EntryKind,
    counter: &Arc<AtomicU64>,
    options: &BenchOptions,
    out: &mut LedgerBench,
) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut published = log.published();
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(u64, Instant)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if tokio::time::timeout(Duration::from_millis(200), published.changed())
                    .await
                    .is_ok_and(|r| r.is_err())
                {
                    break;
                }
                let size = published
                    .borrow_and_update()
                    .as_ref()
                    .map(|p| p.checkpoint.size);
                if let Some(size) = size
                    && seen.last().is_none_or(|(s, _)| *s < size)
                {
                    seen.push((size, Instant::now()));
                }
            }
            seen
        })
    };
    let publisher = {
        let (log, stop, interval) = (log.clone(), stop.clone(), options.checkpoint_interval);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                log.checkpoint().await?;
            }
            Ok::<(), Error>(())
        })
    };

    let commits_before = log.sequencer().commits();
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut tasks = Vec::new();
    for _ in 0..options.submitters.max(1) {
        let (log, kind, counter) = (log.clone(), kind.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            while Instant::now() < deadline {
                let entry = bench_entry(&kind, counter.fetch_add(1, Ordering::Relaxed))?;
                let t = Instant::now();
                let range = log.append(vec![entry]).await?;
                let at = Instant::now();
                acks.push(Ack {
                    index: range.start,
                    at,
                    latency: at - t,
                });
            }
            Ok::<Vec<Ack>, Error>(acks)
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.map_err(internal)??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    out.commits = log.sequencer().commits() - commits_before;
    out.appends = acks.len() as u64;
    out.appends_per_sec = acks.len() as f64 / elapsed.max(1e-9);

    // Keep publishing until the last acknowledged entry is in a signed checkpoint.
    let last = acks.iter().map(|a| a.index + 1).max().unwrap_or(0);
    let mut signed = log.published();
    let drained = tokio::time::timeout(
        DRAIN_TIMEOUT,
        signed.wait_for(|p| p.as_ref().is_some_and(|p| p.checkpoint.size >= last)),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let published_result = publisher.await.map_err(internal);
    let seen = watcher.await.map_err(internal)?;
    published_result??;
    if !matches!(drained, Ok(Ok(_))) {
        return Err(Error::new(
            ErrorCode::Internal,
            format!("entry {last} was not in a signed checkpoint within {DRAIN_TIMEOUT:?}"),
        ));
    }

    let mut ack_ms: Vec<f64> = acks.iter().map(|a| ms(a.latency)).collect();
    ack_ms.sort_by(f64::total_cmp);
    out.ack_p50_ms = percentile(&ack_ms, 0.50);
    out.ack_p99_ms = percentile(&ack_ms, 0.99);
    let mut to_checkpoint = Vec::with_capacity(acks.len());
    for a in &acks {
        // The first published size that covers the entry.
        let i = seen.partition_point(|(size, _)| *size <= a.index);
        let (_, at) = seen.get(i).ok_or_else(|| {
            Error::new(
                ErrorCode::Internal,
                format!("no signed checkpoint was seen covering entry {}", a.index),
            )
        })?;
        to_checkpoint.push(ms(at.saturating_duration_since(a.at)));
    }
    to_checkpoint.sort_by(f64::total_cmp);
    out.checkpoints = seen.len() as u64;
    out.ack_to_checkpoint_p50_ms = percentile(&to_checkpoint, 0.50);
    out.ack_to_checkpoint_p99_ms = percentile(&to_checkpoint, 0.99);
    out.ack_to_checkpoint_max_ms = to_checkpoint.last().copied().unwrap_or(0.0);
    Ok(())
}

/// Time inclusion proofs at random indexes of the latest signed tree, as the `ledger`
/// role computes them (from stored tiles), and verify each against the signed root.
async fn proofs(log: &Log, options: &BenchOptions, out: &mut LedgerBench) -> Result<(), Error> {
    let published = log
        .checkpoint()
        .await?
        .ok_or_else(|| Error::new(ErrorCode::Internal, "the log signed no checkpoint"))?;
    let (size, root) = (published.checkpoint.size, published.checkpoint.root);
    let mut times = Vec::with_capacity(options.proofs);
    for _ in 0..options.proofs {
        let index = rand::rng().random_range(0..size.max(1));
        let i = index as i64;
        let entry =
            log.entries(i, i + 1).await?.pop().ok_or_else(|| {
                Error::new(ErrorCode::Internal, format!("entry {index} is missing"))
            })?;
        let t = Instant::now();
        let path = log.inclusion_proof(index, size).await?;
        times.push(ms(t.elapsed()));
        proof::verify_inclusion(index, size, &entry.leaf_hash(), &path, &root)
            .map_err(|e| Error::from(e).context(format!("the proof of entry {index}")))?;
    }
    times.sort_by(f64::total_cmp);
    out.proof_size = size;
    out.proofs = times.len();
    out.proof_p50_ms = percentile(&times, 0.50);
    out.proof_p99_ms = percentile(&times, 0.99);
    Ok(())
}

/// Bytes the ledger's tables take: on SQLite the database file and its write-ahead log
/// after a checkpoint folds the log in; on PostgreSQL the tables with indexes and TOAST.
async fn storage_bytes(db: &Database) -> Result<u64, Error> {
    match db.backend() {
        Backend::Sqlite => {
            // A reader still at work (the leaf index follows the log) keeps the checkpoint
            // from emptying the write-ahead log, which would then be counted; try again.
            for _ in 0..100 {
                let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .fetch_one(db.pool())
                    .await
                    .db("checkpointing the write-ahead log")?;
                let busy: i64 = row.try_get(0).db("checkpointing the write-ahead log")?;
                if busy == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let row = sqlx::query("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(db.pool())
                .await
                .db("finding the database file")?;
            let file: String = row.try_get(0).db("finding the database file")?;
            let size = |path: &str| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            Ok(size(&file) + size(&format!("{file}-wal")))
        }
        Backend::Postgres => {
            let row = sqlx::query(
                "SELECT pg_total_relation_size('ledger_entry') + pg_total_relation_size('ledger_tile') \
                 + pg_total_relation_size('ledger_state') + pg_total_relation_size('ledger_checkpoint') \
                 + pg_total_relation_size('ledger_leaf')",
            )
            .fetch_one(db.pool())
            .await
            .db("measuring the ledger tables")?;
            let bytes: i64 = row.try_get(0).db("measuring the ledger tables")?;
            Ok(bytes as u64)
        }
    }
}
