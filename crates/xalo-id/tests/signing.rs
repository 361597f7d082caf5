//! Mobile-ID signing through the `id` role as a remote signing service: the portal (a
//! registered client) asks, the test enters PIN2 on the operator's phone screen over HTTP
//! as the browser would, and the container that comes back is checked by xalo-trust and
//! by `openssl cms -verify`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use xalo_core::ErrorCode;
use xalo_trust::chain::TrustAnchors;
use xalo_trust::container::{self, DataFile};
use xalo_trust::remote::{MobileIdSigningRequest, RemoteSigningClient, SigningFile};

use crate::nation::*;

fn request(phone: &str, code: &str, files: &[DataFile]) -> MobileIdSigningRequest {
    MobileIdSigningRequest {
        phone_number: phone.into(),
        national_identity_number: code.into(),
        files: files.iter().map(SigningFile::from).collect(),
        container: None,
        display_text: Some("Hồ sơ đăng ký kinh doanh".into()),
        language: Some("ENG".into()),
    }
}

fn files() -> Vec<DataFile> {
    vec![
        DataFile {
            name: "đơn đăng ký.txt".into(),
            bytes: "Đơn đăng ký thành lập doanh nghiệp\n".as_bytes().to_vec(),
        },
        DataFile {
            name: "data.json".into(),
            bytes: br#"{"capital":100000000}"#.to_vec(),
        },
    ]
}

/// Open the phone screen, check it shows `code` (when given) and answer with `pin`;
/// returns the status of the answer (303 done or locked, 422 wrong PIN).
async fn enter_pin(n: &Nation, phone: &str, code: Option<&str>, pin: &str) -> u16 {
    let mut b = Browser::new();
    let phone_url = format!("{}/phone/{phone}", n.mid.url());
    let html = b.get(&phone_url).await.text().await.unwrap();
    if let Some(code) = code {
        assert_eq!(verification_code(&html), code, "the phone shows the code");
    }
    assert!(
        html.contains("PIN2"),
        "a signing request asks for PIN2: {html}"
    );
    b.post(
        &phone_url,
        &[
            ("csrf_token", &hidden(&html, "csrf_token")),
            ("session_id", &hidden(&html, "session_id")),
            ("decision", "confirm"),
            ("pin", pin),
        ],
    )
    .await
    .status()
    .as_u16()
}

