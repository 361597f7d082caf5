//! Replayed messages: the provider's gateway serves each signed request once. A request
//! is signed with the time of its batch; one signed longer ago than the replay window (or
//! that far in the future: clocks apart) is refused, and one seen within the window is
//! refused again, so the gateway need remember only the window's messages.
//!
//! A message is known by its batch signature and its own hash: a replay must carry the
//! signature it captured, while a client that sends the same request again has it signed
//! anew. (Its hash rather than its position in the batch: the guard then holds whatever a
//! proof claims; the batch's size is signed too, so a leaf has one position anyway.) Under
//! load one entry holds the messages of a whole batch.
//!
//! After a restart the window's messages are read back from the message log, where each
//! accepted request's signature and batch proof are kept.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::Digest;

use crate::signature::BatchProof;

/// Batches remembered at most (about 60 MB); past this a gateway refuses messages rather
/// than forget one it accepted. A window holds at most twice its length of batches: a
/// minute's window, with every message signed alone, holds this at 8,000 messages a second.
const MOST_BATCHES: usize = 1_000_000;

/// Messages of one batch remembered at most: a gateway signs at most 256 in a batch
/// (`signature::MAX_BATCH`), so a sender claiming more is not a gateway of ours.
const MOST_PER_BATCH: usize = 256;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Signed outside the window around now.
    OutsideWindow { signed_ms: i64, now_ms: i64 },
    /// Accepted before.
    Replayed,
    /// Too many messages within the window to remember another.
    Full,
    /// More messages of one batch than a gateway signs together.
    BatchTooLarge,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::OutsideWindow { signed_ms, now_ms } => write!(
                f,
                "the message was signed {:.1} s {} now, outside the replay window (are the clocks apart?)",
                now_ms.abs_diff(*signed_ms) as f64 / 1000.0,
                if signed_ms <= now_ms {
                    "before"
                } else {
                    "after"
                }
            ),
            Refusal::Replayed => write!(f, "the message was received before (a replay)"),
            Refusal::Full => write!(
                f,
                "too many messages within the replay window to remember another"
            ),
            Refusal::BatchTooLarge => {
                write!(f, "more than {MOST_PER_BATCH} messages of one signed batch")
            }
        }
    }
}

/// The batches whose messages arrived within the window, by their signature.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: i64,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    batches: HashMap<[u8; 16], Batch>,
    /// When expired batches were last dropped.
    swept_ms: i64,
}

#[derive(Debug)]
struct Batch {
    /// Past this, the window refuses the batch's messages anyway.
    forget_after_ms: i64,
    /// The first message received (its hash's first 8 bytes), and any others (few: a batch
    /// holds messages to many providers, and an empty `Vec` takes no memory of its own).
    first: u64,
    more: Vec<u64>,
}

