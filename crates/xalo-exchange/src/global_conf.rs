//! The global configuration: what every gateway must know about the instance — members,
//! subsystems, gateways with their TLS certificates, global groups and the trust services —
//! as one JSON document, versioned, signed by the central server and valid until it
//! expires. A gateway that cannot refresh it stops exchanging messages when it expires,
//! as X-Road's security servers do, so a revoked gateway cannot stay in use forever.
//!
//! The signature covers the exact bytes of the document, which travel as a string inside
//! the signed envelope, so no canonical JSON is needed. Gateways trust the central
//! server's public key (the *anchor*), configured out of band.

use std::sync::{Arc, OnceLock, RwLock};
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
/// with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayEntry {
    pub owner: MemberId,
    pub code: String,
    /// `host:port` of its TLS listener.
    pub address: String,
    pub tls_certificate: GatewayCertificate,
}

impl GatewayEntry {
    pub fn certificate_der(&self) -> Result<Vec<u8>, Error> {
        self.tls_certificate.der().map(<[u8]>::to_vec)
    }
}

/// A gateway's TLS certificate: base64 DER in the document, DER in memory. A nation's
/// registry lists thousands of gateways, and every gateway holds the whole list: kept as
/// text and decoded again for the lookups, each certificate would be held twice.
///
/// An entry that is not base64 is kept as it came, so that one broken entry costs only
/// its own gateway, never the whole document (which the central server signed as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayCertificate(Certificate);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Certificate {
    Der(Box<[u8]>),
    NotBase64(Box<str>),
}

impl GatewayCertificate {
    pub fn from_der(der: &[u8]) -> GatewayCertificate {
        GatewayCertificate(Certificate::Der(der.into()))
    }

    /// Read as the document carries it: base64 of the DER.
    pub fn from_base64(text: &str) -> GatewayCertificate {
        GatewayCertificate(match b64().decode(text) {
            Ok(der) => Certificate::Der(der.into_boxed_slice()),
            Err(_) => Certificate::NotBase64(text.into()),
        })
    }

    /// The DER, or why the document's entry has none.
    pub fn der(&self) -> Result<&[u8], Error> {
        match &self.0 {
            Certificate::Der(der) => Ok(der),
            Certificate::NotBase64(_) => Err(Error::new(
                ErrorCode::ExchCertificate,
                "gateway certificate: not base64",
            )),
        }
    }
}

impl Serialize for GatewayCertificate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Certificate::Der(der) => s.serialize_str(&b64().encode(der)),
            Certificate::NotBase64(text) => s.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for GatewayCertificate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = GatewayCertificate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 DER certificate")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(GatewayCertificate::from_base64(v))
            }
        }
        d.deserialize_str(Text)
    }
}

/// A list of the document, kept at its length (see [`crate::exact`]).
fn exact_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Vec::<T>::deserialize(d).map(crate::exact)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub code: String,
    pub description: String,
    #[serde(deserialize_with = "exact_list")]
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
    #[serde(deserialize_with = "exact_list")]
    pub members: Vec<MemberEntry>,
    #[serde(deserialize_with = "exact_list")]
    pub gateways: Vec<GatewayEntry>,
    pub global_groups: Vec<GroupEntry>,
    pub authorities: Vec<AuthorityEntry>,
    /// The lookups a gateway makes for every message, built at the first one.
    #[serde(skip)]
    lookup: Lookup,
}

/// Indexes over a [`GlobalConf`]: a nation has thousands of members, gateways and group
/// memberships, and every message asks about a few of them, so a message costs the same
/// whatever the size of the registry. Built once per document (a gateway holds each
/// version in an `Arc`); a document is not changed after its first lookup.
///
/// Each table is sorted `(hash of the key, position)` pairs: a binary search finds the
/// candidates and the document's own entry confirms each, so the keys are not copied
/// (with tens of thousands of entries, copies would double the document's memory).
#[derive(Debug, Default)]
struct Index {
    hasher: std::hash::RandomState,
    /// Positions in `members`.
    members: Vec<(u64, u32)>,
    /// Positions in `gateways`, by owner, in the document's order.
    gateways_of: Vec<(u64, u32)>,
    /// Positions in `gateways`, by the DER of their certificate.
    by_certificate: Vec<(u64, u32)>,
    /// (group, member) positions in `global_groups`, by the member, in group order.
    groups_of: Vec<(u64, (u32, u32))>,
}

