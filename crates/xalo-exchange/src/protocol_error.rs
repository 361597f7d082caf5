//! The errors a gateway speaks to information systems, in the wire format of X-Road's REST
//! message protocol (PR-REST 4.6): a JSON body `{type, message, detail}` (or the same as
//! `<error>` XML to an information system that accepts XML rather than JSON), the type
//! repeated in an `X-Road-Error` header, status 400 for the caller's mistakes and 500
//! otherwise.
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
    /// The message log has not been time-stamped for longer than the gateway's grace
    /// period (`timestamp_failure_secs`): it takes no message until it is again (X-Road's
    /// `timestamper_failed`).
    ClientTimestamperFailed,
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
    /// As [`Kind::ClientTimestamperFailed`], at the provider's gateway.
    ServerTimestamperFailed,
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
            Kind::ClientTimestamperFailed => "Server.ClientProxy.timestamper_failed",
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
            Kind::ServerTimestamperFailed => "Server.ServerProxy.timestamper_failed",
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
        self.into_response_as(detail, ErrorFormat::Json)
    }
    /// [`Self::into_response_with_detail`] in the given format.
    pub fn into_response_as(self, detail: String, format: ErrorFormat) -> Response {
        response_as(
            self.kind_text(),
            self.status(),
            &self.message,
            detail,
            format,
        )
    }
    pub fn client(e: &Error) -> Self {
        Self::new(Kind::client_side(e), e.message.clone())
    }
    pub fn server(e: &Error) -> Self {
        Self::new(Kind::server_side(e), e.message.clone())
    }
}

/// The media type of an error's body. PR-REST 4.6: a gateway should answer an information
/// system's errors in the type its `Accept` asks for, JSON by default; XML is the other
/// type X-Road's errors come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    Json,
    /// `<error><type/><message/><detail/></error>`, as `application/xml` or `text/xml`.
    Xml(&'static str),
}

impl ErrorFormat {
    /// The format `Accept` prefers: the heaviest of JSON and XML (see [`Accepted`]), JSON on
    /// a tie and when neither is accepted (PR-REST's default).
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a HeaderValue>) -> ErrorFormat {
        let a = Accepted::of(accept);
        let mut best = (a.json.weight, ErrorFormat::Json);
        for (w, format) in [
            (
                a.application_xml.weight,
                ErrorFormat::Xml("application/xml"),
            ),
            (a.text_xml.weight, ErrorFormat::Xml("text/xml")),
        ] {
            if w > best.0 {
                best = (w, format);
            }
        }
        best.1
    }
}

/// How an `Accept` header weighs the types a gateway answers in, by RFC 9110's rules
/// (12.5.1): a type's weight is that of the most specific range that names it (a type and
/// subtype over `type/*` over `*/*`; of equal ranges, the heaviest), in thousandths;
/// a range with an invalid weight or no `/` is passed over, each header value on its own.
/// By hand: no maintained crate negotiates among a fixed set of types without bringing a
/// web framework of its own.
#[derive(Debug, Default, Clone, Copy)]
pub struct Accepted {
    pub json: Weighed,
    pub application_xml: Weighed,
    pub text_xml: Weighed,
}

/// A type's weight and how specifically the range that gave it named it (0: no range did;
/// 3: by its type and subtype).
#[derive(Debug, Default, Clone, Copy)]
pub struct Weighed {
    pub weight: u16,
    pub specificity: u8,
}

impl Accepted {
    /// Whether JSON is named outright, with a weight no less than XML's: where XML is
    /// the default (X-Road's `listClients`), `*/*` does not ask for JSON.
    pub fn asks_for_json(&self) -> bool {
        let xml = self.application_xml.weight.max(self.text_xml.weight);
        self.json.specificity == 3 && self.json.weight > 0 && self.json.weight >= xml
    }

    pub fn of<'a>(accept: impl IntoIterator<Item = &'a HeaderValue>) -> Accepted {
        let mut a = Accepted::default();
        for value in accept {
            let Ok(text) = value.to_str() else { continue };
            for range in text.split(',') {
                let mut parts = range.split(';');
                let Some((kind, sub)) = parts.next().and_then(|m| m.trim().split_once('/')) else {
                    continue;
                };
                let (kind, sub) = (kind.trim(), sub.trim());
                let q = parts
                    .filter_map(|p| p.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                    .map_or(Some(1000), |(_, v)| weight(v.trim()));
                let Some(q) = q else { continue };
                for (offered, t, s) in [
                    (&mut a.json, "application", "json"),
                    (&mut a.application_xml, "application", "xml"),
                    (&mut a.text_xml, "text", "xml"),
                ] {
                    let specificity = if kind.eq_ignore_ascii_case(t) && sub.eq_ignore_ascii_case(s)
                    {
                        3
                    } else if kind.eq_ignore_ascii_case(t) && sub == "*" {
                        2
                    } else if kind == "*" && sub == "*" {
                        1
                    } else {
                        0
                    };
                    let heavier =
                        specificity > 0 && specificity == offered.specificity && q > offered.weight;
                    if specificity > offered.specificity || heavier {
                        *offered = Weighed {
                            weight: q,
                            specificity,
                        };
                    }
                }
            }
        }
        a
    }
}

