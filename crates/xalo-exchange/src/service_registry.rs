//! A gateway's own registry, in its database (component `gateway`): the services its
//! member provides (backend URL, OpenAPI description, endpoints), the access rights on
//! them, and the information systems allowed to call out as the member's subsystems.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::Digest;
use xalo_core::{ClientId, Error, ErrorCode, ServiceId, SubsystemId};
use xalo_store::{Database, DbResultExt, Migration, Row};

use crate::access_right::{AccessRight, Endpoint, Rights, Subject};

const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "services, access rights and client systems",
        "CREATE TABLE gateway_service (
            service TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            backend_url TEXT NOT NULL,
            openapi TEXT
        );
        CREATE TABLE gateway_endpoint (
            service TEXT NOT NULL REFERENCES gateway_service (service),
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (service, method, path)
        );
        CREATE TABLE gateway_access_right (
            service TEXT NOT NULL REFERENCES gateway_service (service),
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            subject TEXT NOT NULL,
            PRIMARY KEY (service, method, path, subject)
        );
        CREATE TABLE gateway_client_key (
            key_sha256 TEXT PRIMARY KEY,
            subsystem TEXT NOT NULL,
            created_unix BIGINT NOT NULL
        );
        CREATE INDEX gateway_client_key_subsystem ON gateway_client_key (subsystem);",
    ),
    Migration::per_backend(
        2,
        "message log",
        "CREATE TABLE gateway_message_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            logged_unix BIGINT NOT NULL,
            side TEXT NOT NULL,
            x_road_id TEXT NOT NULL,
            client TEXT NOT NULL,
            service TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            request_head BLOB NOT NULL,
            request_signature TEXT NOT NULL,
            request_body BLOB,
            response_hash TEXT,
            response_head BLOB,
            response_signature TEXT,
            response_body BLOB,
            status BIGINT NOT NULL,
            ledger_index BIGINT
        );
        CREATE INDEX gateway_message_log_time ON gateway_message_log (logged_unix);
        CREATE INDEX gateway_message_log_id ON gateway_message_log (x_road_id);",
        "CREATE TABLE gateway_message_log (
            id BIGSERIAL PRIMARY KEY,
            logged_unix BIGINT NOT NULL,
            side TEXT NOT NULL,
            x_road_id TEXT NOT NULL,
            client TEXT NOT NULL,
            service TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            request_head BYTEA NOT NULL,
            request_signature TEXT NOT NULL,
            request_body BYTEA,
            response_hash TEXT,
            response_head BYTEA,
            response_signature TEXT,
            response_body BYTEA,
            status BIGINT NOT NULL,
            ledger_index BIGINT
        );
        CREATE INDEX gateway_message_log_time ON gateway_message_log (logged_unix);
        CREATE INDEX gateway_message_log_id ON gateway_message_log (x_road_id);",
    ),
    // Every change of the registry's tables, whoever makes it, moves the version on, so a
    // gateway reads a lookup again only when something changed (`ServiceRegistry::version`).
    Migration::per_backend(
        3,
        "registry version",
        "CREATE TABLE gateway_registry_version (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            version BIGINT NOT NULL
        );
        INSERT INTO gateway_registry_version (one, version) VALUES (1, 0);
        CREATE TRIGGER gateway_service_inserted AFTER INSERT ON gateway_service
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_service_updated AFTER UPDATE ON gateway_service
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_service_deleted AFTER DELETE ON gateway_service
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_endpoint_inserted AFTER INSERT ON gateway_endpoint
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_endpoint_updated AFTER UPDATE ON gateway_endpoint
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_endpoint_deleted AFTER DELETE ON gateway_endpoint
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_access_right_inserted AFTER INSERT ON gateway_access_right
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_access_right_updated AFTER UPDATE ON gateway_access_right
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_access_right_deleted AFTER DELETE ON gateway_access_right
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_client_key_inserted AFTER INSERT ON gateway_client_key
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_client_key_updated AFTER UPDATE ON gateway_client_key
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;
        CREATE TRIGGER gateway_client_key_deleted AFTER DELETE ON gateway_client_key
            BEGIN UPDATE gateway_registry_version SET version = version + 1; END;",
        "CREATE TABLE gateway_registry_version (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            version BIGINT NOT NULL
        );
        INSERT INTO gateway_registry_version (one, version) VALUES (1, 0);
        CREATE FUNCTION gateway_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN UPDATE gateway_registry_version SET version = version + 1; RETURN NULL; END
        $$;
        CREATE TRIGGER gateway_service_changed
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON gateway_service
            FOR EACH STATEMENT EXECUTE FUNCTION gateway_registry_changed();
        CREATE TRIGGER gateway_endpoint_changed
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON gateway_endpoint
            FOR EACH STATEMENT EXECUTE FUNCTION gateway_registry_changed();
        CREATE TRIGGER gateway_access_right_changed
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON gateway_access_right
            FOR EACH STATEMENT EXECUTE FUNCTION gateway_registry_changed();
        CREATE TRIGGER gateway_client_key_changed
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON gateway_client_key
            FOR EACH STATEMENT EXECUTE FUNCTION gateway_registry_changed();",
    ),
];

