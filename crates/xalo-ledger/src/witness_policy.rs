//! Which checkpoints a reader accepts: signed by the log and cosigned by at least `k` of
//! `n` known witnesses, so a log cannot show different views to different readers without
//! `k` witnesses colluding.

use std::collections::BTreeSet;

use crate::LedgerError;
use crate::checkpoint::Checkpoint;
use crate::cosignature::CosignatureVerifier;
use crate::note::{Ed25519Verifier, Limits, Note, NoteVerifier, VerifierSet};

/// How far in the future a cosignature's time may be before it stops counting.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// A log, its witnesses and how many of them must cosign.
#[derive(Debug, Clone)]
pub struct WitnessPolicy {
    origin: String,
    log: Ed25519Verifier,
    witnesses: Vec<CosignatureVerifier>,
    threshold: usize,
    limits: Limits,
}

/// A checkpoint that met the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// Each witness whose cosignature counted, with the time it cosigned.
    pub cosigners: Vec<(String, u64)>,
}

impl WitnessPolicy {
    /// A policy for the log with `origin`, signed by `log`, needing `threshold` of
    /// `witnesses`.
    pub fn new(
        origin: impl Into<String>,
        log: Ed25519Verifier,
        witnesses: Vec<CosignatureVerifier>,
        threshold: usize,
    ) -> Result<WitnessPolicy, LedgerError> {
        if threshold > witnesses.len() {
            return Err(LedgerError::WitnessQuorum {
                got: witnesses.len(),
                needed: threshold,
            });
        }
        // One key must count once: a cosignature does not commit to the witness name.
        let keys: BTreeSet<[u8; 32]> = witnesses.iter().map(|w| w.public_key()).collect();
        if keys.len() != witnesses.len() {
            return Err(LedgerError::KeyMalformed(
                "two witnesses share a public key".into(),
            ));
        }
        let policy = WitnessPolicy {
            origin: origin.into(),
            log,
            witnesses,
            threshold,
            limits: Limits::default(),
        };
        policy.verifier_set()?; // rejects ambiguous names and ids now, not per checkpoint
        Ok(policy)
    }

    /// Use other size limits for incoming notes.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    fn verifier_set(&self) -> Result<VerifierSet, LedgerError> {
        let mut set = VerifierSet::new();
        set.add(Box::new(self.log.clone()))?;
        for w in &self.witnesses {
            set.add(Box::new(w.clone()))?;
        }
        Ok(set)
    }

    /// Verify a signed checkpoint. `now` (seconds since the epoch), when given, keeps
    /// cosignatures dated more than [`MAX_CLOCK_SKEW_SECS`] ahead from counting.
    pub fn verify(&self, msg: &[u8], now: Option<u64>) -> Result<CosignedCheckpoint, LedgerError> {
        let note = Note::parse(msg, &self.limits)?;
        let verified = note.verify(&self.verifier_set()?)?;
        if !verified.is_signed_by(self.log.name(), self.log.key_id()) {
            return Err(LedgerError::NoteUnverified);
        }
        let checkpoint = Checkpoint::from_verified_note(&verified)?;
        if checkpoint.origin != self.origin {
            return Err(LedgerError::CheckpointMalformed(format!(
                "origin {:?}, expected {:?}",
                checkpoint.origin, self.origin
            )));
        }
        let mut cosigners = Vec::new();
        for w in &self.witnesses {
            let Some(sig) = verified
                .verified
                .iter()
                .find(|s| s.name == w.name() && s.key_id == w.key_id())
            else {
                continue;
            };
            let time = w.verify_cosignature(verified.text.as_bytes(), &sig.signature)?;
            if now.is_some_and(|now| time > now.saturating_add(MAX_CLOCK_SKEW_SECS)) {
                continue;
            }
            cosigners.push((w.name().to_owned(), time));
        }
        if cosigners.len() < self.threshold {
            return Err(LedgerError::WitnessQuorum {
                got: cosigners.len(),
                needed: self.threshold,
            });
        }
        Ok(CosignedCheckpoint {
            checkpoint,
            cosigners,
        })
    }
}
