//! Command-line arguments and their dispatch.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use xalo_core::{Config, Error, ErrorCode};

use crate::{demo, roles};

#[derive(Parser, Debug)]
#[command(name = "xalo", version, about = "Xalo digital-government platform")]
pub struct Cli {
    /// Threads that run the process's tasks (default: one per core). A process that
    /// shares its machine's cores with others runs best with its share of them: each thread
    /// beyond that wakes for work another already took, at a context switch's cost.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole demo nation in one process on embedded SQLite and print its URLs.
    Demo {
        /// Where the nation's databases and keys are kept.
        #[arg(long, default_value = "xalo-data")]
        data_dir: PathBuf,
        /// First port; each role listens on a fixed offset from it (0: any free ports).
        #[arg(long, default_value_t = 8400)]
        port_base: u16,
    },
    /// Run one server role.
    Serve {
        /// The role: one of the names `xalo roles` lists.
        role: String,
        /// TOML configuration file (XALO_* environment variables override it).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A bare forwarder with the gateways' HTTP and TLS and none of their work, which
    /// `xalo bench exchange` runs beside the gateways (see `xalo_exchange::relay`).
    #[command(hide = true)]
    Relay {
        /// Where to forward: http://HOST:PORT, or https://HOST:PORT over mutual TLS.
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Accept mutual TLS with --cert and --key instead of plain HTTP.
        #[arg(long)]
        tls: bool,
        /// This relay's certificate (PEM).
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// This relay's PKCS#8 private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// The only certificate (PEM) an https:// upstream may present.
        #[arg(long)]
        peer_cert: Option<PathBuf>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The national PKI: init, issue, revoke, list, export (PEM, PKCS#12).
    #[command(subcommand)]
    Pki(xalo_trust::cli::PkiCommand),
    /// Sign files into an ASiC-E container (CAdES-T with OCSP and chain embedded).
    Sign(xalo_trust::cli::SignArgs),
    /// Verify an ASiC-E container; exits non-zero naming every defect.
    Verify(xalo_trust::cli::VerifyArgs),
    /// The transparency ledger: verify offline, copy for offline checks.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Members of the data exchange (at the central server, as its administrator).
    Member {
        #[command(subcommand)]
        command: MemberCommand,
        #[command(flatten)]
        central: CentralArgs,
    },
    /// Subsystems of members.
    Subsystem {
        #[command(subcommand)]
        command: SubsystemCommand,
        #[command(flatten)]
        central: CentralArgs,
    },
    /// Security gateways.
    Gateway {
        #[command(subcommand)]
        command: GatewayCommand,
        #[command(flatten)]
        central: CentralArgs,
    },
    /// Global groups of clients.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
        #[command(flatten)]
        central: CentralArgs,
    },
    /// Services a member provides at its gateway (as the member's administrator).
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
        #[command(flatten)]
        gateway: GatewayAdminArgs,
    },
    /// Access rights to a member's services, at its gateway.
    Access {
        #[command(subcommand)]
        command: AccessCommand,
        #[command(flatten)]
        gateway: GatewayAdminArgs,
    },
    /// Topics a member publishes events on, and who may subscribe, at its gateway.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
        #[command(flatten)]
        gateway: GatewayAdminArgs,
    },
    /// Subscriptions of a member's subsystems to other members' topics, at its gateway.
    Subscription {
        #[command(subcommand)]
        command: SubscriptionCommand,
        #[command(flatten)]
        gateway: GatewayAdminArgs,
    },
    /// A gateway's message log: evidence of one exchange, hash-linked archives, the
    /// exchanges made on a person's behalf.
    Exchange {
        #[command(subcommand)]
        command: ExchangeCommand,
        #[command(flatten)]
        gateway: GatewayAdminArgs,
    },
    /// National sign-in: relying parties and signing keys.
    Id {
        #[command(subcommand)]
        command: IdCommand,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// The base registries.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// The public service portal's jobs (its `[roles.portal]` configuration).
    Portal {
        #[command(subcommand)]
        command: PortalCommand,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Benchmarks; each ends with one headline line `NAME: VALUE UNIT …`.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// List the server roles.
    Roles,
    /// List every error code with its HTTP status and title.
    Errors,
}

#[derive(Subcommand, Debug)]
enum LedgerCommand {
    /// Check a log from its URL or a directory of tiles: the checkpoint's signatures and
    /// cosignatures, the root recomputed from the tiles, and optionally that a file or hash
    /// is included and that an older checkpoint is a prefix. Exits non-zero on any mismatch.
    Verify {
        /// The log's URL (`http://…`) or a directory laid out like it.
        #[arg(long)]
        log: String,
        /// The log's verifier key (`name+hash+key`).
        #[arg(long)]
        key: String,
        /// A witness's verifier key; repeat for each witness.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// How many of the witnesses must have cosigned.
        #[arg(long, default_value_t = 0)]
        quorum: usize,
        /// Verify this checkpoint note file instead of the log's current one.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Prove that this file was recorded (with `--kind`).
        #[arg(long, requires = "kind", conflicts_with = "hash")]
        file: Option<PathBuf>,
        /// The entry kind the file was recorded under, e.g. `document.issued`.
        #[arg(long)]
        kind: Option<String>,
        /// Prove that the entry with this leaf hash (hex or base64) was recorded.
        #[arg(long)]
        hash: Option<String>,
        /// An older checkpoint note file the current one must be consistent with.
        #[arg(long)]
        older: Option<PathBuf>,
    },
    /// Copy a log's checkpoint, tiles and entry bundles into a directory.
    Mirror {
        #[arg(long)]
        log: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum PortalCommand {
    /// Reconcile a day's payments with the provider's signed statement: paid there but
    /// not here is marked paid, paid here but not there is flagged; exits non-zero on a
    /// flag.
    Reconcile {
        /// The day, YYYY-MM-DD in Vietnam's time zone (default: yesterday).
        date: Option<String>,
    },
    /// The back office's officers: who may work the dossiers of which agency.
    Officer {
        #[command(subcommand)]
        command: OfficerCli,
    },
}

#[derive(Subcommand, Debug)]
enum OfficerCli {
    /// Register an officer (or change one's agency, name and roles).
    Add {
        /// The officer's personal code, as national sign-in gives it (VN…).
        #[arg(long)]
        personal_code: String,
        /// The agency's code in the catalogue (QNI.STP, BCA.C06, …).
        #[arg(long)]
        agency: String,
        #[arg(long)]
        name: String,
        /// Comma-separated: receiver, processor, approver.
        #[arg(long, default_value = "receiver,processor,approver")]
        roles: String,
    },
    /// Withdraw an officer's rights.
    Remove {
        #[arg(long)]
        personal_code: String,
    },
    /// List the active officers.
    List {
        #[arg(long)]
        agency: Option<String>,
    },
}

/// How to reach the central server's management API: its URL and the administrator's
/// certificate (the demo writes them under DATA_DIR/exchange/).
#[derive(clap::Args, Debug)]
struct CentralArgs {
    /// `https://HOST:PORT` of the management API (the demo prints it).
    #[arg(long, global = true)]
    central: Option<String>,
    #[arg(long, global = true, default_value = "xalo-data/exchange/admin.pem")]
    cert: PathBuf,
    #[arg(long, global = true, default_value = "xalo-data/exchange/admin.key")]
    key: PathBuf,
    /// The root CA the central server's certificate chains to.
    #[arg(long, global = true, default_value = "xalo-data/exchange/root.pem")]
    ca: PathBuf,
}

impl CentralArgs {
    fn client(&self) -> Result<xalo_exchange::management_client::ManagementClient, Error> {
        let central = self.central.as_deref().ok_or_else(|| {
            Error::new(
                ErrorCode::ConfigInvalid,
                "--central https://HOST:PORT is required",
            )
        })?;
        xalo_exchange::management_client::ManagementClient::from_files(
            central, &self.cert, &self.key, &self.ca,
        )
    }
}

/// How to reach a gateway's administration API.
#[derive(clap::Args, Debug)]
struct GatewayAdminArgs {
    /// The gateway's URL (the demo prints each member's).
    #[arg(long, global = true)]
    gateway: Option<String>,
    /// The file holding the gateway's administration token.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

impl GatewayAdminArgs {
    fn client(&self) -> Result<xalo_exchange::nation::GatewayAdmin, Error> {
        let (Some(url), Some(file)) = (&self.gateway, &self.token_file) else {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                "--gateway URL and --token-file FILE are required",
            ));
        };
        let token =
            std::fs::read_to_string(file).map_err(|e| Error::from(e).context(file.display()))?;
        xalo_exchange::nation::GatewayAdmin::new(url, token.trim())
    }
}

#[derive(Subcommand, Debug)]
enum ServiceCommand {
    /// Register a service with its backend and, optionally, its OpenAPI 3 description
    /// (JSON) from which its endpoints are read.
    Add {
        /// `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`
        service: String,
        #[arg(long)]
        backend: String,
        #[arg(long)]
        openapi: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ExchangeCommand {
    /// Export one exchange (by X-Road-Id) as an ASiC-E container sealed by the gateway's
    /// owner, which `xalo verify` checks.
    Evidence {
        query_id: String,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Export the message log into DIR as hash-linked files (continuing what is there),
    /// or with --verify check the chain of DIR.
    Archive {
        #[arg(long)]
        out: PathBuf,
        /// Records per file.
        #[arg(long, default_value_t = 1000)]
        records: i64,
        /// Only check DIR's chain (and, with --expect, its last file's hash).
        #[arg(long)]
        verify: bool,
        #[arg(long)]
        expect: Option<String>,
    },
    /// The exchanges logged on behalf of a person (X-Road-UserId), newest first.
    User { user_id: String },
    /// The requests this gateway refused, newest first: when, side, X-Road error type,
    /// status, the detail id the caller got, client, service, peer, request line and
    /// message.
    Refusals {
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// Only the refusal whose caller got this detail id.
        #[arg(long)]
        detail: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AccessCommand {
    /// Allow a client (a member, a subsystem, or `group:CODE`) to call a service.
    Grant(AccessArgs),
    /// Withdraw such a right.
    Revoke(AccessArgs),
}

#[derive(clap::Args, Debug)]
struct AccessArgs {
    service: String,
    client: String,
    /// An HTTP method, or `*`.
    #[arg(long, default_value = "*")]
    method: String,
    /// A path template (`/persons/{code}`), or `**` for every path.
    #[arg(long, default_value = "**")]
    path: String,
}

impl AccessArgs {
    fn subject(&self) -> Result<xalo_exchange::access_right::Subject, Error> {
        use xalo_exchange::access_right::Subject;
        Ok(match self.client.strip_prefix("group:") {
            Some(code) => Subject::Group(code.to_owned()),
            None => Subject::Client(self.client.parse()?),
        })
    }
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Register a topic: `VN/GOV/000001/population/births`.
    Add {
        topic: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Allow a client (a member, a subsystem, or `group:CODE`) to subscribe to a topic.
    Grant { topic: String, client: String },
    /// Withdraw such a right; events still queued for it are dropped.
    Revoke { topic: String, client: String },
}

#[derive(Subcommand, Debug)]
enum SubscriptionCommand {
    /// Subscribe a subsystem of this gateway's member to a topic; its events go to the
    /// backend at `--delivery`.
    Add {
        topic: String,
        #[arg(long)]
        subscriber: String,
        /// `http(s)://…` of the backend that takes the events.
        #[arg(long)]
        delivery: String,
    },
    /// End a subscription.
    Remove {
        topic: String,
        #[arg(long)]
        subscriber: String,
    },
}

fn topic_subject(client: &str) -> Result<xalo_exchange::access_right::Subject, Error> {
    client.parse()
}

#[derive(Subcommand, Debug)]
enum MemberCommand {
    /// Register a member: `VN/GOV/000001 "Bộ Công an"`.
    Add { id: String, name: String },
    /// List members, subsystems and gateways of the registry.
    List,
}

#[derive(Subcommand, Debug)]
enum SubsystemCommand {
    /// Register a subsystem: `VN/GOV/000001/population`.
    Add { id: String },
}

#[derive(Subcommand, Debug)]
enum GatewayCommand {
    /// Register a member's gateway with its address and TLS authentication certificate.
    Register {
        #[arg(long)]
        owner: String,
        #[arg(long)]
        code: String,
        /// `HOST:PORT` of its gateway-to-gateway TLS listener.
        #[arg(long)]
        address: String,
        #[arg(long)]
        tls_cert: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Create a global group.
    Add { code: String, description: String },
    /// Add a member or subsystem to a global group.
    AddMember { code: String, client: String },
}

#[derive(Subcommand, Debug)]
enum IdCommand {
    /// Register a relying party (an e-service that signs people in). Prints its secret once.
    ClientAdd {
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        name: String,
        /// client_secret_basic, private_key_jwt or none (a public client, PKCE required).
        #[arg(long, default_value = "client_secret_basic")]
        auth_method: String,
        /// Exact redirect URIs; repeat for each.
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// The client's public keys (a JWK set file) for private_key_jwt.
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
    /// List relying parties.
    Clients,
    /// Start signing ID tokens with a new key (the old one stays published for a while).
    KeysRotate,
}

#[derive(Subcommand, Debug)]
enum RegistryCommand {
    /// Generate a synthetic nation: families across the provinces with valid personal
    /// codes, and their enterprises; the same seed gives the same nation.
    Generate {
        #[arg(long)]
        persons: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One enterprise per this many people.
        #[arg(long, default_value_t = 20)]
        persons_per_enterprise: u64,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Data exchange: round trips/s and p50/p99 through a client gateway, a provider
    /// gateway and an echo backend with C concurrent clients, beside the backend called
    /// directly in the same run, with the ratio; each gateway runs as a process of this
    /// binary, whose resident memory under load is printed.
    Exchange {
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Also record every message in a ledger.
        #[arg(long)]
        ledger: bool,
        /// Also measure latency at this many round-trips/s, offered on a fixed schedule
        /// (0 to skip).
        #[arg(long, default_value_t = 5_000.0)]
        rate: f64,
        /// Register this many other members (each with a subsystem and a gateway, all in
        /// one global group, each subsystem granted the service), as a nation holds them.
        #[arg(long, default_value_t = 0)]
        members: usize,
        /// Worker threads of each gateway process (0: one per core, as `xalo serve`
        /// starts by default). The two gateways share this machine's cores with each other
        /// and the load; with fewer threads each takes less CPU per round trip, but cannot
        /// use a core the other leaves idle.
        #[arg(long, default_value_t = 0)]
        gateway_workers: u16,
    },
    /// Trust services: P-256 signatures and verifications/s beside `openssl speed`, TSA
    /// tokens/s and OCSP responses/s over HTTP with 64 concurrent clients.
    Trust {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// National sign-in: complete code-flow logins/s (ID-card by TLS client certificate,
    /// PKCE, client_secret_basic, ID token verified) and token requests/s with C concurrent
    /// clients, on SQLite files in a temporary directory.
    Id {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Ask OCSP without a nonce (RFC 5019's profile for high volume: the responder
        /// may answer from its cache), instead of the provider's default, a nonce at every
        /// login.
        #[arg(long)]
        ocsp_without_nonce: bool,
    },
    /// Citizen portal: dossier submissions/s and p50/p99 per page with C concurrent
    /// simulated citizens over HTTP (each signed in once with Mobile-ID through OpenID
    /// Connect, then: apply page, draft prefilled from the population register through the
    /// exchange, form, submit, dossier page), in a whole nation started in this process on
    /// SQLite files in a temporary directory.
    Portal {
        #[arg(long, default_value_t = 200)]
        citizens: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// People in the generated population register.
        #[arg(long, default_value_t = 10_000)]
        persons: u64,
    },
    /// Population register: generation speed, then concurrent lookups by personal code
    /// through the HTTP service and through the exchange (client gateway, provider
    /// gateway, service; each writes its access record). Uses the configured
    /// databases (XALO_DATABASE_URL for PostgreSQL), or SQLite files in a temporary
    /// directory.
    Registry {
        #[arg(long, default_value_t = 100_000)]
        persons: u64,
        /// At most this many of the same rows go through PostgreSQL's own COPY for the
        /// load-rate ratio (its table sits beside the register's until measured); 0: none.
        #[arg(long, default_value_t = 10_000_000)]
        copy_rows: u64,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Transparency ledger: durable appends/s with concurrent submitters, acknowledgement to
    /// signed checkpoint p50/p99, inclusion-proof time in a log of N entries, bytes per
    /// entry. A SQLite file in a temporary directory, or the (empty) database in
    /// XALO_DATABASE_URL.
    Ledger {
        /// Entries to build the log to before measuring.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        submitters: usize,
        /// How often the log integrates and signs a checkpoint.
        #[arg(long, default_value_t = 100)]
        checkpoint_interval_ms: u64,
        #[arg(long, default_value_t = 2000)]
        proofs: usize,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment) as TOML.
    Show {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub async fn run(cli: Cli) -> Result<(), Error> {
    if matches!(cli.command, Command::Bench { .. }) {
        // Figures from different machines are read beside this line.
        println!("{}", xalo_trust::benchmark::machine_line(300)?);
    }
    match cli.command {
        Command::Demo {
            data_dir,
            port_base,
        } => {
            let mut config = Config::load(None)?;
            config.data_dir = data_dir;
            config.port_base = port_base;
            xalo_core::telemetry::init(&config.log)?;
            demo::run(config).await
        }
        Command::Serve { role, config } => {
            let config = Config::load(config.as_deref())?;
            let role = roles::find(&role).ok_or_else(|| {
                Error::new(
                    ErrorCode::ConfigUnknownRole,
                    format!("no role {role:?}; roles: {}", roles::names().join(", ")),
                )
            })?;
            xalo_core::telemetry::init(&config.log)?;
            let handle = roles::start(role, &config).await?;
            println!("{} listening on {}", role.name, handle.url());
            xalo_core::server::shutdown_signal().await;
            handle.shutdown().await
        }
        Command::Relay {
            to,
            listen,
            tls,
            cert,
            key,
            peer_cert,
        } => {
            let identity = match (cert, key) {
                (Some(c), Some(k)) => Some(xalo_exchange::tls::Identity::from_files(&c, &k)?),
                _ => None,
            };
            let upstream_certificate = match peer_cert {
                Some(p) => {
                    let invalid = |m: String| {
                        Error::new(ErrorCode::ConfigInvalid, format!("{}: {m}", p.display()))
                    };
                    let pem = std::fs::read(&p).map_err(|e| invalid(e.to_string()))?;
                    let first = xalo_trust::authority::read_certificates(&pem)
                        .map_err(|e| invalid(e.message))?
                        .into_iter()
                        .next();
                    Some(first.ok_or_else(|| invalid("no certificate in it".into()))?)
                }
                None => None,
            };
            let config = Config::load(None)?;
            xalo_core::telemetry::init(&config.log)?;
            let spec = xalo_exchange::relay::RelaySpec {
                upstream: to,
                upstream_certificate,
                identity,
                inbound_tls: tls,
            };
            let listener = xalo_core::server::bind(listen).await?;
            let relay = xalo_exchange::relay::start(spec, listener).await?;
            println!("relay listening on {}", relay.url());
            xalo_core::server::shutdown_signal().await;
            relay.shutdown().await
        }
        Command::Config {
            command: ConfigCommand::Show { config },
        } => {
            print!("{}", Config::load(config.as_deref())?.to_toml()?);
            Ok(())
        }
        Command::Pki(command) => {
            let config = Config::load(None)?;
            xalo_trust::cli::run_pki(&config, command).await
        }
        Command::Sign(args) => {
            let config = Config::load(None)?;
            xalo_trust::cli::run_sign(&config, args).await
        }
        Command::Verify(args) => {
            let config = Config::load(None)?;
            if xalo_trust::cli::run_verify(&config, args)? {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorCode::TrustBadSignature,
                    "the container did not verify (see above)",
                ))
            }
        }
        Command::Bench {
            command: BenchCommand::Trust { seconds },
        } => {
            for line in xalo_trust::benchmark::run(seconds).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Id {
                    clients,
                    seconds,
                    ocsp_without_nonce,
                },
        } => {
            let report = xalo_id::bench::run(&xalo_id::bench::BenchOptions {
                clients,
                seconds,
                ocsp_nonce: !ocsp_without_nonce,
            })
            .await?;
            for line in report.lines() {
                println!("{line}");
            }
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Portal {
                    citizens,
                    seconds,
                    persons,
                },
        } => {
            let report = xalo_portal::bench::run(&xalo_portal::bench::BenchOptions {
                citizens,
                seconds,
                persons,
                ..Default::default()
            })
            .await?;
            print!("{report}");
            Ok(())
        }
        Command::Ledger { command } => ledger(command).await,
        Command::Portal {
            command: PortalCommand::Officer { command },
            config,
        } => {
            let config = Config::load(config.as_deref())?;
            use xalo_portal::office::OfficerCommand;
            let command = match command {
                OfficerCli::Add {
                    personal_code,
                    agency,
                    name,
                    roles,
                } => OfficerCommand::Add {
                    personal_code,
                    agency,
                    name,
                    roles,
                },
                OfficerCli::Remove { personal_code } => OfficerCommand::Remove { personal_code },
                OfficerCli::List { agency } => OfficerCommand::List { agency },
            };
            println!(
                "{}",
                xalo_portal::office::officer_command(&config, command).await?
            );
            Ok(())
        }
        Command::Portal {
            command: PortalCommand::Reconcile { date },
            config,
        } => {
            let config = Config::load(config.as_deref())?;
            let report =
                xalo_portal::payment_client::reconcile_command(&config, date.as_deref()).await?;
            println!("{report}");
            if report.flagged.is_empty() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorCode::PayMismatch,
                    format!("{} payment(s) flagged", report.flagged.len()),
                ))
            }
        }
        Command::Id { command, config } => id(command, config).await,
        Command::Service {
            command:
                ServiceCommand::Add {
                    service,
                    backend,
                    openapi,
                },
            gateway,
        } => {
            let openapi = openapi
                .map(|f| -> Result<serde_json::Value, Error> {
                    let text = std::fs::read_to_string(&f)
                        .map_err(|e| Error::from(e).context(f.display()))?;
                    serde_json::from_str(&text).map_err(|e| {
                        Error::new(ErrorCode::HttpBadRequest, format!("{}: {e}", f.display()))
                    })
                })
                .transpose()?;
            gateway
                .client()?
                .add_service(&xalo_exchange::service_registry::NewService {
                    service: service.parse()?,
                    backend_url: backend,
                    openapi,
                })
                .await?;
            println!("service {service} registered");
            Ok(())
        }
        Command::Access { command, gateway } => {
            let admin = gateway.client()?;
            match command {
                AccessCommand::Grant(a) => {
                    admin
                        .grant(
                            &a.service.parse()?,
                            a.subject()?,
                            Some((&a.method, &a.path)),
                        )
                        .await?;
                    println!(
                        "{} may call {} {} of {}",
                        a.client, a.method, a.path, a.service
                    );
                }
                AccessCommand::Revoke(a) => {
                    admin
                        .revoke(
                            &a.service.parse()?,
                            a.subject()?,
                            Some((&a.method, &a.path)),
                        )
                        .await?;
                    println!(
                        "{} may no longer call {} {} of {}",
                        a.client, a.method, a.path, a.service
                    );
                }
            }
            Ok(())
        }
        Command::Exchange { command, gateway } => exchange(command, gateway).await,
        Command::Topic { command, gateway } => {
            let admin = gateway.client()?;
            match command {
                TopicCommand::Add { topic, description } => {
                    admin.add_topic(&topic.parse()?, &description).await?;
                    println!("topic {topic} registered");
                }
                TopicCommand::Grant { topic, client } => {
                    admin
                        .grant_topic(&topic.parse()?, topic_subject(&client)?)
                        .await?;
                    println!("{client} may subscribe to {topic}");
                }
                TopicCommand::Revoke { topic, client } => {
                    admin
                        .revoke_topic(&topic.parse()?, topic_subject(&client)?)
                        .await?;
                    println!("{client} may no longer subscribe to {topic}");
                }
            }
            Ok(())
        }
        Command::Subscription { command, gateway } => {
            let admin = gateway.client()?;
            match command {
                SubscriptionCommand::Add {
                    topic,
                    subscriber,
                    delivery,
                } => {
                    admin
                        .subscribe(&topic.parse()?, &subscriber.parse()?, &delivery)
                        .await?;
                    println!("{subscriber} subscribed to {topic}; events go to {delivery}");
                }
                SubscriptionCommand::Remove { topic, subscriber } => {
                    admin
                        .unsubscribe(&topic.parse()?, &subscriber.parse()?)
                        .await?;
                    println!("{subscriber} unsubscribed from {topic}");
                }
            }
            Ok(())
        }
        Command::Member { command, central } => {
            let m = central.client()?;
            match command {
                MemberCommand::Add { id, name } => {
                    m.add_member(&id.parse()?, &name).await?;
                    println!("member {id} registered");
                }
                MemberCommand::List => {
                    let conf = m.registry().await?;
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&conf).unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Command::Subsystem {
            command: SubsystemCommand::Add { id },
            central,
        } => {
            central.client()?.add_subsystem(&id.parse()?).await?;
            println!("subsystem {id} registered");
            Ok(())
        }
        Command::Gateway {
            command:
                GatewayCommand::Register {
                    owner,
                    code,
                    address,
                    tls_cert,
                },
            central,
        } => {
            let tls_certificate = std::fs::read_to_string(&tls_cert)
                .map_err(|e| Error::from(e).context(tls_cert.display()))?;
            central
                .client()?
                .register_gateway(&xalo_exchange::registry::NewGateway {
                    owner: owner.parse()?,
                    code: code.clone(),
                    address,
                    tls_certificate,
                })
                .await?;
            println!("gateway {code} of {owner} registered");
            Ok(())
        }
        Command::Group { command, central } => {
            let m = central.client()?;
            match command {
                GroupCommand::Add { code, description } => {
                    m.add_group(&code, &description).await?;
                    println!("group {code} created");
                }
                GroupCommand::AddMember { code, client } => {
                    m.add_group_member(&code, &client.parse()?).await?;
                    println!("{client} added to {code}");
                }
            }
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Exchange {
                    requests,
                    concurrency,
                    ledger,
                    rate,
                    members,
                    gateway_workers,
                },
        } => {
            let report = xalo_exchange::bench::run(&xalo_exchange::bench::BenchOptions {
                requests,
                concurrency,
                ledger,
                // Each gateway in a process of this binary, so its memory can be read.
                gateway_binary: std::env::current_exe().ok(),
                rate: Some(rate),
                members,
                gateway_workers: (gateway_workers > 0).then_some(gateway_workers),
            })
            .await?;
            print!("{report}");
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Ledger {
                    entries,
                    seconds,
                    submitters,
                    checkpoint_interval_ms,
                    proofs,
                    config,
                },
        } => {
            let mut config = Config::load(config.as_deref())?;
            let scratch = tempfile_dir()?;
            if config.database_url.is_none() {
                config.data_dir = scratch.clone();
            }
            let report = xalo_ledger::bench::run(&xalo_ledger::bench::BenchOptions {
                database_url: config.database_url("ledger"),
                entries,
                duration: std::time::Duration::from_secs(seconds),
                submitters,
                checkpoint_interval: std::time::Duration::from_millis(checkpoint_interval_ms),
                proofs,
                progress: true,
            })
            .await;
            let _ = std::fs::remove_dir_all(&scratch);
            print!("{}", report?);
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Registry {
                    persons,
                    copy_rows,
                    clients,
                    seconds,
                    config,
                },
        } => {
            let mut config = Config::load(config.as_deref())?;
            let scratch = tempfile_dir()?;
            if config.database_url.is_none() {
                config.data_dir = scratch.clone();
            }
            let b = xalo_registry::bench::run(
                &config,
                persons,
                copy_rows,
                clients,
                std::time::Duration::from_secs(seconds),
                &scratch,
            )
            .await;
            let _ = std::fs::remove_dir_all(&scratch);
            let b = b?;
            let load = if b.generate_per_sec > 0.0 {
                println!(
                    "load          {:.0} rows/s (generated and written)",
                    b.generate_per_sec
                );
                match b.copy_baseline_per_sec {
                    Some(copy) => {
                        println!(
                            "COPY          {copy:.0} rows/s (PostgreSQL alone, the first {} of the same rows)",
                            b.copy_baseline_rows
                        );
                        format!(
                            ", load {:.0} rows/s, ratio {:.2} to COPY of {} rows",
                            b.generate_per_sec,
                            b.generate_per_sec / copy,
                            b.copy_baseline_rows
                        )
                    }
                    None => format!(", load {:.0} rows/s", b.generate_per_sec),
                }
            } else {
                String::new()
            };
            println!(
                "direct        p50 {:.3} ms, p99 {:.3} ms (lookup by personal code)",
                b.direct_p50_ms, b.direct_p99_ms
            );
            println!(
                "search        p99 {:.3} ms (full name and birth date)",
                b.search_p99_ms
            );
            for (name, l) in [("http", &b.http), ("exchange", &b.exchange)] {
                println!(
                    "{name:<13} {:.0} lookups/s, p50 {:.2} ms, p99 {:.2} ms, {} failed ({clients} clients, access records written)",
                    l.per_sec, l.p50_ms, l.p99_ms, l.failed
                );
            }
            println!(
                "registry: {:.0} lookups/s over HTTP, {:.0} through the exchange (p50 {:.2} ms, p99 {:.2} ms), direct p50 {:.3} ms, p99 {:.3} ms, search p99 {:.3} ms{load}, {} persons",
                b.http.per_sec,
                b.exchange.per_sec,
                b.exchange.p50_ms,
                b.exchange.p99_ms,
                b.direct_p50_ms,
                b.direct_p99_ms,
                b.search_p99_ms,
                b.persons
            );
            Ok(())
        }
        Command::Registry {
            command:
                RegistryCommand::Generate {
                    persons,
                    seed,
                    persons_per_enterprise,
                    config,
                },
        } => {
            let config = Config::load(config.as_deref())?;
            let (population, business) = xalo_registry::service::open(&config).await?;
            let started = std::time::Instant::now();
            let bar = indicatif::ProgressBar::new(persons).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} people, {per_sec}, {eta} left",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            // People go to the population register; their enterprises to the business one.
            let made = xalo_registry::generate::generate_split(
                &population,
                &business,
                persons,
                seed,
                persons_per_enterprise,
                &bar,
            )
            .await?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "generate: {} persons/s ({} persons, {} enterprises in {secs:.1} s into {})",
                (made.persons as f64 / secs.max(1e-9)) as u64,
                made.persons,
                made.enterprises,
                population.url()
            );
            Ok(())
        }
        Command::Roles => {
            for role in roles::ALL {
                println!("{:<10} +{:<3} {}", role.name, role.port_offset, role.about);
            }
            Ok(())
        }
        Command::Errors => {
            for code in ErrorCode::ALL {
                println!("{:<16} {}  {}", code.as_str(), code.status(), code.title());
            }
            Ok(())
        }
    }
}

async fn ledger(command: LedgerCommand) -> Result<(), Error> {
    use xalo_ledger::verify::{TileSource, VerifyRequest, leaf_hash_of_file, mirror, verify};
    match command {
        LedgerCommand::Verify {
            log,
            key,
            witnesses,
            quorum,
            checkpoint,
            file,
            kind,
            hash,
            older,
        } => {
            let leaf_hash = match (file, kind, hash) {
                (Some(f), Some(k), _) => Some(leaf_hash_of_file(&k, &f)?),
                (_, _, Some(h)) => Some(xalo_ledger::service::parse_hash(&h)?),
                _ => None,
            };
            let request = VerifyRequest {
                log_key: key,
                witness_keys: witnesses,
                quorum,
                checkpoint,
                leaf_hash,
                older,
            };
            let report = verify(&TileSource::parse(&log)?, &request).await?;
            let cp = &report.checkpoint;
            println!(
                "checkpoint    {} size {} root {}",
                cp.origin, cp.size, cp.root
            );
            println!("signature     log key verified");
            for (name, time) in &report.cosigners {
                println!("cosignature   {name} at {time} (unix seconds)");
            }
            println!("tiles         recompute the signed root");
            if let Some(i) = report.included_at {
                println!("inclusion     leaf {i} is in the tree");
            }
            if let Some(n) = report.consistent_with {
                println!("consistency   the checkpoint of size {n} is a prefix");
            }
            println!("OK");
            Ok(())
        }
        LedgerCommand::Mirror { log, out } => {
            let client = xalo_ledger::client::LedgerClient::new(&log)?;
            let size = mirror(&client, &out).await?;
            println!("copied a tree of {size} entries to {}", out.display());
            Ok(())
        }
    }
}

/// A fresh scratch directory for a benchmark's databases.
fn tempfile_dir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("xalo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn id(command: IdCommand, config: Option<PathBuf>) -> Result<(), Error> {
    let config = Config::load(config.as_deref())?;
    let db = xalo_store::Database::connect(&config.database_url(xalo_id::ROLE)).await?;
    xalo_id::store::migrate(&db).await?;
    match command {
        IdCommand::ClientAdd {
            client_id,
            name,
            auth_method,
            redirect_uris,
            post_logout_redirect_uris,
            jwks,
        } => {
            let jwks = jwks
                .map(|f| {
                    std::fs::read_to_string(&f).map_err(|e| Error::from(e).context(f.display()))
                })
                .transpose()?;
            let registration: xalo_id::client::Registration =
                serde_json::from_value(serde_json::json!({
                    "client_id": client_id,
                    "name": name,
                    "auth_method": auth_method,
                    "redirect_uris": redirect_uris,
                    "post_logout_redirect_uris": post_logout_redirect_uris,
                    "jwks": jwks,
                }))
                .map_err(|e| Error::new(ErrorCode::ConfigInvalid, e.to_string()))?;
            match xalo_id::client::register(&db, &registration).await? {
                Some(secret) => {
                    println!("client {client_id} registered; its secret (shown once): {secret}")
                }
                None => println!("client {client_id} registered"),
            }
        }
        IdCommand::Clients => {
            for (id, name, method) in xalo_id::client::list(&db).await? {
                println!("{id:<24} {method:<20} {name}");
            }
        }
        IdCommand::KeysRotate => {
            xalo_id::signing_key::rotate(&db).await?;
            println!("a new signing key is in use; the previous one stays in the JWKS");
        }
    }
    Ok(())
}

async fn exchange(command: ExchangeCommand, gateway: GatewayAdminArgs) -> Result<(), Error> {
    match command {
        ExchangeCommand::Evidence { query_id, out } => {
            let bytes = gateway.client()?.evidence(&query_id).await?;
            std::fs::write(&out, bytes).map_err(|e| Error::from(e).context(out.display()))?;
            println!("evidence of {query_id} written to {}", out.display());
        }
        ExchangeCommand::Archive {
            out,
            records,
            verify,
            expect,
        } => {
            let state = if verify {
                xalo_exchange::archive::verify_dir(&out, expect.as_deref())?
            } else {
                xalo_exchange::archive::export_to_dir(&gateway.client()?, &out, records).await?
            };
            println!(
                "{} files, {} records; last file's SHA-256 {}",
                state.files, state.records, state.last_hash
            );
        }
        ExchangeCommand::User { user_id } => {
            for r in gateway.client()?.user_records(&user_id).await? {
                println!(
                    "{}  {}  {} {} {} {}  {}  {}",
                    r.time_unix,
                    r.x_road_id,
                    r.client,
                    r.method,
                    r.service,
                    r.path,
                    r.purpose.as_deref().unwrap_or("-"),
                    r.status
                );
            }
        }
        ExchangeCommand::Refusals { limit, detail } => {
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_owned()
                } else {
                    s.to_owned()
                }
            };
            for r in gateway
                .client()?
                .refusals(limit as usize, detail.as_deref())
                .await?
            {
                println!(
                    "{}  {:<10} {} {}  {}  upstream {}  client {}  service {}  peer {}  {}  {}",
                    r.refused_unix,
                    r.side,
                    r.kind,
                    r.status,
                    r.detail,
                    dash(&r.upstream_detail),
                    dash(&r.client),
                    dash(&r.service),
                    dash(&r.peer),
                    r.request,
                    r.message
                );
            }
        }
    }
    Ok(())
}
