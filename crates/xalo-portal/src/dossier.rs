//! Dossiers (*hồ sơ*): one person's application for one procedure, from draft to result.
//!
//! # Schema (migration component `portal`)
//!
//! Other modules build on these tables; they add their own tables or columns in their own
//! migration components (`portal-office`, `portal-payment`, …) rather than editing these
//! steps. Times are Unix seconds (`BIGINT`); people are written as personal codes
//! (`VN001203012345`); form data is JSON text.
//!
//! `portal_dossier`: one row per dossier.
//!
//! | column | meaning |
//! |---|---|
//! | `code` TEXT PK | the dossier code `AGENCY-YYMMDD-NNNN` (agency code, day in Vietnam's time zone, serial per agency and day), e.g. `G01.07-261128-0001`; given at creation, so a draft already has the code that prefill queries name as their purpose |
//! | `procedure_code` | the catalogue's procedure code |
//! | `applicant` | the personal code of the person who applies and owns the dossier |
//! | `applicant_name` | the name as national sign-in gave it |
//! | `agency` | the agency responsible for the procedure (receives the dossier) |
//! | `current_agency`, `current_step` | where the dossier is now in the procedure's workflow |
//! | `officer` | the officer the dossier is assigned to (their `sub`), or NULL |
//! | `state` | `draft`, `submitted`, `supplement_requested`, `processing`, `approved`, `rejected`, `cancelled` (see [`State`]) |
//! | `channel` | `online` or `offline` (submitted at a counter), for the KPIs |
//! | `form_json` | the form data, validated against the procedure's schema on submit |
//! | `supplement_note` | what the officer asked for, while a supplement is requested |
//! | `created_unix`, `updated_unix` | |
//! | `submitted_unix` | first submission, NULL for a draft |
//! | `due_unix` | the legal deadline (working days from submission, computed by the caller), or NULL |
//! | `finished_unix` | when it was approved, rejected or cancelled |
//! | `rating`, `rating_note` | the citizen's satisfaction (1–5) with a finished dossier |
//! | `version` | bumped on every change: writers compare it (optimistic concurrency), and it numbers the events |
//!
//! `portal_dossier_event`: the timeline, one row per change, primary key
//! (`dossier_code`, `seq`), `seq` from 1. Columns: `at_unix`, `actor_kind` (`citizen`,
//! `officer`, `system`), `actor` (personal code, officer `sub` or system name), `action`
//! (see [`Action`]; other modules may record their own with [`record_event`], e.g.
//! `paid`, `signed`, `result_issued`), `from_state`, `to_state` (equal when the state did
//! not change), `agency` (where the dossier was then) and `note`.
//!
//! # Authorisation
//!
//! Every function that acts for a citizen takes the signed-in person and checks that they
//! own the dossier; another person's dossier answers exactly as an unknown one does
//! (`XALO-PORTAL-001`, 404), so codes cannot be probed. Officers' functions take the
//! officer; the back office checks their agency and roles before calling them.
//!
//! # State machine
//!
//! ```text
//! draft ──submit──▶ submitted ──accept──▶ processing ──approve──▶ approved
//!   │                 │   ▲                  │  │     └─reject──▶ rejected
//!   │                 │   └──answer──┐       │  └─transfer (agency/step)
//!   │                 ├─request──▶ supplement_requested ◀─request─┘
//!   │                 └─reject (at reception)─▶ rejected
//!   └─cancel / submitted─cancel / supplement_requested─cancel──▶ cancelled
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_store::{Backend, Database, DbResultExt, Migration, Row};

/// The migration component of the dossier tables.
pub const COMPONENT: &str = "portal";

const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "dossiers and their timeline",
    "CREATE TABLE portal_dossier (
        code TEXT PRIMARY KEY,
        procedure_code TEXT NOT NULL,
        applicant TEXT NOT NULL,
        applicant_name TEXT NOT NULL,
        agency TEXT NOT NULL,
        current_agency TEXT NOT NULL,
        current_step TEXT NOT NULL,
        officer TEXT,
        state TEXT NOT NULL,
        channel TEXT NOT NULL,
        form_json TEXT NOT NULL,
        supplement_note TEXT,
        created_unix BIGINT NOT NULL,
        updated_unix BIGINT NOT NULL,
        submitted_unix BIGINT,
        due_unix BIGINT,
        finished_unix BIGINT,
        rating BIGINT,
        rating_note TEXT,
        version BIGINT NOT NULL
    );
    CREATE INDEX portal_dossier_applicant ON portal_dossier (applicant, updated_unix);
    CREATE INDEX portal_dossier_queue ON portal_dossier (current_agency, state, current_step);
    CREATE INDEX portal_dossier_procedure ON portal_dossier (procedure_code, state);
    CREATE TABLE portal_dossier_event (
        dossier_code TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_unix BIGINT NOT NULL,
        actor_kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        agency TEXT NOT NULL,
        note TEXT,
        PRIMARY KEY (dossier_code, seq)
    );
    CREATE TABLE portal_dossier_counter (
        prefix TEXT PRIMARY KEY,
        last BIGINT NOT NULL
    );",
)];

/// Create or update the dossier tables.
pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate(COMPONENT, MIGRATIONS).await
}

/// The longest note (supplement request, reason, rating comment) kept, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
/// The largest form data kept, in bytes of JSON.
pub const MAX_FORM_BYTES: usize = 256 * 1024;

