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
    assert_eq!(
        r.headers()["content-type"],
        "application/json;charset=utf-8",
        "a gateway's own answer names its encoding (PR-REST 4.3)"
    );
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
    // Where PR-META (2) has it: JSON when asked for, else its clientList XML.
    let root = format!("{}/listClients", env.client_gateway().url);
    let list = |query: &str, accept: &str| {
        env.http
            .get(format!("{root}{query}"))
            .header("Accept", accept)
            .send()
    };
    let r = list("", "application/json").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), clients);
    // By weight, not by a substring; a media type's name has no case.
    for (accept, expected) in [
        ("Application/JSON", "application/json;charset=utf-8"),
        ("application/json;q=0, text/xml", "text/xml;charset=utf-8"),
        ("application/json;q=0.5, text/xml", "text/xml;charset=utf-8"),
        (
            "text/xml;q=0.5, application/json",
            "application/json;charset=utf-8",
        ),
    ] {
        let r = list("", accept).await.unwrap();
        assert_eq!(r.status(), 200, "{accept}");
        assert_eq!(r.headers()["content-type"], expected, "{accept}");
        assert_eq!(r.headers()["vary"], "accept", "{accept}");
    }
    // Called with GET only, and refused in the protocol's terms otherwise.
    let r = env.http.post(&root).send().await.unwrap();
    assert_eq!(r.headers()["x-road-error"], "Client.BadRequest");
    assert_eq!(
        support::error_type(r).await,
        (400, "Client.BadRequest".into())
    );
    let r = list("?xRoadInstance=VN", "*/*").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/xml;charset=utf-8");
    let xml = r.text().await.unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut subsystems = 0;
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"xroad:id" => {
                let kind = e.try_get_attribute("id:objectType").unwrap().unwrap();
                subsystems += usize::from(kind.value.as_ref() == b"SUBSYSTEM");
            }
            _ => {}
        }
    }
    assert_eq!(
        subsystems,
        members
            .iter()
            .filter(|m| m["id"]["object_type"] == "SUBSYSTEM")
            .count()
    );
    assert!(
        xml.contains("<id:memberCode>000007</id:memberCode>"),
        "{xml}"
    );
    let r = list("?xRoadInstance=EE", "*/*").await.unwrap();
    assert_eq!(
        support::error_type(r).await,
        (400, "Client.BadRequest".into())
    );

    let r = env
        .call(Method::GET, "VN/GOV/000001/population/listMethods")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-road-request-hash"));
    assert_eq!(
        r.headers()["content-type"],
        "application/json;charset=utf-8"
    );
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

    // The service code as a query's value, encoded or not.
    for code in ["persons", "person%73"] {
        let r = env
            .call(
                Method::GET,
                &format!("VN/GOV/000001/population/getOpenAPI?serviceCode={code}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{code}");
        let doc: serde_json::Value = r.json().await.unwrap();
        assert_eq!(doc, support::openapi());
    }
}

