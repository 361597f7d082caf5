//! Publish/subscribe over the exchange.
//!
//! A provider registers topics at its gateway (`/api/v1/topics`, named like services) and
//! grants subscribers the right to them (default deny). A subscriber's administrator
//! registers a subscription at the subscriber's own gateway, with the URL of the backend
//! that takes the events; that gateway asks the provider's gateway, which checks the right
//! and records the subscriber. The provider's information system publishes with
//! `POST /publish/{topic}` at its gateway; the gateway commits the event and one delivery per
//! subscriber to its outbox before it answers, then delivers each over mutual TLS as a
//! signed message to the subscriber's gateway, which checks it and hands it to the
//! backend. A delivery is retried with exponential backoff until the subscriber's gateway
//! acknowledges it (at least once); every copy carries the same event id in
//! `Idempotency-Key` and CloudEvents' `ce-id`, so a subscriber drops duplicates. Both
//! gateways log each delivery in the message log and record its evidence in the ledger.
//!
//! Delivery order is not guaranteed: a retried event may arrive after a later one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use xalo_core::{ClientId, Error, ErrorCode, MemberId, ServiceId, SubsystemId};

use crate::b64;
use crate::evidence::MessageEvidence;
use crate::gateway::GatewayState;
use crate::global_conf::{GatewayEntry, GlobalConf};
use crate::message::{self, X_ROAD_CLIENT, X_ROAD_ID, X_ROAD_ISSUE, X_ROAD_USER_ID};
use crate::message_log::LoggedMessage;
use crate::nation::GatewayAdmin;
use crate::protocol_error::{Kind, ProtocolError, ProtocolErrorBody, X_ROAD_ERROR};
use crate::signature::BatchProof;
use crate::topic::{
    Claimed, DROPPED, FAILED, NewSubscription, NewTopic, NewTopicRight, Outcome, Published,
};

/// The event id every copy of an event carries (IETF draft "The Idempotency-Key HTTP
/// Header Field"); a publisher may set it to make its own retries harmless.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Which of the receiving member's subsystems an event is for.
pub const X_ROAD_SUBSCRIBER: &str = "x-road-subscriber";
/// Where an information system publishes: `POST /publish/{topic}` at its own gateway.
pub const PUBLISH_PREFIX: &str = "/publish/";
const PEER_SUBSCRIPTIONS: &str = "/pubsub/v1/subscriptions";
const PEER_EVENTS: &str = "/pubsub/v1/events";
/// Headers a publisher may set that travel with the event.
const EVENT_HEADERS: &[&str] = &[
    "content-type",
    X_ROAD_USER_ID,
    X_ROAD_ISSUE,
    "ce-type",
    "ce-subject",
    "ce-time",
];
/// Longest idempotency key accepted.
const MAX_KEY_LEN: usize = 200;
/// Largest answer read from another gateway (acknowledgements are small JSON).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// `[roles.gateway.pubsub]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubSubSettings {
    /// Milliseconds before the first retry; each further retry waits twice as long.
    pub retry_min_ms: u64,
    /// The longest wait between retries, in seconds.
    pub retry_max_secs: u64,
    /// Attempts before a delivery is given up (it then shows as `failed`).
    pub max_attempts: u32,
    /// Largest event body accepted.
    pub max_event_bytes: usize,
    /// Deliveries in flight at once per gateway instance.
    pub concurrency: usize,
    /// Of those, to one subscriber at most: one whose backend hangs holds these slots
    /// until its attempts time out, and the rest go on with the others' events.
    pub per_subscriber: usize,
    /// Seconds a claimed delivery is held by the instance that claimed it; one that died
    /// meanwhile leaves it to be taken again after this. An attempt is given up after four
    /// fifths of it, so keep it over 1.25 times `timeout_secs` for deliveries to wait as
    /// long for an answer as requests do (an attempt that asks several of a member's
    /// gateways in turn may still be cut off: it is tried again).
    pub lease_secs: u64,
}

