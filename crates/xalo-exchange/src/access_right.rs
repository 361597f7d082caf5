//! Access rights: who may call which endpoint of a service. Nothing is allowed unless a
//! right grants it (default deny). A right names a service, an endpoint (a method or `*`,
//! and a path template where `{name}` or `*` matches one segment and a final `**` any
//! rest) and a subject: a client (member or subsystem) or a global group.

use serde::{Deserialize, Serialize};
use xalo_core::{ClientId, Error, ErrorCode};

/// A method and path template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub method: String,
    pub path: String,
}

impl Endpoint {
    pub fn new(method: &str, path: &str) -> Result<Endpoint, Error> {
        let method = method.to_ascii_uppercase();
        if method != "*" && !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Error::new(
                ErrorCode::HttpBadRequest,
                format!("bad method {method:?}"),
            ));
        }
        if path != "**" && !path.starts_with('/') {
            return Err(Error::new(
                ErrorCode::HttpBadRequest,
                format!("an endpoint path starts with / (or is ** for all): {path:?}"),
            ));
        }
        Ok(Endpoint {
            method,
            path: path.to_owned(),
        })
    }

    /// Every method and path.
    pub fn all() -> Endpoint {
        Endpoint {
            method: "*".into(),
            path: "**".into(),
        }
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && path_matches(&self.path, path)
    }
}

/// Whether `path` (of a request) fits `template`.
pub fn path_matches(template: &str, path: &str) -> bool {
    if template == "**" {
        return true;
    }
    let path = if path.is_empty() { "/" } else { path };
    let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, seg) in t.iter().enumerate() {
        if *seg == "**" && i == t.len() - 1 {
            return true;
        }
        let Some(actual) = p.get(i) else {
            return false;
        };
        let wildcard = *seg == "*" || (seg.starts_with('{') && seg.ends_with('}'));
        if wildcard {
            if actual.is_empty() {
                return false;
            }
        } else if seg != actual {
            return false;
        }
    }
    t.len() == p.len()
}

/// Who a right is granted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Client(ClientId),
    /// A global group of the central server, by code.
    Group(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Client(c) => c.fmt(f),
            Subject::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl std::str::FromStr for Subject {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.strip_prefix("group:") {
            Some(code) if !code.is_empty() => Ok(Subject::Group(code.to_owned())),
            Some(_) => Err(Error::new(ErrorCode::HttpBadRequest, "empty group code")),
            None => Ok(Subject::Client(s.parse()?)),
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message))
    }
}

/// One granted right on a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRight {
    pub endpoint: Endpoint,
    pub subject: Subject,
}

impl AccessRight {
    /// Whether this right lets `client` (in `groups`) call `method path`.
    pub fn allows(&self, client: &ClientId, groups: &[&str], method: &str, path: &str) -> bool {
        let subject = match &self.subject {
            Subject::Client(c) => c == client,
            Subject::Group(g) => groups.contains(&g.as_str()),
        };
        subject && self.endpoint.matches(method, path)
    }
}

/// The rights on one service, indexed by subject: a widely used service is granted to
/// thousands of subsystems, and a message checks only the rights of its own client and
/// of the client's groups.
///
/// The index is a sorted table of (hash of the subject, position) pairs: a binary search
/// finds the candidates and each right's own subject confirms them, so the subjects are
/// not copied into the index (with tens of thousands of rights, a map keyed by subject
/// would hold each one twice).
#[derive(Debug, Clone, Default)]
pub struct Rights {
    rights: Vec<AccessRight>,
    hasher: std::hash::RandomState,
    /// Positions in `rights`, by the hash of their subject, in the order granted.
    by_subject: Vec<(u64, u32)>,
}

/// What the index hashes: a client and a group of the same name are different subjects.
#[derive(Hash)]
enum Key<'a> {
    Client(&'a ClientId),
    Group(&'a str),
}

impl Rights {
    pub fn new(rights: Vec<AccessRight>) -> Rights {
        let hasher = std::hash::RandomState::new();
        // Positions fit in u32: a service is not granted four billion times.
        let mut by_subject: Vec<(u64, u32)> = rights
            .iter()
            .enumerate()
            .map(|(i, r)| (hash(&hasher, &key(&r.subject)), i as u32))
            .collect();
        by_subject.sort_unstable();
        Rights {
            rights,
            hasher,
            by_subject,
        }
    }

    /// Positions of the rights granted to exactly `subject`.
    fn granted<'a>(&'a self, subject: Key<'a>) -> impl Iterator<Item = usize> + 'a {
        let h = hash(&self.hasher, &subject);
        let from = self.by_subject.partition_point(|(k, _)| *k < h);
        self.by_subject[from..]
            .iter()
            .take_while(move |(k, _)| *k == h)
            .map(|(_, at)| *at as usize)
            .filter(move |&i| {
                self.rights
                    .get(i)
                    .is_some_and(|r| match (&r.subject, &subject) {
                        (Subject::Client(c), Key::Client(k)) => c == *k,
                        (Subject::Group(g), Key::Group(k)) => g == k,
                        _ => false,
                    })
            })
    }

    /// Positions of the rights granted to `client` itself or to one of its `groups`.
    fn positions<'a>(
        &'a self,
        client: &'a ClientId,
        groups: &'a [&str],
    ) -> impl Iterator<Item = usize> + 'a {
        self.granted(Key::Client(client))
            .chain(groups.iter().flat_map(move |g| self.granted(Key::Group(g))))
    }

    /// Whether a right lets `client` (in `groups`) call `method path`.
    pub fn allows(&self, client: &ClientId, groups: &[&str], method: &str, path: &str) -> bool {
        self.positions(client, groups)
            .filter_map(|i| self.rights.get(i))
            .any(|r| r.endpoint.matches(method, path))
    }

    /// The rights granted to `client` itself or to one of its `groups`, in the order
    /// they were granted.
    pub fn granted_to(&self, client: &ClientId, groups: &[&str]) -> Vec<&AccessRight> {
        let mut at: Vec<usize> = self.positions(client, groups).collect();
        at.sort_unstable();
        at.dedup();
        at.into_iter().filter_map(|i| self.rights.get(i)).collect()
    }

    pub fn as_slice(&self) -> &[AccessRight] {
        &self.rights
    }
}

