//! The back office: officers of the agencies work the dossiers of their agency.
//!
//! Officers sign in through national sign-in as citizens do; what makes them officers is
//! a row in `portal_officer` (migration component `portal_office`): their personal code
//! (the sign-in `sub`), their agency (a catalogue agency code) and their roles
//! (`receiver`, `processor`, `approver`, as the catalogue's workflow steps name them). The
//! row is read on every request, so removing an officer takes effect at once.
//!
//! An officer sees the dossiers their agency received or now holds, and acts only on those
//! their agency holds (`current_agency`), at a step whose role they have:
//!
//! | action | when | who |
//! |---|---|---|
//! | accept (*tiếp nhận*) | submitted, first step | receiver |
//! | take | in processing, not assigned to them | the step's role |
//! | assign to a colleague | unfinished | the assigned officer or an approver |
//! | forward to the next step | in processing, not the last step | the step's role |
//! | transfer to another agency (*liên thông*) | in processing | the step's role |
//! | request a supplement | submitted or in processing | receiver or processor |
//! | approve | in processing, last step | approver |
//! | reject with a reason | submitted (receiver) or in processing (approver) | |
//! | issue the result again | approved without a result | approver |
//!
//! A step of the workflow at another agency is reached by forwarding: the dossier moves
//! there, unassigned, and waits in that agency's queue. Within the agency, forwarding
//! names the colleague who does the next step.
//!
//! Deadlines are the dossier's legal due date (working days, [`crate::calendar`]); the
//! queue shows it and marks overdue dossiers. On approval the result is issued by
//! [`crate::result::Results::issue`]; if that fails the dossier stays approved and an
//! approver can issue it again.

use std::collections::BTreeMap;
use std::str::FromStr;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_store::{Database, DbResultExt, Migration, Row};
use xalo_web::{Lang, Page, Session};

use crate::calendar::Calendar;
use crate::catalogue::{self, Procedure, StepRole};
use crate::dossier::{self, Dossier, State as DossierState};
use crate::exchange::Exchange;
use crate::registration::Registered;
use crate::result::{ResultRequest, Results};

/// The migration component of the officer table.
pub const COMPONENT: &str = "portal_office";

const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "officers",
    "CREATE TABLE portal_officer (
        personal_code TEXT PRIMARY KEY,
        agency TEXT NOT NULL,
        name TEXT NOT NULL,
        roles TEXT NOT NULL,
        active BIGINT NOT NULL,
        created_unix BIGINT NOT NULL,
        updated_unix BIGINT NOT NULL
    );
    CREATE INDEX portal_officer_agency ON portal_officer (agency);",
)];

/// Create or update the officer table.
pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate(COMPONENT, MIGRATIONS).await
}

/// An officer of an agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Officer {
    pub personal_code: String,
    pub agency: String,
    pub name: String,
    pub roles: Vec<StepRole>,
    pub active: bool,
}

impl Officer {
    pub fn has(&self, role: StepRole) -> bool {
        self.roles.contains(&role)
    }
}

/// Parse a role list: `receiver,processor`.
pub fn parse_roles(text: &str) -> Result<Vec<StepRole>, Error> {
    let mut roles = Vec::new();
    for r in text
        .split([',', ' '])
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        let role = StepRole::parse(r).ok_or_else(|| {
            Error::new(
                ErrorCode::OfficeOfficerInput,
                format!("unknown officer role {r:?}: expected receiver, processor or approver"),
            )
        })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(Error::new(
            ErrorCode::OfficeOfficerInput,
            "an officer needs at least one role",
        ));
    }
    Ok(roles)
}

fn roles_text(roles: &[StepRole]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Register an officer, or change an existing one's agency, name and roles (and activate
/// them again). The agency must be in the catalogue.
pub async fn add_officer(
    db: &Database,
    person: &PersonalCode,
    agency: &str,
    name: &str,
    roles: &[StepRole],
) -> Result<Officer, Error> {
    let cat = catalogue::catalogue()?;
    if cat.agency(agency).is_none() {
        return Err(Error::new(
            ErrorCode::OfficeUnknownAgency,
            format!("no agency {agency:?} in the catalogue"),
        ));
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::new(
            ErrorCode::OfficeOfficerInput,
            "an officer's name is 1 to 200 characters",
        ));
    }
    if roles.is_empty() {
        return Err(Error::new(
            ErrorCode::OfficeOfficerInput,
            "an officer needs at least one role",
        ));
    }
    let now = dossier::unix_now();
    xalo_store::sqlx::query(
        "INSERT INTO portal_officer (personal_code, agency, name, roles, active, created_unix, \
         updated_unix) VALUES ($1, $2, $3, $4, 1, $5, $5) \
         ON CONFLICT (personal_code) DO UPDATE SET agency = $2, name = $3, roles = $4, \
         active = 1, updated_unix = $5",
    )
    .bind(person.to_string())
    .bind(agency.to_owned())
    .bind(name.to_owned())
    .bind(roles_text(roles))
    .bind(now)
    .execute(db.pool())
    .await
    .db("registering an officer")?;
    Ok(Officer {
        personal_code: person.to_string(),
        agency: agency.to_owned(),
        name: name.to_owned(),
        roles: roles.to_vec(),
        active: true,
    })
}

/// Withdraw an officer's rights (the row stays, for the timeline's names).
pub async fn deactivate_officer(db: &Database, person: &PersonalCode) -> Result<(), Error> {
    let r = xalo_store::sqlx::query(
        "UPDATE portal_officer SET active = 0, updated_unix = $1 WHERE personal_code = $2",
    )
    .bind(dossier::unix_now())
    .bind(person.to_string())
    .execute(db.pool())
    .await
    .db("deactivating an officer")?;
    if r.rows_affected() == 0 {
        return Err(Error::new(
            ErrorCode::OfficeOfficerInput,
            format!("{person} is not an officer"),
        ));
    }
    Ok(())
}

