//! Mutual TLS between gateways (and towards the central server's management API).
//!
//! X-Road authenticates a gateway by the exact certificate the central server registered
//! for it, not by a name in it, so the verifiers here check possession of the key (the
//! handshake signature) and hand the certificate to the application, which compares it
//! with the global configuration. The server staples its OCSP answer to the handshake,
//! so a client learns the server's certificate status without asking the responder.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::TcpListener;
use tower::ServiceExt;
use xalo_core::{Error, ErrorCode};

fn tls_error(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ExchTls, e.to_string())
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// A certificate (with its chain) and its private key.
#[derive(Clone)]
pub struct Identity {
    /// The end-entity certificate first, then any issuers.
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificate", &crate::fingerprint(self.certificate()))
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn certificate(&self) -> &[u8] {
        self.chain.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// From PEM text: certificates, then a PKCS#8 `PRIVATE KEY` block.
    pub fn from_pem(certificates: &str, key: &str) -> Result<Identity, Error> {
        let chain = xalo_trust::authority::read_certificates(certificates.as_bytes())
            .map_err(|e| Error::new(ErrorCode::ExchCertificate, e.message))?;
        if chain.is_empty() {
            return Err(Error::new(
                ErrorCode::ExchCertificate,
                "no certificate in PEM",
            ));
        }
        let key = xalo_trust::SigningKey::from_pem(key)?;
        Ok(Identity {
            chain,
            key_pkcs8: key.pkcs8_der().to_vec(),
        })
    }

    pub fn from_files(certificates: &Path, key: &Path) -> Result<Identity, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("{}: {e}", p.display())))
        };
        Self::from_pem(&read(certificates)?, &read(key)?)
    }

    fn certified_key(&self, ocsp: Option<Vec<u8>>) -> Result<CertifiedKey, Error> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(tls_error)?;
        let mut ck = CertifiedKey::new(
            self.chain
                .iter()
                .map(|c| CertificateDer::from(c.clone()))
                .collect(),
            signer,
        );
        ck.ocsp = ocsp;
        Ok(ck)
    }
}

/// Accepts any client certificate whose key signs the handshake; who it belongs to is the
/// application's question.
#[derive(Debug)]
struct PresentedCertificate;

impl ClientCertVerifier for PresentedCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// The server's certificate and its current OCSP staple, replaceable while serving.
#[derive(Debug)]
pub struct StapledCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    identity: Identity,
}

impl StapledCertificate {
    pub fn new(identity: Identity) -> Result<Arc<Self>, Error> {
        let ck = identity.certified_key(None)?;
        Ok(Arc::new(StapledCertificate {
            current: RwLock::new(Arc::new(ck)),
            identity,
        }))
    }

    /// Staple a fresh OCSP answer (DER) to future handshakes.
    pub fn set_ocsp(&self, der: Vec<u8>) -> Result<(), Error> {
        let ck = Arc::new(self.identity.certified_key(Some(der))?);
        if let Ok(mut c) = self.current.write() {
            *c = ck;
        }
        Ok(())
    }
}

impl StapledCertificate {
    /// Staple nothing (the certificate is no longer good).
    pub fn clear_ocsp(&self) {
        if let (Ok(ck), Ok(mut c)) = (self.identity.certified_key(None), self.current.write()) {
            *c = Arc::new(ck);
        }
    }
}

impl ResolvesServerCert for StapledCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// A server configuration that requires a client certificate.
pub fn server_config(certificate: Arc<StapledCertificate>) -> Result<rustls::ServerConfig, Error> {
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_client_cert_verifier(Arc::new(PresentedCertificate))
        .with_cert_resolver(certificate))
}

/// Checks the stapled OCSP answer of the server's certificate; `Err` says why it is bad.
pub type StapleCheck = Arc<dyn Fn(&[u8], &[u8]) -> Result<(), String> + Send + Sync>;

/// Trusts exactly one server certificate (the one registered for the gateway called),
/// whatever name it carries, and optionally requires a good stapled OCSP answer.
pub struct PinnedServer {
    expected: Vec<u8>,
    staple: Option<StapleCheck>,
}

impl std::fmt::Debug for PinnedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedServer")
            .field("expected", &crate::fingerprint(&self.expected))
            .finish_non_exhaustive()
    }
}

impl PinnedServer {
    pub fn new(expected: Vec<u8>, staple: Option<StapleCheck>) -> Self {
        PinnedServer { expected, staple }
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() != self.expected.as_slice() {
            return Err(rustls::Error::General(
                "the server presented a certificate other than the one registered for it".into(),
            ));
        }
        if let Some(check) = &self.staple {
            if ocsp_response.is_empty() {
                return Err(rustls::Error::General(
                    "the server stapled no OCSP answer to its certificate".into(),
                ));
            }
            check(end_entity.as_ref(), ocsp_response).map_err(rustls::Error::General)?;
        }
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// A client configuration that presents `identity` and trusts the server `verifier` does.
pub fn client_config(
    identity: &Identity,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, Error> {
    let chain = identity
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8.clone()));
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(tls_error)
}

/// An HTTP client over mutual TLS with `config`.
pub fn http_client(
    config: rustls::ClientConfig,
    timeout: Duration,
) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(256)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(tls_error)
}

/// Whether an error is, or was caused by, a TLS failure.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // The rustls error may arrive wrapped in an io::Error.
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The client certificate of a TLS connection, in each request's extensions.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// The remote address of a TLS connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Tells the open connections to stop when the accepting task ends (it is aborted).
struct StopOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Serve `router` over TLS on `listener` until the returned task is aborted; then each
/// open connection finishes the request it is serving and closes, so that no connection
/// outlives the gateway and serves with what it has shut down.
pub fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    router: Router,
) -> tokio::task::AbortHandle {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _stop = StopOnDrop(stop);
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let router = router.clone();
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                let tls =
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| PeerCertificate(Arc::new(c.as_ref().to_vec())));
                let service = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        if let Some(p) = &peer {
                            req.extensions_mut().insert(p.clone());
                        }
                        req.extensions_mut().insert(PeerAddr(addr));
                        router.clone().oneshot(req.map(axum::body::Body::new))
                    },
                );
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service);
                tokio::pin!(conn);
                let ended = tokio::select! {
                    ended = conn.as_mut() => ended,
                    // Stopping (or the sender gone, which is the same).
                    () = async { drop(stopping.wait_for(|s| *s).await) } => {
                        conn.as_mut().graceful_shutdown();
                        // A request that will not end (a peer sending or reading slowly)
                        // does not keep the connection past a minute.
                        match tokio::time::timeout(Duration::from_secs(60), conn).await {
                            Ok(ended) => ended,
                            Err(_) => Ok(()),
                        }
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(%addr, error = %e, "TLS connection ended with an error");
                }
            });
        }
    })
    .abort_handle()
}
