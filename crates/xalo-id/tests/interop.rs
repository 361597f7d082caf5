//! A standard OpenID Connect client library (the `openidconnect` crate) completes the
//! code flow with PKCE against the provider: discovery, JWKS, token, ID-token checks.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

use crate::nation::*;

#[tokio::test]
async fn openidconnect_library_completes_the_code_flow() {
    let n = Nation::start().await;
    let http = openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(n.id.url()).unwrap(), &http)
        .await
        .unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("portal".into()),
        Some(ClientSecret::new(SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("mid".into()))
        .add_scope(Scope::new("phone".into()))
        .set_pkce_challenge(challenge)
        .url();
    let mut b = Browser::new();
    let back = mobile_id_login(&n, &mut b, url.as_str(), CITIZEN_PHONE, CITIZEN, PIN1).await;
    assert_eq!(
        query_param(&back, "state").as_deref(),
        Some(csrf.secret().as_str())
    );
    let code = query_param(&back, "code").unwrap();
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let id_token = response.id_token().expect("an ID token");
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = id_token.claims(&verifier, &nonce).unwrap();
    assert_eq!(claims.subject().as_str(), CITIZEN);
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some("high"));
    let amr: Vec<&str> = claims
        .auth_method_refs()
        .unwrap()
        .iter()
        .map(|a| a.as_str())
        .collect();
    assert_eq!(amr, ["mID"]);
    assert_eq!(
        claims
            .given_name()
            .and_then(|g| g.get(None))
            .map(|g| g.as_str()),
        Some("AN")
    );
    // at_hash binds the access token.
    let alg = id_token.signing_alg().unwrap();
    let expected = openidconnect::AccessTokenHash::from_token(
        response.access_token(),
        alg,
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected));

    // Key rotation: the old key stays published, so the token still verifies; new tokens
    // are signed with the new key.
    xalo_id::signing_key::rotate(&n.id_db.db).await.unwrap();
    let jwks: serde_json::Value = reqwest::get(format!("{}/oidc/jwks", n.id.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    // RP-initiated logout returns to the registered address with the state.
    let r = b
        .get(&format!(
            "{}/oidc/logout?id_token_hint={}&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fbye&state=x",
            n.id.url(),
            id_token
        ))
        .await;
    assert_eq!(location(&r), "http://127.0.0.1:9/bye?state=x");
    let r = b
        .get(&format!(
            "{}/oidc/logout?post_logout_redirect_uri=http%3A%2F%2Fevil.example%2F",
            n.id.url()
        ))
        .await;
    assert_eq!(
        r.status(),
        200,
        "unregistered addresses get a page, not a redirect"
    );
}
