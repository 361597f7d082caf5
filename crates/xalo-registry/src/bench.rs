//! How the population register holds up at size: generation speed, then lookups by
//! personal code straight from the database, through the register's HTTP service, and
//! through the exchange (the client's gateway, the register's gateway, the service), each
//! lookup over HTTP writing its access record.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::Row;
use xalo_core::{Config, Error, ErrorCode, SubsystemId};
use xalo_store::{Backend, Database, DbResultExt};

/// Figures of one run.
#[derive(Debug, Clone, Default)]
pub struct RegistryBench {
    pub persons: u64,
    /// Rows/s of the generator's load (0 when the register already held people).
    pub generate_per_sec: f64,
    /// Rows/s of PostgreSQL's own COPY of the same rows, each chunk prepared beforehand.
    pub copy_baseline_per_sec: Option<f64>,
    /// Rows that COPY loaded (the first ones of the load, at most the cap given to [`run`]).
    pub copy_baseline_rows: u64,
    /// Point lookups by personal code straight from the database.
    pub direct_p50_ms: f64,
    pub direct_p99_ms: f64,
    /// Search by full name and birth date.
    pub search_p99_ms: f64,
    /// Lookups through the register's HTTP service.
    pub http: Lookups,
    /// Lookups through the exchange: client gateway, provider gateway, HTTP service.
    pub exchange: Lookups,
}

/// Concurrent lookups over HTTP for a while.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    pub count: u64,
    pub failed: u64,
    pub per_sec: f64,
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

/// The population register's member and the portal that calls it through the exchange.
const PROVIDER: &str = "VN/GOV/000001/population";
const CLIENT: &str = "VN/GOV/000007/portal";

/// Generate `persons` into the registers `config` names (unless they already hold people),
/// time PostgreSQL's own COPY of at most `copy_rows` of the same rows beside the load, then
/// run `clients` concurrent lookups for `duration`, first against the service, then
/// through an exchange started under `scratch`.
pub async fn run(
    config: &Config,
    persons: u64,
    copy_rows: u64,
    clients: usize,
    duration: Duration,
    scratch: &Path,
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
    let copy_baseline_rows = persons.min(copy_rows);
    let copy_baseline_per_sec = if population.backend() == Backend::Postgres
        && generate_per_sec > 0.0
        && copy_baseline_rows > 0
    {
        Some(copy_baseline(&population, copy_baseline_rows).await?)
    } else {
        None
    };
    let codes = sample_codes(&population, total, 5000).await?;
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
    let measured = lookups_both_ways(&server.url(), &codes, clients, duration, scratch).await;
    server.shutdown().await?;
    let (http, exchange) = measured?;
    Ok(RegistryBench {
        persons: total,
        generate_per_sec,
        copy_baseline_per_sec,
        copy_baseline_rows: if copy_baseline_per_sec.is_some() {
            copy_baseline_rows
        } else {
            0
        },
        direct_p50_ms: percentile(&direct, 0.5),
        direct_p99_ms: percentile(&direct, 0.99),
        search_p99_ms: percentile(&named, 0.99),
        http,
        exchange,
    })
}

/// Up to `n` personal codes drawn at random over the whole register (the same ones for
/// the same register).
async fn sample_codes(db: &Database, total: u64, n: usize) -> Result<Vec<String>, Error> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(97);
    let mut codes = match db.backend() {
        Backend::Sqlite => {
            // Rows are numbered densely as they were loaded: random row numbers are
            // random people, each found by one seek.
            let max: i64 = sqlx::query("SELECT COALESCE(MAX(rowid), 0) FROM person")
                .fetch_one(db.pool())
                .await
                .and_then(|r| r.try_get(0))
                .db("sampling codes")?;
            let mut codes = Vec::with_capacity(n);
            for _ in 0..n * 2 {
                if max == 0 || codes.len() == n {
                    break;
                }
                let row = sqlx::query("SELECT code FROM person WHERE rowid = $1")
                    .bind(rng.random_range(1..=max))
                    .fetch_optional(db.pool())
                    .await
                    .db("sampling codes")?;
                if let Some(r) = row {
                    codes.push(r.try_get::<String, _>(0).db("sampling codes")?);
                }
            }
            codes
        }
        Backend::Postgres => {
            // Random pages of the table, enough of them for twice `n` rows.
            let percent = (200.0 * n as f64 / total.max(1) as f64).min(100.0);
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT code FROM person TABLESAMPLE SYSTEM ({percent:.6}) REPEATABLE (97)"
            )))
            .fetch_all(db.pool())
            .await
            .db("sampling codes")?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .db("sampling codes")?
        }
    };
    codes.sort();
    codes.dedup();
    codes.shuffle(&mut rng);
    codes.truncate(n);
    Ok(codes)
}

/// Lookups against the service at `service_url`, then through an exchange in front of it.
async fn lookups_both_ways(
    service_url: &str,
    codes: &[String],
    clients: usize,
    duration: Duration,
    scratch: &Path,
) -> Result<(Lookups, Lookups), Error> {
    let purpose = [
        ("X-Road-UserId".to_owned(), "bench".to_owned()),
        ("X-Road-Issue".to_owned(), "benchmark".to_owned()),
    ];
    let mut headers = vec![("X-Road-Client".to_owned(), CLIENT.to_owned())];
    headers.extend(purpose.iter().cloned());
    let http = hammer(
        &format!("{service_url}/population/persons"),
        &headers,
        codes,
        clients,
        duration,
    )
    .await?;

    let members = vec![
        xalo_exchange::nation::MemberSpec::new("VN/GOV/000001", "Bộ Công an", &["population"])?,
        xalo_exchange::nation::MemberSpec::new(
            "VN/GOV/000007",
            "Văn phòng Chính phủ",
            &["portal"],
        )?,
    ];
    let options =
        xalo_exchange::nation::NationOptions::new(&scratch.join("exchange-bench"), members);
    let nation = xalo_exchange::nation::start(&options).await?;
    let measured = through_exchange(&nation, service_url, &purpose, codes, clients, duration).await;
    nation.shutdown().await?;
    Ok((http, measured?))
}

