//! Refusals on record: the requests a gateway refuses, each with its X-Road error type,
//! the message and the `detail` id the caller was given (and, for a refusal passed on from
//! the provider's gateway, the provider's own `detail`), who asked (the claimed client, the
//! peer's certificate fingerprint or address) for which service, and the request's method
//! and path up to the service (not the rest, nor the query, where a person's code may be).
//! No header beyond the protocol's identifiers is kept: not the client key, not a
//! signature. An operator reads them with `GET /api/v1/refusals` (or `?detail=ID`, the id
//! a caller quotes) or `xalo exchange refusals`.
//!
//! Refusals come from anyone who reaches a port, so recording them is bounded, per
//! gateway: at most [`RECORDED_PER_SECOND`] (a token bucket), of which one peer at most
//! [`RECORDED_PER_PEER_SECOND`], through a queue of their own
//! that a refusal does not wait for (full: not recorded, and counted in
//! `xalo_exchange_refusals_unrecorded_total`), but for a signed request the provider's
//! replay guard admitted before refusing it, which waits for room up to [`RECORD_WAIT`]
//! (the guard reads those records back after a restart), written in scripts of their own through the
//! message log's writer (on SQLite its one held connection, where a script that fails is
//! rolled back alone: a bad row cannot cost a message its commit), kept as long as the
//! message log and about [`KEPT`] rows, swept every minute a thousand rows at a time. The
//! caller's answer waits for the record at most [`RECORD_WAIT`].
//!
//! Not message-log rows: a refusal is no exchange, so it gets no signature, time-stamp
//! batch, ledger evidence or data-tracker entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use xalo_core::{Error, ErrorCode, ServiceId};
use xalo_store::{Database, DbResultExt, Row};

use crate::gateway::GatewayState;
use crate::message::{self, X_ROAD_CLIENT, X_ROAD_ID};
use crate::message_log::MessageLog;
use crate::nation::GatewayAdmin;
use crate::protocol_error::{ErrorFormat, ProtocolError};

/// Longest text kept of what a caller sent (an identifier, the request line, a message).
const TEXT_LIMIT: usize = 1024;

/// Most refusals one query answers.
const MOST_LISTED: i64 = 1000;

/// Refusals recorded per second at most, and as many at once.
pub const RECORDED_PER_SECOND: f64 = 100.0;

/// Refusals waiting for the writer at most.
const QUEUED: usize = 1024;

/// Refusals written in one transaction at most.
const PER_COMMIT: usize = 64;

/// Refusals kept at most (the oldest go first); the message log's retention applies too.
pub const KEPT: i64 = 1_000_000;

/// How long an answer waits for its refusal's record at most.
const RECORD_WAIT: Duration = Duration::from_millis(250);

/// How often old refusals are swept, and how many rows one statement deletes at most.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
const SWEEP_ROWS: i64 = 1000;

/// A refusal, as the writer stores it.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `client` (this gateway refused an information system's request, or passed on the
    /// provider's refusal), `provider` (it refused a gateway's request) or `subscriber`
    /// (it refused a provider's event delivery).
    pub side: &'static str,
    pub kind: String,
    pub status: u16,
    pub message: String,
    pub detail: String,
    /// The `detail` of the provider's gateway, for a refusal passed on from it.
    pub upstream_detail: String,
    pub x_road_id: String,
    /// The client the request named (claimed: the refusal may be that it is not).
    pub client: String,
    pub service: String,
    /// `certificate SHA256` of the peer's TLS client certificate, else its address.
    pub peer: String,
    /// Method and the path up to the service.
    pub request: String,
    /// For a signed request the replay guard admitted before it was refused: its
    /// signature as the log keeps it and its hash (else empty), read back at start as the
    /// message log's are, so a restart does not make it new.
    pub request_signature: String,
    pub request_hash: String,
}

/// A refusal as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefusalRecord {
    pub id: i64,
    pub refused_unix: i64,
    pub side: String,
    /// The X-Road error type, as the caller got it.
    pub kind: String,
    pub status: i64,
    pub message: String,
    /// The id the caller got in the error's `detail`.
    pub detail: String,
    /// The provider's gateway's `detail`, for a refusal passed on from it (else empty).
    pub upstream_detail: String,
    pub x_road_id: String,
    pub client: String,
    pub service: String,
    pub peer: String,
    pub request: String,
}

