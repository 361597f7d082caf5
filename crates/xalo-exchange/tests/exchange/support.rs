//! A small nation for the tests: a client member (the Government Office's portal) and a
//! provider (the Ministry of Public Security's population register), with a backend.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use futures_util::StreamExt;
use sha2::Digest;
use xalo_core::{ServiceId, SubsystemId};
use xalo_exchange::nation::{MemberSpec, Nation, NationOptions, client_subject};
use xalo_exchange::service_registry::NewService;
use xalo_store::testing::TestDatabase;

pub const CLIENT: &str = "VN/GOV/000007/portal";
pub const SERVICE: &str = "VN/GOV/000001/population/persons";

pub struct Env {
    pub nation: Nation,
    pub key: String,
    pub http: reqwest::Client,
    pub databases: Vec<(String, TestDatabase)>,
    /// The provider's backend.
    pub backend: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Env {
    pub fn client_gateway(&self) -> &xalo_exchange::nation::RunningGateway {
        &self.nation.gateways[0]
    }
    pub fn provider_gateway(&self) -> &xalo_exchange::nation::RunningGateway {
        &self.nation.gateways[1]
    }
    /// A request through the client's gateway, as an information system makes it.
    pub fn call(&self, method: reqwest::Method, service_and_path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}/r1/{service_and_path}", self.client_gateway().url),
            )
            .header("X-Road-Client", CLIENT)
            .header("X-Xalo-Client-Key", &self.key)
    }
    pub fn database(&self, part: &str) -> &TestDatabase {
        &self.databases.iter().find(|(p, _)| p == part).unwrap().1
    }
}

async fn person(Path(code): Path<String>, headers: HeaderMap) -> axum::Json<serde_json::Value> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    axum::Json(serde_json::json!({
        "code": code,
        "name": "Nguyễn Văn An",
        "client": h("x-road-client"),
        "user": h("x-road-userid"),
        "issue": h("x-road-issue"),
    }))
}

/// What the backend received: method, path, query, headers and body; it answers with
/// headers of its own, X-Road's among them (which the provider's gateway replaces).
async fn echo(req: axum::extract::Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    // A repeated header shows all its values, joined as HTTP would.
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        headers.insert(name.to_string(), values.join(", ").into());
    }
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut r = axum::Json(serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response();
    for (n, v) in [
        ("x-powered-by", "PHP/5.2.17"),
        ("cache-control", "no-cache, no-store, must-revalidate"),
        ("x-road-client", "VN/GOV/999999/forged"),
        ("x-road-request-hash", "forged"),
        ("x-road-foo", "an extension of the service's own"),
    ] {
        r.headers_mut().insert(n, v.parse().unwrap());
    }
    r
}

/// The backend's own error, which passes back as it is.
async fn refuse(method: axum::http::Method) -> axum::response::Response {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({
            "status": 405,
            "error": "Method Not Allowed",
            "message": format!("Request method '{method}' not supported"),
        })),
    )
        .into_response()
}

/// The backend's own error in a type of its own, which passes back as it is too.
async fn plain_error() -> axum::response::Response {
    (
        axum::http::StatusCode::CONFLICT,
        [("content-type", "text/plain; charset=utf-8")],
        "the service's own words",
    )
        .into_response()
}

/// A redirect, which the gateways pass back rather than follow.
async fn moved() -> axum::response::Response {
    (
        axum::http::StatusCode::FOUND,
        [("location", "https://elsewhere.example/persons")],
    )
        .into_response()
}

/// An answer after `ms` milliseconds.
async fn slow(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    "late"
}

/// SHA-256 and length of a streamed body.
async fn digest(body: Body) -> String {
    let mut stream = body.into_data_stream();
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    format!("{n} {}", hex::encode(h.finalize()))
}

/// `n` bytes of a repeating pattern, streamed.
async fn large(Path(n): Path<u64>) -> Body {
    let chunk = bytes::Bytes::from(pattern(64 * 1024));
    let count = n / chunk.len() as u64;
    Body::from_stream(futures_util::stream::iter(
        (0..count).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ))
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

pub fn openapi() -> serde_json::Value {
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "Population register", "version": "1"},
        "paths": {
            "/persons/{code}": {"get": {"responses": {"200": {"description": "a person"}}}},
            "/digest": {"post": {"responses": {"200": {"description": "digest"}}}},
            "/large/{n}": {"get": {"responses": {"200": {"description": "bytes"}}}}
        }
    })
}

