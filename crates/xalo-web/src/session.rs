//! Cookie sessions kept in the database, and CSRF protection.
//!
//! The cookie holds a random token; the database keys the session by the token's SHA-256,
//! so a copy of the table does not let anyone wear a visitor's session. Nothing lives in
//! memory: any instance behind a load balancer serves any request.
//!
//! Each session has a synchroniser token. The middleware checks it on every POST (except
//! paths the application exempts, such as an OAuth token endpoint that authenticates its
//! callers otherwise) before the handler runs, so a handler cannot forget to.

use std::sync::Arc;
use std::time::Duration;
use xalo_core::unix_now;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xalo_core::{Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Migration, Row, sqlx};

use crate::lang::Lang;

const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "web sessions",
    "CREATE TABLE web_session (
        id TEXT PRIMARY KEY,
        csrf TEXT NOT NULL,
        lang TEXT NOT NULL,
        data TEXT NOT NULL,
        expires_unix BIGINT NOT NULL
    );
    CREATE INDEX web_session_expires ON web_session (expires_unix);",
)];

/// Largest form body the CSRF check reads; forms of the kit are far smaller.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// How sessions behave.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Cookie name; each application has its own.
    pub cookie: String,
    /// Idle lifetime in seconds; every request renews it.
    pub ttl_secs: u64,
    /// Send the cookie only over HTTPS (production behind TLS).
    pub secure: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            cookie: "xalo_session".into(),
            ttl_secs: 30 * 60,
            secure: false,
        }
    }
}

/// The session store of one application.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// Where writes go: `db`, or a handle the application gives so that its writers
    /// queue in one place (SQLite has one writer; queuing in the pool is cheaper than
    /// sleeping in the busy handler).
    writer: Database,
    settings: SessionSettings,
    exempt: Vec<String>,
}

