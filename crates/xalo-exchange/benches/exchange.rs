//! `cargo bench -p xalo-exchange`: the exchange benchmark (see `xalo_exchange::bench`).
//! `XALO_BENCH_REQUESTS`, `XALO_BENCH_CONCURRENCY` and `XALO_BENCH_LEDGER=1` adjust it.

fn main() -> Result<(), xalo_core::Error> {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let mut options = xalo_exchange::bench::BenchOptions::default();
    if let Some(n) = env("XALO_BENCH_REQUESTS") {
        options.requests = n;
    }
    if let Some(c) = env("XALO_BENCH_CONCURRENCY") {
        options.concurrency = c;
    }
    options.ledger = env("XALO_BENCH_LEDGER") == Some(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(xalo_exchange::bench::run(&options))?;
    println!("{report}");
    Ok(())
}