pub struct Options {
    pub validity_secs: u64,
    pub ocsp_reuse_secs: u64,
    pub ledger_url: Option<String>,
    pub evidence_retry_secs: u64,
    pub poll_secs: u64,
    pub client_tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            validity_secs: 600,
            ocsp_reuse_secs: 300,
            ledger_url: None,
            evidence_retry_secs: 30,
            poll_secs: 60,
            client_tls: false,
        }
    }
}

pub async fn env() -> Env {
    env_with(Options::default()).await
}

pub async fn env_with(o: Options) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let backend_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = backend_listener.local_addr().unwrap();
    let app = Router::new()
        .route("/persons/{code}", get(person).post(person))
        .route("/digest", post(digest))
        .route("/large/{n}", get(large))
        .route("/echo/{*rest}", any(echo))
        .route("/refuse", any(refuse))
        .route("/moved", get(moved))
        .route("/plain-error", get(plain_error))
        .route("/slow/{ms}", get(slow));
    tokio::spawn(async move { axum::serve(backend_listener, app).await.unwrap() });

    let members = vec![
        MemberSpec::new("VN/GOV/000007", "Văn phòng Chính phủ", &["portal"]).unwrap(),
        MemberSpec::new("VN/GOV/000001", "Bộ Công an", &["population"]).unwrap(),
    ];
    let mut options = NationOptions::new(dir.path(), members);
    let mut databases = Vec::new();
    for part in ["trust", "central", "gateway-000007", "gateway-000001"] {
        let db = TestDatabase::new().await.unwrap();
        options.databases.insert(part.into(), db.url().to_owned());
        databases.push((part.to_owned(), db));
    }
    options.global_conf_validity_secs = o.validity_secs;
    options.ocsp_reuse_secs = o.ocsp_reuse_secs;
    options.ledger_url = o.ledger_url;
    options.evidence_retry_secs = o.evidence_retry_secs;
    options.poll_secs = o.poll_secs;
    options.client_tls = o.client_tls;
    let nation = xalo_exchange::nation::start(&options).await.unwrap();

    let provider = &nation.gateways[1].admin;
    let service: ServiceId = SERVICE.parse().unwrap();
    provider
        .add_service(&NewService {
            service: service.clone(),
            backend_url: format!("http://{backend}"),
            openapi: Some(openapi()),
        })
        .await
        .unwrap();
    let audit: ServiceId = "VN/GOV/000001/population/audit".parse().unwrap();
    provider
        .add_service(&NewService {
            service: audit,
            backend_url: format!("http://{backend}"),
            openapi: None,
        })
        .await
        .unwrap();
    let client: SubsystemId = CLIENT.parse().unwrap();
    for (m, p) in [
        ("GET", "/persons/{code}"),
        ("POST", "/digest"),
        ("GET", "/large/{n}"),
    ] {
        provider
            .grant(&service, client_subject(&client), Some((m, p)))
            .await
            .unwrap();
    }
    let key = nation.gateways[0]
        .admin
        .issue_client_key(&client)
        .await
        .unwrap();
    Env {
        nation,
        key,

        http: reqwest::Client::builder().build().unwrap(),
        databases,
        backend,
        _dir: dir,
    }
}

/// The X-Road error type of an answer, and its status.
pub async fn error_type(r: reqwest::Response) -> (u16, String) {
    let (status, kind, _) = error(r).await;
    (status, kind)
}

/// Assert that an answer is the X-Road error `kind` with `status`, its message saying
/// `says`, and that the refusal is on record (see [`refused`]).
pub async fn assert_refused(env: &Env, r: reqwest::Response, status: u16, kind: &str, says: &str) {
    let (got_status, got_kind, message, detail) = error_with_detail(r).await;
    assert_eq!((got_status, got_kind.as_str()), (status, kind), "{message}");
    assert!(message.contains(says), "{says:?} not in {message:?}");
    assert_on_record(env, &got_kind, &detail, &message).await;
}

/// The status and X-Road error type of a refusal, which is on record at the gateway that
/// answered it under the `detail` id the caller got, with its type and message; one the
/// client's gateway passed on from the provider's is on record at both.
pub async fn refused(env: &Env, r: reqwest::Response) -> (u16, String) {
    let (status, kind, message, detail) = error_with_detail(r).await;
    assert_on_record(env, &kind, &detail, &message).await;
    (status, kind)
}

