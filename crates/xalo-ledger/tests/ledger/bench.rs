//! The benchmark at a tiny size: the report must be sane (timings are not checked).

use std::time::Duration;

use xalo_ledger::bench::{self, BenchOptions};
use xalo_store::testing::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_run_reports_sane_figures() {
    let t = TestDatabase::new().await.unwrap();
    let options = BenchOptions {
        database_url: t.url().to_owned(),
        entries: 20_000,
        duration: Duration::from_millis(300),
        submitters: 8,
        checkpoint_interval: Duration::from_millis(20),
        proofs: 50,
        progress: false,
    };
    let b = bench::run(&options).await.unwrap();
    assert_eq!(b.built, 20_000);
    assert!(b.appends > 0 && b.appends_per_sec > 0.0, "{b:?}");
    assert!(b.commits > 0 && b.commits <= b.appends, "{b:?}");
    assert!(b.ack_p50_ms <= b.ack_p99_ms, "{b:?}");
    assert!(b.checkpoints > 0, "{b:?}");
    assert!(
        b.ack_to_checkpoint_p50_ms <= b.ack_to_checkpoint_p99_ms,
        "{b:?}"
    );
    assert!(
        b.ack_to_checkpoint_p99_ms <= b.ack_to_checkpoint_max_ms,
        "{b:?}"
    );
    // Proofs are of the final tree: everything built and appended.
    assert_eq!(b.proof_size, b.built + b.appends);
    assert_eq!(b.proofs, 50);
    assert!(b.proof_p50_ms <= b.proof_p99_ms, "{b:?}");
    // An entry takes at least its data, its leaf hash and its hash in a tile.
    assert!(
        b.bytes_per_entry > (b.entry_data_bytes + 64) as f64,
        "{b:?}"
    );
    let report = b.to_string();
    let last = report.lines().last().unwrap();
    assert!(last.starts_with("ledger: "), "{report}");
    assert!(
        last.contains(&format!("at {} entries", b.proof_size)),
        "{report}"
    );

    // A second run on the same database refuses instead of measuring a mixed log.
    let again = bench::run(&options).await.unwrap_err();
    assert_eq!(again.code, xalo_core::ErrorCode::ConfigInvalid);
}
