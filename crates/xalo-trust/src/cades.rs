//! CMS signed data with the CAdES attributes: signing-certificate-v2, signing time,
//! signature time-stamp (CAdES-T) and embedded revocation values (long-term validation).
//! The time-stamping unit signs its tokens with the same code.

use std::time::SystemTime;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier as Oid, OctetString, SetOfVec};
use der::{Any, Decode, Encode, Sequence};
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::time::Time;
use xalo_core::{Error, ErrorCode};

use crate::authority::{Signer, parse_certificate};
use crate::key::{
    DigestAlgorithm, KeyAlgorithm, digest_for_signature, spki_algorithm, to_der, verify_signature,
};

pub const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
pub const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
pub const ID_CT_TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");
pub const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
pub const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
pub const SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");
pub const SIGNING_CERTIFICATE_V2: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.47");
pub const SIGNATURE_TIME_STAMP: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.14");
pub const REVOCATION_VALUES: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.24");

/// Decode an attribute value (or any ANY) as `T`, whatever its tag.
pub fn decode_any<T: for<'a> Decode<'a>>(any: &Any) -> Option<T> {
    T::from_der(&any.to_der().ok()?).ok()
}

/// Wrap an encodable value as ANY.
pub fn to_any(value: &impl Encode) -> Result<Any, Error> {
    Any::from_der(&to_der(value)?).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
}

/// ESSCertIDv2 (RFC 5035).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct EssCertIdV2 {
    /// Absent means SHA-256 (the DEFAULT, which DER omits).
    #[asn1(optional = "true")]
    pub hash_algorithm: Option<AlgorithmIdentifierOwned>,
    pub cert_hash: OctetString,
    #[asn1(optional = "true")]
    pub issuer_serial: Option<IssuerSerial>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct IssuerSerial {
    pub issuer: Vec<GeneralName>,
    pub serial_number: SerialNumber,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SigningCertificateV2 {
    pub certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    pub policies: Option<Any>,
}

/// RevocationValues (ETSI TS 101 733): only the OCSP part is used.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct RevocationValues {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub crl_vals: Option<Vec<Any>>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub ocsp_vals: Option<Vec<x509_ocsp::BasicOcspResponse>>,
}

fn der_error(what: &str) -> impl Fn(der::Error) -> Error + '_ {
    move |e| Error::new(ErrorCode::TrustBadDer, format!("{what}: {e}"))
}

pub fn attribute(oid: Oid, value: &impl Encode) -> Result<Attribute, Error> {
    let any = to_any(value)?;
    let values = SetOfVec::try_from(vec![any])
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    Ok(Attribute { oid, values })
}

fn set_of<T: der::DerOrd>(items: Vec<T>) -> Result<SetOfVec<T>, Error> {
    SetOfVec::try_from(items).map_err(|e| Error::new(ErrorCode::Internal, format!("SET OF: {e}")))
}

/// What to sign, and how.
pub struct SignRequest<'a> {
    pub content_type: Oid,
    /// The content; its digest goes into the message-digest attribute.
    pub content: &'a [u8],
    /// Put the content inside (a time-stamp token) or leave it detached (a document).
    pub attach: bool,
    pub signer: &'a Signer,
    /// Certificates to carry besides the signer's (its chain, responders).
    pub extra_certificates: &'a [Vec<u8>],
    pub signing_time: Option<SystemTime>,
}

/// Sign: the signed attributes are content type, message digest, signing-certificate-v2
/// and, if given, signing time.
pub fn sign(request: &SignRequest<'_>) -> Result<SignedData, Error> {
    let key = &request.signer.key;
    let unsigned = prepare(&PrepareRequest {
        content_type: request.content_type,
        content: request.content,
        attach: request.attach,
        certificate_der: &request.signer.certificate_der,
        algorithm: key.algorithm(),
        extra_certificates: request.extra_certificates,
        signing_time: request.signing_time,
    })?;
    let signature = key.sign(&unsigned.to_be_signed()?)?;
    unsigned.with_signature(signature)
}

/// What to sign when the key is elsewhere (a remote signing service, a phone's SIM): the
/// signer is known by its certificate and key algorithm only.
pub struct PrepareRequest<'a> {
    pub content_type: Oid,
    pub content: &'a [u8],
    pub attach: bool,
    pub certificate_der: &'a [u8],
    pub algorithm: KeyAlgorithm,
    pub extra_certificates: &'a [Vec<u8>],
    pub signing_time: Option<SystemTime>,
}