fn officer_from_row(row: &xalo_store::sqlx::any::AnyRow) -> Result<Officer, Error> {
    let c = "reading an officer";
    let roles: String = row.try_get("roles").db(c)?;
    let active: i64 = row.try_get("active").db(c)?;
    Ok(Officer {
        personal_code: row.try_get("personal_code").db(c)?,
        agency: row.try_get("agency").db(c)?,
        name: row.try_get("name").db(c)?,
        roles: parse_roles(&roles)?,
        active: active != 0,
    })
}

/// The officer with this personal code, active or not.
pub async fn officer(db: &Database, personal_code: &str) -> Result<Option<Officer>, Error> {
    let row = xalo_store::sqlx::query(
        "SELECT personal_code, agency, name, roles, active FROM portal_officer \
         WHERE personal_code = $1",
    )
    .bind(personal_code.to_owned())
    .fetch_optional(db.pool())
    .await
    .db("reading an officer")?;
    row.as_ref().map(officer_from_row).transpose()
}

/// The active officers of an agency, by name.
pub async fn officers_of(db: &Database, agency: &str) -> Result<Vec<Officer>, Error> {
    let rows = xalo_store::sqlx::query(
        "SELECT personal_code, agency, name, roles, active FROM portal_officer \
         WHERE agency = $1 AND active = 1 ORDER BY name, personal_code",
    )
    .bind(agency.to_owned())
    .fetch_all(db.pool())
    .await
    .db("listing officers")?;
    rows.iter().map(officer_from_row).collect()
}

/// What `xalo portal officer …` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfficerCommand {
    /// Register an officer (or change one): personal code, agency, name, roles.
    Add {
        personal_code: String,
        agency: String,
        name: String,
        roles: String,
    },
    /// Withdraw an officer's rights.
    Remove { personal_code: String },
    /// List the active officers, of one agency or all.
    List { agency: Option<String> },
}

/// Run an officer command on the portal's database (`[roles.portal]`); returns what to
/// print.
pub async fn officer_command(
    config: &xalo_core::Config,
    command: OfficerCommand,
) -> Result<String, Error> {
    let (db, _) = crate::service::open_database(&config.database_url("portal")).await?;
    let person = |code: &str| -> Result<PersonalCode, Error> {
        code.trim().parse::<PersonalCode>().map_err(Error::from)
    };
    let out = match command {
        OfficerCommand::Add {
            personal_code,
            agency,
            name,
            roles,
        } => {
            let o = add_officer(
                &db,
                &person(&personal_code)?,
                agency.trim(),
                &name,
                &parse_roles(&roles)?,
            )
            .await?;
            format!(
                "officer {} ({}) of {}: {}",
                o.personal_code,
                o.name,
                o.agency,
                roles_text(&o.roles)
            )
        }
        OfficerCommand::Remove { personal_code } => {
            deactivate_officer(&db, &person(&personal_code)?).await?;
            format!("officer {} removed", personal_code.trim())
        }
        OfficerCommand::List { agency } => {
            let rows = xalo_store::sqlx::query(
                "SELECT personal_code, agency, name, roles, active FROM portal_officer \
                 WHERE active = 1 ORDER BY agency, name, personal_code",
            )
            .fetch_all(db.pool())
            .await
            .db("listing officers")?;
            let mut lines = Vec::new();
            for row in &rows {
                let o = officer_from_row(row)?;
                if agency.as_deref().is_none_or(|a| a == o.agency) {
                    lines.push(format!(
                        "{}\t{}\t{}\t{}",
                        o.personal_code,
                        o.agency,
                        roles_text(&o.roles),
                        o.name
                    ));
                }
            }
            lines.join("\n")
        }
    };
    db.close().await;
    Ok(out)
}

/// A dossier in a queue: what the queue shows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueItem {
    pub code: String,
    pub procedure_code: String,
    pub applicant_name: String,
    pub state: DossierState,
    pub current_step: String,
    pub officer: Option<String>,
    pub submitted_unix: Option<i64>,
    pub due_unix: Option<i64>,
    /// Past its legal due date.
    pub overdue: bool,
}

/// The unfinished dossiers an agency holds (submitted, in processing or waiting for a
/// supplement), the earliest due first (those without a due date last), in one query.
pub async fn queue(db: &Database, agency: &str, now_unix: i64) -> Result<Vec<QueueItem>, Error> {
    let c = "reading a queue";
    let rows = xalo_store::sqlx::query(
        "SELECT code, procedure_code, applicant_name, state, current_step, officer, \
         submitted_unix, due_unix FROM portal_dossier WHERE current_agency = $1 \
         AND state IN ('submitted', 'processing', 'supplement_requested') \
         ORDER BY CASE WHEN due_unix IS NULL THEN 1 ELSE 0 END, due_unix, submitted_unix, code \
         LIMIT 1000",
    )
    .bind(agency.to_owned())
    .fetch_all(db.pool())
    .await
    .db(c)?;
    rows.iter()
        .map(|row| {
            let state: String = row.try_get("state").db(c)?;
            let due_unix: Option<i64> = row.try_get("due_unix").db(c)?;
            Ok(QueueItem {
                code: row.try_get("code").db(c)?,
                procedure_code: row.try_get("procedure_code").db(c)?,
                applicant_name: row.try_get("applicant_name").db(c)?,
                state: state.parse()?,
                current_step: row.try_get("current_step").db(c)?,
                officer: row.try_get("officer").db(c)?,
                submitted_unix: row.try_get("submitted_unix").db(c)?,
                due_unix,
                overdue: due_unix.is_some_and(|due| now_unix > due),
            })
        })
        .collect()
}

