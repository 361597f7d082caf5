//! `xalo bench portal`: dossier submissions/s with many concurrent simulated citizens at
//! the HTTP level, and every page's latency.
//!
//! A whole small nation runs in this process on port 0, assembled as `xalo demo` does:
//! trust services, the ledger, the population and business registers with a generated
//! population, the data exchange (central server and every member's gateway, the
//! registers' APIs behind their owners' gateways), the Mobile-ID operator, national
//! sign-in, and the portal calling the registers through its own gateway. SQLite files in
//! a scratch directory, unless the configuration gives a role its own database.
//!
//! Each simulated citizen signs in once, through the real flow (portal → OpenID Connect
//! authorize → Mobile-ID with the PIN confirmed on the phone screen → code → portal
//! callback), and keeps that session. Then, for the measured period, each loops:
//!
//! 1. `GET /dossiers/new?procedure=…`: the procedure's apply page;
//! 2. `POST /dossiers/new`: a fresh draft, prefilled from the population register through
//!    the exchange (the applicant and the spouse: two exchange calls);
//! 3. `GET /dossiers/{code}/form`: the prefilled form with its CSRF token;
//! 4. `POST /dossiers/{code}/form` with `intent=submit`: the form as shown plus the
//!    child's details, checked against the schema and submitted;
//! 5. `GET /dossiers/{code}`: the dossier page with its timeline.
//!
//! The share of time in prefill is read from the servers' own metrics: the time the
//! portal's gateway spent answering the portal, over the time the portal spent answering
//! the citizens.
//!
//! This module assembles roles of other crates only to measure them together; the portal
//! itself reaches them over HTTP like any deployment.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpListener;
use xalo_core::server::ServerHandle;
use xalo_core::{Config, Error, ErrorCode, SubsystemId};

/// Birth registration: prefilled from the applicant's and the spouse's register records.
pub const DEFAULT_PROCEDURE: &str = "1.001193";
const CLIENT_SECRET: &str = "bench-portal-secret";
const PIN1: &str = "1234";
const PIN2: &str = "12345";
/// The most citizens one run signs in (a page of the register's query).
pub const MAX_CITIZENS: usize = 1000;
/// The portal's information system on the exchange.
const PORTAL_SUBSYSTEM: &str = "VN/GOV/000007/portal";
/// Simulated citizens sharing one source address.
const CITIZENS_PER_ADDRESS: usize = 50;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Concurrent simulated citizens, each signed in once.
    pub citizens: usize,
    /// How long the measured period runs.
    pub seconds: u64,
    /// People in the generated population register.
    pub persons: u64,
    /// Concurrent sign-ins during setup.
    pub sign_in_concurrency: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            citizens: 200,
            seconds: 10,
            persons: 10_000,
            sign_in_concurrency: 16,
        }
    }
}

/// The pages of one application, in the order a citizen opens them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageKind {
    ApplyPage,
    StartAndPrefill,
    Form,
    Submit,
    DossierPage,
}

