//! The citizen's pages against real servers on port 0: national sign-in with Mobile-ID at
//! a real `id` role (trust, Mobile-ID operator, provider), then applying, a form that
//! breaks the schema (nothing lost), submitting, another person's dossier, logout.

use serde_json::json;
use xalo_core::Config;
use xalo_core::config::RoleConfig;
use xalo_core::server::ServerHandle;
use xalo_store::testing::TestDatabase;

use super::http::{Browser, hidden, location, origin, verification_code};

const CITIZEN: &str = "VN001203012345";
const CITIZEN_PHONE: &str = "+84901234567";
const OTHER: &str = "EE38001085718";
const OTHER_PHONE: &str = "+3725550001";
const PIN1: &str = "1234";
const SECRET: &str = "portal-secret-0123456789";
const RA_TOKEN: &str = "operator-ra-token";
const BIRTH: &str = "1.001193";

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

struct Nation {
    _trust: ServerHandle,
    mid: ServerHandle,
    id: ServerHandle,
    portal: ServerHandle,
    portal_db: TestDatabase,
    _dbs: Vec<TestDatabase>,
    _dir: tempfile::TempDir,
}

impl Nation {
    async fn start() -> Nation {
        let dir = tempfile::tempdir().unwrap();
        let trust_db = TestDatabase::new().await.unwrap();
        let mid_db = TestDatabase::new().await.unwrap();
        let id_db = TestDatabase::new().await.unwrap();
        let portal_db = TestDatabase::new().await.unwrap();
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.roles.insert(
            "trust".into(),
            role(
                &trust_db,
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
                &mid_db,
                json!({
                    "trust_url": trust.url(),
                    "ra_token": RA_TOKEN,
                    "subscribers": [
                        { "phone": CITIZEN_PHONE, "personal_code": CITIZEN, "given_name": "AN", "family_name": "NGUYỄN", "pin1": PIN1, "pin2": "12345" },
                        { "phone": OTHER_PHONE, "personal_code": OTHER, "given_name": "MARI", "family_name": "TAMM", "pin1": PIN1, "pin2": "12345" },
                    ],
                }),
            ),
        );
        let mid = xalo_id::operator::serve(config.clone(), listener().await)
            .await
            .unwrap();
        // The portal's port is known before the provider starts, to register its callback.
        let portal_listener = listener().await;
        let portal_url = format!("http://{}", portal_listener.local_addr().unwrap());
        config.roles.insert(
            "id".into(),
            role(
                &id_db,
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
                &portal_db,
                json!({ "id_url": id.url(), "client_secret": SECRET }),
            ),
        );
        let portal = xalo_portal::service::serve(config, portal_listener)
            .await
            .unwrap();
        Nation {
            _trust: trust,
            mid,
            id,
            portal,
            portal_db,
            _dbs: vec![trust_db, mid_db, id_db],
            _dir: dir,
        }
    }
}

/// Sign in at the portal with Mobile-ID; returns where the portal sends the browser.
async fn sign_in(n: &Nation, b: &mut Browser, next: &str, phone: &str, code: &str) -> String {
    let portal = n.portal.url();
    let r = b.get(&format!("{portal}/login?next={next}")).await;
    assert_eq!(r.status(), 303);
    let authorize = location(&r);
    assert!(
        authorize.starts_with(&format!("{}/oidc/authorize?", n.id.url())),
        "{authorize}"
    );
    assert!(authorize.contains("code_challenge_method=S256"));
    assert!(authorize.contains("nonce="));
    let r = b.get(&authorize).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let html = b
        .get(&format!("{}/login", n.id.url()))
        .await
        .text()
        .await
        .unwrap();
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
    assert_eq!(r.status(), 200);
    let shown = verification_code(&r.text().await.unwrap());
    let phone_url = format!("{}/phone/{phone}", n.mid.url());
    let html = b.get(&phone_url).await.text().await.unwrap();
    assert_eq!(verification_code(&html), shown);
    let r = b
        .post(
            &phone_url,
            &[
                ("csrf_token", &hidden(&html, "csrf_token")),
                ("session_id", &hidden(&html, "session_id")),
                ("decision", "confirm"),
                ("pin", PIN1),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let r = b.get(&format!("{}/login/mid/poll", n.id.url())).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let callback = location(&r);
    assert!(
        callback.starts_with(&format!("{portal}/auth/callback?")),
        "{callback}"
    );
    let before = b.cookies.get(&origin(&portal)).cloned().unwrap();
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let next = location(&r);
    // Signing in gives a new session token; the one from before is worthless.
    let after = b.cookies.get(&origin(&portal)).cloned().unwrap();
    assert_ne!(before, after);
    let mut planted = Browser::new();
    planted.cookies.insert(origin(&portal), before);
    let r = planted.get(&format!("{portal}/dossiers")).await;
    assert_eq!(r.status(), 303, "the old token is not signed in");
    // A callback is good once, and only in the browser that started the sign-in.
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 502);
    let mut stranger = Browser::new();
    let r = stranger.get(&callback).await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("XALO-PORTAL-006"));
    next
}

