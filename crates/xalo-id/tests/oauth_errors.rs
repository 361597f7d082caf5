//! The token endpoint's refusals speak RFC 6749 §5.2; the login's claims and evidence.

use base64::Engine;
use serde_json::Value;

use crate::nation::*;

const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9qbTFSeRNIg6T6BaDJ4PqmvmM";
const CHALLENGE: &str = "FUKVvr22WkWQmtB3Vi-qGNcJSDA4Ya8zNj4RhDjJzGs";

async fn token(n: &Nation, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/oidc/token", n.id.url()))
        .form(form);
    if let Some((id, secret)) = basic {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        req = req.header("authorization", format!("Basic {b}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn code_for(n: &Nation, client: &str, extra: &str) -> String {
    let mut b = Browser::new();
    let back = mobile_id_login(
        n,
        &mut b,
        &authorize_url(n, client, extra),
        CITIZEN_PHONE,
        CITIZEN,
        PIN1,
    )
    .await;
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("st4te"));
    query_param(&back, "code").unwrap()
}

#[tokio::test]
async fn token_endpoint_refusals() {
    let n = Nation::start().await;
    let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");

    // Bad client secret: invalid_client, 401; the code is not spent.
    let code = code_for(&n, "portal", &pkce).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token(&n, Some(("portal", "wrong")), &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    assert_eq!(body["xalo_code"], "XALO-AUTH-003");

    // Wrong redirect URI: invalid_grant (and the code is spent).
    let wrong_uri = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1:9/other"),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token(&n, Some(("portal", SECRET)), &wrong_uri).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    // Wrong PKCE verifier.
    let code = code_for(&n, "portal", &pkce).await;
    let bad_verifier = "x".repeat(43);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", bad_verifier.as_str()),
    ];
    let (status, body) = token(&n, Some(("portal", SECRET)), &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    // Good exchange, then the reused code is refused and its tokens revoked.
    let code = code_for(&n, "portal", &pkce).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token(&n, Some(("portal", SECRET)), &form).await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let info: Value = reqwest::Client::new()
        .get(format!("{}/oidc/profile", n.id.url()))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], CITIZEN);
    assert_eq!(info["amr"], serde_json::json!(["mID"]));
    assert_eq!(info["acr"], "high");
    assert_eq!(info["phone_number"], CITIZEN_PHONE);
    assert_eq!(info["e_resident"], false);
    let (status, body) = token(&n, Some(("portal", SECRET)), &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let r = reqwest::Client::new()
        .get(format!("{}/oidc/userinfo", n.id.url()))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "tokens of a reused code are revoked");

    // Expired code.
    let code = code_for(&n, "portal", &pkce).await;
    xalo_store::sqlx::query("UPDATE id_code SET expires_unix = 0")
        .execute(n.id_db.db.pool())
        .await
        .unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token(&n, Some(("portal", SECRET)), &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    // Unsupported grant type.
    let (status, body) = token(&n, Some(("portal", SECRET)), &[("grant_type", "password")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type")),
        "{body}"
    );

    // Every login is recorded.
    let row: (i64,) = xalo_store::sqlx::query_as("SELECT COUNT(*) FROM id_login")
        .fetch_one(n.id_db.db.pool())
        .await
        .unwrap();
    assert_eq!(row.0, 4);
}

#[tokio::test]
async fn authorization_request_refusals() {
    let n = Nation::start().await;
    let mut b = Browser::new();
    // Unknown redirect URI: shown, never redirected.
    let url = format!(
        "{}/oidc/authorize?response_type=code&client_id=portal&redirect_uri=http%3A%2F%2Fevil.example%2F&scope=openid&state=s",
        n.id.url()
    );
    let r = b.get(&url).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    // A public client without PKCE.
    let r = b.get(&authorize_url(&n, "app", "")).await;
    let to = location(&r);
    assert!(to.starts_with(REDIRECT), "{to}");
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&to, "state").as_deref(), Some("st4te"));
    // plain PKCE refused.
    let r = b
        .get(&authorize_url(
            &n,
            "app",
            &format!("&code_challenge={CHALLENGE}&code_challenge_method=plain"),
        ))
        .await;
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("invalid_request")
    );
    // Unknown scope.
    let r = b
        .get(&authorize_url(&n, "portal", "").replace("scope=openid", "scope=openid%20email"))
        .await;
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("invalid_scope")
    );
    // The English page, by ui_locales.
    let r = b.get(&authorize_url(&n, "portal", "&ui_locales=en")).await;
    assert_eq!(r.status(), 303);
    let html = b
        .get(&format!("{}/login", n.id.url()))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("<html lang=\"en\">"), "{html}");
    assert!(html.contains("<label for=\"phone\">"));
    // A POST without the CSRF token is refused.
    let r = b
        .post(
            &format!("{}/login/mid", n.id.url()),
            &[("phone", CITIZEN_PHONE), ("personal_code", CITIZEN)],
        )
        .await;
    assert_eq!(r.status(), 403);
    // Bad input gets an error summary, in the chosen language.
    let csrf = hidden(&html, "csrf_token");
    let r = b
        .post(
            &format!("{}/login/mid", n.id.url()),
            &[
                ("csrf_token", &csrf),
                ("phone", "12"),
                ("personal_code", "VN1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("There is a problem") && html.contains("href=\"#phone\""),
        "{html}"
    );
}

