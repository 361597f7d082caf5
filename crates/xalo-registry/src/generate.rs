//! A synthetic nation: families across the provinces with valid personal codes, and the
//! enterprises they found. Deterministic for a seed. Generated on one thread while another
//! writes (COPY on PostgreSQL, JSON-array inserts on SQLite), into tables whose indexes are
//! built after the load when they start empty, so it scales to tens of millions of people.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Row};
use xalo_core::{Error, ErrorCode, Gender, PersonalCode};
use xalo_store::{Backend, Database, DbResultExt};

use crate::admin_unit::admin_units;
use crate::model::{Enterprise, LEGAL_FORMS, Person, TaxCode};
use crate::names;
use crate::store;

/// Rows per SQLite statement (and transaction).
const INSERT_ROWS: u64 = 10_000;
/// Rows per PostgreSQL COPY (each opens a connection).
pub(crate) const COPY_ROWS: u64 = 50_000;
/// The year the population is as of.
const CENSUS_YEAR: i32 = 2025;

fn weighted<'a>(rng: &mut ChaCha8Rng, items: &'a [(&'a str, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total.max(1));
    for (item, w) in items {
        if pick < *w {
            return item;
        }
        pick -= w;
    }
    items.first().map_or("", |(i, _)| i)
}

/// Makes people and enterprises; holds the serial counters that keep codes unique.
pub struct Generator {
    rng: ChaCha8Rng,
    /// Next serial per (birth province, gender, birth year).
    serials: HashMap<(u16, bool, i32), u32>,
    next_tax: u64,
    units_by_province: HashMap<&'static str, Vec<&'static str>>,
    birth_codes: Vec<u16>,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut units_by_province: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for u in &admin_units().units {
            units_by_province
                .entry(u.province.as_str())
                .or_default()
                .push(u.code.as_str());
        }
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            serials: HashMap::new(),
            next_tax: 10_000_000,
            units_by_province,
            birth_codes: xalo_core::personal_code::vn_province_codes().collect(),
        }
    }

    fn code(
        &mut self,
        residence_province: &str,
        gender: Gender,
        year: i32,
    ) -> Result<PersonalCode, Error> {
        // Most people were born in the province they live in; one in five moved.
        let home: u16 = residence_province.parse().unwrap_or(1);
        let province = if self.rng.random_bool(0.8)
            && xalo_core::personal_code::vn_province_name(home).is_some()
        {
            home
        } else {
            *self.birth_codes.choose(&mut self.rng).unwrap_or(&1)
        };
        let serial = self
            .serials
            .entry((province, gender == Gender::Female, year))
            .or_insert(0);
        *serial += 1;
        Ok(PersonalCode::vietnamese(province, gender, year, *serial)?)
    }

    fn date_in(&mut self, year: i32) -> String {
        let day = self.rng.random_range(0..365);
        let d = NaiveDate::from_ymd_opt(year, 1, 1)
            .map(|d| d + chrono::Duration::days(day))
            .filter(|d| d.year() == year)
            .or_else(|| NaiveDate::from_ymd_opt(year, 12, 31));
        d.map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }

    fn person(
        &mut self,
        gender: Gender,
        year: i32,
        family_name: &str,
        province: &str,
        unit: &str,
        address: &str,
    ) -> Result<Person, Error> {
        let (middle, given) = match gender {
            Gender::Male => (
                weighted(&mut self.rng, names::MIDDLE_MALE),
                names::GIVEN_MALE.choose(&mut self.rng),
            ),
            Gender::Female => (
                weighted(&mut self.rng, names::MIDDLE_FEMALE),
                names::GIVEN_FEMALE.choose(&mut self.rng),
            ),
        };
        Ok(Person {
            code: self.code(province, gender, year)?,
            family_name: family_name.to_owned(),
            middle_name: middle.to_owned(),
            given_name: given.copied().unwrap_or("An").to_owned(),
            birth_date: self.date_in(year),
            gender,
            birth_place: unit.to_owned(),
            nationality: "VN".into(),
            residence_unit: unit.to_owned(),
            residence_address: address.to_owned(),
            temporary_residence_unit: None,
            father: None,
            mother: None,
            spouse: None,
            alive: true,
            death_date: None,
        })
    }

    /// One household: a couple (or a single adult) and their children.
    pub fn household(&mut self) -> Result<Vec<Person>, Error> {
        let province = weighted(&mut self.rng, names::PROVINCE_WEIGHTS);
        let unit = self
            .units_by_province
            .get(province)
            .and_then(|u| u.choose(&mut self.rng).copied())
            .unwrap_or("00070");
        let street = names::STREETS
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("Lê Lợi");
        let address = format!("Số {} đường {street}", self.rng.random_range(1..400));
        let family = weighted(&mut self.rng, names::FAMILY).to_owned();
        let head_year = CENSUS_YEAR - self.rng.random_range(20..80);
        let mut head = self.person(Gender::Male, head_year, &family, province, unit, &address)?;
        let mut out = Vec::new();
        if self.rng.random_bool(0.85) {
            let wife_family = weighted(&mut self.rng, names::FAMILY).to_owned();
            let wife_year = (head_year + self.rng.random_range(-2..6)).min(CENSUS_YEAR - 18);
            let mut wife = self.person(
                Gender::Female,
                wife_year,
                &wife_family,
                province,
                unit,
                &address,
            )?;
            wife.spouse = Some(head.code);
            head.spouse = Some(wife.code);
            let youngest_parent = head_year.max(wife_year);
            let children = self.rng.random_range(0..4);
            for _ in 0..children {
                let year = youngest_parent + self.rng.random_range(20..40);
                if year > CENSUS_YEAR {
                    continue;
                }
                let gender = if self.rng.random_bool(0.51) {
                    Gender::Male
                } else {
                    Gender::Female
                };
                let mut child = self.person(gender, year, &family, province, unit, &address)?;
                child.father = Some(head.code);
                child.mother = Some(wife.code);
                out.push(child);
            }
            if head_year < 1950 && self.rng.random_bool(0.3) {
                wife.alive = false;
                let died = CENSUS_YEAR - self.rng.random_range(0..5);
                wife.death_date = Some(self.date_in(died));
            }
            out.insert(0, wife);
        }
        out.insert(0, head);
        Ok(out)
    }

    /// An enterprise founded by `founders` (the first is its legal representative).
    pub fn enterprise(&mut self, founders: &[&Person]) -> Option<Enterprise> {
        let rep = founders.first()?;
        let code = loop {
            let n = self.next_tax;
            self.next_tax += 1;
            // The first two digits name the province of the tax office.
            let province: u64 = admin_units()
                .unit(&rep.residence_unit)
                .and_then(|u| u.province.parse().ok())
                .unwrap_or(1);
            if let Some(c) = TaxCode::from_first9(province * 10_000_000 + n % 10_000_000) {
                break c;
            }
        };
        let form = LEGAL_FORMS
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(LEGAL_FORMS[0]);
        let words = names::COMPANY_WORDS
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("An Phú");
        let (line, _) = names::BUSINESS_LINES
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(("6201", ""));
        let short_form = if form.contains("cổ phần") {
            "Công ty Cổ phần"
        } else if form.contains("TNHH") {
            "Công ty TNHH"
        } else {
            "Doanh nghiệp"
        };
        let founded = self.rng.random_range(2000..CENSUS_YEAR);
        let registered_on = self.date_in(founded);
        Some(Enterprise {
            code,
            name: format!(
                "{short_form} {words} {}",
                code.to_string().get(6..).unwrap_or("")
            ),
            foreign_name: Some(format!("{} Company {}", words, code)),
            unit: rep.residence_unit.clone(),
            address: rep.residence_address.clone(),
            legal_form: form.to_owned(),
            charter_capital: i64::from(self.rng.random_range(1u32..500)) * 100_000_000,
            business_lines: vec![line.to_owned()],
            representative: rep.code,
            founders: founders.iter().map(|p| p.code).collect(),
            status: "active".into(),
            registered_on,
        })
    }
}