async fn assert_on_record(env: &Env, kind: &str, detail: &str, message: &str) {
    let (client, provider) = (&env.client_gateway().admin, &env.provider_gateway().admin);
    // An answer waits for its record a bounded time: on a busy machine it may come later.
    let (mut at_client, mut at_provider) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        at_client = client.refusals(10, Some(detail)).await.unwrap();
        at_provider = provider.refusals(10, Some(detail)).await.unwrap();
        if !at_client.is_empty() || !at_provider.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (record, side) = match (at_client.as_slice(), at_provider.as_slice()) {
        ([r], []) => (r, "client"),
        ([], [r]) => (r, "provider"),
        _ => panic!(
            "refusal {detail} ({kind}: {message}) is not on record at exactly one gateway: {at_client:?} {at_provider:?}"
        ),
    };
    assert_eq!(
        (
            record.kind.as_str(),
            record.message.as_str(),
            record.side.as_str()
        ),
        (kind, message, side),
        "{record:?}"
    );
    assert!(record.request.starts_with(['G', 'P', 'D']), "{record:?}");
    // Passed on from the provider's gateway: on record there too, by its own detail.
    if side == "client" && kind.starts_with("Server.ServerProxy.") {
        let upstream = provider
            .refusals(10, Some(&record.upstream_detail))
            .await
            .unwrap();
        assert!(
            matches!(upstream.as_slice(), [r] if r.kind == kind && r.side == "provider"),
            "the provider's gateway has no {kind} on record as {}: {upstream:?}",
            record.upstream_detail
        );
    }
}

/// Register `service` at the provider's gateway with `backend_url`, granted whole to the
/// client.
pub async fn add_granted_service(env: &Env, service: &str, backend_url: &str) {
    let provider = &env.provider_gateway().admin;
    let service: ServiceId = service.parse().unwrap();
    provider
        .add_service(&NewService {
            service: service.clone(),
            backend_url: backend_url.to_owned(),
            openapi: None,
        })
        .await
        .unwrap();
    let client: SubsystemId = CLIENT.parse().unwrap();
    provider
        .grant(&service, client_subject(&client), None)
        .await
        .unwrap();
}

/// The status, X-Road error type and message of an answer.
pub async fn error(r: reqwest::Response) -> (u16, String, String) {
    let (status, kind, message, _) = error_with_detail(r).await;
    (status, kind, message)
}

/// [`error`], and the `detail` id the caller got.
pub async fn error_with_detail(r: reqwest::Response) -> (u16, String, String, String) {
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("x-road-error")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = r.json().await.unwrap();
    let kind = body["type"].as_str().unwrap().to_owned();
    assert_eq!(
        header.as_deref(),
        Some(kind.as_str()),
        "X-Road-Error header and body type agree"
    );
    let detail = body["detail"].as_str().unwrap_or("").to_owned();
    assert!(!detail.is_empty());
    (
        status,
        kind,
        body["message"].as_str().unwrap_or("").to_owned(),
        detail,
    )
}

/// A DER OCSP answer about a certificate, whatever it says.
pub async fn ocsp_der(nation: &Nation, cert_pem_file: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(cert_pem_file).unwrap();
    let cert = xalo_trust::authority::read_certificates(pem.as_bytes())
        .unwrap()
        .remove(0);
    let issuer = nation
        .pki
        .as_ref()
        .unwrap()
        .authority(xalo_trust::AuthorityName::Organisations)
        .certificate_der
        .clone();
    let anchors = xalo_trust::chain::TrustAnchors::from_bytes(nation.root_pem.as_bytes()).unwrap();
    xalo_trust::ocsp::query(&reqwest::Client::new(), None, &cert, &issuer, &anchors)
        .await
        .unwrap()
        .0
}

/// A client that talks to the provider's gateway directly with the client gateway's TLS
/// identity, to send messages a correct gateway would never send.
pub fn direct_client(env: &Env) -> reqwest::Client {
    let files = &env.client_gateway().files;
    let identity =
        xalo_exchange::tls::Identity::from_files(&files.tls_certificate, &files.tls_key).unwrap();
    let provider_pem =
        std::fs::read_to_string(&env.provider_gateway().files.tls_certificate).unwrap();
    let provider_cert = xalo_trust::authority::read_certificates(provider_pem.as_bytes())
        .unwrap()
        .remove(0);
    let verifier = xalo_exchange::tls::PinnedServer::new(provider_cert, None);
    let config = xalo_exchange::tls::client_config(&identity, Arc::new(verifier)).unwrap();
    xalo_exchange::tls::http_client(config, std::time::Duration::from_secs(30)).unwrap()
}