impl PageKind {
    pub const ALL: [PageKind; 5] = [
        PageKind::ApplyPage,
        PageKind::StartAndPrefill,
        PageKind::Form,
        PageKind::Submit,
        PageKind::DossierPage,
    ];
    pub fn label(self) -> &'static str {
        match self {
            PageKind::ApplyPage => "GET  /dossiers/new?procedure (apply page)",
            PageKind::StartAndPrefill => "POST /dossiers/new (draft + prefill)",
            PageKind::Form => "GET  /dossiers/{code}/form",
            PageKind::Submit => "POST /dossiers/{code}/form (submit)",
            PageKind::DossierPage => "GET  /dossiers/{code}",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Latency figures of one page kind.
#[derive(Debug, Clone)]
pub struct PageFigures {
    pub kind: PageKind,
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// The portal's own time per page (from its metrics), without the time in queues
    /// before it and in the client.
    pub server_mean: Option<Duration>,
}

/// What it measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub citizens: usize,
    /// The simulated citizens' personal codes.
    pub applicants: Vec<String>,
    pub persons: i64,
    pub procedure: String,
    /// Setup: starting the nation (with generating the population) and signing in.
    pub nation_start: Duration,
    pub sign_in: Duration,
    /// The measured period, until the last citizen finished the application in hand.
    pub elapsed: Duration,
    pub submissions: u64,
    pub submissions_per_sec: f64,
    pub pages: Vec<PageFigures>,
    pub page_p50: Duration,
    pub page_p99: Duration,
    /// Fields the register filled per draft, on average.
    pub prefilled_fields_per_draft: f64,
    /// Time the portal's gateway spent on the portal's calls over the portal's own time
    /// answering pages, from both servers' metrics; None when not readable.
    pub prefill_share: Option<f64>,
    /// Gateway time per draft (both register calls).
    pub prefill_per_draft: Option<Duration>,
    pub errors: u64,
    /// The first few errors, each with its page.
    pub first_errors: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "nation        started in {:.1} s (population register: {} people)",
            self.nation_start.as_secs_f64(),
            self.persons
        )?;
        writeln!(
            f,
            "sign-in       {} citizens signed in with Mobile-ID through OpenID Connect in {:.1} s (once each; sessions kept)",
            self.citizens,
            self.sign_in.as_secs_f64()
        )?;
        writeln!(
            f,
            "applications  procedure {}: {} submitted in {:.1} s, {:.1} submissions/s ({} concurrent citizens)",
            self.procedure,
            self.submissions,
            self.elapsed.as_secs_f64(),
            self.submissions_per_sec,
            self.citizens
        )?;
        for p in &self.pages {
            let server = p
                .server_mean
                .map(|d| format!(", server mean {:>7.1} ms", ms(d)))
                .unwrap_or_default();
            writeln!(
                f,
                "  {:<44} {:>7} pages, p50 {:>7.1} ms, p99 {:>7.1} ms, max {:>7.1} ms{server}",
                p.kind.label(),
                p.count,
                ms(p.p50),
                ms(p.p99),
                ms(p.max)
            )?;
        }
        writeln!(
            f,
            "  {:<44} {:>7} pages, p50 {:>7.1} ms, p99 {:>7.1} ms",
            "every page",
            self.pages.iter().map(|p| p.count).sum::<usize>(),
            ms(self.page_p50),
            ms(self.page_p99)
        )?;
        writeln!(
            f,
            "prefill       {:.1} fields per draft from the population register through the exchange",
            self.prefilled_fields_per_draft
        )?;
        match (self.prefill_share, self.prefill_per_draft) {
            (Some(share), Some(per)) => writeln!(
                f,
                "              its exchange calls (arrival at the portal's gateway to the register's answer): {:.1} ms per draft, {:.0}% of the portal's time answering pages",
                ms(per),
                share * 100.0
            )?,
            _ => writeln!(f, "              (the servers' metrics could not be read)")?,
        }
        writeln!(f, "errors        {}", self.errors)?;
        for e in &self.first_errors {
            writeln!(f, "  {e}")?;
        }
        let prefill = self
            .prefill_share
            .map(|s| format!(", prefill {:.0}% of server time", s * 100.0))
            .unwrap_or_default();
        writeln!(
            f,
            "portal: {:.0} submissions/s, p99 page {:.1} ms, p50 page {:.1} ms{prefill}, {} citizens, {} errors",
            self.submissions_per_sec,
            ms(self.page_p99),
            ms(self.page_p50),
            self.citizens,
            self.errors
        )
    }
}

