//! Storage tests. They run on SQLite by default and on PostgreSQL when
//! `XALO_TEST_DATABASE=postgres` (CI runs both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use xalo_core::ErrorCode;
use xalo_store::testing::TestDatabase;
use xalo_store::{Backend, Database, DbResultExt, Migration, Row};

const NOTES_V1: Migration = Migration::per_backend(
    1,
    "notes",
    "CREATE TABLE note (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL UNIQUE, body BLOB NOT NULL, pinned BIGINT NOT NULL, at BIGINT NOT NULL)",
    "CREATE TABLE note (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title TEXT NOT NULL UNIQUE, body BYTEA NOT NULL, pinned BIGINT NOT NULL, at BIGINT NOT NULL)",
);
const NOTES_V2: Migration =
    Migration::portable(2, "note tags", "ALTER TABLE note ADD COLUMN tag TEXT");

async fn fresh() -> TestDatabase {
    TestDatabase::new().await.unwrap()
}

#[tokio::test]
async fn migrations_apply_once_and_in_order() {
    let t = fresh().await;
    // Given out of order, applied in order.
    t.db.migrate("notes", &[NOTES_V2, NOTES_V1]).await.unwrap();
    t.db.migrate("notes", &[NOTES_V1, NOTES_V2]).await.unwrap();
    let rows = sqlx::query("SELECT version FROM xalo_schema WHERE component = $1 ORDER BY version")
        .bind("notes")
        .fetch_all(t.db.pool())
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, vec![1, 2]);
    // Another component keeps its own version sequence in the same database.
    let other = Migration::portable(1, "other", "CREATE TABLE other_thing (x BIGINT)");
    t.db.migrate("other", &[other]).await.unwrap();
}

#[tokio::test]
async fn a_changed_or_unknown_migration_is_refused() {
    let t = fresh().await;
    t.db.migrate("notes", &[NOTES_V1, NOTES_V2]).await.unwrap();
    let changed = Migration::portable(2, "note tags", "ALTER TABLE note ADD COLUMN tags TEXT");
    let e =
        t.db.migrate("notes", &[NOTES_V1, changed])
            .await
            .unwrap_err();
    assert_eq!(e.code, ErrorCode::StoreMigration);
    assert!(e.message.contains("was changed"), "{}", e.message);
    let e = t.db.migrate("notes", &[NOTES_V1]).await.unwrap_err();
    assert!(e.message.contains("newer Xalo"), "{}", e.message);
}

#[tokio::test]
async fn a_failing_migration_leaves_nothing_behind() {
    let t = fresh().await;
    let bad = Migration::portable(
        2,
        "broken",
        "CREATE TABLE fine (x BIGINT); CREATE TABLE broken (",
    );
    let e = t.db.migrate("notes", &[NOTES_V1, bad]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::StoreMigration);
    // The whole run was one transaction: not even step 1 stayed.
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM xalo_schema")
        .fetch_one(t.db.pool())
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(n, 0);
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
}

#[tokio::test]
async fn portable_types_round_trip_and_errors_are_coded() {
    let t = fresh().await;
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    let body: Vec<u8> = (0..=255).collect();
    let mut tx = t.db.begin_write().await.unwrap();
    sqlx::query("INSERT INTO note (title, body, pinned, at) VALUES ($1, $2, $3, $4)")
        .bind("Đăng ký khai sinh")
        .bind(body.clone())
        .bind(1i64)
        .bind(i64::MAX)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let row = sqlx::query("SELECT title, body, pinned, at FROM note WHERE title = $1")
        .bind("Đăng ký khai sinh")
        .fetch_one(t.db.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "Đăng ký khai sinh");
    assert_eq!(row.get::<Vec<u8>, _>(1), body);
    assert_eq!(row.get::<i64, _>(2), 1);
    assert_eq!(row.get::<i64, _>(3), i64::MAX);

    let dup = sqlx::query("INSERT INTO note (title, body, pinned, at) VALUES ($1, $2, $3, $4)")
        .bind("Đăng ký khai sinh")
        .bind(Vec::<u8>::new())
        .bind(0i64)
        .bind(0i64)
        .execute(t.db.pool())
        .await
        .db("adding a note");
    assert_eq!(dup.unwrap_err().code, ErrorCode::StoreConflict);
    let missing = sqlx::query("SELECT title FROM note WHERE title = $1")
        .bind("none")
        .fetch_one(t.db.pool())
        .await
        .db("reading a note");
    assert_eq!(
        missing.err().map(|e| e.code),
        Some(ErrorCode::StoreNotFound)
    );
}

