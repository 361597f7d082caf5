//! The client proxy: an information system's request to `/r1/{serviceId}[/path][?query]`
//! is checked (protocol, client registration, the system's key), signed with the member's
//! key and sent to the provider's gateway over mutual TLS; the answer's signature and
//! X-Road-Request-Hash are checked before the answer is passed back.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use xalo_core::ServiceId;

use crate::b64;
use crate::evidence::MessageEvidence;
use crate::gateway::GatewayState;
use crate::message::{
    self, X_ROAD_CLIENT, X_ROAD_ID, X_ROAD_ISSUE, X_ROAD_REQUEST_HASH, X_ROAD_USER_ID,
};
use crate::message_log::{LedgerIndex, LoggedMessage};
use crate::metrics::Stage;
use crate::protocol_error::{Kind, ProtocolError, X_ROAD_ERROR};
use crate::signature::{BatchProof, Signed};
use crate::spool::{SpoolError, Spooled, spool_declared};

pub async fn handle(State(gw): State<Arc<GatewayState>>, req: Request) -> Response {
    let _underway = gw.in_flight.enter();
    let (metrics, conf) = (gw.metrics.clone(), gw.conf.clone());
    metrics
        .observe("client", &conf, req, |req| async move {
            let seen = crate::refusal::RequestSeen::of(&req);
            match outbound(&gw, req).await {
                Ok(r) => r,
                Err(e) => crate::refusal::refuse(&gw, "client", &seen, e).await,
            }
        })
        .await
}

/// A request under `/{first}/…` that no route took: under another protocol version
/// (`/r2/…`) it is a bad request in the protocol's terms, so the caller learns which version
/// this gateway speaks; anything else is not here.
pub async fn other_path(State(gw): State<Arc<GatewayState>>, req: Request) -> Response {
    let path = req.uri().path();
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let version = first
        .strip_prefix('r')
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
    match version {
        Some(_) => {
            let refusal = bad(format!(
                "protocol version {first} is not supported: this gateway speaks r1 (/r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/path])"
            ));
            let seen = crate::refusal::RequestSeen::of(&req);
            crate::refusal::refuse(&gw, "client", &seen, refusal).await
        }
        None => xalo_core::Error::new(
            xalo_core::ErrorCode::HttpNotFound,
            format!("no resource at {path}"),
        )
        .into_response(),
    }
}

fn bad(m: impl Into<String>) -> ProtocolError {
    ProtocolError::new(Kind::BadRequest, m)
}

fn spool_error(e: SpoolError, kind_on_io: Kind) -> ProtocolError {
    match e {
        SpoolError::TooLarge { .. } | SpoolError::Read(_) => bad(e.to_string()),
        SpoolError::Io(_) => ProtocolError::new(kind_on_io, e.to_string()),
    }
}

/// The headers that carry a request's signature to the provider's gateway.
pub fn signature_headers(
    encoded: &message::EncodedHeaders,
    certificate: &[u8],
    signed: &Signed,
    signer_ocsp: &[u8],
    tls_ocsp: &[u8],
) -> Result<HeaderMap, xalo_core::Error> {
    let mut h = HeaderMap::new();
    let value = |bytes: &[u8]| {
        HeaderValue::from_str(&b64().encode(bytes))
            .map_err(|e| xalo_core::Error::new(xalo_core::ErrorCode::Internal, e.to_string()))
    };
    h.insert(message::SIGNATURE, value(&signed.signature)?);
    h.insert(
        message::SIGNATURE_BATCH,
        HeaderValue::from_str(&signed.proof.header())
            .map_err(|e| xalo_core::Error::new(xalo_core::ErrorCode::Internal, e.to_string()))?,
    );
    h.insert(message::SIGNER, encoded.value(certificate)?);
    h.insert(message::SIGNER_OCSP, encoded.value(signer_ocsp)?);
    h.insert(message::TLS_OCSP, encoded.value(tls_ocsp)?);
    Ok(h)
}

