//! The `portal` role: the citizen's pages of the public service portal.
//!
//! Sign-in through national sign-in (OpenID Connect, [`crate::signin`]); home; starting an
//! application for a procedure of the catalogue (the form prefilled from the registers
//! through the exchange, the purpose being the new dossier's code); the form from the
//! procedure's JSON Schema, validated field by field ([`Procedure::check_form`]); drafts;
//! submission; the dossier page with its timeline; answering a supplement request;
//! cancelling; rating a decided dossier; the receipt.
//!
//! Pages are server-rendered with the `xalo-web` kit: Vietnamese first (`?lang=en`
//! switches), mobile first, no JavaScript, a CSRF token checked on every POST by the session
//! middleware, and every dossier looked up for the signed-in person only
//! ([`dossier::get_for`]): another person's dossier is "not found".
//!
//! Other modules mount their routes in [`serve`] as `Router<Portal>` (handlers that take
//! `State<Portal>` and `Extension<Session>`), and find the signed-in person with
//! [`crate::signin::require`].

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode, PersonalCode};
use xalo_store::{Backend, Database, PoolOptions};
use xalo_web::{Lang, Page, Session, SessionSettings, Sessions};

use crate::catalogue::{self, FieldType, Procedure};
use crate::dossier::{self, Channel, Dossier, NewDossier, State as DossierState};
use crate::signin::{self, ClientSettings, RelyingParty, SignedIn};
use crate::text::Text;

pub const ROLE: &str = "portal";
/// Its port offset in the nation (`xalo demo`).
pub const PORT_OFFSET: u16 = 40;

/// `[roles.portal]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalSettings {
    /// The portal's public URL (default `http://PUBLIC_HOST:PORT`), for the sign-in callback.
    pub public_url: Option<String>,
    /// National sign-in: the `id` role's issuer URL. Without it nobody can sign in.
    pub id_url: Option<String>,
    /// The portal's client registration at the `id` role.
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Scopes asked for: `openid` and the sign-in methods offered.
    pub scope: String,
    /// Send the session cookie only over HTTPS.
    pub secure_cookies: bool,
    /// Session idle lifetime in seconds.
    pub session_ttl_secs: u64,
    /// The portal's security gateway, for prefill and the data tracker.
    pub exchange: Option<crate::exchange::ExchangeSettings>,
    /// The payment provider (read by [`crate::payment_client::from_config`] too).
    pub payment: Option<crate::payment_client::PaymentClientSettings>,
    /// The transparency ledger, for the data tracker's proofs.
    pub ledger: Option<crate::tracker::LedgerSettings>,
    /// Mobile-ID signing of applications through the `id` role.
    pub signing: Option<crate::signature::SigningSettings>,
    /// Results: the agency seal, time-stamps, ledger, mail relay ([`crate::result`]).
    pub result: crate::result::ResultSettings,
}

impl Default for PortalSettings {
    fn default() -> Self {
        PortalSettings {
            public_url: None,
            id_url: None,
            client_id: "portal".into(),
            client_secret: None,
            scope: "openid idcard mid".into(),
            secure_cookies: false,
            session_ttl_secs: 30 * 60,
            exchange: None,
            payment: None,
            ledger: None,
            signing: None,
            result: crate::result::ResultSettings::default(),
        }
    }
}

/// What every handler of the portal shares.
#[derive(Clone)]
pub struct Portal {
    inner: Arc<Inner>,
}

pub struct Inner {
    /// For reads.
    pub db: Database,
    /// For writes: on SQLite a pool of one connection, so writers queue in the pool rather
    /// than in SQLite's busy handler; otherwise `db`.
    pub writes: Database,
    pub settings: PortalSettings,
    pub public_url: String,
    pub sessions: Sessions,
    pub signin: Option<RelyingParty>,
    pub exchange: Option<crate::exchange::Exchange>,
    /// The ledger whose proofs the data tracker checks.
    pub ledger: Option<crate::tracker::Ledger>,
    /// Mobile-ID signing of applications.
    pub signing: Option<crate::signature::Signing>,
    pub calendar: Option<crate::calendar::Calendar>,
    /// The payment provider's client, when `[roles.portal.payment]` is configured.
    pub payment: Option<crate::payment_client::PaymentClient>,
    /// Results of approved dossiers and the citizens' mailboxes.
    pub results: crate::result::Results,
    /// New dossiers' codes, reserved in blocks.
    pub codes: dossier::Codes,
}

impl Portal {
    pub fn inner(&self) -> &Inner {
        &self.inner
    }
    pub fn db(&self) -> &Database {
        &self.inner.db
    }
    pub fn writes(&self) -> &Database {
        &self.inner.writes
    }
}

fn config_error(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::ConfigInvalid, m)
}

/// SQLite connections the pages' reads take in turn: reads are short, so a few keep two
/// cores busy.
const READERS: usize = 4;

/// Open the portal's database and migrate every table of the portal's modules.
pub async fn open_database(url: &str) -> Result<(Database, Database), Error> {
    // Pages read through connections held out of the pool, as the writer writes (below).
    let db = Database::connect_held(url, READERS, PoolOptions::default()).await?;
    dossier::migrate(&db).await?;
    crate::attachment::migrate(&db).await?;
    crate::signature::migrate(&db).await?;
    crate::office::migrate(&db).await?;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    // The single writer keeps its connection out of the pool (see `connect_held`): a
    // pooled one is handed back on a spawned task with a ping, which on a busy machine
    // every next write waits for.
    let writes = if db.backend() == Backend::Sqlite && !in_memory {
        Database::connect_held(
            url,
            1,
            PoolOptions {
                max_connections: 1,
                ..PoolOptions::default()
            },
        )
        .await?
    } else {
        db.clone()
    };
    Ok((db, writes))
}

