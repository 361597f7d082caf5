//! The registers' tables and queries.

use sqlx::Row;
use sqlx::any::AnyRow;
use xalo_core::{Error, ErrorCode, Gender, PersonalCode};
use xalo_store::{Database, DbResultExt, Migration};

use crate::model::{Enterprise, Person};

pub const MIGRATIONS: &[Migration] = &[
    Migration::per_backend(
        1,
        "population and business registers",
        include_str!("../migrations/1.sqlite.sql"),
        include_str!("../migrations/1.postgres.sql"),
    ),
    // Changes made before events were pushed stay in the pull feed only.
    Migration::portable(
        2,
        "changes published as events",
        "ALTER TABLE registry_change ADD COLUMN published_ms BIGINT;
        UPDATE registry_change SET published_ms = 0;",
    ),
    // The portal prefills a business's forms from the enterprise its user represents.
    Migration::portable(
        3,
        "enterprises by representative",
        "CREATE INDEX enterprise_representative ON enterprise (representative);",
    ),
    // Access records are anchored in the ledger as salted commitments (see access_log).
    Migration::portable(
        4,
        "access records anchored in the ledger",
        "ALTER TABLE registry_access ADD COLUMN salt TEXT;
        ALTER TABLE registry_access ADD COLUMN ledger_index BIGINT;
        CREATE INDEX registry_access_unanchored ON registry_access (id) WHERE ledger_index IS NULL;",
    ),
    // A caller that retries a registration (the portal after a timeout) names it with an
    // Idempotency-Key, so that a retried birth does not make a second child.
    Migration::portable(
        5,
        "idempotent registrations",
        "ALTER TABLE registry_change ADD COLUMN request_key TEXT;
        ALTER TABLE registry_change ADD COLUMN request_digest TEXT;
        CREATE UNIQUE INDEX registry_change_request ON registry_change (request_key);",
    ),
];

/// A table as a bulk load sees it: where rows go and which indexes it may build afterwards.
#[derive(Debug, Clone, Copy)]
pub struct BulkTable {
    pub name: &'static str,
    pub columns: &'static str,
    /// Positions in `columns` of integer columns.
    pub integers: &'static [usize],
    pub primary_key: &'static str,
    /// Secondary indexes as the migrations create them: (name, `table (columns)`).
    pub indexes: &'static [(&'static str, &'static str)],
}

impl BulkTable {
    /// The SQLite statement adding rows to table `into` from one JSON array of rows (each
    /// an array of values in `columns` order), bound as `$1`. `jsonb_each` hands each row
    /// over in binary form, so that reading its values does not print and parse it again.
    pub fn json_insert(&self, into: &str) -> String {
        let n = self.columns.split(',').count();
        let values: Vec<String> = (0..n)
            .map(|i| {
                if self.integers.contains(&i) {
                    format!("CAST(value ->> {i} AS INTEGER)")
                } else {
                    format!("value ->> {i}")
                }
            })
            .collect();
        format!(
            "INSERT INTO {into} ({}) SELECT {} FROM jsonb_each($1)",
            self.columns,
            values.join(", ")
        )
    }
}

impl BulkTable {
    /// The SQLite table a load into this empty one first appends to, in a temporary file.
    pub fn staging(&self) -> String {
        format!("temp.{}_load", self.name)
    }

    pub fn create_staging(&self) -> String {
        format!(
            "DROP TABLE IF EXISTS {staging}; \
             CREATE TABLE {staging} AS SELECT {} FROM {} WHERE 0",
            self.columns,
            self.name,
            staging = self.staging()
        )
    }

    /// Moves the staged rows in primary-key order, so that the table and its primary-key
    /// index grow at their ends instead of at random pages (which, at tens of millions of
    /// rows, would write most of the index again with every transaction).
    pub fn move_staged(&self) -> String {
        format!(
            "INSERT INTO {name} ({columns}) SELECT {columns} FROM {staging} ORDER BY {pk}; \
             DROP TABLE {staging}",
            name = self.name,
            columns = self.columns,
            staging = self.staging(),
            pk = self.primary_key
        )
    }
}

pub const PERSON_TABLE: BulkTable = BulkTable {
    name: "person",
    columns: PERSON_COLUMNS,
    integers: &[14],
    primary_key: "code",
    indexes: &[
        ("person_name", "person (name_key, birth_date)"),
        ("person_unit", "person (residence_unit)"),
        ("person_father", "person (father)"),
        ("person_mother", "person (mother)"),
    ],
};

