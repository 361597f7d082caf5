//! The `id` role: the OpenID Connect provider. Discovery, JWKS, the authorization code
//! flow with PKCE, the token endpoint (`client_secret_basic`, `private_key_jwt`, public
//! clients with S256), userinfo and RP-initiated logout; the sign-in pages in Vietnamese
//! and English. Flow state lives in the server-side session and the database only.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode, PersonalCode};
use xalo_store::{Database, PoolOptions};
use xalo_web::{Field, FieldKind, Lang, Page, Session, SessionSettings, Sessions};

use crate::attempt;
use crate::certificate::{CertificateCheck, verify_hash_signature};
use crate::client::{self, AuthMethod, Client, Registration};
use crate::evidence::Evidence;
use crate::grant::{self, Grant, NewCode};
use crate::identity::{self, Identity, Level, Method};
use crate::jws;
use crate::mobile_id::{
    MobileIdClient, SessionKind, SessionRequest, normalise_phone, verification_code,
};
use crate::signing_key;
use crate::store::{self, unix_now};
use crate::text::Text;

pub const ROLE: &str = "id";
/// The name under which the running role announces its ID-card login URL.
pub const ID_CARD_ENDPOINT: &str = "id-card";
pub const SCOPES: &[&str] = &["openid", "idcard", "mid", "eres", "phone"];

/// `[roles.id]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderSettings {
    /// The issuer URL (default `http://PUBLIC_HOST:PORT`).
    pub issuer: Option<String>,
    /// The trust role, for the CA certificates and OCSP.
    pub trust_url: Option<String>,
    /// The Mobile-ID operator; without it Mobile-ID is not offered.
    pub mobile_id_url: Option<String>,
    /// The population register, for names and birth dates of citizens.
    pub registry_url: Option<String>,
    /// The transparency ledger, where every login is anchored.
    pub ledger_url: Option<String>,
    /// Where the ID-card TLS listener binds; without it ID-card is not offered.
    pub id_card_listen: Option<SocketAddr>,
    /// Its public `https://` URL (default `https://PUBLIC_HOST:PORT`).
    pub id_card_url: Option<String>,
    pub relying_party_name: String,
    pub relying_party_uuid: String,
    /// Life of an authorization code (at most 300 s).
    pub code_ttl_secs: i64,
    /// Life of ID and access tokens.
    pub token_ttl_secs: i64,
    /// Age at which the signing key is replaced.
    pub key_rotation_days: i64,
    /// How long one page load waits for the phone.
    pub poll_ms: u64,
    /// Clients registered (or replaced) at start, such as the demo portal.
    pub clients: Vec<Registration>,
    /// How long a good OCSP answer for a certificate is reused (0: ask for every login);
    /// never past the answer's nextUpdate or the certificate's expiry.
    pub ocsp_reuse_secs: u64,
    /// Ask OCSP with a nonce, for a freshly signed answer at every login (on by default:
    /// no answer can be replayed). Off (RFC 5019's profile for high volume): the responder
    /// may answer from its cache, which it gives only while its register still says the
    /// same, and answers up to `ocsp_max_age_secs` old are taken.
    pub ocsp_nonce: bool,
    /// Without a nonce, the oldest OCSP answer taken (seconds since it was produced).
    pub ocsp_max_age_secs: u64,
    /// How long a registered client's row, once read, is used without reading it again
    /// (0: read for every request). A re-registration by the CLI or another instance is
    /// in force after at most this long.
    pub client_cache_ms: u64,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            issuer: None,
            trust_url: None,
            mobile_id_url: None,
            registry_url: None,
            ledger_url: None,
            id_card_listen: None,
            id_card_url: None,
            relying_party_name: "Xalo".into(),
            relying_party_uuid: "00000000-0000-4000-8000-000000000000".into(),
            code_ttl_secs: 60,
            token_ttl_secs: 600,
            key_rotation_days: 30,
            poll_ms: 10_000,
            clients: Vec::new(),
            // Off: a revoked card is refused at once; an operator may trade that for load.
            ocsp_reuse_secs: 0,
            ocsp_nonce: true,
            ocsp_max_age_secs: 120,
            client_cache_ms: 1000,
        }
    }
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub db: Database,
    /// The signing key, read again after [`KEY_REUSE`].
    pub key: std::sync::Mutex<Option<(std::time::Instant, signing_key::CurrentKey)>>,
    pub settings: ProviderSettings,
    pub issuer: String,
    pub sessions: Sessions,
    pub http: reqwest::Client,
    pub certificates: Option<CertificateCheck>,
    pub mobile_id: Option<MobileIdClient>,
    pub evidence: Evidence,
    pub id_card_url: Option<String>,
    /// Registered clients, read again after `client_cache_ms`.
    pub clients: client::ClientCache,
}

