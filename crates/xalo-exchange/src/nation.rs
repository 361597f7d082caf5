//! A running exchange assembled from its parts, as an operator would: certificates from
//! the trust service, the central server with its registry filled through the management
//! API, and one gateway per member. The demo, the benchmark and the tests all build theirs
//! here, so they exercise the same path a deployment takes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use xalo_core::server::ServerHandle;
use xalo_core::{ClientId, Config, Error, ErrorCode, MemberId, SubsystemId};
use xalo_trust::registration::{CertificateRequest, RegistrationClient, token_hash};
use xalo_trust::{KeyAlgorithm, Pki, Profile, RevocationReason, Subject};

use crate::access_right::Subject as RightSubject;
use crate::central::CentralSettings;
use crate::gateway::GatewaySettings;
use crate::management_client::ManagementClient;
use crate::registry::{NewAuthority, NewGateway};
use crate::service_registry::{NewAccessRight, NewService};
use crate::tls::Identity;

/// A member to create, with its subsystems.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub id: MemberId,
    pub name: String,
    pub subsystems: Vec<String>,
}

impl MemberSpec {
    pub fn new(id: &str, name: &str, subsystems: &[&str]) -> Result<MemberSpec, Error> {
        Ok(MemberSpec {
            id: id.parse()?,
            name: name.into(),
            subsystems: subsystems.iter().map(|s| (*s).to_owned()).collect(),
        })
    }
}

/// How to build the exchange.
#[derive(Debug, Clone)]
pub struct NationOptions {
    pub instance: String,
    pub members: Vec<MemberSpec>,
    /// Where certificates, keys and (by default) SQLite files go.
    pub dir: PathBuf,
    /// Database URL per part (`trust`, `central`, `gateway-{member code}`); a SQLite file
    /// under `dir` for parts not listed.
    pub databases: BTreeMap<String, String>,
    /// The trust role's port when it runs already; otherwise one is started.
    pub trust_port: Option<u16>,
    /// The exchange operator's registration-authority token at that trust role (a trust
    /// role started here admits a token of its own).
    pub ra_token: Option<String>,
    pub ledger_url: Option<String>,
    /// Seconds between the gateways' passes sending again what the ledger did not take.
    pub evidence_retry_secs: u64,
    pub global_conf_validity_secs: u64,
    pub poll_secs: u64,
    pub ocsp_reuse_secs: u64,
    /// Give each gateway a client TLS listener for information systems with certificates.
    pub client_tls: bool,
    /// Event delivery settings of every gateway.
    pub pubsub: crate::pubsub::PubSubSettings,
    /// The configuration the parts start from (bind address, HTTP limits, logging).
    pub base: Config,
    /// Other members to register besides `members`, each with a subsystem and a gateway
    /// that is never started, all in one global group: the registry of a nation, which
    /// the running gateways look up for every message.
    pub bystanders: usize,
}

impl NationOptions {
    pub fn new(dir: &Path, members: Vec<MemberSpec>) -> NationOptions {
        let base = Config {
            data_dir: dir.to_path_buf(),
            port_base: 0,
            ..Config::default()
        };
        NationOptions {
            instance: "VN".into(),
            members,
            dir: dir.to_path_buf(),
            databases: BTreeMap::new(),
            trust_port: None,
            ra_token: None,
            ledger_url: None,
            evidence_retry_secs: 30,
            global_conf_validity_secs: 600,
            poll_secs: 60,
            ocsp_reuse_secs: 300,
            client_tls: false,
            pubsub: Default::default(),
            base,
            bystanders: 0,
        }
    }

    fn database(&self, part: &str) -> String {
        self.databases.get(part).cloned().unwrap_or_else(|| {
            format!("sqlite://{}", self.dir.join(format!("{part}.db")).display())
        })
    }
}