/// What a request said that describes its refusal, taken before its handling consumes it:
/// a few cheap clones (the URI and header values are shared bytes).
#[derive(Debug)]
pub(crate) struct RequestSeen {
    method: Method,
    uri: Uri,
    x_road_id: Option<axum::http::HeaderValue>,
    client: Option<axum::http::HeaderValue>,
    /// `X-Road-Service`, which names the topic of the pubsub peer messages.
    service: Option<axum::http::HeaderValue>,
    /// The caller's `Accept`, for the error's format (shared bytes): the first value, and
    /// any others (rare; a `Vec` allocates only for them).
    accept: Option<axum::http::HeaderValue>,
    more_accept: Vec<axum::http::HeaderValue>,
    peer: Peer,
}

#[derive(Debug)]
enum Peer {
    Certificate(Arc<Vec<u8>>),
    Address(std::net::SocketAddr),
    Unknown,
}

impl RequestSeen {
    pub(crate) fn of(req: &Request) -> RequestSeen {
        let ext = req.extensions();
        let peer = if let Some(c) = ext.get::<crate::tls::PeerCertificate>() {
            Peer::Certificate(c.0.clone())
        } else if let Some(a) = ext.get::<crate::tls::PeerAddr>() {
            Peer::Address(a.0)
        } else if let Some(a) = ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
            Peer::Address(a.0)
        } else {
            Peer::Unknown
        };
        let mut accept = req.headers().get_all(axum::http::header::ACCEPT).iter();
        RequestSeen {
            method: req.method().clone(),
            uri: req.uri().clone(),
            x_road_id: req.headers().get(X_ROAD_ID).cloned(),
            client: req
                .headers()
                .get_all(X_ROAD_CLIENT)
                .iter()
                .next_back()
                .cloned(),
            service: req.headers().get(message::X_ROAD_SERVICE).cloned(),
            accept: accept.next().cloned(),
            more_accept: accept.cloned().collect(),
            peer,
        }
    }

    /// The format an information system gets its error in (PR-REST 4.6). Between gateways
    /// errors stay JSON, which the client's gateway reads and passes on in its caller's.
    fn error_format(&self, side: &str) -> ErrorFormat {
        match side {
            "client" => ErrorFormat::negotiate(self.accept.iter().chain(&self.more_accept)),
            _ => ErrorFormat::Json,
        }
    }

    fn refusal(&self, side: &'static str, e: &ProtocolError, detail: &str) -> Refusal {
        let text = |v: &Option<axum::http::HeaderValue>| {
            v.as_ref()
                .map(|v| clean(&String::from_utf8_lossy(v.as_bytes())))
                .unwrap_or_default()
        };
        let path = self.uri.path();
        let named = message::split_service_path(path)
            .and_then(|(p, rest)| Some((ServiceId::from_path(p).ok()?, rest)));
        // The path up to the service: what follows (and the query) may name a person.
        let request = match &named {
            Some((id, "")) => format!("{} /r1/{}", self.method, id.to_path()),
            Some((id, _)) => format!("{} /r1/{}/…", self.method, id.to_path()),
            None => format!("{} {path}", self.method),
        };
        let service = match named {
            Some((id, _)) => id.to_string(),
            None => text(&self.service),
        };
        Refusal {
            side,
            kind: clean(e.kind_text()),
            status: e.status().as_u16(),
            message: clean(&e.message),
            detail: detail.to_owned(),
            upstream_detail: e.upstream_detail().map(clean).unwrap_or_default(),
            x_road_id: text(&self.x_road_id),
            client: text(&self.client),
            service,
            peer: match &self.peer {
                Peer::Certificate(der) => format!("certificate {}", crate::fingerprint(der)),
                Peer::Address(a) => a.to_string(),
                Peer::Unknown => String::new(),
            },
            request: clean(&request),
            request_signature: e
                .admitted
                .as_ref()
                .map(|a| a.signature.clone())
                .unwrap_or_default(),
            request_hash: e
                .admitted
                .as_ref()
                .map(|a| a.request_hash.clone())
                .unwrap_or_default(),
        }
    }
}

/// `text` bounded to [`TEXT_LIMIT`] bytes, its control characters (NUL, which PostgreSQL
/// refuses in text, and the escapes a terminal would obey when the CLI prints it) each
/// replaced by U+FFFD: a provider's message passed on may hold anything.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(TEXT_LIMIT));
    for c in text.chars() {
        let c = if c.is_control() { '\u{fffd}' } else { c };
        if out.len() + c.len_utf8() > TEXT_LIMIT {
            break;
        }
        out.push(c);
    }
    out
}

