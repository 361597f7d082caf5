//! C2SP tlog-tiles: the tree served as static tiles of 256 hashes and the entries as
//! bundles of 256 entries.
//!
//! A hash tile at level `L`, index `N` holds the hashes of the perfect subtrees
//! `(8·L, N·256 + i)` (see [`crate::NodeId`]); a level-0 tile holds leaf hashes and the
//! entry bundle with the same index holds the entries. The rightmost tiles of a tree are
//! partial, `W` hashes wide, and named `tile/L/N.p/W`.

use std::collections::BTreeMap;

use crate::merkle::{HashSource, NodeId, leaf_hash, root_from_leaf_hashes};
use crate::{Hash, LedgerError};

/// Levels of the tree in one tile.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile, entries in a full bundle.
pub const TILE_WIDTH: u16 = 256;
/// The longest entry a bundle can carry (its length is a big-endian uint16).
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;
/// The highest tile level a path may name.
pub const MAX_TILE_LEVEL: u8 = 63;

/// One tile or entry bundle: its level, its index in the level and its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    pub level: u8,
    pub index: u64,
    /// 1 to 256; 256 is a full tile.
    pub width: u16,
}

impl TileId {
    pub fn new(level: u8, index: u64, width: u16) -> Result<TileId, LedgerError> {
        if level > MAX_TILE_LEVEL || width == 0 || width > TILE_WIDTH {
            return Err(LedgerError::TilePath {
                path: format!("level {level} index {index} width {width}"),
                reason: "level must be 0..=63 and width 1..=256".to_owned(),
            });
        }
        Ok(TileId {
            level,
            index,
            width,
        })
    }

    /// The full tile at `level`, `index`.
    pub fn full(level: u8, index: u64) -> TileId {
        TileId {
            level,
            index,
            width: TILE_WIDTH,
        }
    }

    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The tile at `level`, `index` as a tree of `size` leaves has it (full or partial), or
    /// `None` where that tree has no such tile.
    pub fn for_tree(level: u8, index: u64, size: u64) -> Option<TileId> {
        let count = hashes_at_level(level, size);
        let full = count / u64::from(TILE_WIDTH);
        let rest = (count % u64::from(TILE_WIDTH)) as u16;
        if index < full {
            Some(TileId::full(level, index))
        } else if index == full && rest > 0 {
            Some(TileId {
                level,
                index,
                width: rest,
            })
        } else {
            None
        }
    }

    /// The subtree whose hash is the tile's `i`-th hash.
    pub fn node(&self, i: u16) -> NodeId {
        NodeId::new(
            self.level.saturating_mul(TILE_HEIGHT),
            self.index
                .wrapping_mul(u64::from(TILE_WIDTH))
                .wrapping_add(u64::from(i)),
        )
    }

    /// `tile/L/N[.p/W]`, relative to the log's prefix.
    pub fn path(&self) -> String {
        format!("tile/{}/{}", self.level, self.index_and_width())
    }

    /// `tile/entries/N[.p/W]`: the entry bundle beside this level-0 tile.
    pub fn entries_path(&self) -> String {
        format!("tile/entries/{}", self.index_and_width())
    }

    fn index_and_width(&self) -> String {
        let mut s = encode_index(self.index);
        if !self.is_full() {
            s.push_str(&format!(".p/{}", self.width));
        }
        s
    }
}

/// How many tile hashes level `level` of a tree of `size` leaves has.
fn hashes_at_level(level: u8, size: u64) -> u64 {
    size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
        .unwrap_or(0)
}