/// A signed data whose signed attributes are fixed and whose signature value is still to
/// come: the signer signs [`Unsigned::to_be_signed`] (or, signing a hash, its
/// [`Unsigned::digest`]) and the value goes back in with [`Unsigned::with_signature`].
#[derive(Debug, Clone)]
pub struct Unsigned {
    signed_data: SignedData,
    algorithm: KeyAlgorithm,
}

/// Build the signed data around `request`, with an empty signature value.
pub fn prepare(request: &PrepareRequest<'_>) -> Result<Unsigned, Error> {
    let digest = request.algorithm.digest();
    let cert = parse_certificate(request.certificate_der)?;
    let cert_hash = DigestAlgorithm::Sha256.digest(request.certificate_der);
    let ess = SigningCertificateV2 {
        certs: vec![EssCertIdV2 {
            hash_algorithm: None,
            cert_hash: OctetString::new(cert_hash).map_err(der_error("hash"))?,
            issuer_serial: Some(IssuerSerial {
                issuer: vec![GeneralName::DirectoryName(
                    cert.tbs_certificate.issuer.clone(),
                )],
                serial_number: cert.tbs_certificate.serial_number.clone(),
            }),
        }],
        policies: None,
    };
    let mut attrs = vec![
        attribute(CONTENT_TYPE, &request.content_type)?,
        attribute(
            MESSAGE_DIGEST,
            &OctetString::new(digest.digest(request.content)).map_err(der_error("digest"))?,
        )?,
        attribute(SIGNING_CERTIFICATE_V2, &ess)?,
    ];
    if let Some(t) = request.signing_time {
        let time = Time::try_from(t).map_err(der_error("signing time"))?;
        attrs.push(attribute(SIGNING_TIME, &time)?);
    }
    let signed_attrs = set_of(attrs)?;
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: digest.identifier(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: request.algorithm.signature_algorithm(),
        signature: OctetString::new(Vec::new()).map_err(der_error("signature"))?,
        unsigned_attrs: None,
    };
    let mut certs = vec![CertificateChoices::Certificate(cert)];
    for der in request.extra_certificates {
        let c = parse_certificate(der)?;
        if !certs
            .iter()
            .any(|x| matches!(x, CertificateChoices::Certificate(y) if *y == c))
        {
            certs.push(CertificateChoices::Certificate(c));
        }
    }
    let econtent = if request.attach {
        Some(to_any(
            &OctetString::new(request.content).map_err(der_error("content"))?,
        )?)
    } else {
        None
    };
    Ok(Unsigned {
        signed_data: SignedData {
            // RFC 5652 5.1: v3 when the content type is not id-data.
            version: if request.content_type == ID_DATA {
                CmsVersion::V1
            } else {
                CmsVersion::V3
            },
            digest_algorithms: set_of(vec![digest.identifier()])?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: request.content_type,
                econtent,
            },
            certificates: Some(CertificateSet(set_of(certs)?)),
            crls: None,
            signer_infos: SignerInfos(set_of(vec![signer_info])?),
        },
        algorithm: request.algorithm,
    })
}

/// The certificate the first signer names (a SET OF is sorted, so not the first one).
fn signer_certificate(sd: &SignedData) -> Result<Vec<u8>, Error> {
    let missing = || Error::new(ErrorCode::TrustBadDer, "no signer certificate");
    let si = sd.signer_infos.0.iter().next().ok_or_else(missing)?;
    let SignerIdentifier::IssuerAndSerialNumber(ias) = &si.sid else {
        return Err(missing());
    };
    certificates(sd)
        .into_iter()
        .find(|d| {
            parse_certificate(d).is_ok_and(|c| {
                c.tbs_certificate.serial_number == ias.serial_number
                    && c.tbs_certificate.issuer == ias.issuer
            })
        })
        .ok_or_else(missing)
}

impl Unsigned {
    fn signer_info(&self) -> Result<&SignerInfo, Error> {
        self.signed_data
            .signer_infos
            .0
            .iter()
            .next()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no signer"))
    }

    /// The bytes the signer signs: the DER of the signed attributes (RFC 5652 5.4).
    pub fn to_be_signed(&self) -> Result<Vec<u8>, Error> {
        let attrs = self
            .signer_info()?
            .signed_attrs
            .as_ref()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no signed attributes"))?;
        to_der(attrs)
    }

