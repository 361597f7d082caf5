//! `xalo bench trust`: P-256 signatures and verifications beside `openssl speed`, TSA
//! tokens and OCSP answers over HTTP with 64 concurrent clients. Each part ends with one
//! headline line `NAME: VALUE UNIT …`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use xalo_core::{Config, Error, ErrorCode};

use crate::key::{KeyAlgorithm, SigningKey, verify_signature};

const CLIENTS: usize = 64;

fn openssl_speed(seconds: u64) -> Option<(f64, f64)> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "ecdsap256"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("ecdsa (nistp256)"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // "256 bits ecdsa (nistp256)   sign-s  verify-s  sign/s  verify/s"
    match nums.as_slice() {
        [.., sign, verify] => Some((*sign, *verify)),
        _ => None,
    }
}

/// Run the benchmark for about `seconds` per part; returns the headline lines.
pub async fn run(seconds: u64) -> Result<Vec<String>, Error> {
    let mut lines = Vec::new();
    let key = SigningKey::generate(KeyAlgorithm::P256)?;
    let rc = key.rcgen_key()?;
    let spki = <x509_cert::spki::SubjectPublicKeyInfoOwned as der::Decode>::from_der(
        &rcgen::PublicKeyData::subject_public_key_info(&rc),
    )
    .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let message = [7u8; 64];
    let budget = Duration::from_secs(seconds.max(1));
    let (mut n, start) = (0u64, Instant::now());
    let mut sig = Vec::new();
    while start.elapsed() < budget {
        sig = key.sign(&message)?;
        n += 1;
    }
    let signs = n as f64 / start.elapsed().as_secs_f64();
    let (mut n, start) = (0u64, Instant::now());
    while start.elapsed() < budget {
        verify_signature(&spki, &key.signature_algorithm(), &message, &sig)?;
        n += 1;
    }
    let verifies = n as f64 / start.elapsed().as_secs_f64();
    match openssl_speed(seconds.max(1)) {
        Some((os, ov)) => {
            lines.push(format!(
                "p256-sign: {signs:.0} signatures/s (openssl {os:.0}/s, ratio {:.2})",
                signs / os
            ));
            lines.push(format!(
                "p256-verify: {verifies:.0} verifications/s (openssl {ov:.0}/s, ratio {:.2})",
                verifies / ov
            ));
        }
        None => {
            lines.push(format!(
                "p256-sign: {signs:.0} signatures/s (openssl speed unavailable)"
            ));
            lines.push(format!(
                "p256-verify: {verifies:.0} verifications/s (openssl speed unavailable)"
            ));
        }
    }

    // The trust role on a scratch SQLite database, loaded over HTTP.
    let dir = std::env::temp_dir().join(format!("xalo-bench-trust-{}", std::process::id()));
    let config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let handle =
        crate::serve_with(config.clone(), listener, crate::TrustSettings::default()).await?;
    let base = handle.url();
    let pki = crate::service::open_pki(&config, handle.port(), KeyAlgorithm::P256).await?;
    let tsq = crate::timestamp::build_request(
        crate::key::DigestAlgorithm::Sha256,
        &[1u8; 32],
        Some(&[1, 2, 3]),
    )?;
    let root = pki.authority(crate::AuthorityName::Root);
    let ocsp_req = crate::ocsp::build_request(
        &pki.tsa_signer().certificate,
        &pki.authority(crate::AuthorityName::Organisations)
            .certificate,
    )?;
    let _ = root;
    for (name, path, media, body, unit) in [
        (
            "tsa-tokens",
            "/tsa",
            "application/timestamp-query",
            tsq,
            "tokens/s",
        ),
        (
            "ocsp-responses",
            "/ocsp",
            "application/ocsp-request",
            ocsp_req,
            "responses/s",
        ),
    ] {
        let count = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::new();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (http, url, body, count, failures) = (
                http.clone(),
                format!("{base}{path}"),
                body.clone(),
                count.clone(),
                failures.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < budget {
                    let ok = match http
                        .post(&url)
                        .header("content-type", media)
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        count.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        lines.push(format!(
            "{name}: {rate:.0} {unit} ({CLIENTS} concurrent clients over HTTP, {} failures)",
            failures.load(Ordering::Relaxed)
        ));
    }
    handle.shutdown().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(lines)
}

/// One line that says how fast this machine is, for reading a benchmark's figures beside
/// those of another machine: P-256 signatures per second on one core (the signing key
/// every benchmark uses), counted for about `millis` before the benchmark runs.
pub fn machine_line(millis: u64) -> Result<String, Error> {
    let key = SigningKey::generate(KeyAlgorithm::P256)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (start, budget) = (Instant::now(), Duration::from_millis(millis.max(50)));
    let mut signed = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            key.sign(b"calibration")?;
        }
        signed += 64;
    }
    Ok(format!(
        "machine: {cores} cores, {:.0} P-256 signatures/s on one core",
        signed as f64 / start.elapsed().as_secs_f64()
    ))
}
