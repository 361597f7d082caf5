//! The library other crates use to put evidence in the ledger and to check it.
//!
//! [`LedgerClient`] speaks the ledger's HTTP API. [`Recorder`] batches: many tasks call
//! [`Recorder::record`] and their entries travel together in one request, which is how a
//! busy gateway records every message without a request per message.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use xalo_core::error::ErrorBody;
use xalo_core::{Error, ErrorCode};

use crate::Hash;
use crate::checkpoint::Checkpoint;
use crate::entry::Entry;
use crate::note::{Limits, Note};
use crate::proof;
use crate::service::{AddRequest, AddResponse, EntryJson, MAX_ENTRIES_PER_REQUEST, ProofJson};
use crate::witness_policy::{CosignedCheckpoint, WitnessPolicy};

fn upstream(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::LedgerUpstream, e.to_string())
}

/// A client of one ledger.
#[derive(Clone, Debug)]
pub struct LedgerClient {
    base: String,
    http: reqwest::Client,
}

impl LedgerClient {
    pub fn new(base_url: &str) -> Result<LedgerClient, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(upstream)?;
        Ok(LedgerClient {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response, Error> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        // Pass the ledger's own coded error through when it sent one.
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(Error::new(body.code, body.message)),
            Err(_) => Err(upstream(format!("ledger answered {status}: {text}"))),
        }
    }

    /// Record entries; returns their indexes once the ledger has them on disk.
    pub async fn submit(&self, entries: &[Entry]) -> Result<Range<u64>, Error> {
        let req = AddRequest {
            entries: entries.iter().map(EntryJson::from_entry).collect(),
        };
        let r = self
            .http
            .post(format!("{}/add", self.base))
            .json(&req)
            .send()
            .await
            .map_err(upstream)?;
        let added: AddResponse = Self::check(r).await?.json().await.map_err(upstream)?;
        if added.count != entries.len() as u64 {
            return Err(upstream(
                "the ledger acknowledged a different number of entries",
            ));
        }
        Ok(added.first..added.first + added.count)
    }

    /// The latest signed checkpoint note, as served.
    pub async fn checkpoint_note(&self) -> Result<String, Error> {
        let r = self
            .http
            .get(format!("{}/checkpoint", self.base))
            .send()
            .await
            .map_err(upstream)?;
        Self::check(r).await?.text().await.map_err(upstream)
    }

    /// The latest checkpoint, accepted only if `policy` (log key and witnesses) is met.
    pub async fn verified_checkpoint(
        &self,
        policy: &WitnessPolicy,
    ) -> Result<CosignedCheckpoint, Error> {
        let note = self.checkpoint_note().await?;
        Ok(policy.verify(note.as_bytes(), Some(unix_now()))?)
    }

    /// Bytes of a tile or entry bundle path (`tile/…`).
    pub async fn get_tile(&self, path: &str) -> Result<Vec<u8>, Error> {
        let r = self
            .http
            .get(format!("{}/{path}", self.base))
            .send()
            .await
            .map_err(upstream)?;
        Ok(Self::check(r)
            .await?
            .bytes()
            .await
            .map_err(upstream)?
            .to_vec())
    }

    async fn proof(&self, query: &str) -> Result<ProofJson, Error> {
        let r = self
            .http
            .get(format!("{}/proof/{query}", self.base))
            .send()
            .await
            .map_err(upstream)?;
        Self::check(r).await?.json().await.map_err(upstream)
    }

    /// The inclusion proof of leaf `index` in the tree of `size`.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        let p = self
            .proof(&format!("inclusion?index={index}&size={size}"))
            .await?;
        decode_proof(&p)
    }

    /// The index and inclusion proof of the entry with `leaf_hash` in the tree of `size`.
    pub async fn inclusion_proof_by_hash(
        &self,
        leaf_hash: &Hash,
        size: u64,
    ) -> Result<(u64, Vec<Hash>), Error> {
        let p = self
            .proof(&format!(
                "inclusion?hash={}&size={size}",
                leaf_hash.to_hex()
            ))
            .await?;
        let index = p.index.ok_or_else(|| upstream("proof without an index"))?;
        Ok((index, decode_proof(&p)?))
    }

    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, Error> {
        let p = self
            .proof(&format!("consistency?first={first}&second={second}"))
            .await?;
        decode_proof(&p)
    }

    /// Prove that `entry` is in the log under `checkpoint`: find it, fetch its proof and
    /// check it against the checkpoint's root. Returns its index.
    pub async fn prove_included(
        &self,
        entry: &Entry,
        checkpoint: &Checkpoint,
    ) -> Result<u64, Error> {
        let leaf = entry.leaf_hash();
        let (index, proof) = self.inclusion_proof_by_hash(&leaf, checkpoint.size).await?;
        proof::verify_inclusion(index, checkpoint.size, &leaf, &proof, &checkpoint.root)?;
        Ok(index)
    }
}

fn decode_proof(p: &ProofJson) -> Result<Vec<Hash>, Error> {
    p.proof
        .iter()
        .map(|h| Hash::from_base64(h).map_err(Error::from))
        .collect()
}