/// A service as its provider registers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewService {
    pub service: ServiceId,
    /// Where the gateway sends the requests: `http(s)://host[:port][/base]`.
    pub backend_url: String,
    /// The OpenAPI 3 description (JSON), from which the endpoints are read.
    #[serde(default)]
    pub openapi: Option<serde_json::Value>,
}

/// A registered service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub service: ServiceId,
    pub backend_url: String,
    pub endpoints: Vec<Endpoint>,
    #[serde(skip)]
    pub openapi: Option<String>,
}

/// A right to grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAccessRight {
    pub service: ServiceId,
    #[serde(default = "any_method")]
    pub method: String,
    #[serde(default = "any_path")]
    pub path: String,
    pub subject: Subject,
}

fn any_method() -> String {
    "*".into()
}
fn any_path() -> String {
    "**".into()
}

/// The registry over a gateway's database.
#[derive(Clone, Debug)]
pub struct ServiceRegistry {
    db: Database,
    /// The registry's version in the database, which triggers move on with every change
    /// of its tables (by this gateway, another instance or an edit in the database).
    version: Arc<Recent<i64>>,
    services: Arc<Versioned<Option<Arc<Service>>>>,
    rights: Arc<Versioned<Arc<Rights>>>,
    keys: Arc<Versioned<Option<ClientId>>>,
    /// How long the version is trusted, in milliseconds (see [`MAX_REUSE`]).
    reuse_ms: Arc<AtomicU64>,
}

/// How long the registry's version is trusted by default. Every message needs the
/// service, its rights and the caller's key; they are read once per version of the
/// registry, and the version (one row) at most once within this time, which keeps the
/// database out of the hot path however many rights a service has. A change made through
/// this gateway shows at once; one made at another instance sharing the database, or in
/// the database directly, within this time.
pub const DEFAULT_REUSE: Duration = Duration::from_secs(1);
/// The longest reuse allowed: a revoked right or key is refused after this at most.
pub const MAX_REUSE: Duration = Duration::from_secs(1);
const RECENT_LIMIT: usize = 10_000;

/// One read per key at a time: when a lookup runs out under load, every message asking
/// for it would otherwise read the same rows at once (a service's rights can be
/// thousands of rows).
#[derive(Debug, Default)]
struct Gates(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// The gate of one key, removed from [`Gates`] by the last one out.
struct Gate<'a> {
    gates: &'a Gates,
    key: &'a str,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Gates {
    fn of<'a>(&'a self, key: &'a str) -> Gate<'a> {
        let lock = match self.0.lock() {
            Ok(mut g) => g.entry(key.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        Gate {
            gates: self,
            key,
            lock: Some(lock),
        }
    }
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.lock().map(|g| g.is_empty()).unwrap_or(true)
    }
}

impl Gate<'_> {
    fn lock(&self) -> &tokio::sync::Mutex<()> {
        self.lock.as_deref().unwrap_or(&NO_GATE)
    }
}

