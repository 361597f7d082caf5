//! The `status` role: the nation's front page. It lists every system of this deployment
//! with its URL and asks each one's `/healthz` on every visit.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode};

use crate::roles;

#[derive(Clone)]
struct Directory {
    systems: Vec<(&'static str, &'static str, String)>,
    client: reqwest::Client,
}

#[derive(Serialize)]
struct SystemStatus {
    role: &'static str,
    about: &'static str,
    url: String,
    healthy: bool,
    detail: String,
}

/// Serve the front page on `listener`.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let directory = directory(&config)?;
    let router = Router::new()
        .route("/", get(page))
        .route("/api/status", get(status_json))
        .with_state(directory);
    Server::new("status", router, &config.http).spawn(listener)
}

/// A plain function, not part of `serve`'s future, so that the role table may name `serve`.
fn directory(config: &Config) -> Result<Directory, Error> {
    let systems = roles::ALL
        .iter()
        .filter(|r| r.name != "status" && r.in_demo)
        .map(|r| {
            let addr = roles::listen_addr(r, config);
            (
                r.name,
                r.about,
                format!("http://{}:{}", config.public_host, addr.port()),
            )
        })
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| Error::new(ErrorCode::Internal, format!("HTTP client: {e}")))?;
    Ok(Directory { systems, client })
}

async fn check(d: &Directory) -> Vec<SystemStatus> {
    let probes = d.systems.iter().map(|(role, about, url)| {
        let client = d.client.clone();
        async move {
            let (healthy, detail) = match client.get(format!("{url}/healthz")).send().await {
                Ok(r) if r.status().is_success() => (true, "ok".to_owned()),
                Ok(r) => (false, format!("answered {}", r.status())),
                Err(e) => (false, e.to_string()),
            };
            SystemStatus {
                role,
                about,
                url: url.clone(),
                healthy,
                detail,
            }
        }
    });
    let mut out = Vec::new();
    for probe in probes {
        out.push(probe.await);
    }
    out
}

async fn status_json(State(d): State<Directory>) -> axum::Json<Vec<SystemStatus>> {
    axum::Json(check(&d).await)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(d): State<Directory>) -> Html<String> {
    let mut rows = String::new();
    for s in check(&d).await {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><a href=\"{url}\">{url}</a></td><td>{}</td></tr>",
            escape(s.role),
            escape(s.about),
            if s.healthy {
                "✅ hoạt động / up".to_owned()
            } else {
                format!("❌ {}", escape(&s.detail))
            },
            url = escape(&s.url),
        ));
    }
    if rows.is_empty() {
        rows.push_str(
            "<tr><td colspan=\"4\">Chưa có hệ thống nào khác / no other system runs yet</td></tr>",
        );
    }
    Html(format!(
        "<!doctype html><html lang=\"vi\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Xalo — trạng thái quốc gia / nation status</title></head><body>\
         <main><h1>Xalo {}</h1><p>Các hệ thống của quốc gia này / the systems of this nation</p>\
         <table><thead><tr><th scope=\"col\">Vai trò / role</th><th scope=\"col\">Mô tả / about</th>\
         <th scope=\"col\">URL</th><th scope=\"col\">Trạng thái / status</th></tr></thead>\
         <tbody>{rows}</tbody></table></main></body></html>",
        xalo_core::VERSION
    ))
}
