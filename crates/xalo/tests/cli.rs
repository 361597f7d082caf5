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

/// Start `xalo demo` on free ports, read the URLs it prints, check every one is healthy,
/// then stop it with SIGTERM and expect a clean exit.
#[test]
fn demo_serves_healthz_until_terminated() {
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
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            urls.push(url.trim_end_matches('/').to_owned());
        }
        if line.starts_with("Health:") || Instant::now() > deadline {
            break;
        }
    }
    assert!(!urls.is_empty(), "the demo printed no URL");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for url in &urls {
            let r = reqwest::get(format!("{url}/healthz")).await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
        }
        let page = reqwest::get(format!("{}/", urls[0]))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Xalo"), "{page}");
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "demo exited with {exit}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}
