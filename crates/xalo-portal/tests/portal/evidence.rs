//! Prefill and the data tracker through a real exchange: a ledger, both registers with a
//! small generated population, and the Government Office's, the Ministry of Public
//! Security's and the Ministry of Finance's security gateways; the portal calls its own.
//! Attachments on the test database.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use xalo_core::{Config, ErrorCode, PersonalCode, SubsystemId};
use xalo_exchange::demo::ProvidedApi;
use xalo_exchange::nation::{MemberSpec, Nation, NationOptions, client_subject};
use xalo_exchange::service_registry::NewService;
use xalo_portal::exchange::{CallError, Exchange, ExchangeSettings, Register};
use xalo_portal::tracker::{Ledger, LedgerSettings, Proof};
use xalo_portal::{attachment, prefill, tracker};
use xalo_store::Database;
use xalo_store::testing::TestDatabase;

struct World {
    nation: Nation,
    exchange: ExchangeSettings,
    ledger: LedgerSettings,
    population: Database,
    business: Database,
    _servers: Vec<xalo_core::server::ServerHandle>,
    _dbs: Vec<TestDatabase>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut dbs = BTreeMap::new();
    for part in [
        "population",
        "business",
        "ledger",
        "trust",
        "central",
        "gateway-000007",
        "gateway-000001",
        "gateway-000002",
    ] {
        dbs.insert(part, TestDatabase::new().await.unwrap());
    }
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    for part in ["population", "business", "ledger"] {
        config.roles.entry(part.into()).or_default().database_url =
            Some(dbs[part].url().to_owned());
    }
    config
        .roles
        .entry("ledger".into())
        .or_default()
        .settings
        .insert("checkpoint_interval_ms".into(), 50.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ledger = xalo_ledger::service::serve(config.clone(), listener)
        .await
        .unwrap();
    let ledger_key = reqwest::get(format!("{}/key", ledger.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = xalo_registry::service::serve(config, listener)
        .await
        .unwrap();

    let members = vec![
        MemberSpec::new("VN/GOV/000007", "Văn phòng Chính phủ", &["portal"]).unwrap(),
        MemberSpec::new("VN/GOV/000001", "Bộ Công an", &["population"]).unwrap(),
        MemberSpec::new("VN/GOV/000002", "Bộ Tài chính", &["business"]).unwrap(),
    ];
    let mut options = NationOptions::new(dir.path(), members);
    for part in [
        "trust",
        "central",
        "gateway-000007",
        "gateway-000001",
        "gateway-000002",
    ] {
        options
            .databases
            .insert(part.into(), dbs[part].url().to_owned());
    }
    let nation = xalo_exchange::nation::start(&options).await.unwrap();
    let portal: SubsystemId = "VN/GOV/000007/portal".parse().unwrap();
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
            let gateway = nation.gateway(service.provider().member()).unwrap();
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
                .grant(&service, client_subject(&portal), Some(("GET", "**")))
                .await
                .unwrap();
        }
    }
    let key = nation.gateways[0]
        .admin
        .issue_client_key(&portal)
        .await
        .unwrap();
    let mut exchange = ExchangeSettings::new(&nation.gateways[0].url);
    exchange.headers.insert("X-Xalo-Client-Key".into(), key);
    World {
        nation,
        exchange,
        ledger: LedgerSettings {
            url: ledger.url(),
            key: ledger_key,
            witnesses: Vec::new(),
            quorum: 0,
        },
        population,
        business,
        _servers: vec![registry, ledger],
        _dbs: dbs.into_values().collect(),
        _dir: dir,
    }
}

async fn one(db: &Database, sql: &str) -> Vec<String> {
    use xalo_store::Row;
    let row = xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db.pool())
        .await
        .unwrap();
    (0..row.len())
        .map(|i| row.try_get::<String, _>(i).unwrap())
        .collect()
}

