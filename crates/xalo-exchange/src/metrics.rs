//! Per-service and per-client metrics of a gateway, on its `/metrics` (Prometheus):
//! messages, exchange errors by X-Road error type, time to the answer's head, and body
//! bytes, each labelled with the side (`client`: this gateway sent the request;
//! `provider`: it served it), the client and the service.
//!
//! Labels come from what the caller sent, so only identifiers of the global configuration
//! are used as they are, and the number of label sets is capped; the rest are counted
//! under `other`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use xalo_core::ServiceId;

use crate::global_conf::{GlobalConf, GlobalConfHolder};
use crate::message::{self, X_ROAD_CLIENT};
use crate::protocol_error::X_ROAD_ERROR;

/// Distinct (side, client, service) label sets kept before new ones count as `other`.
const LABEL_SETS: usize = 10_000;

/// Spellings of a message's client and service (as sent) whose metrics are kept at hand.
const SPELLINGS: usize = 2 * LABEL_SETS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    side: &'static str,
    client: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    side: &'static str,
    client: String,
    service: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    side: &'static str,
    stage: &'static str,
}

/// A stage of a message at a gateway whose time is kept apart: where the answer waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// From a message's arrival at the gateway's handler to the head of its answer: the
    /// whole of the gateway's own work and waits, of which the other stages are parts.
    Held,
    /// The wait for the signature of the batch the message joined.
    Sign,
    /// At the client's gateway: from sending the request to the provider's gateway to the
    /// head of its answer (that gateway's whole work included); a hop that failed is not
    /// counted.
    ProviderGateway,
    /// At the provider's gateway: from calling the backend to the end of its answer.
    Backend,
    /// The wait for a request's and its answer's commit to the log (their bodies sealed
    /// first when the log is encrypted, and the commit itself when the message's own task
    /// makes it); publish/subscribe's messages are not counted.
    Log,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Held => "held",
            Stage::Sign => "sign",
            Stage::ProviderGateway => "provider_gateway",
            Stage::Backend => "backend",
            Stage::Log => "log",
        }
    }
}

/// The (side, stage) pairs a message meets, whose histograms are kept at hand.
const STAGES_AT_HAND: [(&str, Stage); 8] = [
    ("client", Stage::Held),
    ("provider", Stage::Held),
    ("client", Stage::Sign),
    ("client", Stage::ProviderGateway),
    ("client", Stage::Log),
    ("provider", Stage::Backend),
    ("provider", Stage::Sign),
    ("provider", Stage::Log),
];

/// Upper bounds of the stages' histogram, in seconds: fine below a millisecond, where an
/// idle gateway's stages are.
pub const STAGE_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.001_5, 0.002, 0.003, 0.005,
    0.01, 0.025, 0.1, 1.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// How many batches a piece of batched work took and how many items went into them: a
/// busy gateway signs, verifies and commits many messages at once, a lightly loaded one
/// each alone, and these are what its CPU per message follows.
#[derive(Clone, Debug, Default)]
pub struct Batching {
    pub batches: Counter,
    pub items: Counter,
}

impl Batching {
    pub fn record(&self, items: usize) {
        self.batches.inc();
        self.items.inc_by(items as u64);
    }
}

/// The gateway's own metric families.
#[derive(Clone)]
pub struct ExchangeMetrics {
    messages: Family<MessageLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<MessageLabels, Histogram>,
    request_bytes: Family<MessageLabels, Counter>,
    response_bytes: Family<MessageLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    stages: Family<StageLabels, Histogram>,
    /// The family's histograms of the stages a message meets ([`STAGES_AT_HAND`]), each
    /// taken from it once, when first observed: found by a look along eight entries rather
    /// than the family's locked, hashed lookup per message.
    stages_at_hand: Arc<[std::sync::OnceLock<Histogram>; STAGES_AT_HAND.len()]>,
    seen: Arc<Mutex<HashSet<MessageLabels>>>,
    /// The metrics of a message, by its side and its client and service as sent: parsing
    /// them, checking them against the global configuration, formatting the labels and
    /// finding each family's metric by them was 3% of a busy gateway's CPU, for the same
    /// few pairs again and again.
    at_hand: Arc<Mutex<AtHand>>,
}

