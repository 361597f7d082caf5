//! Changes to the registers: each one validated against the register's rules, kept in the
//! history, hashed into the transparency ledger and published as an event.
//!
//! The ledger receives only a hash of the change (never personal data): enough to prove
//! later that the register's history was not rewritten.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use xalo_core::{Error, ErrorCode, Gender, PersonalCode};
use xalo_ledger::client::Recorder;
use xalo_ledger::{Entry, EntryKind};
use xalo_store::{Database, DbResultExt};

use crate::admin_unit::admin_units;
use crate::event::EventPublisher;
use crate::model::{Enterprise, LEGAL_FORMS, Person, TaxCode};
use crate::store;
use crate::text::fold;

fn invalid(why: impl Into<String>) -> Error {
    Error::new(ErrorCode::RegistryInvalid, why.into())
}

use xalo_core::unix_now_ms as now_ms;

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

fn date(s: &str, what: &str) -> Result<NaiveDate, Error> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| invalid(format!("{what} {s:?} is not a date (YYYY-MM-DD)")))
}

fn known_unit(code: &str) -> Result<(), Error> {
    admin_units().unit(code).map(|_| ()).ok_or_else(|| {
        Error::new(
            ErrorCode::RegistryAdminUnit,
            format!("no administrative unit {code:?}"),
        )
    })
}

/// Who asks for a change, as the exchange told the register.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Actor {
    /// The calling subsystem (`X-Road-Client`).
    pub client: String,
    /// The official or citizen on whose behalf (`X-Road-UserId`).
    pub user: String,
    /// The caller's `Idempotency-Key`, if it sent one: a retried request with the same key
    /// gets the first one's change instead of making a second.
    #[serde(default)]
    pub request: Option<RequestKey>,
}

/// An idempotency key and the SHA-256 of the request it was first used for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestKey {
    pub key: String,
    pub digest: String,
}

impl RequestKey {
    /// The key of `request`, sent as `key` by the caller.
    pub fn of<T: Serialize>(key: &str, request: &T) -> RequestKey {
        let body = serde_json::to_vec(request).unwrap_or_default();
        RequestKey {
            key: key.to_owned(),
            digest: hex::encode(Sha256::digest(&body)),
        }
    }
}

impl Actor {
    /// The stored form of the key: unique per register and calling subsystem.
    fn stored_key(&self, register: &str) -> Option<String> {
        self.request
            .as_ref()
            .map(|r| format!("{register} {} {}", self.client, r.key))
    }
}

/// A change as the history and the event feed show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub seq: i64,
    pub register: String,
    pub subject: String,
    pub event: String,
    pub legal_basis: String,
    pub actor: String,
    pub at_ms: i64,
    pub data: serde_json::Value,
    /// SHA-256 of the change, as recorded in the ledger.
    pub evidence: String,
    pub ledger_index: Option<i64>,
}

/// A register's write side.
#[derive(Clone)]
pub struct Registrar {
    db: Database,
    register: &'static str,
    ledger: Option<Recorder>,
    events: Option<EventPublisher>,
}

impl Registrar {
    pub fn new(db: Database, register: &'static str, ledger: Option<Recorder>) -> Registrar {
        Registrar {
            db,
            register,
            ledger,
            events: None,
        }
    }

    /// Publish this register's changes as events over the exchange.
    pub fn with_events(mut self, events: Option<EventPublisher>) -> Registrar {
        self.events = events;
        self
    }

