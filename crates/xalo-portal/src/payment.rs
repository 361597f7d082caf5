//! The `payment` role: a payment provider, modelled on Vietnamese gateways (VNPay, the
//! payment platform of the National Public Service Portal).
//!
//! A merchant (the portal) is registered with a callback URL and a return URL and
//! authenticates with HTTP Basic (its id and a secret, of which the provider keeps the
//! SHA-256). The flow:
//!
//! 1. the merchant creates an order server to server (`POST /api/v1/orders`: amount in VND,
//!    the order reference — the dossier code — and a description) and sends the payer to
//!    the `pay_url` it gets back;
//! 2. the payer confirms on the provider's page (`/pay/ID`, server-rendered, Vietnamese and
//!    English, no JavaScript) from a demo bank account, or cancels;
//! 3. in the same transaction that settles the order, a callback is queued in
//!    `payment_callback` (the outbox); a worker posts it, signed ([`message`]), to the
//!    merchant's callback URL and retries with exponential backoff until the merchant
//!    answers 2xx, so a merchant that was down still learns of the payment;
//! 4. the payer is redirected to the merchant's return URL with the same outcome as signed
//!    query parameters;
//! 5. the merchant may fetch the signed statement of a day (`GET /api/v1/statements/DATE`)
//!    to reconcile.
//!
//! One order reference has at most one live order: a pending order is returned again
//! when the merchant repeats the request, a paid one refuses a second order
//! (`XALO-PAY-004`), and a cancelled or expired one makes room for a new attempt.
//!
//! Tables (migration component `payment`): `payment_key` (the Ed25519 signing key),
//! `payment_merchant`, `payment_order` and `payment_callback`.

pub mod message;

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use base64::Engine;
use chrono::{Offset, TimeZone};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use xalo_core::server::{HealthReport, HealthState, Server, ServerHandle};
use xalo_core::{Config, Error, ErrorCode};
use xalo_store::{Database, DbResultExt, Migration, Row, sqlx};
use xalo_web::{Lang, Page, Session, SessionSettings, Sessions};

pub use message::{Notification, PaymentStatus, ProviderKey, Statement, StatementLine};

/// The role's name, its configuration section and its migration component.
pub const ROLE: &str = "payment";
/// Its port offset in the nation (`xalo demo`).
pub const PORT_OFFSET: u16 = 41;

const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "payment provider: key, merchants, orders, callback outbox",
    "CREATE TABLE payment_key (
        id BIGINT PRIMARY KEY,
        secret_hex TEXT NOT NULL,
        created_unix BIGINT NOT NULL
    );
    CREATE TABLE payment_merchant (
        merchant_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL,
        callback_url TEXT NOT NULL,
        return_url TEXT NOT NULL
    );
    CREATE TABLE payment_order (
        payment_id TEXT PRIMARY KEY,
        merchant_id TEXT NOT NULL,
        order_ref TEXT NOT NULL,
        amount_vnd BIGINT NOT NULL,
        description TEXT NOT NULL,
        language TEXT NOT NULL,
        status TEXT NOT NULL,
        created_unix BIGINT NOT NULL,
        expires_unix BIGINT NOT NULL,
        settled_unix BIGINT,
        settled_event TEXT,
        bank TEXT,
        account_masked TEXT,
        bank_reference TEXT
    );
    CREATE UNIQUE INDEX payment_order_live ON payment_order (merchant_id, order_ref)
        WHERE status IN ('pending', 'paid');
    CREATE INDEX payment_order_settled ON payment_order (merchant_id, settled_unix);
    CREATE TABLE payment_callback (
        event_id TEXT PRIMARY KEY,
        payment_id TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        lease_until_ms BIGINT NOT NULL,
        delivered_unix BIGINT,
        last_error TEXT
    );
    CREATE INDEX payment_callback_due ON payment_callback (state, next_attempt_ms);",
)];

/// A merchant registered at start (`[[roles.payment.merchants]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantRegistration {
    pub merchant_id: String,
    pub name: String,
    /// Hex SHA-256 of the merchant's secret; the secret itself stays with the merchant.
    pub secret_sha256: String,
    /// Where signed callbacks are posted.
    pub callback_url: String,
    /// Where the payer's browser is sent back, with the signed outcome.
    pub return_url: String,
}

/// `[roles.payment]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentSettings {
    /// The provider's public base URL (default `http://PUBLIC_HOST:PORT`), for pay URLs.
    pub public_url: Option<String>,
    pub merchants: Vec<MerchantRegistration>,
    /// How long an order waits for the payer (VNPay's default is 15 minutes).
    pub order_ttl_secs: i64,
    /// The first retry of a callback waits this long; each further one twice as long.
    pub retry_base_ms: u64,
    /// The longest wait between two attempts.
    pub retry_max_secs: u64,
    /// After this many attempts a callback is given up (reconciliation still finds it).
    pub max_attempts: i64,
    /// How often the worker looks for callbacks due, besides being woken by a payment.
    pub poll_ms: u64,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            public_url: None,
            merchants: Vec::new(),
            order_ttl_secs: 15 * 60,
            retry_base_ms: 2_000,
            retry_max_secs: 3_600,
            max_attempts: 12,
            poll_ms: 1_000,
        }
    }
}

/// The banks of the payment page: a code and a name. Accounts are the demo's.
pub const BANKS: &[(&str, &str)] = &[
    ("VCB", "Vietcombank"),
    ("BIDV", "BIDV"),
    ("CTG", "VietinBank"),
    ("AGR", "Agribank"),
    ("TCB", "Techcombank"),
    ("MB", "MB Bank"),
];

