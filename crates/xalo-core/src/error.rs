//! The one coded error type of Xalo.
//!
//! Every failure a user or a client can see carries an [`ErrorCode`]: a stable string such as
//! `XALO-ID-001`, an HTTP status and a short title. Codes are never renumbered or reused, so
//! clients, runbooks and tests can rely on them. All crates add their codes here, which keeps
//! the catalogue in one place (`xalo errors` prints it).

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:literal, $title:literal;)*) => {
        /// A stable, documented error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The stable code, e.g. `XALO-ID-001`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }
            /// The HTTP status this error maps to.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status),* }
            }
            /// A short English title.
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title),* }
            }
            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    PersonalCodeLength = "XALO-ID-001", 400, "personal code has the wrong length";
    PersonalCodeNonDigit = "XALO-ID-002", 400, "personal code contains a non-digit";
    PersonalCodeUnknownProvince = "XALO-ID-003", 400, "unknown province code";
    PersonalCodeCheckDigit = "XALO-ID-004", 400, "bad check digit";
    PersonalCodeImpossibleDate = "XALO-ID-005", 400, "personal code names an impossible birth date";
    PersonalCodeUnknownCountry = "XALO-ID-006", 400, "unknown personal code country";
    IdentifierEmpty = "XALO-ID-010", 400, "empty identifier part";
    IdentifierCharacter = "XALO-ID-011", 400, "identifier character not allowed";
    IdentifierTooLong = "XALO-ID-012", 400, "identifier part too long";
    IdentifierParts = "XALO-ID-013", 400, "wrong number of identifier parts";
    IdentifierEncoding = "XALO-ID-014", 400, "bad percent-encoding in identifier";
    ConfigInvalid = "XALO-CFG-001", 500, "invalid configuration";
    ConfigUnknownRole = "XALO-CFG-002", 400, "unknown server role";
    StoreUnavailable = "XALO-STORE-001", 503, "database unavailable";
    StoreMigration = "XALO-STORE-002", 500, "database migration failed";
    StoreQuery = "XALO-STORE-003", 500, "database query failed";
    StoreNotFound = "XALO-STORE-004", 404, "record not found";
    StoreConflict = "XALO-STORE-005", 409, "record already exists";
    StoreUrl = "XALO-STORE-006", 400, "unsupported database URL";
    HttpNotFound = "XALO-HTTP-001", 404, "no such resource";
    HttpBodyTooLarge = "XALO-HTTP-002", 413, "request body too large";
    HttpBadRequest = "XALO-HTTP-003", 400, "malformed request";
    HttpUnauthorized = "XALO-HTTP-004", 401, "authentication required";
    HttpForbidden = "XALO-HTTP-005", 403, "not allowed";
    HttpMethodNotAllowed = "XALO-HTTP-006", 405, "method not allowed";
    HttpUnsupportedMediaType = "XALO-HTTP-007", 415, "unsupported media type";
    HttpUnavailable = "XALO-HTTP-008", 503, "service unavailable";
    Internal = "XALO-SRV-001", 500, "internal error";
    ServerBind = "XALO-SRV-002", 500, "cannot listen on the address";
    ServerIo = "XALO-SRV-003", 500, "input or output failed";
    TrustNotInitialised = "XALO-TRUST-001", 503, "the certificate authorities are not initialised";
    TrustUnknownAuthority = "XALO-TRUST-002", 400, "unknown certificate authority or profile";
    TrustBadCsr = "XALO-TRUST-003", 400, "malformed or badly signed certificate signing request";
    TrustKey = "XALO-TRUST-004", 400, "unusable key";
    TrustIssue = "XALO-TRUST-005", 500, "certificate could not be issued";
    TrustCertificateNotFound = "XALO-TRUST-006", 404, "no such certificate";
    TrustAlreadyRevoked = "XALO-TRUST-007", 409, "certificate already revoked";
    TrustBadDer = "XALO-TRUST-008", 400, "malformed DER";
    TrustBadOcspRequest = "XALO-TRUST-009", 400, "malformed OCSP request";
    TrustBadTimeStampRequest = "XALO-TRUST-010", 400, "malformed time-stamp request";
    TrustUnsupportedAlgorithm = "XALO-TRUST-011", 400, "unsupported algorithm";
    TrustExport = "XALO-TRUST-012", 500, "export failed";
    TrustUpstream = "XALO-TRUST-013", 502, "trust service did not answer as expected";
    TrustBadContainer = "XALO-TRUST-020", 400, "not a valid ASiC-E container";
    TrustFileChanged = "XALO-TRUST-021", 422, "a signed file was changed";
    TrustFileMissing = "XALO-TRUST-022", 422, "a signed file is missing";
    TrustFileNotSigned = "XALO-TRUST-023", 422, "a file in the container is not covered by any signature";
    TrustBadSignature = "XALO-TRUST-024", 422, "the signature does not verify";
    TrustUnknownCa = "XALO-TRUST-025", 422, "the certificate does not chain to a trusted authority";
    TrustRevokedBeforeSigning = "XALO-TRUST-026", 422, "the certificate was revoked before signing";
    TrustBadTimeStamp = "XALO-TRUST-027", 422, "the time-stamp is missing or does not verify";
    TrustNoRevocationData = "XALO-TRUST-028", 422, "no usable certificate status for the signing time";
    TrustWrongKeyUsage = "XALO-TRUST-029", 422, "the certificate is not meant for this use";
    TrustNoSignature = "XALO-TRUST-030", 422, "the container holds no signature";
    LedgerIndexOutOfRange = "XALO-LEDGER-001", 400, "leaf index outside the tree";
    LedgerSizeOrder = "XALO-LEDGER-002", 400, "tree sizes out of order";
    LedgerProofInvalid = "XALO-LEDGER-003", 422, "Merkle proof does not verify";
    LedgerHashLength = "XALO-LEDGER-004", 400, "hash has the wrong length";
    LedgerTilePath = "XALO-LEDGER-005", 400, "malformed tile path";
    LedgerTileContent = "XALO-LEDGER-006", 422, "malformed tile or entry bundle";
    LedgerEntryTooLarge = "XALO-LEDGER-007", 413, "log entry too large";
    LedgerCheckpointMalformed = "XALO-LEDGER-008", 400, "malformed checkpoint";
    LedgerNoteMalformed = "XALO-LEDGER-009", 400, "malformed signed note";
    LedgerNoteTooLarge = "XALO-LEDGER-010", 413, "signed note too large";
    LedgerKeyMalformed = "XALO-LEDGER-011", 400, "malformed note key";
    LedgerSignatureInvalid = "XALO-LEDGER-012", 403, "note signature does not verify";
    LedgerNoteUnverified = "XALO-LEDGER-013", 403, "no trusted signature on the note";
    LedgerDuplicateSignature = "XALO-LEDGER-014", 400, "duplicate note signature";
    LedgerAmbiguousKey = "XALO-LEDGER-015", 500, "two verifiers share a key name and id";
    LedgerWitnessQuorum = "XALO-LEDGER-016", 403, "too few witness cosignatures";
    LedgerTimestamp = "XALO-LEDGER-017", 400, "cosignature time out of range";
    LedgerHashSource = "XALO-LEDGER-018", 500, "stored tree hashes missing or inconsistent";
    LedgerEntryKind = "XALO-LEDGER-101", 400, "malformed entry kind";
    LedgerBatchTooLarge = "XALO-LEDGER-102", 413, "too many entries in one request";
    LedgerInconsistent = "XALO-LEDGER-103", 500, "refusing to sign a checkpoint inconsistent with an earlier one";
    LedgerWitnessRequest = "XALO-LEDGER-104", 400, "malformed add-checkpoint request";
    LedgerUnknownLog = "XALO-LEDGER-105", 404, "the witness does not follow this log";
    LedgerEntryNotFound = "XALO-LEDGER-106", 404, "no such entry";
    LedgerVerifyFailed = "XALO-LEDGER-107", 422, "ledger verification failed";
    LedgerUpstream = "XALO-LEDGER-108", 502, "the ledger or a witness did not answer as expected";
    RegistryTaxCode = "XALO-REG-001", 400, "malformed enterprise tax code";
    RegistryPurposeRequired = "XALO-REG-002", 400, "personal data needs X-Road-UserId and X-Road-Issue";
    RegistryNotFound = "XALO-REG-003", 404, "no such person or enterprise";
    RegistryInvalid = "XALO-REG-004", 422, "the registration fails a rule of the register";
    RegistryDuplicate = "XALO-REG-005", 409, "already registered";
    RegistryForbidden = "XALO-REG-006", 403, "only the person may see their access records";
    RegistryAdminUnit = "XALO-REG-007", 400, "unknown administrative unit";
    RegistryRequestInProgress = "XALO-REG-008", 409, "a request with this idempotency key is being processed";
    RegistryRequestKeyReused = "XALO-REG-009", 422, "the idempotency key was used for a different request";
    ExchUnknownMember = "XALO-EXCH-001", 404, "no such exchange member";
    ExchUnknownSubsystem = "XALO-EXCH-002", 404, "no such subsystem";
    ExchUnknownGateway = "XALO-EXCH-003", 404, "no such gateway";
    ExchUnknownGroup = "XALO-EXCH-004", 404, "no such global group";
    ExchGlobalConfInvalid = "XALO-EXCH-005", 502, "the global configuration does not verify";
    ExchGlobalConfExpired = "XALO-EXCH-006", 503, "the global configuration has expired";
    ExchCertificate = "XALO-EXCH-007", 400, "unusable certificate";
    ExchNotAdministrator = "XALO-EXCH-008", 403, "the client certificate is not an administrator's";
    ExchUnknownService = "XALO-EXCH-009", 404, "no such service";
    ExchOpenApi = "XALO-EXCH-010", 400, "malformed OpenAPI description";
    ExchBackendUrl = "XALO-EXCH-011", 400, "unusable backend URL";
    ExchTls = "XALO-EXCH-012", 500, "TLS setup failed";
    ExchUpstream = "XALO-EXCH-013", 502, "the central server or a gateway did not answer as expected";
    ExchAdminToken = "XALO-EXCH-014", 401, "gateway administration token missing or wrong";
    ExchMessageSignature = "XALO-EXCH-015", 422, "the message signature does not verify";
    ExchCertificateStatus = "XALO-EXCH-016", 422, "the certificate status is not good";
    ExchUnknownTopic = "XALO-EXCH-017", 404, "no such topic";
    ExchTopicAccessDenied = "XALO-EXCH-018", 403, "no access right to the topic";
    ExchUnknownSubscription = "XALO-EXCH-019", 404, "no such subscription";
    ExchClientAuthentication = "XALO-EXCH-020", 401, "the information system is not registered for the client";
    ExchReloadRefused = "XALO-EXCH-021", 409, "the configuration cannot be reloaded (a change needs a restart, or there is no file)";
    ExchUnknownMessage = "XALO-EXCH-022", 404, "no such message in the message log";
    ExchMessageLogKey = "XALO-EXCH-023", 500, "the message log's encryption key is missing, unusable or does not open a logged body";
    ExchArchiveChain = "XALO-EXCH-024", 422, "the message log archive's hash chain does not hold";
    ExchEventIdReused = "XALO-EXCH-025", 422, "the event id was published on this topic before with a different body";
    ExchLogUnstamped = "XALO-EXCH-026", 503, "the message log has gone without a time-stamp past its grace period; nothing is exchanged until the time-stamping authority answers";
    WebSessionExpired = "XALO-WEB-001", 401, "the session has expired or does not exist";
    WebCsrf = "XALO-WEB-002", 403, "the form's anti-forgery token is missing or wrong";
    WebForm = "XALO-WEB-003", 400, "the form could not be read";
    WebTemplate = "XALO-WEB-004", 500, "the page could not be rendered";
    AuthInvalidRequest = "XALO-AUTH-001", 400, "malformed authorization request";
    AuthUnknownClient = "XALO-AUTH-002", 400, "unknown client or redirect URI";
    AuthInvalidClient = "XALO-AUTH-003", 401, "client authentication failed";
    AuthInvalidGrant = "XALO-AUTH-004", 400, "the authorization code or verifier is invalid, used or expired";
    AuthInvalidToken = "XALO-AUTH-005", 401, "the access token is invalid or expired";
    AuthUnsupported = "XALO-AUTH-006", 400, "unsupported grant, response type or scope";
    AuthLoginFailed = "XALO-AUTH-007", 401, "the person could not be authenticated";
    AuthTooManyAttempts = "XALO-AUTH-008", 429, "too many attempts; try again later";
    AuthCertificate = "XALO-AUTH-009", 401, "the certificate is not valid for sign-in";
    AuthSigningKey = "XALO-AUTH-010", 500, "the token signing key is unusable";
    AuthMobileIdUpstream = "XALO-AUTH-011", 502, "the Mobile-ID operator did not answer as expected";
    AuthNotMobileIdClient = "XALO-AUTH-012", 404, "the phone number and personal code are not a Mobile-ID subscription";
    AuthPinLocked = "XALO-AUTH-013", 423, "the PIN is locked after three wrong tries";
    AuthMobileIdSession = "XALO-AUTH-014", 404, "no such Mobile-ID session";
    AuthClientRegistration = "XALO-AUTH-015", 400, "the client registration is invalid";
    AuthMobileIdCancelled = "XALO-AUTH-016", 409, "the person cancelled on the phone";
    AuthMobileIdTimeout = "XALO-AUTH-017", 408, "the person did not answer on the phone in time";
    SmsUnauthorised = "XALO-SMS-001", 401, "the SMS sender's token is missing or unknown";
    SmsInvalid = "XALO-SMS-002", 400, "the text message is malformed";
    PortalDossierNotFound = "XALO-PORTAL-001", 404, "no such dossier for the signed-in person";
    PortalDossierState = "XALO-PORTAL-002", 409, "the dossier's state does not allow this action";
    PortalFormInvalid = "XALO-PORTAL-003", 422, "the form data does not match the procedure's form";
    PortalDossierChanged = "XALO-PORTAL-004", 409, "the dossier was changed meanwhile; reload it and try again";
    PortalNotSignedIn = "XALO-PORTAL-005", 401, "sign in to continue";
    PortalSignIn = "XALO-PORTAL-006", 502, "national sign-in failed or answered unexpectedly";
    PortalRating = "XALO-PORTAL-007", 400, "a rating is a whole number from 1 to 5, for a finished dossier";
    PortalBadInput = "XALO-PORTAL-008", 400, "malformed input";
    PortalNotAllowed = "XALO-PORTAL-009", 403, "the signed-in person may not do this";
    CatalogueMalformed = "XALO-CATALOGUE-001", 500, "the procedure catalogue is malformed";
    CatalogueUnknownProcedure = "XALO-CATALOGUE-002", 404, "no such procedure in the catalogue";
    CatalogueQuery = "XALO-CATALOGUE-003", 400, "malformed catalogue search";
    OfficeCalendarRange = "XALO-OFFICE-001", 422, "the date is outside the working-day calendar";
    OfficeNotOfficer = "XALO-OFFICE-002", 403, "the signed-in person is not an officer";
    OfficeRole = "XALO-OFFICE-003", 403, "the officer's role does not allow this action";
    OfficeDossierNotFound = "XALO-OFFICE-004", 404, "no such dossier in the officer's agency";
    OfficeState = "XALO-OFFICE-005", 409, "the dossier's state or step does not allow this action";
    OfficeReasonRequired = "XALO-OFFICE-006", 400, "a reason is required";
    OfficeUnknownAgency = "XALO-OFFICE-007", 400, "unknown agency";
    OfficeOfficerInput = "XALO-OFFICE-008", 400, "malformed officer record";
    OfficeAssigned = "XALO-OFFICE-009", 409, "the dossier is assigned to another officer";
    OfficeKpiQuery = "XALO-OFFICE-010", 400, "malformed KPI query";
    OfficeRegisterRefused = "XALO-OFFICE-011", 422, "the base register refused the registration; the dossier stays in processing";
    OfficeRegisterUnreachable = "XALO-OFFICE-012", 503, "the base register could not be reached; the dossier stays in processing";
    AttachTooLarge = "XALO-ATTACH-001", 413, "the attachment is larger than allowed";
    AttachType = "XALO-ATTACH-002", 415, "the attachment's content is not an accepted type (PDF, PNG, JPEG)";
    AttachMismatch = "XALO-ATTACH-003", 415, "the attachment's content does not match its file name";
    AttachEmpty = "XALO-ATTACH-004", 400, "the upload has no file or an empty one";
    AttachNotFound = "XALO-ATTACH-005", 404, "no such attachment for the signed-in person";
    AttachLimit = "XALO-ATTACH-006", 409, "the dossier already has as many attachments as allowed";
    PrefillUpstream = "XALO-PREFILL-001", 502, "the registries could not be reached through the exchange";
    PrefillRefused = "XALO-PREFILL-002", 502, "the exchange or a register refused the prefill request";
    PrefillField = "XALO-PREFILL-003", 500, "the procedure's form names an unknown prefill source";
    TrackerForbidden = "XALO-TRACKER-001", 403, "access records are shown only to the signed-in person";
    TrackerUpstream = "XALO-TRACKER-002", 502, "the access records could not be read through the exchange";
    TrackerProof = "XALO-TRACKER-003", 502, "an access record's ledger proof does not verify";
    SignatureState = "XALO-SIGN-001", 409, "the application cannot be signed in its current state";
    SignatureUpstream = "XALO-SIGN-002", 502, "the signing service failed or answered unexpectedly";
    SignatureInvalid = "XALO-SIGN-003", 422, "the signed container does not verify or covers other data";
    PayMerchantAuth = "XALO-PAY-001", 401, "merchant authentication failed";
    PayBadOrder = "XALO-PAY-002", 400, "the payment order is invalid";
    PayUnknownOrder = "XALO-PAY-003", 404, "no such payment";
    PayOrderConflict = "XALO-PAY-004", 409, "the order reference is already used for a different or settled payment";
    PayNotPending = "XALO-PAY-005", 409, "the payment is no longer waiting for the payer";
    PayBadSignature = "XALO-PAY-006", 422, "the payment provider's signature does not verify";
    PayMalformedMessage = "XALO-PAY-007", 400, "malformed payment callback, return or statement";
    PayMismatch = "XALO-PAY-008", 422, "the payment does not match the portal's order (amount, reference or merchant)";
    PayUpstream = "XALO-PAY-009", 502, "the payment provider did not answer as expected";
    PayBadDate = "XALO-PAY-010", 400, "malformed statement date (expected YYYY-MM-DD)";
    PayExpired = "XALO-PAY-011", 410, "the payment order has expired";
    PayNotConfigured = "XALO-PAY-012", 503, "payments are not configured";
    ResultNotFound = "XALO-RESULT-001", 404, "no such message or document for the signed-in person";
    ResultSeal = "XALO-RESULT-002", 500, "the agency seal is missing or unusable";
    ResultSigning = "XALO-RESULT-003", 502, "the result could not be sealed and time-stamped";
    ResultSmtp = "XALO-RESULT-004", 502, "the mail server did not accept the message";
    ResultBadAddress = "XALO-RESULT-005", 400, "malformed e-mail address or phone number";
    ResultAlreadyIssued = "XALO-RESULT-006", 409, "the dossier's result was issued already";
    ResultBadDocument = "XALO-RESULT-007", 400, "the result document's content is invalid";
    ResultSms = "XALO-RESULT-008", 502, "the SMS centre did not accept the message";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        ErrorCode::from_code(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {s}")))
    }
}