/// Where a dossier is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Draft,
    Submitted,
    SupplementRequested,
    Processing,
    Approved,
    Rejected,
    Cancelled,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Draft,
        State::Submitted,
        State::SupplementRequested,
        State::Processing,
        State::Approved,
        State::Rejected,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Draft => "draft",
            State::Submitted => "submitted",
            State::SupplementRequested => "supplement_requested",
            State::Processing => "processing",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Cancelled => "cancelled",
        }
    }

    /// Approved, rejected or cancelled: nothing more happens to it.
    pub fn is_finished(self) -> bool {
        matches!(self, State::Approved | State::Rejected | State::Cancelled)
    }

    /// Whether the citizen may still withdraw it.
    pub fn is_cancellable(self) -> bool {
        matches!(
            self,
            State::Draft | State::Submitted | State::SupplementRequested
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        State::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| Error::new(ErrorCode::StoreQuery, format!("unknown dossier state {s}")))
    }
}

/// How the dossier reached the agency (Decision 766 counts the online share).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Online,
    Offline,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Online => "online",
            Channel::Offline => "offline",
        }
    }
}

impl FromStr for Channel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "online" => Ok(Channel::Online),
            "offline" => Ok(Channel::Offline),
            _ => Err(Error::new(
                ErrorCode::PortalBadInput,
                format!("unknown channel {s}"),
            )),
        }
    }
}

/// What happened, in the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    DraftSaved,
    Submitted,
    SupplementRequested,
    SupplementAnswered,
    Accepted,
    Assigned,
    Transferred,
    Approved,
    Rejected,
    Cancelled,
    Rated,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::DraftSaved => "draft_saved",
            Action::Submitted => "submitted",
            Action::SupplementRequested => "supplement_requested",
            Action::SupplementAnswered => "supplement_answered",
            Action::Accepted => "accepted",
            Action::Assigned => "assigned",
            Action::Transferred => "transferred",
            Action::Approved => "approved",
            Action::Rejected => "rejected",
            Action::Cancelled => "cancelled",
            Action::Rated => "rated",
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The applicant (or another citizen, which the checks refuse).
    Citizen(PersonalCode),
    /// An officer, by their sign-in `sub`.
    Officer(String),
    /// A subsystem (payment callback, result issuer), by name.
    System(String),
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Citizen(_) => "citizen",
            Actor::Officer(_) => "officer",
            Actor::System(_) => "system",
        }
    }

    pub fn id(&self) -> String {
        match self {
            Actor::Citizen(p) => p.to_string(),
            Actor::Officer(s) | Actor::System(s) => s.clone(),
        }
    }
}

/// One dossier as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dossier {
    pub code: String,
    pub procedure_code: String,
    pub applicant: String,
    pub applicant_name: String,
    pub agency: String,
    pub current_agency: String,
    pub current_step: String,
    pub officer: Option<String>,
    pub state: State,
    pub channel: Channel,
    pub form: serde_json::Value,
    pub supplement_note: Option<String>,
    pub created_unix: i64,
    pub updated_unix: i64,
    pub submitted_unix: Option<i64>,
    pub due_unix: Option<i64>,
    pub finished_unix: Option<i64>,
    pub rating: Option<i64>,
    pub rating_note: Option<String>,
    pub version: i64,
}

impl Dossier {
    /// Whether `person` owns this dossier.
    pub fn is_owned_by(&self, person: &PersonalCode) -> bool {
        self.applicant == person.to_string()
    }
}

/// One entry of a dossier's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub seq: i64,
    pub at_unix: i64,
    pub actor_kind: String,
    pub actor: String,
    pub action: String,
    pub from_state: State,
    pub to_state: State,
    pub agency: String,
    pub note: Option<String>,
}

/// What a new dossier starts with.
#[derive(Debug, Clone)]
pub struct NewDossier {
    pub procedure_code: String,
    pub agency: String,
    /// The first step of the procedure's workflow.
    pub first_step: String,
    pub applicant: PersonalCode,
    pub applicant_name: String,
    pub channel: Channel,
    pub form: serde_json::Value,
}

pub use xalo_core::unix_now;

fn not_found(code: &str) -> Error {
    Error::new(
        ErrorCode::PortalDossierNotFound,
        format!("no dossier {code} for the signed-in person"),
    )
}

fn wrong_state(d: &Dossier, what: &str) -> Error {
    Error::new(
        ErrorCode::PortalDossierState,
        format!("dossier {} is {}; it cannot be {what}", d.code, d.state),
    )
}

/// Check an agency code as dossier codes use it: letters, digits, dots; 1 to 32.
fn check_agency(agency: &str) -> Result<(), Error> {
    if agency.is_empty()
        || agency.len() > 32
        || !agency
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    {
        return Err(Error::new(
            ErrorCode::PortalBadInput,
            format!("agency code {agency:?}: expected 1 to 32 letters, digits or dots"),
        ));
    }
    Ok(())
}

fn check_note(note: Option<&str>) -> Result<Option<String>, Error> {
    match note.map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) if n.chars().count() > MAX_NOTE_CHARS => Err(Error::new(
            ErrorCode::PortalBadInput,
            format!("the note is longer than {MAX_NOTE_CHARS} characters"),
        )),
        Some(n) => Ok(Some(n.to_owned())),
    }
}

fn required_note(note: &str, what: &str) -> Result<String, Error> {
    check_note(Some(note))?
        .ok_or_else(|| Error::new(ErrorCode::PortalBadInput, format!("{what} is required")))
}

fn form_text(form: &serde_json::Value) -> Result<String, Error> {
    if !form.is_object() {
        return Err(Error::new(
            ErrorCode::PortalFormInvalid,
            "form data must be a JSON object",
        ));
    }
    let text = form.to_string();
    if text.len() > MAX_FORM_BYTES {
        return Err(Error::new(
            ErrorCode::PortalFormInvalid,
            format!("form data is larger than {MAX_FORM_BYTES} bytes"),
        ));
    }
    Ok(text)
}