/// Whether a dossier is past its due date: unfinished after it, or finished after it.
pub fn is_overdue(d: &Dossier, now_unix: i64) -> bool {
    match (d.due_unix, d.finished_unix) {
        (Some(due), Some(done)) => done > due,
        (Some(due), None) => d.state != DossierState::Draft && now_unix > due,
        _ => false,
    }
}

/// What an officer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Accept,
    Take,
    Assign { to: String },
    Forward { to: Option<String> },
    Transfer { agency: String, note: String },
    Supplement { note: String },
    Approve { note: String },
    Reject { reason: String },
    IssueResult,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Accept => "accept",
            Command::Take => "take",
            Command::Assign { .. } => "assign",
            Command::Forward { .. } => "forward",
            Command::Transfer { .. } => "transfer",
            Command::Supplement { .. } => "supplement",
            Command::Approve { .. } => "approve",
            Command::Reject { .. } => "reject",
            Command::IssueResult => "issue_result",
        }
    }
}

/// The back office: the database, the writer handle and the result issuer.
#[derive(Clone)]
pub struct Office {
    db: Database,
    writes: Database,
    results: Option<Results>,
    calendar: Option<Calendar>,
    /// The portal's gateway, through which approvals write to the base registers.
    exchange: Option<Exchange>,
}

fn role_error(role: StepRole) -> Error {
    Error::new(
        ErrorCode::OfficeRole,
        format!("this needs the {} role", role.as_str()),
    )
}

fn state_error(d: &Dossier, what: &str) -> Error {
    Error::new(
        ErrorCode::OfficeState,
        format!(
            "dossier {} is {} at step {}; it cannot be {what}",
            d.code, d.state, d.current_step
        ),
    )
}

fn procedure_of(d: &Dossier) -> Result<&'static Procedure, Error> {
    catalogue::catalogue()?.require(&d.procedure_code)
}

impl Office {
    /// `db` for reads, `writes` for changes (on SQLite the portal's single writer).
    pub fn new(db: Database, writes: Database, results: Option<Results>) -> Office {
        Office {
            db,
            writes,
            results,
            calendar: Calendar::vietnam().ok(),
            exchange: None,
        }
    }

    /// Approvals of procedures with a registration write it through `exchange`.
    pub fn with_exchange(mut self, exchange: Option<Exchange>) -> Office {
        self.exchange = exchange;
        self
    }

    /// Write the approved dossier's registration, if its procedure has one, to its
    /// register through the exchange. Idempotent (the dossier code is the key): a retry
    /// gets the register's first answer.
    async fn register(
        &self,
        officer: &Officer,
        d: &Dossier,
        p: &Procedure,
    ) -> Result<Option<Registered>, Error> {
        let Some(registration) = &p.registration else {
            return Ok(None);
        };
        let exchange = self.exchange.as_ref().ok_or_else(|| {
            Error::new(
                ErrorCode::OfficeRegisterUnreachable,
                "the portal is not connected to the exchange, so the register cannot be updated",
            )
        })?;
        let today = vietnam_date(dossier::unix_now(), false);
        registration
            .write(exchange, d, p, &officer.personal_code, &today)
            .await
            .map(Some)
    }

    /// The officer signed in to `session`: `XALO-PORTAL-005` when nobody is,
    /// `XALO-OFFICE-002` when the person is not an active officer.
    pub async fn signed_in_officer(&self, session: &Session) -> Result<Officer, Error> {
        let who = crate::signin::require(session)?;
        match officer(&self.db, &who.sub).await? {
            Some(o) if o.active => Ok(o),
            _ => Err(Error::new(
                ErrorCode::OfficeNotOfficer,
                format!("{} is not an officer of any agency", who.sub),
            )),
        }
    }

    /// A dossier the officer's agency received or holds; any other is not found, as an
    /// unknown code is.
    pub async fn dossier_for(&self, officer: &Officer, code: &str) -> Result<Dossier, Error> {
        match dossier::get(&self.db, code).await? {
            Some(d) if d.current_agency == officer.agency || d.agency == officer.agency => Ok(d),
            _ => Err(Error::new(
                ErrorCode::OfficeDossierNotFound,
                format!("no dossier {code} in agency {}", officer.agency),
            )),
        }
    }