#[tokio::test]
async fn concurrent_writers_all_land() {
    let t = fresh().await;
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let db = t.db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let mut tx = db.begin_write().await.unwrap();
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM note")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap()
                    .get(0);
                sqlx::query("INSERT INTO note (title, body, pinned, at) VALUES ($1, $2, $3, $4)")
                    .bind(format!("w{w}-{i}"))
                    .bind(vec![1u8])
                    .bind(0i64)
                    .bind(n)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM note")
        .fetch_one(t.db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 200);
}

#[tokio::test]
async fn committed_data_survives_reopening() {
    let t = fresh().await;
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    sqlx::query("INSERT INTO note (title, body, pinned, at) VALUES ($1, $2, $3, $4)")
        .bind("kept")
        .bind(vec![7u8])
        .bind(0i64)
        .bind(1i64)
        .execute(t.db.pool())
        .await
        .unwrap();
    t.db.close().await;
    let again = Database::connect(t.url()).await.unwrap();
    again.migrate("notes", &[NOTES_V1]).await.unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM note WHERE title = 'kept'")
        .fetch_one(again.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    again.close().await;
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode() {
    let t = fresh().await;
    if t.db.backend() != Backend::Sqlite {
        return;
    }
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(t.db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    assert!(t.url().starts_with("sqlite://"));
}

#[tokio::test]
async fn bad_urls_get_precise_errors() {
    let e = Database::connect("mysql://x").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::StoreUrl);
    let quick = xalo_store::PoolOptions {
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let e = Database::connect_with("postgres://nobody:secret@127.0.0.1:1/none", quick)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::StoreUnavailable);
    assert!(
        !e.message.contains("secret"),
        "password leaked: {}",
        e.message
    );
}

#[tokio::test]
async fn health_check_pings_the_database() {
    let t = fresh().await;
    (t.db.health_check())().await.unwrap();
    t.db.close().await;
    assert_eq!(
        (t.db.health_check())().await.unwrap_err().code,
        ErrorCode::StoreUnavailable
    );
}

#[tokio::test]
async fn power_loss_durable_pools_sync_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let durable = xalo_store::PoolOptions {
        power_loss_durable: true,
        ..Default::default()
    };
    let db = Database::connect_with(&url, durable).await.unwrap();
    let level: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, 2, "FULL");
    db.close().await;
    let db = Database::connect(&url).await.unwrap();
    let level: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, 1, "NORMAL");
}

#[tokio::test]
async fn a_role_may_keep_smaller_page_caches_on_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let cache = |db: Database| async move {
        let pooled: i64 = sqlx::query("PRAGMA cache_size")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        let held: i64 = db
            .fetch_one(sqlx::query("PRAGMA cache_size"))
            .await
            .unwrap()
            .get(0);
        db.close().await;
        (pooled, held)
    };
    let small = xalo_store::PoolOptions {
        sqlite_cache_kib: 512,
        ..Default::default()
    };
    let db = Database::connect_held(&url, 1, small).await.unwrap();
    assert_eq!(cache(db).await, (-512, -512), "KiB");
    let db = Database::connect_held(&url, 1, Default::default())
        .await
        .unwrap();
    assert_eq!(cache(db).await, (-2000, -2000), "SQLite's own default");
}