/// The day part of a dossier code: the date in Vietnam (UTC+7), `YYMMDD`.
pub fn code_day(unix: i64) -> String {
    // UTC+7 all year (Vietnam has no daylight saving time).
    chrono::DateTime::from_timestamp(unix + 7 * 3600, 0)
        .unwrap_or_default()
        .format("%y%m%d")
        .to_string()
}

const COLUMNS: &str = "code, procedure_code, applicant, applicant_name, agency, current_agency, \
     current_step, officer, state, channel, form_json, supplement_note, created_unix, \
     updated_unix, submitted_unix, due_unix, finished_unix, rating, rating_note, version";

fn from_row(row: &xalo_store::sqlx::any::AnyRow) -> Result<Dossier, Error> {
    let c = "reading a dossier";
    let state: String = row.try_get("state").db(c)?;
    let channel: String = row.try_get("channel").db(c)?;
    let form: String = row.try_get("form_json").db(c)?;
    Ok(Dossier {
        code: row.try_get("code").db(c)?,
        procedure_code: row.try_get("procedure_code").db(c)?,
        applicant: row.try_get("applicant").db(c)?,
        applicant_name: row.try_get("applicant_name").db(c)?,
        agency: row.try_get("agency").db(c)?,
        current_agency: row.try_get("current_agency").db(c)?,
        current_step: row.try_get("current_step").db(c)?,
        officer: row.try_get("officer").db(c)?,
        state: state.parse()?,
        channel: channel.parse()?,
        form: serde_json::from_str(&form)
            .map_err(|e| Error::new(ErrorCode::StoreQuery, format!("{c}: form: {e}")))?,
        supplement_note: row.try_get("supplement_note").db(c)?,
        created_unix: row.try_get("created_unix").db(c)?,
        updated_unix: row.try_get("updated_unix").db(c)?,
        submitted_unix: row.try_get("submitted_unix").db(c)?,
        due_unix: row.try_get("due_unix").db(c)?,
        finished_unix: row.try_get("finished_unix").db(c)?,
        rating: row.try_get("rating").db(c)?,
        rating_note: row.try_get("rating_note").db(c)?,
        version: row.try_get("version").db(c)?,
    })
}

type Tx = xalo_store::WriteTx;

async fn insert_event(
    tx: &mut Tx,
    d: &Dossier,
    seq: i64,
    actor: &Actor,
    action: &str,
    from: State,
    note: Option<&str>,
) -> Result<(), Error> {
    xalo_store::sqlx::query(
        "INSERT INTO portal_dossier_event (dossier_code, seq, at_unix, actor_kind, actor, action, \
         from_state, to_state, agency, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(d.code.clone())
    .bind(seq)
    .bind(unix_now())
    .bind(actor.kind())
    .bind(actor.id())
    .bind(action.to_owned())
    .bind(from.as_str())
    .bind(d.state.as_str())
    .bind(d.current_agency.clone())
    .bind(note.map(str::to_owned))
    .execute(&mut **tx)
    .await
    .db("recording a dossier event")?;
    Ok(())
}

/// Start a dossier as a draft for its applicant and give it its code.
pub async fn create_draft(db: &Database, new: &NewDossier) -> Result<Dossier, Error> {
    check_new(new)?;
    let now = unix_now();
    let prefix = code_prefix(&new.agency, now);
    let mut tx = db.begin_write().await?;
    let serial = reserve(&mut tx, &prefix, 1).await?;
    let dossier = insert_draft(&mut tx, new, format!("{prefix}-{serial:04}"), now, None).await?;
    tx.commit().await.db("committing a new dossier")?;
    Ok(dossier)
}

/// What prefilling a new draft from the registers gave, recorded on its timeline by the
/// system (`prefill`) in the transaction that creates the draft.
#[derive(Debug, Clone)]
pub struct PrefillRecord {
    /// The draft's form data with the prefilled values.
    pub form: serde_json::Value,
    /// The timeline action (`prefilled`, or the failure's).
    pub action: String,
    /// The fields filled, or the failure's code.
    pub note: String,
}

/// Start a draft under a code from [`Codes::next`], with what prefilling it gave, in one
/// write transaction: the registers are asked before it, with the code as the purpose, so
/// that no network call holds the write lock.
pub async fn create_prefilled_draft(
    db: &Database,
    new: &NewDossier,
    code: String,
    prefill: Option<PrefillRecord>,
) -> Result<Dossier, Error> {
    check_new(new)?;
    if let Some(p) = &prefill {
        form_text(&p.form)?;
    }
    if db.backend() == Backend::Sqlite
        && let Some(p) = &prefill
    {
        return insert_prefilled_at_once(db, new, code, p).await;
    }
    let mut tx = db.begin_write().await?;
    let dossier = insert_draft(&mut tx, new, code, unix_now(), prefill).await?;
    tx.commit().await.db("committing a new dossier")?;
    Ok(dossier)
}

type Query<'q> =
    xalo_store::sqlx::query::Query<'q, xalo_store::sqlx::Any, xalo_store::sqlx::any::AnyArguments>;

/// Store a new dossier: parameters `$1`…`$13`, as [`bind_new`] binds them. A macro, so
/// that the write script below is spelled with the same statement.
macro_rules! insert_dossier {
    () => {
        "INSERT INTO portal_dossier (code, procedure_code, applicant, applicant_name, agency, \
         current_agency, current_step, officer, state, channel, form_json, created_unix, \
         updated_unix, version) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11, \
         $12, $13)"
    };
}

fn bind_new<'q>(q: Query<'q>, d: &Dossier, form: String) -> Query<'q> {
    q.bind(d.code.clone())
        .bind(d.procedure_code.clone())
        .bind(d.applicant.clone())
        .bind(d.applicant_name.clone())
        .bind(d.agency.clone())
        .bind(d.current_agency.clone())
        .bind(d.current_step.clone())
        .bind(d.state.as_str())
        .bind(d.channel.as_str())
        .bind(form)
        .bind(d.created_unix)
        .bind(d.updated_unix)
        .bind(d.version)
}