/// Start the `portal` role.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let settings: PortalSettings = config.role_settings(ROLE)?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::new(ErrorCode::ServerBind, e.to_string()))?
        .port();
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}:{port}", config.public_host))
        .trim_end_matches('/')
        .to_owned();
    let (db, writes) = open_database(&config.database_url(ROLE)).await?;
    let sessions = Sessions::open(
        db.clone(),
        SessionSettings {
            cookie: "xalo_portal".into(),
            ttl_secs: settings.session_ttl_secs,
            secure: settings.secure_cookies,
        },
        &[
            crate::payment_client::CALLBACK_PATH,
            crate::evidence::UPLOAD_PREFIX,
        ],
    )
    .await?
    .with_writer(writes.clone());
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| config_error(e.to_string()))?;
    let signin = match (&settings.id_url, &settings.client_secret) {
        (Some(issuer), Some(secret)) => Some(RelyingParty::new(
            ClientSettings {
                issuer: issuer.trim_end_matches('/').to_owned(),
                client_id: settings.client_id.clone(),
                client_secret: secret.clone(),
                redirect_uri: format!("{public_url}/auth/callback"),
                post_logout_redirect_uri: Some(format!("{public_url}/signed-out")),
            },
            http.clone(),
        )),
        (Some(_), None) => {
            return Err(config_error(
                "[roles.portal] id_url needs client_secret (client_secret_basic)",
            ));
        }
        _ => None,
    };
    let exchange = settings
        .exchange
        .as_ref()
        .map(crate::exchange::Exchange::new)
        .transpose()?;
    let ledger = settings
        .ledger
        .as_ref()
        .map(crate::tracker::Ledger::new)
        .transpose()?;
    let signing = settings
        .signing
        .as_ref()
        .map(crate::signature::Signing::new)
        .transpose()?;
    let calendar = crate::calendar::Calendar::vietnam().ok();
    let payment = match settings.payment.clone() {
        Some(s) => Some(
            crate::payment_client::PaymentClient::new(writes.clone(), s)
                .await?
                .with_reader(db.clone()),
        ),
        None => None,
    };
    let results = crate::result::Results::open(writes.clone(), &settings.result)
        .await?
        .with_reader(db.clone());
    // The catalogue is checked at start: a broken entry stops the role, not a page.
    catalogue::catalogue()?;
    let portal = Portal {
        inner: Arc::new(Inner {
            db: db.clone(),
            writes: writes.clone(),
            settings,
            public_url,
            sessions: sessions.clone(),
            signin,
            exchange,
            ledger,
            signing,
            calendar,
            payment: payment.clone(),
            results: results.clone(),
            codes: dossier::Codes::default(),
        }),
    };
    // One result issuer for the back office (which issues on approval) and the mailbox.
    let office = crate::office::Office::new(db.clone(), writes.clone(), Some(results.clone()))
        .with_exchange(portal.inner.exchange.clone());
    let mut router = citizen_routes()
        .merge(catalogue::routes())
        .merge(crate::evidence::routes())
        .with_state(portal.clone())
        .merge(crate::office::routes(office))
        .merge(crate::kpi::routes(
            db.clone(),
            crate::calendar::Calendar::vietnam()?,
        ));
    if let Some(payment) = &payment {
        router = router.merge(payment.router());
    }
    router = router.merge(results.router());
    let router = router.layer(axum::middleware::from_fn_with_state(
        sessions.clone(),
        xalo_web::session::middleware,
    ));
    let mut handle = Server::new(ROLE, router, &config.http)
        .health_check(db.health_check())
        .spawn(listener)?;
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            let _ = sessions.purge_expired().await;
        }
    });
    handle.attach(housekeeping.abort_handle());
    // Ledger entries and e-mails of results that could not go at once.
    handle.attach(
        results
            .spawn_retry(std::time::Duration::from_secs(30))
            .abort_handle(),
    );
    if let Some(payment) = &payment {
        handle.attach(
            payment
                .spawn_reconciler(std::time::Duration::from_secs(3600))
                .abort_handle(),
        );
    }
    Ok(handle)
}

/// The citizen's routes (inside the session layer).
pub fn citizen_routes() -> Router<Portal> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/logout", post(logout))
        .route("/signed-out", get(signed_out))
        .route("/dossiers", get(my_dossiers))
        .route("/dossiers/new", get(start_page).post(start))
        .route("/dossiers/{code}", get(dossier_page))
        .route("/dossiers/{code}/form", get(form_page).post(form_post))
        .route("/dossiers/{code}/cancel", post(cancel))
        .route("/dossiers/{code}/rate", post(rate))
        .route("/dossiers/{code}/receipt", get(receipt))
        .route("/dossiers/{code}/pay", post(pay))
}

// ---------------------------------------------------------------- procedures

fn procedure(code: &str) -> Result<&'static Procedure, Error> {
    catalogue::catalogue()?.require(code)
}

