use std::time::Duration;

use xalo_core::{ErrorCode, PersonalCode};
use xalo_store::testing::TestDatabase;
use xalo_trust::authority::{Subject, parse_certificate};
use xalo_trust::chain::{TrustAnchors, verify_path};
use xalo_trust::{AuthorityName, IssueRequest, KeyAlgorithm, KeySource, Profile, RevocationReason};

use super::support::{ok, openssl, pki};

fn subject_for(profile: Profile) -> Subject {
    match profile {
        Profile::PersonAuthentication | Profile::PersonSigning => {
            let code: PersonalCode = "VN001203012345".parse().unwrap();
            Subject::person(&code, "An", "NGUYEN")
        }
        _ => {
            let mut s = Subject::organisation("VN", "Ministry of Public Security", "000001");
            s.dns_names = vec!["gateway.mps.example".into()];
            s
        }
    }
}

#[tokio::test]
async fn every_profile_and_algorithm_verifies_with_openssl() {
    let db = TestDatabase::new().await.unwrap();
    let pki = pki(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write_pem_files(dir.path()).unwrap();
    let anchors = TrustAnchors::new(vec![
        pki.authority(AuthorityName::Root).certificate_der.clone(),
    ]);
    for alg in [
        KeyAlgorithm::P256,
        KeyAlgorithm::P384,
        KeyAlgorithm::Ed25519,
    ] {
        for profile in Profile::ISSUABLE {
            let issued = pki
                .issue(&IssueRequest {
                    profile,
                    subject: subject_for(profile),
                    key: KeySource::Generate(alg),
                    validity_days: 365,
                })
                .await
                .unwrap();
            let cert_path = dir.path().join("cert.pem");
            std::fs::write(&cert_path, issued.certificate_pem()).unwrap();
            let issuing = match profile.issuer() {
                AuthorityName::Persons => &files.persons,
                _ => &files.organisations,
            };
            let out = openssl(
                dir.path(),
                &[
                    "verify",
                    "-CAfile",
                    "root.pem",
                    "-untrusted",
                    issuing.to_str().unwrap(),
                    "cert.pem",
                ],
            );
            let text = ok(&out);
            assert!(text.contains("cert.pem: OK"), "{profile:?} {alg:?}: {text}");
            let path = verify_path(
                &issued.record.certificate,
                &issued.chain,
                &anchors,
                std::time::SystemTime::now(),
            )
            .unwrap();
            assert_eq!(path.certificates.len(), 3);
            // The path is the one webpki verified: issuing CA, then the root.
            assert_eq!(
                path.issuer(),
                Some(pki.authority(profile.issuer()).certificate_der.as_slice())
            );
            assert_eq!(
                path.certificates[2],
                pki.authority(AuthorityName::Root).certificate_der
            );
            if profile.issuer() == AuthorityName::Persons {
                let text = ok(&openssl(
                    dir.path(),
                    &[
                        "x509",
                        "-in",
                        "cert.pem",
                        "-noout",
                        "-subject",
                        "-ext",
                        "keyUsage,extendedKeyUsage,authorityInfoAccess",
                        "-nameopt",
                        "RFC2253",
                    ],
                ));
                assert!(text.contains("serialNumber=PNOVN-001203012345"), "{text}");
                assert!(
                    text.contains("OCSP - URI:http://127.0.0.1:9/ocsp"),
                    "{text}"
                );
                let usage = if profile == Profile::PersonSigning {
                    "Non Repudiation"
                } else {
                    "Digital Signature"
                };
                assert!(text.contains(usage), "{text}");
            }
        }
    }
    // The service certificates too; the TSA's timeStamping usage is critical.
    for (cert, issuing) in [
        (pki.tsa_signer().pem(), "organisations.pem"),
        (pki.ocsp_signer(AuthorityName::Persons).pem(), "persons.pem"),
        (
            pki.ocsp_signer(AuthorityName::Organisations).pem(),
            "organisations.pem",
        ),
    ] {
        std::fs::write(dir.path().join("svc.pem"), cert).unwrap();
        ok(&openssl(
            dir.path(),
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                issuing,
                "svc.pem",
            ],
        ));
    }
    std::fs::write(dir.path().join("tsa.pem"), pki.tsa_signer().pem()).unwrap();
    let text = ok(&openssl(
        dir.path(),
        &[
            "x509",
            "-in",
            "tsa.pem",
            "-noout",
            "-ext",
            "extendedKeyUsage",
        ],
    ));
    assert!(
        text.contains("critical") && text.contains("Time Stamping"),
        "{text}"
    );
}

