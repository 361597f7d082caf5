//! Signing keys and signature checks.
//!
//! ring does every signature (its P-256 is assembly-optimised, which the benchmark needs);
//! keys travel as PKCS#8 so that rcgen, openssl and browsers read the same bytes.

use std::sync::LazyLock;

use der::asn1::ObjectIdentifier;
use der::{Any, Decode, Encode};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use spki_types::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use xalo_core::{Error, ErrorCode};

pub(crate) use x509_cert::spki as spki_types;

static RNG: LazyLock<SystemRandom> = LazyLock::new(SystemRandom::new);

pub mod oid {
    use der::asn1::ObjectIdentifier as Oid;
    pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    pub const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub const RSA_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
}

/// The key algorithms the authorities issue for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    #[default]
    #[value(name = "p256")]
    P256,
    #[value(name = "p384")]
    P384,
    #[value(name = "ed25519")]
    Ed25519,
}

impl KeyAlgorithm {
    pub fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// The signatureAlgorithm a key of this algorithm produces.
    pub fn signature_algorithm(self) -> AlgorithmIdentifierOwned {
        let oid = match self {
            KeyAlgorithm::P256 => oid::ECDSA_SHA256,
            KeyAlgorithm::P384 => oid::ECDSA_SHA384,
            KeyAlgorithm::Ed25519 => oid::ED25519,
        };
        AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        }
    }

    /// The digest that goes with this key in CMS (RFC 8419 pairs Ed25519 with SHA-512).
    pub fn digest(self) -> DigestAlgorithm {
        match self {
            KeyAlgorithm::P256 => DigestAlgorithm::Sha256,
            KeyAlgorithm::P384 => DigestAlgorithm::Sha384,
            KeyAlgorithm::Ed25519 => DigestAlgorithm::Sha512,
        }
    }
}

/// The digests Xalo computes and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            oid::SHA256 => Some(Self::Sha256),
            oid::SHA384 => Some(Self::Sha384),
            oid::SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Sha256 => oid::SHA256,
            Self::Sha384 => oid::SHA384,
            Self::Sha512 => oid::SHA512,
        }
    }
    pub fn identifier(self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: self.oid(),
            parameters: None,
        }
    }
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Self::Sha256 => &ring::digest::SHA256,
            Self::Sha384 => &ring::digest::SHA384,
            Self::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, data).as_ref().to_vec()
    }
}

enum Inner {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key that can sign, held with its PKCS#8 encoding.
pub struct SigningKey {
    algorithm: KeyAlgorithm,
    pkcs8: Vec<u8>,
    inner: Inner,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn key_error(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::TrustKey, e.to_string())
}

impl SigningKey {
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, Error> {
        let pkcs8 = match algorithm {
            KeyAlgorithm::P256 => {
                EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &*RNG)
            }
            KeyAlgorithm::P384 => {
                EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P384_SHA384_ASN1_SIGNING, &*RNG)
            }
            KeyAlgorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&*RNG),
        }
        .map_err(|_| key_error("key generation failed"))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Read a PKCS#8 private key (DER), of any supported algorithm.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let info = pkcs8_algorithm(der)?;
        let (algorithm, inner) = match info {
            KeyAlgorithm::P256 => (
                info,
                Inner::Ecdsa(
                    EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, der, &*RNG)
                        .map_err(key_error)?,
                ),
            ),
            KeyAlgorithm::P384 => (
                info,
                Inner::Ecdsa(
                    EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_ASN1_SIGNING, der, &*RNG)
                        .map_err(key_error)?,
                ),
            ),
            KeyAlgorithm::Ed25519 => (
                info,
                // openssl writes Ed25519 keys without the public key (PKCS#8 v1).
                Inner::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(key_error)?),
            ),
        };
        Ok(SigningKey {
            algorithm,
            pkcs8: der.to_vec(),
            inner,
        })
    }

    /// Read a `PRIVATE KEY` PEM block.
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        let (label, der) = pem_decode(text)?;
        if label != "PRIVATE KEY" {
            return Err(key_error(format!(
                "expected a PKCS#8 PRIVATE KEY PEM block, found {label}"
            )));
        }
        Self::from_pkcs8(&der)
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn pkcs8_pem(&self) -> String {
        pem_encode("PRIVATE KEY", &self.pkcs8)
    }

    pub fn public_key(&self) -> &[u8] {
        match &self.inner {
            Inner::Ecdsa(k) => k.public_key().as_ref(),
            Inner::Ed25519(k) => k.public_key().as_ref(),
        }
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.inner {
            Inner::Ecdsa(k) => k
                .sign(&*RNG, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| Error::new(ErrorCode::Internal, "signing failed")),
            Inner::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }

    /// The signatureAlgorithm this key produces.
    pub fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        self.algorithm.signature_algorithm()
    }

    /// The same key for rcgen, which signs certificates.
    pub fn rcgen_key(&self) -> Result<rcgen::KeyPair, Error> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.clone());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, self.algorithm.rcgen())
            .map_err(key_error)
    }
}

fn pkcs8_algorithm(der: &[u8]) -> Result<KeyAlgorithm, Error> {
    #[derive(der::Sequence)]
    struct PrivateKeyInfo {
        version: u8,
        algorithm: AlgorithmIdentifierOwned,
        #[allow(dead_code)]
        private_key: der::asn1::OctetString,
        #[asn1(
            context_specific = "0",
            optional = "true",
            tag_mode = "IMPLICIT",
            constructed = "true"
        )]
        #[allow(dead_code)]
        attributes: Option<Any>,
        #[asn1(context_specific = "1", optional = "true", tag_mode = "IMPLICIT")]
        #[allow(dead_code)]
        public_key: Option<der::asn1::BitString>,
    }
    let info = PrivateKeyInfo::from_der(der).map_err(|e| key_error(format!("not PKCS#8: {e}")))?;
    let _ = info.version;
    spki_algorithm(&info.algorithm)
}

