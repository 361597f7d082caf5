//! `xalo bench id`: complete OpenID Connect code flows with ID-card login, and token
//! requests, with many concurrent clients against the `id` role (and the trust role it
//! checks certificates with) on fresh SQLite databases in a scratch directory.
//!
//! One login is what a browser and a relying party do together: authorize (PKCE S256) →
//! the login page → the ID-card listener with the person's certificate as TLS client
//! certificate (a new connection each time; the first login of a card makes a full TLS 1.3
//! handshake, later ones resume that session as a browser does, and the report counts
//! both; the provider checks the chain and asks OCSP at every login) → the redirect
//! with the code → the token request with `client_secret_basic` and the verifier → the ID
//! token's ES256 signature, issuer, audience and nonce checked against the JWKS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::VerifyingKey;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use xalo_core::config::RoleConfig;
use xalo_core::{Config, Error, ErrorCode, PersonalCode};
use xalo_trust::{IssueRequest, KeyAlgorithm, KeySource, Profile, Subject};

const CLIENT_ID: &str = "bench";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub clients: usize,
    /// How long each part runs.
    pub seconds: u64,
    /// Ask OCSP with a nonce at every login (the provider's default); without, as RFC
    /// 5019's profile for high volume does, the responder may answer from its cache.
    pub ocsp_nonce: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            clients: 64,
            seconds: 10,
            ocsp_nonce: true,
        }
    }
}

/// What it measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub clients: usize,
    /// Whether the provider asked OCSP with a nonce.
    pub ocsp_nonce: bool,
    pub logins: u64,
    pub logins_per_sec: f64,
    pub login_p50: Duration,
    pub login_p99: Duration,
    pub token_requests: u64,
    pub tokens_per_sec: f64,
    pub token_p50: Duration,
    pub token_p99: Duration,
    pub failures: u64,
    pub first_failure: Option<String>,
    /// ID-card TLS handshakes: (full, resumed).
    pub handshakes: (u64, u64),
    /// CPU time per complete login of the servers (trust and id roles with their SQLite
    /// threads) and of the simulated browsers and relying party (Linux).
    pub cpu_per_login: Option<CpuPerLogin>,
}

/// Where a login's CPU time went, in a run of complete logins with the load generator on
/// threads of its own (which costs that run some throughput: requests cross runtimes).
#[derive(Debug, Clone, Copy)]
pub struct CpuPerLogin {
    /// Complete logins/s of that run.
    pub logins_per_sec: f64,
    pub servers: Duration,
    pub clients: Duration,
    /// The machine's cores.
    pub cores: usize,
}

impl BenchReport {
    /// The figures, ending with the headline line.
    pub fn lines(&self) -> Vec<String> {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        vec![
            format!(
                "complete code-flow logins (ID-card TLS client certificate, PKCE, client_secret_basic, ID token verified): {} in all, {:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
                self.logins,
                self.logins_per_sec,
                ms(self.login_p50),
                ms(self.login_p99)
            ),
            format!(
                "token requests (code redeemed, ID token verified): {} in all, {:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
                self.token_requests,
                self.tokens_per_sec,
                ms(self.token_p50),
                ms(self.token_p99)
            ),
            format!(
                "ID-card TLS handshakes: {} full, {} resumed",
                self.handshakes.0, self.handshakes.1
            ),
            match self.cpu_per_login {
                Some(c) => format!(
                    "CPU per login (logins again, {:.0}/s, the load generator on threads of its own): servers {:.3} ms (trust and id roles, their SQLite threads), load generator {:.3} ms (browsers and relying party); the servers alone would take {:.0} logins/s on {} cores",
                    c.logins_per_sec,
                    ms(c.servers),
                    ms(c.clients),
                    c.cores as f64 / c.servers.as_secs_f64().max(1e-9),
                    c.cores
                ),
                None => "CPU per login: not measured on this system".to_owned(),
            },
            format!(
                "failures: {}{}",
                self.failures,
                self.first_failure
                    .as_deref()
                    .map(|f| format!(" (first: {f})"))
                    .unwrap_or_default()
            ),
            format!(
                "id: {:.0} logins/s, {:.0} token requests/s, p50 {:.1} ms p99 {:.1} ms per login ({} concurrent clients{})",
                self.logins_per_sec,
                self.tokens_per_sec,
                ms(self.login_p50),
                ms(self.login_p99),
                self.clients,
                if self.ocsp_nonce {
                    ""
                } else {
                    ", OCSP asked without a nonce"
                }
            ),
        ]
    }
}