#[tokio::test]
async fn allowed_methods_lists_the_declared_endpoints_a_right_covers() {
    use xalo_exchange::nation::client_subject;
    use xalo_exchange::service_registry::NewService;
    let env = support::env().await;
    let provider = &env.provider_gateway().admin;
    let client: xalo_core::SubsystemId = CLIENT.parse().unwrap();
    let extracts: xalo_core::ServiceId = "VN/GOV/000001/population/extracts".parse().unwrap();
    provider
        .add_service(&NewService {
            service: extracts.clone(),
            backend_url: format!("http://{}", env.backend),
            openapi: Some(serde_json::json!({
                "openapi": "3.0.3",
                "info": {"title": "Extracts", "version": "1"},
                "paths": {
                    "/extracts": {"get": {"responses": {}}, "post": {"responses": {}}},
                    "/extracts/{id}": {"get": {"responses": {}}},
                    "/admin/reindex": {"post": {"responses": {}}}
                }
            })),
        })
        .await
        .unwrap();
    // One right covering two declared endpoints; the others are not this client's.
    provider
        .grant(
            &extracts,
            client_subject(&client),
            Some(("GET", "/extracts/**")),
        )
        .await
        .unwrap();
    // A service without a description: the rights themselves, not the whole service's.
    let audit: xalo_core::ServiceId = "VN/GOV/000001/population/audit".parse().unwrap();
    for right in [Some(("GET", "/entries/*")), None] {
        provider
            .grant(&audit, client_subject(&client), right)
            .await
            .unwrap();
    }
    let r = env
        .call(Method::GET, "VN/GOV/000001/population/allowedMethods")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let allowed: serde_json::Value = r.json().await.unwrap();
    let endpoints = |code: &str| -> Vec<(String, String)> {
        let service = allowed["service"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service_code"] == code)
            .unwrap_or_else(|| panic!("{code} is allowed: {allowed}"));
        let mut list: Vec<(String, String)> = service["endpoint_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["method"].as_str().unwrap().to_owned(),
                    e["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        list.sort();
        list
    };
    let pair = |m: &str, p: &str| (m.to_owned(), p.to_owned());
    assert_eq!(
        endpoints("extracts"),
        [pair("GET", "/extracts"), pair("GET", "/extracts/{id}")]
    );
    assert_eq!(endpoints("audit"), [pair("GET", "/entries/*")]);
    // The type is the description's, whatever the list holds (PR-MREST B.1).
    let kind = |code: &str| {
        allowed["service"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service_code"] == code)
            .map(|s| s["service_type"].clone())
            .unwrap()
    };
    assert_eq!(kind("extracts"), "OPENAPI");
    assert_eq!(kind("audit"), "REST");
    assert_eq!(endpoints("persons").len(), 3);
}

/// A ledger on `addr` with a fresh database (returned too: it must outlive the ledger).
async fn start_ledger(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
) -> (
    xalo_core::server::ServerHandle,
    xalo_store::testing::TestDatabase,
) {
    let ledger_db = xalo_store::testing::TestDatabase::new().await.unwrap();
    let mut config = xalo_core::Config {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let role = config.roles.entry("ledger".into()).or_default();
    role.database_url = Some(ledger_db.url().to_owned());
    role.settings
        .insert("checkpoint_interval_ms".into(), serde_json::json!(50));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let ledger = xalo_ledger::service::serve(config, listener).await.unwrap();
    (ledger, ledger_db)
}

/// The ledger index a gateway's log gives the message now.
async fn ledger_index_now(env: &support::Env, part: &str, x_road_id: &str) -> Option<i64> {
    xalo_store::sqlx::query("SELECT ledger_index FROM gateway_message_log WHERE x_road_id = $1")
        .bind(x_road_id)
        .fetch_optional(env.database(part).db.pool())
        .await
        .unwrap()
        .and_then(|row| row.get::<Option<i64>, _>(0))
}

/// The ledger index a gateway's log gives the message, once it has one (10 s at most).
async fn ledger_index(env: &support::Env, part: &str, x_road_id: &str) -> i64 {
    for _ in 0..200 {
        if let Some(index) = ledger_index_now(env, part, x_road_id).await {
            return index;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{part} has no ledger index for {x_road_id}")
}

#[tokio::test]
async fn evidence_of_both_sides_reaches_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _ledger_db) = start_ledger(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
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
        indexes.push(ledger_index(&env, part, "evidence-1").await);
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
async fn evidence_the_ledger_missed_is_sent_again_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    // A port with nothing listening yet: the ledger is down while messages are exchanged.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env = support::env_with(support::Options {
        ledger_url: Some(format!("http://{addr}")),
        evidence_retry_secs: 1,
        ..Default::default()
    })
    .await;
    for id in ["missed-1", "missed-2"] {
        let r = env
            .call(Method::GET, &format!("{SERVICE}/persons/VN001203012345"))
            .header("X-Road-Id", id)
            .header("X-Road-UserId", "VN001203019999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "an exchange does not wait for the ledger");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for part in ["gateway-000007", "gateway-000001"] {
        assert_eq!(ledger_index_now(&env, part, "missed-1").await, None);
    }

    let (ledger, _ledger_db) = start_ledger(dir.path(), addr).await;
    let mut indexes = Vec::new();
    for part in ["gateway-000007", "gateway-000001"] {
        for id in ["missed-1", "missed-2"] {
            indexes.push(ledger_index(&env, part, id).await);
        }
    }
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes.len(), 4, "one entry per message and gateway");
    // The entries say what the messages were, rebuilt from the log.
    let mut said = Vec::new();
    for i in &indexes {
        let entry: xalo_ledger::service::EntryJson =
            reqwest::get(format!("{}/entries/{i}", ledger.url()))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let entry = entry.to_entry().unwrap();
        assert_eq!(entry.kind.as_str(), xalo_exchange::evidence::KIND);
        let e: xalo_exchange::evidence::MessageEvidence =
            serde_json::from_slice(&entry.data).unwrap();
        said.push(e);
    }
    assert!(
        said.iter().all(|e| e.method == "GET"
            && e.user_id.as_deref() == Some("VN001203019999")
            && e.service == SERVICE
            && e.response_hash.is_some()),
        "{said:?}"
    );
    let sides: std::collections::BTreeSet<_> = said.iter().map(|e| e.side.as_str()).collect();
    assert_eq!(sides.len(), 2);
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
    // A caller that names the gateway (PR-REST 4.3) gets that one and no other.
    let via = |server: &str| {
        env.call(Method::GET, &format!("{SERVICE}/persons/1"))
            .header("X-Road-Security-Server", server)
    };
    for _ in 0..4 {
        let r = via("VN/GOV/000001/gw1").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = via("VN/GOV/000001/gw2").send().await.unwrap();
        assert_eq!(
            support::error_type(r).await,
            (500, "Server.ClientProxy.NetworkError".into()),
            "the named gateway is down: not passed over"
        );
    }
    for (named, says) in [
        (
            "VN/GOV/000001/gw3",
            "is not a registered gateway of VN/GOV/000001",
        ),
        (
            "VN/GOV/000007/gw1",
            "is not a registered gateway of VN/GOV/000001",
        ),
        ("gw1", "is not INSTANCE/CLASS/MEMBER/SERVERCODE"),
    ] {
        let r = via(named).send().await.unwrap();
        assert_eq!(r.status(), 400, "{named}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["type"], "Client.BadRequest");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
}