async fn through_exchange(
    nation: &xalo_exchange::nation::Nation,
    service_url: &str,
    purpose: &[(String, String)],
    codes: &[String],
    clients: usize,
    duration: Duration,
) -> Result<Lookups, Error> {
    let provider: SubsystemId = PROVIDER.parse()?;
    let client: SubsystemId = CLIENT.parse()?;
    let api = xalo_exchange::demo::ProvidedApi {
        provider: provider.clone(),
        backend_url: format!("{service_url}/population"),
        openapi: crate::service::openapi("population").0,
    };
    let gateway = nation.gateway(provider.member())?;
    let mut persons = None;
    for (service, backend_url, openapi) in api.services()? {
        gateway
            .admin
            .add_service(&xalo_exchange::service_registry::NewService {
                service: service.clone(),
                backend_url,
                openapi: Some(openapi),
            })
            .await?;
        if service.code() == "persons" {
            persons = Some(service);
        }
    }
    let persons = persons.ok_or_else(|| {
        Error::new(
            ErrorCode::Internal,
            "the population API has no persons service",
        )
    })?;
    gateway
        .admin
        .grant(
            &persons,
            xalo_exchange::nation::client_subject(&client),
            Some(("GET", "**")),
        )
        .await?;
    let client_gateway = nation.gateway(client.member())?;
    let key = client_gateway.admin.issue_client_key(&client).await?;
    let mut headers = vec![
        ("X-Road-Client".to_owned(), CLIENT.to_owned()),
        (xalo_exchange::message::CLIENT_KEY.to_owned(), key),
    ];
    headers.extend(purpose.iter().cloned());
    hammer(
        &format!("{}/r1/{}", client_gateway.url, persons.to_path()),
        &headers,
        codes,
        clients,
        duration,
    )
    .await
}

/// `clients` concurrent callers of `base/CODE` for `duration`, after one call that must
/// succeed (so that a misconfigured route fails the run instead of timing errors).
async fn hammer(
    base: &str,
    headers: &[(String, String)],
    codes: &[String],
    clients: usize,
    duration: Duration,
) -> Result<Lookups, Error> {
    let http = reqwest::Client::new();
    let get = |code: &str| {
        let mut r = http.get(format!("{base}/{code}"));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r
    };
    let first = codes.first().map(String::as_str).unwrap_or_default();
    let answer = get(first)
        .send()
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, format!("{base}: {e}")))?;
    if !answer.status().is_success() {
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        return Err(Error::new(
            ErrorCode::Internal,
            format!("{base}/{first} answered {status}: {body}"),
        ));
    }
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients.max(1) {
        let requests: Vec<_> = codes.iter().map(|code| get(code)).collect();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            let mut i = c;
            while Instant::now() < deadline {
                let Some(request) = requests.get(i % requests.len()).and_then(|r| r.try_clone())
                else {
                    break;
                };
                i += clients;
                let t = Instant::now();
                let ok = request.send().await.is_ok_and(|r| r.status().is_success());
                if ok {
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        }));
    }
    let started = Instant::now();
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        all.extend(l);
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok(Lookups {
        count: all.len() as u64,
        failed,
        per_sec: all.len() as f64 / secs.max(1e-9),
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    })
}

/// PostgreSQL's own speed at loading the first `rows` of the same rows into an empty copy
/// of the table with the same indexes. Made one COPY chunk at a time (untimed) and sent
/// (timed), so that memory holds one chunk whatever the size; the caller caps `rows` so
/// that a second table beside a register of a hundred million fits on the disk.
async fn copy_baseline(db: &Database, rows: u64) -> Result<f64, Error> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_person_copy; \
         CREATE TABLE bench_person_copy (LIKE person INCLUDING ALL)",
    )
    .execute(db.pool())
    .await
    .db("preparing the COPY baseline")?;
    let statement = format!(
        "COPY bench_person_copy ({}) FROM STDIN WITH (FORMAT csv)",
        crate::store::PERSON_COLUMNS
    );
    let mut g = crate::generate::Generator::new(1);
    let mut pending = std::collections::VecDeque::new();
    let (mut made, mut copying) = (0u64, Duration::ZERO);
    while made < rows {
        let mut chunk = Vec::new();
        let mut in_chunk = 0;
        while in_chunk < crate::generate::COPY_ROWS && made < rows {
            // A household cut by the end of a chunk goes on at the start of the next.
            if pending.is_empty() {
                pending.extend(g.household()?);
            }
            let Some(p) = pending.pop_front() else {
                continue;
            };
            crate::generate::push_csv(&mut chunk, &crate::store::person_values(&p));
            in_chunk += 1;
            made += 1;
        }
        let started = Instant::now();
        db.postgres_copy(&statement, chunk).await?;
        copying += started.elapsed();
    }
    sqlx::raw_sql("DROP TABLE bench_person_copy")
        .execute(db.pool())
        .await
        .db("dropping the COPY baseline")?;
    Ok(rows as f64 / copying.as_secs_f64().max(1e-9))
}
