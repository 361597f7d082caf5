//! The certificate authorities: a root, an issuing CA for organisations and one for
//! persons, each with a dedicated OCSP-signing certificate, and the time-stamping unit.
//!
//! Keys and certificates live in the role's database, so every instance of the trust role
//! behind a load balancer signs with the same keys; the CA certificates are also written
//! as PEM files for openssl and browsers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{Ia5String, ObjectIdentifier};
use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax, ExtendedKeyUsage};
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_store::Database;

use crate::key::{KeyAlgorithm, SigningKey, pem_decode, pem_encode};
use crate::store::{self, CertificateRecord, RevocationReason};

const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
const ID_AD_CA_ISSUERS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_EKU: &[u64] = &[2, 5, 29, 37];
const OID_OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];
const OID_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];
const OID_GIVEN_NAME: &[u64] = &[2, 5, 4, 42];
const OID_SURNAME: &[u64] = &[2, 5, 4, 4];
const OID_ORGANIZATION_IDENTIFIER: &[u64] = &[2, 5, 4, 97];

/// The three certificate authorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorityName {
    Root,
    Organisations,
    Persons,
}

impl AuthorityName {
    pub const ALL: [AuthorityName; 3] = [Self::Root, Self::Organisations, Self::Persons];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Organisations => "organisations",
            Self::Persons => "persons",
        }
    }
    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::TrustUnknownAuthority,
                    format!("no authority {s}"),
                )
            })
    }
    fn common_name(self) -> &'static str {
        match self {
            Self::Root => "Xalo Root CA",
            Self::Organisations => "Xalo Organisations CA",
            Self::Persons => "Xalo Persons CA",
        }
    }
}

/// What an issued certificate is for; the profile fixes its issuer and extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// A member gateway's TLS certificate (server and client authentication).
    GatewayTls,
    /// A member's signing certificate ("e-seal").
    Seal,
    /// A person's eID authentication certificate.
    PersonAuthentication,
    /// A person's qualified signing certificate.
    PersonSigning,
    /// An OCSP responder's signing certificate.
    OcspSigning,
    /// The time-stamping unit's certificate.
    TimeStamping,
}

impl Profile {
    pub const ISSUABLE: [Profile; 4] = [
        Self::GatewayTls,
        Self::Seal,
        Self::PersonAuthentication,
        Self::PersonSigning,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GatewayTls => "gateway-tls",
            Self::Seal => "seal",
            Self::PersonAuthentication => "person-authentication",
            Self::PersonSigning => "person-signing",
            Self::OcspSigning => "ocsp-signing",
            Self::TimeStamping => "time-stamping",
        }
    }
    pub fn parse(s: &str) -> Result<Self, Error> {
        [
            Self::GatewayTls,
            Self::Seal,
            Self::PersonAuthentication,
            Self::PersonSigning,
            Self::OcspSigning,
            Self::TimeStamping,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| Error::new(ErrorCode::TrustUnknownAuthority, format!("no profile {s}")))
    }
    /// The authority that issues this profile.
    pub fn issuer(self) -> AuthorityName {
        match self {
            Self::PersonAuthentication | Self::PersonSigning => AuthorityName::Persons,
            _ => AuthorityName::Organisations,
        }
    }
}

/// The subject of a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub common_name: String,
    pub organisation: Option<String>,
    pub country: String,
    /// ETSI EN 319 412-1 semantics identifier of a natural person, e.g. `PNOVN-001203012345`.
    pub serial_number: Option<String>,
    /// ETSI EN 319 412-1 identifier of a legal person, e.g. `NTRVN-000001`.
    pub organisation_identifier: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    /// DNS names for TLS certificates.
    pub dns_names: Vec<String>,
}

impl Subject {
    /// A person, named as on the ID card: `SURNAME,GIVEN,PNOVN-…`.
    pub fn person(code: &PersonalCode, given_name: &str, surname: &str) -> Subject {
        let serial = code.etsi_serial_number();
        Subject {
            common_name: format!("{surname},{given_name},{serial}"),
            country: code.country().prefix().to_owned(),
            serial_number: Some(serial),
            given_name: Some(given_name.to_owned()),
            surname: Some(surname.to_owned()),
            ..Subject::default()
        }
    }

