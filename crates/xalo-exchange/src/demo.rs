//! The exchange of `xalo demo`: the default nation's members (DESIGN.md), each with its
//! gateway and certificates from the trust service, the real services of the nation's
//! other roles registered behind their owners' gateways with access rights, and client
//! keys for the information systems that call them.

use std::collections::BTreeMap;
use std::path::Path;

use xalo_core::{ClientId, Config, Error, ErrorCode, ServiceId, SubsystemId};

use crate::access_right::Subject;
use crate::nation::{MemberSpec, Nation, NationOptions, client_subject, tolerate_existing};
use crate::service_registry::NewService;

/// The running demo exchange.
pub struct DemoExchange {
    pub nation: Nation,
    /// Client keys issued to information systems, by subsystem.
    pub client_keys: BTreeMap<SubsystemId, String>,
    /// Lines for the demo's printout.
    pub lines: Vec<String>,
}

impl DemoExchange {
    pub async fn shutdown(self) -> Result<(), Error> {
        self.nation.shutdown().await
    }
    /// The URL of a member's gateway (its client proxy).
    pub fn gateway_url(&self, member: &xalo_core::MemberId) -> Result<String, Error> {
        Ok(self.nation.gateway(member)?.url.clone())
    }
}

/// A REST API a subsystem provides: each top-level path segment of its OpenAPI
/// description becomes one service, `PROVIDER/segment`, whose backend is
/// `backend_url/segment`.
#[derive(Debug, Clone)]
pub struct ProvidedApi {
    pub provider: SubsystemId,
    pub backend_url: String,
    pub openapi: serde_json::Value,
}

impl ProvidedApi {
    /// The services of this API: (service, backend URL, its own OpenAPI description).
    pub fn services(&self) -> Result<Vec<(ServiceId, String, serde_json::Value)>, Error> {
        let paths = self
            .openapi
            .get("paths")
            .and_then(|p| p.as_object())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::HttpBadRequest,
                    "the OpenAPI description has no paths",
                )
            })?;
        let mut by_segment: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
            BTreeMap::new();
        for (path, item) in paths {
            let trimmed = path.trim_start_matches('/');
            let (segment, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            if segment.is_empty() || segment.contains('{') || segment.ends_with(".json") {
                continue;
            }
            by_segment
                .entry(segment.to_owned())
                .or_default()
                .insert(format!("/{rest}"), item.clone());
        }
        by_segment
            .into_iter()
            .map(|(segment, paths)| {
                let mut doc = self.openapi.clone();
                doc["paths"] = serde_json::Value::Object(paths);
                Ok((
                    self.provider.service(&segment, None)?,
                    format!("{}/{segment}", self.backend_url.trim_end_matches('/')),
                    doc,
                ))
            })
            .collect()
    }
}

fn members() -> Result<Vec<MemberSpec>, Error> {
    Ok(vec![
        MemberSpec::new("VN/GOV/000001", "Bộ Công an", &["population"])?,
        MemberSpec::new("VN/GOV/000002", "Bộ Tài chính", &["business", "tax"])?,
        MemberSpec::new("VN/GOV/000003", "Bảo hiểm xã hội Việt Nam", &["insurance"])?,
        MemberSpec::new(
            "VN/GOV/000004",
            "Ủy ban nhân dân tỉnh Quảng Ninh",
            &["onestop"],
        )?,
        MemberSpec::new(
            "VN/GOV/000007",
            "Văn phòng Chính phủ",
            &["portal", "cabinet", "consultation", "reporting"],
        )?,
        MemberSpec::new("VN/COM/0100000005", "Xalo Trust Services", &["trust"])?,
        MemberSpec::new("VN/COM/0100000006", "Xalo Payments", &["payments"])?,
    ])
}

