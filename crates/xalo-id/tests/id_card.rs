//! ID-card login: the person's authentication certificate (as `xalo pki` issues and
//! exports it) presented as a TLS client certificate.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xalo_trust::{IssueRequest, KeyAlgorithm, KeySource, Pki, PkiSettings, Profile, Subject};

use crate::nation::*;

/// The test trusts the provider's self-signed listener certificate as a browser would
/// after the person accepts it.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn card_get(
    port: u16,
    path: &str,
    cookie: &str,
    card: Option<(Vec<Vec<u8>>, Vec<u8>)>,
) -> String {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer));
    let config = match card {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                chain.into_iter().map(CertificateDer::from).collect(),
                PrivateKeyDer::try_from(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    // rustls's client offers AES-256 first; the listener picks what browsers prefer.
    assert_eq!(
        tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn id_card_login_by_tls_client_certificate() {
    card_logs_in_until_revoked(Nation::start().await).await;
}

/// Asked without a nonce, the responder answers from its cache, yet a revocation is still
/// refused at the next login; the repeated answer is verified once.
#[tokio::test]
async fn id_card_login_asking_ocsp_without_a_nonce() {
    card_logs_in_until_revoked(
        Nation::start_with(serde_json::json!({ "ocsp_nonce": false })).await,
    )
    .await;
}

async fn card_logs_in_until_revoked(n: Nation) {
    let pki = Pki::open(n.trust_db.db.clone(), PkiSettings::new(n.trust.url()))
        .await
        .unwrap();
    let code: xalo_core::PersonalCode = "VN079199000123".parse().unwrap();
    let issued = pki
        .issue(&IssueRequest {
            profile: Profile::PersonAuthentication,
            subject: Subject::person(&code, "BÌNH", "TRẦN"),
            key: KeySource::Generate(KeyAlgorithm::P256),
            validity_days: 365,
        })
        .await
        .unwrap();
    // The card as `xalo pki` exports it is a PKCS#12; the same key and chain go here.
    let _p12 = pki
        .export_pkcs12(&issued.record.serial, "1234")
        .await
        .unwrap();
    let chain = vec![issued.record.certificate.clone(), issued.chain[0].clone()];
    let key = issued.private_key.clone().unwrap();

    let mut b = Browser::new();
    let r = b.get(&authorize_url(&n, "portal", "")).await;
    assert_eq!(r.status(), 303);
    let cookie = b.cookie(&n.id.url()).unwrap();
    let html = b
        .get(&format!("{}/login", n.id.url()))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&format!("https://127.0.0.1:{}/idcard", n.id_card_port))
            || html.contains("/idcard"),
        "{html}"
    );

    // Without a card: a readable refusal.
    let answer = card_get(n.id_card_port, "/idcard", &cookie, None).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // With the card: back to the service with a code.
    let answer = card_get(
        n.id_card_port,
        "/idcard",
        &cookie,
        Some((chain.clone(), key.clone())),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let location = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("location:"))
        .unwrap();
    assert!(
        location.contains("code=") && location.contains("state=st4te"),
        "{location}"
    );

    // Again, in a new login: the card is asked about again and still good. Once revoked,
    // it is refused (OCSP) at the next login.
    for (revoked, expected) in [(false, "HTTP/1.1 303"), (true, "HTTP/1.1 401")] {
        if revoked {
            pki.revoke(
                &issued.record.serial,
                xalo_trust::RevocationReason::KeyCompromise,
                None,
            )
            .await
            .unwrap();
        }
        let r = b.get(&authorize_url(&n, "portal", "")).await;
        assert_eq!(r.status(), 303);
        let card = Some((chain.clone(), key.clone()));
        let answer = card_get(n.id_card_port, "/idcard", &cookie, card).await;
        assert!(answer.starts_with(expected), "revoked {revoked}: {answer}");
    }
}
