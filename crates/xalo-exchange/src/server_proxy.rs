//! The server proxy: what another gateway sends over mutual TLS. The sending gateway must
//! present the exact certificate registered for it, with a good OCSP answer; the message
//! must be signed by the client member's good signing certificate; the service must be
//! registered here and an access right must allow the client the endpoint. Then the
//! request goes to the service's backend and the answer comes back signed, with
//! X-Road-Request-Hash.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::any;
use base64::Engine;
use xalo_core::{ClientId, ServiceId};

use crate::b64;
use crate::evidence::MessageEvidence;
use crate::gateway::GatewayState;
use crate::global_conf::GlobalConf;
use crate::message::{self, X_ROAD_CLIENT, X_ROAD_ID, X_ROAD_ISSUE, X_ROAD_USER_ID};
use crate::message_log::LoggedMessage;
use crate::metrics::Stage;
use crate::protocol_error::{Kind, ProtocolError};
use crate::spool::{SpoolError, Spooled, spool_declared};
use crate::tls::PeerCertificate;

pub fn router(gw: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/r1/{*rest}", any(handle))
        .fallback(not_r1)
        .with_state(gw)
}

async fn not_r1(State(gw): State<Arc<GatewayState>>, req: Request) -> Response {
    let seen = crate::refusal::RequestSeen::of(&req);
    let refusal = ProtocolError::new(Kind::BadRequest, "only /r1/ requests are served here");
    crate::refusal::refuse(&gw, "provider", &seen, refusal).await
}

async fn handle(State(gw): State<Arc<GatewayState>>, req: Request) -> Response {
    let _underway = gw.in_flight.enter();
    let (metrics, conf) = (gw.metrics.clone(), gw.conf.clone());
    metrics
        .observe("provider", &conf, req, |req| async move {
            let seen = crate::refusal::RequestSeen::of(&req);
            let mut admitted = None;
            match inbound(&gw, req, &mut admitted).await {
                Ok(r) => r,
                Err(mut e) => {
                    // Refused after the replay guard took it: remembered across a restart.
                    e.admitted = admitted.map(Box::new);
                    crate::refusal::refuse(&gw, "provider", &seen, e).await
                }
            }
        })
        .await
}

fn bad(m: impl Into<String>) -> ProtocolError {
    ProtocolError::new(Kind::BadRequest, m)
}

pub(crate) fn decode_header(
    headers: &HeaderMap,
    name: &str,
    kind: Kind,
) -> Result<Vec<u8>, ProtocolError> {
    message::header_text(headers, name)
        .and_then(|v| b64().decode(v).ok())
        .ok_or_else(|| {
            ProtocolError::new(kind, format!("the {name} header is missing or not base64"))
        })
}

/// A long header every message of a peer repeats (certificate, OCSP answer), decoded
/// through the gateway's cache.
pub(crate) fn decode_repeated_header(
    gw: &GatewayState,
    headers: &HeaderMap,
    name: &str,
    kind: Kind,
) -> Result<std::sync::Arc<Vec<u8>>, ProtocolError> {
    gw.decoded.get(headers, name).ok_or_else(|| {
        ProtocolError::new(kind, format!("the {name} header is missing or not base64"))
    })
}

/// A good OCSP answer for this gateway's own TLS certificate, which a serving gateway
/// needs before it answers anyone.
pub(crate) async fn own_tls_answer(
    gw: &GatewayState,
    conf: &GlobalConf,
) -> Result<std::sync::Arc<Vec<u8>>, ProtocolError> {
    gw.status
        .good_answer(gw.tls.certificate(), conf)
        .await
        .map_err(|e| {
            ProtocolError::new(
                Kind::ServerSslAuthenticationFailed,
                format!("this gateway's TLS certificate: {}", e.message),
            )
        })
}

/// Serve a signed message once (see [`crate::replay`]); call only after its signature
/// verified.
pub(crate) fn admit_once(
    gw: &GatewayState,
    signature: &[u8],
    proof: &crate::signature::BatchProof,
    message_hash: &[u8],
    arrived_ms: i64,
) -> Result<(), ProtocolError> {
    use crate::replay::Refusal;
    gw.replays
        .admit(signature, proof, message_hash, arrived_ms)
        .map_err(|r| {
            let kind = match r {
                Refusal::Full => Kind::ServerInternalError,
                Refusal::BatchTooLarge => Kind::ServerInvalidSignatureValue,
                Refusal::OutsideWindow { .. } | Refusal::Replayed => Kind::ServerReplayedMessage,
            };
            ProtocolError::new(
                kind,
                format!("{r} (replay window {} s)", gw.replays.window_secs()),
            )
        })
}