/// Never reached (a gate holds its lock until dropped); here so that `lock` needs no panic.
static NO_GATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        if let Ok(mut g) = self.gates.0.lock() {
            // Let go under the lock its clones are taken under: the last one out sees
            // only the map's and removes it.
            self.lock = None;
            if g.get(self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
                g.remove(self.key);
            }
        }
    }
}

/// Lookups made within the reuse time. A generation counter, moved on by every local
/// change, keeps a lookup that started before the change from being stored after it.
#[derive(Debug)]
struct Recent<V> {
    map: Mutex<HashMap<String, (Instant, V)>>,
    generation: AtomicU64,
    gates: Gates,
}

impl<V: Clone> Recent<V> {
    fn new() -> Arc<Self> {
        Arc::new(Recent {
            map: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            gates: Gates::default(),
        })
    }
    /// The value of `key` read within `reuse`, or read now by `load`, one read at a time.
    /// Past half its reuse a value is read anew by one asker while the others go on with
    /// it, so under steady traffic no message waits for a read.
    async fn get_or_load<F, Fut>(&self, key: &str, reuse: Duration, load: F) -> Result<V, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, Error>>,
    {
        if let Some(v) = self.get(key, reuse / 2) {
            return Ok(v);
        }
        let gate = self.gates.of(key);
        let _turn = match self.get(key, reuse) {
            Some(v) => match gate.lock().try_lock() {
                Ok(turn) => turn,
                Err(_) => return Ok(v),
            },
            None => gate.lock().lock().await,
        };
        // Read anew by the reader this one queued behind, or read now.
        if let Some(v) = self.get(key, reuse / 2) {
            return Ok(v);
        }
        let (generation, at) = (self.generation(), Instant::now());
        match load().await {
            Ok(v) => {
                self.put(key.to_owned(), v.clone(), generation, at);
                Ok(v)
            }
            // A value still within its reuse serves until it runs out.
            Err(e) => self.get(key, reuse).ok_or(e),
        }
    }
    fn get(&self, key: &str, reuse: Duration) -> Option<V> {
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < reuse)
            .map(|(_, v)| v.clone())
    }
    /// The generation to pass to [`Recent::put`], read before the database is.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    /// Keep a value read at `generation` (and from `at` on), unless something changed since.
    fn put(&self, key: String, value: V, generation: u64, at: Instant) {
        if let Ok(mut map) = self.map.lock() {
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            if map.len() >= RECENT_LIMIT {
                map.clear();
            }
            map.insert(key, (at, value));
        }
    }
    fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            map.clear();
        }
    }
}

/// Lookups kept with the version of the registry they were read at, and read again, one
/// read per key at a time, when the version moves on.
#[derive(Debug)]
struct Versioned<V> {
    map: Mutex<HashMap<String, (i64, V)>>,
    gates: Gates,
}

impl<V: Clone> Versioned<V> {
    fn new() -> Arc<Self> {
        Arc::new(Versioned {
            map: Mutex::new(HashMap::new()),
            gates: Gates::default(),
        })
    }
    /// The value of `key` at `version`, or read now by `load`. `version` must have been
    /// read before `load` reads: a change in between then shows as a newer version, and
    /// the value is read again, never kept as current when it is not.
    async fn get_or_load<F, Fut>(&self, key: &str, version: i64, load: F) -> Result<V, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, Error>>,
    {
        if let Some(v) = self.get(key, version) {
            return Ok(v);
        }
        let gate = self.gates.of(key);
        let _turn = gate.lock().lock().await;
        if let Some(v) = self.get(key, version) {
            return Ok(v);
        }
        let v = load().await?;
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= RECENT_LIMIT {
                map.clear();
            }
            map.insert(key.to_owned(), (version, v.clone()));
        }
        Ok(v)
    }
    fn get(&self, key: &str, version: i64) -> Option<V> {
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| *at == version)
            .map(|(_, v)| v.clone())
    }
    fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}