fn failed(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::Internal, m)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn listener() -> Result<TcpListener, Error> {
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

fn url_of(l: &TcpListener) -> Result<String, Error> {
    Ok(format!("http://{}", l.local_addr()?))
}

/// Set `key` in `role`'s settings unless the configuration has it already.
fn setting(config: &mut Config, role: &str, key: &str, value: serde_json::Value) {
    config
        .roles
        .entry(role.into())
        .or_default()
        .settings
        .entry(key)
        .or_insert(value);
}

// ---------------------------------------------------------------- the nation

/// A citizen of the bench: who they are at the register and on the phone.
#[derive(Debug, Clone)]
struct Citizen {
    code: String,
    phone: String,
    family_name: String,
}

/// Where the citizens' browsers go.
#[derive(Debug, Clone, Default)]
struct Site {
    portal_url: String,
    id_url: String,
    mid_url: String,
    /// The portal's gateway, whose metrics tell the time spent prefilling.
    gateway_url: String,
}

struct Nation {
    handles: Vec<ServerHandle>,
    exchange: Option<xalo_exchange::demo::DemoExchange>,
    site: Site,
    citizens: Vec<Citizen>,
    persons: i64,
}

impl Nation {
    async fn shutdown(self) {
        for h in self.handles.into_iter().rev() {
            let _ = h.shutdown().await;
        }
        if let Some(x) = self.exchange {
            let _ = x.shutdown().await;
        }
    }
}

async fn start_nation(config: &mut Config, options: &BenchOptions) -> Result<Nation, Error> {
    let mut nation = Nation {
        handles: Vec::new(),
        exchange: None,
        site: Site::default(),
        citizens: Vec::new(),
        persons: 0,
    };
    // On a failure halfway, what runs already is stopped.
    match assemble(config, options, &mut nation).await {
        Ok(()) => Ok(nation),
        Err(e) => {
            nation.shutdown().await;
            Err(e)
        }
    }
}

async fn assemble(
    config: &mut Config,
    options: &BenchOptions,
    nation: &mut Nation,
) -> Result<(), Error> {
    let trust_l = listener().await?;
    let ledger_l = listener().await?;
    let registry_l = listener().await?;
    let mid_l = listener().await?;
    let id_l = listener().await?;
    let portal_l = listener().await?;
    let registry_url = url_of(&registry_l)?;
    let ledger_url = url_of(&ledger_l)?;
    let portal_url = url_of(&portal_l)?;

    // Trust services, with the Mobile-ID operator and the exchange as registration
    // authorities (they ask for their subscribers' and members' certificates).
    let mid_token = hex::encode(rand::random::<[u8; 24]>());
    let exchange_token = hex::encode(rand::random::<[u8; 24]>());
    setting(
        config,
        xalo_trust::ROLE,
        "registration_authorities",
        json!([
            { "name": "mobile-id", "token_sha256": xalo_trust::registration::token_hash(&mid_token) },
            { "name": "exchange", "token_sha256": xalo_trust::registration::token_hash(&exchange_token) },
        ]),
    );
    let trust = xalo_trust::serve(config.clone(), trust_l).await?;
    let trust_url = trust.url();
    let trust_port = trust.port();
    nation.handles.push(trust);
    nation
        .handles
        .push(xalo_ledger::service::serve(config.clone(), ledger_l).await?);

    // The population, generated once, and the citizens who will apply: married adults, so
    // that the other parent is prefilled too.
    let (population, business) = xalo_registry::service::open(config).await?;
    if xalo_registry::store::count(&population, "person").await? == 0 {
        xalo_registry::generate::generate_split(
            &population,
            &business,
            options.persons,
            1,
            20,
            &indicatif::ProgressBar::hidden(),
        )
        .await?;
    }
    nation.persons = xalo_registry::store::count(&population, "person").await?;
    let people = xalo_registry::store::people_where(
        &population,
        "alive = 1 AND spouse IS NOT NULL AND birth_date < '2000'",
        &[],
        options.citizens as i64,
    )
    .await?;
    population.close().await;
    business.close().await;
    if people.len() < options.citizens {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!(
                "the register of {} people has only {} married adults for {} citizens; generate more people",
                nation.persons,
                people.len(),
                options.citizens
            ),
        ));
    }
    nation.citizens = people
        .iter()
        .enumerate()
        .map(|(i, p)| Citizen {
            code: p.code.to_string(),
            phone: format!("+849{:08}", i + 1),
            family_name: p.family_name.clone(),
        })
        .collect();

    setting(config, "registry", "ledger_url", json!(ledger_url));
    nation
        .handles
        .push(xalo_registry::service::serve(config.clone(), registry_l).await?);

    // The exchange, with the registers' APIs behind their owners' gateways; the portal is
    // the Government Office's information system.
    use xalo_exchange::demo::ProvidedApi;
    let apis = [
        ProvidedApi {
            provider: "VN/GOV/000001/population".parse()?,
            backend_url: format!("{registry_url}/population"),
            openapi: xalo_registry::service::openapi("population").0,
        },
        ProvidedApi {
            provider: "VN/GOV/000002/business".parse()?,
            backend_url: format!("{registry_url}/business"),
            openapi: xalo_registry::service::openapi("business").0,
        },
    ];
    let exchange = xalo_exchange::demo::start(
        config,
        trust_port,
        &exchange_token,
        Some(ledger_url.clone()),
        &apis,
    )
    .await?;
    let portal: SubsystemId = PORTAL_SUBSYSTEM.parse()?;
    let client_key = exchange
        .client_keys
        .get(&portal)
        .cloned()
        .unwrap_or_default();
    let gateway_url = exchange.gateway_url(portal.member());
    nation.exchange = Some(exchange);
    nation.site.gateway_url = gateway_url?;

    // Mobile-ID for every citizen, national sign-in with the portal as a relying party.
    let subscribers: Vec<serde_json::Value> = people
        .iter()
        .zip(&nation.citizens)
        .map(|(p, c)| {
            json!({
                "phone": c.phone, "personal_code": c.code,
                "given_name": p.given_name, "family_name": p.family_name,
                "pin1": PIN1, "pin2": PIN2,
            })
        })
        .collect();
    setting(config, "mobile-id", "trust_url", json!(trust_url));
    setting(config, "mobile-id", "ra_token", json!(mid_token));
    setting(config, "mobile-id", "subscribers", json!(subscribers));
    let mid = xalo_id::operator::serve(config.clone(), mid_l).await?;
    nation.site.mid_url = mid.url();
    nation.handles.push(mid);
    setting(config, "id", "trust_url", json!(trust_url));
    setting(config, "id", "mobile_id_url", json!(nation.site.mid_url));
    setting(config, "id", "registry_url", json!(registry_url));
    setting(config, "id", "ledger_url", json!(ledger_url));
    setting(
        config,
        "id",
        "clients",
        json!([{
            "client_id": "portal", "name": "Cổng Dịch vụ công quốc gia",
            "auth_method": "client_secret_basic",
            "redirect_uris": [format!("{portal_url}/auth/callback")],
            "post_logout_redirect_uris": [format!("{portal_url}/signed-out")],
            "secret": CLIENT_SECRET,
        }]),
    );
    let id = xalo_id::serve(config.clone(), id_l).await?;
    nation.site.id_url = id.url();
    nation.handles.push(id);

    let role = crate::service::ROLE;
    setting(config, role, "id_url", json!(nation.site.id_url));
    setting(config, role, "client_secret", json!(CLIENT_SECRET));
    setting(
        config,
        role,
        "exchange",
        json!({
            "gateway_url": nation.site.gateway_url,
            "client": portal.to_string(),
            "headers": { xalo_exchange::message::CLIENT_KEY: client_key },
        }),
    );
    let portal = crate::service::serve(config.clone(), portal_l).await?;
    nation.site.portal_url = portal.url();
    nation.handles.push(portal);
    Ok(())
}

