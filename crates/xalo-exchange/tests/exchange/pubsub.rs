//! Publish/subscribe over the exchange: the population register's gateway publishes
//! births; Vietnam Social Security (allowed) subscribes with an inbox as its backend; the
//! tax administration (not allowed) is refused. Real gateways, mutual TLS, signed
//! deliveries, databases on the backend XALO_TEST_DATABASE selects.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use xalo_core::server::ServerHandle;
use xalo_core::{ErrorCode, ServiceId, SubsystemId};
use xalo_exchange::inbox::ReceivedEvent;
use xalo_exchange::nation::{MemberSpec, Nation, NationOptions, client_subject};
use xalo_exchange::pubsub::PubSubSettings;
use xalo_exchange::topic::DeliveryStatus;
use xalo_store::testing::TestDatabase;

const TOPIC: &str = "VN/GOV/000001/population/births";
const PUBLISHER: &str = "VN/GOV/000001/population";
const INSURANCE: &str = "VN/GOV/000003/insurance";
const TAX: &str = "VN/GOV/000002/tax";
/// Gateways in `nation.gateways`.
const PROVIDER: usize = 0;
const SOCIAL_SECURITY: usize = 1;
const FINANCE: usize = 2;

struct Env {
    nation: Nation,
    key: String,
    http: reqwest::Client,
    databases: Vec<(String, TestDatabase)>,
    _dir: tempfile::TempDir,
}

fn fast_retries() -> PubSubSettings {
    PubSubSettings {
        retry_min_ms: 200,
        retry_max_secs: 1,
        lease_secs: 5,
        ..PubSubSettings::default()
    }
}

async fn env(pubsub: PubSubSettings) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let members = vec![
        MemberSpec::new("VN/GOV/000001", "Bộ Công an", &["population"]).unwrap(),
        MemberSpec::new("VN/GOV/000003", "Bảo hiểm xã hội Việt Nam", &["insurance"]).unwrap(),
        MemberSpec::new("VN/GOV/000002", "Bộ Tài chính", &["tax"]).unwrap(),
    ];
    let mut options = NationOptions::new(dir.path(), members);
    let mut databases = Vec::new();
    for part in [
        "trust",
        "central",
        "gateway-000001",
        "gateway-000003",
        "gateway-000002",
    ] {
        let db = TestDatabase::new().await.unwrap();
        options.databases.insert(part.into(), db.url().to_owned());
        databases.push((part.to_owned(), db));
    }
    options.pubsub = pubsub;
    let nation = xalo_exchange::nation::start(&options).await.unwrap();
    let provider = &nation.gateways[PROVIDER].admin;
    let topic: ServiceId = TOPIC.parse().unwrap();
    provider
        .add_topic(&topic, "Births registered in the population register")
        .await
        .unwrap();
    provider
        .grant_topic(&topic, client_subject(&INSURANCE.parse().unwrap()))
        .await
        .unwrap();
    let key = provider
        .issue_client_key(&PUBLISHER.parse().unwrap())
        .await
        .unwrap();
    Env {
        nation,
        key,
        http: reqwest::Client::new(),
        databases,
        _dir: dir,
    }
}

impl Env {
    fn publish(&self, body: serde_json::Value) -> reqwest::RequestBuilder {
        self.publish_with_key(body, &self.key)
    }

    fn publish_with_key(&self, body: serde_json::Value, key: &str) -> reqwest::RequestBuilder {
        let topic: ServiceId = TOPIC.parse().unwrap();
        self.http
            .post(format!(
                "{}/publish/{}",
                self.nation.gateways[PROVIDER].url,
                topic.to_path()
            ))
            .header("X-Road-Client", PUBLISHER)
            .header("X-Xalo-Client-Key", key)
            .json(&body)
    }

    /// Publish and return the event id.
    async fn published(&self, body: serde_json::Value) -> String {
        let r = self.publish(body).send().await.unwrap();
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        let v: serde_json::Value = r.json().await.unwrap();
        v["event_id"].as_str().unwrap().to_owned()
    }