/// A held connection runs statements itself (not through sqlx's driver); what it answers
/// must be what the pool answers, value for value, error for error.
#[tokio::test]
async fn held_connections_answer_as_the_pool_does() {
    let t = fresh().await;
    // Elsewhere (PostgreSQL) a handle holds no connections: the pool serves all.
    if t.db.backend() != Backend::Sqlite {
        return;
    }
    t.db.migrate("notes", &[NOTES_V1, NOTES_V2]).await.unwrap();
    let held = Database::connect_held(t.url(), 2, xalo_store::PoolOptions::default())
        .await
        .unwrap();
    let body: Vec<u8> = (0..=255).collect();
    for (name, db) in [("pool", &t.db), ("held", &held)] {
        let done = db
            .execute(
                sqlx::query(
                    "INSERT INTO note (title, body, pinned, at, tag) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(format!("{name} Đăng ký"))
                .bind(body.clone())
                .bind(true)
                .bind(i64::MIN)
                .bind(None::<String>),
            )
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1, "{name}");
        // Bare `?` placeholders take the arguments in order; a missing one is NULL.
        let sql = format!(
            "INSERT INTO note (title, body, pinned, at, tag) VALUES {}",
            db.backend().value_rows(2, 5)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in 0..2i64 {
            q = q
                .bind(format!("{name} {i}"))
                .bind(vec![i as u8])
                .bind(i)
                .bind(i * 10);
            if i == 0 {
                q = q.bind("first");
            }
        }
        assert_eq!(db.execute(q).await.unwrap().rows_affected(), 2, "{name}");
    }
    let read = "SELECT title, body, pinned, at, tag, 1.5 AS half, id FROM note \
                WHERE title LIKE $1 ORDER BY id";
    let mut answers = Vec::new();
    for (name, db) in [("pool", &t.db), ("held", &held)] {
        let rows = db
            .fetch_all(sqlx::query(read).bind(format!("{name}%")))
            .await
            .unwrap();
        let seen: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("title")
                        .trim_start_matches(name)
                        .to_owned(),
                    r.get::<Vec<u8>, _>(1),
                    r.get::<i64, _>("pinned"),
                    r.get::<i64, _>(3),
                    r.get::<Option<String>, _>("tag"),
                    r.get::<f64, _>("half"),
                    r.try_get::<i64, _>("no such column").is_err(),
                )
            })
            .collect();
        answers.push(seen);
        let one = db
            .fetch_optional(sqlx::query(read).bind(format!("{name}%")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one.get::<Vec<u8>, _>(1), body, "{name}");
        assert!(
            db.fetch_optional(sqlx::query(read).bind("nobody"))
                .await
                .unwrap()
                .is_none()
        );
        let missing = db
            .fetch_one(sqlx::query(read).bind("nobody"))
            .await
            .db("reading a note");
        assert_eq!(
            missing.err().unwrap().code,
            ErrorCode::StoreNotFound,
            "{name}"
        );
        let dup = db
            .execute(
                sqlx::query("INSERT INTO note (title, body, pinned, at) VALUES ($1, x'00', 0, 0)")
                    .bind(format!("{name} 0")),
            )
            .await
            .db("adding a note");
        assert_eq!(dup.unwrap_err().code, ErrorCode::StoreConflict, "{name}");
        let bad = db
            .execute(sqlx::query("INSERT INTO nowhere VALUES (1)"))
            .await
            .db("writing nowhere")
            .unwrap_err();
        assert_eq!(bad.code, ErrorCode::StoreQuery, "{name}");
        assert!(
            bad.message.contains("no such table: nowhere"),
            "{name}: {bad}"
        );
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1].len(), 3);
    assert_eq!(answers[1][1].4.as_deref(), Some("first"));
    assert_eq!(answers[1][2].4, None);
}

