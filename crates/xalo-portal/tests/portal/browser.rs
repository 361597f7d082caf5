//! The walk in a real browser: Debian's Chromium, headless, driven through
//! chromedriver over a whole small nation on port 0 ([`FullNation`]). A new user opens the
//! portal, searches "khai sinh", opens birth registration, signs in with Mobile-ID (the
//! phone is a second window), finds the parents prefilled from the population register
//! through the exchange, submits and signs with Mobile-ID (PIN2), pays a fee at the
//! payment provider and comes back; an officer of the ward signs in with Mobile-ID and
//! approves; the citizen downloads the sealed result, which `xalo verify` accepts, and the
//! data tracker shows the population register's reads with the dossier's code as their
//! purpose, proven in the ledger.
//!
//! Birth registration is free (Law on Civil Status, art. 11), so the fee is paid for what
//! parents ask for next: copies of the birth extract (8.000 ₫ each request).
//!
//! No JavaScript of the portal is involved; the test only sets a date input's value with a
//! script, since typing into Chromium's date picker depends on the browser's locale.
//! When a step fails, screenshots and page sources of every window are saved under the
//! target directory's temporary folder and their paths printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use xalo_core::Config;
use xalo_core::Gender;
use xalo_portal::dossier::{self, Dossier, State};

use super::kit::{FullNation, PIN1, PIN2, Subscriber};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const BIRTH: &str = "1.001193";
const EXTRACT_COPY: &str = "2.000635";

/// A running chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Driver { child, port }
}

/// A new headless Chromium (its own profile, so its own cookies) that saves downloads in
/// `downloads` without asking.
async fn browser(driver: &Driver, downloads: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--lang=vi", "--window-size=1024,1400",
            ],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
                "intl.accept_languages": "vi,en",
            },
        }),
    );
    for _ in 0..200 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver does not answer");
}

/// The step being walked, for the failure report.
type Step = Arc<Mutex<String>>;

fn step(s: &Step, what: &str) {
    eprintln!("browser walk: {what}");
    *s.lock().unwrap() = what.to_owned();
}

async fn here(c: &Client) -> String {
    c.current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default()
}

/// Waits for the element, as a person waits for a page to arrive: a click's navigation
/// may still be under way under a loaded machine.
async fn find(c: &Client, css: &str) -> Element {
    match c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => panic!("no `{css}` on {}: {e}", here(c).await),
    }
}

async fn click(c: &Client, css: &str) {
    find(c, css).await.click().await.unwrap();
}

async fn click_link(c: &Client, text: &str) {
    match c.find(Locator::LinkText(text)).await {
        Ok(e) => e.click().await.unwrap(),
        Err(e) => panic!("no link \"{text}\" on {}: {e}", here(c).await),
    }
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = find(c, css).await;
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn choose(c: &Client, css: &str, value: &str) {
    find(c, css).await.select_by_value(value).await.unwrap();
}

async fn value(c: &Client, css: &str) -> String {
    find(c, css)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// axe-core, the accessibility engine (Deque's, from the npm registry): `XALO_TEST_AXE_JS`, or
/// where `.ci/run` installs it in the user's cache. Without it the WCAG checks are skipped
/// with a notice, except under CI, where its absence fails the walk.
static AXE: std::sync::LazyLock<Option<String>> = std::sync::LazyLock::new(|| {
    let path = std::env::var_os("XALO_TEST_AXE_JS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("xalo/npm/node_modules/axe-core/axe.min.js"))
        })?;
    match std::fs::read_to_string(&path) {
        Ok(js) => Some(js),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!(
                "axe-core is missing at {} ({e}); .ci/run installs it",
                path.display()
            )
        }
        Err(_) => {
            eprintln!("SKIPPED WCAG checks: no axe-core at {}", path.display());
            None
        }
    }
});