pub fn unix_now() -> i64 {
    unix_ms() / 1000
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Create the provider's tables.
pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate(ROLE, MIGRATIONS).await
}

/// The provider's signing key, made on first use.
pub async fn signing_key(db: &Database) -> Result<ProviderKey, Error> {
    let read = || async {
        let row = sqlx::query("SELECT secret_hex FROM payment_key WHERE id = 1")
            .fetch_optional(db.pool())
            .await
            .db("reading the payment signing key")?;
        row.map(|r| -> Result<ProviderKey, Error> {
            let hex_text: String = r.try_get(0).db("reading the payment signing key")?;
            let secret: [u8; 32] = hex::decode(hex_text)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    Error::new(ErrorCode::ConfigInvalid, "the stored key is unusable")
                })?;
            Ok(ProviderKey::from_secret(secret))
        })
        .transpose()
    };
    if let Some(k) = read().await? {
        return Ok(k);
    }
    // Two instances starting at once both try; the first insert wins and both read it.
    sqlx::query(
        "INSERT INTO payment_key (id, secret_hex, created_unix) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(hex::encode(ProviderKey::generate().secret()))
    .bind(unix_now())
    .execute(db.pool())
    .await
    .db("storing the payment signing key")?;
    read()
        .await?
        .ok_or_else(|| Error::new(ErrorCode::Internal, "the payment key vanished"))
}

/// The provider's public key (`ed25519:BASE64`) for the role configured in `config`, made
/// if needed: what the demo hands to the merchant before either runs.
pub async fn public_key(config: &Config) -> Result<String, Error> {
    let db = Database::connect(&config.database_url(ROLE)).await?;
    migrate(&db).await?;
    let key = signing_key(&db).await?;
    db.close().await;
    Ok(key.public_text())
}

async fn register_merchants(
    db: &Database,
    merchants: &[MerchantRegistration],
) -> Result<(), Error> {
    for m in merchants {
        let bad = |what: &str| {
            Error::new(
                ErrorCode::ConfigInvalid,
                format!("[roles.payment] merchant {:?}: {what}", m.merchant_id),
            )
        };
        if m.merchant_id.is_empty() || m.merchant_id.len() > 64 {
            return Err(bad("the id must have 1 to 64 characters"));
        }
        if m.secret_sha256.len() != 64 || hex::decode(&m.secret_sha256).is_err() {
            return Err(bad("secret_sha256 must be 64 hex digits"));
        }
        for u in [&m.callback_url, &m.return_url] {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad("callback_url and return_url must be http(s) URLs"));
            }
        }
        sqlx::query(
            "INSERT INTO payment_merchant (merchant_id, name, secret_sha256, callback_url, return_url) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id) DO UPDATE SET \
             name = $2, secret_sha256 = $3, callback_url = $4, return_url = $5",
        )
        .bind(m.merchant_id.clone())
        .bind(m.name.clone())
        .bind(m.secret_sha256.to_ascii_lowercase())
        .bind(m.callback_url.clone())
        .bind(m.return_url.clone())
        .execute(db.pool())
        .await
        .db("registering a merchant")?;
    }
    Ok(())
}

/// The provider a request handler sees.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    key: ProviderKey,
    settings: PaymentSettings,
    public_url: String,
    http: reqwest::Client,
    wake: Notify,
    sessions: Sessions,
}

/// Start the `payment` role.
pub async fn serve(config: Config, listener: TcpListener) -> Result<ServerHandle, Error> {
    let settings: PaymentSettings = config.role_settings(ROLE)?;
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
    let db = Database::connect(&config.database_url(ROLE)).await?;
    migrate(&db).await?;
    register_merchants(&db, &settings.merchants).await?;
    let key = signing_key(&db).await?;
    let sessions = Sessions::open(
        db.clone(),
        SessionSettings {
            cookie: "xalo_pay".into(),
            ..SessionSettings::default()
        },
        &[],
    )
    .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let provider = Provider {
        inner: Arc::new(Inner {
            db: db.clone(),
            key,
            settings,
            public_url,
            http,
            wake: Notify::new(),
            sessions: sessions.clone(),
        }),
    };
    let pages = Router::new()
        .route("/", get(home))
        .route("/pay/{payment_id}", get(pay_page))
        .route("/pay/{payment_id}/confirm", post(confirm))
        .route("/pay/{payment_id}/cancel", post(cancel))
        .layer(axum::middleware::from_fn_with_state(
            sessions.clone(),
            xalo_web::session::middleware,
        ));
    // Server-to-server endpoints authenticate merchants and keep no browser session.
    let api = Router::new()
        .route("/api/v1/key", get(key_endpoint))
        .route("/api/v1/orders", post(create_order_endpoint))
        .route("/api/v1/orders/{payment_id}", get(order_endpoint))
        .route("/api/v1/statements/{date}", get(statement_endpoint));
    let router = pages.merge(api).with_state(provider.clone());
    let reporter = provider.clone();
    let mut handle = Server::new(ROLE, router, &config.http)
        .health_check(db.health_check())
        .health_report(Arc::new(move || {
            let p = reporter.clone();
            Box::pin(async move { p.health().await })
        }))
        .spawn(listener)?;
    let worker = provider.clone();
    let task = tokio::spawn(async move {
        let poll = Duration::from_millis(worker.inner.settings.poll_ms.max(50));
        let mut last_purge = std::time::Instant::now();
        loop {
            if let Err(e) = worker.deliver_due().await {
                tracing::warn!(error = %e, "delivering payment callbacks failed; will retry");
            }
            tokio::select! {
                () = worker.inner.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
            if last_purge.elapsed() > Duration::from_secs(60) {
                let _ = sessions.purge_expired().await;
                last_purge = std::time::Instant::now();
            }
        }
    });
    handle.attach(task.abort_handle());
    Ok(handle)
}

// ---------------------------------------------------------------- orders

/// A merchant's order request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// The merchant's reference (the portal's dossier code): letters, digits, `.`, `-`, `_`.
    pub order_ref: String,
    pub amount_vnd: i64,
    pub description: String,
    /// `vi` or `en`: the payment page's first language.
    #[serde(default)]
    pub language: Option<String>,
}

