//! A real browser signs in with an ID-card: the card is the PKCS#12 that the trust service
//! exports, imported into the browser's own certificate store with NSS's `pk12util`, and
//! Chromium presents it as its TLS client certificate when the person presses the ID-card
//! button, as it would with a card reader's certificate.

use std::process::Command;
use std::time::Duration;

use fantoccini::Locator;
use xalo_trust::{IssueRequest, KeyAlgorithm, KeySource, Pki, PkiSettings, Profile, Subject};

use crate::browser::{CHROMEDRIVER, Driver, headless_chromium};
use crate::nation::*;

/// Where Debian's Chromium reads managed policies. Headless Chromium has no certificate
/// chooser, so the `AutoSelectCertificateForUrls` policy stands in for the person's click
/// on the one card offered.
const POLICY_DIR: &str = "/etc/chromium/policies/managed";

/// Removes the test's policy file; the driver stops first (fields drop in order).
struct Cleanup {
    driver: Option<Driver>,
    policy: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        drop(self.driver.take());
        let _ = std::fs::remove_file(&self.policy);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn browser_signs_in_with_an_id_card() {
    for tool in [CHROMEDRIVER, "/usr/bin/pk12util", "/usr/bin/certutil"] {
        if !std::path::Path::new(tool).exists() {
            eprintln!(
                "SKIPPED browser ID-card test: {tool} is absent (apt-get install chromium chromium-driver libnss3-tools)"
            );
            return;
        }
    }
    if std::fs::create_dir_all(POLICY_DIR).is_err() {
        eprintln!("SKIPPED browser ID-card test: {POLICY_DIR} is not writable (run as root)");
        return;
    }
    let n = Nation::start().await;

    // The citizen's card, exported as `xalo pki export --pkcs12` does.
    let pki = Pki::open(n.trust_db.db.clone(), PkiSettings::new(n.trust.url()))
        .await
        .unwrap();
    let code: xalo_core::PersonalCode = "VN079199000456".parse().unwrap();
    let issued = pki
        .issue(&IssueRequest {
            profile: Profile::PersonAuthentication,
            subject: Subject::person(&code, "AN", "LÊ"),
            key: KeySource::Generate(KeyAlgorithm::P256),
            validity_days: 365,
        })
        .await
        .unwrap();
    let p12 = pki
        .export_pkcs12(&issued.record.serial, "0000")
        .await
        .unwrap();

    // A home of its own for the browser, whose NSS store holds the card.
    let home = tempfile::tempdir().unwrap();
    let nssdb = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    run(Command::new("certutil").args(["-N", "--empty-password", "-d", &db]));
    let card = home.path().join("card.p12");
    std::fs::write(&card, &p12).unwrap();
    run(Command::new("pk12util")
        .args(["-d", &db, "-W", "0000", "-i"])
        .arg(&card));

    let mut guard = Cleanup {
        driver: None,
        policy: std::path::Path::new(POLICY_DIR).join(format!(
            "xalo-test-{}-{}.json",
            std::process::id(),
            n.id_card_port
        )),
    };
    let pattern = format!("https://127.0.0.1:{}", n.id_card_port);
    std::fs::write(
        &guard.policy,
        serde_json::json!({
            "AutoSelectCertificateForUrls": [
                serde_json::json!({ "pattern": pattern, "filter": {} }).to_string()
            ]
        })
        .to_string(),
    )
    .unwrap();
    let (driver, c) = headless_chromium(
        Some(home.path()),
        &[
            "--lang=en".into(),
            // The ID-card listener's own certificate is self-signed in the test nation.
            "--ignore-certificate-errors".into(),
            format!("--user-data-dir={}", home.path().join("profile").display()),
        ],
    )
    .await;
    guard.driver = Some(driver);

    c.goto(&authorize_url(&n, "portal", "&ui_locales=en"))
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    c.find(Locator::Css("#idcard-title ~ p a.button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The card's handshake sends the browser back to the service with a code.
    let mut back = None;
    for _ in 0..300 {
        let now = c.current_url().await.unwrap();
        if now.as_str().starts_with(REDIRECT) {
            back = Some(now.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(back) = back else {
        let page = c.source().await.unwrap_or_default();
        panic!(
            "the browser did not return to the service; it shows {}: {page}",
            c.current_url().await.unwrap()
        );
    };
    assert_eq!(query_param(&back, "state").as_deref(), Some("st4te"));
    let code = query_param(&back, "code").unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/oidc/token", n.id.url()))
        .basic_auth("portal", Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tokens: serde_json::Value = r.json().await.unwrap();
    let userinfo: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/oidc/userinfo", n.id.url()))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["sub"], "VN079199000456", "{userinfo}");
    assert!(userinfo["amr"].to_string().contains("idcard"), "{userinfo}");
    c.close().await.unwrap();
}
