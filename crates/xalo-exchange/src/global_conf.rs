//! The global configuration: what every gateway must know about the instance — members,
//! subsystems, gateways with their TLS certificates, global groups and the trust services —
//! as one JSON document, versioned, signed by the central server and valid until it
//! expires. A gateway that cannot refresh it stops exchanging messages when it expires,
//! as X-Road's security servers do, so a revoked gateway cannot stay in use forever.
//!
//! The signature covers the exact bytes of the document, which travel as a string inside
//! the signed envelope, so no canonical JSON is needed. Gateways trust the central
//! server's public key (the *anchor*), configured out of band.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use xalo_core::{ClientId, Error, ErrorCode, MemberId, SubsystemId};
use xalo_trust::SigningKey;

use crate::{b64, unix_now};

/// One member, with its subsystems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub id: MemberId,
    pub name: String,
    pub subsystems: Vec<String>,
}

/// One gateway: where it listens for other gateways, and the certificate it authenticates
/// with (base64 DER).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayEntry {
    pub owner: MemberId,
    pub code: String,
    /// `host:port` of its TLS listener.
    pub address: String,
    pub tls_certificate: String,
}

impl GatewayEntry {
    pub fn certificate_der(&self) -> Result<Vec<u8>, Error> {
        b64().decode(&self.tls_certificate).map_err(|e| {
            Error::new(
                ErrorCode::ExchCertificate,
                format!("gateway certificate: {e}"),
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub code: String,
    pub description: String,
    pub members: Vec<ClientId>,
}

/// A certification authority of the trust service, with its OCSP responder and TSA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityEntry {
    pub name: String,
    /// Base64 DER; self-signed roots are trust anchors, the others intermediates.
    pub certificates: Vec<String>,
    pub ocsp_url: Option<String>,
    pub tsa_url: Option<String>,
}

/// The document the central server signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalConf {
    pub instance: String,
    /// Grows with every change of the registry.
    pub version: i64,
    pub issued_unix: i64,
    pub expires_unix: i64,
    pub members: Vec<MemberEntry>,
    pub gateways: Vec<GatewayEntry>,
    pub global_groups: Vec<GroupEntry>,
    pub authorities: Vec<AuthorityEntry>,
}

impl GlobalConf {
    pub fn member(&self, id: &MemberId) -> Option<&MemberEntry> {
        self.members.iter().find(|m| &m.id == id)
    }

    pub fn has_subsystem(&self, id: &SubsystemId) -> bool {
        self.member(id.member())
            .is_some_and(|m| m.subsystems.iter().any(|s| s == id.code()))
    }

    /// Whether a client (member or subsystem) is registered.
    pub fn has_client(&self, id: &ClientId) -> bool {
        match id {
            ClientId::Member(m) => self.member(m).is_some(),
            ClientId::Subsystem(s) => self.has_subsystem(s),
        }
    }

    pub fn gateways_of(&self, owner: &MemberId) -> Vec<&GatewayEntry> {
        self.gateways.iter().filter(|g| &g.owner == owner).collect()
    }

    /// The gateway whose registered certificate is exactly `der`.
    pub fn gateway_by_certificate(&self, der: &[u8]) -> Option<&GatewayEntry> {
        let b = b64().encode(der);
        self.gateways.iter().find(|g| g.tls_certificate == b)
    }

    /// The global groups `client` belongs to.
    pub fn groups_of(&self, client: &ClientId) -> Vec<&str> {
        self.global_groups
            .iter()
            .filter(|g| g.members.contains(client))
            .map(|g| g.code.as_str())
            .collect()
    }

    /// Every CA certificate, DER: (roots, intermediates).
    pub fn ca_certificates(&self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut roots = Vec::new();
        let mut intermediates = Vec::new();
        for der in self
            .authorities
            .iter()
            .flat_map(|a| a.certificates.iter())
            .filter_map(|c| b64().decode(c).ok())
        {
            let self_signed = xalo_trust::authority::parse_certificate(&der)
                .is_ok_and(|c| c.tbs_certificate.subject == c.tbs_certificate.issuer);
            if self_signed {
                roots.push(der);
            } else {
                intermediates.push(der);
            }
        }
        (roots, intermediates)
    }

    pub fn is_expired(&self, now_unix: i64) -> bool {
        now_unix >= self.expires_unix
    }
}

/// The signed envelope served at `/globalconf`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedGlobalConf {
    /// The JSON text of a [`GlobalConf`], exactly as signed.
    pub document: String,
    /// Base64 ECDSA or Ed25519 signature (as the anchor key's algorithm) over `document`.
    pub signature: String,
}

/// The central server's public key, as gateways are configured with it: base64 of the
/// SubjectPublicKeyInfo DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    spki: x509_cert::spki::SubjectPublicKeyInfoOwned,
}