/// Write a changed dossier if it is still at the version read: parameters `$1`…`$15`, as
/// [`bind_update`] binds them (a macro for the same reason as [`insert_dossier`]).
macro_rules! update_dossier {
    () => {
        "UPDATE portal_dossier SET current_agency = $1, current_step = $2, officer = $3, \
         state = $4, form_json = $5, supplement_note = $6, updated_unix = $7, \
         submitted_unix = $8, due_unix = $9, finished_unix = $10, rating = $11, \
         rating_note = $12, version = $13 WHERE code = $14 AND version = $15"
    };
}

fn bind_update<'q>(q: Query<'q>, d: &Dossier, form: String, version: i64) -> Query<'q> {
    q.bind(d.current_agency.clone())
        .bind(d.current_step.clone())
        .bind(d.officer.clone())
        .bind(d.state.as_str())
        .bind(form)
        .bind(d.supplement_note.clone())
        .bind(d.updated_unix)
        .bind(d.submitted_unix)
        .bind(d.due_unix)
        .bind(d.finished_unix)
        .bind(d.rating)
        .bind(d.rating_note.clone())
        .bind(d.version)
        .bind(d.code.clone())
        .bind(version)
}

/// A new draft with what prefilling gave and its two first events, in one
/// [`Database::write_script`]: the portal's busiest write, sent whole on SQLite.
const NEW_PREFILLED_DRAFT: &str = concat!(
    "BEGIN IMMEDIATE; ",
    insert_dossier!(),
    "; INSERT INTO portal_dossier_event (dossier_code, seq, at_unix, actor_kind, actor, \
     action, from_state, to_state, agency, note) VALUES \
     ($1, 1, $11, $14, $15, $16, $8, $8, $6, NULL), ($1, 2, $11, $17, $18, $19, $8, $8, $6, $20); \
     COMMIT"
);

async fn insert_prefilled_at_once(
    db: &Database,
    new: &NewDossier,
    code: String,
    prefill: &PrefillRecord,
) -> Result<Dossier, Error> {
    let now = unix_now();
    let note = check_note(Some(&prefill.note))?;
    let dossier = draft_of(new, code, now, Some(prefill));
    let created = Actor::Citizen(new.applicant);
    let system = Actor::System("prefill".into());
    db.write_script(
        bind_new(
            xalo_store::sqlx::query(NEW_PREFILLED_DRAFT),
            &dossier,
            form_text(&dossier.form)?,
        )
        .bind(created.kind())
        .bind(created.id())
        .bind(Action::Created.as_str())
        .bind(system.kind())
        .bind(system.id())
        .bind(prefill.action.clone())
        .bind(note),
        "storing a dossier",
    )
    .await?;
    Ok(dossier)
}

fn check_new(new: &NewDossier) -> Result<(), Error> {
    check_agency(&new.agency)?;
    if new.procedure_code.trim().is_empty() {
        return Err(Error::new(ErrorCode::PortalBadInput, "no procedure code"));
    }
    form_text(&new.form)?;
    Ok(())
}

/// The code of a dossier without its serial: agency and day.
fn code_prefix(agency: &str, now: i64) -> String {
    format!("{agency}-{}", code_day(now))
}

/// Take `count` serials under `prefix`; returns the last of them.
async fn reserve(tx: &mut Tx, prefix: &str, count: i64) -> Result<i64, Error> {
    xalo_store::sqlx::query(
        "INSERT INTO portal_dossier_counter (prefix, last) VALUES ($1, $2) \
         ON CONFLICT (prefix) DO UPDATE SET last = portal_dossier_counter.last + $2 \
         RETURNING last",
    )
    .bind(prefix.to_owned())
    .bind(count)
    .fetch_one(&mut **tx)
    .await
    .db("numbering a dossier")?
    .try_get(0)
    .db("numbering a dossier")
}

/// Serials reserved per write when codes come from [`Codes`].
const CODE_BLOCK: i64 = 128;

/// Dossier codes handed out from blocks of serials reserved in the counter table, so that
/// a code costs a write only once per block. Codes stay unique across processes sharing
/// the database (each reserves its own blocks); a restart leaves a gap in the numbers.
///
/// The next block is reserved in the background once half of the current one is used:
/// reserved on the spot, it would make every draft started meanwhile wait for a place in
/// the single writer's queue.
#[derive(Default)]
pub struct Codes {
    blocks: Arc<tokio::sync::Mutex<HashMap<String, Blocks>>>,
}

/// The serials of one prefix: the block in use (next, last) and the one reserved ahead.
#[derive(Debug, Default)]
struct Blocks {
    current: Option<(i64, i64)>,
    spare: Option<(i64, i64)>,
    refilling: bool,
}

impl Blocks {
    fn take(&mut self) -> Option<i64> {
        if self.current.is_none_or(|(next, last)| next > last) {
            self.current = self.spare.take();
        }
        let (next, last) = self.current.as_mut()?;
        if *next > *last {
            return None;
        }
        *next += 1;
        Some(*next - 1)
    }

    fn wants_spare(&self) -> bool {
        let left = self.current.map_or(0, |(next, last)| last - next + 1);
        left <= CODE_BLOCK / 2 && self.spare.is_none() && !self.refilling
    }
}

