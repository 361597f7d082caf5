//! The server plumbing every role shares, exercised over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use xalo_core::config::HttpConfig;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Error, ErrorCode};

async fn spawn(router: Router, http: HttpConfig) -> ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Server::new("test", router, &http).spawn(listener).unwrap()
}

fn app() -> Router {
    Router::new()
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/json",
            post(|axum::Json(v): axum::Json<serde_json::Value>| async move { axum::Json(v) }),
        )
        .route(
            "/fail",
            get(|| async { Err::<(), _>(Error::new(ErrorCode::PersonalCodeCheckDigit, "bad")) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
}

#[tokio::test]
async fn healthz_and_metrics() {
    let server = spawn(app(), HttpConfig::default()).await;
    let c = reqwest::Client::new();
    let h: serde_json::Value = c
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["role"], "test");
    let m = c
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap();
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = m.text().await.unwrap();
    assert!(
        text.contains(
            "xalo_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("xalo_build_info{"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn failing_health_check_answers_503_with_the_code() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let server = Server::new("test", app(), &HttpConfig::default())
        .health_check(Arc::new(move || {
            let ok = flag.load(Ordering::SeqCst);
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err(Error::new(ErrorCode::StoreUnavailable, "db down"))
                }
            })
        }))
        .spawn(listener)
        .unwrap();
    let url = format!("{}/healthz", server.url());
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    healthy.store(false, Ordering::SeqCst);
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "XALO-STORE-001");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_rejection_is_a_coded_json_error() {
    let http = HttpConfig {
        max_body_bytes: 1024,
        ..HttpConfig::default()
    };
    let server = spawn(app(), http).await;
    let c = reqwest::Client::new();
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body["code"].as_str().unwrap().to_owned())
    };
    let u = server.url();
    assert_eq!(
        code(c.get(format!("{u}/nowhere")).send().await.unwrap()).await,
        (404, "XALO-HTTP-001".into())
    );
    assert_eq!(
        code(
            c.post(format!("{u}/echo"))
                .body(vec![b'x'; 2048])
                .send()
                .await
                .unwrap()
        )
        .await,
        (413, "XALO-HTTP-002".into())
    );
    let small = c
        .post(format!("{u}/echo"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(small.text().await.unwrap(), "hello");
    assert_eq!(
        code(c.delete(format!("{u}/echo")).send().await.unwrap()).await,
        (405, "XALO-HTTP-006".into())
    );
    assert_eq!(
        code(c.post(format!("{u}/json")).body("{}").send().await.unwrap()).await,
        (415, "XALO-HTTP-007".into())
    );
    assert_eq!(
        code(
            c.post(format!("{u}/json"))
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await
                .unwrap()
        )
        .await,
        (400, "XALO-HTTP-003".into())
    );
    assert_eq!(
        code(c.get(format!("{u}/fail")).send().await.unwrap()).await,
        (400, "XALO-ID-004".into())
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_open_requests_and_refuses_new_ones() {
    let server = spawn(app(), HttpConfig::default()).await;
    let url = server.url();
    let open = tokio::spawn({
        let url = url.clone();
        async move {
            reqwest::get(format!("{url}/slow"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await.unwrap();
    assert_eq!(open.await.unwrap(), "done");
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err());
}