/// One visitor's session, as the handler sees it. Change it, then [`Sessions::save`].
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the cookie token, hex: the database key.
    pub id: String,
    /// The synchroniser token forms carry as `csrf_token`.
    pub csrf: String,
    pub lang: Lang,
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Set while the session is new and not yet stored: the middleware stores it after
    /// the handler unless the handler's `save` already did, so a new session costs one
    /// write, not an insert and then an update.
    unstored: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Session {
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.data
            .get(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
    pub fn set(&mut self, key: &str, value: impl Serialize) {
        if let Ok(v) = serde_json::to_value(value) {
            self.data.insert(key.to_owned(), v);
        }
    }
    pub fn remove(&mut self, key: &str) {
        self.data.remove(key);
    }
}

/// A fresh random token, URL-safe base64 of 32 bytes.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn token_id(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compare without an early exit, so timing does not reveal how much of a token matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Open the store in `db` (migrating its table); POSTs to paths starting with one of
    /// `exempt` skip the CSRF check.
    pub async fn open(
        db: Database,
        settings: SessionSettings,
        exempt: &[&str],
    ) -> Result<Sessions, Error> {
        db.migrate("web", MIGRATIONS).await?;
        Ok(Sessions {
            inner: Arc::new(Inner {
                writer: db.clone(),
                db,
                settings,
                exempt: exempt.iter().map(|s| (*s).to_owned()).collect(),
            }),
        })
    }

    /// Send the store's writes through `writer` (a handle on the same database).
    pub fn with_writer(self, writer: Database) -> Sessions {
        Sessions {
            inner: Arc::new(Inner {
                db: self.inner.db.clone(),
                writer,
                settings: self.inner.settings.clone(),
                exempt: self.inner.exempt.clone(),
            }),
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.inner.settings.ttl_secs.max(60))
    }

    async fn load(&self, token: &str) -> Result<Option<Session>, Error> {
        let id = token_id(token);
        let row = self
            .inner
            .db
            .fetch_optional(sqlx_query(
                "SELECT csrf, lang, data, expires_unix FROM web_session WHERE id = $1",
                &id,
            ))
            .await
            .db("reading a session")?;
        let Some(row) = row else { return Ok(None) };
        let expires: i64 = row.try_get(3).db("reading a session")?;
        if expires < unix_now() {
            self.delete(&id).await?;
            return Ok(None);
        }
        let csrf: String = row.try_get(0).db("reading a session")?;
        let lang: String = row.try_get(1).db("reading a session")?;
        let data: String = row.try_get(2).db("reading a session")?;
        Ok(Some(Session {
            id,
            csrf,
            lang: Lang::from_code(&lang).unwrap_or_default(),
            data: serde_json::from_str(&data).unwrap_or_default(),
            unstored: None,
        }))
    }

    /// A new session, stored by the first `save` or else by the middleware after the
    /// handler.
    fn create(&self, token: &str, lang: Lang) -> Session {
        Session {
            id: token_id(token),
            csrf: random_token(),
            lang,
            data: serde_json::Map::new(),
            unstored: Some(Arc::new(std::sync::atomic::AtomicBool::new(true))),
        }
    }

    /// Store a new session unless a `save` did already.
    async fn store_new(&self, session: &Session) -> Result<(), Error> {
        if session
            .unstored
            .as_ref()
            .is_some_and(|u| u.load(std::sync::atomic::Ordering::Acquire))
        {
            self.save(session).await?;
        }
        Ok(())
    }

    /// Store the session's language and data, and renew its lifetime.
    pub async fn save(&self, session: &Session) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        let data = serde_json::Value::Object(session.data.clone()).to_string();
        let expires = unix_now() + self.ttl().as_secs() as i64;
        match &session.unstored {
            // Only a session this request started is inserted; an existing one is only
            // updated, so a save racing a logout cannot bring the session back.
            Some(unstored) => {
                self.inner.writer.execute(sqlx::query(
                    "INSERT INTO web_session (id, csrf, lang, data, expires_unix) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (id) DO UPDATE SET lang = $3, data = $4, expires_unix = $5",
                )
                .bind(session.id.clone())
                .bind(session.csrf.clone())
                .bind(session.lang.code())
                .bind(data)
                .bind(expires))
                .await
                .db("creating a session")?;
                unstored.store(false, Ordering::Release);
            }
            None => {
                let update = SessionUpdate {
                    lang: session.lang.code(),
                    data,
                    expires,
                    id: session.id.clone(),
                };
                self.inner
                    .writer
                    .execute(update.bind(sqlx::query(SessionUpdate::SQL)))
                    .await
                    .db("saving a session")?;
            }
        }
        Ok(())
    }

    /// What [`Sessions::save`] writes for a session already stored, for a caller that runs
    /// it in one script with statements of its own on the store's writer; `None` for a
    /// session this request started (`save` inserts those).
    pub fn update_of(&self, session: &Session) -> Option<SessionUpdate> {
        if session.unstored.is_some() {
            return None;
        }
        Some(SessionUpdate {
            lang: session.lang.code(),
            data: serde_json::Value::Object(session.data.clone()).to_string(),
            expires: unix_now() + self.ttl().as_secs() as i64,
            id: session.id.clone(),
        })
    }

    /// Give the session a new cookie token and CSRF token, keeping its data: after a
    /// sign-in, so that a token someone planted in the browser before it is worthless
    /// (session fixation). Returns the `Set-Cookie` value for the response.
    pub async fn renew(&self, session: &mut Session) -> Result<HeaderValue, Error> {
        // A session this request started is stored first, so there is a row to re-key.
        self.store_new(session).await?;
        let token = random_token();
        let id = token_id(&token);
        let csrf = random_token();
        let done = self
            .inner
            .writer
            .execute(
                sqlx::query("UPDATE web_session SET id = $1, csrf = $2 WHERE id = $3")
                    .bind(id.clone())
                    .bind(csrf.clone())
                    .bind(session.id.clone()),
            )
            .await
            .db("renewing a session")?;
        if done.rows_affected() != 1 {
            return Err(Error::new(
                ErrorCode::WebSessionExpired,
                "the session ended before it could be renewed",
            ));
        }
        session.id = id;
        session.csrf = csrf;
        self.set_cookie(&token)
            .ok_or_else(|| Error::new(ErrorCode::Internal, "session cookie"))
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.inner
            .writer
            .execute(sqlx_query("DELETE FROM web_session WHERE id = $1", id))
            .await
            .db("deleting a session")?;
        Ok(())
    }

    /// End a session (logout): its row goes; the browser gets a new one on its next visit.
    pub async fn end(&self, session: &Session) -> Result<(), Error> {
        if let Some(u) = &session.unstored {
            // A session started by this request is simply never stored.
            u.store(false, std::sync::atomic::Ordering::Release);
        }
        self.delete(&session.id).await
    }

    /// Remove expired sessions; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, Error> {
        let done = self
            .inner
            .writer
            .execute(
                sqlx::query("DELETE FROM web_session WHERE expires_unix < $1").bind(unix_now()),
            )
            .await
            .db("purging sessions")?;
        Ok(done.rows_affected())
    }

    fn cookie_token(&self, req: &Request) -> Option<String> {
        let name = &self.inner.settings.cookie;
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_owned())
    }

    fn set_cookie(&self, token: &str) -> Option<HeaderValue> {
        let s = &self.inner.settings;
        // Lax: the session survives the top-level redirect back from a relying party or
        // an operator, and is not sent on cross-site POSTs.
        let value = format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Lax{}",
            s.cookie,
            if s.secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&value).ok()
    }

    fn is_exempt(&self, path: &str) -> bool {
        self.inner
            .exempt
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }
}

