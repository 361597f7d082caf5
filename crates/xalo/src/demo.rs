//! `xalo demo`: every role of this build in one process, on SQLite files under the data
//! directory, until Ctrl-C or SIGTERM.
//!
//! The demo binds every listener first, so that each role's real address (also with
//! `--port-base 0`) is in the configuration the others read; then it introduces the roles
//! to each other (the witness follows the ledger, the ledger asks the witness) exactly as
//! an operator would in their configuration files.

use std::collections::BTreeMap;

use xalo_core::server::{self, ServerHandle};
use xalo_core::{Config, Error, ErrorCode};

use crate::roles;

pub async fn run(mut config: Config) -> Result<(), Error> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::from(e).context(format!("creating {}", config.data_dir.display())))?;
    let mut listeners = Vec::new();
    for role in roles::ALL.iter().filter(|r| r.in_demo) {
        let listener = server::bind(roles::listen_addr(role, &config)).await?;
        let addr = listener.local_addr()?;
        config.roles.entry(role.name.into()).or_default().listen = Some(addr);
        listeners.push((role, listener));
    }
    let urls: BTreeMap<&str, String> = roles::ALL
        .iter()
        .filter(|r| r.in_demo)
        .map(|r| {
            let port = roles::listen_addr(r, &config).port();
            (r.name, format!("http://{}:{port}", config.public_host))
        })
        .collect();
    let nation = introduce(&mut config, &urls).await?;

    let mut handles: Vec<ServerHandle> = Vec::new();
    let mut exchange = None;
    for (role, listener) in listeners {
        // The exchange joins once trust and ledger run, before the registers, which
        // reach each other through it.
        if role.name == "registry" && exchange.is_none() {
            match start_exchange(&mut config, &urls, &nation).await {
                Ok((x, inbox)) => {
                    exchange = Some(x);
                    handles.push(inbox);
                }
                Err(e) => {
                    for h in handles {
                        let _ = h.shutdown().await;
                    }
                    return Err(e.context("starting the data exchange"));
                }
            }
        }
        match roles::start_on(role, &config, listener).await {
            Ok(h) => handles.push(h),
            Err(e) => {
                for h in handles {
                    let _ = h.shutdown().await;
                }
                if let Some(x) = exchange {
                    let _ = x.shutdown().await;
                }
                return Err(e.context(format!("starting {}", role.name)));
            }
        }
    }
    println!(
        "Xalo {} demo nation is running (data in {}).",
        xalo_core::VERSION,
        config.data_dir.display()
    );
    println!();
    for h in &handles {
        println!(
            "  {:<10} http://{}:{}/",
            h.role(),
            config.public_host,
            h.port()
        );
    }
    println!();
    if let Some(trust) = handles.iter().find(|h| h.role() == xalo_trust::ROLE) {
        println!("{}", xalo_trust::demo_summary(&config, trust));
        println!();
    }
    println!("Transparency ledger");
    println!("  checkpoint     {}/checkpoint", urls["ledger"]);
    println!("  tiles          {}/tile/0/000 …", urls["ledger"]);
    println!(
        "  time-stamps    {}/checkpoints/SIZE/timestamp (RFC 3161 token over {}/checkpoints/SIZE)",
        urls["ledger"], urls["ledger"]
    );
    println!("  log key        {}", nation.log_key);
    println!("  witness key    {}", nation.witness_key);
    println!(
        "  verify         xalo ledger verify --log {} --key {} --witness {} --quorum 1",
        urls["ledger"], nation.log_key, nation.witness_key
    );
    if let Some(x) = &exchange {
        println!();
        for line in &x.lines {
            println!("{line}");
        }
    }
    println!();
    println!(
        "Base registries (population register: {} people)",
        nation.population
    );
    println!(
        "  population     {}/population/persons/CODE  (headers X-Road-UserId, X-Road-Issue)",
        urls["registry"]
    );
    println!(
        "  business       {}/business/enterprises?name=…",
        urls["registry"]
    );
    println!();
    println!("Demo citizens");
    for (code, name, unit) in &nation.citizens {
        println!("  {code}  {name}, {unit}");
    }
    println!();
    println!("National sign-in (OpenID Connect)");
    println!(
        "  discovery      {}/.well-known/openid-configuration",
        urls["id"]
    );
    println!(
        "  ID-card        {} (TLS client certificate: a card from `xalo pki export --p12`)",
        handles
            .iter()
            .find_map(|h| h.endpoint(xalo_id::provider::ID_CARD_ENDPOINT))
            .unwrap_or("off")
    );
    println!("  demo client    portal / {DEMO_PORTAL_SECRET}");
    if let Some(portal) = urls.get(xalo_portal::service::ROLE) {
        println!("Public service portal");
        println!("  citizens       {portal}/  (sign in with a demo account below)");
        println!("  procedures     {portal}/procedures?q=khai+sinh");
        println!("  mailbox        {portal}/mailbox  (signed results)");
        if let Some(code) = &nation.officer {
            println!("  back office    {portal}/office  (officer {code}, {DEMO_OFFICE_AGENCY})");
        }
        println!("  indicators     {portal}/kpi");
    }
    if let (Some(provider), Some(key)) = (urls.get(xalo_portal::payment::ROLE), &nation.payment_key)
    {
        println!("Payment provider (demo banks; no real money moves)");
        println!("  provider       {provider}/  key {key}");
        println!(
            "  reconcile      xalo portal reconcile --config {} [YYYY-MM-DD]",
            config.data_dir.join("portal-payment.toml").display()
        );
    }
    if let Some(mail) = &nation.mail {
        println!(
            "  e-mail         smtp://{}  (kept in {})",
            mail.addr,
            mail.dir.display()
        );
    }
    println!("Demo accounts (Mobile-ID; PIN1 {DEMO_PIN1} to sign in, PIN2 {DEMO_PIN2} to sign)");
    for (code, phone) in &nation.phones {
        let eres = if code.starts_with("EE") {
            " (e-Resident)"
        } else {
            ""
        };
        println!(
            "  {code}{eres}  phone {phone}  screen {}/phone/{phone}",
            urls["mobile-id"]
        );
    }
    if let Some((code, phone)) = nation.phones.first() {
        println!("Sign documents with Mobile-ID (PIN2 on the phone screen above):");
        println!(
            "  xalo sign decision.pdf -o decision.asice --mobile-id {phone} --personal-code {code} \\\n      --id {} --client portal --secret {DEMO_PORTAL_SECRET}",
            urls["id"]
        );
    }
    println!();
    println!("Health: append /healthz to any URL; metrics: /metrics. Stop with Ctrl-C.");
    server::shutdown_signal().await;
    for h in handles {
        h.shutdown().await?;
    }
    if let Some(x) = exchange {
        x.shutdown().await?;
    }
    println!("Xalo demo stopped.");
    Ok(())
}