/// Metrics kept at hand, for one version of the global configuration (a client or
/// service it no longer names counts as `other` again).
#[derive(Debug, Default)]
struct AtHand {
    version: Option<i64>,
    by_spelling: HashMap<Spelling, Arc<MessageMetrics>>,
}

/// A message's side, and its client and service path as the caller wrote them, a line
/// each.
type Spelling = String;

/// The metrics of one label set.
#[derive(Debug)]
struct MessageMetrics {
    labels: MessageLabels,
    messages: Counter,
    duration: Histogram,
    request_bytes: Counter,
    response_bytes: Counter,
}

impl Default for ExchangeMetrics {
    fn default() -> Self {
        ExchangeMetrics {
            messages: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ])
            }),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            reloads: Family::default(),
            stages: Family::new_with_constructor(|| Histogram::new(STAGE_BUCKETS)),
            stages_at_hand: Arc::default(),
            seen: Arc::default(),
            at_hand: Arc::default(),
        }
    }
}

impl ExchangeMetrics {
    /// Add the families to a server's registry (prefixed `xalo_` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "exchange_messages",
            "Exchanged messages, by side, client and service",
            self.messages.clone(),
        );
        registry.register(
            "exchange_errors",
            "Messages answered with an X-Road error, by its type",
            self.errors.clone(),
        );
        registry.register(
            "exchange_message_duration_seconds",
            "Time from a message's arrival to its answer's head",
            self.duration.clone(),
        );
        registry.register(
            "exchange_request_bytes",
            "Request body bytes",
            self.request_bytes.clone(),
        );
        registry.register(
            "exchange_response_bytes",
            "Answer body bytes",
            self.response_bytes.clone(),
        );
        registry.register(
            "exchange_config_reloads",
            "Configuration reloads, by result",
            self.reloads.clone(),
        );
        registry.register(
            "exchange_stage_duration_seconds",
            "Time a message spent in a stage at this gateway, by side: sign (the wait for its batch's signature), provider_gateway (the client's side waiting for the provider's gateway's answer head), backend (the provider's side waiting for the backend's whole answer), log (the wait for its commit)",
            self.stages.clone(),
        );
    }

    /// Run `work`, a stage of a message of `side`, and keep how long it took (whether it
    /// succeeded or not).
    pub async fn timed<T>(
        &self,
        side: &'static str,
        stage: Stage,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let started = Instant::now();
        let done = work.await;
        self.stage(side, stage, started.elapsed());
        done
    }

    /// A message of `side` spent `took` in `stage`.
    pub fn stage(&self, side: &'static str, stage: Stage, took: std::time::Duration) {
        let from_family = || {
            self.stages
                .get_or_create(&StageLabels {
                    side,
                    stage: stage.name(),
                })
                .clone()
        };
        let took = took.as_secs_f64();
        match STAGES_AT_HAND
            .iter()
            .position(|(s, st)| *s == side && *st == stage)
        {
            Some(i) => self.stages_at_hand[i]
                .get_or_init(from_family)
                .observe(took),
            None => from_family().observe(took),
        }
    }

    /// Add the batching counters of the signer, the signature checks and the message log.
    pub fn register_batching(
        registry: &mut Registry,
        signed: &Batching,
        verified: &Batching,
        logged: &Batching,
    ) {
        for (name, help, counter) in [
            (
                "exchange_signature_batches",
                "Batch signatures made over the messages this gateway sent",
                &signed.batches,
            ),
            (
                "exchange_signed_messages",
                "Messages signed in those batches",
                &signed.items,
            ),
            (
                "exchange_signature_verifications",
                "Batch signatures of peers verified (a batch's once it is known good, so messages of one batch that arrive together may each verify it)",
                &verified.batches,
            ),
            (
                "exchange_verified_messages",
                "Messages whose batch signature checked good",
                &verified.items,
            ),
            (
                "exchange_log_commits",
                "Commits of the message log that held messages",
                &logged.batches,
            ),
            (
                "exchange_logged_messages",
                "Messages written in those commits",
                &logged.items,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
    }

    pub fn reloaded(&self, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// The labels of a message: the client and service it names, when the global
    /// configuration knows them and the label sets are not exhausted (otherwise `other`).
    fn labels(
        &self,
        side: &'static str,
        conf: &GlobalConf,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<MessageLabels> {
        let client = message::named_client(headers)?
            .ok()
            .filter(|c| conf.has_client(c))?;
        let service = message::split_service_path(path)
            .and_then(|(s, _)| ServiceId::from_path(s).ok())
            .filter(|s| conf.has_subsystem(s.provider()))?;
        let labels = MessageLabels {
            side,
            client: client.to_string(),
            service: service.to_string(),
        };
        let mut seen = self.seen.lock().ok()?;
        if !seen.contains(&labels) {
            if seen.len() >= LABEL_SETS {
                return None;
            }
            seen.insert(labels.clone());
        }
        Some(labels)
    }

    /// The metrics of a message: those kept for its spelling, or found by its labels (and
    /// kept, while there is room).
    fn metrics(
        &self,
        side: &'static str,
        conf: &GlobalConfHolder,
        path: &str,
        headers: &HeaderMap,
    ) -> Arc<MessageMetrics> {
        let client = message::last_header_text(headers, X_ROAD_CLIENT).unwrap_or_default();
        let service = message::split_service_path(path).map_or("", |(s, _)| s);
        // Neither a header value nor a path holds a line break.
        let spelling = [side, client, service].join("\n");
        let conf = conf.get().ok();
        if let Some(conf) = &conf
            && let Ok(mut at_hand) = self.at_hand.lock()
        {
            if at_hand.version != Some(conf.version) {
                at_hand.by_spelling.clear();
                at_hand.version = Some(conf.version);
            }
            if let Some(m) = at_hand.by_spelling.get(&spelling) {
                return m.clone();
            }
        }
        let known = conf
            .as_ref()
            .and_then(|conf| self.labels(side, conf, path, headers));
        let other = known.is_none();
        let labels = known.unwrap_or_else(|| MessageLabels {
            side,
            client: "other".into(),
            service: "other".into(),
        });
        let metrics = Arc::new(MessageMetrics {
            messages: self.messages.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            request_bytes: self.request_bytes.get_or_create(&labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&labels).clone(),
            labels,
        });
        // What counts as `other` now may be registered later: looked up again each time. An
        // expired configuration names nobody (`other`, as before caching).
        if !other
            && let Some(conf) = &conf
            && let Ok(mut at_hand) = self.at_hand.lock()
            && at_hand.version == Some(conf.version)
            && at_hand.by_spelling.len() < SPELLINGS
        {
            at_hand.by_spelling.insert(spelling, metrics.clone());
        }
        metrics
    }

    /// Measure one message through `handle`: counts the request's and the answer's body
    /// bytes as they stream and the time to the answer's head.
    pub async fn observe<F, Fut>(
        &self,
        side: &'static str,
        conf: &GlobalConfHolder,
        req: Request,
        handle: F,
    ) -> Response
    where
        F: FnOnce(Request) -> Fut,
        Fut: std::future::Future<Output = Response>,
    {
        let started = Instant::now();
        let metrics = self.metrics(side, conf, req.uri().path(), req.headers());
        let req = req.map(|body| counted(body, metrics.request_bytes.clone()));
        let response = handle(req).await;
        metrics.messages.inc();
        let held = started.elapsed();
        metrics.duration.observe(held.as_secs_f64());
        self.stage(side, Stage::Held, held);
        if let Some(kind) = response
            .headers()
            .get(X_ROAD_ERROR)
            .and_then(|v| v.to_str().ok())
        {
            let error = if kind.len() <= 64 { kind } else { "other" };
            self.errors
                .get_or_create(&ErrorLabels {
                    side,
                    client: metrics.labels.client.clone(),
                    service: metrics.labels.service.clone(),
                    error: error.to_owned(),
                })
                .inc();
        }
        let counter = metrics.response_bytes.clone();
        response.map(|body| counted(body, counter))
    }
}

/// A body that adds its bytes to `counter`: at once when its length is known (a body in
/// memory), else chunk by chunk as it streams.
fn counted(body: Body, counter: Counter) -> Body {
    if let Some(n) = axum::body::HttpBody::size_hint(&body).exact() {
        counter.inc_by(n);
        return body;
    }
    Body::from_stream(body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            counter.inc_by(bytes.len() as u64);
        }
        chunk
    }))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn conf(version: i64, subsystems: &[&str], expires_unix: i64) -> GlobalConf {
        let member = crate::global_conf::MemberEntry {
            id: "VN/GOV/000001".parse().unwrap(),
            name: "Ministry".into(),
            subsystems: subsystems.iter().map(|s| s.to_string()).collect(),
        };
        let mut conf = GlobalConf::new(
            "VN".into(),
            version,
            vec![member],
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        conf.issued_unix = version;
        conf.expires_unix = expires_unix;
        conf
    }

    fn labels_of(metrics: &ExchangeMetrics, held: &GlobalConfHolder) -> (String, String) {
        let mut headers = HeaderMap::new();
        headers.insert(X_ROAD_CLIENT, "VN/GOV/000001/tax".parse().unwrap());
        let m = metrics.metrics(
            "client",
            held,
            "/r1/VN/GOV/000001/population/persons/1",
            &headers,
        );
        (m.labels.client.clone(), m.labels.service.clone())
    }

    #[test]
    fn metrics_kept_at_hand_follow_the_global_configuration() {
        let metrics = ExchangeMetrics::default();
        let held = GlobalConfHolder::default();
        let later = crate::unix_now() + 3600;
        let named = (
            "VN/GOV/000001/tax".to_owned(),
            "VN/GOV/000001/population/persons".to_owned(),
        );
        let other = ("other".to_owned(), "other".to_owned());
        // No configuration yet: nobody is named.
        assert_eq!(labels_of(&metrics, &held), other);
        held.set(conf(1, &["population", "tax"], later));
        assert_eq!(labels_of(&metrics, &held), named);
        // Kept at hand: the same again.
        assert_eq!(labels_of(&metrics, &held), named);
        // A newer version drops the client: it counts as `other` again.
        held.set(conf(2, &["population"], later));
        assert_eq!(labels_of(&metrics, &held), other);
        // Registered again, named again.
        held.set(conf(3, &["population", "tax"], later));
        assert_eq!(labels_of(&metrics, &held), named);
        // An expired configuration names nobody, though the version held names the client.
        held.set(conf(4, &["population", "tax"], crate::unix_now() - 1));
        assert_eq!(labels_of(&metrics, &held), other);
        assert_eq!(labels_of(&metrics, &held), other);
    }

    #[tokio::test]
    async fn bodies_are_counted_whether_their_length_is_known_or_streamed() {
        let known = Counter::default();
        let body = counted(Body::from("twelve bytes"), known.clone());
        assert_eq!(known.get(), 12);
        let _ = body.collect().await.unwrap();
        assert_eq!(known.get(), 12);

        let streamed = Counter::default();
        let chunks = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc")),
            Ok(bytes::Bytes::from_static(b"defgh")),
        ]);
        let body = counted(Body::from_stream(chunks), streamed.clone());
        assert_eq!(streamed.get(), 0);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!((all.len(), streamed.get()), (8, 8));
    }
}