/// The update of a stored session: its language and data, and a renewed lifetime.
#[derive(Debug, Clone)]
pub struct SessionUpdate {
    lang: &'static str,
    data: String,
    expires: i64,
    id: String,
}

impl SessionUpdate {
    /// The statement, with parameters `$1`…`$4`.
    pub const SQL: &'static str =
        "UPDATE web_session SET lang = $1, data = $2, expires_unix = $3 WHERE id = $4";

    /// Bind the four parameters of [`SessionUpdate::SQL`] (after any already bound).
    pub fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        q.bind(self.lang)
            .bind(self.data.clone())
            .bind(self.expires)
            .bind(self.id.clone())
    }
}

fn sqlx_query(
    sql: &'static str,
    id: &str,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(sql).bind(id.to_owned())
}

/// The `lang` query parameter, if the request names a supported language.
fn lang_param(req: &Request) -> Option<Lang> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "lang")
        .and_then(|(_, v)| Lang::from_code(v))
}

/// The language of a new session: the browser's first supported preference, else Vietnamese.
fn accept_language(req: &Request) -> Lang {
    req.headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|p| Lang::from_code(p.split(';').next().unwrap_or("")))
                .next()
        })
        .unwrap_or_default()
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(v.get(i + 1..i + 3).unwrap_or(""), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The middleware: load or start the session, apply `?lang=`, check the CSRF token of a
/// POST, hand the session to the handler as an extension, and set the cookie when new.
pub async fn middleware(State(sessions): State<Sessions>, req: Request, next: Next) -> Response {
    match run(&sessions, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(sessions: &Sessions, mut req: Request, next: Next) -> Result<Response, Error> {
    let existing = match sessions.cookie_token(&req) {
        Some(token) => sessions.load(&token).await?,
        None => None,
    };
    let (mut session, new_token) = match existing {
        Some(s) => (s, None),
        None => {
            let token = random_token();
            let s = sessions.create(&token, accept_language(&req));
            (s, Some(token))
        }
    };
    if let Some(lang) = lang_param(&req)
        && lang != session.lang
    {
        session.lang = lang;
        sessions.save(&session).await?;
    }
    if req.method() == Method::POST && !sessions.is_exempt(req.uri().path()) {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|e| Error::new(ErrorCode::WebForm, e.to_string()))?;
        let sent = form_field(&bytes, "csrf_token").unwrap_or_default();
        // A brand-new session cannot have issued the form: its token never matches.
        if new_token.is_some() || !constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            let mut r = Error::new(
                ErrorCode::WebCsrf,
                crate::lang::Common::get(session.lang).csrf,
            )
            .into_response();
            sessions.store_new(&session).await?;
            if let Some(token) = &new_token
                && let Some(c) = sessions.set_cookie(token)
            {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            return Ok(r);
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(session.clone());
    let mut response = next.run(req).await;
    if let Some(token) = new_token
        && let Some(c) = sessions.set_cookie(&token)
    {
        // Before the cookie goes out, the session it names exists.
        sessions.store_new(&session).await?;
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_and_comparison() {
        assert_eq!(
            form_field(b"a=1&csrf_token=x%2By+z&b=2", "csrf_token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_field(b"a=1", "csrf_token"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
