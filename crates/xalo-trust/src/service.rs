//! The `trust` server role: OCSP at `/ocsp`, the TSA at `/tsa`, CA certificates at `/ca/`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode};
use xalo_store::Database;

use crate::authority::{AuthorityName, CaFiles, Pki, PkiSettings};
use crate::key::KeyAlgorithm;
use crate::ocsp::{OcspResponder, OcspSettings};
use crate::timestamp::{TimeStampAuthority, TsaSettings};

pub const ROLE: &str = "trust";
/// Largest OCSP or time-stamp request accepted; real ones are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Settings of the trust role, from `DATA_DIR/trust/trust.toml` when present.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustSettings {
    /// Key algorithm of the authorities when they are first created.
    pub algorithm: KeyAlgorithm,
    pub ocsp: OcspSettings,
    pub tsa: TsaSettings,
}

impl TrustSettings {
    /// Read `trust.toml` from the role's directory, or the defaults.
    pub fn load(config: &Config) -> Result<Self, Error> {
        let path = trust_dir(config).join("trust.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                Error::new(ErrorCode::ConfigInvalid, format!("{}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustSettings::default()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Where the role keeps its files (CA PEMs).
pub fn trust_dir(config: &Config) -> PathBuf {
    config.data_dir.join(ROLE)
}

/// The base URL certificates name for a trust role listening on `port`.
pub fn public_url(config: &Config, port: u16) -> String {
    format!("http://{}:{port}", config.public_host)
}

/// Open (creating on first use) the PKI of this configuration.
pub async fn open_pki(config: &Config, port: u16, algorithm: KeyAlgorithm) -> Result<Pki, Error> {
    // The OCSP responder's status lookups run on held connections (no ping after each
    // statement, see `Database::connect_held`); everything else uses the pool.
    let db = Database::connect_held(
        &config.database_url(ROLE),
        2,
        xalo_store::PoolOptions::default(),
    )
    .await?;
    let mut settings = PkiSettings::new(public_url(config, port));
    settings.algorithm = algorithm;
    let pki = Pki::open(db, settings).await?;
    pki.write_pem_files(&trust_dir(config))?;
    Ok(pki)
}

#[derive(Clone)]
struct AppState {
    pki: Pki,
    ocsp: Arc<OcspResponder>,
    tsa: Arc<TimeStampAuthority>,
}

/// Start the trust role on `listener`.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let settings = TrustSettings::load(&config)?;
    serve_with(config, listener, settings).await
}

/// Start the trust role with explicit settings (tests, the demo).
pub async fn serve_with(
    config: Config,
    listener: TcpListener,
    settings: TrustSettings,
) -> Result<ServerHandle, Error> {
    let port = listener
        .local_addr()
        .map_err(|e| Error::new(ErrorCode::ServerBind, e.to_string()))?
        .port();
    let pki = open_pki(&config, port, settings.algorithm).await?;
    let authorities =
        crate::registration::TrustRoleSettings::load(&config)?.registration_authorities;
    let health = pki.database().health_check();
    let state = AppState {
        ocsp: Arc::new(OcspResponder::new(pki.clone(), settings.ocsp.clone())?),
        tsa: Arc::new(TimeStampAuthority::new(pki.clone(), &settings.tsa)?),
        pki,
    };
    let registration = Router::new()
        .route("/ra/certificates", post(crate::registration::issue_handler))
        .with_state((state.pki.clone(), Arc::new(authorities)));
    Server::new(ROLE, router(state).merge(registration), &config.http)
        .health_check(health)
        .spawn(listener)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .route("/tsa", post(tsa_post))
        .route("/ca/{file}", get(ca_file))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// A protocol answer with its own media type; `x-xalo-raw-error` keeps the shared error
/// middleware from replacing a DER error body with JSON.
fn der_response(status: StatusCode, media_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    if status.is_client_error() {
        response
            .headers_mut()
            .insert("x-xalo-raw-error", HeaderValue::from_static("1"));
    }
    response
}

async fn answer_ocsp(state: &AppState, body: &[u8]) -> Response {
    const MEDIA: &str = "application/ocsp-response";
    match state.ocsp.respond(body).await {
        Ok(der) => {
            let mut r = der_response(StatusCode::OK, MEDIA, der);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60, public"),
            );
            r
        }
        Err(e) if e.code == ErrorCode::TrustBadOcspRequest => der_response(
            StatusCode::BAD_REQUEST,
            MEDIA,
            crate::ocsp::malformed_response(),
        ),
        Err(e) => e.into_response(),
    }
}

async fn ocsp_post(State(state): State<AppState>, body: Bytes) -> Response {
    answer_ocsp(&state, &body).await
}

async fn ocsp_get(State(state): State<AppState>, Path(request): Path<String>) -> Response {
    // RFC 6960 A.1: base64 of the DER, URL-encoded (axum has undone the URL encoding).
    let cleaned: String = request.chars().filter(|c| !c.is_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(cleaned.as_bytes()) {
        Ok(der) if der.len() <= MAX_REQUEST_BYTES => answer_ocsp(&state, &der).await,
        _ => der_response(
            StatusCode::BAD_REQUEST,
            "application/ocsp-response",
            crate::ocsp::malformed_response(),
        ),
    }
}

async fn tsa_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    const MEDIA: &str = "application/timestamp-reply";
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/timestamp-query") {
        return Error::new(
            ErrorCode::HttpUnsupportedMediaType,
            format!("expected application/timestamp-query, got {content_type:?}"),
        )
        .into_response();
    }
    let tsa = state.tsa.clone();
    // Signing is CPU work; keep it off the I/O threads.
    let result = tokio::task::spawn_blocking(move || tsa.respond(&body)).await;
    match result {
        Ok(Ok(der)) => der_response(StatusCode::OK, MEDIA, der),
        Ok(Err(e)) if e.code == ErrorCode::TrustBadTimeStampRequest => der_response(
            StatusCode::BAD_REQUEST,
            MEDIA,
            crate::timestamp::malformed_reply(),
        ),
        Ok(Err(e)) => e.into_response(),
        Err(e) => Error::new(ErrorCode::Internal, e.to_string()).into_response(),
    }
}

async fn ca_file(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let (name, pem) = match file.rsplit_once('.') {
        Some((name, "crt" | "der" | "cer")) => (name, false),
        Some((name, "pem")) => (name, true),
        _ => (file.as_str(), false),
    };
    let der = match name {
        "tsa" => state.pki.tsa_signer().certificate_der.clone(),
        other => match AuthorityName::parse(other) {
            Ok(a) => state.pki.authority(a).certificate_der.clone(),
            Err(_) => {
                return Error::new(ErrorCode::HttpNotFound, format!("no certificate {file}"))
                    .into_response();
            }
        },
    };
    if pem {
        der_response(
            StatusCode::OK,
            "application/x-pem-file",
            crate::key::pem_encode("CERTIFICATE", &der).into_bytes(),
        )
    } else {
        der_response(StatusCode::OK, "application/pkix-cert", der)
    }
}

/// What `xalo demo` prints about the trust role.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub ocsp_url: String,
    pub tsa_url: String,
    pub ca_files: CaFiles,
}