/// How a table's rows travel to its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// CSV for `COPY … FROM STDIN` (PostgreSQL).
    Csv,
    /// One JSON array of rows, bound as a single parameter and spread into rows by
    /// `jsonb_each` (SQLite): the driver's cost per bound value grows with the number of
    /// values in a statement, so many-row statements with one value each are slow.
    Json,
}

impl Encoding {
    fn of(db: &Database) -> Encoding {
        match db.backend() {
            Backend::Postgres => Encoding::Csv,
            Backend::Sqlite => Encoding::Json,
        }
    }
}

/// Rows of one table, encoded for loading.
struct Rows {
    encoding: Encoding,
    data: Vec<u8>,
    count: u64,
}

impl Rows {
    fn new(encoding: Encoding) -> Rows {
        Rows {
            encoding,
            data: Vec::new(),
            count: 0,
        }
    }

    fn push(&mut self, values: &[Option<String>]) -> Result<(), Error> {
        match self.encoding {
            Encoding::Csv => push_csv(&mut self.data, values),
            Encoding::Json => {
                self.data.push(if self.count == 0 { b'[' } else { b',' });
                serde_json::to_writer(&mut self.data, values)
                    .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
            }
        }
        self.count += 1;
        Ok(())
    }

    /// The rows so far, leaving this empty.
    fn take(&mut self) -> Rows {
        let mut rows = std::mem::replace(self, Rows::new(self.encoding));
        if rows.encoding == Encoding::Json {
            rows.data
                .extend_from_slice(if rows.count == 0 { b"[]" } else { b"]" });
        }
        rows
    }
}