/// Put a job in the writer's queue: at once or not at all, but for a request the replay
/// guard admitted, which waits up to [`RECORD_WAIT`] for room (it is remembered across a
/// restart only through its record, and only members' signed requests come this way).
async fn enqueue(queue: &mpsc::Sender<Job>, job: Job, admitted: bool) -> bool {
    if admitted {
        queue.send_timeout(job, RECORD_WAIT).await.is_ok()
    } else {
        queue.try_send(job).is_ok()
    }
}

/// Put the refusal on record, then answer it. The record is waited for briefly, and not
/// at all when the refusal is the database's own failure (it would fail again).
pub(crate) async fn refuse(
    gw: &GatewayState,
    side: &'static str,
    seen: &RequestSeen,
    e: ProtocolError,
) -> Response {
    let detail = message::new_uuid();
    // Its own database failing: the record would fail too, so the answer does not wait.
    let own_database = e.passed_on.is_none()
        && matches!(
            e.kind,
            crate::protocol_error::Kind::ClientDatabaseError
                | crate::protocol_error::Kind::ServerDatabaseError
        );
    if let Some(recorded) = gw
        .refusals
        .record(seen.refusal(side, &e, &detail), !own_database)
        .await
        && !own_database
    {
        match tokio::time::timeout(RECORD_WAIT, recorded).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(failure))) => {
                tracing::warn!(error = %failure, kind = e.kind_text(), %detail, "a refusal could not be put on record");
            }
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(kind = e.kind_text(), %detail, "a refusal's record is late");
            }
        }
    }
    let mut r = e.into_response_as(detail, seen.error_format(side));
    if side == "client" {
        // The body's type followed the caller's Accept.
        r.headers_mut().append(
            axum::http::header::VARY,
            axum::http::HeaderValue::from_static("accept"),
        );
    }
    r
}

/// The refusals' queue, its bound and the writer behind it.
#[derive(Debug, Clone)]
pub struct Refusals {
    queue: mpsc::Sender<Job>,
    limits: Arc<std::sync::Mutex<Limits>>,
    unrecorded: Counter,
    db: Database,
}

type Job = (Refusal, oneshot::Sender<Result<(), Error>>);

impl Refusals {
    /// Start recording beside `log` (through its writer, for its retention); abort the
    /// handle to stop.
    pub fn start(log: &MessageLog) -> (Refusals, tokio::task::AbortHandle) {
        let (queue, rx) = mpsc::channel(QUEUED);
        let db = log.database().clone();
        let task = tokio::spawn(write_loop(log.clone(), rx)).abort_handle();
        (
            Refusals {
                queue,
                limits: Arc::new(std::sync::Mutex::new(Limits::new(Instant::now()))),
                unrecorded: Counter::default(),
                db,
            },
            task,
        )
    }

    /// Refusals that were not recorded (over the rate, or the queue full).
    pub fn unrecorded(&self) -> Counter {
        self.unrecorded.clone()
    }

    /// Queue `r` for the writer, unless over the rate or the queue is full (then counted);
    /// the answer says when it is committed. A refusal of a request the replay guard
    /// admitted is not held to the rate (it came signed by a member, and the guard needs
    /// it after a restart) and waits for room in a full queue, briefly, when `may_wait`.
    pub async fn record(
        &self,
        r: Refusal,
        may_wait: bool,
    ) -> Option<oneshot::Receiver<Result<(), Error>>> {
        let admitted = !r.request_hash.is_empty();
        let allowed = admitted
            || self
                .limits
                .lock()
                .map(|mut l| l.allow(peer_key(&r.peer), Instant::now()))
                .unwrap_or(false);
        let (done, committed) = oneshot::channel();
        if allowed && enqueue(&self.queue, (r, done), admitted && may_wait).await {
            Some(committed)
        } else {
            self.unrecorded.inc();
            None
        }
    }