impl Codes {
    /// A fresh code for a dossier of `agency` today.
    pub async fn next(&self, db: &Database, agency: &str) -> Result<String, Error> {
        check_agency(agency)?;
        let day = code_day(unix_now());
        let prefix = format!("{agency}-{day}");
        let mut blocks = self.blocks.lock().await;
        // Yesterday's blocks are of no more use.
        blocks.retain(|k, _| k.ends_with(&day));
        let b = blocks.entry(prefix.clone()).or_default();
        let serial = match b.take() {
            Some(serial) => serial,
            None => {
                let first = reserve_block(db, &prefix).await?;
                b.current = Some((first + 1, first + CODE_BLOCK - 1));
                first
            }
        };
        if b.wants_spare() {
            b.refilling = true;
            let (blocks, db, prefix) = (self.blocks.clone(), db.clone(), prefix.clone());
            tokio::spawn(async move {
                let reserved = reserve_block(&db, &prefix).await;
                let mut blocks = blocks.lock().await;
                let Some(b) = blocks.get_mut(&prefix) else {
                    return;
                };
                b.refilling = false;
                match reserved {
                    Ok(first) => b.spare = Some((first, first + CODE_BLOCK - 1)),
                    // The next code reserves on the spot.
                    Err(e) => tracing::warn!(error = %e, "reserving dossier codes ahead failed"),
                }
            });
        }
        Ok(format!("{prefix}-{serial:04}"))
    }
}

/// Reserve [`CODE_BLOCK`] serials under `prefix`; returns the first.
async fn reserve_block(db: &Database, prefix: &str) -> Result<i64, Error> {
    let mut tx = db.begin_write().await?;
    let last = reserve(&mut tx, prefix, CODE_BLOCK).await?;
    tx.commit().await.db("reserving dossier codes")?;
    Ok(last - CODE_BLOCK + 1)
}

/// A new draft as it will be stored: with the prefilled form data, if any, as its second
/// version.
fn draft_of(new: &NewDossier, code: String, now: i64, prefill: Option<&PrefillRecord>) -> Dossier {
    let mut dossier = Dossier {
        code,
        procedure_code: new.procedure_code.clone(),
        applicant: new.applicant.to_string(),
        applicant_name: new.applicant_name.clone(),
        agency: new.agency.clone(),
        current_agency: new.agency.clone(),
        current_step: new.first_step.clone(),
        officer: None,
        state: State::Draft,
        channel: new.channel,
        form: new.form.clone(),
        supplement_note: None,
        created_unix: now,
        updated_unix: now,
        submitted_unix: None,
        due_unix: None,
        finished_unix: None,
        rating: None,
        rating_note: None,
        version: 1,
    };
    if let Some(p) = prefill {
        dossier.form = p.form.clone();
        dossier.version = 2;
    }
    dossier
}

/// Insert a new draft under `code` with its first events: created by the applicant, then
/// what prefilling gave.
async fn insert_draft(
    tx: &mut Tx,
    new: &NewDossier,
    code: String,
    now: i64,
    prefill: Option<PrefillRecord>,
) -> Result<Dossier, Error> {
    let dossier = draft_of(new, code, now, prefill.as_ref());
    let prefill_note = match &prefill {
        Some(p) => check_note(Some(&p.note))?,
        None => None,
    };
    bind_new(
        xalo_store::sqlx::query(insert_dossier!()),
        &dossier,
        form_text(&dossier.form)?,
    )
    .execute(&mut **tx)
    .await
    .db("storing a dossier")?;
    let created = Actor::Citizen(new.applicant);
    let Some(p) = &prefill else {
        insert_event(
            tx,
            &dossier,
            1,
            &created,
            Action::Created.as_str(),
            State::Draft,
            None,
        )
        .await?;
        return Ok(dossier);
    };
    // Both first events in one statement: the write lock is held one round trip less.
    let system = Actor::System("prefill".into());
    let (state, at) = (State::Draft.as_str(), unix_now());
    xalo_store::sqlx::query(
        "INSERT INTO portal_dossier_event (dossier_code, seq, at_unix, actor_kind, actor, action, \
         from_state, to_state, agency, note) VALUES ($1, 1, $2, $3, $4, $5, $6, $6, $7, NULL), \
         ($1, 2, $2, $8, $9, $10, $6, $6, $7, $11)",
    )
    .bind(dossier.code.clone())
    .bind(at)
    .bind(created.kind())
    .bind(created.id())
    .bind(Action::Created.as_str())
    .bind(state)
    .bind(dossier.current_agency.clone())
    .bind(system.kind())
    .bind(system.id())
    .bind(p.action.clone())
    .bind(prefill_note)
    .execute(&mut **tx)
    .await
    .db("recording a dossier event")?;
    Ok(dossier)
}

/// A dossier by code, whoever owns it: for officers and subsystems, which check their own
/// rights. Citizens' pages use [`get_for`].
pub async fn get(db: &Database, code: &str) -> Result<Option<Dossier>, Error> {
    let row = db
        .fetch_optional(
            xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM portal_dossier WHERE code = $1"
            )))
            .bind(code.to_owned()),
        )
        .await
        .db("reading a dossier")?;
    row.as_ref().map(from_row).transpose()
}

/// A dossier of `person`: another person's dossier is not found, as an unknown code is.
pub async fn get_for(db: &Database, code: &str, person: &PersonalCode) -> Result<Dossier, Error> {
    match get(db, code).await? {
        Some(d) if d.is_owned_by(person) => Ok(d),
        _ => Err(not_found(code)),
    }
}

