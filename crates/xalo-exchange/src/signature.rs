//! Member signatures on messages: the sending member's signing ("seal") key signs the
//! message hash (see [`crate::message`]); the receiver checks the signature with the
//! certificate that came with the message, after checking that certificate belongs to the
//! sending member and is good.

use std::sync::Arc;

use xalo_core::{Error, ErrorCode, MemberId};
use xalo_trust::SigningKey;

use crate::certificate_status::{member_identifier, organisation_identifier};

/// A member's signing key and certificate.
#[derive(Clone)]
pub struct MessageSigner {
    key: Arc<SigningKey>,
    certificate: Arc<Vec<u8>>,
}

impl std::fmt::Debug for MessageSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageSigner")
            .field("certificate", &crate::fingerprint(&self.certificate))
            .finish_non_exhaustive()
    }
}

impl MessageSigner {
    pub fn new(key: SigningKey, certificate: Vec<u8>) -> Result<MessageSigner, Error> {
        let cert = xalo_trust::authority::parse_certificate(&certificate)?;
        let public = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        if public != key.public_key() {
            return Err(Error::new(
                ErrorCode::ExchCertificate,
                "the signing key does not belong to the signing certificate",
            ));
        }
        Ok(MessageSigner {
            key: Arc::new(key),
            certificate: Arc::new(certificate),
        })
    }

    pub fn from_pem(certificate: &str, key: &str) -> Result<MessageSigner, Error> {
        let certs = xalo_trust::authority::read_certificates(certificate.as_bytes())?;
        let cert = certs
            .into_iter()
            .next()
            .ok_or_else(|| Error::new(ErrorCode::ExchCertificate, "no signing certificate"))?;
        Self::new(SigningKey::from_pem(key)?, cert)
    }

    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    pub fn sign(&self, hash: &[u8]) -> Result<Vec<u8>, Error> {
        self.key.sign(hash)
    }
}

/// The signatureAlgorithm a key of this SubjectPublicKeyInfo signs with.
pub(crate) fn algorithm_of(
    spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
) -> Result<x509_cert::spki::AlgorithmIdentifierOwned, Error> {
    use xalo_trust::key::oid;
    let oid = match spki.algorithm.oid {
        oid::ED25519 => oid::ED25519,
        oid::EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
            if curve == Some(oid::P384) {
                oid::ECDSA_SHA384
            } else {
                oid::ECDSA_SHA256
            }
        }
        other => {
            return Err(Error::new(
                ErrorCode::ExchCertificate,
                format!("unsupported key algorithm {other}"),
            ));
        }
    };
    Ok(x509_cert::spki::AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    })
}

/// What checking a message signature needs of a signing certificate, parsed from it once.
#[derive(Debug)]
struct SigningCertificate {
    organisation: Option<String>,
    spki: x509_cert::spki::SubjectPublicKeyInfoOwned,
    algorithm: x509_cert::spki::AlgorithmIdentifierOwned,
}

impl SigningCertificate {
    fn parse(der: &[u8]) -> Result<SigningCertificate, Error> {
        let cert = xalo_trust::authority::parse_certificate(der)
            .map_err(|e| Error::new(ErrorCode::ExchCertificate, e.message))?;
        let organisation = organisation_identifier(&cert);
        let spki = cert.tbs_certificate.subject_public_key_info;
        Ok(SigningCertificate {
            organisation,
            algorithm: algorithm_of(&spki)?,
            spki,
        })
    }

    /// Check that this is `member`'s signing certificate and that it signed `hash`.
    fn verify(&self, member: &MemberId, hash: &[u8], signature: &[u8]) -> Result<(), Error> {
        let expected = member_identifier(member);
        if self.organisation.as_deref() != Some(expected.as_str()) {
            return Err(Error::new(
                ErrorCode::ExchMessageSignature,
                format!(
                    "the signing certificate is not {member}'s (expected organisation identifier {expected})"
                ),
            ));
        }
        xalo_trust::key::verify_signature(&self.spki, &self.algorithm, hash, signature).map_err(
            |_| {
                Error::new(
                    ErrorCode::ExchMessageSignature,
                    format!("the message signature of {member} does not verify"),
                )
            },
        )
    }
}

/// Where a message's hash sits in the batch whose root was signed: leaf `index` of a tree
/// of `size` leaves (RFC 9162 hashing), with the inclusion path, and when the batch was
/// signed (the signature covers the time, so a receiver can refuse an old message and
/// need remember the messages it accepted only for a while).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchProof {
    pub index: u64,
    pub size: u64,
    /// Unix time in milliseconds.
    pub signed_ms: i64,
    pub path: Vec<xalo_ledger::Hash>,
}

