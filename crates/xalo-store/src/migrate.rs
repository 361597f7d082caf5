//! Per-component schema migrations.
//!
//! sqlx's own migrator keeps one version sequence per database; Xalo keeps one per
//! component (each crate migrates its own tables), so this small runner records
//! `(component, version)` pairs in `xalo_schema` instead.

use sha2::{Digest, Sha256};
use sqlx::Row;
use xalo_core::{Error, ErrorCode, unix_now};

use crate::{Backend, Database, DbResultExt};

/// One step of a component's schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Migration {
    /// A step written in SQL that both backends accept.
    pub const fn portable(version: i64, name: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            name,
            sqlite: sql,
            postgres: sql,
        }
    }

    /// A step with one script per backend.
    pub const fn per_backend(
        version: i64,
        name: &'static str,
        sqlite: &'static str,
        postgres: &'static str,
    ) -> Self {
        Migration {
            version,
            name,
            sqlite,
            postgres,
        }
    }

    fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }

    fn checksum(&self, backend: Backend) -> String {
        hex::encode(Sha256::digest(self.sql(backend).as_bytes()))
    }
}

const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS xalo_schema (
    component TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_unix BIGINT NOT NULL,
    PRIMARY KEY (component, version)
)";

fn failed(component: &str, m: &Migration, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::StoreMigration,
        format!("{component} migration {} ({}): {e}", m.version, m.name),
    )
}

pub(crate) async fn run(
    db: &Database,
    component: &str,
    migrations: &[Migration],
) -> Result<(), Error> {
    let mut sorted = migrations.to_vec();
    sorted.sort_by_key(|m| m.version);
    if sorted.windows(2).any(|w| w[0].version == w[1].version) {
        return Err(Error::new(
            ErrorCode::StoreMigration,
            format!("{component}: two migrations share a version"),
        ));
    }
    let backend = db.backend();
    let mut tx = db.begin_write().await?;
    if backend == Backend::Postgres {
        // Two processes starting at once must not both apply the same step.
        sqlx::query("SELECT pg_advisory_xact_lock(7283736)")
            .execute(&mut *tx)
            .await
            .db("taking the migration lock")?;
    }
    sqlx::raw_sql(SCHEMA_TABLE)
        .execute(&mut *tx)
        .await
        .db("creating xalo_schema")?;
    let applied = sqlx::query(
        "SELECT version, checksum FROM xalo_schema WHERE component = $1 ORDER BY version",
    )
    .bind(component)
    .fetch_all(&mut *tx)
    .await
    .db("reading xalo_schema")?;
    for row in &applied {
        let version: i64 = row.try_get(0).db("reading xalo_schema")?;
        let checksum: String = row.try_get(1).db("reading xalo_schema")?;
        match sorted.iter().find(|m| m.version == version) {
            Some(m) if m.checksum(backend) != checksum => {
                return Err(failed(
                    component,
                    m,
                    "was changed after it was applied; add a new migration instead",
                ));
            }
            Some(_) => {}
            None => {
                return Err(Error::new(
                    ErrorCode::StoreMigration,
                    format!(
                        "{component}: the database has migration {version}, which this build \
                         does not know; it was written by a newer Xalo"
                    ),
                ));
            }
        }
    }
    for m in sorted.iter().filter(|m| {
        !applied
            .iter()
            .any(|r| r.try_get::<i64, _>(0).ok() == Some(m.version))
    }) {
        sqlx::raw_sql(m.sql(backend))
            .execute(&mut *tx)
            .await
            .map_err(|e| failed(component, m, e))?;
        sqlx::query(
            "INSERT INTO xalo_schema (component, version, name, checksum, applied_unix) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(component)
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum(backend))
        .bind(unix_now())
        .execute(&mut *tx)
        .await
        .map_err(|e| failed(component, m, e))?;
        tracing::info!(
            component,
            version = m.version,
            name = m.name,
            "migration applied"
        );
    }
    tx.commit().await.db("committing migrations")
}