/// An order as the provider reports it to its merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub payment_id: String,
    pub merchant_id: String,
    pub order_ref: String,
    pub amount_vnd: i64,
    pub description: String,
    pub status: PaymentStatus,
    pub created_unix: i64,
    pub expires_unix: i64,
    pub settled_unix: Option<i64>,
    pub bank_reference: Option<String>,
    /// Where to send the payer.
    pub pay_url: String,
}

/// The largest amount one order may carry (fees of public services are far below it).
pub const MAX_AMOUNT_VND: i64 = 1_000_000_000;

fn bad_order(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::PayBadOrder, m)
}

impl NewOrder {
    fn check(&self) -> Result<Lang, Error> {
        let r = &self.order_ref;
        if r.is_empty()
            || r.len() > 64
            || !r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(bad_order(
                "order_ref: 1 to 64 letters, digits, '.', '-' or '_'",
            ));
        }
        if !(1..=MAX_AMOUNT_VND).contains(&self.amount_vnd) {
            return Err(bad_order(format!(
                "amount_vnd: a whole number of đồng from 1 to {MAX_AMOUNT_VND}"
            )));
        }
        let chars = self.description.chars().count();
        if chars == 0 || chars > 255 || self.description.chars().any(char::is_control) {
            return Err(bad_order(
                "description: 1 to 255 characters, no control characters",
            ));
        }
        match self.language.as_deref() {
            None => Ok(Lang::Vi),
            Some(l) => Lang::from_code(l).ok_or_else(|| bad_order("language: vi or en")),
        }
    }
}

const ORDER_COLUMNS: &str = "payment_id, merchant_id, order_ref, amount_vnd, description, status, \
     created_unix, expires_unix, settled_unix, bank_reference, settled_event, language";

struct OrderRow {
    order: Order,
    settled_event: Option<String>,
    language: String,
}

fn order_of(row: &xalo_store::sqlx::any::AnyRow, public_url: &str) -> Result<OrderRow, Error> {
    let ctx = "reading a payment order";
    let payment_id: String = row.try_get(0).db(ctx)?;
    let status: String = row.try_get(5).db(ctx)?;
    Ok(OrderRow {
        order: Order {
            pay_url: format!("{public_url}/pay/{payment_id}"),
            payment_id,
            merchant_id: row.try_get(1).db(ctx)?,
            order_ref: row.try_get(2).db(ctx)?,
            amount_vnd: row.try_get(3).db(ctx)?,
            description: row.try_get(4).db(ctx)?,
            status: PaymentStatus::parse(&status)?,
            created_unix: row.try_get(6).db(ctx)?,
            expires_unix: row.try_get(7).db(ctx)?,
            settled_unix: row.try_get(8).db(ctx)?,
            bank_reference: row.try_get(9).db(ctx)?,
        },
        settled_event: row.try_get(10).db(ctx)?,
        language: row.try_get(11).db(ctx)?,
    })
}

struct Merchant {
    name: String,
    return_url: String,
}