impl Index {
    fn hash<T: std::hash::Hash + ?Sized>(&self, key: &T) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }
}

/// The positions filed under `hash` in a sorted table.
fn candidates<T: Copy + Ord>(table: &[(u64, T)], hash: u64) -> impl Iterator<Item = T> + '_ {
    let from = table.partition_point(|(h, _)| *h < hash);
    table[from..]
        .iter()
        .take_while(move |(h, _)| *h == hash)
        .map(|(_, at)| *at)
}

fn sorted<T: Ord>(mut table: Vec<(u64, T)>) -> Vec<(u64, T)> {
    table.sort_unstable();
    table
}

/// Derived data: never serialised, always equal, and not carried into a clone.
#[derive(Debug, Default)]
struct Lookup(OnceLock<Index>);

impl Clone for Lookup {
    fn clone(&self) -> Self {
        // Rebuilt on demand: the clone may be changed before its first lookup.
        Lookup::default()
    }
}

impl PartialEq for Lookup {
    fn eq(&self, _: &Lookup) -> bool {
        true
    }
}

impl Eq for Lookup {}

impl GlobalConf {
    pub fn new(
        instance: String,
        version: i64,
        members: Vec<MemberEntry>,
        gateways: Vec<GatewayEntry>,
        global_groups: Vec<GroupEntry>,
        authorities: Vec<AuthorityEntry>,
    ) -> GlobalConf {
        GlobalConf {
            instance,
            version,
            issued_unix: 0,
            expires_unix: 0,
            members,
            gateways,
            global_groups,
            authorities,
            lookup: Lookup::default(),
        }
    }

