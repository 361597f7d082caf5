//! The central server's registry: members, subsystems, gateways, global groups and trust
//! services, in the central role's database (component `central`). Every change bumps the
//! registry version in the same transaction, so the version in the global configuration
//! names one state of the registry.

use base64::Engine;
use serde::{Deserialize, Serialize};
use xalo_core::{ClientId, Error, ErrorCode, MemberId, SubsystemId};
use xalo_store::{Database, DbResultExt, Migration, Row};
use xalo_trust::SigningKey;

use crate::b64;
use crate::global_conf::{
    AuthorityEntry, GatewayCertificate, GatewayEntry, GlobalConf, GroupEntry, MemberEntry,
};

const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "registry",
    "CREATE TABLE central_member (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL
    );
    CREATE TABLE central_subsystem (
        member_id TEXT NOT NULL REFERENCES central_member (id),
        code TEXT NOT NULL,
        PRIMARY KEY (member_id, code)
    );
    CREATE TABLE central_gateway (
        owner TEXT NOT NULL REFERENCES central_member (id),
        code TEXT NOT NULL,
        address TEXT NOT NULL,
        tls_certificate TEXT NOT NULL,
        PRIMARY KEY (owner, code)
    );
    CREATE TABLE central_group (
        code TEXT PRIMARY KEY,
        description TEXT NOT NULL
    );
    CREATE TABLE central_group_member (
        group_code TEXT NOT NULL REFERENCES central_group (code),
        client TEXT NOT NULL,
        PRIMARY KEY (group_code, client)
    );
    CREATE TABLE central_authority (
        name TEXT PRIMARY KEY,
        certificates TEXT NOT NULL,
        ocsp_url TEXT,
        tsa_url TEXT
    );
    CREATE TABLE central_state (
        id BIGINT PRIMARY KEY,
        version BIGINT NOT NULL,
        signing_key TEXT NOT NULL
    );",
)];

/// The registry over the central role's database.
#[derive(Clone, Debug)]
pub struct Registry {
    db: Database,
}

/// A new member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewMember {
    pub id: MemberId,
    pub name: String,
}

/// A new subsystem.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewSubsystem {
    pub id: SubsystemId,
}

/// A gateway to register: its owner, code, address and TLS certificate (PEM or base64 DER).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewGateway {
    pub owner: MemberId,
    pub code: String,
    pub address: String,
    pub tls_certificate: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewGroup {
    pub code: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewGroupMember {
    pub client: ClientId,
}

/// A trust service's authority: its CA certificates (PEM, root and intermediates), OCSP
/// responder and time-stamping URLs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAuthority {
    pub name: String,
    pub certificates_pem: String,
    #[serde(default)]
    pub ocsp_url: Option<String>,
    #[serde(default)]
    pub tsa_url: Option<String>,
}

/// Read a certificate given as PEM or base64 DER; returns DER.
pub fn certificate_der(text: &str) -> Result<Vec<u8>, Error> {
    let bad = |m: String| Error::new(ErrorCode::ExchCertificate, m);
    let der = if text.contains("-----BEGIN") {
        xalo_trust::key::pem_decode(text)
            .map_err(|e| bad(e.message))?
            .1
    } else {
        b64()
            .decode(text.trim())
            .map_err(|e| bad(format!("neither PEM nor base64 DER: {e}")))?
    };
    xalo_trust::authority::parse_certificate(&der).map_err(|e| bad(e.message))?;
    Ok(der)
}

fn not_found(code: ErrorCode, what: impl std::fmt::Display) -> Error {
    Error::new(code, format!("{what} is not registered"))
}

