//! Mobile-ID signing for relying parties: the `id` role as a remote signing service
//! (the protocol of [`xalo_trust::remote`]). A registered client sends the files and names
//! the person; the role builds the ASiC-E manifest and the CAdES signed attributes, sends
//! their hash to the operator's signature endpoint (PIN2), and on the operator's answer
//! checks the signature against the person's signing certificate and its OCSP status,
//! adds the time-stamp and the status (CAdES-T, long-term validation) and returns the
//! container. Sessions live in the database, so any instance can answer the long poll.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_store::{DbResultExt, Row};
use xalo_trust::container::{DataFile, PendingSignature};
use xalo_trust::remote::{MobileIdSigningRequest, SigningStarted, SigningStatus};

use crate::attempt;
use crate::client::{self, AuthMethod, Client};
use crate::mobile_id::{SessionKind, SessionRequest, normalise_phone, verification_code};
use crate::provider::Provider;
use crate::store::unix_now;

/// The routes, outside the browser session layer: callers are servers with credentials.
pub fn routes() -> Router<Provider> {
    Router::new()
        .route("/signing/mobile-id", post(start))
        .route("/signing/session/{id}", get(status))
}

fn bad(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::HttpBadRequest, m)
}

/// The relying party, by `client_secret_basic`, with the token endpoint's failure limit.
async fn authenticate(p: &Provider, headers: &HeaderMap) -> Result<Client, Error> {
    let refused = |m: &str| Error::new(ErrorCode::AuthInvalidClient, m.to_owned());
    let (id, secret) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(i, s)| (i.to_owned(), s.to_owned())))
        .ok_or_else(|| refused("client credentials (HTTP Basic) are required"))?;
    let db = &p.inner().db;
    let counter = format!("client:{id}");
    if attempt::exceeded(db, &counter, attempt::PER_CLIENT).await? {
        return Err(Error::new(
            ErrorCode::AuthTooManyAttempts,
            "too many failed attempts",
        ));
    }
    match client::find(db, &id).await? {
        Some(c) if c.auth_method == AuthMethod::ClientSecretBasic && c.check_secret(&secret) => {
            Ok(c)
        }
        _ => {
            let _ = attempt::count(db, &counter, attempt::PER_CLIENT).await;
            Err(refused("unknown client or wrong secret"))
        }
    }
}

fn decode_b64(what: &str, s: &str) -> Result<Vec<u8>, Error> {
    STANDARD
        .decode(s.trim())
        .map_err(|_| bad(format!("{what} is not base64")))
}