fn agency_name(code: &str, lang: Lang) -> String {
    catalogue::catalogue()
        .map(|c| c.agency_name(code, lang))
        .unwrap_or_else(|_| code.to_owned())
}

// ---------------------------------------------------------------- page plumbing

#[derive(Template)]
#[template(path = "citizen/account.html")]
struct AccountTemplate<'a> {
    text: &'static Text,
    name: Option<String>,
    links: Vec<(String, String)>,
    csrf: &'a str,
    next: String,
}

pub(crate) fn account_bar(session: &Session, uri: &Uri) -> Result<String, Error> {
    AccountTemplate {
        text: Text::get(session.lang),
        name: signin::signed_in(session).map(|p| p.full_name()),
        links: vec![crate::evidence::tracker_link(session.lang)],
        csrf: &session.csrf,
        // With the query: signing in from a procedure's start page comes back to it.
        next: encode(uri.path_and_query().map_or(uri.path(), |pq| pq.as_str())),
    }
    .render()
    .map_err(xalo_web::page::template_error)
}

fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(crate) fn page(
    session: &Session,
    uri: &Uri,
    title: &str,
    body: String,
) -> Result<Response, Error> {
    let html = xalo_web::html(&Page {
        lang: session.lang,
        title,
        uri,
        body,
    })?;
    let mut r = html.into_response();
    // Pages with personal data are not kept by shared caches or the back button's store.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[derive(Template)]
#[template(path = "citizen/message.html")]
struct MessageTemplate<'a> {
    message: &'a str,
    code: Option<String>,
    is_error: bool,
    link: Option<(String, String)>,
}

fn message_page(
    session: &Session,
    uri: &Uri,
    status: StatusCode,
    title: &str,
    message: &str,
    code: Option<String>,
    link: Option<(String, String)>,
) -> Response {
    let body = MessageTemplate {
        message,
        code,
        is_error: status.is_client_error() || status.is_server_error(),
        link,
    }
    .render()
    .map_err(xalo_web::page::template_error);
    let result = body.and_then(|body| {
        xalo_web::html(&Page {
            lang: session.lang,
            title,
            uri,
            body,
        })
    });
    match result {
        Ok(html) => {
            let mut r = (status, html).into_response();
            // The shared error middleware must not turn this page into JSON.
            r.headers_mut()
                .insert("x-xalo-raw-error", HeaderValue::from_static("1"));
            r
        }
        Err(e) => e.into_response(),
    }
}

/// Turn a handler's result into a page: an error becomes a page that says what went wrong
/// with its code; not being signed in sends the browser to sign in and back.
pub(crate) fn respond(session: &Session, uri: &Uri, result: Result<Response, Error>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) if e.code == ErrorCode::PortalNotSignedIn => {
            Redirect::to(&format!("/login?next={}", encode(&return_path(uri)))).into_response()
        }
        Err(e) => {
            let text = Text::get(session.lang);
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::warn!(error = %e, path = uri.path(), "portal page failed");
            }
            let title = if status == StatusCode::NOT_FOUND {
                text.not_found_title
            } else {
                text.error_title
            };
            let message = if status.is_server_error() {
                e.code.title().to_owned()
            } else {
                e.message.clone()
            };
            message_page(
                session,
                uri,
                status,
                title,
                &message,
                Some(e.code.as_str().to_owned()),
                Some(("/dossiers".into(), text.my_dossiers.into())),
            )
        }
    }
}

/// Where to come back after signing in: the page itself, or for an action posted from a
/// dossier's page (cancel, rate, pay), that page, since an action is not repeated by a GET.
fn return_path(uri: &Uri) -> String {
    let path = uri.path();
    for action in ["/cancel", "/rate", "/pay"] {
        if let Some(page) = path.strip_suffix(action)
            && page.starts_with("/dossiers/")
        {
            return page.to_owned();
        }
    }
    if path == "/logout" {
        return "/".to_owned();
    }
    path.to_owned()
}

pub(crate) fn format_time(unix: i64) -> String {
    // Shown in Vietnam's time (UTC+7).
    chrono::DateTime::from_timestamp(unix + 7 * 3600, 0)
        .map(|t| t.format("%d/%m/%Y %H:%M").to_string())
        .unwrap_or_default()
}

fn format_day(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix + 7 * 3600, 0)
        .map(|t| t.format("%d/%m/%Y").to_string())
        .unwrap_or_default()
}

fn person_of(session: &Session) -> Result<(SignedIn, PersonalCode), Error> {
    let person = signin::require(session)?;
    let code = person.personal_code()?;
    Ok((person, code))
}

pub(crate) async fn save(p: &Portal, session: &Session) -> Result<(), Error> {
    p.inner.sessions.save(session).await
}

/// A one-time notice for the next page (after a redirect): a key of [`Text::notice`],
/// shown in the language of the page it lands on, or a text shown as it is.
pub(crate) fn set_notice(session: &mut Session, notice: &str) {
    session.set("notice", notice);
}

/// The redirect after a change, with its notice (a key of [`Text::notice`]) in the
/// address rather than in the session: neither the change nor the page it leads to then
/// writes the session.
pub(crate) fn redirect_with_notice(path: &str, notice: &str) -> Response {
    Redirect::to(&format!("{path}?notice={notice}")).into_response()
}

