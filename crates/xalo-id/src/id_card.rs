//! ID-card login: a separate HTTPS listener that asks the browser for a client certificate,
//! as Estonia's ID-card login does. rustls proves that the browser holds the certificate's
//! key (the handshake signature); the handler then checks the certificate itself (the
//! national persons CA, validity, OCSP) and finishes the sign-in of the session.
//!
//! The listener shares the host (not the port) of the provider, so the browser sends the
//! provider's session cookie to it, and the login lands in the session that started it.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Row};
use xalo_web::Session;

use crate::identity::{self, Method};
use crate::provider::{AuthRequest, Provider, finish};
use crate::text::Text;

/// The client certificate of the TLS connection, if the browser sent one.
#[derive(Clone)]
pub struct PeerCertificate(pub Option<Vec<u8>>);

/// Accepts any client certificate at the TLS layer but checks the handshake signature,
/// which proves possession of the key; the certificate's path and status are checked
/// afterwards with an error page the person can read, not a failed handshake.
#[derive(Debug)]
struct PossessionOnly {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PossessionOnly {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn tls_error(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ExchTls, format!("ID-card listener: {e}"))
}

/// The listener's own TLS certificate, made once and kept so every instance shows the same.
pub(crate) async fn server_identity(db: &Database, host: &str) -> Result<(String, String), Error> {
    let row = xalo_store::sqlx::query(
        "SELECT certificate_pem, key_pem FROM id_tls_identity WHERE name = 'id-card'",
    )
    .fetch_optional(db.pool())
    .await
    .db("reading the TLS identity")?;
    if let Some(r) = row {
        return Ok((
            r.try_get(0).db("TLS identity")?,
            r.try_get(1).db("TLS identity")?,
        ));
    }
    let names = vec![host.to_owned(), "localhost".to_owned()];
    let cert = rcgen::generate_simple_self_signed(names).map_err(tls_error)?;
    let pair = (cert.cert.pem(), cert.signing_key.serialize_pem());
    xalo_store::sqlx::query(
        "INSERT INTO id_tls_identity (name, certificate_pem, key_pem) VALUES ('id-card', $1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(pair.0.clone())
    .bind(pair.1.clone())
    .execute(db.pool())
    .await
    .db("storing the TLS identity")?;
    // Another instance may have won the race: use what is stored.
    Box::pin(server_identity(db, host)).await.or(Ok(pair))
}

fn pem_der(pem: &str) -> Result<Vec<u8>, Error> {
    let (_, der) = xalo_trust::key::pem_decode(pem)?;
    Ok(der)
}

/// Start the ID-card listener; the task ends with the provider.
pub async fn spawn(provider: Provider, listener: TcpListener) -> Result<AbortHandle, Error> {
    let inner = provider.inner();
    let host = inner
        .id_card_url
        .as_deref()
        .and_then(|u| u.split("://").nth(1))
        .and_then(|h| h.split([':', '/']).next())
        .unwrap_or("localhost")
        .to_owned();
    let (cert_pem, key_pem) = server_identity(&inner.db, &host).await?;
    // Every login is a handshake: the listener picks AES-128-GCM with SHA-256 (as
    // browsers prefer it), whose key schedule runs on the CPU's SHA instructions, rather
    // than the client's first choice, which for rustls is AES-256 with SHA-384.
    let mut crypto = rustls::crypto::ring::default_provider();
    crypto
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let crypto = Arc::new(crypto);
    let verifier = Arc::new(PossessionOnly {
        algorithms: crypto.signature_verification_algorithms,
    });
    let key = PrivateKeyDer::try_from(pem_der(&key_pem)?).map_err(tls_error)?;
    let config = rustls::ServerConfig::builder_with_provider(crypto)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(pem_der(&cert_pem)?)], key)
        .map_err(tls_error)?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let router = Router::new()
        .route("/idcard", get(login))
        .layer(axum::middleware::from_fn_with_state(
            inner.sessions.clone(),
            xalo_web::session::middleware,
        ))
        .with_state(provider.clone());
    let addr = listener.local_addr().map_err(tls_error)?;
    tracing::info!(%addr, "ID-card listener");
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.as_ref().to_vec());
                let service = router
                    .layer(Extension(PeerCertificate(cert)))
                    .layer(Extension(ConnectInfo(peer)));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    Ok(task.abort_handle())
}

fn page(
    session: &Session,
    uri: &Uri,
    status: StatusCode,
    message: &str,
) -> Result<Response, Error> {
    use axum::response::IntoResponse;
    let text = Text::get(session.lang);
    let body = format!(
        "<p role=\"alert\">{}</p>",
        message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    );
    let html = xalo_web::html(&xalo_web::Page {
        lang: session.lang,
        title: text.failed_title,
        uri,
        body,
    })?;
    let mut r = (status, html).into_response();
    r.headers_mut().insert(
        "x-xalo-raw-error",
        axum::http::HeaderValue::from_static("1"),
    );
    Ok(r)
}

async fn login(
    State(p): State<Provider>,
    Extension(mut session): Extension<Session>,
    Extension(PeerCertificate(cert)): Extension<PeerCertificate>,
    uri: Uri,
) -> Result<Response, Error> {
    let text = Text::get(session.lang);
    let Some(request) = session.get::<AuthRequest>("authz") else {
        return page(&session, &uri, StatusCode::BAD_REQUEST, text.no_request);
    };
    let Some(cert) = cert else {
        return page(&session, &uri, StatusCode::UNAUTHORIZED, text.login_failed);
    };
    let inner = p.inner();
    let checker = inner
        .certificates
        .as_ref()
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, "no trust service"))?;
    let person = match checker.check(&cert).await {
        Ok(person) => person,
        Err(e) => {
            tracing::warn!(error = %e, "ID-card certificate refused");
            return page(&session, &uri, StatusCode::UNAUTHORIZED, text.login_failed);
        }
    };
    let identity = identity::complete(
        &inner.http,
        inner.settings.registry_url.as_deref(),
        person.code,
        (person.given_name, person.surname),
        Method::IdCard,
        None,
    )
    .await;
    finish(&p, &mut session, &request, identity).await
}
