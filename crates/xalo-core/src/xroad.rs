//! X-Road identifiers of members, subsystems, clients and services.
//!
//! Written with `/` between parts, as X-Road's REST message protocol uses them in
//! `X-Road-Client` and in `/r1/{serviceId}`: `VN/GOV/000001/population/persons`.
//! Each part is limited to the character set that protocol allows (letters, digits and
//! `'()+,-.=?`), so `/` can never occur inside a part and the written form is unambiguous.
//! In URL paths every part is percent-encoded ([`ServiceId::to_path`]), since `?` and
//! several of the allowed symbols are not safe there.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest identifier part accepted, as X-Road's central server limits codes.
pub const MAX_PART_LEN: usize = 255;

/// Everything but the RFC 3986 unreserved characters is encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("the {part} is empty")]
    Empty { part: &'static str },
    #[error(
        "the {part} contains {found:?}, outside X-Road's identifier characters (A-Z a-z 0-9 ' ( ) + , - . = ?)"
    )]
    BadCharacter { part: &'static str, found: char },
    #[error("the {part} is longer than {MAX_PART_LEN} characters")]
    TooLong { part: &'static str },
    #[error("a {kind} identifier has {expected} parts separated by '/', this one has {found}")]
    Parts {
        kind: &'static str,
        expected: &'static str,
        found: usize,
    },
    #[error("the {part} is not valid percent-encoded UTF-8")]
    BadEncoding { part: &'static str },
}

impl IdentifierError {
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode as C;
        match self {
            Self::Empty { .. } => C::IdentifierEmpty,
            Self::BadCharacter { .. } => C::IdentifierCharacter,
            Self::TooLong { .. } => C::IdentifierTooLong,
            Self::Parts { .. } => C::IdentifierParts,
            Self::BadEncoding { .. } => C::IdentifierEncoding,
        }
    }
}

impl From<IdentifierError> for crate::Error {
    fn from(e: IdentifierError) -> Self {
        crate::Error::new(e.code(), e.to_string())
    }
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "'()+,-.=?".contains(c)
}

fn check(part: &'static str, value: &str) -> Result<String, IdentifierError> {
    if value.is_empty() {
        return Err(IdentifierError::Empty { part });
    }
    if value.len() > MAX_PART_LEN {
        return Err(IdentifierError::TooLong { part });
    }
    if let Some(found) = value.chars().find(|&c| !is_allowed(c)) {
        return Err(IdentifierError::BadCharacter { part, found });
    }
    Ok(value.to_owned())
}

fn encode(s: &str) -> impl fmt::Display + '_ {
    utf8_percent_encode(s, SEGMENT)
}

fn decode_segments<'a>(part: &'static str, path: &'a str) -> Result<Vec<String>, IdentifierError> {
    path.trim_matches('/')
        .split('/')
        .map(|seg: &'a str| {
            percent_decode_str(seg)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| IdentifierError::BadEncoding { part })
        })
        .collect()
}

/// A member of an X-Road instance: `INSTANCE/CLASS/CODE`, e.g. `VN/GOV/000001`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    instance: String,
    class: String,
    code: String,
}

impl MemberId {
    pub fn new(instance: &str, class: &str, code: &str) -> Result<Self, IdentifierError> {
        Ok(Self {
            instance: check("instance", instance)?,
            class: check("member class", class)?,
            code: check("member code", code)?,
        })
    }
    pub fn instance(&self) -> &str {
        &self.instance
    }
    pub fn class(&self) -> &str {
        &self.class
    }
    pub fn code(&self) -> &str {
        &self.code
    }
    /// The subsystem `code` of this member.
    pub fn subsystem(&self, code: &str) -> Result<SubsystemId, IdentifierError> {
        Ok(SubsystemId {
            member: self.clone(),
            code: check("subsystem code", code)?,
        })
    }
    fn from_parts(p: &[String]) -> Result<Self, IdentifierError> {
        match p {
            [i, c, m] => Self::new(i, c, m),
            _ => Err(IdentifierError::Parts {
                kind: "member",
                expected: "3",
                found: p.len(),
            }),
        }
    }
    /// The member as percent-encoded URL path segments.
    pub fn to_path(&self) -> String {
        format!(
            "{}/{}/{}",
            encode(&self.instance),
            encode(&self.class),
            encode(&self.code)
        )
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.instance, self.class, self.code)
    }
}

impl FromStr for MemberId {
    type Err = IdentifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<String> = s.split('/').map(str::to_owned).collect();
        Self::from_parts(&parts)
    }
}

/// A subsystem of a member: `INSTANCE/CLASS/CODE/SUBSYSTEM`, e.g. `VN/GOV/000001/population`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubsystemId {
    member: MemberId,
    code: String,
}

