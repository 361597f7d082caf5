//! The relying party refuses ID tokens that are not exactly right: each claim and the
//! signature are checked against a provider that publishes its key by discovery and JWKS.

use axum::Json;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use xalo_core::ErrorCode;
use xalo_portal::signin::{ClientSettings, RelyingParty};

struct Provider {
    issuer: String,
    key: EcdsaKeyPair,
    other: EcdsaKeyPair,
}

fn key() -> EcdsaKeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sign(key: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let rng = ring::rand::SystemRandom::new();
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

async fn provider() -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let key = key();
    let point = key.public_key().as_ref().to_vec();
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    }]});
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
    });
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let d = discovery.clone();
                async move { Json(d) }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let j = jwks.clone();
                async move { Json(j) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Provider {
        issuer,
        key,
        other: self::key(),
    }
}

#[tokio::test]
async fn id_tokens_are_checked_claim_by_claim() {
    let p = provider().await;
    let rp = RelyingParty::new(
        ClientSettings {
            issuer: p.issuer.clone(),
            client_id: "portal".into(),
            client_secret: "s".into(),
            redirect_uri: "http://127.0.0.1:9/auth/callback".into(),
            post_logout_redirect_uri: None,
        },
        reqwest::Client::new(),
    );
    let now = xalo_portal::dossier::unix_now();
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
    let good = json!({
        "iss": p.issuer, "aud": "portal", "sub": "VN001203012345", "iat": now, "exp": now + 600,
        "nonce": "n0nce", "given_name": "AN", "family_name": "NGUYỄN", "amr": ["mID"], "acr": "high",
    });
    let claims = rp
        .verify(&sign(&p.key, &header, &good), "n0nce", "")
        .await
        .unwrap();
    assert_eq!(claims["sub"], "VN001203012345");

    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let cases = [
        (
            "issuer",
            sign(&p.key, &header, &with("iss", json!("http://evil.example"))),
        ),
        (
            "audience",
            sign(&p.key, &header, &with("aud", json!("other-client"))),
        ),
        (
            "expiry",
            sign(&p.key, &header, &with("exp", json!(now - 3600))),
        ),
        (
            "future",
            sign(&p.key, &header, &with("iat", json!(now + 3600))),
        ),
        (
            "nonce",
            sign(&p.key, &header, &with("nonce", json!("replayed"))),
        ),
        ("key", sign(&p.other, &header, &good)),
        (
            "algorithm",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none"}"#),
                b64(good.to_string().as_bytes())
            ),
        ),
    ];
    for (what, token) in cases {
        let e = rp.verify(&token, "n0nce", "").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::PortalSignIn, "{what}: {e}");
    }
    // A token bound to another access token (at_hash) is refused.
    let bound = sign(&p.key, &header, &with("at_hash", json!(b64(&[0u8; 16]))));
    assert!(
        rp.verify(&bound, "n0nce", "the-access-token")
            .await
            .is_err()
    );
    // Tampering with the payload breaks the signature.
    let token = sign(&p.key, &header, &good);
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(with("sub", json!("VN079185000123")).to_string().as_bytes());
    parts[1] = &forged;
    assert!(rp.verify(&parts.join("."), "n0nce", "").await.is_err());
}