fn key(subject: &Subject) -> Key<'_> {
    match subject {
        Subject::Client(c) => Key::Client(c),
        Subject::Group(g) => Key::Group(g),
    }
}

fn hash(hasher: &std::hash::RandomState, key: &Key<'_>) -> u64 {
    std::hash::BuildHasher::hash_one(hasher, key)
}

impl std::ops::Deref for Rights {
    type Target = [AccessRight];
    fn deref(&self) -> &[AccessRight] {
        &self.rights
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(path_matches("/persons/{code}", "/persons/VN001"));
        assert!(!path_matches("/persons/{code}", "/persons"));
        assert!(!path_matches("/persons/{code}", "/persons/a/b"));
        assert!(path_matches("/persons/**", "/persons/a/b"));
        assert!(path_matches("**", ""));
        assert!(path_matches("/", ""));
        assert!(!path_matches("/a", "/b"));
    }

    #[test]
    fn rights_need_subject_and_endpoint() {
        let c: ClientId = "VN/GOV/1/a".parse().unwrap();
        let other: ClientId = "VN/GOV/2/a".parse().unwrap();
        let r = AccessRight {
            endpoint: Endpoint::new("GET", "/x/{id}").unwrap(),
            subject: Subject::Client(c.clone()),
        };
        assert!(r.allows(&c, &[], "GET", "/x/1"));
        assert!(!r.allows(&c, &[], "POST", "/x/1"));
        assert!(!r.allows(&other, &[], "GET", "/x/1"));
        let g = AccessRight {
            endpoint: Endpoint::all(),
            subject: "group:ministries".parse().unwrap(),
        };
        assert!(g.allows(&other, &["ministries"], "DELETE", "/y"));
        assert!(!g.allows(&other, &["banks"], "DELETE", "/y"));
    }

    #[test]
    fn indexed_rights_answer_as_each_right_would() {
        let right = |subject: &str, method: &str, path: &str| AccessRight {
            endpoint: Endpoint::new(method, path).unwrap(),
            subject: subject.parse().unwrap(),
        };
        let mut all: Vec<AccessRight> = (0..5000)
            .map(|i| {
                right(
                    &format!("VN/COM/{}/system", 900_000 + i),
                    "GET",
                    "/persons/{code}",
                )
            })
            .collect();
        all.push(right("group:ministries", "POST", "/persons"));
        all.push(right("VN/GOV/000001/portal", "*", "**"));
        // A second right of one subject: both are found, in the order granted.
        all.push(right("VN/COM/904998/system", "DELETE", "/persons/{code}"));
        let rights = Rights::new(all.clone());
        assert_eq!(rights.len(), all.len());
        let cases: &[(&str, &[&str], &str, &str)] = &[
            ("VN/COM/904999/system", &[], "GET", "/persons/VN1"),
            ("VN/COM/904998/system", &[], "DELETE", "/persons/VN1"),
            ("VN/COM/904999/system", &[], "POST", "/persons"),
            ("VN/COM/904999/system", &["ministries"], "POST", "/persons"),
            ("VN/COM/905000/system", &[], "GET", "/persons/VN1"),
            ("VN/GOV/000001/portal", &[], "DELETE", "/anything/at/all"),
            ("VN/GOV/000001", &[], "GET", "/persons/VN1"),
            (
                "VN/GOV/000002/x",
                &["ministries", "other"],
                "POST",
                "/persons",
            ),
            ("VN/GOV/000002/x", &["other"], "POST", "/persons"),
        ];
        for (client, groups, method, path) in cases {
            let client: ClientId = client.parse().unwrap();
            let scanned = all.iter().any(|r| r.allows(&client, groups, method, path));
            assert_eq!(
                rights.allows(&client, groups, method, path),
                scanned,
                "{client} {groups:?} {method} {path}"
            );
            let granted: Vec<&AccessRight> = all
                .iter()
                .filter(|r| match &r.subject {
                    Subject::Client(c) => *c == client,
                    Subject::Group(g) => groups.contains(&g.as_str()),
                })
                .collect();
            assert_eq!(rights.granted_to(&client, groups), granted, "{client}");
        }
        assert!(!Rights::default().allows(
            &"VN/GOV/000001/portal".parse().unwrap(),
            &[],
            "GET",
            "/"
        ));
    }
}
