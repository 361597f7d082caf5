//! The `xalo` binary as users run it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn xalo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xalo"));
    // The test harness's own settings must not leak into the binary's configuration.
    for (k, _) in std::env::vars() {
        if k.starts_with("XALO_") && !k.starts_with("XALO_TEST_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn version_and_roles() {
    let out = xalo().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("xalo {}", env!("CARGO_PKG_VERSION"))
    );
    let out = xalo().arg("roles").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("status"));
    let out = xalo().arg("errors").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("XALO-ID-001"));
}

#[test]
fn config_show_merges_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("xalo.toml");
    std::fs::write(&file, "port_base = 9100\n[log]\nformat = \"json\"\n").unwrap();
    let out = xalo()
        .args(["config", "show", "--config"])
        .arg(&file)
        .env("XALO_PUBLIC_HOST", "xalo.example.vn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("port_base = 9100"), "{text}");
    assert!(text.contains("format = \"json\""), "{text}");
    assert!(text.contains("public_host = \"xalo.example.vn\""), "{text}");

    std::fs::write(&file, "port_bsae = 1\n").unwrap();
    let out = xalo()
        .args(["config", "show", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("XALO-CFG-001") && err.contains("port_bsae"),
        "{err}"
    );
}

#[test]
fn serve_refuses_an_unknown_role() {
    let out = xalo().args(["serve", "nosuch"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("XALO-CFG-002"));
}

/// A running `xalo demo`, with what it printed.
/// A child process that a failing test does not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // After a successful `wait` this does nothing: the child is already reaped.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Demo {
    child: KillOnDrop,
    /// Role name to URL.
    urls: Vec<(String, String)>,
    printed: Vec<String>,
    rest: std::io::Lines<BufReader<std::process::ChildStdout>>,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let mut child = xalo()
            .args(["demo", "--port-base", "0", "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut urls = Vec::new();
        let mut printed = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        // Role URLs are the block after the "is running" line, up to a blank line.
        let mut section = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.trim().is_empty() {
                section += 1;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [role, url] = words.as_slice()
                && url.starts_with("http://")
                && section == 1
            {
                urls.push((role.to_string(), url.trim_end_matches('/').to_owned()));
            }
            printed.push(line.clone());
            if line.starts_with("Health:") || Instant::now() > deadline {
                break;
            }
        }
        Demo {
            child: KillOnDrop(child),
            urls,
            printed,
            rest: lines,
            _dir: dir,
        }
    }

    fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    fn url(&self, role: &str) -> &str {
        &self.urls.iter().find(|(r, _)| r == role).unwrap().1
    }

    /// The value printed after `label`.
    fn printed(&self, label: &str) -> String {
        let line = self
            .printed
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap();
        line.trim_start()[label.len()..].trim().to_owned()
    }

    fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.0.wait().unwrap();
        assert!(exit.success(), "demo exited with {exit}");
        self.rest.map_while(Result::ok).collect()
    }
}

/// Start `xalo demo` on free ports, read the URLs it prints, check every one is healthy,
/// then stop it with SIGTERM and expect a clean exit.
#[test]
fn demo_serves_healthz_until_terminated() {
    let demo = Demo::start();
    let roles: Vec<&str> = demo.urls.iter().map(|(r, _)| r.as_str()).collect();
    for role in [
        "status",
        "trust",
        "ledger",
        "witness",
        "registry",
        "mobile-id",
        "id",
    ] {
        assert!(roles.contains(&role), "{roles:?}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (_, url) in &demo.urls {
            let r = reqwest::get(format!("{url}/healthz")).await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
        }
        let page = reqwest::get(format!("{}/", demo.url("status")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("ledger") && !page.contains("❌"), "{page}");
    });
    let rest = demo.stop();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

mod cli {
    mod exchange;
    mod ledger;
}

/// The exchange benchmark as documented, briefly: each gateway in a process of this
/// binary, their memory and their CPU time per round trip reported beside the headline,
/// and both paths again at an offered rate.
#[test]
fn the_exchange_benchmark_reports_the_gateways_memory_and_cpu() {
    // With other members in the registry, which every message's lookups pass over.
    let out = xalo()
        .args([
            "bench",
            "exchange",
            "--requests",
            "1000",
            "--concurrency",
            "4",
            "--rate",
            "200",
            "--members",
            "100",
            "--gateway-workers",
            "1",
            "--ledger",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("gateway memory (own processes, each on one worker thread)"),
        "{text}"
    );
    // Read from the gateways' own counters: at least one message to a batch.
    for line in [
        "  messages per batch: signed ",
        "  messages per batch at this rate: signed ",
    ] {
        let sizes = text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line:?}: {text}"));
        let signed: f64 = sizes.split(' ').next().unwrap().parse().unwrap();
        assert!(signed >= 1.0, "{sizes}");
    }
    let cpu = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("gateway CPU: "))
        .unwrap_or_else(|| panic!("no CPU line: {text}"));
    let us: f64 = cpu.split(' ').next().unwrap().parse().unwrap();
    assert!(us > 0.0, "{cpu}");
    // The ledger, a process of its own too, holds both gateways' entry of every message,
    // and its CPU at the offered rate is its own line's.
    let entries = text
        .lines()
        .find_map(|l| l.strip_prefix("  ledger entries after the run: "))
        .unwrap_or_else(|| panic!("no ledger line: {text}"));
    let entries: u64 = entries.split(' ').next().unwrap().parse().unwrap();
    assert!(entries >= 2 * 2000, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("  CPU at this rate: ") && l.contains(", the ledger ")),
        "{text}"
    );
    // How long the gateways', the harness's and the relays' threads waited for a core.
    let waits = text
        .lines()
        .find_map(|l| l.strip_prefix("  waiting for a core at this rate"))
        .unwrap_or_else(|| panic!("no waits line: {text}"));
    assert!(
        waits.contains("the gateways' ") && waits.contains("; the bare relays' "),
        "{waits}"
    );
    // Where a message waited at each gateway, from their stage histograms: all eight.
    let stages = text
        .lines()
        .find_map(|l| l.strip_prefix("  a message's p50 in each stage at this rate"))
        .unwrap_or_else(|| panic!("no stages line: {text}"));
    for stage in [
        "client held ",
        "provider held ",
        "client sign ",
        "client provider_gateway ",
        "provider backend ",
        "provider sign ",
        "provider log ",
        "client log ",
    ] {
        assert!(stages.contains(stage), "{stage}: {stages}");
    }
    // The same paced load through two bare relays, each a process of this binary, all
    // answered; their added latency is in the headline beside the gateways'.
    let relays = text
        .lines()
        .find_map(|l| l.strip_prefix("  through two bare relays"))
        .unwrap_or_else(|| panic!("no relays line: {text}"));
    assert!(relays.ends_with(", 0 errors)"), "{relays}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("exchange: ") && l.contains(", bare relays p50 +")),
        "{text}"
    );
    let headline = text.lines().last().unwrap();
    assert!(headline.starts_with("exchange: "), "{text}");
    assert!(
        headline.ends_with(", 100 other members registered"),
        "{text}"
    );
    assert!(headline.contains("; at 200/s offered p50 +"), "{text}");
    // Saturation, then the offered rate: each the backend directly and through both; and
    // through the bare relays at the offered rate.
    let measured: Vec<&str> = text.lines().filter(|l| l.ends_with(" errors)")).collect();
    assert_eq!(measured.len(), 5, "{text}");
    assert!(
        measured.iter().all(|l| l.contains("(1000 requests, ")),
        "every scheduled request is sent and counted: {text}"
    );
    assert!(
        measured.iter().all(|l| l.ends_with(", 0 errors)")),
        "{text}"
    );
}