    /// The refusals on record since `since_unix` (with `detail`, only that one), newest
    /// first, at most `limit`.
    pub async fn list(
        &self,
        since_unix: i64,
        detail: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RefusalRecord>, Error> {
        let what = "reading the refusals";
        let columns = "SELECT id, refused_unix, side, kind, status, message, detail, \
                       upstream_detail, x_road_id, client, service, peer, request FROM gateway_refusal";
        let rows =
            match detail {
                Some(d) => xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(format!(
                    "{columns} WHERE detail = $1 AND refused_unix >= $2 ORDER BY id DESC LIMIT $3"
                )))
                .bind(d.to_owned())
                .bind(since_unix)
                .bind(limit)
                .fetch_all(self.db.pool())
                .await,
                None => {
                    xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(format!(
                        "{columns} WHERE refused_unix >= $1 ORDER BY id DESC LIMIT $2"
                    )))
                    .bind(since_unix)
                    .bind(limit)
                    .fetch_all(self.db.pool())
                    .await
                }
            }
            .db(what)?;
        rows.into_iter()
            .map(|r| {
                Ok(RefusalRecord {
                    id: r.try_get(0).db(what)?,
                    refused_unix: r.try_get(1).db(what)?,
                    side: r.try_get(2).db(what)?,
                    kind: r.try_get(3).db(what)?,
                    status: r.try_get(4).db(what)?,
                    message: r.try_get(5).db(what)?,
                    detail: r.try_get(6).db(what)?,
                    upstream_detail: r.try_get(7).db(what)?,
                    x_road_id: r.try_get(8).db(what)?,
                    client: r.try_get(9).db(what)?,
                    service: r.try_get(10).db(what)?,
                    peer: r.try_get(11).db(what)?,
                    request: r.try_get(12).db(what)?,
                })
            })
            .collect()
    }
}

/// Refusals recorded per second at most of one peer (a certificate, else an IP address),
/// so that one cannot use up the whole of [`RECORDED_PER_SECOND`].
pub const RECORDED_PER_PEER_SECOND: f64 = 20.0;

/// Peers whose rates are kept at most (then all are forgotten: a new one starts full).
const PEERS_KEPT: usize = 10_000;

/// The gateway's rate and each peer's.
#[derive(Debug)]
struct Limits {
    all: TokenBucket,
    peers: std::collections::HashMap<String, TokenBucket>,
}

impl Limits {
    fn new(now: Instant) -> Limits {
        Limits {
            all: TokenBucket::new(RECORDED_PER_SECOND, now),
            peers: std::collections::HashMap::new(),
        }
    }

    /// Whether a refusal from `peer` may be recorded now (taking its share if so).
    fn allow(&mut self, peer: &str, now: Instant) -> bool {
        if self.peers.len() >= PEERS_KEPT && !self.peers.contains_key(peer) {
            self.peers.clear();
        }
        let own = self
            .peers
            .entry(peer.to_owned())
            .or_insert_with(|| TokenBucket::new(RECORDED_PER_PEER_SECOND, now));
        own.take(now) && self.all.take(now)
    }
}

/// A peer as its rate knows it: its certificate, else its IP address (a client's port
/// changes with each connection).
fn peer_key(peer: &str) -> &str {
    if peer.starts_with("certificate ") {
        return peer;
    }
    match peer.rsplit_once(':') {
        Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => peer,
    }
}

/// Refills at `rate` a second up to `rate` at once.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate,
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn write_loop(log: MessageLog, mut rx: mpsc::Receiver<Job>) {
    let writer = log.writer().await;
    let mut sweeps = tokio::time::interval(SWEEP_EVERY);
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => return,
            },
            _ = sweeps.tick() => {
                let cutoff = crate::message_log::retention_cutoff(
                    log.retention().load(std::sync::atomic::Ordering::Relaxed),
                );
                if let Err(e) = sweep(&writer, cutoff).await {
                    tracing::warn!(error = %e, "refusal retention sweep failed");
                }
                continue;
            }
        };
        let mut jobs = vec![first];
        while jobs.len() < PER_COMMIT {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (rows, waiting): (Vec<Refusal>, Vec<_>) = jobs.into_iter().unzip();
        let result = write(&writer, rows).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "recording refusals failed");
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
}

/// The signature and hash of each request the provider's gateway admitted and then
/// refused since `unix` (the replay guard's read-back at start, beside the log's).
pub(crate) async fn admitted_since(
    db: &Database,
    unix: i64,
    each: &mut impl FnMut(&str, &str),
) -> Result<(), Error> {
    crate::message_log::signatures_since(
        db,
        "SELECT request_signature, request_hash FROM gateway_refusal \
         WHERE refused_unix >= $1 AND side = 'provider' AND request_hash <> ''",
        unix,
        each,
    )
    .await
}

