//! The log on a real database (SQLite, or PostgreSQL under XALO_TEST_DATABASE=postgres) and
//! the `ledger` and `witness` roles over real sockets.

use std::time::Duration;

use xalo_core::{Config, ErrorCode};
use xalo_ledger::client::{LedgerClient, Recorder, checkpoint_of_note};
use xalo_ledger::cosignature::{CosignatureSigner, CosignatureVerifier};
use xalo_ledger::log::Log;
use xalo_ledger::note::Ed25519Signer;
use xalo_ledger::tile::{EntryBundle, TileId};
use xalo_ledger::witness::Witness;
use xalo_ledger::{Entry, Hash, WitnessPolicy, merkle, proof};
use xalo_store::testing::TestDatabase;

const ORIGIN: &str = "test.xalo.vn/ledger";

fn entry(i: u64) -> Entry {
    Entry::new(
        "test.entry".parse().unwrap(),
        format!("evidence {i}").into_bytes(),
    )
    .unwrap()
}

async fn log_on(t: &TestDatabase, signer: &Ed25519Signer) -> Log {
    let s = Ed25519Signer::from_signer_key(&signer.signer_key()).unwrap();
    Log::open(t.db.clone(), ORIGIN, s).await.unwrap()
}

#[tokio::test]
async fn entries_become_tiles_checkpoints_and_proofs() {
    let t = TestDatabase::new().await.unwrap();
    let signer = Ed25519Signer::generate(ORIGIN).unwrap();
    let log = log_on(&t, &signer).await;
    let all: Vec<Entry> = (0..700).map(entry).collect();
    let r = log.append(all[..300].to_vec()).await.unwrap();
    assert_eq!(r, 0..300);
    let first = log.checkpoint().await.unwrap().unwrap();
    assert_eq!(first.checkpoint.size, 300);
    let r = log.append(all[300..].to_vec()).await.unwrap();
    assert_eq!(r, 300..700);
    let second = log.checkpoint().await.unwrap().unwrap();
    assert_eq!(second.checkpoint.size, 700);

    // The root is the RFC 9162 root of the encoded entries.
    let leaves: Vec<Hash> = all.iter().map(Entry::leaf_hash).collect();
    assert_eq!(
        second.checkpoint.root,
        merkle::root_from_leaf_hashes(&leaves)
    );
    assert_eq!(
        first.checkpoint.root,
        merkle::root_from_leaf_hashes(&leaves[..300])
    );

    // The note verifies with the log's public key.
    let mut v = xalo_ledger::VerifierSet::new();
    v.add_verifier_key(&log.verifier_key()).unwrap();
    xalo_ledger::note::open(second.note.as_bytes(), &v).unwrap();

    for (index, size) in [(0, 300), (299, 300), (299, 700), (512, 700), (699, 700)] {
        let p = log.inclusion_proof(index, size).await.unwrap();
        let root = if size == 300 {
            first.checkpoint.root
        } else {
            second.checkpoint.root
        };
        proof::verify_inclusion(index, size, &leaves[index as usize], &p, &root).unwrap();
    }
    let c = log.consistency_proof(300, 700).await.unwrap();
    proof::verify_consistency(
        300,
        700,
        &first.checkpoint.root,
        &second.checkpoint.root,
        &c,
    )
    .unwrap();
    assert_eq!(log.index_of(&leaves[42]).await.unwrap(), Some(42));

    // Tiles: a full level-0 tile, the partial one, and entry bundles that match the entries.
    let full = log.hash_tile(TileId::full(0, 0)).await.unwrap().unwrap();
    assert_eq!(full.len(), 256 * 32);
    assert_eq!(&full[32..64], leaves[1].as_bytes());
    let partial = log
        .hash_tile(TileId::new(0, 2, 700 - 512).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(partial.len(), (700 - 512) * 32);
    // An older, narrower view of the same tile is its prefix.
    let older = log
        .hash_tile(TileId::new(0, 1, 44).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(older, full_tile_prefix(&log, 1, 44).await);
    assert!(log.hash_tile(TileId::full(0, 2)).await.unwrap().is_none());
    let bundle = log
        .entry_bundle(TileId::new(0, 2, 188).unwrap())
        .await
        .unwrap()
        .unwrap();
    let bundle = EntryBundle::from_bytes(&bundle).unwrap();
    assert_eq!(bundle.entries()[0], all[512].encode());
    assert_eq!(bundle.leaf_hashes(), leaves[512..].to_vec());
}

async fn full_tile_prefix(log: &Log, index: u64, width: usize) -> Vec<u8> {
    let t = log
        .hash_tile(TileId::full(0, index))
        .await
        .unwrap()
        .unwrap();
    t[..width * 32].to_vec()
}

#[tokio::test]
async fn the_log_refuses_to_sign_a_tree_inconsistent_with_its_last_checkpoint() {
    let t = TestDatabase::new().await.unwrap();
    let signer = Ed25519Signer::generate(ORIGIN).unwrap();
    let log = log_on(&t, &signer).await;
    log.append((0..40).map(entry).collect()).await.unwrap();
    log.checkpoint().await.unwrap();
    // Someone rewrites history in the database: leaf 3's hash in the tile changes.
    let tile = log
        .hash_tile(TileId::new(0, 0, 40).unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut forged = tile.clone();
    forged[3 * 32] ^= 1;
    sqlx::query("UPDATE ledger_tile SET data = $1 WHERE level = 0 AND idx = 0")
        .bind(forged)
        .execute(t.db.pool())
        .await
        .unwrap();
    log.append((40..50).map(entry).collect()).await.unwrap();
    let e = log.checkpoint().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::LedgerInconsistent, "{e}");
    // Also after a restart: the check reads only what is stored.
    let again = log_on(&t, &signer).await;
    let e = again.checkpoint().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::LedgerInconsistent);
    assert_eq!(
        again
            .latest_checkpoint()
            .await
            .unwrap()
            .unwrap()
            .checkpoint
            .size,
        40
    );
}

#[tokio::test]
async fn a_log_key_must_be_named_after_the_origin() {
    let t = TestDatabase::new().await.unwrap();
    let e = Log::open(
        t.db.clone(),
        ORIGIN,
        Ed25519Signer::generate("other").unwrap(),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.code, ErrorCode::ConfigInvalid);
}

async fn spawn_witness(
    t: &TestDatabase,
    log_key: &str,
) -> (xalo_core::server::ServerHandle, String) {
    let signer = CosignatureSigner::generate("test.xalo.vn/witness").unwrap();
    let key = signer.verifier().verifier_key();
    let w = Witness::open(t.db.clone(), signer, &[log_key.to_owned()])
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config::default();
    (
        xalo_ledger::witness::serve_witness(w, &config, listener).unwrap(),
        key,
    )
}

/// The `ledger` role on `db`, checkpointing every 50 ms.
fn ledger_config(dir: &std::path::Path, db: &TestDatabase) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    let role = config.roles.entry("ledger".into()).or_default();
    role.database_url = Some(db.url().to_owned());
    role.settings
        .insert("checkpoint_interval_ms".into(), 50.into());
    config
}