impl SubsystemId {
    pub fn member(&self) -> &MemberId {
        &self.member
    }
    pub fn code(&self) -> &str {
        &self.code
    }
    /// The service `code` (optionally of a `version`) that this subsystem provides.
    pub fn service(&self, code: &str, version: Option<&str>) -> Result<ServiceId, IdentifierError> {
        Ok(ServiceId {
            provider: self.clone(),
            code: check("service code", code)?,
            version: version.map(|v| check("service version", v)).transpose()?,
        })
    }
    fn from_parts(p: &[String]) -> Result<Self, IdentifierError> {
        match p {
            [i, c, m, s] => MemberId::new(i, c, m)?.subsystem(s),
            _ => Err(IdentifierError::Parts {
                kind: "subsystem",
                expected: "4",
                found: p.len(),
            }),
        }
    }
    pub fn to_path(&self) -> String {
        format!("{}/{}", self.member.to_path(), encode(&self.code))
    }
    pub fn from_path(path: &str) -> Result<Self, IdentifierError> {
        Self::from_parts(&decode_segments("subsystem", path)?)
    }
}

impl fmt::Display for SubsystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.member, self.code)
    }
}

impl FromStr for SubsystemId {
    type Err = IdentifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<String> = s.split('/').map(str::to_owned).collect();
        Self::from_parts(&parts)
    }
}

/// The party that calls a service, as the `X-Road-Client` header names it: a member or one
/// of its subsystems.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientId {
    Member(MemberId),
    Subsystem(SubsystemId),
}

impl ClientId {
    pub fn member(&self) -> &MemberId {
        match self {
            ClientId::Member(m) => m,
            ClientId::Subsystem(s) => s.member(),
        }
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Member(m) => m.fmt(f),
            ClientId::Subsystem(s) => s.fmt(f),
        }
    }
}

impl ClientId {
    /// Parse an `X-Road-Client` header, whose parts PR-REST (4.3) percent-encodes: `%3F`
    /// and `?` are the same part (no allowed character is `%`, so decoding is unambiguous).
    pub fn from_header(s: &str) -> Result<ClientId, IdentifierError> {
        let parts = s
            .split('/')
            .map(|seg| {
                percent_decode_str(seg)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| IdentifierError::BadEncoding { part: "client" })
            })
            .collect::<Result<Vec<String>, _>>()?;
        Self::from_part_list(parts)
    }

    fn from_part_list(parts: Vec<String>) -> Result<ClientId, IdentifierError> {
        match parts.len() {
            3 => MemberId::from_parts(&parts).map(ClientId::Member),
            4 => SubsystemId::from_parts(&parts).map(ClientId::Subsystem),
            n => Err(IdentifierError::Parts {
                kind: "client",
                expected: "3 or 4",
                found: n,
            }),
        }
    }
}

impl FromStr for ClientId {
    type Err = IdentifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_part_list(s.split('/').map(str::to_owned).collect())
    }
}

/// A service: `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE[/VERSION]`.
///
/// Services belong to subsystems, as in X-Road's REST protocol; the optional sixth part is
/// the service version. (A member-level service would make a five-part form ambiguous.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId {
    provider: SubsystemId,
    code: String,
    version: Option<String>,
}

impl ServiceId {
    pub fn provider(&self) -> &SubsystemId {
        &self.provider
    }
    pub fn code(&self) -> &str {
        &self.code
    }
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    fn from_parts(p: &[String]) -> Result<Self, IdentifierError> {
        match p {
            [i, c, m, s, code] => MemberId::new(i, c, m)?.subsystem(s)?.service(code, None),
            [i, c, m, s, code, v] => MemberId::new(i, c, m)?.subsystem(s)?.service(code, Some(v)),
            _ => Err(IdentifierError::Parts {
                kind: "service",
                expected: "5 or 6",
                found: p.len(),
            }),
        }
    }
    /// Percent-encoded path segments, as they follow `/r1/` in a gateway URL.
    pub fn to_path(&self) -> String {
        match &self.version {
            Some(v) => format!(
                "{}/{}/{}",
                self.provider.to_path(),
                encode(&self.code),
                encode(v)
            ),
            None => format!("{}/{}", self.provider.to_path(), encode(&self.code)),
        }
    }
    /// Parse percent-encoded path segments (the inverse of [`ServiceId::to_path`]).
    pub fn from_path(path: &str) -> Result<Self, IdentifierError> {
        Self::from_parts(&decode_segments("service", path)?)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.code)?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for ServiceId {
    type Err = IdentifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<String> = s.split('/').map(str::to_owned).collect();
        Self::from_parts(&parts)
    }
}