#[tokio::test]
async fn sign_in_apply_submit_and_keep_others_out() {
    let n = Nation::start().await;
    let portal = n.portal.url();
    let mut b = Browser::new();

    // Pages that need a person send the browser to sign in first.
    let r = b.get(&format!("{portal}/dossiers")).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login?next=%2Fdossiers");
    let home = b
        .get(&format!("{portal}/?lang=en"))
        .await
        .text()
        .await
        .unwrap();
    assert!(home.contains("<html lang=\"en\">"), "{home}");

    let html = b
        .get(&format!("{portal}/dossiers/new?procedure={BIRTH}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("href=\"/login?next=%2Fdossiers%2Fnew%3Fprocedure%3D1%2E001193\""),
        "signing in comes back to the procedure: {html}"
    );
    let next = sign_in(&n, &mut b, "/dossiers", CITIZEN_PHONE, CITIZEN).await;
    assert_eq!(next, "/dossiers");
    let html = b
        .get(&format!("{portal}/dossiers"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("NGUYỄN AN"), "{html}");
    assert!(html.contains("You have no applications yet."), "{html}");

    // Start an application for birth registration.
    let html = b
        .get(&format!("{portal}/dossiers/new?procedure={BIRTH}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Birth registration"), "{html}");
    let csrf = hidden(&html, "csrf_token");
    let r = b
        .post(
            &format!("{portal}/dossiers/new"),
            &[("csrf_token", &csrf), ("procedure", BIRTH)],
        )
        .await;
    assert_eq!(r.status(), 303);
    let form_url = location(&r);
    let code = form_url
        .trim_start_matches("/dossiers/")
        .trim_end_matches("/form")
        .to_owned();
    assert!(code.starts_with("QNI.HL-"), "{code}");
    let html = b
        .get(&format!("{portal}{form_url}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<label for=\"f-child_given_name\">"),
        "{html}"
    );

    // Data that breaks the schema: refused field by field, nothing typed is lost.
    let bad = [
        ("csrf_token", csrf.as_str()),
        ("intent", "submit"),
        ("applicant_personal_code", CITIZEN),
        ("applicant_full_name", "NGUYỄN AN"),
        ("applicant_birth_date", "1990-02-30"),
        ("applicant_residence", "Hạ Long, Quảng Ninh"),
        ("applicant_phone", "12345"),
        ("child_family_name", "NGUYỄN"),
        ("child_given_name", "Bình"),
        ("child_birth_date", "2025-03-01"),
        ("child_gender", "robot"),
        ("child_birth_place", "Bệnh viện Bãi Cháy"),
        ("child_birth_place_unit", "06970"),
        ("applicant_relationship", "cha"),
    ];
    let r = b
        .post(&format!("{portal}/dossiers/{code}/form"), &bad)
        .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("class=\"error-summary\""), "{html}");
    for field in ["applicant_birth_date", "applicant_phone", "child_gender"] {
        assert!(
            html.contains(&format!("href=\"#f-{field}\"")),
            "{field} in {html}"
        );
    }
    assert!(
        html.contains("value=\"12345\""),
        "typed values are shown back"
    );
    assert!(html.contains("value=\"Bệnh viện Bãi Cháy\""), "{html}");
    let stored = xalo_portal::dossier::get(&n.portal_db.db, &code)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, xalo_portal::dossier::State::Draft);
    assert_eq!(
        stored.form["applicant_phone"], "12345",
        "the draft keeps what was typed"
    );
    assert_eq!(stored.form["child_birth_place"], "Bệnh viện Bãi Cháy");

    // Corrected, it is submitted.
    let mut good = bad.to_vec();
    for (k, v) in good.iter_mut() {
        match *k {
            "applicant_birth_date" => *v = "1990-02-28",
            "applicant_phone" => *v = "0912345678",
            "child_gender" => *v = "nam",
            _ => {}
        }
    }
    let r = b
        .post(&format!("{portal}/dossiers/{code}/form"), &good)
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    // The notice travels in the address: submitting writes no session.
    assert_eq!(location(&r), format!("/dossiers/{code}?notice=submitted"));
    let html = b
        .get(&format!("{portal}{}", location(&r)))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Your application has been submitted."),
        "{html}"
    );
    assert!(html.contains("Submitted, awaiting reception"), "{html}");
    // Only known notices are shown: an address cannot put its own words on the page.
    let html = b
        .get(&format!("{portal}/dossiers/{code}?notice=You+won"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains("You won") && !html.contains("has been submitted."));
    let receipt = b
        .get(&format!("{portal}/dossiers/{code}/receipt"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        receipt.contains(&code) && receipt.contains(CITIZEN),
        "{receipt}"
    );

    // A POST without the form's token is refused before anything happens.
    let r = b
        .post(
            &format!("{portal}/dossiers/{code}/cancel"),
            &[("reason", "x")],
        )
        .await;
    assert_eq!(r.status(), 403);

    // Another person cannot see or touch the dossier.
    let mut other = Browser::new();
    sign_in(&n, &mut other, "/dossiers", OTHER_PHONE, OTHER).await;
    for path in ["", "/form", "/receipt"] {
        let r = other.get(&format!("{portal}/dossiers/{code}{path}")).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.text().await.unwrap().contains("XALO-PORTAL-001"));
    }
    let html = other
        .get(&format!("{portal}/dossiers"))
        .await
        .text()
        .await
        .unwrap();
    let other_csrf = hidden(&html, "csrf_token");
    let r = other
        .post(
            &format!("{portal}/dossiers/{code}/cancel"),
            &[("csrf_token", &other_csrf), ("reason", "x")],
        )
        .await;
    assert_eq!(r.status(), 404);
    let stored = xalo_portal::dossier::get(&n.portal_db.db, &code)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, xalo_portal::dossier::State::Submitted);

    // An officer asks for a supplement; the citizen answers it on the form.
    let db = &n.portal_db.db;
    xalo_portal::dossier::request_supplement(db, &code, "officer-1", "Bổ sung nơi sinh chi tiết")
        .await
        .unwrap();
    let html = b
        .get(&format!("{portal}/dossiers/{code}/form"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Bổ sung nơi sinh chi tiết"), "{html}");
    assert!(html.contains("value=\"supplement\""), "{html}");
    let csrf = hidden(&html, "csrf_token");
    let mut answer: Vec<(&str, &str)> = good.clone();
    answer[0] = ("csrf_token", csrf.as_str());
    answer[1] = ("intent", "supplement");
    answer.push(("child_birth_place", "Bệnh viện Bãi Cháy, Hạ Long"));
    answer.push(("note", "đã bổ sung"));
    answer.retain(|(k, v)| *k != "child_birth_place" || *v != "Bệnh viện Bãi Cháy");
    let r = b
        .post(&format!("{portal}/dossiers/{code}/form"), &answer)
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let stored = xalo_portal::dossier::get(db, &code).await.unwrap().unwrap();
    assert_eq!(stored.state, xalo_portal::dossier::State::Submitted);
    assert_eq!(
        stored.form["child_birth_place"],
        "Bệnh viện Bãi Cháy, Hạ Long"
    );

    // Decided, it can be rated once, from 1 to 5.
    xalo_portal::dossier::accept(db, &code, "officer-1")
        .await
        .unwrap();
    xalo_portal::dossier::decide(db, &code, "officer-1", true, "")
        .await
        .unwrap();
    let html = b
        .get(&format!("{portal}/dossiers/{code}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Rate your satisfaction"), "{html}");
    assert!(
        !html.contains("/cancel\""),
        "a decided dossier is not cancelled"
    );
    let csrf = hidden(&html, "csrf_token");
    let r = b
        .post(
            &format!("{portal}/dossiers/{code}/rate"),
            &[("csrf_token", &csrf), ("rating", "9")],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("XALO-PORTAL-007"));
    let r = b
        .post(
            &format!("{portal}/dossiers/{code}/rate"),
            &[("csrf_token", &csrf), ("rating", "5"), ("comment", "nhanh")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let stored = xalo_portal::dossier::get(db, &code).await.unwrap().unwrap();
    assert_eq!(stored.rating, Some(5));

    // A new draft the owner no longer wants is cancelled, with the reason on the timeline.
    let html = b
        .get(&format!("{portal}/dossiers/new?procedure={BIRTH}"))
        .await
        .text()
        .await
        .unwrap();
    let csrf = hidden(&html, "csrf_token");
    let r = b
        .post(
            &format!("{portal}/dossiers/new"),
            &[("csrf_token", &csrf), ("procedure", BIRTH)],
        )
        .await;
    let draft = location(&r)
        .trim_start_matches("/dossiers/")
        .trim_end_matches("/form")
        .to_owned();
    assert_ne!(draft, code);
    let r = b
        .post(
            &format!("{portal}/dossiers/{draft}/cancel"),
            &[("csrf_token", &csrf), ("reason", "nộp nhầm")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let html = b
        .get(&format!("{portal}/dossiers/{draft}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("nộp nhầm") && html.contains("Cancelled"),
        "the reason is on the timeline: {html}"
    );
    let html = b
        .get(&format!("{portal}/dossiers"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(&code) && html.contains(&draft), "{html}");
    // Then the owner signs out through the provider.
    let r = b
        .post(&format!("{portal}/logout"), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(r.status(), 303);
    let to = location(&r);
    assert!(
        to.starts_with(&format!("{}/oidc/logout?id_token_hint=", n.id.url())),
        "{to}"
    );
    let r = b.get(&to).await;
    assert_eq!(location(&r), format!("{portal}/signed-out"));
    let r = b.get(&format!("{portal}/dossiers")).await;
    assert_eq!(r.status(), 303, "signed out");
}