impl Default for PubSubSettings {
    fn default() -> Self {
        PubSubSettings {
            retry_min_ms: 1000,
            retry_max_secs: 600,
            // With the default backoff, about a day and a half of retries.
            max_attempts: 220,
            max_event_bytes: 1024 * 1024,
            concurrency: 16,
            per_subscriber: 4,
            // An attempt is cut off at four fifths of it: 72 s, past one hop's timeout.
            lease_secs: 90,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Publishing (the provider's information system at its own gateway)

/// `POST /publish/{INSTANCE}/{CLASS}/{MEMBER}/{SUBSYSTEM}/{TOPIC}`: 202 with the event id
/// once the event is in the outbox; 200 when the idempotency key was seen before.
pub async fn publish(State(gw): State<Arc<GatewayState>>, req: Request) -> Response {
    match accept(&gw, req).await {
        Ok(p) => {
            let status = if p.new {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(p)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn bad_request(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::HttpBadRequest, m)
}

async fn accept(gw: &Arc<GatewayState>, req: Request) -> Result<Published, Error> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let topic = path
        .strip_prefix(PUBLISH_PREFIX)
        .ok_or_else(|| bad_request(format!("{path}: expected {PUBLISH_PREFIX}TOPIC")))
        .and_then(|p| ServiceId::from_path(p).map_err(Error::from))?;
    let client = message::named_client(&parts.headers)
        .ok_or_else(|| bad_request("the X-Road-Client header is missing"))??;
    let publisher = ClientId::Subsystem(topic.provider().clone());
    if client != publisher {
        return Err(Error::new(
            ErrorCode::HttpForbidden,
            format!("only {publisher} publishes on {topic}, not {client}"),
        ));
    }
    authenticate_system(gw, &parts, &client).await?;
    if !gw.topics.has_topic(&topic).await? {
        return Err(Error::new(
            ErrorCode::ExchUnknownTopic,
            format!("topic {topic} is not registered at {}", gw.name),
        ));
    }
    let event_id = match message::header_text(&parts.headers, IDEMPOTENCY_KEY) {
        Some(k) if valid_key(k) => k.to_owned(),
        Some(_) => {
            return Err(bad_request(format!(
                "Idempotency-Key: 1 to {MAX_KEY_LEN} visible ASCII characters"
            )));
        }
        None => message::new_uuid(),
    };
    let body = axum::body::to_bytes(body, gw.settings.pubsub.max_event_bytes)
        .await
        .map_err(|e| {
            Error::new(
                ErrorCode::HttpBodyTooLarge,
                format!(
                    "an event is at most {} bytes: {e}",
                    gw.settings.pubsub.max_event_bytes
                ),
            )
        })?;
    let mut headers = Vec::new();
    for name in EVENT_HEADERS {
        if let Some(v) = message::header_text(&parts.headers, name) {
            headers.push(((*name).to_owned(), v.to_owned()));
        }
    }
    if !headers.iter().any(|(n, _)| n == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    // Fan out to the subscribers allowed now; each delivery checks again before it goes.
    let conf = gw.conf.get()?;
    let mut to = Vec::new();
    for s in gw.topics.subscribers(&topic).await? {
        if gw.topics.allows(&topic, &s, &conf.groups_of(&s)).await? {
            to.push(s);
        }
    }
    let published = gw
        .topics
        .publish(&topic, &event_id, &headers, &body, &to)
        .await?;
    if published.deliveries > 0 {
        gw.topics.wake();
    }
    tracing::debug!(%topic, event_id, deliveries = published.deliveries, new = published.new, "event accepted");
    Ok(published)
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
}

/// The calling system must present a certificate registered for exactly this client (client
/// TLS listener) or hold a key issued for it, as for calls through the client proxy.
async fn authenticate_system(
    gw: &GatewayState,
    parts: &axum::http::request::Parts,
    client: &ClientId,
) -> Result<(), Error> {
    let presented = match parts.extensions.get::<crate::tls::PeerCertificate>() {
        Some(cert) => gw.registry.client_of_certificate(&cert.0).await?,
        None => match message::header_text(&parts.headers, message::CLIENT_KEY) {
            Some(key) if !key.is_empty() => gw.registry.client_of_key(key).await?,
            _ => None,
        },
    };
    if presented.as_ref() != Some(client) {
        return Err(Error::new(
            ErrorCode::ExchClientAuthentication,
            format!(
                "the information system is not registered for client {client} (header {})",
                message::CLIENT_KEY
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Signed messages between gateways

/// What a peer gateway answered, signed and checked.
struct PeerAnswer {
    status: StatusCode,
    body: Bytes,
}

/// Why a message to a peer gateway did not get a signed answer.
#[derive(Debug)]
enum PeerError {
    /// The peer refused it with an X-Road error.
    Refused { kind: String, message: String },
    /// It was sent (or may have been) but got no answer, or one that did not verify.
    Failed(String),
    /// It never left: nothing to send it to, or none of the peer's gateways reachable.
    NotSent(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Refused { kind, message } => write!(f, "{kind}: {message}"),
            PeerError::Failed(m) | PeerError::NotSent(m) => f.write_str(m),
        }
    }
}

/// How a message is named in the message log and the ledger.
struct LogAs {
    /// This gateway's side: `client`/`provider` for subscriptions, `publisher`/`subscriber`
    /// for deliveries.
    side: &'static str,
    x_road_id: String,
    client: String,
    topic: String,
}

/// A message to another gateway, before it is signed.
struct PeerRequest {
    method: Method,
    target: &'static str,
    headers: HeaderMap,
    body: Bytes,
}

fn header_value(v: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(v).map_err(|e| bad_request(format!("header value {v:?}: {e}")))
}

/// Sign a message and send it to a gateway of `to` (the next one when one cannot be
/// reached); check the answer's signature and that it answers this request.
async fn send_signed(
    gw: &Arc<GatewayState>,
    conf: &GlobalConf,
    to: &MemberId,
    request: PeerRequest,
    log: LogAs,
) -> Result<PeerAnswer, PeerError> {
    let _underway = gw.in_flight.enter();
    if let Some(why) = crate::health::unstamped_too_long(gw) {
        return Err(PeerError::NotSent(why));
    }
    let PeerRequest {
        method,
        target,
        mut headers,
        body,
    } = request;
    let failed = |m: String| PeerError::Failed(m);
    let not_sent = |m: String| PeerError::NotSent(m);
    let candidates = conf.gateways_of(to);
    if candidates.is_empty() {
        return Err(not_sent(format!("{to} has no registered gateway")));
    }
    let tls_ocsp = gw
        .status
        .good_answer(gw.tls.certificate(), conf)
        .await
        .map_err(|e| not_sent(format!("this gateway's TLS certificate: {}", e.message)))?;
    let signer_ocsp = gw
        .status
        .good_answer(gw.signer.certificate(), conf)
        .await
        .map_err(|e| not_sent(format!("the member's signing certificate: {}", e.message)))?;
    // Sent explicitly, so the header the HTTP client would add is in the signed head.
    headers.insert(axum::http::header::ACCEPT, HeaderValue::from_static("*/*"));
    let body_sha: [u8; 64] = Sha512::digest(&body).into();
    let request_head = message::request_head(method.as_str(), target, &headers);
    let request_hash = message::message_hash(&request_head, body.len() as u64, &body_sha);
    let signed = gw
        .batch
        .sign(&request_hash)
        .await
        .map_err(|e| not_sent(e.message))?;
    let signature_headers = crate::client_proxy::signature_headers(
        &gw.encoded,
        gw.signer.certificate(),
        &signed,
        &signer_ocsp,
        &tls_ocsp,
    )
    .map_err(|e| not_sent(e.message))?;
    let mut last = String::new();
    let mut unknown_to = None;
    for peer in &candidates {
        let http = gw.peer_client(peer).map_err(|e| not_sent(e.message))?;
        let uri: axum::http::Uri = format!("https://{}{target}", peer.address)
            .parse()
            .map_err(|e| not_sent(format!("{}{target}: {e}", peer.address)))?;
        let mut all = headers.clone();
        all.extend(signature_headers.clone());
        let sent = http
            .send(
                method.clone(),
                uri,
                all,
                axum::body::Body::from(body.clone()),
            )
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() && !e.is_tls() => {
                last = format!("{}: {e}", peer.address);
                continue;
            }
            Err(e) => return Err(failed(format!("{}: {e:#}", peer.address))),
        };
        let status = response.status;
        let response_headers = response.headers.clone();
        if let Some(kind) = response_headers.get(X_ROAD_ERROR) {
            let kind = kind.to_str().unwrap_or("Server.ServerProxy.InternalError");
            let text = response.text(MAX_ANSWER_BYTES).await;
            let message = serde_json::from_str::<ProtocolErrorBody>(&text)
                .map(|b| b.message)
                .unwrap_or(text);
            let refusal = PeerError::Refused {
                kind: kind.to_owned(),
                message,
            };
            // Each of a member's gateways keeps its own topics and subscriptions: one
            // that knows nothing of this one leaves the question to the next.
            if kind == Kind::ServerUnknownService.as_str() {
                unknown_to = Some(refusal);
                continue;
            }
            return Err(refusal);
        }
        let answer = read_limited(response)
            .await
            .map_err(|e| failed(format!("{}: {e}", peer.address)))?;
        let response_head = message::response_head(status.as_u16(), &response_headers);
        let answer_sha: [u8; 64] = Sha512::digest(&answer).into();
        let response_hash = message::message_hash(&response_head, answer.len() as u64, &answer_sha);
        verify_answer(
            gw,
            conf,
            peer,
            to,
            &response_headers,
            &response_hash,
            &request_hash,
        )
        .map_err(failed)?;
        let evidence = MessageEvidence {
            gateway: gw.name.clone(),
            side: log.side.into(),
            x_road_id: log.x_road_id.clone(),
            client: log.client.clone(),
            service: log.topic.clone(),
            method: method.to_string(),
            user_id: message::header_text(&headers, X_ROAD_USER_ID).map(str::to_owned),
            issue: message::header_text(&headers, X_ROAD_ISSUE).map(str::to_owned),
            request_hash: message::hash_text(&request_hash),
            response_hash: Some(message::hash_text(&response_hash)),
            status: status.as_u16(),
            time_unix: crate::unix_now(),
        };
        let logged = LoggedMessage {
            side: log.side,
            x_road_id: log.x_road_id,
            client: log.client,
            service: log.topic,
            request_hash: evidence.request_hash.clone(),
            request_head,
            request_signature: message::logged_signature(
                &b64().encode(signed.signature.as_slice()),
                &signed.proof.header(),
            ),
            request_body: Some(body.to_vec()),
            response_hash: evidence.response_hash.clone(),
            response_head: Some(response_head),
            response_signature: message::logged_signature_of(&response_headers),
            response_body: Some(answer.to_vec()),
            status: status.as_u16(),
            ..Default::default()
        };
        crate::client_proxy::record(gw, evidence, logged)
            .await
            .map_err(|e| PeerError::Failed(format!("{}: {}", e.kind.as_str(), e.message)))?;
        return Ok(PeerAnswer {
            status,
            body: answer,
        });
    }
    // Unknown to every gateway that answered, and none out of reach (which might know it).
    if last.is_empty()
        && let Some(refusal) = unknown_to
    {
        return Err(refusal);
    }
    Err(not_sent(if last.is_empty() {
        format!("no gateway of {to} could be reached")
    } else {
        last
    }))
}

async fn read_limited(r: crate::hop::HopResponse) -> Result<Bytes, String> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut body = r.into_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// The answer must come from `peer` (its TLS certificate good), be signed by `member`'s
/// good signing certificate, and name the request it answers.
fn verify_answer(
    gw: &GatewayState,
    conf: &GlobalConf,
    peer: &GatewayEntry,
    member: &MemberId,
    headers: &HeaderMap,
    response_hash: &[u8],
    request_hash: &[u8],
) -> Result<(), String> {
    let decode = |name: &str| {
        message::header_text(headers, name)
            .and_then(|v| b64().decode(v).ok())
            .ok_or_else(|| format!("the answer has no valid {name} header"))
    };
    if message::header_text(headers, message::X_ROAD_REQUEST_HASH)
        != Some(message::hash_text(request_hash).as_str())
    {
        return Err("X-Road-Request-Hash of the answer is not the hash of the request sent".into());
    }
    let peer_cert = peer.certificate_der().map_err(|e| e.message)?;
    gw.status
        .verify_answer(&peer_cert, &decode(message::TLS_OCSP)?, conf)
        .map_err(|e| format!("the peer's TLS certificate: {}", e.message))?;
    let signer = decode(message::SIGNER)?;
    gw.status
        .verify_answer(&signer, &decode(message::SIGNER_OCSP)?, conf)
        .map_err(|e| format!("the peer's signing certificate: {}", e.message))?;
    let proof = message::header_text(headers, message::SIGNATURE_BATCH)
        .ok_or_else(|| "the answer has no signature batch proof".to_owned())
        .and_then(|p| BatchProof::parse(p).map_err(|e| e.message))?;
    gw.verified
        .verify(
            &signer,
            member,
            response_hash,
            &decode(message::SIGNATURE)?,
            &proof,
        )
        .map_err(|e| e.message)
}

/// A checked message from another gateway.
struct Inbound {
    sender: MemberId,
    conf: Arc<GlobalConf>,
    headers: HeaderMap,
    method: Method,
    body: Bytes,
    request_head: Vec<u8>,
    request_hash: [u8; 64],
    own_tls: Arc<Vec<u8>>,
}

fn bad(m: impl Into<String>) -> ProtocolError {
    ProtocolError::new(Kind::BadRequest, m)
}

/// Authenticate the sending gateway and check the message's signature, as the server
/// proxy does for service calls.
async fn inbound(gw: &Arc<GatewayState>, req: Request) -> Result<Inbound, ProtocolError> {
    crate::health::refuse_unstamped(gw, Kind::ServerTimestamperFailed)?;
    let arrived_ms = xalo_core::unix_now_ms();
    let (parts, body) = req.into_parts();
    let conf = gw.conf.get().map_err(|e| ProtocolError::server(&e))?;
    let own_tls = crate::server_proxy::own_tls_answer(gw, &conf).await?;
    let sender = crate::server_proxy::authenticate(
        gw,
        &conf,
        parts.extensions.get::<crate::tls::PeerCertificate>(),
        &parts.headers,
    )
    .await?;
    let decode =
        |name: &str, kind: Kind| crate::server_proxy::decode_header(&parts.headers, name, kind);
    let signer = decode(message::SIGNER, Kind::ServerInvalidSignatureValue)?;
    let signer_ocsp = decode(message::SIGNER_OCSP, Kind::ServerCertValidation)?;
    let signature = decode(message::SIGNATURE, Kind::ServerInvalidSignatureValue)?;
    gw.status
        .verify_answer(&signer, &signer_ocsp, &conf)
        .map_err(|e| {
            ProtocolError::new(
                Kind::ServerCertValidation,
                format!("the sender's signing certificate: {}", e.message),
            )
        })?;
    let body = axum::body::to_bytes(body, gw.settings.pubsub.max_event_bytes + 64 * 1024)
        .await
        .map_err(|e| bad(format!("body: {e}")))?;
    let target = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let request_head = message::request_head(parts.method.as_str(), target, &parts.headers);
    let body_sha: [u8; 64] = Sha512::digest(&body).into();
    let request_hash = message::message_hash(&request_head, body.len() as u64, &body_sha);
    let proof = message::header_text(&parts.headers, message::SIGNATURE_BATCH)
        .ok_or_else(|| {
            ProtocolError::new(
                Kind::ServerInvalidSignatureValue,
                "no signature batch proof",
            )
        })
        .and_then(|p| {
            BatchProof::parse(p)
                .map_err(|e| ProtocolError::new(Kind::ServerInvalidSignatureValue, e.message))
        })?;
    gw.verified
        .verify(&signer, &sender, &request_hash, &signature, &proof)
        .map_err(|e| ProtocolError::new(Kind::ServerInvalidSignatureValue, e.message))?;
    // Each delivery attempt and subscription is signed anew: a repeat is a replay.
    crate::server_proxy::admit_once(gw, &signature, &proof, &request_hash, arrived_ms)?;
    Ok(Inbound {
        sender,
        conf,
        headers: parts.headers,
        method: parts.method,
        body,
        request_head,
        request_hash,
        own_tls,
    })
}

/// Answer a checked message: signed, naming the request, logged as `log` says.
async fn signed_answer(
    gw: &Arc<GatewayState>,
    m: &Inbound,
    status: StatusCode,
    answer: serde_json::Value,
    log: LogAs,
) -> Result<Response, ProtocolError> {
    let internal = |m: String| ProtocolError::new(Kind::ServerInternalError, m);
    let body = Bytes::from(answer.to_string());
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| -> Result<(), ProtocolError> {
        headers.insert(name, header_value(value).map_err(|e| internal(e.message))?);
        Ok(())
    };
    set("content-type", "application/json")?;
    set(X_ROAD_ID, &log.x_road_id)?;
    set(message::X_ROAD_REQUEST_ID, &message::new_uuid())?;
    set(
        message::X_ROAD_REQUEST_HASH,
        &message::hash_text(&m.request_hash),
    )?;
    let response_head = message::response_head(status.as_u16(), &headers);
    let body_sha: [u8; 64] = Sha512::digest(&body).into();
    let response_hash = message::message_hash(&response_head, body.len() as u64, &body_sha);
    let own_ocsp = gw
        .status
        .good_answer(gw.signer.certificate(), &m.conf)
        .await
        .map_err(|e| {
            ProtocolError::new(
                Kind::ServerCertValidation,
                format!("this member's signing certificate: {}", e.message),
            )
        })?;
    let signed = gw
        .batch
        .sign(&response_hash)
        .await
        .map_err(|e| internal(e.message))?;
    let signature = b64().encode(signed.signature.as_slice());
    let proof = signed.proof.header();
    let mut set = |name: &'static str, value: &str| -> Result<(), ProtocolError> {
        headers.insert(name, header_value(value).map_err(|e| internal(e.message))?);
        Ok(())
    };
    set(message::SIGNATURE, &signature)?;
    set(message::SIGNATURE_BATCH, &proof)?;
    set(message::SIGNER, &b64().encode(gw.signer.certificate()))?;
    set(message::SIGNER_OCSP, &b64().encode(own_ocsp.as_slice()))?;
    set(message::TLS_OCSP, &b64().encode(m.own_tls.as_slice()))?;

    let evidence = MessageEvidence {
        gateway: gw.name.clone(),
        side: log.side.into(),
        x_road_id: log.x_road_id.clone(),
        client: log.client.clone(),
        service: log.topic.clone(),
        method: m.method.to_string(),
        user_id: message::header_text(&m.headers, X_ROAD_USER_ID).map(str::to_owned),
        issue: message::header_text(&m.headers, X_ROAD_ISSUE).map(str::to_owned),
        request_hash: message::hash_text(&m.request_hash),
        response_hash: Some(message::hash_text(&response_hash)),
        status: status.as_u16(),
        time_unix: crate::unix_now(),
    };
    let logged = LoggedMessage {
        side: log.side,
        x_road_id: log.x_road_id,
        client: log.client,
        service: log.topic,
        request_hash: evidence.request_hash.clone(),
        request_head: m.request_head.clone(),
        request_signature: message::logged_signature_of(&m.headers).unwrap_or_default(),
        request_body: Some(m.body.to_vec()),
        response_hash: evidence.response_hash.clone(),
        response_head: Some(response_head),
        response_signature: Some(message::logged_signature(&signature, &proof)),
        response_body: Some(body.to_vec()),
        status: status.as_u16(),
        ..Default::default()
    };
    crate::client_proxy::record(gw, evidence, logged).await?;
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    Ok(r)
}

/// The routes other gateways call over mutual TLS (beside the server proxy's `/r1/`).
pub fn peer_router(gw: Arc<GatewayState>) -> Router {
    Router::new()
        .route(
            PEER_SUBSCRIPTIONS,
            post(peer_subscription).delete(peer_subscription),
        )
        .route(PEER_EVENTS, post(peer_event))
        .with_state(gw)
}

#[derive(Serialize, Deserialize)]
struct SubscriptionBody {
    topic: ServiceId,
}

/// At the provider's gateway: a subscriber's gateway subscribes (POST) or unsubscribes
/// (DELETE) one of its subsystems, named in `X-Road-Client`.
async fn peer_subscription(State(gw): State<Arc<GatewayState>>, req: Request) -> Response {
    let _underway = gw.in_flight.enter();
    let seen = crate::refusal::RequestSeen::of(&req);
    let handled = async {
        let m = inbound(&gw, req).await?;
        let client: ClientId = message::header_text(&m.headers, X_ROAD_CLIENT)
            .ok_or_else(|| bad("the X-Road-Client header is missing"))?
            .parse()
            .map_err(|e| bad(format!("X-Road-Client: {e}")))?;
        if client.member() != &m.sender {
            return Err(ProtocolError::new(
                Kind::ServerSslAuthenticationFailed,
                format!("a gateway of {} cannot subscribe for {client}", m.sender),
            ));
        }
        if !m.conf.has_client(&client) {
            return Err(ProtocolError::new(
                Kind::ServerAccessDenied,
                format!("client {client} is not registered"),
            ));
        }
        // Events are delivered to a subsystem's backend; a member's subscription would be
        // kept only for every delivery to it to be dropped.
        if m.method == Method::POST && !matches!(client, ClientId::Subsystem(_)) {
            return Err(bad(format!(
                "{client} is a member: only a subsystem subscribes to a topic"
            )));
        }
        let b: SubscriptionBody =
            serde_json::from_slice(&m.body).map_err(|e| bad(format!("body: {e}")))?;
        let topic = b.topic;
        let db = |e: Error| ProtocolError::server(&e);
        if topic.provider().member() != &gw.owner
            || !gw.topics.has_topic(&topic).await.map_err(db)?
        {
            return Err(ProtocolError::new(
                Kind::ServerUnknownService,
                format!("topic {topic} is not registered at {}", gw.name),
            ));
        }
        let log = LogAs {
            side: "provider",
            x_road_id: message::header_text(&m.headers, X_ROAD_ID)
                .unwrap_or_default()
                .to_owned(),
            client: client.to_string(),
            topic: topic.to_string(),
        };
        if m.method == Method::DELETE {
            gw.topics
                .remove_subscriber(&topic, &client)
                .await
                .map_err(db)?;
            let answer =
                serde_json::json!({"topic": topic, "subscriber": client, "status": "unsubscribed"});
            return signed_answer(&gw, &m, StatusCode::OK, answer, log).await;
        }
        let groups = m.conf.groups_of(&client);
        if !gw
            .topics
            .allows(&topic, &client, &groups)
            .await
            .map_err(db)?
        {
            return Err(ProtocolError::new(
                Kind::ServerAccessDenied,
                format!("{client} has no access right to topic {topic}"),
            ));
        }
        gw.topics
            .add_subscriber(&topic, &client)
            .await
            .map_err(db)?;
        tracing::info!(%topic, %client, "subscribed");
        let answer =
            serde_json::json!({"topic": topic, "subscriber": client, "status": "subscribed"});
        signed_answer(&gw, &m, StatusCode::CREATED, answer, log).await
    };
    match handled.await {
        Ok(r) => r,
        Err(e) => crate::refusal::refuse(&gw, "provider", &seen, e).await,
    }
}

/// At the subscriber's gateway: an event for one of its member's subscriptions, which
/// goes to the subscription's backend; the answer acknowledges it only once the backend
/// took it (2xx).
async fn peer_event(State(gw): State<Arc<GatewayState>>, req: Request) -> Response {
    let _underway = gw.in_flight.enter();
    let seen = crate::refusal::RequestSeen::of(&req);
    let handled = async {
        let m = inbound(&gw, req).await?;
        let topic: ServiceId = message::header_text(&m.headers, message::X_ROAD_SERVICE)
            .ok_or_else(|| bad("the X-Road-Service header (the topic) is missing"))?
            .parse()
            .map_err(|e| bad(format!("X-Road-Service: {e}")))?;
        if topic.provider().member() != &m.sender {
            return Err(ProtocolError::new(
                Kind::ServerAccessDenied,
                format!("a gateway of {} cannot deliver events of {topic}", m.sender),
            ));
        }
        let subscriber: SubsystemId = message::header_text(&m.headers, X_ROAD_SUBSCRIBER)
            .ok_or_else(|| bad("the X-Road-Subscriber header is missing"))?
            .parse()
            .map_err(|e| bad(format!("X-Road-Subscriber: {e}")))?;
        let url = if subscriber.member() == &gw.owner {
            gw.topics
                .delivery_url(&topic, &subscriber)
                .await
                .map_err(|e| ProtocolError::server(&e))?
        } else {
            None
        };
        let url = url.ok_or_else(|| {
            ProtocolError::new(
                Kind::ServerUnknownService,
                format!("{subscriber} has no subscription to {topic} at {}", gw.name),
            )
        })?;
        let mut forward = HeaderMap::new();
        for (name, value) in &m.headers {
            if !message::is_filtered(name) && name != axum::http::header::ACCEPT {
                forward.append(name.clone(), value.clone());
            }
        }
        let event_id = message::header_text(&m.headers, X_ROAD_ID)
            .unwrap_or_default()
            .to_owned();
        let failed = |m: String| ProtocolError::new(Kind::ServerServiceFailed, m);
        let uri: axum::http::Uri = url
            .parse()
            .map_err(|e| failed(format!("the subscriber's backend {url}: {e}")))?;
        let r = gw
            .backend
            .send(
                axum::http::Method::POST,
                uri,
                forward,
                axum::body::Body::from(m.body.clone()),
            )
            .await
            .map_err(|e| failed(format!("the subscriber's backend {url}: {e}")))?;
        if !r.status.is_success() {
            return Err(failed(format!(
                "the subscriber's backend {url} answered {}",
                r.status
            )));
        }
        let log = LogAs {
            side: "subscriber",
            x_road_id: event_id.clone(),
            client: subscriber.to_string(),
            topic: topic.to_string(),
        };
        let answer = serde_json::json!({"event_id": event_id, "status": "delivered"});
        signed_answer(&gw, &m, StatusCode::OK, answer, log).await
    };
    match handled.await {
        Ok(r) => r,
        Err(e) => crate::refusal::refuse(&gw, "subscriber", &seen, e).await,
    }
}

// ---------------------------------------------------------------------------------------
// Delivery (the provider's gateway)

/// Start the worker that delivers the outbox; abort the handle to stop it.
pub fn start_delivery(gw: Arc<GatewayState>) -> tokio::task::AbortHandle {
    tokio::spawn(deliver_loop(gw)).abort_handle()
}

/// Deliveries under way at this instance, by subscriber.
#[derive(Default, Clone)]
struct UnderWay(Arc<std::sync::Mutex<HashMap<String, usize>>>);

/// One delivery under way; counted until dropped (also when its task ends otherwise).
struct OneUnderWay {
    of: UnderWay,
    subscriber: String,
}

impl UnderWay {
    fn start(&self, subscriber: String) -> OneUnderWay {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(subscriber.clone()).or_default() += 1;
        }
        OneUnderWay {
            of: self.clone(),
            subscriber,
        }
    }

    /// How many are under way, by subscriber.
    fn counts(&self) -> HashMap<String, usize> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Drop for OneUnderWay {
    fn drop(&mut self) {
        if let Ok(mut m) = self.of.0.lock()
            && let Some(n) = m.get_mut(&self.subscriber)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.subscriber);
            }
        }
    }
}

async fn deliver_loop(gw: Arc<GatewayState>) {
    let concurrency = gw.settings.pubsub.concurrency.max(1);
    let lease_ms = (gw.settings.pubsub.lease_secs.max(1) as i64).saturating_mul(1000);
    let mut running = tokio::task::JoinSet::new();
    let per_subscriber = gw.settings.pubsub.per_subscriber.clamp(1, concurrency);
    let under_way = UnderWay::default();
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        while running.try_join_next().is_some() {}
        // While the log waits for its time-stamp past the grace period nothing is sent,
        // and no attempt is spent: the deliveries wait in the outbox.
        let paused = crate::health::unstamped_too_long(&gw).is_some();
        let free = if paused {
            0
        } else {
            concurrency.saturating_sub(running.len())
        };
        let mut claimed_all = false;
        if free > 0 {
            let counts = under_way.counts();
            match gw
                .topics
                .claim_due(free as i64, lease_ms, per_subscriber, &counts)
                .await
            {
                Ok(claimed) => {
                    claimed_all = claimed.len() == free;
                    for c in claimed {
                        let gw = gw.clone();
                        let one = under_way.start(c.subscriber.to_string());
                        running.spawn(async move {
                            deliver(&gw, &c, lease_ms).await;
                            drop(one);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the event outbox failed"),
            }
        }
        if claimed_all {
            // More may be due; wait only for a free slot.
            let _ = running.join_next().await;
            continue;
        }
        // Subscribers with their share under way wait for one of theirs to end (which
        // wakes the loop), not for the time their next delivery falls due.
        let counts = under_way.counts();
        let busy = crate::topic::at_their_share(&counts, per_subscriber);
        let wait = match gw.topics.next_due(&busy).await {
            Ok(Some(_)) if paused => 1000,
            // Every slot taken: one ending wakes the loop.
            Ok(Some(_)) if running.len() >= concurrency => 1000,
            Ok(Some(at)) => (at - crate::topic::now_ms()).clamp(5, 1000),
            _ => 1000,
        };
        tokio::select! {
            _ = gw.topics.woken() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
        if last_sweep.elapsed() > Duration::from_secs(3600) {
            last_sweep = tokio::time::Instant::now();
            let days = gw.settings.message_log_retention_days as i64;
            let cutoff = crate::topic::now_ms() - days * 86_400_000;
            if let Err(e) = gw.topics.sweep(cutoff).await {
                tracing::warn!(error = %e, "sweeping the event outbox failed");
            }
        }
    }
}

/// The wait before attempt `attempt + 1`: doubling from the minimum, capped, with up to a
/// tenth more at random so that retries of many deliveries do not arrive together.
fn backoff_ms(settings: &PubSubSettings, attempt: i64) -> i64 {
    let shift = attempt.clamp(1, 30) as u32 - 1;
    let base = (settings.retry_min_ms.max(1) as i64).saturating_mul(1i64 << shift);
    let capped = base.min((settings.retry_max_secs as i64).saturating_mul(1000).max(1));
    capped + rand::random::<u32>() as i64 % (capped / 10 + 1)
}

/// Deliver one claimed event, within four fifths of the claim's lease: an attempt still
/// under way when the lease ends would meet the same delivery claimed again by another
/// instance (the timeouts of its hops bound it already, but not every step between).
async fn deliver(gw: &Arc<GatewayState>, c: &Claimed, lease_ms: i64) {
    let bound = Duration::from_millis(lease_ms.max(0) as u64 / 5 * 4);
    let outcome = match tokio::time::timeout(bound, attempt(gw, c)).await {
        Ok(outcome) => outcome,
        Err(_) => Err((
            "retry",
            format!(
                "no answer within {} ms, four fifths of the delivery's lease",
                bound.as_millis()
            ),
        )),
    };
    let attempts = c.attempts + 1;
    let result = match &outcome {
        Ok(()) => gw.topics.attempted(c, Outcome::Delivered).await,
        Err((state, reason)) if *state == DROPPED || *state == REFUSED => {
            tracing::warn!(subscriber = %c.subscriber, event = c.event_seq, reason, "delivery dropped");
            gw.topics
                .attempted(
                    c,
                    Outcome::GiveUp {
                        state: DROPPED,
                        error: reason,
                        sent: *state == REFUSED,
                    },
                )
                .await
        }
        Err((_, reason)) if attempts >= i64::from(gw.settings.pubsub.max_attempts) => {
            tracing::error!(subscriber = %c.subscriber, event = c.event_seq, attempts, reason, "delivery given up");
            gw.topics
                .attempted(
                    c,
                    Outcome::GiveUp {
                        state: FAILED,
                        error: reason,
                        sent: true,
                    },
                )
                .await
        }
        Err((_, reason)) => {
            let at_ms = crate::topic::now_ms() + backoff_ms(&gw.settings.pubsub, attempts);
            tracing::info!(subscriber = %c.subscriber, event = c.event_seq, attempts, reason, "delivery failed; will retry");
            gw.topics
                .attempted(
                    c,
                    Outcome::Retry {
                        error: reason,
                        at_ms,
                    },
                )
                .await
        }
    };
    // When the outcome cannot be stored, the claim's lease runs out and the delivery is
    // tried again: at least once.
    if let Err(e) = result {
        tracing::warn!(error = %e, "recording a delivery attempt failed");
    }
}

/// Whether the subscriber's gateway refused a delivery with an error that no retry
/// mends: it holds no such subscription, or will not take this topic's events from this
/// gateway. Anything else (its backend failed, a certificate or configuration it has not
/// caught up with, a log that waits for its time-stamp) may pass, so is tried again.
fn refuses_for_good(kind: &str) -> bool {
    kind == Kind::ServerUnknownService.as_str() || kind == Kind::ServerAccessDenied.as_str()
}

/// An attempt's outcome: the subscriber's gateway refused it for good (it is dropped).
const REFUSED: &str = "refused";

/// One attempt; `Err((state, reason))` where state is `DROPPED` when the delivery must stop
/// unsent, [`REFUSED`] when it was sent and refused for good, and anything else when it
/// may be retried.
async fn attempt(gw: &Arc<GatewayState>, c: &Claimed) -> Result<(), (&'static str, String)> {
    let retry = |m: String| ("retry", m);
    let event = gw
        .topics
        .event(c.event_seq)
        .await
        .map_err(|e| retry(e.to_string()))?
        .ok_or_else(|| (DROPPED, "the event is no longer in the outbox".to_owned()))?;
    let conf = gw.conf.get().map_err(|e| retry(e.to_string()))?;
    let groups = conf.groups_of(&c.subscriber);
    if !gw
        .topics
        .allows(&event.topic, &c.subscriber, &groups)
        .await
        .map_err(|e| retry(e.to_string()))?
    {
        return Err((
            DROPPED,
            format!(
                "{} no longer has the right to {}",
                c.subscriber, event.topic
            ),
        ));
    }
    let ClientId::Subsystem(subscriber) = &c.subscriber else {
        return Err((DROPPED, "only subsystems receive events".to_owned()));
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &str, value: &str| -> Result<(), (&'static str, String)> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| (DROPPED, format!("header {name}: {e}")))?;
        headers.insert(name, header_value(value).map_err(|e| (DROPPED, e.message))?);
        Ok(())
    };
    let ce_type = event
        .headers
        .iter()
        .find(|(n, _)| n == "ce-type")
        .map_or_else(|| event.topic.code().to_owned(), |(_, v)| v.clone());
    for (name, value) in &event.headers {
        set(name, value)?;
    }
    set(X_ROAD_CLIENT, &event.topic.provider().to_string())?;
    set(message::X_ROAD_SERVICE, &event.topic.to_string())?;
    set(X_ROAD_SUBSCRIBER, &subscriber.to_string())?;
    set(X_ROAD_ID, &event.event_id)?;
    set(IDEMPOTENCY_KEY, &event.event_id)?;
    // CloudEvents' HTTP binding (binary mode), so that CloudEvents SDKs read the event.
    set("ce-specversion", "1.0")?;
    set("ce-id", &event.event_id)?;
    set("ce-source", &event.topic.to_string())?;
    set("ce-type", &ce_type)?;
    let log = LogAs {
        side: "publisher",
        x_road_id: event.event_id.clone(),
        client: c.subscriber.to_string(),
        topic: event.topic.to_string(),
    };
    let answer = send_signed(
        gw,
        &conf,
        subscriber.member(),
        PeerRequest {
            method: Method::POST,
            target: PEER_EVENTS,
            headers,
            body: Bytes::from(event.body),
        },
        log,
    )
    .await
    .map_err(|e| match &e {
        PeerError::Refused { kind, .. } if refuses_for_good(kind) => (REFUSED, e.to_string()),
        _ => retry(e.to_string()),
    })?;
    if !answer.status.is_success() {
        return Err(retry(format!(
            "the subscriber's gateway answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Administration API (wired into the gateway's, behind its token)

fn own_subsystem(gw: &GatewayState, s: &SubsystemId) -> Result<(), Error> {
    if s.member() != &gw.owner {
        return Err(Error::new(
            ErrorCode::HttpForbidden,
            format!(
                "{s} is not a subsystem of {}, which owns this gateway",
                gw.owner
            ),
        ));
    }
    Ok(())
}

pub(crate) fn admin_routes() -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/api/v1/topics", post(add_topic).get(list_topics))
        .route("/api/v1/topic-rights", post(grant).delete(revoke))
        .route(
            "/api/v1/subscriptions",
            post(subscribe).get(list_subscriptions).delete(unsubscribe),
        )
        .route("/api/v1/deliveries", axum::routing::get(list_deliveries))
        .route("/api/v1/deliveries/retry", post(retry_failed))
}

async fn add_topic(State(gw): State<Arc<GatewayState>>, body: Bytes) -> Result<Response, Error> {
    let t: NewTopic = crate::central::json(&body)?;
    own_subsystem(&gw, t.topic.provider())?;
    gw.topics.add_topic(&t).await?;
    Ok((StatusCode::CREATED, axum::Json(t)).into_response())
}

async fn list_topics(State(gw): State<Arc<GatewayState>>) -> Result<Response, Error> {
    Ok(axum::Json(gw.topics.topics().await?).into_response())
}

async fn grant(State(gw): State<Arc<GatewayState>>, body: Bytes) -> Result<Response, Error> {
    let r: NewTopicRight = crate::central::json(&body)?;
    gw.topics.grant(&r).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"status": "granted"})),
    )
        .into_response())
}

async fn revoke(State(gw): State<Arc<GatewayState>>, body: Bytes) -> Result<Response, Error> {
    let r: NewTopicRight = crate::central::json(&body)?;
    gw.topics.revoke(&r).await?;
    Ok(axum::Json(serde_json::json!({"status": "revoked"})).into_response())
}

/// Ask the topic's provider gateway to add (POST) or remove (DELETE) `subscriber`.
async fn tell_provider(
    gw: &Arc<GatewayState>,
    method: Method,
    topic: &ServiceId,
    subscriber: &SubsystemId,
) -> Result<(), Untold> {
    let untold = |error: Error| Untold {
        error,
        surely_not_taken: true,
    };
    // Nothing below has left this gateway.
    let prepared = || -> Result<_, Error> {
        if let Some(why) = crate::health::unstamped_too_long(gw) {
            return Err(Error::new(ErrorCode::ExchLogUnstamped, why));
        }
        let conf = gw.conf.get()?;
        if !conf.has_subsystem(topic.provider()) {
            return Err(Error::new(
                ErrorCode::ExchUnknownTopic,
                format!(
                    "the topic's provider {} is not registered",
                    topic.provider()
                ),
            ));
        }
        let x_road_id = message::new_uuid();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(X_ROAD_CLIENT, header_value(&subscriber.to_string())?);
        headers.insert(X_ROAD_ID, header_value(&x_road_id)?);
        let body = serde_json::to_vec(&SubscriptionBody {
            topic: topic.clone(),
        })
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        let log = LogAs {
            side: "client",
            x_road_id,
            client: subscriber.to_string(),
            topic: topic.to_string(),
        };
        Ok((conf, headers, body, log))
    };
    let (conf, headers, body, log) = prepared().map_err(untold)?;
    send_signed(
        gw,
        &conf,
        topic.provider().member(),
        PeerRequest {
            method,
            target: PEER_SUBSCRIPTIONS,
            headers,
            body: Bytes::from(body),
        },
        log,
    )
    .await
    .map(|_| ())
    .map_err(|e| match e {
        PeerError::Refused { kind, message } => {
            let code = match kind.as_str() {
                "Server.ServerProxy.UnknownService" => ErrorCode::ExchUnknownTopic,
                "Server.ServerProxy.AccessDenied" => ErrorCode::ExchTopicAccessDenied,
                _ => ErrorCode::ExchUpstream,
            };
            Untold {
                error: Error::new(
                    code,
                    format!(
                        "the gateway of {} refused ({kind}): {message}",
                        topic.provider().member()
                    ),
                ),
                surely_not_taken: REFUSED_BEFORE_TAKING.iter().any(|k| k.as_str() == kind),
            }
        }
        PeerError::NotSent(m) => Untold {
            error: Error::new(
                ErrorCode::ExchUpstream,
                format!("the gateway of {}: {m}", topic.provider().member()),
            ),
            surely_not_taken: true,
        },
        PeerError::Failed(m) => Untold {
            error: Error::new(
                ErrorCode::ExchUpstream,
                format!("the gateway of {}: {m}", topic.provider().member()),
            ),
            surely_not_taken: false,
        },
    })
}

/// A change of subscription the provider's gateway was not told of, or whose answer did
/// not come back.
struct Untold {
    error: Error,
    /// The provider's gateway cannot have applied it.
    surely_not_taken: bool,
}

impl From<Untold> for Error {
    fn from(u: Untold) -> Error {
        u.error
    }
}

/// What a provider's gateway refuses a subscription with before it takes it (in
/// `peer_subscription`, and the checks of every signed message before that); any other
/// refusal may come after it was taken (its signed answer failed).
const REFUSED_BEFORE_TAKING: &[Kind] = &[
    Kind::BadRequest,
    Kind::ServerUnknownService,
    Kind::ServerAccessDenied,
    Kind::ServerSslAuthenticationFailed,
    Kind::ServerInvalidSignatureValue,
    Kind::ServerCertValidation,
    Kind::ServerReplayedMessage,
    Kind::ServerTimestamperFailed,
];

async fn subscribe(State(gw): State<Arc<GatewayState>>, body: Bytes) -> Result<Response, Error> {
    let s: NewSubscription = crate::central::json(&body)?;
    own_subsystem(&gw, &s.subscriber)?;
    let url = reqwest::Url::parse(&s.delivery_url).map_err(|e| {
        Error::new(
            ErrorCode::ExchBackendUrl,
            format!("{}: {e}", s.delivery_url),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::new(
            ErrorCode::ExchBackendUrl,
            format!("{}: expected http(s)://…", s.delivery_url),
        ));
    }
    // Kept here before the provider is told, so that its first events, which may come
    // before its answer does, find the subscription (they would be dropped as sent to
    // nobody); undone when the provider refuses.
    let _one_change = gw
        .topics
        .changing_subscription(&s.topic, &s.subscriber)
        .await;
    let before = gw.topics.delivery_url(&s.topic, &s.subscriber).await?;
    gw.topics.add_subscription(&s).await?;
    if let Err(untold) = tell_provider(&gw, Method::POST, &s.topic, &s.subscriber).await {
        // Undone only when the provider surely did not take it: after a failure on the
        // way back (no answer, one that does not verify) it may have, and its events must
        // then find the subscription here. Kept here without one there, it is harmless.
        if !untold.surely_not_taken {
            return Err(untold.error);
        }
        let e = untold.error;
        let undone = match before {
            Some(delivery_url) => {
                gw.topics
                    .add_subscription(&NewSubscription {
                        delivery_url,
                        ..s.clone()
                    })
                    .await
            }
            None => gw
                .topics
                .remove_subscription(&s.topic, &s.subscriber)
                .await
                .map(drop),
        };
        if let Err(undo) = undone {
            tracing::error!(error = %undo, topic = %s.topic, subscriber = %s.subscriber, "a subscription the provider refused is still kept here");
        }
        return Err(e);
    }
    Ok((StatusCode::CREATED, axum::Json(s)).into_response())
}

#[derive(Serialize, Deserialize)]
struct Unsubscription {
    topic: ServiceId,
    subscriber: SubsystemId,
}

async fn unsubscribe(State(gw): State<Arc<GatewayState>>, body: Bytes) -> Result<Response, Error> {
    let u: Unsubscription = crate::central::json(&body)?;
    own_subsystem(&gw, &u.subscriber)?;
    let _one_change = gw
        .topics
        .changing_subscription(&u.topic, &u.subscriber)
        .await;
    let unknown = || {
        Error::new(
            ErrorCode::ExchUnknownSubscription,
            format!("{} has no subscription to {} here", u.subscriber, u.topic),
        )
    };
    if gw
        .topics
        .delivery_url(&u.topic, &u.subscriber)
        .await?
        .is_none()
    {
        return Err(unknown());
    }
    // The provider first: were it told after the subscription was gone here, a provider
    // out of reach would keep sending events nobody here can stop. A topic or right the
    // provider no longer has leaves nothing there to stop.
    match tell_provider(&gw, Method::DELETE, &u.topic, &u.subscriber).await {
        Ok(()) => {}
        Err(untold)
            if matches!(
                untold.error.code,
                ErrorCode::ExchUnknownTopic | ErrorCode::ExchTopicAccessDenied
            ) => {}
        Err(untold) => return Err(untold.error),
    }
    if !gw
        .topics
        .remove_subscription(&u.topic, &u.subscriber)
        .await?
    {
        return Err(unknown());
    }
    Ok(axum::Json(serde_json::json!({"status": "unsubscribed"})).into_response())
}

async fn list_subscriptions(State(gw): State<Arc<GatewayState>>) -> Result<Response, Error> {
    Ok(axum::Json(gw.topics.subscriptions().await?).into_response())
}

async fn list_deliveries(State(gw): State<Arc<GatewayState>>) -> Result<Response, Error> {
    Ok(axum::Json(gw.topics.deliveries(200).await?).into_response())
}

async fn retry_failed(State(gw): State<Arc<GatewayState>>) -> Result<Response, Error> {
    let requeued = gw.topics.retry_failed().await?;
    tracing::info!(requeued, "failed deliveries sent again");
    Ok(axum::Json(serde_json::json!({"requeued": requeued})).into_response())
}

/// The administration API's topic and subscription calls.
impl GatewayAdmin {
    /// Register a topic of one of the member's subsystems.
    pub async fn add_topic(&self, topic: &ServiceId, description: &str) -> Result<(), Error> {
        self.send(
            Method::POST,
            "/api/v1/topics",
            &NewTopic {
                topic: topic.clone(),
                description: description.to_owned(),
            },
        )
        .await
        .map(|_| ())
    }

    /// Let `subject` subscribe to `topic`.
    pub async fn grant_topic(
        &self,
        topic: &ServiceId,
        subject: crate::access_right::Subject,
    ) -> Result<(), Error> {
        self.send(
            Method::POST,
            "/api/v1/topic-rights",
            &NewTopicRight {
                topic: topic.clone(),
                subject,
            },
        )
        .await
        .map(|_| ())
    }

    /// Withdraw a right given with [`GatewayAdmin::grant_topic`].
    pub async fn revoke_topic(
        &self,
        topic: &ServiceId,
        subject: crate::access_right::Subject,
    ) -> Result<(), Error> {
        self.send(
            Method::DELETE,
            "/api/v1/topic-rights",
            &NewTopicRight {
                topic: topic.clone(),
                subject,
            },
        )
        .await
        .map(|_| ())
    }

    /// Subscribe one of the member's subsystems to a topic, with events delivered to
    /// `delivery_url`.
    pub async fn subscribe(
        &self,
        topic: &ServiceId,
        subscriber: &SubsystemId,
        delivery_url: &str,
    ) -> Result<(), Error> {
        self.send(
            Method::POST,
            "/api/v1/subscriptions",
            &NewSubscription {
                topic: topic.clone(),
                subscriber: subscriber.clone(),
                delivery_url: delivery_url.to_owned(),
            },
        )
        .await
        .map(|_| ())
    }

    pub async fn unsubscribe(
        &self,
        topic: &ServiceId,
        subscriber: &SubsystemId,
    ) -> Result<(), Error> {
        self.send(
            Method::DELETE,
            "/api/v1/subscriptions",
            &Unsubscription {
                topic: topic.clone(),
                subscriber: subscriber.clone(),
            },
        )
        .await
        .map(|_| ())
    }

    /// The subscriptions of this gateway's subsystems.
    pub async fn subscriptions(&self) -> Result<Vec<crate::topic::NewSubscription>, Error> {
        let v = self.get_json("/api/v1/subscriptions").await?;
        serde_json::from_value(v).map_err(|e| Error::new(ErrorCode::ExchUpstream, e.to_string()))
    }

    /// Send this gateway's given-up deliveries again; how many.
    pub async fn retry_failed_deliveries(&self) -> Result<u64, Error> {
        let v = self
            .send(
                Method::POST,
                "/api/v1/deliveries/retry",
                &serde_json::json!({}),
            )
            .await?;
        v["requeued"]
            .as_u64()
            .ok_or_else(|| Error::new(ErrorCode::ExchUpstream, format!("unexpected answer {v}")))
    }

    /// The latest deliveries of this gateway's outbox.
    pub async fn deliveries(&self) -> Result<Vec<crate::topic::DeliveryStatus>, Error> {
        let v = self.get_json("/api/v1/deliveries").await?;
        serde_json::from_value(v).map_err(|e| Error::new(ErrorCode::ExchUpstream, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = PubSubSettings {
            retry_min_ms: 100,
            retry_max_secs: 1,
            ..PubSubSettings::default()
        };
        let first = backoff_ms(&s, 1);
        assert!((100..=110).contains(&first), "{first}");
        let third = backoff_ms(&s, 3);
        assert!((400..=440).contains(&third), "{third}");
        let late = backoff_ms(&s, 50);
        assert!((1000..=1100).contains(&late), "{late}");
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(valid_key("population-42"));
        assert!(!valid_key(""));
        assert!(!valid_key("a b"));
        assert!(!valid_key(&"x".repeat(MAX_KEY_LEN + 1)));
    }
}