/// The page meets WCAG 2.1 A and AA as far as axe-core can tell (the rules it can decide
/// without a person: names, labels, contrast, structure, language, ARIA).
async fn accessible(c: &Client, what: &str) {
    let Some(axe) = AXE.as_deref() else { return };
    c.execute(&format!("{axe}\n;return true;"), vec![])
        .await
        .unwrap_or_else(|e| panic!("axe-core did not load on {what}: {e}"));
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag',
                 values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
               .then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact,
                   help: v.help, nodes: v.nodes.slice(0, 5).map(n =>
                   n.target.join(' ') + ' — ' + n.failureSummary) }))))
               .catch(e => done([{ id: 'axe-error', help: String(e), nodes: [] }]));",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("axe-core did not run on {what}: {e}"));
    let violations = found.as_array().cloned().unwrap_or_default();
    assert!(
        violations.is_empty(),
        "WCAG 2.1 AA violations on {what} ({}):\n{}",
        here(c).await,
        serde_json::to_string_pretty(&violations).unwrap()
    );
}

/// What the page shows (its text, not its markup).
async fn shown(c: &Client) -> String {
    find(c, "body").await.text().await.unwrap()
}

/// Wait until the browser is at `origin` + a path that `path` accepts; returns the URL.
async fn arrive(c: &Client, origin: &str, path: impl Fn(&str) -> bool) -> String {
    // Generous: CI runs the other tests on the same two cores.
    for _ in 0..600 {
        let url = here(c).await;
        if let Some(rest) = url.strip_prefix(origin) {
            let p = rest.split(['?', '#']).next().unwrap_or_default();
            if path(if p.is_empty() { "/" } else { p }) {
                return url;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the browser stays at {} (expected {origin}…)",
        here(c).await
    );
}

/// Reload until the page shows `needle`; returns the page's text.
async fn reload_until(c: &Client, needle: &str) -> String {
    let mut text = String::new();
    for _ in 0..120 {
        text = shown(c).await;
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.refresh().await.unwrap();
    }
    panic!("{} never shows \"{needle}\":\n{text}", here(c).await);
}

async fn stored(n: &FullNation, code: &str) -> Dossier {
    dossier::get(&n.portal_db.db, code).await.unwrap().unwrap()
}

/// Wait until the dossier is in `state` at `step`, as the officer's click left it.
async fn dossier_reaches(n: &FullNation, code: &str, state: State, at: &str) {
    let mut d = stored(n, code).await;
    for _ in 0..300 {
        if d.state == state && d.current_step == at {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        d = stored(n, code).await;
    }
    panic!(
        "dossier {code} is {} at {}, not {state} at {at}",
        d.state, d.current_step
    );
}

/// The provider's sign-in page: Mobile-ID with a phone number and a personal code; the
/// phone shows the same verification code and takes PIN1.
async fn sign_in_with_mobile_id(c: &Client, n: &FullNation, who: &Subscriber) {
    arrive(c, &n.id.url(), |p| p.ends_with("/login")).await;
    accessible(c, "national sign-in's login page").await;
    fill(c, "#phone", &who.phone).await;
    fill(c, "#personal_code", &who.code()).await;
    click(c, "#mid-title ~ form button[type=submit]").await;
    let code = find(c, ".code").await.text().await.unwrap();
    assert_eq!(code.chars().count(), 4, "a verification code: {code}");
    accessible(c, "the Mobile-ID waiting page").await;
    on_the_phone(c, n, who, &code, PIN1).await;
}

/// The subscriber's phone, in a second window: it shows the verification code the page
/// shows, and the PIN confirms.
async fn on_the_phone(c: &Client, n: &FullNation, who: &Subscriber, code: &str, pin: &str) {
    let main = c.window().await.unwrap();
    let phone = c.new_window(true).await.unwrap();
    c.switch_to_window(phone.handle).await.unwrap();
    let url = format!("{}/phone/{}", n.mid.url(), who.phone);
    let mut on_phone = None;
    for _ in 0..50 {
        c.goto(&url).await.unwrap();
        if let Ok(e) = c.find(Locator::Css(".code")).await {
            on_phone = Some(e.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        on_phone.as_deref(),
        Some(code),
        "the phone shows the page's verification code"
    );
    accessible(c, "the phone screen").await;
    fill(c, "#pin", pin).await;
    click(c, "button.button:not(.secondary)").await;
    // Answered, the phone has no request left.
    for _ in 0..50 {
        if c.find(Locator::Css("#pin")).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.find(Locator::Css("#pin")).await.is_err(),
        "the phone took the PIN"
    );
    c.close_window().await.unwrap();
    c.switch_to_window(main).await.unwrap();
}

/// Search the catalogue from the home page and open the procedure and its start page.
async fn find_procedure(c: &Client, portal: &str, query: &str, name: &str, code: &str) {
    c.goto(portal).await.unwrap();
    fill(c, "#q", query).await;
    click(c, "form[role=search] button[type=submit]").await;
    arrive(c, portal, |p| p == "/procedures").await;
    accessible(c, "the search results").await;
    let results = shown(c).await;
    assert!(
        results.contains(name),
        "\"{query}\" finds {name}:\n{results}"
    );
    click_link(c, name).await;
    arrive(c, portal, |p| p == format!("/procedures/{code}")).await;
    accessible(c, "the procedure's page").await;
    click(c, "a.button[href*='/dossiers/new']").await;
    arrive(c, portal, |p| p == "/dossiers/new").await;
}

/// Start the application; the form of the new draft opens. Returns the dossier's code.
async fn start_application(c: &Client, portal: &str) -> String {
    click(c, "form[action='/dossiers/new'] button[type=submit]").await;
    let url = arrive(c, portal, |p| {
        p.starts_with("/dossiers/") && p.ends_with("/form")
    })
    .await;
    url.trim_start_matches(portal)
        .trim_start_matches("/dossiers/")
        .trim_end_matches("/form")
        .to_owned()
}

async fn walk(n: Arc<FullNation>, c: Client, officer: Client, s: Step, downloads: PathBuf) {
    let portal = n.portal.url();
    let citizen = &n.citizen;

    step(&s, "open the portal");
    c.goto(&portal).await.unwrap();
    let lang = find(&c, "html").await.attr("lang").await.unwrap();
    assert_eq!(lang.as_deref(), Some("vi"), "Vietnamese first");
    accessible(&c, "the portal's home page").await;

    step(&s, "search \"khai sinh\" and open birth registration");
    find_procedure(&c, &portal, "khai sinh", "Đăng ký khai sinh", BIRTH).await;

    step(&s, "sign in with Mobile-ID (PIN1 on the phone)");
    click(&c, "a.button[href^='/login']").await;
    sign_in_with_mobile_id(&c, &n, citizen).await;
    arrive(&c, &portal, |p| p == "/dossiers/new").await;
    let page = shown(&c).await;
    assert!(
        page.contains(&citizen.record.given_name),
        "signed in as the citizen:\n{page}"
    );

    step(&s, "start birth registration: the parents are prefilled");
    let code = start_application(&c, &portal).await;
    assert!(code.starts_with("QNI.HL-"), "{code}");
    accessible(&c, "the prefilled form").await;
    assert_eq!(
        value(&c, "#f-applicant_personal_code").await,
        citizen.code()
    );
    assert_eq!(
        value(&c, "#f-applicant_full_name").await,
        citizen.record.full_name()
    );
    assert_eq!(
        value(&c, "#f-applicant_birth_date").await,
        citizen.record.birth_date
    );
    assert_eq!(
        value(&c, "#f-other_parent_personal_code").await,
        n.spouse.code.to_string()
    );
    assert_eq!(
        value(&c, "#f-other_parent_full_name").await,
        n.spouse.full_name()
    );
    for field in [
        "applicant_personal_code",
        "applicant_full_name",
        "other_parent_personal_code",
        "other_parent_full_name",
    ] {
        c.find(Locator::Css(&format!("label[for='f-{field}'] .tag")))
            .await
            .unwrap_or_else(|_| panic!("{field} is marked as prefilled"));
    }

    step(&s, "fill in the child and submit");
    let father_is_applicant = citizen.record.gender == Gender::Male;
    let father = if father_is_applicant {
        &citizen.record
    } else {
        &n.spouse
    };
    let born = (chrono::Utc::now().date_naive() - chrono::Days::new(5))
        .format("%Y-%m-%d")
        .to_string();
    fill(&c, "#f-applicant_phone", "0901234567").await;
    fill(&c, "#f-child_family_name", &father.family_name).await;
    fill(&c, "#f-child_middle_name", "Minh").await;
    fill(&c, "#f-child_given_name", "Khang").await;
    c.execute(
        "document.getElementById('f-child_birth_date').value = arguments[0];",
        vec![serde_json::json!(born)],
    )
    .await
    .unwrap();
    choose(&c, "#f-child_gender", "nam").await;
    fill(&c, "#f-child_birth_place", "Bệnh viện Bãi Cháy, Hạ Long").await;
    choose(
        &c,
        "#f-applicant_relationship",
        if father_is_applicant { "cha" } else { "me" },
    )
    .await;
    click(&c, "button[name=intent][value=submit]").await;
    arrive(&c, &portal, |p| p == format!("/dossiers/{code}")).await;
    let page = shown(&c).await;
    assert!(page.contains("Đã nộp, chờ tiếp nhận"), "submitted:\n{page}");
    accessible(&c, "the submitted dossier's page").await;
    assert_eq!(stored(&n, &code).await.state, State::Submitted);

    step(
        &s,
        "sign the application with Mobile-ID (PIN2 on the phone)",
    );
    click(&c, &format!("a.button[href='/dossiers/{code}/sign']")).await;
    arrive(&c, &portal, |p| p == format!("/dossiers/{code}/sign")).await;
    accessible(&c, "the signing page").await;
    fill(&c, "#phone", &citizen.phone).await;
    click(
        &c,
        &format!("form[action='/dossiers/{code}/sign'] button[type=submit]"),
    )
    .await;
    arrive(&c, &portal, |p| {
        p.starts_with(&format!("/dossiers/{code}/sign/"))
    })
    .await;
    let verification = find(&c, ".code").await.text().await.unwrap();
    on_the_phone(&c, &n, citizen, &verification, PIN2).await;
    // The waiting page refreshes itself until the signature is there.
    arrive(&c, &portal, |p| p == format!("/dossiers/{code}/sign")).await;
    let page = shown(&c).await;
    assert!(
        page.contains("Hồ sơ đã được ký số bởi") && page.contains(&citizen.record.given_name),
        "signed by the citizen:\n{page}"
    );

    step(&s, "apply for copies of the birth extract and pay the fee");
    find_procedure(
        &c,
        &portal,
        "ban sao trich luc",
        "Cấp bản sao trích lục hộ tịch",
        EXTRACT_COPY,
    )
    .await;
    let copies = start_application(&c, &portal).await;
    assert_eq!(
        value(&c, "#f-applicant_personal_code").await,
        citizen.code(),
        "prefilled too"
    );
    choose(&c, "#f-record_kind", "khai_sinh").await;
    fill(&c, "#f-copies", "2").await;
    click(&c, "button[name=intent][value=submit]").await;
    arrive(&c, &portal, |p| p == format!("/dossiers/{copies}")).await;
    click(
        &c,
        &format!("form[action='/dossiers/{copies}/pay'] button[type=submit]"),
    )
    .await;
    arrive(&c, &n.payment.url(), |p| p.starts_with("/pay/")).await;
    accessible(&c, "the payment provider's page").await;
    let amount = find(&c, "#amount").await.text().await.unwrap();
    assert_eq!(
        amount
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>(),
        "8000",
        "the procedure's fee: {amount}"
    );
    choose(&c, "#bank", "VCB").await;
    fill(&c, "#account", "0011223344556").await;
    click(&c, "form[action$='/confirm'] button[type=submit]").await;
    arrive(&c, &portal, |p| {
        p == xalo_portal::payment_client::RETURN_PATH
    })
    .await;
    let page = shown(&c).await;
    assert!(
        page.contains("Đã thanh toán") && page.contains(&copies),
        "back at the portal, paid:\n{page}"
    );
    click(&c, &format!("a.button[href='/dossiers/{copies}']")).await;
    arrive(&c, &portal, |p| p == format!("/dossiers/{copies}")).await;
    reload_until(&c, "Đã thanh toán.").await;
    assert!(
        c.find(Locator::Css(&format!(
            "form[action='/dossiers/{copies}/pay']"
        )))
        .await
        .is_err(),
        "a paid fee is not offered again"
    );

    step(&s, "an officer of the ward signs in with Mobile-ID");
    officer.goto(&format!("{portal}/office")).await.unwrap();
    sign_in_with_mobile_id(&officer, &n, &n.officer).await;
    arrive(&officer, &portal, |p| p == "/office").await;
    accessible(&officer, "the back office's queue").await;
    let queue = shown(&officer).await;
    assert!(
        queue.contains(&code) && queue.contains(&copies),
        "the ward's queue:\n{queue}"
    );

    step(
        &s,
        "the officer receives, examines and approves the birth registration",
    );
    let office_page = format!("/office/dossiers/{code}");
    click(&officer, &format!("a[href='{office_page}']")).await;
    arrive(&officer, &portal, |p| p == office_page).await;
    let page = shown(&officer).await;
    assert!(
        page.contains("Khang") && page.contains(&citizen.code()),
        "the application as submitted:\n{page}"
    );
    accessible(&officer, "the back office's dossier page").await;
    for (action, state, at) in [
        ("accept", State::Processing, "receive"),
        ("forward", State::Processing, "process"),
        ("forward", State::Processing, "approve"),
    ] {
        click(
            &officer,
            &format!("form[action='{office_page}/{action}'] button[type=submit]"),
        )
        .await;
        dossier_reaches(&n, &code, state, at).await;
        if !here(&officer).await.contains(&office_page) {
            click(&officer, &format!("a[href='{office_page}']")).await;
        }
        arrive(&officer, &portal, |p| p == office_page).await;
    }
    fill(&officer, "#approve-note", "Hồ sơ hợp lệ").await;
    click(
        &officer,
        &format!("form[action='{office_page}/approve'] button[type=submit]"),
    )
    .await;
    dossier_reaches(&n, &code, State::Approved, "approve").await;
    let page = shown(&officer).await;
    assert!(
        !page.contains("chưa phát hành được kết quả"),
        "the result is issued:\n{page}"
    );

    step(
        &s,
        "the citizen sees the decision and downloads the sealed result",
    );
    c.goto(&format!("{portal}/dossiers/{code}")).await.unwrap();
    let page = shown(&c).await;
    assert!(page.contains("Đã có kết quả"), "approved:\n{page}");
    c.goto(&format!("{portal}/mailbox")).await.unwrap();
    accessible(&c, "the mailbox").await;
    click(&c, "ul.messages a").await;
    arrive(&c, &portal, |p| p.starts_with("/mailbox/")).await;
    accessible(&c, "the result's message").await;
    click(&c, "a[download]").await;
    let mut saved = None;
    for _ in 0..100 {
        saved = std::fs::read_dir(&downloads)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "asice"));
        if saved.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let saved = saved.expect("the browser saved the result (.asice)");

    step(&s, "the citizen's phone got the SMS from the portal");
    let screen = reqwest::get(format!("{}/phone/{}", n.mid.url(), citizen.phone))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        screen.contains("DichVuCong") && screen.contains(&format!("Ho so {code} da co ket qua")),
        "the SMS on the phone screen:\n{screen}"
    );

    step(&s, "`xalo verify` accepts the result");
    let root = n.dir.path().join("seal-root.pem");
    std::fs::write(&root, &n.seal_root_pem).unwrap();
    let accepted = xalo_trust::cli::run_verify(
        &Config::default(),
        xalo_trust::cli::VerifyArgs {
            container: saved.clone(),
            ca: Some(root),
            json: false,
        },
    )
    .unwrap();
    assert!(accepted, "xalo verify refuses {}", saved.display());
    let container =
        xalo_trust::container::Container::read(&std::fs::read(&saved).unwrap()).unwrap();
    let json = container
        .data_files
        .iter()
        .find(|f| f.name == "ket-qua.json")
        .expect("the result's data");
    let json = String::from_utf8(json.bytes.clone()).unwrap();
    assert!(
        json.contains(&code) && json.contains("Khang"),
        "the result is this dossier's: {json}"
    );

    step(
        &s,
        "the approval registered the child in the population register, through the exchange",
    );
    let children = xalo_registry::store::people_where(
        &n.population,
        "(mother = $1 OR father = $1) AND given_name = 'Khang'",
        &[citizen.code()],
        10,
    )
    .await
    .unwrap();
    assert_eq!(children.len(), 1, "one child registered: {children:?}");
    let child = &children[0];
    assert_eq!(child.birth_date, born);
    assert_eq!(
        child.father.map(|f| f.to_string()),
        Some(father.code.to_string())
    );
    assert_eq!(child.residence_unit, citizen.record.residence_unit);
    assert!(
        json.contains(&child.code.to_string()),
        "the result names the child's new personal code: {json}"
    );

    step(
        &s,
        "the data tracker shows the population register's access and its purpose",
    );
    c.goto(&format!("{portal}/data-tracker")).await.unwrap();
    let mut rows = Vec::new();
    for _ in 0..60 {
        rows = Vec::new();
        for row in c.find_all(Locator::Css("table tbody tr")).await.unwrap() {
            rows.push(row.text().await.unwrap());
        }
        let done = rows
            .iter()
            .filter(|r| r.contains(&code))
            .all(|r| r.contains("Đã xác minh: mục"));
        if done && rows.iter().any(|r| r.contains(&code)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.refresh().await.unwrap();
    }
    // The population register's `persons` service, read by the portal's system for the
    // signed-in citizen, with the dossier's code as its purpose.
    let read = rows
        .iter()
        .find(|r| r.contains(&code) && r.contains("persons"))
        .unwrap_or_else(|| panic!("no read of the population register for {code}: {rows:#?}"));
    assert!(
        read.contains("VN/GOV/000007/portal")
            && read.contains("Văn phòng Chính phủ")
            && read.contains(&citizen.code())
            && read.contains("Cơ sở dữ liệu quốc gia về dân cư"),
        "who read which register, for whom: {read}"
    );
    assert!(
        read.contains("Đã xác minh: mục"),
        "proven in the ledger: {read}"
    );
    accessible(&c, "the data tracker").await;
    c.goto(&format!("{portal}/kpi")).await.unwrap();
    accessible(&c, "the indicators").await;
    step(&s, "done");
}

/// Save a screenshot and the page source of every window of a browser.
async fn capture(dir: &Path, name: &str, c: &Client) -> Vec<PathBuf> {
    let mut saved = Vec::new();
    for (i, w) in c
        .windows()
        .await
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if c.switch_to_window(w).await.is_err() {
            continue;
        }
        let url = here(c).await;
        if let Ok(png) = c.screenshot().await {
            let p = dir.join(format!("{name}-{i}.png"));
            if std::fs::write(&p, png).is_ok() {
                saved.push(p);
            }
        }
        if let Ok(html) = c.source().await {
            let p = dir.join(format!("{name}-{i}.html"));
            if std::fs::write(&p, format!("<!-- {url} -->\n{html}")).is_ok() {
                saved.push(p);
            }
        }
    }
    saved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_applies_signs_pays_and_verifies_the_result() {
    if !Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "SKIPPED browser test: {CHROMEDRIVER} is absent (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let n = Arc::new(FullNation::start().await);
    let driver = start_driver();
    let downloads = n.dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let citizen = browser(&driver, &downloads).await;
    let officer = browser(&driver, &downloads).await;
    let s = Step::default();
    let mut walking = tokio::spawn(walk(
        n.clone(),
        citizen.clone(),
        officer.clone(),
        s.clone(),
        downloads,
    ));
    let failure = match tokio::time::timeout(Duration::from_secs(300), &mut walking).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.try_into_panic().ok()),
        Err(_) => {
            walking.abort();
            Some(None)
        }
    };
    if let Some(panic) = failure {
        let step = s.lock().unwrap().clone();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "portal-browser-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut saved = capture(&dir, "citizen", &citizen).await;
        saved.extend(capture(&dir, "officer", &officer).await);
        eprintln!("browser walk FAILED at: {step}");
        for p in &saved {
            eprintln!("  saved {}", p.display());
        }
        let _ = citizen.close().await;
        let _ = officer.close().await;
        match panic {
            Some(p) => std::panic::resume_unwind(p),
            None => panic!("browser walk timed out at: {step}"),
        }
    }
    citizen.close().await.unwrap();
    officer.close().await.unwrap();
}
