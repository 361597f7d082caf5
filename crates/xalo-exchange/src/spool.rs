//! Message bodies in bounded memory.
//!
//! A body must be hashed before its signature can be made or checked, and must not reach
//! the other side before it is checked; so each hop reads the body once, hashing it, into
//! memory when it is small and into an unnamed temporary file when it is large, then sends
//! it on from there. Memory per message stays under the configured limit whatever the
//! body's size.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha512};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// How a spooled body is kept.
enum Storage {
    Memory(Bytes),
    File(tokio::fs::File),
}

/// A body read to its end: its length, SHA-512 and content.
pub struct Spooled {
    pub len: u64,
    pub sha512: [u8; 64],
    storage: Storage,
}

impl std::fmt::Debug for Spooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spooled")
            .field("len", &self.len)
            .field("in_memory", &matches!(self.storage, Storage::Memory(_)))
            .finish()
    }
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum SpoolError {
    TooLarge { limit: u64 },
    Read(String),
    Io(std::io::Error),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::TooLarge { limit } => write!(f, "the body is larger than {limit} bytes"),
            SpoolError::Read(e) => write!(f, "reading the body: {e}"),
            SpoolError::Io(e) => write!(f, "spooling the body: {e}"),
        }
    }
}

/// Limits of spooling.
#[derive(Debug, Clone)]
pub struct SpoolLimits {
    /// Bodies up to this size stay in memory.
    pub memory: usize,
    /// Larger bodies are refused.
    pub max: u64,
    /// Where temporary files go (the system's temporary directory if `None`).
    pub dir: Option<PathBuf>,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits {
            memory: 256 * 1024,
            max: 4 * 1024 * 1024 * 1024,
            dir: None,
        }
    }
}

/// The spool directory, made if missing and checked by making a file in it: a gateway
/// that cannot spool would refuse every large body, so it says so when it starts (or a
/// reload is refused) rather than at the first one.
pub fn usable_dir(dir: Option<&std::path::Path>) -> Result<Option<PathBuf>, xalo_core::Error> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let unusable = |e: std::io::Error| {
        xalo_core::Error::new(
            xalo_core::ErrorCode::ConfigInvalid,
            format!("spool_dir {}: {e}", dir.display()),
        )
    };
    std::fs::create_dir_all(dir).map_err(unusable)?;
    tempfile::tempfile_in(dir).map_err(unusable)?;
    Ok(Some(dir.to_path_buf()))
}

/// [`spool`] a body whose `Content-Length` is in `headers`: one declared larger than the
/// limit is refused before a byte of it is read (a caller need not send gigabytes to learn
/// they were too many).
pub async fn spool_declared<S, E>(
    stream: S,
    headers: &axum::http::HeaderMap,
    limits: &SpoolLimits,
) -> Result<Spooled, SpoolError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max) {
        return Err(SpoolError::TooLarge { limit: limits.max });
    }
    spool(stream, limits).await
}

/// Read `stream` to its end within `limits`.
pub async fn spool<S, E>(mut stream: S, limits: &SpoolLimits) -> Result<Spooled, SpoolError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut hash = Sha512::new();
    let mut len: u64 = 0;
    let mut memory = BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SpoolError::Read(e.to_string()))?;
        len += chunk.len() as u64;
        if len > limits.max {
            return Err(SpoolError::TooLarge { limit: limits.max });
        }
        hash.update(&chunk);
        match &mut file {
            Some(f) => f.write_all(&chunk).await.map_err(SpoolError::Io)?,
            None if memory.len() + chunk.len() <= limits.memory => memory.extend_from_slice(&chunk),
            None => {
                let std_file = match &limits.dir {
                    Some(d) => tempfile::tempfile_in(d),
                    None => tempfile::tempfile(),
                }
                .map_err(SpoolError::Io)?;
                let mut f = tokio::fs::File::from_std(std_file);
                f.write_all(&memory).await.map_err(SpoolError::Io)?;
                f.write_all(&chunk).await.map_err(SpoolError::Io)?;
                memory = BytesMut::new();
                file = Some(f);
            }
        }
    }
    let storage = match file {
        Some(mut f) => {
            f.flush().await.map_err(SpoolError::Io)?;
            f.rewind().await.map_err(SpoolError::Io)?;
            Storage::File(f)
        }
        None => Storage::Memory(memory.freeze()),
    };
    Ok(Spooled {
        len,
        sha512: hash.finalize().into(),
        storage,
    })
}

const CHUNK: usize = 64 * 1024;

impl Spooled {
    /// A body held in memory.
    pub fn from_bytes(bytes: Bytes) -> Spooled {
        Spooled {
            len: bytes.len() as u64,
            sha512: Sha512::digest(&bytes).into(),
            storage: Storage::Memory(bytes),
        }
    }

    /// The content, when it is small enough to be in memory.
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.storage {
            Storage::Memory(b) => Some(b),
            Storage::File(_) => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The content as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        enum State {
            Memory(Option<Bytes>),
            File(tokio::fs::File),
        }
        let state = match self.storage {
            Storage::Memory(b) => State::Memory(Some(b)),
            Storage::File(f) => State::File(f),
        };
        futures_util::stream::unfold(state, |state| async move {
            match state {
                State::Memory(Some(b)) if !b.is_empty() => Some((Ok(b), State::Memory(None))),
                State::Memory(_) => None,
                State::File(mut f) => {
                    let mut buf = vec![0u8; CHUNK];
                    match f.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok(Bytes::from(buf)), State::File(f)))
                        }
                        Err(e) => Some((Err(e), State::Memory(None))),
                    }
                }
            }
        })
    }

    pub fn into_axum_body(self) -> axum::body::Body {
        match self.storage {
            Storage::Memory(b) => axum::body::Body::from(b),
            Storage::File(_) => axum::body::Body::from_stream(self.into_stream()),
        }
    }
}
