//! Codes redeemed against the store itself: the token endpoint's one-script redemption
//! (SQLite) and its statement-by-statement form (PostgreSQL) issue a token exactly when
//! the checks pass, and a code stored before its claims were kept with it still redeems.

use xalo_id::grant::{self, Grant, Redemption};
use xalo_id::identity::{Identity, Method};
use xalo_store::testing::TestDatabase;

const CHALLENGE_OF_VERIFIER: (&str, &str) = (
    "FUKVvr22WkWQmtB3Vi-qGNcJSDA4Ya8zNj4RhDjJzGs",
    "dBjftJeZ4CVP-mJ92K9qbTFSeRNIg6T6BaDJ4PqmvmM",
);

fn grant() -> Grant {
    Grant {
        identity: Identity {
            code: "VN079199000456".parse().unwrap(),
            given_name: "AN".into(),
            family_name: "NGUYEN".into(),
            birthdate: None,
            method: Method::IdCard,
            phone_number: None,
        },
        scope: vec!["openid".into(), "idcard".into()],
        nonce: None,
        state: None,
        auth_time: 0,
    }
}

async fn store() -> TestDatabase {
    let t = TestDatabase::new().await.unwrap();
    xalo_id::store::migrate(&t.db).await.unwrap();
    t
}

async fn new_code(t: &TestDatabase) -> String {
    let g = grant();
    grant::issue_code(
        &t.db,
        &grant::NewCode {
            client_id: "rp",
            redirect_uri: "https://rp.example/cb",
            code_challenge: Some(CHALLENGE_OF_VERIFIER.0),
            grant: &g,
            ttl_secs: 60,
        },
    )
    .await
    .unwrap()
}

fn redemption<'a>(code: &'a str, verifier: Option<&'a str>) -> Redemption<'a> {
    Redemption {
        code,
        client_id: "rp",
        redirect_uri: Some("https://rp.example/cb"),
        verifier,
        now: xalo_id::store::unix_now(),
    }
}

async fn tokens_of(t: &TestDatabase) -> i64 {
    use xalo_store::Row;
    t.db.fetch_one(xalo_store::sqlx::query(
        "SELECT COUNT(*) FROM id_access_token",
    ))
    .await
    .unwrap()
    .try_get(0)
    .unwrap()
}

#[tokio::test]
async fn a_code_is_exchanged_once_and_only_when_every_check_passes() {
    let t = store().await;
    // A wrong verifier spends the code and issues nothing.
    let code = new_code(&t).await;
    let wrong = "x".repeat(43);
    let e = grant::redeem_and_issue(&t.db, &redemption(&code, Some(&wrong)), 600)
        .await
        .err()
        .unwrap();
    assert!(e.message.contains("code_verifier"), "{e}");
    assert_eq!(tokens_of(&t).await, 0);
    // Another client, a missing verifier, another redirect URI: refused, no token.
    for (client, verifier, uri, expected) in [
        (
            "other",
            Some(CHALLENGE_OF_VERIFIER.1),
            "https://rp.example/cb",
            "another client",
        ),
        (
            "rp",
            None,
            "https://rp.example/cb",
            "code_verifier is required",
        ),
        (
            "rp",
            Some(CHALLENGE_OF_VERIFIER.1),
            "https://rp.example/",
            "redirect_uri",
        ),
    ] {
        let code = new_code(&t).await;
        let r = Redemption {
            client_id: client,
            redirect_uri: Some(uri),
            ..redemption(&code, verifier)
        };
        let e = grant::redeem_and_issue(&t.db, &r, 600).await.err().unwrap();
        assert!(e.message.contains(expected), "{e}");
    }
    assert_eq!(tokens_of(&t).await, 0);
    // The right verifier: one token, carrying the claims; the second try revokes it.
    let code = new_code(&t).await;
    let good = redemption(&code, Some(CHALLENGE_OF_VERIFIER.1));
    let redeemed = grant::redeem_and_issue(&t.db, &good, 600).await.unwrap();
    let claims = grant::userinfo(&t.db, &redeemed.access_token)
        .await
        .unwrap();
    assert_eq!(claims["sub"], "VN079199000456", "{claims}");
    let e = grant::redeem_and_issue(&t.db, &good, 600)
        .await
        .err()
        .unwrap();
    assert!(e.message.contains("already used"), "{e}");
    assert!(
        grant::userinfo(&t.db, &redeemed.access_token)
            .await
            .is_err()
    );
    // Unknown codes are refused as such.
    let e = grant::redeem_and_issue(&t.db, &redemption("nope", None), 600)
        .await
        .err()
        .unwrap();
    assert!(e.message.contains("unknown"), "{e}");
}

#[tokio::test]
async fn a_code_stored_before_its_claims_were_kept_still_redeems() {
    let t = store().await;
    let code = new_code(&t).await;
    t.db.execute(xalo_store::sqlx::query(
        "UPDATE id_code SET claims_json = NULL",
    ))
    .await
    .unwrap();
    let redeemed = grant::redeem_and_issue(
        &t.db,
        &redemption(&code, Some(CHALLENGE_OF_VERIFIER.1)),
        600,
    )
    .await
    .unwrap();
    let claims = grant::userinfo(&t.db, &redeemed.access_token)
        .await
        .unwrap();
    assert_eq!(claims["family_name"], "NGUYEN", "{claims}");
    assert_eq!(tokens_of(&t).await, 1);
}