fn birth_form() -> Value {
    json!({
        "type": "object",
        "properties": {
            "child": { "type": "object", "properties": {
                "given_name": { "type": "string" }
            }},
            "declarant": { "type": "object", "properties": {
                "personal_code": { "type": "string", "x-prefill": "person.personal_code" },
                "full_name": { "type": "string", "x-prefill": "person.full_name" },
                "address": { "type": "string", "x-prefill": "person.residence_address" }
            }},
            "mother": { "type": "object", "properties": {
                "personal_code": { "type": "string", "x-prefill": "mother.personal_code" },
                "full_name": { "type": "string", "x-prefill": "mother.full_name" },
                "birth_date": { "type": "string", "x-prefill": "mother.birth_date" }
            }},
            "father": { "type": "object", "properties": {
                "full_name": { "type": "string", "x-prefill": "father.full_name" }
            }},
            "spouse_name": { "type": "string", "x-prefill": "spouse.full_name" },
            "household_size": { "type": "integer", "x-prefill": "household.size" }
        }
    })
}

#[tokio::test]
async fn prefill_and_the_data_tracker_through_a_real_exchange() {
    let w = world().await;
    let exchange = Exchange::new(&w.exchange).unwrap();

    // A child of the register: both parents recorded, no spouse.
    let row = one(
        &w.population,
        "SELECT code, mother, father FROM person WHERE mother IS NOT NULL AND father IS NOT NULL \
         AND spouse IS NULL AND mother IN (SELECT code FROM person) \
         AND father IN (SELECT code FROM person) ORDER BY code LIMIT 1",
    )
    .await;
    let (me, mother, father): (PersonalCode, String, String) =
        (row[0].parse().unwrap(), row[1].clone(), row[2].clone());
    let mother_row = one(
        &w.population,
        &format!(
            "SELECT family_name, middle_name, given_name, birth_date FROM person WHERE code = '{mother}'"
        ),
    )
    .await;
    let dossier = "G01.07-261128-0001";
    let p = prefill::prefill(&exchange, &birth_form(), &me, dossier)
        .await
        .unwrap();
    assert_eq!(p.form["declarant"]["personal_code"], me.to_string());
    assert_eq!(p.form["mother"]["personal_code"], mother);
    let mother_name = [&mother_row[0], &mother_row[1], &mother_row[2]]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(p.form["mother"]["full_name"], mother_name);
    assert_eq!(p.form["mother"]["birth_date"], mother_row[3]);
    assert!(
        p.form["father"]["full_name"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );
    assert!(p.form["household_size"].as_u64().is_some_and(|n| n >= 1));
    assert!(p.form.get("spouse_name").is_none());
    assert_eq!(
        p.missing,
        vec![("spouse_name".to_owned(), "spouse".to_owned())]
    );
    assert!(p.filled.contains(&"mother.full_name".to_owned()));
    let _ = father;

    // The enterprise a person represents, from the business register.
    let rep: PersonalCode = one(
        &w.business,
        "SELECT representative FROM enterprise WHERE status = 'active' ORDER BY code LIMIT 1",
    )
    .await[0]
        .parse()
        .unwrap();
    let firm_form = json!({"properties": {
        "tax_code": {"type": "string", "x-prefill": "enterprise.code"},
        "name": {"type": "string", "x-prefill": "enterprise.name"},
        "capital": {"type": "integer", "x-prefill": "enterprise.charter_capital"}
    }});
    let firm = prefill::prefill(&exchange, &firm_form, &rep, "G02.01-261128-0007")
        .await
        .unwrap();
    let expected = one(
        &w.business,
        &format!(
            "SELECT code, name FROM enterprise WHERE representative = '{rep}' AND status = 'active' ORDER BY code LIMIT 1"
        ),
    )
    .await;
    assert_eq!(firm.form["tax_code"], expected[0]);
    assert_eq!(firm.form["name"], expected[1]);
    assert!(firm.form["capital"].as_i64().is_some_and(|c| c > 0));

    // The exchange refusing is an error, never an empty prefill.
    let mut wrong = w.exchange.clone();
    wrong
        .headers
        .insert("X-Xalo-Client-Key".into(), "not-the-key".into());
    let e = prefill::prefill(&Exchange::new(&wrong).unwrap(), &birth_form(), &me, dossier)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PrefillRefused, "{e}");
    let gone = ExchangeSettings::new("http://127.0.0.1:9");
    let e = prefill::prefill(&Exchange::new(&gone).unwrap(), &birth_form(), &me, dossier)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PrefillUpstream, "{e}");

    // The register gives a person's access records only to that person, through the
    // exchange too.
    let refused = exchange
        .get::<Value>(
            Register::Population,
            "persons",
            &format!("/{me}/accesses"),
            &rep,
            "curiosity",
        )
        .await
        .unwrap_err();
    match refused {
        CallError::Refused { status, kind, .. } => {
            assert_eq!(status, 403);
            assert_eq!(kind, "XALO-REG-006");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The data tracker: the prefill's reads, with the dossier code as the purpose, each
    // proven in the ledger once the register has anchored it.
    let ledger = Ledger::new(&w.ledger).unwrap();
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = tracker::for_person(&exchange, Some(&ledger), &me)
            .await
            .unwrap();
        let prefill_rows = rows.iter().filter(|r| r.access.purpose == dossier);
        if prefill_rows.clone().count() > 0
            && prefill_rows
                .clone()
                .all(|r| matches!(r.proof, Proof::Verified { .. }))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mine: Vec<_> = rows
        .iter()
        .filter(|r| r.access.purpose == dossier)
        .collect();
    assert!(!mine.is_empty(), "{rows:?}");
    for r in &mine {
        assert_eq!(r.access.client, "VN/GOV/000007/portal");
        assert_eq!(r.access.subject, me.to_string());
        assert!(r.access.message_id.is_some());
        assert!(
            matches!(r.proof, Proof::Verified { .. }),
            "not proven: {r:?}"
        );
    }
    assert!(mine.iter().any(|r| r.access.service == "persons"));
    assert!(mine.iter().any(|r| r.access.service == "persons.household"));
    // A record changed after the fact no longer matches its ledger entry.
    let cp = ledger.checkpoint().await.unwrap();
    let mut forged = mine[0].access.clone();
    forged.purpose = "something else".into();
    assert!(matches!(
        tracker::check_proof(&ledger, &cp, &forged).await,
        Proof::Failed { .. }
    ));
    assert!(matches!(
        tracker::check_proof(&ledger, &cp, &mine[0].access).await,
        Proof::Verified { .. }
    ));
    w.nation.shutdown().await.unwrap();
}

fn pdf(text: &str) -> Vec<u8> {
    format!("%PDF-1.4\n% {text}\ntrailer\n<<>>\n%%EOF\n").into_bytes()
}

#[tokio::test]
async fn attachments_are_content_addressed_and_owned() {
    let t = TestDatabase::new().await.unwrap();
    let db = Database::connect(t.url()).await.unwrap();
    attachment::migrate(&db).await.unwrap();
    attachment::migrate(&db).await.unwrap();
    let alice: PersonalCode = "VN001085000001".parse().unwrap();
    let bob: PersonalCode = "VN001085000002".parse().unwrap();
    let scan = pdf("giấy chứng sinh");

    let a = attachment::store(&db, "D-1", &alice, "giay chung sinh.pdf", &scan)
        .await
        .unwrap();
    assert_eq!(a.media_type, "application/pdf");
    assert_eq!(a.size, scan.len() as i64);
    // The same content again in the same dossier: the same attachment.
    let again = attachment::store(&db, "D-1", &alice, "copy.pdf", &scan)
        .await
        .unwrap();
    assert_eq!(again.id, a.id);
    // In another dossier: another link to the one stored copy.
    let other = attachment::store(&db, "D-2", &alice, "x.pdf", &scan)
        .await
        .unwrap();
    assert_ne!(other.id, a.id);
    assert_eq!(other.sha256, a.sha256);
    use xalo_store::Row;
    let blobs: i64 = xalo_store::sqlx::query("SELECT COUNT(*) FROM portal_blob")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(blobs, 1);

    // Only the owner reads it; officers through the dossier, after their own check.
    let (got, bytes) = attachment::read_as_owner(&db, &alice, a.id).await.unwrap();
    assert_eq!((got.id, bytes), (a.id, scan.clone()));
    let e = attachment::read_as_owner(&db, &bob, a.id)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AttachNotFound);
    assert!(attachment::belongs_to(&db, "D-1", a.id).await.unwrap());
    assert!(!attachment::belongs_to(&db, "D-2", a.id).await.unwrap());
    assert!(attachment::read_in_dossier(&db, "D-2", a.id).await.is_err());
    assert_eq!(attachment::of_dossier(&db, "D-1").await.unwrap().len(), 1);

    // Disguised and oversized files are refused and nothing is stored.
    let e = attachment::store(&db, "D-1", &alice, "cv.pdf", b"MZ\x90\0this is a program")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AttachType);
    let e = attachment::store(
        &db,
        "D-1",
        &alice,
        "a.pdf",
        b"<html><script>alert(1)</script>",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::AttachType);
    let mut big = pdf("big");
    big.splice(10..10, vec![b' '; attachment::MAX_BYTES]);
    let e = attachment::store(&db, "D-1", &alice, "big.pdf", &big)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AttachTooLarge);
    assert_eq!(attachment::of_dossier(&db, "D-1").await.unwrap().len(), 1);

    // Bob cannot attach to (or learn about) Alice's dossier by sending the same bytes.
    let e = attachment::store(&db, "D-1", &bob, "x.pdf", &scan)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AttachNotFound);
    let e = attachment::store(&db, "D-1", &bob, "y.pdf", &pdf("bob's"))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AttachNotFound);

    // A dossier's limit.
    for i in 1..attachment::MAX_PER_DOSSIER {
        attachment::store(&db, "D-3", &alice, "p.pdf", &pdf(&format!("page {i}")))
            .await
            .unwrap();
    }
    attachment::store(&db, "D-3", &alice, "p.pdf", &pdf("last"))
        .await
        .unwrap();
    let e = attachment::store(&db, "D-3", &alice, "p.pdf", &pdf("one too many"))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AttachLimit);

    // Removing a link keeps content another dossier still links.
    attachment::remove(&db, &alice, a.id).await.unwrap();
    assert!(
        attachment::read_as_owner(&db, &alice, other.id)
            .await
            .is_ok()
    );
    assert_eq!(
        attachment::remove(&db, &bob, other.id)
            .await
            .unwrap_err()
            .code,
        ErrorCode::AttachNotFound
    );
    db.close().await;
}