async fn outbound(gw: &Arc<GatewayState>, req: Request) -> Result<Response, ProtocolError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if let Some(r) = crate::metaservice::client_side(gw, &parts.method, &path)? {
        return Ok(r);
    }
    let (service_path, rest) = message::split_service_path(&path).ok_or_else(|| {
        bad(format!(
            "{path}: expected /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/path]"
        ))
    })?;
    message::check_service_rest(rest).map_err(bad)?;
    let service = ServiceId::from_path(service_path).map_err(|e| bad(format!("service: {e}")))?;
    // Of several X-Road-Client headers the last names the caller (PR-REST 4.3); only it
    // travels on.
    let client = message::named_client(&parts.headers)
        .ok_or_else(|| bad("the X-Road-Client header is missing"))?
        .map_err(|e| bad(format!("X-Road-Client: {e}")))?;
    let conf = gw.conf.get().map_err(|e| ProtocolError::client(&e))?;
    if client.member() != &gw.owner || !conf.has_client(&client) {
        return Err(ProtocolError::new(
            Kind::ClientUnknownMember,
            format!(
                "client {client} is not registered at this gateway ({})",
                gw.name
            ),
        ));
    }
    // The calling system must present a certificate registered for exactly this client
    // (client TLS listener) or hold a key issued for it.
    let internal = |e: xalo_core::Error| ProtocolError::new(Kind::ClientInternalError, e.message);
    let presented = match parts.extensions.get::<crate::tls::PeerCertificate>() {
        Some(cert) => gw
            .registry
            .client_of_certificate(&cert.0)
            .await
            .map_err(internal)?,
        None => match message::header_text(&parts.headers, message::CLIENT_KEY) {
            Some(key) if !key.is_empty() => {
                gw.registry.client_of_key(key).await.map_err(internal)?
            }
            _ => None,
        },
    };
    let allowed = presented.is_some_and(|c| c == client);
    if !allowed {
        return Err(ProtocolError::new(
            Kind::ClientAuthenticationFailed,
            format!(
                "the information system is not registered for client {client} (header {})",
                message::CLIENT_KEY
            ),
        ));
    }
    if !conf.has_subsystem(service.provider()) {
        return Err(ProtocolError::new(
            Kind::ClientUnknownMember,
            format!("service provider {} is not registered", service.provider()),
        ));
    }
    // A provider may run several gateways: start at a random one (spreading the load)
    // and go on to the next when one cannot be reached.
    let mut candidates = conf.gateways_of(service.provider().member());
    if candidates.is_empty() {
        return Err(ProtocolError::new(
            Kind::ClientUnknownMember,
            format!("{} has no registered gateway", service.provider().member()),
        ));
    }
    // The caller may name the one to use (PR-REST 4.3, `X-Road-Security-Server`:
    // INSTANCE/CLASS/MEMBER/SERVERCODE); then no other is tried.
    if let Some(named) = message::last_header_text(&parts.headers, message::X_ROAD_SECURITY_SERVER)
    {
        let (owner, code) = named
            .rsplit_once('/')
            .and_then(|(owner, code)| Some((owner.parse::<xalo_core::MemberId>().ok()?, code)))
            .ok_or_else(|| {
                bad(format!(
                    "X-Road-Security-Server: {named:?} is not INSTANCE/CLASS/MEMBER/SERVERCODE"
                ))
            })?;
        candidates.retain(|g| g.owner == owner && g.code == code);
        if candidates.is_empty() {
            return Err(bad(format!(
                "X-Road-Security-Server: {named} is not a registered gateway of {}",
                service.provider().member()
            )));
        }
    }
    crate::health::refuse_unstamped(gw, Kind::ClientTimestamperFailed)?;
    let start = rand::random::<u32>() as usize % candidates.len();
    candidates.rotate_left(start);
    let tls_ocsp = gw
        .status
        .good_answer(gw.tls.certificate(), &conf)
        .await
        .map_err(|e| {
            ProtocolError::new(
                Kind::ClientSslAuthenticationFailed,
                format!("this gateway's TLS certificate: {}", e.message),
            )
        })?;
    let signer_ocsp = gw
        .status
        .good_answer(gw.signer.certificate(), &conf)
        .await
        .map_err(|e| {
            ProtocolError::new(
                Kind::ClientCertValidation,
                format!("the member's signing certificate: {}", e.message),
            )
        })?;

    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !message::is_filtered(name) && !is_response_only(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        X_ROAD_CLIENT,
        HeaderValue::from_str(&client.to_string()).map_err(|e| bad(e.to_string()))?,
    );
    let x_road_id = match message::header_text(&headers, X_ROAD_ID) {
        Some(id) => id.to_owned(),
        None => {
            let id = message::new_uuid();
            headers.insert(
                X_ROAD_ID,
                HeaderValue::from_str(&id).map_err(|e| bad(e.to_string()))?,
            );
            id
        }
    };
    // A caller that names no content type gets JSON (PR-REST 4.3), sent explicitly so that
    // it is in the signed head.
    if !headers.contains_key(axum::http::header::ACCEPT) {
        headers.insert(
            axum::http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
    }
    let body = spool_declared(body.into_data_stream(), &parts.headers, &gw.spool())
        .await
        .map_err(|e| spool_error(e, Kind::ClientInternalError))?;
    // Sent as received: the head signed is the request line the provider's gateway reads.
    let target = parts
        .uri
        .path_and_query()
        .map_or(path.as_str(), |p| p.as_str());
    let request_head = message::request_head(parts.method.as_str(), target, &headers);
    let request_hash = message::message_hash(&request_head, body.len, &body.sha512);
    let signature = gw
        .metrics
        .timed("client", Stage::Sign, gw.batch.sign(&request_hash))
        .await
        .map_err(|e| ProtocolError::new(Kind::ClientInternalError, e.message))?;
    let signed = signature_headers(
        &gw.encoded,
        gw.signer.certificate(),
        &signature,
        &signer_ocsp,
        &tls_ocsp,
    )
    .map_err(|e| ProtocolError::new(Kind::ClientInternalError, e.message))?;
    let request_signature = message::logged_signature_of(&signed).unwrap_or_default();
    let request_body = body.bytes().map(|b| b.to_vec());
    // A body in memory can be sent again to another gateway; a spooled one only once.
    let in_memory = body.bytes().cloned();
    let mut spooled = Some(body);
    let mut attempt = 0;
    // Counted from the attempt that answered: time lost on an unreachable gateway is not
    // the provider's gateway's.
    let mut sent_at = Instant::now();
    let response = loop {
        let peer = candidates[attempt];
        let http = gw
            .peer_client(peer)
            .map_err(|e| ProtocolError::new(Kind::ClientInternalError, e.message))?;
        let uri: axum::http::Uri = format!("https://{}{target}", peer.address)
            .parse()
            .map_err(|e| bad(format!("request target: {e}")))?;
        let outgoing = match (&in_memory, spooled.take()) {
            (Some(bytes), _) => axum::body::Body::from(bytes.clone()),
            (None, Some(body)) => body.into_axum_body(),
            (None, None) => break Err((peer, None)),
        };
        let mut sent = headers.clone();
        sent.extend(signed.clone());
        match http.send(parts.method.clone(), uri, sent, outgoing).await {
            Ok(r) => break Ok((peer, r)),
            Err(e)
                if e.is_connect()
                    && !e.is_tls()
                    && attempt + 1 < candidates.len()
                    && in_memory.is_some() =>
            {
                tracing::warn!(gateway = %peer.address, error = %e, "provider gateway unreachable; trying the next");
                attempt += 1;
                sent_at = Instant::now();
            }
            Err(e) => break Err((peer, Some(e))),
        }
    };
    let (provider_gateway, response) = match response {
        Ok(answered) => answered,
        Err((peer, e)) => {
            let e = match e {
                Some(e) => e,
                None => {
                    return Err(ProtocolError::new(
                        Kind::ClientNetworkError,
                        format!("{}: unreachable", peer.address),
                    ));
                }
            };
            return Err(if e.is_tls() {
                ProtocolError::new(
                    Kind::ClientSslAuthenticationFailed,
                    format!(
                        "TLS with {} ({}) failed: {e:#}",
                        peer.address,
                        service.provider().member()
                    ),
                )
            } else {
                ProtocolError::new(Kind::ClientNetworkError, format!("{}: {e}", peer.address))
            });
        }
    };
    gw.metrics
        .stage("client", Stage::ProviderGateway, sent_at.elapsed());
    let status = response.status;
    let response_headers = response.headers.clone();
    // An error of the provider's gateway travels back as it is.
    if let Some(kind) = response_headers.get(X_ROAD_ERROR) {
        let kind = kind
            .to_str()
            .unwrap_or("Server.ServerProxy.InternalError")
            .to_owned();
        let text = response.text(64 * 1024).await;
        let (message, detail) =
            match serde_json::from_str::<crate::protocol_error::ProtocolErrorBody>(&text) {
                Ok(b) => (b.message, b.detail),
                Err(_) => (text, String::new()),
            };
        let passed_on = crate::protocol_error::PassedOn {
            type_text: kind,
            status,
            detail,
        };
        return Err(ProtocolError::passed_on(passed_on, message));
    }
    // The provider's answer breaking off (or too large to keep) is no fault of the client.
    let response_body = spool_declared(response.into_stream(), &response_headers, &gw.spool())
        .await
        .map_err(|e| match e {
            SpoolError::Read(_) => ProtocolError::new(
                Kind::ClientNetworkError,
                format!("the provider's answer: {e}"),
            ),
            _ => ProtocolError::new(
                Kind::ClientInternalError,
                format!("the provider's answer: {e}"),
            ),
        })?;
    let response_head = message::response_head(status.as_u16(), &response_headers);
    let response_hash =
        message::message_hash(&response_head, response_body.len, &response_body.sha512);
    let verified = verify_response(
        gw,
        &conf,
        &service,
        provider_gateway,
        &response_headers,
        &response_hash,
        &request_hash,
    );
    let response_signature = message::logged_signature_of(&response_headers);
    let logged_body = response_body.bytes().map(|b| b.to_vec());
    verified?;

    let evidence = MessageEvidence {
        gateway: gw.name.clone(),
        side: "client".into(),
        x_road_id: x_road_id.clone(),
        client: client.to_string(),
        service: service.to_string(),
        method: parts.method.to_string(),
        user_id: message::header_text(&headers, X_ROAD_USER_ID).map(str::to_owned),
        issue: message::header_text(&headers, X_ROAD_ISSUE).map(str::to_owned),
        request_hash: message::hash_text(&request_hash),
        response_hash: Some(message::hash_text(&response_hash)),
        status: status.as_u16(),
        time_unix: crate::unix_now(),
    };
    let logged = LoggedMessage {
        side: "client",
        x_road_id,
        client: client.to_string(),
        service: service.to_string(),
        request_hash: evidence.request_hash.clone(),
        request_head,
        request_signature,
        request_body,
        response_hash: evidence.response_hash.clone(),
        response_head: Some(response_head),
        response_signature,
        response_body: logged_body,
        status: status.as_u16(),
        ledger_index: None,
    };
    gw.metrics
        .timed("client", Stage::Log, record(gw, evidence, logged))
        .await?;
    Ok(pass_back(status, &response_headers, response_body))
}

