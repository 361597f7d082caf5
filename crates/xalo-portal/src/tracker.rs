//! The data tracker: every read of the signed-in person's data in the population register
//! (when, by which agency's system, which service, for what purpose), each with its proof
//! of inclusion in the ledger, checked here.
//!
//! The records come only through the exchange: the portal asks the register's
//! `persons/{code}/accesses` service through its own security gateway, on behalf of the
//! person (`X-Road-UserId`), which the register answers only when that is the person the
//! records are about. The portal asks only for the signed-in person ([`for_person`] takes
//! the session's person, never a code from the request).
//!
//! The register anchors each record in the ledger as a salted commitment
//! (`xalo_registry::access_log`). For each record the portal recomputes the entry from the
//! record and its salt, fetches the inclusion proof for the record's index in the tree of
//! the latest checkpoint, whose signature it checks with the configured log key, and
//! verifies the proof against the signed root.

use serde::{Deserialize, Serialize};
use xalo_core::{Error, ErrorCode, PersonalCode};
use xalo_ledger::checkpoint::Checkpoint;
use xalo_ledger::client::LedgerClient;
use xalo_ledger::{CosignatureVerifier, Ed25519Verifier, WitnessPolicy};
use xalo_registry::access_log::Access;

use crate::exchange::{Exchange, Register};

/// The register whose service an access record names: the business register's services
/// (`enterprises…`) record there too when they read a person (who represents what).
pub fn register_of(service: &str) -> Register {
    if service.starts_with("enterprises") {
        Register::Business
    } else {
        Register::Population
    }
}

/// `ledger` in `[roles.portal]`: where proofs come from and the key that signs checkpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    pub url: String,
    /// The log's verifier key (`origin+hash+key`), as the ledger's `/key` serves it.
    pub key: String,
    /// Witnesses' cosignature verifier keys, and how many must have cosigned a checkpoint
    /// before the portal believes it (none by default).
    #[serde(default)]
    pub witnesses: Vec<String>,
    #[serde(default)]
    pub quorum: usize,
}

/// A checked client of the ledger.
#[derive(Clone)]
pub struct Ledger {
    client: LedgerClient,
    policy: std::sync::Arc<WitnessPolicy>,
}

impl Ledger {
    pub fn new(s: &LedgerSettings) -> Result<Ledger, Error> {
        let key = s.key.trim();
        let log = Ed25519Verifier::from_verifier_key(key)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("portal ledger key: {e}")))?;
        let origin = key.split('+').next().unwrap_or_default().to_owned();
        let witnesses = s
            .witnesses
            .iter()
            .map(|k| CosignatureVerifier::from_verifier_key(k.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::new(
                    ErrorCode::ConfigInvalid,
                    format!("portal ledger witness key: {e}"),
                )
            })?;
        let policy = WitnessPolicy::new(origin, log, witnesses, s.quorum)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("portal ledger key: {e}")))?;
        Ok(Ledger {
            client: LedgerClient::new(&s.url)?,
            policy: std::sync::Arc::new(policy),
        })
    }

    /// The latest checkpoint, its signature checked.
    pub async fn checkpoint(&self) -> Result<Checkpoint, Error> {
        let cosigned = self
            .client
            .verified_checkpoint(&self.policy)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorCode::TrackerProof,
                    format!("the ledger's checkpoint: {e}"),
                )
            })?;
        Ok(cosigned.checkpoint)
    }
}

/// What the proof of a record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Proof {
    /// Included at `index` in the tree of `tree_size` whose signed root is `root`.
    Verified {
        index: u64,
        tree_size: u64,
        root: String,
    },
    /// Not yet anchored, or anchored after the latest checkpoint: shown as pending.
    Pending,
    /// The proof does not verify: shown as a warning, never hidden.
    Failed { reason: String },
}

/// One row of the tracker.
#[derive(Debug, Clone, Serialize)]
pub struct TrackedAccess {
    pub access: Access,
    pub proof: Proof,
}

/// The signed-in person's access records, newest first, each with its checked proof.
/// `ledger` is `None` when the portal has no ledger configured: every proof is pending.
pub async fn for_person(
    exchange: &Exchange,
    ledger: Option<&Ledger>,
    person: &PersonalCode,
) -> Result<Vec<TrackedAccess>, Error> {
    let records: Vec<Access> = exchange
        .get(
            Register::Population,
            "persons",
            &format!("/{person}/accesses"),
            person,
            "data tracker: the person reads their own access records",
        )
        .await
        .map_err(|e| e.into_error(ErrorCode::TrackerUpstream, ErrorCode::TrackerUpstream))?;
    let mut records = records;
    records.truncate(MAX_RECORDS);
    let me = person.to_string();
    // The register answers only the person's own records; anything else is not shown.
    if let Some(other) = records
        .iter()
        .find(|a| !a.subject.is_empty() && a.subject != me)
    {
        return Err(Error::new(
            ErrorCode::TrackerForbidden,
            format!(
                "the register answered a record about someone else (record {})",
                other.id
            ),
        ));
    }
    let checkpoint = match ledger {
        Some(l) if records.iter().any(|a| a.ledger_index.is_some()) => Some(l.checkpoint().await?),
        _ => None,
    };
    let (Some(ledger), Some(cp)) = (ledger, checkpoint) else {
        return Ok(records
            .into_iter()
            .map(|access| TrackedAccess {
                access,
                proof: Proof::Pending,
            })
            .collect());
    };
    // The proofs are fetched concurrently, a few at a time, so a long list stays quick.
    let mut proofs = vec![Proof::Pending; records.len()];
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        while tasks.len() < PROOFS_AT_ONCE && next < records.len() {
            let (l, cp, a, i) = (ledger.clone(), cp.clone(), records[next].clone(), next);
            tasks.spawn(async move { (i, check_proof(&l, &cp, &a).await) });
            next += 1;
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        let (i, proof) = done.map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        proofs[i] = proof;
    }
    Ok(records
        .into_iter()
        .zip(proofs)
        .map(|(access, proof)| TrackedAccess { access, proof })
        .collect())
}

/// Inclusion proofs fetched at once.
const PROOFS_AT_ONCE: usize = 8;
/// Records shown (the newest).
pub const MAX_RECORDS: usize = 200;

/// Check the inclusion of record `a` in the tree of checkpoint `cp` (whose signature the
/// caller checked with [`Ledger::checkpoint`]).
pub async fn check_proof(ledger: &Ledger, cp: &Checkpoint, a: &Access) -> Proof {
    let (Some(index), Some(salt)) = (a.ledger_index, a.salt.as_deref()) else {
        return Proof::Pending;
    };
    let Ok(index) = u64::try_from(index) else {
        return Proof::Failed {
            reason: "negative ledger index".into(),
        };
    };
    if index >= cp.size {
        return Proof::Pending;
    }
    let entry = match a.ledger_entry(salt) {
        Ok(e) => e,
        Err(e) => return Proof::Failed { reason: e.message },
    };
    let hashes = match ledger.client.inclusion_proof(index, cp.size).await {
        Ok(h) => h,
        Err(e) => {
            return Proof::Failed {
                reason: format!("no inclusion proof: {}", e.message),
            };
        }
    };
    match xalo_ledger::proof::verify_inclusion(
        index,
        cp.size,
        &entry.leaf_hash(),
        &hashes,
        &cp.root,
    ) {
        Ok(()) => Proof::Verified {
            index,
            tree_size: cp.size,
            root: cp.root.to_hex(),
        },
        Err(e) => Proof::Failed {
            reason: e.to_string(),
        },
    }
}