// ---------------------------------------------------------------- the pages, end to end

mod pages {
    use super::*;
    use xalo_core::config::RoleConfig;
    use xalo_core::server::ServerHandle;

    use crate::portal::http::{Browser, hidden, location, verification_code};

    const CITIZEN: &str = "VN001203012345";
    const CITIZEN_PHONE: &str = "+84901234567";
    const OTHER: &str = "EE38001085718";
    const OTHER_PHONE: &str = "+3725550001";
    const PIN1: &str = "1234";
    const PIN2: &str = "12345";
    const SECRET: &str = "portal-secret-0123456789";
    const RA_TOKEN: &str = "operator-ra-token";
    const BIRTH: &str = "1.001193";

    fn role(db: &TestDatabase, settings: Value) -> RoleConfig {
        RoleConfig {
            listen: None,
            database_url: Some(db.url().to_owned()),
            settings: settings.as_object().unwrap().clone(),
        }
    }

    async fn listener() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    struct Citizens {
        world: World,
        trust: ServerHandle,
        mid: ServerHandle,
        id: ServerHandle,
        portal: ServerHandle,
        _dbs: Vec<TestDatabase>,
        _dir: tempfile::TempDir,
    }

    async fn citizens() -> Citizens {
        let world = world().await;
        // The citizen of the Mobile-ID operator is in the population register, with parents.
        xalo_store::sqlx::query(
            "UPDATE person SET code = $1 WHERE code = (SELECT code FROM person \
             WHERE mother IS NOT NULL AND father IS NOT NULL ORDER BY code LIMIT 1)",
        )
        .bind(CITIZEN)
        .execute(world.population.pool())
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dbs: Vec<TestDatabase> = futures_dbs(4).await;
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.roles.insert(
            "trust".into(),
            role(
                &dbs[0],
                json!({ "registration_authorities": [
                    { "name": "mobile-operator", "token_sha256": xalo_trust::registration::token_hash(RA_TOKEN) }
                ]}),
            ),
        );
        let trust = xalo_trust::serve_with(config.clone(), listener().await, Default::default())
            .await
            .unwrap();
        config.roles.insert(
            "mobile-id".into(),
            role(
                &dbs[1],
                json!({
                    "trust_url": trust.url(),
                    "ra_token": RA_TOKEN,
                    "subscribers": [
                        { "phone": CITIZEN_PHONE, "personal_code": CITIZEN, "given_name": "AN", "family_name": "NGUYỄN", "pin1": PIN1, "pin2": PIN2 },
                        { "phone": OTHER_PHONE, "personal_code": OTHER, "given_name": "MARI", "family_name": "TAMM", "pin1": PIN1, "pin2": PIN2 },
                    ],
                }),
            ),
        );
        let mid = xalo_id::operator::serve(config.clone(), listener().await)
            .await
            .unwrap();
        let portal_listener = listener().await;
        let portal_url = format!("http://{}", portal_listener.local_addr().unwrap());
        config.roles.insert(
            "id".into(),
            role(
                &dbs[2],
                json!({
                    "trust_url": trust.url(),
                    "mobile_id_url": mid.url(),
                    "poll_ms": 1000,
                    "clients": [{
                        "client_id": "portal", "name": "Cổng dịch vụ công", "auth_method": "client_secret_basic",
                        "redirect_uris": [format!("{portal_url}/auth/callback")],
                        "post_logout_redirect_uris": [format!("{portal_url}/signed-out")],
                        "secret": SECRET,
                    }],
                }),
            ),
        );
        let id = xalo_id::serve(config.clone(), listener().await)
            .await
            .unwrap();
        config.roles.insert(
            "portal".into(),
            role(
                &dbs[3],
                json!({
                    "id_url": id.url(),
                    "client_secret": SECRET,
                    "exchange": {
                        "gateway_url": world.exchange.gateway_url,
                        "headers": world.exchange.headers,
                    },
                    "ledger": { "url": world.ledger.url, "key": world.ledger.key },
                    "signing": {
                        "url": id.url(), "client_id": "portal", "secret": SECRET,
                        "trust_url": trust.url(),
                    },
                }),
            ),
        );
        let portal = xalo_portal::service::serve(config, portal_listener)
            .await
            .unwrap();
        Citizens {
            world,
            trust,
            mid,
            id,
            portal,
            _dbs: dbs,
            _dir: dir,
        }
    }