/// The notice for this page: one the address names (known keys only, so a link cannot
/// put its own words on the page), else one left in the session, which is then removed.
pub(crate) async fn take_notice(
    p: &Portal,
    session: &mut Session,
    uri: &Uri,
) -> Result<Option<String>, Error> {
    let text = Text::get(session.lang);
    let named = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("notice="))
        .and_then(|key| text.notice(key));
    if let Some(n) = named {
        return Ok(Some(n.to_owned()));
    }
    let notice: Option<String> = session.get("notice");
    if notice.is_some() {
        session.remove("notice");
        save(p, session).await?;
    }
    Ok(notice.map(|n| text.notice(&n).map(str::to_owned).unwrap_or(n)))
}

// ---------------------------------------------------------------- home and sign-in

#[derive(Template)]
#[template(path = "citizen/home.html")]
struct HomeTemplate {
    text: &'static Text,
    account: String,
}

async fn home(Extension(session): Extension<Session>, uri: Uri) -> Response {
    let result = (|| {
        let text = Text::get(session.lang);
        let body = HomeTemplate {
            text,
            account: account_bar(&session, &uri)?,
        }
        .render()
        .map_err(xalo_web::page::template_error)?;
        page(&session, &uri, text.home_title, body)
    })();
    respond(&session, &uri, result)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginQuery {
    next: Option<String>,
}

async fn login(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    Query(q): Query<LoginQuery>,
    uri: Uri,
) -> Response {
    let result = async {
        let text = Text::get(session.lang);
        let Some(rp) = &p.inner.signin else {
            return Ok(message_page(
                &session,
                &uri,
                StatusCode::SERVICE_UNAVAILABLE,
                text.error_title,
                text.signin_unavailable,
                Some(ErrorCode::PortalSignIn.as_str().into()),
                None,
            ));
        };
        let url = rp
            .start(&mut session, q.next.as_deref(), &p.inner.settings.scope)
            .await?;
        save(&p, &session).await?;
        Ok(Redirect::to(&url).into_response())
    }
    .await;
    respond(&session, &uri, result)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    Query(q): Query<CallbackQuery>,
    uri: Uri,
) -> Response {
    let text = Text::get(session.lang);
    let result = async {
        let rp = p.inner.signin.as_ref().ok_or_else(|| {
            Error::new(
                ErrorCode::PortalSignIn,
                "national sign-in is not configured",
            )
        })?;
        if let Some(error) = &q.error {
            return Err(Error::new(
                ErrorCode::PortalSignIn,
                format!(
                    "{error}: {}",
                    q.error_description.as_deref().unwrap_or_default()
                ),
            ));
        }
        let (Some(code), Some(state)) = (&q.code, &q.state) else {
            return Err(Error::new(
                ErrorCode::PortalSignIn,
                "the sign-in answer has no code or state",
            ));
        };
        let finished = rp.finish(&mut session, code, state).await;
        // The pending sign-in is spent either way.
        save(&p, &session).await?;
        let next = finished?;
        // Signed in: a new session token, so one known before the sign-in is worthless.
        let cookie = p.inner.sessions.renew(&mut session).await?;
        let mut r = Redirect::to(&next).into_response();
        r.headers_mut().append(header::SET_COOKIE, cookie);
        Ok(r)
    }
    .await;
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "sign-in failed");
            message_page(
                &session,
                &uri,
                StatusCode::BAD_GATEWAY,
                text.error_title,
                text.signin_failed,
                Some(e.code.as_str().into()),
                Some(("/login".into(), text.try_again.into())),
            )
        }
    }
}

async fn logout(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    uri: Uri,
) -> Response {
    let result = async {
        let person = signin::signed_in(&session);
        p.inner.sessions.end(&session).await?;
        let to = match (person, &p.inner.signin) {
            (Some(person), Some(rp)) => rp.logout_url(&person).await.ok().flatten(),
            _ => None,
        };
        Ok(Redirect::to(to.as_deref().unwrap_or("/signed-out")).into_response())
    }
    .await;
    respond(&session, &uri, result)
}

async fn signed_out(Extension(session): Extension<Session>, uri: Uri) -> Response {
    let text = Text::get(session.lang);
    message_page(
        &session,
        &uri,
        StatusCode::OK,
        text.signed_out,
        text.signed_out,
        None,
        Some(("/".into(), text.home.into())),
    )
}

// ---------------------------------------------------------------- my dossiers

struct Row {
    code: String,
    procedure: String,
    state: &'static str,
    updated: String,
}

#[derive(Template)]
#[template(path = "citizen/dossiers.html")]
struct DossiersTemplate {
    text: &'static Text,
    account: String,
    notice: Option<String>,
    rows: Vec<Row>,
}

fn procedure_name(code: &str, lang: Lang) -> String {
    procedure(code)
        .map(|p| p.name.get(lang).to_owned())
        .unwrap_or_else(|_| code.to_owned())
}

async fn my_dossiers(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    uri: Uri,
) -> Response {
    let result = async {
        let (_, code) = person_of(&session)?;
        let text = Text::get(session.lang);
        let list = dossier::list_for(p.db(), &code).await?;
        let rows = list
            .iter()
            .map(|d| Row {
                code: d.code.clone(),
                procedure: procedure_name(&d.procedure_code, session.lang),
                state: text.state(d.state),
                updated: format_time(d.updated_unix),
            })
            .collect();
        let notice = take_notice(&p, &mut session, &uri).await?;
        let body = DossiersTemplate {
            text,
            account: account_bar(&session, &uri)?,
            notice,
            rows,
        }
        .render()
        .map_err(xalo_web::page::template_error)?;
        page(&session, &uri, text.my_dossiers, body)
    }
    .await;
    respond(&session, &uri, result)
}