fn failed(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::Internal, m)
}

/// Trusts exactly the ID-card listener's own certificate, read from the provider's
/// database, and checks the handshake signatures.
#[derive(Debug)]
struct Pinned {
    certificate: Vec<u8>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Everything a simulated browser and relying party share.
struct World {
    http: reqwest::Client,
    id_url: String,
    id_card_port: u16,
    /// One ID card per client: its TLS configuration with the card's key and chain.
    cards: Vec<Arc<rustls::ClientConfig>>,
    keys: Vec<(String, VerifyingKey)>,
    basic: String,
    full_handshakes: AtomicU64,
    resumed_handshakes: AtomicU64,
}

fn cookie_of(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A code obtained by a login, with what the token request needs.
struct Code {
    code: String,
    verifier: String,
    nonce: String,
}

impl World {
    /// The same world with another HTTP client: a client's connections are served by
    /// tasks of the runtime that opened them.
    fn with_http(&self, http: reqwest::Client) -> World {
        World {
            http,
            id_url: self.id_url.clone(),
            id_card_port: self.id_card_port,
            cards: self.cards.clone(),
            keys: self.keys.clone(),
            basic: self.basic.clone(),
            full_handshakes: AtomicU64::new(0),
            resumed_handshakes: AtomicU64::new(0),
        }
    }

    /// Browser part of a login: authorize, login page, ID card; returns the code.
    async fn login(&self, card: usize) -> Result<Code, Error> {
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = hex::encode(rand::random::<[u8; 8]>());
        let nonce = hex::encode(rand::random::<[u8; 8]>());
        let url = format!(
            "{}/oidc/authorize?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope=openid%20idcard&state={state}&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
            self.id_url,
            enc(REDIRECT)
        );
        let r = self.http.get(&url).send().await.map_err(failed_http)?;
        if r.status() != 303 {
            return Err(failed(format!("authorize answered {}", r.status())));
        }
        let cookie = cookie_of(&r).ok_or_else(|| failed("authorize set no cookie"))?;
        let r = self
            .http
            .get(format!("{}/login", self.id_url))
            .header("cookie", &cookie)
            .send()
            .await
            .map_err(failed_http)?;
        if r.status() != 200 {
            return Err(failed(format!("login page answered {}", r.status())));
        }
        r.bytes().await.map_err(failed_http)?;
        let location = self.id_card(card, &cookie).await?;
        if query_param(&location, "state").as_deref() != Some(state.as_str()) {
            return Err(failed(format!("redirect without our state: {location}")));
        }
        let code =
            query_param(&location, "code").ok_or_else(|| failed(format!("no code: {location}")))?;
        Ok(Code {
            code,
            verifier,
            nonce,
        })
    }

    /// `GET /idcard` over TLS with the card; returns the redirect's location.
    async fn id_card(&self, card: usize, cookie: &str) -> Result<String, Error> {
        let config = self
            .cards
            .get(card % self.cards.len().max(1))
            .ok_or_else(|| failed("no card"))?
            .clone();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.id_card_port)).await?;
        let name = ServerName::try_from("localhost").map_err(|e| failed(e.to_string()))?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        match tls.get_ref().1.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => &self.resumed_handshakes,
            _ => &self.full_handshakes,
        }
        .fetch_add(1, Ordering::Relaxed);
        let request = format!(
            "GET /idcard HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        // A server may close without close_notify after Connection: close.
        let _ = tls.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        if !text.starts_with("HTTP/1.1 303") {
            // The body says why (an error's JSON, or the page's alert).
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            return Err(failed(format!(
                "ID-card login answered {}: {}",
                text.lines().next().unwrap_or("nothing"),
                body.chars().take(400).collect::<String>()
            )));
        }
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_owned())
            })
            .ok_or_else(|| failed("a redirect without location"))
    }

    /// The relying party's part: redeem the code and check the ID token.
    async fn token(&self, code: &Code) -> Result<(), Error> {
        let r = self
            .http
            .post(format!("{}/oidc/token", self.id_url))
            .header("authorization", &self.basic)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", code.verifier.as_str()),
            ])
            .send()
            .await
            .map_err(failed_http)?;
        if r.status() != 200 {
            return Err(failed(format!("token endpoint answered {}", r.status())));
        }
        let body: Value = r.json().await.map_err(failed_http)?;
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| failed("no id_token"))?;
        let claims = crate::jws::verify(id_token, &self.keys)?;
        if claims["iss"] != self.id_url.as_str()
            || claims["aud"] != CLIENT_ID
            || claims["nonce"] != code.nonce.as_str()
            || !claims["sub"].as_str().is_some_and(|s| s.starts_with("VN"))
        {
            return Err(failed(format!("unexpected ID token claims {claims}")));
        }
        Ok(())
    }
}