    /// An organisation (a member of the exchange).
    pub fn organisation(country: &str, name: &str, registry_code: &str) -> Subject {
        Subject {
            common_name: name.to_owned(),
            organisation: Some(name.to_owned()),
            country: country.to_owned(),
            organisation_identifier: Some(format!("NTR{country}-{registry_code}")),
            ..Subject::default()
        }
    }

    fn distinguished_name(&self) -> Result<DistinguishedName, Error> {
        let printable = |s: &str| -> Result<DnValue, Error> {
            rcgen::string::PrintableString::try_from(s)
                .map(DnValue::PrintableString)
                .map_err(|_| Error::new(ErrorCode::TrustIssue, format!("{s:?} is not printable")))
        };
        let mut dn = DistinguishedName::new();
        if !self.country.is_empty() {
            dn.push(DnType::CountryName, printable(&self.country)?);
        }
        if let Some(o) = &self.organisation {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        if let Some(id) = &self.organisation_identifier {
            dn.push(
                DnType::CustomDnType(OID_ORGANIZATION_IDENTIFIER.to_vec()),
                id.as_str(),
            );
        }
        if let Some(s) = &self.surname {
            dn.push(DnType::CustomDnType(OID_SURNAME.to_vec()), s.as_str());
        }
        if let Some(g) = &self.given_name {
            dn.push(DnType::CustomDnType(OID_GIVEN_NAME.to_vec()), g.as_str());
        }
        if let Some(sn) = &self.serial_number {
            dn.push(
                DnType::CustomDnType(OID_SERIAL_NUMBER.to_vec()),
                printable(sn)?,
            );
        }
        dn.push(DnType::CommonName, self.common_name.as_str());
        Ok(dn)
    }
}

/// Where the key of a new certificate comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The authority generates the key (a citizen's card, a demo member).
    Generate(KeyAlgorithm),
    /// A PKCS#10 request, DER or PEM; the subject's key never leaves them.
    Csr(Vec<u8>),
}

/// A request to issue one certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub profile: Profile,
    pub subject: Subject,
    pub key: KeySource,
    pub validity_days: u32,
}

/// A certificate and the key that signs with it.
pub struct Signer {
    pub certificate_der: Vec<u8>,
    pub certificate: Certificate,
    pub key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field(
                "subject",
                &self.certificate.tbs_certificate.subject.to_string(),
            )
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(certificate_der: Vec<u8>, key: SigningKey) -> Result<Self, Error> {
        let certificate = parse_certificate(&certificate_der)?;
        Ok(Signer {
            certificate_der,
            certificate,
            key,
        })
    }
    pub fn pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.certificate_der)
    }
    pub fn subject(&self) -> String {
        self.certificate.tbs_certificate.subject.to_string()
    }
}

pub fn parse_certificate(der: &[u8]) -> Result<Certificate, Error> {
    Certificate::from_der(der)
        .map_err(|e| Error::new(ErrorCode::TrustBadDer, format!("certificate: {e}")))
}

/// Read certificates from PEM text or a single DER certificate.
pub fn read_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN") => Ok(crate::key::pem_decode_all(text)?
            .into_iter()
            .filter(|(label, _)| label == "CERTIFICATE")
            .map(|(_, der)| der)
            .collect()),
        _ => {
            parse_certificate(bytes)?;
            Ok(vec![bytes.to_vec()])
        }
    }
}

/// How the authorities are named and reached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PkiSettings {
    /// `http://host:port` of the trust role, as certificates name it (OCSP URL in AIA).
    pub public_url: String,
    pub algorithm: KeyAlgorithm,
    pub country: String,
    pub organisation: String,
}

impl PkiSettings {
    pub fn new(public_url: impl Into<String>) -> Self {
        PkiSettings {
            public_url: public_url.into(),
            algorithm: KeyAlgorithm::P256,
            country: "VN".into(),
            organisation: "Xalo Trust Services".into(),
        }
    }
    pub fn ocsp_url(&self) -> String {
        format!("{}/ocsp", self.public_url.trim_end_matches('/'))
    }
    pub fn tsa_url(&self) -> String {
        format!("{}/tsa", self.public_url.trim_end_matches('/'))
    }
    pub fn ca_url(&self, name: AuthorityName) -> String {
        format!(
            "{}/ca/{}.crt",
            self.public_url.trim_end_matches('/'),
            name.as_str()
        )
    }
}

/// A certificate just issued, with its chain up to the root.
#[derive(Debug, Clone)]
pub struct Issued {
    pub record: CertificateRecord,
    /// PKCS#8 DER, when the authority generated the key.
    pub private_key: Option<Vec<u8>>,
    /// Issuing CA, then root.
    pub chain: Vec<Vec<u8>>,
}