pub const ENTERPRISE_TABLE: BulkTable = BulkTable {
    name: "enterprise",
    columns: ENTERPRISE_COLUMNS,
    integers: &[6],
    primary_key: "code",
    indexes: &[
        ("enterprise_name_key", "enterprise (name_key)"),
        ("enterprise_representative", "enterprise (representative)"),
    ],
};

pub const PERSON_COLUMNS: &str = "code, family_name, middle_name, given_name, birth_date, gender, \
    birth_place, nationality, residence_unit, residence_address, temporary_residence_unit, \
    father, mother, spouse, alive, death_date, name_key";

fn gender_str(g: Gender) -> &'static str {
    match g {
        Gender::Male => "male",
        Gender::Female => "female",
    }
}

fn code_of(s: Option<String>) -> Result<Option<PersonalCode>, Error> {
    s.map(|c| c.parse().map_err(Error::from)).transpose()
}

pub fn person_from_row(r: &AnyRow) -> Result<Person, Error> {
    let ctx = "reading a person";
    let gender: String = r.try_get(5).db(ctx)?;
    Ok(Person {
        code: r.try_get::<String, _>(0).db(ctx)?.parse()?,
        family_name: r.try_get(1).db(ctx)?,
        middle_name: r.try_get(2).db(ctx)?,
        given_name: r.try_get(3).db(ctx)?,
        birth_date: r.try_get(4).db(ctx)?,
        gender: if gender == "female" {
            Gender::Female
        } else {
            Gender::Male
        },
        birth_place: r.try_get(6).db(ctx)?,
        nationality: r.try_get(7).db(ctx)?,
        residence_unit: r.try_get(8).db(ctx)?,
        residence_address: r.try_get(9).db(ctx)?,
        temporary_residence_unit: r.try_get(10).db(ctx)?,
        father: code_of(r.try_get(11).db(ctx)?)?,
        mother: code_of(r.try_get(12).db(ctx)?)?,
        spouse: code_of(r.try_get(13).db(ctx)?)?,
        alive: r.try_get::<i64, _>(14).db(ctx)? != 0,
        death_date: r.try_get(15).db(ctx)?,
    })
}

/// The person's columns in [`PERSON_COLUMNS`] order, as text (for COPY and for binds);
/// `name_key` is the full name folded for search.
pub fn person_values(p: &Person) -> [Option<String>; 17] {
    [
        Some(p.code.to_string()),
        Some(p.family_name.clone()),
        Some(p.middle_name.clone()),
        Some(p.given_name.clone()),
        Some(p.birth_date.clone()),
        Some(gender_str(p.gender).into()),
        Some(p.birth_place.clone()),
        Some(p.nationality.clone()),
        Some(p.residence_unit.clone()),
        Some(p.residence_address.clone()),
        p.temporary_residence_unit.clone(),
        p.father.map(|c| c.to_string()),
        p.mother.map(|c| c.to_string()),
        p.spouse.map(|c| c.to_string()),
        Some(if p.alive { "1".into() } else { "0".into() }),
        p.death_date.clone(),
        Some(crate::text::fold(&p.full_name())),
    ]
}

fn bind_person<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    p: &Person,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for (i, v) in person_values(p).into_iter().enumerate() {
        q = if i == 14 {
            q.bind(i64::from(p.alive))
        } else {
            q.bind(v)
        };
    }
    q
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Insert people, a few per statement (registrations; bulk loads go through the generator's
/// faster paths).
pub async fn insert_people(conn: &mut sqlx::AnyConnection, people: &[Person]) -> Result<(), Error> {
    for chunk in people.chunks(16) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(i * 17 + 1, 17)))
            .collect();
        let sql = format!(
            "INSERT INTO person ({PERSON_COLUMNS}) VALUES {}",
            rows.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in chunk {
            q = bind_person(q, p);
        }
        q.execute(&mut *conn).await.db("adding people")?;
    }
    Ok(())
}

pub async fn person(db: &Database, code: &PersonalCode) -> Result<Option<Person>, Error> {
    let head = format!("SELECT {PERSON_COLUMNS} FROM person");
    row_by_code(
        db,
        &head,
        &code.to_string(),
        person_from_row,
        "reading a person",
    )
    .await
}

/// `head` (`SELECT … FROM table`) of the row with primary key `code`, read by `from_row`.
async fn row_by_code<T>(
    db: &Database,
    head: &str,
    code: &str,
    from_row: fn(&AnyRow) -> Result<T, Error>,
    what: &str,
) -> Result<Option<T>, Error> {
    let sql = format!("{head} WHERE code = $1");
    let row = db
        .fetch_optional(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(code.to_owned()))
        .await
        .db(what)?;
    row.as_ref().map(from_row).transpose()
}