/// The URLs and files of a running trust role.
pub fn demo_summary(config: &Config, handle: &ServerHandle) -> DemoSummary {
    let base = public_url(config, handle.port());
    let dir = trust_dir(config);
    DemoSummary {
        ocsp_url: format!("{base}/ocsp"),
        tsa_url: format!("{base}/tsa"),
        ca_files: CaFiles {
            root: dir.join("root.pem"),
            organisations: dir.join("organisations.pem"),
            persons: dir.join("persons.pem"),
            tsa: dir.join("tsa.pem"),
            bundle: dir.join("ca-bundle.pem"),
        },
    }
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Trust services")?;
        writeln!(f, "  OCSP responder   {}", self.ocsp_url)?;
        writeln!(f, "  Time-stamping    {}", self.tsa_url)?;
        writeln!(f, "  Root CA          {}", self.ca_files.root.display())?;
        writeln!(
            f,
            "  Organisations CA {}",
            self.ca_files.organisations.display()
        )?;
        writeln!(f, "  Persons CA       {}", self.ca_files.persons.display())?;
        writeln!(f, "  TSA certificate  {}", self.ca_files.tsa.display())?;
        write!(
            f,
            "  try: openssl ts -query -data FILE -sha256 -cert | curl -s -H 'Content-Type: application/timestamp-query' --data-binary @- {}",
            self.tsa_url
        )
    }
}
