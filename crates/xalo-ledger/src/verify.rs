//! Offline verification of a log, from a directory of tiles or from its URL: what
//! `xalo ledger verify` runs. Nothing the log serves is trusted; everything is recomputed
//! and held against the signed checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use xalo_core::{Error, ErrorCode};

use crate::checkpoint::Checkpoint;
use crate::client::LedgerClient;
use crate::cosignature::CosignatureVerifier;
use crate::log_store::with_tiles;
use crate::note::Ed25519Verifier;
use crate::tile::{self, HashTile, TileHashSource, TileId};
use crate::witness_policy::WitnessPolicy;
use crate::{Hash, merkle, proof};

/// Where the tiles come from.
#[derive(Debug, Clone)]
pub enum TileSource {
    /// A directory laid out as the log's URL space (`checkpoint`, `tile/…`).
    Directory(PathBuf),
    Url(LedgerClient),
}

impl TileSource {
    /// A URL (`http://…`, `https://…`) or a directory path.
    pub fn parse(s: &str) -> Result<TileSource, Error> {
        if s.starts_with("http://") || s.starts_with("https://") {
            Ok(TileSource::Url(LedgerClient::new(s)?))
        } else {
            Ok(TileSource::Directory(PathBuf::from(s)))
        }
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, Error> {
        match self {
            TileSource::Directory(dir) => {
                let file = dir.join(path);
                tokio::fs::read(&file)
                    .await
                    .map_err(|e| failed(format!("{}: {e}", file.display())))
            }
            TileSource::Url(c) => c.get_tile(path).await,
        }
    }

    async fn fetch(&self, ids: Vec<TileId>) -> Result<BTreeMap<TileId, Vec<u8>>, Error> {
        let mut out = BTreeMap::new();
        for id in ids {
            out.insert(id, self.read(&id.path()).await?);
        }
        Ok(out)
    }
}

fn failed(why: impl Into<String>) -> Error {
    Error::new(ErrorCode::LedgerVerifyFailed, why.into())
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// The log's verifier key (`name+hash+key`); its name is the origin.
    pub log_key: String,
    /// Witness cosignature verifier keys, and how many must have cosigned.
    pub witness_keys: Vec<String>,
    pub quorum: usize,
    /// A checkpoint note file to verify instead of the source's `checkpoint`.
    pub checkpoint: Option<PathBuf>,
    /// Prove that this leaf hash is in the log.
    pub leaf_hash: Option<Hash>,
    /// An older checkpoint note file the current one must be consistent with.
    pub older: Option<PathBuf>,
}

/// What was verified.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub checkpoint: Checkpoint,
    pub cosigners: Vec<(String, u64)>,
    /// Index of the proven leaf.
    pub included_at: Option<u64>,
    /// Size of the older checkpoint proven to be a prefix.
    pub consistent_with: Option<u64>,
}

fn policy(req: &VerifyRequest) -> Result<WitnessPolicy, Error> {
    let log = Ed25519Verifier::from_verifier_key(&req.log_key)?;
    let origin = req.log_key.split('+').next().unwrap_or("").to_owned();
    let witnesses = req
        .witness_keys
        .iter()
        .map(|k| CosignatureVerifier::from_verifier_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WitnessPolicy::new(origin, log, witnesses, req.quorum)?)
}

