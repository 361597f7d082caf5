//! A small nation for the tests: trust, mobile-id and id roles on port 0.

use serde_json::json;
use xalo_core::Config;
use xalo_core::config::RoleConfig;
use xalo_core::server::ServerHandle;
use xalo_store::testing::TestDatabase;

pub const CITIZEN: &str = "VN001203012345";
pub const CITIZEN_PHONE: &str = "+84901234567";
pub const E_RESIDENT: &str = "EE38001085718";
pub const E_RESIDENT_PHONE: &str = "+3725550001";
pub const PIN1: &str = "1234";
pub const PIN2: &str = "12345";
pub const SECRET: &str = "portal-secret-0123456789";
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// The portal's token at the operator's SMS centre.
pub const SMS_TOKEN: &str = "sms-sender-token-0123456789abcdef";

pub struct Nation {
    pub trust: ServerHandle,
    pub mid: ServerHandle,
    pub id: ServerHandle,
    pub trust_db: TestDatabase,
    pub id_db: TestDatabase,
    _mid_db: TestDatabase,
    _dir: tempfile::TempDir,
    pub id_card_port: u16,
}

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

/// The Mobile-ID operator's registration-authority token at the trust role.
const RA_TOKEN: &str = "operator-ra-token";

impl Nation {
    pub async fn start() -> Nation {
        Self::start_with(json!({})).await
    }

    pub async fn start_with(id_extra: serde_json::Value) -> Nation {
        let dir = tempfile::tempdir().unwrap();
        let trust_db = TestDatabase::new().await.unwrap();
        let mid_db = TestDatabase::new().await.unwrap();
        let id_db = TestDatabase::new().await.unwrap();
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config
            .roles
            .insert("trust".into(), role(&trust_db, json!({
                "registration_authorities": [
                    { "name": "mobile-operator", "token_sha256": xalo_trust::registration::token_hash(RA_TOKEN) }
                ]
            })));
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
                        { "phone": CITIZEN_PHONE, "personal_code": CITIZEN, "given_name": "AN", "family_name": "NGUYEN", "pin1": PIN1, "pin2": PIN2 },
                        { "phone": E_RESIDENT_PHONE, "personal_code": E_RESIDENT, "given_name": "MARI", "family_name": "TAMM", "pin1": PIN1, "pin2": PIN2 },
                    ],
                    "sms_senders": [
                        { "name": "DichVuCong", "token_sha256": xalo_trust::registration::token_hash(SMS_TOKEN) },
                    ],
                }),
            ),
        );
        let mid = xalo_id::operator::serve(config.clone(), listener().await)
            .await
            .unwrap();
        // The ID-card port is chosen here so the test knows it.
        let card = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let id_card_port = card.local_addr().unwrap().port();
        drop(card);
        let mut settings = json!({
            "trust_url": trust.url(),
            "mobile_id_url": mid.url(),
            "id_card_listen": format!("127.0.0.1:{id_card_port}"),
            "poll_ms": 1000,
            "clients": [
                { "client_id": "portal", "name": "Cổng dịch vụ công", "auth_method": "client_secret_basic",
                  "redirect_uris": [REDIRECT], "post_logout_redirect_uris": ["http://127.0.0.1:9/bye"], "secret": SECRET },
                { "client_id": "app", "name": "Ứng dụng", "auth_method": "none", "redirect_uris": [REDIRECT] },
            ],
        });
        for (k, v) in id_extra.as_object().unwrap() {
            settings[k] = v.clone();
        }
        config.roles.insert("id".into(), role(&id_db, settings));
        let id = xalo_id::serve(config, listener().await).await.unwrap();
        Nation {
            trust,
            mid,
            id,
            trust_db,
            id_db,
            _mid_db: mid_db,
            _dir: dir,
            id_card_port,
        }
    }
}

/// An HTTP client that does not follow redirects and keeps one cookie per origin by hand.
pub struct Browser {
    pub http: reqwest::Client,
    pub cookies: std::collections::HashMap<String, String>,
}

pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[i..i + html[i..].find('"').unwrap()].to_owned()
}

pub fn verification_code(html: &str) -> String {
    let i = html
        .find("class=\"code\"")
        .unwrap_or_else(|| panic!("no code in {html}"));
    let rest = &html[i..];
    let start = rest.find('>').unwrap() + 1;
    rest[start..start + 4].to_owned()
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Default::default(),
        }
    }

    fn origin(url: &str) -> String {
        url.split('/').take(3).collect::<Vec<_>>().join("/")
    }

    fn remember(&mut self, url: &str, r: &reqwest::Response) {
        if let Some(c) = r.headers().get("set-cookie") {
            let c = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookies.insert(Self::origin(url), c);
        }
    }

    pub fn cookie(&self, url: &str) -> Option<String> {
        self.cookies.get(&Self::origin(url)).cloned()
    }

    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        let mut req = self.http.get(url);
        if let Some(c) = self.cookie(url) {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        self.remember(url, &r);
        r
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(url).form(form);
        if let Some(c) = self.cookie(url) {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        self.remember(url, &r);
        r
    }
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no redirect: {}", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Sign in with Mobile-ID from an authorization URL; returns the final redirect.
pub async fn mobile_id_login(
    n: &Nation,
    b: &mut Browser,
    authorize_url: &str,
    phone: &str,
    code: &str,
    pin: &str,
) -> String {
    let r = b.get(authorize_url).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/login");
    let html = b
        .get(&format!("{}/login", n.id.url()))
        .await
        .text()
        .await
        .unwrap();
    let csrf = hidden(&html, "csrf_token");
    let r = b
        .post(
            &format!("{}/login/mid", n.id.url()),
            &[
                ("csrf_token", &csrf),
                ("phone", phone),
                ("personal_code", code),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let wait = r.text().await.unwrap();
    let shown = verification_code(&wait);
    // The phone shows the same code and takes the PIN.
    let phone_url = format!("{}/phone/{phone}", n.mid.url());
    let html = b.get(&phone_url).await.text().await.unwrap();
    assert_eq!(
        verification_code(&html),
        shown,
        "the phone shows the provider's code"
    );
    let r = b
        .post(
            &phone_url,
            &[
                ("csrf_token", &hidden(&html, "csrf_token")),
                ("session_id", &hidden(&html, "session_id")),
                ("decision", "confirm"),
                ("pin", pin),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let r = b.get(&format!("{}/login/mid/poll", n.id.url())).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    location(&r)
}

pub fn authorize_url(n: &Nation, client: &str, extra: &str) -> String {
    format!(
        "{}/oidc/authorize?response_type=code&client_id={client}&redirect_uri={}&scope=openid%20phone%20eres&state=st4te&nonce=n0nce{extra}",
        n.id.url(),
        percent_encoding::utf8_percent_encode(REDIRECT, percent_encoding::NON_ALPHANUMERIC)
    )
}