/// The person's dossiers, the most recently changed first.
pub async fn list_for(db: &Database, person: &PersonalCode) -> Result<Vec<Dossier>, Error> {
    let rows = db
        .fetch_all(
            xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM portal_dossier WHERE applicant = $1 \
                 ORDER BY updated_unix DESC, code DESC LIMIT 500"
            )))
            .bind(person.to_string()),
        )
        .await
        .db("listing dossiers")?;
    rows.iter().map(from_row).collect()
}

/// The timeline of a dossier, oldest first. The caller has checked the right to see it.
pub async fn events(db: &Database, code: &str) -> Result<Vec<Event>, Error> {
    let rows = db
        .fetch_all(
            xalo_store::sqlx::query(
                "SELECT seq, at_unix, actor_kind, actor, action, from_state, to_state, agency, \
                 note FROM portal_dossier_event WHERE dossier_code = $1 ORDER BY seq",
            )
            .bind(code.to_owned()),
        )
        .await
        .db("reading a dossier's timeline")?;
    let c = "reading a dossier event";
    rows.iter()
        .map(|r| {
            let from: String = r.try_get("from_state").db(c)?;
            let to: String = r.try_get("to_state").db(c)?;
            Ok(Event {
                seq: r.try_get("seq").db(c)?,
                at_unix: r.try_get("at_unix").db(c)?,
                actor_kind: r.try_get("actor_kind").db(c)?,
                actor: r.try_get("actor").db(c)?,
                action: r.try_get("action").db(c)?,
                from_state: from.parse()?,
                to_state: to.parse()?,
                agency: r.try_get("agency").db(c)?,
                note: r.try_get("note").db(c)?,
            })
        })
        .collect()
}

/// Change a dossier in one transaction: read it, let `change` check and modify it, write it
/// back if nobody changed it meanwhile, and record the event.
async fn change<F>(
    db: &Database,
    code: &str,
    actor: &Actor,
    action: &str,
    note: Option<&str>,
    change: F,
) -> Result<Dossier, Error>
where
    F: FnOnce(&mut Dossier) -> Result<(), Error>,
{
    let mut tx = db.begin_write().await?;
    let row = xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM portal_dossier WHERE code = $1"
    )))
    .bind(code.to_owned())
    .fetch_optional(&mut *tx)
    .await
    .db("reading a dossier")?;
    let d = match row.as_ref().map(from_row).transpose()? {
        Some(d) => d,
        None => return Err(not_found(code)),
    };
    let prepared = prepare_change(d, actor, change)?;
    write_change(tx, prepared, actor, action, note).await
}

/// [`change`] of a dossier as the caller read it (outside the transaction): refused with
/// `PortalDossierChanged` if anyone changed it since, as [`change`] refuses a race. The
/// checks and the change are made before the write transaction, which then only writes.
async fn change_read<F>(
    db: &Database,
    d: Dossier,
    actor: &Actor,
    action: &str,
    note: Option<&str>,
    change: F,
) -> Result<Dossier, Error>
where
    F: FnOnce(&mut Dossier) -> Result<(), Error>,
{
    let prepared = prepare_change(d, actor, change)?;
    if db.backend() == Backend::Sqlite {
        return write_change_at_once(db, prepared, actor, action, note).await;
    }
    let tx = db.begin_write().await?;
    write_change(tx, prepared, actor, action, note).await
}

/// [`write_change`] as one [`Database::write_script`] (SQLite): the event is inserted only
/// if the update found the dossier at the version read (`changes()` counts the rows the
/// update changed), and an empty transaction commits when it did not; the script answers
/// with the number of events inserted.
const CHANGE_READ: &str = concat!(
    "BEGIN IMMEDIATE; ",
    update_dossier!(),
    "; INSERT INTO portal_dossier_event (dossier_code, seq, at_unix, actor_kind, actor, \
     action, from_state, to_state, agency, note) \
     SELECT $14, $13, $7, $16, $17, $18, $19, $4, $1, $20 WHERE changes() = 1; \
     SELECT changes(); \
     COMMIT"
);

async fn write_change_at_once(
    db: &Database,
    prepared: Prepared,
    actor: &Actor,
    action: &str,
    note: Option<&str>,
) -> Result<Dossier, Error> {
    let Prepared {
        d,
        from,
        version,
        form,
    } = prepared;
    let answer = db
        .write_script(
            bind_update(xalo_store::sqlx::query(CHANGE_READ), &d, form, version)
                .bind(actor.kind())
                .bind(actor.id())
                .bind(action.to_owned())
                .bind(from.as_str())
                .bind(note.map(str::to_owned)),
            "updating a dossier",
        )
        .await?;
    let changed: i64 = match answer.first() {
        Some(row) => row.try_get(0).db("updating a dossier")?,
        None => -1,
    };
    match changed {
        1 => Ok(d),
        0 => Err(changed_meanwhile(&d.code)),
        n => Err(Error::new(
            ErrorCode::Internal,
            format!("updating dossier {} recorded {n} events, not 1", d.code),
        )),
    }
}

/// The optimistic update found another version than the one read.
fn changed_meanwhile(code: &str) -> Error {
    Error::new(
        ErrorCode::PortalDossierChanged,
        format!("dossier {code} was changed meanwhile"),
    )
}

/// A changed dossier ready to be written: with its state and version as read, and its
/// form data as stored.
struct Prepared {
    d: Dossier,
    from: State,
    version: i64,
    form: String,
}

/// Check the actor and apply `change` to the dossier as read.
fn prepare_change<F>(mut d: Dossier, actor: &Actor, change: F) -> Result<Prepared, Error>
where
    F: FnOnce(&mut Dossier) -> Result<(), Error>,
{
    if let Actor::Citizen(person) = actor
        && !d.is_owned_by(person)
    {
        return Err(not_found(&d.code));
    }
    let from = d.state;
    let version = d.version;
    change(&mut d)?;
    let now = unix_now();
    d.updated_unix = now;
    d.version = version + 1;
    if d.state.is_finished() && !from.is_finished() {
        d.finished_unix = Some(now);
    }
    let form = form_text(&d.form)?;
    Ok(Prepared {
        d,
        from,
        version,
        form,
    })
}