macro_rules! serde_as_string {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_as_string!(MemberId, SubsystemId, ClientId, ServiceId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_client_header_is_percent_decoded_part_by_part() {
        let plain: ClientId = "VN/GOV/000007/portal".parse().unwrap();
        assert_eq!(
            ClientId::from_header("VN/GOV/000007/port%61l").unwrap(),
            plain
        );
        assert_eq!(
            ClientId::from_header("VN/GOV/000007/a%3Fb").unwrap(),
            ClientId::from_header("VN/GOV/000007/a?b").unwrap()
        );
        assert!(matches!(
            ClientId::from_header("VN/GOV/000007/a%2Fb"),
            Err(IdentifierError::BadCharacter { found: '/', .. })
        ));
        assert!(matches!(
            ClientId::from_header("VN/GOV/000007/%FF"),
            Err(IdentifierError::BadEncoding { .. })
        ));
        assert!("VN/GOV/000007/port%61l".parse::<ClientId>().is_err());
    }

    #[test]
    fn examples() {
        let s: ServiceId = "VN/GOV/000001/population/persons".parse().unwrap();
        assert_eq!(s.provider().member().code(), "000001");
        assert_eq!(s.provider().code(), "population");
        assert_eq!(s.version(), None);
        let v: ServiceId = "VN/GOV/000001/population/persons/v2".parse().unwrap();
        assert_eq!(v.version(), Some("v2"));
        let c: ClientId = "VN/COM/0101234567".parse().unwrap();
        assert!(matches!(c, ClientId::Member(_)));
        let odd: ServiceId = "VN/GOV/a?b/x(1)/get=all".parse().unwrap();
        assert_eq!(odd.to_path(), "VN/GOV/a%3Fb/x%281%29/get%3Dall");
        assert_eq!(ServiceId::from_path(&odd.to_path()).unwrap(), odd);
    }

    #[test]
    fn defects() {
        use IdentifierError as E;
        assert!(matches!(
            "VN/GOV".parse::<MemberId>(),
            Err(E::Parts { found: 2, .. })
        ));
        assert!(matches!(
            "VN//1".parse::<MemberId>(),
            Err(E::Empty {
                part: "member class"
            })
        ));
        assert!(matches!(
            "VN/GOV/1:2".parse::<MemberId>(),
            Err(E::BadCharacter { found: ':', .. })
        ));
        assert!(matches!(
            "VN/GOV/Bộ".parse::<MemberId>(),
            Err(E::BadCharacter { found: 'ộ', .. })
        ));
        let long = "x".repeat(256);
        assert!(matches!(
            format!("VN/GOV/{long}").parse::<MemberId>(),
            Err(E::TooLong { .. })
        ));
        assert!(matches!(
            ServiceId::from_path("VN/GOV/1/s/%FF"),
            Err(E::BadEncoding { .. })
        ));
        assert!(matches!(
            ServiceId::from_path("VN/GOV/1/s/a%2Fb"),
            Err(E::BadCharacter { found: '/', .. })
        ));
    }

    fn part() -> impl Strategy<Value = String> {
        "[A-Za-z0-9'()+,.=?-]{1,20}"
    }

    proptest! {
        #[test]
        fn service_round_trips(i in part(), c in part(), m in part(), s in part(), code in part(), v in proptest::option::of(part())) {
            let id = MemberId::new(&i, &c, &m).unwrap().subsystem(&s).unwrap().service(&code, v.as_deref()).unwrap();
            prop_assert_eq!(id.to_string().parse::<ServiceId>().unwrap(), id.clone());
            prop_assert_eq!(ServiceId::from_path(&id.to_path()).unwrap(), id.clone());
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<ServiceId>(&json).unwrap(), id.clone());
            // An encoded path never carries a raw query or fragment delimiter.
            prop_assert!(!id.to_path().contains(['?', '#']));
        }

        #[test]
        fn client_round_trips(i in part(), c in part(), m in part(), s in proptest::option::of(part())) {
            let member = MemberId::new(&i, &c, &m).unwrap();
            let id = match s {
                Some(s) => ClientId::Subsystem(member.subsystem(&s).unwrap()),
                None => ClientId::Member(member),
            };
            prop_assert_eq!(id.to_string().parse::<ClientId>().unwrap(), id);
        }

        #[test]
        fn subsystem_round_trips(i in part(), c in part(), m in part(), s in part()) {
            let id = MemberId::new(&i, &c, &m).unwrap().subsystem(&s).unwrap();
            prop_assert_eq!(id.to_string().parse::<SubsystemId>().unwrap(), id.clone());
            prop_assert_eq!(SubsystemId::from_path(&id.to_path()).unwrap(), id);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,60}") {
            let _ = s.parse::<ServiceId>();
            let _ = s.parse::<ClientId>();
            let _ = ServiceId::from_path(&s);
        }
    }
}