/// A tile index as path elements: zero-padded groups of three digits, all but the last
/// prefixed with `x`, so that a file system never has a file and a directory of one name.
pub fn encode_index(index: u64) -> String {
    let mut groups = Vec::new();
    let mut n = index;
    loop {
        groups.push(n % 1000);
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| {
            if i == last {
                format!("{g:03}")
            } else {
                format!("x{g:03}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// What a tile path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    /// `tile/L/N[.p/W]`
    Hashes(TileId),
    /// `tile/entries/N[.p/W]`
    Entries(TileId),
}

impl TilePath {
    /// Parse a path relative to the log prefix; only the canonical spelling is accepted,
    /// so that one resource has one name.
    pub fn parse(path: &str) -> Result<TilePath, LedgerError> {
        let bad = |reason: &str| LedgerError::TilePath {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (first, rest) = match parts.as_slice() {
            ["tile", first, rest @ ..] if !rest.is_empty() => (*first, rest),
            _ => {
                return Err(bad(
                    "expected tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]",
                ));
            }
        };
        let entries = first == "entries";
        let level = if entries {
            0
        } else {
            let l = parse_decimal(first).ok_or_else(|| bad("level is not a decimal number"))?;
            u8::try_from(l)
                .ok()
                .filter(|l| *l <= MAX_TILE_LEVEL)
                .ok_or_else(|| bad("level is above 63"))?
        };
        let (index_parts, width) = match rest.split_last() {
            Some((w, before)) if before.last().is_some_and(|p| p.ends_with(".p")) => {
                let width = parse_decimal(w)
                    .and_then(|w| u16::try_from(w).ok())
                    .filter(|w| (1..TILE_WIDTH).contains(w))
                    .ok_or_else(|| bad("partial width must be 1 to 255"))?;
                let mut idx: Vec<&str> = before.to_vec();
                if let Some(last) = idx.last_mut() {
                    *last = last.trim_end_matches(".p");
                }
                (idx, width)
            }
            _ => (rest.to_vec(), TILE_WIDTH),
        };
        let index = parse_index(&index_parts).ok_or_else(|| bad("malformed tile index"))?;
        let id = TileId {
            level,
            index,
            width,
        };
        Ok(if entries {
            TilePath::Entries(id)
        } else {
            TilePath::Hashes(id)
        })
    }

    /// The canonical path.
    pub fn to_path(&self) -> String {
        match self {
            TilePath::Hashes(id) => id.path(),
            TilePath::Entries(id) => id.entries_path(),
        }
    }
}

/// A decimal number with no sign and no leading zeros.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn parse_index(parts: &[&str]) -> Option<u64> {
    let (last, init) = parts.split_last()?;
    let mut n: u64 = 0;
    for (i, part) in init.iter().chain(std::iter::once(last)).enumerate() {
        let digits = if i < init.len() {
            part.strip_prefix('x')?
        } else {
            part
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let g: u64 = digits.parse().ok()?;
        n = n.checked_mul(1000)?.checked_add(g)?;
    }
    // Canonical form only: no leading all-zero group.
    (encode_index(n).split('/').count() == parts.len()).then_some(n)
}

/// Every tile a tree of `size` leaves has, full and partial, level by level.
pub fn tiles_for_size(size: u64) -> Vec<TileId> {
    let mut tiles = Vec::new();
    for level in 0..=MAX_TILE_LEVEL {
        let count = hashes_at_level(level, size);
        if count == 0 {
            break;
        }
        let last = count.div_ceil(u64::from(TILE_WIDTH));
        tiles.extend((0..last).filter_map(|i| TileId::for_tree(level, i, size)));
    }
    tiles
}

/// The partial tiles of a tree of `size` leaves: the ones a checkpoint of that size makes
/// a log publish beyond its full tiles.
pub fn partial_tiles_for_size(size: u64) -> Vec<TileId> {
    (0..=MAX_TILE_LEVEL)
        .map_while(|level| {
            let count = hashes_at_level(level, size);
            (count > 0).then_some((level, count))
        })
        .filter_map(|(level, count)| TileId::for_tree(level, count / u64::from(TILE_WIDTH), size))
        .collect()
}

/// A hash tile's content: its hashes, concatenated on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTile {
    pub id: TileId,
    pub hashes: Vec<Hash>,
}

impl HashTile {
    /// Parse tile bytes served for `id`; the length must be exactly `width · 32`.
    pub fn from_bytes(id: TileId, bytes: &[u8]) -> Result<HashTile, LedgerError> {
        if bytes.len() != usize::from(id.width) * Hash::LEN {
            return Err(LedgerError::TileContent(format!(
                "{} has {} bytes, expected {}",
                id.path(),
                bytes.len(),
                usize::from(id.width) * Hash::LEN
            )));
        }
        let hashes = bytes
            .chunks_exact(Hash::LEN)
            .map(Hash::from_slice)
            .collect::<Result<_, _>>()?;
        Ok(HashTile { id, hashes })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.hashes.iter().flat_map(|h| h.0).collect()
    }

    /// The hash of the perfect subtree `hashes[start .. start + 2^height]` of this tile.
    fn subtree(&self, start: usize, height: u32) -> Option<Hash> {
        let part = self.hashes.get(start..start + (1usize << height))?;
        Some(root_from_leaf_hashes(part))
    }
}

/// An entry bundle: up to 256 entries, each a big-endian uint16 length and the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryBundle {
    entries: Vec<Vec<u8>>,
}

impl EntryBundle {
    pub fn new(entries: Vec<Vec<u8>>) -> Result<EntryBundle, LedgerError> {
        if entries.len() > usize::from(TILE_WIDTH) {
            return Err(LedgerError::TileContent(format!(
                "a bundle holds at most 256 entries, not {}",
                entries.len()
            )));
        }
        if let Some(e) = entries.iter().find(|e| e.len() > MAX_ENTRY_LEN) {
            return Err(LedgerError::EntryTooLarge(e.len()));
        }
        Ok(EntryBundle { entries })
    }

    pub fn entries(&self) -> &[Vec<u8>] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.iter().map(|e| e.len() + 2).sum());
        for e in &self.entries {
            // Lengths were checked on construction.
            out.extend_from_slice(&(e.len() as u16).to_be_bytes());
            out.extend_from_slice(e);
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<EntryBundle, LedgerError> {
        let mut entries = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (len, tail) = match rest {
                [a, b, tail @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), tail),
                _ => return Err(LedgerError::TileContent("truncated entry length".into())),
            };
            let entry = tail
                .get(..len)
                .ok_or_else(|| LedgerError::TileContent("truncated entry".into()))?;
            entries.push(entry.to_vec());
            rest = &tail[len..];
        }
        EntryBundle::new(entries)
    }

    /// The leaf hashes of the entries, which a level-0 tile must repeat.
    pub fn leaf_hashes(&self) -> Vec<Hash> {
        self.entries.iter().map(|e| leaf_hash(e)).collect()
    }
}

/// Where tiles come from: a database, object storage, a directory, an HTTP client.
pub trait TileReader {
    /// The reader's own error; ledger errors (malformed tiles) convert into it.
    type Error: From<LedgerError>;

    /// The bytes of `tiles`, in the order asked, as served at their paths.
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, Self::Error>;
}

impl<R: TileReader + ?Sized> TileReader for &R {
    type Error = R::Error;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, Self::Error> {
        (**self).read_tiles(tiles)
    }
}

/// Read and parse hash tiles in one batch.
pub fn read_hash_tiles<R: TileReader>(
    reader: &R,
    tiles: &[TileId],
) -> Result<Vec<HashTile>, R::Error> {
    if tiles.is_empty() {
        return Ok(Vec::new());
    }
    let data = reader.read_tiles(tiles)?;
    if data.len() != tiles.len() {
        return Err(LedgerError::TileContent(format!(
            "asked for {} tiles, got {}",
            tiles.len(),
            data.len()
        ))
        .into());
    }
    tiles
        .iter()
        .zip(&data)
        .map(|(id, bytes)| HashTile::from_bytes(*id, bytes).map_err(Into::into))
        .collect()
}

/// The tree of `size` leaves seen through its tiles: a [`HashSource`] for proofs and roots,
/// so a verifier with nothing but a directory of tiles recomputes what a log serves.
///
/// Tiles are not trusted: whatever they yield must still match a signed checkpoint's root,
/// which the proof verifiers check.
#[derive(Debug, Clone)]
pub struct TileHashSource<R> {
    reader: R,
    size: u64,
}

impl<R: TileReader> TileHashSource<R> {
    pub fn new(reader: R, size: u64) -> Self {
        TileHashSource { reader, size }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tile holding `node` and where in it the node's hashes lie.
    fn locate(&self, node: NodeId) -> Result<(TileId, usize, u32), LedgerError> {
        if !node.is_within(self.size) {
            return Err(LedgerError::HashSource(format!(
                "node {node:?} is not in a tree of size {}",
                self.size
            )));
        }
        let level = node.level / TILE_HEIGHT;
        let height = u32::from(node.level % TILE_HEIGHT);
        let first = node.index << height; // within the tile level; fits as the node is in the tree
        let tile_index = first / u64::from(TILE_WIDTH);
        let start = (first % u64::from(TILE_WIDTH)) as usize;
        let tile = TileId::for_tree(level, tile_index, self.size)
            .ok_or_else(|| LedgerError::HashSource(format!("no tile holds node {node:?}")))?;
        Ok((tile, start, height))
    }
}

impl<R: TileReader> HashSource for TileHashSource<R> {
    type Error = R::Error;

    fn node_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, R::Error> {
        let located = nodes
            .iter()
            .map(|n| self.locate(*n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut wanted: Vec<TileId> = located.iter().map(|(t, _, _)| *t).collect();
        wanted.sort();
        wanted.dedup();
        let tiles: BTreeMap<TileId, HashTile> = read_hash_tiles(&self.reader, &wanted)?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        located
            .iter()
            .map(|(id, start, height)| {
                tiles
                    .get(id)
                    .and_then(|t| t.subtree(*start, *height))
                    .ok_or_else(|| {
                        LedgerError::TileContent(format!("{} is missing hashes", id.path())).into()
                    })
            })
            .collect()
    }
}

/// The root of the tree of `size` leaves, from its tiles.
pub fn root_from_tiles<R: TileReader>(reader: R, size: u64) -> Result<Hash, R::Error> {
    crate::merkle::tree_root(&TileHashSource::new(reader, size), size)
}

/// The tiles that change when the tree grows from `old_size` leaves to `new_size`: the
/// partial tiles a log must already have and extend.
pub fn tiles_to_extend(old_size: u64, new_size: u64) -> Vec<TileId> {
    (0..=MAX_TILE_LEVEL)
        .map_while(|level| {
            let old = hashes_at_level(level, old_size);
            let new = hashes_at_level(level, new_size);
            (new > old).then_some((level, old))
        })
        .filter_map(|(level, old)| TileId::for_tree(level, old / u64::from(TILE_WIDTH), old_size))
        .filter(|t| !t.is_full())
        .collect()
}

/// Append leaf hashes to a tree of `old_size` leaves kept as tiles.
///
/// Reads, in one batch, the partial tiles that grow (at most one per level) and returns
/// every tile that is new or wider in the tree of `old_size + leaf_hashes.len()` leaves,
/// full tiles before the partial one on each level, lower levels first. A log stores them
/// all; the work is proportional to the batch, not to the tree.
pub fn append_leaf_hashes<R: TileReader>(
    reader: &R,
    old_size: u64,
    leaf_hashes: &[Hash],
) -> Result<Vec<HashTile>, R::Error> {
    let added = u64::try_from(leaf_hashes.len()).unwrap_or(u64::MAX);
    let new_size = old_size.checked_add(added).ok_or(LedgerError::SizeOrder {
        first: old_size,
        second: u64::MAX,
    })?;
    let partials: BTreeMap<u8, HashTile> =
        read_hash_tiles(reader, &tiles_to_extend(old_size, new_size))?
            .into_iter()
            .map(|t| (t.id.level, t))
            .collect();

    let mut out = Vec::new();
    let mut new_hashes: Vec<Hash> = leaf_hashes.to_vec();
    for level in 0..=MAX_TILE_LEVEL {
        if new_hashes.is_empty() {
            break;
        }
        let old_count = hashes_at_level(level, old_size);
        let first_tile = old_count / u64::from(TILE_WIDTH);
        let mut hashes = match partials.get(&level) {
            Some(t) => t.hashes.clone(),
            None => Vec::new(),
        };
        if hashes.len() as u64 != old_count % u64::from(TILE_WIDTH) {
            return Err(LedgerError::TileContent(format!(
                "partial tile at level {level} should hold {} hashes",
                old_count % u64::from(TILE_WIDTH)
            ))
            .into());
        }
        hashes.append(&mut new_hashes);
        // Each tile that fills up contributes one hash to the level above.
        for (index, chunk) in (first_tile..).zip(hashes.chunks(usize::from(TILE_WIDTH))) {
            let width = chunk.len() as u16; // at most 256
            if width == TILE_WIDTH {
                new_hashes.push(root_from_leaf_hashes(chunk));
            }
            out.push(HashTile {
                id: TileId {
                    level,
                    index,
                    width,
                },
                hashes: chunk.to_vec(),
            });
        }
    }
    Ok(out)
}

/// The entry bundle a log of `size` entries must extend when it grows, if it is partial.
pub fn bundle_to_extend(size: u64) -> Option<TileId> {
    TileId::for_tree(0, size / u64::from(TILE_WIDTH), size)
}

/// Append entries to a log of `old_size` entries kept as bundles. `partial` is the
/// content of [`bundle_to_extend`]`(old_size)` (`None` when the log ends on a full
/// bundle). Returns every bundle that is new or longer, in order.
pub fn append_entries(
    old_size: u64,
    partial: Option<&EntryBundle>,
    entries: &[Vec<u8>],
) -> Result<Vec<(TileId, EntryBundle)>, LedgerError> {
    let expected = (old_size % u64::from(TILE_WIDTH)) as usize;
    let have = partial.map_or(0, EntryBundle::len);
    if have != expected {
        return Err(LedgerError::TileContent(format!(
            "the partial bundle of a log of {old_size} entries holds {expected} entries, not {have}"
        )));
    }
    if let Some(e) = entries.iter().find(|e| e.len() > MAX_ENTRY_LEN) {
        return Err(LedgerError::EntryTooLarge(e.len()));
    }
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut all: Vec<Vec<u8>> = partial.map(|p| p.entries.clone()).unwrap_or_default();
    all.extend(entries.iter().cloned());
    let first = old_size / u64::from(TILE_WIDTH);
    let mut out = Vec::new();
    for (index, chunk) in (first..).zip(all.chunks(usize::from(TILE_WIDTH))) {
        let id = TileId::new(0, index, chunk.len() as u16)?;
        out.push((id, EntryBundle::new(chunk.to_vec())?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_encoding() {
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(999), "999");
        assert_eq!(encode_index(1000), "x001/000");
        assert_eq!(encode_index(1_234_067), "x001/x234/067");
        assert_eq!(parse_index(&["x001", "x234", "067"]), Some(1_234_067));
        assert_eq!(parse_index(&["x000", "067"]), None);
        assert_eq!(parse_index(&["001", "067"]), None);
        assert_eq!(parse_index(&["67"]), None);
        assert_eq!(
            parse_index(&["x018", "x446", "x744", "x073", "x709", "x551", "615"]),
            Some(u64::MAX)
        );
        assert_eq!(
            parse_index(&["x018", "x446", "x744", "x073", "x709", "x551", "616"]),
            None
        );
    }

    #[test]
    fn size_70000_has_the_tiles_the_spec_lists() {
        // The spec's example: 273 full level-0 tiles and one of width 112, one full level-1
        // tile and one of width 17, and a level-2 tile of width 1.
        let tiles = tiles_for_size(70_000);
        let at = |l: u8| tiles.iter().filter(move |t| t.level == l);
        assert_eq!(at(0).filter(|t| t.is_full()).count(), 273);
        assert_eq!(
            at(0)
                .filter(|t| !t.is_full())
                .map(|t| t.width)
                .collect::<Vec<_>>(),
            [112]
        );
        assert_eq!(at(1).map(|t| t.width).collect::<Vec<_>>(), [256, 17]);
        assert_eq!(at(2).map(|t| t.width).collect::<Vec<_>>(), [1]);
        assert_eq!(tiles.len(), 277);
        assert_eq!(
            partial_tiles_for_size(256),
            vec![TileId {
                level: 1,
                index: 0,
                width: 1
            }]
        );
        assert!(tiles_for_size(0).is_empty());
    }

    #[test]
    fn entry_bundles_round_trip() {
        let b = EntryBundle::new(vec![vec![], b"ab".to_vec()]).unwrap();
        assert_eq!(b.to_bytes(), [0, 0, 0, 2, b'a', b'b']);
        assert_eq!(EntryBundle::from_bytes(&b.to_bytes()).unwrap(), b);
        assert!(EntryBundle::from_bytes(&[0, 3, 1]).is_err());
        assert!(EntryBundle::from_bytes(&[0]).is_err());
        assert_eq!(
            EntryBundle::new(vec![vec![0; 70_000]]),
            Err(LedgerError::EntryTooLarge(70_000))
        );
    }
}
