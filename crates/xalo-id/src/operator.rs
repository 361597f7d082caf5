//! The `mobile-id` role: a mobile operator's Mobile-ID service. It holds each subscriber's
//! authentication and signing keys (as a SIM would), with certificates from the national
//! persons CA, and PIN1/PIN2 hashes. Relying parties start sessions over the REST API; the
//! phone screen at `/phone/{number}` shows the request and its verification code and takes
//! the PIN. Three wrong tries lock a PIN. Sessions live in the database, so the long poll
//! and the phone may reach different instances.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode, PersonalCode};
use xalo_store::{Database, DbResultExt, Migration, Row};
use xalo_trust::registration::{CertificateRequest as IssueCertificate, RegistrationClient};
use xalo_trust::{KeyAlgorithm, Profile, Subject};
use xalo_web::{Field, FieldKind, Lang, Page, Session, SessionSettings, Sessions};

use crate::mobile_id::{
    SessionKind, SessionRequest, SessionSignature, SessionStarted, SessionStatus, normalise_phone,
    verification_code,
};
use crate::store::unix_now;
use crate::text::Text;

pub const ROLE: &str = "mobile-id";
/// Wrong PIN entries before the PIN locks.
pub const MAX_PIN_TRIES: i64 = 3;

const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "subscribers and sessions",
        "CREATE TABLE mid_subscriber (
        phone TEXT PRIMARY KEY,
        personal_code TEXT NOT NULL,
        auth_certificate TEXT NOT NULL,
        auth_key TEXT NOT NULL,
        sign_certificate TEXT NOT NULL,
        sign_key TEXT NOT NULL,
        pin_salt TEXT NOT NULL,
        pin1_hash TEXT NOT NULL,
        pin2_hash TEXT NOT NULL,
        pin1_failures BIGINT NOT NULL,
        pin2_failures BIGINT NOT NULL
    );
    CREATE TABLE mid_session (
        session_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        phone TEXT NOT NULL,
        hash TEXT NOT NULL,
        relying_party TEXT NOT NULL,
        display_text TEXT,
        state TEXT NOT NULL,
        result TEXT,
        signature TEXT,
        created_unix BIGINT NOT NULL
    );
    CREATE INDEX mid_session_phone ON mid_session (phone, state);",
    ),
    Migration::portable(
        2,
        "the SMS centre's messages",
        "CREATE TABLE mid_sms (
        sender TEXT NOT NULL,
        message_id TEXT NOT NULL,
        phone TEXT NOT NULL,
        text TEXT NOT NULL,
        received_unix BIGINT NOT NULL,
        PRIMARY KEY (sender, message_id)
    );
    CREATE INDEX mid_sms_phone ON mid_sms (phone, received_unix);",
    ),
];

/// A subscriber to create at start when the phone number is new (the demo's people).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberSeed {
    pub phone: String,
    pub personal_code: PersonalCode,
    pub given_name: String,
    pub family_name: String,
    pub pin1: String,
    pub pin2: String,
}

/// `[roles.mobile-id]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorSettings {
    /// The trust role's public URL, which new certificates name for OCSP.
    pub trust_url: Option<String>,
    /// The operator's registration-authority token at the trust role, with which it asks
    /// for its subscribers' certificates.
    pub ra_token: Option<String>,
    pub subscribers: Vec<SubscriberSeed>,
    /// How long a session waits for the PIN.
    pub session_timeout_secs: i64,
    /// Systems that may send text messages through the SMS centre.
    pub sms_senders: Vec<crate::sms::SmsSender>,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        OperatorSettings {
            trust_url: None,
            ra_token: None,
            subscribers: Vec::new(),
            session_timeout_secs: 120,
            sms_senders: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct Operator {
    db: Database,
    timeout_secs: i64,
}

fn pin_hash(salt: &str, pin: &str) -> String {
    let mut out = [0u8; 32];
    // PINs are short: the lockout is the real protection; the slow hash makes a stolen
    // table less useful.
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::MIN.saturating_add(9_999),
        salt.as_bytes(),
        pin.as_bytes(),
        &mut out,
    );
    hex::encode(out)
}

fn valid_pin(pin: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate("mobile-id", MIGRATIONS).await
}