// ---------------------------------------------------------------- a simulated browser

/// One citizen's browser: the cookies it holds, per origin.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, BTreeMap<String, String>>,
}

fn origin(url: &str) -> String {
    url.split('/').take(3).collect::<Vec<_>>().join("/")
}

/// An answer: status, where it sends the browser, the page.
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new(http: reqwest::Client) -> Browser {
        Browser {
            http,
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self, url: &str) -> Option<String> {
        let jar = self.cookies.get(&origin(url))?;
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    async fn send(
        &mut self,
        url: &str,
        form: Option<&[(String, String)]>,
    ) -> Result<Answer, String> {
        let mut req = match form {
            Some(form) => self.http.post(url).form(form),
            None => self.http.get(url),
        };
        if let Some(c) = self.cookie_header(url) {
            req = req.header("cookie", c);
        }
        let r = req.send().await.map_err(|e| e.to_string())?;
        let jar = self.cookies.entry(origin(url)).or_default();
        for c in r.headers().get_all("set-cookie") {
            let Some(pair) = c.to_str().ok().and_then(|c| c.split(';').next()) else {
                continue;
            };
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() {
                    jar.remove(k.trim());
                } else {
                    jar.insert(k.trim().to_owned(), v.to_owned());
                }
            }
        }
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body = r.text().await.map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            location,
            body,
        })
    }

    async fn get(&mut self, url: &str) -> Result<Answer, String> {
        self.send(url, None).await
    }

    async fn post(&mut self, url: &str, form: &[(String, String)]) -> Result<Answer, String> {
        self.send(url, Some(form)).await
    }
}

fn expect(a: &Answer, status: u16, what: &str) -> Result<(), String> {
    if a.status == status {
        Ok(())
    } else {
        let body: String = a.body.chars().take(200).collect();
        Err(format!(
            "{what} answered {} (expected {status}): {body}",
            a.status
        ))
    }
}

fn redirect(a: &Answer, what: &str) -> Result<String, String> {
    expect(a, 303, what)?;
    a.location
        .clone()
        .ok_or_else(|| format!("{what} redirected nowhere"))
}

/// HTML's character references as the portal's templates write them, in one pass: the
/// simulated citizens share the two cores with the servers they measure.
fn unescape(s: &str) -> String {
    const REFERENCES: [(&str, char); 7] = [
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&quot;", '"'),
        ("&#x27;", '\''),
        ("&#39;", '\''),
        ("&#x2f;", '/'),
        ("&amp;", '&'),
    ];
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let (c, len) = REFERENCES
            .iter()
            .find(|(r, _)| rest.starts_with(r))
            .map_or(('&', 1), |(r, c)| (*c, r.len()));
        out.push(c);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// The value of attribute `name` in one tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let i = tag.find(&marker)? + marker.len();
    let end = tag[i..].find('"')?;
    Some(unescape(&tag[i..i + end]))
}

/// The value of the hidden input `name` on a page.
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!(" name=\"{name}\"");
    html.match_indices("<input ").find_map(|(i, _)| {
        let tag = &html[i..i + html[i..].find('>').unwrap_or(html.len() - i)];
        tag.contains(&marker)
            .then(|| attribute(tag, "value").unwrap_or_default())
    })
}