// ---------------------------------------------------------------- starting an application

#[derive(Template)]
#[template(path = "citizen/start.html")]
struct StartTemplate<'a> {
    text: &'static Text,
    account: String,
    code: &'a str,
    agency: String,
    days: u32,
    fee: String,
    level: &'static str,
    csrf: &'a str,
    /// Where to sign in first, when nobody is signed in.
    login_href: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NewQuery {
    procedure: String,
}

/// `GET /dossiers/new?procedure=CODE`: what applying involves, and the button to start.
async fn start_page(
    Extension(session): Extension<Session>,
    Query(q): Query<NewQuery>,
    uri: Uri,
) -> Response {
    let result = (|| {
        let text = Text::get(session.lang);
        let proc = procedure(&q.procedure)?;
        let body = StartTemplate {
            text,
            account: account_bar(&session, &uri)?,
            code: &proc.code,
            agency: agency_name(&proc.agency, session.lang),
            days: proc.processing_days,
            fee: if proc.fee_vnd == 0 {
                text.free.to_owned()
            } else {
                catalogue::format_vnd(proc.fee_vnd, session.lang)
            },
            level: match proc.level {
                catalogue::Level::Full => text.level_full,
                catalogue::Level::Partial => text.level_partial,
            },
            csrf: &session.csrf,
            login_href: signin::signed_in(&session).is_none().then(|| {
                let back = format!("/dossiers/new?procedure={}", proc.code);
                format!("/login?next={}", encode(&back))
            }),
        }
        .render()
        .map_err(xalo_web::page::template_error)?;
        page(&session, &uri, proc.name.get(session.lang), body)
    })();
    respond(&session, &uri, result)
}

/// The timeline action under which prefill results are recorded; its note lists the
/// filled fields, so the form can mark them.
const PREFILLED: &str = "prefilled";
const PREFILL_FAILED: &str = "prefill_failed";

#[derive(Deserialize, Default)]
#[serde(default)]
struct NewForm {
    procedure: String,
}

/// `POST /dossiers/new`: create a draft for the signed-in person and prefill it from the
/// registers.
async fn start(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    uri: Uri,
    Form(f): Form<NewForm>,
) -> Response {
    if signin::signed_in(&session).is_none() {
        // Back to this procedure's start page after signing in.
        let back = format!("/dossiers/new?procedure={}", encode(&f.procedure));
        return Redirect::to(&format!("/login?next={}", encode(&back))).into_response();
    }
    let result = async {
        let (person, personal_code) = person_of(&session)?;
        let proc = procedure(&f.procedure)?;
        // The code first: it is the purpose of the registers' answers. Then the draft
        // with what they gave, in one write.
        let code = p.inner.codes.next(p.writes(), &proc.agency).await?;
        let prefilled = prefill_draft(&p, &code, proc, &personal_code).await;
        let d = dossier::create_prefilled_draft(
            p.writes(),
            &NewDossier {
                procedure_code: proc.code.clone(),
                agency: proc.agency.clone(),
                first_step: proc.first_step().id.clone(),
                applicant: personal_code,
                applicant_name: person.full_name(),
                channel: Channel::Online,
                form: Value::Object(Default::default()),
            },
            code,
            prefilled,
        )
        .await?;
        Ok(Redirect::to(&format!("/dossiers/{}/form", d.code)).into_response())
    }
    .await;
    respond(&session, &uri, result)
}

/// Prefill the new draft `code` from the registers, before it is stored: what to record
/// with it. A failure is recorded on the timeline and shown on the form, and the citizen
/// types the details instead.
async fn prefill_draft(
    p: &Portal,
    code: &str,
    proc: &Procedure,
    person: &PersonalCode,
) -> Option<dossier::PrefillRecord> {
    let exchange = p.inner.exchange.as_ref()?;
    match crate::prefill::prefill(exchange, &proc.form, person, code).await {
        Ok(prefilled) => {
            if prefilled.filled.is_empty() {
                return None;
            }
            let mut form = Value::Object(Default::default());
            crate::prefill::merge_into(&mut form, &prefilled.form);
            Some(dossier::PrefillRecord {
                form,
                action: PREFILLED.to_owned(),
                note: prefilled.filled.join(","),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, dossier = %code, "prefill failed");
            Some(dossier::PrefillRecord {
                form: Value::Object(Default::default()),
                action: PREFILL_FAILED.to_owned(),
                note: e.code.as_str().to_owned(),
            })
        }
    }
}

// ---------------------------------------------------------------- the form

struct FieldView {
    id: String,
    name: String,
    label: String,
    hint: Option<String>,
    error: Option<String>,
    required: bool,
    value: String,
    kind: &'static str,
    inputmode: Option<&'static str>,
    autocomplete: Option<&'static str>,
    options: Vec<(String, String, bool)>,
    prefilled: bool,
    described_by: String,
}

#[derive(Template)]
#[template(path = "citizen/form.html")]
struct FormTemplate<'a> {
    text: &'static Text,
    account: String,
    errors_title: &'static str,
    errors: Vec<(String, String)>,
    notice: Option<String>,
    supplement: Option<&'a str>,
    code: &'a str,
    csrf: &'a str,
    version: i64,
    fields: Vec<FieldView>,
    any_prefilled: bool,
    prefill_failed: bool,
    answering: bool,
    note: &'a str,
}

