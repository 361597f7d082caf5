//! Who logged in, and how: the claims the provider asserts, from the certificate that
//! authenticated the person and, for citizens, the population register.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use x509_cert::Certificate;
use xalo_core::{Country, Error, ErrorCode, PersonalCode};

/// The means of authentication, as `amr` names them (TARA's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    #[serde(rename = "idcard")]
    IdCard,
    #[serde(rename = "mID")]
    MobileId,
}

impl Method {
    pub fn amr(self) -> &'static str {
        match self {
            Method::IdCard => "idcard",
            Method::MobileId => "mID",
        }
    }
    /// The eIDAS level of assurance: both are certificate-based with a key held by the
    /// person (card chip, SIM) after an in-person identity check.
    pub fn acr(self) -> Level {
        Level::High
    }
    /// The scope that selects this method (TARA §4.1.4).
    pub fn scope(self) -> &'static str {
        match self {
            Method::IdCard => "idcard",
            Method::MobileId => "mid",
        }
    }
}

/// eIDAS level of assurance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Low,
    Substantial,
    High,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Substantial => "substantial",
            Level::High => "high",
        }
    }
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "low" => Some(Level::Low),
            "substantial" => Some(Level::Substantial),
            "high" => Some(Level::High),
            _ => None,
        }
    }
}

/// An authenticated person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub code: PersonalCode,
    pub given_name: String,
    pub family_name: String,
    /// `YYYY-MM-DD` when known.
    pub birthdate: Option<String>,
    pub method: Method,
    /// E.164, when Mobile-ID authenticated the person.
    pub phone_number: Option<String>,
}

impl Identity {
    /// A foreigner with an e-Residency digital identity: a personal code of the e-Residency
    /// programme's country rather than a Vietnamese one.
    pub fn is_e_resident(&self) -> bool {
        self.code.country() != Country::Vietnam
    }

    pub fn amr(&self) -> Vec<&'static str> {
        let mut amr = vec![self.method.amr()];
        if self.is_e_resident() {
            amr.push("eres");
        }
        amr
    }

    /// The person's claims for the granted scopes (ID token and userinfo alike).
    pub fn claims(&self, scope: &[String]) -> Value {
        let mut c = json!({
            "sub": self.code.to_string(),
            "given_name": self.given_name,
            "family_name": self.family_name,
            "amr": self.amr(),
            "acr": self.method.acr().as_str(),
            "profile_attributes": {
                "given_name": self.given_name,
                "family_name": self.family_name,
            },
        });
        if let Some(b) = &self.birthdate {
            c["birthdate"] = json!(b);
            c["profile_attributes"]["date_of_birth"] = json!(b);
        }
        if scope.iter().any(|s| s == "phone")
            && let Some(p) = &self.phone_number
        {
            c["phone_number"] = json!(p);
            c["phone_number_verified"] = json!(true);
        }
        if scope.iter().any(|s| s == "eres") {
            c["e_resident"] = json!(self.is_e_resident());
            c["nationality_code"] = json!(self.code.country().prefix());
        }
        c
    }
}

/// The personal code, given name and surname in a person certificate's subject
/// (`serialNumber` `PNOVN-…`, `givenName`, `surname`).
pub fn person_of_certificate(cert: &Certificate) -> Result<(PersonalCode, String, String), Error> {
    use der::asn1::{PrintableStringRef, Utf8StringRef};
    const SERIAL: &str = "2.5.4.5";
    const GIVEN: &str = "2.5.4.42";
    const SURNAME: &str = "2.5.4.4";
    let mut found: std::collections::HashMap<String, String> = Default::default();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let value = atv
                .value
                .decode_as::<Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    atv.value
                        .decode_as::<PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_owned())
                });
            if let Ok(v) = value {
                found.insert(atv.oid.to_string(), v);
            }
        }
    }
    let bad = |m: &str| Error::new(ErrorCode::AuthCertificate, m.to_owned());
    let serial = found
        .get(SERIAL)
        .ok_or_else(|| bad("the certificate names no person (serialNumber)"))?;
    if !serial.starts_with("PNO") {
        return Err(bad(
            "the certificate's serialNumber is not a personal code (PNO…)",
        ));
    }
    let code: PersonalCode = serial
        .parse()
        .map_err(|e| bad(&format!("personal code in the certificate: {e}")))?;
    Ok((
        code,
        found.get(GIVEN).cloned().unwrap_or_default(),
        found.get(SURNAME).cloned().unwrap_or_default(),
    ))
}

/// What the population register says about a person.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredPerson {
    pub family_name: String,
    #[serde(default)]
    pub middle_name: String,
    pub given_name: String,
    pub birth_date: String,
}

/// Ask the population register for a person's names and birth date, on the person's own
/// behalf and for the purpose of signing in (the access shows in their data tracker).
/// `None` when the register does not know them (e-Residents are in another country's).
pub async fn look_up(
    http: &reqwest::Client,
    registry_url: &str,
    code: &PersonalCode,
) -> Result<Option<RegisteredPerson>, Error> {
    let url = format!(
        "{}/population/persons/{code}",
        registry_url.trim_end_matches('/')
    );
    let upstream = |e: String| Error::new(ErrorCode::HttpUnavailable, format!("{url}: {e}"));
    let r = http
        .get(&url)
        .header("X-Road-UserId", code.to_string())
        .header("X-Road-Issue", "national sign-in")
        .header("X-Road-Client", "VN/GOV/id/sign-in")
        .send()
        .await
        .map_err(|e| upstream(e.to_string()))?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !r.status().is_success() {
        return Err(upstream(format!("answered {}", r.status())));
    }
    r.json()
        .await
        .map(Some)
        .map_err(|e| upstream(e.to_string()))
}

/// Build the identity: names from the register where it knows the person (Vietnamese
/// given name is middle and given name together), else from the certificate.
pub async fn complete(
    http: &reqwest::Client,
    registry_url: Option<&str>,
    code: PersonalCode,
    cert_names: (String, String),
    method: Method,
    phone_number: Option<String>,
) -> Identity {
    let registered = match registry_url {
        Some(url) if code.country() == Country::Vietnam => match look_up(http, url, &code).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "population register lookup failed; using the certificate");
                None
            }
        },
        _ => None,
    };
    let (given_name, family_name, birthdate) = match registered {
        Some(p) => {
            let given = [p.middle_name.as_str(), p.given_name.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            (given, p.family_name, Some(p.birth_date))
        }
        None => (
            cert_names.0,
            cert_names.1,
            code.birth_date().map(|d| d.format("%Y-%m-%d").to_string()),
        ),
    };
    Identity {
        code,
        given_name,
        family_name,
        birthdate,
        method,
        phone_number,
    }
}