    /// Carry out `command` on a dossier for `officer`, after checking the agency, the
    /// state, the step and the officer's roles. Returns the dossier as it is afterwards.
    pub async fn act(
        &self,
        officer: &Officer,
        code: &str,
        command: Command,
    ) -> Result<Dossier, Error> {
        let d = self.dossier_for(officer, code).await?;
        if d.current_agency != officer.agency {
            return Err(Error::new(
                ErrorCode::OfficeDossierNotFound,
                format!(
                    "dossier {code} is now at agency {}, not {}",
                    d.current_agency, officer.agency
                ),
            ));
        }
        let p = procedure_of(&d)?;
        let step = p.step(&d.current_step).ok_or_else(|| {
            Error::new(
                ErrorCode::OfficeState,
                format!(
                    "dossier {code} is at step {}, which its procedure does not have",
                    d.current_step
                ),
            )
        })?;
        let me = officer.personal_code.as_str();
        let w = &self.writes;
        match command {
            // A new dossier is received at the first step; one that comes back with a
            // supplement is taken up again at the step that asked for it.
            Command::Accept => {
                if d.state != DossierState::Submitted {
                    return Err(state_error(&d, "accepted"));
                }
                let role = if step.id == p.first_step().id {
                    StepRole::Receiver
                } else {
                    step.role
                };
                if !officer.has(role) {
                    return Err(role_error(role));
                }
                dossier::accept(w, code, me).await
            }
            Command::Take => {
                if d.state != DossierState::Processing || d.officer.as_deref() == Some(me) {
                    return Err(state_error(&d, "taken"));
                }
                if !officer.has(step.role) {
                    return Err(role_error(step.role));
                }
                dossier::assign(w, code, me, me).await
            }
            Command::Assign { to } => {
                if d.state.is_finished() || d.state == DossierState::Draft {
                    return Err(state_error(&d, "assigned"));
                }
                if d.officer.as_deref() != Some(me) && !officer.has(StepRole::Approver) {
                    return Err(role_error(StepRole::Approver));
                }
                self.colleague(officer, &to, step.role).await?;
                dossier::assign(w, code, &to, me).await
            }
            Command::Forward { to } => {
                if d.state != DossierState::Processing {
                    return Err(state_error(&d, "forwarded"));
                }
                if !officer.has(step.role) {
                    return Err(role_error(step.role));
                }
                let Some(next) = p.next_step(&step.id) else {
                    return Err(state_error(&d, "forwarded past the last step"));
                };
                if next.agency == officer.agency {
                    // Within the agency the next step goes to a named colleague.
                    let to = to.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
                        Error::new(
                            ErrorCode::OfficeOfficerInput,
                            "choose the officer who does the next step",
                        )
                    })?;
                    self.colleague(officer, &to, next.role).await?;
                    dossier::transfer(w, code, me, &next.agency, &next.id, None).await?;
                    dossier::assign(w, code, &to, me).await
                } else {
                    let note = format!("→ {} ({})", next.agency, next.id);
                    dossier::transfer(w, code, me, &next.agency, &next.id, Some(&note)).await
                }
            }
            Command::Transfer { agency, note } => {
                if d.state != DossierState::Processing {
                    return Err(state_error(&d, "transferred"));
                }
                if !officer.has(step.role) {
                    return Err(role_error(step.role));
                }
                if catalogue::catalogue()?.agency(&agency).is_none() || agency == officer.agency {
                    return Err(Error::new(
                        ErrorCode::OfficeUnknownAgency,
                        format!("{agency:?} is not another agency of the catalogue"),
                    ));
                }
                if note.trim().is_empty() {
                    return Err(Error::new(
                        ErrorCode::OfficeReasonRequired,
                        "say why the dossier goes to another agency",
                    ));
                }
                dossier::transfer(w, code, me, &agency, &step.id, Some(&note)).await
            }
            Command::Supplement { note } => {
                if !matches!(d.state, DossierState::Submitted | DossierState::Processing) {
                    return Err(state_error(&d, "sent back for a supplement"));
                }
                if !officer.has(StepRole::Receiver) && !officer.has(StepRole::Processor) {
                    return Err(role_error(StepRole::Processor));
                }
                if note.trim().is_empty() {
                    return Err(Error::new(
                        ErrorCode::OfficeReasonRequired,
                        "say what the applicant must supplement",
                    ));
                }
                dossier::request_supplement(w, code, me, &note).await
            }
            Command::Approve { note } => {
                if d.state != DossierState::Processing || p.next_step(&step.id).is_some() {
                    return Err(state_error(&d, "approved"));
                }
                if !officer.has(StepRole::Approver) {
                    return Err(role_error(StepRole::Approver));
                }
                // The register first: if it refuses, the dossier stays in processing and
                // the officer sees why.
                let registered = self.register(officer, &d, p).await?;
                if let Some(r) = &registered {
                    let actor = dossier::Actor::Officer(me.to_owned());
                    dossier::record_event(w, code, &actor, "registered", Some(&r.note())).await?;
                }
                let approved = dossier::decide(w, code, me, true, &note).await?;
                self.issue_result(officer, &approved, p, registered.as_ref())
                    .await?;
                Ok(approved)
            }
            Command::Reject { reason } => {
                let allowed = match d.state {
                    DossierState::Submitted => officer.has(StepRole::Receiver),
                    DossierState::Processing => officer.has(StepRole::Approver),
                    _ => return Err(state_error(&d, "rejected")),
                };
                if !allowed {
                    return Err(role_error(if d.state == DossierState::Submitted {
                        StepRole::Receiver
                    } else {
                        StepRole::Approver
                    }));
                }
                if reason.trim().is_empty() {
                    return Err(Error::new(
                        ErrorCode::OfficeReasonRequired,
                        "a rejection needs a reason",
                    ));
                }
                dossier::decide(w, code, me, false, &reason).await
            }
            Command::IssueResult => {
                if d.state != DossierState::Approved {
                    return Err(state_error(&d, "given a result"));
                }
                if !officer.has(StepRole::Approver) {
                    return Err(role_error(StepRole::Approver));
                }
                let registered = self.register(officer, &d, p).await?;
                self.issue_result(officer, &d, p, registered.as_ref())
                    .await?;
                Ok(d)
            }
        }
    }

    async fn colleague(
        &self,
        officer: &Officer,
        to: &str,
        role: StepRole,
    ) -> Result<Officer, Error> {
        match self::officer(&self.db, to).await? {
            Some(o) if o.active && o.agency == officer.agency && o.has(role) => Ok(o),
            _ => Err(Error::new(
                ErrorCode::OfficeOfficerInput,
                format!(
                    "{to} is not an officer of {} with the {} role",
                    officer.agency,
                    role.as_str()
                ),
            )),
        }
    }

    /// The deadline of the dossier's current step: its share of the legal time, counted in
    /// working days from submission through this step. None without a submission, for a
    /// step the procedure does not have, or outside the calendar.
    pub fn step_due(&self, d: &Dossier) -> Option<i64> {
        let calendar = self.calendar.as_ref()?;
        let submitted = d.submitted_unix?;
        let p = catalogue::catalogue().ok()?.get(&d.procedure_code)?;
        let index = p.workflow.iter().position(|s| s.id == d.current_step)?;
        let days = p.workflow[..=index].iter().map(|s| s.days).sum();
        calendar.due_end_of_day(submitted, days).ok()
    }

    /// Whether the dossier's result has been issued.
    pub async fn has_result(&self, code: &str) -> Result<bool, Error> {
        match &self.results {
            Some(r) => Ok(r.evidence(code).await?.is_some()),
            None => Ok(false),
        }
    }

    async fn issue_result(
        &self,
        officer: &Officer,
        d: &Dossier,
        p: &Procedure,
        registered: Option<&Registered>,
    ) -> Result<(), Error> {
        let results = self.results.as_ref().ok_or_else(|| {
            Error::new(
                ErrorCode::HttpUnavailable,
                "the result issuer is not configured; the dossier is approved and its result can be issued later",
            )
        })?;
        if results.evidence(&d.code).await?.is_some() {
            return Ok(());
        }
        let cat = catalogue::catalogue()?;
        let mut fields = vec![
            ("Mã hồ sơ".to_owned(), d.code.clone()),
            ("Thủ tục".to_owned(), format!("{} ({})", p.name.vi, p.code)),
            ("Người nộp".to_owned(), d.applicant_name.clone()),
        ];
        for f in p.fields() {
            if let Some(v) = d.form.get(&f.name) {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => continue,
                    other => other.to_string(),
                };
                if !text.is_empty() {
                    fields.push((f.title.vi.clone(), text));
                }
            }
        }
        fields.extend(
            registered
                .map(Registered::result_fields)
                .unwrap_or_default(),
        );
        fields.push(("Cán bộ phê duyệt".to_owned(), officer.name.clone()));
        let phone = d
            .form
            .get("applicant_phone")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let person = PersonalCode::from_str(&d.applicant).map_err(Error::from)?;
        results
            .issue(&ResultRequest {
                dossier_code: d.code.clone(),
                person,
                person_name: d.applicant_name.clone(),
                procedure_code: p.code.clone(),
                title_vi: format!("Kết quả giải quyết: {}", p.name.vi),
                title_en: format!("Decision: {}", p.name.en),
                agency: cat.agency_name(&d.current_agency, Lang::Vi),
                fields,
                email: None,
                phone,
            })
            .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Pages.

