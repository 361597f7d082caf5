//! A real browser (Debian's chromium through chromedriver) signs in with Mobile-ID end to
//! end: the sign-in page, the verification code, the phone screen with PIN1, and back to
//! the service with a code that the token endpoint accepts. No JavaScript is involved.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};

use crate::nation::*;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running chromedriver, stopped when dropped.
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start chromedriver on a free port (with `home` as the browser's home, whose NSS store
/// holds its certificates) and open a headless Chromium session with these extra flags.
pub async fn headless_chromium(
    home: Option<&std::path::Path>,
    extra_args: &[String],
) -> (Driver, fantoccini::Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(CHROMEDRIVER);
    command
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(home) = home {
        command.env("HOME", home);
    }
    let driver = Driver(command.spawn().unwrap());
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ]
    .map(String::from)
    .to_vec();
    args.extend_from_slice(extra_args);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": args }),
    );
    for _ in 0..200 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (driver, c),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver does not answer");
}

#[tokio::test]
async fn browser_signs_in_with_mobile_id() {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "SKIPPED browser test: {CHROMEDRIVER} is absent (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let n = Nation::start().await;
    let (_driver, c) = headless_chromium(None, &["--lang=vi".into()]).await;

    let verifier = "dBjftJeZ4CVP-mJ92K9qbTFSeRNIg6T6BaDJ4PqmvmM";
    let url = authorize_url(
        &n,
        "app",
        "&code_challenge=FUKVvr22WkWQmtB3Vi-qGNcJSDA4Ya8zNj4RhDjJzGs&code_challenge_method=S256&ui_locales=vi",
    );
    c.goto(&url).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    let lang = c
        .find(Locator::Css("html"))
        .await
        .unwrap()
        .attr("lang")
        .await
        .unwrap();
    assert_eq!(lang.as_deref(), Some("vi"));
    c.find(Locator::Id("phone"))
        .await
        .unwrap()
        .send_keys(CITIZEN_PHONE)
        .await
        .unwrap();
    c.find(Locator::Id("personal_code"))
        .await
        .unwrap()
        .send_keys(CITIZEN)
        .await
        .unwrap();
    c.find(Locator::Css("#mid-title ~ form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let shown = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(".code"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown.len(), 4, "{shown}");

    // The phone, in a second window.
    let main = c.window().await.unwrap();
    let phone = c.new_window(true).await.unwrap();
    c.switch_to_window(phone.handle).await.unwrap();
    c.goto(&format!("{}/phone/{CITIZEN_PHONE}", n.mid.url()))
        .await
        .unwrap();
    let on_phone = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(".code"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        on_phone, shown,
        "the phone shows the same verification code"
    );
    c.find(Locator::Id("pin"))
        .await
        .unwrap()
        .send_keys(PIN1)
        .await
        .unwrap();
    c.find(Locator::Css("button.button:not(.secondary)"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.switch_to_window(main).await.unwrap();

    // The waiting page refreshes itself into the long poll, which sends the browser back.
    let mut back = None;
    for _ in 0..600 {
        let now = c.current_url().await.unwrap();
        if now.as_str().starts_with(REDIRECT) {
            back = Some(now.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = back.expect("the browser returns to the service");
    let code = query_param(&back, "code").unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/oidc/token", n.id.url()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", "app"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.close().await.unwrap();
}