struct FormState<'a> {
    /// The form data to show (stored, or as just posted).
    data: &'a Value,
    /// (field name, message) in form order.
    errors: Vec<(String, String)>,
    notice: Option<String>,
    note: &'a str,
}

/// A stored or posted value as the input shows it.
fn input_value(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn field_id(name: &str) -> String {
    format!("f-{name}")
}

async fn render_form(
    p: &Portal,
    session: &Session,
    uri: &Uri,
    d: &Dossier,
    proc: &Procedure,
    state: FormState<'_>,
) -> Result<Response, Error> {
    let text = Text::get(session.lang);
    let lang = session.lang;
    let events = dossier::events(p.db(), &d.code).await?;
    let prefilled: Vec<String> = events
        .iter()
        .filter(|e| e.action == PREFILLED)
        .filter_map(|e| e.note.clone())
        .flat_map(|n| n.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let prefill_failed = events.iter().any(|e| e.action == PREFILL_FAILED);
    let errors: BTreeMap<&str, &str> = state
        .errors
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let fields: Vec<FieldView> = proc
        .fields()
        .iter()
        .map(|f| {
            let value = input_value(state.data.get(&f.name));
            let (kind, inputmode, autocomplete) = match (f.kind, &f.choices) {
                (FieldType::Boolean, _) => ("checkbox", None, None),
                (_, Some(_)) => ("select", None, None),
                (FieldType::Integer, _) => ("text", Some("numeric"), None),
                (FieldType::Number, _) => ("text", Some("decimal"), None),
                (FieldType::String, _) if f.date => ("date", None, None),
                (FieldType::String, _) if f.name.contains("phone") => {
                    ("tel", Some("tel"), Some("tel"))
                }
                (FieldType::String, _) if f.name.contains("email") => {
                    ("email", None, Some("email"))
                }
                (FieldType::String, _) if f.max_length.is_some_and(|m| m > 300) => {
                    ("textarea", None, None)
                }
                (FieldType::String, _) => ("text", None, None),
            };
            let options = f
                .choices
                .iter()
                .flatten()
                .map(|c| (c.clone(), c.clone(), *c == value))
                .collect();
            let error = errors.get(f.name.as_str()).map(|e| (*e).to_owned());
            // The pattern is the rule; say it in words people read where it is common.
            let hint = match f.pattern.as_deref() {
                Some("^VN[0-9]{12}$") => Some(text.hint_personal_code.to_owned()),
                Some("^0[0-9]{9}$") => Some(text.hint_phone.to_owned()),
                _ if f.date => Some(text.hint_date.to_owned()),
                _ => None,
            };
            let id = field_id(&f.name);
            let mut described = Vec::new();
            if hint.is_some() {
                described.push(format!("{id}-hint"));
            }
            if error.is_some() {
                described.push(format!("{id}-error"));
            }
            FieldView {
                prefilled: prefilled.contains(&f.name),
                id,
                name: f.name.clone(),
                label: f.title.get(lang).to_owned(),
                hint,
                error,
                required: f.required,
                value,
                kind,
                inputmode,
                autocomplete,
                options,
                described_by: described.join(" "),
            }
        })
        .collect();
    let summary = state
        .errors
        .iter()
        .map(|(name, message)| (field_id(name), message.clone()))
        .collect();
    let body = FormTemplate {
        text,
        account: account_bar(session, uri)?,
        errors_title: xalo_web::Common::get(lang).errors_title,
        errors: summary,
        notice: state.notice,
        supplement: d.supplement_note.as_deref(),
        code: &d.code,
        csrf: &session.csrf,
        version: d.version,
        any_prefilled: fields.iter().any(|f| f.prefilled),
        fields,
        prefill_failed,
        answering: d.state == DossierState::SupplementRequested,
        note: state.note,
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    let mut r = page(session, uri, proc.name.get(lang), body)?;
    if !state.errors.is_empty() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        r.headers_mut()
            .insert("x-xalo-raw-error", HeaderValue::from_static("1"));
    }
    Ok(r)
}

fn editable(d: &Dossier) -> Result<(), Error> {
    if matches!(
        d.state,
        DossierState::Draft | DossierState::SupplementRequested
    ) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::PortalDossierState,
            format!(
                "dossier {} is {}; its form cannot be changed",
                d.code, d.state
            ),
        ))
    }
}

async fn form_page(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let (_, person) = person_of(&session)?;
        let d = dossier::get_for(p.db(), &code, &person).await?;
        editable(&d)?;
        let proc = procedure(&d.procedure_code)?;
        let notice = take_notice(&p, &mut session, &uri).await?;
        render_form(
            &p,
            &session,
            &uri,
            &d,
            proc,
            FormState {
                data: &d.form,
                errors: Vec::new(),
                notice,
                note: "",
            },
        )
        .await
    }
    .await;
    respond(&session, &uri, result)
}