/// What the demo set up: public keys it introduced, and the people it made.
struct Nation {
    /// The exchange operator's registration-authority token at the trust service.
    exchange_ra_token: String,
    log_key: String,
    witness_key: String,
    population: i64,
    /// Personal code, name, residence of a few adults to try the services with.
    citizens: Vec<(String, String, String)>,
    /// Personal code and Mobile-ID phone number of the demo accounts.
    phones: Vec<(String, String)>,
    /// Personal code of the back-office officer (of [`DEMO_OFFICE_AGENCY`]), if any.
    officer: Option<String>,
    /// The SMTP receiver that keeps the mail the portal sends, and the provider's key.
    mail: Option<xalo_portal::smtp::MailSink>,
    payment_key: Option<String>,
}

/// The demo accounts' Mobile-ID PINs (PIN1 signs in, PIN2 signs documents).
const DEMO_PIN1: &str = "1234";
const DEMO_PIN2: &str = "12345";
/// The demo portal's client secret at the sign-in provider.
const DEMO_PORTAL_SECRET: &str = "demo-portal-secret";
/// The agency of the demo's officer: the ward that registers births (1.001193).
const DEMO_OFFICE_AGENCY: &str = "QNI.HL";

/// The demo's population, made once on first start.
const DEMO_PERSONS: u64 = 20_000;

