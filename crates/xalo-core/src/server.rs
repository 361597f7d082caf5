//! Server plumbing shared by every role: `/healthz`, `/metrics`, coded errors for every
//! rejection, body limits, request metrics and graceful shutdown.
//!
//! A role builds an axum [`Router`] and hands it, with a bound listener, to
//! [`Server::spawn`]. Binding is the caller's business, so tests bind port 0 and ask the
//! returned [`ServerHandle`] for its address.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::HttpConfig;
use crate::{Error, ErrorCode};

/// A readiness probe: `/healthz` answers 503 with its error when it fails.
pub type HealthCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + Sync>;

/// How a role judges its own state beyond "reachable".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Ok,
    /// Working, but something needs an operator soon (a certificate about to expire, a
    /// refresh that failed while the old answer still holds).
    Degraded,
    /// Not fit to serve; `/healthz` answers 503.
    Unhealthy,
}

/// A role's detailed health: the worst state of its checks, and each check's detail.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub state: HealthState,
    pub checks: serde_json::Map<String, serde_json::Value>,
}

/// Builds a [`HealthReport`] on every `/healthz` call.
pub type HealthReporter =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = HealthReport> + Send>> + Send + Sync>;

/// The shutdown grace period of a running server, changeable while it runs (a
/// configuration reload sets it).
#[derive(Clone, Debug)]
pub struct ShutdownGrace(Arc<AtomicU64>);

impl ShutdownGrace {
    pub fn new(grace: Duration) -> Self {
        ShutdownGrace(Arc::new(AtomicU64::new(grace.as_millis() as u64)))
    }
    pub fn set(&self, grace: Duration) {
        self.0.store(grace.as_millis() as u64, Ordering::Relaxed);
    }
    pub fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    role: String,
}

#[derive(Clone)]
struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
}

/// A role's HTTP server before it starts.
pub struct Server {
    role: &'static str,
    router: Router,
    registry: Registry,
    health: Option<HealthCheck>,
    report: Option<HealthReporter>,
    grace: Option<ShutdownGrace>,
    http: HttpConfig,
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    role: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<crate::error::ErrorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Server {
    pub fn new(role: &'static str, router: Router, http: &HttpConfig) -> Self {
        Server {
            role,
            router,
            registry: Registry::with_prefix("xalo"),
            health: None,
            report: None,
            grace: None,
            http: http.clone(),
        }
    }

    /// Make `/healthz` include this report: 200 while `ok` or `degraded`, 503 when
    /// `unhealthy` (or when the [`Server::health_check`] fails).
    pub fn health_report(mut self, report: HealthReporter) -> Self {
        self.report = Some(report);
        self
    }

    /// Use this grace period, which the role may change while running, instead of the
    /// fixed one of the HTTP configuration.
    pub fn shutdown_grace(mut self, grace: ShutdownGrace) -> Self {
        self.grace = Some(grace);
        self
    }

    /// The Prometheus registry of this server, for the role's own metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Make `/healthz` run this check (a database ping, say) on every call.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.health = Some(check);
        self
    }

    /// Serve on `listener` until [`ServerHandle::shutdown`] is called.
    pub fn spawn(mut self, listener: TcpListener) -> Result<ServerHandle, Error> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::new(ErrorCode::ServerBind, e.to_string()))?;
        let metrics = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
            }),
        };
        self.registry.register(
            "http_requests",
            "HTTP requests answered",
            metrics.requests.clone(),
        );
        self.registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            metrics.duration.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::VERSION.into(),
                role: self.role.into(),
            })
            .set(1);
        self.registry
            .register("build_info", "Version and role of this server", build);

        let registry = Arc::new(self.registry);
        let role = self.role;
        let health = self.health.clone();
        let report = self.report.clone();
        let router = self
            .router
            .route(
                "/healthz",
                get(move || healthz(role, health.clone(), report.clone())),
            )
            .route(
                "/metrics",
                get(move || {
                    let registry = registry.clone();
                    async move { metrics_text(&registry) }
                }),
            )
            .fallback(not_found)
            .layer(middleware::from_fn(coded_rejections))
            .layer(middleware::from_fn_with_state(metrics, record))
            .layer(DefaultBodyLimit::max(self.http.max_body_bytes));

        let (tx, mut rx) = watch::channel(false);
        let grace = self.grace.clone().unwrap_or_else(|| {
            ShutdownGrace::new(Duration::from_secs(self.http.shutdown_grace_secs))
        });
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            let serve = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown);
            serve
                .await
                .map_err(|e| Error::new(ErrorCode::ServerIo, e.to_string()))
        });
        tracing::info!(role, %addr, "listening");
        Ok(ServerHandle {
            role,
            addr,
            stop: tx,
            grace,
            task,
            background: Vec::new(),
            endpoints: Vec::new(),
        })
    }
}