/// Write a prepared change if the dossier's version is still the one read, with its
/// event; commits `tx`.
async fn write_change(
    mut tx: Tx,
    prepared: Prepared,
    actor: &Actor,
    action: &str,
    note: Option<&str>,
) -> Result<Dossier, Error> {
    let Prepared {
        d,
        from,
        version,
        form,
    } = prepared;
    let updated = bind_update(
        xalo_store::sqlx::query(update_dossier!()),
        &d,
        form,
        version,
    )
    .execute(&mut *tx)
    .await
    .db("updating a dossier")?;
    if updated.rows_affected() != 1 {
        return Err(changed_meanwhile(&d.code));
    }
    insert_event(&mut tx, &d, d.version, actor, action, from, note).await?;
    tx.commit().await.db("committing a dossier change")?;
    Ok(d)
}

/// Replace a draft's form data (no validation: a draft may be incomplete).
pub async fn save_draft(
    db: &Database,
    code: &str,
    person: &PersonalCode,
    form: serde_json::Value,
) -> Result<Dossier, Error> {
    form_text(&form)?;
    let actor = Actor::Citizen(*person);
    change(db, code, &actor, Action::DraftSaved.as_str(), None, |d| {
        if d.state != State::Draft {
            return Err(wrong_state(d, "edited as a draft"));
        }
        d.form = form;
        Ok(())
    })
    .await
}

/// Put data prefilled from the registers into a draft, as the system (`prefill`) rather
/// than the citizen, with `action` and `note` (the fields filled) on the timeline.
pub async fn prefill_draft(
    db: &Database,
    code: &str,
    person: &PersonalCode,
    form: serde_json::Value,
    action: &str,
    note: &str,
) -> Result<Dossier, Error> {
    form_text(&form)?;
    let note = check_note(Some(note))?;
    let owner = person.to_string();
    let actor = Actor::System("prefill".into());
    change(db, code, &actor, action, note.as_deref(), |d| {
        // The system acts for the applicant only: the ownership check of citizens' calls.
        if d.applicant != owner {
            return Err(not_found(&d.code));
        }
        if d.state != State::Draft {
            return Err(wrong_state(d, "prefilled"));
        }
        d.form = form;
        Ok(())
    })
    .await
}

/// Submit a draft with its final form data, which the caller has validated against the
/// procedure's schema. `due_unix` is the legal deadline the caller computed in working days.
pub async fn submit(
    db: &Database,
    code: &str,
    person: &PersonalCode,
    form: serde_json::Value,
    due_unix: Option<i64>,
) -> Result<Dossier, Error> {
    form_text(&form)?;
    let actor = Actor::Citizen(*person);
    change(db, code, &actor, Action::Submitted.as_str(), None, |d| {
        submitting(d, form, due_unix)
    })
    .await
}

/// [`submit`] the draft `d` as the caller read it (and showed its form): refused with
/// `PortalDossierChanged` if it changed since.
pub async fn submit_read(
    db: &Database,
    d: Dossier,
    person: &PersonalCode,
    form: serde_json::Value,
    due_unix: Option<i64>,
) -> Result<Dossier, Error> {
    form_text(&form)?;
    let actor = Actor::Citizen(*person);
    change_read(db, d, &actor, Action::Submitted.as_str(), None, |d| {
        submitting(d, form, due_unix)
    })
    .await
}

fn submitting(
    d: &mut Dossier,
    form: serde_json::Value,
    due_unix: Option<i64>,
) -> Result<(), Error> {
    if d.state != State::Draft {
        return Err(wrong_state(d, "submitted"));
    }
    d.form = form;
    d.state = State::Submitted;
    d.submitted_unix = Some(unix_now());
    d.due_unix = due_unix;
    Ok(())
}

/// The citizen withdraws a dossier that no officer has taken into processing yet.
pub async fn cancel(
    db: &Database,
    code: &str,
    person: &PersonalCode,
    reason: Option<&str>,
) -> Result<Dossier, Error> {
    let reason = check_note(reason)?;
    let actor = Actor::Citizen(*person);
    change(
        db,
        code,
        &actor,
        Action::Cancelled.as_str(),
        reason.as_deref(),
        |d| {
            if !d.state.is_cancellable() {
                return Err(wrong_state(d, "cancelled"));
            }
            d.state = State::Cancelled;
            d.supplement_note = None;
            Ok(())
        },
    )
    .await
}

/// An officer asks the applicant for more or corrected information.
pub async fn request_supplement(
    db: &Database,
    code: &str,
    officer: &str,
    note: &str,
) -> Result<Dossier, Error> {
    let note = required_note(note, "what to supplement")?;
    let actor = Actor::Officer(officer.to_owned());
    let stored = note.clone();
    change(
        db,
        code,
        &actor,
        Action::SupplementRequested.as_str(),
        Some(&note),
        |d| {
            if !matches!(d.state, State::Submitted | State::Processing) {
                return Err(wrong_state(d, "sent back for a supplement"));
            }
            d.state = State::SupplementRequested;
            d.supplement_note = Some(stored);
            Ok(())
        },
    )
    .await
}