    /// The hash of [`Unsigned::to_be_signed`], for signers that sign a hash (Mobile-ID).
    pub fn digest(&self) -> Result<Vec<u8>, Error> {
        Ok(self.algorithm.digest().digest(&self.to_be_signed()?))
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The signer's certificate (DER).
    pub fn certificate_der(&self) -> Result<Vec<u8>, Error> {
        signer_certificate(&self.signed_data)
    }

    /// Check that `signature` (DER for ECDSA) is the signer's over the signed attributes,
    /// as a value from outside must be before it goes into a document.
    pub fn check(&self, signature: &[u8]) -> Result<(), Error> {
        let cert = parse_certificate(&self.certificate_der()?)?;
        verify_signature(
            &cert.tbs_certificate.subject_public_key_info,
            &self.algorithm.signature_algorithm(),
            &self.to_be_signed()?,
            signature,
        )
        .map_err(|_| {
            Error::new(
                ErrorCode::TrustBadSignature,
                "the signature value does not verify with the signer's certificate",
            )
        })
    }

    /// The finished signed data.
    pub fn with_signature(mut self, signature: Vec<u8>) -> Result<SignedData, Error> {
        let mut infos = std::mem::take(&mut self.signed_data.signer_infos.0).into_vec();
        let first = infos
            .first_mut()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no signer"))?;
        first.signature = OctetString::new(signature).map_err(der_error("signature"))?;
        self.signed_data.signer_infos = SignerInfos(set_of(infos)?);
        Ok(self.signed_data)
    }

    /// As DER (a ContentInfo with an empty signature value), to keep while the signer
    /// works.
    pub fn to_der(&self) -> Result<Vec<u8>, Error> {
        encode(&self.signed_data)
    }

    /// Read back what [`Unsigned::to_der`] wrote.
    pub fn from_der(der: &[u8]) -> Result<Unsigned, Error> {
        let signed_data = decode(der)?;
        let cert = parse_certificate(&signer_certificate(&signed_data)?)?;
        let algorithm = spki_algorithm(&cert.tbs_certificate.subject_public_key_info.algorithm)?;
        Ok(Unsigned {
            signed_data,
            algorithm,
        })
    }
}

/// Add certificates to a signed data (chains of the time-stamp and OCSP responders).
pub fn add_certificates(sd: &mut SignedData, extra: &[Vec<u8>]) -> Result<(), Error> {
    let mut certs: Vec<CertificateChoices> = sd
        .certificates
        .take()
        .map(|c| c.0.into_vec())
        .unwrap_or_default();
    for der in extra {
        let c = parse_certificate(der)?;
        if !certs
            .iter()
            .any(|x| matches!(x, CertificateChoices::Certificate(y) if *y == c))
        {
            certs.push(CertificateChoices::Certificate(c));
        }
    }
    sd.certificates = Some(CertificateSet(set_of(certs)?));
    Ok(())
}

/// Replace the first signer's unsigned attributes.
pub fn set_unsigned_attributes(sd: &mut SignedData, attrs: Vec<Attribute>) -> Result<(), Error> {
    let mut infos = std::mem::take(&mut sd.signer_infos.0).into_vec();
    let first = infos
        .first_mut()
        .ok_or_else(|| Error::new(ErrorCode::Internal, "no signer"))?;
    first.unsigned_attrs = if attrs.is_empty() {
        None
    } else {
        Some(set_of(attrs)?)
    };
    sd.signer_infos = SignerInfos(set_of(infos)?);
    Ok(())
}

/// The ContentInfo DER of a signed data.
pub fn encode(sd: &SignedData) -> Result<Vec<u8>, Error> {
    let content = to_any(sd)?;
    to_der(&ContentInfo {
        content_type: ID_SIGNED_DATA,
        content,
    })
}

/// Parse a ContentInfo holding signed data.
pub fn decode(der: &[u8]) -> Result<SignedData, Error> {
    let ci = ContentInfo::from_der(der).map_err(der_error("CMS ContentInfo"))?;
    content_signed_data(&ci)
}

pub fn content_signed_data(ci: &ContentInfo) -> Result<SignedData, Error> {
    if ci.content_type != ID_SIGNED_DATA {
        return Err(Error::new(
            ErrorCode::TrustBadDer,
            format!("CMS content is {}, not signed data", ci.content_type),
        ));
    }
    SignedData::from_der(&to_der(&ci.content)?).map_err(der_error("CMS SignedData"))
}

/// The certificates a signed data carries, as DER.
pub fn certificates(sd: &SignedData) -> Vec<Vec<u8>> {
    sd.certificates
        .iter()
        .flat_map(|c| c.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => c.to_der().ok(),
            CertificateChoices::Other(_) => None,
        })
        .collect()
}

/// The attached content (eContent OCTET STRING), if any.
pub fn attached_content(sd: &SignedData) -> Option<Vec<u8>> {
    sd.encap_content_info
        .econtent
        .as_ref()
        .and_then(decode_any::<OctetString>)
        .map(|o| o.into_bytes())
}