/// Register `options.bystanders` members (class `COM`, codes from 900000), each with the
/// subsystem `system` and a gateway `gw1` at an address nothing listens on, with a
/// self-signed TLS certificate of its own, all in the global group `bystanders`. Straight
/// into the central server's registry: through the management API a nation's worth of
/// members would take minutes to enrol.
async fn register_bystanders(
    registry: &crate::registry::Registry,
    options: &NationOptions,
) -> Result<(), Error> {
    use crate::registry::{NewGroup, NewGroupMember, NewMember, NewSubsystem};
    const GROUP: &str = "bystanders";
    tolerate_existing(
        registry
            .add_group(&NewGroup {
                code: GROUP.into(),
                description: "members registered beside the running ones".into(),
            })
            .await,
    )?;
    let tls_error = |e: rcgen::Error| Error::new(ErrorCode::Internal, e.to_string());
    for i in 0..options.bystanders {
        let system = bystander(&options.instance, i)?;
        let id = system.member().clone();
        tolerate_existing(
            registry
                .add_member(&NewMember {
                    id: id.clone(),
                    name: format!("Doanh nghiệp {}", i + 1),
                })
                .await,
        )?;
        tolerate_existing(
            registry
                .add_subsystem(&NewSubsystem { id: system.clone() })
                .await,
        )?;
        let cert = rcgen::generate_simple_self_signed(vec![format!("gw1.{}.invalid", id.code())])
            .map_err(tls_error)?;
        registry
            .register_gateway(&NewGateway {
                owner: id.clone(),
                code: "gw1".into(),
                address: "127.0.0.1:9".into(),
                tls_certificate: cert.cert.pem(),
            })
            .await?;
        tolerate_existing(
            registry
                .add_group_member(
                    GROUP,
                    &NewGroupMember {
                        client: ClientId::Subsystem(system),
                    },
                )
                .await,
        )?;
    }
    Ok(())
}

/// The subsystem of the `i`th member [`NationOptions::bystanders`] registers.
pub fn bystander(instance: &str, i: usize) -> Result<SubsystemId, Error> {
    Ok(MemberId::new(instance, "COM", &format!("{}", 900_000 + i))?.subsystem("system")?)
}

/// Serials of a gateway's certificates, to revoke them.
#[derive(Debug, Clone, Serialize)]
pub struct MemberCertificates {
    pub tls_serial: String,
    pub signing_serial: String,
}

/// One member's running gateway.
pub struct RunningGateway {
    pub member: MemberSpec,
    pub handle: ServerHandle,
    /// `http://…` of the client proxy and administration API.
    pub url: String,
    pub tls_addr: std::net::SocketAddr,
    pub admin: GatewayAdmin,
    pub certificates: MemberCertificates,
    pub files: MemberFiles,
    /// The configuration it was started with, to start it again on the same database.
    pub config: Config,
}

/// The PEM files of a member.
#[derive(Debug, Clone)]
pub struct MemberFiles {
    pub tls_certificate: PathBuf,
    pub tls_key: PathBuf,
    pub signing_certificate: PathBuf,
    pub signing_key: PathBuf,
}

/// A running exchange.
pub struct Nation {
    /// The CA itself, when this nation started its own trust service (tests and benchmarks
    /// revoke through it, as the CA's operator would); `None` when the trust service is
    /// someone else's.
    pub pki: Option<Pki>,
    pub trust: Option<ServerHandle>,
    /// `None` once stopped.
    pub central: Option<ServerHandle>,
    pub central_url: String,
    pub management_url: String,
    pub anchor: String,
    pub management: ManagementClient,
    pub gateways: Vec<RunningGateway>,
    /// Trust service's root certificate (PEM).
    pub root_pem: String,
}

impl Nation {
    pub fn gateway(&self, member: &MemberId) -> Result<&RunningGateway, Error> {
        self.gateways
            .iter()
            .find(|g| &g.member.id == member)
            .ok_or_else(|| Error::new(ErrorCode::ExchUnknownMember, member.to_string()))
    }

