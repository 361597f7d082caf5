//! The tables of the `id` role. Binary values are stored as text (hex, base64, PEM) so
//! that one portable script serves SQLite and PostgreSQL.

use xalo_core::Error;
use xalo_store::{Database, Migration};

const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "clients, keys, codes, tokens, attempts, logins",
        "CREATE TABLE id_client (
        client_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        auth_method TEXT NOT NULL,
        secret_hash TEXT,
        redirect_uris TEXT NOT NULL,
        post_logout_redirect_uris TEXT NOT NULL,
        jwks TEXT,
        created_unix BIGINT NOT NULL
    );
    CREATE TABLE id_signing_key (
        kid TEXT PRIMARY KEY,
        secret_hex TEXT NOT NULL,
        state TEXT NOT NULL,
        created_unix BIGINT NOT NULL
    );
    CREATE TABLE id_code (
        code_hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        code_challenge TEXT,
        grant_json TEXT NOT NULL,
        expires_unix BIGINT NOT NULL,
        used BIGINT NOT NULL
    );
    CREATE TABLE id_access_token (
        token_hash TEXT PRIMARY KEY,
        code_hash TEXT NOT NULL,
        client_id TEXT NOT NULL,
        claims_json TEXT NOT NULL,
        expires_unix BIGINT NOT NULL
    );
    CREATE INDEX id_access_token_code ON id_access_token (code_hash);
    CREATE TABLE id_attempt (
        subject TEXT PRIMARY KEY,
        window_start BIGINT NOT NULL,
        attempts BIGINT NOT NULL
    );
    CREATE TABLE id_login (
        login_id TEXT PRIMARY KEY,
        sub TEXT NOT NULL,
        client_id TEXT NOT NULL,
        amr TEXT NOT NULL,
        acr TEXT NOT NULL,
        at_unix BIGINT NOT NULL,
        record_hash TEXT NOT NULL,
        ledger_index BIGINT
    );
    CREATE TABLE id_tls_identity (
        name TEXT PRIMARY KEY,
        certificate_pem TEXT NOT NULL,
        key_pem TEXT NOT NULL
    );",
    ),
    Migration::portable(
        2,
        "Mobile-ID signing sessions",
        "CREATE TABLE id_signing (
        session_id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        operator_session TEXT NOT NULL,
        personal_code TEXT NOT NULL,
        pending TEXT NOT NULL,
        state TEXT NOT NULL,
        error_code TEXT,
        error_message TEXT,
        container TEXT,
        signer TEXT,
        created_unix BIGINT NOT NULL
    );",
    ),
    Migration::portable(
        3,
        "an access token's claims kept with its code",
        "ALTER TABLE id_code ADD COLUMN claims_json TEXT;",
    ),
];

pub async fn migrate(db: &Database) -> Result<(), Error> {
    db.migrate("id", MIGRATIONS).await
}

pub use xalo_core::unix_now;

/// SHA-256, hex: how codes, tokens and client secrets are stored.
pub fn sha256_hex(value: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.as_bytes()))
}
