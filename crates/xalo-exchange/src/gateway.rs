//! The `gateway` role: a member's door to the exchange (X-Road's security server).
//!
//! Its plain listener (the one [`serve`] is given, meant for the member's own network)
//! serves the client proxy, `/r1/…`, to the member's information systems, and the
//! administration API (`/api/v1/…`, bearer token) with which the member registers its
//! services, access rights and client systems. Its TLS listener (`tls_listen`) serves the
//! server proxy to other gateways, with mutual TLS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle, ShutdownGrace};
use xalo_core::{Config, Error, ErrorCode, MemberId, SubsystemId};
use xalo_store::Database;

use crate::central::json;
use crate::certificate_status::StatusCache;
use crate::evidence::Evidence;
use crate::global_conf::{Anchor, GatewayCertificate, GatewayEntry, GlobalConf, GlobalConfHolder};
use crate::message_log::MessageLog;
use crate::service_registry::{NewAccessRight, NewService, ServiceRegistry};
use crate::signature::{BatchSigner, MessageSigner, VerifiedSignatures};
use crate::spool::SpoolLimits;
use crate::tls::{self, Identity, PinnedServer, StapledCertificate};

pub const ROLE: &str = "gateway";

/// `[roles.gateway]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// The member that owns this gateway, e.g. `VN/GOV/000001`.
    pub owner: Option<MemberId>,
    /// The gateway's code, as registered at the central server.
    pub code: String,
    /// `http://host:port` of the central server.
    pub central_url: String,
    /// The central server's public key (base64 SubjectPublicKeyInfo).
    pub central_anchor: String,
    /// Where other gateways reach this one (TLS).
    pub tls_listen: Option<SocketAddr>,
    /// Where the member's information systems may call with a client certificate (TLS,
    /// the same client proxy as the plain listener); off when unset.
    pub client_tls_listen: Option<SocketAddr>,
    /// PEM files: the TLS authentication certificate (and chain) and key, and the member's
    /// signing certificate and key.
    pub tls_certificate: PathBuf,
    pub tls_key: PathBuf,
    pub signing_certificate: PathBuf,
    pub signing_key: PathBuf,
    /// Bearer token of the administration API; the API is off when unset.
    pub admin_token: Option<String>,
    /// `http://host:port` of the transparency ledger; no evidence is recorded when unset.
    pub ledger_url: Option<String>,
    /// Seconds between passes that send again the evidence the ledger did not take.
    pub evidence_retry_secs: u64,
    /// Seconds between global configuration downloads.
    pub poll_secs: u64,
    /// Seconds an OCSP answer is reused before asking again.
    pub ocsp_reuse_secs: u64,
    /// Oldest OCSP answer (seconds since produced) accepted from a peer.
    pub ocsp_max_age_secs: u64,
    /// Days the message log keeps messages.
    pub message_log_retention_days: u64,
    /// Bodies up to this size are kept in memory and in the message log; larger ones
    /// go through temporary files and the log keeps their hash.
    pub memory_body_bytes: usize,
    /// Largest body accepted.
    pub max_body_bytes: u64,
    /// Where bodies larger than `memory_body_bytes` are spooled (unnamed files, gone with
    /// the message): a disk with room for `max_body_bytes` times the messages under way.
    /// The system's temporary directory when unset.
    pub spool_dir: Option<PathBuf>,
    /// Seconds to wait for a provider's gateway or backend.
    pub timeout_secs: u64,
    /// A request signed longer ago than this (or this far ahead: clocks apart) is refused,
    /// and one received within it is served once (the gateway remembers the window's
    /// requests, and reads them back from its message log when it starts).
    pub replay_window_secs: u64,
    /// Publish/subscribe: retries and limits of event delivery.
    pub pubsub: crate::pubsub::PubSubSettings,
    /// Whether the message log keeps bodies (else heads, hashes and signatures only).
    pub message_log_bodies: bool,
    /// The member's key (64 hex digits) that seals logged bodies at rest; made there on
    /// first start when missing. Bodies are logged as they are when unset.
    pub message_log_encryption_key_file: Option<PathBuf>,
    /// Seconds between time-stamps of the message log.
    pub timestamp_interval_secs: u64,
    /// `/healthz` turns unhealthy when a logged message has waited this long for a
    /// time-stamp (X-Road's acceptable time-stamp failure period).
    pub timestamp_failure_secs: u64,
    /// `/healthz` turns degraded this many days before a certificate expires.
    pub certificate_warning_days: u64,
    /// Milliseconds the registry's version is trusted before the database is asked again
    /// (at most 1000; 0 asks per message); a looked-up service, its access rights and a
    /// client key are read again only when the version moved. Changes made through this
    /// gateway apply at once; a change made elsewhere in its database (another instance,
    /// an edit in the database) applies within this time.
    pub registry_cache_ms: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            owner: None,
            code: "gw1".into(),
            central_url: String::new(),
            central_anchor: String::new(),
            tls_listen: None,
            client_tls_listen: None,
            tls_certificate: PathBuf::new(),
            tls_key: PathBuf::new(),
            signing_certificate: PathBuf::new(),
            signing_key: PathBuf::new(),
            admin_token: None,
            ledger_url: None,
            evidence_retry_secs: 30,
            poll_secs: 60,
            ocsp_reuse_secs: 300,
            ocsp_max_age_secs: 1200,
            message_log_retention_days: 30,
            memory_body_bytes: 256 * 1024,
            max_body_bytes: 4 * 1024 * 1024 * 1024,
            spool_dir: None,
            timeout_secs: 60,
            replay_window_secs: 60,
            pubsub: Default::default(),
            message_log_bodies: true,
            message_log_encryption_key_file: None,
            timestamp_interval_secs: 60,
            timestamp_failure_secs: 14_400,
            certificate_warning_days: 30,
            registry_cache_ms: crate::service_registry::DEFAULT_REUSE.as_millis() as u64,
        }
    }
}