impl Provider {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

fn config_error(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::ConfigInvalid, m)
}

/// Start the `id` role (and its ID-card listener when configured).
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let settings: ProviderSettings = config.role_settings(ROLE)?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::new(ErrorCode::ServerBind, e.to_string()))?
        .port();
    let issuer = settings
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{}:{port}", config.public_host))
        .trim_end_matches('/')
        .to_owned();
    let url = config.database_url(ROLE);
    // On a SQLite file, one held connection serves the role's reads and writes (see
    // `Database::connect_held`): its statements take microseconds and queue on a lock in
    // this process. A second connection reading beside it would throw its page cache away
    // after each of the writer's commits (SQLite's rule in WAL mode) and read the pages
    // again, and would meet the writer's lock in SQLite. Scans and migrations use the pool.
    let db = Database::connect_held(&url, 1, PoolOptions::default()).await?;
    store::migrate(&db).await?;
    for c in &settings.clients {
        client::register(&db, c).await?;
    }
    let key = signing_key::current(&db).await?;
    if key.created_unix + settings.key_rotation_days.max(1) * 86_400 < unix_now() {
        signing_key::rotate(&db).await?;
    }
    let sessions = Sessions::open(
        db.clone(),
        SessionSettings {
            cookie: "xalo_id".into(),
            ..SessionSettings::default()
        },
        &["/oidc/token", "/oidc/userinfo", "/oidc/profile"],
    )
    .await?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| config_error(e.to_string()))?;
    let certificates = settings.trust_url.as_deref().map(|u| {
        CertificateCheck::new(u, http.clone())
            .reusing_answers_for(std::time::Duration::from_secs(settings.ocsp_reuse_secs))
            .asking(xalo_trust::ocsp::Asking {
                nonce: settings.ocsp_nonce,
                max_age: std::time::Duration::from_secs(settings.ocsp_max_age_secs),
            })
    });
    let mobile_id = match &settings.mobile_id_url {
        Some(u) if certificates.is_some() => Some(MobileIdClient::new(u)?),
        Some(_) => {
            return Err(config_error(
                "[roles.id] mobile_id_url needs trust_url to check certificates",
            ));
        }
        None => None,
    };
    let id_card_listener = match settings.id_card_listen {
        Some(addr) if certificates.is_some() => Some(xalo_core::server::bind(addr).await?),
        Some(_) => return Err(config_error("[roles.id] id_card_listen needs trust_url")),
        None => None,
    };
    let id_card_url = match &id_card_listener {
        Some(l) => {
            let p = l
                .local_addr()
                .map_err(|e| Error::new(ErrorCode::ServerBind, e.to_string()))?
                .port();
            Some(
                settings
                    .id_card_url
                    .clone()
                    .unwrap_or_else(|| format!("https://{}:{p}", config.public_host)),
            )
        }
        None => None,
    };
    let evidence = Evidence::new(db.clone(), settings.ledger_url.as_deref())?;
    let clients =
        client::ClientCache::new(std::time::Duration::from_millis(settings.client_cache_ms));
    let provider = Provider {
        inner: Arc::new(Inner {
            db: db.clone(),
            key: std::sync::Mutex::new(None),
            settings,
            issuer,
            sessions: sessions.clone(),
            http,
            certificates,
            mobile_id,
            evidence: evidence.clone(),
            id_card_url,
            clients,
        }),
    };
    // Endpoints for servers (discovery, keys, tokens, signing) keep no browser session.
    let machines = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oidc/.well-known/openid-configuration", get(discovery))
        .route("/oidc/jwks", get(jwks))
        .route("/oidc/token", post(token))
        .route("/oidc/userinfo", get(userinfo).post(userinfo))
        .route("/oidc/profile", get(userinfo).post(userinfo))
        .merge(crate::signing::routes());
    let router = Router::new()
        .route("/oidc/authorize", get(authorize))
        .route("/oidc/logout", get(logout))
        .route("/login", get(login_page))
        .route("/login/mid", post(mid_start))
        .route("/login/mid/poll", get(mid_poll))
        .route("/login/cancel", get(cancel))
        .layer(axum::middleware::from_fn_with_state(
            sessions.clone(),
            xalo_web::session::middleware,
        ))
        .merge(machines)
        .with_state(provider.clone());
    let mut handle = Server::new(ROLE, router, &config.http)
        .health_check(db.health_check())
        .spawn(listener)?;
    if let Some(l) = id_card_listener {
        handle.attach(crate::id_card::spawn(provider.clone(), l).await?);
    }
    if let Some(url) = &provider.inner.id_card_url {
        handle.announce(ID_CARD_ENDPOINT, url.clone());
    }
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            if let Err(e) = evidence.retry().await {
                tracing::warn!(error = %e, "anchoring logins failed; will retry");
            }
            let _ = grant::purge(&db).await;
            let _ = sessions.purge_expired().await;
        }
    });
    handle.attach(housekeeping.abort_handle());
    Ok(handle)
}

