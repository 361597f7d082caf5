//! Both registers behind a real server, with a real ledger anchoring their changes.

use std::time::Duration;

use serde_json::{Value, json};
use xalo_core::Config;
use xalo_ledger::client::LedgerClient;
use xalo_registry::generate::generate;
use xalo_store::testing::TestDatabase;

struct Nation {
    url: String,
    ledger: LedgerClient,
    http: reqwest::Client,
    _servers: Vec<xalo_core::server::ServerHandle>,
    _dbs: Vec<TestDatabase>,
    _dir: tempfile::TempDir,
}

async fn nation() -> Nation {
    let dir = tempfile::tempdir().unwrap();
    let (population, business, ledger_db) = (
        TestDatabase::new().await.unwrap(),
        TestDatabase::new().await.unwrap(),
        TestDatabase::new().await.unwrap(),
    );
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let role = |c: &mut Config, name: &str, url: &str| {
        c.roles.entry(name.into()).or_default().database_url = Some(url.to_owned());
    };
    role(&mut config, "population", population.url());
    role(&mut config, "business", business.url());
    role(&mut config, "ledger", ledger_db.url());
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
    config
        .roles
        .entry("registry".into())
        .or_default()
        .settings
        .insert("ledger_url".into(), ledger.url().into());
    // A small population to register against.
    let pop = xalo_store::Database::connect(population.url())
        .await
        .unwrap();
    generate(&pop, 400, 3, 100, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    pop.close().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = xalo_registry::service::serve(config, listener)
        .await
        .unwrap();
    Nation {
        url: registry.url(),
        ledger: LedgerClient::new(&ledger.url()).unwrap(),
        http: reqwest::Client::new(),
        _servers: vec![registry, ledger],
        _dbs: vec![population, business, ledger_db],
        _dir: dir,
    }
}

impl Nation {
    async fn get(&self, path: &str, user: Option<&str>) -> (u16, Value) {
        let mut r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("X-Road-Client", "VN/GOV/000007/portal");
        if let Some(u) = user {
            r = r
                .header("X-Road-UserId", u)
                .header("X-Road-Issue", "test: checking the register");
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("X-Road-Client", "VN/GOV/000007/portal")
            .header("X-Road-UserId", "VN001085000001")
            .header("X-Road-Issue", "registration at the one-stop shop")
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// A registration with an `Idempotency-Key`; the status, whether the answer is a
    /// replay, and the body.
    async fn post_once(&self, path: &str, key: &str, body: Value) -> (u16, bool, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("X-Road-Client", "VN/GOV/000007/portal")
            .header("X-Road-UserId", "VN001085000001")
            .header("X-Road-Issue", "dossier 1.001193-0001")
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let replayed = r.headers().get("idempotent-replayed").is_some();
        (
            r.status().as_u16(),
            replayed,
            r.json().await.unwrap_or(Value::Null),
        )
    }
}

fn code_of(v: &Value) -> String {
    v["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn registers_over_http() {
    let n = nation().await;
    let (s, people) = n
        .get(
            "/population/persons?unit=00070&limit=100",
            Some("VN001085000001"),
        )
        .await;
    assert_eq!(s, 200);
    let _ = people;
    // Find a married woman with a husband, as the generator makes many.
    let (_, sample) = n.get("/population/changes?since=0", Some("officer")).await;
    assert!(
        sample.as_array().unwrap().is_empty(),
        "generation is a load, not a change"
    );
    let pop = {
        let mut found = None;
        for unit in xalo_registry::admin_unit::admin_units()
            .units
            .iter()
            .take(3321)
        {
            let (_, list) = n
                .get(
                    &format!("/population/persons?unit={}", unit.code),
                    Some("officer"),
                )
                .await;
            if let Some(w) = list.as_array().unwrap().iter().find(|p| {
                p["gender"] == "female"
                    && p["alive"] == true
                    && !p["spouse"].is_null()
                    && p["birth_date"].as_str().unwrap() > "1975"
            }) {
                found = Some(w.clone());
                break;
            }
        }
        found.expect("a married woman in the sample")
    };
    let mother = code_of(&pop);
    let father = pop["spouse"].as_str().unwrap().to_owned();

    // Calls without a purpose are refused.
    let (s, e) = n.get(&format!("/population/persons/{mother}"), None).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("XALO-REG-002")));
    let (s, p) = n
        .get(
            &format!("/population/persons/{mother}"),
            Some("VN001085000001"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["code"], mother.as_str());

    // A birth.
    let birth = json!({
        "family_name": "Nguyễn", "middle_name": "Minh", "given_name": "An",
        "birth_date": "2025-03-01", "gender": "male", "birth_place": "06970",
        "mother": mother, "father": father, "legal_basis": "Luật Hộ tịch 2014, Điều 16"
    });
    let (s, born) = n.post("/population/births", birth.clone()).await;
    assert_eq!(s, 200, "{born}");
    let child = born["record"]["code"].as_str().unwrap().to_owned();
    assert!(
        child.starts_with("VN022225"),
        "born in Quảng Ninh (022), male, 21st century, 2025: {child}"
    );
    assert_eq!(born["record"]["residence_unit"], pop["residence_unit"]);

    // A retried registration (same Idempotency-Key) answers with the first one's child;
    // the key cannot be reused for another request; without a key, a birth is a new one.
    let mut twins = birth.clone();
    twins["given_name"] = json!("Bình");
    let (s, replayed, first) = n
        .post_once("/population/births", "dossier-7", twins.clone())
        .await;
    assert_eq!((s, replayed), (200, false), "{first}");
    let (s, replayed, again) = n
        .post_once("/population/births", "dossier-7", twins.clone())
        .await;
    assert_eq!((s, replayed), (200, true), "{again}");
    assert_eq!(again["record"]["code"], first["record"]["code"]);
    assert_eq!(again["change"]["seq"], first["change"]["seq"]);
    let mut other = twins.clone();
    other["given_name"] = json!("Châu");
    let (s, _, e) = n.post_once("/population/births", "dossier-7", other).await;
    assert_eq!((s, e["code"].as_str()), (422, Some("XALO-REG-009")), "{e}");
    let (s, _, third) = n
        .post_once("/population/births", "dossier-8", twins.clone())
        .await;
    assert_eq!(s, 200);
    assert_ne!(third["record"]["code"], first["record"]["code"]);
    let (_, kids) = n
        .get(
            &format!("/population/persons/{mother}/children"),
            Some("officer"),
        )
        .await;
    let named_binh = kids
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["given_name"] == "Bình" && k["birth_date"] == "2025-03-01")
        .count();
    assert_eq!(named_binh, 2, "one child per key: {kids}");

    // Rejected births, each with a precise reason.
    let mut b = birth.clone();
    b["mother"] = json!(father);
    let (s, e) = n.post("/population/births", b).await;
    assert_eq!((s, e["code"].as_str()), (422, Some("XALO-REG-004")));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not recorded as female"),
        "{e}"
    );
    let mut b = birth.clone();
    b["birth_date"] = json!("2999-01-01");
    assert_eq!(n.post("/population/births", b).await.0, 422);
    let mut b = birth.clone();
    b["birth_place"] = json!("99999");
    assert_eq!(
        n.post("/population/births", b).await.1["code"],
        "XALO-REG-007"
    );
    let mut b = birth.clone();
    b["mother"] = json!("VN001185999999");
    assert!(
        n.post("/population/births", b).await.1["message"]
            .as_str()
            .unwrap()
            .contains("not in the population register")
    );
    let mut b = birth.clone();
    b["legal_basis"] = json!("");
    assert_eq!(n.post("/population/births", b).await.0, 422);
    let mut b = birth.clone();
    b["mother"] = json!("VN00108500000");
    assert_eq!(
        n.post("/population/births", b).await.1["code"],
        "XALO-ID-001"
    );

    // Children and household.
    let (_, kids) = n
        .get(
            &format!("/population/persons/{mother}/children"),
            Some("officer"),
        )
        .await;
    assert!(
        kids.as_array()
            .unwrap()
            .iter()
            .any(|k| k["code"] == child.as_str())
    );
    let (_, home) = n
        .get(
            &format!("/population/persons/{child}/household"),
            Some("officer"),
        )
        .await;
    assert!(
        home.as_array()
            .unwrap()
            .iter()
            .any(|k| k["code"] == mother.as_str())
    );

    // Address change and death.
    let (s, _) = n
        .post("/population/address-changes", json!({"code": child, "unit": "00070", "address": "Số 1 Tràng Tiền", "legal_basis": "Luật Cư trú 2020"}))
        .await;
    assert_eq!(s, 200);
    let (s, e) = n
        .post(
            "/population/deaths",
            json!({"code": child, "death_date": "2020-01-01", "legal_basis": "Luật Hộ tịch"}),
        )
        .await;
    assert_eq!(
        (
            s,
            e["message"].as_str().unwrap().contains("before the birth")
        ),
        (422, true)
    );
    let (s, _) = n
        .post(
            "/population/deaths",
            json!({"code": child, "death_date": "2025-06-01", "legal_basis": "Luật Hộ tịch"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, e) = n
        .post(
            "/population/deaths",
            json!({"code": child, "death_date": "2025-06-02", "legal_basis": "Luật Hộ tịch"}),
        )
        .await;
    assert_eq!(
        (s, e["message"].as_str().unwrap().contains("deceased")),
        (422, true)
    );

    // The history and the event feed.
    let (_, history) = n
        .get(
            &format!("/population/persons/{child}/history"),
            Some("officer"),
        )
        .await;
    let events: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["birth", "address", "death"]);
    // After the last birth: the address change and the death.
    let (_, feed) = n
        .get(
            &format!("/population/changes?since={}", third["change"]["seq"]),
            Some("social-security"),
        )
        .await;
    assert_eq!(feed.as_array().unwrap().len(), 2, "{feed}");

    // Every change is anchored in the ledger, and provably there.
    let mut anchored = 0;
    for _ in 0..100 {
        let (_, h) = n
            .get(
                &format!("/population/persons/{child}/history"),
                Some("officer"),
            )
            .await;
        anchored = h
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ledger_index"].is_i64())
            .count();
        if anchored == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(anchored, 3);
    let mut proven = false;
    for _ in 0..100 {
        if let Ok(note) = n.ledger.checkpoint_note().await {
            let cp = xalo_ledger::client::checkpoint_of_note(&note).unwrap();
            if cp.size >= 3 {
                let entry = xalo_ledger::Entry::new(
                    "registry.change".parse().unwrap(),
                    json!({"register": "population", "seq": history[0]["seq"], "evidence": history[0]["evidence"]}).to_string().into_bytes(),
                )
                .unwrap();
                n.ledger.prove_included(&entry, &cp).await.unwrap();
                proven = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proven);

    // The data tracker: the mother sees who read her data, nobody else does.
    let (s, e) = n
        .get(
            &format!("/population/persons/{mother}/accesses"),
            Some("VN001085000001"),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("XALO-REG-006")));
    let (s, seen) = n
        .get(
            &format!("/population/persons/{mother}/accesses"),
            Some(&mother),
        )
        .await;
    assert_eq!(s, 200);
    let purposes: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["purpose"].as_str().unwrap())
        .collect();
    assert!(
        purposes.contains(&"test: checking the register"),
        "{purposes:?}"
    );
    assert!(
        seen.as_array()
            .unwrap()
            .iter()
            .all(|a| a["client"] == "VN/GOV/000007/portal")
    );

    // The business register checks founders with the population register.
    let firm = json!({
        "name": "Công ty TNHH Hạ Long Xanh", "foreign_name": "Ha Long Green Co., Ltd",
        "unit": "06970", "address": "Số 5 đường Hạ Long", "legal_form": "Công ty TNHH một thành viên",
        "charter_capital": 500000000i64, "business_lines": ["5510"],
        "representative": mother, "founders": [mother], "legal_basis": "Luật Doanh nghiệp 2020"
    });
    let (s, made) = n.post("/business/enterprises", firm.clone()).await;
    assert_eq!(s, 200, "{made}");
    let tax = made["record"]["code"].as_str().unwrap().to_owned();
    assert!(tax.starts_with("22"), "{tax}");
    let (s, again) = n.post("/business/enterprises", firm.clone()).await;
    assert_eq!((s, again["code"].as_str()), (409, Some("XALO-REG-005")));
    let mut dead_founder = firm.clone();
    dead_founder["name"] = json!("Công ty TNHH Khác");
    dead_founder["founders"] = json!([child]);
    let (s, e) = n.post("/business/enterprises", dead_founder).await;
    assert_eq!((s, e["code"].as_str()), (422, Some("XALO-REG-004")));
    let mut eresident = firm.clone();
    eresident["name"] = json!("Estonian Digital Co");
    eresident["founders"] = json!(["EE38001085718"]);
    assert_eq!(n.post("/business/enterprises", eresident).await.0, 200);
    let (s, found) = n
        .get("/business/enterprises?name=ha%20long%20xanh", None)
        .await;
    assert_eq!((s, found[0]["code"].as_str()), (200, Some(tax.as_str())));
    let (s, e) = n.get("/business/enterprises/0100109107", None).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("XALO-REG-001")));
    // The founder check itself was a recorded access, with its purpose.
    let (_, seen) = n
        .get(
            &format!("/population/persons/{mother}/accesses"),
            Some(&mother),
        )
        .await;
    assert!(
        seen.as_array()
            .unwrap()
            .iter()
            .any(|a| a["purpose"].as_str().unwrap().contains("founder"))
    );

    // Enterprises by representative: about a person, so it needs a purpose and is recorded.
    let (s, e) = n
        .get(
            &format!("/business/enterprises?representative={mother}"),
            None,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("XALO-REG-002")));
    let (s, found) = n
        .get(
            &format!("/business/enterprises?representative={mother}"),
            Some("VN001085000001"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == tax.as_str())
    );
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["representative"] == mother.as_str())
    );

    // Every access record is anchored in the ledger as a salted commitment that the
    // person can recompute from the record and check.
    let mut anchored = Vec::new();
    for _ in 0..100 {
        let (_, seen) = n
            .get(
                &format!("/population/persons/{mother}/accesses"),
                Some(&mother),
            )
            .await;
        let all: Vec<xalo_registry::access_log::Access> = serde_json::from_value(seen).unwrap();
        if all.iter().all(|a| a.ledger_index.is_some()) {
            anchored = all;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!anchored.is_empty(), "access records were not anchored");
    assert!(
        anchored
            .iter()
            .any(|a| a.service == "enterprises.representative")
    );
    let mut checked = 0;
    for _ in 0..100 {
        let note = n.ledger.checkpoint_note().await.unwrap();
        let cp = xalo_ledger::client::checkpoint_of_note(&note).unwrap();
        if anchored
            .iter()
            .all(|a| (a.ledger_index.unwrap() as u64) < cp.size)
        {
            for a in &anchored {
                let salt = a.salt.as_deref().unwrap();
                let entry = a.ledger_entry(salt).unwrap();
                let index = n.ledger.prove_included(&entry, &cp).await.unwrap();
                assert_eq!(index, a.ledger_index.unwrap() as u64);
                // The entry says nothing readable about the person.
                assert!(!String::from_utf8_lossy(&entry.encode()).contains(&mother));
                // A record told differently does not match its entry.
                let mut changed = a.clone();
                changed.purpose.push('!');
                assert_ne!(
                    changed.ledger_entry(salt).unwrap().leaf_hash(),
                    entry.leaf_hash()
                );
                checked += 1;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(checked, anchored.len());
}
