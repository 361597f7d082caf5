use xalo_trust::authority::Subject;
use xalo_trust::ocsp::OcspSettings;
use xalo_trust::{
    AuthorityName, IssueRequest, KeyAlgorithm, KeySource, Profile, RevocationReason, TrustSettings,
};

use super::support::{Running, ok, openssl};

fn no_cache() -> TrustSettings {
    TrustSettings {
        ocsp: OcspSettings {
            cache_secs: 0,
            ..OcspSettings::default()
        },
        ..TrustSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_ocsp_sees_good_then_revoked() {
    let server = Running::start(no_cache()).await;
    let pki = server.pki().await;
    let issued = pki
        .issue(&IssueRequest {
            profile: Profile::Seal,
            subject: Subject::organisation("VN", "Ministry of Finance", "000002"),
            key: KeySource::Generate(KeyAlgorithm::P256),
            validity_days: 365,
        })
        .await
        .unwrap();
    let trust_dir = server.dir.path().join("trust");
    std::fs::write(trust_dir.join("seal.pem"), issued.certificate_pem()).unwrap();
    let url = format!("{}/ocsp", server.handle.url());
    // Asked as openssl asks by default (CertID by SHA-1), or by the digest given.
    let ask = |digest: Option<&str>| {
        let mut args = vec!["ocsp"];
        args.extend(digest);
        args.extend([
            "-issuer",
            "organisations.pem",
            "-cert",
            "seal.pem",
            "-url",
            &url,
            "-CAfile",
            "root.pem",
            "-resp_text",
        ]);
        ok(&openssl(&trust_dir, &args))
    };
    let text = ask(None);
    assert!(text.contains("seal.pem: good"), "{text}");
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(text.contains("Next Update"), "{text}");
    assert!(text.contains("OCSP Nonce"), "{text}");

    pki.revoke(&issued.record.serial, RevocationReason::KeyCompromise, None)
        .await
        .unwrap();
    let text = ask(None);
    assert!(text.contains("seal.pem: revoked"), "{text}");
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    assert!(text.contains("Revocation Time"), "{text}");
    // The issuer named by SHA-256 digests of its name and key, not openssl's SHA-1.
    let text = ask(Some("-sha256"));
    assert!(text.contains("Hash Algorithm: sha256"), "{text}");
    assert!(text.contains("seal.pem: revoked"), "{text}");
    assert!(text.contains("Response verify OK"), "{text}");

    // Unknown serial; and the issuing CA's own status, answered under the root.
    ok(&openssl(
        &trust_dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "other.pem",
            "-subj",
            "/CN=other",
            "-days",
            "1",
        ],
    ));
    let text = ok(&openssl(
        &trust_dir,
        &[
            "ocsp",
            "-issuer",
            "organisations.pem",
            "-serial",
            "0x1234",
            "-url",
            &url,
            "-CAfile",
            "root.pem",
        ],
    ));
    assert!(text.contains("unknown"), "{text}");
    let text = ok(&openssl(
        &trust_dir,
        &[
            "ocsp",
            "-issuer",
            "root.pem",
            "-cert",
            "persons.pem",
            "-url",
            &url,
            "-CAfile",
            "root.pem",
        ],
    ));
    assert!(text.contains("persons.pem: good"), "{text}");
    server.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_get_cache_and_bad_input() {
    let server = Running::start(TrustSettings::default()).await;
    let pki = server.pki().await;
    let issued = pki
        .issue(&IssueRequest {
            profile: Profile::PersonSigning,
            subject: Subject::person(&"VN001203012345".parse().unwrap(), "An", "NGUYEN"),
            key: KeySource::Generate(KeyAlgorithm::P256),
            validity_days: 365,
        })
        .await
        .unwrap();
    let cert = xalo_trust::authority::parse_certificate(&issued.record.certificate).unwrap();
    let issuer = &pki.authority(AuthorityName::Persons).certificate;
    let id = xalo_trust::ocsp::cert_id(&cert, issuer).unwrap();
    // A request without nonce, sent twice by GET: the second answer is the cached one.
    use der::Encode;
    let req = x509_ocsp::OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: x509_ocsp::Version::V1,
            requestor_name: None,
            request_list: vec![x509_ocsp::Request {
                req_cert: id,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&req);
    let enc =
        percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string();
    let http = reqwest::Client::new();
    let url = format!("{}/ocsp/{enc}", server.handle.url());
    let a = http.get(&url).send().await.unwrap();
    assert_eq!(a.status(), 200);
    assert_eq!(a.headers()["content-type"], "application/ocsp-response");
    let a = a.bytes().await.unwrap();
    let b = http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(a, b, "cached answers are byte-identical");
    let basic = xalo_trust::ocsp::basic_response(&a).unwrap();
    let anchors = xalo_trust::chain::TrustAnchors::new(vec![
        pki.authority(AuthorityName::Root).certificate_der.clone(),
    ]);
    let answer = xalo_trust::ocsp::verify_basic(&basic, &cert, issuer, &anchors).unwrap();
    assert_eq!(answer.status, xalo_trust::ocsp::CertificateStatus::Good);

    // A relying party takes an answer only while it is current: asked without a nonce, one
    // produced at most max_age ago; asked with one, only an answer that echoes it, so a
    // replayed answer is refused.
    use std::time::{Duration, SystemTime};
    use xalo_trust::ocsp::{Asking, VerifiedAnswers, check_fresh};
    let minute = Duration::from_secs(60);
    check_fresh(&answer, None, minute, SystemTime::now()).unwrap();
    let stale = check_fresh(&answer, None, minute, SystemTime::now() + 10 * minute).unwrap_err();
    assert_eq!(stale.code, xalo_core::ErrorCode::TrustNoRevocationData);
    assert!(stale.message.contains("produced"), "{stale}");
    let sent = x509_cert::ext::Extension {
        extn_id: xalo_trust::ocsp::ID_PKIX_OCSP_NONCE,
        critical: false,
        extn_value: der::asn1::OctetString::new(vec![4, 2, 0xab, 0xcd]).unwrap(),
    };
    let replayed = check_fresh(&answer, Some(&sent), minute, SystemTime::now()).unwrap_err();
    assert!(replayed.message.contains("nonce"), "{replayed}");
    let expired = check_fresh(
        &answer,
        Some(&sent),
        minute,
        SystemTime::now() + Duration::from_secs(2 * 3600),
    )
    .unwrap_err();
    assert_eq!(expired.code, xalo_core::ErrorCode::TrustNoRevocationData);

    // Asked by the client side with and without a nonce; the cached answer's signature is
    // verified once. A revocation made straight in the register (as `xalo pki revoke`
    // does, not through this responder) is answered at once: the cache is given only while
    // it still says what the register says.
    let issued_der = issued.record.certificate.clone();
    let issuer_der = pki
        .authority(AuthorityName::Persons)
        .certificate_der
        .clone();
    let verified = VerifiedAnswers::default();
    let ocsp_url = format!("{}/ocsp", server.handle.url());
    let ask = |nonce: bool| {
        xalo_trust::ocsp::query_with(
            &http,
            Some(ocsp_url.as_str()),
            &issued_der,
            &issuer_der,
            &anchors,
            Asking {
                nonce,
                max_age: minute,
            },
            Some(&verified),
        )
    };
    let (with_nonce, _) = ask(true).await.unwrap();
    let (first, good) = ask(false).await.unwrap();
    let (again, _) = ask(false).await.unwrap();
    assert_eq!(first, again, "the responder's cached answer");
    assert_ne!(
        with_nonce, first,
        "a nonce is answered with a fresh signature"
    );
    assert_eq!(good.status, xalo_trust::ocsp::CertificateStatus::Good);
    pki.revoke(&issued.record.serial, RevocationReason::KeyCompromise, None)
        .await
        .unwrap();
    let (_, revoked) = ask(false).await.unwrap();
    assert!(
        matches!(
            revoked.status,
            xalo_trust::ocsp::CertificateStatus::Revoked { .. }
        ),
        "{:?}",
        revoked.status
    );

    // Malformed DER, garbage base64 and oversized bodies: 400-class, never a crash.
    let post = |body: Vec<u8>| {
        http.post(format!("{}/ocsp", server.handle.url()))
            .header("content-type", "application/ocsp-request")
            .body(body)
            .send()
    };
    let r = post(vec![0x30, 0x82, 0xff, 0xff, 0x01]).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        &r.bytes().await.unwrap()[..],
        &[0x30, 0x03, 0x0a, 0x01, 0x01]
    );
    // Just over the limit: a much larger body may be cut off mid-write when the server
    // answers 413 early, which the client sees as a broken pipe instead of the answer.
    let r = post(vec![0u8; 20 * 1024]).await.unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .get(format!("{}/ocsp/!!!notbase64", server.handle.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{}/tsa", server.handle.url()))
        .header("content-type", "application/timestamp-query")
        .body(vec![0x30, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/timestamp-reply");
    let r = http
        .post(format!("{}/tsa", server.handle.url()))
        .body(vec![0x30, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = http
        .get(format!("{}/ca/root.pem", server.handle.url()))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("BEGIN CERTIFICATE"));
    server.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_time_stamps_verify() {
    let server = Running::start(TrustSettings::default()).await;
    let dir = server.dir.path().join("trust");
    std::fs::write(dir.join("doc.txt"), "Quyết định số 1/2025\n").unwrap();
    let url = format!("{}/tsa", server.handle.url());
    let http = reqwest::Client::new();
    let mut serials = Vec::new();
    for _ in 0..2 {
        ok(&openssl(
            &dir,
            &[
                "ts", "-query", "-data", "doc.txt", "-sha256", "-cert", "-out", "q.tsq",
            ],
        ));
        let reply = http
            .post(&url)
            .header("content-type", "application/timestamp-query")
            .body(std::fs::read(dir.join("q.tsq")).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        assert_eq!(
            reply.headers()["content-type"],
            "application/timestamp-reply"
        );
        std::fs::write(dir.join("r.tsr"), reply.bytes().await.unwrap()).unwrap();
        let text = ok(&openssl(
            &dir,
            &[
                "ts",
                "-verify",
                "-data",
                "doc.txt",
                "-in",
                "r.tsr",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "organisations.pem",
            ],
        ));
        assert!(text.contains("Verification: OK"), "{text}");
        let text = ok(&openssl(
            &dir,
            &[
                "ts",
                "-verify",
                "-queryfile",
                "q.tsq",
                "-in",
                "r.tsr",
                "-CAfile",
                "root.pem",
            ],
        ));
        assert!(text.contains("Verification: OK"), "{text}");
        let text = ok(&openssl(&dir, &["ts", "-reply", "-in", "r.tsr", "-text"]));
        assert!(text.contains("Policy OID: 0.4.0.2023.1.1"), "{text}");
        assert!(text.contains("Accuracy: 0x01 seconds"), "{text}");
        assert!(text.contains("Nonce: 0x"), "{text}");
        let serial = text
            .lines()
            .find(|l| l.starts_with("Serial number"))
            .unwrap()
            .to_owned();
        serials.push(serial);
    }
    assert_ne!(serials[0], serials[1]);

    // SHA-1 (or any hash we do not take) is refused with badAlg.
    ok(&openssl(
        &dir,
        &[
            "ts", "-query", "-data", "doc.txt", "-sha1", "-out", "q1.tsq",
        ],
    ));
    let reply = http
        .post(&url)
        .header("content-type", "application/timestamp-query")
        .body(std::fs::read(dir.join("q1.tsq")).unwrap())
        .send()
        .await
        .unwrap();
    std::fs::write(dir.join("r1.tsr"), reply.bytes().await.unwrap()).unwrap();
    let text = ok(&openssl(&dir, &["ts", "-reply", "-in", "r1.tsr", "-text"]));
    assert!(
        text.contains("Rejected") && text.contains("unrecognized or unsupported algorithm"),
        "{text}"
    );

    // Our own verifier agrees with openssl.
    let pki = server.pki().await;
    let anchors = xalo_trust::chain::TrustAnchors::new(vec![
        pki.authority(AuthorityName::Root).certificate_der.clone(),
    ]);
    let token = xalo_trust::timestamp::request_token(&http, &url, b"data")
        .await
        .unwrap();
    let verified = xalo_trust::timestamp::verify_token(&token, b"data", &anchors).unwrap();
    assert!(verified.authority.contains("Time-Stamping"));
    assert!(xalo_trust::timestamp::verify_token(&token, b"other", &anchors).is_err());
    server.handle.shutdown().await.unwrap();
}

/// Other organisations get certificates through the registration-authority API, by token,
/// and openssl accepts what they get.
#[tokio::test]
async fn registration_authorities_issue_over_http() {
    use xalo_core::Config;
    use xalo_trust::registration::{CertificateRequest, RegistrationClient, token_hash};
    let db = xalo_store::testing::TestDatabase::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: Some(db.url().to_owned()),
        ..Config::default()
    };
    config.roles.entry("trust".into()).or_default().settings.insert(
        "registration_authorities".into(),
        serde_json::json!([{ "name": "mobile-operator", "token_sha256": token_hash("s3cret") }]),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = xalo_trust::serve(config, listener).await.unwrap();
    let subject = xalo_trust::Subject::person(&"VN001203012345".parse().unwrap(), "An", "Nguyễn");
    let request = CertificateRequest {
        profile: xalo_trust::Profile::PersonAuthentication,
        subject: subject.clone(),
        csr_pem: None,
        key_algorithm: None,
        validity_days: 365,
    };
    let ra = RegistrationClient::new(&server.url(), "s3cret").unwrap();
    let issued = ra.issue(&request).await.unwrap();
    assert!(issued.private_key_der().unwrap().is_some());
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("cert.pem"),
        issued.certificate_pem().unwrap(),
    )
    .unwrap();
    let chain = issued.chain_der().unwrap();
    std::fs::write(
        work.path().join("issuing.pem"),
        xalo_trust::key::pem_encode("CERTIFICATE", &chain[0]),
    )
    .unwrap();
    std::fs::write(
        work.path().join("root.pem"),
        xalo_trust::key::pem_encode("CERTIFICATE", &chain[1]),
    )
    .unwrap();
    ok(&openssl(
        work.path(),
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing.pem",
            "cert.pem",
        ],
    ));
    let subject_line = ok(&openssl(
        work.path(),
        &["x509", "-in", "cert.pem", "-noout", "-subject"],
    ));
    assert!(
        subject_line.contains("PNOVN-001203012345"),
        "{subject_line}"
    );

    // Wrong or missing token, and profiles no RA may ask for.
    let e = RegistrationClient::new(&server.url(), "guess")
        .unwrap()
        .issue(&request)
        .await
        .unwrap_err();
    assert_eq!(e.code, xalo_core::ErrorCode::HttpForbidden);
    let r = reqwest::Client::new()
        .post(format!("{}/ra/certificates", server.url()))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut tsa = request.clone();
    tsa.profile = xalo_trust::Profile::TimeStamping;
    assert!(ra.issue(&tsa).await.is_err());
    server.shutdown().await.unwrap();
}