/// The checkpoint text of a signed note, without checking signatures (for callers that
/// check them separately).
pub fn checkpoint_of_note(note: &str) -> Result<Checkpoint, Error> {
    let n = Note::parse(note.as_bytes(), &Limits::default())?;
    Ok(Checkpoint::parse(n.text())?)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Pending {
    entry: Entry,
    ack: Ack,
}

/// Where an entry's index goes once it is recorded (or why it was not). Dropped unanswered
/// (the recorder stopped with it queued), it answers that the recorder has stopped.
enum Ack {
    /// To a caller awaiting [`Recorder::record`].
    Wait(Option<oneshot::Sender<Result<u64, Error>>>),
    /// To a function ([`Recorder::record_then`]).
    Call(Option<Told>),
}

/// A function told an entry's index ([`Recorder::record_then`]).
type Told = Box<dyn FnOnce(Result<u64, Error>) + Send>;

impl Ack {
    fn send(mut self, result: Result<u64, Error>) {
        self.answer(result);
    }

    fn answer(&mut self, result: Result<u64, Error>) {
        match self {
            // The caller may have stopped waiting; the entry is recorded all the same.
            Ack::Wait(reply) => {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(result);
                }
            }
            Ack::Call(then) => {
                if let Some(then) = then.take()
                    && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| then(result)))
                        .is_err()
                {
                    // One caller's failing function must not stop the recorder, and with
                    // it the answers of every other entry.
                    tracing::error!("a function told a ledger index panicked");
                }
            }
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        self.answer(Err(stopped()));
    }
}

/// Batches entries from many tasks into few requests.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
    /// Told when a whole batch is waiting, so it goes without lingering.
    full: Arc<Notify>,
    max: usize,
}

impl Recorder {
    /// Start a recorder that sends at most `max_batch` entries per request and waits at
    /// most `linger` for a batch to fill.
    pub fn start(client: LedgerClient, max_batch: usize, linger: Duration) -> Recorder {
        let max = max_batch.clamp(1, MAX_ENTRIES_PER_REQUEST);
        let (queue, rx) = mpsc::channel(max * 4);
        let full = Arc::new(Notify::new());
        tokio::spawn(run_recorder(client, rx, max, linger, full.clone()));
        Recorder { queue, full, max }
    }

    /// Record one entry; returns its index once it is durable in the ledger.
    pub async fn record(&self, entry: Entry) -> Result<u64, Error> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send(Pending {
                entry,
                ack: Ack::Wait(Some(reply)),
            })
            .await
            .map_err(|_| stopped())?;
        self.told_if_full();
        done.await.map_err(|_| stopped())?
    }

    /// Record one entry without waiting: `then` gets its index (or why it was not
    /// recorded), run by the recorder's task once the ledger has the batch, so it must be
    /// quick; when the recorder has stopped, it runs at once, on the caller's stack. For a
    /// caller with many entries to record and nothing to wait for: a task per entry
    /// awaiting [`Recorder::record`] costs a spawn and a wake-up each. When the queue is
    /// full, a task waits for room.
    pub fn record_then(
        &self,
        entry: Entry,
        then: impl FnOnce(Result<u64, Error>) + Send + 'static,
    ) {
        let pending = Pending {
            entry,
            ack: Ack::Call(Some(Box::new(then))),
        };
        match self.queue.try_send(pending) {
            Ok(()) => self.told_if_full(),
            Err(mpsc::error::TrySendError::Closed(p)) => p.ack.send(Err(stopped())),
            Err(mpsc::error::TrySendError::Full(p)) => {
                let recorder = self.clone();
                tokio::spawn(async move {
                    match recorder.queue.send(p).await {
                        Ok(()) => recorder.told_if_full(),
                        Err(mpsc::error::SendError(p)) => p.ack.send(Err(stopped())),
                    }
                });
            }
        }
    }

    /// Wake a lingering recorder once a whole batch is there: the entry it holds and
    /// `max - 1` queued.
    fn told_if_full(&self) {
        if self.queue.max_capacity() - self.queue.capacity() + 1 >= self.max {
            self.full.notify_waiters();
        }
    }
}

fn stopped() -> Error {
    upstream("the ledger recorder has stopped")
}

async fn run_recorder(
    client: LedgerClient,
    mut rx: mpsc::Receiver<Pending>,
    max: usize,
    linger: Duration,
    full: Arc<Notify>,
) {
    while let Some(first) = rx.recv().await {
        // Linger once for the batch, not once per entry: a receive per entry wakes this
        // task for each, as many wake-ups as entries on a busy gateway. A wake-up is only
        // a reason to look again (the waiter is registered before the look, so none is
        // missed, and none is kept for a later batch).
        let deadline = tokio::time::Instant::now() + linger;
        loop {
            let notified = full.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if rx.len() + 1 >= max {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = &mut notified => {}
            }
        }
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (entries, acks): (Vec<Entry>, Vec<Ack>) =
            batch.into_iter().map(|p| (p.entry, p.ack)).unzip();
        match client.submit(&entries).await {
            // `submit` checked that the range has an index for each entry.
            Ok(range) => {
                for (ack, index) in acks.into_iter().zip(range) {
                    ack.send(Ok(index));
                }
            }
            Err(e) => {
                for ack in acks {
                    ack.send(Err(e.clone()));
                }
            }
        }
    }
}
