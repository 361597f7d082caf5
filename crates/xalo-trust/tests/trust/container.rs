use xalo_core::ErrorCode;
use xalo_trust::authority::Subject;
use xalo_trust::chain::TrustAnchors;
use xalo_trust::container::{self, DataFile, SignOptions};
use xalo_trust::ocsp::OcspSettings;
use xalo_trust::{
    AuthorityName, IssueRequest, KeySource, Profile, RevocationReason, Signer, SigningKey,
    TrustSettings,
};

use super::support::{Running, ok, openssl};

async fn person(server: &Running, pki: &xalo_trust::Pki, given: &str) -> Signer {
    let _ = server;
    let issued = pki
        .issue(&IssueRequest {
            profile: Profile::PersonSigning,
            subject: Subject::person(&"VN001203012345".parse().unwrap(), given, "NGUYEN"),
            key: KeySource::Generate(xalo_trust::KeyAlgorithm::P256),
            validity_days: 365,
        })
        .await
        .unwrap();
    Signer::new(
        issued.record.certificate.clone(),
        SigningKey::from_pkcs8(&issued.private_key.unwrap()).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_cosign_verify_and_openssl_cms_agrees() {
    let server = Running::start(TrustSettings {
        ocsp: OcspSettings {
            cache_secs: 0,
            ..OcspSettings::default()
        },
        ..TrustSettings::default()
    })
    .await;
    let pki = server.pki().await;
    let http = reqwest::Client::new();
    let tsa_url = format!("{}/tsa", server.handle.url());
    let chain = pki.chain_of(AuthorityName::Persons);
    let anchors = TrustAnchors::new(vec![
        pki.authority(AuthorityName::Root).certificate_der.clone(),
    ]);
    let an = person(&server, &pki, "An").await;
    let files = vec![
        DataFile {
            name: "hồ sơ.txt".into(),
            bytes: "Đơn đăng ký\n".as_bytes().to_vec(),
        },
        DataFile {
            name: "data.json".into(),
            bytes: b"{\"a\":1}".to_vec(),
        },
    ];
    let asice = container::sign(
        None,
        files,
        &SignOptions {
            signer: &an,
            chain: &chain,
            tsa_url: &tsa_url,
            http: &http,
        },
    )
    .await
    .unwrap();
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

    // openssl: unzip, check the CMS over the manifest and the digests with sha256sum.
    let dir = server.dir.path().join("trust");
    std::fs::write(dir.join("out.asice"), &asice).unwrap();
    let c = container::Container::read(&asice).unwrap();
    std::fs::create_dir_all(dir.join("x/META-INF")).unwrap();
    for (name, data) in &c.meta {
        std::fs::write(dir.join("x").join(name), data).unwrap();
    }
    let out = ok(&openssl(
        &dir.join("x"),
        &[
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            "META-INF/signature001.p7s",
            "-content",
            "META-INF/ASiCManifest.xml",
            "-CAfile",
            "../root.pem",
            "-out",
            "/dev/null",
        ],
    ));
    assert!(out.contains("Verification successful"), "{out}");
    let manifest = String::from_utf8(c.meta["META-INF/ASiCManifest.xml"].clone()).unwrap();
    for f in &c.data_files {
        std::fs::write(dir.join("x").join(&f.name), &f.bytes).unwrap();
        let sum = std::process::Command::new("sha256sum")
            .arg(&f.name)
            .current_dir(dir.join("x"))
            .output()
            .unwrap();
        let hex = String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(hex).unwrap());
        assert!(manifest.contains(&b64), "{} digest not in manifest", f.name);
    }

    // Co-signing keeps the first signature valid.
    let binh = person(&server, &pki, "Binh").await;
    let cosigned = container::sign(
        Some(&asice),
        vec![],
        &SignOptions {
            signer: &binh,
            chain: &chain,
            tsa_url: &tsa_url,
            http: &http,
        },
    )
    .await
    .unwrap();
    let report = container::verify(&cosigned, &anchors);
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.signatures.len(), 2);

    // Defects, each with its own code.
    let mut changed = container::Container::read(&cosigned).unwrap();
    changed.data_files[0].bytes.push(b'!');
    let r = container::verify(&changed.write().unwrap(), &anchors);
    assert!(r.codes().contains(&ErrorCode::TrustFileChanged), "{r}");
    let mut missing = container::Container::read(&cosigned).unwrap();
    missing.data_files.remove(1);
    let r = container::verify(&missing.write().unwrap(), &anchors);
    assert!(r.codes().contains(&ErrorCode::TrustFileMissing), "{r}");
    let mut extra = container::Container::read(&cosigned).unwrap();
    extra.data_files.push(DataFile {
        name: "slipped-in.txt".into(),
        bytes: b"x".to_vec(),
    });
    let r = container::verify(&extra.write().unwrap(), &anchors);
    assert!(r.codes().contains(&ErrorCode::TrustFileNotSigned), "{r}");
    let stranger = TrustAnchors::new(vec![
        pki.ocsp_signer(AuthorityName::Root).certificate_der.clone(),
    ]);
    let r = container::verify(&cosigned, &stranger);
    assert!(r.codes().contains(&ErrorCode::TrustUnknownCa), "{r}");
    let mut bad_ts = container::Container::read(&asice).unwrap();
    let p7s = bad_ts.meta.get_mut("META-INF/signature001.p7s").unwrap();
    let len = p7s.len();
    p7s[len - 40] ^= 0x01; // inside the last unsigned attribute's data
    let r = container::verify(&bad_ts.write().unwrap(), &anchors);
    assert!(!r.is_valid(), "{r}");
    let r = container::verify(b"PK\x03\x04 not really", &anchors);
    assert_eq!(r.codes(), vec![ErrorCode::TrustBadContainer]);

    // A certificate revoked (and the revocation embedded) before signing is named as such.
    let chi = person(&server, &pki, "Chi").await;
    let signed = container::sign(
        None,
        vec![DataFile {
            name: "a.txt".into(),
            bytes: b"a".to_vec(),
        }],
        &SignOptions {
            signer: &chi,
            chain: &chain,
            tsa_url: &tsa_url,
            http: &http,
        },
    )
    .await
    .unwrap();
    let serial = xalo_trust::authority::serial_hex(&chi.certificate);
    pki.revoke(
        &serial,
        RevocationReason::KeyCompromise,
        Some(std::time::SystemTime::now() - std::time::Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let refused = container::sign(
        None,
        vec![DataFile {
            name: "b.txt".into(),
            bytes: b"b".to_vec(),
        }],
        &SignOptions {
            signer: &chi,
            chain: &chain,
            tsa_url: &tsa_url,
            http: &http,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code, ErrorCode::TrustRevokedBeforeSigning);
    // The earlier container carries a "good" answer, and stays valid.
    assert!(container::verify(&signed, &anchors).is_valid());
    server.handle.shutdown().await.unwrap();
}