    /// Publish a committed change as an event, then mark it published; for the population
    /// register, the person's data tracker records the release in the same transaction.
    /// Changes of kinds without a topic, or without publishing, are left alone.
    pub async fn publish(&self, change: &Change) -> Result<(), Error> {
        let Some(events) = &self.events else {
            return Ok(());
        };
        let Some(topic) = events.topic(change)? else {
            return Ok(());
        };
        events.publish(change).await?;
        let what = "marking the change published";
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE registry_change SET published_ms = $1 WHERE seq = $2")
            .bind(now_ms())
            .bind(change.seq)
            .execute(&mut *tx)
            .await
            .db(what)?;
        if self.register == "population" {
            sqlx::query(
                "INSERT INTO registry_access (subject, client, user_id, purpose, service, message_id, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(change.subject.clone())
            .bind(topic.to_string())
            .bind(change.actor.clone())
            .bind(format!("published to the subscribers of {topic}"))
            .bind(format!("events.{}", topic.code()))
            .bind(Some(change.evidence.clone()))
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .db(what)?;
        }
        tx.commit().await.db(what)
    }

    /// Publish every change still unpublished, oldest first, stopping at the first
    /// failure so that subscribers see a register's events in order as far as it goes.
    /// Returns how many were published.
    pub async fn publish_pending(&self) -> Result<usize, Error> {
        if self.events.is_none() {
            return Ok(0);
        }
        let pending = self
            .changes_where(
                "published_ms IS NULL AND event IN ('birth', 'death', 'address', 'enterprise.registered')",
                None,
                0,
                1000,
            )
            .await?;
        let mut n = 0;
        for c in pending {
            self.publish(&c).await?;
            n += 1;
        }
        Ok(n)
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Record a change in the open transaction; the caller commits, then calls
    /// [`Registrar::anchor`].
    async fn record(
        &self,
        tx: &mut sqlx::AnyConnection,
        subject: &str,
        event: &str,
        legal_basis: &str,
        actor: &Actor,
        data: serde_json::Value,
    ) -> Result<Change, Error> {
        if legal_basis.trim().is_empty() {
            return Err(invalid("every change needs its legal basis"));
        }
        let at_ms = now_ms();
        let body = serde_json::json!({
            "register": self.register, "subject": subject, "event": event,
            "legal_basis": legal_basis, "actor": actor.user, "client": actor.client,
            "at_ms": at_ms, "data": data,
        });
        let evidence = hex::encode(Sha256::digest(body.to_string().as_bytes()));
        let row = sqlx::query(
            "INSERT INTO registry_change (register, subject, event, legal_basis, actor, at_ms, data, evidence, request_key, request_digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq",
        )
        .bind(self.register)
        .bind(subject.to_owned())
        .bind(event.to_owned())
        .bind(legal_basis.to_owned())
        .bind(format!("{} via {}", actor.user, actor.client))
        .bind(at_ms)
        .bind(body.to_string())
        .bind(evidence.clone())
        .bind(actor.stored_key(self.register))
        .bind(actor.request.as_ref().map(|r| r.digest.clone()))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match e.as_database_error() {
            // Two requests with one key at once: the second waits for the first's answer.
            Some(d) if d.is_unique_violation() => Error::new(
                ErrorCode::RegistryRequestInProgress,
                "a request with this Idempotency-Key is being processed; retry to get its result",
            ),
            _ => xalo_store::db_error(e, "recording the change"),
        })?;
        Ok(Change {
            seq: row.try_get(0).db("recording the change")?,
            register: self.register.into(),
            subject: subject.into(),
            event: event.into(),
            legal_basis: legal_basis.into(),
            actor: format!("{} via {}", actor.user, actor.client),
            at_ms,
            data: body,
            evidence,
            ledger_index: None,
        })
    }

    /// Put the change's hash in the ledger and remember where. A change committed while the
    /// ledger was away stays unanchored until [`Registrar::anchor_pending`] runs.
    pub async fn anchor(&self, change: &mut Change) -> Result<(), Error> {
        let Some(ledger) = &self.ledger else {
            return Ok(());
        };
        let kind: EntryKind = "registry.change".parse()?;
        let data = serde_json::json!({
            "register": self.register, "seq": change.seq, "evidence": change.evidence,
        });
        let index = ledger
            .record(Entry::new(kind, data.to_string().into_bytes())?)
            .await?;
        sqlx::query("UPDATE registry_change SET ledger_index = $1 WHERE seq = $2")
            .bind(index as i64)
            .bind(change.seq)
            .execute(self.db.pool())
            .await
            .db("noting the ledger index")?;
        change.ledger_index = Some(index as i64);
        Ok(())
    }

    /// Anchor every change still waiting for the ledger. Returns how many were anchored.
    pub async fn anchor_pending(&self) -> Result<usize, Error> {
        let pending = self
            .changes_where("ledger_index IS NULL", None, 0, 1000)
            .await?;
        let mut n = 0;
        for mut c in pending {
            self.anchor(&mut c).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Changes after `since` matching `condition`, a fixed SQL fragment that may use `$2`
    /// for `subject`.
    async fn changes_where(
        &self,
        condition: &'static str,
        subject: Option<&str>,
        since: i64,
        limit: i64,
    ) -> Result<Vec<Change>, Error> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, register, subject, event, legal_basis, actor, at_ms, data, evidence, ledger_index \
             FROM registry_change WHERE seq > $1 AND {condition} ORDER BY seq LIMIT {}",
            limit.clamp(1, 1000)
        )))
        .bind(since);
        if let Some(s) = subject {
            q = q.bind(s.to_owned());
        }
        let rows = q.fetch_all(self.db.pool()).await.db("reading changes")?;
        rows.iter()
            .map(|r| {
                let ctx = "reading changes";
                let data: String = r.try_get(7).db(ctx)?;
                Ok(Change {
                    seq: r.try_get(0).db(ctx)?,
                    register: r.try_get(1).db(ctx)?,
                    subject: r.try_get(2).db(ctx)?,
                    event: r.try_get(3).db(ctx)?,
                    legal_basis: r.try_get(4).db(ctx)?,
                    actor: r.try_get(5).db(ctx)?,
                    at_ms: r.try_get(6).db(ctx)?,
                    data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                    evidence: r.try_get(8).db(ctx)?,
                    ledger_index: r.try_get(9).db(ctx)?,
                })
            })
            .collect()
    }

    /// The change an earlier request with the actor's idempotency key made, if any. A key
    /// used before for a different request is refused.
    pub async fn earlier(&self, actor: &Actor) -> Result<Option<Change>, Error> {
        let (Some(key), Some(request)) = (actor.stored_key(self.register), &actor.request) else {
            return Ok(None);
        };
        let Some(row) =
            sqlx::query("SELECT seq, request_digest FROM registry_change WHERE request_key = $1")
                .bind(key.clone())
                .fetch_optional(self.db.pool())
                .await
                .db("looking up the idempotency key")?
        else {
            return Ok(None);
        };
        let seq: i64 = row.try_get(0).db("looking up the idempotency key")?;
        let digest: Option<String> = row.try_get(1).db("looking up the idempotency key")?;
        if digest.as_deref() != Some(request.digest.as_str()) {
            return Err(Error::new(
                ErrorCode::RegistryRequestKeyReused,
                format!(
                    "Idempotency-Key {:?} was used before for a different request (change {seq})",
                    request.key
                ),
            ));
        }
        Ok(self
            .changes_where("request_key = $2", Some(&key), 0, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Changes after `since`, in order: the event feed subscribers poll.
    pub async fn changes_since(&self, since: i64, limit: i64) -> Result<Vec<Change>, Error> {
        self.changes_where("1 = 1", None, since, limit).await
    }

    /// The history of one person or enterprise.
    pub async fn history(&self, subject: &str) -> Result<Vec<Change>, Error> {
        self.changes_where("subject = $2", Some(subject), 0, 1000)
            .await
    }

    async fn commit_and_anchor(
        &self,
        tx: xalo_store::WriteTx,
        mut change: Change,
    ) -> Result<Change, Error> {
        tx.commit().await.db("committing the change")?;
        if let Err(e) = self.anchor(&mut change).await {
            tracing::warn!(seq = change.seq, error = %e, "change kept; ledger anchoring retried later");
        }
        if let Err(e) = self.publish(&change).await {
            tracing::warn!(seq = change.seq, error = %e, "change kept; publishing its event retried later");
        }
        Ok(change)
    }
}

/// A birth to register.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Birth {
    pub family_name: String,
    pub middle_name: String,
    pub given_name: String,
    pub birth_date: String,
    pub gender: Gender,
    /// Unit of the place of birth; the birth is registered in its province.
    pub birth_place: String,
    pub mother: PersonalCode,
    pub father: Option<PersonalCode>,
    pub legal_basis: String,
}

async fn living(db: &Database, code: &PersonalCode, role: &str) -> Result<Person, Error> {
    let p = store::person(db, code).await?.ok_or_else(|| {
        invalid(format!(
            "the {role} {code} is not in the population register"
        ))
    })?;
    if !p.alive {
        return Err(invalid(format!(
            "the {role} {code} is recorded as deceased"
        )));
    }
    Ok(p)
}

impl Registrar {
    /// Register a birth: the mother (and father, if named) must be registered and alive and
    /// old enough; the child gets a new personal code of the birth province.
    pub async fn register_birth(
        &self,
        b: &Birth,
        actor: &Actor,
    ) -> Result<(Person, Change), Error> {
        let born = date(&b.birth_date, "birth date")?;
        if born > today() {
            return Err(invalid("the birth date is in the future"));
        }
        known_unit(&b.birth_place)?;
        if b.given_name.trim().is_empty() || b.family_name.trim().is_empty() {
            return Err(invalid("family and given names are required"));
        }
        let mother = living(&self.db, &b.mother, "mother").await?;
        if mother.gender != Gender::Female {
            return Err(invalid(format!("{} is not recorded as female", b.mother)));
        }
        let father = match &b.father {
            Some(f) => {
                let father = living(&self.db, f, "father").await?;
                if father.gender != Gender::Male {
                    return Err(invalid(format!("{f} is not recorded as male")));
                }
                Some(father)
            }
            None => None,
        };
        for parent in std::iter::once(&mother).chain(father.as_ref()) {
            let parent_born = date(&parent.birth_date, "parent's birth date")?;
            if born < parent_born + chrono::Duration::days(365 * 12) {
                return Err(invalid(format!(
                    "{} would have been younger than 12",
                    parent.code
                )));
            }
        }
        let province: u16 = admin_units()
            .unit(&b.birth_place)
            .and_then(|u| u.province.parse().ok())
            .unwrap_or(1);
        let year = born.format("%Y").to_string().parse::<i32>().unwrap_or(2000);
        let mut tx = self.db.begin_write().await?;
        let prefix = PersonalCode::vietnamese(province, b.gender, year, 0)?.to_string();
        let prefix = &prefix[..prefix.len() - 6];
        let last: Option<String> = sqlx::query("SELECT MAX(code) FROM person WHERE code LIKE $1")
            .bind(format!("{prefix}%"))
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .db("finding the next serial")?;
        let serial = last
            .and_then(|c| c.get(c.len() - 6..).and_then(|s| s.parse::<u32>().ok()))
            .map_or(1, |s| s + 1);
        let child = Person {
            code: PersonalCode::vietnamese(province, b.gender, year, serial)?,
            family_name: b.family_name.trim().into(),
            middle_name: b.middle_name.trim().into(),
            given_name: b.given_name.trim().into(),
            birth_date: b.birth_date.clone(),
            gender: b.gender,
            birth_place: b.birth_place.clone(),
            nationality: "VN".into(),
            residence_unit: mother.residence_unit.clone(),
            residence_address: mother.residence_address.clone(),
            temporary_residence_unit: None,
            father: b.father,
            mother: Some(b.mother),
            spouse: None,
            alive: true,
            death_date: None,
        };
        store::insert_people(&mut tx, std::slice::from_ref(&child)).await?;
        let change = self
            .record(
                &mut tx,
                &child.code.to_string(),
                "birth",
                &b.legal_basis,
                actor,
                serde_json::to_value(&child).unwrap_or_default(),
            )
            .await?;
        Ok((child, self.commit_and_anchor(tx, change).await?))
    }

    /// Record a death.
    pub async fn record_death(
        &self,
        code: &PersonalCode,
        death_date: &str,
        legal_basis: &str,
        actor: &Actor,
    ) -> Result<Change, Error> {
        let died = date(death_date, "date of death")?;
        if died > today() {
            return Err(invalid("the date of death is in the future"));
        }
        let p = living(&self.db, code, "person").await?;
        if died < date(&p.birth_date, "birth date")? {
            return Err(invalid("the date of death is before the birth"));
        }
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE person SET alive = 0, death_date = $1 WHERE code = $2")
            .bind(death_date.to_owned())
            .bind(code.to_string())
            .execute(&mut *tx)
            .await
            .db("recording the death")?;
        let change = self
            .record(
                &mut tx,
                &code.to_string(),
                "death",
                legal_basis,
                actor,
                serde_json::json!({ "death_date": death_date }),
            )
            .await?;
        self.commit_and_anchor(tx, change).await
    }

    /// Change a person's permanent residence.
    pub async fn change_address(
        &self,
        code: &PersonalCode,
        unit: &str,
        address: &str,
        legal_basis: &str,
        actor: &Actor,
    ) -> Result<Change, Error> {
        known_unit(unit)?;
        if address.trim().is_empty() {
            return Err(invalid("the street address is required"));
        }
        let p = living(&self.db, code, "person").await?;
        if p.residence_unit == unit && p.residence_address == address {
            return Err(invalid("that is already the registered address"));
        }
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE person SET residence_unit = $1, residence_address = $2 WHERE code = $3",
        )
        .bind(unit.to_owned())
        .bind(address.trim().to_owned())
        .bind(code.to_string())
        .execute(&mut *tx)
        .await
        .db("changing the address")?;
        let data = serde_json::json!({
            "from": { "unit": p.residence_unit, "address": p.residence_address },
            "to": { "unit": unit, "address": address.trim() },
        });
        let change = self
            .record(
                &mut tx,
                &code.to_string(),
                "address",
                legal_basis,
                actor,
                data,
            )
            .await?;
        self.commit_and_anchor(tx, change).await
    }

    /// Register a marriage: both alive, unmarried and of marriageable age (men 20, women
    /// 18, Law on Marriage and Family 2014).
    pub async fn register_marriage(
        &self,
        a: &PersonalCode,
        b: &PersonalCode,
        on: &str,
        legal_basis: &str,
        actor: &Actor,
    ) -> Result<Change, Error> {
        let day = date(on, "marriage date")?;
        if a == b {
            return Err(invalid("a person cannot marry themselves"));
        }
        for code in [a, b] {
            let p = living(&self.db, code, "spouse").await?;
            if let Some(s) = p.spouse {
                return Err(invalid(format!("{code} is already married to {s}")));
            }
            let age_needed = if p.gender == Gender::Male { 20 } else { 18 };
            let born = date(&p.birth_date, "birth date")?;
            if day < born + chrono::Duration::days(365 * age_needed + age_needed / 4) {
                return Err(invalid(format!("{code} is younger than {age_needed}")));
            }
        }
        let mut tx = self.db.begin_write().await?;
        for (x, y) in [(a, b), (b, a)] {
            sqlx::query("UPDATE person SET spouse = $1 WHERE code = $2")
                .bind(y.to_string())
                .bind(x.to_string())
                .execute(&mut *tx)
                .await
                .db("registering the marriage")?;
        }
        let data = serde_json::json!({ "spouses": [a, b], "date": on });
        let change = self
            .record(
                &mut tx,
                &a.to_string(),
                "marriage",
                legal_basis,
                actor,
                data,
            )
            .await?;
        self.commit_and_anchor(tx, change).await
    }
}