    async fn futures_dbs(n: usize) -> Vec<TestDatabase> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(TestDatabase::new().await.unwrap());
        }
        v
    }

    /// Answer the phone's pending request with `pin`.
    async fn phone_answers(n: &Citizens, phone: &str, expect_code: &str, pin: &str) {
        let mut b = Browser::new();
        let phone_url = format!("{}/phone/{phone}", n.mid.url());
        let mut html = String::new();
        for _ in 0..50 {
            html = b.text(&phone_url).await;
            if html.contains("session_id") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(verification_code(&html), expect_code);
        let r = b
            .post(
                &phone_url,
                &[
                    ("csrf_token", &hidden(&html, "csrf_token")),
                    ("session_id", &hidden(&html, "session_id")),
                    ("decision", "confirm"),
                    ("pin", pin),
                ],
            )
            .await;
        assert_eq!(r.status(), 303);
    }

    async fn sign_in(n: &Citizens, b: &mut Browser, phone: &str, code: &str) {
        let portal = n.portal.url();
        let r = b.get(&format!("{portal}/login?next=/dossiers")).await;
        let authorize = location(&r);
        let r = b.get(&authorize).await;
        assert_eq!(r.status(), 303);
        let html = b.text(&format!("{}/login", n.id.url())).await;
        let r = b
            .post(
                &format!("{}/login/mid", n.id.url()),
                &[
                    ("csrf_token", &hidden(&html, "csrf_token")),
                    ("phone", phone),
                    ("personal_code", code),
                ],
            )
            .await;
        let shown = verification_code(&r.text().await.unwrap());
        phone_answers(n, phone, &shown, PIN1).await;
        let r = b.get(&format!("{}/login/mid/poll", n.id.url())).await;
        assert_eq!(r.status(), 303);
        let r = b.get(&location(&r)).await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attach_sign_and_track_as_a_citizen_would() {
        let n = citizens().await;
        let portal = n.portal.url();
        let mut b = Browser::new();
        sign_in(&n, &mut b, CITIZEN_PHONE, CITIZEN).await;

        // A new application: its form is prefilled through the exchange.
        let html = b
            .text(&format!("{portal}/dossiers/new?procedure={BIRTH}&lang=en"))
            .await;
        let csrf = hidden(&html, "csrf_token");
        let r = b
            .post(
                &format!("{portal}/dossiers/new"),
                &[("csrf_token", &csrf), ("procedure", BIRTH)],
            )
            .await;
        assert_eq!(r.status(), 303);
        let code = location(&r)
            .trim_start_matches("/dossiers/")
            .trim_end_matches("/form")
            .to_owned();
        let dossier_url = format!("{portal}/dossiers/{code}");

        // Attachments: a real PDF is taken; a disguised one is refused with its code.
        let upload = format!("{portal}/upload/dossiers/{code}/attachments");
        let r = b
            .upload(&upload, &csrf, "giay chung sinh.pdf", pdf("chứng sinh"))
            .await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
        let r = b
            .upload(
                &upload,
                &csrf,
                "to khai.pdf",
                b"MZ\x90\0\x03 an executable".to_vec(),
            )
            .await;
        assert_eq!(r.status(), 415);
        assert!(r.text().await.unwrap().contains("XALO-ATTACH-002"));
        // Larger than the server's default body limit, within the attachments' limit.
        let mut scan = pdf("a large scan");
        scan.splice(10..10, vec![b' '; 3 * 1024 * 1024]);
        let r = b.upload(&upload, &csrf, "ban scan.pdf", scan).await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
        let mut big = pdf("too large");
        big.splice(10..10, vec![b' '; attachment::MAX_BYTES + 1]);
        let r = b.upload(&upload, &csrf, "qua lon.pdf", big).await;
        assert_eq!(r.status(), 413);
        assert!(r.text().await.unwrap().contains("XALO-ATTACH-001"));
        // Without the form's token, nothing is stored.
        let r = b.upload(&upload, "forged", "x.pdf", pdf("forged")).await;
        assert_eq!(r.status(), 403);
        let html = b.text(&dossier_url).await;
        assert!(html.contains("giay chung sinh.pdf"), "{html}");
        assert!(!html.contains("to khai.pdf"));
        assert!(!html.contains("x.pdf"));
        assert!(html.contains("ban scan.pdf"));
        assert!(!html.contains("qua lon.pdf"));
        let i = html
            .find(&format!("/dossiers/{code}/attachments/"))
            .unwrap();
        let file_url = format!("{portal}{}", &html[i..i + html[i..].find('"').unwrap()]);
        let r = b.get(&file_url).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/pdf");
        assert_eq!(r.bytes().await.unwrap().to_vec(), pdf("chứng sinh"));

        // Signing with Mobile-ID: PIN2 on the phone; the stored container verifies.
        let html = b.text(&format!("{dossier_url}/sign")).await;
        let r = b
            .post(
                &format!("{dossier_url}/sign"),
                &[
                    ("csrf_token", &hidden(&html, "csrf_token")),
                    ("phone", CITIZEN_PHONE),
                ],
            )
            .await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
        let wait_url = format!("{portal}{}", location(&r));
        let r = b.get(&wait_url).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["refresh"], "2");
        let shown = verification_code(&r.text().await.unwrap());
        phone_answers(&n, CITIZEN_PHONE, &shown, PIN2).await;
        let mut signed = false;
        for _ in 0..10 {
            let r = b.get(&wait_url).await;
            if r.status() == 303 {
                signed = true;
                break;
            }
        }
        assert!(signed, "the signature did not complete");
        let html = b.text(&format!("{dossier_url}/sign")).await;
        assert!(html.contains("NGUYỄN") || html.contains("NGUYEN"), "{html}");
        let r = b.get(&format!("{dossier_url}/signed.asice")).await;
        assert_eq!(r.status(), 200);
        let asice = r.bytes().await.unwrap().to_vec();
        let root = reqwest::get(format!("{}/ca/root.crt", n.trust.url()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        // `xalo verify` accepts the container as the portal stored it.
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("hoso.asice"), &asice).unwrap();
        std::fs::write(
            files.path().join("root.pem"),
            xalo_trust::key::pem_encode("CERTIFICATE", &root),
        )
        .unwrap();
        let accepted = xalo_trust::cli::run_verify(
            &Config::default(),
            xalo_trust::cli::VerifyArgs {
                container: files.path().join("hoso.asice"),
                ca: Some(files.path().join("root.pem")),
                json: false,
            },
        )
        .unwrap();
        assert!(accepted);
        let anchors = xalo_trust::chain::TrustAnchors::new(vec![root]);
        let report = xalo_trust::container::verify(&asice, &anchors);
        assert!(report.is_valid(), "{report}");
        assert_eq!(report.data_files, vec![format!("hoso-{code}.json")]);
        let c = xalo_trust::container::Container::read(&asice).unwrap();
        let doc: Value = serde_json::from_slice(&c.data_files[0].bytes).unwrap();
        assert_eq!(doc["dossier"], code);
        assert_eq!(doc["attachments"].as_array().unwrap().len(), 2);
        assert_eq!(
            doc["form"]["applicant_personal_code"], CITIZEN,
            "the prefilled form is what was signed: {doc}"
        );
        // A new document changes the application: the old signature no longer covers it.
        let r = b.upload(&upload, &csrf, "anh.png", png()).await;
        assert_eq!(r.status(), 303);
        let r = b.get(&format!("{dossier_url}/signed.asice")).await;
        assert_eq!(r.status(), 409);

        // With the ID card instead: the citizen signs the downloaded application with their
        // own software and uploads the container.
        let r = b.get(&format!("{dossier_url}/application.json")).await;
        assert_eq!(r.status(), 200);
        let document = r.bytes().await.unwrap().to_vec();
        let ra =
            xalo_trust::registration::RegistrationClient::new(&n.trust.url(), RA_TOKEN).unwrap();
        let card = ra
            .issue(&xalo_trust::registration::CertificateRequest {
                profile: xalo_trust::authority::Profile::PersonSigning,
                subject: xalo_trust::authority::Subject::person(
                    &CITIZEN.parse().unwrap(),
                    "AN",
                    "NGUYEN",
                ),
                csr_pem: None,
                key_algorithm: Some(xalo_trust::KeyAlgorithm::P256),
                validity_days: 365,
            })
            .await
            .unwrap();
        let signer = xalo_trust::authority::Signer::new(
            card.certificate_der().unwrap(),
            xalo_trust::key::SigningKey::from_pkcs8(&card.private_key_der().unwrap().unwrap())
                .unwrap(),
        )
        .unwrap();
        let http = reqwest::Client::new();
        let signed_by_card = xalo_trust::container::sign(
            None,
            vec![xalo_trust::container::DataFile {
                name: format!("hoso-{code}.json"),
                bytes: document,
            }],
            &xalo_trust::container::SignOptions {
                signer: &signer,
                chain: &card.chain_der().unwrap(),
                tsa_url: &format!("{}/tsa", n.trust.url()),
                http: &http,
            },
        )
        .await
        .unwrap();
        let card_upload = format!("{portal}/upload/dossiers/{code}/signature");
        // The Mobile-ID container covers the application before the PNG: refused.
        let r = b
            .upload_as(&card_upload, &csrf, "container", "old.asice", asice.clone())
            .await;
        assert_eq!(r.status(), 422);
        assert!(r.text().await.unwrap().contains("XALO-SIGN-003"));
        let r = b
            .upload_as(
                &card_upload,
                &csrf,
                "container",
                "hoso.asice",
                signed_by_card.clone(),
            )
            .await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
        let r = b.get(&format!("{dossier_url}/signed.asice")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().to_vec(), signed_by_card);
        // Someone else's card cannot sign this citizen's application.
        let stranger = ra
            .issue(&xalo_trust::registration::CertificateRequest {
                profile: xalo_trust::authority::Profile::PersonSigning,
                subject: xalo_trust::authority::Subject::person(
                    &OTHER.parse().unwrap(),
                    "MARI",
                    "TAMM",
                ),
                csr_pem: None,
                key_algorithm: Some(xalo_trust::KeyAlgorithm::P256),
                validity_days: 365,
            })
            .await
            .unwrap();
        let stranger_signer = xalo_trust::authority::Signer::new(
            stranger.certificate_der().unwrap(),
            xalo_trust::key::SigningKey::from_pkcs8(&stranger.private_key_der().unwrap().unwrap())
                .unwrap(),
        )
        .unwrap();
        let c = xalo_trust::container::Container::read(&signed_by_card).unwrap();
        let forged = xalo_trust::container::sign(
            None,
            c.data_files.clone(),
            &xalo_trust::container::SignOptions {
                signer: &stranger_signer,
                chain: &stranger.chain_der().unwrap(),
                tsa_url: &format!("{}/tsa", n.trust.url()),
                http: &http,
            },
        )
        .await
        .unwrap();
        let r = b
            .upload_as(&card_upload, &csrf, "container", "x.asice", forged)
            .await;
        assert_eq!(r.status(), 422);

        // The data tracker: the prefill's reads with the dossier code as their purpose,
        // each proven in the ledger.
        let mut html = String::new();
        for _ in 0..50 {
            html = b.text(&format!("{portal}/data-tracker?lang=en")).await;
            if html.contains(&code) && !html.contains("Waiting to be recorded") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(html.contains(&code), "{html}");
        assert!(html.contains("VN/GOV/000007/portal"), "{html}");
        assert!(html.contains("Văn phòng Chính phủ"), "{html}");
        assert!(html.contains("Verified: entry"), "{html}");
        assert!(html.contains("National population register"), "{html}");
        assert!(!html.contains("Does NOT verify"), "{html}");

        // Another person sees none of it.
        let mut other = Browser::new();
        sign_in(&n, &mut other, OTHER_PHONE, OTHER).await;
        let r = other.get(&file_url).await;
        assert_eq!(r.status(), 404);
        let r = other.get(&format!("{dossier_url}/signed.asice")).await;
        assert_eq!(r.status(), 404);
        let html = other.text(&format!("{portal}/data-tracker?lang=en")).await;
        assert!(!html.contains(&code), "{html}");
        let _ = &n.world;
    }

    fn png() -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend([0u8; 32]);
        png
    }
}