/// A weight (`q=0.8`) in thousandths; `None` if it is not one (RFC 9110 12.4.2).
fn weight(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
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
    response_as(kind, status, message, detail, ErrorFormat::Json)
}

/// [`response_with_detail`] in the given format.
pub fn response_as(
    kind: &str,
    status: StatusCode,
    message: &str,
    detail: String,
    format: ErrorFormat,
) -> Response {
    if status.is_server_error() {
        tracing::warn!(kind, %detail, message, "exchange error");
    } else {
        tracing::debug!(kind, %detail, message, "exchange error");
    }
    let mut r = match format {
        ErrorFormat::Json => {
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
            r
        }
        ErrorFormat::Xml(media_type) => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error><type>{}</type><message>{}</message><detail>{}</detail></error>\n",
                xml_text(kind),
                xml_text(message),
                xml_text(&detail)
            );
            let mut r = (status, body).into_response();
            let content_type = if media_type == "text/xml" {
                "text/xml;charset=utf-8"
            } else {
                "application/xml;charset=utf-8"
            };
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r.extensions_mut().insert(xalo_core::server::AsAnswered);
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(kind) {
        r.headers_mut().insert(X_ROAD_ERROR, v);
    }
    r
}

/// Text as XML character data: escaped, a carriage return as a reference (a parser would
/// read a raw one as a line feed), and the characters XML 1.0 cannot carry (its `Char`
/// production; a message may quote what a caller or a provider sent) replaced.
pub(crate) fn xml_text(text: &str) -> std::borrow::Cow<'_, str> {
    let carried = |c: char| {
        matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{d7ff}').contains(&c)
            || ('\u{e000}'..='\u{fffd}').contains(&c)
            || c >= '\u{10000}'
    };
    if text.chars().all(|c| carried(c) && c != '\r') {
        return quick_xml::escape::escape(text);
    }
    let cleaned: String = text
        .chars()
        .map(|c| if carried(c) { c } else { '\u{fffd}' })
        .collect();
    std::borrow::Cow::Owned(quick_xml::escape::escape(&cleaned).replace('\r', "&#13;"))
}

impl IntoResponse for ProtocolError {
    fn into_response(self) -> Response {
        response(self.kind_text(), self.status(), &self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &[&str]) -> ErrorFormat {
        let values: Vec<HeaderValue> = accept
            .iter()
            .map(|a| HeaderValue::from_bytes(a.as_bytes()).unwrap())
            .collect();
        ErrorFormat::negotiate(&values)
    }

    #[test]
    fn the_error_format_follows_accept_by_weight_and_specificity() {
        let xml = ErrorFormat::Xml("application/xml");
        let text_xml = ErrorFormat::Xml("text/xml");
        assert_eq!(pick(&[]), ErrorFormat::Json);
        assert_eq!(pick(&["application/xml"]), xml);
        assert_eq!(pick(&["APPLICATION/XML ; charset=utf-8"]), xml);
        assert_eq!(pick(&["text/xml"]), text_xml);
        assert_eq!(pick(&["text/*"]), text_xml);
        assert_eq!(pick(&["*/*"]), ErrorFormat::Json);
        assert_eq!(
            pick(&["application/xml, application/json"]),
            ErrorFormat::Json
        );
        assert_eq!(pick(&["application/json;q=0.1", "application/xml"]), xml);
        // The most specific range sets a type's weight: here XML's is 0.
        assert_eq!(pick(&["*/*;q=0.9, application/xml;q=0"]), ErrorFormat::Json);
        assert_eq!(pick(&["application/json;q=0, */*;q=0.1"]), xml);
        assert_eq!(
            pick(&["application/json;q=0.500, text/xml;q=0.501"]),
            text_xml
        );
        // A range with a weight that is not one is passed over.
        assert_eq!(
            pick(&["application/xml;q=2, application/json;q=0.1"]),
            ErrorFormat::Json
        );
        assert_eq!(pick(&["application/xml;q=0.1234"]), ErrorFormat::Json);
        assert_eq!(pick(&["garbage, image/png"]), ErrorFormat::Json);
        // Of two equal ranges, the heavier; each header value on its own.
        assert_eq!(
            pick(&["application/json;q=0.2, application/json;q=0.9, text/xml;q=0.5"]),
            ErrorFormat::Json
        );
        assert_eq!(
            pick(&["text/xml;q=0.5", "application/json;q=1, caf\u{e9}/x"]),
            text_xml
        );
    }

    #[test]
    fn xml_text_escapes_and_drops_what_xml_cannot_carry() {
        assert_eq!(xml_text("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(xml_text("bell\u{7}\ttab"), "bell\u{fffd}\ttab");
        assert_eq!(xml_text("a\u{fffe}b\u{ffff}"), "a\u{fffd}b\u{fffd}");
        assert_eq!(xml_text("line\r\nnext"), "line&#13;\nnext");
        assert_eq!(
            xml_text("del \u{7f} and \u{85} stay"),
            "del \u{7f} and \u{85} stay"
        );
    }
}