/// The applicant answers a supplement request with corrected form data (validated by the
/// caller) and a note; the dossier goes back to the agency as submitted.
pub async fn answer_supplement(
    db: &Database,
    code: &str,
    person: &PersonalCode,
    form: serde_json::Value,
    note: Option<&str>,
) -> Result<Dossier, Error> {
    form_text(&form)?;
    let note = check_note(note)?;
    let actor = Actor::Citizen(*person);
    change(
        db,
        code,
        &actor,
        Action::SupplementAnswered.as_str(),
        note.as_deref(),
        |d| {
            if d.state != State::SupplementRequested {
                return Err(wrong_state(d, "supplemented"));
            }
            d.form = form;
            d.state = State::Submitted;
            d.supplement_note = None;
            Ok(())
        },
    )
    .await
}

/// An officer accepts a submitted dossier into processing (and takes it).
pub async fn accept(db: &Database, code: &str, officer: &str) -> Result<Dossier, Error> {
    let actor = Actor::Officer(officer.to_owned());
    let who = officer.to_owned();
    change(db, code, &actor, Action::Accepted.as_str(), None, |d| {
        if d.state != State::Submitted {
            return Err(wrong_state(d, "accepted for processing"));
        }
        d.state = State::Processing;
        d.officer = Some(who);
        Ok(())
    })
    .await
}

/// Assign an unfinished dossier to an officer (`by` is who assigns).
pub async fn assign(db: &Database, code: &str, officer: &str, by: &str) -> Result<Dossier, Error> {
    if officer.trim().is_empty() {
        return Err(Error::new(ErrorCode::PortalBadInput, "no officer named"));
    }
    let actor = Actor::Officer(by.to_owned());
    let who = officer.to_owned();
    let note = format!("→ {officer}");
    change(
        db,
        code,
        &actor,
        Action::Assigned.as_str(),
        Some(&note),
        |d| {
            if d.state.is_finished() || d.state == State::Draft {
                return Err(wrong_state(d, "assigned"));
            }
            d.officer = Some(who);
            Ok(())
        },
    )
    .await
}

/// Move a dossier in processing to another agency and/or step of the workflow; the
/// assignment is cleared, since officers belong to one agency.
pub async fn transfer(
    db: &Database,
    code: &str,
    by: &str,
    to_agency: &str,
    to_step: &str,
    note: Option<&str>,
) -> Result<Dossier, Error> {
    check_agency(to_agency)?;
    if to_step.trim().is_empty() {
        return Err(Error::new(
            ErrorCode::PortalBadInput,
            "no workflow step named",
        ));
    }
    let note = check_note(note)?;
    let actor = Actor::Officer(by.to_owned());
    let (agency, step) = (to_agency.to_owned(), to_step.to_owned());
    change(
        db,
        code,
        &actor,
        Action::Transferred.as_str(),
        note.as_deref(),
        |d| {
            if d.state != State::Processing {
                return Err(wrong_state(d, "transferred"));
            }
            if agency != d.current_agency {
                d.officer = None;
            }
            d.current_agency = agency;
            d.current_step = step;
            Ok(())
        },
    )
    .await
}

/// An officer approves a dossier in processing, or rejects it (with a reason) in
/// processing or at reception.
pub async fn decide(
    db: &Database,
    code: &str,
    officer: &str,
    approve: bool,
    reason: &str,
) -> Result<Dossier, Error> {
    let (action, note) = if approve {
        (Action::Approved, check_note(Some(reason))?)
    } else {
        (Action::Rejected, Some(required_note(reason, "a reason")?))
    };
    let actor = Actor::Officer(officer.to_owned());
    change(db, code, &actor, action.as_str(), note.as_deref(), |d| {
        let allowed = if approve {
            d.state == State::Processing
        } else {
            matches!(d.state, State::Submitted | State::Processing)
        };
        if !allowed {
            return Err(wrong_state(
                d,
                if approve { "approved" } else { "rejected" },
            ));
        }
        d.state = if approve {
            State::Approved
        } else {
            State::Rejected
        };
        d.supplement_note = None;
        Ok(())
    })
    .await
}

/// The applicant rates a finished (approved or rejected) dossier, once, 1 to 5.
pub async fn rate(
    db: &Database,
    code: &str,
    person: &PersonalCode,
    rating: i64,
    note: Option<&str>,
) -> Result<Dossier, Error> {
    if !(1..=5).contains(&rating) {
        return Err(Error::new(
            ErrorCode::PortalRating,
            format!("rating {rating}: expected 1 to 5"),
        ));
    }
    let note = check_note(note)?;
    let actor = Actor::Citizen(*person);
    let stored = note.clone();
    change(
        db,
        code,
        &actor,
        Action::Rated.as_str(),
        note.as_deref(),
        |d| {
            if !matches!(d.state, State::Approved | State::Rejected) {
                return Err(Error::new(
                    ErrorCode::PortalRating,
                    format!(
                        "dossier {} is {}; only a decided dossier is rated",
                        d.code, d.state
                    ),
                ));
            }
            if d.rating.is_some() {
                return Err(Error::new(
                    ErrorCode::PortalRating,
                    format!("dossier {} is already rated", d.code),
                ));
            }
            d.rating = Some(rating);
            d.rating_note = stored;
            Ok(())
        },
    )
    .await
}

/// Add an event to the timeline without changing the state: for other modules (a payment
/// received, the application signed, a result issued). `action` is a short snake_case word.
pub async fn record_event(
    db: &Database,
    code: &str,
    actor: &Actor,
    action: &str,
    note: Option<&str>,
) -> Result<Dossier, Error> {
    if action.is_empty()
        || action.len() > 40
        || !action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
    {
        return Err(Error::new(
            ErrorCode::PortalBadInput,
            format!("event action {action:?}: expected a snake_case word"),
        ));
    }
    let note = check_note(note)?;
    change(db, code, actor, action, note.as_deref(), |_| Ok(())).await
}
