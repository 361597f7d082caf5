//! Registrations published as events over the exchange, so that subscribers (social
//! security, tax) act without the citizen applying: the population register publishes
//! births, deaths and address changes, the business register enterprise registrations, each
//! on a topic of its member's subsystem (`VN/GOV/000001/population/births`) through its
//! gateway's `POST /publish/{topic}`.
//!
//! A change is published after its transaction commits. The change's evidence hash is the
//! event's idempotency key, so publishing again after a failure (the gateway was away, the
//! answer was lost) never makes a second event; the register's background task publishes
//! what is still unpublished, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode, SubsystemId};

use crate::registration::Change;

/// Where and as whom a register publishes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPublishing {
    /// The URL of the member's gateway (its listener for information systems).
    pub gateway_url: String,
    /// The publishing subsystem, e.g. `VN/GOV/000001/population`; topics are named under it.
    pub publisher: String,
    /// Headers of each publication: the gateway's client key for the publisher.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The topic a change's event goes to; changes of other kinds are not published.
pub fn topic_of(event: &str) -> Option<&'static str> {
    match event {
        "birth" => Some("births"),
        "death" => Some("deaths"),
        "address" => Some("address-changes"),
        "enterprise.registered" => Some("enterprises"),
        _ => None,
    }
}

/// Text safe in a header: visible ASCII, anything else percent-encoded.
fn header_text(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Publishes a register's changes at its gateway.
#[derive(Clone, Debug)]
pub struct EventPublisher {
    gateway_url: String,
    publisher: SubsystemId,
    headers: BTreeMap<String, String>,
    http: reqwest::Client,
}

impl EventPublisher {
    pub fn new(p: &EventPublishing) -> Result<EventPublisher, Error> {
        Ok(EventPublisher {
            gateway_url: p.gateway_url.trim_end_matches('/').to_owned(),
            publisher: p.publisher.parse()?,
            headers: p.headers.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
        })
    }

    /// The topic a change goes to, as `INSTANCE/CLASS/MEMBER/SUBSYSTEM/TOPIC`.
    pub fn topic(&self, change: &Change) -> Result<Option<xalo_core::ServiceId>, Error> {
        topic_of(&change.event)
            .map(|t| self.publisher.service(t, None).map_err(Error::from))
            .transpose()
    }

    /// Publish one change; `Ok(false)` when its kind is not published. The gateway has
    /// the event once this returns `Ok`.
    pub async fn publish(&self, change: &Change) -> Result<bool, Error> {
        let Some(topic) = self.topic(change)? else {
            return Ok(false);
        };
        let url = format!("{}/publish/{}", self.gateway_url, topic.to_path());
        let user = change
            .actor
            .split(" via ")
            .next()
            .unwrap_or(&change.actor)
            .to_owned();
        let mut req = self
            .http
            .post(&url)
            .header("X-Road-Client", self.publisher.to_string())
            .header("Idempotency-Key", &change.evidence)
            .header("X-Road-UserId", header_text(&user))
            .header(
                "X-Road-Issue",
                format!("{} register event {}", change.register, change.seq),
            )
            .header(
                "ce-type",
                format!("vn.gov.{}.{}", change.register, change.event),
            )
            .header("ce-subject", &change.subject)
            .json(change);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let r = req.send().await.map_err(|e| {
            Error::new(
                ErrorCode::HttpUnavailable,
                format!("publishing at {url}: {e}"),
            )
        })?;
        let status = r.status();
        if !status.is_success() {
            let text = r.text().await.unwrap_or_default();
            let e = serde_json::from_str::<xalo_core::error::ErrorBody>(&text)
                .map(|b| Error::new(b.code, b.message))
                .unwrap_or_else(|_| {
                    Error::new(
                        ErrorCode::HttpUnavailable,
                        format!("the gateway answered {status}: {text}"),
                    )
                });
            return Err(e.context(format!("publishing on {topic}")));
        }
        Ok(true)
    }
}