impl Provider {
    fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The merchant whose HTTP Basic credentials these are.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<String, Error> {
        let denied = |m: &str| Error::new(ErrorCode::PayMerchantAuth, m.to_owned());
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .ok_or_else(|| denied("HTTP Basic credentials of a merchant are required"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| denied("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| denied("malformed Basic credentials"))?;
        let row = sqlx::query("SELECT secret_sha256 FROM payment_merchant WHERE merchant_id = $1")
            .bind(id.to_owned())
            .fetch_optional(self.db().pool())
            .await
            .db("reading a merchant")?;
        let expected: String = match row {
            Some(r) => r.try_get(0).db("reading a merchant")?,
            None => return Err(denied("unknown merchant or wrong secret")),
        };
        let given = hex::encode(Sha256::digest(secret.as_bytes()));
        if xalo_web::session::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(id.to_owned())
        } else {
            Err(denied("unknown merchant or wrong secret"))
        }
    }

    async fn merchant(&self, id: &str) -> Result<Merchant, Error> {
        let row =
            sqlx::query("SELECT name, return_url FROM payment_merchant WHERE merchant_id = $1")
                .bind(id.to_owned())
                .fetch_one(self.db().pool())
                .await
                .db("reading a merchant")?;
        Ok(Merchant {
            name: row.try_get(0).db("reading a merchant")?,
            return_url: row.try_get(1).db("reading a merchant")?,
        })
    }

    async fn order(&self, payment_id: &str) -> Result<OrderRow, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM payment_order WHERE payment_id = $1"
        )))
        .bind(payment_id.to_owned())
        .fetch_optional(self.db().pool())
        .await
        .db("reading a payment order")?
        .ok_or_else(|| {
            Error::new(
                ErrorCode::PayUnknownOrder,
                format!("no payment {payment_id}"),
            )
        })?;
        order_of(&row, &self.inner.public_url)
    }

    /// Create an order for `merchant`, or return the live one of the same reference and
    /// amount (a repeated request).
    pub async fn create_order(&self, merchant: &str, new: &NewOrder) -> Result<Order, Error> {
        let lang = new.check()?;
        let now = unix_now();
        let mut tx = self.db().begin_write().await?;
        sqlx::query(
            "UPDATE payment_order SET status = 'expired' \
             WHERE merchant_id = $1 AND order_ref = $2 AND status = 'pending' AND expires_unix < $3",
        )
        .bind(merchant.to_owned())
        .bind(new.order_ref.clone())
        .bind(now)
        .execute(&mut *tx)
        .await
        .db("expiring old orders")?;
        let live = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM payment_order \
             WHERE merchant_id = $1 AND order_ref = $2 AND status IN ('pending', 'paid')"
        )))
        .bind(merchant.to_owned())
        .bind(new.order_ref.clone())
        .fetch_optional(&mut *tx)
        .await
        .db("reading a payment order")?;
        if let Some(row) = live {
            let existing = order_of(&row, &self.inner.public_url)?.order;
            tx.commit().await.db("committing")?;
            return repeated(existing, new);
        }
        let payment_id = format!("PAY{}", hex::encode_upper(rand::random::<[u8; 10]>()));
        let inserted = sqlx::query(
            "INSERT INTO payment_order (payment_id, merchant_id, order_ref, amount_vnd, description, \
             language, status, created_unix, expires_unix) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)",
        )
        .bind(payment_id.clone())
        .bind(merchant.to_owned())
        .bind(new.order_ref.clone())
        .bind(new.amount_vnd)
        .bind(new.description.clone())
        .bind(lang.code())
        .bind(now)
        .bind(now + self.inner.settings.order_ttl_secs.max(60))
        .execute(&mut *tx)
        .await
        .map_err(|e| xalo_store::db_error(e, "creating a payment order"));
        if let Err(e) = inserted {
            drop(tx);
            if e.code != ErrorCode::StoreConflict {
                return Err(e);
            }
            // A concurrent request made the live order first (the unique index says so):
            // answer as a repeated request would.
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLUMNS} FROM payment_order \
                 WHERE merchant_id = $1 AND order_ref = $2 AND status IN ('pending', 'paid')"
            )))
            .bind(merchant.to_owned())
            .bind(new.order_ref.clone())
            .fetch_one(self.db().pool())
            .await
            .db("reading a payment order")?;
            return repeated(order_of(&row, &self.inner.public_url)?.order, new);
        }
        tx.commit().await.db("committing a payment order")?;
        tracing::info!(merchant, payment_id, order_ref = %new.order_ref, amount = new.amount_vnd, "payment order created");
        Ok(self.order(&payment_id).await?.order)
    }

    /// Settle a pending order (paid or cancelled) and queue its callback, in one
    /// transaction; returns the outcome the payer carries back.
    async fn settle(
        &self,
        payment_id: &str,
        status: PaymentStatus,
        bank: Option<(&str, &str)>,
    ) -> Result<Notification, Error> {
        let now = unix_now();
        let event_id = hex::encode(rand::random::<[u8; 16]>());
        let bank_reference = bank.map(|(b, _)| {
            format!(
                "{b}{}{:06}",
                chrono::Utc::now().format("%y%m%d"),
                rand::random::<u32>() % 1_000_000
            )
        });
        let mut tx = self.db().begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM payment_order WHERE payment_id = $1"
        )))
        .bind(payment_id.to_owned())
        .fetch_optional(&mut *tx)
        .await
        .db("reading a payment order")?
        .ok_or_else(|| {
            Error::new(
                ErrorCode::PayUnknownOrder,
                format!("no payment {payment_id}"),
            )
        })?;
        let order = order_of(&row, &self.inner.public_url)?.order;
        if order.status != PaymentStatus::Pending {
            return Err(Error::new(
                ErrorCode::PayNotPending,
                format!("payment {payment_id} is {}", order.status.as_str()),
            ));
        }
        if order.expires_unix < now {
            sqlx::query("UPDATE payment_order SET status = 'expired' WHERE payment_id = $1")
                .bind(payment_id.to_owned())
                .execute(&mut *tx)
                .await
                .db("expiring an order")?;
            tx.commit().await.db("committing")?;
            return Err(Error::new(
                ErrorCode::PayExpired,
                format!("payment {payment_id} expired"),
            ));
        }
        let settled = sqlx::query(
            "UPDATE payment_order SET status = $1, settled_unix = $2, settled_event = $3, \
             bank = $4, account_masked = $5, bank_reference = $6 \
             WHERE payment_id = $7 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(event_id.clone())
        .bind(bank.map(|(b, _)| b.to_owned()))
        .bind(bank.map(|(_, a)| mask(a)))
        .bind(bank_reference.clone())
        .bind(payment_id.to_owned())
        .execute(&mut *tx)
        .await
        .db("settling a payment")?;
        if settled.rows_affected() == 0 {
            // Settled by a concurrent request (a double click on PostgreSQL, which lets
            // both read it pending): only that one's outcome counts.
            return Err(Error::new(
                ErrorCode::PayNotPending,
                format!("payment {payment_id} was settled meanwhile"),
            ));
        }
        let notification = Notification {
            event_id: event_id.clone(),
            merchant_id: order.merchant_id.clone(),
            payment_id: payment_id.to_owned(),
            order_ref: order.order_ref.clone(),
            amount_vnd: order.amount_vnd,
            status,
            settled_unix: now,
            bank_reference,
        };
        let body = String::from_utf8(notification.to_body()?)
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        sqlx::query(
            "INSERT INTO payment_callback (event_id, payment_id, body, state, attempts, \
             next_attempt_ms, lease_until_ms) VALUES ($1, $2, $3, 'pending', 0, $4, 0)",
        )
        .bind(event_id)
        .bind(payment_id.to_owned())
        .bind(body)
        .bind(unix_ms())
        .execute(&mut *tx)
        .await
        .db("queuing a payment callback")?;
        tx.commit().await.db("committing a payment")?;
        tracing::info!(payment_id, status = status.as_str(), "payment settled");
        self.inner.wake.notify_one();
        Ok(notification)
    }

    /// The outcome of a settled order, as its callback carried it.
    fn notification_of(&self, row: &OrderRow) -> Option<Notification> {
        let o = &row.order;
        Some(Notification {
            event_id: row.settled_event.clone()?,
            merchant_id: o.merchant_id.clone(),
            payment_id: o.payment_id.clone(),
            order_ref: o.order_ref.clone(),
            amount_vnd: o.amount_vnd,
            status: o.status,
            settled_unix: o.settled_unix?,
            bank_reference: o.bank_reference.clone(),
        })
    }

    fn return_url(&self, merchant: &Merchant, n: &Notification) -> String {
        let sep = if merchant.return_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}{}",
            merchant.return_url,
            n.to_signed_query(&self.inner.key)
        )
    }

    /// The signed statement of `date` (`YYYY-MM-DD`, Vietnam's time zone) for `merchant`.
    pub async fn statement(&self, merchant: &str, date: &str) -> Result<Statement, Error> {
        let (from, to) = day_range(date)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM payment_order WHERE merchant_id = $1 \
             AND status IN ('paid', 'cancelled') AND settled_unix >= $2 AND settled_unix < $3 \
             ORDER BY settled_unix, payment_id"
        )))
        .bind(merchant.to_owned())
        .bind(from)
        .bind(to)
        .fetch_all(self.db().pool())
        .await
        .db("reading a statement")?;
        let mut lines = Vec::with_capacity(rows.len());
        for r in &rows {
            let o = order_of(r, &self.inner.public_url)?.order;
            lines.push(StatementLine {
                payment_id: o.payment_id,
                order_ref: o.order_ref,
                amount_vnd: o.amount_vnd,
                status: o.status,
                settled_unix: o.settled_unix.unwrap_or(0),
                bank_reference: o.bank_reference,
            });
        }
        let total_paid_vnd = lines
            .iter()
            .filter(|l| l.status == PaymentStatus::Paid)
            .map(|l| l.amount_vnd)
            .sum();
        Ok(Statement {
            merchant_id: merchant.to_owned(),
            date: date.to_owned(),
            generated_unix: unix_now(),
            lines,
            total_paid_vnd,
        })
    }

    /// `/healthz` detail: callbacks waiting, and those given up (which need an operator:
    /// the merchant must reconcile).
    async fn health(&self) -> HealthReport {
        let counts = sqlx::query(
            "SELECT state, COUNT(*) FROM payment_callback WHERE state IN ('pending', 'failed') \
             GROUP BY state",
        )
        .fetch_all(self.db().pool())
        .await;
        let mut checks = serde_json::Map::new();
        let mut state = HealthState::Ok;
        match counts {
            Ok(rows) => {
                for r in rows {
                    let name: String = r.try_get(0).unwrap_or_default();
                    let n: i64 = r.try_get(1).unwrap_or_default();
                    if name == "failed" && n > 0 {
                        state = HealthState::Degraded;
                    }
                    checks.insert(format!("callbacks_{name}"), serde_json::json!(n));
                }
            }
            Err(e) => {
                state = HealthState::Unhealthy;
                checks.insert("callbacks".into(), serde_json::json!(e.to_string()));
            }
        }
        HealthReport { state, checks }
    }

    /// Post every callback that is due; returns how many were acknowledged.
    pub async fn deliver_due(&self) -> Result<usize, Error> {
        let now = unix_ms();
        let rows = sqlx::query(
            "SELECT c.event_id, c.body, c.attempts, m.callback_url FROM payment_callback c \
             JOIN payment_order o ON o.payment_id = c.payment_id \
             JOIN payment_merchant m ON m.merchant_id = o.merchant_id \
             WHERE c.state = 'pending' AND c.next_attempt_ms <= $1 AND c.lease_until_ms <= $1 \
             ORDER BY c.next_attempt_ms LIMIT 50",
        )
        .bind(now)
        .fetch_all(self.db().pool())
        .await
        .db("reading due callbacks")?;
        let mut delivered = 0;
        for r in rows {
            let ctx = "reading due callbacks";
            let event_id: String = r.try_get(0).db(ctx)?;
            let body: String = r.try_get(1).db(ctx)?;
            let attempts: i64 = r.try_get(2).db(ctx)?;
            let url: String = r.try_get(3).db(ctx)?;
            // Claim it with a lease, so that two instances do not post it at once.
            let claimed = sqlx::query(
                "UPDATE payment_callback SET lease_until_ms = $1 \
                 WHERE event_id = $2 AND state = 'pending' AND lease_until_ms <= $3",
            )
            .bind(now + 60_000)
            .bind(event_id.clone())
            .bind(now)
            .execute(self.db().pool())
            .await
            .db("claiming a callback")?;
            if claimed.rows_affected() == 0 {
                continue;
            }
            let outcome = self.post_callback(&url, body.as_bytes()).await;
            let attempts = attempts + 1;
            match outcome {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE payment_callback SET state = 'delivered', attempts = $1, \
                         delivered_unix = $2, lease_until_ms = 0, last_error = NULL WHERE event_id = $3",
                    )
                    .bind(attempts)
                    .bind(unix_now())
                    .bind(event_id.clone())
                    .execute(self.db().pool())
                    .await
                    .db("noting a delivered callback")?;
                    delivered += 1;
                }
                Err(e) => {
                    let s = &self.inner.settings;
                    let state = if attempts >= s.max_attempts {
                        "failed"
                    } else {
                        "pending"
                    };
                    let wait = backoff_ms(s.retry_base_ms, s.retry_max_secs, attempts);
                    tracing::warn!(event_id, attempts, error = %e, "payment callback not acknowledged");
                    sqlx::query(
                        "UPDATE payment_callback SET state = $1, attempts = $2, next_attempt_ms = $3, \
                         lease_until_ms = 0, last_error = $4 WHERE event_id = $5",
                    )
                    .bind(state)
                    .bind(attempts)
                    .bind(unix_ms() + wait)
                    .bind(e.to_string())
                    .bind(event_id)
                    .execute(self.db().pool())
                    .await
                    .db("noting a failed callback")?;
                }
            }
        }
        Ok(delivered)
    }

    async fn post_callback(&self, url: &str, body: &[u8]) -> Result<(), Error> {
        let r = self
            .inner
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(message::SIGNATURE_HEADER, self.inner.key.sign_body(body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Error::new(ErrorCode::PayUpstream, format!("{url}: {e}")))?;
        if r.status().is_success() {
            Ok(())
        } else {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            Err(Error::new(
                ErrorCode::PayUpstream,
                format!(
                    "{url} answered {status}: {}",
                    text.chars().take(300).collect::<String>()
                ),
            ))
        }
    }
}

