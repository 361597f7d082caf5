//! A whole small nation on port 0 for end-to-end tests, assembled as `xalo demo` does: a
//! transparency ledger; both registers with a generated population (families included);
//! the data exchange (its trust service, central server and the security gateways of the
//! Government Office, the Ministry of Public Security and the Ministry of Finance); a trust
//! service for Mobile-ID; the Mobile-ID operator; national sign-in; the payment provider;
//! and the portal, which prefills through the exchange, signs with Mobile-ID, takes fees,
//! seals results with an agency seal and proves the data tracker's rows in the ledger.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use sha2::{Digest, Sha256};
use xalo_core::config::RoleConfig;
use xalo_core::server::ServerHandle;
use xalo_core::{Config, SubsystemId};
use xalo_exchange::demo::ProvidedApi;
use xalo_exchange::nation::{MemberSpec, NationOptions, client_subject};
use xalo_exchange::service_registry::NewService;
use xalo_portal::catalogue::StepRole;
use xalo_registry::model::Person;
use xalo_store::Database;
use xalo_store::testing::TestDatabase;
use xalo_trust::authority::Subject;
use xalo_trust::{AuthorityName, IssueRequest, KeySource, Profile};

/// Mobile-ID PINs of every subscriber: PIN1 signs in, PIN2 signs documents.
pub const PIN1: &str = "1234";
pub const PIN2: &str = "12345";
/// The ward where births are registered; the officer works its back office.
pub const OFFICE_AGENCY: &str = "QNI.HL";
const RA_TOKEN: &str = "mobile-operator-ra-token";
const ID_SECRET: &str = "portal-client-secret-0123456789";
const MERCHANT_SECRET: &str = "portal-merchant-secret-0123456789";
const SMS_TOKEN: &str = "portal-sms-token-0123456789";

/// Someone of the population register with a Mobile-ID.
pub struct Subscriber {
    pub phone: String,
    pub record: Person,
}

impl Subscriber {
    pub fn code(&self) -> String {
        self.record.code.to_string()
    }
}

pub struct FullNation {
    pub mid: ServerHandle,
    pub id: ServerHandle,
    pub payment: ServerHandle,
    pub portal: ServerHandle,
    pub portal_db: TestDatabase,
    /// A married citizen; the register links the spouse.
    pub citizen: Subscriber,
    pub spouse: Person,
    /// An officer of [`OFFICE_AGENCY`] with every step role.
    pub officer: Subscriber,
    /// The PEM root that results' seals chain to.
    pub seal_root_pem: String,
    /// The population register's database, to see what approvals wrote there.
    pub population: Database,
    /// The business register's database.
    pub business: Database,
    /// The portal's settings, for tests that drive its parts directly.
    pub portal_settings: xalo_portal::service::PortalSettings,
    /// Temporary files (keys, SQLite files); dropped last.
    pub dir: tempfile::TempDir,
    /// The exchange, ledger, registers and Mobile-ID's trust service, kept running.
    _exchange: xalo_exchange::nation::Nation,
    _servers: Vec<ServerHandle>,
    _dbs: Vec<TestDatabase>,
}

