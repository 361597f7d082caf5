//! How the population register holds up at size: generation speed, then lookups by
//! personal code through the real HTTP service (each one also writes its access record).

use std::time::{Duration, Instant};

use sqlx::Row;
use xalo_core::{Config, Error, ErrorCode};
use xalo_store::DbResultExt;

/// Figures of one run.
#[derive(Debug, Clone, Default)]
pub struct RegistryBench {
    pub persons: u64,
    /// Rows/s of the generator's load (0 when the register already held people).
    pub generate_per_sec: f64,
    /// Rows/s of PostgreSQL's own COPY of the same rows, prepared in memory beforehand.
    pub copy_baseline_per_sec: Option<f64>,
    /// Point lookups by personal code straight from the database.
    pub direct_p50_ms: f64,
    pub direct_p99_ms: f64,
    /// Search by full name and birth date.
    pub search_p99_ms: f64,
    /// Lookups through the HTTP service, each writing its access record.
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
    let copy_baseline_per_sec =
        if population.backend() == xalo_store::Backend::Postgres && generate_per_sec > 0.0 {
            Some(copy_baseline(&population, persons).await?)
        } else {
            None
        };
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
    if codes.is_empty() {
        return Err(Error::new(
            ErrorCode::RegistryNotFound,
            "the register is empty",
        ));
    }
    let mut direct = Vec::new();
    let mut named = Vec::new();
    for code in codes.iter().take(3000) {
        let t = Instant::now();
        let p = crate::store::person(&population, &code.parse()?)
            .await?
            .ok_or_else(|| Error::new(ErrorCode::RegistryNotFound, code.clone()))?;
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
        if named.len() < 1000 {
            let t = Instant::now();
            let found = crate::store::people_where(
                &population,
                "name_key = $1 AND birth_date = $2",
                &[crate::text::fold(&p.full_name()), p.birth_date.clone()],
                20,
            )
            .await?;
            named.push(t.elapsed().as_secs_f64() * 1000.0);
            if !found.iter().any(|f| f.code == p.code) {
                return Err(Error::new(
                    ErrorCode::Internal,
                    "search missed a person it should find",
                ));
            }
        }
    }
    direct.sort_by(f64::total_cmp);
    named.sort_by(f64::total_cmp);
    population.close().await;
    business.close().await;

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
        copy_baseline_per_sec,
        direct_p50_ms: percentile(&direct, 0.5),
        direct_p99_ms: percentile(&direct, 0.99),
        search_p99_ms: percentile(&named, 0.99),
        lookups: all.len() as u64,
        lookups_per_sec: all.len() as f64 / secs.max(1e-9),
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    })
}

/// PostgreSQL's own speed at loading the same rows: the CSV is made in memory first, then
/// only the COPY is timed, into an unlogged-free copy of the table with the same indexes.
async fn copy_baseline(db: &xalo_store::Database, persons: u64) -> Result<f64, Error> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_person_copy; \
         CREATE TABLE bench_person_copy (LIKE person INCLUDING ALL)",
    )
    .execute(db.pool())
    .await
    .db("preparing the COPY baseline")?;
    let mut g = crate::generate::Generator::new(1);
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut made = 0u64;
    while made < persons {
        for p in g.household()? {
            if made == persons {
                break;
            }
            for (i, v) in crate::store::person_values(&p).iter().enumerate() {
                if i > 0 {
                    chunk.push(b',');
                }
                if let Some(v) = v {
                    chunk.push(b'"');
                    chunk.extend_from_slice(v.replace('"', "\"\"").as_bytes());
                    chunk.push(b'"');
                }
            }
            chunk.push(b'\n');
            made += 1;
            if made.is_multiple_of(5000) {
                chunks.push(std::mem::take(&mut chunk));
            }
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    let statement = format!(
        "COPY bench_person_copy ({}) FROM STDIN WITH (FORMAT csv)",
        crate::store::PERSON_COLUMNS
    );
    let started = Instant::now();
    for c in chunks {
        db.postgres_copy(&statement, c).await?;
    }
    let rate = persons as f64 / started.elapsed().as_secs_f64().max(1e-9);
    sqlx::raw_sql("DROP TABLE bench_person_copy")
        .execute(db.pool())
        .await
        .db("dropping the COPY baseline")?;
    Ok(rate)
}