pub async fn people_where(
    db: &Database,
    condition: &str,
    binds: &[String],
    limit: i64,
) -> Result<Vec<Person>, Error> {
    let head = format!("SELECT {PERSON_COLUMNS} FROM person");
    rows_where(db, &head, condition, binds, limit, person_from_row).await
}

/// `head` (`SELECT … FROM table`) `WHERE condition` (a fixed SQL fragment with `$1`… for
/// `binds`), in code order, each row read by `from_row`.
async fn rows_where<T>(
    db: &Database,
    head: &str,
    condition: &str,
    binds: &[String],
    limit: i64,
    from_row: fn(&AnyRow) -> Result<T, Error>,
) -> Result<Vec<T>, Error> {
    let sql = format!(
        "{head} WHERE {condition} ORDER BY code LIMIT {}",
        limit.clamp(1, 1000)
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(b.clone());
    }
    // A condition may scan the register: on the pool's threads, not a held connection.
    let rows = q.fetch_all(db.pool()).await.db("searching the register")?;
    rows.iter().map(from_row).collect()
}

pub async fn count(db: &Database, table: &str) -> Result<i64, Error> {
    let table = match table {
        "person" | "enterprise" | "registry_change" | "registry_access" => table,
        _ => return Err(Error::new(ErrorCode::Internal, format!("no table {table}"))),
    };
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(db.pool())
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .db("counting")
}

pub const ENTERPRISE_COLUMNS: &str = "code, name, foreign_name, unit, address, legal_form, \
    charter_capital, business_lines, representative, founders, status, registered_on, name_key";

pub fn enterprise_from_row(r: &AnyRow) -> Result<Enterprise, Error> {
    let ctx = "reading an enterprise";
    let lines: String = r.try_get(7).db(ctx)?;
    let founders: String = r.try_get(9).db(ctx)?;
    Ok(Enterprise {
        code: r.try_get::<String, _>(0).db(ctx)?.parse()?,
        name: r.try_get(1).db(ctx)?,
        foreign_name: r.try_get(2).db(ctx)?,
        unit: r.try_get(3).db(ctx)?,
        address: r.try_get(4).db(ctx)?,
        legal_form: r.try_get(5).db(ctx)?,
        charter_capital: r.try_get(6).db(ctx)?,
        business_lines: lines
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        representative: r.try_get::<String, _>(8).db(ctx)?.parse()?,
        founders: founders
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(Error::from))
            .collect::<Result<_, _>>()?,
        status: r.try_get(10).db(ctx)?,
        registered_on: r.try_get(11).db(ctx)?,
    })
}

/// The columns of an enterprise in [`ENTERPRISE_COLUMNS`] order; `name_key` is the name
/// folded for duplicate checks.
pub fn enterprise_values(e: &Enterprise) -> Vec<Option<String>> {
    vec![
        Some(e.code.to_string()),
        Some(e.name.clone()),
        e.foreign_name.clone(),
        Some(e.unit.clone()),
        Some(e.address.clone()),
        Some(e.legal_form.clone()),
        Some(e.charter_capital.to_string()),
        Some(e.business_lines.join(",")),
        Some(e.representative.to_string()),
        Some(
            e.founders
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        Some(e.status.clone()),
        Some(e.registered_on.clone()),
        Some(crate::text::fold(&e.name)),
    ]
}

pub async fn insert_enterprises(
    conn: &mut sqlx::AnyConnection,
    list: &[Enterprise],
) -> Result<(), Error> {
    for chunk in list.chunks(16) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(i * 13 + 1, 13)))
            .collect();
        let sql = format!(
            "INSERT INTO enterprise ({ENTERPRISE_COLUMNS}) VALUES {}",
            rows.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            for (i, v) in enterprise_values(e).into_iter().enumerate() {
                q = if i == 6 {
                    q.bind(e.charter_capital)
                } else {
                    q.bind(v)
                };
            }
        }
        q.execute(&mut *conn).await.db("adding enterprises")?;
    }
    Ok(())
}

/// Enterprises matching `condition` (a fixed SQL fragment with `$1`… for `binds`).
pub async fn enterprises_where(
    db: &Database,
    condition: &str,
    binds: &[String],
    limit: i64,
) -> Result<Vec<Enterprise>, Error> {
    let head = format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprise");
    rows_where(db, &head, condition, binds, limit, enterprise_from_row).await
}

pub async fn enterprise(db: &Database, code: &str) -> Result<Option<Enterprise>, Error> {
    let head = format!("SELECT {ENTERPRISE_COLUMNS} FROM enterprise");
    row_by_code(
        db,
        &head,
        code,
        enterprise_from_row,
        "reading an enterprise",
    )
    .await
}