fn role(db: &TestDatabase, settings: serde_json::Value) -> RoleConfig {
    RoleConfig {
        listen: None,
        database_url: Some(db.url().to_owned()),
        settings: settings.as_object().unwrap().clone(),
    }
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

impl FullNation {
    pub async fn start() -> FullNation {
        let dir = tempfile::tempdir().unwrap();
        let mut dbs = BTreeMap::new();
        for part in [
            "population",
            "business",
            "ledger",
            "exchange-trust",
            "central",
            "gateway-000007",
            "gateway-000001",
            "gateway-000002",
            "trust",
            "mobile-id",
            "id",
            "payment",
        ] {
            dbs.insert(part, TestDatabase::new().await.unwrap());
        }
        let portal_db = TestDatabase::new().await.unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };

        // The ledger, then the registers, which anchor their changes in it.
        config.roles.insert(
            "ledger".into(),
            role(&dbs["ledger"], json!({ "checkpoint_interval_ms": 50 })),
        );
        let ledger = xalo_ledger::service::serve(config.clone(), listener().await)
            .await
            .unwrap();
        let ledger_key = reqwest::get(format!("{}/key", ledger.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for part in ["population", "business"] {
            config.roles.entry(part.into()).or_default().database_url =
                Some(dbs[part].url().to_owned());
        }
        config
            .roles
            .entry("registry".into())
            .or_default()
            .settings
            .insert("ledger_url".into(), ledger.url().into());
        let population = Database::connect(dbs["population"].url()).await.unwrap();
        let business = Database::connect(dbs["business"].url()).await.unwrap();
        xalo_registry::generate::generate_split(
            &population,
            &business,
            400,
            3,
            20,
            &indicatif::ProgressBar::hidden(),
        )
        .await
        .unwrap();
        let registry = xalo_registry::service::serve(config.clone(), listener().await)
            .await
            .unwrap();
        // Two married adults: the citizen (a parent-to-be) and an officer.
        let people = xalo_registry::store::people_where(
            &population,
            "alive = 1 AND spouse IS NOT NULL AND birth_date < '1990'",
            &[],
            2,
        )
        .await
        .unwrap();
        assert_eq!(people.len(), 2, "the register has married adults");
        let citizen = Subscriber {
            phone: "+84901234567".into(),
            record: people[0].clone(),
        };
        let officer = Subscriber {
            phone: "+84901234569".into(),
            record: people[1].clone(),
        };
        let spouse_code = citizen.record.spouse.unwrap().to_string();
        let spouse =
            xalo_registry::store::people_where(&population, "code = $1", &[spouse_code], 1)
                .await
                .unwrap()
                .remove(0);

        // The exchange: the portal (Government Office) reads both registers.
        let members = vec![
            MemberSpec::new("VN/GOV/000007", "Văn phòng Chính phủ", &["portal"]).unwrap(),
            MemberSpec::new("VN/GOV/000001", "Bộ Công an", &["population"]).unwrap(),
            MemberSpec::new("VN/GOV/000002", "Bộ Tài chính", &["business"]).unwrap(),
        ];
        let mut options = NationOptions::new(&dir.path().join("exchange"), members);
        for (part, db) in [
            ("trust", "exchange-trust"),
            ("central", "central"),
            ("gateway-000007", "gateway-000007"),
            ("gateway-000001", "gateway-000001"),
            ("gateway-000002", "gateway-000002"),
        ] {
            options
                .databases
                .insert(part.into(), dbs[db].url().to_owned());
        }
        options.ledger_url = Some(ledger.url());
        let exchange = xalo_exchange::nation::start(&options).await.unwrap();
        let portal_system: SubsystemId = "VN/GOV/000007/portal".parse().unwrap();
        for (provider, register) in [
            ("VN/GOV/000001/population", "population"),
            ("VN/GOV/000002/business", "business"),
        ] {
            let api = ProvidedApi {
                provider: provider.parse().unwrap(),
                backend_url: format!("{}/{register}", registry.url()),
                openapi: xalo_registry::service::openapi(register).0,
            };
            for (service, backend_url, openapi) in api.services().unwrap() {
                let gateway = exchange.gateway(service.provider().member()).unwrap();
                gateway
                    .admin
                    .add_service(&NewService {
                        service: service.clone(),
                        backend_url,
                        openapi: Some(openapi),
                    })
                    .await
                    .unwrap();
                gateway
                    .admin
                    // The portal reads for prefill and writes approved registrations.
                    .grant(&service, client_subject(&portal_system), None)
                    .await
                    .unwrap();
            }
        }
        let portal_gateway = exchange.gateway(portal_system.member()).unwrap();
        let client_key = portal_gateway
            .admin
            .issue_client_key(&portal_system)
            .await
            .unwrap();
        let gateway_url = portal_gateway.url.clone();
        let mut headers = serde_json::Map::new();
        headers.insert(xalo_exchange::message::CLIENT_KEY.into(), json!(client_key));

        // The ward's seal, from the exchange's trust service, as files the portal reads.
        let pki = exchange
            .pki
            .as_ref()
            .expect("the exchange started its own trust service");
        let issued = pki
            .issue(&IssueRequest {
                profile: Profile::Seal,
                subject: Subject::organisation("VN", "UBND phuong Hong Gai", "000123"),
                key: KeySource::Generate(xalo_trust::KeyAlgorithm::P256),
                validity_days: 365,
            })
            .await
            .unwrap();
        let mut chain_pem = xalo_trust::key::pem_encode("CERTIFICATE", &issued.record.certificate);
        for c in pki.chain_of(AuthorityName::Organisations) {
            chain_pem.push_str(&xalo_trust::key::pem_encode("CERTIFICATE", &c));
        }
        let seal_certificate: PathBuf = dir.path().join("seal.pem");
        let seal_key: PathBuf = dir.path().join("seal.key");
        std::fs::write(&seal_certificate, chain_pem).unwrap();
        std::fs::write(
            &seal_key,
            xalo_trust::key::pem_encode("PRIVATE KEY", &issued.private_key.unwrap()),
        )
        .unwrap();
        let tsa_url = format!(
            "{}/tsa",
            exchange
                .trust
                .as_ref()
                .expect("the exchange's trust service runs")
                .url()
        );
        let seal_root_pem = exchange.root_pem.clone();

        // Mobile-ID: its own trust service, the operator (a registration authority of it).
        config.roles.insert(
            "trust".into(),
            role(
                &dbs["trust"],
                json!({ "registration_authorities": [
                    { "name": "mobile-operator", "token_sha256": xalo_trust::registration::token_hash(RA_TOKEN) }
                ]}),
            ),
        );
        let trust = xalo_trust::serve_with(config.clone(), listener().await, Default::default())
            .await
            .unwrap();
        let subscribers: Vec<_> = [&citizen, &officer]
            .iter()
            .map(|s| {
                json!({
                    "phone": s.phone, "personal_code": s.code(),
                    "given_name": s.record.given_name, "family_name": s.record.family_name,
                    "pin1": PIN1, "pin2": PIN2,
                })
            })
            .collect();
        config.roles.insert(
            "mobile-id".into(),
            role(
                &dbs["mobile-id"],
                json!({
                    "trust_url": trust.url(), "ra_token": RA_TOKEN, "subscribers": subscribers,
                    "sms_senders": [{
                        "name": "DichVuCong",
                        "token_sha256": hex::encode(Sha256::digest(SMS_TOKEN.as_bytes())),
                    }],
                }),
            ),
        );
        let mid = xalo_id::operator::serve(config.clone(), listener().await)
            .await
            .unwrap();

        // The portal's port is known before the provider and the payment provider start,
        // to register its callbacks there.
        let portal_listener = listener().await;
        let portal_url = format!("http://{}", portal_listener.local_addr().unwrap());
        config.roles.insert(
            "id".into(),
            role(
                &dbs["id"],
                json!({
                    "trust_url": trust.url(),
                    "mobile_id_url": mid.url(),
                    "poll_ms": 500,
                    "clients": [{
                        "client_id": "portal", "name": "Cổng Dịch vụ công quốc gia",
                        "auth_method": "client_secret_basic",
                        "redirect_uris": [format!("{portal_url}/auth/callback")],
                        "post_logout_redirect_uris": [format!("{portal_url}/signed-out")],
                        "secret": ID_SECRET,
                    }],
                }),
            ),
        );
        let id = xalo_id::serve(config.clone(), listener().await)
            .await
            .unwrap();

        config.roles.insert(
            xalo_portal::payment::ROLE.into(),
            role(
                &dbs["payment"],
                json!({
                    "merchants": [{
                        "merchant_id": "portal", "name": "Cổng Dịch vụ công quốc gia",
                        "secret_sha256": hex::encode(Sha256::digest(MERCHANT_SECRET.as_bytes())),
                        "callback_url": format!("{portal_url}{}", xalo_portal::payment_client::CALLBACK_PATH),
                        "return_url": format!("{portal_url}{}", xalo_portal::payment_client::RETURN_PATH),
                    }],
                    "retry_base_ms": 200,
                    "poll_ms": 100,
                }),
            ),
        );
        let provider_key = xalo_portal::payment::public_key(&config).await.unwrap();
        let payment = xalo_portal::payment::serve(config.clone(), listener().await)
            .await
            .unwrap();

        config.roles.insert(
            "portal".into(),
            role(
                &portal_db,
                json!({
                    "id_url": id.url(),
                    "client_secret": ID_SECRET,
                    "exchange": {
                        "gateway_url": gateway_url,
                        "client": portal_system.to_string(),
                        "headers": headers,
                    },
                    "ledger": { "url": ledger.url(), "key": ledger_key.trim() },
                    "signing": {
                        "url": id.url(), "client_id": "portal", "secret": ID_SECRET,
                        "trust_url": trust.url(),
                    },
                    "payment": {
                        "provider_url": payment.url(), "merchant_id": "portal",
                        "secret": MERCHANT_SECRET, "provider_key": provider_key,
                    },
                    "result": {
                        "seal_certificate": seal_certificate,
                        "seal_key": seal_key,
                        "tsa_url": tsa_url,
                        "ledger_url": ledger.url(),
                        "public_url": portal_url,
                        "sms": { "url": mid.url(), "token": SMS_TOKEN },
                    },
                }),
            ),
        );
        let portal_settings: xalo_portal::service::PortalSettings = serde_json::from_value(
            serde_json::Value::Object(config.roles["portal"].settings.clone()),
        )
        .unwrap();
        let portal = xalo_portal::service::serve(config, portal_listener)
            .await
            .unwrap();
        xalo_portal::office::add_officer(
            &portal_db.db,
            &officer.record.code,
            OFFICE_AGENCY,
            &officer.record.full_name(),
            &StepRole::ALL,
        )
        .await
        .unwrap();

        FullNation {
            mid,
            id,
            payment,
            portal,
            portal_db,
            citizen,
            spouse,
            officer,
            seal_root_pem,
            population,
            business,
            portal_settings,
            dir,
            _exchange: exchange,
            _servers: vec![ledger, registry, trust],
            _dbs: dbs.into_values().collect(),
        }
    }
}