/// Create a subscriber: keys and certificates from the persons CA, PINs hashed. Does
/// nothing when the phone number is already a subscriber.
pub async fn provision(
    db: &Database,
    ra: &RegistrationClient,
    seed: &SubscriberSeed,
) -> Result<bool, Error> {
    let phone = normalise_phone(&seed.phone).ok_or_else(|| {
        Error::new(
            ErrorCode::ConfigInvalid,
            format!("phone {}: not E.164", seed.phone),
        )
    })?;
    if !valid_pin(&seed.pin1, 4..=12) || !valid_pin(&seed.pin2, 5..=12) {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            "PIN1 has 4–12 digits, PIN2 5–12",
        ));
    }
    let exists = xalo_store::sqlx::query("SELECT 1 FROM mid_subscriber WHERE phone = $1")
        .bind(phone.clone())
        .fetch_optional(db.pool())
        .await
        .db("reading subscribers")?;
    if exists.is_some() {
        return Ok(false);
    }
    let subject = Subject::person(&seed.personal_code, &seed.given_name, &seed.family_name);
    let mut issued = Vec::new();
    for profile in [Profile::PersonAuthentication, Profile::PersonSigning] {
        // The SIM's keys are made at the CA and handed to the operator, as for a card.
        let i = ra
            .issue(&IssueCertificate {
                profile,
                subject: subject.clone(),
                csr_pem: None,
                key_algorithm: Some(KeyAlgorithm::P256),
                validity_days: 5 * 365,
            })
            .await?;
        let key = i
            .private_key_der()?
            .ok_or_else(|| Error::new(ErrorCode::TrustIssue, "the CA returned no key"))?;
        issued.push((STANDARD.encode(i.certificate_der()?), STANDARD.encode(key)));
    }
    let salt = hex::encode(rand::random::<[u8; 16]>());
    xalo_store::sqlx::query(
        "INSERT INTO mid_subscriber (phone, personal_code, auth_certificate, auth_key, sign_certificate, \
         sign_key, pin_salt, pin1_hash, pin2_hash, pin1_failures, pin2_failures) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0)",
    )
    .bind(phone)
    .bind(seed.personal_code.to_string())
    .bind(issued[0].0.clone())
    .bind(issued[0].1.clone())
    .bind(issued[1].0.clone())
    .bind(issued[1].1.clone())
    .bind(salt.clone())
    .bind(pin_hash(&salt, &seed.pin1))
    .bind(pin_hash(&salt, &seed.pin2))
    .execute(db.pool())
    .await
    .db("storing a subscriber")?;
    Ok(true)
}

/// Start the `mobile-id` role.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let settings: OperatorSettings = config.role_settings(ROLE)?;
    let db = Database::connect(&config.database_url(ROLE)).await?;
    migrate(&db).await?;
    if !settings.subscribers.is_empty() {
        let trust_url = settings.trust_url.clone().ok_or_else(|| {
            Error::new(
                ErrorCode::ConfigInvalid,
                "[roles.mobile-id] trust_url is needed to issue subscribers' certificates",
            )
        })?;
        let token = settings.ra_token.clone().ok_or_else(|| {
            Error::new(
                ErrorCode::ConfigInvalid,
                "[roles.mobile-id] ra_token is needed to ask the trust role for certificates",
            )
        })?;
        let ra = RegistrationClient::new(&trust_url, &token)?;
        for seed in &settings.subscribers {
            provision(&db, &ra, seed).await?;
        }
    }
    let sessions = Sessions::open(
        db.clone(),
        SessionSettings {
            cookie: "xalo_mobile_id".into(),
            ..SessionSettings::default()
        },
        &["/mid-api/", "/sms-api/"],
    )
    .await?;
    let state = Operator {
        db: db.clone(),
        timeout_secs: settings.session_timeout_secs.clamp(10, 600),
    };
    let router = Router::new()
        .route("/mid-api/certificate", post(certificate))
        .route("/mid-api/authentication", post(start_authentication))
        .route("/mid-api/signature", post(start_signature))
        .route("/mid-api/{kind}/session/{id}", get(session_status))
        .route("/phone/{number}", get(phone_page).post(phone_answer))
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            xalo_web::session::middleware,
        ))
        .merge(
            Router::new()
                .route("/sms-api/messages", post(crate::sms::send))
                .with_state(crate::sms::SmsCentre {
                    db: db.clone(),
                    senders: settings.sms_senders.clone(),
                }),
        )
        .with_state(state);
    Server::new(ROLE, router, &config.http)
        .health_check(db.health_check())
        .spawn(listener)
}