/// What the client and server proxies share.
pub struct GatewayState {
    /// The settings the gateway started with; [`GatewayState::current`] has the reloaded.
    pub settings: GatewaySettings,
    pub owner: MemberId,
    /// `INSTANCE/CLASS/CODE/GATEWAY`, as logs and evidence name it.
    pub name: String,
    pub conf: GlobalConfHolder,
    pub status: StatusCache,
    pub registry: ServiceRegistry,
    /// Topics, subscriptions and the event outbox.
    pub topics: crate::topic::TopicRegistry,
    pub tls: Identity,
    pub stapled: Arc<StapledCertificate>,
    pub signer: MessageSigner,
    pub batch: BatchSigner,
    pub verified: VerifiedSignatures,
    /// The signed requests served within the replay window.
    pub replays: crate::replay::ReplayGuard,
    /// Header values of the certificate and OCSP answers sent with every message.
    pub encoded: crate::message::EncodedHeaders,
    pub decoded: crate::message::DecodedHeaders,
    spool: RwLock<SpoolLimits>,
    pub backend: crate::hop::HopClient,
    pub log: MessageLog,
    /// The refusals on record.
    pub refusals: crate::refusal::Refusals,
    pub evidence: Option<Evidence>,
    /// The bound address of the client TLS listener, when there is one.
    pub client_tls_addr: Option<SocketAddr>,
    /// By address: the certificate the client pins, and the client.
    peers: Mutex<HashMap<String, (GatewayCertificate, crate::hop::HopClient)>>,
    /// Reloadable settings and the configuration they came from.
    live: RwLock<(Arc<GatewaySettings>, Arc<Config>)>,
    pub(crate) reloading: Mutex<()>,
    pub grace: ShutdownGrace,
    pub metrics: crate::metrics::ExchangeMetrics,
    /// The messages and event deliveries being worked on: the signer and the log
    /// gather a batch only while others are under way.
    pub in_flight: xalo_core::batch::InFlight,
    pub observed: crate::health::Observed,
}

impl GatewayState {
    /// The settings now (after any reload).
    pub fn current(&self) -> Arc<GatewaySettings> {
        match self.live.read() {
            Ok(l) => l.0.clone(),
            Err(_) => Arc::new(self.settings.clone()),
        }
    }

    /// The configuration now (after any reload).
    pub fn config(&self) -> Arc<Config> {
        match self.live.read() {
            Ok(l) => l.1.clone(),
            Err(_) => Arc::new(Config::default()),
        }
    }

