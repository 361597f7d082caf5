//! The errors a gateway speaks to information systems, in the wire format of X-Road's REST
//! message protocol (PR-REST 4.6): a JSON body `{type, message, detail}`, the type repeated
//! in an `X-Road-Error` header, status 400 for the caller's mistakes and 500 otherwise.
//!
//! These are not [`xalo_core::Error`]s: information systems written for X-Road already
//! understand these types, so the gateway keeps X-Road's names.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode};

/// The header that tells an information system the error came from X-Road itself.
pub const X_ROAD_ERROR: &str = "x-road-error";

/// Which X-Road error type a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request does not follow the protocol.
    BadRequest,
    ClientOutdatedGlobalConf,
    ClientUnknownMember,
    ClientAuthenticationFailed,
    ClientSslAuthenticationFailed,
    ClientNetworkError,
    ClientInvalidSignatureValue,
    ClientCertValidation,
    ClientDatabaseError,
    ClientInternalError,
    ServerOutdatedGlobalConf,
    ServerSslAuthenticationFailed,
    ServerInvalidSignatureValue,
    /// A signed request received before, or signed outside the replay window (our own
    /// type: X-Road relies on its TLS sessions alone).
    ServerReplayedMessage,
    ServerCertValidation,
    ServerUnknownService,
    ServerAccessDenied,
    ServerServiceFailed,
    ServerNetworkError,
    ServerDatabaseError,
    ServerInternalError,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BadRequest => "Client.BadRequest",
            Kind::ClientOutdatedGlobalConf => "Server.ClientProxy.OutdatedGlobalConf",
            Kind::ClientUnknownMember => "Server.ClientProxy.UnknownMember",
            Kind::ClientAuthenticationFailed => "Server.ClientProxy.ClientAuthenticationFailed",
            Kind::ClientSslAuthenticationFailed => "Server.ClientProxy.SslAuthenticationFailed",
            Kind::ClientNetworkError => "Server.ClientProxy.NetworkError",
            Kind::ClientInvalidSignatureValue => "Server.ClientProxy.InvalidSignatureValue",
            Kind::ClientCertValidation => "Server.ClientProxy.CertValidation",
            Kind::ClientDatabaseError => "Server.ClientProxy.DatabaseError",
            Kind::ClientInternalError => "Server.ClientProxy.InternalError",
            Kind::ServerOutdatedGlobalConf => "Server.ServerProxy.OutdatedGlobalConf",
            Kind::ServerSslAuthenticationFailed => "Server.ServerProxy.SslAuthenticationFailed",
            Kind::ServerInvalidSignatureValue => "Server.ServerProxy.InvalidSignatureValue",
            Kind::ServerReplayedMessage => "Server.ServerProxy.ReplayedMessage",
            Kind::ServerCertValidation => "Server.ServerProxy.CertValidation",
            Kind::ServerUnknownService => "Server.ServerProxy.UnknownService",
            Kind::ServerAccessDenied => "Server.ServerProxy.AccessDenied",
            Kind::ServerServiceFailed => "Server.ServerProxy.ServiceFailed",
            Kind::ServerNetworkError => "Server.ServerProxy.NetworkError",
            Kind::ServerDatabaseError => "Server.ServerProxy.DatabaseError",
            Kind::ServerInternalError => "Server.ServerProxy.InternalError",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The server-proxy kind for a failure seen on the client side, and the reverse, are
    /// different types; this maps a coded error of our own to the client proxy's type.
    pub fn client_side(e: &Error) -> Kind {
        match e.code {
            ErrorCode::ExchGlobalConfExpired | ErrorCode::ExchGlobalConfInvalid => {
                Kind::ClientOutdatedGlobalConf
            }
            ErrorCode::ExchMessageSignature => Kind::ClientInvalidSignatureValue,
            ErrorCode::ExchCertificateStatus | ErrorCode::ExchCertificate => {
                Kind::ClientCertValidation
            }
            ErrorCode::StoreQuery | ErrorCode::StoreUnavailable => Kind::ClientDatabaseError,
            _ => Kind::ClientInternalError,
        }
    }

    /// As [`Kind::client_side`], for the server proxy.
    pub fn server_side(e: &Error) -> Kind {
        match e.code {
            ErrorCode::ExchGlobalConfExpired | ErrorCode::ExchGlobalConfInvalid => {
                Kind::ServerOutdatedGlobalConf
            }
            ErrorCode::ExchMessageSignature => Kind::ServerInvalidSignatureValue,
            ErrorCode::ExchCertificateStatus | ErrorCode::ExchCertificate => {
                Kind::ServerCertValidation
            }
            ErrorCode::StoreQuery | ErrorCode::StoreUnavailable => Kind::ServerDatabaseError,
            _ => Kind::ServerInternalError,
        }
    }
}

