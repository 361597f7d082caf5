//! The `xalo pki`, `xalo sign`, `xalo verify` and `xalo bench trust` commands, for the
//! binary to mount.

use std::path::PathBuf;

use base64::Engine;
use clap::{Args, Subcommand};
use xalo_core::{Config, Error, ErrorCode, PersonalCode};

use crate::authority::{IssueRequest, KeySource, Profile, Subject, read_certificates};
use crate::chain::TrustAnchors;
use crate::container::{self, DataFile, SignOptions};
use crate::key::{KeyAlgorithm, SigningKey};
use crate::remote::{MobileIdSigningRequest, RemoteSigningClient, SigningFile};
use crate::service::{open_pki, public_url, trust_dir};
use crate::store::RevocationReason;
use crate::{AuthorityName, Signer};

/// The port offset the binary gives the trust role; certificates issued offline name the
/// URL of a trust role at `port_base + PORT_OFFSET` unless `roles.trust.listen` says otherwise.
pub const PORT_OFFSET: u16 = 1;

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the root, issuing CAs, OCSP and TSA certificates (once; later runs reuse them).
    Init {
        #[arg(long, value_enum, default_value = "p256")]
        algorithm: KeyAlgorithm,
    },
    /// Issue a certificate from a CSR, or with a new key.
    Issue {
        #[arg(long, value_enum)]
        profile: Profile,
        /// A person's code, e.g. VN001203012345 (person profiles).
        #[arg(long)]
        personal_code: Option<String>,
        #[arg(long)]
        given_name: Option<String>,
        #[arg(long)]
        surname: Option<String>,
        /// Organisation name (gateway and seal profiles).
        #[arg(long)]
        organisation: Option<String>,
        /// The organisation's registry code.
        #[arg(long, default_value = "000000")]
        registry_code: String,
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// A PKCS#10 request (PEM or DER); without it a key is generated.
        #[arg(long)]
        csr: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "p256")]
        algorithm: KeyAlgorithm,
        #[arg(long, default_value_t = 730)]
        days: u32,
        /// Write CERT.pem, the chain and (when generated) the key under this path prefix.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Revoke a certificate by its serial number (hex).
    Revoke {
        serial: String,
        #[arg(long, value_enum, default_value = "unspecified")]
        reason: RevocationReason,
    },
    /// List issued certificates, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Export a certificate as PEM, or with its key as PKCS#12 (a citizen's card).
    Export {
        serial: String,
        #[arg(long)]
        p12: Option<PathBuf>,
        #[arg(long)]
        password: Option<String>,
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

fn offline_port(config: &Config) -> u16 {
    config.listen_addr(crate::ROLE, PORT_OFFSET).port()
}

fn write(path: &PathBuf, data: impl AsRef<[u8]>) -> Result<(), Error> {
    std::fs::write(path, data)
        .map_err(|e| Error::new(ErrorCode::ServerIo, format!("{}: {e}", path.display())))
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::new(ErrorCode::ServerIo, format!("{}: {e}", path.display())))
}