/// Columns of a refusal, in the order they are bound.
const COLUMNS: usize = 14;

/// One statement for the batch, as one script through the log's writer.
async fn write(writer: &Database, rows: Vec<Refusal>) -> Result<(), Error> {
    let now = crate::unix_now();
    let sql = format!(
        "INSERT INTO gateway_refusal (refused_unix, side, kind, status, message, detail, \
         upstream_detail, x_road_id, client, service, peer, request, request_signature, \
         request_hash) VALUES {}",
        writer.backend().value_rows(rows.len(), COLUMNS)
    );
    let statement = rows.into_iter().fold(
        xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(sql)),
        |q, r| {
            q.bind(now)
                .bind(r.side)
                .bind(r.kind)
                .bind(i64::from(r.status))
                .bind(r.message)
                .bind(r.detail)
                .bind(r.upstream_detail)
                .bind(r.x_road_id)
                .bind(r.client)
                .bind(r.service)
                .bind(r.peer)
                .bind(r.request)
                .bind(r.request_signature)
                .bind(r.request_hash)
        },
    );
    writer
        .execute_gathered(vec![statement], "recording refusals")
        .await
        .map(drop)
}

/// Drop the refusals older than `cutoff_unix` and all but about the newest [`KEPT`], a
/// thousand rows a statement, so the file's write lock is never held long.
async fn sweep(writer: &Database, cutoff_unix: i64) -> Result<(), Error> {
    let what = "sweeping the refusals";
    for (sql, bound) in [
        (
            "DELETE FROM gateway_refusal WHERE id IN (SELECT id FROM gateway_refusal \
             WHERE refused_unix < $1 ORDER BY id LIMIT $2)",
            cutoff_unix,
        ),
        (
            "DELETE FROM gateway_refusal WHERE id IN (SELECT id FROM gateway_refusal \
             WHERE id <= (SELECT MAX(id) FROM gateway_refusal) - $1 ORDER BY id LIMIT $2)",
            KEPT,
        ),
    ] {
        loop {
            let deleted = writer
                .execute_gathered(
                    vec![xalo_store::sqlx::query(sql).bind(bound).bind(SWEEP_ROWS)],
                    what,
                )
                .await?;
            if deleted < SWEEP_ROWS as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub(crate) struct RefusalQuery {
    #[serde(default = "default_limit")]
    limit: i64,
    /// Only refusals at or after this Unix time.
    #[serde(default)]
    since: i64,
    /// Only the refusal whose caller got this `detail`.
    detail: Option<String>,
}

fn default_limit() -> i64 {
    100
}

/// `GET /api/v1/refusals?limit=N&since=UNIX&detail=ID`: the latest refusals, newest first.
pub(crate) async fn list(
    State(gw): State<Arc<GatewayState>>,
    Query(q): Query<RefusalQuery>,
) -> Result<Response, Error> {
    if q.limit < 1 || q.limit > MOST_LISTED {
        return Err(Error::new(
            ErrorCode::HttpBadRequest,
            format!("limit must be 1 to {MOST_LISTED}"),
        ));
    }
    let records = gw
        .refusals
        .list(q.since, q.detail.as_deref(), q.limit)
        .await?;
    Ok(axum::Json(records).into_response())
}

impl GatewayAdmin {
    /// This gateway's latest `limit` refusals (only the one of `detail`, if given), newest
    /// first.
    pub async fn refusals(
        &self,
        limit: usize,
        detail: Option<&str>,
    ) -> Result<Vec<RefusalRecord>, Error> {
        let mut path = format!("/api/v1/refusals?limit={limit}");
        if let Some(d) = detail {
            path.push_str("&detail=");
            path.push_str(&crate::evidence_export::query_value(d));
        }
        let v = self.get_json(&path).await?;
        serde_json::from_value(v).map_err(|e| Error::new(ErrorCode::ExchUpstream, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol_error::Kind;

    #[test]
    fn a_refusal_keeps_what_was_asked_but_no_secret() {
        let mut req = axum::http::Request::builder()
            .method("POST")
            .uri("/r1/VN/GOV/000001/population/persons/VN1?x=1")
            .header("x-road-client", "VN/GOV/000007/portal")
            .header("x-road-id", "id-1")
            .header("x-road-userid", "VN001085000001")
            .header(message::CLIENT_KEY, "secret-key")
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(crate::tls::PeerCertificate(Arc::new(vec![1, 2, 3])));
        let seen = RequestSeen::of(&req);
        let e = ProtocolError::new(Kind::ServerAccessDenied, "x".repeat(5000) + "\0");
        let r = seen.refusal("provider", &e, "d-1");
        assert_eq!(r.kind, "Server.ServerProxy.AccessDenied");
        assert_eq!(r.status, 500);
        assert_eq!(r.message.len(), TEXT_LIMIT);
        assert_eq!(r.service, "VN/GOV/000001/population/persons");
        assert_eq!(
            (r.client.as_str(), r.x_road_id.as_str()),
            ("VN/GOV/000007/portal", "id-1")
        );
        assert_eq!(r.request, "POST /r1/VN/GOV/000001/population/persons/…");
        assert_eq!(
            r.peer,
            format!("certificate {}", crate::fingerprint(&[1, 2, 3]))
        );
        let all = format!("{r:?}");
        for secret in ["secret-key", "VN001085000001", "VN1", "x=1"] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        // A path that names no service is kept as it came; control characters go.
        let req = axum::http::Request::builder()
            .uri("/r1/VN")
            .body(axum::body::Body::empty())
            .unwrap();
        let e = ProtocolError::new(Kind::BadRequest, "a\0b\x1b[2Jc");
        let r = RequestSeen::of(&req).refusal("client", &e, "d-2");
        assert_eq!(
            (r.service.as_str(), r.client.as_str(), r.peer.as_str()),
            ("", "", "")
        );
        assert_eq!(r.request, "GET /r1/VN");
        assert_eq!(r.message, "a\u{fffd}b\u{fffd}[2Jc");
        assert_eq!(clean(&"ắ".repeat(600)).len(), 1023);
        assert!(clean(&"\0".repeat(2000)).len() <= TEXT_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_admitted_request_waits_for_room_in_a_full_queue() {
        let (queue, mut rx) = mpsc::channel::<Job>(1);
        let req = axum::http::Request::builder()
            .uri("/r1/VN")
            .body(axum::body::Body::empty())
            .unwrap();
        let e = ProtocolError::new(Kind::BadRequest, "refused");
        let seen = RequestSeen::of(&req);
        let job = || (seen.refusal("provider", &e, "d-1"), oneshot::channel().0);
        assert!(enqueue(&queue, job(), false).await);
        assert!(!enqueue(&queue, job(), false).await, "full: not waited for");
        let drained = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            rx.recv().await.map(|_| rx)
        });
        assert!(enqueue(&queue, job(), true).await, "room within the wait");
        let mut rx = drained.await.unwrap().unwrap();
        assert!(
            !enqueue(&queue, job(), true).await,
            "no room within the wait"
        );
        assert!(rx.recv().await.is_some());
    }

    #[test]
    fn recording_is_bounded_by_a_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, start);
        let taken = (0..25).filter(|_| bucket.take(start)).count();
        assert_eq!(taken, 10, "a burst of the rate at most");
        assert!(!bucket.take(start + Duration::from_millis(50)));
        assert!(bucket.take(start + Duration::from_millis(150)), "refilled");
        let later = start + Duration::from_secs(60);
        let taken = (0..25).filter(|_| bucket.take(later)).count();
        assert_eq!(taken, 10, "never more than the rate at once");

        // One peer gets its share; another still gets through, until the gateway's rate.
        let mut limits = Limits::new(start);
        let noisy = (0..100)
            .filter(|_| limits.allow(peer_key("10.0.0.1:4001"), start))
            .count();
        assert_eq!(noisy as f64, RECORDED_PER_PEER_SECOND);
        assert!(
            !limits.allow(peer_key("10.0.0.1:4002"), start),
            "the same host"
        );
        assert!(limits.allow(peer_key("certificate ab12"), start));
        let others = (0..1000)
            .filter(|i| limits.allow(&format!("10.0.1.{}", i % 250), start))
            .count();
        assert_eq!(
            noisy + 1 + others,
            RECORDED_PER_SECOND as usize,
            "all peers together"
        );
        assert_eq!(peer_key("[::1]:80"), "[::1]");
    }
}