// ---------------------------------------------------------------- discovery and keys

async fn discovery(State(p): State<Provider>) -> Json<Value> {
    let i = &p.inner.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/oidc/authorize"),
        "token_endpoint": format!("{i}/oidc/token"),
        "userinfo_endpoint": format!("{i}/oidc/profile"),
        "jwks_uri": format!("{i}/oidc/jwks"),
        "end_session_endpoint": format!("{i}/oidc/logout"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "given_name", "family_name", "birthdate", "amr", "acr",
            "profile_attributes", "phone_number", "phone_number_verified", "e_resident", "nonce", "at_hash"],
        "acr_values_supported": ["low", "substantial", "high"],
        "ui_locales_supported": ["vi", "en"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
    }))
}

async fn jwks(State(p): State<Provider>) -> Result<Response, Error> {
    let body = signing_key::jwks(&p.inner.db).await?;
    let mut r = Json(body).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300, public"),
    );
    Ok(r)
}

// ---------------------------------------------------------------- authorization

/// The authorization request, kept in the session while the person signs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthRequest {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub scope: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub acr: Level,
}

impl AuthRequest {
    /// The methods the client allows: all, unless the scope names some (TARA §4.1.4).
    pub fn allows(&self, m: Method) -> bool {
        let selective = self.scope.iter().any(|s| s == "idcard" || s == "mid");
        !selective || self.scope.iter().any(|s| s == m.scope())
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    ui_locales: Option<String>,
    acr_values: Option<String>,
    prompt: Option<String>,
}

fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let q = params
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{q}")
}

fn redirect_error(uri: &str, error: &str, description: &str, state: Option<&str>) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    Redirect::to(&with_query(uri, &params)).into_response()
}

async fn authorize(
    State(p): State<Provider>,
    Extension(mut session): Extension<Session>,
    Query(q): Query<AuthorizeQuery>,
    uri: Uri,
) -> Result<Response, Error> {
    if let Some(lang) = q.ui_locales.as_deref().and_then(Lang::first_of) {
        session.lang = lang;
    }
    // Until the client and its redirect URI are known, errors are shown, never redirected
    // (an open redirector otherwise).
    let client_id = q.client_id.clone().unwrap_or_default();
    let client = p.inner.clients.find(&p.inner.db, &client_id).await?;
    let redirect_uri = q.redirect_uri.clone().unwrap_or_default();
    let Some(client) = client.filter(|c| c.redirect_uris.contains(&redirect_uri)) else {
        p.inner.sessions.save(&session).await?;
        let e = Error::new(
            ErrorCode::AuthUnknownClient,
            format!(
                "client {client_id:?} is unknown or did not register redirect URI {redirect_uri:?}"
            ),
        );
        return message_page(
            &session,
            &uri,
            StatusCode::BAD_REQUEST,
            Text::get(session.lang).failed_title,
            &e.message,
            None,
        );
    };
    let state = q.state.as_deref();
    let fail = |error: &str, description: &str| {
        Ok(redirect_error(&redirect_uri, error, description, state))
    };
    if q.response_type.as_deref() != Some("code") {
        return fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let scope: Vec<String> = q
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !scope.iter().any(|s| s == "openid") {
        return fail("invalid_scope", "the openid scope is required");
    }
    if let Some(s) = scope.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return fail("invalid_scope", &format!("unknown scope {s}"));
    }
    let acr = match q.acr_values.as_deref() {
        None | Some("") => Level::Substantial,
        Some(v) => match Level::parse(v.trim()) {
            Some(l) => l,
            None => {
                return fail(
                    "invalid_request",
                    "acr_values: one of low, substantial, high",
                );
            }
        },
    };
    match (
        q.code_challenge.as_deref(),
        q.code_challenge_method.as_deref(),
    ) {
        (Some(c), Some("S256")) if c.len() == 43 => {}
        (Some(_), Some("S256")) => {
            return fail("invalid_request", "code_challenge: 43 base64url characters");
        }
        (Some(_), _) => return fail("invalid_request", "code_challenge_method must be S256"),
        (None, _) if client.is_public() => {
            return fail("invalid_request", "public clients must use PKCE with S256");
        }
        (None, _) => {}
    }
    if q.prompt.as_deref() == Some("none") {
        // No single sign-on session is kept, so there is never a login to reuse.
        return fail("login_required", "the person must sign in");
    }
    let request = AuthRequest {
        client_id: client.client_id.clone(),
        client_name: client.name.clone(),
        redirect_uri,
        scope,
        state: q.state.clone(),
        nonce: q.nonce.clone(),
        code_challenge: q.code_challenge.clone(),
        acr,
    };
    session.set("authz", &request);
    session.remove("mid");
    p.inner.sessions.save(&session).await?;
    Ok(Redirect::to("/login").into_response())
}