/// A signed request straight to the provider's gateway, as a gateway sends it.
pub struct DirectRequest {
    url: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl DirectRequest {
    /// The request with one more header, added after signing.
    pub fn with_header(mut self, name: &'static str, value: &str) -> DirectRequest {
        self.headers.append(name, value.parse().unwrap());
        self
    }

    /// Send it (again), on a new connection.
    pub async fn send(&self, env: &Env) -> reqwest::Response {
        direct_client(env)
            .post(&self.url)
            .headers(self.headers.clone())
            .body(self.body.clone())
            .send()
            .await
            .unwrap()
    }
}

/// Sign a request to the provider's gateway with the client member's key, saying it was
/// signed at `signed_ms` (now when `None`); `tamper` changes the body after signing;
/// `tls_ocsp` is passed on when given.
pub async fn direct_request(
    env: &Env,
    body: &[u8],
    tamper: bool,
    tls_ocsp: Option<Vec<u8>>,
    signed_ms: Option<i64>,
) -> DirectRequest {
    use xalo_exchange::message;
    let files = &env.client_gateway().files;
    let signer = xalo_exchange::signature::MessageSigner::from_pem(
        &std::fs::read_to_string(&files.signing_certificate).unwrap(),
        &std::fs::read_to_string(&files.signing_key).unwrap(),
    )
    .unwrap();
    let target = format!("/r1/{SERVICE}/digest");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-road-client", CLIENT.parse().unwrap());
    headers.insert("x-road-id", "direct-1".parse().unwrap());
    headers.insert("accept", "*/*".parse().unwrap());
    let head = message::request_head("POST", &target, &headers);
    let body_hash: [u8; 64] = sha2::Sha512::digest(body).into();
    let hash = message::message_hash(&head, body.len() as u64, &body_hash);
    let signer_ocsp = ocsp_der(&env.nation, &files.signing_certificate).await;
    let signed_ms = signed_ms.unwrap_or_else(xalo_core::unix_now_ms);
    let signature = signer.sign_single_at(&hash, signed_ms).unwrap();
    let signed = xalo_exchange::client_proxy::signature_headers(
        &Default::default(),
        signer.certificate(),
        &signature,
        &signer_ocsp,
        &tls_ocsp.clone().unwrap_or_default(),
    )
    .unwrap();
    headers.extend(signed);
    if tls_ocsp.is_none() {
        headers.remove(message::TLS_OCSP);
    }
    let mut sent = body.to_vec();
    if tamper {
        sent[0] ^= 1;
    }
    DirectRequest {
        url: format!("https://{}{target}", env.provider_gateway().tls_addr),
        headers,
        body: sent,
    }
}

/// A signed request straight to the provider's gateway, signed now (see [`direct_request`]).
pub async fn direct_call(
    env: &Env,
    body: &[u8],
    tamper: bool,
    tls_ocsp: Option<Vec<u8>>,
) -> reqwest::Response {
    direct_request(env, body, tamper, tls_ocsp, None)
        .await
        .send(env)
        .await
}

/// Restart gateway `index` of the nation on its database and addresses, its configuration
/// changed by `edit`.
pub async fn restart_gateway(
    env: &mut Env,
    index: usize,
    edit: impl FnOnce(&mut xalo_core::Config),
) {
    let old = env.nation.gateways.remove(index);
    let addr = old.handle.local_addr();
    let mut config = old.config.clone();
    edit(&mut config);
    old.handle.shutdown().await.unwrap();
    let bind = |a| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(l) = tokio::net::TcpListener::bind(a).await {
                return l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the old gateway's port stays taken"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let listener = bind(addr).await;
    let tls_listener = bind(old.tls_addr).await;
    let handle = xalo_exchange::gateway::serve_with(config.clone(), listener, tls_listener)
        .await
        .unwrap();
    env.nation.gateways.insert(
        index,
        xalo_exchange::nation::RunningGateway {
            url: handle.url(),
            handle,
            config,
            member: old.member,
            tls_addr: old.tls_addr,
            admin: old.admin,
            certificates: old.certificates,
            files: old.files,
        },
    );
}

/// What a gateway's `/healthz` reports.
pub async fn health(gateway: &xalo_exchange::nation::RunningGateway) -> serde_json::Value {
    reqwest::get(format!("{}/healthz", gateway.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The time-stamping authority a gateway's health names.
pub async fn tsa_url(gateway: &xalo_exchange::nation::RunningGateway) -> String {
    health(gateway).await["checks"]["message_log_timestamp"]["tsa_url"]
        .as_str()
        .unwrap()
        .to_owned()
}