xalo_web::catalogue! {
    /// Texts of the back office.
    pub struct OfficeText {
        queue_title: "Hồ sơ cần xử lý" / "Dossiers to handle",
        officer: "Cán bộ" / "Officer",
        agency: "Cơ quan" / "Agency",
        roles: "Vai trò" / "Roles",
        empty: "Không có hồ sơ nào đang chờ." / "No dossiers are waiting.",
        code: "Mã hồ sơ" / "Dossier code",
        procedure: "Thủ tục" / "Procedure",
        applicant: "Người nộp" / "Applicant",
        state: "Trạng thái" / "Status",
        step: "Bước" / "Step",
        assigned: "Người xử lý" / "Assigned to",
        nobody: "Chưa phân công" / "Not assigned",
        due: "Hạn giải quyết" / "Due",
        no_due: "Không có hạn" / "No deadline",
        step_due: "Hạn của bước hiện tại" / "Due for the current step",
        attachments: "Tài liệu đính kèm" / "Attachments",
        no_attachments: "Không có tài liệu đính kèm." / "No attachments.",
        signed: "Ký số bởi" / "Signed by",
        not_signed: "Hồ sơ chưa được ký số." / "The application is not signed.",
        download_signed: "Tải hồ sơ đã ký (ASiC-E)" / "Download the signed application (ASiC-E)",
        overdue: "Quá hạn" / "Overdue",
        on_time: "Trong hạn" / "On time",
        submitted: "Ngày nộp" / "Submitted",
        form_data: "Thông tin hồ sơ" / "Application",
        timeline: "Quá trình xử lý" / "History",
        actions: "Xử lý hồ sơ" / "Actions",
        accept: "Tiếp nhận hồ sơ" / "Accept the dossier",
        take: "Nhận xử lý" / "Take it",
        assign: "Phân công" / "Assign",
        assign_to: "Giao cho cán bộ" / "Assign to officer",
        forward: "Chuyển bước tiếp theo" / "Send to the next step",
        next_step: "Bước tiếp theo" / "Next step",
        transfer: "Chuyển cơ quan khác (liên thông)" / "Transfer to another agency",
        transfer_to: "Cơ quan nhận" / "Receiving agency",
        supplement: "Yêu cầu bổ sung hồ sơ" / "Ask for a supplement",
        supplement_note: "Nội dung cần bổ sung" / "What to supplement",
        approve: "Phê duyệt và trả kết quả" / "Approve and issue the result",
        approve_note: "Ghi chú (không bắt buộc)" / "Note (optional)",
        reject: "Từ chối" / "Reject",
        reason: "Lý do" / "Reason",
        issue_result: "Phát hành lại kết quả" / "Issue the result again",
        result_missing: "Hồ sơ đã được phê duyệt nhưng chưa phát hành được kết quả." / "The dossier is approved but its result has not been issued yet.",
        done: "Đã thực hiện." / "Done.",
        back: "Quay lại danh sách hồ sơ" / "Back to the queue",
        not_officer: "Tài khoản này không phải là cán bộ của cơ quan nào." / "This account is not an officer of any agency.",
        error_title: "Không thực hiện được" / "That did not work",
        state_submitted: "Chờ tiếp nhận" / "Waiting for reception",
        state_processing: "Đang xử lý" / "In processing",
        state_supplement_requested: "Chờ bổ sung" / "Waiting for a supplement",
        state_approved: "Đã phê duyệt" / "Approved",
        state_rejected: "Đã từ chối" / "Rejected",
        state_cancelled: "Đã hủy" / "Cancelled",
        state_draft: "Bản nháp" / "Draft",
        kpi_link: "Chỉ số đánh giá" / "Service indicators",
        role_receiver: "Tiếp nhận" / "Reception",
        role_processor: "Xử lý" / "Processing",
        role_approver: "Phê duyệt" / "Approval",
        sign_out: "Đăng xuất" / "Sign out",
    }
}