/// One row of `values` as a line of CSV for `COPY … WITH (FORMAT csv)`: every value
/// quoted, so that an empty string stays distinct from NULL (an absent value).
pub(crate) fn push_csv(out: &mut Vec<u8>, values: &[Option<String>]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Some(v) = v {
            out.push(b'"');
            out.extend_from_slice(v.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'\n');
}

/// What the generating thread hands to the writer.
enum Batch {
    People(Rows),
    Enterprises(Rows),
    Done(Generated),
}

/// The generating side of a load: runs on its own thread, so that making and encoding
/// rows overlaps with the database writing them. Same seed, same rows, in the same order.
fn produce(
    seed: u64,
    persons: u64,
    persons_per_enterprise: u64,
    encodings: (Encoding, Encoding),
    chunk: u64,
    out: &tokio::sync::mpsc::Sender<Result<Batch, Error>>,
) -> Result<Generated, Error> {
    let send = |b: Batch| {
        out.blocking_send(Ok(b))
            .map_err(|_| Error::new(ErrorCode::Internal, "the loader stopped"))
    };
    let mut g = Generator::new(seed);
    let mut made = Generated {
        persons: 0,
        enterprises: 0,
    };
    let mut people = Rows::new(encodings.0);
    let mut firms = Rows::new(encodings.1);
    while made.persons < persons {
        let household = g.household()?;
        let room = (persons - made.persons) as usize;
        let household: Vec<Person> = household.into_iter().take(room).collect();
        // Every so many people, the household's adults found an enterprise.
        let adults: Vec<&Person> = household
            .iter()
            .filter(|p| p.alive && p.birth_date.as_str() < "2007")
            .collect();
        if persons_per_enterprise > 0
            && !adults.is_empty()
            && (made.persons / persons_per_enterprise)
                < ((made.persons + household.len() as u64) / persons_per_enterprise)
            && let Some(e) = g.enterprise(&adults)
        {
            firms.push(&store::enterprise_values(&e))?;
        }
        made.persons += household.len() as u64;
        for p in &household {
            people.push(&store::person_values(p))?;
        }
        if people.count >= chunk {
            send(Batch::People(people.take()))?;
        }
        if firms.count >= chunk {
            made.enterprises += firms.count;
            send(Batch::Enterprises(firms.take()))?;
        }
    }
    if people.count > 0 {
        send(Batch::People(people.take()))?;
    }
    if firms.count > 0 {
        made.enterprises += firms.count;
        send(Batch::Enterprises(firms.take()))?;
    }
    Ok(made)
}

/// What a generation run made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    pub persons: u64,
    pub enterprises: u64,
}