/// Start the demo exchange under `config`, on the trust role at `trust_port` (where
/// `ra_token` is the exchange operator's registration-authority token), recording evidence
/// in the ledger at `ledger_url`, with `apis` behind their providers' gateways.
pub async fn start(
    config: &Config,
    trust_port: u16,
    ra_token: &str,
    ledger_url: Option<String>,
    apis: &[ProvidedApi],
) -> Result<DemoExchange, Error> {
    let dir: &Path = &config.data_dir;
    let mut options = NationOptions::new(dir, members()?);
    options.base = config.clone();
    options.base.port_base = 0;
    options.trust_port = Some(trust_port);
    options.ra_token = Some(ra_token.to_owned());
    options.ledger_url = ledger_url;
    let nation = crate::nation::start(&options).await?;

    // Every government subsystem is in the global group `government`.
    tolerate_existing(
        nation
            .management
            .add_group("government", "Government agencies")
            .await,
    )?;
    for m in options.members.iter().filter(|m| m.id.class() == "GOV") {
        for s in &m.subsystems {
            let client = ClientId::Subsystem(m.id.subsystem(s)?);
            tolerate_existing(
                nation
                    .management
                    .add_group_member("government", &client)
                    .await,
            )?;
        }
    }
    // The portal may call everything; government agencies may read (GET).
    let portal: SubsystemId = "VN/GOV/000007/portal".parse()?;
    let mut example = None;
    for api in apis {
        for (service, backend_url, openapi) in api.services()? {
            let gateway = nation.gateway(service.provider().member())?;
            gateway
                .admin
                .add_service(&NewService {
                    service: service.clone(),
                    backend_url,
                    openapi: Some(openapi),
                })
                .await?;
            tolerate_existing(
                gateway
                    .admin
                    .grant(&service, client_subject(&portal), None)
                    .await,
            )?;
            tolerate_existing(
                gateway
                    .admin
                    .grant(
                        &service,
                        Subject::Group("government".into()),
                        Some(("GET", "**")),
                    )
                    .await,
            )?;
            // Group membership reaches gateways with the next global configuration; grants
            // to each agency's subsystems hold from now.
            for m in options.members.iter().filter(|m| m.id.class() == "GOV") {
                for sub in &m.subsystems {
                    let client = m.id.subsystem(sub)?;
                    if client != portal {
                        tolerate_existing(
                            gateway
                                .admin
                                .grant(&service, client_subject(&client), Some(("GET", "**")))
                                .await,
                        )?;
                    }
                }
            }
            // The example call reads a record: the first GET service, `persons` if any.
            if example.is_none() || service.code() == "persons" {
                example = Some(service);
            }
        }
    }
    let mut client_keys = BTreeMap::new();
    for client in [
        portal.clone(),
        "VN/GOV/000002/business".parse::<SubsystemId>()?,
    ] {
        let key = nation
            .gateway(client.member())?
            .admin
            .issue_client_key(&client)
            .await?;
        client_keys.insert(client, key);
    }
    let portal_gateway = nation.gateway(portal.member())?;
    let key = client_keys.get(&portal).cloned().unwrap_or_default();

    let mut lines = vec![
        "Data exchange (X-Road REST protocol r1)".to_owned(),
        format!(
            "  central        {}/globalconf  (anchor {}/globalconf/anchor)",
            nation.central_url, nation.central_url
        ),
        format!(
            "  management     {}/api/v1/  (client certificate {})",
            nation.management_url,
            options.dir.join("exchange").join("admin.pem").display()
        ),
    ];
    for g in &nation.gateways {
        lines.push(format!(
            "  gateway        {:<20} {}  (TLS {})  {}",
            g.member.id, g.url, g.tls_addr, g.member.name
        ));
    }
    lines.push(format!(
        "  administer     xalo service add --gateway URL --token-file {}/MEMBER.admin-token …",
        options.dir.join("exchange").display()
    ));
    lines.push(format!(
        "  refusals       xalo exchange refusals --gateway {} --token-file {}/{}.admin-token",
        portal_gateway.url,
        options.dir.join("exchange").display(),
        portal.member().code()
    ));
    lines.push("  try (as the portal's information system):".into());
    if let Some(service) = &example {
        lines.push(format!(
            "    curl -H 'X-Road-Client: {portal}' -H '{}: {key}' -H 'X-Road-UserId: OFFICER' -H 'X-Road-Issue: demo' {}/r1/{}/CODE",
            crate::message::CLIENT_KEY,
            portal_gateway.url,
            service.to_path()
        ));
    }
    lines.push(format!("    curl {}/r1/VN/listClients", portal_gateway.url));
    Ok(DemoExchange {
        nation,
        client_keys,
        lines,
    })
}

