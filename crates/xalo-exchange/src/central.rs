//! The `central` role: the registry, the signed global configuration gateways poll, and
//! the management API.
//!
//! The public listener (the one [`serve`] is given) serves `/globalconf` (signed, anyone
//! may read it), `/globalconf/anchor` (the public key gateways pin; compare it out of band)
//! and `/openapi.json`. The management API (`/api/v1/…`) listens on its own TLS port and
//! requires a client certificate whose SHA-256 fingerprint is among the configured
//! administrators, so `curl --cert admin.pem --key admin.key` is a working client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode};
use xalo_store::Database;

use crate::global_conf::{self, Anchor, GlobalConf, SignedGlobalConf};
use crate::registry::{
    NewAuthority, NewGateway, NewGroup, NewGroupMember, NewMember, NewSubsystem, Registry,
};
use crate::tls::{self, Identity, PeerCertificate, StapledCertificate};

pub const ROLE: &str = "central";

/// `[roles.central]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CentralSettings {
    /// The X-Road instance this central server governs, e.g. `VN`.
    pub instance: String,
    /// How long a global configuration stays valid after it is issued.
    pub validity_secs: u64,
    /// Where the management API listens (TLS); off when unset.
    pub management_listen: Option<SocketAddr>,
    /// PEM files of the management listener's certificate (and chain) and key.
    pub tls_certificate: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// SHA-256 fingerprints (hex) of the administrators' client certificates.
    pub administrators: Vec<String>,
}

impl Default for CentralSettings {
    fn default() -> Self {
        CentralSettings {
            instance: "VN".into(),
            validity_secs: 600,
            management_listen: None,
            tls_certificate: None,
            tls_key: None,
            administrators: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    settings: Arc<CentralSettings>,
    published: Arc<Published>,
}

/// The signed global configuration as last issued. Every gateway polls it (each minute by
/// default); a nation's registry makes a document of megabytes, so it is signed once and
/// served to every poll until the registry changes or it is due to be issued anew, and a
/// gateway holding it already is answered `304 Not Modified`.
#[derive(Default)]
struct Published {
    current: std::sync::Mutex<Option<Arc<Issued>>>,
    /// Held while a document is issued, so that polls arriving meanwhile wait for it
    /// rather than each reading and signing the registry.
    issuing: tokio::sync::Mutex<()>,
}

struct Issued {
    version: i64,
    at: std::time::Instant,
    etag: String,
    /// The JSON of the [`SignedGlobalConf`].
    body: Bytes,
    /// The JSON of its [`global_conf::SignedRenewal`], for gateways holding the version.
    renewal: Bytes,
}

fn to_json(v: &impl Serialize) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("global configuration: {e}")))
}

/// How long an issued document is served before it is issued anew (with a new expiry):
/// a quarter of its validity, at most a minute, so a gateway that loses the central server
/// still holds a document valid for most of its validity.
fn reissue_after(validity_secs: u64) -> std::time::Duration {
    (std::time::Duration::from_secs(validity_secs) / 4).min(std::time::Duration::from_secs(60))
}

impl Published {
    fn fresh(&self, version: i64, due: std::time::Duration) -> Option<Arc<Issued>> {
        self.current
            .lock()
            .ok()?
            .as_ref()
            .filter(|i| i.version == version && i.at.elapsed() < due)
            .cloned()
    }

    /// The document for the registry as it is now, issued now if need be.
    async fn get(&self, s: &AppState) -> Result<Arc<Issued>, Error> {
        let due = reissue_after(s.settings.validity_secs);
        let version = s.registry.version().await?;
        if let Some(i) = self.fresh(version, due) {
            return Ok(i);
        }
        let _turn = self.issuing.lock().await;
        if let Some(i) = self.fresh(version, due) {
            return Ok(i);
        }
        let at = std::time::Instant::now();
        let (conf, signed, renewal) = signed_conf(s).await?;
        let issued = Arc::new(Issued {
            version: conf.version,
            at,
            etag: conf.etag(),
            body: Bytes::from(to_json(&signed)?),
            renewal: Bytes::from(to_json(&renewal)?),
        });
        if let Ok(mut c) = self.current.lock() {
            *c = Some(issued.clone());
        }
        Ok(issued)
    }
}

/// Start the central server; binds the management listener from the settings.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let settings: CentralSettings = config.role_settings(ROLE)?;
    let management = match settings.management_listen {
        Some(addr) => Some(xalo_core::server::bind(addr).await?),
        None => None,
    };
    serve_with(config, listener, management).await
}

/// Start the central server with the management listener bound already (tests, demo).
pub async fn serve_with(
    config: Config,
    listener: TcpListener,
    management: Option<TcpListener>,
) -> Result<ServerHandle, Error> {
    let settings: CentralSettings = config.role_settings(ROLE)?;
    xalo_core::MemberId::new(&settings.instance, "X", "X").map_err(|e| {
        Error::new(
            ErrorCode::ConfigInvalid,
            format!("[roles.central] instance: {e}"),
        )
    })?;
    let db = Database::connect(&config.database_url(ROLE)).await?;
    let registry = Registry::open(db).await?;
    let state = AppState {
        registry: registry.clone(),
        settings: Arc::new(settings.clone()),
        published: Arc::default(),
    };
    let public = Router::new()
        .route("/globalconf", get(globalconf))
        .route("/globalconf/anchor", get(anchor))
        .route("/openapi.json", get(openapi))
        .with_state(state.clone());
    let mut handle = Server::new(ROLE, public, &config.http)
        .health_check(registry.database().health_check())
        .spawn(listener)?;
    if let Some(management) = management {
        let (Some(cert), Some(key)) = (&settings.tls_certificate, &settings.tls_key) else {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                "[roles.central] management_listen needs tls_certificate and tls_key",
            ));
        };
        let identity = Identity::from_files(cert, key)?;
        let tls_config = tls::server_config(StapledCertificate::new(identity)?)?;
        let addr = management.local_addr()?;
        handle.attach(tls::serve(management, tls_config, management_router(state)));
        tracing::info!(%addr, "central management API listening (TLS)");
    }
    Ok(handle)
}

