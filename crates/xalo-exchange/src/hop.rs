//! The HTTP client of a message's hops: to the provider's gateway (mutual TLS, pinned) and
//! to a service's backend. hyper's pooled client, used directly: reqwest's URL parsing
//! (twice per request, and once more in its redirect policy), its redirect and retry
//! layers and its header merging were 8% of a busy gateway's CPU (perf, 64 clients), for
//! features a hop does not use (a hop never follows a redirect; it passes it back).
//!
//! hyper-util runs each connection as a task of its own, and hands it the request and the
//! caller the answer over channels. Connections driven by the caller's own task, in a pool
//! of ours, measured no faster (at 5,000/s offered, three pairs in turns: p50 +3.23 to
//! +6.50 ms against +3.31 to +5.16 ms, the same CPU), likely because tokio runs a task
//! woken by another on its thread next, so those hand-offs wait for no turn.
//!
//! One deadline bounds the whole hop, the answer's body included, as reqwest's total
//! timeout did.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use xalo_core::{Error, ErrorCode};

/// Idle connections kept per peer or backend.
const IDLE_PER_HOST: usize = 256;

/// Why a hop failed.
#[derive(Debug)]
pub enum HopError {
    /// No connection: refused, unreachable, or the TLS handshake failed (`tls`).
    Connect { tls: bool, message: String },
    /// No complete answer within the hop's time.
    Timeout(Duration),
    /// The connection broke, or the answer was not HTTP.
    Broken(String),
}

impl HopError {
    pub fn is_connect(&self) -> bool {
        matches!(self, HopError::Connect { .. })
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, HopError::Connect { tls: true, .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, HopError::Timeout(_))
    }

    fn of(e: &(dyn std::error::Error + 'static), connect: bool) -> HopError {
        let message = chain(e);
        if connect {
            HopError::Connect {
                tls: crate::tls::is_tls_error(e),
                message,
            }
        } else {
            HopError::Broken(message)
        }
    }
}

/// An error and its causes, on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl std::fmt::Display for HopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HopError::Connect { message, .. } | HopError::Broken(message) => f.write_str(message),
            HopError::Timeout(t) => write!(f, "no answer within {} s", t.as_secs()),
        }
    }
}

impl std::error::Error for HopError {}

/// A pooled HTTP/1.1 client for one kind of hop.
#[derive(Clone, Debug)]
pub struct HopClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    timeout: Duration,
}

/// An answer's status and headers; its body streams within the hop's deadline.
pub struct HopResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    deadline: Instant,
    timeout: Duration,
}

impl HopClient {
    /// To other gateways: HTTPS only, with `config` (client certificate, pinned server).
    pub fn peer(config: rustls::ClientConfig, timeout: Duration) -> HopClient {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .wrap_connector(connector());
        Self::with(connector, timeout)
    }

    /// To backends: HTTP, or HTTPS trusting the public roots of the web.
    pub fn backend(timeout: Duration) -> Result<HopClient, Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorCode::Internal, format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector());
        Ok(Self::with(connector, timeout))
    }

    fn with(connector: hyper_rustls::HttpsConnector<HttpConnector>, timeout: Duration) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .build(connector);
        HopClient { client, timeout }
    }

    /// Send a request; the answer's head within the hop's time, its body by the same
    /// deadline.
    pub async fn send(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Body,
    ) -> Result<HopResponse, HopError> {
        let mut request = axum::http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let deadline = Instant::now() + self.timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => return Err(HopError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(HopError::of(&e, e.is_connect())),
            Ok(Ok(r)) => r,
        };
        let (parts, body) = response.into_parts();
        Ok(HopResponse {
            status: parts.status,
            headers: parts.headers,
            body,
            deadline,
            timeout: self.timeout,
        })
    }
}

fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    // The TLS connector above decides the schemes.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http
}

impl HopResponse {
    /// The body as it arrives, ending in a timeout error at the hop's deadline.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, HopError>> + Unpin + Send {
        let (deadline, timeout) = (self.deadline, self.timeout);
        let data = Body::new(self.body)
            .into_data_stream()
            .map(|chunk| chunk.map_err(|e| HopError::Broken(chain(&e))));
        Box::pin(futures_util::stream::unfold(
            (data, false),
            move |(mut data, done)| async move {
                if done {
                    return None;
                }
                match tokio::time::timeout_at(deadline, data.next()).await {
                    Ok(Some(chunk)) => Some((chunk, (data, false))),
                    Ok(None) => None,
                    Err(_) => Some((Err(HopError::Timeout(timeout)), (data, true))),
                }
            },
        ))
    }

    /// The whole body, when it is at most `limit` bytes (an error's JSON).
    pub async fn text(self, limit: usize) -> String {
        let mut stream = self.into_stream();
        let mut out = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.extend_from_slice(&chunk);
            if out.len() > limit {
                out.truncate(limit);
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
