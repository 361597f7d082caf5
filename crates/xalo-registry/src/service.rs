//! The `registry` role: the population register (owned by the Ministry of Public Security)
//! and the business register (Ministry of Finance) as REST services for their members'
//! gateways. Each register has its own database; the business register asks the population
//! register about people over HTTP (through the exchange in a deployment), never by reading
//! its tables.
//!
//! Every response with personal data needs `X-Road-UserId` (who asks) and `X-Road-Issue`
//! (why), and each person returned gets an access record that the person can read through
//! the data tracker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::net::TcpListener;
use xalo_core::server::{Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode, PersonalCode};
use xalo_ledger::client::{LedgerClient, Recorder};
use xalo_store::{Database, DbResultExt, PoolOptions};

use crate::access_log::{AccessLog, AccessRecord};
use crate::event::{EventPublisher, EventPublishing};
use crate::model::{Enterprise, Person};
use crate::registration::{
    Actor, Birth, Change, EnterpriseRegistration, PersonCheck, Registrar, RequestKey,
};
use crate::store;
use crate::text::fold;

/// `[roles.registry]` settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// The ledger that every change is hashed into.
    pub ledger_url: Option<String>,
    /// Where the business register asks about people: the population service's URL,
    /// through the business member's gateway in a deployment. Default: this server's own
    /// population service.
    pub population_url: Option<String>,
    /// Extra headers for those calls (the gateway's client credentials).
    pub population_headers: BTreeMap<String, String>,
    /// `X-Road-Client` the business register calls as.
    pub business_client: Option<String>,
    /// Where the population register publishes births, deaths and address changes (its
    /// gateway, as its subsystem); no events are pushed when unset.
    pub population_events: Option<EventPublishing>,
    /// Where the business register publishes enterprise registrations.
    pub business_events: Option<EventPublishing>,
}

#[derive(Clone)]
struct Registers {
    population: Registrar,
    business: Registrar,
    people: HttpPersonCheck,
    accesses: AccessLog,
}

/// SQLite connections each register's lookups take in turn, held out of the pool (see
/// `Database::connect_held`): a pooled connection is pinged on every release.
const READERS: usize = 4;

/// Open both registers' databases (migrating them).
pub async fn open(config: &Config) -> Result<(Database, Database), Error> {
    let population = Database::connect_held(
        &config.database_url("population"),
        READERS,
        PoolOptions::default(),
    )
    .await?;
    population.migrate("registry", store::MIGRATIONS).await?;
    let business = Database::connect_held(
        &config.database_url("business"),
        READERS,
        PoolOptions::default(),
    )
    .await?;
    business.migrate("registry", store::MIGRATIONS).await?;
    Ok((population, business))
}

/// Serve both registers on `listener`.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let settings: RegistrySettings = config.role_settings("registry")?;
    let (population_db, business_db) = open(&config).await?;
    let recorder = match &settings.ledger_url {
        Some(url) => Some(Recorder::start(
            LedgerClient::new(url)?,
            256,
            Duration::from_millis(20),
        )),
        None => None,
    };
    let own = listener.local_addr()?;
    let population_url = settings
        .population_url
        .clone()
        .unwrap_or_else(|| format!("http://{own}/population"));
    let people = HttpPersonCheck::new(
        population_url,
        settings.population_headers.clone(),
        settings
            .business_client
            .clone()
            .unwrap_or_else(|| "VN/GOV/000002/business".into()),
    )?;
    let registers = Registers {
        population: Registrar::new(population_db.clone(), "population", recorder.clone())
            .with_events(
                settings
                    .population_events
                    .as_ref()
                    .map(EventPublisher::new)
                    .transpose()?,
            ),
        business: Registrar::new(business_db.clone(), "business", recorder.clone()).with_events(
            settings
                .business_events
                .as_ref()
                .map(EventPublisher::new)
                .transpose()?,
        ),
        people,
        accesses: AccessLog::start(population_db.clone()),
    };
    // Access records are anchored in the ledger off the request path, every second.
    let anchoring = recorder.clone().map(|recorder| {
        let db = population_db.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                // A full pass means more are waiting: go on until the backlog is gone.
                loop {
                    match crate::access_log::anchor_pending(&db, &recorder).await {
                        Ok(n) if n == crate::access_log::ANCHOR_PASS => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "anchoring access records failed");
                            break;
                        }
                    }
                }
            }
        })
    });
    let health_db = population_db.clone();
    let mut handle = Server::new("registry", router(registers.clone()), &config.http)
        .health_check(health_db.health_check())
        .spawn(listener)?;
    // Changes committed while the ledger or the gateway was unreachable are anchored and
    // published when it is back.
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            for r in [&registers.population, &registers.business] {
                if let Err(e) = r.anchor_pending().await {
                    tracing::warn!(error = %e, "anchoring pending changes failed");
                }
                if let Err(e) = r.publish_pending().await {
                    tracing::warn!(error = %e, "publishing pending events failed");
                }
            }
        }
    });
    handle.attach(task.abort_handle());
    if let Some(a) = anchoring {
        handle.attach(a.abort_handle());
    }
    Ok(handle)
}