/// An error with its code and a message that says what went wrong, with context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Prefix the message with what was being done, keeping the code.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// An error for a rejected request body: the first Xalo code named in `text` (a
    /// field's own parser put it there), else `fallback`.
    pub fn from_rejection(fallback: ErrorCode, text: &str) -> Self {
        let code = text
            .match_indices("XALO-")
            .filter_map(|(i, _)| {
                let end = text[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .map_or(text.len(), |e| i + e);
                ErrorCode::from_code(&text[i..end])
            })
            .next()
            .unwrap_or(fallback);
        Error::new(code, text)
    }
}

/// Attach context to any fallible result whose error converts into [`Error`].
pub trait ResultExt<T> {
    fn context(self, what: impl fmt::Display) -> Result<T, Error>;
}

impl<T, E: Into<Error>> ResultExt<T> for Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|e| e.into().context(what))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorCode::ServerIo, e.to_string())
    }
}

/// The JSON body of an error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub status: u16,
    pub title: String,
    pub message: String,
}

impl From<&Error> for ErrorBody {
    fn from(e: &Error) -> Self {
        ErrorBody {
            code: e.code,
            status: e.code.status(),
            title: e.code.title().to_owned(),
            message: e.message.clone(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, "request failed");
        }
        (status, axum::Json(ErrorBody::from(&self))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for &c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert_eq!(ErrorCode::from_code(c.as_str()), Some(c));
            assert!(StatusCode::from_u16(c.status()).is_ok());
            assert!(c.as_str().starts_with("XALO-"));
        }
    }

    #[test]
    fn rejections_keep_the_field_code() {
        let e = Error::from_rejection(
            ErrorCode::HttpBadRequest,
            "Failed to deserialize the JSON body: mother: XALO-ID-001: a VN personal code has 12 digits",
        );
        assert_eq!(e.code, ErrorCode::PersonalCodeLength);
        let e = Error::from_rejection(ErrorCode::HttpBadRequest, "expected value at line 1");
        assert_eq!(e.code, ErrorCode::HttpBadRequest);
    }

    #[test]
    fn json_body() {
        let e = Error::new(
            ErrorCode::PersonalCodeCheckDigit,
            "check digit 8, expected 9",
        )
        .context("parsing subject");
        let body = serde_json::to_value(ErrorBody::from(&e)).unwrap();
        assert_eq!(body["code"], "XALO-ID-004");
        assert_eq!(body["status"], 400);
        assert_eq!(
            body["message"],
            "parsing subject: check digit 8, expected 9"
        );
    }
}