/// The demo's events: where a register publishes, as the registry role's
/// `population_events` / `business_events` settings read it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventPublishing {
    pub gateway_url: String,
    pub publisher: SubsystemId,
    pub headers: BTreeMap<String, String>,
}

/// Publish/subscribe in the demo: the running inbox (the subscribers' backend), and where
/// each register publishes.
pub struct DemoEvents {
    pub inbox: xalo_core::server::ServerHandle,
    pub population: EventPublishing,
    pub business: EventPublishing,
    pub lines: Vec<String>,
}

/// Topics, rights and subscriptions of the demo nation: the population register publishes
/// births, deaths and address changes, the business register enterprise registrations;
/// Vietnam Social Security subscribes to births and deaths, the Ministry of Finance's tax
/// administration to enterprise registrations and address changes. Their events arrive in
/// an inbox (started here on `inbox_listener`), one mailbox per subscriber.
pub async fn start_events(
    exchange: &DemoExchange,
    config: &Config,
    inbox_listener: tokio::net::TcpListener,
) -> Result<DemoEvents, Error> {
    let inbox = crate::inbox::serve(config.clone(), inbox_listener).await?;
    let inbox_url = inbox.url();
    let population: SubsystemId = "VN/GOV/000001/population".parse()?;
    let business: SubsystemId = "VN/GOV/000002/business".parse()?;
    let insurance: SubsystemId = "VN/GOV/000003/insurance".parse()?;
    let tax: SubsystemId = "VN/GOV/000002/tax".parse()?;
    // (provider, topic, description, [(subscriber, its mailbox)])
    type Topic<'a> = (
        &'a SubsystemId,
        &'a str,
        &'a str,
        &'a [(&'a SubsystemId, &'a str)],
    );
    let topics: [Topic; 4] = [
        (
            &population,
            "births",
            "Births registered in the population register",
            &[(&insurance, "insurance")],
        ),
        (
            &population,
            "deaths",
            "Deaths recorded in the population register",
            &[(&insurance, "insurance")],
        ),
        (
            &population,
            "address-changes",
            "Changes of permanent residence",
            &[(&tax, "tax")],
        ),
        (
            &business,
            "enterprises",
            "Enterprises registered in the business register",
            &[(&tax, "tax")],
        ),
    ];
    let mut lines = vec!["Events (publish/subscribe over the exchange)".to_owned()];
    for (provider, code, description, subscribers) in topics {
        let topic = provider.service(code, None)?;
        let provider_gateway = exchange.nation.gateway(provider.member())?;
        provider_gateway
            .admin
            .add_topic(&topic, description)
            .await?;
        for (subscriber, mailbox) in subscribers {
            provider_gateway
                .admin
                .grant_topic(&topic, client_subject(subscriber))
                .await?;
            exchange
                .nation
                .gateway(subscriber.member())?
                .admin
                .subscribe(&topic, subscriber, &format!("{inbox_url}/inbox/{mailbox}"))
                .await?;
            lines.push(format!(
                "  topic          {:<42} → {subscriber}  ({inbox_url}/inbox/{mailbox})",
                topic.to_string()
            ));
        }
    }
    lines.push(
        "  publish        POST GATEWAY/publish/TOPIC  (X-Road-Client: the topic's subsystem; outbox: GATEWAY/api/v1/deliveries)"
            .to_owned(),
    );
    Ok(DemoEvents {
        inbox,
        population: publishing(exchange, &population).await?,
        business: publishing(exchange, &business).await?,
        lines,
    })
}

/// A client key for `publisher` at its gateway, to publish with.
async fn publishing(
    exchange: &DemoExchange,
    publisher: &SubsystemId,
) -> Result<EventPublishing, Error> {
    let gateway = exchange.nation.gateway(publisher.member())?;
    let key = gateway.admin.issue_client_key(publisher).await?;
    Ok(EventPublishing {
        gateway_url: gateway.url.clone(),
        publisher: publisher.clone(),
        headers: BTreeMap::from([(crate::message::CLIENT_KEY.to_owned(), key)]),
    })
}
