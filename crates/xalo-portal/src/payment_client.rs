//! The portal's side of payments: a merchant of the `payment` role.
//!
//! [`PaymentClient::start`] creates the order for a dossier's fee and gives the URL to send
//! the citizen to. The outcome comes back twice, signed by the provider: as a callback
//! (`POST /payment/callback`, server to server, retried until answered 2xx) and with the
//! citizen's browser (`GET /payment/return`). Both go through one idempotent apply: the
//! outcome's `event_id` is stored with the change in one transaction, so whichever comes
//! first changes the payment and the other — or any replay — changes nothing and is
//! answered "already processed". A message whose signature does not verify is refused
//! with `XALO-PAY-006`; one that does not match the order the portal made (amount,
//! reference, merchant) with `XALO-PAY-008`.
//!
//! [`PaymentClient::reconcile`] (`xalo portal reconcile`) fetches the provider's signed
//! statement of a day: a payment the provider settled as paid that the portal did not
//! mark is marked paid (a callback lost for good), and one the portal holds paid that the
//! statement lacks is flagged for a person to look at.
//!
//! Tables (migration component `portal_payment`): `portal_payment` (one row per order,
//! keyed by the provider's payment id) and `portal_payment_event` (every outcome applied,
//! by event id).
//!
//! The callback route authenticates by signature, not by session: the portal's service
//! exempts [`CALLBACK_PATH`] from the CSRF check.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use xalo_core::error::ErrorBody;
use xalo_core::{Config, Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Migration, Row, sqlx};
use xalo_web::{Lang, Page, Session};

use crate::dossier::{self, Actor};
use crate::payment::message::{self, Notification, PaymentStatus, Statement};
use crate::payment::{NewOrder, Order, day_range, format_vnd, unix_now, vietnam};

/// The migration component of the portal's payment tables.
pub const COMPONENT: &str = "portal_payment";
/// Where the provider posts callbacks; exempt from the CSRF check.
pub const CALLBACK_PATH: &str = "/payment/callback";
/// Where the citizen's browser comes back.
pub const RETURN_PATH: &str = "/payment/return";

const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "payments of dossiers and the outcomes applied",
    "CREATE TABLE portal_payment (
        payment_id TEXT PRIMARY KEY,
        dossier_code TEXT NOT NULL,
        amount_vnd BIGINT NOT NULL,
        status TEXT NOT NULL,
        created_unix BIGINT NOT NULL,
        settled_unix BIGINT,
        bank_reference TEXT,
        flagged TEXT
    );
    CREATE INDEX portal_payment_dossier ON portal_payment (dossier_code);
    CREATE INDEX portal_payment_settled ON portal_payment (status, settled_unix);
    CREATE TABLE portal_payment_event (
        event_id TEXT PRIMARY KEY,
        payment_id TEXT NOT NULL,
        source TEXT NOT NULL,
        received_unix BIGINT NOT NULL,
        outcome TEXT NOT NULL
    );",
)];

/// How the portal reaches its payment provider (`[roles.portal.payment]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentClientSettings {
    /// The provider's base URL.
    pub provider_url: String,
    pub merchant_id: String,
    /// The merchant's secret (the provider keeps its SHA-256).
    pub secret: String,
    /// The provider's public key, `ed25519:BASE64`, which every callback, return and
    /// statement must verify with.
    pub provider_key: String,
}

/// The portal's record of one payment order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortalPayment {
    pub payment_id: String,
    pub dossier_code: String,
    pub amount_vnd: i64,
    pub status: PaymentStatus,
    pub created_unix: i64,
    pub settled_unix: Option<i64>,
    pub bank_reference: Option<String>,
    /// Why reconciliation flagged it, if it did.
    pub flagged: Option<String>,
}

/// A payment started: where to send the citizen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartedPayment {
    pub payment_id: String,
    pub pay_url: String,
}