async fn introduce(config: &mut Config, urls: &BTreeMap<&str, String>) -> Result<Nation, Error> {
    let log = xalo_ledger::service::open_log(config).await?;
    let log_key = log.verifier_key();
    log.database().close().await;
    let witness_settings = &mut config.roles.entry("witness".into()).or_default().settings;
    witness_settings
        .entry("logs")
        .or_insert_with(|| serde_json::json!([log_key]));
    let witness = xalo_ledger::witness::open_witness(config).await?;
    let witness_key = witness.verifier_key();
    let ledger_settings = &mut config.roles.entry("ledger".into()).or_default().settings;
    ledger_settings
        .entry("witnesses")
        .or_insert_with(|| serde_json::json!([{ "url": urls["witness"], "key": witness_key }]));
    let registry_settings = &mut config.roles.entry("registry".into()).or_default().settings;
    registry_settings
        .entry("ledger_url")
        .or_insert_with(|| serde_json::json!(urls["ledger"]));
    let (population_db, business_db) = xalo_registry::service::open(config).await?;
    let mut population = xalo_registry::store::count(&population_db, "person").await?;
    if population == 0 {
        println!("Making the demo population ({DEMO_PERSONS} people)…");
        let bar = indicatif::ProgressBar::new(DEMO_PERSONS);
        xalo_registry::generate::generate_split(
            &population_db,
            &business_db,
            DEMO_PERSONS,
            1,
            20,
            &bar,
        )
        .await?;
        population = xalo_registry::store::count(&population_db, "person").await?;
    }
    let units = xalo_registry::admin_unit::admin_units();
    let people = xalo_registry::store::people_where(
        &population_db,
        "alive = 1 AND spouse IS NOT NULL AND birth_date < '1990'",
        &[],
        3,
    )
    .await?;
    population_db.close().await;
    business_db.close().await;

    // Sign-in: two citizens and an e-Resident get Mobile-ID; the portal is a relying party.
    let mut phones = Vec::new();
    let mut subscribers = Vec::new();
    for (i, p) in people.iter().take(2).enumerate() {
        let phone = format!("+8490123456{}", 7 + i);
        subscribers.push(serde_json::json!({
            "phone": phone, "personal_code": p.code.to_string(),
            "given_name": p.given_name, "family_name": p.family_name,
            "pin1": DEMO_PIN1, "pin2": DEMO_PIN2,
        }));
        phones.push((p.code.to_string(), phone));
    }
    // The third works the back office of the ward where births are registered.
    let officer = people.get(2).map(|p| (p.code.to_string(), p.full_name()));
    if let Some(p) = people.get(2) {
        let phone = "+84901234569".to_owned();
        subscribers.push(serde_json::json!({
            "phone": phone, "personal_code": p.code.to_string(),
            "given_name": p.given_name, "family_name": p.family_name,
            "pin1": DEMO_PIN1, "pin2": DEMO_PIN2,
        }));
        phones.push((p.code.to_string(), phone));
    }
    subscribers.push(serde_json::json!({
        "phone": "+3725550001", "personal_code": "EE38001085718",
        "given_name": "Mari", "family_name": "Tamm", "pin1": DEMO_PIN1, "pin2": DEMO_PIN2,
    }));
    phones.push(("EE38001085718".into(), "+3725550001".into()));
    // The operator is a registration authority of the trust service: it asks for its
    // subscribers' certificates over HTTP with a token, as any organisation would.
    let ra_token = hex_token(&xalo_trust::key::random_bytes::<24>()?);
    let trust = &mut config
        .roles
        .entry(xalo_trust::ROLE.into())
        .or_default()
        .settings;
    let exchange_ra_token = hex_token(&xalo_trust::key::random_bytes::<24>()?);
    trust.entry("registration_authorities").or_insert_with(|| {
        serde_json::json!([
            { "name": "mobile-id", "token_sha256": xalo_trust::registration::token_hash(&ra_token) },
            { "name": "exchange", "token_sha256": xalo_trust::registration::token_hash(&exchange_ra_token) },
        ])
    });
    let operator = &mut config.roles.entry("mobile-id".into()).or_default().settings;
    operator
        .entry("trust_url")
        .or_insert_with(|| serde_json::json!(urls["trust"]));
    operator
        .entry("subscribers")
        .or_insert_with(|| serde_json::json!(subscribers));
    operator
        .entry("ra_token")
        .or_insert_with(|| serde_json::json!(ra_token));
    // The operator's SMS centre takes the portal's result notices; the phone screens show
    // them.
    let sms_token = hex_token(&xalo_trust::key::random_bytes::<24>()?);
    operator.entry("sms_senders").or_insert_with(|| {
        serde_json::json!([{
            "name": "DichVuCong",
            "token_sha256": xalo_trust::registration::token_hash(&sms_token),
        }])
    });
    // On port 0 the role binds the ID-card port itself and announces it (see `run`).
    let id_card_port = if config.port_base == 0 {
        0
    } else {
        config.port_base.saturating_add(32)
    };
    let id_card_listen = std::net::SocketAddr::new(config.bind, id_card_port);
    let portal = urls
        .get("portal")
        .cloned()
        .unwrap_or_else(|| urls["status"].clone());
    let provider = &mut config.roles.entry("id".into()).or_default().settings;
    for (key, role) in [
        ("trust_url", "trust"),
        ("mobile_id_url", "mobile-id"),
        ("registry_url", "registry"),
        ("ledger_url", "ledger"),
    ] {
        provider
            .entry(key)
            .or_insert_with(|| serde_json::json!(urls[role]));
    }
    provider
        .entry("id_card_listen")
        .or_insert_with(|| serde_json::json!(id_card_listen.to_string()));
    provider.entry("clients").or_insert_with(|| {
        serde_json::json!([{
            "client_id": "portal", "name": "Cổng Dịch vụ công quốc gia",
            "auth_method": "client_secret_basic",
            "redirect_uris": [format!("{portal}/auth/callback")],
            "post_logout_redirect_uris": [portal.clone(), format!("{portal}/signed-out")],
            "secret": DEMO_PORTAL_SECRET,
        }])
    });

    if let Some((code, name)) = &officer
        && urls.contains_key(xalo_portal::service::ROLE)
    {
        xalo_portal::office::officer_command(
            config,
            xalo_portal::office::OfficerCommand::Add {
                personal_code: code.clone(),
                agency: DEMO_OFFICE_AGENCY.into(),
                name: name.clone(),
                roles: "receiver,processor,approver".into(),
            },
        )
        .await?;
    }
    // The portal signs citizens in at the provider, and checks tracker proofs with the log key.
    let portal_settings = &mut config.roles.entry("portal".into()).or_default().settings;
    portal_settings
        .entry("id_url")
        .or_insert_with(|| serde_json::json!(urls["id"]));
    portal_settings
        .entry("client_secret")
        .or_insert_with(|| serde_json::json!(DEMO_PORTAL_SECRET));
    portal_settings
        .entry("ledger")
        .or_insert_with(|| serde_json::json!({ "url": urls["ledger"], "key": log_key }));
    // Citizens sign their applications with Mobile-ID through the provider's signing service.
    portal_settings.entry("signing").or_insert_with(|| {
        serde_json::json!({
            "url": urls["id"], "client_id": "portal", "secret": DEMO_PORTAL_SECRET,
            "trust_url": urls["trust"],
        })
    });

    // Fees: the portal is the payment provider's merchant and checks its signatures with
    // the provider's key. Results: sealed (seal set once the exchange has issued it),
    // anchored in the ledger and mailed through a local SMTP receiver.
    let (mut mail, mut payment_key) = (None, None);
    if let (Some(portal), Some(provider)) = (
        urls.get(xalo_portal::service::ROLE),
        urls.get(xalo_portal::payment::ROLE),
    ) {
        let key = xalo_portal::payment::public_key(config).await?;
        let secret = hex_token(&xalo_trust::key::random_bytes::<24>()?);
        let merchant = serde_json::json!([{
            "merchant_id": "portal", "name": "Cổng Dịch vụ công quốc gia",
            "secret_sha256": xalo_trust::registration::token_hash(&secret),
            "callback_url": format!("{portal}{}", xalo_portal::payment_client::CALLBACK_PATH),
            "return_url": format!("{portal}{}", xalo_portal::payment_client::RETURN_PATH),
        }]);
        config
            .roles
            .entry(xalo_portal::payment::ROLE.into())
            .or_default()
            .settings
            .entry("merchants")
            .or_insert(merchant);
        let sink = xalo_portal::smtp::MailSink::start(
            server::bind(std::net::SocketAddr::new(config.bind, 0)).await?,
            &config.data_dir.join("mail"),
        )
        .await?;
        let portal_settings = &mut config.roles.entry("portal".into()).or_default().settings;
        portal_settings.entry("payment").or_insert_with(|| {
            serde_json::json!({
                "provider_url": provider, "merchant_id": "portal", "secret": secret,
                "provider_key": key,
            })
        });
        portal_settings.entry("result").or_insert_with(|| {
            serde_json::json!({
                "tsa_url": format!("{}/tsa", urls["trust"]),
                "ledger_url": urls["ledger"],
                "public_url": portal,
                "smtp": { "relay": sink.addr.to_string(), "from": "khong-tra-loi@dichvucong.gov.vn" },
                "sms": { "url": urls["mobile-id"], "token": sms_token },
            })
        });
        // What `xalo portal reconcile --config` needs to act as the portal's job.
        let job = config.data_dir.join("portal-payment.toml");
        let toml_text = format!(
            "data_dir = {:?}\n\n[roles.portal.payment]\nprovider_url = {provider:?}\n\
             merchant_id = \"portal\"\nsecret = {secret:?}\nprovider_key = {key:?}\n",
            config.data_dir.display().to_string()
        );
        std::fs::write(&job, toml_text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o600))?;
        }
        mail = Some(sink);
        payment_key = Some(key);
    }

    let citizens = people
        .into_iter()
        .map(|p| {
            let place = units.describe(&p.residence_unit).unwrap_or_default();
            (p.code.to_string(), p.full_name(), place)
        })
        .collect();
    Ok(Nation {
        exchange_ra_token,
        log_key,
        witness_key,
        population,
        citizens,
        phones,
        officer: officer.map(|(code, _)| code),
        mail,
        payment_key,
    })
}