/// The answer to an order request whose reference has a live order already: the same
/// pending order again, or a conflict.
fn repeated(existing: Order, new: &NewOrder) -> Result<Order, Error> {
    match existing.status {
        PaymentStatus::Pending if existing.amount_vnd == new.amount_vnd => Ok(existing),
        PaymentStatus::Pending => Err(Error::new(
            ErrorCode::PayOrderConflict,
            format!(
                "order {} is waiting for payment of {} đồng, not {}",
                new.order_ref, existing.amount_vnd, new.amount_vnd
            ),
        )),
        _ => Err(Error::new(
            ErrorCode::PayOrderConflict,
            format!(
                "order {} was paid already (payment {})",
                new.order_ref, existing.payment_id
            ),
        )),
    }
}

/// The wait before attempt `attempts + 1`: base · 2^(attempts−1), at most `max_secs`.
pub fn backoff_ms(base_ms: u64, max_secs: u64, attempts: i64) -> i64 {
    let shift = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let wait = base_ms.max(1).saturating_mul(1u64 << shift);
    wait.min(max_secs.saturating_mul(1000)).min(i64::MAX as u64) as i64
}

/// `1234567890` → `******7890`: the provider keeps only what a receipt shows.
fn mask(account: &str) -> String {
    let n = account.chars().count();
    account
        .chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < n { '*' } else { c })
        .collect()
}