/// An enterprise to register.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnterpriseRegistration {
    pub name: String,
    pub foreign_name: Option<String>,
    pub unit: String,
    pub address: String,
    pub legal_form: String,
    pub charter_capital: i64,
    pub business_lines: Vec<String>,
    pub representative: PersonalCode,
    pub founders: Vec<PersonalCode>,
    pub legal_basis: String,
}

/// How the business register learns whether a person exists and lives: a question to the
/// population register, which another member owns (over the exchange, never its tables).
pub trait PersonCheck: Send + Sync {
    fn is_living(
        &self,
        code: &PersonalCode,
        actor: &Actor,
    ) -> impl std::future::Future<Output = Result<bool, Error>> + Send;
}

impl Registrar {
    /// Register an enterprise: founders and representative must be living persons (checked
    /// with the population register; e-Residents by their code's validity, since their
    /// register is Estonia's), the name must be unique in the province, the legal form
    /// known.
    pub async fn register_enterprise(
        &self,
        r: &EnterpriseRegistration,
        people: &impl PersonCheck,
        actor: &Actor,
    ) -> Result<(Enterprise, Change), Error> {
        known_unit(&r.unit)?;
        if !LEGAL_FORMS.contains(&r.legal_form.as_str()) {
            return Err(invalid(format!(
                "unknown legal form {:?}; one of {}",
                r.legal_form,
                LEGAL_FORMS.join("; ")
            )));
        }
        if r.name.trim().len() < 3 {
            return Err(invalid("the enterprise needs a name"));
        }
        if r.charter_capital <= 0 {
            return Err(invalid("the charter capital must be positive"));
        }
        if r.business_lines.is_empty()
            || r.business_lines
                .iter()
                .any(|l| l.len() != 4 || !l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid(
                "business lines are 4-digit VSIC codes, at least one",
            ));
        }
        if r.founders.is_empty() {
            return Err(invalid("an enterprise needs at least one founder"));
        }
        for code in std::iter::once(&r.representative).chain(&r.founders) {
            if code.country() == xalo_core::Country::Vietnam
                && !people.is_living(code, actor).await?
            {
                return Err(invalid(format!(
                    "{code} is not a living person in the population register"
                )));
            }
        }
        let province = admin_units()
            .unit(&r.unit)
            .map(|u| u.province.clone())
            .unwrap_or_default();
        let key = fold(&r.name);
        let same_name = sqlx::query("SELECT unit FROM enterprise WHERE name_key = $1")
            .bind(key.clone())
            .fetch_all(self.db.pool())
            .await
            .db("checking the name")?;
        for row in same_name {
            let unit: String = row.try_get(0).db("checking the name")?;
            if admin_units()
                .unit(&unit)
                .is_some_and(|u| u.province == province)
            {
                return Err(Error::new(
                    ErrorCode::RegistryDuplicate,
                    format!(
                        "an enterprise named {:?} is already registered in this province",
                        r.name
                    ),
                ));
            }
        }
        let mut tx = self.db.begin_write().await?;
        let next: i64 = sqlx::query("SELECT COUNT(*) FROM enterprise")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .db("numbering the enterprise")?;
        let province_num: u64 = province.parse().unwrap_or(1);
        let mut n = 1_000_000 + next as u64;
        let code = loop {
            if let Some(c) = TaxCode::from_first9(province_num * 10_000_000 + n % 10_000_000) {
                let taken = store::enterprise(&self.db, &c.to_string()).await?.is_some();
                if !taken {
                    break c;
                }
            }
            n += 1;
        };
        let e = Enterprise {
            code,
            name: r.name.trim().into(),
            foreign_name: r.foreign_name.clone(),
            unit: r.unit.clone(),
            address: r.address.clone(),
            legal_form: r.legal_form.clone(),
            charter_capital: r.charter_capital,
            business_lines: r.business_lines.clone(),
            representative: r.representative,
            founders: r.founders.clone(),
            status: "active".into(),
            registered_on: today().format("%Y-%m-%d").to_string(),
        };
        store::insert_enterprises(&mut tx, std::slice::from_ref(&e)).await?;
        let change = self
            .record(
                &mut tx,
                &code.to_string(),
                "enterprise.registered",
                &r.legal_basis,
                actor,
                serde_json::to_value(&e).unwrap_or_default(),
            )
            .await?;
        Ok((e, self.commit_and_anchor(tx, change).await?))
    }
}