fn hex_token(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Start the exchange with the registers' APIs behind their owners' gateways, point the
/// business register's founder checks at the population register through it, and have
/// the registers publish their registrations as events (with the subscribers' inbox,
/// returned to run beside the roles).
async fn start_exchange(
    config: &mut Config,
    urls: &BTreeMap<&str, String>,
    nation: &Nation,
) -> Result<(xalo_exchange::demo::DemoExchange, ServerHandle), Error> {
    use xalo_exchange::demo::ProvidedApi;
    let trust_port = roles::listen_addr(
        roles::find(xalo_trust::ROLE)
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no trust role"))?,
        config,
    )
    .port();
    let registry = &urls["registry"];
    let apis = [
        ProvidedApi {
            provider: "VN/GOV/000001/population".parse()?,
            backend_url: format!("{registry}/population"),
            openapi: xalo_registry::service::openapi("population").0,
        },
        ProvidedApi {
            provider: "VN/GOV/000002/business".parse()?,
            backend_url: format!("{registry}/business"),
            openapi: xalo_registry::service::openapi("business").0,
        },
    ];
    let mut exchange = xalo_exchange::demo::start(
        config,
        trust_port,
        &nation.exchange_ra_token,
        Some(urls["ledger"].clone()),
        &apis,
    )
    .await?;
    let inbox_listener = server::bind(std::net::SocketAddr::new(config.bind, 0)).await?;
    let events = xalo_exchange::demo::start_events(&exchange, config, inbox_listener).await?;
    exchange.lines.push(String::new());
    exchange.lines.extend(events.lines);
    // The portal is the Government Office's information system: it calls the registers
    // through its member's gateway with the client key the gateway issued it.
    let portal: xalo_core::SubsystemId = "VN/GOV/000007/portal".parse()?;
    let portal_key = exchange
        .client_keys
        .get(&portal)
        .cloned()
        .unwrap_or_default();
    let portal_gateway = exchange.gateway_url(portal.member())?;
    let portal_settings = &mut config.roles.entry("portal".into()).or_default().settings;
    let mut portal_headers = serde_json::Map::new();
    portal_headers.insert(
        xalo_exchange::message::CLIENT_KEY.into(),
        serde_json::json!(portal_key),
    );
    portal_settings.entry("exchange").or_insert_with(|| {
        serde_json::json!({
            "gateway_url": portal_gateway,
            "client": portal.to_string(),
            "headers": portal_headers,
        })
    });
    // Results carry the e-seal the exchange gave the provincial People's Committee.
    let committee = exchange.nation.gateway(&"VN/GOV/000004".parse()?)?;
    if let Some(serde_json::Value::Object(result)) = portal_settings.get_mut("result") {
        result
            .entry("seal_certificate")
            .or_insert_with(|| serde_json::json!(committee.files.signing_certificate));
        result
            .entry("seal_key")
            .or_insert_with(|| serde_json::json!(committee.files.signing_key));
    }
    let business: xalo_core::SubsystemId = "VN/GOV/000002/business".parse()?;
    let key = exchange
        .client_keys
        .get(&business)
        .cloned()
        .unwrap_or_default();
    let gateway = exchange.gateway_url(business.member())?;
    let registry_settings = &mut config.roles.entry("registry".into()).or_default().settings;
    registry_settings.insert(
        "population_url".into(),
        serde_json::json!(format!("{gateway}/r1/VN/GOV/000001/population")),
    );
    registry_settings.insert(
        "population_headers".into(),
        serde_json::json!({ "X-Xalo-Client-Key": key }),
    );
    registry_settings.insert(
        "business_client".into(),
        serde_json::json!(business.to_string()),
    );
    for (key, publishing) in [
        ("population_events", &events.population),
        ("business_events", &events.business),
    ] {
        registry_settings.insert(
            key.into(),
            serde_json::to_value(publishing)
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
        );
    }
    Ok((exchange, events.inbox))
}