    pub(crate) fn set_current(&self, settings: GatewaySettings, config: Config) {
        if let Ok(mut l) = self.live.write() {
            *l = (Arc::new(settings), Arc::new(config));
        }
    }

    /// Body limits now.
    pub fn spool(&self) -> SpoolLimits {
        self.spool
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|_| SpoolLimits {
                memory: self.settings.memory_body_bytes,
                max: self.settings.max_body_bytes,
                dir: self.settings.spool_dir.clone(),
            })
    }

    pub(crate) fn set_spool(&self, limits: SpoolLimits) {
        if let Ok(mut s) = self.spool.write() {
            *s = limits;
        }
    }

    /// The HTTP client for another gateway: mutual TLS, pinned to its registered
    /// certificate, requiring a good stapled OCSP answer. One per peer, so connections
    /// are reused.
    pub fn peer_client(
        self: &Arc<Self>,
        peer: &GatewayEntry,
    ) -> Result<crate::hop::HopClient, Error> {
        if let Ok(p) = self.peers.lock()
            && let Some((pinned, c)) = p.get(&peer.address)
            && *pinned == peer.tls_certificate
        {
            return Ok(c.clone());
        }
        let me = Arc::downgrade(self);
        let check: tls::StapleCheck = Arc::new(move |cert: &[u8], ocsp: &[u8]| {
            let me = me.upgrade().ok_or("the gateway is stopping")?;
            let conf = me.conf.get().map_err(|e| e.message)?;
            me.status
                .verify_answer(cert, ocsp, &conf)
                .map_err(|e| format!("the provider's TLS certificate: {}", e.message))
        });
        let verifier = PinnedServer::new(peer.certificate_der()?, Some(check));
        let config = tls::client_config(&self.tls, Arc::new(verifier))?;
        let client =
            crate::hop::HopClient::peer(config, Duration::from_secs(self.settings.timeout_secs));
        if let Ok(mut p) = self.peers.lock() {
            // A renewed certificate replaces the client of its address; past 1024 peers
            // the clients start afresh.
            if p.len() > 1024 {
                p.clear();
            }
            p.insert(
                peer.address.clone(),
                (peer.tls_certificate.clone(), client.clone()),
            );
        }
        Ok(client)
    }

    /// Refresh the stapled OCSP answer of the TLS certificate.
    async fn refresh_staple(&self, conf: &GlobalConf) {
        let signing = self
            .status
            .good_answer(self.signer.certificate(), conf)
            .await;
        self.observed.ocsp(
            crate::health::OwnCertificate::Signing,
            signing.as_ref().map(|d| d.as_slice()),
        );
        let tls = self.status.good_answer(self.tls.certificate(), conf).await;
        self.observed.ocsp(
            crate::health::OwnCertificate::Tls,
            tls.as_ref().map(|d| d.as_slice()),
        );
        match tls {
            Ok(der) => {
                if let Err(e) = self.stapled.set_ocsp(der.as_ref().clone()) {
                    tracing::warn!(error = %e, "stapling the OCSP answer failed");
                }
            }
            Err(e) => {
                // A revoked certificate must stop being vouched for at once.
                if e.code == ErrorCode::ExchCertificateStatus {
                    self.stapled.clear_ocsp();
                }
                tracing::warn!(error = %e, "no good OCSP answer for the gateway's TLS certificate");
            }
        }
    }

    /// Download the global configuration once and refresh the staple.
    pub async fn sync(&self, http: &reqwest::Client, anchor: &Anchor) -> Result<(), Error> {
        let refreshed = self
            .conf
            .refresh(http, &self.settings.central_url, anchor)
            .await;
        self.observed.conf_refresh(&refreshed);
        refreshed?;
        if let Some(conf) = self.conf.latest() {
            self.refresh_staple(&conf).await;
        }
        Ok(())
    }
}

/// Start a gateway; binds `tls_listen` from the settings.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let settings: GatewaySettings = config.role_settings(ROLE)?;
    let addr = settings
        .tls_listen
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, "[roles.gateway] needs tls_listen"))?;
    let tls_listener = xalo_core::server::bind(addr).await?;
    serve_with(config, listener, tls_listener).await
}