    fn index(&self) -> &Index {
        self.lookup.0.get_or_init(|| {
            let mut index = Index::default();
            // Positions fit in u32: a document of four billion entries is not served.
            let at = |i: usize| i as u32;
            index.members = sorted(
                self.members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (index.hash(&m.id), at(i)))
                    .collect(),
            );
            index.gateways_of = sorted(
                self.gateways
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (index.hash(&g.owner), at(i)))
                    .collect(),
            );
            index.by_certificate = sorted(
                self.gateways
                    .iter()
                    .enumerate()
                    .filter_map(|(i, g)| Some((index.hash(g.tls_certificate.der().ok()?), at(i))))
                    .collect(),
            );
            index.groups_of = sorted(
                self.global_groups
                    .iter()
                    .enumerate()
                    .flat_map(|(g, group)| {
                        group
                            .members
                            .iter()
                            .enumerate()
                            .map(move |(m, c)| (c, (at(g), at(m))))
                    })
                    .map(|(c, at)| (index.hash(c), at))
                    .collect(),
            );
            index
        })
    }

    pub fn member(&self, id: &MemberId) -> Option<&MemberEntry> {
        let index = self.index();
        // The first entry wins, as a scan of the document would find it.
        candidates(&index.members, index.hash(id))
            .filter_map(|i| self.members.get(i as usize))
            .find(|m| &m.id == id)
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

    /// The gateways of `owner`, in the document's order.
    pub fn gateways_of(&self, owner: &MemberId) -> Vec<&GatewayEntry> {
        let index = self.index();
        candidates(&index.gateways_of, index.hash(owner))
            .filter_map(|i| self.gateways.get(i as usize))
            .filter(|g| &g.owner == owner)
            .collect()
    }

    /// The gateway whose registered certificate is exactly `der`.
    pub fn gateway_by_certificate(&self, der: &[u8]) -> Option<&GatewayEntry> {
        let index = self.index();
        candidates(&index.by_certificate, index.hash(der))
            .filter_map(|i| self.gateways.get(i as usize))
            .find(|g| g.tls_certificate.der().ok() == Some(der))
    }

    /// The global groups `client` belongs to.
    pub fn groups_of(&self, client: &ClientId) -> Vec<&str> {
        let index = self.index();
        let mut groups: Vec<&str> = Vec::new();
        let mut last = None;
        for (g, m) in candidates(&index.groups_of, index.hash(client)) {
            let Some(group) = self.global_groups.get(g as usize) else {
                continue;
            };
            // A client listed twice in a group is in it once.
            if last != Some(g) && group.members.get(m as usize) == Some(client) {
                groups.push(&group.code);
                last = Some(g);
            }
        }
        groups
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

    /// The entity tag of this document as issued (`"VERSION-ISSUED"`): the central server
    /// sends it, and a gateway asks with it whether a newer document is there.
    pub fn etag(&self) -> String {
        etag(self.version, self.issued_unix)
    }
}

/// The entity tag of the document of `version` issued at `issued_unix`.
pub fn etag(version: i64, issued_unix: i64) -> String {
    format!("\"{version}-{issued_unix}\"")
}

/// Whether `If-None-Match` in `headers` names `etag` (or is `*`), as RFC 9110 §13.1.2
/// compares: weakly, in a comma-separated list.
pub fn matches_etag(headers: &axum::http::HeaderMap, etag: &str) -> bool {
    headers
        .get_all(axum::http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
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

/// The header with which a gateway names the version of the document it holds: when the
/// central server issues that version still, it answers with a [`SignedRenewal`] of a few
/// hundred bytes instead of the document (megabytes for a nation's registry).
pub const HELD_VERSION: &str = "x-xalo-held-version";

/// A signed statement that the document of a version is issued anew with new times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedRenewal {
    /// The JSON text of the renewal (`kind` `renewal`, `instance`, `version`,
    /// `issued_unix`, `expires_unix`), exactly as signed.
    pub renewal: String,
    /// Base64 signature over `renewal`, by the key that signs the documents.
    pub signature: String,
}

/// What a [`SignedRenewal`] says. `kind` keeps it from being read as anything else.
#[derive(Debug, Serialize, Deserialize)]
struct Renewal {
    kind: String,
    instance: String,
    version: i64,
    issued_unix: i64,
    expires_unix: i64,
}

const RENEWAL: &str = "renewal";

/// Sign the renewal of `conf` (its version, with its issued and expiry times).
pub fn sign_renewal(conf: &GlobalConf, key: &SigningKey) -> Result<SignedRenewal, Error> {
    let renewal = serde_json::to_string(&Renewal {
        kind: RENEWAL.into(),
        instance: conf.instance.clone(),
        version: conf.version,
        issued_unix: conf.issued_unix,
        expires_unix: conf.expires_unix,
    })
    .map_err(|e| Error::new(ErrorCode::Internal, format!("renewal: {e}")))?;
    let signature = key.sign(renewal.as_bytes())?;
    Ok(SignedRenewal {
        renewal,
        signature: b64().encode(signature),
    })
}

/// Check the signature with the anchor and read the document; expiry is the caller's check.
pub fn verify(signed: &SignedGlobalConf, anchor: &Anchor) -> Result<GlobalConf, Error> {
    verify_signature(signed.document.as_bytes(), &signed.signature, anchor)?;
    read_document(&signed.document)
}

/// Read a document (or, as `T`, a part of it) whose signature has been checked.
fn read_document<'a, T: Deserialize<'a>>(document: &'a str) -> Result<T, Error> {
    serde_json::from_str(document)
        .map_err(|e| Error::new(ErrorCode::ExchGlobalConfInvalid, format!("document: {e}")))
}

/// Check a signature over `signed` (a document or a renewal) with the anchor.
fn verify_signature(signed: &[u8], signature: &str, anchor: &Anchor) -> Result<(), Error> {
    let invalid = |m: String| Error::new(ErrorCode::ExchGlobalConfInvalid, m);
    let signature = b64()
        .decode(signature)
        .map_err(|e| invalid(format!("signature encoding: {e}")))?;
    let algorithm = crate::signature::algorithm_of(&anchor.spki)?;
    xalo_trust::key::verify_signature(&anchor.spki, &algorithm, signed, &signature)
        .map_err(|_| invalid("the global configuration is not signed by the central server".into()))
}

/// Which issue of which registry a document is: read without the registry itself (its
/// other fields are skipped, not stored).
#[derive(Deserialize)]
struct Issue {
    instance: String,
    version: i64,
    issued_unix: i64,
    expires_unix: i64,
}

/// The configuration a gateway currently holds, shared by its tasks.
#[derive(Clone, Default)]
pub struct GlobalConfHolder {
    current: Arc<RwLock<Option<Held>>>,
}

/// A document held, and the times of its latest issue: the central server issues the same
/// registry anew every minute or so, and only those times change.
#[derive(Clone)]
struct Held {
    conf: Arc<GlobalConf>,
    issued_unix: i64,
    expires_unix: i64,
}

/// The version of the document a gateway holds and the times of its latest issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub version: i64,
    pub issued_unix: i64,
    pub expires_unix: i64,
}

impl Validity {
    pub fn is_expired(&self, now_unix: i64) -> bool {
        now_unix >= self.expires_unix
    }
}

impl GlobalConfHolder {
    pub fn set(&self, conf: GlobalConf) {
        if let Ok(mut c) = self.current.write() {
            // Never go back to an older version (a replayed or stale document), nor to an
            // older issue of the same one.
            if c.as_ref().is_none_or(|old| {
                (old.conf.version, old.issued_unix) < (conf.version, conf.issued_unix)
            }) {
                *c = Some(Held {
                    issued_unix: conf.issued_unix,
                    expires_unix: conf.expires_unix,
                    conf: Arc::new(conf),
                });
            }
        }
    }

    /// Take a new issue of the document held (same version): only its times change, so
    /// the document and its index are kept rather than read again.
    fn renew(&self, version: i64, issued_unix: i64, expires_unix: i64) {
        if let Ok(mut c) = self.current.write()
            && let Some(held) = c.as_mut()
            && held.conf.version == version
            && held.issued_unix < issued_unix
        {
            held.issued_unix = issued_unix;
            held.expires_unix = expires_unix;
        }
    }

    /// The configuration, if there is one that has not expired.
    pub fn get(&self) -> Result<Arc<GlobalConf>, Error> {
        let held = self
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
        if unix_now() >= held.expires_unix {
            return Err(Error::new(
                ErrorCode::ExchGlobalConfExpired,
                format!(
                    "the global configuration version {} expired at {} and could not be refreshed",
                    held.conf.version, held.expires_unix
                ),
            ));
        }
        Ok(held.conf)
    }

    /// The configuration even when expired (for status pages).
    pub fn latest(&self) -> Option<Arc<GlobalConf>> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|h| h.conf.clone()))
    }

    /// The version held and the times of its latest issue.
    pub fn validity(&self) -> Option<Validity> {
        self.current.read().ok().and_then(|c| {
            c.as_ref().map(|h| Validity {
                version: h.conf.version,
                issued_unix: h.issued_unix,
                expires_unix: h.expires_unix,
            })
        })
    }

    /// Poll the central server once and keep what it brought.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        central_url: &str,
        anchor: &Anchor,
    ) -> Result<(), Error> {
        let held = self.current.read().ok().and_then(|c| c.clone());
        let held = held.as_ref().map(|h| (&*h.conf, h.issued_unix));
        match download(http, central_url, anchor, held).await? {
            Poll::NotModified => {}
            Poll::Renewed(v) => self.renew(v.version, v.issued_unix, v.expires_unix),
            Poll::New(conf) => self.set(*conf),
        }
        Ok(())
    }
}