    /// Revoke a certificate, as the operator of this nation's own trust service.
    pub async fn revoke(&self, serial: &str) -> Result<(), Error> {
        let pki = self.pki.as_ref().ok_or_else(|| {
            Error::new(
                ErrorCode::ConfigInvalid,
                "revocation is the trust service operator's: use `xalo pki revoke` there",
            )
        })?;
        pki.revoke(serial, RevocationReason::KeyCompromise, None)
            .await
            .map(|_| ())
    }

    pub async fn shutdown(self) -> Result<(), Error> {
        for g in self.gateways {
            g.handle.shutdown().await?;
        }
        if let Some(c) = self.central {
            c.shutdown().await?;
        }
        if let Some(t) = self.trust {
            t.shutdown().await?;
        }
        Ok(())
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).map_err(|e| Error::from(e).context(path.display()))
}

/// Ask the trust service for a certificate (with a key it makes), as a registration
/// authority; returns the chain PEM, the key PEM and the serial.
async fn issue(
    ra: &RegistrationClient,
    profile: Profile,
    subject: Subject,
) -> Result<(String, String, String), Error> {
    let issued = ra
        .issue(&CertificateRequest {
            profile,
            subject,
            csr_pem: None,
            key_algorithm: Some(KeyAlgorithm::P256),
            validity_days: 365,
        })
        .await?;
    let key = issued
        .private_key_der()?
        .ok_or_else(|| Error::new(ErrorCode::Internal, "the authority kept no key"))?;
    let mut chain = issued.certificate_pem()?;
    for c in issued.chain_der()? {
        chain.push_str(&xalo_trust::key::pem_encode("CERTIFICATE", &c));
    }
    Ok((
        chain,
        xalo_trust::key::pem_encode("PRIVATE KEY", &key),
        issued.serial,
    ))
}

/// A CA certificate the trust service publishes (`root`, `organisations`, …), as PEM.
async fn ca_certificate(trust_url: &str, name: &str) -> Result<String, Error> {
    let url = format!("{trust_url}/ca/{name}.pem");
    let r = reqwest::get(&url)
        .await
        .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("{url}: {e}")))?;
    if !r.status().is_success() {
        return Err(Error::new(
            ErrorCode::TrustUpstream,
            format!("{url} answered {}", r.status()),
        ));
    }
    r.text()
        .await
        .map_err(|e| Error::new(ErrorCode::TrustUpstream, format!("{url}: {e}")))
}