/// What information systems call, on the plain listener and on the client TLS listener
/// alike: the REST protocol's `/r1/…`, `listClients` and publishing.
fn information_systems_router() -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/r1/{*rest}", any(crate::client_proxy::handle))
        .route("/r1", any(crate::client_proxy::handle))
        .route("/r1/", any(crate::client_proxy::handle))
        .route("/listClients", any(crate::metaservice::list_clients))
        .route("/{first}/{*rest}", any(crate::client_proxy::other_path))
        .route("/publish/{*topic}", post(crate::pubsub::publish))
}

/// Start a gateway on listeners bound already (tests, demo).
pub async fn serve_with(
    config: Config,
    listener: TcpListener,
    tls_listener: TcpListener,
) -> Result<ServerHandle, Error> {
    let settings: GatewaySettings = config.role_settings(ROLE)?;
    let owner = settings
        .owner
        .clone()
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, "[roles.gateway] needs owner"))?;
    let spool_dir = crate::spool::usable_dir(settings.spool_dir.as_deref())?;
    let anchor = Anchor::parse(&settings.central_anchor)?;
    let tls_identity = Identity::from_files(&settings.tls_certificate, &settings.tls_key)?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("{}: {e}", p.display())))
    };
    let signer = MessageSigner::from_pem(
        &read(&settings.signing_certificate)?,
        &read(&settings.signing_key)?,
    )?;
    // A gateway's pool serves small lookups and the log's writer and scans, whose pages
    // need not stay in each of its sixteen connections: with SQLite's default cache,
    // the copies grew a busy gateway by a fifth over a few minutes.
    let db = Database::connect_with(
        &config.database_url(ROLE),
        xalo_store::PoolOptions {
            sqlite_cache_kib: 512,
            ..xalo_store::PoolOptions::default()
        },
    )
    .await?;
    let registry = ServiceRegistry::open(db.clone()).await?;
    registry.set_reuse(Duration::from_millis(settings.registry_cache_ms));
    MessageLog::migrate(&db).await?;
    crate::data_tracker::migrate(&db).await?;
    let topics = crate::topic::TopicRegistry::open(db.clone()).await?;
    let in_flight = xalo_core::batch::InFlight::default();
    let (log, log_task) = MessageLog::start_with(
        db.clone(),
        settings.message_log_retention_days,
        Some(in_flight.clone()),
    );
    log.set_bodies(settings.message_log_bodies);
    let (refusals, refusals_task) = crate::refusal::Refusals::start(&log);
    if let Some(path) = &settings.message_log_encryption_key_file {
        log.set_encryption_key(Some(crate::log_encryption::LogKey::load_or_create(path)?));
    }
    let evidence = match &settings.ledger_url {
        Some(url) => Some(Evidence::new(url)?),
        None => None,
    };
    // At least a second; at most a day (the guard holds a window's messages).
    let replays = crate::replay::ReplayGuard::new(Duration::from_secs(settings.replay_window_secs));
    // The requests served before a restart may not be replayed after it: one signed up to
    // a window ahead of its arrival stays admissible for two windows after it was logged.
    let logged_since = crate::unix_now() - 2 * replays.window_secs() - 1;
    let now_ms = xalo_core::unix_now_ms();
    log.served_signatures_since(logged_since, |text, request_hash| {
        if let (Some((signature, proof)), Some(hash)) = (
            crate::message::parse_logged_signature(text),
            crate::b64().decode(request_hash).ok(),
        ) {
            // Refused: outside the window already, or logged twice.
            let _ = replays.admit(&signature, &proof, &hash, now_ms);
        }
    })
    .await?;
    let backend = crate::hop::HopClient::backend(Duration::from_secs(settings.timeout_secs))?;
    let stapled = StapledCertificate::new(tls_identity.clone())?;
    let client_tls_listener = match settings.client_tls_listen {
        Some(addr) => Some(xalo_core::server::bind(addr).await?),
        None => None,
    };
    let client_tls_addr = match &client_tls_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let batch = BatchSigner::with_in_flight(signer.clone(), Some(in_flight.clone()));
    let state = Arc::new(GatewayState {
        refusals,
        client_tls_addr,
        batch,
        verified: VerifiedSignatures::default(),
        replays,
        encoded: Default::default(),
        decoded: Default::default(),
        name: format!("{owner}/{}", settings.code),
        owner,
        conf: GlobalConfHolder::default(),
        status: StatusCache::new(
            Duration::from_secs(settings.ocsp_reuse_secs),
            Duration::from_secs(settings.ocsp_max_age_secs),
        )?,
        registry,
        topics,
        tls: tls_identity,
        stapled: stapled.clone(),
        signer,
        spool: RwLock::new(SpoolLimits {
            memory: settings.memory_body_bytes,
            max: settings.max_body_bytes,
            dir: spool_dir,
        }),
        backend,
        log,
        evidence,
        peers: Mutex::new(HashMap::new()),
        live: RwLock::new((Arc::new(settings.clone()), Arc::new(config.clone()))),
        reloading: Mutex::new(()),
        grace: ShutdownGrace::new(Duration::from_secs(config.http.shutdown_grace_secs)),
        metrics: crate::metrics::ExchangeMetrics::default(),
        in_flight,
        observed: crate::health::Observed::default(),
        settings,
    });
    let central = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    if let Err(e) = state.sync(&central, &anchor).await {
        tracing::warn!(error = %e, "the first global configuration download failed; retrying");
    }
    let tls_config = tls::server_config(stapled.clone())?;
    let tls_task = tls::serve(
        tls_listener,
        tls_config,
        crate::server_proxy::router(state.clone()).merge(crate::pubsub::peer_router(state.clone())),
    );
    let plain = information_systems_router()
        .merge(admin_router(state.clone()))
        .with_state(state.clone());
    let mut server = Server::new(ROLE, plain, &config.http)
        .health_check(db.health_check())
        .health_report(crate::health::reporter(&state))
        .shutdown_grace(state.grace.clone());
    state.metrics.register(server.registry_mut());
    crate::metrics::ExchangeMetrics::register_batching(
        server.registry_mut(),
        state.batch.batching(),
        state.verified.batching(),
        state.log.batching(),
    );
    server.registry_mut().register(
        "exchange_refusals_unrecorded",
        "Refusals not put on record: over the rate recorded, or their queue full",
        state.refusals.unrecorded(),
    );
    let mut handle = server.spawn(listener)?;
    handle.attach(crate::health::start_timestamper(state.clone()));
    if config.file.is_some()
        && let Some(task) = crate::reload::on_hangup(Arc::downgrade(&state))
    {
        handle.attach(task);
    }
    handle.attach(tls_task);
    handle.attach(log_task);
    handle.attach(refusals_task);
    handle.attach(crate::pubsub::start_delivery(state.clone()));
    if let Some(evidence) = &state.evidence {
        handle.attach(crate::evidence::start_catch_up(
            evidence.clone(),
            state.log.clone(),
            state.name.clone(),
            Duration::from_secs(state.settings.evidence_retry_secs),
        ));
    }
    if let Some(listener) = client_tls_listener {
        let router = information_systems_router().with_state(state.clone());
        handle.attach(tls::serve(listener, tls::server_config(stapled)?, router));
    }
    let poller = state.clone();
    handle.attach(
        tokio::spawn(async move {
            loop {
                // Retry sooner while the configuration is missing or expired.
                let interval = Duration::from_secs(poller.current().poll_secs.max(1));
                let wait = if poller.conf.get().is_ok() {
                    interval
                } else {
                    interval.min(Duration::from_secs(2))
                };
                tokio::time::sleep(wait).await;
                if let Err(e) = poller.sync(&central, &anchor).await {
                    tracing::warn!(error = %e, "global configuration refresh failed");
                }
            }
        })
        .abort_handle(),
    );
    Ok(handle)
}