/// Generate `persons` people (whole households) and one enterprise per
/// `persons_per_enterprise` people into `db`, reporting progress to `progress`.
pub async fn generate(
    db: &Database,
    persons: u64,
    seed: u64,
    persons_per_enterprise: u64,
    progress: &indicatif::ProgressBar,
) -> Result<Generated, Error> {
    generate_split(db, db, persons, seed, persons_per_enterprise, progress).await
}

/// The connections a SQLite load writes through, held for the whole load so that their
/// large page cache keeps the primary-key index in memory; none on PostgreSQL, where each
/// COPY opens its own.
struct Writers {
    people: Option<PoolConnection<Any>>,
    firms: Option<PoolConnection<Any>>,
    /// Both registers are one SQLite database (and its pool may hold a single connection).
    shared: bool,
}

impl Writers {
    async fn open(db: &Database, business: &Database) -> Result<Writers, Error> {
        let shared = db.backend() == Backend::Sqlite && db.url() == business.url();
        let people = writer(db).await?;
        let firms = if shared {
            None
        } else {
            writer(business).await?
        };
        Ok(Writers {
            people,
            firms,
            shared,
        })
    }

    fn people(&mut self) -> Option<&mut AnyConnection> {
        self.people.as_deref_mut()
    }

    fn firms(&mut self) -> Option<&mut AnyConnection> {
        if self.shared {
            self.people.as_deref_mut()
        } else {
            self.firms.as_deref_mut()
        }
    }

    /// Back to ordinary settings, and to the pool.
    async fn release(mut self) -> Result<(), Error> {
        for conn in [self.people.as_deref_mut(), self.firms.as_deref_mut()]
            .into_iter()
            .flatten()
        {
            sqlx::raw_sql(
                "PRAGMA cache_size = -2000; PRAGMA wal_autocheckpoint = 1000; \
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .execute(conn)
            .await
            .db("ending the bulk load")?;
        }
        Ok(())
    }

    /// After a failure: the connections are closed rather than pooled (an unfinished
    /// transaction rolls back with them).
    fn discard(self) {
        for conn in [self.people, self.firms].into_iter().flatten() {
            drop(conn.detach());
        }
    }
}

async fn writer(db: &Database) -> Result<Option<PoolConnection<Any>>, Error> {
    if db.backend() != Backend::Sqlite {
        return Ok(None);
    }
    let mut conn = db.pool().acquire().await.db("opening a loader")?;
    // A 1 GiB page cache holds the primary-key index of tens of millions of people (and
    // sorts the other indexes in memory); checkpoints every 256 MiB instead of every 4 MiB.
    sqlx::raw_sql("PRAGMA cache_size = -1048576; PRAGMA wal_autocheckpoint = 65536;")
        .execute(&mut *conn)
        .await
        .db("preparing a bulk load")?;
    Ok(Some(conn))
}

async fn execute(db: &Database, conn: Option<&mut AnyConnection>, sql: &str) -> Result<(), Error> {
    let q = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()));
    match conn {
        Some(c) => q.execute(c).await,
        None => q.execute(db.pool()).await,
    }
    .map(|_| ())
    .db("preparing a bulk load")
}