/// What a browser would send from the page's form: every input with its value, each
/// select's chosen option, each text area's text.
fn form_fields(html: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for (i, _) in html.match_indices("<input ") {
        let tag = &html[i..i + html[i..].find('>').unwrap_or(html.len() - i)];
        let Some(name) = attribute(tag, "name") else {
            continue;
        };
        if attribute(tag, "type").as_deref() == Some("checkbox") && !tag.contains(" checked") {
            continue;
        }
        fields.push((name, attribute(tag, "value").unwrap_or_default()));
    }
    for (i, _) in html.match_indices("<select ") {
        let Some(close) = html[i..].find("</select>") else {
            continue;
        };
        let select = &html[i..i + close];
        let Some(name) = attribute(&select[..select.find('>').unwrap_or(0)], "name") else {
            continue;
        };
        let chosen = select
            .match_indices("<option ")
            .map(|(j, _)| &select[j..j + select[j..].find('>').unwrap_or(0)])
            .find(|o| o.contains(" selected"))
            .and_then(|o| attribute(o, "value"))
            .unwrap_or_default();
        fields.push((name, chosen));
    }
    for (i, _) in html.match_indices("<textarea ") {
        let Some(open) = html[i..].find('>') else {
            continue;
        };
        let Some(name) = attribute(&html[i..i + open], "name") else {
            continue;
        };
        let start = i + open + 1;
        let text = html[start..]
            .find("</textarea>")
            .map(|end| unescape(&html[start..start + end]))
            .unwrap_or_default();
        fields.push((name, text));
    }
    fields
}

/// The 4-digit verification code a Mobile-ID page shows.
fn verification_code(html: &str) -> Option<String> {
    let i = html.find("class=\"code\"")?;
    let rest = &html[i..];
    let start = rest.find('>')? + 1;
    rest.get(start..start + 4).map(str::to_owned)
}

/// Sign `citizen` in at the portal through national sign-in with Mobile-ID.
async fn sign_in(n: &Site, b: &mut Browser, c: &Citizen) -> Result<(), String> {
    let a = b
        .get(&format!("{}/login?next=%2Fdossiers", n.portal_url))
        .await?;
    let authorize = redirect(&a, "portal /login")?;
    let a = b.get(&authorize).await?;
    redirect(&a, "authorize")?;
    let a = b.get(&format!("{}/login", n.id_url)).await?;
    expect(&a, 200, "sign-in page")?;
    let csrf = hidden(&a.body, "csrf_token").ok_or("no CSRF token on the sign-in page")?;
    let a = b
        .post(
            &format!("{}/login/mid", n.id_url),
            &[
                ("csrf_token".into(), csrf),
                ("phone".into(), c.phone.clone()),
                ("personal_code".into(), c.code.clone()),
            ],
        )
        .await?;
    expect(&a, 200, "Mobile-ID start")?;
    let shown = verification_code(&a.body).ok_or("no verification code shown")?;
    let phone_url = format!("{}/phone/{}", n.mid_url, c.phone);
    let a = b.get(&phone_url).await?;
    expect(&a, 200, "phone screen")?;
    if verification_code(&a.body).as_deref() != Some(shown.as_str()) {
        return Err("the phone shows another verification code".into());
    }
    let form = vec![
        (
            "csrf_token".to_owned(),
            hidden(&a.body, "csrf_token").ok_or("no CSRF token on the phone")?,
        ),
        (
            "session_id".to_owned(),
            hidden(&a.body, "session_id").ok_or("no session on the phone")?,
        ),
        ("decision".to_owned(), "confirm".to_owned()),
        ("pin".to_owned(), PIN1.to_owned()),
    ];
    let a = b.post(&phone_url, &form).await?;
    redirect(&a, "PIN1 confirmation")?;
    let a = b.get(&format!("{}/login/mid/poll", n.id_url)).await?;
    let callback = redirect(&a, "Mobile-ID poll")?;
    let a = b.get(&callback).await?;
    let next = redirect(&a, "portal callback")?;
    if next != "/dossiers" {
        return Err(format!("signed in, the portal sent the browser to {next}"));
    }
    Ok(())
}

// ---------------------------------------------------------------- the measured loop

struct Tally {
    latencies: [Vec<Duration>; 5],
    submissions: u64,
    prefilled_fields: u64,
    drafts: u64,
    errors: u64,
    first_errors: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latencies: Default::default(),
            submissions: 0,
            prefilled_fields: 0,
            drafts: 0,
            errors: 0,
            first_errors: Vec::new(),
        }
    }
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(e);
        }
    }
    fn merge(&mut self, other: Tally) {
        for (mine, theirs) in self.latencies.iter_mut().zip(other.latencies) {
            mine.extend(theirs);
        }
        self.submissions += other.submissions;
        self.prefilled_fields += other.prefilled_fields;
        self.drafts += other.drafts;
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < 5 {
                self.first_errors.push(e);
            }
        }
    }
}