impl Issued {
    pub fn certificate_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.record.certificate)
    }
}

/// The national PKI: the authorities, their responders and the time-stamping unit.
#[derive(Clone)]
pub struct Pki {
    inner: Arc<PkiInner>,
}

struct PkiInner {
    db: Database,
    settings: PkiSettings,
    root: Signer,
    organisations: Signer,
    persons: Signer,
    ocsp: [Signer; 3],
    tsa: Signer,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("public_url", &self.inner.settings.public_url)
            .finish_non_exhaustive()
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix(t)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A positive 128-bit serial number: random, so that no two instances ever collide.
fn new_serial() -> Result<Vec<u8>, Error> {
    let mut bytes = crate::key::random_bytes::<16>()?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes.to_vec())
}

fn issue_error(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::TrustIssue, e.to_string())
}

fn signer_name(kind: &str, authority: AuthorityName) -> String {
    format!("{kind}-{}", authority.as_str())
}

impl Pki {
    /// Open the PKI in `db`, creating the authorities on first use. Safe to call from
    /// several processes at once: the first to insert wins and the others load its keys.
    pub async fn open(db: Database, settings: PkiSettings) -> Result<Pki, Error> {
        store::migrate(&db).await?;
        let root = ensure_signer(&db, "ca-root", || {
            let key = SigningKey::generate(settings.algorithm)?;
            let params = ca_params(&settings, AuthorityName::Root, 20 * 365)?;
            let cert = params.self_signed(&key.rcgen_key()?).map_err(issue_error)?;
            Signer::new(cert.der().to_vec(), key)
        })
        .await?;
        let mut issuing = Vec::new();
        for name in [AuthorityName::Organisations, AuthorityName::Persons] {
            let signer = ensure_signer(&db, &signer_name("ca", name), || {
                let key = SigningKey::generate(settings.algorithm)?;
                let mut params = ca_params(&settings, name, 10 * 365)?;
                params
                    .custom_extensions
                    .push(aia(&settings, AuthorityName::Root)?);
                sign_with(&params, &key.rcgen_key()?, &root).and_then(|der| Signer::new(der, key))
            })
            .await?;
            issuing.push(signer);
        }
        let persons = issuing.pop().ok_or_else(|| issue_error("no persons CA"))?;
        let organisations = issuing
            .pop()
            .ok_or_else(|| issue_error("no organisations CA"))?;
        let mut ocsp = Vec::new();
        for (name, ca) in [
            (AuthorityName::Root, &root),
            (AuthorityName::Organisations, &organisations),
            (AuthorityName::Persons, &persons),
        ] {
            let signer = ensure_signer(&db, &signer_name("ocsp", name), || {
                let key = SigningKey::generate(settings.algorithm)?;
                let subject = Subject {
                    common_name: format!("{} OCSP Responder", name.common_name()),
                    organisation: Some(settings.organisation.clone()),
                    country: settings.country.clone(),
                    ..Subject::default()
                };
                let params = leaf_params(&settings, Profile::OcspSigning, &subject, name, 2 * 365)?;
                sign_with(&params, &key.rcgen_key()?, ca).and_then(|der| Signer::new(der, key))
            })
            .await?;
            ocsp.push(signer);
        }
        let tsa = ensure_signer(&db, "tsa", || {
            let key = SigningKey::generate(settings.algorithm)?;
            let subject = Subject {
                common_name: "Xalo Time-Stamping Authority".into(),
                organisation: Some(settings.organisation.clone()),
                country: settings.country.clone(),
                ..Subject::default()
            };
            let params = leaf_params(
                &settings,
                Profile::TimeStamping,
                &subject,
                AuthorityName::Organisations,
                5 * 365,
            )?;
            sign_with(&params, &key.rcgen_key()?, &organisations)
                .and_then(|der| Signer::new(der, key))
        })
        .await?;
        let ocsp: [Signer; 3] = ocsp
            .try_into()
            .map_err(|_| issue_error("OCSP responders missing"))?;
        Ok(Pki {
            inner: Arc::new(PkiInner {
                db,
                settings,
                root,
                organisations,
                persons,
                ocsp,
                tsa,
            }),
        })
    }

