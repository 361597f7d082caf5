use reqwest::Method;
use xalo_store::Row;

use super::support::{self, CLIENT, SERVICE};

#[tokio::test]
async fn a_call_goes_through_both_gateways_signed_and_logged() {
    let env = support::env().await;
    let r = env
        .call(
            Method::GET,
            &format!("{SERVICE}/persons/VN001203012345?lang=vi"),
        )
        .header("X-Road-UserId", "VN001203012345")
        .header("X-Road-Issue", "HS-2026-0001")
        .header("X-Road-Id", "test-message-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let h = r.headers().clone();
    assert_eq!(h["x-road-client"], CLIENT);
    assert_eq!(h["x-road-service"], SERVICE);
    assert_eq!(h["x-road-id"], "test-message-1");
    assert!(h.contains_key("x-road-request-id"));
    let request_hash = h["x-road-request-hash"].to_str().unwrap().to_owned();
    assert_eq!(base64_len(&request_hash), 64, "SHA-512");
    assert!(!h.contains_key("x-road-error"));
    assert!(
        !h.keys().any(|k| k.as_str().starts_with("x-xalo-")),
        "internal headers stay inside"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "VN001203012345");
    assert_eq!(body["client"], CLIENT);
    assert_eq!(body["user"], "VN001203012345");
    assert_eq!(body["issue"], "HS-2026-0001");

    // Both gateways keep the signed message; the log is written off the response path.
    for part in ["gateway-000007", "gateway-000001"] {
        let db = &env.database(part).db;
        let mut found = None;
        for _ in 0..100 {
            found = xalo_store::sqlx::query("SELECT side, request_hash, request_signature FROM gateway_message_log WHERE x_road_id = $1")
                .bind("test-message-1")
                .fetch_optional(db.pool())
                .await
                .unwrap();
            if found.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let row = found.unwrap_or_else(|| panic!("{part} logged the message"));
        assert_eq!(
            row.get::<String, _>(1),
            request_hash,
            "{part} logged the same request hash"
        );
        assert!(!row.get::<String, _>(2).is_empty());
    }
}

fn base64_len(s: &str) -> usize {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap()
        .len()
}

#[tokio::test]
async fn metaservices_answer_as_x_road_defines() {
    let env = support::env().await;
    let r = env
        .http
        .get(format!("{}/r1/VN/listClients", env.client_gateway().url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let clients: serde_json::Value = r.json().await.unwrap();
    let members = clients["member"].as_array().unwrap();
    assert!(members.iter().any(
        |m| m["id"]["subsystem_code"] == "population" && m["id"]["object_type"] == "SUBSYSTEM"
    ));
    assert!(
        members
            .iter()
            .any(|m| m["id"]["member_code"] == "000007" && m["id"]["object_type"] == "MEMBER")
    );

    let r = env
        .call(Method::GET, "VN/GOV/000001/population/listMethods")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-road-request-hash"));
    let methods: serde_json::Value = r.json().await.unwrap();
    let codes: Vec<&str> = methods["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service_code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["audit", "persons"]);

    let r = env
        .call(Method::GET, "VN/GOV/000001/population/allowedMethods")
        .send()
        .await
        .unwrap();
    let allowed: serde_json::Value = r.json().await.unwrap();
    let services = allowed["service"].as_array().unwrap();
    assert_eq!(services.len(), 1, "only persons is allowed: {allowed}");
    assert_eq!(services[0]["service_code"], "persons");
    assert_eq!(services[0]["endpoint_list"].as_array().unwrap().len(), 3);

    let r = env
        .call(
            Method::GET,
            "VN/GOV/000001/population/getOpenAPI?serviceCode=persons",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc, support::openapi());
}

#[tokio::test]
async fn evidence_of_both_sides_reaches_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_db = xalo_store::testing::TestDatabase::new().await.unwrap();
    let mut config = xalo_core::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let role = config.roles.entry("ledger".into()).or_default();
    role.database_url = Some(ledger_db.url().to_owned());
    role.settings
        .insert("checkpoint_interval_ms".into(), serde_json::json!(50));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ledger = xalo_ledger::service::serve(config, listener).await.unwrap();
    let env = support::env_with(support::Options {
        ledger_url: Some(ledger.url()),
        ..Default::default()
    })
    .await;

    let r = env
        .call(Method::GET, &format!("{SERVICE}/persons/VN001203012345"))
        .header("X-Road-Id", "evidence-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut indexes = Vec::new();
    for part in ["gateway-000007", "gateway-000001"] {
        let db = &env.database(part).db;
        let mut index = None;
        for _ in 0..200 {
            index = xalo_store::sqlx::query(
                "SELECT ledger_index FROM gateway_message_log WHERE x_road_id = $1",
            )
            .bind("evidence-1")
            .fetch_optional(db.pool())
            .await
            .unwrap()
            .and_then(|row| row.get::<Option<i64>, _>(0));
            if index.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        indexes.push(index.unwrap_or_else(|| panic!("{part} recorded evidence")));
    }
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes.len(), 2, "one entry per gateway");
    let client = xalo_ledger::client::LedgerClient::new(&ledger.url()).unwrap();
    let mut size = 0;
    for _ in 0..200 {
        size = xalo_ledger::client::checkpoint_of_note(&client.checkpoint_note().await.unwrap())
            .unwrap()
            .size;
        if size >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(size >= 2);
}

#[tokio::test]
async fn an_information_system_may_authenticate_with_its_certificate() {
    let env = support::env_with(support::Options {
        client_tls: true,
        ..Default::default()
    })
    .await;
    let gateway = env.client_gateway();
    let status = gateway.admin.status().await.unwrap();
    let addr: std::net::SocketAddr = status["client_tls_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let system = rcgen::generate_simple_self_signed(vec!["portal.vpcp.gov.vn".into()]).unwrap();
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger".into()]).unwrap();
    gateway
        .admin
        .register_client_certificate(&CLIENT.parse().unwrap(), &system.cert.pem())
        .await
        .unwrap();
    let client_for = |k: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        let pem = format!("{}{}", k.cert.pem(), k.signing_key.serialize_pem());
        reqwest::Client::builder()
            .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
            .add_root_certificate(
                reqwest::Certificate::from_pem(env.nation.root_pem.as_bytes()).unwrap(),
            )
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{}/r1/{SERVICE}/persons/1", addr.port());
    let r = client_for(&system)
        .get(&url)
        .header("X-Road-Client", CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = client_for(&stranger)
        .get(&url)
        .header("X-Road-Client", CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        support::error_type(r).await,
        (500, "Server.ClientProxy.ClientAuthenticationFailed".into())
    );
}

#[tokio::test]
async fn an_unreachable_provider_gateway_is_passed_over() {
    let env = support::env_with(support::Options {
        poll_secs: 1,
        ..Default::default()
    })
    .await;
    let before = env.client_gateway().admin.status().await.unwrap()["global_conf_version"]
        .as_i64()
        .unwrap();
    // A second gateway of the provider, registered but down.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let provider = env.provider_gateway();
    env.nation
        .management
        .register_gateway(&xalo_exchange::registry::NewGateway {
            owner: provider.member.id.clone(),
            code: "gw2".into(),
            address: closed.to_string(),
            tls_certificate: std::fs::read_to_string(&provider.files.tls_certificate).unwrap(),
        })
        .await
        .unwrap();
    for _ in 0..100 {
        let now = env.client_gateway().admin.status().await.unwrap()["global_conf_version"]
            .as_i64()
            .unwrap();
        if now > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for i in 0..8 {
        let r = env
            .call(Method::GET, &format!("{SERVICE}/persons/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "call {i}: {:?}", r.text().await);
    }
}