/// What applying an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// The payment changed.
    Processed,
    /// Seen before, or the payment is already in that state: nothing changed.
    AlreadyProcessed,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Processed => "processed",
            Applied::AlreadyProcessed => "already_processed",
        }
    }
}

/// A payment reconciliation named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileItem {
    pub payment_id: String,
    pub dossier_code: String,
    pub amount_vnd: i64,
}

/// The result of reconciling one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub date: String,
    /// Payments the provider's statement lists as paid.
    pub provider_paid: usize,
    pub provider_total_vnd: i64,
    /// Paid on both sides.
    pub matched: usize,
    /// Paid at the provider but not marked at the portal: now marked paid.
    pub fixed: Vec<ReconcileItem>,
    /// Marked paid at the portal but not in the provider's statement: flagged.
    pub flagged: Vec<ReconcileItem>,
}

impl ReconcileReport {
    pub fn is_clean(&self) -> bool {
        self.fixed.is_empty() && self.flagged.is_empty()
    }
}

impl std::fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Payments of {}: {} paid at the provider ({}), {} matched",
            self.date,
            self.provider_paid,
            format_vnd(self.provider_total_vnd),
            self.matched
        )?;
        for i in &self.fixed {
            writeln!(
                f,
                "  fixed    {} {} {}: paid at the provider, now marked paid",
                i.payment_id,
                i.dossier_code,
                format_vnd(i.amount_vnd)
            )?;
        }
        for i in &self.flagged {
            writeln!(
                f,
                "  FLAGGED  {} {} {}: marked paid here, not in the provider's statement",
                i.payment_id,
                i.dossier_code,
                format_vnd(i.amount_vnd)
            )?;
        }
        write!(
            f,
            "{}",
            if self.is_clean() {
                "no mismatches"
            } else {
                "mismatches found"
            }
        )
    }
}

/// The portal's payment client.
#[derive(Clone)]
pub struct PaymentClient {
    inner: Arc<Inner>,
    /// Where the pages' reads of payments go: on SQLite the readers' pool, so that they do
    /// not queue behind writes on the one writer connection.
    reads: Database,
}

struct Inner {
    db: Database,
    settings: PaymentClientSettings,
    key: VerifyingKey,
    http: reqwest::Client,
}

fn upstream(m: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::PayUpstream, m.to_string())
}

fn mismatch(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::PayMismatch, m)
}

/// Create the portal's payment tables.
pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate(COMPONENT, MIGRATIONS).await
}

const PAYMENT_COLUMNS: &str = "payment_id, dossier_code, amount_vnd, status, created_unix, \
     settled_unix, bank_reference, flagged";

fn payment_of(row: &sqlx::any::AnyRow) -> Result<PortalPayment, Error> {
    let ctx = "reading a payment";
    let status: String = row.try_get(3).db(ctx)?;
    Ok(PortalPayment {
        payment_id: row.try_get(0).db(ctx)?,
        dossier_code: row.try_get(1).db(ctx)?,
        amount_vnd: row.try_get(2).db(ctx)?,
        status: PaymentStatus::parse(&status)?,
        created_unix: row.try_get(4).db(ctx)?,
        settled_unix: row.try_get(5).db(ctx)?,
        bank_reference: row.try_get(6).db(ctx)?,
        flagged: row.try_get(7).db(ctx)?,
    })
}

impl PaymentClient {
    /// A client writing to the portal's database `db` (its tables are migrated here).
    pub async fn new(
        db: Database,
        settings: PaymentClientSettings,
    ) -> Result<PaymentClient, Error> {
        let key = message::parse_public_key(&settings.provider_key)?;
        migrate(&db).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        Ok(PaymentClient {
            reads: db.clone(),
            inner: Arc::new(Inner {
                db,
                settings: PaymentClientSettings {
                    provider_url: settings.provider_url.trim_end_matches('/').to_owned(),
                    ..settings
                },
                key,
                http,
            }),
        })
    }

    fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Serve the pages' reads from `reads` (the portal's readers) instead of the writer.
    pub fn with_reader(mut self, reads: Database) -> PaymentClient {
        self.reads = reads;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.settings.provider_url)
    }

    async fn check(r: reqwest::Response) -> Result<reqwest::Response, Error> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        // The provider's own coded error passes through (a paid order's conflict, say).
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => Error::new(b.code, b.message),
            Err(_) => upstream(format!("the payment provider answered {status}: {text}")),
        })
    }

    /// Start paying `amount_vnd` for `dossier_code`: the provider's order (the same one
    /// again while it waits), recorded here. A dossier paid already refuses with
    /// `XALO-PAY-004`.
    pub async fn start(
        &self,
        dossier_code: &str,
        amount_vnd: i64,
        description: &str,
        lang: Lang,
    ) -> Result<StartedPayment, Error> {
        if let Some(p) = self.paid_payment(dossier_code).await? {
            return Err(Error::new(
                ErrorCode::PayOrderConflict,
                format!(
                    "dossier {dossier_code} was paid already (payment {})",
                    p.payment_id
                ),
            ));
        }
        let s = &self.inner.settings;
        let r = self
            .inner
            .http
            .post(self.url("/api/v1/orders"))
            .basic_auth(&s.merchant_id, Some(&s.secret))
            .json(&NewOrder {
                order_ref: dossier_code.to_owned(),
                amount_vnd,
                description: description.to_owned(),
                language: Some(lang.code().to_owned()),
            })
            .send()
            .await
            .map_err(|e| upstream(format!("{}: {e}", s.provider_url)))?;
        let order: Order = Self::check(r).await?.json().await.map_err(upstream)?;
        if order.order_ref != dossier_code || order.amount_vnd != amount_vnd {
            return Err(mismatch("the provider answered with another order"));
        }
        sqlx::query(
            "INSERT INTO portal_payment (payment_id, dossier_code, amount_vnd, status, created_unix) \
             VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT (payment_id) DO NOTHING",
        )
        .bind(order.payment_id.clone())
        .bind(dossier_code.to_owned())
        .bind(amount_vnd)
        .bind(unix_now())
        .execute(self.db().pool())
        .await
        .db("recording a payment")?;
        Ok(StartedPayment {
            payment_id: order.payment_id,
            pay_url: order.pay_url,
        })
    }

    /// Every payment order of a dossier, newest first.
    pub async fn payments_of(&self, dossier_code: &str) -> Result<Vec<PortalPayment>, Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAYMENT_COLUMNS} FROM portal_payment WHERE dossier_code = $1 \
             ORDER BY created_unix DESC, payment_id"
        )))
        .bind(dossier_code.to_owned())
        .fetch_all(self.reads.pool())
        .await
        .db("reading payments")?;
        rows.iter().map(payment_of).collect()
    }

    /// The dossier's paid payment, if it has one: whether its fee is paid.
    pub async fn paid_payment(&self, dossier_code: &str) -> Result<Option<PortalPayment>, Error> {
        Ok(self
            .payments_of(dossier_code)
            .await?
            .into_iter()
            .find(|p| p.status == PaymentStatus::Paid))
    }

    async fn payment(&self, payment_id: &str) -> Result<Option<PortalPayment>, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAYMENT_COLUMNS} FROM portal_payment WHERE payment_id = $1"
        )))
        .bind(payment_id.to_owned())
        .fetch_optional(self.db().pool())
        .await
        .db("reading a payment")?;
        row.as_ref().map(payment_of).transpose()
    }

    /// Apply a callback: its body as received and its signature header.
    pub async fn apply_callback(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<Applied, Error> {
        message::verify_body(&self.inner.key, body, signature)?;
        let n: Notification = serde_json::from_slice(body).map_err(|e| {
            Error::new(
                ErrorCode::PayMalformedMessage,
                format!("callback body: {e}"),
            )
        })?;
        self.apply(&n, "callback").await
    }

    /// Apply the signed outcome the citizen's browser brought back.
    pub async fn apply_return(&self, query: &str) -> Result<(Notification, Applied), Error> {
        let n = Notification::from_signed_query(query, &self.inner.key)?;
        let applied = self.apply(&n, "return").await?;
        Ok((n, applied))
    }

    /// Apply a verified outcome once.
    async fn apply(&self, n: &Notification, source: &str) -> Result<Applied, Error> {
        if n.merchant_id != self.inner.settings.merchant_id {
            return Err(mismatch(format!(
                "the outcome is for merchant {}, not this portal",
                n.merchant_id
            )));
        }
        let mut tx = self.db().begin_write().await?;
        let seen = sqlx::query("SELECT outcome FROM portal_payment_event WHERE event_id = $1")
            .bind(n.event_id.clone())
            .fetch_optional(&mut *tx)
            .await
            .db("reading payment events")?;
        if seen.is_some() {
            tx.commit().await.db("committing")?;
            return Ok(Applied::AlreadyProcessed);
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAYMENT_COLUMNS} FROM portal_payment WHERE payment_id = $1"
        )))
        .bind(n.payment_id.clone())
        .fetch_optional(&mut *tx)
        .await
        .db("reading a payment")?;
        let current = match row.as_ref().map(payment_of).transpose()? {
            Some(p) => p,
            None => {
                return Err(mismatch(format!(
                    "payment {} was not started by this portal",
                    n.payment_id
                )));
            }
        };
        if current.dossier_code != n.order_ref || current.amount_vnd != n.amount_vnd {
            return Err(mismatch(format!(
                "payment {} is {} đồng for {}, the outcome says {} for {}",
                n.payment_id, current.amount_vnd, current.dossier_code, n.amount_vnd, n.order_ref
            )));
        }
        use PaymentStatus::*;
        // Money taken outranks everything: a late "paid" overrides a cancel, never the
        // reverse.
        let change = matches!(
            (current.status, n.status),
            (Pending, Paid | Cancelled | Expired) | (Cancelled | Expired, Paid)
        );
        if change {
            // Only from the state read: an outcome applied meanwhile by another request
            // (PostgreSQL lets two read at once) leaves nothing to do here.
            let updated = sqlx::query(
                "UPDATE portal_payment SET status = $1, settled_unix = $2, bank_reference = $3 \
                 WHERE payment_id = $4 AND status = $5",
            )
            .bind(n.status.as_str())
            .bind(n.settled_unix)
            .bind(n.bank_reference.clone())
            .bind(n.payment_id.clone())
            .bind(current.status.as_str())
            .execute(&mut *tx)
            .await
            .db("updating a payment")?;
            if updated.rows_affected() == 0 {
                return Ok(Applied::AlreadyProcessed);
            }
        } else if current.status == Paid && n.status != Paid {
            sqlx::query("UPDATE portal_payment SET flagged = $1 WHERE payment_id = $2")
                .bind(format!(
                    "the provider reported it {} after it was paid",
                    n.status.as_str()
                ))
                .bind(n.payment_id.clone())
                .execute(&mut *tx)
                .await
                .db("flagging a payment")?;
        }
        let applied = if change {
            Applied::Processed
        } else {
            Applied::AlreadyProcessed
        };
        let inserted = sqlx::query(
            "INSERT INTO portal_payment_event (event_id, payment_id, source, received_unix, outcome) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(n.event_id.clone())
        .bind(n.payment_id.clone())
        .bind(source.to_owned())
        .bind(unix_now())
        .bind(format!("{} {}", n.status.as_str(), applied.as_str()))
        .execute(&mut *tx)
        .await
        .map_err(|e| xalo_store::db_error(e, "recording a payment event"));
        match inserted {
            // The same outcome, applied by a concurrent request that committed first.
            Err(e) if e.code == ErrorCode::StoreConflict => return Ok(Applied::AlreadyProcessed),
            other => other?,
        };
        tx.commit().await.db("committing a payment")?;
        if change {
            tracing::info!(payment_id = %n.payment_id, dossier = %n.order_ref, status = n.status.as_str(), source, "payment applied");
            self.note_on_timeline(n).await;
        }
        Ok(applied)
    }

    /// The dossier's timeline shows the payment; the payment row is the record, so a
    /// timeline that cannot be written (a dossier of another system) only logs.
    async fn note_on_timeline(&self, n: &Notification) {
        let action = match n.status {
            PaymentStatus::Paid => "paid",
            PaymentStatus::Cancelled => "payment_cancelled",
            _ => return,
        };
        let note = format!(
            "{} {}{}",
            n.payment_id,
            format_vnd(n.amount_vnd),
            n.bank_reference
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default()
        );
        if let Err(e) = dossier::record_event(
            self.db(),
            &n.order_ref,
            &Actor::System("payment".into()),
            action,
            Some(&note),
        )
        .await
        {
            tracing::warn!(dossier = %n.order_ref, error = %e, "payment not written to the dossier's timeline");
        }
    }

    /// The provider's signed statement of `date`, verified.
    pub async fn statement(&self, date: &str) -> Result<Statement, Error> {
        day_range(date)?;
        let s = &self.inner.settings;
        let r = self
            .inner
            .http
            .get(self.url(&format!("/api/v1/statements/{date}")))
            .basic_auth(&s.merchant_id, Some(&s.secret))
            .send()
            .await
            .map_err(|e| upstream(format!("{}: {e}", s.provider_url)))?;
        let r = Self::check(r).await?;
        let signature = r
            .headers()
            .get(message::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = r.bytes().await.map_err(upstream)?;
        message::verify_body(&self.inner.key, &body, signature.as_deref())?;
        let statement: Statement = serde_json::from_slice(&body)
            .map_err(|e| Error::new(ErrorCode::PayMalformedMessage, format!("statement: {e}")))?;
        if statement.merchant_id != s.merchant_id || statement.date != date {
            return Err(mismatch("the statement is for another merchant or day"));
        }
        Ok(statement)
    }

    /// Reconcile the payments of `date` (`YYYY-MM-DD`, Vietnam's time zone).
    pub async fn reconcile(&self, date: &str) -> Result<ReconcileReport, Error> {
        let (from, to) = day_range(date)?;
        let statement = self.statement(date).await?;
        let mut report = ReconcileReport {
            date: date.to_owned(),
            provider_paid: 0,
            provider_total_vnd: statement.total_paid_vnd,
            matched: 0,
            fixed: Vec::new(),
            flagged: Vec::new(),
        };
        let mut paid_at_provider = std::collections::BTreeSet::new();
        for line in &statement.lines {
            let n = Notification {
                // One synthetic outcome per payment: reconciling twice applies it once.
                event_id: format!("reconcile-{}", line.payment_id),
                merchant_id: statement.merchant_id.clone(),
                payment_id: line.payment_id.clone(),
                order_ref: line.order_ref.clone(),
                amount_vnd: line.amount_vnd,
                status: line.status,
                settled_unix: line.settled_unix,
                bank_reference: line.bank_reference.clone(),
            };
            if line.status != PaymentStatus::Paid {
                // A cancellation the portal missed is applied quietly: nothing was paid.
                if self.payment(&line.payment_id).await?.is_some() {
                    self.apply(&n, "reconcile").await?;
                }
                continue;
            }
            report.provider_paid += 1;
            paid_at_provider.insert(line.payment_id.clone());
            let item = ReconcileItem {
                payment_id: line.payment_id.clone(),
                dossier_code: line.order_ref.clone(),
                amount_vnd: line.amount_vnd,
            };
            match self.payment(&line.payment_id).await? {
                Some(p) if p.status == PaymentStatus::Paid => report.matched += 1,
                Some(_) => {
                    self.apply(&n, "reconcile").await?;
                    report.fixed.push(item);
                }
                None => {
                    // The order was made but its row never written here (the portal
                    // failed between the two): the provider's statement is the evidence.
                    sqlx::query(
                        "INSERT INTO portal_payment (payment_id, dossier_code, amount_vnd, status, created_unix) \
                         VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT (payment_id) DO NOTHING",
                    )
                    .bind(line.payment_id.clone())
                    .bind(line.order_ref.clone())
                    .bind(line.amount_vnd)
                    .bind(line.settled_unix)
                    .execute(self.db().pool())
                    .await
                    .db("recording a payment")?;
                    self.apply(&n, "reconcile").await?;
                    report.fixed.push(item);
                }
            }
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAYMENT_COLUMNS} FROM portal_payment WHERE status = 'paid' \
             AND settled_unix >= $1 AND settled_unix < $2 ORDER BY settled_unix"
        )))
        .bind(from)
        .bind(to)
        .fetch_all(self.db().pool())
        .await
        .db("reading payments")?;
        for row in &rows {
            let p = payment_of(row)?;
            if paid_at_provider.contains(&p.payment_id) {
                continue;
            }
            sqlx::query("UPDATE portal_payment SET flagged = $1 WHERE payment_id = $2")
                .bind(format!("not paid in the provider's statement of {date}"))
                .bind(p.payment_id.clone())
                .execute(self.db().pool())
                .await
                .db("flagging a payment")?;
            report.flagged.push(ReconcileItem {
                payment_id: p.payment_id,
                dossier_code: p.dossier_code,
                amount_vnd: p.amount_vnd,
            });
        }
        tracing::info!(
            date,
            matched = report.matched,
            fixed = report.fixed.len(),
            flagged = report.flagged.len(),
            "payments reconciled"
        );
        Ok(report)
    }

    /// Reconcile yesterday and today every `every`, for a portal that runs the job itself.
    pub fn spawn_reconciler(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let client = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_secs(60)));
            tick.tick().await;
            loop {
                tick.tick().await;
                let today = chrono::Utc::now().with_timezone(&vietnam()).date_naive();
                for day in [today.pred_opt().unwrap_or(today), today] {
                    let date = day.format("%Y-%m-%d").to_string();
                    match client.reconcile(&date).await {
                        Ok(r) if !r.flagged.is_empty() => {
                            tracing::warn!(
                                date,
                                flagged = r.flagged.len(),
                                "payments flagged by reconciliation"
                            )
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(date, error = %e, "reconciliation failed"),
                    }
                }
            }
        })
    }

    /// The routes of the portal's side: the callback and the return page. The return page
    /// uses the portal's session for the language when the session layer wraps it.
    pub fn router(&self) -> Router {
        Router::new()
            .route(CALLBACK_PATH, post(callback))
            .route(RETURN_PATH, get(return_page))
            .with_state(self.clone())
    }
}

