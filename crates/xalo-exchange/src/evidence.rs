//! Evidence of every exchanged message in the transparency ledger: an `exchange.message`
//! entry per message and per gateway (so each side's account can be checked against the
//! other's), recorded through the ledger's batching [`Recorder`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use xalo_core::Error;
use xalo_ledger::client::{LedgerClient, Recorder};
use xalo_ledger::entry::{Entry, EntryKind};

/// The entry kind.
pub const KIND: &str = "exchange.message";

/// What an entry says (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageEvidence {
    /// The gateway that recorded it.
    pub gateway: String,
    /// `client` or `provider`.
    pub side: String,
    pub x_road_id: String,
    pub client: String,
    pub service: String,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    pub request_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_hash: Option<String>,
    pub status: u16,
    pub time_unix: i64,
}

/// The gateway's recorder.
#[derive(Clone)]
pub struct Evidence {
    recorder: Recorder,
}

impl Evidence {
    pub fn new(ledger_url: &str) -> Result<Evidence, Error> {
        let client = LedgerClient::new(ledger_url)?;
        Ok(Evidence {
            recorder: Recorder::start(client, 256, Duration::from_millis(20)),
        })
    }

    /// Record one message; returns its index once the ledger has it.
    pub async fn record(&self, e: &MessageEvidence) -> Result<u64, Error> {
        let kind: EntryKind = KIND.parse()?;
        let data = serde_json::to_vec(e)
            .map_err(|err| Error::new(xalo_core::ErrorCode::Internal, err.to_string()))?;
        self.recorder.record(Entry::new(kind, data)?).await
    }
}