/// The key algorithm of a public key (a certificate's SPKI algorithm).
pub fn spki_algorithm(alg: &AlgorithmIdentifierOwned) -> Result<KeyAlgorithm, Error> {
    match alg.oid {
        oid::ED25519 => Ok(KeyAlgorithm::Ed25519),
        oid::EC_PUBLIC_KEY => {
            let curve = alg
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve {
                Some(oid::P256) => Ok(KeyAlgorithm::P256),
                Some(oid::P384) => Ok(KeyAlgorithm::P384),
                other => Err(key_error(format!("unsupported curve {other:?}"))),
            }
        }
        other => Err(Error::new(
            ErrorCode::TrustUnsupportedAlgorithm,
            format!("unsupported key algorithm {other}"),
        )),
    }
}

/// Check `signature` over `message` by the key in `spki`, with `algorithm` as the
/// signatureAlgorithm of the structure that carries it.
pub fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    algorithm: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let key_alg = match spki.algorithm.oid {
        oid::RSA => None,
        _ => Some(spki_algorithm(&spki.algorithm)?),
    };
    let ring_alg: &'static dyn sig::VerificationAlgorithm = match (key_alg, algorithm.oid) {
        (Some(KeyAlgorithm::P256), oid::ECDSA_SHA256) => &sig::ECDSA_P256_SHA256_ASN1,
        (Some(KeyAlgorithm::P256), oid::ECDSA_SHA384) => &sig::ECDSA_P256_SHA384_ASN1,
        (Some(KeyAlgorithm::P384), oid::ECDSA_SHA384) => &sig::ECDSA_P384_SHA384_ASN1,
        (Some(KeyAlgorithm::P384), oid::ECDSA_SHA256) => &sig::ECDSA_P384_SHA256_ASN1,
        (Some(KeyAlgorithm::Ed25519), oid::ED25519) => &sig::ED25519,
        (None, oid::RSA_SHA256) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (None, oid::RSA_SHA384) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (None, oid::RSA_SHA512) => &sig::RSA_PKCS1_2048_8192_SHA512,
        (_, other) => {
            return Err(Error::new(
                ErrorCode::TrustUnsupportedAlgorithm,
                format!("unsupported signature algorithm {other}"),
            ));
        }
    };
    let key = spki.subject_public_key.raw_bytes();
    sig::UnparsedPublicKey::new(ring_alg, key)
        .verify(message, signature)
        .map_err(|_| Error::new(ErrorCode::TrustBadSignature, "signature does not verify"))
}

/// The digest that goes with a signature algorithm (Ed25519 pairs with SHA-256 in CMS).
pub fn digest_for_signature(algorithm: &AlgorithmIdentifierOwned) -> DigestAlgorithm {
    match algorithm.oid {
        oid::ECDSA_SHA384 | oid::RSA_SHA384 => DigestAlgorithm::Sha384,
        oid::RSA_SHA512 => DigestAlgorithm::Sha512,
        _ => DigestAlgorithm::Sha256,
    }
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// Decode the first PEM block of `text`.
pub fn pem_decode(text: &str) -> Result<(String, Vec<u8>), Error> {
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| Error::new(ErrorCode::TrustBadDer, "no PEM block"))?;
    let rest = &text[start..];
    let end_marker = rest
        .find("-----END ")
        .and_then(|i| rest[i + 9..].find("-----").map(|j| i + 9 + j + 5))
        .ok_or_else(|| Error::new(ErrorCode::TrustBadDer, "unterminated PEM block"))?;
    let (label, der) = der::pem::decode_vec(&rest.as_bytes()[..end_marker])
        .map_err(|e| Error::new(ErrorCode::TrustBadDer, format!("PEM: {e}")))?;
    Ok((label.to_owned(), der))
}

/// Every PEM block of `text`, in order.
pub fn pem_decode_all(text: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let end = block
            .find("-----END ")
            .and_then(|i| block[i + 9..].find("-----").map(|j| i + 9 + j + 5))
            .ok_or_else(|| Error::new(ErrorCode::TrustBadDer, "unterminated PEM block"))?;
        out.push(pem_decode(&block[..end])?);
        rest = &block[end..];
    }
    Ok(out)
}

/// DER encoding with the error coded.
pub fn to_der(value: &impl Encode) -> Result<Vec<u8>, Error> {
    value
        .to_der()
        .map_err(|e| Error::new(ErrorCode::Internal, format!("DER encoding: {e}")))
}

/// Random bytes from the system generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    ring::rand::generate::<[u8; N]>(&*RNG)
        .map(|r| r.expose())
        .map_err(|_| Error::new(ErrorCode::Internal, "no randomness"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_signs_and_verifies_through_its_certificate_key() {
        for alg in [
            KeyAlgorithm::P256,
            KeyAlgorithm::P384,
            KeyAlgorithm::Ed25519,
        ] {
            let key = SigningKey::generate(alg).unwrap();
            let again = SigningKey::from_pem(&key.pkcs8_pem()).unwrap();
            assert_eq!(again.public_key(), key.public_key());
            let rc = key.rcgen_key().unwrap();
            let spki = SubjectPublicKeyInfoOwned::from_der(
                &rcgen::PublicKeyData::subject_public_key_info(&rc),
            )
            .unwrap();
            let s = key.sign(b"hello").unwrap();
            verify_signature(&spki, &key.signature_algorithm(), b"hello", &s).unwrap();
            assert!(verify_signature(&spki, &key.signature_algorithm(), b"hellO", &s).is_err());
        }
    }
}