fn methods_meeting(p: &Provider, request: &AuthRequest) -> (bool, bool) {
    let mid = p.inner.mobile_id.is_some()
        && request.allows(Method::MobileId)
        && Method::MobileId.acr() >= request.acr;
    let card = p.inner.id_card_url.is_some()
        && request.allows(Method::IdCard)
        && Method::IdCard.acr() >= request.acr;
    (mid, card)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTemplate<'a> {
    text: &'static Text,
    client_name: &'a str,
    message: Option<&'a str>,
    show_mid: bool,
    mid_form: String,
    id_card_url: Option<String>,
    cancel_url: &'static str,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessageTemplate<'a> {
    message: &'a str,
    is_error: bool,
    link: Option<(String, String)>,
}

fn message_page(
    session: &Session,
    uri: &Uri,
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(String, String)>,
) -> Result<Response, Error> {
    let body = MessageTemplate {
        message,
        is_error: status.is_client_error() || status.is_server_error(),
        link,
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    let html = xalo_web::html(&Page {
        lang: session.lang,
        title,
        uri,
        body,
    })?;
    let mut r = (status, html).into_response();
    // The shared error middleware must not turn this page into JSON.
    r.headers_mut()
        .insert("x-xalo-raw-error", HeaderValue::from_static("1"));
    Ok(r)
}

fn no_request(session: &Session, uri: &Uri) -> Result<Response, Error> {
    let text = Text::get(session.lang);
    message_page(
        session,
        uri,
        StatusCode::BAD_REQUEST,
        text.failed_title,
        text.no_request,
        None,
    )
}

#[derive(Default)]
struct MidInput {
    phone: String,
    code: String,
    phone_error: Option<String>,
    code_error: Option<String>,
}

fn render_login(
    p: &Provider,
    session: &Session,
    uri: &Uri,
    request: &AuthRequest,
    input: &MidInput,
    message: Option<&str>,
    status: StatusCode,
) -> Result<Response, Error> {
    let text = Text::get(session.lang);
    let (show_mid, show_card) = methods_meeting(p, request);
    let mid_form = xalo_web::Form::new("/login/mid", &session.csrf, text.continue_button)
        .field(
            Field::new("phone", text.phone, FieldKind::Phone)
                .hint(text.phone_hint)
                .value(&input.phone)
                .autocomplete("tel")
                .error(input.phone_error.clone()),
        )
        .field(
            Field::new("personal_code", text.personal_code, FieldKind::Text)
                .hint(text.personal_code_hint)
                .value(&input.code)
                .error(input.code_error.clone()),
        )
        .render(session.lang)?;
    let id_card_url = match (&p.inner.id_card_url, show_card) {
        (Some(u), true) => Some(format!("{u}/idcard")),
        _ => None,
    };
    let body = LoginTemplate {
        text,
        client_name: &request.client_name,
        message,
        show_mid,
        mid_form,
        id_card_url,
        cancel_url: "/login/cancel",
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    let html = xalo_web::html(&Page {
        lang: session.lang,
        title: text.login_title,
        uri,
        body,
    })?;
    let mut r = (status, html).into_response();
    r.headers_mut()
        .insert("x-xalo-raw-error", HeaderValue::from_static("1"));
    Ok(r)
}

async fn login_page(
    State(p): State<Provider>,
    Extension(session): Extension<Session>,
    uri: Uri,
) -> Result<Response, Error> {
    let Some(request) = session.get::<AuthRequest>("authz") else {
        return no_request(&session, &uri);
    };
    render_login(
        &p,
        &session,
        &uri,
        &request,
        &MidInput::default(),
        None,
        StatusCode::OK,
    )
}

async fn cancel(
    State(p): State<Provider>,
    Extension(mut session): Extension<Session>,
    uri: Uri,
) -> Result<Response, Error> {
    let Some(request) = session.get::<AuthRequest>("authz") else {
        return no_request(&session, &uri);
    };
    session.remove("authz");
    session.remove("mid");
    p.inner.sessions.save(&session).await?;
    Ok(redirect_error(
        &request.redirect_uri,
        "access_denied",
        "the person cancelled the sign-in",
        request.state.as_deref(),
    ))
}

/// The login succeeded: record it, issue the code, and send the person back.
pub(crate) async fn finish(
    p: &Provider,
    session: &mut Session,
    request: &AuthRequest,
    identity: Identity,
) -> Result<Response, Error> {
    session.remove("authz");
    session.remove("mid");
    // The sign-in leaves the session in the same script that stores the code (see
    // `record_with_code`), before the code is sent; a new session is stored here.
    let update = p.inner.sessions.update_of(session);
    if update.is_none() || identity.method.acr() < request.acr {
        p.inner.sessions.save(session).await?;
    }
    if identity.method.acr() < request.acr {
        return Ok(redirect_error(
            &request.redirect_uri,
            "access_denied",
            "the means of authentication is below the requested level",
            request.state.as_deref(),
        ));
    }
    let grant = Grant {
        identity,
        scope: request.scope.clone(),
        nonce: request.nonce.clone(),
        state: request.state.clone(),
        auth_time: unix_now(),
    };
    let code = p
        .inner
        .evidence
        .record_with_code(
            update.as_ref(),
            &grant.identity,
            &NewCode {
                client_id: &request.client_id,
                redirect_uri: &request.redirect_uri,
                code_challenge: request.code_challenge.as_deref(),
                grant: &grant,
                ttl_secs: p.inner.settings.code_ttl_secs,
            },
        )
        .await?;
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = request.state.as_deref() {
        params.push(("state", s));
    }
    Ok(Redirect::to(&with_query(&request.redirect_uri, &params)).into_response())
}

// ---------------------------------------------------------------- Mobile-ID

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MidProgress {
    session_id: String,
    hash: String,
    phone: String,
    code: String,
}

#[derive(Deserialize)]
struct MidForm {
    #[serde(default)]
    phone: String,
    #[serde(default)]
    personal_code: String,
}

async fn mid_start(
    State(p): State<Provider>,
    Extension(mut session): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    Form(form): Form<MidForm>,
) -> Result<Response, Error> {
    let Some(request) = session.get::<AuthRequest>("authz") else {
        return no_request(&session, &uri);
    };
    let text = Text::get(session.lang);
    let (show_mid, _) = methods_meeting(&p, &request);
    let Some(mid) = p.inner.mobile_id.clone().filter(|_| show_mid) else {
        return no_request(&session, &uri);
    };
    let phone = normalise_phone(&form.phone);
    let code: Option<PersonalCode> = form.personal_code.trim().to_ascii_uppercase().parse().ok();
    let mut input = MidInput {
        phone: form.phone.clone(),
        code: form.personal_code.clone(),
        ..MidInput::default()
    };
    if phone.is_none() {
        input.phone_error = Some(text.bad_phone.into());
    }
    if code.is_none() {
        input.code_error = Some(text.bad_code.into());
    }
    let (Some(phone), Some(code)) = (phone, code) else {
        return render_login(
            &p,
            &session,
            &uri,
            &request,
            &input,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    let limits = [
        (format!("mid-code:{code}"), attempt::PER_PERSON),
        (format!("mid-phone:{phone}"), attempt::PER_PERSON),
        (format!("addr:{}", peer.ip()), attempt::PER_ADDRESS),
    ];
    for (subject, limit) in &limits {
        if let Err(e) = attempt::count(&p.inner.db, subject, *limit).await {
            if e.code == ErrorCode::AuthTooManyAttempts {
                return render_login(
                    &p,
                    &session,
                    &uri,
                    &request,
                    &input,
                    Some(text.too_many),
                    StatusCode::TOO_MANY_REQUESTS,
                );
            }
            return Err(e);
        }
    }
    // The hash of fresh random bytes: what the phone signs to prove the key.
    let hash = Sha256::digest(rand::random::<[u8; 32]>()).to_vec();
    let session_id = mid
        .start(
            SessionKind::Authentication,
            &SessionRequest {
                relying_party_uuid: p.inner.settings.relying_party_uuid.clone(),
                relying_party_name: p.inner.settings.relying_party_name.clone(),
                phone_number: phone.clone(),
                national_identity_number: code.to_string(),
                hash: STANDARD.encode(&hash),
                hash_type: "SHA256".into(),
                language: crate::operator::api_language(session.lang).into(),
                display_text: Some(request.client_name.clone()),
            },
        )
        .await?;
    session.set(
        "mid",
        MidProgress {
            session_id,
            hash: STANDARD.encode(&hash),
            phone,
            code: code.to_string(),
        },
    );
    p.inner.sessions.save(&session).await?;
    render_wait(&session, &uri, &verification_code(&hash))
}

#[derive(Template)]
#[template(path = "wait.html")]
struct WaitTemplate<'a> {
    text: &'static Text,
    code: &'a str,
}

fn render_wait(session: &Session, uri: &Uri, code: &str) -> Result<Response, Error> {
    let text = Text::get(session.lang);
    let body = WaitTemplate { text, code }
        .render()
        .map_err(xalo_web::page::template_error)?;
    let html = xalo_web::html(&Page {
        lang: session.lang,
        title: text.wait_title,
        uri,
        body,
    })?;
    let mut r = html.into_response();
    // Without JavaScript the page asks again at once; the poll itself waits for the phone.
    r.headers_mut().insert(
        "refresh",
        HeaderValue::from_static("1; url=/login/mid/poll"),
    );
    Ok(r)
}

async fn mid_poll(
    State(p): State<Provider>,
    Extension(mut session): Extension<Session>,
    uri: Uri,
) -> Result<Response, Error> {
    let (Some(request), Some(progress)) = (
        session.get::<AuthRequest>("authz"),
        session.get::<MidProgress>("mid"),
    ) else {
        return no_request(&session, &uri);
    };
    let Some(mid) = p.inner.mobile_id.clone() else {
        return no_request(&session, &uri);
    };
    let hash = STANDARD.decode(&progress.hash).unwrap_or_default();
    let status = mid
        .poll(
            SessionKind::Authentication,
            &progress.session_id,
            p.inner.settings.poll_ms.max(1000),
        )
        .await?;
    if status.state != "COMPLETE" {
        return render_wait(&session, &uri, &verification_code(&hash));
    }
    let text = Text::get(session.lang);
    let failure = match status.result.as_deref() {
        Some("OK") => None,
        Some("NOT_MID_CLIENT") => Some(text.not_client),
        Some("USER_CANCELLED") => Some(text.cancelled),
        Some("TIMEOUT") => Some(text.timeout),
        Some("PIN_LOCKED") => Some(text.pin_locked),
        _ => Some(text.login_failed),
    };
    let input = MidInput {
        phone: progress.phone.clone(),
        code: progress.code.clone(),
        ..MidInput::default()
    };
    if let Some(message) = failure {
        session.remove("mid");
        p.inner.sessions.save(&session).await?;
        return render_login(
            &p,
            &session,
            &uri,
            &request,
            &input,
            Some(message),
            StatusCode::UNAUTHORIZED,
        );
    }
    match verify_mobile_id(&p, &progress, &hash, &status).await {
        Ok(identity) => finish(&p, &mut session, &request, identity).await,
        Err(e) => {
            tracing::warn!(error = %e, "Mobile-ID answer refused");
            session.remove("mid");
            p.inner.sessions.save(&session).await?;
            render_login(
                &p,
                &session,
                &uri,
                &request,
                &input,
                Some(text.login_failed),
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

/// The operator says OK: check that the certificate is valid and the person's, and that
/// its key signed our hash.
async fn verify_mobile_id(
    p: &Provider,
    progress: &MidProgress,
    hash: &[u8],
    status: &crate::mobile_id::SessionStatus,
) -> Result<Identity, Error> {
    let failed = |m: &str| Error::new(ErrorCode::AuthLoginFailed, m.to_owned());
    let cert = STANDARD
        .decode(
            status
                .cert
                .as_deref()
                .ok_or_else(|| failed("no certificate"))?,
        )
        .map_err(|_| failed("certificate is not base64"))?;
    let signature = STANDARD
        .decode(
            &status
                .signature
                .as_ref()
                .ok_or_else(|| failed("no signature"))?
                .value,
        )
        .map_err(|_| failed("signature is not base64"))?;
    let checker = p
        .inner
        .certificates
        .as_ref()
        .ok_or_else(|| failed("no trust service"))?;
    let person = checker.check(&cert).await?;
    if person.code.to_string() != progress.code {
        return Err(failed("the certificate is another person's"));
    }
    verify_hash_signature(&person.certificate, hash, &signature)?;
    Ok(identity::complete(
        &p.inner.http,
        p.inner.settings.registry_url.as_deref(),
        person.code,
        (person.given_name, person.surname),
        Method::MobileId,
        Some(progress.phone.clone()),
    )
    .await)
}

// ---------------------------------------------------------------- token endpoint

/// An RFC 6749 §5.2 error, with the Xalo code beside it.
fn oauth_error(code: ErrorCode, error: &str, description: &str) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (
        status,
        Json(
            json!({ "error": error, "error_description": description, "xalo_code": code.as_str() }),
        ),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = HeaderValue::from_str("Basic realm=\"xalo-id\"")
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Authenticate the client of a token request.
async fn authenticate_client(
    p: &Provider,
    headers: &HeaderMap,
    form: &std::collections::HashMap<String, String>,
) -> Result<Client, Response> {
    let invalid = |m: &str| oauth_error(ErrorCode::AuthInvalidClient, "invalid_client", m);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(i, s)| (percent_decode(i), percent_decode(s)))
        });
    let (client_id, method) = if let Some((id, _)) = &basic {
        (id.clone(), AuthMethod::ClientSecretBasic)
    } else if form.get("client_assertion_type").map(String::as_str) == Some(JWT_BEARER) {
        let assertion = form
            .get("client_assertion")
            .map(String::as_str)
            .unwrap_or("");
        let (_, claims) =
            jws::peek(assertion).map_err(|_| invalid("malformed client_assertion"))?;
        let id = claims["sub"].as_str().unwrap_or("").to_owned();
        (id, AuthMethod::PrivateKeyJwt)
    } else {
        (
            form.get("client_id").cloned().unwrap_or_default(),
            AuthMethod::None,
        )
    };
    let db = &p.inner.db;
    if attempt::exceeded(db, &format!("client:{client_id}"), attempt::PER_CLIENT)
        .await
        .unwrap_or(false)
    {
        return Err(oauth_error(
            ErrorCode::AuthTooManyAttempts,
            "invalid_client",
            "too many failed attempts",
        ));
    }
    let counter = format!("client:{client_id}");
    let refuse = |m: &'static str| {
        let counter = counter.clone();
        async move {
            let _ = attempt::count(&p.inner.db, &counter, attempt::PER_CLIENT).await;
            invalid(m)
        }
    };
    let Some(client) = p.inner.clients.find(db, &client_id).await.ok().flatten() else {
        return Err(refuse("unknown client").await);
    };
    if client.auth_method != method {
        return Err(refuse("the client must authenticate with its registered method").await);
    }
    match method {
        AuthMethod::ClientSecretBasic => {
            let secret = basic.map(|(_, s)| s).unwrap_or_default();
            if !client.check_secret(&secret) {
                return Err(refuse("wrong client secret").await);
            }
        }
        AuthMethod::PrivateKeyJwt => {
            let assertion = form
                .get("client_assertion")
                .map(String::as_str)
                .unwrap_or("");
            let keys = client
                .jwks
                .as_ref()
                .map(jws::keys_of_jwks)
                .unwrap_or_default();
            let Ok(claims) = jws::verify(assertion, &keys) else {
                return Err(refuse("the client assertion does not verify").await);
            };
            let token_url = format!("{}/oidc/token", p.inner.issuer);
            let aud_ok = match &claims["aud"] {
                Value::String(a) => *a == token_url || *a == p.inner.issuer,
                Value::Array(a) => a
                    .iter()
                    .any(|a| *a == token_url.as_str() || *a == p.inner.issuer.as_str()),
                _ => false,
            };
            let now = unix_now();
            let exp_ok = claims["exp"]
                .as_i64()
                .is_some_and(|e| e > now && e < now + 600);
            if claims["iss"] != client.client_id.as_str() || !aud_ok || !exp_ok {
                return Err(refuse("the client assertion's iss, aud or exp is wrong").await);
            }
            // Each assertion once (RFC 7523 §3, jti).
            let jti = claims["jti"].as_str().unwrap_or("");
            let single = attempt::Limit {
                max: 1,
                window_secs: 600,
            };
            if jti.is_empty()
                || attempt::count(
                    &p.inner.db,
                    &format!("jti:{}:{jti}", client.client_id),
                    single,
                )
                .await
                .is_err()
            {
                return Err(refuse("the client assertion was used before or has no jti").await);
            }
        }
        AuthMethod::None => {}
    }
    Ok(client)
}

async fn token(
    State(p): State<Provider>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    let client = match authenticate_client(&p, &headers, &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(
            ErrorCode::AuthUnsupported,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    let Some(code) = form.get("code") else {
        return oauth_error(
            ErrorCode::AuthInvalidRequest,
            "invalid_request",
            "code is required",
        );
    };
    let ttl = p.inner.settings.token_ttl_secs.clamp(30, 3600);
    let redemption = grant::Redemption {
        code,
        client_id: &client.client_id,
        redirect_uri: form.get("redirect_uri").map(String::as_str),
        verifier: form.get("code_verifier").map(String::as_str),
        now: unix_now(),
    };
    let redeemed = match grant::redeem_and_issue(&p.inner.db, &redemption, ttl).await {
        Ok(r) => r,
        Err(e) if e.code == ErrorCode::AuthInvalidGrant => {
            return oauth_error(e.code, "invalid_grant", &e.message);
        }
        Err(e) => return oauth_error(e.code, "server_error", &e.message),
    };
    match tokens(&p, &client, &redeemed, ttl).await {
        Ok(body) => {
            let mut r = Json(body).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => oauth_error(e.code, "server_error", &e.message),
    }
}

async fn tokens(
    p: &Provider,
    client: &Client,
    redeemed: &grant::Redeemed,
    ttl: i64,
) -> Result<Value, Error> {
    let grant = &redeemed.grant;
    let access_token = &redeemed.access_token;
    let now = unix_now();
    let mut id = grant.identity.claims(&grant.scope);
    id["iss"] = json!(p.inner.issuer);
    id["aud"] = json!(client.client_id);
    id["iat"] = json!(now);
    id["nbf"] = json!(now);
    id["exp"] = json!(now + ttl);
    id["auth_time"] = json!(grant.auth_time);
    id["jti"] = json!(hex::encode(rand::random::<[u8; 16]>()));
    id["at_hash"] = json!(jws::half_hash(access_token));
    if let Some(n) = &grant.nonce {
        id["nonce"] = json!(n);
    }
    if let Some(s) = &grant.state {
        id["state"] = json!(s);
    }
    let key = current_key(p).await?;
    let id_token = jws::sign_with(&key.kid, &key.pair, &id)?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "id_token": id_token,
        "scope": grant.scope.join(" "),
    }))
}

/// How long the signing key is kept between reads: a rotation by another instance keeps
/// the old key published as previous, so tokens signed with it meanwhile still verify.
const KEY_REUSE: std::time::Duration = std::time::Duration::from_secs(60);

/// The current signing key, parsed (which derives the public key) once per [`KEY_REUSE`].
async fn current_key(p: &Provider) -> Result<signing_key::CurrentKey, Error> {
    if let Ok(k) = p.inner.key.lock()
        && let Some((at, key)) = k.as_ref()
        && at.elapsed() < KEY_REUSE
    {
        return Ok(key.clone());
    }
    let key = signing_key::current(&p.inner.db).await?;
    if let Ok(mut k) = p.inner.key.lock() {
        *k = Some((std::time::Instant::now(), key.clone()));
    }
    Ok(key)
}

// ---------------------------------------------------------------- userinfo and logout

async fn userinfo(State(p): State<Provider>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    match grant::userinfo(&p.inner.db, token).await {
        Ok(claims) => {
            let mut r = Json(claims).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "invalid_token", "error_description": e.message, "xalo_code": e.code.as_str() })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str("Bearer error=\"invalid_token\"") {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LogoutQuery {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    ui_locales: Option<String>,
}

async fn logout(
    State(p): State<Provider>,
    Extension(mut session): Extension<Session>,
    Query(q): Query<LogoutQuery>,
    uri: Uri,
) -> Result<Response, Error> {
    if let Some(lang) = q.ui_locales.as_deref().and_then(Lang::first_of) {
        session.lang = lang;
    }
    p.inner.sessions.end(&session).await?;
    // The client is named by a token we signed (expired ones too) or by client_id.
    let keys = signing_key::published(&p.inner.db).await?;
    let hinted = q
        .id_token_hint
        .as_deref()
        .and_then(|t| jws::verify(t, &keys).ok())
        .and_then(|c| c["aud"].as_str().map(str::to_owned));
    let client_id = hinted.or(q.client_id.clone()).unwrap_or_default();
    if let (Some(target), Some(client)) = (
        q.post_logout_redirect_uri.as_deref(),
        client::find(&p.inner.db, &client_id).await?,
    ) && client.post_logout_redirect_uris.iter().any(|u| u == target)
    {
        let mut params = Vec::new();
        if let Some(s) = q.state.as_deref() {
            params.push(("state", s));
        }
        let to = if params.is_empty() {
            target.to_owned()
        } else {
            with_query(target, &params)
        };
        return Ok(Redirect::to(&to).into_response());
    }
    let text = Text::get(session.lang);
    message_page(
        &session,
        &uri,
        StatusCode::OK,
        text.logged_out,
        text.logged_out,
        None,
    )
}