impl Anchor {
    pub fn parse(text: &str) -> Result<Anchor, Error> {
        use der::Decode;
        let der = b64()
            .decode(text.trim())
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("central anchor: {e}")))?;
        let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&der)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("central anchor: {e}")))?;
        Ok(Anchor { spki })
    }

    /// The anchor text for a signing key.
    pub fn of_key(key: &SigningKey) -> Result<String, Error> {
        let rc = key.rcgen_key()?;
        Ok(b64().encode(rcgen::PublicKeyData::subject_public_key_info(&rc)))
    }
}

/// Sign a configuration.
pub fn sign(conf: &GlobalConf, key: &SigningKey) -> Result<SignedGlobalConf, Error> {
    let document = serde_json::to_string(conf)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("global configuration: {e}")))?;
    let signature = key.sign(document.as_bytes())?;
    Ok(SignedGlobalConf {
        document,
        signature: b64().encode(signature),
    })
}

/// Check the signature with the anchor and read the document; expiry is the caller's check.
pub fn verify(signed: &SignedGlobalConf, anchor: &Anchor) -> Result<GlobalConf, Error> {
    let invalid = |m: String| Error::new(ErrorCode::ExchGlobalConfInvalid, m);
    let signature = b64()
        .decode(&signed.signature)
        .map_err(|e| invalid(format!("signature encoding: {e}")))?;
    let algorithm = crate::signature::algorithm_of(&anchor.spki)?;
    xalo_trust::key::verify_signature(
        &anchor.spki,
        &algorithm,
        signed.document.as_bytes(),
        &signature,
    )
    .map_err(|_| invalid("the global configuration is not signed by the central server".into()))?;
    serde_json::from_str(&signed.document).map_err(|e| invalid(format!("document: {e}")))
}

/// The configuration a gateway currently holds, shared by its tasks.
#[derive(Clone, Default)]
pub struct GlobalConfHolder {
    current: Arc<RwLock<Option<Arc<GlobalConf>>>>,
}

impl GlobalConfHolder {
    pub fn set(&self, conf: GlobalConf) {
        if let Ok(mut c) = self.current.write() {
            // Never go back to an older version (a replayed or stale document).
            if c.as_ref().is_none_or(|old| old.version <= conf.version) {
                *c = Some(Arc::new(conf));
            }
        }
    }

    /// The configuration, if there is one that has not expired.
    pub fn get(&self) -> Result<Arc<GlobalConf>, Error> {
        let conf = self
            .current
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::ExchGlobalConfExpired,
                    "no global configuration has been downloaded yet",
                )
            })?;
        if conf.is_expired(unix_now()) {
            return Err(Error::new(
                ErrorCode::ExchGlobalConfExpired,
                format!(
                    "the global configuration version {} expired at {} and could not be refreshed",
                    conf.version, conf.expires_unix
                ),
            ));
        }
        Ok(conf)
    }

    /// The configuration even when expired (for status pages).
    pub fn latest(&self) -> Option<Arc<GlobalConf>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

/// Download and verify the configuration from the central server.
pub async fn download(
    http: &reqwest::Client,
    central_url: &str,
    anchor: &Anchor,
) -> Result<GlobalConf, Error> {
    let url = format!("{}/globalconf", central_url.trim_end_matches('/'));
    let upstream = |e: String| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}"));
    let r = http
        .get(&url)
        .send()
        .await
        .map_err(|e| upstream(e.to_string()))?;
    if !r.status().is_success() {
        return Err(upstream(format!("status {}", r.status())));
    }
    let signed: SignedGlobalConf = r.json().await.map_err(|e| upstream(e.to_string()))?;
    verify(&signed, anchor)
}

/// Poll the central server every `interval`, keeping the last good configuration.
pub fn spawn_poller(
    holder: GlobalConfHolder,
    http: reqwest::Client,
    central_url: String,
    anchor: Anchor,
    interval: Duration,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            match download(&http, &central_url, &anchor).await {
                Ok(conf) => holder.set(conf),
                Err(e) => tracing::warn!(error = %e, "global configuration refresh failed"),
            }
        }
    })
    .abort_handle()
}
