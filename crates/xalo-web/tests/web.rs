#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

//! The page kit in a real server: sessions in the database, CSRF on POST, language switch.

use axum::extract::Form as AxForm;
use axum::http::Uri;
use axum::response::Html;
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use xalo_store::testing::TestDatabase;
use xalo_web::{Field, FieldKind, Form, Page, Session, SessionSettings, Sessions};

#[derive(Deserialize)]
struct Name {
    name: String,
}

async fn show(Extension(s): Extension<Session>, uri: Uri) -> Html<String> {
    let form = Form::new("/", &s.csrf, "Send").field(Field::new("name", "Name", FieldKind::Text));
    let page = Page {
        lang: s.lang,
        title: "Test",
        uri: &uri,
        body: form.render(s.lang).unwrap(),
    };
    Html(page.render().unwrap())
}

async fn post(
    axum::extract::State(sessions): axum::extract::State<Sessions>,
    Extension(mut s): Extension<Session>,
    AxForm(n): AxForm<Name>,
) -> String {
    let count: i64 = s.get("count").unwrap_or(0) + 1;
    s.set("count", count);
    sessions.save(&s).await.unwrap();
    format!("{} {count}", n.name)
}

fn token_of(html: &str) -> String {
    let i = html.find("name=\"csrf_token\" value=\"").unwrap() + 25;
    html[i..i + html[i..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn sessions_csrf_and_language() {
    let db = TestDatabase::new().await.unwrap();
    let sessions = Sessions::open(db.db.clone(), SessionSettings::default(), &["/api"])
        .await
        .unwrap();
    let app = Router::new()
        .route("/", get(show).post(post))
        .route("/api", axum::routing::post(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            sessions.clone(),
            xalo_web::session::middleware,
        ))
        .with_state(sessions.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    // A first visit sets the cookie; Vietnamese is the default.
    let r = http.get(&base).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let html = r.text().await.unwrap();
    assert!(html.contains("<html lang=\"vi\">"));
    let token = token_of(&html);

    // The language switch sticks to the session.
    let html = http
        .get(format!("{base}/?lang=en"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("Skip to main content"));
    let html = http
        .get(&base)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<html lang=\"en\">"));

    // POST without or with a wrong token is refused; with the token it passes.
    for body in ["name=a".to_owned(), "name=a&csrf_token=nope".to_owned()] {
        let r = http
            .post(&base)
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let j: serde_json::Value = r.json().await.unwrap();
        assert_eq!(j["code"], "XALO-WEB-002");
    }
    // Without the cookie even the right token is refused.
    let r = http
        .post(&base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name=a&csrf_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for n in 1..=2 {
        let r = http
            .post(&base)
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("name=An&csrf_token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), format!("An {n}"));
    }
    // Exempt paths need no token.
    let r = http.post(format!("{base}/api")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sessions.purge_expired().await.unwrap(), 0);
}