#[tokio::test]
async fn public_client_e_resident_and_pin_lockout() {
    let n = Nation::start().await;
    let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");
    let mut b = Browser::new();
    let back = mobile_id_login(
        &n,
        &mut b,
        &authorize_url(&n, "app", &pkce),
        E_RESIDENT_PHONE,
        E_RESIDENT,
        PIN1,
    )
    .await;
    let code = query_param(&back, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", "app"),
    ];
    let (status, body) = token(&n, None, &form).await;
    assert_eq!(status, 200, "{body}");
    let id_token = body["id_token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], E_RESIDENT);
    assert_eq!(claims["amr"], serde_json::json!(["mID", "eres"]));
    assert_eq!(claims["e_resident"], true);
    assert_eq!(claims["birthdate"], "1980-01-08");
    assert_eq!(claims["given_name"], "MARI");
    assert_eq!(claims["nonce"], "n0nce");

    // Three wrong PIN1 entries lock the PIN.
    let mut b = Browser::new();
    let r = b.get(&authorize_url(&n, "portal", "")).await;
    assert_eq!(r.status(), 303);
    let html = b
        .get(&format!("{}/login", n.id.url()))
        .await
        .text()
        .await
        .unwrap();
    let csrf = hidden(&html, "csrf_token");
    b.post(
        &format!("{}/login/mid", n.id.url()),
        &[
            ("csrf_token", &csrf),
            ("phone", CITIZEN_PHONE),
            ("personal_code", CITIZEN),
        ],
    )
    .await;
    let phone_url = format!("{}/phone/{CITIZEN_PHONE}", n.mid.url());
    for attempt in 1..=3 {
        let html = b.get(&phone_url).await.text().await.unwrap();
        let r = b
            .post(
                &phone_url,
                &[
                    ("csrf_token", &hidden(&html, "csrf_token")),
                    ("session_id", &hidden(&html, "session_id")),
                    ("decision", "confirm"),
                    ("pin", "0000"),
                ],
            )
            .await;
        assert_eq!(r.status(), if attempt < 3 { 422 } else { 303 });
    }
    let r = b.get(&format!("{}/login/mid/poll", n.id.url())).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("PIN"));
}

/// Clients are read again after `client_cache_ms`: a re-registration (new secret, other
/// redirect URIs) by the CLI or another instance is in force after at most that bound.
#[tokio::test]
async fn client_changes_are_in_force_after_the_cache_bound() {
    let bound = std::time::Duration::from_millis(1000);
    let n = Nation::start_with(serde_json::json!({ "client_cache_ms": bound.as_millis() as u64 }))
        .await;
    let bogus = [
        ("grant_type", "authorization_code"),
        ("code", "no-such-code"),
        ("redirect_uri", REDIRECT),
    ];
    // The registered secret authenticates (the code itself is unknown): the row is read.
    let read = std::time::Instant::now();
    let (status, body) = token(&n, Some(("portal", SECRET)), &bogus).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let mut b = Browser::new();
    assert_eq!(b.get(&authorize_url(&n, "portal", "")).await.status(), 303);

    // The operator replaces the client: a new secret and another redirect URI.
    let new_secret = "portal-secret-rotated-0123456789";
    xalo_id::client::register(
        &n.id_db.db,
        &xalo_id::client::Registration {
            client_id: "portal".into(),
            name: "Cổng dịch vụ công".into(),
            auth_method: xalo_id::client::AuthMethod::ClientSecretBasic,
            redirect_uris: vec!["http://127.0.0.1:9/elsewhere".into()],
            post_logout_redirect_uris: vec![],
            jwks: None,
            secret: Some(new_secret.into()),
        },
    )
    .await
    .unwrap();
    // Within the bound the remembered row may still be used; this is what it trades.
    let (status, _) = token(&n, Some(("portal", SECRET)), &bogus).await;
    if read.elapsed() < bound / 2 {
        assert_eq!(status, 400, "the cached client is used within the bound");
    }

    // After the bound: the old secret and the old redirect URI are refused.
    tokio::time::sleep(bound + std::time::Duration::from_millis(100)).await;
    let (status, body) = token(&n, Some(("portal", SECRET)), &bogus).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    let (status, body) = token(&n, Some(("portal", new_secret)), &bogus).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let r = b.get(&authorize_url(&n, "portal", "")).await;
    assert_eq!(
        r.status(),
        400,
        "the old redirect URI is no longer registered"
    );
}