    pub fn database(&self) -> &Database {
        &self.inner.db
    }
    pub fn settings(&self) -> &PkiSettings {
        &self.inner.settings
    }
    pub fn authority(&self, name: AuthorityName) -> &Signer {
        match name {
            AuthorityName::Root => &self.inner.root,
            AuthorityName::Organisations => &self.inner.organisations,
            AuthorityName::Persons => &self.inner.persons,
        }
    }
    /// The dedicated OCSP-signing certificate for certificates `name` issued.
    pub fn ocsp_signer(&self, name: AuthorityName) -> &Signer {
        match name {
            AuthorityName::Root => &self.inner.ocsp[0],
            AuthorityName::Organisations => &self.inner.ocsp[1],
            AuthorityName::Persons => &self.inner.ocsp[2],
        }
    }
    pub fn tsa_signer(&self) -> &Signer {
        &self.inner.tsa
    }
    /// The chain above a certificate `name` issued: `name` itself, then the root.
    pub fn chain_of(&self, name: AuthorityName) -> Vec<Vec<u8>> {
        match name {
            AuthorityName::Root => vec![self.inner.root.certificate_der.clone()],
            other => vec![
                self.authority(other).certificate_der.clone(),
                self.inner.root.certificate_der.clone(),
            ],
        }
    }

    /// Issue a certificate for `request.profile` from its authority.
    pub async fn issue(&self, request: &IssueRequest) -> Result<Issued, Error> {
        if !Profile::ISSUABLE.contains(&request.profile) {
            return Err(Error::new(
                ErrorCode::TrustUnknownAuthority,
                format!(
                    "{} certificates are issued only by the authority itself",
                    request.profile.as_str()
                ),
            ));
        }
        let authority = request.profile.issuer();
        let ca = self.authority(authority);
        let params = leaf_params(
            &self.inner.settings,
            request.profile,
            &request.subject,
            authority,
            request.validity_days.max(1),
        )?;
        let (der, private_key) = match &request.key {
            KeySource::Generate(alg) => {
                let key = SigningKey::generate(*alg)?;
                let der = sign_with(&params, &key.rcgen_key()?, ca)?;
                (der, Some(key.pkcs8_der().to_vec()))
            }
            KeySource::Csr(bytes) => {
                let csr_der = csr_der(bytes)?;
                let csr =
                    rcgen::CertificateSigningRequestParams::from_der(&csr_der.as_slice().into())
                        .map_err(|e| Error::new(ErrorCode::TrustBadCsr, e.to_string()))?;
                let issuer = rcgen_issuer(ca)?;
                let cert = params
                    .signed_by(&csr.public_key, &issuer)
                    .map_err(issue_error)?;
                (cert.der().to_vec(), None)
            }
        };
        let record = CertificateRecord::new(authority, request.profile, &der, unix(now()))?;
        store::insert_certificate(&self.inner.db, &record, private_key.as_deref()).await?;
        Ok(Issued {
            record,
            private_key,
            chain: self.chain_of(authority),
        })
    }

    /// Revoke a certificate (serial in hex) with a reason, at `when` (now if `None`).
    pub async fn revoke(
        &self,
        serial_hex: &str,
        reason: RevocationReason,
        when: Option<SystemTime>,
    ) -> Result<CertificateRecord, Error> {
        store::revoke(
            &self.inner.db,
            serial_hex,
            reason,
            unix(when.unwrap_or_else(now)),
        )
        .await
    }

    pub async fn certificate(&self, serial_hex: &str) -> Result<CertificateRecord, Error> {
        store::find(&self.inner.db, serial_hex).await
    }

    pub async fn list(&self, limit: i64) -> Result<Vec<CertificateRecord>, Error> {
        store::list(&self.inner.db, limit).await
    }

    pub async fn private_key(&self, serial_hex: &str) -> Result<Option<Vec<u8>>, Error> {
        store::private_key(&self.inner.db, serial_hex).await
    }

    /// A PKCS#12 file (a citizen's card to import into a browser): key, certificate and
    /// chain under `password`.
    pub async fn export_pkcs12(&self, serial_hex: &str, password: &str) -> Result<Vec<u8>, Error> {
        let record = self.certificate(serial_hex).await?;
        let key = self.private_key(serial_hex).await?.ok_or_else(|| {
            Error::new(
                ErrorCode::TrustExport,
                format!(
                    "the key of {serial_hex} was never held by the authority (issued from a CSR)"
                ),
            )
        })?;
        let mut chain = vec![record.certificate.clone()];
        chain.extend(self.chain_of(record.authority));
        pkcs12(&key, &chain, password, &record.subject)
    }

