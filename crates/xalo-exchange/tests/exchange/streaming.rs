//! Large bodies stream through both gateways in bounded memory.

use reqwest::Method;
use sha2::Digest;

use super::support::{self, SERVICE};

/// The process's peak resident memory, in bytes (Linux; 0 elsewhere).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn a_large_body_streams_through_in_bounded_memory() {
    let env = support::env().await;
    const SIZE: usize = 96 * 1024 * 1024;
    // Warm up connections and caches so the measurement sees only the body.
    let warm = env
        .call(Method::POST, &format!("{SERVICE}/digest"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    let before = peak_rss();

    // Upload: generated chunk by chunk, never whole in this process.
    let chunk = bytes::Bytes::from(support::pattern(64 * 1024));
    let chunks = SIZE / chunk.len();
    let mut expected = sha2::Sha256::new();
    for _ in 0..chunks {
        expected.update(&chunk);
    }
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let r = env
        .call(Method::POST, &format!("{SERVICE}/digest"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        panic!(
            "upload: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    assert_eq!(
        r.text().await.unwrap(),
        format!("{SIZE} {}", hex::encode(expected.finalize()))
    );

    // Download: the answer is hashed as it arrives.
    let r = env
        .call(Method::GET, &format!("{SERVICE}/large/{SIZE}"))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        panic!(
            "download: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    let mut stream = r.bytes_stream();
    let mut n = 0usize;
    use futures_util::StreamExt;
    while let Some(c) = stream.next().await {
        n += c.unwrap().len();
    }
    assert_eq!(n, SIZE);

    let grown = peak_rss().saturating_sub(before);
    // Every hop spools to disk past its in-memory limit; a whole body in memory at any
    // of the four hops would add at least SIZE.
    assert!(
        grown < (SIZE as u64) / 2,
        "peak memory grew by {grown} bytes for a {SIZE}-byte body"
    );
}

#[tokio::test]
async fn large_bodies_spool_in_the_directory_the_gateway_is_given() {
    let mut env = support::env().await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    // A directory that cannot be made stops the gateway at its start, named.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let mut config = env.client_gateway().config.clone();
    config.roles.get_mut("gateway").unwrap().settings.insert(
        "spool_dir".into(),
        not_a_dir.join("spool").display().to_string().into(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = xalo_exchange::gateway::serve_with(config, listener, tls_listener)
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, xalo_core::ErrorCode::ConfigInvalid, "{e}");
    assert!(e.message.contains("spool_dir"), "{e}");

    let path = spool.display().to_string();
    support::restart_gateway(&mut env, 0, |config| {
        let settings = &mut config.roles.get_mut("gateway").unwrap().settings;
        settings.insert("spool_dir".into(), path.into());
    })
    .await;
    assert!(spool.is_dir(), "made at the start");
    let body = support::pattern(1024 * 1024);
    let digest = |body: Vec<u8>| {
        env.call(Method::POST, &format!("{SERVICE}/digest"))
            .body(body)
            .send()
    };
    assert_eq!(digest(body.clone()).await.unwrap().status(), 200);
    // Without its spool the gateway takes small bodies still, large ones no more: they
    // went there.
    std::fs::remove_dir_all(&spool).unwrap();
    let r = digest(body).await.unwrap();
    assert_eq!(r.status(), 500);
    let (_, kind, message) = support::error(r).await;
    assert!(kind.starts_with("Server.ClientProxy"), "{kind}: {message}");
    assert_eq!(digest(b"x".to_vec()).await.unwrap().status(), 200);
}