fn state_text(t: &OfficeText, s: DossierState) -> &'static str {
    match s {
        DossierState::Draft => t.state_draft,
        DossierState::Submitted => t.state_submitted,
        DossierState::Processing => t.state_processing,
        DossierState::SupplementRequested => t.state_supplement_requested,
        DossierState::Approved => t.state_approved,
        DossierState::Rejected => t.state_rejected,
        DossierState::Cancelled => t.state_cancelled,
    }
}

/// A Unix time as a date (and time) in Vietnam.
pub fn vietnam_date(unix: i64, with_time: bool) -> String {
    let tz = crate::payment::vietnam();
    let Some(t) = chrono::DateTime::from_timestamp(unix, 0) else {
        return String::new();
    };
    let t = t.with_timezone(&tz);
    if with_time {
        t.format("%d/%m/%Y %H:%M").to_string()
    } else {
        t.format("%d/%m/%Y").to_string()
    }
}

struct QueueRow {
    href: String,
    code: String,
    procedure: String,
    applicant: String,
    state: &'static str,
    assigned: String,
    due: String,
    overdue: bool,
}

struct StepGroup {
    step: String,
    rows: Vec<QueueRow>,
}

#[derive(Template)]
#[template(path = "office_queue.html")]
struct QueueTemplate<'a> {
    t: &'static OfficeText,
    officer: &'a Officer,
    agency: String,
    roles: String,
    csrf: &'a str,
    groups: Vec<StepGroup>,
}

struct EventRow {
    at: String,
    action: String,
    actor: String,
    agency: String,
    note: String,
}

struct Choice {
    value: String,
    label: String,
}

#[derive(Template)]
#[template(path = "office_dossier.html")]
struct DossierTemplate<'a> {
    t: &'static OfficeText,
    d: &'a Dossier,
    csrf: &'a str,
    done: bool,
    procedure: String,
    state: &'static str,
    step: String,
    agency: String,
    assigned: String,
    submitted: String,
    due: String,
    overdue: bool,
    step_due: Option<String>,
    step_overdue: bool,
    fields: Vec<(String, String)>,
    attachments: Vec<Choice>,
    signed: Option<String>,
    events: Vec<EventRow>,
    actions: bool,
    can_accept: bool,
    can_take: bool,
    can_assign: bool,
    can_forward: bool,
    can_transfer: bool,
    can_supplement: bool,
    can_approve: bool,
    can_reject: bool,
    can_reissue: bool,
    next_step: String,
    forward_needs_officer: bool,
    colleagues: Vec<Choice>,
    next_colleagues: Vec<Choice>,
    agencies: Vec<Choice>,
}