/// Headers only a provider's gateway sets.
fn is_response_only(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        X_ROAD_REQUEST_HASH | message::X_ROAD_SERVICE | message::X_ROAD_REQUEST_ID
    )
}

fn verify_response(
    gw: &GatewayState,
    conf: &crate::global_conf::GlobalConf,
    service: &ServiceId,
    provider_gateway: &crate::global_conf::GatewayEntry,
    headers: &HeaderMap,
    response_hash: &[u8],
    request_hash: &[u8],
) -> Result<(), ProtocolError> {
    let invalid = |m: String| ProtocolError::new(Kind::ClientInvalidSignatureValue, m);
    let decode = |name: &str| {
        message::header_text(headers, name)
            .and_then(|v| b64().decode(v).ok())
            .ok_or_else(|| invalid(format!("the provider's answer has no valid {name} header")))
    };
    if message::header_text(headers, X_ROAD_REQUEST_HASH)
        != Some(message::hash_text(request_hash).as_str())
    {
        return Err(invalid(
            "X-Road-Request-Hash of the answer is not the hash of the request sent".into(),
        ));
    }
    let repeated = |name: &str| {
        gw.decoded
            .get(headers, name)
            .ok_or_else(|| invalid(format!("the provider's answer has no valid {name} header")))
    };
    let tls_ocsp = repeated(message::TLS_OCSP)?;
    let provider_cert = provider_gateway
        .tls_certificate
        .der()
        .map_err(|e| ProtocolError::new(Kind::ClientInternalError, e.message))?;
    gw.status
        .verify_answer(provider_cert, &tls_ocsp, conf)
        .map_err(|e| {
            ProtocolError::new(
                Kind::ClientSslAuthenticationFailed,
                format!("the provider's TLS certificate: {}", e.message),
            )
        })?;
    let signer = repeated(message::SIGNER)?;
    let ocsp = repeated(message::SIGNER_OCSP)?;
    gw.status.verify_answer(&signer, &ocsp, conf).map_err(|e| {
        ProtocolError::new(
            Kind::ClientCertValidation,
            format!("the provider's signing certificate: {}", e.message),
        )
    })?;
    let proof = message::header_text(headers, message::SIGNATURE_BATCH)
        .ok_or_else(|| invalid("the provider's answer has no signature batch proof".into()))
        .and_then(|p| BatchProof::parse(p).map_err(|e| invalid(e.message)))?;
    gw.verified
        .verify(
            &signer,
            service.provider().member(),
            response_hash,
            &decode(message::SIGNATURE)?,
            &proof,
        )
        .map_err(|e| invalid(e.message))
}

