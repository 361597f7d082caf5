//! How the population register holds up at size: generation speed, then lookups by
//! personal code through the real HTTP service (each one also writes its access record).

use std::time::{Duration, Instant};

use sqlx::Row;
use xalo_core::{Config, Error, ErrorCode};
use xalo_store::DbResultExt;

/// Figures of one run.
#[derive(Debug, Clone)]
pub struct RegistryBench {
    pub persons: u64,
    pub generate_per_sec: f64,
    pub lookups: u64,
    pub lookups_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Generate `persons` into the registers `config` names (unless they already hold people),
/// then run `clients` concurrent lookups for `duration`.
pub async fn run(
    config: &Config,
    persons: u64,
    clients: usize,
    duration: Duration,
) -> Result<RegistryBench, Error> {
    let (population, business) = crate::service::open(config).await?;
    let mut generate_per_sec = 0.0;
    if crate::store::count(&population, "person").await? == 0 {
        let started = Instant::now();
        let bar = indicatif::ProgressBar::new(persons);
        crate::generate::generate_split(&population, &business, persons, 1, 20, &bar).await?;
        generate_per_sec = persons as f64 / started.elapsed().as_secs_f64().max(1e-9);
    }
    let total = crate::store::count(&population, "person").await? as u64;
    // Codes spread over the whole key range: every 97th row.
    let rows = sqlx::query("SELECT code FROM person ORDER BY code")
        .fetch_all(population.pool())
        .await
        .db("sampling codes")?;
    let codes: Vec<String> = rows
        .iter()
        .step_by(97)
        .take(5000)
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .db("sampling codes")?;
    population.close().await;
    business.close().await;
    if codes.is_empty() {
        return Err(Error::new(
            ErrorCode::RegistryNotFound,
            "the register is empty",
        ));
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = crate::service::serve(config.clone(), listener).await?;
    let url = server.url();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, codes) = (http.clone(), url.clone(), codes.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let code = &codes[i % codes.len()];
                i += clients;
                let t = Instant::now();
                let ok = http
                    .get(format!("{url}/population/persons/{code}"))
                    .header("X-Road-Client", "VN/GOV/000007/portal")
                    .header("X-Road-UserId", "bench")
                    .header("X-Road-Issue", "benchmark")
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(
            t.await
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
        );
    }
    let secs = started.elapsed().as_secs_f64();
    server.shutdown().await?;
    all.sort_by(f64::total_cmp);
    Ok(RegistryBench {
        persons: total,
        generate_per_sec,
        lookups: all.len() as u64,
        lookups_per_sec: all.len() as f64 / secs.max(1e-9),
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    })
}
