//! Registrations pushed as events over the exchange: the registers publish through their
//! owners' gateways and the subscribers of the demo nation (social security, tax) receive
//! them in their inbox, also when the population register's gateway was away.

use std::time::Duration;

use serde_json::{Value, json};
use xalo_core::Config;
use xalo_exchange::demo::{DemoEvents, DemoExchange};
use xalo_exchange::nation::{MemberSpec, NationOptions};
use xalo_registry::generate::generate;
use xalo_store::Row;
use xalo_store::testing::TestDatabase;

struct Env {
    exchange: DemoExchange,
    events: DemoEvents,
    registry: xalo_core::server::ServerHandle,
    population: xalo_store::Database,
    http: reqwest::Client,
    _dbs: Vec<TestDatabase>,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let members = vec![
        MemberSpec::new("VN/GOV/000001", "Bộ Công an", &["population"]).unwrap(),
        MemberSpec::new("VN/GOV/000002", "Bộ Tài chính", &["business", "tax"]).unwrap(),
        MemberSpec::new("VN/GOV/000003", "Bảo hiểm xã hội Việt Nam", &["insurance"]).unwrap(),
    ];
    let mut options = NationOptions::new(dir.path(), members);
    options.pubsub.retry_min_ms = 200;
    options.pubsub.retry_max_secs = 1;
    let mut dbs = Vec::new();
    for part in [
        "trust",
        "central",
        "gateway-000001",
        "gateway-000002",
        "gateway-000003",
    ] {
        let db = TestDatabase::new().await.unwrap();
        options.databases.insert(part.into(), db.url().to_owned());
        dbs.push(db);
    }
    let nation = xalo_exchange::nation::start(&options).await.unwrap();
    let exchange = DemoExchange {
        nation,
        client_keys: Default::default(),
        lines: Vec::new(),
    };
    let (population, business, inbox) = (
        TestDatabase::new().await.unwrap(),
        TestDatabase::new().await.unwrap(),
        TestDatabase::new().await.unwrap(),
    );
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    for (role, db) in [
        ("population", &population),
        ("business", &business),
        ("inbox", &inbox),
    ] {
        config.roles.entry(role.into()).or_default().database_url = Some(db.url().to_owned());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let events = xalo_exchange::demo::start_events(&exchange, &config, listener)
        .await
        .unwrap();
    let settings = &mut config.roles.entry("registry".into()).or_default().settings;
    settings.insert(
        "population_events".into(),
        serde_json::to_value(&events.population).unwrap(),
    );
    settings.insert(
        "business_events".into(),
        serde_json::to_value(&events.business).unwrap(),
    );
    let pop = xalo_store::Database::connect(population.url())
        .await
        .unwrap();
    generate(&pop, 400, 5, 100, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = xalo_registry::service::serve(config, listener)
        .await
        .unwrap();
    Env {
        exchange,
        events,
        registry,
        population: pop,
        http: reqwest::Client::new(),
        _dbs: dbs
            .into_iter()
            .chain([population, business, inbox])
            .collect(),
        _dir: dir,
    }
}

impl Env {
    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.registry.url()))
            .header("X-Road-Client", "VN/GOV/000004/onestop")
            .header("X-Road-UserId", "VN022085000123")
            .header("X-Road-Issue", "registration at the one-stop shop")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// The events in a subscriber's mailbox once there are `n`.
    async fn mailbox(&self, mailbox: &str, n: usize) -> Vec<Value> {
        let url = format!("{}/inbox/{mailbox}", self.events.inbox.url());
        for _ in 0..300 {
            let list: Vec<Value> = reqwest::get(&url).await.unwrap().json().await.unwrap();
            if list.len() >= n {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{mailbox} did not get {n} events");
    }

    /// A married woman of child-bearing age and her living husband.
    async fn parents(&self) -> (String, String) {
        let mother = xalo_registry::store::people_where(
            &self.population,
            "gender = 'female' AND alive = 1 AND birth_date > '1980' \
             AND spouse IN (SELECT code FROM person WHERE alive = 1)",
            &[],
            1,
        )
        .await
        .unwrap()
        .pop()
        .expect("a married woman");
        (mother.code.to_string(), mother.spouse.unwrap().to_string())
    }
}

fn birth(mother: &str, father: &str) -> Value {
    json!({
        "family_name": "Trần", "middle_name": "Thị", "given_name": "Mai",
        "birth_date": "2025-04-02", "gender": "female", "birth_place": "06970",
        "mother": mother, "father": father, "legal_basis": "Luật Hộ tịch 2014, Điều 16"
    })
}

#[tokio::test]
async fn registrations_reach_social_security_and_tax_as_events() {
    let env = env().await;
    let (mother, father) = env.parents().await;
    let born = env
        .post("/population/births", birth(&mother, &father))
        .await;
    let child = born["record"]["code"].as_str().unwrap().to_owned();
    env.post(
        "/population/deaths",
        json!({"code": father, "death_date": "2025-05-01", "legal_basis": "Luật Hộ tịch 2014, Điều 33"}),
    )
    .await;
    env.post(
        "/population/address-changes",
        json!({"code": mother, "unit": "06970", "address": "Số 12 phố Hạ Long",
               "legal_basis": "Luật Cư trú 2020, Điều 22"}),
    )
    .await;
    let enterprise = env
        .post(
            "/business/enterprises",
            json!({
                "name": "Công ty TNHH Mai Trần", "unit": "06970", "address": "Số 12 phố Hạ Long",
                "legal_form": "Công ty TNHH một thành viên", "charter_capital": 500000000i64,
                "business_lines": ["4711"], "representative": mother, "founders": [mother],
                "legal_basis": "Luật Doanh nghiệp 2020"
            }),
        )
        .await;

    // Social security: the birth and the death, in the registers' own words.
    // (Deliveries run concurrently, so they may arrive in either order.)
    let insurance = env.mailbox("insurance", 2).await;
    assert_eq!(insurance.len(), 2, "{insurance:?}");
    let on = |list: &[Value], topic: &str| -> Value {
        list.iter()
            .find(|e| e["topic"] == topic)
            .unwrap_or_else(|| panic!("an event on {topic}: {list:?}"))
            .clone()
    };
    let births = on(&insurance, "VN/GOV/000001/population/births");
    assert_eq!(births["event_type"], "vn.gov.population.birth");
    assert_eq!(births["event"]["subject"], child.as_str());
    assert_eq!(births["event"]["data"]["data"]["mother"], mother.as_str());
    assert_eq!(
        births["idempotency_key"], born["change"]["evidence"],
        "the change's evidence hash is the event's key"
    );
    let deaths = on(&insurance, "VN/GOV/000001/population/deaths");
    assert_eq!(deaths["event"]["subject"], father.as_str());

    // Tax: the address change and the enterprise.
    let tax = env.mailbox("tax", 2).await;
    assert_eq!(tax.len(), 2, "{tax:?}");
    let moved = on(&tax, "VN/GOV/000001/population/address-changes");
    assert_eq!(moved["event"]["subject"], mother.as_str());
    let registered = on(&tax, "VN/GOV/000002/business/enterprises");
    assert_eq!(registered["event"]["subject"], enterprise["record"]["code"]);

    // The child's data tracker shows that the birth was published, and to which topic.
    let accesses: Value = env
        .http
        .get(format!(
            "{}/population/persons/{child}/accesses",
            env.registry.url()
        ))
        .header("X-Road-UserId", &child)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        accesses
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["client"] == "VN/GOV/000001/population/births"
                && a["service"] == "events.births"),
        "{accesses}"
    );
}

