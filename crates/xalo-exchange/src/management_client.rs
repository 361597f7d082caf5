//! The client of the central server's management API, for `xalo member add`,
//! `xalo subsystem add`, `xalo gateway register` and the demo. It authenticates with an
//! administrator's certificate and accepts the server's certificate when it chains to the
//! trust service's root (the management address is often an IP, which names nothing).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use xalo_core::error::ErrorBody;
use xalo_core::{ClientId, Error, ErrorCode, MemberId, SubsystemId};
use xalo_trust::chain::{TrustAnchors, verify_path};

use crate::global_conf::GlobalConf;
use crate::registry::{
    NewAuthority, NewGateway, NewGroup, NewGroupMember, NewMember, NewSubsystem,
};
use crate::tls::{self, Identity};

#[derive(Debug)]
struct ChainedServer {
    anchors: TrustAnchors,
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

impl ServerCertVerifier for ChainedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let inter: Vec<Vec<u8>> = intermediates.iter().map(|c| c.as_ref().to_vec()).collect();
        verify_path(
            end_entity.as_ref(),
            &inter,
            &self.anchors,
            SystemTime::now(),
        )
        .map_err(|e| rustls::Error::General(e.message))?;
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

/// A management API client.
#[derive(Clone, Debug)]
pub struct ManagementClient {
    base: String,
    http: reqwest::Client,
}

impl ManagementClient {
    /// `base` is `https://host:port` of the management listener; `roots_pem` the trust
    /// service's root certificate(s).
    pub fn new(base: &str, admin: &Identity, roots_pem: &str) -> Result<ManagementClient, Error> {
        let anchors = TrustAnchors::from_bytes(roots_pem.as_bytes())?;
        let config = tls::client_config(admin, Arc::new(ChainedServer { anchors }))?;
        Ok(ManagementClient {
            base: base.trim_end_matches('/').to_owned(),
            http: tls::http_client(config, Duration::from_secs(30))?,
        })
    }

    /// From PEM files: the administrator's certificate and key, and the root(s) to trust.
    pub fn from_files(
        base: &str,
        certificate: &std::path::Path,
        key: &std::path::Path,
        roots: &std::path::Path,
    ) -> Result<ManagementClient, Error> {
        let admin = Identity::from_files(certificate, key)?;
        let roots = std::fs::read_to_string(roots).map_err(|e| {
            Error::new(
                ErrorCode::ConfigInvalid,
                format!("{}: {e}", roots.display()),
            )
        })?;
        Self::new(base, &admin, &roots)
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> Result<(), Error> {
        let url = format!("{}{path}", self.base);
        let r = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))?;
        check(r).await.map(|_| ())
    }

    pub async fn add_member(&self, id: &MemberId, name: &str) -> Result<(), Error> {
        self.post(
            "/api/v1/members",
            &NewMember {
                id: id.clone(),
                name: name.into(),
            },
        )
        .await
    }

    pub async fn add_subsystem(&self, id: &SubsystemId) -> Result<(), Error> {
        self.post("/api/v1/subsystems", &NewSubsystem { id: id.clone() })
            .await
    }

    pub async fn register_gateway(&self, gateway: &NewGateway) -> Result<(), Error> {
        self.post("/api/v1/gateways", gateway).await
    }

    pub async fn add_group(&self, code: &str, description: &str) -> Result<(), Error> {
        self.post(
            "/api/v1/groups",
            &NewGroup {
                code: code.into(),
                description: description.into(),
            },
        )
        .await
    }

    pub async fn add_group_member(&self, group: &str, client: &ClientId) -> Result<(), Error> {
        self.post(
            &format!("/api/v1/groups/{group}/members"),
            &NewGroupMember {
                client: client.clone(),
            },
        )
        .await
    }

    pub async fn set_authority(&self, authority: &NewAuthority) -> Result<(), Error> {
        self.post("/api/v1/authorities", authority).await
    }

    /// The registry as the central server holds it now.
    pub async fn registry(&self) -> Result<GlobalConf, Error> {
        let url = format!("{}/api/v1/registry", self.base);
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))?;
        check(r)
            .await?
            .json()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, e.to_string()))
    }
}

async fn check(r: reqwest::Response) -> Result<reqwest::Response, Error> {
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => Err(Error::new(b.code, b.message)),
        Err(_) => Err(Error::new(
            ErrorCode::ExchUpstream,
            format!("{status}: {text}"),
        )),
    }
}

/// The anchor (public key) a central server publishes at `central_url`. Operators compare
/// it out of band before configuring gateways with it.
pub async fn fetch_anchor(central_url: &str) -> Result<String, Error> {
    let url = format!("{}/globalconf/anchor", central_url.trim_end_matches('/'));
    let v: serde_json::Value = reqwest::get(&url)
        .await
        .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))?
        .json()
        .await
        .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))?;
    v.get("anchor")
        .and_then(|a| a.as_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::new(ErrorCode::ExchUpstream, format!("{url}: no anchor")))
}
