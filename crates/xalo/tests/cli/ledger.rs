//! The ledger as operators and auditors use it: the demo's ledger and witness, `xalo ledger
//! verify` online and offline, and a `kill -9` in the middle of 100,000 appends.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::{Demo, xalo};

fn run(args: &[&str]) -> Output {
    xalo().args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn add(url: &str, entries: &[(String, Vec<u8>)]) -> serde_json::Value {
    let body = json!({
        "entries": entries.iter().map(|(k, d)| json!({"kind": k, "data": STANDARD.encode(d)})).collect::<Vec<_>>()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{url}/add"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

/// Run `verify` until it passes for a checkpoint of at least `size` entries (the ledger
/// signs and gathers cosignatures every second), then return its output.
fn verify_until(args: &[&str], size: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let big_enough = text
            .lines()
            .find(|l| l.starts_with("checkpoint"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= size);
        if out.status.success() && big_enough {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never verified: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ledger_verify_online_offline_and_tampered() {
    let demo = Demo::start();
    let ledger = demo.url("ledger").to_owned();
    let log_key = demo.printed("log key");
    let witness_key = demo.printed("witness key");
    let work = tempfile::tempdir().unwrap();
    let decision = work.path().join("quyet-dinh.txt");
    std::fs::write(&decision, "Quyết định số 1/QĐ-UBND: cấp giấy khai sinh").unwrap();

    let mut entries: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| ("registry.change".into(), format!("change {i}").into_bytes()))
        .collect();
    entries.push(("document.issued".into(), std::fs::read(&decision).unwrap()));
    let added = add(&ledger, &entries);
    assert_eq!(added["count"], 301);
    // The demo's own evidence (e.g. its exchange's subscriptions) may come first.
    let first = added["first"].as_u64().unwrap();
    let decision_leaf = format!("leaf {} is in the tree", first + 300);

    let base = [
        "ledger",
        "verify",
        "--log",
        &ledger,
        "--key",
        &log_key,
        "--witness",
        &witness_key,
        "--quorum",
        "1",
    ];
    let with_file = [
        &base[..],
        &[
            "--file",
            decision.to_str().unwrap(),
            "--kind",
            "document.issued",
        ],
    ]
    .concat();
    let out = verify_until(&with_file, first + 301);
    assert!(
        out.contains(&format!("inclusion     {decision_leaf}")),
        "{out}"
    );
    assert!(out.contains("cosignature"), "{out}");

    // Keep this checkpoint, grow the log, and prove the new one extends it.
    let older = work.path().join("older.note");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let note = rt.block_on(async {
        reqwest::get(format!("{ledger}/checkpoint"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    std::fs::write(&older, &note).unwrap();
    add(
        &ledger,
        &(0..100)
            .map(|i| ("registry.change".into(), format!("later {i}").into_bytes()))
            .collect::<Vec<_>>(),
    );
    let with_older = [&base[..], &["--older", older.to_str().unwrap()]].concat();
    let out = verify_until(&with_older, first + 401);
    assert!(out.contains("is a prefix"), "{out}");

    // Offline: mirror, verify from the directory alone.
    let mirror = work.path().join("mirror");
    ok(&run(&[
        "ledger",
        "mirror",
        "--log",
        &ledger,
        "--out",
        mirror.to_str().unwrap(),
    ]));
    let offline = [
        "ledger",
        "verify",
        "--log",
        mirror.to_str().unwrap(),
        "--key",
        &log_key,
        "--witness",
        &witness_key,
        "--quorum",
        "1",
    ];
    let with_file_offline = [
        &offline[..],
        &[
            "--file",
            decision.to_str().unwrap(),
            "--kind",
            "document.issued",
        ],
    ]
    .concat();
    assert!(ok(&run(&with_file_offline)).contains(&decision_leaf));

    // Every defect is named.
    let not_recorded = work.path().join("other.txt");
    std::fs::write(&not_recorded, "never recorded").unwrap();
    let out = run(&[
        &offline[..],
        &[
            "--file",
            not_recorded.to_str().unwrap(),
            "--kind",
            "document.issued",
        ],
    ]
    .concat());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("XALO-LEDGER-106"),
        "{out:?}"
    );
    let impostor = "other.log+12345678+AeS0E3a4a8zE4qZr2a2ddUJFgVHbMsHqF2x6J6a0JHkM";
    let out = run(&[
        "ledger",
        "verify",
        "--log",
        mirror.to_str().unwrap(),
        "--key",
        impostor,
    ]);
    assert!(!out.status.success());
    let out = run(&[
        &offline[..2],
        &[
            "--log",
            mirror.to_str().unwrap(),
            "--key",
            &log_key,
            "--witness",
            &witness_key,
            "--quorum",
            "1",
        ],
    ]
    .concat());
    assert!(out.status.success());
    let tile = mirror.join("tile/0/000");
    let mut bytes = std::fs::read(&tile).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&tile, bytes).unwrap();
    let out = run(&offline);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("XALO-LEDGER-107") && err.contains("tile/0/000 does not hash"),
        "{err}"
    );
    // A changed entry is caught through its bundle, even with the tiles intact.
    std::fs::write(&tile, std::fs::read(mirror.join("tile/0/000")).unwrap()).unwrap();
    let out = run(&[
        "ledger",
        "mirror",
        "--log",
        &ledger,
        "--out",
        mirror.to_str().unwrap(),
    ]);
    ok(&out);
    let bundle = mirror.join("tile/entries/000");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&bundle, bytes).unwrap();
    let out = run(&offline);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tile/entries/000 does not match"), "{err}");
    demo.stop();
}

/// The first index a batch was given, and its entries' data.
type AckedBatch = (u64, Vec<Vec<u8>>);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_healthy(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let rt = tokio::runtime::Runtime::new().unwrap();
    while Instant::now() < deadline {
        if rt.block_on(async {
            reqwest::get(format!("{url}/healthz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        }) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} never became healthy");
}

fn serve_ledger(config: &Path) -> Child {
    xalo()
        .args(["serve", "ledger", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// 100,000 entries are appended by 8 concurrent clients; the ledger is killed with SIGKILL
/// part-way. After a restart every acknowledged entry is there, at the index it was given,
/// and the tree verifies.
#[test]
fn no_acknowledged_entry_is_lost_when_the_ledger_is_killed() {
    const TOTAL: u64 = 100_000;
    const BATCH: u64 = 250;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // SQLite by default, PostgreSQL when the test run asks for it.
    let db = rt
        .block_on(xalo_store::testing::TestDatabase::new())
        .unwrap();
    let config = dir.path().join("xalo.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[roles.ledger]\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = {:?}\ncheckpoint_interval_ms = 200\n",
            dir.path().join("data"),
            db.url()
        ),
    )
    .unwrap();
    let mut child = serve_ledger(&config);
    wait_healthy(&url);

    let acked: Arc<std::sync::Mutex<Vec<AckedBatch>>> = Arc::default();
    let acked_count = Arc::new(AtomicU64::new(0));
    let next_batch = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (acked, acked_count, next_batch, stop, url) =
                (acked.clone(), acked_count.clone(), next_batch.clone(), stop.clone(), url.clone());
            rt.spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::SeqCst) {
                    let b = next_batch.fetch_add(1, Ordering::SeqCst);
                    if b * BATCH >= TOTAL {
                        break;
                    }
                    let datas: Vec<Vec<u8>> = (0..BATCH).map(|i| format!("batch {b} entry {i}").into_bytes()).collect();
                    let body = json!({"entries": datas.iter().map(|d| json!({"kind": "exchange.message", "data": STANDARD.encode(d)})).collect::<Vec<_>>()});
                    let Ok(r) = http.post(format!("{url}/add")).json(&body).send().await else { break };
                    let Ok(v) = r.json::<serde_json::Value>().await else { break };
                    let Some(first) = v["first"].as_u64() else { break };
                    assert_eq!(v["count"].as_u64(), Some(BATCH));
                    acked.lock().unwrap().push((first, datas));
                    acked_count.fetch_add(BATCH, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Kill the ledger once a good share is acknowledged, while appends are in flight.
    let deadline = Instant::now() + Duration::from_secs(300);
    while acked_count.load(Ordering::SeqCst) < 30_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let acked_entries: u64 = acked.iter().map(|(_, d)| d.len() as u64).sum();
    assert!(acked_entries >= 30_000, "only {acked_entries} acknowledged");
    assert!(
        acked_entries < TOTAL,
        "the kill came after every append finished"
    );
    let needed = acked
        .iter()
        .map(|(first, d)| first + d.len() as u64)
        .max()
        .unwrap();
    eprintln!(
        "{acked_entries} entries acknowledged before the kill, the last at index {}",
        needed - 1
    );

    // Restart and wait for a checkpoint covering every acknowledged entry.
    let mut child = serve_ledger(&config);
    wait_healthy(&url);
    let key = rt.block_on(async {
        reqwest::get(format!("{url}/key"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let mirror = dir.path().join("mirror");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = ok(&run(&[
            "ledger",
            "mirror",
            "--log",
            &url,
            "--out",
            mirror.to_str().unwrap(),
        ]));
        let size: u64 = out.split_whitespace().nth(4).unwrap().parse().unwrap();
        if size >= needed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted ledger never integrated {needed} entries"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The tree verifies offline against the log key.
    ok(&run(&[
        "ledger",
        "verify",
        "--log",
        mirror.to_str().unwrap(),
        "--key",
        key.trim(),
    ]));

    // Every acknowledged entry is at its index, with its content.
    let mut bundles = std::collections::BTreeMap::new();
    for (first, datas) in &acked {
        for (i, data) in datas.iter().enumerate() {
            let index = first + i as u64;
            let n = index / 256;
            let bundle = bundles.entry(n).or_insert_with(|| read_bundle(&mirror, n));
            let mut expected = b"exchange.message\n".to_vec();
            expected.extend_from_slice(data);
            assert_eq!(bundle[(index % 256) as usize], expected, "entry {index}");
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
}

/// Read entry bundle `n` from a mirror (full, or the partial one at the end).
fn read_bundle(mirror: &Path, n: u64) -> Vec<Vec<u8>> {
    let id = xalo_ledger::tile::TileId::full(0, n);
    let full = mirror.join(id.entries_path());
    let path = if full.exists() {
        full
    } else {
        let dir = full.parent().unwrap();
        let name = full.file_name().unwrap().to_str().unwrap();
        let partial_dir = dir.join(format!("{name}.p"));
        let entry = std::fs::read_dir(&partial_dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        entry.path()
    };
    let bytes = std::fs::read(path).unwrap();
    xalo_ledger::EntryBundle::from_bytes(&bytes)
        .unwrap()
        .entries()
        .to_vec()
}