/// A held connection that finds the file locked by a pool transaction waits on the
/// runtime's timer, not in SQLite on the runtime's only thread (where the transaction
/// could never commit), and writes once the lock is free.
#[tokio::test]
async fn a_held_write_waits_for_a_pool_transaction_without_blocking_the_runtime() {
    let t = fresh().await;
    if t.db.backend() != Backend::Sqlite {
        return;
    }
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    let held = Database::connect_held(t.url(), 2, xalo_store::PoolOptions::default())
        .await
        .unwrap();
    let mut tx = t.db.begin_write().await.unwrap();
    sqlx::query("INSERT INTO note (title, body, pinned, at) VALUES ('in tx', x'01', 0, 1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let writer = held.clone();
    let waiting = tokio::spawn(async move {
        writer
            .execute(sqlx::query(
                "INSERT INTO note (title, body, pinned, at) VALUES ('held', x'02', 0, 2)",
            ))
            .await
            .map(|r| r.rows_affected())
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    tx.commit().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    assert!(held.busy_retries() > 0);
    assert_eq!(notes_titled(&held, "held").await, 1);
    assert_eq!(notes_titled(&held, "in tx").await, 1);
}

/// Two notes in one transaction, sent whole; answers how many rows the second insert made.
const TWO_NOTES: &str = "BEGIN IMMEDIATE; \
     INSERT INTO note (title, body, pinned, at) VALUES ($1, x'01', 0, 1); \
     INSERT INTO note (title, body, pinned, at) VALUES ($2, x'02', 0, 2); \
     SELECT changes(); \
     COMMIT";

/// The notes titled `first` and `second`, in one [`TWO_NOTES`] script.
async fn two_notes(
    db: &Database,
    first: String,
    second: String,
) -> Result<Vec<sqlx::any::AnyRow>, xalo_core::Error> {
    db.write_script(sqlx::query(TWO_NOTES).bind(first).bind(second), "two notes")
        .await
}

async fn notes_titled(db: &Database, prefix: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM note WHERE title LIKE $1")
        .bind(format!("{prefix}%"))
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_write_script_lands_whole_or_not_at_all() {
    let t = fresh().await;
    if t.db.backend() != Backend::Sqlite {
        let e =
            t.db.write_script(sqlx::query("SELECT 1"), "a script")
                .await
                .err()
                .unwrap();
        assert_eq!(e.code, ErrorCode::Internal);
        return;
    }
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    let options = xalo_store::PoolOptions {
        max_connections: 1,
        ..Default::default()
    };
    let held = Database::connect_held(t.url(), 1, options).await.unwrap();
    for (name, db) in [("pool", &t.db), ("held", &held)] {
        let rows = two_notes(db, format!("{name}-a"), format!("{name}-b"))
            .await
            .unwrap();
        let second: i64 = rows[0].get(0);
        assert_eq!(second, 1);
        // The second insert breaks the unique title: the first is rolled back with it.
        let e = two_notes(db, format!("{name}-c"), format!("{name}-a"))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, ErrorCode::StoreConflict, "{e}");
        assert!(e.message.contains("two notes"), "{e}");
        assert_eq!(notes_titled(db, &format!("{name}-c")).await, 0);
        // The connection is out of the failed transaction: the next script lands.
        two_notes(db, format!("{name}-d"), format!("{name}-e"))
            .await
            .unwrap();
        assert_eq!(notes_titled(db, name).await, 4);
    }
}

/// Two notes as two plain statements, without `BEGIN` and `COMMIT` of their own.
const TWO_PLAIN_NOTES: &str = "INSERT INTO note (title, body, pinned, at) VALUES ($1, x'01', 0, 1); \
     INSERT INTO note (title, body, pinned, at) VALUES ($2, x'02', 0, 2)";

/// A held connection runs a script of several statements as one transaction: none of it
/// is kept when a later statement fails.
#[tokio::test]
async fn a_held_script_of_plain_statements_is_one_transaction() {
    let t = fresh().await;
    if t.db.backend() != Backend::Sqlite {
        return;
    }
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    let held = Database::connect_held(t.url(), 1, xalo_store::PoolOptions::default())
        .await
        .unwrap();
    let plain = |a: &str, b: &str| {
        sqlx::query(TWO_PLAIN_NOTES)
            .bind(a.to_owned())
            .bind(b.to_owned())
    };
    assert_eq!(
        held.execute(plain("p-a", "p-b"))
            .await
            .unwrap()
            .rows_affected(),
        2
    );
    let e = held
        .execute(plain("p-c", "p-a"))
        .await
        .db("two plain notes")
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::StoreConflict, "{e}");
    assert_eq!(
        notes_titled(&held, "p-c").await,
        0,
        "the first insert was undone"
    );
    // Statements that cannot run inside a transaction still run as they are.
    held.execute(sqlx::query("PRAGMA user_version = 7; PRAGMA user_version"))
        .await
        .unwrap();
    held.execute(plain("p-d", "p-e")).await.unwrap();
    assert_eq!(notes_titled(&held, "p-").await, 4);
    // A script that only reads takes no write lock: it answers while a pool transaction
    // holds one.
    let tx = t.db.begin_write().await.unwrap();
    let reads = held.fetch_all(sqlx::query("SELECT COUNT(*) FROM note; SELECT 1"));
    let rows = tokio::time::timeout(std::time::Duration::from_secs(5), reads)
        .await
        .expect("a read-only script waited for the write lock")
        .unwrap();
    assert_eq!(rows.len(), 2);
    tx.commit().await.unwrap();
}

/// On SQLite (`None` elsewhere): a fresh database with the notes table, and a single
/// writer on it.
async fn notes_and_single_writer() -> Option<(TestDatabase, Database)> {
    let t = fresh().await;
    if t.db.backend() != Backend::Sqlite {
        return None;
    }
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    let writer = t.db.single_writer().await.unwrap();
    Some((t, writer))
}

/// `count` tasks on this thread, each inserting the note `PREFIX-i` through `writer`.
fn spawn_notes(
    writer: &Database,
    prefix: &str,
    count: usize,
    body: Vec<u8>,
) -> Vec<tokio::task::JoinHandle<Result<sqlx::any::AnyQueryResult, sqlx::Error>>> {
    (0..count)
        .map(|i| {
            let (writer, body) = (writer.clone(), body.clone());
            let title = format!("{prefix}-{i}");
            tokio::spawn(async move {
                writer
                    .execute(
                        sqlx::query(
                            "INSERT INTO note (title, body, pinned, at) VALUES ($1, $2, 0, 1)",
                        )
                        .bind(title)
                        .bind(body),
                    )
                    .await
            })
        })
        .collect()
}

/// Scripts that wait for a single writer at the same time run as one transaction, each in
/// a savepoint: each gets its own answer (its rows, its own failure), a failing one undoes
/// only its statements, and a script reads what it wrote.
#[tokio::test]
async fn scripts_waiting_for_a_single_writer_commit_together_and_fail_alone() {
    let Some((t, writer)) = notes_and_single_writer().await else {
        return;
    };
    writer
        .execute(sqlx::query(
            "INSERT INTO note (title, body, pinned, at) VALUES ('n-3', x'00', 0, 0)",
        ))
        .await
        .unwrap();
    // Spawned on this one thread, all are ready when the first takes the connection.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let script = if i % 2 == 0 {
                    // A script with its own BEGIN and COMMIT, which the group stands for.
                    "BEGIN IMMEDIATE; INSERT INTO note (title, body, pinned, at) VALUES ($1, x'01', 0, $2); \
                     SELECT COUNT(*) FROM note WHERE title = $1; COMMIT"
                } else {
                    "INSERT INTO note (title, body, pinned, at) VALUES ($1, x'01', 0, $2); \
                     SELECT COUNT(*) FROM note WHERE title = $1"
                };
                writer
                    .fetch_all(sqlx::query(script).bind(format!("n-{i}")).bind(i))
                    .await
            })
        })
        .collect();
    let mut failed = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(rows) => {
                let seen: i64 = rows[0].get(0);
                assert_eq!(seen, 1, "script {i} reads its own row");
            }
            Err(e) => {
                assert!(
                    matches!(&e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation),
                    "{e}"
                );
                failed.push(i);
            }
        }
    }
    assert_eq!(failed, vec![3], "only the clashing script failed");
    assert_eq!(notes_titled(&t.db, "n-").await, 10, "the others all landed");
    let (groups, scripts) = writer.grouped_scripts();
    assert!(
        groups >= 1 && scripts >= 10,
        "{groups} groups of {scripts} scripts"
    );
    // Each answer came after the commit: another connection sees every row.
    let fresh_reader = Database::connect(t.url()).await.unwrap();
    assert_eq!(notes_titled(&fresh_reader, "n-").await, 10);
}