/// Vietnam's time zone (UTC+7, no daylight saving).
pub fn vietnam() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(7 * 3600).unwrap_or_else(|| chrono::Utc.fix())
}

/// The Unix range `[start, end)` of a day in Vietnam's time zone.
pub fn day_range(date: &str) -> Result<(i64, i64), Error> {
    let bad = || {
        Error::new(
            ErrorCode::PayBadDate,
            format!("{date:?}: expected YYYY-MM-DD"),
        )
    };
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad())?;
    let start = vietnam()
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).ok_or_else(bad)?)
        .single()
        .ok_or_else(bad)?
        .timestamp();
    Ok((start, start + 86_400))
}

/// `150000` → `150.000 ₫`, as Vietnamese writes amounts.
pub fn format_vnd(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    format!("{}{out} ₫", if amount < 0 { "-" } else { "" })
}

// ---------------------------------------------------------------- API handlers

async fn key_endpoint(State(p): State<Provider>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "algorithm": "Ed25519",
        "key": p.inner.key.public_text(),
    }))
}

async fn create_order_endpoint(
    State(p): State<Provider>,
    headers: HeaderMap,
    body: Result<Json<NewOrder>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let merchant = p.authenticate(&headers).await?;
    let Json(new) =
        body.map_err(|e| Error::from_rejection(ErrorCode::PayBadOrder, &e.body_text()))?;
    let order = p.create_order(&merchant, &new).await?;
    Ok((StatusCode::CREATED, Json(order)).into_response())
}