fn key_hash(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

impl ServiceRegistry {
    pub async fn open(db: Database) -> Result<ServiceRegistry, Error> {
        db.migrate("gateway", MIGRATIONS).await?;
        Ok(ServiceRegistry {
            db,
            version: Recent::new(),
            services: Versioned::new(),
            rights: Versioned::new(),
            keys: Versioned::new(),
            reuse_ms: Arc::new(AtomicU64::new(DEFAULT_REUSE.as_millis() as u64)),
        })
    }

    /// How long the registry's version is trusted now.
    pub fn reuse(&self) -> Duration {
        Duration::from_millis(self.reuse_ms.load(Ordering::Relaxed))
    }

    /// Trust the registry's version for `reuse` (at most [`MAX_REUSE`]; zero: ask the
    /// database for every message).
    pub fn set_reuse(&self, reuse: Duration) {
        let ms = reuse.min(MAX_REUSE).as_millis() as u64;
        self.reuse_ms.store(ms, Ordering::Relaxed);
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Register (or replace) a service with its backend and description.
    pub async fn add_service(&self, s: &NewService) -> Result<Service, Error> {
        let url = reqwest::Url::parse(&s.backend_url).map_err(|e| {
            Error::new(ErrorCode::ExchBackendUrl, format!("{}: {e}", s.backend_url))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err(Error::new(
                ErrorCode::ExchBackendUrl,
                format!(
                    "{}: expected http(s)://host[:port][/base] without a query",
                    s.backend_url
                ),
            ));
        }
        let (endpoints, openapi) = match &s.openapi {
            Some(doc) => {
                let doc = match doc {
                    serde_json::Value::String(text) => crate::openapi::parse(text)?,
                    other => other.clone(),
                };
                (crate::openapi::endpoints(&doc)?, Some(doc.to_string()))
            }
            None => (Vec::new(), None),
        };
        let id = s.service.to_string();
        let what = "registering a service";
        let mut tx = self.db.begin_write().await?;
        xalo_store::sqlx::query("DELETE FROM gateway_endpoint WHERE service = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .db(what)?;
        // Replace in place: access rights refer to the service and outlive a new version.
        let updated = xalo_store::sqlx::query(
            "UPDATE gateway_service SET provider = $2, backend_url = $3, openapi = $4 WHERE service = $1",
        )
        .bind(&id)
        .bind(s.service.provider().to_string())
        .bind(url.as_str().trim_end_matches('/'))
        .bind(openapi.clone())
        .execute(&mut *tx)
        .await
        .db(what)?;
        if updated.rows_affected() == 0 {
            xalo_store::sqlx::query(
                "INSERT INTO gateway_service (service, provider, backend_url, openapi) VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind(s.service.provider().to_string())
            .bind(url.as_str().trim_end_matches('/'))
            .bind(openapi.clone())
            .execute(&mut *tx)
            .await
            .db(what)?;
        }
        for e in &endpoints {
            xalo_store::sqlx::query(
                "INSERT INTO gateway_endpoint (service, method, path) VALUES ($1, $2, $3)",
            )
            .bind(&id)
            .bind(&e.method)
            .bind(&e.path)
            .execute(&mut *tx)
            .await
            .db(what)?;
        }
        tx.commit().await.db(what)?;
        self.changed();
        Ok(Service {
            service: s.service.clone(),
            backend_url: url.as_str().trim_end_matches('/').to_owned(),
            endpoints,
            openapi,
        })
    }

    /// This instance's changes show at once.
    fn changed(&self) {
        self.version.clear();
        self.services.clear();
        self.rights.clear();
        self.keys.clear();
    }

    /// A registered service, or `None`.
    /// Shared, not copied: a message needs only its backend URL, the service may carry an
    /// OpenAPI description of many kilobytes.
    pub async fn service(&self, id: &ServiceId) -> Result<Option<Arc<Service>>, Error> {
        let version = self.version().await?;
        self.services
            .get_or_load(&id.to_string(), version, || async {
                Ok(self.load_service(id).await?.map(Arc::new))
            })
            .await
    }

    /// The registry's version, asked of the database at most once within the reuse time.
    async fn version(&self) -> Result<i64, Error> {
        self.version
            .get_or_load("", self.reuse(), || async {
                xalo_store::sqlx::query("SELECT version FROM gateway_registry_version")
                    .fetch_one(self.db.pool())
                    .await
                    .db("reading the registry's version")?
                    .try_get::<i64, _>(0)
                    .db("the registry's version")
            })
            .await
    }

    async fn load_service(&self, id: &ServiceId) -> Result<Option<Service>, Error> {
        let what = "reading a service";
        let key = id.to_string();
        let Some(row) = xalo_store::sqlx::query(
            "SELECT backend_url, openapi FROM gateway_service WHERE service = $1",
        )
        .bind(&key)
        .fetch_optional(self.db.pool())
        .await
        .db(what)?
        else {
            return Ok(None);
        };
        let endpoints = xalo_store::sqlx::query(
            "SELECT method, path FROM gateway_endpoint WHERE service = $1 ORDER BY path, method",
        )
        .bind(&key)
        .fetch_all(self.db.pool())
        .await
        .db(what)?
        .into_iter()
        .map(|r| {
            Ok(Endpoint {
                method: r.try_get(0).db(what)?,
                path: r.try_get(1).db(what)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
        Ok(Some(Service {
            service: id.clone(),
            backend_url: row.try_get(0).db(what)?,
            openapi: row.try_get(1).db(what)?,
            endpoints,
        }))
    }

    /// Every service of a provider subsystem (all when `None`).
    pub async fn services(&self, provider: Option<&SubsystemId>) -> Result<Vec<ServiceId>, Error> {
        let what = "listing services";
        let rows = match provider {
            Some(p) => {
                xalo_store::sqlx::query(
                    "SELECT service FROM gateway_service WHERE provider = $1 ORDER BY service",
                )
                .bind(p.to_string())
                .fetch_all(self.db.pool())
                .await
            }
            None => {
                xalo_store::sqlx::query("SELECT service FROM gateway_service ORDER BY service")
                    .fetch_all(self.db.pool())
                    .await
            }
        }
        .db(what)?;
        rows.into_iter()
            .map(|r| Ok(r.try_get::<String, _>(0).db(what)?.parse::<ServiceId>()?))
            .collect()
    }

    pub async fn grant(&self, r: &NewAccessRight) -> Result<(), Error> {
        let endpoint = Endpoint::new(&r.method, &r.path)?;
        if self.service(&r.service).await?.is_none() {
            return Err(Error::new(
                ErrorCode::ExchUnknownService,
                format!("{} is not registered at this gateway", r.service),
            ));
        }
        let result = xalo_store::sqlx::query(
            "INSERT INTO gateway_access_right (service, method, path, subject) VALUES ($1, $2, $3, $4)",
        )
        .bind(r.service.to_string())
        .bind(&endpoint.method)
        .bind(&endpoint.path)
        .bind(r.subject.to_string())
        .execute(self.db.pool())
        .await
        .db("granting an access right");
        self.changed();
        match result {
            // Granting twice is granting.
            Err(e) if e.code == ErrorCode::StoreConflict => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub async fn revoke(&self, r: &NewAccessRight) -> Result<(), Error> {
        xalo_store::sqlx::query(
            "DELETE FROM gateway_access_right WHERE service = $1 AND method = $2 AND path = $3 AND subject = $4",
        )
        .bind(r.service.to_string())
        .bind(r.method.to_ascii_uppercase())
        .bind(&r.path)
        .bind(r.subject.to_string())
        .execute(self.db.pool())
        .await
        .db("revoking an access right")?;
        self.changed();
        Ok(())
    }

    /// The rights on a service.
    pub async fn rights(&self, service: &ServiceId) -> Result<Arc<Rights>, Error> {
        let version = self.version().await?;
        self.rights
            .get_or_load(&service.to_string(), version, || async {
                Ok(Arc::new(Rights::new(self.load_rights(service).await?)))
            })
            .await
    }

    async fn load_rights(&self, service: &ServiceId) -> Result<Vec<AccessRight>, Error> {
        use futures_util::TryStreamExt;
        let what = "reading access rights";
        let service = service.to_string();
        // Row by row: a service granted to a nation's thousands of subsystems would
        // otherwise sit in memory twice, as rows and as rights, while it is read.
        let mut rows = xalo_store::sqlx::query(
            "SELECT method, path, subject FROM gateway_access_right WHERE service = $1",
        )
        .bind(&service)
        .fetch(self.db.pool());
        let mut rights = Vec::new();
        while let Some(r) = rows.try_next().await.db(what)? {
            rights.push(AccessRight {
                endpoint: Endpoint {
                    method: r.try_get(0).db(what)?,
                    path: r.try_get(1).db(what)?,
                },
                subject: r.try_get::<String, _>(2).db(what)?.parse()?,
            });
        }
        Ok(crate::exact(rights))
    }

    /// Issue a key with which an information system calls out as `subsystem`; only its
    /// hash is stored, so the key is shown once.
    pub async fn issue_client_key(&self, subsystem: &SubsystemId) -> Result<String, Error> {
        let key = hex::encode(rand::random::<[u8; 24]>());
        xalo_store::sqlx::query(
            "INSERT INTO gateway_client_key (key_sha256, subsystem, created_unix) VALUES ($1, $2, $3)",
        )
        .bind(key_hash(&key))
        .bind(subsystem.to_string())
        .bind(crate::unix_now())
        .execute(self.db.pool())
        .await
        .db("issuing a client key")?;
        self.changed();
        Ok(key)
    }

    /// The subsystem a client key was issued for.
    pub async fn client_of_key(&self, key: &str) -> Result<Option<ClientId>, Error> {
        let version = self.version().await?;
        self.keys
            .get_or_load(&key_hash(key), version, || self.load_client_of_key(key))
            .await
    }

    async fn load_client_of_key(&self, key: &str) -> Result<Option<ClientId>, Error> {
        let row = xalo_store::sqlx::query(
            "SELECT subsystem FROM gateway_client_key WHERE key_sha256 = $1",
        )
        .bind(key_hash(key))
        .fetch_optional(self.db.pool())
        .await
        .db("checking a client key")?;
        match row {
            Some(r) => Ok(Some(r.try_get::<String, _>(0).db("client key")?.parse()?)),
            None => Ok(None),
        }
    }

    /// Let an information system that presents `certificate_der` (over the client TLS
    /// listener) call out as `subsystem`. Kept beside the keys, as the hash of its
    /// fingerprint.
    pub async fn register_client_certificate(
        &self,
        subsystem: &SubsystemId,
        certificate_der: &[u8],
    ) -> Result<String, Error> {
        let fingerprint = crate::fingerprint(certificate_der);
        let result = xalo_store::sqlx::query(
            "INSERT INTO gateway_client_key (key_sha256, subsystem, created_unix) VALUES ($1, $2, $3)",
        )
        .bind(key_hash(&format!("certificate:{fingerprint}")))
        .bind(subsystem.to_string())
        .bind(crate::unix_now())
        .execute(self.db.pool())
        .await
        .db("registering a client certificate");
        self.changed();
        match result {
            Err(e) if e.code == ErrorCode::StoreConflict => Err(Error::new(
                ErrorCode::StoreConflict,
                format!("certificate {fingerprint} is registered already"),
            )),
            other => other.map(|_| fingerprint),
        }
    }

    /// The subsystem a client certificate was registered for.
    pub async fn client_of_certificate(
        &self,
        certificate_der: &[u8],
    ) -> Result<Option<ClientId>, Error> {
        self.client_of_key(&format!(
            "certificate:{}",
            crate::fingerprint(certificate_der)
        ))
        .await
    }

    /// The local client subsystems that have at least one information system.
    pub async fn clients(&self) -> Result<Vec<ClientId>, Error> {
        xalo_store::sqlx::query(
            "SELECT DISTINCT subsystem FROM gateway_client_key ORDER BY subsystem",
        )
        .fetch_all(self.db.pool())
        .await
        .db("listing clients")?
        .into_iter()
        .map(|r| Ok(r.try_get::<String, _>(0).db("client")?.parse()?))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lookup_that_ran_out_is_read_once_however_many_ask() {
        let recent: Arc<Recent<u64>> = Recent::new();
        let reads = Arc::new(AtomicU64::new(0));
        let ask = |recent: Arc<Recent<u64>>, reads: Arc<AtomicU64>| async move {
            recent
                .get_or_load("rights", Duration::from_secs(60), || async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(reads.fetch_add(1, Ordering::SeqCst) + 1)
                })
                .await
        };
        let askers: Vec<_> = (0..16)
            .map(|_| tokio::spawn(ask(recent.clone(), reads.clone())))
            .collect();
        for a in askers {
            assert_eq!(a.await.unwrap().unwrap(), 1);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert!(recent.gates.is_empty());

        // A failed read is not kept: the next asker reads again.
        let failed = recent
            .get_or_load("keys", Duration::from_secs(60), || async {
                Err::<u64, _>(Error::new(ErrorCode::StoreUnavailable, "down"))
            })
            .await;
        assert_eq!(failed.unwrap_err().code, ErrorCode::StoreUnavailable);
        let again = recent
            .get_or_load("keys", Duration::from_secs(60), || async { Ok(7) })
            .await;
        assert_eq!(again.unwrap(), 7);

        // A local change empties the lookups, and the next asker reads.
        recent.clear();
        assert_eq!(ask(recent.clone(), reads.clone()).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn an_ageing_lookup_is_read_anew_by_one_while_the_others_go_on_with_it() {
        let recent: Arc<Recent<u64>> = Recent::new();
        let reads = Arc::new(AtomicU64::new(0));
        // Wide margins: the value is asked for at about 60% of its reuse.
        let reuse = Duration::from_secs(3);
        let ask = |recent: Arc<Recent<u64>>, reads: Arc<AtomicU64>| async move {
            recent
                .get_or_load("rights", reuse, || async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(reads.fetch_add(1, Ordering::SeqCst) + 1)
                })
                .await
        };
        assert_eq!(ask(recent.clone(), reads.clone()).await.unwrap(), 1);
        tokio::time::sleep(reuse / 2).await;
        let askers: Vec<_> = (0..16)
            .map(|_| tokio::spawn(ask(recent.clone(), reads.clone())))
            .collect();
        let mut old = 0;
        for a in askers {
            match a.await.unwrap().unwrap() {
                1 => old += 1,
                v => assert_eq!(v, 2),
            }
        }
        // One read it again; the others went on with the value they had (those that
        // asked before the read ended) or took the new one.
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert!(old >= 1);
        assert_eq!(ask(recent.clone(), reads.clone()).await.unwrap(), 2);
        assert!(recent.gates.is_empty());

        // Past its reuse a value is not served, even when the read fails.
        let brief = Duration::from_millis(50);
        let read = |v: Result<u64, Error>| {
            let recent = recent.clone();
            async move { recent.get_or_load("keys", brief, || async { v }).await }
        };
        assert_eq!(read(Ok(7)).await.unwrap(), 7);
        tokio::time::sleep(brief * 2).await;
        let down = Error::new(ErrorCode::StoreUnavailable, "down");
        assert_eq!(
            read(Err(down)).await.unwrap_err().code,
            ErrorCode::StoreUnavailable
        );
    }

    #[tokio::test]
    async fn a_versioned_lookup_is_read_once_per_version_however_many_ask() {
        let versioned: Arc<Versioned<u64>> = Versioned::new();
        let reads = Arc::new(AtomicU64::new(0));
        let ask = |version: i64| {
            let (versioned, reads) = (versioned.clone(), reads.clone());
            tokio::spawn(async move {
                versioned
                    .get_or_load("rights", version, || async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(reads.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await
            })
        };
        for version in [7, 7, 8] {
            let askers: Vec<_> = (0..16).map(|_| ask(version)).collect();
            let expected = if version == 7 { 1 } else { 2 };
            for a in askers {
                assert_eq!(a.await.unwrap().unwrap(), expected);
            }
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert!(versioned.gates.is_empty());

        // A failed read is not kept; a cleared lookup is read again.
        let failed = versioned
            .get_or_load("keys", 8, || async {
                Err::<u64, _>(Error::new(ErrorCode::StoreUnavailable, "down"))
            })
            .await;
        assert_eq!(failed.unwrap_err().code, ErrorCode::StoreUnavailable);
        versioned.clear();
        assert_eq!(ask(8).await.unwrap().unwrap(), 3);
    }

    #[tokio::test]
    async fn every_change_of_the_registry_in_the_database_moves_its_version_on() {
        let t = xalo_store::testing::TestDatabase::new().await.unwrap();
        let registry = ServiceRegistry::open(t.db.clone()).await.unwrap();
        registry.set_reuse(Duration::ZERO);
        let service: ServiceId = "VN/GOV/000001/registry/persons".parse().unwrap();
        let mut seen = vec![registry.version().await.unwrap()];
        let mut moved = |v: i64, what: &str| {
            assert!(seen.iter().all(|s| *s < v), "{what}: {v} after {seen:?}");
            seen.push(v);
        };
        registry
            .add_service(&NewService {
                service: service.clone(),
                backend_url: "http://127.0.0.1:9".into(),
                openapi: None,
            })
            .await
            .unwrap();
        moved(registry.version().await.unwrap(), "service added");
        let right = NewAccessRight {
            service: service.clone(),
            method: any_method(),
            path: any_path(),
            subject: Subject::Client("VN/COM/000002/app".parse().unwrap()),
        };
        registry.grant(&right).await.unwrap();
        moved(registry.version().await.unwrap(), "right granted");
        assert_eq!(registry.rights(&service).await.unwrap().len(), 1);
        // Edits made in the database directly, past this registry.
        for edit in [
            "INSERT INTO gateway_endpoint (service, method, path) VALUES ($1, 'GET', '/x')",
            "UPDATE gateway_service SET backend_url = 'http://127.0.0.1:10' WHERE service = $1",
            "DELETE FROM gateway_access_right WHERE service = $1",
            "DELETE FROM gateway_endpoint WHERE service = $1",
        ] {
            xalo_store::sqlx::query(edit)
                .bind(service.to_string())
                .execute(t.db.pool())
                .await
                .unwrap();
            moved(registry.version().await.unwrap(), edit);
        }
        assert!(registry.rights(&service).await.unwrap().is_empty());
        registry
            .issue_client_key(&"VN/GOV/000001/registry".parse().unwrap())
            .await
            .unwrap();
        moved(registry.version().await.unwrap(), "client key issued");
        // Reading is not a change.
        let now = registry.version().await.unwrap();
        registry.rights(&service).await.unwrap();
        assert_eq!(registry.version().await.unwrap(), now);
    }
}