fn admin_router(state: Arc<GatewayState>) -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/api/v1/services", post(add_service).get(list_services))
        .route("/api/v1/access-rights", post(grant).delete(revoke))
        .route("/api/v1/clients", post(issue_client_key))
        .route("/api/v1/status", get(status))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/refusals", get(crate::refusal::list))
        .merge(crate::pubsub::admin_routes())
        .merge(crate::evidence_export::admin_routes())
        .route("/openapi.json", get(openapi))
        .layer(middleware::from_fn_with_state(state, admin_only))
}

async fn admin_only(State(state): State<Arc<GatewayState>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/openapi.json" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&state.current().admin_token, given) {
        (Some(token), Some(given)) if constant_time_eq(token.as_bytes(), given.as_bytes()) => {
            next.run(req).await
        }
        (None, _) => Error::new(
            ErrorCode::HttpForbidden,
            "the administration API is off (no admin_token)",
        )
        .into_response(),
        _ => Error::new(
            ErrorCode::ExchAdminToken,
            "Authorization: Bearer <admin_token> required",
        )
        .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn own_service(state: &GatewayState, s: &SubsystemId) -> Result<(), Error> {
    if s.member() != &state.owner {
        return Err(Error::new(
            ErrorCode::HttpForbidden,
            format!(
                "{s} is not a subsystem of {}, which owns this gateway",
                state.owner
            ),
        ));
    }
    Ok(())
}

async fn add_service(State(s): State<Arc<GatewayState>>, body: Bytes) -> Result<Response, Error> {
    let new: NewService = json(&body)?;
    own_service(&s, new.service.provider())?;
    let service = s.registry.add_service(&new).await?;
    Ok((StatusCode::CREATED, axum::Json(service)).into_response())
}

async fn list_services(State(s): State<Arc<GatewayState>>) -> Result<Response, Error> {
    let mut out = Vec::new();
    for id in s.registry.services(None).await? {
        if let Some(svc) = s.registry.service(&id).await? {
            out.push(serde_json::json!({
                "service": svc.service,
                "backend_url": svc.backend_url,
                "endpoints": svc.endpoints,
                "access_rights": s.registry.rights(&id).await?.as_slice(),
            }));
        }
    }
    Ok(axum::Json(out).into_response())
}

async fn grant(State(s): State<Arc<GatewayState>>, body: Bytes) -> Result<Response, Error> {
    let r: NewAccessRight = json(&body)?;
    s.registry.grant(&r).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"status": "granted"})),
    )
        .into_response())
}