    /// Write the CA and service certificates as PEM files into `dir`; returns their paths.
    pub fn write_pem_files(&self, dir: &Path) -> Result<CaFiles, Error> {
        std::fs::create_dir_all(dir)?;
        let write = |name: &str, pem: String| -> Result<PathBuf, Error> {
            let path = dir.join(name);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        Ok(CaFiles {
            root: write("root.pem", self.inner.root.pem())?,
            organisations: write("organisations.pem", self.inner.organisations.pem())?,
            persons: write("persons.pem", self.inner.persons.pem())?,
            tsa: write("tsa.pem", self.inner.tsa.pem())?,
            bundle: write(
                "ca-bundle.pem",
                format!(
                    "{}{}{}",
                    self.inner.root.pem(),
                    self.inner.organisations.pem(),
                    self.inner.persons.pem()
                ),
            )?,
        })
    }
}

/// Where the PEM files of the authorities are.
#[derive(Debug, Clone, Serialize)]
pub struct CaFiles {
    pub root: PathBuf,
    pub organisations: PathBuf,
    pub persons: PathBuf,
    pub tsa: PathBuf,
    /// Root and both issuing CAs in one file.
    pub bundle: PathBuf,
}

/// Build a PKCS#12 archive that openssl and browsers import.
pub fn pkcs12(
    pkcs8: &[u8],
    chain: &[Vec<u8>],
    password: &str,
    alias: &str,
) -> Result<Vec<u8>, Error> {
    let export = |e: p12_keystore::error::Error| Error::new(ErrorCode::TrustExport, e.to_string());
    let certs = chain
        .iter()
        .map(|c| p12_keystore::Certificate::from_der(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(export)?;
    let key = p12_keystore::PrivateKey::from_der(pkcs8).map_err(export)?;
    let local_key_id = crate::key::random_bytes::<20>()?.to_vec();
    let chain = p12_keystore::PrivateKeyChain::new(local_key_id, key, certs);
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(alias, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha256)
        .write()
        .map_err(export)
}

fn csr_der(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN") => {
            let (_, der) =
                pem_decode(text).map_err(|e| Error::new(ErrorCode::TrustBadCsr, e.message))?;
            Ok(der)
        }
        _ => Ok(bytes.to_vec()),
    }
}

/// Parse and check a PKCS#10 request: structure and self-signature. What the fuzz target
/// drives.
pub fn parse_csr(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let der = csr_der(bytes)?;
    let csr = rcgen::CertificateSigningRequestParams::from_der(&der.as_slice().into())
        .map_err(|e| Error::new(ErrorCode::TrustBadCsr, e.to_string()))?;
    Ok(rcgen::PublicKeyData::der_bytes(&csr.public_key).to_vec())
}

fn rcgen_issuer(ca: &Signer) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>, Error> {
    rcgen::Issuer::from_ca_cert_der(&ca.certificate_der.as_slice().into(), ca.key.rcgen_key()?)
        .map_err(issue_error)
}

fn sign_with(
    params: &CertificateParams,
    key: &rcgen::KeyPair,
    ca: &Signer,
) -> Result<Vec<u8>, Error> {
    let issuer = rcgen_issuer(ca)?;
    params
        .signed_by(key, &issuer)
        .map(|c| c.der().to_vec())
        .map_err(issue_error)
}

fn base_params(subject: &Subject, days: u32) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let start = now() - Duration::from_secs(300);
    params.not_before = offset(start);
    params.not_after = offset(start + Duration::from_secs(u64::from(days) * 86_400));
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&new_serial()?));
    params.distinguished_name = subject.distinguished_name()?;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn ca_params(
    settings: &PkiSettings,
    name: AuthorityName,
    days: u32,
) -> Result<CertificateParams, Error> {
    let subject = Subject {
        common_name: name.common_name().into(),
        organisation: Some(settings.organisation.clone()),
        country: settings.country.clone(),
        ..Subject::default()
    };
    let mut params = base_params(&subject, days)?;
    params.is_ca = match name {
        AuthorityName::Root => IsCa::Ca(BasicConstraints::Unconstrained),
        _ => IsCa::Ca(BasicConstraints::Constrained(0)),
    };
    params.use_authority_key_identifier_extension = name != AuthorityName::Root;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn aia(settings: &PkiSettings, issuer: AuthorityName) -> Result<CustomExtension, Error> {
    let uri = |s: String| {
        Ia5String::new(&s)
            .map(GeneralName::UniformResourceIdentifier)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("URL {s}: {e}")))
    };
    let value = AuthorityInfoAccessSyntax(vec![
        AccessDescription {
            access_method: ID_AD_OCSP,
            access_location: uri(settings.ocsp_url())?,
        },
        AccessDescription {
            access_method: ID_AD_CA_ISSUERS,
            access_location: uri(settings.ca_url(issuer))?,
        },
    ]);
    Ok(CustomExtension::from_oid_content(
        OID_AIA,
        crate::key::to_der(&value)?,
    ))
}

