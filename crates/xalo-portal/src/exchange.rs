//! The portal as an information system on the exchange: a client subsystem of the
//! Government Office's member (`VN/GOV/000007/portal`) that calls the base registries
//! through its OWN security gateway (the client side, `/r1/{service}/…`), never the
//! registries directly. Every call names the person on whose behalf it is made
//! (`X-Road-UserId`, the signed-in citizen) and why (`X-Road-Issue`: the dossier code, or
//! the data tracker), which the registers record and the citizen later sees.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use xalo_core::{Error, ErrorCode, PersonalCode, ServiceId, SubsystemId};

/// `exchange` in `[roles.portal]`: how the portal reaches its gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSettings {
    /// The portal member's security gateway (its client proxy), e.g. `http://127.0.0.1:7301`.
    pub gateway_url: String,
    /// The subsystem the portal calls as.
    #[serde(default = "default_client")]
    pub client: String,
    /// Extra headers for the gateway: the client key it issued to the portal.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The population register's subsystem.
    #[serde(default = "default_population")]
    pub population: String,
    /// The business register's subsystem.
    #[serde(default = "default_business")]
    pub business: String,
}

fn default_client() -> String {
    "VN/GOV/000007/portal".into()
}
fn default_population() -> String {
    "VN/GOV/000001/population".into()
}
fn default_business() -> String {
    "VN/GOV/000002/business".into()
}

impl ExchangeSettings {
    /// Settings with the demo nation's subsystems, for a gateway at `gateway_url`.
    pub fn new(gateway_url: &str) -> ExchangeSettings {
        ExchangeSettings {
            gateway_url: gateway_url.to_owned(),
            client: default_client(),
            headers: BTreeMap::new(),
            population: default_population(),
            business: default_business(),
        }
    }
}

/// Which register a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    Population,
    Business,
}

/// How a call through the exchange failed, for the page to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The gateway could not be reached, or answered something unreadable.
    Unreachable(String),
    /// The gateway or the provider refused: HTTP status, and the X-Road error type or the
    /// register's error code, and its message.
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    /// The register has no such record (404 from the provider).
    NotFound(String),
}

impl CallError {
    /// The coded error for the page, with `code` for refusals and unreachability.
    pub fn into_error(self, unreachable: ErrorCode, refused: ErrorCode) -> Error {
        match self {
            CallError::Unreachable(m) => Error::new(unreachable, m),
            CallError::Refused {
                status,
                kind,
                message,
            } => Error::new(
                refused,
                format!("the exchange answered {status} ({kind}): {message}"),
            ),
            CallError::NotFound(m) => Error::new(refused, m),
        }
    }
}

/// A client of the portal's security gateway.
#[derive(Clone, Debug)]
pub struct Exchange {
    gateway: String,
    client: SubsystemId,
    headers: BTreeMap<String, String>,
    population: SubsystemId,
    business: SubsystemId,
    http: reqwest::Client,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::ConfigInvalid,
        format!("portal exchange {what}: {e}"),
    )
}

