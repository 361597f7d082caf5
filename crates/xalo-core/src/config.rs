//! Configuration: a TOML file, overridden by `XALO_*` environment variables.
//!
//! Nested keys are separated by a double underscore in the environment:
//! `XALO_LOG__FORMAT=json`, `XALO_ROLES__TRUST__LISTEN=0.0.0.0:8443`. Top-level keys need
//! none: `XALO_DATABASE_URL=postgres://…`, `XALO_DATA_DIR=/var/lib/xalo`. Unknown keys are
//! rejected, so a misspelt setting fails at start instead of silently doing nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode};

/// Environment variables under this prefix that are not configuration (test harness knobs).
const NON_CONFIG_PREFIXES: &[&str] = &["test_"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where SQLite files, keys and exported certificates live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; when unset each role uses `DATA_DIR/ROLE.db`.
    pub database_url: Option<String>,
    /// The address servers listen on unless a role says otherwise.
    pub bind: IpAddr,
    /// Host name used in the URLs servers print and publish.
    pub public_host: String,
    /// Roles listen on `port_base + offset`; each role has a fixed offset.
    pub port_base: u16,
    pub log: LogConfig,
    pub http: HttpConfig,
    /// Per-role overrides, keyed by role name.
    pub roles: BTreeMap<String, RoleConfig>,
    /// The TOML file this configuration was loaded from, so a running role can read it
    /// again on reload; not a setting itself.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("xalo-data"),
            database_url: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_host: "127.0.0.1".into(),
            port_base: 8400,
            log: LogConfig::default(),
            http: HttpConfig::default(),
            roles: BTreeMap::new(),
            file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info,xalo_store=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body any endpoint accepts unless it sets its own limit.
    pub max_body_bytes: usize,
    /// Seconds a graceful shutdown waits for open requests.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 2 * 1024 * 1024,
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoleConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    /// The role's own settings, which its crate reads with [`Config::role_settings`]
    /// (and which are checked there, unknown keys included).
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl Config {
    /// Load defaults, then the TOML file (if given), then `XALO_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, Error> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(Error::new(
                    ErrorCode::ConfigInvalid,
                    format!("configuration file {} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("XALO_").split("__").filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            !NON_CONFIG_PREFIXES.iter().any(|p| k.starts_with(p))
        }));
        let mut config: Config = figment
            .extract()
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, e.to_string()))?;
        config.file = file.map(Path::to_path_buf);
        Ok(config)
    }

    /// Load again from the file (and environment) this configuration came from.
    pub fn reload(&self) -> Result<Config, Error> {
        let file = self.file.as_deref().ok_or_else(|| {
            Error::new(
                ErrorCode::ConfigInvalid,
                "this configuration was not loaded from a file, so there is nothing to re-read",
            )
        })?;
        Config::load(Some(file))
    }

    /// Parse a configuration from TOML text alone (no environment).
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, e.to_string()))
    }

    /// The configuration as TOML, as `xalo config show` prints it.
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string_pretty(self)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, e.to_string()))
    }

    pub fn role(&self, role: &str) -> RoleConfig {
        self.roles.get(role).cloned().unwrap_or_default()
    }

    /// The role's own settings section (`[roles.NAME]` less `listen` and `database_url`),
    /// as the role's type; absent keys take the type's defaults.
    pub fn role_settings<T: serde::de::DeserializeOwned>(&self, role: &str) -> Result<T, Error> {
        serde_json::from_value(serde_json::Value::Object(self.role(role).settings))
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("[roles.{role}]: {e}")))
    }

    /// Where a role listens: its own `listen`, else `bind:port_base+offset`.
    pub fn listen_addr(&self, role: &str, offset: u16) -> SocketAddr {
        self.role(role)
            .listen
            .unwrap_or_else(|| SocketAddr::new(self.bind, self.port_base.saturating_add(offset)))
    }

    /// The database a role uses: its own URL, else the global one, else its SQLite file.
    pub fn database_url(&self, role: &str) -> String {
        self.role(role)
            .database_url
            .or_else(|| self.database_url.clone())
            .unwrap_or_else(|| {
                format!(
                    "sqlite://{}",
                    self.data_dir.join(format!("{role}.db")).display()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_unknown_keys() {
        let c = Config::from_toml(
            "port_base = 9000\n[log]\nformat = \"json\"\n[roles.trust]\nlisten = \"127.0.0.1:1234\"\n",
        )
        .unwrap();
        assert_eq!(c.port_base, 9000);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.listen_addr("trust", 3).port(), 1234);
        assert_eq!(c.listen_addr("ledger", 3).port(), 9003);
        let back = Config::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c);
        let err = Config::from_toml("prot_base = 1").unwrap_err();
        assert_eq!(err.code, ErrorCode::ConfigInvalid);
        assert!(err.message.contains("prot_base"), "{}", err.message);
    }

    #[test]
    fn role_settings_are_read_by_the_role() {
        #[derive(Deserialize, Default, Debug)]
        #[serde(default, deny_unknown_fields)]
        struct Ledger {
            origin: String,
            batch: u32,
        }
        let c = Config::from_toml("[roles.ledger]\norigin = \"xalo.vn/log\"\nbatch = 5\n").unwrap();
        let l: Ledger = c.role_settings("ledger").unwrap();
        assert_eq!((l.origin.as_str(), l.batch), ("xalo.vn/log", 5));
        let none: Ledger = c.role_settings("trust").unwrap();
        assert_eq!(none.batch, 0);
        let c = Config::from_toml("[roles.ledger]\norign = \"x\"\n").unwrap();
        let e = c.role_settings::<Ledger>("ledger").unwrap_err();
        assert!(e.message.contains("orign"), "{}", e.message);
        assert_eq!(Config::from_toml(&c.to_toml().unwrap()).unwrap(), c);
    }

    #[test]
    fn database_url_falls_back_to_a_sqlite_file_per_role() {
        let c = Config::from_toml("data_dir = \"/srv/x\"").unwrap();
        assert_eq!(c.database_url("trust"), "sqlite:///srv/x/trust.db");
        let c = Config::from_toml("database_url = \"postgres://db/x\"").unwrap();
        assert_eq!(c.database_url("trust"), "postgres://db/x");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test jail fixes the error type
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("x.toml", "port_base = 9000\n[log]\nfilter = \"debug\"")?;
            jail.set_env("XALO_PORT_BASE", "9100");
            jail.set_env("XALO_LOG__FORMAT", "json");
            jail.set_env("XALO_TEST_BACKEND", "postgres");
            let c = Config::load(Some(Path::new("x.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.port_base, 9100);
            assert_eq!(c.log.format, LogFormat::Json);
            assert_eq!(c.log.filter, "debug");
            jail.set_env("XALO_NO_SUCH_SETTING", "1");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }
}
