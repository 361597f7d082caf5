//! Command-line arguments and their dispatch.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use xalo_core::{Config, Error, ErrorCode};

use crate::{demo, roles};

#[derive(Parser, Debug)]
#[command(name = "xalo", version, about = "Xalo digital-government platform")]
pub struct Cli {
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
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// List the server roles.
    Roles,
    /// List every error code with its HTTP status and title.
    Errors,
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
        Command::Config {
            command: ConfigCommand::Show { config },
        } => {
            print!("{}", Config::load(config.as_deref())?.to_toml()?);
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