/// Open a page, recording its latency under `kind`.
async fn timed(
    t: &mut Tally,
    kind: PageKind,
    b: &mut Browser,
    url: &str,
    form: Option<&[(String, String)]>,
) -> Result<Answer, String> {
    let started = Instant::now();
    let a = b
        .send(url, form)
        .await
        .map_err(|e| format!("{}: {e}", kind.label()))?;
    t.latencies[kind.index()].push(started.elapsed());
    Ok(a)
}

/// The child's details, which no register knows yet.
fn child(c: &Citizen, round: u64) -> [(&'static str, String); 6] {
    [
        ("child_family_name", c.family_name.clone()),
        ("child_given_name", "An".to_owned()),
        ("child_birth_date", "2025-03-01".to_owned()),
        (
            "child_gender",
            if round.is_multiple_of(2) { "nam" } else { "nu" }.to_owned(),
        ),
        (
            "child_birth_place",
            "Bệnh viện Bãi Cháy, Hạ Long".to_owned(),
        ),
        ("applicant_relationship", "cha".to_owned()),
    ]
}

/// One application from the apply page to the submitted dossier's page.
async fn apply_once(
    portal: &str,
    procedure: &str,
    c: &Citizen,
    b: &mut Browser,
    t: &mut Tally,
    round: u64,
) -> Result<(), String> {
    let a = timed(
        t,
        PageKind::ApplyPage,
        b,
        &format!("{portal}/dossiers/new?procedure={procedure}"),
        None,
    )
    .await?;
    expect(&a, 200, "apply page")?;
    let csrf = hidden(&a.body, "csrf_token").ok_or("no CSRF token on the apply page")?;
    let form = [
        ("csrf_token".to_owned(), csrf),
        ("procedure".to_owned(), procedure.to_owned()),
    ];
    let a = timed(
        t,
        PageKind::StartAndPrefill,
        b,
        &format!("{portal}/dossiers/new"),
        Some(&form),
    )
    .await?;
    let form_path = redirect(&a, "start")?;
    let code = form_path
        .strip_prefix("/dossiers/")
        .and_then(|p| p.strip_suffix("/form"))
        .ok_or_else(|| format!("start sent the browser to {form_path}"))?
        .to_owned();
    t.drafts += 1;
    let a = timed(t, PageKind::Form, b, &format!("{portal}{form_path}"), None).await?;
    expect(&a, 200, "form")?;
    let mut fields = form_fields(&a.body);
    let prefilled = a.body.matches("class=\"tag\"").count() as u64;
    t.prefilled_fields += prefilled;
    let own_code = fields
        .iter()
        .find(|(k, _)| k == "applicant_personal_code")
        .map(|(_, v)| v.as_str());
    if own_code != Some(c.code.as_str()) {
        return Err(format!(
            "dossier {code}: the form was not prefilled from the register (applicant code {own_code:?})"
        ));
    }
    for (name, value) in child(c, round) {
        fields.retain(|(k, _)| k != name);
        fields.push((name.to_owned(), value));
    }
    fields.push(("intent".to_owned(), "submit".to_owned()));
    let a = timed(
        t,
        PageKind::Submit,
        b,
        &format!("{portal}{form_path}"),
        Some(&fields),
    )
    .await?;
    let page = redirect(&a, &format!("submitting {code}"))?;
    // The dossier's page, with the "submitted" notice named in the address.
    if page.split('?').next() != Some(format!("/dossiers/{code}").as_str()) {
        return Err(format!("submitting {code} sent the browser to {page}"));
    }
    let a = timed(
        t,
        PageKind::DossierPage,
        b,
        &format!("{portal}{page}"),
        None,
    )
    .await?;
    expect(&a, 200, "dossier page")?;
    if !a.body.contains(&code) {
        return Err(format!("the page of {code} does not show its code"));
    }
    t.submissions += 1;
    Ok(())
}

/// A histogram of a server's Prometheus metrics: each series' labels with its sum and
/// count.
type Histogram = BTreeMap<String, (f64, f64)>;

async fn histogram(http: &reqwest::Client, base: &str, name: &str) -> Option<Histogram> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut series = Histogram::new();
    for (suffix, count) in [("_sum{", false), ("_count{", true)] {
        let prefix = format!("{name}{suffix}");
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let (labels, value) = rest.rsplit_once("} ")?;
            let value = value.trim().parse::<f64>().ok()?;
            let entry = series.entry(labels.to_owned()).or_default();
            if count {
                entry.1 = value;
            } else {
                entry.0 = value;
            }
        }
    }
    Some(series)
}

/// What happened between two readings of a histogram, over the series `keep` accepts:
/// (seconds, observations).
fn between(before: &Histogram, after: &Histogram, keep: impl Fn(&str) -> bool) -> (f64, f64) {
    after.iter().filter(|(labels, _)| keep(labels)).fold(
        (0.0, 0.0),
        |(s, c), (labels, (sum, count))| {
            let (s0, c0) = before.get(labels).copied().unwrap_or_default();
            (s + sum - s0, c + count - c0)
        },
    )
}

