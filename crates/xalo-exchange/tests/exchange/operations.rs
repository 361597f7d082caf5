//! Operations: per-service metrics, the health report, configuration reload (API and
//! SIGHUP) without dropping connections, and the message log's time-stamps.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use xalo_core::{Config, ServiceId};
use xalo_exchange::message_log::MessageLog;

use super::support::{CLIENT, Env, Options, SERVICE, env, env_with};

/// Poll `check` until it gives a value; the deadline only bounds a failing test.
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

async fn healthz(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{url}/healthz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One HTTP/1.1 exchange on an open connection, which stays open (keep-alive).
async fn raw_get(stream: &mut TcpStream, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n");
    for (n, v) in headers {
        request.push_str(&format!("{n}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection was closed");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("answers in memory carry Content-Length")
        .trim()
        .parse()
        .unwrap();
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection was closed mid-answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned(),
    )
}

/// Restart the client's gateway from a configuration file, on the same database and
/// addresses, so that it can reload; returns the file.
async fn restart_from_file(env: &mut Env, edit: impl Fn(&mut Config)) -> std::path::PathBuf {
    let file = env.nation_dir().join("client-gateway.toml");
    super::support::restart_gateway(env, 0, |config| {
        edit(config);
        std::fs::write(&file, config.to_toml().unwrap()).unwrap();
        *config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.file.as_deref(), Some(file.as_path()));
    })
    .await;
    file
}

impl Env {
    fn nation_dir(&self) -> std::path::PathBuf {
        self.client_gateway()
            .files
            .tls_certificate
            .parent()
            .unwrap()
            .to_path_buf()
    }
}

fn gateway_settings(config: &mut Config) -> &mut serde_json::Map<String, serde_json::Value> {
    &mut config.roles.get_mut("gateway").unwrap().settings
}

async fn reload_api(env: &Env, token: &str) -> reqwest::Response {
    env.http
        .post(format!("{}/api/v1/reload", env.client_gateway().url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn admin_token(env: &Env) -> String {
    let path = env
        .nation_dir()
        .parent()
        .unwrap()
        .join("000007.admin-token");
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn metrics_count_messages_errors_latency_and_bytes_per_client_and_service() {
    let env = env().await;
    // Twice: the second finds its metrics kept at hand for its client and service.
    let mut body = bytes::Bytes::new();
    for _ in 0..2 {
        let r = env
            .call(
                reqwest::Method::GET,
                &format!("{SERVICE}/persons/VN001203012345"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        body = r.bytes().await.unwrap();
    }
    // Not granted: the provider's gateway refuses it, and both sides count the error.
    let r = env
        .call(reqwest::Method::GET, "VN/GOV/000001/population/audit/x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        super::support::error_type(r).await.1,
        "Server.ServerProxy.AccessDenied"
    );

    let labels = format!("client=\"{CLIENT}\",service=\"{SERVICE}\"");
    let audit = format!("client=\"{CLIENT}\",service=\"VN/GOV/000001/population/audit\"");
    let client = metrics(&env.client_gateway().url).await;
    assert!(
        client.contains(&format!(
            "xalo_exchange_messages_total{{side=\"client\",{labels}}} 2"
        )),
        "{client}"
    );
    assert!(client.contains(&format!(
        "xalo_exchange_messages_total{{side=\"client\",{audit}}} 1"
    )));
    assert!(client.contains(&format!(
        "xalo_exchange_errors_total{{side=\"client\",{audit},error=\"Server.ServerProxy.AccessDenied\"}} 1"
    )));
    assert!(!client.contains(&format!(
        "xalo_exchange_errors_total{{side=\"client\",{labels}"
    )));
    assert!(client.contains(&format!(
        "xalo_exchange_message_duration_seconds_count{{side=\"client\",{labels}}} 2"
    )));
    let response_bytes = client
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "xalo_exchange_response_bytes_total{{side=\"client\",{labels}}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map(|n| n.parse::<u64>().unwrap())
        .unwrap();
    assert!(
        response_bytes >= 2 * body.len() as u64,
        "{response_bytes} < {}",
        body.len()
    );

    let provider = metrics(&env.provider_gateway().url).await;
    assert!(
        provider.contains(&format!(
            "xalo_exchange_messages_total{{side=\"provider\",{labels}}} 2"
        )),
        "{provider}"
    );
    // Where each message's time went: all three held from arrival to answer at both
    // gateways, signed and answered by the provider's gateway, the two allowed logged;
    // there, the two allowed called, signed and logged.
    for (text, stage, count) in [
        (&client, "side=\"client\",stage=\"held\"", 3),
        (&provider, "side=\"provider\",stage=\"held\"", 3),
        (&client, "side=\"client\",stage=\"sign\"", 3),
        (&client, "side=\"client\",stage=\"provider_gateway\"", 3),
        (&client, "side=\"client\",stage=\"log\"", 2),
        (&provider, "side=\"provider\",stage=\"backend\"", 2),
        (&provider, "side=\"provider\",stage=\"sign\"", 2),
        (&provider, "side=\"provider\",stage=\"log\"", 2),
    ] {
        assert!(
            text.contains(&format!(
                "xalo_exchange_stage_duration_seconds_count{{{stage}}} {count}"
            )),
            "{stage}: {text}"
        );
    }
    // One message at a time: each signed, verified and committed alone.
    for (text, counted) in [
        (
            &client,
            [
                ("signature_batches", 3),
                ("signed_messages", 3),
                ("signature_verifications", 2),
                ("verified_messages", 2),
                ("log_commits", 2),
                ("logged_messages", 2),
            ],
        ),
        (
            &provider,
            [
                ("signature_batches", 2),
                ("signed_messages", 2),
                ("signature_verifications", 3),
                ("verified_messages", 3),
                ("log_commits", 2),
                ("logged_messages", 2),
            ],
        ),
    ] {
        for (name, n) in counted {
            let line = format!("xalo_exchange_{name}_total {n}");
            assert!(text.lines().any(|l| l == line), "{line}: {text}");
        }
    }
    assert!(provider.contains(&format!(
        "xalo_exchange_errors_total{{side=\"provider\",{audit},error=\"Server.ServerProxy.AccessDenied\"}} 1"
    )));
    // Both refusals were recorded, none left out.
    assert!(
        provider.contains("xalo_exchange_refusals_unrecorded_total 0"),
        "{provider}"
    );

    // A caller cannot make up label values: an unregistered client counts as `other`.
    let r = env
        .http
        .get(format!(
            "{}/r1/{SERVICE}/persons/VN001203012345",
            env.client_gateway().url
        ))
        .header("X-Road-Client", "VN/GOV/999999/nobody")
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success());
    let client = metrics(&env.client_gateway().url).await;
    // (Only as a label: a float such as a latency sum may hold the digits by chance.)
    assert!(!client.contains("VN/GOV/999999"), "{client}");
    assert!(client.contains(
        "xalo_exchange_messages_total{side=\"client\",client=\"other\",service=\"other\"} 1"
    ));
}

#[tokio::test]
async fn health_reports_certificates_ocsp_configuration_and_time_stamps() {
    let env = env_with(Options {
        poll_secs: 1,
        ocsp_reuse_secs: 1,
        ..Options::default()
    })
    .await;
    let (status, h) = healthz(&env.client_gateway().url).await;
    assert_eq!((status, h["status"].as_str()), (200, Some("ok")), "{h}");
    let checks = &h["checks"];
    for name in [
        "global_conf",
        "tls_certificate",
        "signing_certificate",
        "tls_ocsp",
        "signing_ocsp",
        "message_log_timestamp",
    ] {
        assert_eq!(checks[name]["status"], "ok", "{name}: {h}");
    }
    assert!(checks["global_conf"]["expires_in_secs"].as_i64().unwrap() > 0);
    assert!(
        checks["tls_certificate"]["expires_in_days"]
            .as_i64()
            .unwrap()
            > 300
    );
    assert!(checks["tls_ocsp"]["age_secs"].as_i64().unwrap() >= 0);
    assert!(checks["message_log_timestamp"]["tsa_url"].is_string());

    // Revoked: no good OCSP answer for its own TLS certificate, so peers would refuse it.
    let serial = env.client_gateway().certificates.tls_serial.clone();
    env.nation.revoke(&serial).await.unwrap();
    let h = eventually("the revoked gateway reports itself unhealthy", || async {
        let (status, h) = healthz(&env.client_gateway().url).await;
        (status == 503).then_some(h)
    })
    .await;
    assert_eq!(h["status"], "unhealthy");
    assert_eq!(h["checks"]["tls_ocsp"]["status"], "unhealthy", "{h}");
    assert!(
        h["checks"]["tls_ocsp"]["last_error"]
            .as_str()
            .unwrap()
            .contains("Revoked"),
        "{h}"
    );
    // The provider's own certificates are still good.
    let (status, h) = healthz(&env.provider_gateway().url).await;
    assert_eq!(status, 200, "{h}");
}

#[tokio::test]
async fn reload_applies_new_settings_without_dropping_connections_or_requests() {
    let mut env = env().await;
    // A backend that holds its answer until the test lets it go, so a request is
    // certainly in flight during the reload.
    let (arrived_tx, mut arrived) = mpsc::channel::<()>(1);
    let release = std::sync::Arc::new(Notify::new());
    let held = release.clone();
    let app = Router::new().route(
        "/wait",
        get(move || {
            let (arrived, held) = (arrived_tx.clone(), held.clone());
            async move {
                arrived.send(()).await.unwrap();
                held.notified().await;
                axum::Json(serde_json::json!({"waited": true}))
            }
        }),
    );
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(backend, app).await.unwrap() });
    let slow: ServiceId = "VN/GOV/000001/population/slow".parse().unwrap();
    let backend = format!("http://{backend_addr}");
    super::support::add_granted_service(&env, &slow.to_string(), &backend).await;

    let file = restart_from_file(&mut env, |_| {}).await;
    let token = admin_token(&env);
    let addr = env.client_gateway().handle.local_addr();
    let key = env.key.clone();
    let headers = |id: &'static str| {
        [
            ("X-Road-Client", CLIENT),
            ("X-Xalo-Client-Key", key.as_str()),
            ("X-Road-Id", id),
        ]
    };
    let person = format!("/r1/{SERVICE}/persons/VN001203012345");

    // A kept-alive connection, used before the reload.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    let (status, _) = raw_get(&mut kept, &person, &headers("before-reload")).await;
    assert_eq!(status, 200);
    // A request in flight across the reload.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    let in_flight = {
        let path = format!("/r1/{}/wait", slow.to_path());
        let h = headers("in-flight");
        let h: Vec<(String, String)> = h
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        tokio::spawn(async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            raw_get(&mut waiting, &path, &h).await
        })
    };
    arrived.recv().await.unwrap();

    // New settings: no bodies in the message log, an early certificate warning, a new
    // log filter and grace period, a time-stamp every second.
    let mut config = Config::load(Some(&file)).unwrap();
    let s = gateway_settings(&mut config);
    s.insert("message_log_bodies".into(), false.into());
    s.insert("certificate_warning_days".into(), 400.into());
    s.insert("timestamp_interval_secs".into(), 1.into());
    config.log.filter = "info,xalo_exchange=debug".into();
    config.http.shutdown_grace_secs = 3;
    std::fs::write(&file, config.to_toml().unwrap()).unwrap();
    let r = reload_api(&env, &token).await;
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    let changed: Vec<&str> = answer["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for key in [
        "roles.gateway.message_log_bodies",
        "roles.gateway.certificate_warning_days",
        "roles.gateway.timestamp_interval_secs",
        "log.filter",
        "http.shutdown_grace_secs",
    ] {
        assert!(changed.contains(&key), "{key} not in {changed:?}");
    }

    release.notify_one();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"waited":true}"#));
    let (status, _) = raw_get(&mut kept, &person, &headers("after-reload")).await;
    assert_eq!(status, 200, "the kept-alive connection still serves");

    // The new settings hold: the answer after the reload was logged without bodies...
    let db = xalo_store::Database::connect(env.database("gateway-000007").url())
        .await
        .unwrap();
    let (log, _task) = MessageLog::start(db, 30);
    let bodies = |id: &'static str| {
        let log = log.clone();
        async move {
            eventually("the message is logged", || {
                let log = log.clone();
                async move { log.has_bodies(id, "client").await.unwrap() }
            })
            .await
        }
    };
    assert!(bodies("before-reload").await);
    assert!(!bodies("after-reload").await);
    // ... the health report warns of the certificate 400 days ahead ...
    let (status, h) = healthz(&env.client_gateway().url).await;
    assert_eq!(
        (status, h["status"].as_str()),
        (200, Some("degraded")),
        "{h}"
    );
    assert_eq!(h["checks"]["tls_certificate"]["status"], "degraded");
    // ... and the log is time-stamped by the TSA over exactly the logged messages.
    let h = eventually("the message log is time-stamped", || async {
        let (_, h) = healthz(&env.client_gateway().url).await;
        h["checks"]["message_log_timestamp"]["last_timestamp_unix"]
            .is_i64()
            .then_some(h)
    })
    .await;
    assert_eq!(h["checks"]["message_log_timestamp"]["status"], "ok", "{h}");
    let stamps = log.timestamps().await.unwrap();
    assert!(!stamps.is_empty());
    let anchors =
        xalo_trust::chain::TrustAnchors::from_bytes(env.nation.root_pem.as_bytes()).unwrap();
    for stamp in &stamps {
        let digest = log
            .batch_digest(stamp.first_id, stamp.last_id)
            .await
            .unwrap();
        assert_eq!(hex::encode(digest), stamp.digest);
        xalo_trust::timestamp::verify_token(&stamp.token, &digest, &anchors).unwrap();
        assert!(
            xalo_trust::timestamp::verify_token(&stamp.token, b"other messages", &anchors).is_err()
        );
    }

    // A change that needs a restart is refused whole.
    let mut config = Config::load(Some(&file)).unwrap();
    gateway_settings(&mut config).insert("code".into(), "gw2".into());
    gateway_settings(&mut config).insert("certificate_warning_days".into(), 30.into());
    std::fs::write(&file, config.to_toml().unwrap()).unwrap();
    let r = reload_api(&env, &token).await;
    assert_eq!(r.status(), 409);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("roles.gateway.code"),
        "{e}"
    );
    let (_, h) = healthz(&env.client_gateway().url).await;
    assert_eq!(h["checks"]["tls_certificate"]["status"], "degraded");

    // SIGHUP reloads too.
    gateway_settings(&mut config).insert("code".into(), "gw1".into());
    std::fs::write(&file, config.to_toml().unwrap()).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually("SIGHUP applies the file", || async {
        let (_, h) = healthz(&env.client_gateway().url).await;
        (h["checks"]["tls_certificate"]["status"] == "ok").then_some(())
    })
    .await;
    let m = metrics(&env.client_gateway().url).await;
    assert!(
        m.contains("xalo_exchange_config_reloads_total{result=\"ok\"} 2"),
        "{m}"
    );
    assert!(m.contains("xalo_exchange_config_reloads_total{result=\"failed\"} 1"));
    env.nation.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_gateway_not_started_from_a_file_refuses_to_reload() {
    let env = env().await;
    let r = reload_api(&env, &admin_token(&env)).await;
    assert_eq!(r.status(), 409);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not loaded from a file")
    );
    // Only the administrator may reload.
    let r = reload_api(&env, "wrong").await;
    assert_eq!(r.status(), 401);
}