#[tokio::test]
async fn issue_from_an_openssl_csr_revoke_and_reopen() {
    let db = TestDatabase::new().await.unwrap();
    let pki = pki(&db).await;
    let dir = tempfile::tempdir().unwrap();
    ok(&openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "r.csr",
            "-subj",
            "/CN=ignored",
        ],
    ));
    let csr = std::fs::read(dir.path().join("r.csr")).unwrap();
    let issued = pki
        .issue(&IssueRequest {
            profile: Profile::GatewayTls,
            subject: subject_for(Profile::GatewayTls),
            key: KeySource::Csr(csr),
            validity_days: 30,
        })
        .await
        .unwrap();
    assert!(issued.private_key.is_none());
    std::fs::write(dir.path().join("c.pem"), issued.certificate_pem()).unwrap();
    // The certificate carries the requester's key.
    let a = ok(&openssl(
        dir.path(),
        &["x509", "-in", "c.pem", "-noout", "-pubkey"],
    ));
    let b = ok(&openssl(dir.path(), &["pkey", "-in", "k.pem", "-pubout"]));
    assert_eq!(a, b);

    let bad = pki
        .issue(&IssueRequest {
            profile: Profile::GatewayTls,
            subject: subject_for(Profile::GatewayTls),
            key: KeySource::Csr(b"\x30\x03\x02\x01\x00".to_vec()),
            validity_days: 30,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code, ErrorCode::TrustBadCsr);

    let revoked = pki
        .revoke(&issued.record.serial, RevocationReason::KeyCompromise, None)
        .await
        .unwrap();
    assert_eq!(
        revoked.revocation_reason,
        Some(RevocationReason::KeyCompromise)
    );
    let again = pki
        .revoke(&issued.record.serial, RevocationReason::KeyCompromise, None)
        .await
        .unwrap_err();
    assert_eq!(again.code, ErrorCode::TrustAlreadyRevoked);
    let missing = pki
        .revoke("00ff", RevocationReason::Superseded, None)
        .await
        .unwrap_err();
    assert_eq!(missing.code, ErrorCode::TrustCertificateNotFound);

    // A second opening of the same database finds the same authorities and records.
    let reopened = super::support::pki(&db).await;
    assert_eq!(
        reopened.authority(AuthorityName::Root).certificate_der,
        pki.authority(AuthorityName::Root).certificate_der
    );
    let listed = reopened.list(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_unix.is_some());
    let _ = Duration::from_secs(1);
}

#[tokio::test]
async fn pkcs12_card_opens_in_openssl() {
    let db = TestDatabase::new().await.unwrap();
    let pki = pki(&db).await;
    let code: PersonalCode = "VN001203012345".parse().unwrap();
    let issued = pki
        .issue(&IssueRequest {
            profile: Profile::PersonAuthentication,
            subject: Subject::person(&code, "An", "NGUYEN"),
            key: KeySource::Generate(KeyAlgorithm::P256),
            validity_days: 365,
        })
        .await
        .unwrap();
    let p12 = pki
        .export_pkcs12(&issued.record.serial, "s3cret")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("card.p12"), p12).unwrap();
    let text = ok(&openssl(
        dir.path(),
        &[
            "pkcs12",
            "-in",
            "card.p12",
            "-info",
            "-nodes",
            "-passin",
            "pass:s3cret",
        ],
    ));
    assert!(text.contains("BEGIN PRIVATE KEY"), "{text}");
    assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 3, "{text}");
    let cert = parse_certificate(&issued.record.certificate).unwrap();
    assert!(
        cert.tbs_certificate
            .subject
            .to_string()
            .contains("PNOVN-001203012345")
    );
}