impl BatchProof {
    /// `index/size/signed_ms/hash,hash,…` (hashes base64), the `X-Xalo-Signature-Batch`
    /// header.
    pub fn header(&self) -> String {
        let path: Vec<String> = self.path.iter().map(|h| h.to_base64()).collect();
        format!(
            "{}/{}/{}/{}",
            self.index,
            self.size,
            self.signed_ms,
            path.join(",")
        )
    }

    pub fn parse(text: &str) -> Result<BatchProof, Error> {
        let bad = || {
            Error::new(
                ErrorCode::ExchMessageSignature,
                "malformed signature batch proof",
            )
        };
        let mut parts = text.splitn(4, '/');
        let index = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let size = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let signed_ms = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let path = match parts.next() {
            Some("") | None => Vec::new(),
            Some(p) => p
                .split(',')
                .map(|h| xalo_ledger::Hash::from_base64(h).map_err(|_| bad()))
                .collect::<Result<_, _>>()?,
        };
        if path.len() > 64 {
            return Err(bad());
        }
        Ok(BatchProof {
            index,
            size,
            signed_ms,
            path,
        })
    }
}

/// A signature over a batch root, and the proof that a message's hash is in the batch.
#[derive(Debug, Clone)]
pub struct Signed {
    pub signature: Arc<Vec<u8>>,
    pub proof: BatchProof,
}