/// A page's answer for an error: the message in the page layout with the error's status.
fn error_page(lang: Lang, uri: &Uri, e: &Error) -> Response {
    let t = OfficeText::get(lang);
    let message = if e.code == ErrorCode::OfficeNotOfficer {
        t.not_officer.to_owned()
    } else {
        format!("{} ({})", e.message, e.code.as_str())
    };
    let body = format!(
        "<p role=\"alert\">{}</p><p><a href=\"/office\">{}</a></p>",
        escape(&message),
        escape(t.back)
    );
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match xalo_web::html(&Page {
        lang,
        title: t.error_title,
        uri,
        body,
    }) {
        Ok(html) => {
            let mut r = (status, html).into_response();
            // The server's error middleware must not turn this page into JSON.
            r.headers_mut()
                .insert("x-xalo-raw-error", HeaderValue::from_static("1"));
            r
        }
        Err(e) => e.into_response(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Pages answer errors as pages; nobody signed in goes to sign-in first.
fn page_result(session: &Session, uri: &Uri, r: Result<Response, Error>) -> Response {
    match r {
        Ok(r) => r,
        Err(e) if e.code == ErrorCode::PortalNotSignedIn => {
            let next = percent_encoding::utf8_percent_encode(
                uri.path(),
                percent_encoding::NON_ALPHANUMERIC,
            );
            Redirect::to(&format!("/login?next={next}")).into_response()
        }
        Err(e) => error_page(session.lang, uri, &e),
    }
}

/// The back office's routes, with their state; merge them into the portal's router inside
/// its session layer: `GET /office`, `GET /office/dossiers/{code}`,
/// `POST /office/dossiers/{code}/{action}`.
pub fn routes<S: Clone + Send + Sync + 'static>(office: Office) -> Router<S> {
    Router::new()
        .route("/office", get(queue_page))
        .route("/office/dossiers/{code}", get(dossier_page))
        .route("/office/dossiers/{code}/{action}", post(act_post))
        .route(
            "/office/dossiers/{code}/attachments/{id}",
            get(attachment_download),
        )
        .route("/office/dossiers/{code}/signed", get(signed_download))
        .with_state(office)
}

async fn queue_page(
    State(office): State<Office>,
    Extension(session): Extension<Session>,
    uri: Uri,
) -> Response {
    let r = queue_page_inner(&office, &session, &uri).await;
    page_result(&session, &uri, r)
}

async fn queue_page_inner(
    office: &Office,
    session: &Session,
    uri: &Uri,
) -> Result<Response, Error> {
    let officer = office.signed_in_officer(session).await?;
    let lang = session.lang;
    let t = OfficeText::get(lang);
    let cat = catalogue::catalogue()?;
    let now = dossier::unix_now();
    let items = queue(&office.db, &officer.agency, now).await?;
    let names: BTreeMap<String, String> = officers_of(&office.db, &officer.agency)
        .await?
        .into_iter()
        .map(|o| (o.personal_code, o.name))
        .collect();
    let mut groups: BTreeMap<(usize, String), Vec<QueueRow>> = BTreeMap::new();
    for d in items {
        let p = cat.get(&d.procedure_code);
        let (index, step_name) = p
            .and_then(|p| {
                p.workflow
                    .iter()
                    .position(|s| s.id == d.current_step)
                    .map(|i| (i, p.workflow[i].name.get(lang).to_owned()))
            })
            .unwrap_or((usize::MAX, d.current_step.clone()));
        groups
            .entry((index, step_name))
            .or_default()
            .push(QueueRow {
                href: format!("/office/dossiers/{}", d.code),
                code: d.code.clone(),
                procedure: p
                    .map(|p| p.name.get(lang).to_owned())
                    .unwrap_or_else(|| d.procedure_code.clone()),
                applicant: d.applicant_name.clone(),
                state: state_text(t, d.state),
                assigned: match &d.officer {
                    Some(code) => names.get(code).cloned().unwrap_or_else(|| code.clone()),
                    None => t.nobody.to_owned(),
                },
                due: d
                    .due_unix
                    .map(|u| vietnam_date(u, false))
                    .unwrap_or_else(|| t.no_due.to_owned()),
                overdue: d.overdue,
            });
    }
    let body = QueueTemplate {
        t,
        officer: &officer,
        agency: cat.agency_name(&officer.agency, lang),
        roles: officer
            .roles
            .iter()
            .map(|r| match r {
                StepRole::Receiver => t.role_receiver,
                StepRole::Processor => t.role_processor,
                StepRole::Approver => t.role_approver,
            })
            .collect::<Vec<_>>()
            .join(", "),
        csrf: &session.csrf,
        groups: groups
            .into_iter()
            .map(|((_, step), rows)| StepGroup { step, rows })
            .collect(),
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    Ok(xalo_web::html(&Page {
        lang,
        title: t.queue_title,
        uri,
        body,
    })?
    .into_response())
}

#[derive(Debug, Deserialize)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn dossier_page(
    State(office): State<Office>,
    Extension(session): Extension<Session>,
    uri: Uri,
    Path(code): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let r = dossier_page_inner(&office, &session, &uri, &code, q.done.is_some()).await;
    page_result(&session, &uri, r)
}

async fn dossier_page_inner(
    office: &Office,
    session: &Session,
    uri: &Uri,
    code: &str,
    done: bool,
) -> Result<Response, Error> {
    let officer = office.signed_in_officer(session).await?;
    let d = office.dossier_for(&officer, code).await?;
    let lang = session.lang;
    let t = OfficeText::get(lang);
    let cat = catalogue::catalogue()?;
    let p = procedure_of(&d)?;
    let step = p.step(&d.current_step);
    let here = d.current_agency == officer.agency;
    let me = officer.personal_code.as_str();
    let step_role = step.map(|s| s.role);
    let has_step_role = step_role.is_some_and(|r| officer.has(r));
    let next = step.and_then(|s| p.next_step(&s.id));
    let processing = d.state == DossierState::Processing;
    let colleagues_with = |role: StepRole, all: &[Officer]| -> Vec<Choice> {
        all.iter()
            .filter(|o| o.has(role))
            .map(|o| Choice {
                value: o.personal_code.clone(),
                label: format!("{} ({})", o.name, o.personal_code),
            })
            .collect()
    };
    let all = officers_of(&office.db, &officer.agency).await?;
    let step_due = office.step_due(&d);
    let files = crate::attachment::of_dossier(&office.db, &d.code).await?;
    let signed = crate::signature::current(&office.db, &d, &files)
        .await?
        .map(|s| format!("{} – {}", s.signer, vietnam_date(s.signed_unix, true)));
    let attachments = files
        .iter()
        .map(|a| Choice {
            value: format!("/office/dossiers/{}/attachments/{}", d.code, a.id),
            label: format!("{} ({} kB)", a.name, (a.size.max(0) as u64).div_ceil(1024)),
        })
        .collect();
    let can_reissue = d.state == DossierState::Approved
        && officer.has(StepRole::Approver)
        && here
        && !office.has_result(&d.code).await?;
    let fields = p
        .fields()
        .iter()
        .filter_map(|f| {
            let v = d.form.get(&f.name)?;
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => return None,
                other => other.to_string(),
            };
            Some((f.title.get(lang).to_owned(), text))
        })
        .collect();
    let events = dossier::events(&office.db, &d.code)
        .await?
        .into_iter()
        .map(|e| EventRow {
            at: vietnam_date(e.at_unix, true),
            action: e.action,
            actor: e.actor,
            agency: cat.agency_name(&e.agency, lang),
            note: e.note.unwrap_or_default(),
        })
        .collect();
    let can_accept = here
        && d.state == DossierState::Submitted
        && if d.current_step == p.first_step().id {
            officer.has(StepRole::Receiver)
        } else {
            has_step_role
        };
    let can_take = here && processing && has_step_role && d.officer.as_deref() != Some(me);
    let can_assign = here
        && !d.state.is_finished()
        && (d.officer.as_deref() == Some(me) || officer.has(StepRole::Approver));
    let can_forward = here && processing && has_step_role && next.is_some();
    let can_approve = here && processing && next.is_none() && officer.has(StepRole::Approver);
    let can_reject = here
        && match d.state {
            DossierState::Submitted => officer.has(StepRole::Receiver),
            DossierState::Processing => officer.has(StepRole::Approver),
            _ => false,
        };
    let can_supplement = here
        && matches!(d.state, DossierState::Submitted | DossierState::Processing)
        && (officer.has(StepRole::Receiver) || officer.has(StepRole::Processor));
    let body = DossierTemplate {
        t,
        d: &d,
        csrf: &session.csrf,
        done,
        procedure: format!("{} ({})", p.name.get(lang), p.code),
        state: state_text(t, d.state),
        step: step
            .map(|s| s.name.get(lang).to_owned())
            .unwrap_or_else(|| d.current_step.clone()),
        agency: cat.agency_name(&d.current_agency, lang),
        assigned: d.officer.clone().unwrap_or_else(|| t.nobody.to_owned()),
        submitted: d
            .submitted_unix
            .map(|u| vietnam_date(u, true))
            .unwrap_or_default(),
        due: d
            .due_unix
            .map(|u| vietnam_date(u, false))
            .unwrap_or_else(|| t.no_due.to_owned()),
        overdue: is_overdue(&d, dossier::unix_now()),
        step_due: step_due.map(|u| vietnam_date(u, false)),
        step_overdue: step_due.is_some_and(|u| !d.state.is_finished() && dossier::unix_now() > u),
        fields,
        attachments,
        signed,
        events,
        actions: can_accept
            || can_take
            || can_assign
            || can_forward
            || can_approve
            || can_reject
            || can_supplement
            || can_reissue,
        can_accept,
        can_take,
        can_assign,
        can_forward,
        can_transfer: here && processing && has_step_role,
        can_supplement,
        can_approve,
        can_reject,
        can_reissue,
        next_step: next
            .map(|n| {
                format!(
                    "{} – {}",
                    n.name.get(lang),
                    cat.agency_name(&n.agency, lang)
                )
            })
            .unwrap_or_default(),
        forward_needs_officer: next.is_some_and(|n| n.agency == officer.agency),
        colleagues: step_role
            .map(|r| colleagues_with(r, &all))
            .unwrap_or_default(),
        next_colleagues: next
            .filter(|n| n.agency == officer.agency)
            .map(|n| colleagues_with(n.role, &all))
            .unwrap_or_default(),
        agencies: cat
            .agencies()
            .iter()
            .filter(|a| a.code != officer.agency)
            .map(|a| Choice {
                value: a.code.clone(),
                label: a.name.get(lang).to_owned(),
            })
            .collect(),
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    Ok(xalo_web::html(&Page {
        lang,
        title: &d.code,
        uri,
        body,
    })?
    .into_response())
}

async fn attachment_download(
    State(office): State<Office>,
    Extension(session): Extension<Session>,
    uri: Uri,
    Path((code, id)): Path<(String, i64)>,
) -> Response {
    let r = async {
        let officer = office.signed_in_officer(&session).await?;
        let d = office.dossier_for(&officer, &code).await?;
        let (a, bytes) = crate::attachment::read_in_dossier(&office.db, &d.code, id).await?;
        Ok(crate::attachment::download(&a, bytes))
    }
    .await;
    page_result(&session, &uri, r)
}

async fn signed_download(
    State(office): State<Office>,
    Extension(session): Extension<Session>,
    uri: Uri,
    Path(code): Path<String>,
) -> Response {
    let r = async {
        let officer = office.signed_in_officer(&session).await?;
        let d = office.dossier_for(&officer, &code).await?;
        let attachments = crate::attachment::of_dossier(&office.db, &d.code).await?;
        let signed = crate::signature::current(&office.db, &d, &attachments)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::HttpNotFound,
                    format!("dossier {code} has no signature over its current content"),
                )
            })?;
        let mut r = signed.container.into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.etsi.asic-e+zip"),
        );
        if let Ok(v) =
            HeaderValue::from_str(&format!("attachment; filename=\"ho-so-{code}.asice\""))
        {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }
    .await;
    page_result(&session, &uri, r)
}