/// What the central server answers a poll with: a [`SignedGlobalConf`] or a
/// [`SignedRenewal`]. One struct rather than an untagged enum, which would buffer the
/// document once more before choosing.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    document: Option<String>,
    #[serde(default)]
    renewal: Option<String>,
    signature: String,
}

/// What a poll of the central server brought.
#[derive(Debug)]
pub enum Poll {
    /// The document held is the one the central server issues.
    NotModified,
    /// The document held, issued anew: the same version with later times.
    Renewed(Validity),
    /// Another version.
    New(Box<GlobalConf>),
}

/// Download and verify the configuration from the central server. `held` is the document
/// a gateway holds with the time of its latest issue: the central server is asked whether
/// that is still the one it issues, and a new issue of the same version is read no
/// further than its times.
pub async fn download(
    http: &reqwest::Client,
    central_url: &str,
    anchor: &Anchor,
    held: Option<(&GlobalConf, i64)>,
) -> Result<Poll, Error> {
    let url = format!("{}/globalconf", central_url.trim_end_matches('/'));
    let upstream = |e: String| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}"));
    let mut request = http.get(&url);
    if let Some((c, issued_unix)) = held {
        request = request
            .header(reqwest::header::IF_NONE_MATCH, etag(c.version, issued_unix))
            .header(HELD_VERSION, c.version.to_string());
    }
    let r = request.send().await.map_err(|e| upstream(e.to_string()))?;
    if r.status() == reqwest::StatusCode::NOT_MODIFIED && held.is_some() {
        return Ok(Poll::NotModified);
    }
    if !r.status().is_success() {
        return Err(upstream(format!("status {}", r.status())));
    }
    let answer: Answer = r.json().await.map_err(|e| upstream(e.to_string()))?;
    let invalid = |m: String| Error::new(ErrorCode::ExchGlobalConfInvalid, m);
    let document = match (answer.document, answer.renewal) {
        (Some(document), None) => document,
        (None, Some(renewal)) => {
            let Some((c, _)) = held else {
                return Err(invalid("a renewal where the document was asked for".into()));
            };
            verify_signature(renewal.as_bytes(), &answer.signature, anchor)?;
            let renewal: Renewal =
                serde_json::from_str(&renewal).map_err(|e| invalid(format!("renewal: {e}")))?;
            if renewal.kind != RENEWAL
                || renewal.instance != c.instance
                || renewal.version != c.version
            {
                return Err(invalid(format!(
                    "a renewal of {} version {} for a gateway holding {} version {}",
                    renewal.instance, renewal.version, c.instance, c.version
                )));
            }
            return Ok(Poll::Renewed(Validity {
                version: renewal.version,
                issued_unix: renewal.issued_unix,
                expires_unix: renewal.expires_unix,
            }));
        }
        _ => return Err(invalid("neither a document nor a renewal".into())),
    };
    verify_signature(document.as_bytes(), &answer.signature, anchor)?;
    if let Some((c, _)) = held {
        let issue: Issue = read_document(&document)?;
        if issue.version == c.version && issue.instance == c.instance {
            return Ok(Poll::Renewed(Validity {
                version: issue.version,
                issued_unix: issue.issued_unix,
                expires_unix: issue.expires_unix,
            }));
        }
    }
    Ok(Poll::New(Box::new(read_document(&document)?)))
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
            if let Err(e) = holder.refresh(&http, &central_url, &anchor).await {
                tracing::warn!(error = %e, "global configuration refresh failed");
            }
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, subsystems: &[&str]) -> MemberEntry {
        MemberEntry {
            id: id.parse().unwrap(),
            name: id.into(),
            subsystems: subsystems.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn gateway(owner: &str, code: &str, der: &[u8]) -> GatewayEntry {
        GatewayEntry {
            owner: owner.parse().unwrap(),
            code: code.into(),
            address: format!("{code}.{owner}:5500"),
            tls_certificate: GatewayCertificate::from_der(der),
        }
    }

    fn conf() -> GlobalConf {
        let mut members: Vec<MemberEntry> = (0..1000)
            .map(|i| member(&format!("VN/COM/{}", 900_000 + i), &["system"]))
            .collect();
        members.push(member("VN/GOV/000001", &["population", "business"]));
        let mut gateways: Vec<GatewayEntry> = (0..1000)
            .map(|i| {
                gateway(
                    &format!("VN/COM/{}", 900_000 + i),
                    "gw1",
                    format!("der-{i}").as_bytes(),
                )
            })
            .collect();
        gateways.push(gateway("VN/GOV/000001", "gw1", b"der-a"));
        gateways.push(gateway("VN/GOV/000001", "gw2", b"der-b"));
        let population: ClientId = "VN/GOV/000001/population".parse().unwrap();
        let groups = vec![
            GroupEntry {
                code: "ministries".into(),
                description: String::new(),
                // Listed twice: still one group.
                members: vec![population.clone(), population.clone()],
            },
            GroupEntry {
                code: "registers".into(),
                description: String::new(),
                members: vec!["VN/COM/900007/system".parse().unwrap(), population],
            },
        ];
        GlobalConf::new("VN".into(), 7, members, gateways, groups, Vec::new())
    }

    #[test]
    fn lookups_find_what_a_scan_of_the_document_finds() {
        let conf = conf();
        let id: MemberId = "VN/GOV/000001".parse().unwrap();
        assert_eq!(
            conf.member(&id).map(|m| m.name.as_str()),
            Some("VN/GOV/000001")
        );
        assert!(conf.member(&"VN/GOV/000002".parse().unwrap()).is_none());
        assert!(conf.has_subsystem(&"VN/GOV/000001/business".parse().unwrap()));
        assert!(!conf.has_subsystem(&"VN/GOV/000001/tax".parse().unwrap()));
        assert!(conf.has_client(&"VN/COM/900999".parse().unwrap()));
        assert!(!conf.has_client(&"VN/COM/901000/system".parse().unwrap()));

        let codes: Vec<&str> = conf
            .gateways_of(&id)
            .iter()
            .map(|g| g.code.as_str())
            .collect();
        assert_eq!(codes, ["gw1", "gw2"]);
        assert!(
            conf.gateways_of(&"VN/GOV/000002".parse().unwrap())
                .is_empty()
        );
        assert_eq!(
            conf.gateway_by_certificate(b"der-b")
                .map(|g| g.code.as_str()),
            Some("gw2")
        );
        assert_eq!(
            conf.gateway_by_certificate(b"der-500")
                .map(|g| g.owner.code()),
            Some("900500")
        );
        assert!(conf.gateway_by_certificate(b"der-").is_none());

        let gw2 = conf.gateways_of(&id)[1];
        assert_eq!(gw2.tls_certificate.der().unwrap(), b"der-b");

        assert_eq!(
            conf.groups_of(&"VN/GOV/000001/population".parse().unwrap()),
            ["ministries", "registers"]
        );
        assert_eq!(
            conf.groups_of(&"VN/COM/900007/system".parse().unwrap()),
            ["registers"]
        );
        assert!(
            conf.groups_of(&"VN/COM/900008/system".parse().unwrap())
                .is_empty()
        );
    }

    #[test]
    fn a_certificate_travels_as_base64_and_a_broken_one_costs_only_its_gateway() {
        let mut c = conf();
        c.gateways.push(GatewayEntry {
            tls_certificate: GatewayCertificate::from_base64("not base64!"),
            ..gateway("VN/GOV/000001", "gw9", b"")
        });
        let text = serde_json::to_string(&c).unwrap();
        assert!(
            text.contains(&format!("\"{}\"", b64().encode(b"der-b"))),
            "{text}"
        );
        assert!(text.contains("\"not base64!\""), "{text}");

        let read: GlobalConf = serde_json::from_str(&text).unwrap();
        assert_eq!(read, c);
        assert_eq!(serde_json::to_string(&read).unwrap(), text);
        let broken = read.gateways.last().unwrap();
        assert_eq!(
            broken.tls_certificate.der().unwrap_err().code,
            ErrorCode::ExchCertificate
        );
        assert_eq!(
            read.gateway_by_certificate(b"der-b")
                .map(|g| g.code.as_str()),
            Some("gw2")
        );
        assert!(read.gateway_by_certificate(b"not base64!").is_none());
        // A certificate that is not a string is no document.
        let bad = text.replacen(&format!("\"{}\"", b64().encode(b"der-b")), "42", 1);
        assert!(serde_json::from_str::<GlobalConf>(&bad).is_err());
    }

    #[test]
    fn the_index_is_neither_compared_nor_serialised_nor_carried_into_a_changed_clone() {
        let indexed = conf();
        assert!(indexed.has_client(&"VN/GOV/000001".parse().unwrap()));
        let fresh = conf();
        assert_eq!(indexed, fresh);

        let text = serde_json::to_string(&indexed).unwrap();
        assert!(!text.contains("lookup"), "{text}");
        let read: GlobalConf = serde_json::from_str(&text).unwrap();
        assert_eq!(read, indexed);
        assert!(read.has_subsystem(&"VN/GOV/000001/population".parse().unwrap()));

        // A clone changed before its first lookup answers for its own content.
        let mut changed = indexed.clone();
        changed.members.push(member("VN/GOV/000002", &["tax"]));
        changed
            .gateways
            .push(gateway("VN/GOV/000002", "gw1", b"der-c"));
        assert!(changed.has_subsystem(&"VN/GOV/000002/tax".parse().unwrap()));
        assert_eq!(
            changed
                .gateway_by_certificate(b"der-c")
                .map(|g| g.code.as_str()),
            Some("gw1")
        );
        assert!(!indexed.has_subsystem(&"VN/GOV/000002/tax".parse().unwrap()));
    }
}
