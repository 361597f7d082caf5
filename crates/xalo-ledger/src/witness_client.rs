//! The log's side of witnessing: send each new checkpoint, with a consistency proof from
//! the last one a witness cosigned, and collect the cosignatures (C2SP tlog-witness).

use std::sync::Mutex;
use std::time::Duration;

use xalo_core::{Error, ErrorCode};

use crate::cosignature::CosignatureVerifier;
use crate::log::{Log, Published};
use crate::note::{Limits, Note, NoteSignature};
use crate::service::WitnessPeer;

struct Peer {
    url: String,
    verifier: CosignatureVerifier,
    /// The size the witness last cosigned for us, as far as we know.
    known_size: Mutex<u64>,
}

/// The witnesses a log asks to cosign.
pub struct WitnessPeers {
    peers: Vec<Peer>,
    http: reqwest::Client,
}

fn upstream(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::LedgerUpstream, e.to_string())
}

impl WitnessPeers {
    pub fn new(peers: &[WitnessPeer]) -> Result<WitnessPeers, Error> {
        let peers = peers
            .iter()
            .map(|p| {
                Ok(Peer {
                    url: p.url.trim_end_matches('/').to_owned(),
                    verifier: CosignatureVerifier::from_verifier_key(&p.key)?,
                    known_size: Mutex::new(0),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(upstream)?;
        Ok(WitnessPeers { peers, http })
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Ask every witness to cosign `published`; returns the note with every cosignature
    /// that verified. A witness that fails is logged and skipped: readers decide how many
    /// cosignatures they need.
    pub async fn cosign(&self, log: &Log, published: &Published) -> Result<String, Error> {
        let mut note = Note::parse(published.note.as_bytes(), &Limits::default())?;
        let text = published.checkpoint.to_text();
        for peer in &self.peers {
            match self.ask(log, published, peer).await {
                Ok(sig) => match peer
                    .verifier
                    .verify_cosignature(text.as_bytes(), &sig.signature)
                {
                    Ok(_) => note.add_signature(sig),
                    Err(e) => tracing::warn!(witness = %peer.url, error = %e, "bad cosignature"),
                },
                Err(e) => tracing::warn!(witness = %peer.url, error = %e, "witness did not cosign"),
            }
        }
        Ok(note.to_text())
    }

    async fn ask(
        &self,
        log: &Log,
        published: &Published,
        peer: &Peer,
    ) -> Result<NoteSignature, Error> {
        let size = published.checkpoint.size;
        // Two tries: the second after the witness told us the size it really has.
        for _ in 0..2 {
            let old = peer.known_size.lock().map(|g| *g).unwrap_or(0).min(size);
            let proof = if old == 0 || old == size {
                Vec::new()
            } else {
                log.consistency_proof(old, size).await?
            };
            let mut body = format!("old {old}\n");
            for h in &proof {
                body.push_str(&h.to_base64());
                body.push('\n');
            }
            body.push('\n');
            body.push_str(&published.note);
            let response = self
                .http
                .post(format!("{}/add-checkpoint", peer.url))
                .body(body)
                .send()
                .await
                .map_err(upstream)?;
            let status = response.status();
            let text = response.text().await.map_err(upstream)?;
            if status == reqwest::StatusCode::CONFLICT {
                let theirs: u64 = text.trim().parse().map_err(|_| {
                    upstream(format!(
                        "witness answered 409 with {text:?}, not a tree size"
                    ))
                })?;
                if let Ok(mut k) = peer.known_size.lock() {
                    *k = theirs;
                }
                continue;
            }
            if !status.is_success() {
                return Err(upstream(format!("witness answered {status}: {text}")));
            }
            let line = text
                .lines()
                .find(|l| l.starts_with('\u{2014}'))
                .ok_or_else(|| upstream("witness answered without a signature line"))?;
            let sig = parse_signature_line(line)?;
            if let Ok(mut k) = peer.known_size.lock() {
                *k = size;
            }
            return Ok(sig);
        }
        Err(upstream(
            "witness keeps disagreeing about the previous size",
        ))
    }
}

/// Parse one `— name base64` line through the note parser, so the rules are the same.
fn parse_signature_line(line: &str) -> Result<NoteSignature, Error> {
    // A minimal checkpoint-shaped text carries the line through the note parser.
    let probe = format!("x\n\n{line}\n");
    let note = Note::parse(probe.as_bytes(), &Limits::default())?;
    note.signatures()
        .first()
        .cloned()
        .ok_or_else(|| upstream("no signature in the witness's answer"))
}
