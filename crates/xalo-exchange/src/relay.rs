//! A bare forwarder with the gateways' HTTP and TLS and none of the exchange's work: the
//! server the gateways run for information systems (or, with TLS, their mutual-TLS
//! listener), the hops' pooled client with its pinned peer, and nothing between (no
//! checks, signatures, log or access rights).
//!
//! `xalo bench exchange` sends the same paced load through two of them, each in its own
//! process as the gateways are, so that a run shows what moving a message through two more
//! processes and a TLS hop costs on its machine beside what the gateways cost: the part of
//! the added latency no exchange work could remove.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tokio::net::TcpListener;
use xalo_core::{Error, ErrorCode};

use crate::hop::HopClient;
use crate::tls::{Identity, PinnedServer};

/// What a relay forwards, and how.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// Where requests go: `http://…`, or `https://…` (mutual TLS, then `identity` and
    /// `upstream_certificate` are required).
    pub upstream: String,
    /// The only certificate the upstream may present (DER), as a gateway pins its peer's.
    pub upstream_certificate: Option<Vec<u8>>,
    /// This relay's certificate and key: presented to a TLS upstream, and served when
    /// `inbound_tls`.
    pub identity: Option<Identity>,
    /// Accept mutual TLS (any client certificate, as a gateway's listener does before it
    /// looks the certificate up) instead of plain HTTP.
    pub inbound_tls: bool,
}

/// A running relay; dropping it (or [`RelayHandle::shutdown`]) stops it.
pub struct RelayHandle {
    url: String,
    plain: Option<xalo_core::server::ServerHandle>,
    tls: Option<tokio::task::AbortHandle>,
}

impl RelayHandle {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(t) = self.tls.take() {
            t.abort();
        }
        match self.plain.take() {
            Some(p) => p.shutdown().await,
            None => Ok(()),
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        if let Some(t) = &self.tls {
            t.abort();
        }
    }
}

struct Forwarder {
    client: HopClient,
    upstream: String,
}

fn spec_error(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::ConfigInvalid, m)
}

/// Start forwarding what arrives on `listener`.
pub async fn start(spec: RelaySpec, listener: TcpListener) -> Result<RelayHandle, Error> {
    let timeout = Duration::from_secs(30);
    let upstream = spec.upstream.trim_end_matches('/').to_owned();
    let client = if upstream.starts_with("https://") {
        let (Some(identity), Some(pinned)) = (&spec.identity, &spec.upstream_certificate) else {
            return Err(spec_error(
                "a TLS upstream needs the relay's identity and the upstream's certificate",
            ));
        };
        let verifier = PinnedServer::new(pinned.clone(), None);
        HopClient::peer(
            crate::tls::client_config(identity, Arc::new(verifier))?,
            timeout,
        )
    } else if upstream.starts_with("http://") {
        if spec.upstream_certificate.is_some() {
            return Err(spec_error(
                "a pinned certificate is for an https:// upstream, not http://",
            ));
        }
        HopClient::backend(timeout)?
    } else {
        return Err(spec_error(format!(
            "{upstream}: the upstream is an http:// or https:// URL"
        )));
    };
    // Routes, not a fallback: the role server sets its own fallback (and keeps /healthz).
    let router = Router::new()
        .route("/", any(forward))
        .route("/{*rest}", any(forward))
        .with_state(Arc::new(Forwarder { client, upstream }));
    let addr: SocketAddr = listener.local_addr()?;
    if spec.inbound_tls {
        let identity = spec
            .identity
            .ok_or_else(|| spec_error("a TLS relay needs its identity"))?;
        let config = crate::tls::server_config(crate::tls::StapledCertificate::new(identity)?)?;
        Ok(RelayHandle {
            url: format!("https://{addr}"),
            plain: None,
            tls: Some(crate::tls::serve(listener, config, router)),
        })
    } else {
        let http = xalo_core::config::HttpConfig::default();
        let handle = xalo_core::server::Server::new("relay", router, &http).spawn(listener)?;
        Ok(RelayHandle {
            url: handle.url(),
            plain: Some(handle),
            tls: None,
        })
    }
}

/// Pass the request on as it came (less the hop-by-hop headers a gateway drops too), and
/// the answer back as it streams.
async fn forward(State(relay): State<Arc<Forwarder>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("{}{target}", relay.upstream).parse() {
        Ok(u) => u,
        Err(e) => {
            return Error::new(ErrorCode::HttpBadRequest, format!("{target}: {e}")).into_response();
        }
    };
    let response = match relay
        .client
        .send(parts.method, uri, passing(&parts.headers, false), body)
        .await
    {
        Ok(r) => r,
        Err(e) => return Error::new(ErrorCode::ExchUpstream, e.to_string()).into_response(),
    };
    // The answer keeps its length, so it goes on as the gateways' does, not chunked.
    let (status, headers) = (response.status, passing(&response.headers, true));
    let mut answer = Response::new(Body::from_stream(response.into_stream()));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
        .extensions_mut()
        .insert(xalo_core::server::AsAnswered);
    answer
}

fn passing(headers: &HeaderMap, keep_length: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let length = keep_length && name == axum::http::header::CONTENT_LENGTH;
        if length || !crate::message::is_filtered(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}