/// Who is calling: the sending gateway's owner, checked by certificate and status.
pub(crate) async fn authenticate(
    gw: &GatewayState,
    conf: &GlobalConf,
    peer: Option<&PeerCertificate>,
    headers: &HeaderMap,
) -> Result<xalo_core::MemberId, ProtocolError> {
    let ssl = |m: String| ProtocolError::new(Kind::ServerSslAuthenticationFailed, m);
    let peer = peer.ok_or_else(|| ssl("no client certificate".into()))?;
    let gateway = conf.gateway_by_certificate(&peer.0).ok_or_else(|| {
        ssl(format!(
            "certificate {} is not a registered gateway's",
            crate::fingerprint(&peer.0)
        ))
    })?;
    // The sender passes its OCSP answer on; ask the responder only when it did not.
    match gw.decoded.get(headers, message::TLS_OCSP) {
        Some(ocsp) => gw.status.verify_answer(&peer.0, &ocsp, conf),
        None => gw.status.good_answer(&peer.0, conf).await.map(|_| ()),
    }
    .map_err(|e| {
        ssl(format!(
            "gateway {}/{}: {}",
            gateway.owner, gateway.code, e.message
        ))
    })?;
    Ok(gateway.owner.clone())
}

/// Serve a gateway's request; `admitted` is set once the replay guard has taken it.
async fn inbound(
    gw: &Arc<GatewayState>,
    req: Request,
    admitted: &mut Option<crate::protocol_error::Admitted>,
) -> Result<Response, ProtocolError> {
    // The replay window counts from the request's arrival, not from the end of its body.
    let arrived_ms = xalo_core::unix_now_ms();
    let (parts, body) = req.into_parts();
    let conf = gw.conf.get().map_err(|e| ProtocolError::server(&e))?;
    // A gateway whose own certificate is no longer good stops serving, and it shows every
    // answer's client a fresh answer about its certificate (pooled connections skip the
    // handshake, where the stapled one is checked).
    let own_tls = own_tls_answer(gw, &conf).await?;
    let sender = authenticate(
        gw,
        &conf,
        parts.extensions.get::<PeerCertificate>(),
        &parts.headers,
    )
    .await?;
    let path = parts.uri.path().to_owned();
    let (service_path, rest) = message::split_service_path(&path)
        .ok_or_else(|| bad(format!("{path}: not a service path")))?;
    message::check_service_rest(rest).map_err(bad)?;
    let service = ServiceId::from_path(service_path).map_err(|e| bad(format!("service: {e}")))?;
    // A client's gateway sends the one client it checked; more than one would leave it open
    // which was checked.
    if parts.headers.get_all(X_ROAD_CLIENT).iter().count() > 1 {
        return Err(bad("a gateway sends exactly one X-Road-Client header"));
    }
    let client = message::named_client(&parts.headers)
        .ok_or_else(|| bad("the X-Road-Client header is missing"))?
        .map_err(|e| bad(format!("X-Road-Client: {e}")))?;
    if client.member() != &sender {
        return Err(ProtocolError::new(
            Kind::ServerSslAuthenticationFailed,
            format!("a gateway of {sender} cannot send messages of {client}"),
        ));
    }
    if !conf.has_client(&client) {
        return Err(ProtocolError::new(
            Kind::ServerAccessDenied,
            format!("client {client} is not registered"),
        ));
    }
    let signer = decode_repeated_header(
        gw,
        &parts.headers,
        message::SIGNER,
        Kind::ServerInvalidSignatureValue,
    )?;
    let signer_ocsp = decode_repeated_header(
        gw,
        &parts.headers,
        message::SIGNER_OCSP,
        Kind::ServerCertValidation,
    )?;
    let signature = decode_header(
        &parts.headers,
        message::SIGNATURE,
        Kind::ServerInvalidSignatureValue,
    )?;
    gw.status
        .verify_answer(&signer, &signer_ocsp, &conf)
        .map_err(|e| {
            ProtocolError::new(
                Kind::ServerCertValidation,
                format!("the client's signing certificate: {}", e.message),
            )
        })?;
    let body = spool_declared(body.into_data_stream(), &parts.headers, &gw.spool())
        .await
        .map_err(|e| match e {
            SpoolError::Io(_) => ProtocolError::new(Kind::ServerInternalError, e.to_string()),
            _ => bad(e.to_string()),
        })?;
    let target = parts
        .uri
        .path_and_query()
        .map_or(path.as_str(), |p| p.as_str());
    let request_head = message::request_head(parts.method.as_str(), target, &parts.headers);
    let request_hash = message::message_hash(&request_head, body.len, &body.sha512);
    let proof = message::header_text(&parts.headers, message::SIGNATURE_BATCH)
        .ok_or_else(|| {
            ProtocolError::new(
                Kind::ServerInvalidSignatureValue,
                "no signature batch proof",
            )
        })
        .and_then(|p| {
            crate::signature::BatchProof::parse(p)
                .map_err(|e| ProtocolError::new(Kind::ServerInvalidSignatureValue, e.message))
        })?;
    gw.verified
        .verify(&signer, client.member(), &request_hash, &signature, &proof)
        .map_err(|e| ProtocolError::new(Kind::ServerInvalidSignatureValue, e.message))?;
    // Only an authentic message is remembered, so nobody else can block one in advance.
    admit_once(gw, &signature, &proof, &request_hash, arrived_ms)?;
    *admitted = Some(crate::protocol_error::Admitted {
        signature: message::logged_signature_of(&parts.headers).unwrap_or_default(),
        request_hash: message::hash_text(&request_hash),
    });

    if service.provider().member() != &gw.owner {
        return Err(ProtocolError::new(
            Kind::ServerUnknownService,
            format!("{service} is not provided at this gateway"),
        ));
    }
    crate::health::refuse_unstamped(gw, Kind::ServerTimestamperFailed)?;
    let request_body = body.bytes().map(|b| b.to_vec());
    let query = parts.uri.query();
    let (status, response_headers, response_body) =
        match crate::metaservice::provider_side(gw, &conf, &client, &service, query).await? {
            Some(answer) => answer,
            None => call_backend(gw, &conf, &client, &service, &parts, rest, body).await?,
        };

    // The headers X-Road sets on answers replace any the service set (inserted below); the
    // service's other headers pass unmodified, an `X-Road-` extension of its own among
    // them (PR-REST 4.3).
    let x_road_id = message::header_text(&parts.headers, X_ROAD_ID)
        .unwrap_or_default()
        .to_owned();
    let mut headers = HeaderMap::new();
    for (name, value) in &response_headers {
        if !message::is_filtered(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let set = |h: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(&mut headers, X_ROAD_CLIENT, &client.to_string());
    set(&mut headers, message::X_ROAD_SERVICE, &service.to_string());
    set(&mut headers, X_ROAD_ID, &x_road_id);
    set(
        &mut headers,
        message::X_ROAD_REQUEST_ID,
        &message::new_uuid(),
    );
    set(
        &mut headers,
        message::X_ROAD_REQUEST_HASH,
        &message::hash_text(&request_hash),
    );
    let response_head = message::response_head(status.as_u16(), &headers);
    let response_hash =
        message::message_hash(&response_head, response_body.len, &response_body.sha512);
    let own_ocsp = gw
        .status
        .good_answer(gw.signer.certificate(), &conf)
        .await
        .map_err(|e| {
            ProtocolError::new(
                Kind::ServerCertValidation,
                format!("this member's signing certificate: {}", e.message),
            )
        })?;
    let signed = gw
        .metrics
        .timed("provider", Stage::Sign, gw.batch.sign(&response_hash))
        .await
        .map_err(|e| ProtocolError::new(Kind::ServerInternalError, e.message))?;
    let signature_text = b64().encode(signed.signature.as_slice());
    let proof_text = signed.proof.header();
    set(&mut headers, message::SIGNATURE, &signature_text);
    set(&mut headers, message::SIGNATURE_BATCH, &proof_text);
    let internal = |e: xalo_core::Error| ProtocolError::new(Kind::ServerInternalError, e.message);
    for (name, bytes) in [
        (message::SIGNER, gw.signer.certificate()),
        (message::SIGNER_OCSP, own_ocsp.as_slice()),
        (message::TLS_OCSP, own_tls.as_slice()),
    ] {
        headers.insert(name, gw.encoded.value(bytes).map_err(internal)?);
    }

    let evidence = MessageEvidence {
        gateway: gw.name.clone(),
        side: "provider".into(),
        x_road_id: x_road_id.clone(),
        client: client.to_string(),
        service: service.to_string(),
        method: parts.method.to_string(),
        user_id: message::header_text(&parts.headers, X_ROAD_USER_ID).map(str::to_owned),
        issue: message::header_text(&parts.headers, X_ROAD_ISSUE).map(str::to_owned),
        request_hash: message::hash_text(&request_hash),
        response_hash: Some(message::hash_text(&response_hash)),
        status: status.as_u16(),
        time_unix: crate::unix_now(),
    };
    let logged = LoggedMessage {
        side: "provider",
        x_road_id,
        client: client.to_string(),
        service: service.to_string(),
        request_hash: evidence.request_hash.clone(),
        request_head,
        request_signature: message::logged_signature_of(&parts.headers).unwrap_or_default(),
        request_body,
        response_hash: evidence.response_hash.clone(),
        response_head: Some(response_head),
        response_signature: Some(message::logged_signature(&signature_text, &proof_text)),
        response_body: response_body.bytes().map(|b| b.to_vec()),
        status: status.as_u16(),
        ledger_index: None,
    };
    let recorded = crate::client_proxy::record(gw, evidence, logged);
    gw.metrics.timed("provider", Stage::Log, recorded).await?;
    let mut r = Response::new(response_body.into_axum_body());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    Ok(r)
}

/// A backend that cannot be reached is a network error (PR-REST 4.6, its second example);
/// one that fails or is too slow to answer, a failure of the service.
fn backend_failure(
    gw: &GatewayState,
    service: &ServiceId,
    e: &crate::hop::HopError,
) -> ProtocolError {
    if e.is_connect() {
        ProtocolError::new(
            Kind::ServerNetworkError,
            format!("{service}: the backend cannot be reached: {e}"),
        )
    } else if e.is_timeout() {
        ProtocolError::new(
            Kind::ServerServiceFailed,
            format!(
                "{service}: the backend did not answer within {} s",
                gw.current().timeout_secs
            ),
        )
    } else {
        ProtocolError::new(Kind::ServerServiceFailed, format!("{service}: {e}"))
    }
}

async fn call_backend(
    gw: &GatewayState,
    conf: &GlobalConf,
    client: &ClientId,
    service: &ServiceId,
    parts: &axum::http::request::Parts,
    rest: &str,
    body: Spooled,
) -> Result<(axum::http::StatusCode, HeaderMap, Spooled), ProtocolError> {
    let db = |e: xalo_core::Error| ProtocolError::server(&e);
    let registered = gw
        .registry
        .service(service)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            ProtocolError::new(
                Kind::ServerUnknownService,
                format!("{service} is not registered"),
            )
        })?;
    let rights = gw.registry.rights(service).await.map_err(db)?;
    let groups = conf.groups_of(client);
    let method = parts.method.as_str();
    if !rights.allows(client, &groups, method, rest) {
        return Err(ProtocolError::new(
            Kind::ServerAccessDenied,
            format!(
                "{client} may not call {method} {} of {service}",
                if rest.is_empty() { "/" } else { rest }
            ),
        ));
    }
    let mut url = format!("{}{rest}", registered.backend_url);
    if let Some(q) = parts.uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !message::is_filtered(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    // The backend hears of one client: the one checked.
    headers.insert(
        X_ROAD_CLIENT,
        HeaderValue::from_str(&client.to_string()).map_err(|e| bad(e.to_string()))?,
    );
    let uri: axum::http::Uri = url.parse().map_err(|e| {
        ProtocolError::new(
            Kind::ServerServiceFailed,
            format!("{service}: the backend's address {url}: {e}"),
        )
    })?;
    // A backend that failed took its time too.
    let answered = async {
        let response = gw
            .backend
            .send(parts.method.clone(), uri, headers, body.into_axum_body())
            .await
            .map_err(|e| backend_failure(gw, service, &e))?;
        let (status, headers) = (response.status, response.headers.clone());
        let body = spool_declared(response.into_stream(), &headers, &gw.spool())
            .await
            .map_err(|e| {
                ProtocolError::new(Kind::ServerServiceFailed, format!("{service}: {e}"))
            })?;
        Ok((status, headers, body))
    };
    gw.metrics.timed("provider", Stage::Backend, answered).await
}