impl Exchange {
    pub fn new(s: &ExchangeSettings) -> Result<Exchange, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        Ok(Exchange {
            gateway: s.gateway_url.trim_end_matches('/').to_owned(),
            client: s.client.parse().map_err(|e| invalid("client", e))?,
            headers: s.headers.clone(),
            population: s.population.parse().map_err(|e| invalid("population", e))?,
            business: s.business.parse().map_err(|e| invalid("business", e))?,
            http,
        })
    }

    /// The subsystem the portal calls as.
    pub fn client(&self) -> &SubsystemId {
        &self.client
    }

    fn service(&self, register: Register, code: &str) -> Result<ServiceId, Error> {
        let provider = match register {
            Register::Population => &self.population,
            Register::Business => &self.business,
        };
        Ok(provider.service(code, None)?)
    }

    /// `GET` `service` + `rest` (e.g. `persons`, `/VN001…/household`) of `register`, on
    /// behalf of `user` for `issue`; the JSON answer.
    pub async fn get<T: DeserializeOwned>(
        &self,
        register: Register,
        service: &str,
        rest: &str,
        user: &PersonalCode,
        issue: &str,
    ) -> Result<T, CallError> {
        let url = self.url(register, service, rest)?;
        let req = self.http.get(&url);
        self.send(req, &user.to_string(), issue).await
    }

    /// `POST` `body` to `service` of `register` on behalf of `user` for `issue`, once: a
    /// retry with the same `idempotency_key` gets the first call's answer from the register.
    pub async fn post<T: DeserializeOwned>(
        &self,
        register: Register,
        service: &str,
        body: &serde_json::Value,
        user: &str,
        issue: &str,
        idempotency_key: &str,
    ) -> Result<T, CallError> {
        let url = self.url(register, service, "")?;
        let req = self
            .http
            .post(&url)
            .header("Idempotency-Key", header_value(idempotency_key))
            .json(body);
        self.send(req, user, issue).await
    }

    fn url(&self, register: Register, service: &str, rest: &str) -> Result<String, CallError> {
        let service = self
            .service(register, service)
            .map_err(|e| CallError::Unreachable(e.message))?;
        Ok(format!("{}/r1/{}{rest}", self.gateway, service.to_path()))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        user: &str,
        issue: &str,
    ) -> Result<T, CallError> {
        let mut req = req
            .header("X-Road-Client", self.client.to_string())
            .header("X-Road-UserId", header_value(user))
            // A header value is ASCII: a purpose with Vietnamese letters is percent-encoded.
            .header("X-Road-Issue", header_value(issue))
            .header("Accept", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let r = req.send().await.map_err(|e| {
            CallError::Unreachable(format!("the portal's security gateway did not answer: {e}"))
        })?;
        let status = r.status().as_u16();
        let xroad_error = r
            .headers()
            .get("x-road-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r
            .text()
            .await
            .map_err(|e| CallError::Unreachable(format!("reading the exchange's answer: {e}")))?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| {
                CallError::Unreachable(format!(
                    "the register's answer is not what was expected: {e}"
                ))
            });
        }
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let field = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let message = field("message").unwrap_or_else(|| text.chars().take(300).collect());
        if status == 404 && xroad_error.is_none() {
            return Err(CallError::NotFound(message));
        }
        Err(CallError::Refused {
            status,
            kind: xroad_error
                .or_else(|| field("code"))
                .unwrap_or_else(|| "error".into()),
            message,
        })
    }
}

impl Exchange {
    /// The names of the exchange's members (`VN/GOV/000001` → `Bộ Công an`), from the
    /// gateway's `listClients` metaservice (the global configuration).
    pub async fn member_names(&self) -> Result<BTreeMap<String, String>, CallError> {
        let url = format!(
            "{}/r1/{}/listClients",
            self.gateway,
            self.client.member().instance()
        );
        let mut req = self.http.get(&url).header("Accept", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let r = req
            .send()
            .await
            .map_err(|e| CallError::Unreachable(format!("listClients: {e}")))?;
        if !r.status().is_success() {
            return Err(CallError::Refused {
                status: r.status().as_u16(),
                kind: "listClients".into(),
                message: String::new(),
            });
        }
        let body: serde_json::Value = r
            .json()
            .await
            .map_err(|e| CallError::Unreachable(format!("listClients: {e}")))?;
        let mut names = BTreeMap::new();
        let list = body["member"].as_array().cloned().unwrap_or_default();
        for m in list {
            let id = &m["id"];
            if id["object_type"] != "MEMBER" {
                continue;
            }
            let part = |k: &str| id[k].as_str().unwrap_or_default().to_owned();
            let key = format!(
                "{}/{}/{}",
                part("xroad_instance"),
                part("member_class"),
                part("member_code")
            );
            if let Some(name) = m["name"].as_str() {
                names.insert(key, name.to_owned());
            }
        }
        Ok(names)
    }
}

/// `s` as a header value: printable ASCII is kept, everything else percent-encoded.
pub fn header_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_ascii() {
        assert_eq!(header_value("G01-261128-0001"), "G01-261128-0001");
        assert_eq!(header_value("hồ sơ"), "h%E1%BB%93 s%C6%A1");
        assert_eq!(header_value("100%"), "100%25");
    }
}