/// A client registered for `private_key_jwt` (RFC 7523) authenticates at the token
/// endpoint with an ES256 assertion signed by a key of its JWKS; an assertion signed by
/// another key, for another audience, expired, without `jti`, or used a second time is
/// refused with `invalid_client`, as is a secret from a client registered for assertions.
#[tokio::test]
async fn private_key_jwt_clients_authenticate_with_signed_assertions() {
    use xalo_id::jws;
    const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let n = Nation::start().await;
    let key = jws::generate_key().unwrap();
    xalo_id::client::register(
        &n.id_db.db,
        &xalo_id::client::Registration {
            client_id: "tax-office".into(),
            name: "Tổng cục Thuế".into(),
            auth_method: xalo_id::client::AuthMethod::PrivateKeyJwt,
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec![],
            jwks: Some(
                serde_json::json!({ "keys": [jws::jwk("k1", key.verifying_key())] }).to_string(),
            ),
            secret: None,
        },
    )
    .await
    .unwrap();
    let token_url = format!("{}/oidc/token", n.id.url());
    let now = xalo_core::unix_now();
    let assertion = |key: &p256::ecdsa::SigningKey, aud: &str, exp: i64, jti: Option<&str>| {
        let mut claims = serde_json::json!({
            "iss": "tax-office", "sub": "tax-office", "aud": aud, "exp": exp, "iat": now,
        });
        if let Some(jti) = jti {
            claims["jti"] = jti.into();
        }
        jws::sign("k1", key, &claims).unwrap()
    };
    let with = |code: &str, assertion: &str| -> Vec<(String, String)> {
        [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let post = |form: Vec<(String, String)>| {
        let url = token_url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };

    let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");
    let code = code_for(&n, "tax-office", &pkce).await;
    let good = assertion(&key, &token_url, now + 60, Some("jti-1"));
    let (status, body) = post(with(&code, &good)).await;
    assert_eq!(status, 200, "{body}");
    let id_token = body["id_token"].as_str().unwrap();
    let (_, claims) = jws::peek(id_token).unwrap();
    assert_eq!(claims["aud"], "tax-office", "{claims}");

    // Each refused before the code is looked at (a made-up code would be invalid_grant).
    let refused = |what: &str, (status, body): (u16, Value)| {
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{what}: {body}"
        );
    };
    let other = jws::generate_key().unwrap();
    refused(
        "the same assertion again",
        post(with("no-such-code", &good)).await,
    );
    refused(
        "signed by a key not in the client's JWKS",
        post(with(
            "no-such-code",
            &assertion(&other, &token_url, now + 60, Some("jti-2")),
        ))
        .await,
    );
    refused(
        "for another audience",
        post(with(
            "no-such-code",
            &assertion(
                &key,
                "https://elsewhere.example/token",
                now + 60,
                Some("jti-3"),
            ),
        ))
        .await,
    );
    refused(
        "expired",
        post(with(
            "no-such-code",
            &assertion(&key, &token_url, now - 5, Some("jti-4")),
        ))
        .await,
    );
    refused(
        "without jti",
        post(with(
            "no-such-code",
            &assertion(&key, &token_url, now + 60, None),
        ))
        .await,
    );
    refused(
        "a secret instead of an assertion",
        token(
            &n,
            Some(("tax-office", "guess")),
            &[
                ("grant_type", "authorization_code"),
                ("code", "no-such-code"),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await,
    );
    // A fresh assertion still authenticates: the client gets as far as the code.
    let (status, body) = post(with(
        "no-such-code",
        &assertion(&key, &token_url, now + 60, Some("jti-5")),
    ))
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}