/// The management routes, for administrators only.
fn management_router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/members", post(add_member))
        .route("/api/v1/subsystems", post(add_subsystem))
        .route("/api/v1/gateways", post(register_gateway))
        .route("/api/v1/groups", post(add_group))
        .route("/api/v1/groups/{code}/members", post(add_group_member))
        .route("/api/v1/authorities", post(set_authority))
        .route("/api/v1/registry", get(registry_view))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { Error::new(ErrorCode::HttpNotFound, "no such management resource") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            administrators_only,
        ))
        .with_state(state)
}

async fn administrators_only(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let fingerprint = req
        .extensions()
        .get::<PeerCertificate>()
        .map(|p| crate::fingerprint(&p.0));
    match fingerprint {
        Some(f)
            if state
                .settings
                .administrators
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&f)) =>
        {
            next.run(req).await
        }
        Some(f) => Error::new(
            ErrorCode::ExchNotAdministrator,
            format!("certificate {f} is not an administrator's"),
        )
        .into_response(),
        None => Error::new(
            ErrorCode::HttpUnauthorized,
            "a client certificate is required",
        )
        .into_response(),
    }
}

/// JSON from a body with our coded error (the TLS listener has no shared rejection layer).
pub(crate) fn json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::new(ErrorCode::HttpBadRequest, format!("request body: {e}")))
}

fn created() -> Response {
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"status": "created"})),
    )
        .into_response()
}

async fn add_member(State(s): State<AppState>, body: Bytes) -> Result<Response, Error> {
    let m: NewMember = json(&body)?;
    if m.id.instance() != s.settings.instance {
        return Err(Error::new(
            ErrorCode::HttpBadRequest,
            format!("{} is not in instance {}", m.id, s.settings.instance),
        ));
    }
    s.registry.add_member(&m).await?;
    Ok(created())
}

async fn add_subsystem(State(s): State<AppState>, body: Bytes) -> Result<Response, Error> {
    s.registry
        .add_subsystem(&json::<NewSubsystem>(&body)?)
        .await?;
    Ok(created())
}

async fn register_gateway(State(s): State<AppState>, body: Bytes) -> Result<Response, Error> {
    s.registry
        .register_gateway(&json::<NewGateway>(&body)?)
        .await?;
    Ok(created())
}

async fn add_group(State(s): State<AppState>, body: Bytes) -> Result<Response, Error> {
    s.registry.add_group(&json::<NewGroup>(&body)?).await?;
    Ok(created())
}

async fn add_group_member(
    State(s): State<AppState>,
    Path(code): Path<String>,
    body: Bytes,
) -> Result<Response, Error> {
    s.registry
        .add_group_member(&code, &json::<NewGroupMember>(&body)?)
        .await?;
    Ok(created())
}

async fn set_authority(State(s): State<AppState>, body: Bytes) -> Result<Response, Error> {
    s.registry
        .set_authority(&json::<NewAuthority>(&body)?)
        .await?;
    Ok(created())
}

async fn registry_view(State(s): State<AppState>) -> Result<Response, Error> {
    Ok(axum::Json(s.registry.snapshot(&s.settings.instance).await?).into_response())
}

/// The registry as it is now, issued now: the document and its renewal, signed.
async fn signed_conf(
    s: &AppState,
) -> Result<(GlobalConf, SignedGlobalConf, global_conf::SignedRenewal), Error> {
    let mut conf = s.registry.snapshot(&s.settings.instance).await?;
    let now = crate::unix_now();
    conf.issued_unix = now;
    conf.expires_unix = now.saturating_add(s.settings.validity_secs as i64);
    let key = s.registry.signing_key().await?;
    let signed = global_conf::sign(&conf, &key)?;
    let renewal = global_conf::sign_renewal(&conf, &key)?;
    Ok((conf, signed, renewal))
}

async fn globalconf(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, Error> {
    let issued = s.published.get(&s).await?;
    let etag = HeaderValue::from_str(&issued.etag)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("ETag: {e}")))?;
    // Gateways check the expiry themselves: an answer is never to be reused unasked.
    let no_cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if global_conf::matches_etag(&headers, &issued.etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag), no_cache]).into_response());
    }
    // A gateway holding the version issued gets its renewal, not the document again.
    let held = headers
        .get(global_conf::HELD_VERSION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let body = if held == Some(issued.version) {
        issued.renewal.clone()
    } else {
        issued.body.clone()
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
            no_cache,
        ],
        body,
    )
        .into_response())
}

/// The anchor text (base64 SubjectPublicKeyInfo) of the central server's key.
async fn anchor(State(s): State<AppState>) -> Result<Response, Error> {
    let key = s.registry.signing_key().await?;
    Ok(axum::Json(serde_json::json!({
        "instance": s.settings.instance,
        "anchor": Anchor::of_key(&key)?,
    }))
    .into_response())
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// The central server's API, described by hand (it is small and stable).
pub const OPENAPI: &str = include_str!("central_openapi.json");
