//! The demo exchange starts on a running trust service, puts a provider's API behind its
//! gateway, answers the call it prints, and starts again on its own data.

use axum::routing::get;
use xalo_exchange::demo::ProvidedApi;

#[tokio::test]
async fn the_demo_answers_the_call_it_prints_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = xalo_core::Config {
        data_dir: dir.path().to_path_buf(),
        port_base: 0,
        ..Default::default()
    };
    let token = "exchange-operator-token";
    config.roles.entry("trust".into()).or_default().settings.insert(
        "registration_authorities".into(),
        serde_json::json!([{ "name": "exchange", "token_sha256": xalo_trust::registration::token_hash(token) }]),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.roles.entry("trust".into()).or_default().listen = Some(listener.local_addr().unwrap());
    let trust = xalo_trust::serve(config.clone(), listener).await.unwrap();

    // A provider's backend: the population register's `persons`, as a small real server.
    let backend = axum::Router::new().route(
        "/api/persons/{code}",
        get(
            |axum::extract::Path(code): axum::extract::Path<String>| async move {
                axum::Json(serde_json::json!({ "code": code }))
            },
        ),
    );
    let backend_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_url = format!("http://{}/api", backend_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(backend_listener, backend).await });
    let api = ProvidedApi {
        provider: "VN/GOV/000001/population".parse().unwrap(),
        backend_url,
        openapi: serde_json::json!({
            "openapi": "3.0.3", "info": {"title": "population", "version": "1"},
            "paths": {"/persons/{code}": {"get": {"responses": {"200": {"description": "a person"}}}}}
        }),
    };

    for run in 0..2 {
        let demo = xalo_exchange::demo::start(
            &config,
            trust.port(),
            token,
            None,
            std::slice::from_ref(&api),
        )
        .await
        .unwrap();
        assert_eq!(demo.nation.gateways.len(), 7);
        assert_eq!(demo.client_keys.len(), 2);
        let curl = demo.lines.iter().find(|l| l.contains("curl -H")).unwrap();
        // curl -H 'A: x' -H 'B: y' … URL
        let headers: Vec<(String, String)> = curl
            .split("-H '")
            .skip(1)
            .map(|h| {
                let h = &h[..h.find('\'').unwrap()];
                let (n, v) = h.split_once(": ").unwrap();
                (n.to_owned(), v.to_owned())
            })
            .collect();
        let url = curl
            .split_whitespace()
            .last()
            .unwrap()
            .replace("CODE", "VN022095001234");
        let mut request = reqwest::Client::new().get(&url);
        for (n, v) in &headers {
            request = request.header(n, v);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200, "run {run}: {url} {:?}", r.text().await);
        assert!(r.headers().contains_key("x-road-request-hash"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "VN022095001234");
        demo.shutdown().await.unwrap();
    }
    trust.shutdown().await.unwrap();
}