fn pass_back(status: StatusCode, headers: &HeaderMap, body: Spooled) -> Response {
    let mut r = Response::new(body.into_axum_body());
    *r.status_mut() = status;
    // The service's own error, whatever its type, passes back as it is (PR-REST 4.6).
    r.extensions_mut().insert(xalo_core::server::AsAnswered);
    for (name, value) in headers {
        if !message::is_filtered(name) {
            r.headers_mut().append(name.clone(), value.clone());
        }
    }
    r
}

/// Log the message before it is answered, then hand its evidence to the ledger's recorder,
/// which batches (its index is added to the logged message when known). A
/// message that cannot be logged is not answered: the caller gets the log's error, as a
/// `DatabaseError` of its side, rather than an exchange without evidence.
pub(crate) async fn record(
    gw: &Arc<GatewayState>,
    evidence: MessageEvidence,
    logged: LoggedMessage,
) -> Result<(), ProtocolError> {
    let side = logged.side;
    let (x_road_id, request_hash) = (logged.x_road_id.clone(), logged.request_hash.clone());
    gw.log.append(logged).await.map_err(|e| {
        let kind = if side == "provider" {
            Kind::server_side(&e)
        } else {
            Kind::client_side(&e)
        };
        ProtocolError::new(kind, format!("the message log: {}", e.message))
    })?;
    if let Some(ev) = &gw.evidence {
        // Without a task per message: the recorder hands the index to the log
        // once the ledger has the batch.
        let gw = gw.clone();
        ev.record_then(&evidence, move |recorded| match recorded {
            Ok(index) => gw.log.note_ledger_index(LedgerIndex {
                x_road_id,
                side,
                request_hash,
                index,
            }),
            Err(e) => {
                tracing::warn!(error = %e, %x_road_id, "recording evidence failed")
            }
        });
    }
    Ok(())
}