async fn anchors(n: &Nation) -> (TrustAnchors, Vec<u8>) {
    let root = reqwest::get(format!("{}/ca/root.crt", n.trust.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    (TrustAnchors::new(vec![root.clone()]), root)
}

fn openssl_verifies(asice: &[u8], root_der: &[u8], signature: &str, manifest: &str) {
    let dir = tempfile::tempdir().unwrap();
    let c = container::Container::read(asice).unwrap();
    std::fs::create_dir_all(dir.path().join("META-INF")).unwrap();
    for (name, data) in &c.meta {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    std::fs::write(
        dir.path().join("root.pem"),
        xalo_trust::key::pem_encode("CERTIFICATE", root_der),
    )
    .unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            signature,
            "-content",
            manifest,
            "-CAfile",
            "root.pem",
            "-out",
            "/dev/null",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("Verification successful"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobile_id_signing_round_trip_and_cosigning_from_the_cli() {
    let n = Nation::start().await;
    let portal = RemoteSigningClient::new(&n.id.url(), "portal", SECRET).unwrap();
    let started = portal
        .start_mobile_id(&request(CITIZEN_PHONE, CITIZEN, &files()))
        .await
        .unwrap();
    assert_eq!(started.verification_code.len(), 4);
    // Not yet signed: the poll says so.
    let status = portal.poll(&started.session_id, 1000).await.unwrap();
    assert_eq!(status.state, "RUNNING");
    assert_eq!(
        enter_pin(&n, CITIZEN_PHONE, Some(&started.verification_code), PIN2).await,
        303
    );
    let asice = portal.wait(&started.session_id).await.unwrap();
    // The session keeps its result: a second poll returns the same container.
    let again = portal.poll(&started.session_id, 1000).await.unwrap();
    assert_eq!(STANDARD.decode(again.container.unwrap()).unwrap(), asice);
    assert!(again.signer.unwrap().contains("NGUYEN"));

    let (anchors, root) = anchors(&n).await;
    let report = container::verify(&asice, &anchors);
    assert!(report.is_valid(), "{report}");
    let sig = &report.signatures[0];
    assert_eq!(
        sig.signer_serial_number.as_deref(),
        Some("PNOVN-001203012345")
    );
    assert!(sig.timestamp_unix.is_some() && sig.signing_time_unix.is_some());
    assert_eq!(
        sig.certificate_status,
        Some(xalo_trust::ocsp::CertificateStatus::Good)
    );
    assert_eq!(report.data_files.len(), 2);
    openssl_verifies(
        &asice,
        &root,
        "META-INF/signature001.p7s",
        "META-INF/ASiCManifest.xml",
    );

    // Another client cannot see the portal's session.
    let other = RemoteSigningClient::new(&n.id.url(), "app", "").unwrap();
    let e = other.poll(&started.session_id, 1000).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthInvalidClient);

    // The e-Resident co-signs with `xalo sign --mobile-id`, entering PIN2 on their phone.
    let dir = tempfile::tempdir().unwrap();
    let signed = dir.path().join("signed.asice");
    let cosigned = dir.path().join("cosigned.asice");
    std::fs::write(&signed, &asice).unwrap();
    let config = xalo_core::Config {
        data_dir: dir.path().to_owned(),
        ..xalo_core::Config::default()
    };
    let args = xalo_trust::cli::SignArgs {
        files: vec![],
        out: cosigned.clone(),
        cert: None,
        key: None,
        chain: None,
        add_to: Some(signed),
        tsa: None,
        mobile_id: Some(E_RESIDENT_PHONE.into()),
        personal_code: Some(E_RESIDENT.into()),
        id: Some(n.id.url()),
        client: Some("portal".into()),
        secret: Some(SECRET.into()),
    };
    let cli = tokio::spawn(async move { xalo_trust::cli::run_sign(&config, args).await });
    // The phone learns of the request when the CLI has started the session.
    let phone_url = format!("{}/phone/{E_RESIDENT_PHONE}", n.mid.url());
    let mut waiting = 0;
    while !reqwest::get(&phone_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("session_id")
    {
        waiting += 1;
        assert!(waiting < 600, "the CLI never started a session");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(enter_pin(&n, E_RESIDENT_PHONE, None, PIN2).await, 303);
    cli.await.unwrap().unwrap();
    let both = std::fs::read(&cosigned).unwrap();
    let report = container::verify(&both, &anchors);
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.signatures.len(), 2);
    assert_eq!(
        report.signatures[1].signer_serial_number.as_deref(),
        Some("PNOEE-38001085718")
    );
    openssl_verifies(
        &both,
        &root,
        "META-INF/signature002.p7s",
        "META-INF/ASiCManifest002.xml",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin2_then_locked_and_cancelled() {
    let n = Nation::start().await;
    let portal = RemoteSigningClient::new(&n.id.url(), "portal", SECRET).unwrap();

    // One wrong PIN2, then the right one: signed, and the count starts again.
    let s = portal
        .start_mobile_id(&request(CITIZEN_PHONE, CITIZEN, &files()))
        .await
        .unwrap();
    assert_eq!(
        enter_pin(&n, CITIZEN_PHONE, Some(&s.verification_code), "99999").await,
        422
    );
    assert_eq!(
        portal.poll(&s.session_id, 1000).await.unwrap().state,
        "RUNNING"
    );
    assert_eq!(enter_pin(&n, CITIZEN_PHONE, None, PIN2).await, 303);
    let asice = portal.wait(&s.session_id).await.unwrap();
    let (anchors, _) = anchors(&n).await;
    assert!(container::verify(&asice, &anchors).is_valid());

    // The person cancels on the phone.
    let s = portal
        .start_mobile_id(&request(CITIZEN_PHONE, CITIZEN, &files()))
        .await
        .unwrap();
    let mut b = Browser::new();
    let phone_url = format!("{}/phone/{CITIZEN_PHONE}", n.mid.url());
    let html = b.get(&phone_url).await.text().await.unwrap();
    let r = b
        .post(
            &phone_url,
            &[
                ("csrf_token", &hidden(&html, "csrf_token")),
                ("session_id", &hidden(&html, "session_id")),
                ("decision", "cancel"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let e = portal.wait(&s.session_id).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthMobileIdCancelled, "{e}");

    // Three wrong PIN2s lock PIN2: this session and the next one fail as locked.
    let s = portal
        .start_mobile_id(&request(CITIZEN_PHONE, CITIZEN, &files()))
        .await
        .unwrap();
    assert_eq!(enter_pin(&n, CITIZEN_PHONE, None, "99999").await, 422);
    assert_eq!(enter_pin(&n, CITIZEN_PHONE, None, "99998").await, 422);
    assert_eq!(enter_pin(&n, CITIZEN_PHONE, None, "99997").await, 303);
    let e = portal.wait(&s.session_id).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthPinLocked, "{e}");
    let s = portal
        .start_mobile_id(&request(CITIZEN_PHONE, CITIZEN, &files()))
        .await
        .unwrap();
    let e = portal.wait(&s.session_id).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthPinLocked, "{e}");
    // PIN1 is a separate PIN: signing in still works.
    let mut b = Browser::new();
    let done = mobile_id_login(
        &n,
        &mut b,
        &authorize_url(&n, "portal", ""),
        CITIZEN_PHONE,
        CITIZEN,
        PIN1,
    )
    .await;
    assert!(done.contains("code="), "{done}");
}

#[tokio::test]
async fn unknown_clients_and_people_are_refused() {
    let n = Nation::start().await;
    let files = files();
    for (id, secret) in [
        ("nobody", "secret"),
        ("portal", "wrong-secret"),
        ("app", ""),
    ] {
        let client = RemoteSigningClient::new(&n.id.url(), id, secret).unwrap();
        let e = client
            .start_mobile_id(&request(CITIZEN_PHONE, CITIZEN, &files))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthInvalidClient, "{id}: {e}");
    }
    // Without credentials at all.
    let r = reqwest::Client::new()
        .post(format!("{}/signing/mobile-id", n.id.url()))
        .json(&request(CITIZEN_PHONE, CITIZEN, &files))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "XALO-AUTH-003");

    let portal = RemoteSigningClient::new(&n.id.url(), "portal", SECRET).unwrap();
    // A phone that is not this person's Mobile-ID.
    let e = portal
        .start_mobile_id(&request(E_RESIDENT_PHONE, CITIZEN, &files))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthNotMobileIdClient, "{e}");
    // Nothing to sign.
    let e = portal
        .start_mobile_id(&request(CITIZEN_PHONE, CITIZEN, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TrustBadContainer, "{e}");
    // A session that does not exist.
    let e = portal.poll("no-such-session", 1000).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthMobileIdSession, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_complete_flows_without_failures() {
    // With a nonce at every login (the default) and without (RFC 5019's profile).
    for ocsp_nonce in [true, false] {
        let report = xalo_id::bench::run(&xalo_id::bench::BenchOptions {
            clients: 4,
            seconds: 1,
            ocsp_nonce,
        })
        .await
        .unwrap();
        assert_eq!(report.failures, 0, "{:?}", report.first_failure);
        assert!(report.logins > 0 && report.token_requests > 0, "{report:?}");
        let headline = report.lines().last().unwrap().clone();
        assert!(headline.starts_with("id: "), "{headline}");
        assert_eq!(
            headline.contains("without a nonce"),
            !ocsp_nonce,
            "{headline}"
        );
        // Both the servers and the load generator used CPU while the logins ran, and the
        // report tells them apart.
        let cpu = report
            .cpu_per_login
            .expect("CPU time is read from /proc on Linux");
        assert!(
            cpu.servers > std::time::Duration::ZERO && cpu.clients > std::time::Duration::ZERO,
            "{cpu:?}"
        );
    }
}
