//! The server roles this build can run, with their fixed port offsets.
//!
//! Each role's server lives in its library crate as `serve(config, listener)`; this table
//! is the one place that names them all, for `xalo serve ROLE` and `xalo demo`.

use std::future::Future;
use std::pin::Pin;

use tokio::net::TcpListener;
use xalo_core::server::{self, ServerHandle};
use xalo_core::{Config, Error};

use crate::status;

type Start =
    fn(Config, TcpListener) -> Pin<Box<dyn Future<Output = Result<ServerHandle, Error>> + Send>>;

pub struct Role {
    pub name: &'static str,
    /// Whether `xalo demo` runs it as one process-wide role; the exchange's central server
    /// and gateways are many per nation, and the demo starts them itself.
    pub in_demo: bool,
    /// Listens on `port_base + port_offset` unless configured otherwise.
    pub port_offset: u16,
    pub about: &'static str,
    start: Start,
}

pub const ALL: &[Role] = &[
    Role {
        name: "status",
        in_demo: true,
        port_offset: 0,
        about: "the nation's front page: every system, its URL and its health",
        start: |config, listener| Box::pin(status::serve(config, listener)),
    },
    Role {
        name: xalo_trust::ROLE,
        in_demo: true,
        port_offset: xalo_trust::cli::PORT_OFFSET,
        about: "national trust services: CAs, OCSP, RFC 3161 time-stamps",
        start: |config, listener| Box::pin(xalo_trust::serve(config, listener)),
    },
    Role {
        name: "ledger",
        in_demo: true,
        port_offset: 2,
        about: "transparency ledger: C2SP checkpoints and tiles, proofs",
        start: |config, listener| Box::pin(xalo_ledger::service::serve(config, listener)),
    },
    Role {
        name: "witness",
        in_demo: true,
        port_offset: 3,
        about: "ledger witness: checks consistency and cosigns checkpoints",
        start: |config, listener| Box::pin(xalo_ledger::witness::serve(config, listener)),
    },
    Role {
        name: "registry",
        in_demo: true,
        port_offset: 20,
        about: "population and business registers, their history, events and access records",
        start: |config, listener| Box::pin(xalo_registry::service::serve(config, listener)),
    },
    // The operator first: the sign-in provider asks it for subscribers' certificates.
    Role {
        name: "mobile-id",
        in_demo: true,
        port_offset: 31,
        about: "Mobile-ID operator: subscribers' keys, phone screens for PIN1 and PIN2",
        start: |config, listener| Box::pin(xalo_id::operator::serve(config, listener)),
    },
    Role {
        name: "id",
        in_demo: true,
        port_offset: 30,
        about: "national sign-in: OpenID Connect with ID-card, Mobile-ID and e-Residency",
        start: |config, listener| Box::pin(xalo_id::serve(config, listener)),
    },
    Role {
        name: xalo_portal::service::ROLE,
        in_demo: true,
        port_offset: xalo_portal::service::PORT_OFFSET,
        about: "public service portal: procedures, applications (dossiers), status, results",
        start: |config, listener| Box::pin(xalo_portal::service::serve(config, listener)),
    },
    Role {
        name: xalo_portal::payment::ROLE,
        in_demo: true,
        port_offset: xalo_portal::payment::PORT_OFFSET,
        about: "payment provider: fee orders, payer page, signed callbacks and statements",
        start: |config, listener| Box::pin(xalo_portal::payment::serve(config, listener)),
    },
    Role {
        name: xalo_exchange::central::ROLE,
        in_demo: false,
        port_offset: 10,
        about: "data exchange central server: members, gateways, signed global configuration",
        start: |config, listener| Box::pin(xalo_exchange::central::serve(config, listener)),
    },
    Role {
        name: xalo_exchange::gateway::ROLE,
        in_demo: false,
        port_offset: 11,
        about: "a member's data exchange gateway (its [roles.gateway] section names the member)",
        start: |config, listener| Box::pin(xalo_exchange::gateway::serve(config, listener)),
    },
];

pub fn find(name: &str) -> Option<&'static Role> {
    ALL.iter().find(|r| r.name == name)
}

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|r| r.name).collect()
}

/// Where `role` listens under `config` (port base 0 means any free port).
pub fn listen_addr(role: &Role, config: &Config) -> std::net::SocketAddr {
    let mut addr = config.listen_addr(role.name, role.port_offset);
    if config.port_base == 0
        && config
            .roles
            .get(role.name)
            .is_none_or(|r| r.listen.is_none())
    {
        addr.set_port(0);
    }
    addr
}

/// Bind the role's address and start it.
pub async fn start(role: &Role, config: &Config) -> Result<ServerHandle, Error> {
    let listener = server::bind(listen_addr(role, config)).await?;
    start_on(role, config, listener).await
}

/// Start the role on a listener bound already.
pub async fn start_on(
    role: &Role,
    config: &Config,
    listener: TcpListener,
) -> Result<ServerHandle, Error> {
    (role.start)(config.clone(), listener).await
}