pub async fn run_pki(config: &Config, command: PkiCommand) -> Result<(), Error> {
    let algorithm = match &command {
        PkiCommand::Init { algorithm } => *algorithm,
        _ => crate::TrustSettings::load(config)?.algorithm,
    };
    let pki = open_pki(config, offline_port(config), algorithm).await?;
    match command {
        PkiCommand::Init { .. } => {
            let dir = trust_dir(config);
            println!(
                "Certificate authorities ready; PEM files in {}",
                dir.display()
            );
            for name in AuthorityName::ALL {
                println!("  {:<14} {}", name.as_str(), pki.authority(name).subject());
            }
        }
        PkiCommand::Issue {
            profile,
            personal_code,
            given_name,
            surname,
            organisation,
            registry_code,
            dns_names,
            csr,
            algorithm,
            days,
            out,
        } => {
            let mut subject = match profile.issuer() {
                AuthorityName::Persons => {
                    let code: PersonalCode = personal_code
                        .as_deref()
                        .ok_or_else(|| {
                            Error::new(
                                ErrorCode::TrustIssue,
                                "--personal-code is required for persons",
                            )
                        })?
                        .parse()?;
                    Subject::person(
                        &code,
                        given_name.as_deref().unwrap_or(""),
                        surname.as_deref().unwrap_or(""),
                    )
                }
                _ => Subject::organisation(
                    &pki.settings().country,
                    organisation.as_deref().ok_or_else(|| {
                        Error::new(ErrorCode::TrustIssue, "--organisation is required")
                    })?,
                    &registry_code,
                ),
            };
            subject.dns_names = dns_names;
            let key = match csr {
                Some(path) => KeySource::Csr(read(&path)?),
                None => KeySource::Generate(algorithm),
            };
            let issued = pki
                .issue(&IssueRequest {
                    profile,
                    subject,
                    key,
                    validity_days: days,
                })
                .await?;
            println!(
                "issued {} serial {} to {}",
                profile.as_str(),
                issued.record.serial,
                issued.record.subject
            );
            match out {
                Some(prefix) => {
                    let p = |ext: &str| PathBuf::from(format!("{}{ext}", prefix.display()));
                    write(&p(".pem"), issued.certificate_pem())?;
                    let chain: String = issued
                        .chain
                        .iter()
                        .map(|c| crate::key::pem_encode("CERTIFICATE", c))
                        .collect();
                    write(&p(".chain.pem"), chain)?;
                    if let Some(key) = &issued.private_key {
                        write(&p(".key.pem"), SigningKey::from_pkcs8(key)?.pkcs8_pem())?;
                    }
                    println!(
                        "wrote {}.pem, .chain.pem{}",
                        prefix.display(),
                        if issued.private_key.is_some() {
                            ", .key.pem"
                        } else {
                            ""
                        }
                    );
                }
                None => print!("{}", issued.certificate_pem()),
            }
        }
        PkiCommand::Revoke { serial, reason } => {
            let r = pki.revoke(&serial, reason, None).await?;
            println!("revoked {} ({}) for {:?}", r.serial, r.subject, reason);
        }
        PkiCommand::List { limit } => {
            for r in pki.list(limit).await? {
                let state = match r.revoked_unix {
                    Some(_) => format!(
                        "revoked ({:?})",
                        r.revocation_reason.unwrap_or(RevocationReason::Unspecified)
                    ),
                    None => "valid".to_owned(),
                };
                println!(
                    "{}  {:<22} {:<14} {:<16} {}",
                    r.serial,
                    r.profile.as_str(),
                    r.authority.as_str(),
                    state,
                    r.subject
                );
            }
        }
        PkiCommand::Export {
            serial,
            p12,
            password,
            out,
        } => match p12 {
            Some(path) => {
                let password = password.ok_or_else(|| {
                    Error::new(ErrorCode::TrustExport, "--password is required for PKCS#12")
                })?;
                write(&path, pki.export_pkcs12(&serial, &password).await?)?;
                println!("wrote {}", path.display());
            }
            None => {
                let record = pki.certificate(&serial).await?;
                let mut pem = crate::key::pem_encode("CERTIFICATE", &record.certificate);
                for c in pki.chain_of(record.authority) {
                    pem.push_str(&crate::key::pem_encode("CERTIFICATE", &c));
                }
                match out {
                    Some(path) => write(&path, pem)?,
                    None => print!("{pem}"),
                }
            }
        },
    }
    Ok(())
}

/// `xalo sign FILE… -o out.asice --cert C --key K --chain CHAIN`, or with Mobile-ID
/// through a remote signing service: `--mobile-id PHONE --personal-code CODE --id URL
/// --client ID --secret S`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Files to sign (none when co-signing with --add-to).
    pub files: Vec<PathBuf>,
    #[arg(short, long)]
    pub out: PathBuf,
    /// The signer's certificate (PEM).
    #[arg(
        long,
        required_unless_present = "mobile_id",
        conflicts_with = "mobile_id"
    )]
    pub cert: Option<PathBuf>,
    /// The signer's PKCS#8 private key (PEM).
    #[arg(long, required_unless_present = "mobile_id")]
    pub key: Option<PathBuf>,
    /// The issuing CA and root (PEM), as `xalo pki issue -o` writes them.
    #[arg(long, required_unless_present = "mobile_id")]
    pub chain: Option<PathBuf>,
    /// Co-sign this existing container instead of making a new one.
    #[arg(long)]
    pub add_to: Option<PathBuf>,
    /// The time-stamping authority; by default the configured trust role's.
    #[arg(long)]
    pub tsa: Option<String>,
    /// Sign with this phone's Mobile-ID (PIN2) through the signing service at --id.
    #[arg(long, requires_all = ["personal_code", "id", "client", "secret"])]
    pub mobile_id: Option<String>,
    /// The signer's personal code, e.g. VN001203012345 (with --mobile-id).
    #[arg(long)]
    pub personal_code: Option<String>,
    /// The signing service (the `id` role's URL).
    #[arg(long)]
    pub id: Option<String>,
    /// This relying party's client id at the signing service.
    #[arg(long)]
    pub client: Option<String>,
    /// Its client secret.
    #[arg(long, env = "XALO_SIGN_CLIENT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