/// Write a secret readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> Result<(), Error> {
    write(path, secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

async fn bind(config: &Config) -> Result<TcpListener, Error> {
    xalo_core::server::bind(std::net::SocketAddr::new(config.bind, 0)).await
}

/// Build and start the exchange.
pub async fn start(options: &NationOptions) -> Result<Nation, Error> {
    let dir = options.dir.join("exchange");
    std::fs::create_dir_all(&dir)?;
    // The trust service: ours, or the one running already.
    let mut trust_config = options.base.clone();
    // A trust role running already keeps its own database; ours goes where asked.
    if options.trust_port.is_none() || options.databases.contains_key("trust") {
        trust_config
            .roles
            .entry("trust".into())
            .or_default()
            .database_url = Some(options.database("trust"));
    }
    let (trust, trust_port, ra_token, pki) = match (options.trust_port, &options.ra_token) {
        (Some(port), Some(token)) => (None, port, token.clone(), None),
        (Some(_), None) => {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                "an exchange on a running trust service needs its registration-authority token",
            ));
        }
        (None, _) => {
            // Our own trust service, admitting our own registration token.
            let token = crate::random_token()?;
            trust_config
                .roles
                .entry("trust".into())
                .or_default()
                .settings
                .insert(
                    "registration_authorities".into(),
                    serde_json::json!([{ "name": "exchange", "token_sha256": token_hash(&token) }]),
                );
            let listener = bind(&options.base).await?;
            let port = listener.local_addr()?.port();
            let handle =
                xalo_trust::service::serve_with(trust_config.clone(), listener, Default::default())
                    .await?;
            let pki =
                xalo_trust::service::open_pki(&trust_config, port, KeyAlgorithm::P256).await?;
            (Some(handle), port, token, Some(pki))
        }
    };
    let trust_url = xalo_trust::service::public_url(&trust_config, trust_port);
    let ra = RegistrationClient::new(&trust_url, &ra_token)?;
    let root_pem = ca_certificate(&trust_url, "root").await?;
    let organisations_pem = ca_certificate(&trust_url, "organisations").await?;

    // Administrator and central server certificates.
    let operator = |cn: &str| Subject {
        common_name: cn.into(),
        organisation: Some("Xalo exchange operator".into()),
        country: options.instance.clone(),
        dns_names: vec!["localhost".into()],
        ..Subject::default()
    };
    let (admin_cert, admin_key, _) = issue(
        &ra,
        Profile::GatewayTls,
        operator("Xalo exchange administrator"),
    )
    .await?;
    let (central_cert, central_key, _) =
        issue(&ra, Profile::GatewayTls, operator("Xalo central server")).await?;
    let central_files = (dir.join("central.pem"), dir.join("central.key"));
    write(&central_files.0, &central_cert)?;
    write(&central_files.1, &central_key)?;
    write(&dir.join("admin.pem"), &admin_cert)?;
    write(&dir.join("admin.key"), &admin_key)?;
    write(&dir.join("root.pem"), &root_pem)?;
    let admin = Identity::from_pem(&admin_cert, &admin_key)?;

    // The central server.
    let mut central_config = options.base.clone();
    let central_role = central_config
        .roles
        .entry(crate::central::ROLE.into())
        .or_default();
    central_role.database_url = Some(options.database("central"));
    let settings = CentralSettings {
        instance: options.instance.clone(),
        validity_secs: options.global_conf_validity_secs,
        management_listen: None,
        tls_certificate: Some(central_files.0.clone()),
        tls_key: Some(central_files.1.clone()),
        administrators: vec![crate::fingerprint(admin.certificate())],
    };
    central_role.settings = to_settings(&settings)?;
    let central_listener = bind(&options.base).await?;
    let management_listener = bind(&options.base).await?;
    let management_url = format!("https://{}", management_listener.local_addr()?);
    let central =
        crate::central::serve_with(central_config, central_listener, Some(management_listener))
            .await?;
    let central_url = central.url();
    let management = ManagementClient::new(&management_url, &admin, &root_pem)?;
    management
        .set_authority(&NewAuthority {
            name: "Xalo Organisations CA".into(),
            certificates_pem: format!("{organisations_pem}{root_pem}"),
            ocsp_url: Some(format!("{trust_url}/ocsp")),
            tsa_url: Some(format!("{trust_url}/tsa")),
        })
        .await?;
    let anchor = crate::management_client::fetch_anchor(&central_url).await?;

    // Members, their certificates and gateways.
    let mut pending = Vec::new();
    for m in &options.members {
        // Registered by an earlier run of the same nation: keep it.
        tolerate_existing(management.add_member(&m.id, &m.name).await)?;
        for s in &m.subsystems {
            tolerate_existing(management.add_subsystem(&m.id.subsystem(s)?).await)?;
        }
        let mut org = Subject::organisation(m.id.instance(), &m.name, m.id.code());
        org.dns_names = vec!["localhost".into()];
        let (tls_cert, tls_key, tls_serial) = issue(&ra, Profile::GatewayTls, org.clone()).await?;
        org.dns_names.clear();
        let (seal_cert, seal_key, signing_serial) = issue(&ra, Profile::Seal, org).await?;
        let member_dir = dir.join(m.id.code());
        let files = MemberFiles {
            tls_certificate: member_dir.join("tls.pem"),
            tls_key: member_dir.join("tls.key"),
            signing_certificate: member_dir.join("seal.pem"),
            signing_key: member_dir.join("seal.key"),
        };
        write(&files.tls_certificate, &tls_cert)?;
        write(&files.tls_key, &tls_key)?;
        write(&files.signing_certificate, &seal_cert)?;
        write(&files.signing_key, &seal_key)?;
        let listener = bind(&options.base).await?;
        let tls_listener = bind(&options.base).await?;
        let tls_addr = tls_listener.local_addr()?;
        management
            .register_gateway(&NewGateway {
                owner: m.id.clone(),
                code: "gw1".into(),
                address: tls_addr.to_string(),
                tls_certificate: tls_cert.clone(),
            })
            .await?;
        pending.push((
            m.clone(),
            files,
            listener,
            tls_listener,
            MemberCertificates {
                tls_serial,
                signing_serial,
            },
        ));
    }
    if options.bystanders > 0 {
        let db = xalo_store::Database::connect(&options.database("central")).await?;
        register_bystanders(&crate::registry::Registry::open(db).await?, options).await?;
    }
    let mut gateways = Vec::new();
    for (member, files, listener, tls_listener, certificates) in pending {
        let tls_addr = tls_listener.local_addr()?;
        let token = hex::encode(rand::random::<[u8; 16]>());
        // The member's administrator reads the token here, for `xalo service add` and
        // `xalo access grant` against this gateway.
        write_secret(
            &dir.join(format!("{}.admin-token", member.id.code())),
            &token,
        )?;
        let settings = GatewaySettings {
            owner: Some(member.id.clone()),
            code: "gw1".into(),
            central_url: central_url.clone(),
            central_anchor: anchor.clone(),
            tls_listen: Some(tls_addr),
            client_tls_listen: options
                .client_tls
                .then(|| std::net::SocketAddr::new(options.base.bind, 0)),
            tls_certificate: files.tls_certificate.clone(),
            tls_key: files.tls_key.clone(),
            signing_certificate: files.signing_certificate.clone(),
            signing_key: files.signing_key.clone(),
            admin_token: Some(token.clone()),
            ledger_url: options.ledger_url.clone(),
            evidence_retry_secs: options.evidence_retry_secs,
            poll_secs: options.poll_secs,
            ocsp_reuse_secs: options.ocsp_reuse_secs,
            pubsub: options.pubsub.clone(),
            ..GatewaySettings::default()
        };
        let mut config = options.base.clone();
        let role = config.roles.entry(crate::gateway::ROLE.into()).or_default();
        role.database_url = Some(options.database(&format!("gateway-{}", member.id.code())));
        role.settings = to_settings(&settings)?;
        let handle = crate::gateway::serve_with(config.clone(), listener, tls_listener).await?;
        let url = handle.url();
        gateways.push(RunningGateway {
            admin: GatewayAdmin::new(&url, &token)?,
            member,
            handle,
            url,
            tls_addr,
            certificates,
            files,
            config,
        });
    }
    Ok(Nation {
        pki,
        trust,
        central: Some(central),
        central_url,
        management_url,
        anchor,
        management,
        gateways,
        root_pem,
    })
}