fn router(registers: Registers) -> Router {
    Router::new()
        .route("/population/persons", get(search_people))
        .route("/population/persons/{code}", get(get_person))
        .route("/population/persons/{code}/children", get(children))
        .route("/population/persons/{code}/household", get(household))
        .route("/population/persons/{code}/history", get(person_history))
        .route("/population/persons/{code}/accesses", get(accesses))
        .route("/population/changes", get(population_changes))
        .route("/population/births", post(birth))
        .route("/population/deaths", post(death))
        .route("/population/address-changes", post(address_change))
        .route("/population/marriages", post(marriage))
        .route(
            "/population/openapi.json",
            get(|| async { openapi("population") }),
        )
        .route(
            "/business/enterprises",
            get(search_enterprises).post(register_enterprise),
        )
        .route("/business/enterprises/{code}", get(get_enterprise))
        .route(
            "/business/enterprises/{code}/history",
            get(enterprise_history),
        )
        .route("/business/changes", get(business_changes))
        .route(
            "/business/openapi.json",
            get(|| async { openapi("business") }),
        )
        .with_state(Arc::new(registers))
}

type Shared = State<Arc<Registers>>;

/// Who asks and why, from the exchange's headers.
struct Request {
    client: String,
    user: String,
    purpose: String,
    message_id: Option<String>,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl Request {
    /// Personal data needs a user and a purpose.
    fn with_purpose(h: &HeaderMap) -> Result<Request, Error> {
        let missing = |what: &str| {
            Error::new(
                ErrorCode::RegistryPurposeRequired,
                format!("personal data is released only with {what}"),
            )
        };
        Ok(Request {
            client: header(h, "x-road-client").unwrap_or_else(|| "unknown".into()),
            user: header(h, "x-road-userid").ok_or_else(|| missing("X-Road-UserId (who asks)"))?,
            purpose: header(h, "x-road-issue")
                .ok_or_else(|| missing("X-Road-Issue (the purpose)"))?,
            message_id: header(h, "x-road-id"),
        })
    }

    /// The actor of a change to `request`, with its `Idempotency-Key` if the caller sent one.
    fn actor_for<T: Serialize>(&self, h: &HeaderMap, request: &T) -> Actor {
        Actor {
            client: self.client.clone(),
            user: self.user.clone(),
            request: header(h, "idempotency-key").map(|k| RequestKey::of(&k, request)),
        }
    }

    /// Record that the people in `subjects` were read; returns once it is committed.
    async fn record(
        &self,
        log: &AccessLog,
        service: &str,
        subjects: &[String],
    ) -> Result<(), Error> {
        let now = chrono::Utc::now().timestamp_millis();
        log.record(
            subjects
                .iter()
                .map(|s| AccessRecord {
                    subject: s.clone(),
                    client: self.client.clone(),
                    user_id: self.user.clone(),
                    purpose: self.purpose.clone(),
                    service: service.to_owned(),
                    message_id: self.message_id.clone(),
                    at_ms: now,
                })
                .collect(),
        )
        .await
    }
}

fn code(s: &str) -> Result<PersonalCode, Error> {
    s.parse().map_err(Error::from)
}

fn not_found(what: &str) -> Error {
    Error::new(
        ErrorCode::RegistryNotFound,
        format!("{what} is not registered"),
    )
}

async fn get_person(
    State(r): Shared,
    Path(c): Path<String>,
    h: HeaderMap,
) -> Result<axum::Json<Person>, Error> {
    let req = Request::with_purpose(&h)?;
    let c = code(&c)?;
    let p = store::person(r.population.database(), &c)
        .await?
        .ok_or_else(|| not_found(&c.to_string()))?;
    req.record(&r.accesses, "persons", &[p.code.to_string()])
        .await?;
    Ok(axum::Json(p))
}

#[derive(Debug, Deserialize)]
struct PeopleQuery {
    /// Full name, matched without diacritics.
    name: Option<String>,
    birth_date: Option<String>,
    /// Residence unit code.
    unit: Option<String>,
    limit: Option<i64>,
}

async fn search_people(
    State(r): Shared,
    Query(q): Query<PeopleQuery>,
    h: HeaderMap,
) -> Result<axum::Json<Vec<Person>>, Error> {
    let req = Request::with_purpose(&h)?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let db = r.population.database();
    let people = match (&q.name, &q.birth_date, &q.unit) {
        (Some(name), Some(born), _) => {
            store::people_where(
                db,
                "name_key = $1 AND birth_date = $2",
                &[fold(name), born.clone()],
                limit,
            )
            .await?
        }
        (Some(name), None, _) => {
            store::people_where(db, "name_key = $1", &[fold(name)], limit).await?
        }
        (None, _, Some(unit)) => {
            store::people_where(db, "residence_unit = $1", std::slice::from_ref(unit), limit)
                .await?
        }
        _ => {
            return Err(Error::new(
                ErrorCode::HttpBadRequest,
                "search by name (and birth_date), or by unit",
            ));
        }
    };
    let subjects: Vec<String> = people.iter().map(|p| p.code.to_string()).collect();
    req.record(&r.accesses, "persons.search", &subjects).await?;
    Ok(axum::Json(people))
}

async fn children(
    State(r): Shared,
    Path(c): Path<String>,
    h: HeaderMap,
) -> Result<axum::Json<Vec<Person>>, Error> {
    let req = Request::with_purpose(&h)?;
    let c = code(&c)?.to_string();
    let db = r.population.database();
    let kids = store::people_where(
        db,
        "father = $1 OR mother = $2",
        &[c.clone(), c.clone()],
        100,
    )
    .await?;
    let mut subjects: Vec<String> = kids.iter().map(|p| p.code.to_string()).collect();
    subjects.push(c);
    req.record(&r.accesses, "persons.children", &subjects)
        .await?;
    Ok(axum::Json(kids))
}

/// The people registered at the same address.
async fn household(
    State(r): Shared,
    Path(c): Path<String>,
    h: HeaderMap,
) -> Result<axum::Json<Vec<Person>>, Error> {
    let req = Request::with_purpose(&h)?;
    let c = code(&c)?;
    let db = r.population.database();
    let p = store::person(db, &c)
        .await?
        .ok_or_else(|| not_found(&c.to_string()))?;
    let members = store::people_where(
        db,
        "residence_unit = $1 AND residence_address = $2 AND alive = 1",
        &[p.residence_unit.clone(), p.residence_address.clone()],
        50,
    )
    .await?;
    let subjects: Vec<String> = members.iter().map(|p| p.code.to_string()).collect();
    req.record(&r.accesses, "persons.household", &subjects)
        .await?;
    Ok(axum::Json(members))
}

async fn person_history(
    State(r): Shared,
    Path(c): Path<String>,
    h: HeaderMap,
) -> Result<axum::Json<Vec<Change>>, Error> {
    let req = Request::with_purpose(&h)?;
    let c = code(&c)?.to_string();
    let history = r.population.history(&c).await?;
    req.record(&r.accesses, "persons.history", &[c]).await?;
    Ok(axum::Json(history))
}

pub use crate::access_log::Access;

/// The data tracker: a person's own access records, to that person only.
async fn accesses(
    State(r): Shared,
    Path(c): Path<String>,
    h: HeaderMap,
) -> Result<axum::Json<Vec<Access>>, Error> {
    let c = code(&c)?.to_string();
    let user = header(&h, "x-road-userid");
    if user.as_deref() != Some(c.as_str()) {
        return Err(Error::new(
            ErrorCode::RegistryForbidden,
            "the access records of a person are shown only to that person (X-Road-UserId)",
        ));
    }
    let rows = sqlx::query(
        "SELECT id, subject, client, user_id, purpose, service, message_id, at_ms, salt, \
         ledger_index FROM registry_access WHERE subject = $1 ORDER BY id DESC LIMIT 500",
    )
    .bind(c)
    .fetch_all(r.population.database().pool())
    .await
    .db("reading access records")?;
    let list = rows
        .iter()
        .map(|row| {
            let ctx = "reading access records";
            Ok(Access {
                id: row.try_get(0).db(ctx)?,
                subject: row.try_get(1).db(ctx)?,
                client: row.try_get(2).db(ctx)?,
                user_id: row.try_get(3).db(ctx)?,
                purpose: row.try_get(4).db(ctx)?,
                service: row.try_get(5).db(ctx)?,
                message_id: row.try_get(6).db(ctx)?,
                at_ms: row.try_get(7).db(ctx)?,
                salt: row.try_get(8).db(ctx)?,
                ledger_index: row.try_get(9).db(ctx)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(axum::Json(list))
}

#[derive(Debug, Deserialize)]
struct Since {
    since: Option<i64>,
    limit: Option<i64>,
}

async fn population_changes(
    State(r): Shared,
    Query(q): Query<Since>,
    h: HeaderMap,
) -> Result<axum::Json<Vec<Change>>, Error> {
    Request::with_purpose(&h)?;
    Ok(axum::Json(
        r.population
            .changes_since(q.since.unwrap_or(0), q.limit.unwrap_or(100))
            .await?,
    ))
}

async fn business_changes(
    State(r): Shared,
    Query(q): Query<Since>,
) -> Result<axum::Json<Vec<Change>>, Error> {
    Ok(axum::Json(
        r.business
            .changes_since(q.since.unwrap_or(0), q.limit.unwrap_or(100))
            .await?,
    ))
}

type JsonBody<T> = Result<axum::Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: JsonBody<T>) -> Result<T, Error> {
    b.map(|axum::Json(t)| t)
        .map_err(|e| Error::from_rejection(ErrorCode::HttpBadRequest, &e.body_text()))
}

/// A registration's answer: what was registered and the change it made.
#[derive(Debug, Serialize, Deserialize)]
pub struct Registered<T> {
    pub record: T,
    pub change: Change,
}

/// A registration's answer; a replay of an earlier request (same `Idempotency-Key`) is
/// marked `Idempotent-Replayed: true`.
fn registered<T: Serialize>(value: T, replayed: bool) -> Response {
    let mut r = axum::Json(value).into_response();
    if replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

fn subject_code(change: &Change) -> Result<PersonalCode, Error> {
    change.subject.parse().map_err(Error::from)
}

async fn birth(State(r): Shared, h: HeaderMap, b: JsonBody<Birth>) -> Result<Response, Error> {
    let b = body(b)?;
    let actor = Request::with_purpose(&h)?.actor_for(&h, &b);
    if let Some(change) = r.population.earlier(&actor).await? {
        let record = store::person(r.population.database(), &subject_code(&change)?)
            .await?
            .ok_or_else(|| not_found(&change.subject))?;
        return Ok(registered(Registered { record, change }, true));
    }
    let (record, change) = r.population.register_birth(&b, &actor).await?;
    Ok(registered(Registered { record, change }, false))
}

#[derive(Debug, Serialize, Deserialize)]
struct Death {
    code: PersonalCode,
    death_date: String,
    legal_basis: String,
}

async fn death(State(r): Shared, h: HeaderMap, b: JsonBody<Death>) -> Result<Response, Error> {
    let d = body(b)?;
    let actor = Request::with_purpose(&h)?.actor_for(&h, &d);
    if let Some(change) = r.population.earlier(&actor).await? {
        return Ok(registered(change, true));
    }
    let change = r
        .population
        .record_death(&d.code, &d.death_date, &d.legal_basis, &actor)
        .await?;
    Ok(registered(change, false))
}

#[derive(Debug, Serialize, Deserialize)]
struct AddressChange {
    code: PersonalCode,
    unit: String,
    address: String,
    legal_basis: String,
}

async fn address_change(
    State(r): Shared,
    h: HeaderMap,
    b: JsonBody<AddressChange>,
) -> Result<Response, Error> {
    let a = body(b)?;
    let actor = Request::with_purpose(&h)?.actor_for(&h, &a);
    if let Some(change) = r.population.earlier(&actor).await? {
        return Ok(registered(change, true));
    }
    let change = r
        .population
        .change_address(&a.code, &a.unit, &a.address, &a.legal_basis, &actor)
        .await?;
    Ok(registered(change, false))
}

#[derive(Debug, Serialize, Deserialize)]
struct Marriage {
    spouses: [PersonalCode; 2],
    date: String,
    legal_basis: String,
}

async fn marriage(
    State(r): Shared,
    h: HeaderMap,
    b: JsonBody<Marriage>,
) -> Result<Response, Error> {
    let m = body(b)?;
    let actor = Request::with_purpose(&h)?.actor_for(&h, &m);
    if let Some(change) = r.population.earlier(&actor).await? {
        return Ok(registered(change, true));
    }
    let change = r
        .population
        .register_marriage(
            &m.spouses[0],
            &m.spouses[1],
            &m.date,
            &m.legal_basis,
            &actor,
        )
        .await?;
    Ok(registered(change, false))
}

async fn get_enterprise(
    State(r): Shared,
    Path(c): Path<String>,
) -> Result<axum::Json<Enterprise>, Error> {
    let c: crate::model::TaxCode = c.parse()?;
    store::enterprise(r.business.database(), &c.to_string())
        .await?
        .map(axum::Json)
        .ok_or_else(|| not_found(&c.to_string()))
}

#[derive(Debug, Deserialize)]
struct EnterpriseQuery {
    /// Part of the name, matched without diacritics.
    name: Option<String>,
    /// The personal code of the legal representative.
    representative: Option<String>,
    limit: Option<i64>,
}

async fn search_enterprises(
    State(r): Shared,
    Query(q): Query<EnterpriseQuery>,
    h: HeaderMap,
) -> Result<axum::Json<Vec<Enterprise>>, Error> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let (filter, value) = match (&q.name, &q.representative) {
        (Some(name), None) => (
            "name_key LIKE $1",
            format!("%{}%", fold(name).replace(['%', '_'], "")),
        ),
        // Which enterprises a person represents is about that person: it needs a purpose
        // and leaves an access record, like a read of the population register.
        (None, Some(rep)) => {
            let req = Request::with_purpose(&h)?;
            let rep = code(rep)?.to_string();
            req.record(
                &r.accesses,
                "enterprises.representative",
                std::slice::from_ref(&rep),
            )
            .await?;
            ("representative = $1", rep)
        }
        _ => {
            return Err(Error::new(
                ErrorCode::HttpBadRequest,
                "search by name or by representative",
            ));
        }
    };
    Ok(axum::Json(
        store::enterprises_where(r.business.database(), filter, &[value], limit).await?,
    ))
}

async fn enterprise_history(
    State(r): Shared,
    Path(c): Path<String>,
) -> Result<axum::Json<Vec<Change>>, Error> {
    let c: crate::model::TaxCode = c.parse()?;
    Ok(axum::Json(r.business.history(&c.to_string()).await?))
}

async fn register_enterprise(
    State(r): Shared,
    h: HeaderMap,
    b: JsonBody<EnterpriseRegistration>,
) -> Result<Response, Error> {
    let e = body(b)?;
    let actor = Request::with_purpose(&h)?.actor_for(&h, &e);
    if let Some(change) = r.business.earlier(&actor).await? {
        let record = store::enterprise(r.business.database(), &change.subject)
            .await?
            .ok_or_else(|| not_found(&change.subject))?;
        return Ok(registered(Registered { record, change }, true));
    }
    let (record, change) = r
        .business
        .register_enterprise(&e, &r.people, &actor)
        .await?;
    Ok(registered(Registered { record, change }, false))
}

/// Asks the population register about a person over HTTP.
#[derive(Clone)]
pub struct HttpPersonCheck {
    base: String,
    headers: BTreeMap<String, String>,
    client_id: String,
    http: reqwest::Client,
}

impl HttpPersonCheck {
    pub fn new(
        base: String,
        headers: BTreeMap<String, String>,
        client_id: String,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        Ok(HttpPersonCheck {
            base: base.trim_end_matches('/').to_owned(),
            headers,
            client_id,
            http,
        })
    }
}

impl PersonCheck for HttpPersonCheck {
    async fn is_living(&self, code: &PersonalCode, actor: &Actor) -> Result<bool, Error> {
        let mut req = self
            .http
            .get(format!("{}/persons/{code}", self.base))
            .header("X-Road-Client", &self.client_id)
            .header("X-Road-UserId", &actor.user)
            .header(
                "X-Road-Issue",
                "enterprise registration: founder and representative check",
            );
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let r = req.send().await.map_err(|e| {
            Error::new(
                ErrorCode::HttpUnavailable,
                format!("asking the population register: {e}"),
            )
        })?;
        match r.status().as_u16() {
            200 => {
                let p: Person = r.json().await.map_err(|e| {
                    Error::new(
                        ErrorCode::HttpUnavailable,
                        format!("population register answer: {e}"),
                    )
                })?;
                Ok(p.alive)
            }
            404 => Ok(false),
            s => Err(Error::new(
                ErrorCode::HttpUnavailable,
                format!(
                    "the population register answered {s}: {}",
                    r.text().await.unwrap_or_default()
                ),
            )),
        }
    }
}

/// The OpenAPI 3 description of a register's service, which its gateway reads endpoints from.
pub fn openapi(register: &str) -> axum::Json<serde_json::Value> {
    let purpose = serde_json::json!([
        { "name": "X-Road-UserId", "in": "header", "required": true, "schema": { "type": "string" } },
        { "name": "X-Road-Issue", "in": "header", "required": true, "schema": { "type": "string" } }
    ]);
    let op = |summary: &str| serde_json::json!({ "summary": summary, "parameters": purpose, "responses": { "200": { "description": "OK" } } });
    let paths = if register == "population" {
        serde_json::json!({
            "/persons": { "get": op("Search people by name and birth date, or by residence unit") },
            "/persons/{code}": { "get": op("A person") },
            "/persons/{code}/children": { "get": op("A person's children") },
            "/persons/{code}/household": { "get": op("The people registered at a person's address") },
            "/persons/{code}/history": { "get": op("The history of a person's record") },
            "/persons/{code}/accesses": { "get": op("Data tracker: who read this person's data (to that person only)") },
            "/changes": { "get": op("Changes and events since a sequence number") },
            "/births": { "post": op("Register a birth") },
            "/deaths": { "post": op("Record a death") },
            "/address-changes": { "post": op("Change a permanent residence") },
            "/marriages": { "post": op("Register a marriage") }
        })
    } else {
        serde_json::json!({
            "/enterprises": { "get": op("Search enterprises by name, or by legal representative"), "post": op("Register an enterprise") },
            "/enterprises/{code}": { "get": op("An enterprise") },
            "/enterprises/{code}/history": { "get": op("The history of an enterprise") },
            "/changes": { "get": op("Changes since a sequence number") }
        })
    };
    axum::Json(serde_json::json!({
        "openapi": "3.0.3",
        "info": { "title": format!("Xalo {register} register"), "version": xalo_core::VERSION },
        "paths": paths
    }))
}