async fn is_empty(
    db: &Database,
    conn: Option<&mut AnyConnection>,
    table: &store::BulkTable,
) -> Result<bool, Error> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {} LIMIT 1",
        table.name
    )));
    let row = match conn {
        Some(c) => q.fetch_optional(c).await,
        None => q.fetch_optional(db.pool()).await,
    }
    .db("counting rows")?;
    Ok(row.is_none())
}

/// Into an empty table, rows load faster without its secondary indexes (and on PostgreSQL
/// its primary key), which are then built once, sorted. Returns whether they were set aside.
async fn set_indexes_aside(
    db: &Database,
    mut conn: Option<&mut AnyConnection>,
    table: &store::BulkTable,
) -> Result<bool, Error> {
    if !is_empty(db, conn.as_deref_mut(), table).await? {
        return Ok(false);
    }
    let mut sql: String = table
        .indexes
        .iter()
        .map(|(name, _)| format!("DROP INDEX IF EXISTS {name};"))
        .collect();
    if db.backend() == Backend::Postgres {
        sql.push_str(&format!(
            "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}_pkey;",
            table.name, table.name
        ));
    }
    execute(db, conn, &sql).await?;
    Ok(true)
}

/// Prefixed to a PostgreSQL index build (one simple query, so one implicit transaction that
/// `SET LOCAL` lasts for, leaving the pooled connection as it was): with the default 64 MB,
/// sorting the keys of a hundred million rows spills into many runs on disk, merged in
/// several passes; 1 GB makes fewer, longer runs and fewer passes.
const SORT_MEMORY: &str = "SET LOCAL maintenance_work_mem = '1GB'; ";

/// Build whatever indexes of `table` are missing (all of them after a bulk load into an
/// empty table; none otherwise).
async fn restore_indexes(
    db: &Database,
    mut conn: Option<&mut AnyConnection>,
    table: &store::BulkTable,
) -> Result<(), Error> {
    if db.backend() == Backend::Postgres {
        let missing = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT to_regclass('{}_pkey') IS NULL",
            table.name
        )))
        .fetch_one(db.pool())
        .await
        .and_then(|r| r.try_get::<bool, _>(0))
        .db("checking the primary key")?;
        if missing {
            execute(
                db,
                None,
                &format!(
                    "{}ALTER TABLE {} ADD CONSTRAINT {}_pkey PRIMARY KEY ({})",
                    SORT_MEMORY, table.name, table.name, table.primary_key
                ),
            )
            .await?;
        }
    }
    let sort_memory = if db.backend() == Backend::Postgres {
        SORT_MEMORY
    } else {
        ""
    };
    for (name, on) in table.indexes {
        execute(
            db,
            conn.as_deref_mut(),
            &format!("{sort_memory}CREATE INDEX IF NOT EXISTS {name} ON {on}"),
        )
        .await?;
    }
    if db.backend() == Backend::Postgres {
        // Fresh statistics, so that the planner uses the indexes just built.
        execute(db, None, &format!("ANALYZE {}", table.name)).await?;
    }
    Ok(())
}

/// Where a table's rows go during a load: the table itself, or (SQLite, into an empty
/// table) a staging table moved over in key order at the end.
struct Target {
    table: &'static store::BulkTable,
    staged: bool,
}

impl Target {
    /// Set indexes aside (and stage) when `table` is empty.
    async fn prepare(
        db: &Database,
        mut conn: Option<&mut AnyConnection>,
        table: &'static store::BulkTable,
    ) -> Result<Target, Error> {
        let empty = set_indexes_aside(db, conn.as_deref_mut(), table).await?;
        let staged = empty && db.backend() == Backend::Sqlite;
        if staged {
            execute(db, conn, &table.create_staging()).await?;
        }
        Ok(Target { table, staged })
    }

    /// Staged rows into place, then the indexes.
    async fn finish(
        &self,
        db: &Database,
        mut conn: Option<&mut AnyConnection>,
    ) -> Result<(), Error> {
        if self.staged {
            execute(db, conn.as_deref_mut(), &self.table.move_staged()).await?;
        }
        restore_indexes(db, conn, self.table).await
    }
}