impl Registry {
    /// Open the registry, creating its tables and the central server's signing key.
    pub async fn open(db: Database) -> Result<Registry, Error> {
        db.migrate("central", MIGRATIONS).await?;
        let registry = Registry { db };
        registry.signing_key().await?;
        Ok(registry)
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The key that signs the global configuration; created on first use. Two instances
    /// starting at once both try to insert; the loser reads the winner's key.
    pub async fn signing_key(&self) -> Result<SigningKey, Error> {
        if let Some(k) = self.load_key().await? {
            return Ok(k);
        }
        let key = SigningKey::generate(xalo_trust::KeyAlgorithm::P256)?;
        let inserted = xalo_store::sqlx::query(
            "INSERT INTO central_state (id, version, signing_key) VALUES (1, 1, $1)",
        )
        .bind(b64().encode(key.pkcs8_der()))
        .execute(self.db.pool())
        .await;
        match inserted.db("creating the central signing key") {
            Ok(_) => Ok(key),
            Err(e) if e.code == ErrorCode::StoreConflict => self
                .load_key()
                .await?
                .ok_or_else(|| Error::new(ErrorCode::Internal, "central signing key vanished")),
            Err(e) => Err(e),
        }
    }

    async fn load_key(&self) -> Result<Option<SigningKey>, Error> {
        let row = xalo_store::sqlx::query("SELECT signing_key FROM central_state WHERE id = 1")
            .fetch_optional(self.db.pool())
            .await
            .db("reading the central signing key")?;
        match row {
            None => Ok(None),
            Some(row) => {
                let text: String = row.try_get(0).db("signing key")?;
                let der = b64()
                    .decode(text)
                    .map_err(|e| Error::new(ErrorCode::Internal, format!("signing key: {e}")))?;
                Ok(Some(SigningKey::from_pkcs8(&der)?))
            }
        }
    }

    /// Run one change and bump the version in the same transaction.
    async fn change(&self, what: &str, sql: &str, binds: &[&str]) -> Result<(), Error> {
        let mut tx = self.db.begin_write().await?;
        let mut q = xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(sql.to_owned()));
        for b in binds {
            q = q.bind(b.to_string());
        }
        q.execute(&mut *tx).await.db(what)?;
        xalo_store::sqlx::query("UPDATE central_state SET version = version + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .db("bumping the registry version")?;
        tx.commit().await.db(what)
    }

    async fn exists(&self, sql: &str, binds: &[&str]) -> Result<bool, Error> {
        let mut q = xalo_store::sqlx::query(xalo_store::sqlx::AssertSqlSafe(sql.to_owned()));
        for b in binds {
            q = q.bind(b.to_string());
        }
        Ok(q.fetch_optional(self.db.pool())
            .await
            .db("looking up the registry")?
            .is_some())
    }

    pub async fn add_member(&self, m: &NewMember) -> Result<(), Error> {
        if m.name.trim().is_empty() {
            return Err(Error::new(
                ErrorCode::HttpBadRequest,
                "a member needs a name",
            ));
        }
        self.change(
            "adding a member",
            "INSERT INTO central_member (id, name) VALUES ($1, $2)",
            &[&m.id.to_string(), &m.name],
        )
        .await
    }

    async fn require_member(&self, id: &MemberId) -> Result<(), Error> {
        if self
            .exists(
                "SELECT 1 FROM central_member WHERE id = $1",
                &[&id.to_string()],
            )
            .await?
        {
            Ok(())
        } else {
            Err(not_found(ErrorCode::ExchUnknownMember, id))
        }
    }

    pub async fn add_subsystem(&self, s: &NewSubsystem) -> Result<(), Error> {
        self.require_member(s.id.member()).await?;
        self.change(
            "adding a subsystem",
            "INSERT INTO central_subsystem (member_id, code) VALUES ($1, $2)",
            &[&s.id.member().to_string(), s.id.code()],
        )
        .await
    }

    /// Register a gateway, or replace the address and certificate of a registered one
    /// (certificate renewal).
    pub async fn register_gateway(&self, g: &NewGateway) -> Result<(), Error> {
        self.require_member(&g.owner).await?;
        let der = certificate_der(&g.tls_certificate)?;
        if g.code.is_empty() || g.address.is_empty() {
            return Err(Error::new(
                ErrorCode::HttpBadRequest,
                "a gateway needs a code and a host:port address",
            ));
        }
        let owner = g.owner.to_string();
        let cert = b64().encode(der);
        let what = "registering a gateway";
        let mut tx = self.db.begin_write().await?;
        xalo_store::sqlx::query("DELETE FROM central_gateway WHERE owner = $1 AND code = $2")
            .bind(&owner)
            .bind(&g.code)
            .execute(&mut *tx)
            .await
            .db(what)?;
        xalo_store::sqlx::query(
            "INSERT INTO central_gateway (owner, code, address, tls_certificate) VALUES ($1, $2, $3, $4)",
        )
        .bind(&owner)
        .bind(&g.code)
        .bind(&g.address)
        .bind(&cert)
        .execute(&mut *tx)
        .await
        .db(what)?;
        xalo_store::sqlx::query("UPDATE central_state SET version = version + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .db(what)?;
        tx.commit().await.db(what)
    }

    pub async fn add_group(&self, g: &NewGroup) -> Result<(), Error> {
        xalo_core::MemberId::new("X", "X", &g.code).map_err(Error::from)?;
        self.change(
            "adding a global group",
            "INSERT INTO central_group (code, description) VALUES ($1, $2)",
            &[&g.code, &g.description],
        )
        .await
    }

    pub async fn add_group_member(&self, group: &str, m: &NewGroupMember) -> Result<(), Error> {
        if !self
            .exists("SELECT 1 FROM central_group WHERE code = $1", &[group])
            .await?
        {
            return Err(not_found(ErrorCode::ExchUnknownGroup, group));
        }
        match &m.client {
            ClientId::Member(id) => self.require_member(id).await?,
            ClientId::Subsystem(s) => {
                if !self
                    .exists(
                        "SELECT 1 FROM central_subsystem WHERE member_id = $1 AND code = $2",
                        &[&s.member().to_string(), s.code()],
                    )
                    .await?
                {
                    return Err(not_found(ErrorCode::ExchUnknownSubsystem, s));
                }
            }
        }
        self.change(
            "adding a global group member",
            "INSERT INTO central_group_member (group_code, client) VALUES ($1, $2)",
            &[group, &m.client.to_string()],
        )
        .await
    }

    /// Add or replace a trust service's authority.
    pub async fn set_authority(&self, a: &NewAuthority) -> Result<(), Error> {
        let certs = xalo_trust::authority::read_certificates(a.certificates_pem.as_bytes())
            .map_err(|e| Error::new(ErrorCode::ExchCertificate, e.message))?;
        if certs.is_empty() {
            return Err(Error::new(
                ErrorCode::ExchCertificate,
                "no certificate given",
            ));
        }
        let list: Vec<String> = certs.iter().map(|c| b64().encode(c)).collect();
        let json = serde_json::to_string(&list)
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        let what = "registering a trust service";
        let mut tx = self.db.begin_write().await?;
        xalo_store::sqlx::query("DELETE FROM central_authority WHERE name = $1")
            .bind(&a.name)
            .execute(&mut *tx)
            .await
            .db(what)?;
        xalo_store::sqlx::query(
            "INSERT INTO central_authority (name, certificates, ocsp_url, tsa_url) VALUES ($1, $2, $3, $4)",
        )
        .bind(&a.name)
        .bind(&json)
        .bind(a.ocsp_url.clone())
        .bind(a.tsa_url.clone())
        .execute(&mut *tx)
        .await
        .db(what)?;
        xalo_store::sqlx::query("UPDATE central_state SET version = version + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .db(what)?;
        tx.commit().await.db(what)
    }

    /// The registry's version, which every change moves on.
    pub async fn version(&self) -> Result<i64, Error> {
        let what = "reading the registry's version";
        xalo_store::sqlx::query("SELECT version FROM central_state WHERE id = 1")
            .fetch_one(self.db.pool())
            .await
            .db(what)?
            .try_get(0)
            .db(what)
    }

    /// The registry as a global configuration document (times left to the caller), read
    /// in one transaction so the version matches the content.
    pub async fn snapshot(&self, instance: &str) -> Result<GlobalConf, Error> {
        let what = "reading the registry";
        let mut tx = self.db.pool().begin().await.db(what)?;
        let version: i64 =
            xalo_store::sqlx::query("SELECT version FROM central_state WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .db(what)?
                .try_get(0)
                .db(what)?;
        let parse_member = |s: &str| -> Result<MemberId, Error> { Ok(s.parse::<MemberId>()?) };
        let mut members = Vec::new();
        // Rows are joined to their member or group by position: a nation's registry has
        // thousands of each, too many to search for every row.
        let mut member_at = std::collections::HashMap::new();
        for row in xalo_store::sqlx::query("SELECT id, name FROM central_member ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .db(what)?
        {
            let id = parse_member(&row.try_get::<String, _>(0).db(what)?)?;
            member_at.insert(id.clone(), members.len());
            members.push(MemberEntry {
                id,
                name: row.try_get(1).db(what)?,
                subsystems: Vec::new(),
            });
        }
        for row in xalo_store::sqlx::query(
            "SELECT member_id, code FROM central_subsystem ORDER BY member_id, code",
        )
        .fetch_all(&mut *tx)
        .await
        .db(what)?
        {
            let id = parse_member(&row.try_get::<String, _>(0).db(what)?)?;
            let code: String = row.try_get(1).db(what)?;
            if let Some(m) = member_at.get(&id).and_then(|&i| members.get_mut(i)) {
                m.subsystems.push(code);
            }
        }
        let mut gateways = Vec::new();
        for row in xalo_store::sqlx::query(
            "SELECT owner, code, address, tls_certificate FROM central_gateway ORDER BY owner, code",
        )
        .fetch_all(&mut *tx)
        .await
        .db(what)?
        {
            gateways.push(GatewayEntry {
                owner: parse_member(&row.try_get::<String, _>(0).db(what)?)?,
                code: row.try_get(1).db(what)?,
                address: row.try_get(2).db(what)?,
                tls_certificate: GatewayCertificate::from_base64(
                    &row.try_get::<String, _>(3).db(what)?,
                ),
            });
        }
        let mut global_groups = Vec::new();
        let mut group_at = std::collections::HashMap::new();
        for row in
            xalo_store::sqlx::query("SELECT code, description FROM central_group ORDER BY code")
                .fetch_all(&mut *tx)
                .await
                .db(what)?
        {
            group_at.insert(row.try_get::<String, _>(0).db(what)?, global_groups.len());
            global_groups.push(GroupEntry {
                code: row.try_get(0).db(what)?,
                description: row.try_get(1).db(what)?,
                members: Vec::new(),
            });
        }
        for row in xalo_store::sqlx::query(
            "SELECT group_code, client FROM central_group_member ORDER BY group_code, client",
        )
        .fetch_all(&mut *tx)
        .await
        .db(what)?
        {
            let code: String = row.try_get(0).db(what)?;
            let client: ClientId = row.try_get::<String, _>(1).db(what)?.parse()?;
            if let Some(g) = group_at.get(&code).and_then(|&i| global_groups.get_mut(i)) {
                g.members.push(client);
            }
        }
        let mut authorities = Vec::new();
        for row in xalo_store::sqlx::query(
            "SELECT name, certificates, ocsp_url, tsa_url FROM central_authority ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await
        .db(what)?
        {
            let certs: String = row.try_get(1).db(what)?;
            authorities.push(AuthorityEntry {
                name: row.try_get(0).db(what)?,
                certificates: serde_json::from_str(&certs)
                    .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
                ocsp_url: row.try_get(2).db(what)?,
                tsa_url: row.try_get(3).db(what)?,
            });
        }
        tx.commit().await.db(what)?;
        Ok(GlobalConf::new(
            instance.to_owned(),
            version,
            members,
            gateways,
            global_groups,
            authorities,
        ))
    }
}