async fn start(
    State(p): State<Provider>,
    headers: HeaderMap,
    Json(req): Json<MobileIdSigningRequest>,
) -> Result<Json<SigningStarted>, Error> {
    let client = authenticate(&p, &headers).await?;
    let inner = p.inner();
    let (Some(mid), Some(checker)) = (inner.mobile_id.as_ref(), inner.certificates.as_ref()) else {
        return Err(Error::new(
            ErrorCode::HttpNotFound,
            "Mobile-ID signing is not offered here",
        ));
    };
    let phone = normalise_phone(&req.phone_number)
        .ok_or_else(|| bad("phoneNumber is not an E.164 number"))?;
    let code: PersonalCode = req.national_identity_number.trim().parse()?;
    let files = req
        .files
        .iter()
        .map(|f| {
            Ok(DataFile {
                name: f.name.clone(),
                bytes: decode_b64(&f.name, &f.data)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let existing = req
        .container
        .as_deref()
        .map(|c| decode_b64("container", c))
        .transpose()?;
    // A relying party may not ring a phone without end.
    attempt::count(
        &inner.db,
        &format!("sign-phone:{phone}"),
        attempt::PER_ADDRESS,
    )
    .await?;
    let cert_b64 = mid.signing_certificate(&phone, &code.to_string()).await?;
    let cert = decode_b64("the operator's certificate", &cert_b64)
        .map_err(|e| Error::new(ErrorCode::AuthMobileIdUpstream, e.message))?;
    // The signing certificate must chain to the national root, be good now, and be the
    // named person's.
    let person = checker.check(&cert).await?;
    if person.code != code {
        return Err(Error::new(
            ErrorCode::AuthCertificate,
            "the operator's certificate names another person",
        ));
    }
    let authorities = checker.authorities().await?;
    let mut chain = vec![authorities.persons.clone()];
    chain.extend(authorities.anchors.roots().iter().cloned());
    let pending =
        xalo_trust::container::prepare(existing.as_deref(), files, &cert, &chain, &inner.http)
            .await?;
    if pending.algorithm() != xalo_trust::KeyAlgorithm::P256 {
        return Err(Error::new(
            ErrorCode::TrustUnsupportedAlgorithm,
            "the operator signs SHA-256 hashes with P-256 keys only",
        ));
    }
    let hash = pending.digest()?;
    let display_text = req
        .display_text
        .clone()
        .map(|t| format!("{}: {t}", client.name))
        .unwrap_or_else(|| client.name.clone());
    let operator_session = mid
        .start(
            SessionKind::Signature,
            &SessionRequest {
                relying_party_uuid: inner.settings.relying_party_uuid.clone(),
                relying_party_name: inner.settings.relying_party_name.clone(),
                phone_number: phone,
                national_identity_number: code.to_string(),
                hash: STANDARD.encode(&hash),
                hash_type: "SHA256".into(),
                language: req.language.clone().unwrap_or_else(|| "VIE".into()),
                display_text: Some(display_text),
            },
        )
        .await?;
    let session_id = xalo_web::session::random_token();
    let pending_text = String::from_utf8(pending.to_bytes()?)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    xalo_store::sqlx::query(
        "INSERT INTO id_signing (session_id, client_id, operator_session, personal_code, pending, \
         state, error_code, error_message, container, signer, created_unix) \
         VALUES ($1, $2, $3, $4, $5, 'RUNNING', NULL, NULL, NULL, NULL, $6)",
    )
    .bind(session_id.clone())
    .bind(client.client_id.clone())
    .bind(operator_session)
    .bind(code.to_string())
    .bind(pending_text)
    .bind(unix_now())
    .execute(inner.db.pool())
    .await
    .db("starting a signing session")?;
    Ok(Json(SigningStarted {
        session_id,
        verification_code: verification_code(&hash),
    }))
}

#[derive(Deserialize)]
struct PollQuery {
    #[serde(rename = "timeoutMs")]
    timeout_ms: Option<u64>,
}

struct Stored {
    operator_session: String,
    pending: String,
    state: String,
    error_code: Option<String>,
    error_message: Option<String>,
    container: Option<String>,
    signer: Option<String>,
}

async fn load(p: &Provider, id: &str, client_id: &str) -> Result<Stored, Error> {
    let row = xalo_store::sqlx::query(
        "SELECT operator_session, pending, state, error_code, error_message, container, signer \
         FROM id_signing WHERE session_id = $1 AND client_id = $2",
    )
    .bind(id.to_owned())
    .bind(client_id.to_owned())
    .fetch_optional(p.inner().db.pool())
    .await
    .db("reading a signing session")?
    .ok_or_else(|| Error::new(ErrorCode::AuthMobileIdSession, "no such signing session"))?;
    let c = "reading a signing session";
    Ok(Stored {
        operator_session: row.try_get(0).db(c)?,
        pending: row.try_get(1).db(c)?,
        state: row.try_get(2).db(c)?,
        error_code: row.try_get(3).db(c)?,
        error_message: row.try_get(4).db(c)?,
        container: row.try_get(5).db(c)?,
        signer: row.try_get(6).db(c)?,
    })
}

/// What a finished session answers: the container, or its coded failure.
fn outcome(s: Stored) -> Result<Json<SigningStatus>, Error> {
    if s.state == "FAILED" {
        let code = s
            .error_code
            .as_deref()
            .and_then(ErrorCode::from_code)
            .unwrap_or(ErrorCode::Internal);
        return Err(Error::new(code, s.error_message.unwrap_or_default()));
    }
    Ok(Json(SigningStatus {
        state: "COMPLETE".into(),
        container: s.container,
        signer: s.signer,
    }))
}

/// The operator's result as Xalo's coded error; `None` when the person signed.
fn operator_failure(result: Option<&str>) -> Option<Error> {
    match result {
        Some("OK") => None,
        Some("NOT_MID_CLIENT") => Some(Error::new(
            ErrorCode::AuthNotMobileIdClient,
            "the phone number and personal code are not a Mobile-ID subscription",
        )),
        Some("USER_CANCELLED") => Some(Error::new(
            ErrorCode::AuthMobileIdCancelled,
            "the person cancelled the signature on the phone",
        )),
        Some("TIMEOUT") => Some(Error::new(
            ErrorCode::AuthMobileIdTimeout,
            "the person did not enter PIN2 in time",
        )),
        Some("PIN_LOCKED") => Some(Error::new(
            ErrorCode::AuthPinLocked,
            "PIN2 is locked after three wrong tries",
        )),
        other => Some(Error::new(
            ErrorCode::AuthMobileIdUpstream,
            format!("the operator answered {other:?}"),
        )),
    }
}

/// Record the end of a session once; whoever came second answers from the record.
async fn settle(
    p: &Provider,
    id: &str,
    client_id: &str,
    result: Result<(String, String), Error>,
) -> Result<Json<SigningStatus>, Error> {
    let db = &p.inner().db;
    let q = match &result {
        Ok((container, signer)) => xalo_store::sqlx::query(
            "UPDATE id_signing SET state = 'COMPLETE', container = $1, signer = $2, pending = '' \
             WHERE session_id = $3 AND state = 'RUNNING'",
        )
        .bind(container.clone())
        .bind(signer.clone()),
        Err(e) => xalo_store::sqlx::query(
            "UPDATE id_signing SET state = 'FAILED', error_code = $1, error_message = $2, pending = '' \
             WHERE session_id = $3 AND state = 'RUNNING'",
        )
        .bind(e.code.as_str().to_owned())
        .bind(e.message.clone()),
    };
    q.bind(id.to_owned())
        .execute(db.pool())
        .await
        .db("ending a signing session")?;
    outcome(load(p, id, client_id).await?)
}

async fn status(
    State(p): State<Provider>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PollQuery>,
) -> Result<Json<SigningStatus>, Error> {
    let client = authenticate(&p, &headers).await?;
    let stored = load(&p, &id, &client.client_id).await?;
    if stored.state != "RUNNING" {
        return outcome(stored);
    }
    let inner = p.inner();
    let (Some(mid), Some(trust_url)) = (
        inner.mobile_id.as_ref(),
        inner.settings.trust_url.as_deref(),
    ) else {
        return Err(Error::new(
            ErrorCode::HttpNotFound,
            "Mobile-ID signing is not offered here",
        ));
    };
    let wait = q.timeout_ms.unwrap_or(10_000).clamp(1000, 60_000);
    let answer = mid
        .poll(SessionKind::Signature, &stored.operator_session, wait)
        .await?;
    if answer.state != "COMPLETE" {
        return Ok(Json(SigningStatus {
            state: "RUNNING".into(),
            container: None,
            signer: None,
        }));
    }
    if let Some(e) = operator_failure(answer.result.as_deref()) {
        return settle(&p, &id, &client.client_id, Err(e)).await;
    }
    let pending = PendingSignature::from_bytes(stored.pending.as_bytes())?;
    let finished = finish(&p, pending, &answer, trust_url).await;
    if let Err(e) = &finished {
        tracing::warn!(error = %e, "Mobile-ID signature refused");
    }
    settle(&p, &id, &client.client_id, finished).await
}

/// The person signed: the certificate must be the one prepared for and the signature its
/// key's over our hash; then time-stamp and status make the container (CAdES-T).
async fn finish(
    p: &Provider,
    pending: PendingSignature,
    answer: &crate::mobile_id::SessionStatus,
    trust_url: &str,
) -> Result<(String, String), Error> {
    let failed = |m: &str| Error::new(ErrorCode::TrustBadSignature, m.to_owned());
    let cert = answer
        .cert
        .as_deref()
        .map(|c| decode_b64("certificate", c))
        .transpose()?
        .ok_or_else(|| failed("the operator returned no certificate"))?;
    if cert != pending.certificate_der()? {
        return Err(failed(
            "the operator signed with another certificate than the prepared one",
        ));
    }
    let raw = answer
        .signature
        .as_ref()
        .map(|s| decode_b64("signature", &s.value))
        .transpose()?
        .ok_or_else(|| failed("the operator returned no signature"))?;
    // The SIM returns r‖s; CMS carries the DER Ecdsa-Sig-Value.
    let signature = p256::ecdsa::Signature::from_slice(&raw)
        .map_err(|_| failed("the signature is not a P-256 r‖s value"))?
        .to_der()
        .as_bytes()
        .to_vec();
    let signer = xalo_trust::authority::parse_certificate(&cert)?
        .tbs_certificate
        .subject
        .to_string();
    let tsa = format!("{}/tsa", trust_url.trim_end_matches('/'));
    let http = &p.inner().http;
    let container = pending.finish(&signature, &tsa, http).await?;
    Ok((STANDARD.encode(container), signer))
}