/// A task dropped while its script waits for a single writer (its request cancelled)
/// strands no one: the scripts of the tasks still waiting are all answered, though the
/// task that held the connection was dropped, and the dropped tasks' scripts do not run.
#[tokio::test]
async fn a_dropped_task_strands_no_script_of_a_single_writer() {
    let Some((t, writer)) = notes_and_single_writer().await else {
        return;
    };
    let tasks = spawn_notes(&writer, "d", 10, vec![1]);
    // On this one thread the first task now holds the connection, gathering the others.
    tokio::task::yield_now().await;
    for (i, task) in tasks.iter().enumerate() {
        if i == 0 || i >= 5 {
            task.abort();
        }
    }
    for task in tasks.into_iter().take(5).skip(1) {
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("a script was stranded")
            .unwrap()
            .unwrap();
    }
    for i in 0..10 {
        // A cancelled caller's script is not run, as before grouping.
        let landed = i64::from((1..5).contains(&i));
        assert_eq!(
            notes_titled(&t.db, &format!("d-{i}")).await,
            landed,
            "d-{i}"
        );
    }
}

/// When the disk fills in the middle of a group, every script of it is answered (none
/// waits for ever, none runs again and again), and exactly those answered Ok landed.
#[tokio::test]
async fn a_full_disk_in_a_group_answers_every_script_truly() {
    let Some((t, writer)) = notes_and_single_writer().await else {
        return;
    };
    let pages: i64 = writer
        .fetch_one(sqlx::query("PRAGMA page_count"))
        .await
        .unwrap()
        .get(0);
    // Room for a few of the notes below, not for all: the disk "fills" midway.
    writer
        .execute(sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {}",
            pages + 12
        ))))
        .await
        .unwrap();
    let tasks = spawn_notes(&writer, "f", 12, vec![7u8; 6000]);
    let mut answered_ok = Vec::new();
    let mut full = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("a script was never answered")
            .unwrap()
        {
            Ok(_) => answered_ok.push(i),
            Err(e) => {
                assert!(e.to_string().contains("full"), "{e}");
                full += 1;
            }
        }
    }
    assert!(full > 0, "the disk never filled");
    for i in 0..12 {
        let landed = notes_titled(&t.db, &format!("f-{i}")).await;
        assert_eq!(landed, i64::from(answered_ok.contains(&i)), "f-{i}");
    }
}

