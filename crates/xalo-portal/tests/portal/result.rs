//! The result document: sealed by an agency certificate of a real trust service,
//! time-stamped, accepted by the same verification `xalo verify` runs and refused once
//! tampered with; its hash in a real ledger; delivered to the mailbox (only to its owner),
//! by e-mail over real SMTP and to the SMS outbox.

use std::io::Write;

use sha2::Digest;

use xalo_core::{Config, ErrorCode, PersonalCode};
use xalo_portal::result::{ResultRequest, ResultSettings, Results, Seal};
use xalo_portal::smtp::{MailSink, SmtpSettings, text_of};
use xalo_store::Database;
use xalo_store::testing::TestDatabase;
use xalo_trust::authority::Subject;
use xalo_trust::chain::TrustAnchors;
use xalo_trust::container::{self, Container};
use xalo_trust::{AuthorityName, IssueRequest, KeySource, Profile, TrustSettings};

struct Services {
    trust: xalo_core::server::ServerHandle,
    ledger: xalo_core::server::ServerHandle,
    pki: xalo_trust::Pki,
    _dbs: Vec<TestDatabase>,
    _dir: tempfile::TempDir,
}

async fn services() -> Services {
    let dir = tempfile::tempdir().unwrap();
    let trust_db = TestDatabase::new().await.unwrap();
    let ledger_db = TestDatabase::new().await.unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.roles.entry("trust".into()).or_default().database_url = Some(trust_db.url().to_owned());
    config
        .roles
        .entry("ledger".into())
        .or_default()
        .database_url = Some(ledger_db.url().to_owned());
    config.roles.entry("ledger".into()).or_default().settings = serde_json::json!({
        "checkpoint_interval_ms": 50
    })
    .as_object()
    .unwrap()
    .clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trust = xalo_trust::serve_with(config.clone(), listener, TrustSettings::default())
        .await
        .unwrap();
    let pki = xalo_trust::service::open_pki(&config, trust.port(), Default::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ledger = xalo_ledger::service::serve(config.clone(), listener)
        .await
        .unwrap();
    Services {
        trust,
        ledger,
        pki,
        _dbs: vec![trust_db, ledger_db],
        _dir: dir,
    }
}

async fn seal(s: &Services) -> Seal {
    let issued = s
        .pki
        .issue(&IssueRequest {
            profile: Profile::Seal,
            subject: Subject::organisation("VN", "UBND phuong Hong Gai", "000123"),
            key: KeySource::Generate(xalo_trust::KeyAlgorithm::P256),
            validity_days: 365,
        })
        .await
        .unwrap();
    // As the demo's files hold it: the certificate then its chain, and a PKCS#8 key.
    let mut chain_pem = xalo_trust::key::pem_encode("CERTIFICATE", &issued.record.certificate);
    for c in s.pki.chain_of(AuthorityName::Organisations) {
        chain_pem.push_str(&xalo_trust::key::pem_encode("CERTIFICATE", &c));
    }
    let key_pem = xalo_trust::key::pem_encode("PRIVATE KEY", &issued.private_key.unwrap());
    Seal::from_pem(&chain_pem, &key_pem, &format!("{}/tsa", s.trust.url())).unwrap()
}

fn request(code: &str, person: &PersonalCode) -> ResultRequest {
    ResultRequest {
        dossier_code: code.into(),
        person: *person,
        person_name: "NGUYỄN VĂN AN".into(),
        procedure_code: "1.001193".into(),
        title_vi: "Trích lục khai sinh".into(),
        title_en: "Birth registration extract".into(),
        agency: "UBND phường Hồng Gai".into(),
        fields: vec![
            (
                "Họ và tên người được khai sinh".into(),
                "NGUYỄN MINH <KHANG>".into(),
            ),
            ("Ngày sinh".into(), "01/11/2026".into()),
        ],
        email: Some("an.nguyen@example.vn".into()),
        phone: Some("0901 234 567".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_result_verifies_is_anchored_and_delivered() {
    let s = services().await;
    let db_handle = TestDatabase::new().await.unwrap();
    let db = Database::connect(db_handle.url()).await.unwrap();
    let mail_dir = tempfile::tempdir().unwrap();
    let sink = MailSink::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        mail_dir.path(),
    )
    .await
    .unwrap();
    let settings = ResultSettings {
        ledger_url: Some(s.ledger.url()),
        smtp: Some(SmtpSettings {
            relay: sink.addr.to_string(),
            from: "khong-tra-loi@dichvucong.example.vn".into(),
            helo: None,
        }),
        public_url: Some("http://portal.example.vn".into()),
        ..ResultSettings::default()
    };
    let results = Results::with_seal(db.clone(), Some(seal(&s).await), &settings)
        .await
        .unwrap();
    let an: PersonalCode = "VN001203012345".parse().unwrap();
    let binh: PersonalCode = "VN079190000001".parse().unwrap();
    let issued = results
        .issue(&request("G01.07-261128-0001", &an))
        .await
        .unwrap();
    assert!(issued.ledger_index.is_some(), "anchored at once");
    assert!(issued.emailed);

    // The citizen's download verifies with the national root, as `xalo verify` checks.
    let (name, bytes) = results.document(&an, &issued.document_id).await.unwrap();
    assert_eq!(name, "ket-qua-G01.07-261128-0001.asice");
    let anchors = TrustAnchors::new(vec![
        s.pki.authority(AuthorityName::Root).certificate_der.clone(),
    ]);
    let report = container::verify(&bytes, &anchors);
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.data_files, vec!["ket-qua.html", "ket-qua.json"]);
    let sig = &report.signatures[0];
    assert!(sig.timestamp_unix.is_some(), "time-stamped");
    assert!(
        sig.signer
            .as_deref()
            .unwrap_or("")
            .contains("UBND phuong Hong Gai"),
        "{report}"
    );
    let html =
        String::from_utf8(Container::read(&bytes).unwrap().data_files[0].bytes.clone()).unwrap();
    assert!(
        html.contains("Trích lục khai sinh") && html.contains("NGUYỄN MINH &lt;KHANG&gt;"),
        "{html}"
    );
    // The ledger holds its hash.
    assert_eq!(issued.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    let (hash, index) = results
        .evidence("G01.07-261128-0001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (hash, index),
        (issued.sha256.clone(), issued.ledger_index.map(|i| i as i64))
    );

    // … and proves it: the entry recomputed from the file is included under a checkpoint.
    let ledger = xalo_ledger::client::LedgerClient::new(&s.ledger.url()).unwrap();
    let entry = xalo_portal::result::ledger_entry(&issued.document_id, &issued.sha256).unwrap();
    let mut proved = None;
    for _ in 0..100 {
        let note = ledger.checkpoint_note().await.unwrap();
        let checkpoint = xalo_ledger::client::checkpoint_of_note(&note).unwrap();
        if checkpoint.size > issued.ledger_index.unwrap() {
            proved = Some(ledger.prove_included(&entry, &checkpoint).await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(proved, issued.ledger_index);

    // Tampered with, it fails: a changed file, and a file the seal does not cover.
    let mut c = Container::read(&bytes).unwrap();
    c.data_files[0].bytes = html.replace("01/11/2026", "02/11/2026").into_bytes();
    let report = container::verify(&c.write().unwrap(), &anchors);
    assert!(!report.is_valid());
    assert!(
        report.codes().contains(&ErrorCode::TrustFileChanged),
        "{report}"
    );
    let mut flipped = bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0xff;
    assert!(!container::verify(&flipped, &anchors).is_valid());
    // A root the document does not chain to: refused.
    let stranger = TrustAnchors::new(vec![]);
    assert!(!container::verify(&bytes, &stranger).is_valid());

    // Saved as a file, the verifier of `xalo verify` reads it the same way.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(&name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(
        &root,
        xalo_trust::key::pem_encode(
            "CERTIFICATE",
            &s.pki.authority(AuthorityName::Root).certificate_der,
        ),
    )
    .unwrap();
    let ok = xalo_trust::cli::run_verify(
        &Config::default(),
        xalo_trust::cli::VerifyArgs {
            container: path,
            ca: Some(root),
            json: true,
        },
    )
    .unwrap();
    assert!(ok);

    // Mailbox: the owner sees it; another person cannot open it or its document.
    let mailbox = results.mailbox(&an).await.unwrap();
    assert_eq!(mailbox.len(), 1);
    assert!(mailbox[0].read_unix.is_none());
    assert_eq!(
        mailbox[0].document_id.as_deref(),
        Some(issued.document_id.as_str())
    );
    assert!(results.mailbox(&binh).await.unwrap().is_empty());
    assert_eq!(
        results
            .open_message(&binh, &issued.message_id)
            .await
            .unwrap_err()
            .code,
        ErrorCode::ResultNotFound
    );
    assert_eq!(
        results
            .document(&binh, &issued.document_id)
            .await
            .unwrap_err()
            .code,
        ErrorCode::ResultNotFound
    );
    mailbox_pages(&results, &db, &issued).await;
    let opened = results.open_message(&an, &issued.message_id).await.unwrap();
    assert!(opened.read_unix.is_some());

    // E-mail over SMTP, with the container attached; the SMS waits in the outbox.
    let mails = sink.messages().unwrap();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("X-Envelope-To: <an.nguyen@example.vn>"));
    assert!(mails[0].contains("filename=\"ket-qua-G01.07-261128-0001.asice\""));
    let text = text_of(&mails[0]).unwrap();
    assert!(
        text.contains("G01.07-261128-0001") && text.contains("http://portal.example.vn/mailbox"),
        "{text}"
    );
    let sms = results.sms_outbox("queued").await.unwrap();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].phone, "+84901234567");
    assert_eq!(sms[0].person_code, an.to_string());

    // Issued once per dossier; bad contact details are refused before anything is sealed.
    assert_eq!(
        results
            .issue(&request("G01.07-261128-0001", &an))
            .await
            .unwrap_err()
            .code,
        ErrorCode::ResultAlreadyIssued
    );
    let mut bad = request("G01.07-261128-0002", &an);
    bad.email = Some("not an address".into());
    assert_eq!(
        results.issue(&bad).await.unwrap_err().code,
        ErrorCode::ResultBadAddress
    );
    let mut bad = request("G01.07-261128-0002", &an);
    bad.title_vi = String::new();
    assert_eq!(
        results.issue(&bad).await.unwrap_err().code,
        ErrorCode::ResultBadDocument
    );

    // A relay that is down: the mail waits and goes with the retry.
    sink.abort();
    drop(sink);
    let down = ResultSettings {
        smtp: Some(SmtpSettings {
            relay: "127.0.0.1:1".into(),
            from: "khong-tra-loi@dichvucong.example.vn".into(),
            helo: None,
        }),
        ..settings.clone()
    };
    let results_down = Results::with_seal(db.clone(), Some(seal(&s).await), &down)
        .await
        .unwrap();
    let issued2 = results_down
        .issue(&request("G01.07-261128-0003", &binh))
        .await
        .unwrap();
    assert!(!issued2.emailed);
    assert_eq!(
        results_down.email_status(&binh).await.unwrap(),
        vec![("an.nguyen@example.vn".to_owned(), "queued".to_owned())]
    );
    let sink2 = MailSink::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        mail_dir.path(),
    )
    .await
    .unwrap();
    let up = ResultSettings {
        smtp: Some(SmtpSettings {
            relay: sink2.addr.to_string(),
            from: "khong-tra-loi@dichvucong.example.vn".into(),
            helo: None,
        }),
        ..settings
    };
    let results_up = Results::with_seal(db, Some(seal(&s).await), &up)
        .await
        .unwrap();
    let retried = results_up.retry().await.unwrap();
    assert_eq!(retried.emails, 1);
    assert_eq!(results_up.email_status(&binh).await.unwrap()[0].1, "sent");
}

#[tokio::test]
async fn without_a_seal_nothing_is_issued() {
    let db_handle = TestDatabase::new().await.unwrap();
    let db = Database::connect(db_handle.url()).await.unwrap();
    let results = Results::open(db, &ResultSettings::default()).await.unwrap();
    let an: PersonalCode = "VN001203012345".parse().unwrap();
    assert_eq!(
        results
            .issue(&request("G01.07-261128-0009", &an))
            .await
            .unwrap_err()
            .code,
        ErrorCode::ResultSeal
    );
    assert!(Seal::from_pem("junk", "junk", "http://x").is_err());
}

/// The mailbox pages behind the portal's session layer: the owner reads and downloads,
/// another person gets "not found", nobody signed in is sent to sign in.
async fn mailbox_pages(
    results: &Results,
    db: &Database,
    issued: &xalo_portal::result::IssuedResult,
) {
    use axum::extract::{Path, State};
    use axum::{Extension, Router};
    use xalo_portal::signin::{SESSION_PERSON, SignedIn};
    use xalo_web::{Session, SessionSettings, Sessions};

    let sessions = Sessions::open(db.clone(), SessionSettings::default(), &[])
        .await
        .unwrap();
    // Stands in for national sign-in: puts a person in the session.
    let sign_in = Router::new()
        .route(
            "/test-sign-in/{code}",
            axum::routing::get(
                |State(sessions): State<Sessions>,
                 Extension(mut session): Extension<Session>,
                 Path(code): Path<String>| async move {
                    session.set(
                        SESSION_PERSON,
                        SignedIn {
                            sub: code,
                            given_name: "AN".into(),
                            family_name: "NGUYỄN VĂN".into(),
                            amr: vec!["mID".into()],
                            acr: "high".into(),
                            id_token: String::new(),
                        },
                    );
                    sessions.save(&session).await.unwrap();
                    "signed in"
                },
            ),
        )
        .with_state(sessions.clone());
    let router = sign_in
        .merge(results.router())
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            xalo_web::session::middleware,
        ));
    let server = xalo_core::server::Server::new("portal", router, &Default::default())
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |code: &'static str| {
        let http = http.clone();
        let url = format!("{}/test-sign-in/{code}", server.url());
        async move {
            let r = http.get(url).send().await.unwrap();
            r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned()
        }
    };
    let an = sign_in("VN001203012345").await;
    let binh = sign_in("VN079190000001").await;
    let get = |path: String, cookie: Option<String>| {
        let http = http.clone();
        let url = format!("{}{path}", server.url());
        async move {
            let mut r = http.get(url);
            if let Some(c) = cookie {
                r = r.header("cookie", c);
            }
            r.send().await.unwrap()
        }
    };
    let r = get("/mailbox".into(), Some(an.clone())).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Kết quả hồ sơ G01.07-261128-0001"), "{page}");
    let r = get(format!("/mailbox/{}", issued.message_id), Some(an.clone())).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains(&format!("/mailbox/documents/{}", issued.document_id))
    );
    let r = get(
        format!("/mailbox/documents/{}", issued.document_id),
        Some(an.clone()),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.etsi.asic-e+zip"
    );
    assert_eq!(
        hex::encode(sha2::Sha256::digest(r.bytes().await.unwrap())),
        issued.sha256
    );
    // Another person: the same answer as for a message that does not exist.
    for path in [
        format!("/mailbox/{}", issued.message_id),
        format!("/mailbox/documents/{}", issued.document_id),
        "/mailbox/TBNOSUCHMESSAGE".to_owned(),
    ] {
        let r = get(path.clone(), Some(binh.clone())).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.text().await.unwrap().contains("XALO-RESULT-001"));
    }
    let r = get("/mailbox".into(), Some(binh)).await;
    assert!(!r.text().await.unwrap().contains("G01.07-261128-0001"));
    // Nobody signed in: to sign-in first.
    let r = get(format!("/mailbox/documents/{}", issued.document_id), None).await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login?next=")
    );
    server.shutdown().await.unwrap();
}