/// The `payment` section of `[roles.portal]`, read on its own so that this works whatever
/// else the portal's settings hold.
#[derive(Deserialize)]
struct PortalPaymentSection {
    #[serde(default)]
    payment: Option<PaymentClientSettings>,
}

/// The client the portal's configuration describes, on the portal's database.
pub async fn from_config(config: &Config) -> Result<PaymentClient, Error> {
    let section: PortalPaymentSection = serde_json::from_value(serde_json::Value::Object(
        config.role("portal").settings,
    ))
    .map_err(|e| {
        Error::new(
            ErrorCode::ConfigInvalid,
            format!("[roles.portal] payment: {e}"),
        )
    })?;
    let settings = section.payment.ok_or_else(|| {
        Error::new(
            ErrorCode::PayNotConfigured,
            "[roles.portal.payment] is not configured",
        )
    })?;
    let db = Database::connect(&config.database_url("portal")).await?;
    PaymentClient::new(db, settings).await
}

/// `xalo portal reconcile [DATE]`: reconcile a day (default yesterday, Vietnam's time).
pub async fn reconcile_command(
    config: &Config,
    date: Option<&str>,
) -> Result<ReconcileReport, Error> {
    let client = from_config(config).await?;
    let date = match date {
        Some(d) => d.to_owned(),
        None => {
            let today = chrono::Utc::now().with_timezone(&vietnam()).date_naive();
            today
                .pred_opt()
                .unwrap_or(today)
                .format("%Y-%m-%d")
                .to_string()
        }
    };
    let report = client.reconcile(&date).await;
    client.db().close().await;
    report
}

