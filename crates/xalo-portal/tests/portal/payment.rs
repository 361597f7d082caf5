//! The payment provider and the portal's side of it, as real servers on port 0: order,
//! payer page, signed redirect and callback, replays and tampering, retries with backoff,
//! the signed statement and reconciliation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, ErrorCode, PersonalCode};
use xalo_portal::dossier::{self, Channel, NewDossier};
use xalo_portal::payment::{self, PaymentStatus, ProviderKey};
use xalo_portal::payment_client::{PaymentClient, PaymentClientSettings};
use xalo_store::testing::TestDatabase;
use xalo_store::{Database, sqlx};
use xalo_web::Lang;

const SECRET: &str = "merchant-secret-of-the-portal";

struct World {
    provider: ServerHandle,
    provider_db: TestDatabase,
    portal: ServerHandle,
    portal_db: TestDatabase,
    client: PaymentClient,
    flaky_hits: Arc<AtomicUsize>,
    _flaky: ServerHandle,
    _dir: tempfile::TempDir,
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A merchant whose callback endpoint fails twice, then acknowledges.
async fn flaky_merchant(hits: Arc<AtomicUsize>) -> ServerHandle {
    let router = axum::Router::new().route(
        "/cb",
        axum::routing::post(move || {
            let hits = hits.clone();
            async move {
                if hits.fetch_add(1, Ordering::SeqCst) < 2 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    Server::new("flaky", router, &Default::default())
        .spawn(bind().await)
        .unwrap()
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let provider_db = TestDatabase::new().await.unwrap();
    let portal_db = TestDatabase::new().await.unwrap();
    let portal_listener = bind().await;
    let portal_url = format!("http://{}", portal_listener.local_addr().unwrap());
    let flaky_hits = Arc::new(AtomicUsize::new(0));
    let flaky = flaky_merchant(flaky_hits.clone()).await;
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let role = config.roles.entry("payment".into()).or_default();
    role.database_url = Some(provider_db.url().to_owned());
    role.settings = serde_json::json!({
        "merchants": [
            {
                "merchant_id": "portal", "name": "Cổng Dịch vụ công quốc gia",
                "secret_sha256": hex::encode(Sha256::digest(SECRET.as_bytes())),
                "callback_url": format!("{portal_url}/payment/callback"),
                "return_url": format!("{portal_url}/payment/return"),
            },
            {
                "merchant_id": "flaky", "name": "Flaky",
                "secret_sha256": hex::encode(Sha256::digest(b"flaky")),
                "callback_url": format!("{}/cb", flaky.url()),
                "return_url": format!("{}/back", flaky.url()),
            }
        ],
        "retry_base_ms": 100,
        "poll_ms": 50,
    })
    .as_object()
    .unwrap()
    .clone();
    let key = payment::public_key(&config).await.unwrap();
    let provider = payment::serve(config, bind().await).await.unwrap();
    let db = Database::connect(portal_db.url()).await.unwrap();
    dossier::migrate(&db).await.unwrap();
    let client = PaymentClient::new(
        db,
        PaymentClientSettings {
            provider_url: provider.url(),
            merchant_id: "portal".into(),
            secret: SECRET.into(),
            provider_key: key,
        },
    )
    .await
    .unwrap();
    let portal = Server::new("portal", client.router(), &Default::default())
        .spawn(portal_listener)
        .unwrap();
    World {
        provider,
        provider_db,
        portal,
        portal_db,
        client,
        flaky_hits,
        _flaky: flaky,
        _dir: dir,
    }
}

async fn new_dossier(w: &World) -> String {
    let db = Database::connect(w.portal_db.url()).await.unwrap();
    let person: PersonalCode = "VN001203012345".parse().unwrap();
    let d = dossier::create_draft(
        &db,
        &NewDossier {
            procedure_code: "1.001193".into(),
            agency: "G01.07".into(),
            first_step: "reception".into(),
            applicant: person,
            applicant_name: "NGUYỄN VĂN AN".into(),
            channel: Channel::Online,
            form: serde_json::json!({}),
        },
    )
    .await
    .unwrap();
    d.code
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The payer's browser: a cookie and the form's token.
struct Payer {
    cookie: String,
    csrf: String,
    page: String,
}

async fn open_pay_page(url: &str) -> Payer {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = r.text().await.unwrap();
    let csrf = page
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    Payer { cookie, csrf, page }
}

async fn post_form(url: &str, payer: &Payer, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("csrf_token", payer.csrf.as_str())];
    form.extend_from_slice(fields);
    http()
        .post(url)
        .header("cookie", &payer.cookie)
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn wait_for_status(client: &PaymentClient, code: &str, status: PaymentStatus) {
    for _ in 0..100 {
        if client
            .payments_of(code)
            .await
            .unwrap()
            .iter()
            .any(|p| p.status == status)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("payment of {code} never became {status:?}");
}

async fn provider_key(w: &World) -> ProviderKey {
    let db = Database::connect(w.provider_db.url()).await.unwrap();
    payment::signing_key(&db).await.unwrap()
}

async fn callback_body(w: &World, payment_id: &str) -> String {
    let db = Database::connect(w.provider_db.url()).await.unwrap();
    let row: (String,) = sqlx::query_as("SELECT body FROM payment_callback WHERE payment_id = $1")
        .bind(payment_id.to_owned())
        .fetch_one(db.pool())
        .await
        .unwrap();
    row.0
}

async fn post_callback(w: &World, body: &str, signature: &str) -> (u16, serde_json::Value) {
    let r = http()
        .post(format!("{}/payment/callback", w.portal.url()))
        .header("content-type", "application/json")
        .header("x-payment-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_replay_tamper_and_reconcile() {
    let w = world().await;
    let code = new_dossier(&w).await;

    // The order, and the same order again while it waits.
    let started = w
        .client
        .start(&code, 8_000, "Lệ phí đăng ký khai sinh", Lang::Vi)
        .await
        .unwrap();
    let again = w
        .client
        .start(&code, 8_000, "Lệ phí đăng ký khai sinh", Lang::Vi)
        .await
        .unwrap();
    assert_eq!(started, again);
    assert!(started.pay_url.starts_with(&w.provider.url()));

    // The payer page, in Vietnamese, with the amount as Vietnamese write it.
    let payer = open_pay_page(&started.pay_url).await;
    assert!(payer.page.contains("<html lang=\"vi\">"), "{}", payer.page);
    assert!(payer.page.contains("8.000 ₫"));
    assert!(payer.page.contains(&code));

    // A bad account number is a form error; nothing is paid.
    let confirm = format!("{}/confirm", started.pay_url);
    let r = post_form(&confirm, &payer, &[("bank", "VCB"), ("account", "12ab")]).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("aria-invalid=\"true\""), "{page}");
    assert!(page.contains("href=\"#account\""));
    // Without the form's token the provider refuses.
    let r = http()
        .post(&confirm)
        .header("cookie", &payer.cookie)
        .form(&[("bank", "VCB"), ("account", "0123456789")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Confirm: the payer goes back to the portal with the signed outcome.
    let r = post_form(
        &confirm,
        &payer,
        &[("bank", "VCB"), ("account", "0123456789")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/payment/return?", w.portal.url())),
        "{location}"
    );
    assert!(location.contains("status=paid") && location.contains("signature="));

    // The callback arrives by itself and marks the payment; the timeline shows it.
    wait_for_status(&w.client, &code, PaymentStatus::Paid).await;
    let db = Database::connect(w.portal_db.url()).await.unwrap();
    let events = dossier::events(&db, &code).await.unwrap();
    assert!(events.iter().any(|e| e.action == "paid"), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| e.action == "paid").count(),
        1,
        "paid once"
    );

    // The return page then changes nothing but shows the payment.
    let r = http().get(&location).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Đã thanh toán") && page.contains("8.000 ₫"),
        "{page}"
    );
    // A tampered return is refused with its code and recorded nowhere.
    let tampered = location.replace("amount_vnd=8000", "amount_vnd=80");
    let r = http().get(&tampered).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("XALO-PAY-006"));

    // The payer page of a settled order says so.
    let r = http().get(&started.pay_url).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("đã được thanh toán"));
    // Paying twice is refused at both ends.
    let e = w
        .client
        .start(&code, 8_000, "x", Lang::Vi)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PayOrderConflict);

    // A replayed callback changes nothing and says so.
    let key = provider_key(&w).await;
    let body = callback_body(&w, &started.payment_id).await;
    let (status, answer) = post_callback(&w, &body, &key.sign_body(body.as_bytes())).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("already_processed")),
        "{answer}"
    );
    assert_eq!(
        dossier::events(&db, &code).await.unwrap().len(),
        events.len()
    );
    // A tampered callback is refused with a coded error.
    let forged = body.replace("\"amount_vnd\":8000", "\"amount_vnd\":1");
    assert_ne!(forged, body);
    let (status, answer) = post_callback(&w, &forged, &key.sign_body(body.as_bytes())).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("XALO-PAY-006"))
    );
    let other = ProviderKey::generate();
    let (status, answer) = post_callback(&w, &body, &other.sign_body(body.as_bytes())).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("XALO-PAY-006"))
    );
    // Signed by the provider but not matching the portal's order: refused too.
    let fresh_event = body
        .replace(
            &format!(
                "\"event_id\":\"{}\"",
                serde_json::from_str::<serde_json::Value>(&body).unwrap()["event_id"]
                    .as_str()
                    .unwrap()
            ),
            "\"event_id\":\"fresh\"",
        )
        .replace("\"amount_vnd\":8000", "\"amount_vnd\":1");
    let (status, answer) =
        post_callback(&w, &fresh_event, &key.sign_body(fresh_event.as_bytes())).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("XALO-PAY-008")),
        "{answer}"
    );
    assert_eq!(
        w.client
            .paid_payment(&code)
            .await
            .unwrap()
            .unwrap()
            .amount_vnd,
        8_000
    );

    // Merchant credentials are checked.
    let r = http()
        .post(format!("{}/api/v1/orders", w.provider.url()))
        .basic_auth("portal", Some("wrong"))
        .json(&serde_json::json!({"order_ref": "X-1", "amount_vnd": 1, "description": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "XALO-PAY-001"
    );
    let r = http()
        .post(format!("{}/api/v1/orders", w.provider.url()))
        .basic_auth("portal", Some(SECRET))
        .json(&serde_json::json!({"order_ref": "X 1", "amount_vnd": 0, "description": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "XALO-PAY-002"
    );

    // A second dossier is cancelled on the payment page.
    let code2 = new_dossier(&w).await;
    let started2 = w
        .client
        .start(&code2, 50_000, "Lệ phí", Lang::En)
        .await
        .unwrap();
    let payer2 = open_pay_page(&started2.pay_url).await;
    assert!(payer2.page.contains("<html lang=\"en\">"));
    let r = post_form(&format!("{}/cancel", started2.pay_url), &payer2, &[]).await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("status=cancelled")
    );
    wait_for_status(&w.client, &code2, PaymentStatus::Cancelled).await;
    // … and paid after all, with a new order.
    let started3 = w
        .client
        .start(&code2, 50_000, "Lệ phí", Lang::Vi)
        .await
        .unwrap();
    assert_ne!(started3.payment_id, started2.payment_id);
    let payer3 = open_pay_page(&started3.pay_url).await;
    let r = post_form(
        &format!("{}/confirm", started3.pay_url),
        &payer3,
        &[("bank", "BIDV"), ("account", "9988776655")],
    )
    .await;
    assert_eq!(r.status(), 303);
    wait_for_status(&w.client, &code2, PaymentStatus::Paid).await;

    // Reconciliation: all matched.
    let today = chrono::Utc::now()
        .with_timezone(&payment::vietnam())
        .format("%Y-%m-%d")
        .to_string();
    let report = w.client.reconcile(&today).await.unwrap();
    assert_eq!((report.provider_paid, report.matched), (2, 2), "{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.provider_total_vnd, 58_000);

    // A callback lost for good (simulated: the portal forgets it), and a payment the
    // portal believes paid that the provider never saw.
    sqlx::query(
        "UPDATE portal_payment SET status = 'pending', settled_unix = NULL WHERE payment_id = $1",
    )
    .bind(started3.payment_id.clone())
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO portal_payment (payment_id, dossier_code, amount_vnd, status, created_unix, settled_unix) \
         VALUES ('PAYGHOST', $1, 1000, 'paid', $2, $2)",
    )
    .bind(code2.clone())
    .bind(chrono::Utc::now().timestamp())
    .execute(db.pool())
    .await
    .unwrap();
    let report = w.client.reconcile(&today).await.unwrap();
    assert_eq!(report.matched, 1, "{report}");
    assert_eq!(report.fixed.len(), 1);
    assert_eq!(report.fixed[0].payment_id, started3.payment_id);
    assert_eq!(report.flagged.len(), 1);
    assert_eq!(report.flagged[0].payment_id, "PAYGHOST");
    assert!(report.to_string().contains("FLAGGED"));
    assert_eq!(
        w.client
            .payments_of(&code2)
            .await
            .unwrap()
            .iter()
            .find(|p| p.payment_id == started3.payment_id)
            .unwrap()
            .status,
        PaymentStatus::Paid
    );
    // Reconciling again fixes nothing twice.
    let report = w.client.reconcile(&today).await.unwrap();
    assert!(report.fixed.is_empty() && report.matched == 2, "{report}");
    assert_eq!(
        w.client.reconcile("2026-13-01").await.unwrap_err().code,
        ErrorCode::PayBadDate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_retried_with_backoff_until_acknowledged() {
    let w = world().await;
    let r = http()
        .post(format!("{}/api/v1/orders", w.provider.url()))
        .basic_auth("flaky", Some("flaky"))
        .json(&serde_json::json!({"order_ref": "F-1", "amount_vnd": 25000, "description": "Phí"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let order: serde_json::Value = r.json().await.unwrap();
    let payer = open_pay_page(order["pay_url"].as_str().unwrap()).await;
    let r = post_form(
        &format!("{}/confirm", order["pay_url"].as_str().unwrap()),
        &payer,
        &[("bank", "MB"), ("account", "123456")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let db = Database::connect(w.provider_db.url()).await.unwrap();
    let mut delivered = None;
    for _ in 0..100 {
        let row: (String, i64) =
            sqlx::query_as("SELECT state, attempts FROM payment_callback WHERE payment_id = $1")
                .bind(order["payment_id"].as_str().unwrap().to_owned())
                .fetch_one(db.pool())
                .await
                .unwrap();
        if row.0 == "delivered" {
            delivered = Some(row.1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered, Some(3), "two failures, then acknowledged");
    let health: serde_json::Value = http()
        .get(format!("{}/healthz", w.provider.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(w.flaky_hits.load(Ordering::SeqCst), 3);
    // The merchant's order view and the signed statement agree.
    let r = http()
        .get(format!(
            "{}/api/v1/orders/{}",
            w.provider.url(),
            order["payment_id"].as_str().unwrap()
        ))
        .basic_auth("flaky", Some("flaky"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "paid"
    );
    // Many identical requests at once make one order.
    let url = format!("{}/api/v1/orders", w.provider.url());
    let requests = (0..8).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let r = http()
                .post(url)
                .basic_auth("flaky", Some("flaky"))
                .json(&serde_json::json!({"order_ref": "F-2", "amount_vnd": 1000, "description": "Phí"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<serde_json::Value>().await.unwrap()["payment_id"].clone()
        })
    });
    let mut ids = Vec::new();
    for r in requests.collect::<Vec<_>>() {
        ids.push(r.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    // Another merchant cannot see it.
    let r = http()
        .get(format!(
            "{}/api/v1/orders/{}",
            w.provider.url(),
            order["payment_id"].as_str().unwrap()
        ))
        .basic_auth("portal", Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
