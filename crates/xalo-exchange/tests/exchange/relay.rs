//! The bare relays the exchange benchmark measures beside the gateways: two of them in
//! turn (plain HTTP in, mutual TLS with a pinned certificate between, plain HTTP out) pass
//! requests and answers on as they are, less the hop-by-hop headers, and say precisely why
//! when they cannot.

use axum::http::HeaderMap;
use xalo_exchange::relay::{RelayHandle, RelaySpec};
use xalo_exchange::tls::Identity;

fn identity(name: &str) -> Identity {
    let key = rcgen::generate_simple_self_signed(vec![format!("{name}.invalid")]).unwrap();
    Identity {
        chain: vec![key.cert.der().to_vec()],
        key_pkcs8: key.signing_key.serialize_der(),
    }
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A backend that says what it was sent.
async fn backend() -> String {
    async fn echo(req: axum::extract::Request) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let header = |n: &str| parts.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        let said = serde_json::json!({
            "method": parts.method.as_str(),
            "target": parts.uri.path_and_query().map(|p| p.as_str()),
            "x_test": header("x-test"),
            "proxy_authorization": header("proxy-authorization"),
            "body_bytes": body.len(),
        });
        let mut r = axum::Json(said).into_response();
        r.headers_mut()
            .insert("x-backend", axum::http::HeaderValue::from_static("yes"));
        r
    }
    use axum::response::IntoResponse;
    let l = listener().await;
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new().fallback(echo);
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

async fn relay(spec: RelaySpec) -> RelayHandle {
    xalo_exchange::relay::start(spec, listener().await)
        .await
        .unwrap()
}

/// (the client's relay, the provider's relay, the provider relay's identity)
async fn pair(upstream: &str) -> (RelayHandle, RelayHandle, Identity) {
    let provider_identity = identity("relay-provider");
    let provider = relay(RelaySpec {
        upstream: upstream.into(),
        upstream_certificate: None,
        identity: Some(provider_identity.clone()),
        inbound_tls: true,
    })
    .await;
    let client = relay(RelaySpec {
        upstream: provider.url().into(),
        upstream_certificate: Some(provider_identity.certificate().to_vec()),
        identity: Some(identity("relay-client")),
        inbound_tls: false,
    })
    .await;
    (client, provider, provider_identity)
}

async fn code_of(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    (
        status,
        body["code"].as_str().unwrap_or_default().to_owned(),
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn two_relays_pass_a_request_and_its_answer_on_over_mutual_tls() {
    let (client, provider, _) = pair(&backend().await).await;
    assert!(provider.url().starts_with("https://"), "{}", provider.url());
    let http = reqwest::Client::new();
    let mut headers = HeaderMap::new();
    headers.insert("x-test", "kept".parse().unwrap());
    headers.insert("proxy-authorization", "Basic dropped".parse().unwrap());
    let r = http
        .post(format!("{}/persons/VN022095001234?full=1", client.url()))
        .headers(headers)
        .body(vec![7u8; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "yes");
    let said: serde_json::Value = r.json().await.unwrap();
    assert_eq!(said["method"], "POST");
    assert_eq!(said["target"], "/persons/VN022095001234?full=1");
    assert_eq!(said["x_test"], "kept");
    // A hop-by-hop header stops at the first relay, as at a gateway.
    assert_eq!(said["proxy_authorization"], serde_json::Value::Null);
    assert_eq!(said["body_bytes"], 200_000);
    // The role server's own paths stay its own.
    let health = http
        .get(format!("{}/healthz", client.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    client.shutdown().await.unwrap();
    provider.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_relay_refuses_an_upstream_other_than_the_one_pinned_and_says_when_it_is_down() {
    let (_, provider, _) = pair(&backend().await).await;
    let http = reqwest::Client::new();
    // Pinned to another certificate than the one the provider's relay presents.
    let misled = relay(RelaySpec {
        upstream: provider.url().into(),
        upstream_certificate: Some(identity("someone-else").certificate().to_vec()),
        identity: Some(identity("relay-client")),
        inbound_tls: false,
    })
    .await;
    let r = http
        .get(format!("{}/x", misled.url()))
        .send()
        .await
        .unwrap();
    let (status, code, message) = code_of(r).await;
    assert_eq!((status, code.as_str()), (502, "XALO-EXCH-013"), "{message}");
    assert!(
        message.contains("other than the one registered"),
        "{message}"
    );

    // Nothing listens upstream any more.
    let closed = listener().await;
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let orphan = relay(RelaySpec {
        upstream: gone,
        upstream_certificate: None,
        identity: None,
        inbound_tls: false,
    })
    .await;
    let r = http
        .get(format!("{}/x", orphan.url()))
        .send()
        .await
        .unwrap();
    let (status, code, message) = code_of(r).await;
    assert_eq!((status, code.as_str()), (502, "XALO-EXCH-013"), "{message}");
}

#[tokio::test]
async fn a_relay_without_what_its_upstream_needs_does_not_start() {
    for (spec, says) in [
        (
            RelaySpec {
                upstream: "https://127.0.0.1:9".into(),
                upstream_certificate: None,
                identity: Some(identity("relay-client")),
                inbound_tls: false,
            },
            "a TLS upstream needs",
        ),
        (
            RelaySpec {
                upstream: "ftp://127.0.0.1:9".into(),
                upstream_certificate: None,
                identity: None,
                inbound_tls: false,
            },
            "http:// or https://",
        ),
        (
            RelaySpec {
                upstream: "http://127.0.0.1:9".into(),
                upstream_certificate: None,
                identity: None,
                inbound_tls: true,
            },
            "a TLS relay needs its identity",
        ),
        (
            RelaySpec {
                upstream: "http://127.0.0.1:9".into(),
                upstream_certificate: Some(identity("someone").certificate().to_vec()),
                identity: None,
                inbound_tls: false,
            },
            "a pinned certificate is for an https:// upstream",
        ),
    ] {
        let e = match xalo_exchange::relay::start(spec, listener().await).await {
            Ok(_) => panic!("started without what it needs ({says})"),
            Err(e) => e,
        };
        assert_eq!(e.code, xalo_core::ErrorCode::ConfigInvalid, "{e}");
        assert!(e.message.contains(says), "{e}");
    }
}