#[tokio::test]
async fn ledger_and_witness_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_db = TestDatabase::new().await.unwrap();
    let witness_db = TestDatabase::new().await.unwrap();

    // Start the ledger once to learn its key, as an operator would before configuring a witness.
    let mut config = ledger_config(dir.path(), &ledger_db);
    let log_key = xalo_ledger::service::open_log(&config)
        .await
        .unwrap()
        .verifier_key();
    let (witness, witness_key) = spawn_witness(&witness_db, &log_key).await;

    let settings = config.roles.entry("ledger".into()).or_default();
    settings.settings.insert(
        "witnesses".into(),
        serde_json::json!([{ "url": witness.url(), "key": witness_key }]),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ledger = xalo_ledger::service::serve(config.clone(), listener)
        .await
        .unwrap();
    let client = LedgerClient::new(&ledger.url()).unwrap();

    // Many tasks record through one batching recorder.
    let recorder = Recorder::start(client.clone(), 256, Duration::from_millis(5));
    let mut tasks = Vec::new();
    for i in 0..500u64 {
        let r = recorder.clone();
        tasks.push(tokio::spawn(async move {
            (i, r.record(entry(i)).await.unwrap())
        }));
    }
    let mut indexes = Vec::new();
    for t in tasks {
        indexes.push(t.await.unwrap());
    }
    let mut seen: Vec<u64> = indexes.iter().map(|(_, idx)| *idx).collect();
    seen.sort();
    assert_eq!(seen, (0..500).collect::<Vec<_>>());

    // Wait (bounded) for a checkpoint of all 500 with the witness's cosignature.
    let log_verifier = xalo_ledger::Ed25519Verifier::from_verifier_key(&log_key).unwrap();
    let policy = WitnessPolicy::new(
        origin_of(&log_key),
        log_verifier,
        vec![CosignatureVerifier::from_verifier_key(&witness_key).unwrap()],
        1,
    )
    .unwrap();
    let mut cosigned = None;
    for _ in 0..200 {
        if let Ok(c) = client.verified_checkpoint(&policy).await
            && c.checkpoint.size == 500
        {
            cosigned = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cosigned = cosigned.expect("a cosigned checkpoint of 500 entries");
    assert_eq!(cosigned.cosigners.len(), 1);

    // Every recorded entry is provably in the log.
    for (i, idx) in indexes.iter().take(20) {
        assert_eq!(
            client
                .prove_included(&entry(*i), &cosigned.checkpoint)
                .await
                .unwrap(),
            *idx
        );
    }
    // Tiles over HTTP rebuild the same root.
    let tile = client.get_tile("tile/0/000").await.unwrap();
    assert_eq!(tile.len(), 256 * 32);
    let bundle = client.get_tile("tile/entries/001.p/244").await.unwrap();
    assert_eq!(EntryBundle::from_bytes(&bundle).unwrap().len(), 244);
    let note = client.checkpoint_note().await.unwrap();
    assert_eq!(checkpoint_of_note(&note).unwrap(), cosigned.checkpoint);

    // Bad input gets coded errors.
    let http = reqwest::Client::new();
    let bad = |body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{}/add", ledger.url());
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let b: serde_json::Value = r.json().await.unwrap();
            (status, b["code"].as_str().unwrap().to_owned())
        }
    };
    assert_eq!(
        bad(serde_json::json!({"entries": [{"kind": "NoDots", "data": ""}]})).await,
        (400, "XALO-HTTP-003".into())
    );
    assert_eq!(
        bad(serde_json::json!({"entries": [{"kind": "a.b", "data": "%%%"}]})).await,
        (400, "XALO-HTTP-003".into())
    );
    let many: Vec<_> = (0..10_001)
        .map(|_| serde_json::json!({"kind": "a.b", "data": ""}))
        .collect();
    assert_eq!(
        bad(serde_json::json!({ "entries": many })).await,
        (413, "XALO-LEDGER-102".into())
    );
    let big = base64_of(&vec![0u8; 70_000]);
    assert_eq!(
        bad(serde_json::json!({"entries": [{"kind": "a.b", "data": big}]})).await,
        (413, "XALO-LEDGER-007".into())
    );
    let r = http
        .get(format!("{}/tile/0/01", ledger.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{}/tile/0/003", ledger.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!(
            "{}/proof/inclusion?index=600&size=500",
            ledger.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    ledger.shutdown().await.unwrap();
    witness.shutdown().await.unwrap();
}

fn origin_of(vkey: &str) -> String {
    vkey.split('+').next().unwrap().to_owned()
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn the_witness_refuses_forks_and_stale_sizes() {
    let t = TestDatabase::new().await.unwrap();
    let log_signer = Ed25519Signer::generate(ORIGIN).unwrap();
    let log_key = log_signer.verifier().verifier_key();
    let w = Witness::open(
        t.db.clone(),
        CosignatureSigner::generate("w.example").unwrap(),
        std::slice::from_ref(&log_key),
    )
    .await
    .unwrap();
    let tree = |n: u64| (0..n).map(|i| entry(i).leaf_hash()).collect::<Vec<_>>();
    let sign = |n: u64, leaves: &[Hash]| {
        xalo_ledger::Checkpoint::new(ORIGIN, n, merkle::root_from_leaf_hashes(leaves))
            .unwrap()
            .sign(&[&log_signer])
            .unwrap()
    };
    let body = |old: u64, proof: &[Hash], note: &str| {
        let mut b = format!("old {old}\n");
        for h in proof {
            b.push_str(&h.to_base64());
            b.push('\n');
        }
        b.push('\n');
        b.push_str(note);
        b.into_bytes()
    };
    let ten = tree(10);
    let line = w
        .add_checkpoint(&body(0, &[], &sign(10, &ten)))
        .await
        .unwrap();
    assert!(line.starts_with("\u{2014} w.example "));

    // Stale `old`: the witness says what it has.
    match w.add_checkpoint(&body(0, &[], &sign(10, &ten))).await {
        Err(xalo_ledger::witness::WitnessRefusal::Conflict(10)) => {}
        other => panic!("expected a 409 with size 10, got {other:?}"),
    }
    // A fork: a tree of 20 whose first 10 leaves differ cannot prove consistency.
    let mut forked = tree(20);
    forked[3] = entry(999).leaf_hash();
    let mem = xalo_ledger::MemoryTree::from_entries(
        &(0..20)
            .map(|i| if i == 3 { entry(999) } else { entry(i) }.encode())
            .collect::<Vec<_>>(),
    );
    let fork_proof = proof::consistency_proof(&mem, 10, 20).unwrap();
    let refused = w
        .add_checkpoint(&body(10, &fork_proof, &sign(20, &forked)))
        .await
        .unwrap_err();
    assert!(matches!(refused, xalo_ledger::witness::WitnessRefusal::Other(s, _) if s == 422));
    // The honest extension is cosigned.
    let honest = xalo_ledger::MemoryTree::from_entries(
        &(0..20).map(|i| entry(i).encode()).collect::<Vec<_>>(),
    );
    let p = proof::consistency_proof(&honest, 10, 20).unwrap();
    w.add_checkpoint(&body(10, &p, &sign(20, &tree(20))))
        .await
        .unwrap();
    // Unknown logs and bad signatures are refused.
    let stranger = Ed25519Signer::generate("other.log").unwrap();
    let note = xalo_ledger::Checkpoint::new("other.log", 1, tree(1)[0])
        .unwrap()
        .sign(&[&stranger])
        .unwrap();
    let r = w.add_checkpoint(&body(0, &[], &note)).await.unwrap_err();
    assert!(matches!(r, xalo_ledger::witness::WitnessRefusal::Other(s, _) if s == 404));
    let impostor = Ed25519Signer::generate(ORIGIN).unwrap();
    let note = xalo_ledger::Checkpoint::new(ORIGIN, 20, merkle::root_from_leaf_hashes(&tree(20)))
        .unwrap()
        .sign(&[&impostor])
        .unwrap();
    let r = w.add_checkpoint(&body(20, &[], &note)).await.unwrap_err();
    assert!(
        matches!(r, xalo_ledger::witness::WitnessRefusal::Other(s, _) if s == 404 || s == 403),
        "{r:?}"
    );
    let r = w.add_checkpoint(b"garbage").await.unwrap_err();
    assert!(matches!(r, xalo_ledger::witness::WitnessRefusal::Other(s, _) if s == 400));
}

/// Every checkpoint is dated by the trust service's TSA, and openssl alone can check it.
#[tokio::test]
async fn checkpoints_are_time_stamped_and_openssl_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let (trust_db, ledger_db) = (
        TestDatabase::new().await.unwrap(),
        TestDatabase::new().await.unwrap(),
    );
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.roles.entry("trust".into()).or_default().database_url = Some(trust_db.url().to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.roles.entry("trust".into()).or_default().listen = Some(listener.local_addr().unwrap());
    let trust = xalo_trust::serve(config.clone(), listener).await.unwrap();
    let ledger_role = config.roles.entry("ledger".into()).or_default();
    ledger_role.database_url = Some(ledger_db.url().to_owned());
    ledger_role
        .settings
        .insert("checkpoint_interval_ms".into(), 50.into());
    ledger_role
        .settings
        .insert("tsa_url".into(), format!("{}/tsa", trust.url()).into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ledger = xalo_ledger::service::serve(config.clone(), listener)
        .await
        .unwrap();
    let client = LedgerClient::new(&ledger.url()).unwrap();
    client
        .submit(&[entry(1), entry(2), entry(3)])
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let mut token = None;
    for _ in 0..200 {
        let r = http
            .get(format!("{}/checkpoints/3/timestamp", ledger.url()))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            token = Some(r.bytes().await.unwrap().to_vec());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let token = token.expect("the checkpoint of 3 entries was time-stamped");
    let text = http
        .get(format!("{}/checkpoints/3", ledger.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("127.0.0.1/ledger\n3\n"), "{text}");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("checkpoint"), &text).unwrap();
    std::fs::write(work.path().join("token.der"), &token).unwrap();
    let trust_dir = dir.path().join("trust");
    let out = std::process::Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(work.path().join("token.der"))
        .arg("-data")
        .arg(work.path().join("checkpoint"))
        .arg("-CAfile")
        .arg(trust_dir.join("root.pem"))
        .arg("-untrusted")
        .arg(trust_dir.join("tsa.pem"))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("Verification: OK"),
        "{said}"
    );
    // A changed checkpoint does not verify.
    std::fs::write(
        work.path().join("checkpoint"),
        text.replace("\n3\n", "\n4\n"),
    )
    .unwrap();
    let out = std::process::Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(work.path().join("token.der"))
        .arg("-data")
        .arg(work.path().join("checkpoint"))
        .arg("-CAfile")
        .arg(trust_dir.join("root.pem"))
        .arg("-untrusted")
        .arg(trust_dir.join("tsa.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    ledger.shutdown().await.unwrap();
    trust.shutdown().await.unwrap();
}

#[tokio::test]
async fn entries_are_found_by_leaf_hash_before_and_after_the_leaf_index_catches_up() {
    let t = TestDatabase::new().await.unwrap();
    let signer = Ed25519Signer::generate(ORIGIN).unwrap();
    let log = log_on(&t, &signer).await;
    let all: Vec<Entry> = (0..700).map(entry).collect();
    log.append(all.clone()).await.unwrap();
    // Found at once, whether or not the indexer has reached them.
    assert_eq!(
        log.index_of(&all[650].leaf_hash()).await.unwrap(),
        Some(650)
    );
    let indexed = log.leaf_index().catch_up(700).await.unwrap();
    assert_eq!(indexed, 700);
    assert_eq!(log.leaf_index().indexed().await.unwrap(), 700);
    for i in [0usize, 255, 256, 699] {
        assert_eq!(
            log.index_of(&all[i].leaf_hash()).await.unwrap(),
            Some(i as u64)
        );
    }
    // A duplicate entry is found at its first index; an unknown hash is not found.
    log.append(vec![all[3].clone()]).await.unwrap();
    log.leaf_index().catch_up(701).await.unwrap();
    assert_eq!(log.index_of(&all[3].leaf_hash()).await.unwrap(), Some(3));
    assert_eq!(log.index_of(&entry(9999).leaf_hash()).await.unwrap(), None);
    // The index is derived: after a restart it continues from where it was.
    let again = log_on(&t, &signer).await;
    again.append(vec![entry(701)]).await.unwrap();
    assert_eq!(again.leaf_index().catch_up(702).await.unwrap(), 702);
    assert_eq!(
        again.index_of(&entry(701).leaf_hash()).await.unwrap(),
        Some(701)
    );
}

#[tokio::test]
async fn a_recorder_sends_full_batches_at_once_and_answers_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_db = TestDatabase::new().await.unwrap();
    let config = ledger_config(dir.path(), &ledger_db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ledger = xalo_ledger::service::serve(config, listener).await.unwrap();
    let client = LedgerClient::new(&ledger.url()).unwrap();

    // A recorder that would linger an hour for a batch to fill: a full batch goes at once,
    // whether it fills while the recorder lingers or was queued before it looked, and each
    // entry's function is told its index.
    let recorder = Recorder::start(client.clone(), 256, Duration::from_secs(3600));
    let (told, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let record = |i: u64| {
        let told = told.clone();
        recorder.record_then(entry(i), move |r| {
            told.send((i, r)).unwrap();
        });
    };
    let mut indexes = Vec::new();
    let mut wait_for = async |n: usize, indexes: &mut Vec<(u64, u64)>| {
        while indexes.len() < n {
            let (i, r) = tokio::time::timeout(Duration::from_secs(20), answers.recv())
                .await
                .expect("a full batch goes without lingering")
                .unwrap();
            indexes.push((i, r.unwrap()));
        }
    };
    record(0);
    // The recorder holds the first entry and lingers; the rest of the batch wakes it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 1..256 {
        record(i);
    }
    wait_for(256, &mut indexes).await;
    for i in 256..512 {
        record(i);
    }
    wait_for(512, &mut indexes).await;
    let mut seen: Vec<u64> = indexes.iter().map(|(_, index)| *index).collect();
    seen.sort();
    assert_eq!(seen, (0..512).collect::<Vec<_>>());
    // Each entry is where its function was told it is.
    let mut checkpoint = None;
    for _ in 0..400 {
        // Until the first is signed there is none (404).
        if let Ok(note) = client.checkpoint_note().await
            && let c = checkpoint_of_note(&note).unwrap()
            && c.size == 512
        {
            checkpoint = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let checkpoint = checkpoint.expect("a checkpoint of the 512 entries");
    for (i, index) in indexes.iter().filter(|(i, _)| i % 97 == 0) {
        assert_eq!(
            client
                .prove_included(&entry(*i), &checkpoint)
                .await
                .unwrap(),
            *index,
            "entry {i}"
        );
    }

    // A ledger that is gone: each entry's function is told why, as are awaiting callers.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let recorder = Recorder::start(
        LedgerClient::new(&gone).unwrap(),
        256,
        Duration::from_millis(5),
    );
    recorder.record_then(entry(1), move |r| {
        told.send((1, r)).unwrap();
    });
    let (_, r) = answers.recv().await.unwrap();
    assert_eq!(r.unwrap_err().code, ErrorCode::LedgerUpstream);
    assert_eq!(
        recorder.record(entry(2)).await.unwrap_err().code,
        ErrorCode::LedgerUpstream
    );
}