fn leaf_params(
    settings: &PkiSettings,
    profile: Profile,
    subject: &Subject,
    issuer: AuthorityName,
    days: u32,
) -> Result<CertificateParams, Error> {
    let mut params = base_params(subject, days)?;
    params.is_ca = IsCa::ExplicitNoCa;
    use ExtendedKeyUsagePurpose as Eku;
    use KeyUsagePurpose as Ku;
    match profile {
        Profile::GatewayTls => {
            params.key_usages = vec![Ku::DigitalSignature];
            params.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
            params.subject_alt_names = subject
                .dns_names
                .iter()
                .map(|d| {
                    rcgen::string::Ia5String::try_from(d.as_str())
                        .map(rcgen::SanType::DnsName)
                        .map_err(|_| Error::new(ErrorCode::TrustIssue, format!("bad DNS name {d}")))
                })
                .collect::<Result<_, _>>()?;
        }
        // Signing certificates commit to content (nonRepudiation); emailProtection is the
        // purpose CMS verifiers (openssl cms) look for.
        Profile::Seal | Profile::PersonSigning => {
            params.key_usages = vec![Ku::ContentCommitment];
            params.extended_key_usages = vec![Eku::EmailProtection];
        }
        Profile::PersonAuthentication => {
            params.key_usages = vec![Ku::DigitalSignature];
            params.extended_key_usages = vec![Eku::ClientAuth, Eku::EmailProtection];
        }
        Profile::OcspSigning => {
            params.key_usages = vec![Ku::DigitalSignature];
            params.extended_key_usages = vec![Eku::OcspSigning];
            // The responder's own certificate is not checked by OCSP (RFC 6960 4.2.2.2.1).
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    OID_OCSP_NOCHECK,
                    vec![0x05, 0x00],
                ));
        }
        Profile::TimeStamping => {
            params.key_usages = vec![Ku::DigitalSignature, Ku::ContentCommitment];
            // RFC 3161 2.3: the only EKU, and critical; rcgen writes EKU non-critical.
            let eku = ExtendedKeyUsage(vec![ID_KP_TIME_STAMPING]);
            let mut ext = CustomExtension::from_oid_content(OID_EKU, crate::key::to_der(&eku)?);
            ext.set_criticality(true);
            params.custom_extensions.push(ext);
        }
    }
    if profile != Profile::OcspSigning {
        params.custom_extensions.push(aia(settings, issuer)?);
    }
    Ok(params)
}

async fn ensure_signer(
    db: &Database,
    name: &str,
    make: impl FnOnce() -> Result<Signer, Error>,
) -> Result<Signer, Error> {
    if let Some((cert, key)) = store::load_signer(db, name).await? {
        return Signer::new(cert, SigningKey::from_pkcs8(&key)?);
    }
    let signer = make()?;
    match store::insert_signer(db, name, &signer.certificate_der, signer.key.pkcs8_der()).await {
        Ok(()) => Ok(signer),
        // Another instance initialised first: use its keys.
        Err(e) if e.code == ErrorCode::StoreConflict => {
            let (cert, key) = store::load_signer(db, name)
                .await?
                .ok_or_else(|| issue_error(format!("{name} vanished")))?;
            Signer::new(cert, SigningKey::from_pkcs8(&key)?)
        }
        Err(e) => Err(e),
    }
}

/// The serial number of a certificate in lower-case hex, as the store keys it.
pub fn serial_hex(cert: &Certificate) -> String {
    hex::encode(cert.tbs_certificate.serial_number.as_bytes())
}

/// The DER of a certificate's subject, for comparisons.
pub fn subject_der(cert: &Certificate) -> Vec<u8> {
    cert.tbs_certificate.subject.to_der().unwrap_or_default()
}