/// What is signed for a batch: a label, the time of signing (milliseconds), the number of
/// messages (so each message has one position: a leaf can otherwise be shown at two, in
/// trees of different sizes), both big-endian, then the root.
fn batch_statement(root: &xalo_ledger::Hash, signed_ms: i64, size: u64) -> Vec<u8> {
    let mut out = b"xalo-exchange-batch/2\n".to_vec();
    out.extend_from_slice(&signed_ms.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(root.as_bytes());
    out
}

use xalo_core::unix_now_ms as now_ms;

fn sign_batch(
    signer: &MessageSigner,
    hashes: &[Vec<u8>],
    signed_ms: i64,
) -> Result<(Arc<Vec<u8>>, Vec<BatchProof>), Error> {
    let tree = xalo_ledger::MemoryTree::from_entries(hashes);
    let size = tree.size();
    let signature = Arc::new(signer.sign(&batch_statement(&tree.root(), signed_ms, size))?);
    let proofs = (0..size)
        .map(|index| {
            Ok(BatchProof {
                index,
                size,
                signed_ms,
                path: xalo_ledger::proof::inclusion_proof(&tree, index, size)
                    .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok((signature, proofs))
}

impl MessageSigner {
    /// Sign one message on its own (a batch of one).
    pub fn sign_single(&self, hash: &[u8]) -> Result<Signed, Error> {
        self.sign_single_at(hash, now_ms())
    }

    /// Sign one message on its own, saying it was signed at `signed_ms`.
    pub fn sign_single_at(&self, hash: &[u8], signed_ms: i64) -> Result<Signed, Error> {
        let (signature, mut proofs) = sign_batch(self, &[hash.to_vec()], signed_ms)?;
        let proof = proofs
            .pop()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "empty batch"))?;
        Ok(Signed { signature, proof })
    }
}

type Pending = (Vec<u8>, tokio::sync::oneshot::Sender<Result<Signed, Error>>);

/// Signs the hashes of all messages waiting while the previous batch was signed with one
/// signature over their hash tree, so that under load one signature (and, at the
/// receiving gateway, one verification) serves many messages.
///
/// No task of its own: the caller that finds no batch being signed signs the waiting
/// hashes itself, its own among them, and the others are answered as they wait for their
/// turn. An idle gateway thus signs a lone message where it is, with no hand-off to
/// another thread and back (two thread wake-ups, on a request's critical path).
#[derive(Clone, Debug)]
pub struct BatchSigner {
    inner: Arc<SignerInner>,
}

#[derive(Debug)]
struct SignerInner {
    signer: MessageSigner,
    waiting: std::sync::Mutex<Vec<Pending>>,
    /// Held by the caller that is signing a batch.
    turn: tokio::sync::Mutex<()>,
    /// The messages the gateway is working on, which may join a batch (unknown: gather).
    in_flight: Option<xalo_core::batch::InFlight>,
    batching: crate::metrics::Batching,
}

/// Most messages in one batch (the proof grows with its logarithm).
const MAX_BATCH: usize = 256;

/// Times the signer lets ready tasks run before it cuts a batch (each costs a turn of the
/// scheduler; see the message log's `GATHER_TURNS`, measured with this).
const MAX_YIELDS: usize = 2;

impl BatchSigner {
    pub fn new(signer: MessageSigner) -> BatchSigner {
        Self::with_in_flight(signer, None)
    }

    /// A signer that gathers a batch only while more of `in_flight` are under way than
    /// are waiting to be signed.
    pub fn with_in_flight(
        signer: MessageSigner,
        in_flight: Option<xalo_core::batch::InFlight>,
    ) -> BatchSigner {
        BatchSigner {
            inner: Arc::new(SignerInner {
                signer,
                waiting: std::sync::Mutex::new(Vec::new()),
                turn: tokio::sync::Mutex::new(()),
                in_flight,
                batching: Default::default(),
            }),
        }
    }

    pub async fn sign(&self, hash: &[u8]) -> Result<Signed, Error> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.waiting()?.push((hash.to_vec(), reply));
        loop {
            // Answered by a caller that signed a batch with ours in it, or our turn.
            let turn = tokio::select! {
                biased;
                signed = &mut answer => return signed.map_err(|_| stopped())?,
                turn = self.inner.turn.lock() => turn,
            };
            if let Ok(signed) = answer.try_recv() {
                return signed;
            }
            self.sign_waiting().await?;
            drop(turn);
        }
    }

    /// Batches signed and the messages in them.
    pub fn batching(&self) -> &crate::metrics::Batching {
        &self.inner.batching
    }

    fn waiting(&self) -> Result<std::sync::MutexGuard<'_, Vec<Pending>>, Error> {
        self.inner
            .waiting
            .lock()
            .map_err(|_| Error::new(ErrorCode::Internal, "the message signer failed"))
    }

    /// Sign the hashes waiting now, after letting the tasks ready to run add theirs (see
    /// `xalo_core::batch::gather`).
    async fn sign_waiting(&self) -> Result<(), Error> {
        let waiting = self.waiting()?.len();
        let turns = xalo_core::batch::turns(self.inner.in_flight.as_ref(), waiting, MAX_YIELDS);
        xalo_core::batch::gather(turns, MAX_BATCH, || self.waiting().map(|w| w.len())).await?;
        let batch: Vec<Pending> = {
            let mut waiting = self.waiting()?;
            let n = waiting.len().min(MAX_BATCH);
            waiting.drain(..n).collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let hashes: Vec<Vec<u8>> = batch.iter().map(|(h, _)| h.clone()).collect();
        match sign_batch(&self.inner.signer, &hashes, now_ms()) {
            Ok((signature, proofs)) => {
                self.inner.batching.record(batch.len());
                for ((_, reply), proof) in batch.into_iter().zip(proofs) {
                    let _ = reply.send(Ok(Signed {
                        signature: signature.clone(),
                        proof,
                    }));
                }
            }
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        Ok(())
    }
}

fn stopped() -> Error {
    Error::new(ErrorCode::Internal, "the message signer has stopped")
}

/// Batch signatures verified already, so a batch's signature is checked once however
/// many of its messages arrive.
#[derive(Debug, Default)]
pub struct VerifiedSignatures {
    seen: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
    /// Signing certificates parsed already, by their DER: a member signs every batch with
    /// the same one.
    certificates: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Arc<SigningCertificate>>>,
    /// Signatures verified (batches) and the messages that checked good.
    batching: crate::metrics::Batching,
}

/// Bound [`VerifiedSignatures`]' certificates (a nation's members, each with a few).
const CERTIFICATES_KEPT: usize = 10_000;

impl VerifiedSignatures {
    fn key(
        certificate: &[u8],
        member: &MemberId,
        root: &xalo_ledger::Hash,
        signed_ms: i64,
        size: u64,
        signature: &[u8],
    ) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            certificate,
            member.to_string().as_bytes(),
            root.as_bytes(),
            &signed_ms.to_be_bytes(),
            &size.to_be_bytes(),
            signature,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    /// Check that `hash` is in a batch `member` signed with `certificate_der`.
    pub fn verify(
        &self,
        certificate_der: &[u8],
        member: &MemberId,
        hash: &[u8],
        signature: &[u8],
        proof: &BatchProof,
    ) -> Result<(), Error> {
        let leaf = xalo_ledger::merkle::leaf_hash(hash);
        let root = xalo_ledger::proof::root_from_inclusion_proof(
            proof.index,
            proof.size,
            &leaf,
            &proof.path,
        )
        .map_err(|_| {
            Error::new(
                ErrorCode::ExchMessageSignature,
                format!("the message of {member} is not in the signed batch"),
            )
        })?;
        let key = Self::key(
            certificate_der,
            member,
            &root,
            proof.signed_ms,
            proof.size,
            signature,
        );
        if let Ok(seen) = self.seen.lock()
            && seen
                .get(&key)
                .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(300))
        {
            self.batching.items.inc();
            return Ok(());
        }
        self.certificate(certificate_der)?.verify(
            member,
            &batch_statement(&root, proof.signed_ms, proof.size),
            signature,
        )?;
        self.batching.record(1);
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= 100_000 {
                seen.clear();
            }
            seen.insert(key, std::time::Instant::now());
        }
        Ok(())
    }

    /// Signatures verified and the messages checked.
    pub fn batching(&self) -> &crate::metrics::Batching {
        &self.batching
    }

    fn certificate(&self, der: &[u8]) -> Result<Arc<SigningCertificate>, Error> {
        if let Ok(known) = self.certificates.lock()
            && let Some(c) = known.get(der)
        {
            return Ok(c.clone());
        }
        let parsed = Arc::new(SigningCertificate::parse(der)?);
        if let Ok(mut known) = self.certificates.lock() {
            if known.len() >= CERTIFICATES_KEPT {
                known.clear();
            }
            known.insert(der.to_vec(), parsed.clone());
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn signer() -> (MessageSigner, MemberId) {
        let member: MemberId = "VN/GOV/000001".parse().unwrap();
        let key = SigningKey::generate(xalo_trust::KeyAlgorithm::P256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![2, 5, 4, 97]),
            member_identifier(&member),
        );
        let cert = params.self_signed(&key.rcgen_key().unwrap()).unwrap();
        (
            MessageSigner::new(key, cert.der().to_vec()).unwrap(),
            member,
        )
    }

    #[test]
    fn every_message_of_a_batch_verifies_and_nothing_else() {
        let (signer, member) = signer();
        let hashes: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 64]).collect();
        let (signature, proofs) = sign_batch(&signer, &hashes, now_ms()).unwrap();
        let verified = VerifiedSignatures::default();
        for (h, p) in hashes.iter().zip(&proofs) {
            let p = BatchProof::parse(&p.header()).unwrap();
            verified
                .verify(signer.certificate(), &member, h, &signature, &p)
                .unwrap();
        }
        // Another message, another position, another member: refused.
        assert!(
            verified
                .verify(
                    signer.certificate(),
                    &member,
                    &[9; 64],
                    &signature,
                    &proofs[0]
                )
                .is_err()
        );
        assert!(
            verified
                .verify(
                    signer.certificate(),
                    &member,
                    &hashes[0],
                    &signature,
                    &proofs[1]
                )
                .is_err()
        );
        // The last leaf of three, shown as the second of two (same path): the size is signed.
        let three: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 64]).collect();
        let (signature3, proofs3) = sign_batch(&signer, &three, now_ms()).unwrap();
        let last_of_three = |proof: &BatchProof| {
            verified.verify(signer.certificate(), &member, &three[2], &signature3, proof)
        };
        last_of_three(&proofs3[2]).unwrap();
        let moved = BatchProof {
            index: 1,
            size: 2,
            ..proofs3[2].clone()
        };
        assert!(last_of_three(&moved).is_err());
        let other: MemberId = "VN/GOV/000002".parse().unwrap();
        let e = verified
            .verify(
                signer.certificate(),
                &other,
                &hashes[0],
                &signature,
                &proofs[0],
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ExchMessageSignature);
        let single = signer.sign_single(&hashes[2]).unwrap();
        verified
            .verify(
                signer.certificate(),
                &member,
                &hashes[2],
                &single.signature,
                &single.proof,
            )
            .unwrap();
    }

    /// A caller that gives up while it signs (its client hung up) leaves the turn to the
    /// others: their messages are still signed.
    #[tokio::test]
    async fn a_signer_that_gives_up_leaves_the_others_answered() {
        let (signer, member) = signer();
        let batch = BatchSigner::new(signer.clone());
        let mut first = Box::pin(batch.sign(&[1; 64]));
        // It takes the turn and lets other tasks add their messages.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        let second = tokio::spawn({
            let batch = batch.clone();
            async move { batch.sign(&[2; 64]).await }
        });
        tokio::task::yield_now().await;
        drop(first);
        let signed = second.await.unwrap().unwrap();
        VerifiedSignatures::default()
            .verify(
                signer.certificate(),
                &member,
                &[2; 64],
                &signed.signature,
                &signed.proof,
            )
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_messages_share_a_batch_signature() {
        let (signer, member) = signer();
        let batch = BatchSigner::new(signer.clone());
        let calls: Vec<_> = (0..32u8)
            .map(|i| {
                let batch = batch.clone();
                tokio::spawn(async move { (i, batch.sign(&[i; 64]).await.unwrap()) })
            })
            .collect();
        let mut signatures = std::collections::HashSet::new();
        let verified = VerifiedSignatures::default();
        for call in calls {
            let (i, signed) = call.await.unwrap();
            verified
                .verify(
                    signer.certificate(),
                    &member,
                    &[i; 64],
                    &signed.signature,
                    &signed.proof,
                )
                .unwrap();
            signatures.insert(signed.signature.as_ref().clone());
        }
        // Messages that were ready together were signed together.
        assert!(signatures.len() < 32, "{} signatures", signatures.len());
    }
}