/// The fields an action's form may carry.
#[derive(Debug, Default, Deserialize)]
struct ActForm {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    agency: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

fn command(action: &str, f: ActForm) -> Result<Command, Error> {
    let text = |v: Option<String>| v.unwrap_or_default().trim().to_owned();
    Ok(match action {
        "accept" => Command::Accept,
        "take" => Command::Take,
        "assign" => Command::Assign { to: text(f.to) },
        "forward" => Command::Forward {
            to: f.to.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
        },
        "transfer" => Command::Transfer {
            agency: text(f.agency),
            note: text(f.note),
        },
        "supplement" => Command::Supplement { note: text(f.note) },
        "approve" => Command::Approve { note: text(f.note) },
        "reject" => Command::Reject {
            reason: text(f.note),
        },
        "issue_result" => Command::IssueResult,
        other => {
            return Err(Error::new(
                ErrorCode::HttpNotFound,
                format!("no back-office action {other:?}"),
            ));
        }
    })
}

async fn act_post(
    State(office): State<Office>,
    Extension(session): Extension<Session>,
    uri: Uri,
    Path((code, action)): Path<(String, String)>,
    Form(f): Form<ActForm>,
) -> Response {
    let r = async {
        let officer = office.signed_in_officer(&session).await?;
        let cmd = command(&action, f)?;
        office.act(&officer, &code, cmd).await?;
        let mut r = Redirect::to(&format!("/office/dossiers/{code}?done={action}")).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }
    .await;
    page_result(&session, &uri, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse() {
        assert_eq!(
            parse_roles("receiver, approver,receiver").unwrap(),
            vec![StepRole::Receiver, StepRole::Approver]
        );
        assert_eq!(
            parse_roles("chief").unwrap_err().code,
            ErrorCode::OfficeOfficerInput
        );
        assert!(parse_roles(" , ").is_err());
    }

    #[test]
    fn commands_from_forms() {
        let f = ActForm {
            to: Some(" VN001203012345 ".into()),
            ..ActForm::default()
        };
        assert_eq!(
            command("assign", f).unwrap(),
            Command::Assign {
                to: "VN001203012345".into()
            }
        );
        assert_eq!(
            command("forward", ActForm::default()).unwrap(),
            Command::Forward { to: None }
        );
        assert_eq!(
            command("reject", ActForm::default()).unwrap(),
            Command::Reject {
                reason: String::new()
            }
        );
        assert!(command("delete", ActForm::default()).is_err());
    }
}