struct Subscriber {
    personal_code: String,
    auth_certificate: String,
    auth_key: String,
    sign_certificate: String,
    sign_key: String,
    pin_salt: String,
    pin1_hash: String,
    pin2_hash: String,
    pin1_failures: i64,
    pin2_failures: i64,
}

async fn subscriber(db: &Database, phone: &str) -> Result<Option<Subscriber>, Error> {
    let row = xalo_store::sqlx::query(
        "SELECT personal_code, auth_certificate, auth_key, sign_certificate, sign_key, pin_salt, \
         pin1_hash, pin2_hash, pin1_failures, pin2_failures FROM mid_subscriber WHERE phone = $1",
    )
    .bind(phone.to_owned())
    .fetch_optional(db.pool())
    .await
    .db("reading a subscriber")?;
    let Some(r) = row else { return Ok(None) };
    let c = "reading a subscriber";
    Ok(Some(Subscriber {
        personal_code: r.try_get(0).db(c)?,
        auth_certificate: r.try_get(1).db(c)?,
        auth_key: r.try_get(2).db(c)?,
        sign_certificate: r.try_get(3).db(c)?,
        sign_key: r.try_get(4).db(c)?,
        pin_salt: r.try_get(5).db(c)?,
        pin1_hash: r.try_get(6).db(c)?,
        pin2_hash: r.try_get(7).db(c)?,
        pin1_failures: r.try_get(8).db(c)?,
        pin2_failures: r.try_get(9).db(c)?,
    }))
}