impl ReplayGuard {
    /// A guard of `window` each way, at least a second and at most a day (it holds up to
    /// two windows of messages).
    pub fn new(window: std::time::Duration) -> ReplayGuard {
        let window = window.clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(86_400),
        );
        ReplayGuard {
            window_ms: window.as_millis() as i64,
            seen: Mutex::default(),
        }
    }

    /// Admit the message whose hash is `message_hash`, in the batch signed with
    /// `signature` at `proof.signed_ms`, once.
    pub fn admit(
        &self,
        signature: &[u8],
        proof: &BatchProof,
        message_hash: &[u8],
        now_ms: i64,
    ) -> Result<(), Refusal> {
        // abs_diff: a signed time is the sender's to choose, i64::MIN included.
        if now_ms.abs_diff(proof.signed_ms) > self.window_ms.unsigned_abs() {
            return Err(Refusal::OutsideWindow {
                signed_ms: proof.signed_ms,
                now_ms,
            });
        }
        let key: [u8; 16] = {
            let digest = sha2::Sha256::digest(signature_identity(signature));
            let mut k = [0u8; 16];
            k.copy_from_slice(&digest[..16]);
            k
        };
        let message = message_hash
            .first_chunk::<8>()
            .map_or(0, |b| u64::from_be_bytes(*b));
        // A poisoned lock means a panic mid-update: refuse rather than admit blindly.
        let mut seen = self.seen.lock().map_err(|_| Refusal::Full)?;
        if now_ms - seen.swept_ms > self.window_ms / 2 {
            seen.batches.retain(|_, b| b.forget_after_ms >= now_ms);
            seen.swept_ms = now_ms;
        }
        let full = seen.batches.len() >= MOST_BATCHES;
        match seen.batches.get_mut(&key) {
            Some(batch) if batch.first == message || batch.more.contains(&message) => {
                Err(Refusal::Replayed)
            }
            Some(batch) if batch.more.len() + 1 >= MOST_PER_BATCH => Err(Refusal::BatchTooLarge),
            Some(batch) => {
                batch.more.push(message);
                Ok(())
            }
            None if full => Err(Refusal::Full),
            None => {
                seen.batches.insert(
                    key,
                    Batch {
                        forget_after_ms: proof.signed_ms.saturating_add(self.window_ms),
                        first: message,
                        more: Vec::new(),
                    },
                );
                Ok(())
            }
        }
    }

    /// The window, in seconds.
    pub fn window_secs(&self) -> i64 {
        self.window_ms / 1000
    }
}

/// What a batch signature is known by: for ECDSA (DER) its `r`, for a signature of two
/// halves (`r‖s`, Ed25519's `R‖S`) its first half. An ECDSA signature still verifies with
/// `s` replaced by `n − s`, so keyed on all its bytes, a request captured off the wire
/// could be sent again under the changed signature as a new message; `r` comes from the
/// signer's one-time nonce and is the same in both.
fn signature_identity(signature: &[u8]) -> &[u8] {
    if let Some(r) = der_r(signature) {
        return r;
    }
    match signature.len() {
        n if n > 0 && n % 2 == 0 => &signature[..n / 2],
        _ => signature,
    }
}

