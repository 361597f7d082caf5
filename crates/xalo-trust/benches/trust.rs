//! `cargo bench -p xalo-trust`: the same figures as `xalo bench trust`.

fn main() {
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        return;
    };
    match runtime.block_on(xalo_trust::benchmark::run(5)) {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(e) => eprintln!("{e}"),
    }
}