/// The portal's request durations, and its gateway's durations of exchange messages (from
/// their arrival to the register's answer).
const PORTAL_HISTOGRAM: &str = "xalo_http_request_duration_seconds";
const EXCHANGE_HISTOGRAM: &str = "xalo_exchange_message_duration_seconds";

async fn readings(http: &reqwest::Client, site: &Site) -> Option<(Histogram, Histogram)> {
    Some((
        histogram(http, &site.portal_url, PORTAL_HISTOGRAM).await?,
        histogram(http, &site.gateway_url, EXCHANGE_HISTOGRAM).await?,
    ))
}

impl PageKind {
    /// The series of the portal's metrics that count this page.
    fn series(self) -> (&'static str, &'static str) {
        match self {
            PageKind::ApplyPage => ("GET", "/dossiers/new"),
            PageKind::StartAndPrefill => ("POST", "/dossiers/new"),
            PageKind::Form => ("GET", "/dossiers/{code}/form"),
            PageKind::Submit => ("POST", "/dossiers/{code}/form"),
            PageKind::DossierPage => ("GET", "/dossiers/{code}"),
        }
    }
}

/// Start a nation in a scratch directory, measure, stop it and remove the directory.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, Error> {
    let dir = std::env::temp_dir().join(format!(
        "xalo-bench-portal-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    ));
    std::fs::create_dir_all(&dir)?;
    let config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    let result = run_with(config, options).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Measure with a nation under `config`: its data directory holds the SQLite files and
/// the exchange's keys; a role with its own `database_url` uses that database.
pub async fn run_with(mut config: Config, options: &BenchOptions) -> Result<BenchReport, Error> {
    if options.citizens == 0 || options.citizens > MAX_CITIZENS {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("citizens must be 1 to {MAX_CITIZENS}"),
        ));
    }
    let started = Instant::now();
    let nation = start_nation(&mut config, options).await?;
    let nation_start = started.elapsed();
    let result = measure(&nation, options, nation_start).await;
    nation.shutdown().await;
    result
}