async fn order_endpoint(
    State(p): State<Provider>,
    headers: HeaderMap,
    Path(payment_id): Path<String>,
) -> Result<Json<Order>, Error> {
    let merchant = p.authenticate(&headers).await?;
    let order = p.order(&payment_id).await?.order;
    // Another merchant's payment answers as an unknown one.
    if order.merchant_id != merchant {
        return Err(Error::new(
            ErrorCode::PayUnknownOrder,
            format!("no payment {payment_id}"),
        ));
    }
    Ok(Json(order))
}

async fn statement_endpoint(
    State(p): State<Provider>,
    headers: HeaderMap,
    Path(date): Path<String>,
) -> Result<Response, Error> {
    let merchant = p.authenticate(&headers).await?;
    let statement = p.statement(&merchant, &date).await?;
    let body = serde_json::to_vec(&statement)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let signature = HeaderValue::from_str(&p.inner.key.sign_body(&body))
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::HeaderName::from_static(message::SIGNATURE_HEADER),
                signature,
            ),
        ],
        body,
    )
        .into_response())
}

// ---------------------------------------------------------------- payer pages

xalo_web::catalogue! {
    /// Texts of the payment pages.
    pub struct PayText {
        home_title: "Cổng thanh toán Xalo" / "Xalo payment gateway",
        home_body: "Cổng thanh toán phí, lệ phí dịch vụ công. Trang thanh toán mở từ cổng dịch vụ công khi bạn nộp phí." / "The gateway for fees of public services. The payment page opens from the public service portal when you pay a fee.",
        title: "Thanh toán phí, lệ phí" / "Pay a fee",
        merchant: "Đơn vị thu" / "Paid to",
        order: "Mã hồ sơ" / "Dossier code",
        description: "Nội dung" / "Description",
        amount: "Số tiền" / "Amount",
        expires: "Hết hạn lúc" / "Expires at",
        bank: "Ngân hàng" / "Bank",
        account: "Số tài khoản" / "Account number",
        account_hint: "Từ 6 đến 19 chữ số. Đây là ngân hàng thử nghiệm: không có tiền thật nào bị trừ." / "6 to 19 digits. This is a demo bank: no real money moves.",
        account_error: "Nhập số tài khoản gồm 6 đến 19 chữ số" / "Enter an account number of 6 to 19 digits",
        bank_error: "Chọn ngân hàng" / "Choose a bank",
        confirm: "Xác nhận thanh toán" / "Confirm payment",
        cancel: "Hủy thanh toán" / "Cancel payment",
        paid: "Khoản này đã được thanh toán." / "This has been paid.",
        cancelled: "Bạn đã hủy thanh toán này." / "You cancelled this payment.",
        expired: "Lệnh thanh toán đã hết hạn. Hãy bắt đầu lại từ cổng dịch vụ công." / "The payment order has expired. Start again from the public service portal.",
        unknown: "Không tìm thấy lệnh thanh toán này." / "There is no such payment order.",
        back: "Quay lại đơn vị thu" / "Back to the merchant",
        problem: "Có lỗi cần sửa" / "There is a problem",
    }
}

#[derive(Template)]
#[template(path = "payment/pay.html")]
struct PayTemplate<'a> {
    text: &'static PayText,
    csrf: &'a str,
    payment_id: &'a str,
    merchant: &'a str,
    order_ref: &'a str,
    description: &'a str,
    amount: String,
    expires: String,
    banks: Vec<(&'static str, &'static str, bool)>,
    account: &'a str,
    bank_error: Option<&'static str>,
    account_error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "payment/message.html")]
struct MessageTemplate<'a> {
    message: &'a str,
    is_error: bool,
    link: Option<(String, &'a str)>,
}

fn page(
    lang: Lang,
    uri: &Uri,
    status: StatusCode,
    title: &str,
    body: String,
) -> Result<Response, Error> {
    let html = xalo_web::html(&Page {
        lang,
        title,
        uri,
        body,
    })?;
    let mut r = (status, html).into_response();
    // A page, not JSON, even when it reports a problem.
    r.headers_mut()
        .insert("x-xalo-raw-error", HeaderValue::from_static("1"));
    Ok(r)
}

