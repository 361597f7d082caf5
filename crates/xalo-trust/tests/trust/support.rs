use std::path::Path;
use std::process::{Command, Output};

use xalo_core::Config;
use xalo_core::server::ServerHandle;
use xalo_store::testing::TestDatabase;
use xalo_trust::{Pki, PkiSettings, TrustSettings};

pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("/usr/bin/openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

pub fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl failed: {text}");
    text
}

pub async fn pki(db: &TestDatabase) -> Pki {
    let db = xalo_store::Database::connect(db.url()).await.unwrap();
    Pki::open(db, PkiSettings::new("http://127.0.0.1:9"))
        .await
        .unwrap()
}

pub struct Running {
    pub handle: ServerHandle,
    pub config: Config,
    pub dir: tempfile::TempDir,
    pub _db: TestDatabase,
}

impl Running {
    pub async fn start(settings: TrustSettings) -> Running {
        let db = TestDatabase::new().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(db.url().to_owned()),
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = xalo_trust::serve_with(config.clone(), listener, settings)
            .await
            .unwrap();
        Running {
            handle,
            config,
            dir,
            _db: db,
        }
    }

    /// A second handle on the same PKI, as `xalo pki …` would open it.
    pub async fn pki(&self) -> Pki {
        xalo_trust::service::open_pki(&self.config, self.handle.port(), Default::default())
            .await
            .unwrap()
    }
}