async fn measure(
    nation: &Nation,
    options: &BenchOptions,
    nation_start: Duration,
) -> Result<BenchReport, Error> {
    // Citizens come from many addresses, as they would: the sign-in provider allows only so
    // many Mobile-ID starts per address (60 in 10 minutes). Every 127.x.y.z is loopback.
    let mut clients = Vec::new();
    for group in 0..nation.citizens.len().div_ceil(CITIZENS_PER_ADDRESS) {
        let address = std::net::Ipv4Addr::new(127, 0, 1, (group + 1).min(254) as u8);
        clients.push(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .local_address(std::net::IpAddr::V4(address))
                .pool_max_idle_per_host(CITIZENS_PER_ADDRESS + 4)
                .build()
                .map_err(|e| failed(e.to_string()))?,
        );
    }
    let http = clients
        .first()
        .cloned()
        .ok_or_else(|| failed("no citizens"))?;

    // Sign everyone in, a few at a time.
    let started = Instant::now();
    let n = Arc::new(nation.site.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(
        options.sign_in_concurrency.max(1),
    ));
    let mut sign_ins = tokio::task::JoinSet::new();
    for (i, c) in nation.citizens.iter().cloned().enumerate() {
        let http = clients
            .get(i / CITIZENS_PER_ADDRESS)
            .cloned()
            .unwrap_or_else(|| http.clone());
        let (n, permits) = (n.clone(), permits.clone());
        sign_ins.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut b = Browser::new(http);
            let signed = sign_in(&n, &mut b, &c).await;
            (i, c, b, signed)
        });
    }
    let mut browsers = Vec::new();
    while let Some(done) = sign_ins.join_next().await {
        let (i, c, b, signed) = done.map_err(|e| failed(e.to_string()))?;
        signed.map_err(|e| failed(format!("signing in {} failed: {e}", c.code)))?;
        browsers.push((i, c, b));
    }
    browsers.sort_by_key(|(i, _, _)| *i);
    let sign_in = started.elapsed();

    // One application first, so that the measured period starts with a working path
    // (connections to the registers' gateways made, the exchange's configuration read).
    let mut warm = Tally::new();
    let warm_deadline = Instant::now() + Duration::from_secs(30);
    if let Some((_, c, b)) = browsers.first_mut() {
        loop {
            match apply_once(&n.portal_url, DEFAULT_PROCEDURE, c, b, &mut warm, 1).await {
                Ok(()) => break,
                Err(e) if Instant::now() > warm_deadline => {
                    return Err(failed(format!("the first application failed: {e}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    let before = readings(&http, &n).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for (_, c, mut b) in browsers {
        let portal = n.portal_url.clone();
        tasks.spawn(async move {
            let mut t = Tally::new();
            let mut round = 0;
            while Instant::now() < deadline {
                round += 1;
                if let Err(e) =
                    apply_once(&portal, DEFAULT_PROCEDURE, &c, &mut b, &mut t, round).await
                {
                    t.error(format!("{}: {e}", c.code));
                }
            }
            t
        });
    }
    let mut tally = Tally::new();
    while let Some(done) = tasks.join_next().await {
        tally.merge(done.map_err(|e| failed(e.to_string()))?);
    }
    let elapsed = started.elapsed();
    let after = readings(&http, &n).await;

    // Server-side time from the metrics: the portal's pages, and prefill's exchange calls.
    let mut server_means = [None; 5];
    let (mut prefill_share, mut prefill_per_draft) = (None, None);
    if let (Some((portal0, gateway0)), Some((portal1, gateway1))) = (&before, &after) {
        let (portal_time, _) = between(portal0, portal1, |l| {
            !l.contains("route=\"/metrics\"") && !l.contains("route=\"/healthz\"")
        });
        let portal_client = format!("client=\"{PORTAL_SUBSYSTEM}\"");
        let (prefill_time, _) = between(gateway0, gateway1, |l| {
            l.contains("side=\"client\"") && l.contains(&portal_client)
        });
        if portal_time > 0.0 && tally.drafts > 0 {
            prefill_share = Some(prefill_time / portal_time);
            prefill_per_draft = Some(Duration::from_secs_f64(
                (prefill_time / tally.drafts as f64).max(0.0),
            ));
        }
        for kind in PageKind::ALL {
            let (method, route) = kind.series();
            let (method, route) = (format!("method=\"{method}\""), format!("route=\"{route}\""));
            let (time, count) = between(portal0, portal1, |l| {
                l.contains(&method) && l.contains(&route)
            });
            if count > 0.0 {
                server_means[kind.index()] = Some(Duration::from_secs_f64((time / count).max(0.0)));
            }
        }
    }
    let mut all = Vec::new();
    let mut pages = Vec::new();
    for kind in PageKind::ALL {
        let l = &mut tally.latencies[kind.index()];
        l.sort_unstable();
        pages.push(PageFigures {
            kind,
            count: l.len(),
            p50: percentile(l, 0.50),
            p99: percentile(l, 0.99),
            max: l.last().copied().unwrap_or_default(),
            server_mean: server_means[kind.index()],
        });
        all.extend_from_slice(l);
    }
    all.sort_unstable();
    Ok(BenchReport {
        citizens: nation.citizens.len(),
        applicants: nation.citizens.iter().map(|c| c.code.clone()).collect(),
        persons: nation.persons,
        procedure: DEFAULT_PROCEDURE.to_owned(),
        nation_start,
        sign_in,
        elapsed,
        submissions: tally.submissions,
        submissions_per_sec: tally.submissions as f64 / elapsed.as_secs_f64().max(1e-9),
        pages,
        page_p50: percentile(&all, 0.50),
        page_p99: percentile(&all, 0.99),
        prefilled_fields_per_draft: if tally.drafts > 0 {
            tally.prefilled_fields as f64 / tally.drafts as f64
        } else {
            0.0
        },
        prefill_share,
        prefill_per_draft,
        errors: tally.errors,
        first_errors: tally.first_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_read_as_a_browser_sends_it() {
        let html = r#"<form><input type="hidden" name="csrf_token" value="abc">
<input id="f-a" name="applicant_full_name" type="text" value="NGUYỄN &amp; AN" aria-required="true">
<input type="checkbox" id="f-c" name="agree" value="true">
<select id="f-g" name="child_gender"><option value="">Chọn</option>
<option value="nam">nam</option>
<option value="nu" selected>nu</option>
</select>
<textarea id="f-t" name="note" rows="4">a &lt;b&gt;</textarea></form>"#;
        let fields = form_fields(html);
        assert_eq!(
            fields,
            vec![
                ("csrf_token".to_owned(), "abc".to_owned()),
                ("applicant_full_name".to_owned(), "NGUYỄN & AN".to_owned()),
                ("child_gender".to_owned(), "nu".to_owned()),
                ("note".to_owned(), "a <b>".to_owned()),
            ]
        );
        assert_eq!(hidden(html, "csrf_token").as_deref(), Some("abc"));
        assert_eq!(hidden(html, "nothing"), None);
        assert_eq!(
            unescape("&amp;lt; &#39;x&#x27; &#x2f; & &bogus;"),
            "&lt; 'x' / & &bogus;"
        );
        assert_eq!(unescape("no references"), "no references");
    }

    #[test]
    fn percentiles_of_sorted_latencies() {
        let l: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&l, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&l, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