async fn callback(
    State(client): State<PaymentClient>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature = headers
        .get(message::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    match client.apply_callback(&body, signature).await {
        Ok(applied) => Json(serde_json::json!({
            "status": applied.as_str(),
            // The codes VNPay's merchants answer with: 00 confirmed, 02 already confirmed.
            "code": if applied == Applied::Processed { "00" } else { "02" },
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(code = %e.code, error = %e.message, "payment callback refused");
            e.into_response()
        }
    }
}

xalo_web::catalogue! {
    /// Texts of the return page.
    pub struct ReturnText {
        paid_title: "Đã thanh toán" / "Payment received",
        paid: "Đã nhận khoản thanh toán cho hồ sơ" / "The payment was received for dossier",
        cancelled_title: "Chưa thanh toán" / "Not paid",
        cancelled: "Bạn đã hủy thanh toán cho hồ sơ" / "You cancelled the payment for dossier",
        failed_title: "Không xác nhận được thanh toán" / "The payment could not be confirmed",
        failed: "Kết quả thanh toán không hợp lệ nên không được ghi nhận. Nếu tài khoản đã bị trừ tiền, hồ sơ sẽ được cập nhật khi cổng thanh toán báo lại." / "The payment result is not valid, so it was not recorded. If your account was charged, the dossier is updated when the payment provider reports it.",
        amount: "Số tiền" / "Amount",
        reference: "Mã giao dịch" / "Transaction reference",
        to_dossier: "Xem hồ sơ" / "View the dossier",
    }
}

#[derive(Template)]
#[template(path = "payment/return.html")]
struct ReturnTemplate<'a> {
    text: &'static ReturnText,
    message: &'a str,
    is_error: bool,
    dossier: Option<&'a str>,
    amount: Option<String>,
    reference: Option<&'a str>,
    code: Option<&'a str>,
}

async fn return_page(
    State(client): State<PaymentClient>,
    session: Option<Extension<Session>>,
    uri: Uri,
) -> Result<Response, Error> {
    let lang = session.map(|Extension(s)| s.lang).unwrap_or_default();
    let text = ReturnText::get(lang);
    let outcome = client.apply_return(uri.query().unwrap_or("")).await;
    let (status, title, body) = match &outcome {
        Ok((n, _)) => {
            let paid = n.status == PaymentStatus::Paid;
            let body = ReturnTemplate {
                text,
                message: if paid { text.paid } else { text.cancelled },
                is_error: false,
                dossier: Some(&n.order_ref),
                amount: Some(format_vnd(n.amount_vnd)),
                reference: n.bank_reference.as_deref(),
                code: None,
            };
            (
                StatusCode::OK,
                if paid {
                    text.paid_title
                } else {
                    text.cancelled_title
                },
                body.render(),
            )
        }
        Err(e) if e.status() < 500 => {
            tracing::warn!(code = %e.code, error = %e.message, "payment return refused");
            let body = ReturnTemplate {
                text,
                message: text.failed,
                is_error: true,
                dossier: None,
                amount: None,
                reference: None,
                code: Some(e.code.as_str()),
            };
            (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                text.failed_title,
                body.render(),
            )
        }
        Err(_) => return outcome.map(|_| ().into_response()),
    };
    let body = body.map_err(xalo_web::page::template_error)?;
    let html = xalo_web::html(&Page {
        lang,
        title,
        uri: &uri,
        body,
    })?;
    let mut r = (status, html).into_response();
    r.headers_mut()
        .insert("x-xalo-raw-error", HeaderValue::from_static("1"));
    Ok(r)
}