/// Statements executed together land together or not at all, on the pool and on a
/// single writer's held connection (which on PostgreSQL is the pool again).
#[tokio::test]
async fn statements_executed_together_land_together() {
    let t = fresh().await;
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    let writer = t.db.single_writer().await.unwrap();
    let note = |title: String| {
        sqlx::query("INSERT INTO note (title, body, pinned, at) VALUES ($1, $2, 0, 1)")
            .bind(title)
            .bind(vec![1u8])
    };
    for (name, db) in [("pool", &t.db), ("writer", &writer)] {
        let two = vec![note(format!("{name}-a")), note(format!("{name}-b"))];
        assert_eq!(db.execute_together(two, "two notes").await.unwrap(), 2);
        let clash = vec![note(format!("{name}-c")), note(format!("{name}-a"))];
        let e = db.execute_together(clash, "two notes").await.err().unwrap();
        assert_eq!(e.code, ErrorCode::StoreConflict, "{e}");
        assert!(e.message.contains("two notes"), "{e}");
        assert_eq!(notes_titled(db, &format!("{name}-c")).await, 0);
        assert_eq!(notes_titled(db, name).await, 2);
    }
}

/// Scripts of plain statements on two handles with held connections to one file (as the
/// sign-in role reads on one and writes on the other) all land: a script that finds the
/// file locked runs again whole, never stopping after a statement that committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_scripts_on_two_handles_to_one_file_all_land() {
    let t = fresh().await;
    if t.db.backend() != Backend::Sqlite {
        return;
    }
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    let options = || xalo_store::PoolOptions::default();
    let handles = [
        Database::connect_held(t.url(), 2, options()).await.unwrap(),
        Database::connect_held(t.url(), 1, options()).await.unwrap(),
    ];
    let mut tasks = Vec::new();
    for w in 0..8 {
        let db = handles[w % 2].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                db.execute(
                    sqlx::query(TWO_PLAIN_NOTES)
                        .bind(format!("h{w}-{i}-a"))
                        .bind(format!("h{w}-{i}-b")),
                )
                .await
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(notes_titled(&t.db, "h").await, 8 * 100 * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_writer_queues_scripts_and_transactions_in_turn() {
    let t = fresh().await;
    if t.db.backend() != Backend::Sqlite {
        return;
    }
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    let options = xalo_store::PoolOptions {
        max_connections: 1,
        // Waits on SQLite's lock would show as failures, not as slowness.
        acquire_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    };
    let held = Database::connect_held(t.url(), 1, options).await.unwrap();
    // Neither connection waits inside SQLite: any overlap of two writes fails the test.
    sqlx::query("PRAGMA busy_timeout = 0")
        .execute(held.pool())
        .await
        .unwrap();
    held.execute(sqlx::query("PRAGMA busy_timeout = 0"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let db = held.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                if w % 2 == 0 {
                    two_notes(&db, format!("s{w}-{i}-a"), format!("s{w}-{i}-b"))
                        .await
                        .unwrap();
                } else {
                    let mut tx = db.begin_write().await.unwrap();
                    sqlx::query(
                        "INSERT INTO note (title, body, pinned, at) VALUES ($1, x'03', 0, 3)",
                    )
                    .bind(format!("t{w}-{i}"))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                    tokio::task::yield_now().await;
                    tx.commit().await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(notes_titled(&held, "s").await, 3 * 50 * 2);
    assert_eq!(notes_titled(&held, "t").await, 3 * 50);
    assert_eq!(held.busy_retries(), 0, "the writes queued in the process");
}

/// Many rows in one statement land in order on either backend, and a writer's own
/// connection sees what the pool wrote.
#[tokio::test]
async fn value_rows_bind_many_rows_in_order() {
    let t = fresh().await;
    t.db.migrate("notes", &[NOTES_V1]).await.unwrap();
    assert_eq!(Backend::Sqlite.value_rows(2, 2), "(?, ?), (?, ?)");
    assert_eq!(Backend::Postgres.value_rows(2, 2), "($1, $2), ($3, $4)");
    let rows = 300;
    let sql = format!(
        "INSERT INTO note (title, body, pinned, at) VALUES {}",
        t.db.backend().value_rows(rows, 4)
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for i in 0..rows as i64 {
        q = q
            .bind(format!("note {i}"))
            .bind(vec![i as u8])
            .bind(i % 2)
            .bind(i * 1000);
    }
    t.db.execute(q).await.unwrap();
    let all = sqlx::query("SELECT title, body, pinned, at FROM note ORDER BY at")
        .fetch_all(t.db.pool())
        .await
        .unwrap();
    assert_eq!(all.len(), rows);
    for (i, row) in all.iter().enumerate() {
        let i = i as i64;
        assert_eq!(row.get::<String, _>(0), format!("note {i}"));
        assert_eq!(row.get::<Vec<u8>, _>(1), vec![i as u8]);
        assert_eq!(row.get::<i64, _>(2), i % 2);
        assert_eq!(row.get::<i64, _>(3), i * 1000);
    }
    let writer = t.db.single_writer().await.unwrap();
    let n: i64 = writer
        .fetch_one(sqlx::query("SELECT COUNT(*) FROM note"))
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, rows as i64);
}

/// Under steady writing through a single writer, checkpoints keep up and SQLite starts the
/// write-ahead log over: it stays the size of the writes between two checkpoints instead of
/// growing by every commit for as long as the load lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_writer_under_steady_load_keeps_its_log_small() {
    let Some((t, writer)) = notes_and_single_writer().await else {
        return;
    };
    let (writers, each, body) = (12, 1000, vec![7u8; 2048]);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (writer, body) = (writer.clone(), body.clone());
            tokio::spawn(async move {
                for i in 0..each {
                    writer
                        .execute(
                            sqlx::query(
                                "INSERT INTO note (title, body, pinned, at) VALUES ($1, $2, 0, 1)",
                            )
                            .bind(format!("steady-{w}-{i}"))
                            .bind(body.clone()),
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM note")
        .fetch_one(t.db.pool())
        .await
        .unwrap();
    assert_eq!(count, (writers * each) as i64);
    let written = writers * each * body.len();
    let file = t.url().trim_start_matches("sqlite://").to_owned();
    let log = std::fs::metadata(format!("{file}-wal")).unwrap().len() as usize;
    // Without the log started over it would hold every write (more than `written`);
    // with it, the writes between two checkpoints, which a busy machine (a build beside
    // the tests) lets grow to a quarter of them, so the bound has room.
    assert!(
        log < written / 2,
        "the log holds {log} bytes after {written} bytes of rows were written: it was not started over"
    );
}
