//! A fresh, empty database for each test, on the backend the environment selects.
//!
//! `cargo test` needs no service: the default is a SQLite file in a temporary directory.
//! With `XALO_TEST_DATABASE=postgres` every test gets its own PostgreSQL database, created
//! on the server at `XALO_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and dropped when the test ends. CI runs the storage and server tests both ways.

use std::sync::atomic::{AtomicU64, Ordering};

use xalo_core::{Error, ErrorCode};

use crate::{Backend, Database};

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The backend the test run targets.
pub fn backend() -> Result<Backend, Error> {
    match std::env::var("XALO_TEST_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Ok(Backend::Sqlite),
        Ok("postgres") => Ok(Backend::Postgres),
        Ok(other) => Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("XALO_TEST_DATABASE={other}: expected sqlite or postgres"),
        )),
    }
}

fn admin_url() -> String {
    std::env::var("XALO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned())
}

/// A database that exists for as long as this value does.
pub struct TestDatabase {
    pub db: Database,
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Directory(#[allow(dead_code)] tempfile::TempDir),
    PostgresDatabase { admin: String, name: String },
}

impl TestDatabase {
    /// Create an empty database on the selected backend.
    pub async fn new() -> Result<TestDatabase, Error> {
        match backend()? {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                let db = Database::connect(&url).await?;
                Ok(TestDatabase {
                    db,
                    url,
                    cleanup: Cleanup::Directory(dir),
                })
            }
            Backend::Postgres => {
                static COUNTER: AtomicU64 = AtomicU64::new(0);
                let name = format!(
                    "xalo_test_{}_{}_{:08x}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    rand::random::<u32>()
                );
                let admin = admin_url();
                let admin_db = Database::connect_with(
                    &admin,
                    crate::PoolOptions {
                        max_connections: 1,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.context("connecting to the PostgreSQL test server"))?;
                // The name is made here from digits, never from input.
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(admin_db.pool())
                    .await
                    .map_err(|e| crate::db_error(e, "creating the test database"))?;
                admin_db.close().await;
                let url = match admin.rfind('/') {
                    Some(i) if i > "postgres://".len() => format!("{}/{name}", &admin[..i]),
                    _ => format!("{admin}/{name}"),
                };
                let db = Database::connect(&url).await?;
                Ok(TestDatabase {
                    db,
                    url,
                    cleanup: Cleanup::PostgresDatabase { admin, name },
                })
            }
        }
    }

    /// The URL of this database, to hand to a server under test.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::PostgresDatabase { admin, name } = &self.cleanup {
            let (admin, name) = (admin.clone(), name.clone());
            // Drop runs outside async context; a short-lived runtime on its own thread
            // removes the database even when the test's runtime is shutting down.
            let cleanup = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(db) = Database::connect_with(
                        &admin,
                        crate::PoolOptions {
                            max_connections: 1,
                            ..Default::default()
                        },
                    )
                    .await
                    {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(db.pool())
                        .await;
                        db.close().await;
                    }
                });
            });
            let _ = cleanup.join();
        }
    }
}