/// An existing registration is what was wanted.
pub fn tolerate_existing(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(e) if e.code == ErrorCode::StoreConflict => Ok(()),
        other => other,
    }
}

fn to_settings(s: &impl Serialize) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(mut m)) => {
            // `None` settings are left out, as a TOML file would leave them out.
            m.retain(|_, v| !v.is_null());
            Ok(m)
        }
        Ok(_) => Err(Error::new(ErrorCode::Internal, "settings are not a table")),
        Err(e) => Err(Error::new(ErrorCode::Internal, e.to_string())),
    }
}

/// A client of a gateway's administration API.
#[derive(Clone, Debug)]
pub struct GatewayAdmin {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl GatewayAdmin {
    pub fn new(base: &str, token: &str) -> Result<GatewayAdmin, Error> {
        Ok(GatewayAdmin {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
        })
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> Result<serde_json::Value, Error> {
        self.send(reqwest::Method::POST, path, body).await
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<serde_json::Value, Error> {
        let url = format!("{}{path}", self.base);
        let r = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(
                match serde_json::from_str::<xalo_core::error::ErrorBody>(&text) {
                    Ok(b) => Error::new(b.code, b.message),
                    Err(_) => {
                        Error::new(ErrorCode::ExchUpstream, format!("{url}: {status} {text}"))
                    }
                },
            );
        }
        serde_json::from_str(&text).map_err(|e| Error::new(ErrorCode::ExchUpstream, e.to_string()))
    }

    /// A GET whose answer is bytes (containers, archive files); errors as [`Self::get_json`].
    pub(crate) async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, Error> {
        let url = format!("{}{path}", self.base);
        let r = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))?;
        let status = r.status();
        let bytes = r
            .bytes()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))?;
        if !status.is_success() {
            return Err(
                match serde_json::from_slice::<xalo_core::error::ErrorBody>(&bytes) {
                    Ok(b) => Error::new(b.code, b.message),
                    Err(_) => Error::new(ErrorCode::ExchUpstream, format!("{url}: {status}")),
                },
            );
        }
        Ok(bytes.to_vec())
    }

    pub(crate) async fn get_json(&self, path: &str) -> Result<serde_json::Value, Error> {
        let url = format!("{}{path}", self.base);
        let r = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))?;
        if !r.status().is_success() {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            return Err(
                match serde_json::from_str::<xalo_core::error::ErrorBody>(&text) {
                    Ok(b) => Error::new(b.code, b.message),
                    Err(_) => {
                        Error::new(ErrorCode::ExchUpstream, format!("{url}: {status} {text}"))
                    }
                },
            );
        }
        r.json()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))
    }

    pub async fn add_service(&self, s: &NewService) -> Result<(), Error> {
        self.post("/api/v1/services", s).await.map(|_| ())
    }

    /// Allow `subject` every endpoint of `service`, or one (`method`, `path`).
    pub async fn grant(
        &self,
        service: &xalo_core::ServiceId,
        subject: RightSubject,
        endpoint: Option<(&str, &str)>,
    ) -> Result<(), Error> {
        let (method, path) = endpoint.unwrap_or(("*", "**"));
        self.post(
            "/api/v1/access-rights",
            &NewAccessRight {
                service: service.clone(),
                method: method.into(),
                path: path.into(),
                subject,
            },
        )
        .await
        .map(|_| ())
    }

    /// Withdraw a right given with [`GatewayAdmin::grant`].
    pub async fn revoke(
        &self,
        service: &xalo_core::ServiceId,
        subject: RightSubject,
        endpoint: Option<(&str, &str)>,
    ) -> Result<(), Error> {
        let (method, path) = endpoint.unwrap_or(("*", "**"));
        self.send(
            reqwest::Method::DELETE,
            "/api/v1/access-rights",
            &NewAccessRight {
                service: service.clone(),
                method: method.into(),
                path: path.into(),
                subject,
            },
        )
        .await
        .map(|_| ())
    }

    /// Let an information system with this certificate (PEM) call as `subsystem`.
    pub async fn register_client_certificate(
        &self,
        subsystem: &SubsystemId,
        certificate_pem: &str,
    ) -> Result<(), Error> {
        self.post(
            "/api/v1/clients",
            &serde_json::json!({ "subsystem": subsystem, "certificate": certificate_pem }),
        )
        .await
        .map(|_| ())
    }

    /// The gateway's status (configuration version, certificates, listeners).
    pub async fn status(&self) -> Result<serde_json::Value, Error> {
        let url = format!("{}/api/v1/status", self.base);
        self.http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))?
            .json()
            .await
            .map_err(|e| Error::new(ErrorCode::ExchUpstream, format!("{url}: {e}")))
    }

    /// Issue a key for an information system of `subsystem`.
    pub async fn issue_client_key(&self, subsystem: &SubsystemId) -> Result<String, Error> {
        let v = self
            .post(
                "/api/v1/clients",
                &serde_json::json!({ "subsystem": subsystem }),
            )
            .await?;
        v.get("key")
            .and_then(|k| k.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::new(ErrorCode::ExchUpstream, "no key in the answer"))
    }
}

/// Grant `client` all of `service`.
pub fn client_subject(client: &SubsystemId) -> RightSubject {
    RightSubject::Client(ClientId::Subsystem(client.clone()))
}