fn required<'a>(value: &'a Option<PathBuf>, flag: &str) -> Result<&'a PathBuf, Error> {
    value
        .as_ref()
        .ok_or_else(|| Error::new(ErrorCode::TrustKey, format!("{flag} is required")))
}

pub async fn run_sign(config: &Config, args: SignArgs) -> Result<(), Error> {
    let files = args
        .files
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            read(p).map(|bytes| DataFile { name, bytes })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let existing = args.add_to.as_ref().map(read).transpose()?;
    if let Some(phone) = &args.mobile_id {
        return sign_remotely(&args, phone, files, existing).await;
    }
    let cert = read_certificates(&read(required(&args.cert, "--cert")?)?)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::new(ErrorCode::TrustKey, "no certificate"))?;
    let key_pem = String::from_utf8(read(required(&args.key, "--key")?)?)
        .map_err(|_| Error::new(ErrorCode::TrustKey, "the key is not PEM"))?;
    let signer = Signer::new(cert, SigningKey::from_pem(&key_pem)?)?;
    let chain = read_certificates(&read(required(&args.chain, "--chain")?)?)?;
    let tsa = args
        .tsa
        .unwrap_or_else(|| format!("{}/tsa", public_url(config, offline_port(config))));
    let http = reqwest::Client::new();
    let bytes = container::sign(
        existing.as_deref(),
        files,
        &SignOptions {
            signer: &signer,
            chain: &chain,
            tsa_url: &tsa,
            http: &http,
        },
    )
    .await?;
    write(&args.out, bytes)?;
    println!("signed {} by {}", args.out.display(), signer.subject());
    Ok(())
}

/// Sign through the remote signing service: show the verification code, wait for PIN2.
async fn sign_remotely(
    args: &SignArgs,
    phone: &str,
    files: Vec<DataFile>,
    existing: Option<Vec<u8>>,
) -> Result<(), Error> {
    let missing = |flag: &str| Error::new(ErrorCode::HttpBadRequest, format!("{flag} is required"));
    let client = RemoteSigningClient::new(
        args.id.as_deref().ok_or_else(|| missing("--id"))?,
        args.client.as_deref().ok_or_else(|| missing("--client"))?,
        args.secret.as_deref().ok_or_else(|| missing("--secret"))?,
    )?;
    let code: PersonalCode = args
        .personal_code
        .as_deref()
        .ok_or_else(|| missing("--personal-code"))?
        .trim()
        .to_ascii_uppercase()
        .parse()?;
    let started = client
        .start_mobile_id(&MobileIdSigningRequest {
            phone_number: phone.to_owned(),
            national_identity_number: code.to_string(),
            files: files.iter().map(SigningFile::from).collect(),
            container: existing.map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
            display_text: args
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            language: None,
        })
        .await?;
    println!(
        "Verification code {}: check that the phone shows it, then enter PIN2 there.",
        started.verification_code
    );
    let bytes = client.wait(&started.session_id).await?;
    write(&args.out, bytes)?;
    println!("signed {} with Mobile-ID {phone}", args.out.display());
    Ok(())
}

/// `xalo verify out.asice`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub container: PathBuf,
    /// Trusted roots (PEM); by default the configured trust role's root.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Print the report; `Ok(false)` when the container has defects (exit non-zero).
pub fn run_verify(config: &Config, args: VerifyArgs) -> Result<bool, Error> {
    let ca = args
        .ca
        .unwrap_or_else(|| trust_dir(config).join("root.pem"));
    let anchors = TrustAnchors::from_bytes(&read(&ca)?)?;
    let report = container::verify(&read(&args.container)?, &anchors);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
        );
    } else {
        println!("{report}");
    }
    Ok(report.is_valid())
}