async fn revoke(State(s): State<Arc<GatewayState>>, body: Bytes) -> Result<Response, Error> {
    let r: NewAccessRight = json(&body)?;
    s.registry.revoke(&r).await?;
    Ok(axum::Json(serde_json::json!({"status": "revoked"})).into_response())
}

#[derive(Deserialize)]
struct NewClient {
    subsystem: SubsystemId,
    /// PEM or base64 DER of the information system's certificate; a key is issued when
    /// none is given.
    #[serde(default)]
    certificate: Option<String>,
}

async fn issue_client_key(
    State(s): State<Arc<GatewayState>>,
    body: Bytes,
) -> Result<Response, Error> {
    let c: NewClient = json(&body)?;
    own_service(&s, &c.subsystem)?;
    if let Some(cert) = &c.certificate {
        let der = crate::registry::certificate_der(cert)?;
        let fingerprint = s
            .registry
            .register_client_certificate(&c.subsystem, &der)
            .await?;
        return Ok((
            StatusCode::CREATED,
            axum::Json(serde_json::json!({"subsystem": c.subsystem, "certificate": fingerprint})),
        )
            .into_response());
    }
    let key = s.registry.issue_client_key(&c.subsystem).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"subsystem": c.subsystem, "key": key, "header": crate::message::CLIENT_KEY})),
    )
        .into_response())
}

async fn status(State(s): State<Arc<GatewayState>>) -> Result<Response, Error> {
    let conf = s.conf.latest();
    Ok(axum::Json(serde_json::json!({
        "gateway": s.name,
        "client_tls_address": s.client_tls_addr,
        "global_conf_version": conf.as_ref().map(|c| c.version),
        "global_conf_expires_unix": s.conf.validity().map(|v| v.expires_unix),
        "tls_certificate": crate::fingerprint(s.tls.certificate()),
        "signing_certificate": crate::fingerprint(s.signer.certificate()),
    }))
    .into_response())
}

async fn reload(State(s): State<Arc<GatewayState>>) -> Result<Response, Error> {
    let changed = crate::reload::reload(&s)?;
    Ok(axum::Json(serde_json::json!({"status": "reloaded", "changed": changed})).into_response())
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// The gateway's administration API, described by hand.
pub const OPENAPI: &str = include_str!("gateway_openapi.json");