/// One attribute's first value.
pub fn find_attribute(attrs: Option<&SetOfVec<Attribute>>, oid: Oid) -> Option<&Any> {
    attrs?
        .iter()
        .find(|a| a.oid == oid)
        .and_then(|a| a.values.iter().next())
}

/// A signer whose signature verified.
#[derive(Debug, Clone)]
pub struct VerifiedSigner {
    pub certificate: Certificate,
    pub certificate_der: Vec<u8>,
    pub signing_time: Option<SystemTime>,
    /// The signature value, which a signature time-stamp covers.
    pub signature: Vec<u8>,
    pub signer_info: SignerInfo,
}

/// Check the first signer of `sd` over `content` (the attached content if `None`): the
/// message digest, the signature, and that signing-certificate-v2 names the signer's
/// certificate.
pub fn verify(sd: &SignedData, content: Option<&[u8]>) -> Result<VerifiedSigner, Error> {
    let bad = |m: String| Error::new(ErrorCode::TrustBadSignature, m);
    let si = sd
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| bad("no signer".into()))?;
    let attached;
    let content = match content {
        Some(c) => c,
        None => {
            attached = attached_content(sd).ok_or_else(|| bad("no content".into()))?;
            &attached
        }
    };
    let SignerIdentifier::IssuerAndSerialNumber(ias) = &si.sid else {
        return Err(bad(
            "signer identified by key identifier, not supported".into()
        ));
    };
    let certs = certificates(sd);
    let (cert, cert_der) = certs
        .iter()
        .filter_map(|d| parse_certificate(d).ok().map(|c| (c, d.clone())))
        .find(|(c, _)| {
            c.tbs_certificate.serial_number == ias.serial_number
                && c.tbs_certificate.issuer == ias.issuer
        })
        .ok_or_else(|| bad("the signer's certificate is not in the signature".into()))?;
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("no signed attributes".into()))?;
    let digest_alg = DigestAlgorithm::from_oid(&si.digest_alg.oid).ok_or_else(|| {
        Error::new(
            ErrorCode::TrustUnsupportedAlgorithm,
            format!("digest {}", si.digest_alg.oid),
        )
    })?;
    let md = find_attribute(Some(attrs), MESSAGE_DIGEST)
        .and_then(decode_any::<OctetString>)
        .ok_or_else(|| bad("no message digest".into()))?;
    if md.as_bytes() != digest_alg.digest(content).as_slice() {
        return Err(bad(
            "the content does not match the signed message digest".into()
        ));
    }
    let ct = find_attribute(Some(attrs), CONTENT_TYPE).and_then(decode_any::<Oid>);
    if ct != Some(sd.encap_content_info.econtent_type) {
        return Err(bad("content-type attribute does not match".into()));
    }
    // Some signers name the key type (id-ecPublicKey) instead of the signature algorithm.
    let mut sig_alg = si.signature_algorithm.clone();
    if sig_alg.oid == crate::key::oid::EC_PUBLIC_KEY {
        sig_alg = AlgorithmIdentifierOwned {
            oid: match digest_alg {
                DigestAlgorithm::Sha384 => crate::key::oid::ECDSA_SHA384,
                _ => crate::key::oid::ECDSA_SHA256,
            },
            parameters: None,
        };
    }
    let _ = digest_for_signature(&sig_alg);
    verify_signature(
        &cert.tbs_certificate.subject_public_key_info,
        &sig_alg,
        &to_der(attrs)?,
        si.signature.as_bytes(),
    )?;
    if let Some(ess) = find_attribute(Some(attrs), SIGNING_CERTIFICATE_V2)
        .and_then(decode_any::<SigningCertificateV2>)
    {
        let first = ess
            .certs
            .first()
            .ok_or_else(|| bad("empty signing-certificate-v2".into()))?;
        let alg = match &first.hash_algorithm {
            Some(a) => {
                DigestAlgorithm::from_oid(&a.oid).ok_or_else(|| bad(format!("hash {}", a.oid)))?
            }
            None => DigestAlgorithm::Sha256,
        };
        if first.cert_hash.as_bytes() != alg.digest(&cert_der).as_slice() {
            return Err(bad(
                "signing-certificate-v2 names another certificate".into()
            ));
        }
    }
    let signing_time = find_attribute(Some(attrs), SIGNING_TIME)
        .and_then(decode_any::<Time>)
        .map(|t| t.to_system_time());
    Ok(VerifiedSigner {
        certificate: cert,
        certificate_der: cert_der,
        signing_time,
        signature: si.signature.as_bytes().to_vec(),
        signer_info: si.clone(),
    })
}