async fn write(
    db: &Database,
    conn: Option<&mut AnyConnection>,
    target: &Target,
    rows: Rows,
) -> Result<(), Error> {
    let table = target.table;
    match (rows.encoding, conn) {
        (Encoding::Csv, _) => {
            db.postgres_copy(
                &format!(
                    "COPY {} ({}) FROM STDIN WITH (FORMAT csv)",
                    table.name, table.columns
                ),
                rows.data,
            )
            .await?;
        }
        (Encoding::Json, Some(conn)) => {
            let json = String::from_utf8(rows.data)
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
            // One statement, its own transaction: inside an explicit one, SQLite would keep
            // a statement journal of every page it touches, in case the statement failed.
            let into = if target.staged {
                table.staging()
            } else {
                table.name.to_owned()
            };
            sqlx::query(sqlx::AssertSqlSafe(table.json_insert(&into)))
                .bind(json)
                .execute(conn)
                .await
                .db("adding rows")?;
        }
        (Encoding::Json, None) => {
            return Err(Error::new(
                ErrorCode::Internal,
                "no connection to load into",
            ));
        }
    }
    Ok(())
}

/// As [`generate`], with people in the population register's database and enterprises in
/// the business register's.
pub async fn generate_split(
    db: &Database,
    business: &Database,
    persons: u64,
    seed: u64,
    persons_per_enterprise: u64,
    progress: &indicatif::ProgressBar,
) -> Result<Generated, Error> {
    db.migrate("registry", store::MIGRATIONS).await?;
    business.migrate("registry", store::MIGRATIONS).await?;
    progress.set_length(persons);
    let mut writers = Writers::open(db, business).await?;
    let loaded = load(
        db,
        business,
        &mut writers,
        (persons, seed, persons_per_enterprise),
        progress,
    )
    .await;
    match loaded {
        Ok(made) => {
            writers.release().await?;
            progress.finish();
            Ok(made)
        }
        Err(e) => {
            writers.discard();
            // The indexes come back even so (best effort: the first error is the one told).
            let _ = restore_indexes(db, None, &store::PERSON_TABLE).await;
            let _ = restore_indexes(business, None, &store::ENTERPRISE_TABLE).await;
            Err(e)
        }
    }
}

async fn load(
    db: &Database,
    business: &Database,
    writers: &mut Writers,
    (persons, seed, persons_per_enterprise): (u64, u64, u64),
    progress: &indicatif::ProgressBar,
) -> Result<Generated, Error> {
    let people_table = Target::prepare(db, writers.people(), &store::PERSON_TABLE).await?;
    let firm_table = Target::prepare(business, writers.firms(), &store::ENTERPRISE_TABLE).await?;
    let encodings = (Encoding::of(db), Encoding::of(business));
    let chunk = if encodings.0 == Encoding::Csv {
        COPY_ROWS
    } else {
        INSERT_ROWS
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let producer = std::thread::Builder::new()
        .name("registry-generate".into())
        .spawn(move || {
            let made = produce(seed, persons, persons_per_enterprise, encodings, chunk, &tx);
            // When the writer has stopped, nobody listens any more.
            let _ = tx.blocking_send(made.map(Batch::Done));
        })
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let mut made = None;
    while let Some(batch) = rx.recv().await {
        match batch? {
            Batch::People(rows) => {
                let n = rows.count;
                write(db, writers.people(), &people_table, rows).await?;
                progress.inc(n);
            }
            Batch::Enterprises(rows) => {
                write(business, writers.firms(), &firm_table, rows).await?;
            }
            Batch::Done(m) => made = Some(m),
        }
    }
    let _ = producer.join();
    let made = made.ok_or_else(|| Error::new(ErrorCode::Internal, "generation stopped"))?;
    people_table.finish(db, writers.people()).await?;
    firm_table.finish(business, writers.firms()).await?;
    Ok(made)
}