/// The JSON body of an X-Road error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProtocolErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    /// A unique id of this failure, to find it in the gateway's log.
    pub detail: String,
}

/// An error answered to an information system (or passed on from the provider's gateway).
#[derive(Debug, Clone)]
pub struct ProtocolError {
    pub kind: Kind,
    pub message: String,
    /// What the provider's gateway answered, passed on as it is (then `kind` is only
    /// what this gateway would have called it, and not what the caller gets).
    pub passed_on: Option<Box<PassedOn>>,
    /// A signed request the replay guard admitted before it was refused.
    pub admitted: Option<Box<Admitted>>,
}

/// What the replay guard knows a request by: its signature as the log keeps it and its
/// hash.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub signature: String,
    pub request_hash: String,
}

/// An error of the provider's gateway, as its answer named it.
#[derive(Debug, Clone)]
pub struct PassedOn {
    pub type_text: String,
    pub status: StatusCode,
    /// The provider's gateway's `detail`.
    pub detail: String,
}

impl ProtocolError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        ProtocolError {
            kind,
            message: message.into(),
            passed_on: None,
            admitted: None,
        }
    }
    /// The provider's gateway's error, for the client proxy to pass on as it is.
    pub fn passed_on(passed_on: PassedOn, message: String) -> Self {
        ProtocolError {
            kind: Kind::ServerInternalError,
            message,
            passed_on: Some(Box::new(passed_on)),
            admitted: None,
        }
    }
    /// The error type the caller gets.
    pub fn kind_text(&self) -> &str {
        self.passed_on
            .as_ref()
            .map_or(self.kind.as_str(), |p| p.type_text.as_str())
    }
    pub fn status(&self) -> StatusCode {
        self.passed_on
            .as_ref()
            .map_or(self.kind.status(), |p| p.status)
    }
    /// The provider's gateway's `detail`, for an error passed on from it.
    pub fn upstream_detail(&self) -> Option<&str> {
        self.passed_on.as_ref().map(|p| p.detail.as_str())
    }
    /// The answer, with `detail` as the id the caller can quote.
    pub fn into_response_with_detail(self, detail: String) -> Response {
        response_with_detail(self.kind_text(), self.status(), &self.message, detail)
    }
    pub fn client(e: &Error) -> Self {
        Self::new(Kind::client_side(e), e.message.clone())
    }
    pub fn server(e: &Error) -> Self {
        Self::new(Kind::server_side(e), e.message.clone())
    }
}

/// An error response with a given type string (also one passed on verbatim).
pub fn response(kind: &str, status: StatusCode, message: &str) -> Response {
    response_with_detail(kind, status, message, crate::message::new_uuid())
}

/// [`response`] with the given `detail`.
pub fn response_with_detail(
    kind: &str,
    status: StatusCode,
    message: &str,
    detail: String,
) -> Response {
    if status.is_server_error() {
        tracing::warn!(kind, %detail, message, "exchange error");
    } else {
        tracing::debug!(kind, %detail, message, "exchange error");
    }
    let body = ProtocolErrorBody {
        kind: kind.to_owned(),
        message: message.to_owned(),
        detail,
    };
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(kind) {
        r.headers_mut().insert(X_ROAD_ERROR, v);
    }
    r
}

impl IntoResponse for ProtocolError {
    fn into_response(self) -> Response {
        response(self.kind_text(), self.status(), &self.message)
    }
}
