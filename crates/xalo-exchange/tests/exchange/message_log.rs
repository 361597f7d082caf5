//! The message log as evidence: a sealed ASiC-E container of one exchange that the
//! trust service's verifier accepts (and refuses once changed), bodies sealed at rest with
//! the member's key, hash-linked archives, and the records kept per person for the data
//! tracker.

use std::time::Duration;

use reqwest::Method;
use sha2::Digest;
use xalo_core::ErrorCode;
use xalo_exchange::archive;
use xalo_store::Row;
use xalo_trust::chain::TrustAnchors;
use xalo_trust::container::{self, Container};

use super::support::{CLIENT, Env, SERVICE, env};

const PERSON: &str = "VN001203012345";

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restart the client's gateway on its database and addresses with changed settings.
async fn restart_client_gateway(env: &mut Env, key: (&str, serde_json::Value)) {
    super::support::restart_gateway(env, 0, |config| {
        config
            .roles
            .get_mut("gateway")
            .unwrap()
            .settings
            .insert(key.0.into(), key.1);
    })
    .await;
}

async fn call(env: &Env, id: &str) -> String {
    let r = env
        .call(Method::GET, &format!("{SERVICE}/persons/{PERSON}"))
        .header("X-Road-UserId", PERSON)
        .header("X-Road-Issue", "HS-2026-0042")
        .header("X-Road-Id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// A connection of the test's own to the database of the gateway `part`.
async fn log_db(env: &Env, part: &str) -> xalo_store::Database {
    xalo_store::Database::connect(env.database(part).url())
        .await
        .unwrap()
}

/// Wait until the gateway whose database is `part` has logged `id`; its database.
async fn logged(env: &Env, part: &str, id: &str) -> xalo_store::Database {
    let db = log_db(env, part).await;
    let id = id.to_owned();
    let found = db.clone();
    eventually("the message is logged", move || {
        let db = found.clone();
        let id = id.clone();
        async move {
            let records = xalo_exchange::evidence_export::records(&db, &id)
                .await
                .unwrap();
            (!records.is_empty()).then_some(())
        }
    })
    .await;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evidence_is_a_sealed_container_of_the_logged_exchange_with_bodies_sealed_at_rest() {
    let mut env = env().await;
    let key_file = tempfile::tempdir().unwrap();
    let key_path = key_file.path().join("message-log.key");
    restart_client_gateway(
        &mut env,
        (
            "message_log_encryption_key_file",
            key_path.display().to_string().into(),
        ),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&key_path).unwrap().trim().len(),
        64,
        "a key is made on first start"
    );
    let answer = call(&env, "evidence-1").await;
    assert!(answer.contains("Nguyễn Văn An"));
    let db = logged(&env, "gateway-000007", "evidence-1").await;

    // At rest the answer's body is sealed, not the plaintext.
    let row = xalo_store::sqlx::query(
        "SELECT response_body FROM gateway_message_log WHERE x_road_id = $1",
    )
    .bind("evidence-1")
    .fetch_one(db.pool())
    .await
    .unwrap();
    let stored: Vec<u8> = row.try_get(0).unwrap();
    assert!(xalo_exchange::log_encryption::is_sealed(&stored));
    assert!(!stored.windows(6).any(|w| w == &PERSON.as_bytes()[..6]));
    assert!(
        !String::from_utf8_lossy(&stored).contains("Nguyễn"),
        "the stored body is not the plaintext"
    );

    // Time-stamp the log as the gateway's timer would, with the configuration's TSA.
    let tsa = super::support::tsa_url(env.client_gateway()).await;
    let (log, _task) = xalo_exchange::message_log::MessageLog::start(db.clone(), 30);
    let run = log.timestamp_all(&env.http, &tsa).await.unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);

    let admin = &env.client_gateway().admin;
    let bytes = admin.evidence("evidence-1").await.unwrap();
    let anchors = TrustAnchors::from_bytes(env.nation.root_pem.as_bytes()).unwrap();
    let report = container::verify(&bytes, &anchors);
    assert!(report.is_valid(), "{report}");

    let c = Container::read(&bytes).unwrap();
    let file = |name: &str| {
        c.data_files
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .bytes
            .clone()
    };
    let summary: xalo_exchange::evidence_export::EvidenceSummary =
        serde_json::from_slice(&file("summary.json")).unwrap();
    assert_eq!(summary.x_road_id, "evidence-1");
    assert_eq!(summary.records.len(), 1);
    let record = &summary.records[0];
    assert_eq!(
        (record.side.as_str(), record.client.as_str()),
        ("client", CLIENT)
    );
    assert_eq!(record.service, SERVICE);
    assert_eq!(record.body_logging, "full");
    let dir = format!("client-{}", record.log_id);
    // The export opens the sealed body: what the backend answered.
    assert_eq!(file(&format!("{dir}/response-body.bin")), answer.as_bytes());
    let head = String::from_utf8(file(&format!("{dir}/request-head.txt"))).unwrap();
    assert!(head.contains(&format!("x-road-userid:{PERSON}")), "{head}");
    assert!(!file(&format!("{dir}/request-signature.txt")).is_empty());
    // The batch time-stamp covers exactly the included lines, which name this message.
    let stamp = record.timestamp.as_ref().unwrap();
    let lines = file(stamp.batch_file.as_ref().unwrap());
    let digest = sha2::Sha256::digest(&lines);
    assert_eq!(hex::encode(digest), stamp.digest);
    xalo_trust::timestamp::verify_token(&file(&stamp.token_file), &digest, &anchors).unwrap();
    assert!(
        String::from_utf8_lossy(&lines).contains(&record.request_hash),
        "the stamped lines hold the request's hash"
    );

    // A changed file is refused.
    let mut changed = c.clone();
    let body = changed
        .data_files
        .iter_mut()
        .find(|f| f.name.ends_with("response-body.bin"))
        .unwrap();
    body.bytes[0] ^= 1;
    let report = container::verify(&changed.write().unwrap(), &anchors);
    assert!(!report.is_valid(), "a changed body must not verify");

    // The provider's gateway, without a key, keeps its side and exports it too.
    logged(&env, "gateway-000001", "evidence-1").await;
    let provider = env
        .provider_gateway()
        .admin
        .evidence("evidence-1")
        .await
        .unwrap();
    let report = container::verify(&provider, &anchors);
    assert!(report.is_valid(), "{report}");
    let summary: xalo_exchange::evidence_export::EvidenceSummary =
        serde_json::from_slice(&Container::read(&provider).unwrap().data_files[0].bytes).unwrap();
    assert_eq!(summary.records[0].side, "provider");

    let e = admin.evidence("no-such-message").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ExchUnknownMessage);

    // The data tracker's feed: the exchanges made on the person's behalf, with purpose.
    let seen = admin.user_records(PERSON).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert_eq!(
        (
            s.x_road_id.as_str(),
            s.client.as_str(),
            s.service.as_str(),
            s.method.as_str()
        ),
        ("evidence-1", CLIENT, SERVICE, "GET")
    );
    assert_eq!(s.purpose.as_deref(), Some("HS-2026-0042"));
    assert!(
        s.path.ends_with(&format!("/persons/{PERSON}")),
        "{}",
        s.path
    );
    assert!(
        admin
            .user_records("VN009999999999")
            .await
            .unwrap()
            .is_empty()
    );
    call(&env, "evidence-2").await;
    logged(&env, "gateway-000007", "evidence-2").await;
    let seen = admin.user_records(PERSON).await.unwrap();
    let ids: Vec<&str> = seen.iter().map(|s| s.x_road_id.as_str()).collect();
    assert_eq!(ids, ["evidence-2", "evidence-1"], "newest first");
    env.nation.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archives_are_hash_linked_files_and_a_changed_or_removed_file_is_found() {
    let env = env().await;
    for i in 0..5 {
        call(&env, &format!("archive-{i}")).await;
    }
    logged(&env, "gateway-000007", "archive-4").await;
    let admin = &env.client_gateway().admin;
    let dir = tempfile::tempdir().unwrap();
    let state = archive::export_to_dir(admin, dir.path(), 2).await.unwrap();
    assert_eq!((state.files, state.records), (3, 5));
    assert_eq!(
        archive::verify_dir(dir.path(), Some(&state.last_hash)).unwrap(),
        state
    );

    // A later export continues the chain.
    call(&env, "archive-5").await;
    logged(&env, "gateway-000007", "archive-5").await;
    let state = archive::export_to_dir(admin, dir.path(), 2).await.unwrap();
    assert_eq!((state.files, state.records), (4, 6));
    let last = state.last_hash.clone();
    archive::verify_dir(dir.path(), Some(&last)).unwrap();

    let path = |n| dir.path().join(archive::file_name(n));
    let broken = |expected: Option<&str>| {
        archive::verify_dir(dir.path(), expected).unwrap_err().code == ErrorCode::ExchArchiveChain
    };
    // A changed file breaks the link to the next one.
    let original = std::fs::read(path(2)).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    std::fs::write(path(2), text.replacen("archive-", "archivX-", 1)).unwrap();
    assert!(broken(None));
    std::fs::write(path(2), &original).unwrap();
    // A removed file leaves a gap.
    std::fs::remove_file(path(2)).unwrap();
    assert!(broken(None));
    std::fs::write(path(2), &original).unwrap();
    archive::verify_dir(dir.path(), Some(&last)).unwrap();
    // The end is pinned by the reported hash: a changed or removed last file.
    let last_file = std::fs::read(path(4)).unwrap();
    std::fs::write(
        path(4),
        String::from_utf8(last_file.clone())
            .unwrap()
            .replacen("archive-5", "archive-6", 1),
    )
    .unwrap();
    assert!(broken(Some(&last)));
    std::fs::remove_file(path(4)).unwrap();
    assert!(broken(Some(&last)));
    std::fs::write(path(4), &last_file).unwrap();
    archive::verify_dir(dir.path(), Some(&last)).unwrap();
    env.nation.shutdown().await.unwrap();
}

/// How many messages with `id` the log of `db` holds.
async fn count_logged(db: &xalo_store::Database, id: &str) -> i64 {
    xalo_store::sqlx::query("SELECT COUNT(*) FROM gateway_message_log WHERE x_road_id = $1")
        .bind(id.to_owned())
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get::<i64, _>(0)
}

/// Make the log of `db` refuse every new message (as a full disk would), or stop.
async fn refuse_log_writes(db: &xalo_store::Database, refuse: bool) {
    let sql = match (db.backend(), refuse) {
        (xalo_store::Backend::Sqlite, true) => {
            "CREATE TRIGGER refuse_log BEFORE INSERT ON gateway_message_log \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        }
        (xalo_store::Backend::Sqlite, false) => "DROP TRIGGER refuse_log",
        (xalo_store::Backend::Postgres, true) => {
            "ALTER TABLE gateway_message_log ADD CONSTRAINT refuse_log CHECK (status < 0) NOT VALID"
        }
        (xalo_store::Backend::Postgres, false) => {
            "ALTER TABLE gateway_message_log DROP CONSTRAINT refuse_log"
        }
    };
    xalo_store::sqlx::query(sql)
        .execute(db.pool())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_arrives_only_once_both_logs_hold_it_and_an_unloggable_message_is_refused() {
    let env = env().await;
    // Connections of the test's own: what they see is committed, so it outlives the
    // gateway's process, however that ends.
    let client_log = log_db(&env, "gateway-000007").await;
    let provider_log = log_db(&env, "gateway-000001").await;
    // Concurrent calls share the logs' transactions; each is there when it is answered.
    let calls = (0..16).map(|i| {
        let env = &env;
        let (client_log, provider_log) = (&client_log, &provider_log);
        async move {
            let id = format!("answered-{i}");
            call(env, &id).await;
            assert_eq!(
                count_logged(client_log, &id).await,
                1,
                "client side of {id}"
            );
            assert_eq!(
                count_logged(provider_log, &id).await,
                1,
                "provider side of {id}"
            );
        }
    });
    futures_util::future::join_all(calls).await;

    // The provider cannot log: it does not answer, and says why. Then the client's
    // gateway cannot log the answer: it does not pass it on.
    refused_while_unlogged(
        &env,
        &provider_log,
        "unlogged-1",
        "Server.ServerProxy.DatabaseError",
    )
    .await;
    refused_while_unlogged(
        &env,
        &client_log,
        "unlogged-2",
        "Server.ClientProxy.DatabaseError",
    )
    .await;
}

/// With the log of `log` refusing writes, a call with `id` is refused as `kind` and not
/// logged there; once the log takes writes again, the next call is logged.
async fn refused_while_unlogged(env: &Env, log: &xalo_store::Database, id: &str, kind: &str) {
    refuse_log_writes(log, true).await;
    let r = env
        .call(Method::GET, &format!("{SERVICE}/persons/{PERSON}"))
        .header("X-Road-Id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(super::support::error_type(r).await, (500, kind.to_owned()));
    assert_eq!(count_logged(log, id).await, 0);
    refuse_log_writes(log, false).await;
    let again = format!("{id}-again");
    call(env, &again).await;
    assert_eq!(count_logged(log, &again).await, 1);
}

/// A message of the client's side, as a test logs it.
fn logged_message(id: &str) -> xalo_exchange::message_log::LoggedMessage {
    xalo_exchange::message_log::LoggedMessage {
        side: "client",
        x_road_id: id.to_owned(),
        client: CLIENT.to_owned(),
        service: SERVICE.to_owned(),
        request_hash: format!("hash-{id}"),
        request_head: b"GET /r1/x".to_vec(),
        request_signature: "signature".to_owned(),
        status: 200,
        ..Default::default()
    }
}

/// Ledger indexes queued together are named in one statement; each message keeps the
/// first index it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_indexes_are_named_in_batches_and_the_first_one_stays() {
    use xalo_exchange::message_log::{LedgerIndex, MessageLog};
    let env = env().await;
    let db = log_db(&env, "gateway-000007").await;
    let (log, _task) = MessageLog::start(db, 30);
    let index = |id: &str, index: u64| LedgerIndex {
        x_road_id: id.to_owned(),
        side: "client",
        request_hash: format!("hash-{id}"),
        index,
    };
    let ids: Vec<String> = (0..40).map(|i| format!("indexed-{i}")).collect();
    for id in &ids {
        log.append(logged_message(id)).await.unwrap();
    }
    // More indexes than one statement takes; a message's own row only (another side or
    // another hash under the same id is left alone).
    for (i, id) in ids.iter().enumerate() {
        log.note_ledger_index(index(id, 1000 + i as u64));
    }
    log.note_ledger_index(LedgerIndex {
        side: "provider",
        ..index(&ids[0], 5)
    });
    // Appending after them returns once they are written (each commit takes every index
    // waiting, and commits follow one another).
    log.append(logged_message("after")).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            log.find(id).await.unwrap(),
            vec![("client".to_owned(), Some(1000 + i as i64))],
            "{id}"
        );
    }
    assert_eq!(
        log.find("after").await.unwrap(),
        vec![("client".to_owned(), None)]
    );
    // A later index for a message that has one does not replace it; a flush returns once
    // what was queued before it is written.
    log.note_ledger_index(index(&ids[1], 7));
    log.note_ledger_index(index("after", 9));
    log.flush().await.unwrap();
    assert_eq!(
        log.find("after").await.unwrap(),
        vec![("client".to_owned(), Some(9))]
    );
    assert_eq!(
        log.find(&ids[1]).await.unwrap(),
        vec![("client".to_owned(), Some(1001))]
    );
}

/// A caller that goes while its message waits for a commit (its client hung up) leaves
/// the message logged: by the log's own task when nobody else commits, and by whoever
/// commits next when others are waiting too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_caller_goes_before_its_commit_is_logged_anyway() {
    use std::future::Future;
    use xalo_exchange::message_log::MessageLog;
    let env = env().await;
    let db = log_db(&env, "gateway-000007").await;
    let (log, _task) = MessageLog::start(db, 30);
    // Polled once: queued, and gathering others' messages (the log does not know how
    // many are under way, so it lets ready tasks run first); then dropped.
    let poll_once = |f: &mut std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>>| {
        let waker = std::task::Waker::noop();
        f.as_mut().poll(&mut std::task::Context::from_waker(waker))
    };
    let mut alone: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
        Box::pin(log.append(logged_message("alone")));
    assert!(poll_once(&mut alone).is_pending());
    drop(alone);
    eventually("the message of a caller that went is logged", || async {
        (!log.find("alone").await.unwrap().is_empty()).then_some(())
    })
    .await;

    // The same with two others waiting behind it: the next to commit takes all three.
    let mut first: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
        Box::pin(log.append(logged_message("first")));
    assert!(poll_once(&mut first).is_pending());
    let both = tokio::spawn({
        let log = log.clone();
        async move {
            let (a, b) = tokio::join!(
                log.append(logged_message("second")),
                log.append(logged_message("third"))
            );
            a.and(b)
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(first);
    both.await.unwrap().unwrap();
    log.flush().await.unwrap();
    for id in ["alone", "first", "second", "third"] {
        assert_eq!(
            log.find(id).await.unwrap(),
            vec![("client".to_owned(), None)],
            "{id}"
        );
    }
}

/// A caller that goes while its batch is being committed (the database held by another
/// writer) leaves the commit to finish as a task of its own: its message is logged, and
/// so is the next caller's, after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_caller_goes_midway_is_finished() {
    use std::future::Future;
    use xalo_exchange::message_log::MessageLog;
    let env = env().await;
    let db = log_db(&env, "gateway-000007").await;
    // No message counted as under way: the first caller commits at once, without turns.
    let in_flight = xalo_core::batch::InFlight::default();
    let (log, _task) = MessageLog::start_with(db, 30, Some(in_flight));
    let locker = log_db(&env, "gateway-000007").await;
    let mut lock = locker.begin_write().await.unwrap();
    if locker.backend() == xalo_store::Backend::Postgres {
        xalo_store::sqlx::query("LOCK TABLE gateway_message_log IN EXCLUSIVE MODE")
            .execute(&mut *lock)
            .await
            .unwrap();
    }
    let mut first: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
        Box::pin(log.append(logged_message("midway")));
    let waker = std::task::Waker::noop();
    let polled = first
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker));
    assert!(polled.is_pending(), "committed past another writer's lock");
    drop(first);
    let next = tokio::spawn({
        let log = log.clone();
        async move { log.append(logged_message("next")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    lock.rollback().await.unwrap();
    next.await.unwrap().unwrap();
    for id in ["midway", "next"] {
        assert_eq!(
            log.find(id).await.unwrap(),
            vec![("client".to_owned(), None)],
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_stamping_catches_up_with_more_messages_than_one_batch_holds() {
    let env = env().await;
    for i in 0..5 {
        call(&env, &format!("backlog-{i}")).await;
    }
    let db = logged(&env, "gateway-000007", "backlog-4").await;
    let tsa = super::support::tsa_url(env.client_gateway()).await;
    let (log, _task) = xalo_exchange::message_log::MessageLog::start(db.clone(), 30);
    assert!(log.oldest_unstamped_unix().await.unwrap().is_some());
    // Batches of two: one run time-stamps all five messages, in three tokens.
    let run = log.timestamp_all_up_to(&env.http, &tsa, 2).await.unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!((run.tokens, run.more), (3, false));
    let stamps = log.timestamps().await.unwrap();
    assert_eq!(stamps.len(), 3);
    let ids: Vec<i64> = xalo_store::sqlx::query("SELECT id FROM gateway_message_log ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0).unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    // Contiguous, and every message covered once.
    assert_eq!(stamps[0].first_id, ids[0]);
    assert_eq!(stamps[2].last_id, ids[4]);
    for pair in stamps.windows(2) {
        assert_eq!(pair[1].first_id, pair[0].last_id + 1);
    }
    assert_eq!(log.oldest_unstamped_unix().await.unwrap(), None);
    let again = log.timestamp_all_up_to(&env.http, &tsa, 2).await.unwrap();
    assert_eq!((again.tokens, again.more), (0, false));
}