/// `clients` browsers logging in completely (token request included) for `budget`, on
/// `runtime`; their tally and how long they ran.
async fn complete_logins(
    runtime: &tokio::runtime::Handle,
    world: &Arc<World>,
    clients: usize,
    budget: Duration,
) -> (Arc<Tally>, f64) {
    let logins = Tally::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (world, tally) = (world.clone(), logins.clone());
        tasks.push(runtime.spawn(async move {
            while start.elapsed() < budget {
                let t = Instant::now();
                let done = match world.login(c).await {
                    Ok(code) => world.token(&code).await,
                    Err(e) => Err(e),
                };
                tally.note(t, done).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (logins, start.elapsed().as_secs_f64())
}

/// The name of the load generator's threads (at most 15 bytes, as Linux keeps them).
const CLIENT_THREADS: &str = "bench-client";

/// CPU time so far of this process and of its threads named [`CLIENT_THREADS`], in ticks.
fn cpu_ticks() -> Option<(u64, u64)> {
    use xalo_core::cpu_time;
    Some((
        cpu_time::of_process(std::process::id())?,
        cpu_time::of_threads_named(CLIENT_THREADS)?,
    ))
}

/// The browsers' and relying party's HTTP client.
fn http_client(clients: usize) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(clients * 2)
        .build()
        .map_err(failed_http)
}

fn failed_http(e: reqwest::Error) -> Error {
    Error::new(ErrorCode::HttpUnavailable, e.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Tally {
    count: AtomicU64,
    failures: AtomicU64,
    first_failure: Mutex<Option<String>>,
    latencies: Mutex<Vec<Duration>>,
}

impl Tally {
    fn new() -> Arc<Tally> {
        Arc::new(Tally {
            count: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            latencies: Mutex::new(Vec::new()),
        })
    }
    /// One operation begun at `t`: counted with its latency, or as a failure.
    async fn note(&self, t: Instant, done: Result<(), Error>) {
        match done {
            Ok(()) => {
                self.count.fetch_add(1, Ordering::Relaxed);
                self.latencies.lock().await.push(t.elapsed());
            }
            Err(e) => self.fail(e).await,
        }
    }
    async fn fail(&self, e: Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failure.lock().await;
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }
    async fn sorted(&self) -> Vec<Duration> {
        let mut l = self.latencies.lock().await.clone();
        l.sort_unstable();
        l
    }
}

/// Start the roles, run the parts, stop the roles and remove the scratch directory.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, Error> {
    let dir = std::env::temp_dir().join(format!(
        "xalo-bench-id-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    ));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, options).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &std::path::Path, options: &BenchOptions) -> Result<BenchReport, Error> {
    let clients = options.clients.max(1);
    let budget = Duration::from_secs(options.seconds.max(1));
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    let trust = xalo_trust::serve_with(
        config.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        xalo_trust::TrustSettings::default(),
    )
    .await?;
    let pki = xalo_trust::service::open_pki(&config, trust.port(), KeyAlgorithm::P256).await?;
    let secret = hex::encode(rand::random::<[u8; 24]>());
    let settings = json!({
        "trust_url": trust.url(),
        "id_card_listen": "127.0.0.1:0",
        "code_ttl_secs": 300,
        "ocsp_nonce": options.ocsp_nonce,
        "clients": [{
            "client_id": CLIENT_ID, "name": "Benchmark", "auth_method": "client_secret_basic",
            "redirect_uris": [REDIRECT], "secret": secret,
        }],
    });
    config.roles.insert(
        crate::ROLE.into(),
        RoleConfig {
            listen: None,
            database_url: None,
            settings: settings.as_object().cloned().unwrap_or_default(),
        },
    );
    let id = crate::serve(
        config.clone(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let id_url = id.url();
    let http = http_client(clients)?;

    // The ID-card listener's address is on the login page, as a browser finds it.
    let warmup = http
        .get(format!(
            "{id_url}/oidc/authorize?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope=openid",
            enc(REDIRECT)
        ))
        .send()
        .await
        .map_err(failed_http)?;
    let cookie = cookie_of(&warmup).ok_or_else(|| failed("authorize set no cookie"))?;
    let page = http
        .get(format!("{id_url}/login"))
        .header("cookie", cookie)
        .send()
        .await
        .map_err(failed_http)?
        .text()
        .await
        .map_err(failed_http)?;
    let id_card_port = page
        .split("https://")
        .skip(1)
        .find_map(|rest| {
            let host_port = rest.split('/').next()?;
            rest.contains("/idcard")
                .then(|| host_port.rsplit_once(':')?.1.parse::<u16>().ok())
                .flatten()
        })
        .ok_or_else(|| failed("the login page offers no ID-card login"))?;
    let id_db = xalo_store::Database::connect(&config.database_url(crate::ROLE)).await?;
    let (listener_pem, _) = crate::id_card::server_identity(&id_db, "localhost").await?;
    let (_, listener_der) = xalo_trust::key::pem_decode(&listener_pem)?;

    // One ID card per client, as `xalo pki` issues them.
    let crypto = Arc::new(rustls::crypto::ring::default_provider());
    let mut cards = Vec::new();
    for i in 0..clients {
        let code: PersonalCode = format!("VN00120301{:04}", i % 10_000).parse()?;
        let issued = pki
            .issue(&IssueRequest {
                profile: Profile::PersonAuthentication,
                subject: Subject::person(&code, "AN", "NGUYEN"),
                key: KeySource::Generate(KeyAlgorithm::P256),
                validity_days: 30,
            })
            .await?;
        let key = issued
            .private_key
            .clone()
            .ok_or_else(|| failed("the CA returned no key"))?;
        let mut chain = vec![CertificateDer::from(issued.record.certificate.clone())];
        chain.extend(issued.chain.first().cloned().map(CertificateDer::from));
        let config = rustls::ClientConfig::builder_with_provider(crypto.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                certificate: listener_der.clone(),
                algorithms: crypto.signature_verification_algorithms,
            }))
            .with_client_auth_cert(
                chain,
                PrivateKeyDer::try_from(key).map_err(|e| failed(e.to_string()))?,
            )
            .map_err(|e| failed(e.to_string()))?;
        cards.push(Arc::new(config));
    }
    let jwks: Value = http
        .get(format!("{id_url}/oidc/jwks"))
        .send()
        .await
        .map_err(failed_http)?
        .json()
        .await
        .map_err(failed_http)?;
    let world = Arc::new(World {
        http,
        id_url,
        id_card_port,
        cards,
        keys: crate::jws::keys_of_jwks(&jwks),
        basic: format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{secret}"))),
        full_handshakes: AtomicU64::new(0),
        resumed_handshakes: AtomicU64::new(0),
    });

    // For the last part the simulated browsers and relying party run on threads of their
    // own, so that the servers' share of the CPU can be told from theirs; the other parts
    // keep them beside the servers, as a hand-off between runtimes on every request costs
    // throughput. The last part's HTTP client is its own: a client's connections are
    // served by tasks of the runtime that opened them.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    let login_world = Arc::new(world.with_http(http_client(clients)?));
    let report = run_parts(
        &client_rt,
        login_world,
        world,
        clients,
        budget,
        options.ocsp_nonce,
    )
    .await;
    client_rt.shutdown_background();
    id.shutdown().await?;
    trust.shutdown().await?;
    Ok(report)
}

/// The four parts: complete logins; codes minted; token requests alone (`world`, beside
/// the servers); complete logins with the clients on `client_rt` (`login_world`).
async fn run_parts(
    client_rt: &tokio::runtime::Runtime,
    login_world: Arc<World>,
    world: Arc<World>,
    clients: usize,
    budget: Duration,
    ocsp_nonce: bool,
) -> BenchReport {
    // Part 1: complete logins, token request included.
    let (logins, login_secs) =
        complete_logins(&tokio::runtime::Handle::current(), &world, clients, budget).await;

    // Part 2: codes from logins, then the token endpoint alone redeems them.
    let codes = Arc::new(Mutex::new(Vec::new()));
    let minting = Tally::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (world, codes, tally) = (world.clone(), codes.clone(), minting.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < budget {
                match world.login(c).await {
                    Ok(code) => codes.lock().await.push(code),
                    Err(e) => tally.fail(e).await,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let tokens = Tally::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (world, codes, tally) = (world.clone(), codes.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(code) = codes.lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                tally.note(t, world.token(&code).await).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let token_secs = start.elapsed().as_secs_f64();

    // Part 4: complete logins again, the load generator on threads of its own, for how
    // the CPU time divides between the servers and it.
    let cpu_before = cpu_ticks();
    let (split, split_secs) =
        complete_logins(client_rt.handle(), &login_world, clients, budget).await;
    let n_split = split.count.load(Ordering::Relaxed);
    let cpu_per_login = match (cpu_before, cpu_ticks()) {
        (Some((total0, clients0)), Some((total1, clients1))) if n_split > 0 => {
            let per = |ticks: u64| {
                Duration::from_secs_f64(
                    ticks as f64 / xalo_core::cpu_time::TICKS_PER_SECOND / n_split as f64,
                )
            };
            let clients = clients1.saturating_sub(clients0);
            Some(CpuPerLogin {
                logins_per_sec: n_split as f64 / split_secs.max(1e-9),
                servers: per(total1.saturating_sub(total0).saturating_sub(clients)),
                clients: per(clients),
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            })
        }
        _ => None,
    };

    let login_lat = logins.sorted().await;
    let token_lat = tokens.sorted().await;
    let mut first_failure = None;
    for t in [&logins, &minting, &tokens, &split] {
        if first_failure.is_none() {
            first_failure = t.first_failure.lock().await.clone();
        }
    }
    let n_logins = logins.count.load(Ordering::Relaxed);
    let n_tokens = tokens.count.load(Ordering::Relaxed);
    BenchReport {
        clients,
        ocsp_nonce,
        logins: n_logins,
        logins_per_sec: n_logins as f64 / login_secs.max(1e-9),
        login_p50: percentile(&login_lat, 0.50),
        login_p99: percentile(&login_lat, 0.99),
        token_requests: n_tokens,
        tokens_per_sec: n_tokens as f64 / token_secs.max(1e-9),
        token_p50: percentile(&token_lat, 0.50),
        token_p99: percentile(&token_lat, 0.99),
        failures: [&logins, &minting, &tokens, &split]
            .iter()
            .map(|t| t.failures.load(Ordering::Relaxed))
            .sum(),
        first_failure,
        handshakes: (
            world.full_handshakes.load(Ordering::Relaxed)
                + login_world.full_handshakes.load(Ordering::Relaxed),
            world.resumed_handshakes.load(Ordering::Relaxed)
                + login_world.resumed_handshakes.load(Ordering::Relaxed),
        ),
        cpu_per_login,
    }
}