#[tokio::test]
async fn a_birth_registered_while_the_gateway_is_away_is_published_when_it_is_back() {
    let mut env = env().await;
    let (mother, father) = env.parents().await;
    // The Ministry of Public Security's gateway stops.
    let index = env
        .exchange
        .nation
        .gateways
        .iter()
        .position(|g| g.member.id.code() == "000001")
        .unwrap();
    let old = env.exchange.nation.gateways.remove(index);
    let plain: std::net::SocketAddr = old.url.trim_start_matches("http://").parse().unwrap();
    old.handle.shutdown().await.unwrap();

    // The registration stands; its event waits in the register.
    let born = env
        .post("/population/births", birth(&mother, &father))
        .await;
    let child = born["record"]["code"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("{}/inbox/insurance", env.events.inbox.url());
    let none: Vec<Value> = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert!(none.is_empty());

    // Back on the same addresses: the register's retry publishes it, the gateway delivers.
    let listener = tokio::net::TcpListener::bind(plain).await.unwrap();
    let tls_listener = tokio::net::TcpListener::bind(old.tls_addr).await.unwrap();
    let restarted = xalo_exchange::gateway::serve_with(old.config.clone(), listener, tls_listener)
        .await
        .unwrap();
    let mut published = None;
    for _ in 0..150 {
        published = xalo_store::sqlx::query(
            "SELECT published_ms FROM registry_change WHERE subject = $1 AND event = 'birth'",
        )
        .bind(&child)
        .fetch_one(env.population.pool())
        .await
        .unwrap()
        .get::<Option<i64>, _>(0);
        if published.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        published.is_some(),
        "the register published the birth again"
    );
    let insurance = env.mailbox("insurance", 1).await;
    assert_eq!(insurance[0]["event"]["subject"], child.as_str());
    assert_eq!(insurance[0]["copies"], 1);
    restarted.shutdown().await.unwrap();
}