async fn healthz(
    role: &'static str,
    check: Option<HealthCheck>,
    report: Option<HealthReporter>,
) -> Response {
    let result = match check {
        Some(check) => check().await,
        None => Ok(()),
    };
    let report = match report {
        Some(report) => Some(report().await),
        None => None,
    };
    let state = report.as_ref().map_or(HealthState::Ok, |r| r.state);
    let checks = report.map(|r| r.checks);
    let (status, body) = match &result {
        Ok(()) => (
            if state == HealthState::Unhealthy {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            },
            Health {
                status: match state {
                    HealthState::Ok => "ok",
                    HealthState::Degraded => "degraded",
                    HealthState::Unhealthy => "unhealthy",
                },
                role,
                version: crate::VERSION,
                error: None,
                checks,
            },
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                status: "unavailable",
                role,
                version: crate::VERSION,
                error: Some(e.into()),
                checks,
            },
        ),
    };
    (status, axum::Json(body)).into_response()
}

fn metrics_text(registry: &Registry) -> Response {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, registry) {
        return Error::new(ErrorCode::Internal, format!("encoding metrics: {e}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn not_found(req: Request) -> Error {
    Error::new(
        ErrorCode::HttpNotFound,
        format!("no resource at {}", req.uri().path()),
    )
}

async fn record(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    // The matched route, not the raw path, keeps label cardinality bounded.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    m.requests.get_or_create(&labels).inc();
    m.duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// A response extension: this error's body is not the server's to recode, as when a gateway
/// passes on a backend's own answer or speaks a protocol's own error format.
/// [`coded_rejections`] passes such a response as it is.
#[derive(Debug, Clone, Copy)]
pub struct AsAnswered;

/// axum's own rejections (body too large, wrong method, bad JSON) are plain text; give them
/// the coded JSON body every other error has.
async fn coded_rejections(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
    if is_json
        || response.extensions().get::<AsAnswered>().is_some()
        || response.headers().contains_key("x-xalo-raw-error")
    {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::HttpBodyTooLarge,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::HttpMethodNotAllowed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::HttpUnsupportedMediaType,
        StatusCode::NOT_FOUND => ErrorCode::HttpNotFound,
        StatusCode::UNAUTHORIZED => ErrorCode::HttpUnauthorized,
        StatusCode::FORBIDDEN => ErrorCode::HttpForbidden,
        s if s.is_client_error() => ErrorCode::HttpBadRequest,
        _ => return response,
    };
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let mut coded = Error::new(code, String::from_utf8_lossy(&text).into_owned()).into_response();
    // Keep the status axum chose (e.g. 422 for JSON that does not fit the schema).
    *coded.status_mut() = parts.status;
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        coded.headers_mut().insert(header::ALLOW, allow.clone());
    }
    coded
}

/// A running server.
pub struct ServerHandle {
    role: &'static str,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    grace: ShutdownGrace,
    task: JoinHandle<Result<(), Error>>,
    background: Vec<tokio::task::AbortHandle>,
    endpoints: Vec<(&'static str, String)>,
}

impl ServerHandle {
    pub fn role(&self) -> &'static str {
        self.role
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// `http://ADDR`, for tests and the demo's printout.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The grace period [`ServerHandle::shutdown`] waits, changeable while running.
    pub fn shutdown_grace(&self) -> ShutdownGrace {
        self.grace.clone()
    }

    /// Tie a background task of the role (a checkpoint signer, a poller) to this server:
    /// it is stopped when the server shuts down.
    pub fn attach(&mut self, task: tokio::task::AbortHandle) {
        self.background.push(task);
    }

    /// Name a second listener of the role (the ID-card TLS port), so that whoever started
    /// it on port 0 learns where it landed without binding and releasing a port first.
    pub fn announce(&mut self, name: &'static str, url: String) {
        self.endpoints.push((name, url));
    }

    /// The URL announced under `name`, if the role opened such a listener.
    pub fn endpoint(&self, name: &str) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, u)| u.as_str())
    }

    /// Stop accepting connections and wait, up to the grace period, for open requests.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        for task in &self.background {
            task.abort();
        }
        let role = self.role;
        match tokio::time::timeout(self.grace.get(), self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::new(
                ErrorCode::Internal,
                format!("{role} server task failed: {join}"),
            )),
            Err(_) => {
                tracing::warn!(role, "open requests outlived the shutdown grace period");
                Ok(())
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Bind a TCP listener, with the address in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(ErrorCode::ServerBind, format!("{addr}: {e}")))
}