/// Run every check `req` asks for against `source`.
pub async fn verify(source: &TileSource, req: &VerifyRequest) -> Result<VerifyReport, Error> {
    let policy = policy(req)?;
    let note = match &req.checkpoint {
        Some(f) => std::fs::read(f).map_err(|e| failed(format!("{}: {e}", f.display())))?,
        None => source.read("checkpoint").await?,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .ok();
    let cosigned = policy
        .verify(&note, now)
        .map_err(|e| Error::from(e).context("the checkpoint"))?;
    let cp = cosigned.checkpoint.clone();

    audit_tiles(source, cp.size).await?;
    // The tiles must rebuild exactly the signed root.
    let root = with_tiles(
        |ids| source.fetch(ids),
        |t| tile::root_from_tiles(t, cp.size),
    )
    .await
    .map_err(|e| e.context("recomputing the root from the tiles"))?;
    if root != cp.root {
        return Err(failed(format!(
            "the tiles give root {root}, the checkpoint signs {}",
            cp.root
        )));
    }

    let mut included_at = None;
    if let Some(leaf) = &req.leaf_hash {
        let index = find_leaf(source, leaf, cp.size).await?;
        let p = with_tiles(
            |ids| source.fetch(ids),
            |t| proof::inclusion_proof(&TileHashSource::new(t, cp.size), index, cp.size),
        )
        .await?;
        proof::verify_inclusion(index, cp.size, leaf, &p, &cp.root)
            .map_err(|e| failed(format!("leaf {index}: {e}")))?;
        included_at = Some(index);
    }

    let mut consistent_with = None;
    if let Some(older) = &req.older {
        let text = std::fs::read(older).map_err(|e| failed(format!("{}: {e}", older.display())))?;
        let old = policy
            .verify(&text, None)
            .map_err(|e| Error::from(e).context("the older checkpoint"))?
            .checkpoint;
        if old.size > cp.size {
            return Err(failed(format!(
                "the older checkpoint has {} leaves, more than the current {}",
                old.size, cp.size
            )));
        }
        let p = with_tiles(
            |ids| source.fetch(ids),
            |t| proof::consistency_proof(&TileHashSource::new(t, cp.size), old.size, cp.size),
        )
        .await?;
        proof::verify_consistency(old.size, cp.size, &old.root, &cp.root, &p).map_err(|e| {
            failed(format!(
                "checkpoints of sizes {} and {} are not consistent: {e}",
                old.size, cp.size
            ))
        })?;
        consistent_with = Some(old.size);
    }
    Ok(VerifyReport {
        checkpoint: cp,
        cosigners: cosigned.cosigners,
        included_at,
        consistent_with,
    })
}

/// Check every byte of the tree's tiles: each full tile must hash to the entry the tile
/// above holds for it, and each entry bundle must hash to its level-0 tile. (The root
/// alone is computed from the top tiles and would not notice a changed lower tile.)
async fn audit_tiles(source: &TileSource, size: u64) -> Result<(), Error> {
    let ids = tile::tiles_for_size(size);
    let mut tiles = BTreeMap::new();
    for id in &ids {
        let bytes = source.read(&id.path()).await?;
        let t =
            HashTile::from_bytes(*id, &bytes).map_err(|e| failed(format!("{}: {e}", id.path())))?;
        tiles.insert((id.level, id.index), t);
    }
    for t in tiles.values().filter(|t| t.id.is_full()) {
        let parent = tiles.get(&(t.id.level + 1, t.id.index / 256));
        let expected = parent.and_then(|p| p.hashes.get((t.id.index % 256) as usize));
        let actual = merkle::root_from_leaf_hashes(&t.hashes);
        if expected != Some(&actual) {
            return Err(failed(format!(
                "{} does not hash to the entry for it in the tile above",
                t.id.path()
            )));
        }
    }
    for id in ids.iter().filter(|t| t.level == 0) {
        let bytes = source.read(&id.entries_path()).await?;
        let bundle = tile::EntryBundle::from_bytes(&bytes)
            .map_err(|e| failed(format!("{}: {e}", id.entries_path())))?;
        let level0 = tiles.get(&(0, id.index)).map(|t| t.hashes.clone());
        if Some(bundle.leaf_hashes()) != level0 {
            return Err(failed(format!(
                "{} does not match the leaf hashes of {}",
                id.entries_path(),
                id.path()
            )));
        }
    }
    Ok(())
}

/// Find a leaf by scanning the level-0 tiles: offline, and trusting no index.
async fn find_leaf(source: &TileSource, leaf: &Hash, size: u64) -> Result<u64, Error> {
    for id in tile::tiles_for_size(size)
        .into_iter()
        .filter(|t| t.level == 0)
    {
        let bytes = source.read(&id.path()).await?;
        let t = HashTile::from_bytes(id, &bytes)?;
        if let Some(i) = t.hashes.iter().position(|h| h == leaf) {
            return Ok(id.index * 256 + i as u64);
        }
    }
    Err(Error::new(
        ErrorCode::LedgerEntryNotFound,
        format!("no leaf {leaf} in the tree of {size} entries"),
    ))
}

/// Copy a log's checkpoint, hash tiles and entry bundles into `dir` for offline checks.
/// Returns the size copied.
pub async fn mirror(client: &LedgerClient, dir: &Path) -> Result<u64, Error> {
    std::fs::create_dir_all(dir)?;
    let note = client.checkpoint_note().await?;
    let cp = crate::client::checkpoint_of_note(&note)?;
    let mut paths: Vec<String> = tile::tiles_for_size(cp.size)
        .iter()
        .map(TileId::path)
        .collect();
    paths.extend(
        tile::tiles_for_size(cp.size)
            .iter()
            .filter(|t| t.level == 0)
            .map(TileId::entries_path),
    );
    for path in paths {
        let bytes = client.get_tile(&path).await?;
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
    }
    std::fs::write(dir.join("checkpoint"), note)?;
    Ok(cp.size)
}

/// The leaf hash of a file recorded as an entry of `kind`.
pub fn leaf_hash_of_file(kind: &str, file: &Path) -> Result<Hash, Error> {
    let data = std::fs::read(file).map_err(|e| failed(format!("{}: {e}", file.display())))?;
    Ok(crate::entry::Entry::new(kind.parse()?, data)?.leaf_hash())
}