    async fn subscribe_insurance(&self, delivery_url: &str) {
        self.nation.gateways[SOCIAL_SECURITY]
            .admin
            .subscribe(
                &TOPIC.parse().unwrap(),
                &INSURANCE.parse().unwrap(),
                delivery_url,
            )
            .await
            .unwrap();
    }

    fn database(&self, part: &str) -> &xalo_store::Database {
        &self.databases.iter().find(|(p, _)| p == part).unwrap().1.db
    }

    async fn deliveries(&self) -> Vec<DeliveryStatus> {
        self.nation.gateways[PROVIDER]
            .admin
            .deliveries()
            .await
            .unwrap()
    }
}

/// An inbox on `addr` (any free port when `None`), on its own test database.
async fn inbox(addr: Option<SocketAddr>) -> (ServerHandle, TestDatabase) {
    let db = TestDatabase::new().await.unwrap();
    let mut config = xalo_core::Config::default();
    config.roles.entry("inbox".into()).or_default().database_url = Some(db.url().to_owned());
    let listener = tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
        .await
        .unwrap();
    (
        xalo_exchange::inbox::serve(config, listener).await.unwrap(),
        db,
    )
}

async fn received(inbox_url: &str, mailbox: &str) -> Vec<ReceivedEvent> {
    reqwest::get(format!("{inbox_url}/inbox/{mailbox}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Wait until `received` at `inbox_url` holds `n` events.
async fn wait_for_events(inbox_url: &str, mailbox: &str, n: usize) -> Vec<ReceivedEvent> {
    for _ in 0..300 {
        let events = received(inbox_url, mailbox).await;
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{mailbox} did not receive {n} events in time");
}

async fn wait_for_state(env: &Env, event_id: &str, state: &str) -> DeliveryStatus {
    for _ in 0..300 {
        if let Some(d) = env
            .deliveries()
            .await
            .into_iter()
            .find(|d| d.event_id == event_id && d.state == state)
        {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the delivery of {event_id} did not become {state}: {:?}",
        env.deliveries().await
    );
}

/// A free port, then free again (a backend that is down).
async fn unused_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn an_event_reaches_an_allowed_subscriber_once_signed_and_logged() {
    let env = env(fast_retries()).await;
    let (inbox, _inbox_db) = inbox(None).await;
    env.subscribe_insurance(&format!("{}/inbox/insurance", inbox.url()))
        .await;
    let birth = serde_json::json!({"event": "birth", "subject": "VN001226000001", "seq": 1});
    let event_id = env.published(birth.clone()).await;

    let events = wait_for_events(&inbox.url(), "insurance", 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].idempotency_key, event_id);
    assert_eq!(events[0].topic, TOPIC, "ce-source names the topic");
    assert_eq!(events[0].event_type, "births");
    assert_eq!(events[0].event, birth);
    assert_eq!(events[0].copies, 1, "delivered once");
    let d = wait_for_state(&env, &event_id, "delivered").await;
    assert_eq!(d.subscriber, INSURANCE);
    assert_eq!(d.attempts, 1);

    // Publishing again with the event's key is acknowledged, and not delivered again.
    let again = env
        .publish(birth)
        .header("Idempotency-Key", &event_id)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["new"], false);
    // The key with another body is refused, not acknowledged and dropped.
    let other = env
        .publish(serde_json::json!({"child": "someone else"}))
        .header("Idempotency-Key", &event_id)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
    let refused: serde_json::Value = other.json().await.unwrap();
    assert_eq!(refused["code"], "XALO-EXCH-025", "{refused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received(&inbox.url(), "insurance").await[0].copies, 1);

    // Both gateways keep the signed delivery in their message logs.
    for (part, side) in [
        ("gateway-000001", "publisher"),
        ("gateway-000003", "subscriber"),
    ] {
        let mut found = None;
        for _ in 0..100 {
            found = xalo_store::sqlx::query(
                "SELECT service, client, request_signature FROM gateway_message_log \
                 WHERE x_road_id = $1 AND side = $2",
            )
            .bind(&event_id)
            .bind(side)
            .fetch_optional(env.database(part).pool())
            .await
            .unwrap();
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        use xalo_store::Row;
        let row = found.unwrap_or_else(|| panic!("{part} logged the delivery"));
        assert_eq!(row.get::<String, _>(0), TOPIC);
        assert_eq!(row.get::<String, _>(1), INSURANCE);
        assert!(!row.get::<String, _>(2).is_empty(), "signed");
    }
    inbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_without_the_right_is_refused_and_gets_nothing() {
    let env = env(fast_retries()).await;
    let (inbox, _inbox_db) = inbox(None).await;
    let finance = &env.nation.gateways[FINANCE].admin;
    let tax: SubsystemId = TAX.parse().unwrap();
    let e = finance
        .subscribe(
            &TOPIC.parse().unwrap(),
            &tax,
            &format!("{}/inbox/tax", inbox.url()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ExchTopicAccessDenied, "{e}");
    assert!(e.message.contains(TAX) && e.message.contains(TOPIC), "{e}");
    let e = finance
        .subscribe(
            &"VN/GOV/000001/population/marriages".parse().unwrap(),
            &tax,
            &format!("{}/inbox/tax", inbox.url()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ExchUnknownTopic, "{e}");
    // Nothing was kept at the refused subscriber's gateway either.
    let e = finance
        .unsubscribe(&TOPIC.parse().unwrap(), &tax)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ExchUnknownSubscription, "{e}");

    // An allowed subscriber whose right is withdrawn gets no more events.
    env.subscribe_insurance(&format!("{}/inbox/insurance", inbox.url()))
        .await;
    let first = env.published(serde_json::json!({"n": 1})).await;
    wait_for_events(&inbox.url(), "insurance", 1).await;
    env.nation.gateways[PROVIDER]
        .admin
        .revoke_topic(
            &TOPIC.parse().unwrap(),
            client_subject(&INSURANCE.parse().unwrap()),
        )
        .await
        .unwrap();
    let second = env.published(serde_json::json!({"n": 2})).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(received(&inbox.url(), "tax").await.is_empty());
    let insurance = received(&inbox.url(), "insurance").await;
    assert_eq!(insurance.len(), 1);
    assert_eq!(insurance[0].idempotency_key, first);
    assert!(
        !env.deliveries().await.iter().any(|d| d.event_id == second),
        "no delivery queued without the right"
    );

    // Only the topic's subsystem publishes, with its key, on a registered topic.
    let r = env
        .publish_with_key(serde_json::json!({}), "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "XALO-EXCH-020", "{body}");
    let r = env
        .http
        .post(format!(
            "{}/publish/VN/GOV/000001/population/marriages",
            env.nation.gateways[PROVIDER].url
        ))
        .header("X-Road-Client", PUBLISHER)
        .header("X-Xalo-Client-Key", &env.key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "XALO-EXCH-017", "{body}");
    inbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_delivery_is_retried_until_the_backend_is_back() {
    let env = env(fast_retries()).await;
    let addr = unused_addr().await;
    env.subscribe_insurance(&format!("http://{addr}/inbox/insurance"))
        .await;
    let event_id = env.published(serde_json::json!({"n": 1})).await;
    // The backend is down: the subscriber's gateway refuses to acknowledge, and the
    // provider's gateway keeps trying.
    let mut pending = None;
    for _ in 0..100 {
        pending = env
            .deliveries()
            .await
            .into_iter()
            .find(|d| d.event_id == event_id && d.attempts >= 2);
        if pending.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = pending.expect("retried");
    assert_eq!(pending.state, "pending");
    let error = pending.last_error.unwrap_or_default();
    assert!(error.contains("ServiceFailed"), "{error}");

    let (inbox, _inbox_db) = inbox(Some(addr)).await;
    let events = wait_for_events(&inbox.url(), "insurance", 1).await;
    assert_eq!(events[0].idempotency_key, event_id);
    assert_eq!(events[0].copies, 1);
    let d = wait_for_state(&env, &event_id, "delivered").await;
    assert!(d.attempts >= 3, "{d:?}");
    inbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lost_acknowledgement_brings_a_duplicate_with_the_same_key() {
    let env = env(fast_retries()).await;
    let (inbox, _inbox_db) = inbox(None).await;
    // The subscriber's backend records each copy in the inbox, but answers the first
    // with an error, as if it failed after taking the event.
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let inbox_url = format!("{}/inbox/insurance", inbox.url());
    let backend = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                let inbox_url = inbox_url.clone();
                async move {
                    let h = |n: &str| headers[n].to_str().unwrap().to_owned();
                    let mut forward = reqwest::Client::new().post(&inbox_url).body(body);
                    for n in ["idempotency-key", "ce-source", "ce-type", "content-type"] {
                        forward = forward.header(n, h(n));
                    }
                    assert!(forward.send().await.unwrap().status().is_success());
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push((h("idempotency-key"), h("ce-id")));
                        seen.len()
                    };
                    if n == 1 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, backend).await });
    env.subscribe_insurance(&backend_url).await;

    let event_id = env.published(serde_json::json!({"n": 1})).await;
    let d = wait_for_state(&env, &event_id, "delivered").await;
    assert_eq!(d.attempts, 2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "delivered twice");
    for (key, ce_id) in &seen {
        assert_eq!(key, &event_id, "every copy carries the event's key");
        assert_eq!(ce_id, &event_id);
    }
    // The inbox recorded the event once and counted the copies.
    let events = received(&inbox.url(), "insurance").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].copies, 2);
    inbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_survive_a_restart_of_the_provider_gateway() {
    let mut env = env(fast_retries()).await;
    let addr = unused_addr().await;
    env.subscribe_insurance(&format!("http://{addr}/inbox/insurance"))
        .await;
    let a = env.published(serde_json::json!({"n": 1})).await;
    let b = env.published(serde_json::json!({"n": 2})).await;
    for id in [&a, &b] {
        let mut tried = false;
        for _ in 0..100 {
            tried = env
                .deliveries()
                .await
                .iter()
                .any(|d| &d.event_id == id && d.attempts >= 1 && d.state == "pending");
            if tried {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(tried, "{id} was tried while the backend was down");
    }

    // The provider's gateway stops with both events undelivered and starts again on its
    // database and its registered TLS address.
    let old = env.nation.gateways.remove(PROVIDER);
    old.handle.shutdown().await.unwrap();
    let tls_listener = tokio::net::TcpListener::bind(old.tls_addr).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restarted = xalo_exchange::gateway::serve_with(old.config.clone(), listener, tls_listener)
        .await
        .unwrap();

    let (inbox, _inbox_db) = inbox(Some(addr)).await;
    let events = wait_for_events(&inbox.url(), "insurance", 2).await;
    let mut keys: Vec<&str> = events.iter().map(|e| e.idempotency_key.as_str()).collect();
    keys.sort();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(keys, expected);
    assert!(events.iter().all(|e| e.copies == 1));
    restarted.shutdown().await.unwrap();
    inbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_delivery_given_up_is_kept_and_sent_again_when_asked() {
    let env = env(PubSubSettings {
        max_attempts: 2,
        ..fast_retries()
    })
    .await;
    let addr = unused_addr().await;
    env.subscribe_insurance(&format!("http://{addr}/inbox/insurance"))
        .await;
    let event_id = env.published(serde_json::json!({"n": 1})).await;
    let failed = wait_for_state(&env, &event_id, "failed").await;
    assert_eq!(failed.attempts, 2, "{failed:?}");
    // The outbox's sweep, at any age, keeps it: the publisher was told it was taken.
    let topics = xalo_exchange::topic::TopicRegistry::open(env.database("gateway-000001").clone())
        .await
        .unwrap();
    topics
        .sweep(xalo_core::unix_now_ms() + 86_400_000)
        .await
        .unwrap();
    assert_eq!(wait_for_state(&env, &event_id, "failed").await.attempts, 2);

    let (inbox, _inbox_db) = inbox(Some(addr)).await;
    let admin = &env.nation.gateways[PROVIDER].admin;
    assert_eq!(admin.retry_failed_deliveries().await.unwrap(), 1);
    let events = wait_for_events(&inbox.url(), "insurance", 1).await;
    assert_eq!(events[0].idempotency_key, event_id);
    wait_for_state(&env, &event_id, "delivered").await;
    assert_eq!(admin.retry_failed_deliveries().await.unwrap(), 0);
    inbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unsubscription_the_provider_did_not_hear_is_kept_to_be_sent_again() {
    let mut env = env(fast_retries()).await;
    env.subscribe_insurance("http://127.0.0.1:9/inbox/insurance")
        .await;
    let topic: ServiceId = TOPIC.parse().unwrap();
    let insurance: SubsystemId = INSURANCE.parse().unwrap();
    let subscriber = env.nation.gateways[SOCIAL_SECURITY].admin.clone();
    // The provider's gateway is down: the subscription stays, here and there.
    let old = env.nation.gateways.remove(PROVIDER);
    old.handle.shutdown().await.unwrap();
    let e = subscriber
        .unsubscribe(&topic, &insurance)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ExchUpstream, "{e}");
    assert_eq!(subscriber.subscriptions().await.unwrap().len(), 1);
    // A subscription that never reached the provider is not kept where it was asked.
    let finance = env.nation.gateways[FINANCE - 1].admin.clone();
    let e = finance
        .subscribe(
            &topic,
            &TAX.parse().unwrap(),
            "http://127.0.0.1:9/inbox/tax",
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ExchUpstream, "{e}");
    assert!(finance.subscriptions().await.unwrap().is_empty());
    // Back on its database and address, it hears the unsubscription sent again.
    let tls_listener = tokio::net::TcpListener::bind(old.tls_addr).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restarted = xalo_exchange::gateway::serve_with(old.config.clone(), listener, tls_listener)
        .await
        .unwrap();
    subscriber.unsubscribe(&topic, &insurance).await.unwrap();
    assert!(subscriber.subscriptions().await.unwrap().is_empty());
    let topics = xalo_exchange::topic::TopicRegistry::open(env.database("gateway-000001").clone())
        .await
        .unwrap();
    assert!(topics.subscribers(&topic).await.unwrap().is_empty());
    restarted.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_delivery_the_subscribers_gateway_refuses_for_good_is_dropped_at_once() {
    let env = env(fast_retries()).await;
    let (inbox, _inbox_db) = inbox(None).await;
    env.subscribe_insurance(&format!("{}/inbox/insurance", inbox.url()))
        .await;
    // The subscriber's gateway forgets the subscription behind the provider's back: it
    // answers every delivery that it has no such subscription, which no retry mends.
    let topics = xalo_exchange::topic::TopicRegistry::open(env.database("gateway-000003").clone())
        .await
        .unwrap();
    assert!(
        topics
            .remove_subscription(&TOPIC.parse().unwrap(), &INSURANCE.parse().unwrap())
            .await
            .unwrap()
    );
    let event_id = env.published(serde_json::json!({"n": 1})).await;
    let dropped = wait_for_state(&env, &event_id, "dropped").await;
    assert_eq!(dropped.attempts, 1, "{dropped:?}");
    let error = dropped.last_error.unwrap_or_default();
    assert!(
        error.contains("Server.ServerProxy.UnknownService"),
        "{error}"
    );
    assert!(received(&inbox.url(), "insurance").await.is_empty());

    // A backend that fails is another matter: that delivery is tried again.
    env.subscribe_insurance(&format!("http://{}/inbox/insurance", unused_addr().await))
        .await;
    let event_id = env.published(serde_json::json!({"n": 2})).await;
    let mut retried = false;
    for _ in 0..300 {
        let d = env.deliveries().await;
        let d = d.iter().find(|d| d.event_id == event_id);
        assert_ne!(d.map(|d| d.state.as_str()), Some("dropped"), "{d:?}");
        if d.is_some_and(|d| d.attempts >= 2) {
            retried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(retried, "{:?}", env.deliveries().await);
    inbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_wait_while_the_providers_log_goes_unstamped_past_the_grace_period() {
    let mut env = env(fast_retries()).await;
    let (inbox, _inbox_db) = inbox(None).await;
    env.subscribe_insurance(&format!("{}/inbox/insurance", inbox.url()))
        .await;
    let old = env.nation.gateways.remove(PROVIDER);
    old.handle.shutdown().await.unwrap();
    let mut config = old.config.clone();
    let settings = &mut config.roles.get_mut("gateway").unwrap().settings;
    settings.insert("timestamp_interval_secs".into(), 1.into());
    settings.insert("timestamp_failure_secs".into(), 2.into());
    let token = settings["admin_token"].as_str().unwrap().to_owned();
    let tls_listener = tokio::net::TcpListener::bind(old.tls_addr).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = xalo_exchange::gateway::serve_with(config, listener, tls_listener)
        .await
        .unwrap();
    let url = handle.url();
    env.nation.gateways.insert(
        PROVIDER,
        xalo_exchange::nation::RunningGateway {
            admin: xalo_exchange::nation::GatewayAdmin::new(&url, &token).unwrap(),
            handle,
            url,
            ..old
        },
    );
    env.published(serde_json::json!({"n": 1})).await;
    wait_for_events(&inbox.url(), "insurance", 1).await;

    // The time-stamping authority goes away: past the grace period the provider's gateway
    // sends no event and takes no subscription, and the outbox keeps what is published.
    env.nation.trust.take().unwrap().shutdown().await.unwrap();
    let finance = &env.nation.gateways[FINANCE].admin;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let e = finance
            .subscribe(
                &TOPIC.parse().unwrap(),
                &TAX.parse().unwrap(),
                "http://127.0.0.1:9/inbox/tax",
            )
            .await
            .unwrap_err();
        if e.message.contains("Server.ServerProxy.timestamper_failed") {
            break e;
        }
        assert_eq!(e.code, ErrorCode::ExchTopicAccessDenied, "{e}");
        assert!(std::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.code, ErrorCode::ExchUpstream, "{refused}");
    let event_id = env.published(serde_json::json!({"n": 2})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = env
        .deliveries()
        .await
        .into_iter()
        .find(|d| d.event_id == event_id)
        .unwrap();
    assert_eq!(
        (waiting.state.as_str(), waiting.attempts),
        ("pending", 0),
        "{waiting:?}"
    );
    assert_eq!(received(&inbox.url(), "insurance").await.len(), 1);
    inbox.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_whose_backend_hangs_does_not_hold_up_the_others() {
    // Attempts may last as long as the gateways' timeout (a minute), longer than the test
    // waits for the other subscriber's events.
    let env = env(PubSubSettings {
        lease_secs: 120,
        ..fast_retries()
    })
    .await;
    // Social security's backend takes connections and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_addr = hanging.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hanging.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    env.subscribe_insurance(&format!("http://{hanging_addr}/inbox/insurance"))
        .await;
    let (inbox, _inbox_db) = inbox(None).await;
    env.nation.gateways[PROVIDER]
        .admin
        .grant_topic(
            &TOPIC.parse().unwrap(),
            client_subject(&TAX.parse().unwrap()),
        )
        .await
        .unwrap();
    env.nation.gateways[FINANCE]
        .admin
        .subscribe(
            &TOPIC.parse().unwrap(),
            &TAX.parse().unwrap(),
            &format!("{}/inbox/tax", inbox.url()),
        )
        .await
        .unwrap();
    const EVENTS: usize = 40;
    for n in 0..EVENTS {
        env.published(serde_json::json!({ "n": n })).await;
    }
    // Every event reaches the tax administration while social security's deliveries
    // hang: they hold four of the provider's sixteen slots at most.
    let events = wait_for_events(&inbox.url(), "tax", EVENTS).await;
    assert_eq!(events.len(), EVENTS);
    let hung = env
        .deliveries()
        .await
        .into_iter()
        .filter(|d| d.subscriber == INSURANCE && d.state == "pending")
        .count();
    assert_eq!(
        hung, EVENTS,
        "none to social security's backend went through"
    );
    // Each delivery under way there holds a connection of its own to the backend.
    let held = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=4).contains(&held),
        "{held} deliveries under way at once"
    );
    holder.abort();
    inbox.shutdown().await.unwrap();
}