/// `r` of a DER `SEQUENCE { INTEGER r, INTEGER s }`, without leading zeros. Walked by
/// hand rather than with the `der` crate, whose strict decoder refuses an `r` padded with
/// zeros: the identity must not depend on how an `r` is encoded.
fn der_r(signature: &[u8]) -> Option<&[u8]> {
    let rest = signature.strip_prefix(&[0x30])?;
    let (length, rest) = match *rest.first()? {
        short if short < 0x80 => (usize::from(short), rest.get(1..)?),
        0x81 => (usize::from(*rest.get(1)?), rest.get(2..)?),
        _ => return None,
    };
    if rest.len() != length {
        return None;
    }
    let rest = rest.strip_prefix(&[0x02])?;
    let r_length = usize::from(*rest.first()?);
    if r_length >= 0x80 {
        return None;
    }
    let r = rest.get(1..1 + r_length)?;
    let significant = r.iter().position(|&b| b != 0).unwrap_or(r.len());
    Some(&r[significant..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(index: u64, signed_ms: i64) -> BatchProof {
        BatchProof {
            index,
            size: 4,
            signed_ms,
            path: Vec::new(),
        }
    }

    /// The hash of message `n` of a batch.
    fn hash(n: u8) -> [u8; 64] {
        [n; 64]
    }

    /// A DER ECDSA signature of `r` and `s`.
    fn der(r: &[u8], s: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, r.len() as u8];
        body.extend_from_slice(r);
        body.extend_from_slice(&[0x02, s.len() as u8]);
        body.extend_from_slice(s);
        let mut out = vec![0x30, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn a_signature_changed_in_its_s_is_the_same_signature() {
        let guard = ReplayGuard::new(std::time::Duration::from_secs(60));
        let now = 1_000_000_000;
        let r = [0x5a; 32];
        let captured = der(&r, &[0x11; 32]);
        // s replaced (as n − s would be), and r padded with a zero byte.
        let mut padded = vec![0];
        padded.extend_from_slice(&r);
        for changed in [der(&r, &[0x7f; 33]), der(&padded, &[0x22; 31])] {
            assert_ne!(changed, captured);
            assert_eq!(signature_identity(&changed), &r[..]);
        }
        assert_eq!(
            guard.admit(&captured, &proof(0, now - 5), &hash(0), now),
            Ok(())
        );
        assert_eq!(
            guard.admit(&der(&r, &[0x7f; 33]), &proof(0, now - 5), &hash(0), now),
            Err(Refusal::Replayed)
        );
        // Another nonce is another batch; a signature of two halves is known by its first.
        assert_eq!(
            guard.admit(
                &der(&[0x5b; 32], &[0x11; 32]),
                &proof(0, now - 5),
                &hash(0),
                now
            ),
            Ok(())
        );
        let raw: Vec<u8> = [[0x33; 32], [0x44; 32]].concat();
        assert_eq!(signature_identity(&raw), &[0x33; 32][..]);
        assert_eq!(signature_identity(b"odd"), b"odd");
    }

    #[test]
    fn each_position_of_a_batch_is_admitted_once_within_the_window() {
        let guard = ReplayGuard::new(std::time::Duration::from_secs(60));
        let now = 1_000_000_000;
        assert_eq!(
            guard.admit(b"sig-a", &proof(0, now - 5), &hash(0), now),
            Ok(())
        );
        assert_eq!(
            guard.admit(b"sig-a", &proof(1, now - 5), &hash(1), now),
            Ok(())
        );
        assert_eq!(
            guard.admit(b"sig-a", &proof(0, now - 5), &hash(0), now + 1),
            Err(Refusal::Replayed)
        );
        // Another batch, same position.
        assert_eq!(
            guard.admit(b"sig-b", &proof(0, now - 5), &hash(0), now),
            Ok(())
        );
        // Too old, or from too far ahead.
        assert!(matches!(
            guard.admit(b"sig-c", &proof(0, now - 60_001), &hash(0), now),
            Err(Refusal::OutsideWindow { .. })
        ));
        assert!(matches!(
            guard.admit(b"sig-c", &proof(0, now + 60_001), &hash(0), now),
            Err(Refusal::OutsideWindow { .. })
        ));
        for extreme in [i64::MIN, i64::MAX] {
            let refused = guard.admit(b"sig-e", &proof(0, extreme), &hash(0), now);
            assert!(matches!(refused, Err(Refusal::OutsideWindow { .. })));
            assert!(!refused.unwrap_err().to_string().is_empty());
        }
        // Once the window has passed, the batch is forgotten and its replay is too old.
        let later = now + 120_000;
        assert!(matches!(
            guard.admit(b"sig-a", &proof(0, now - 5), &hash(0), later),
            Err(Refusal::OutsideWindow { .. })
        ));
        assert_eq!(
            guard.admit(b"sig-d", &proof(0, later), &hash(0), later),
            Ok(())
        );
        let seen = guard.seen.lock().unwrap();
        assert_eq!(seen.batches.len(), 1, "expired batches were dropped");
    }

    #[test]
    fn a_message_shown_at_another_position_is_still_a_replay() {
        let guard = ReplayGuard::new(std::time::Duration::from_secs(60));
        let now = 1_000_000_000;
        assert_eq!(guard.admit(b"sig", &proof(2, now), &hash(2), now), Ok(()));
        // Leaf 2 of 3 verifies as leaf 1 of 2 with the same path.
        assert_eq!(
            guard.admit(b"sig", &proof(1, now), &hash(2), now),
            Err(Refusal::Replayed)
        );
        for n in 0..=255 {
            let admitted = guard.admit(b"big", &proof(0, now), &[n; 64], now);
            assert_eq!(admitted, Ok(()));
        }
        let another: Vec<u8> = (0..64).collect();
        assert_eq!(
            guard.admit(b"big", &proof(0, now), &another, now),
            Err(Refusal::BatchTooLarge)
        );
    }
}