/// The subscriber of `phone` if their personal code is `code`.
async fn matching_subscriber(
    db: &Database,
    phone: &str,
    code: &str,
) -> Result<Option<Subscriber>, Error> {
    Ok(subscriber(db, phone)
        .await?
        .filter(|s| s.personal_code == code))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateRequest {
    phone_number: String,
    national_identity_number: String,
}

async fn certificate(
    State(op): State<Operator>,
    Json(req): Json<CertificateRequest>,
) -> Result<Json<serde_json::Value>, Error> {
    let phone = normalise_phone(&req.phone_number).unwrap_or_default();
    Ok(Json(
        match matching_subscriber(&op.db, &phone, &req.national_identity_number).await? {
            Some(s) => serde_json::json!({ "result": "OK", "cert": s.sign_certificate }),
            None => serde_json::json!({ "result": "NOT_FOUND" }),
        },
    ))
}

async fn start_authentication(
    State(op): State<Operator>,
    Json(req): Json<SessionRequest>,
) -> Result<Json<SessionStarted>, Error> {
    start(&op, SessionKind::Authentication, req).await
}

async fn start_signature(
    State(op): State<Operator>,
    Json(req): Json<SessionRequest>,
) -> Result<Json<SessionStarted>, Error> {
    start(&op, SessionKind::Signature, req).await
}

async fn start(
    op: &Operator,
    kind: SessionKind,
    req: SessionRequest,
) -> Result<Json<SessionStarted>, Error> {
    let bad = |m: &str| Error::new(ErrorCode::HttpBadRequest, m.to_owned());
    if req.hash_type != "SHA256" {
        return Err(bad("hashType must be SHA256"));
    }
    let hash = STANDARD
        .decode(&req.hash)
        .map_err(|_| bad("hash is not base64"))?;
    if hash.len() != 32 {
        return Err(bad("a SHA256 hash has 32 bytes"));
    }
    let phone =
        normalise_phone(&req.phone_number).ok_or_else(|| bad("phoneNumber is not E.164"))?;
    // As the API does: an unknown subscriber is not an HTTP error but a completed session
    // whose result says so, which tells an attacker no more than a timeout would.
    let known = matching_subscriber(&op.db, &phone, &req.national_identity_number).await?;
    let (state, result) = match &known {
        None => ("COMPLETE", Some("NOT_MID_CLIENT")),
        Some(s) if locked(s, kind) => ("COMPLETE", Some("PIN_LOCKED")),
        Some(_) => ("RUNNING", None),
    };
    let session_id = xalo_web::session::random_token();
    let display = req
        .display_text
        .map(|t| t.chars().take(100).collect::<String>());
    xalo_store::sqlx::query(
        "INSERT INTO mid_session (session_id, kind, phone, hash, relying_party, display_text, state, result, signature, created_unix) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9)",
    )
    .bind(session_id.clone())
    .bind(kind.as_str())
    .bind(phone)
    .bind(req.hash)
    .bind(req.relying_party_name.chars().take(100).collect::<String>())
    .bind(display)
    .bind(state)
    .bind(result)
    .bind(unix_now())
    .execute(op.db.pool())
    .await
    .db("starting a session")?;
    Ok(Json(SessionStarted { session_id }))
}

fn locked(s: &Subscriber, kind: SessionKind) -> bool {
    match kind {
        SessionKind::Authentication => s.pin1_failures >= MAX_PIN_TRIES,
        SessionKind::Signature => s.pin2_failures >= MAX_PIN_TRIES,
    }
}

struct StoredSession {
    kind: SessionKind,
    phone: String,
    hash: String,
    relying_party: String,
    display_text: Option<String>,
    state: String,
    result: Option<String>,
    signature: Option<String>,
    created_unix: i64,
}

async fn load_session(db: &Database, id: &str) -> Result<Option<StoredSession>, Error> {
    let row = xalo_store::sqlx::query(
        "SELECT kind, phone, hash, relying_party, display_text, state, result, signature, created_unix \
         FROM mid_session WHERE session_id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(db.pool())
    .await
    .db("reading a session")?;
    let Some(r) = row else { return Ok(None) };
    let c = "reading a session";
    let kind: String = r.try_get(0).db(c)?;
    Ok(Some(StoredSession {
        kind: SessionKind::parse(&kind).unwrap_or(SessionKind::Authentication),
        phone: r.try_get(1).db(c)?,
        hash: r.try_get(2).db(c)?,
        relying_party: r.try_get(3).db(c)?,
        display_text: r.try_get(4).db(c)?,
        state: r.try_get(5).db(c)?,
        result: r.try_get(6).db(c)?,
        signature: r.try_get(7).db(c)?,
        created_unix: r.try_get(8).db(c)?,
    }))
}

/// Complete a running session; false when it was no longer running.
async fn complete(
    db: &Database,
    id: &str,
    result: &str,
    signature: Option<String>,
) -> Result<bool, Error> {
    let done = xalo_store::sqlx::query(
        "UPDATE mid_session SET state = 'COMPLETE', result = $1, signature = $2 WHERE session_id = $3 AND state = 'RUNNING'",
    )
    .bind(result.to_owned())
    .bind(signature)
    .bind(id.to_owned())
    .execute(db.pool())
    .await
    .db("completing a session")?;
    Ok(done.rows_affected() == 1)
}

#[derive(Deserialize)]
struct PollQuery {
    #[serde(rename = "timeoutMs")]
    timeout_ms: Option<u64>,
}

async fn session_status(
    State(op): State<Operator>,
    Path((kind, id)): Path<(String, String)>,
    Query(q): Query<PollQuery>,
) -> Result<Json<SessionStatus>, Error> {
    let kind = SessionKind::parse(&kind)
        .ok_or_else(|| Error::new(ErrorCode::HttpNotFound, "no such session kind"))?;
    let wait = Duration::from_millis(q.timeout_ms.unwrap_or(1000).clamp(1000, 120_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let s = load_session(&op.db, &id)
            .await?
            .filter(|s| s.kind == kind)
            .ok_or_else(|| Error::new(ErrorCode::AuthMobileIdSession, "no such session"))?;
        if s.state == "RUNNING" && s.created_unix + op.timeout_secs < unix_now() {
            complete(&op.db, &id, "TIMEOUT", None).await?;
            continue;
        }
        if s.state == "COMPLETE" {
            let mut status = SessionStatus {
                state: s.state,
                result: s.result.clone(),
                signature: None,
                cert: None,
            };
            if s.result.as_deref() == Some("OK") {
                let sub = subscriber(&op.db, &s.phone).await?;
                status.signature = s.signature.map(|value| SessionSignature {
                    value,
                    algorithm: "SHA256WithECEncryption".into(),
                });
                status.cert = sub.map(|sub| match kind {
                    SessionKind::Authentication => sub.auth_certificate,
                    SessionKind::Signature => sub.sign_certificate,
                });
            }
            return Ok(Json(status));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Json(SessionStatus {
                state: "RUNNING".into(),
                result: None,
                signature: None,
                cert: None,
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct PendingRequest {
    session_id: String,
    rp_name: String,
    action: &'static str,
    display_text: Option<String>,
    code: String,
    form: String,
}

#[derive(Template)]
#[template(path = "phone.html")]
struct PhoneTemplate<'a> {
    text: &'static Text,
    request: Option<PendingRequest>,
    message: Option<String>,
    action: String,
    csrf: &'a str,
    messages: Vec<PhoneSms>,
}

/// A text message on the phone screen.
struct PhoneSms {
    sender: String,
    at: String,
    text: String,
}

async fn pending(op: &Operator, phone: &str) -> Result<Option<(String, StoredSession)>, Error> {
    let row = xalo_store::sqlx::query(
        "SELECT session_id FROM mid_session WHERE phone = $1 AND state = 'RUNNING' AND created_unix >= $2 \
         ORDER BY created_unix DESC LIMIT 1",
    )
    .bind(phone.to_owned())
    .bind(unix_now() - op.timeout_secs)
    .fetch_optional(op.db.pool())
    .await
    .db("reading the phone's requests")?;
    let Some(r) = row else { return Ok(None) };
    let id: String = r.try_get(0).db("reading the phone's requests")?;
    Ok(load_session(&op.db, &id).await?.map(|s| (id, s)))
}

#[derive(Deserialize)]
struct PhoneQuery {
    message: Option<String>,
}

async fn render_phone(
    op: &Operator,
    session: &Session,
    uri: &Uri,
    phone: &str,
    message: Option<String>,
    pin_error: Option<String>,
) -> Result<Response, Error> {
    let text = Text::get(session.lang);
    let action = format!("/phone/{phone}");
    let request = match pending(op, phone).await? {
        Some((id, s)) => {
            let hash = STANDARD.decode(&s.hash).unwrap_or_default();
            let (label, action_text) = match s.kind {
                SessionKind::Authentication => (text.pin1, text.phone_auth_request),
                SessionKind::Signature => (text.pin2, text.phone_sign_request),
            };
            let form = xalo_web::Form::new(&action, &session.csrf, text.confirm)
                .hidden("session_id", &id)
                .hidden("decision", "confirm")
                .field(
                    Field::new("pin", label, FieldKind::Pin)
                        .autocomplete("off")
                        .error(pin_error),
                )
                .render(session.lang)?;
            Some(PendingRequest {
                session_id: id,
                rp_name: s.relying_party,
                action: action_text,
                display_text: s.display_text,
                code: verification_code(&hash),
                form,
            })
        }
        None => None,
    };
    let idle = request.is_none();
    let messages = crate::sms::inbox(&op.db, phone, 20)
        .await?
        .into_iter()
        .map(|m| PhoneSms {
            sender: m.sender,
            // Shown in Vietnam's time (UTC+7), as the phone's clock would.
            at: chrono::DateTime::from_timestamp(m.received_unix, 0)
                .zip(chrono::FixedOffset::east_opt(7 * 3600))
                .map(|(t, tz)| t.with_timezone(&tz).format("%d/%m/%Y %H:%M").to_string())
                .unwrap_or_default(),
            text: m.text,
        })
        .collect();
    let body = PhoneTemplate {
        text,
        request,
        message,
        action,
        csrf: &session.csrf,
        messages,
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    let title = format!("{} {phone}", text.phone_title);
    let html = xalo_web::html(&Page {
        lang: session.lang,
        title: &title,
        uri,
        body,
    })?;
    let mut response = html.into_response();
    if idle {
        // A phone is told of a request at once; this page learns of it by reloading.
        if let Ok(v) = axum::http::HeaderValue::from_str("2") {
            response.headers_mut().insert("refresh", v);
        }
    }
    Ok(response)
}

async fn phone_page(
    State(op): State<Operator>,
    Extension(session): Extension<Session>,
    Path(number): Path<String>,
    Query(q): Query<PhoneQuery>,
    uri: Uri,
) -> Result<Response, Error> {
    let phone = normalise_phone(&number)
        .ok_or_else(|| Error::new(ErrorCode::HttpNotFound, "not a phone number"))?;
    let text = Text::get(session.lang);
    let message = q.message.as_deref().and_then(|m| match m {
        "done" => Some(text.phone_done.to_owned()),
        "locked" => Some(text.pin_locked.to_owned()),
        _ => None,
    });
    render_phone(&op, &session, &uri, &phone, message, None).await
}

#[derive(Deserialize)]
struct PhoneAnswer {
    session_id: String,
    decision: String,
    #[serde(default)]
    pin: String,
}

async fn phone_answer(
    State(op): State<Operator>,
    Extension(session): Extension<Session>,
    Path(number): Path<String>,
    uri: Uri,
    Form(answer): Form<PhoneAnswer>,
) -> Result<Response, Error> {
    let phone = normalise_phone(&number)
        .ok_or_else(|| Error::new(ErrorCode::HttpNotFound, "not a phone number"))?;
    let back = |m: &str| Redirect::to(&format!("/phone/{phone}?message={m}")).into_response();
    let Some(s) = load_session(&op.db, &answer.session_id)
        .await?
        .filter(|s| s.phone == phone && s.state == "RUNNING")
    else {
        return Ok(back("none"));
    };
    if answer.decision != "confirm" {
        complete(&op.db, &answer.session_id, "USER_CANCELLED", None).await?;
        return Ok(back("done"));
    }
    let sub = subscriber(&op.db, &phone)
        .await?
        .ok_or_else(|| Error::new(ErrorCode::AuthNotMobileIdClient, "no such subscriber"))?;
    if locked(&sub, s.kind) {
        complete(&op.db, &answer.session_id, "PIN_LOCKED", None).await?;
        return Ok(back("locked"));
    }
    let (expected, column, failures) = match s.kind {
        SessionKind::Authentication => (&sub.pin1_hash, "pin1_failures", sub.pin1_failures),
        SessionKind::Signature => (&sub.pin2_hash, "pin2_failures", sub.pin2_failures),
    };
    let right = xalo_web::session::constant_time_eq(
        pin_hash(&sub.pin_salt, &answer.pin).as_bytes(),
        expected.as_bytes(),
    );
    let set_failures = |n: i64| {
        let sql: &'static str = if column == "pin1_failures" {
            "UPDATE mid_subscriber SET pin1_failures = $1 WHERE phone = $2"
        } else {
            "UPDATE mid_subscriber SET pin2_failures = $1 WHERE phone = $2"
        };
        xalo_store::sqlx::query(sql)
            .bind(n)
            .bind(phone.clone())
            .execute(op.db.pool())
    };
    if !right {
        let now_failed = failures + 1;
        set_failures(now_failed).await.db("counting a wrong PIN")?;
        if now_failed >= MAX_PIN_TRIES {
            complete(&op.db, &answer.session_id, "PIN_LOCKED", None).await?;
            return Ok(back("locked"));
        }
        let text = Text::get(session.lang);
        let error = format!("{} {}", text.wrong_pin, MAX_PIN_TRIES - now_failed);
        let mut r = render_phone(&op, &session, &uri, &phone, None, Some(error)).await?;
        *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(r);
    }
    set_failures(0).await.db("resetting PIN tries")?;
    let key_b64 = match s.kind {
        SessionKind::Authentication => &sub.auth_key,
        SessionKind::Signature => &sub.sign_key,
    };
    let hash = STANDARD
        .decode(&s.hash)
        .map_err(|_| Error::new(ErrorCode::Internal, "stored hash"))?;
    let signature = sign_hash(key_b64, &hash)?;
    complete(
        &op.db,
        &answer.session_id,
        "OK",
        Some(STANDARD.encode(signature)),
    )
    .await?;
    Ok(back("done"))
}

/// Sign a SHA-256 hash as the SIM does: ECDSA over the given digest, `r‖s`.
fn sign_hash(pkcs8_b64: &str, hash: &[u8]) -> Result<Vec<u8>, Error> {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::pkcs8::DecodePrivateKey;
    let key_err = |e: String| Error::new(ErrorCode::Internal, format!("subscriber key: {e}"));
    let der = STANDARD
        .decode(pkcs8_b64)
        .map_err(|e| key_err(e.to_string()))?;
    let key = p256::ecdsa::SigningKey::from_pkcs8_der(&der).map_err(|e| key_err(e.to_string()))?;
    let sig: p256::ecdsa::Signature = key.sign_prehash(hash).map_err(|e| key_err(e.to_string()))?;
    Ok(sig.to_bytes().to_vec())
}

/// The language the phone shows, for the operator's API (`VIE`/`ENG`).
pub fn api_language(lang: Lang) -> &'static str {
    match lang {
        Lang::Vi => "VIE",
        Lang::En => "ENG",
    }
}