fn message_page(
    lang: Lang,
    uri: &Uri,
    status: StatusCode,
    message: &str,
    link: Option<(String, &str)>,
) -> Result<Response, Error> {
    let text = PayText::get(lang);
    let body = MessageTemplate {
        message,
        is_error: status.is_client_error(),
        link,
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    page(lang, uri, status, text.title, body)
}

async fn home(Extension(session): Extension<Session>, uri: Uri) -> Result<Response, Error> {
    let text = PayText::get(session.lang);
    let body = MessageTemplate {
        message: text.home_body,
        is_error: false,
        link: None,
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    page(session.lang, &uri, StatusCode::OK, text.home_title, body)
}

fn time_text(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| {
            t.with_timezone(&vietnam())
                .format("%H:%M %d/%m/%Y")
                .to_string()
        })
        .unwrap_or_default()
}

#[derive(Default)]
struct PayInput {
    bank: String,
    account: String,
    bank_error: Option<&'static str>,
    account_error: Option<&'static str>,
}

async fn render_pay(
    p: &Provider,
    session: &Session,
    uri: &Uri,
    payment_id: &str,
    input: &PayInput,
) -> Result<Response, Error> {
    let lang = session.lang;
    let text = PayText::get(lang);
    let row = match p.order(payment_id).await {
        Ok(r) => r,
        Err(e) if e.code == ErrorCode::PayUnknownOrder => {
            return message_page(lang, uri, StatusCode::NOT_FOUND, text.unknown, None);
        }
        Err(e) => return Err(e),
    };
    let merchant = p.merchant(&row.order.merchant_id).await?;
    let o = &row.order;
    let expired = o.status == PaymentStatus::Pending && o.expires_unix < unix_now();
    if o.status != PaymentStatus::Pending || expired {
        let (message, status) = match o.status {
            PaymentStatus::Paid => (text.paid, StatusCode::OK),
            PaymentStatus::Cancelled => (text.cancelled, StatusCode::OK),
            _ => (text.expired, StatusCode::GONE),
        };
        let link = p
            .notification_of(&row)
            .map(|n| (p.return_url(&merchant, &n), text.back));
        return message_page(lang, uri, status, message, link);
    }
    let has_errors = input.bank_error.is_some() || input.account_error.is_some();
    let body = PayTemplate {
        text,
        csrf: &session.csrf,
        payment_id: &o.payment_id,
        merchant: &merchant.name,
        order_ref: &o.order_ref,
        description: &o.description,
        amount: format_vnd(o.amount_vnd),
        expires: time_text(o.expires_unix),
        banks: BANKS
            .iter()
            .map(|(code, name)| (*code, *name, *code == input.bank))
            .collect(),
        account: &input.account,
        bank_error: input.bank_error,
        account_error: input.account_error,
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    let status = if has_errors {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    page(lang, uri, status, text.title, body)
}

async fn pay_page(
    State(p): State<Provider>,
    Extension(mut session): Extension<Session>,
    Path(payment_id): Path<String>,
    uri: Uri,
) -> Result<Response, Error> {
    // The page opens in the language the merchant asked for; once the payer picks one
    // with the switch, theirs stays (the session remembers which order set it).
    if session.get::<String>("lang_of").as_deref() != Some(payment_id.as_str())
        && let Ok(row) = p.order(&payment_id).await
    {
        let chosen = uri.query().is_some_and(|q| q.contains("lang="));
        if !chosen && let Some(lang) = Lang::from_code(&row.language) {
            session.lang = lang;
        }
        session.set("lang_of", &payment_id);
        p.inner.sessions.save(&session).await?;
    }
    render_pay(&p, &session, &uri, &payment_id, &PayInput::default()).await
}

#[derive(Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    bank: String,
    #[serde(default)]
    account: String,
}

async fn confirm(
    State(p): State<Provider>,
    Extension(session): Extension<Session>,
    Path(payment_id): Path<String>,
    uri: Uri,
    Form(form): Form<ConfirmForm>,
) -> Result<Response, Error> {
    let text = PayText::get(session.lang);
    let account: String = form
        .account
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut input = PayInput {
        bank: form.bank.clone(),
        account: form.account.clone(),
        ..PayInput::default()
    };
    if !BANKS.iter().any(|(c, _)| *c == form.bank) {
        input.bank_error = Some(text.bank_error);
    }
    if !(6..=19).contains(&account.len()) || !account.bytes().all(|b| b.is_ascii_digit()) {
        input.account_error = Some(text.account_error);
    }
    if input.bank_error.is_some() || input.account_error.is_some() {
        return render_pay(&p, &session, &uri, &payment_id, &input).await;
    }
    finish(
        &p,
        &session,
        &uri,
        &payment_id,
        PaymentStatus::Paid,
        Some((&form.bank, &account)),
    )
    .await
}

async fn cancel(
    State(p): State<Provider>,
    Extension(session): Extension<Session>,
    Path(payment_id): Path<String>,
    uri: Uri,
) -> Result<Response, Error> {
    finish(
        &p,
        &session,
        &uri,
        &payment_id,
        PaymentStatus::Cancelled,
        None,
    )
    .await
}

async fn finish(
    p: &Provider,
    session: &Session,
    uri: &Uri,
    payment_id: &str,
    status: PaymentStatus,
    bank: Option<(&str, &str)>,
) -> Result<Response, Error> {
    match p.settle(payment_id, status, bank).await {
        Ok(n) => {
            let merchant = p.merchant(&n.merchant_id).await?;
            Ok(Redirect::to(&p.return_url(&merchant, &n)).into_response())
        }
        // Settled meanwhile (a second tab, a double click), expired or unknown: the page
        // says which, with the way back.
        Err(e)
            if matches!(
                e.code,
                ErrorCode::PayNotPending | ErrorCode::PayExpired | ErrorCode::PayUnknownOrder
            ) =>
        {
            render_pay(p, session, uri, payment_id, &PayInput::default()).await
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_dates_and_backoff() {
        assert_eq!(format_vnd(150_000), "150.000 ₫");
        assert_eq!(format_vnd(8_000), "8.000 ₫");
        assert_eq!(format_vnd(500), "500 ₫");
        assert_eq!(format_vnd(1_000_000), "1.000.000 ₫");
        let (a, b) = day_range("2026-11-28").unwrap();
        assert_eq!(b - a, 86_400);
        assert_eq!(a, 1795798800);
        assert_eq!(
            day_range("28/11/2026").unwrap_err().code,
            ErrorCode::PayBadDate
        );
        assert_eq!(backoff_ms(1000, 3600, 1), 1000);
        assert_eq!(backoff_ms(1000, 3600, 3), 4000);
        assert_eq!(backoff_ms(1000, 10, 30), 10_000);
        assert_eq!(mask("1234567890"), "******7890");
    }
}
