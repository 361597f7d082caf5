//! Refusals on record: every request a gateway refuses, with its X-Road error type, the
//! message and the `detail` id the caller was given, who asked for which service, and the
//! request's line and headers (the protocol's and the caller's, never the client key or
//! the signature material). The message log's writer commits them in its batches, before
//! the caller is answered, and they are kept as long as the log (`retention_days`). An
//! operator reads them with `GET /api/v1/refusals` or `xalo exchange refusals`, and finds
//! one a caller reports by its `detail`.
//!
//! Not message-log rows: a refusal is no exchange, so it gets no signature, time-stamp
//! batch, ledger evidence or data-tracker entry.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode, ServiceId};

use crate::gateway::GatewayState;
use crate::message::{self, X_ROAD_CLIENT, X_ROAD_ID};
use crate::nation::GatewayAdmin;
use crate::protocol_error::ProtocolError;

/// Longest text kept of what a caller sent (an identifier, a header value, a message).
const TEXT_LIMIT: usize = 1024;

/// Most refusals one query answers.
const MOST_LISTED: i64 = 1000;

/// A refusal, as the writer stores it.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `client` (this gateway refused an information system's request, or passed on the
    /// provider's refusal) or `provider` (it refused a gateway's request).
    pub side: &'static str,
    pub kind: String,
    pub status: u16,
    pub message: String,
    pub detail: String,
    pub x_road_id: String,
    pub client: String,
    pub service: String,
    /// The canonical head (`xalo-request/1 METHOD TARGET`, then the headers kept).
    pub request_head: Vec<u8>,
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
    pub x_road_id: String,
    pub client: String,
    pub service: String,
    /// The request line: method and target.
    pub request: String,
}

/// What a request said before its handling consumed it, kept to describe a refusal.
/// Cloning the header map copies its index, not the values (shared bytes).
#[derive(Debug)]
pub(crate) struct RequestSeen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl RequestSeen {
    pub(crate) fn of(req: &Request) -> RequestSeen {
        RequestSeen {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        }
    }

    fn refusal(&self, side: &'static str, e: &ProtocolError, detail: &str) -> Refusal {
        let text = |name: &str| {
            message::header_text(&self.headers, name)
                .map(|v| bounded(v.to_owned()))
                .unwrap_or_default()
        };
        let path = self.uri.path();
        let service = message::split_service_path(path)
            .and_then(|(p, _)| ServiceId::from_path(p).ok())
            .map(|s| s.to_string())
            .unwrap_or_default();
        let mut kept = HeaderMap::new();
        for (name, value) in &self.headers {
            if !message::is_filtered(name) {
                kept.append(name.clone(), value.clone());
            }
        }
        let target = self.uri.path_and_query().map_or(path, |p| p.as_str());
        Refusal {
            side,
            kind: e.kind_text().to_owned(),
            status: e.status().as_u16(),
            message: bounded(e.message.clone()),
            detail: detail.to_owned(),
            x_road_id: text(X_ROAD_ID),
            client: text(X_ROAD_CLIENT),
            service,
            request_head: message::request_head(
                self.method.as_str(),
                &bounded(target.to_owned()),
                &kept,
            ),
        }
    }
}

fn bounded(mut text: String) -> String {
    if text.len() > TEXT_LIMIT {
        let mut end = TEXT_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Put the refusal on record, then answer it. A log that cannot take it does not keep
/// the caller from its answer: the refusal then goes to the process's log only.
pub(crate) async fn refuse(
    gw: &GatewayState,
    side: &'static str,
    seen: &RequestSeen,
    e: ProtocolError,
) -> Response {
    let detail = message::new_uuid();
    if let Err(failure) = gw.log.refuse(seen.refusal(side, &e, &detail)).await {
        tracing::warn!(error = %failure, kind = e.kind_text(), %detail, "a refusal could not be put on record");
    }
    e.into_response_with_detail(detail)
}

#[derive(Debug, Deserialize)]
pub(crate) struct RefusalQuery {
    #[serde(default = "default_limit")]
    limit: i64,
    /// Only refusals at or after this Unix time.
    #[serde(default)]
    since: i64,
}

fn default_limit() -> i64 {
    100
}

/// `GET /api/v1/refusals?limit=N&since=UNIX`: the latest refusals, newest first.
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
    let records = gw.log.refusals(q.since, q.limit).await?;
    Ok(axum::Json(records).into_response())
}

impl GatewayAdmin {
    /// This gateway's latest `limit` refusals, newest first.
    pub async fn refusals(&self, limit: usize) -> Result<Vec<RefusalRecord>, Error> {
        let v = self
            .get_json(&format!("/api/v1/refusals?limit={limit}"))
            .await?;
        serde_json::from_value(v).map_err(|e| Error::new(ErrorCode::ExchUpstream, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol_error::Kind;

    #[test]
    fn a_refusal_keeps_what_was_asked_but_no_secret() {
        let req = axum::http::Request::builder()
            .method("POST")
            .uri("/r1/VN/GOV/000001/population/persons/VN1?x=1")
            .header("x-road-client", "VN/GOV/000007/portal")
            .header("x-road-id", "id-1")
            .header(message::CLIENT_KEY, "secret-key")
            .header("content-type", "application/json")
            .body(axum::body::Body::empty())
            .unwrap();
        let seen = RequestSeen::of(&req);
        let e = ProtocolError::new(Kind::ServerAccessDenied, "x".repeat(5000));
        let r = seen.refusal("provider", &e, "d-1");
        assert_eq!(r.kind, "Server.ServerProxy.AccessDenied");
        assert_eq!(r.status, 500);
        assert_eq!(r.message.len(), TEXT_LIMIT);
        assert_eq!(r.service, "VN/GOV/000001/population/persons");
        assert_eq!(
            (r.client.as_str(), r.x_road_id.as_str()),
            ("VN/GOV/000007/portal", "id-1")
        );
        let head = String::from_utf8(r.request_head).unwrap();
        assert!(
            head.starts_with("xalo-request/1 POST /r1/VN/GOV/000001/population/persons/VN1?x=1")
        );
        assert!(head.contains("content-type"), "{head}");
        assert!(!head.contains("secret-key"), "{head}");
        // A path that names no service is kept as it came.
        let req = axum::http::Request::builder()
            .uri("/r1/VN")
            .body(axum::body::Body::empty())
            .unwrap();
        let r = RequestSeen::of(&req).refusal("client", &e, "d-2");
        assert_eq!((r.service.as_str(), r.client.as_str()), ("", ""));
        assert_eq!(bounded("ắ".repeat(600)).len(), 1023);
    }
}