/// Save, submit, or answer a supplement. Invalid data is never lost: a draft keeps what
/// was typed, and the page shows it back with one message per field.
async fn form_post(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    let result = async {
        let (_, person) = person_of(&session)?;
        let d = dossier::get_for(p.db(), &code, &person).await?;
        editable(&d)?;
        let proc = procedure(&d.procedure_code)?;
        let field = |name: &str| {
            posted
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let intent = field("intent").unwrap_or("save");
        let note = field("note").unwrap_or("");
        // A form that changed since it was shown (another tab, an officer) is not
        // overwritten silently.
        if let Some(v) = field("version")
            && v.parse::<i64>().ok() != Some(d.version)
            && d.state != DossierState::Draft
        {
            return Err(Error::new(
                ErrorCode::PortalDossierChanged,
                format!(
                    "dossier {} changed since this form was shown; reload it",
                    d.code
                ),
            ));
        }
        let data = proc.form_from_strings(posted.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if intent == "save" {
            if d.state != DossierState::Draft {
                return Err(Error::new(
                    ErrorCode::PortalDossierState,
                    "only a draft can be saved; send the supplement instead",
                ));
            }
            dossier::save_draft(p.writes(), &d.code, &person, data).await?;
            return Ok(redirect_with_notice(
                &format!("/dossiers/{}/form", d.code),
                "draft_saved",
            ));
        }
        let errors: Vec<(String, String)> = proc
            .check_form(&data)
            .into_iter()
            .map(|problem| (problem.field, problem.message.get(session.lang).to_owned()))
            .collect();
        if !errors.is_empty() {
            // Keep what was typed: a draft is saved as it stands.
            let d = if d.state == DossierState::Draft {
                dossier::save_draft(p.writes(), &d.code, &person, data.clone()).await?
            } else {
                d
            };
            return render_form(
                &p,
                &session,
                &uri,
                &d,
                proc,
                FormState {
                    data: &data,
                    errors,
                    notice: None,
                    note,
                },
            )
            .await;
        }
        let notice = match (intent, d.state) {
            ("submit", DossierState::Draft) => {
                let due = due_unix(&p, proc.processing_days);
                // As read above: a change since is refused rather than overwritten.
                dossier::submit_read(p.writes(), d.clone(), &person, data, due).await?;
                "submitted"
            }
            ("supplement", DossierState::SupplementRequested) => {
                dossier::answer_supplement(p.writes(), &d.code, &person, data, Some(note)).await?;
                "supplement_sent"
            }
            _ => {
                return Err(Error::new(
                    ErrorCode::PortalDossierState,
                    format!(
                        "dossier {} is {}; \"{intent}\" does not apply",
                        d.code, d.state
                    ),
                ));
            }
        };
        Ok(redirect_with_notice(
            &format!("/dossiers/{}", d.code),
            notice,
        ))
    }
    .await;
    respond(&session, &uri, result)
}

/// The legal deadline: `days` working days after today (Vietnam's calendar), at the end
/// of that day in Vietnam. None when the calendar does not cover the dates.
fn due_unix(p: &Portal, days: u32) -> Option<i64> {
    let calendar = p.inner.calendar.as_ref()?;
    let now = dossier::unix_now();
    let today = chrono::DateTime::from_timestamp(now + 7 * 3600, 0)?.date_naive();
    let due = calendar.add_working_days(today, days).ok()?;
    let end = due.and_hms_opt(23, 59, 59)?.and_utc().timestamp();
    Some(end - 7 * 3600)
}

// ---------------------------------------------------------------- the dossier page

struct EventView {
    action: String,
    at: String,
    who: &'static str,
    note: Option<String>,
}

#[derive(Template)]
#[template(path = "citizen/dossier.html")]
struct DossierTemplate<'a> {
    text: &'static Text,
    account: String,
    notice: Option<String>,
    d: &'a Dossier,
    state: &'static str,
    agency: String,
    submitted: Option<String>,
    due: Option<String>,
    finished: Option<String>,
    is_draft: bool,
    has_receipt: bool,
    sections: Vec<String>,
    events: Vec<EventView>,
    can_rate: bool,
    can_cancel: bool,
    /// The fee, when the procedure has one.
    fee: Option<String>,
    paid: bool,
    can_pay: bool,
    ratings: Vec<(i64, &'static str)>,
    csrf: &'a str,
}

async fn dossier_page(
    State(p): State<Portal>,
    Extension(mut session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let (_, person) = person_of(&session)?;
        let d = dossier::get_for(p.db(), &code, &person).await?;
        let text = Text::get(session.lang);
        let events = dossier::events(p.db(), &d.code)
            .await?
            .into_iter()
            .rev()
            .map(|e| EventView {
                action: text.action(&e.action).to_owned(),
                at: format_time(e.at_unix),
                who: text.actor_kind(&e.actor_kind),
                // Officers' notes are for the citizen; system notes are internal.
                note: if e.actor_kind == "system" {
                    None
                } else {
                    e.note
                },
            })
            .collect();
        let notice = take_notice(&p, &mut session, &uri).await?;
        let title = procedure_name(&d.procedure_code, session.lang);
        let fee_vnd = procedure(&d.procedure_code).map(|p| p.fee_vnd).unwrap_or(0);
        let paid = match &p.inner.payment {
            Some(pc) if fee_vnd > 0 => pc.paid_payment(&d.code).await?.is_some(),
            _ => false,
        };
        let can_pay = p.inner.payment.is_some()
            && fee_vnd > 0
            && !paid
            && !d.state.is_finished()
            && d.state != DossierState::Draft;
        let body = DossierTemplate {
            text,
            account: account_bar(&session, &uri)?,
            notice,
            state: text.state(d.state),
            agency: agency_name(&d.current_agency, session.lang),
            submitted: d.submitted_unix.map(format_time),
            due: d.due_unix.map(format_day),
            finished: d.finished_unix.map(format_time),
            is_draft: d.state == DossierState::Draft,
            has_receipt: d.submitted_unix.is_some(),
            sections: crate::evidence::dossier_sections(&p, &session, &d).await,
            events,
            can_rate: matches!(d.state, DossierState::Approved | DossierState::Rejected)
                && d.rating.is_none(),
            can_cancel: d.state.is_cancellable(),
            fee: (fee_vnd > 0).then(|| catalogue::format_vnd(fee_vnd, session.lang)),
            paid,
            can_pay,
            ratings: vec![
                (5, text.rate_5),
                (4, text.rate_4),
                (3, text.rate_3),
                (2, text.rate_2),
                (1, text.rate_1),
            ],
            csrf: &session.csrf,
            d: &d,
        }
        .render()
        .map_err(xalo_web::page::template_error)?;
        page(&session, &uri, &title, body)
    }
    .await;
    respond(&session, &uri, result)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CancelForm {
    reason: String,
}

async fn cancel(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
    Form(f): Form<CancelForm>,
) -> Response {
    let result = async {
        let (_, person) = person_of(&session)?;
        dossier::cancel(p.writes(), &code, &person, Some(&f.reason)).await?;
        Ok(redirect_with_notice(
            &format!("/dossiers/{code}"),
            "cancelled",
        ))
    }
    .await;
    respond(&session, &uri, result)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RateForm {
    rating: String,
    comment: String,
}

async fn rate(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
    Form(f): Form<RateForm>,
) -> Response {
    let result = async {
        let (_, person) = person_of(&session)?;
        let rating = f
            .rating
            .trim()
            .parse::<i64>()
            .map_err(|_| Error::new(ErrorCode::PortalRating, "choose a rating from 1 to 5"))?;
        dossier::rate(p.writes(), &code, &person, rating, Some(&f.comment)).await?;
        Ok(redirect_with_notice(&format!("/dossiers/{code}"), "rated"))
    }
    .await;
    respond(&session, &uri, result)
}

#[derive(Template)]
#[template(path = "citizen/receipt.html")]
struct ReceiptTemplate<'a> {
    text: &'static Text,
    d: &'a Dossier,
    procedure: String,
    agency: String,
    submitted: Option<String>,
    due: Option<String>,
    qr: Option<String>,
}

async fn receipt(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let (_, person) = person_of(&session)?;
        let d = dossier::get_for(p.db(), &code, &person).await?;
        if d.submitted_unix.is_none() {
            return Err(Error::new(
                ErrorCode::PortalDossierState,
                format!(
                    "dossier {} has not been submitted; there is no receipt yet",
                    d.code
                ),
            ));
        }
        let text = Text::get(session.lang);
        let body = ReceiptTemplate {
            text,
            procedure: procedure_name(&d.procedure_code, session.lang),
            agency: agency_name(&d.agency, session.lang),
            submitted: d.submitted_unix.map(format_time),
            due: d.due_unix.map(format_day),
            qr: crate::qr::receipt_svg(&p.inner.public_url, &d.code, session.lang).ok(),
            d: &d,
        }
        .render()
        .map_err(xalo_web::page::template_error)?;
        page(&session, &uri, text.receipt, body)
    }
    .await;
    respond(&session, &uri, result)
}

/// `POST /dossiers/{code}/pay`: start paying the procedure's fee; the browser goes to the
/// payment provider and comes back to the payment client's return page.
async fn pay(
    State(p): State<Portal>,
    Extension(session): Extension<Session>,
    Path(code): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let (_, person) = person_of(&session)?;
        let d = dossier::get_for(p.db(), &code, &person).await?;
        let proc = procedure(&d.procedure_code)?;
        let payment = p.inner.payment.as_ref().ok_or_else(|| {
            Error::new(
                ErrorCode::PortalNotAllowed,
                "payments are not configured on this portal",
            )
        })?;
        if proc.fee_vnd == 0 || d.state.is_finished() || d.state == DossierState::Draft {
            return Err(Error::new(
                ErrorCode::PortalDossierState,
                format!("dossier {} has no fee to pay now", d.code),
            ));
        }
        let amount = i64::try_from(proc.fee_vnd)
            .map_err(|_| Error::new(ErrorCode::PortalBadInput, "fee out of range"))?;
        let started = payment
            .start(&d.code, amount, proc.name.get(session.lang), session.lang)
            .await?;
        Ok(Redirect::to(&started.pay_url).into_response())
    }
    .await;
    respond(&session, &uri, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_return_to_their_page_after_sign_in() {
        let uri: Uri = "/dossiers/QNI.HL-261128-0001/cancel".parse().unwrap();
        assert_eq!(return_path(&uri), "/dossiers/QNI.HL-261128-0001");
        let uri: Uri = "/dossiers/QNI.HL-261128-0001/form".parse().unwrap();
        assert_eq!(return_path(&uri), "/dossiers/QNI.HL-261128-0001/form");
    }
}
