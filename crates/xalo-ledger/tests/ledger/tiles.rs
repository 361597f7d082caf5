//! Tile paths from the C2SP tlog-tiles spec, and trees kept as tiles: built batch by
//! batch, they hold the same hashes, root and proofs as the tree itself.

use std::collections::HashMap;

use proptest::prelude::*;
use xalo_ledger::merkle::leaf_hash;
use xalo_ledger::proof::{consistency_proof, inclusion_proof};
use xalo_ledger::tile::{
    EntryBundle, TileHashSource, append_entries, append_leaf_hashes, bundle_to_extend,
    encode_index, partial_tiles_for_size, root_from_tiles, tiles_for_size,
};
use xalo_ledger::{Hash, LedgerError, MemoryTree, TileId, TilePath, TileReader};

/// Tiles in a map, as a directory or a bucket would hold them.
#[derive(Default)]
struct TileStore {
    tiles: HashMap<TileId, Vec<u8>>,
    reads: std::cell::Cell<usize>,
}

impl TileReader for TileStore {
    type Error = LedgerError;
    fn read_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, LedgerError> {
        self.reads.set(self.reads.get() + 1);
        tiles
            .iter()
            .map(|t| {
                self.tiles
                    .get(t)
                    .cloned()
                    .ok_or_else(|| LedgerError::HashSource(format!("no {}", t.path())))
            })
            .collect()
    }
}

impl TileStore {
    fn append(&mut self, size: u64, leaves: &[Hash]) {
        for t in append_leaf_hashes(&*self, size, leaves).unwrap() {
            self.tiles.insert(t.id, t.to_bytes());
        }
    }
}

#[test]
fn index_path_elements_from_the_spec() {
    assert_eq!(encode_index(1_234_067), "x001/x234/067");
    let id = TileId::new(0, 1_234_067, 256).unwrap();
    assert_eq!(id.path(), "tile/0/x001/x234/067");
    assert_eq!(id.entries_path(), "tile/entries/x001/x234/067");
    let partial = TileId::new(1, 1_234_067, 17).unwrap();
    assert_eq!(partial.path(), "tile/1/x001/x234/067.p/17");
    assert_eq!(TileId::new(2, 0, 1).unwrap().path(), "tile/2/000.p/1");
}

#[test]
fn tile_paths_parse_canonically() {
    for (path, want) in [
        ("tile/0/000", TilePath::Hashes(TileId::full(0, 0))),
        (
            "tile/3/x123/x456/078",
            TilePath::Hashes(TileId::full(3, 123_456_078)),
        ),
        (
            "tile/3/x123/x456/078.p/2",
            TilePath::Hashes(TileId::new(3, 123_456_078, 2).unwrap()),
        ),
        (
            "tile/entries/x001/x234/067.p/255",
            TilePath::Entries(TileId::new(0, 1_234_067, 255).unwrap()),
        ),
        ("tile/63/999", TilePath::Hashes(TileId::full(63, 999))),
    ] {
        assert_eq!(TilePath::parse(path).unwrap(), want, "{path}");
        assert_eq!(want.to_path(), path);
    }
    for bad in [
        "tile/0/001/002",   // inner element without x
        "tile/0/x000/001",  // leading zero group
        "tile/0/1",         // not three digits
        "tile/00/001",      // level with a leading zero
        "tile/64/001",      // level too high
        "tile/0/001.p/256", // a full tile has no .p
        "tile/0/001.p/0",   // empty tiles are never served
        "tile/0/001.p/07",  // width with a leading zero
        "tile/0/-01",
        "tile/data/001",
        "tiles/0/001",
        "tile/0",
        "tile/0/x001",
        "tile/entries/x001/x234",
    ] {
        assert!(TilePath::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn tree_of_70000_as_tiles() {
    let n = 70_000u64;
    let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut tree = MemoryTree::new();
    let mut store = TileStore::default();
    let mut size = 0u64;
    // Uneven batches, so partial tiles are extended at every level.
    for batch in [1usize, 255, 1, 300, 65_000, 13, 4_430].iter().copied() {
        let chunk = &leaves[size as usize..size as usize + batch];
        let reads_before = store.reads.get();
        store.append(size, chunk);
        assert!(
            store.reads.get() - reads_before <= 1,
            "one batched read per append"
        );
        tree.append_leaf_hashes(chunk);
        size += batch as u64;
        assert_eq!(
            root_from_tiles(&store, size).unwrap(),
            tree.root(),
            "size {size}"
        );
    }
    assert_eq!(size, n);
    // Every tile of the final tree is there with the right width.
    for id in tiles_for_size(n) {
        let bytes = store.tiles.get(&id).unwrap();
        assert_eq!(bytes.len(), usize::from(id.width) * 32);
    }
    let partial: Vec<(u8, u16)> = partial_tiles_for_size(n)
        .iter()
        .map(|t| (t.level, t.width))
        .collect();
    assert_eq!(partial, [(0, 112), (1, 17), (2, 1)]);

    // Proofs from tiles equal proofs from the stored hashes.
    let tiles = TileHashSource::new(&store, n);
    for index in [0u64, 1, 255, 256, 65_535, 65_536, 69_999] {
        assert_eq!(
            inclusion_proof(&tiles, index, n).unwrap(),
            inclusion_proof(&tree, index, n).unwrap()
        );
    }
    for first in [1u64, 256, 257, 65_536, 65_557, 69_999] {
        assert_eq!(
            consistency_proof(&tiles, first, n).unwrap(),
            consistency_proof(&tree, first, n).unwrap()
        );
    }
    // A tile of the wrong length is refused, not misread.
    let id = TileId::full(0, 3);
    store.tiles.insert(id, vec![0; 100]);
    assert!(inclusion_proof(&TileHashSource::new(&store, n), 3 * 256, n).is_err());
}

#[test]
fn entry_bundles_grow_with_the_log() {
    let mut bundles: HashMap<TileId, EntryBundle> = HashMap::new();
    let mut size = 0u64;
    let mut all = Vec::new();
    for batch in [3usize, 253, 1, 600] {
        let entries: Vec<Vec<u8>> = (0..batch)
            .map(|i| format!("entry {}", size + i as u64).into_bytes())
            .collect();
        let partial = bundle_to_extend(size).and_then(|id| bundles.get(&id).cloned());
        for (id, b) in append_entries(size, partial.as_ref(), &entries).unwrap() {
            assert_eq!(EntryBundle::from_bytes(&b.to_bytes()).unwrap(), b);
            bundles.insert(id, b);
        }
        size += batch as u64;
        all.extend(entries);
    }
    let mut seen = Vec::new();
    for id in tiles_for_size(size).into_iter().filter(|t| t.level == 0) {
        seen.extend(bundles[&id].entries().iter().cloned());
    }
    assert_eq!(seen, all);
    // A partial bundle of the wrong length is refused.
    let wrong = EntryBundle::new(vec![vec![1]]).unwrap();
    assert!(append_entries(5, Some(&wrong), &[vec![2]]).is_err());
    assert!(matches!(
        append_entries(0, None, &[vec![0; 65_536]]),
        Err(LedgerError::EntryTooLarge(65_536))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tiles_built_in_random_batches_match_the_tree(batches in prop::collection::vec(1usize..700, 1..8)) {
        let mut store = TileStore::default();
        let mut tree = MemoryTree::new();
        let mut size = 0u64;
        let mut sizes = Vec::new();
        for b in batches {
            let leaves: Vec<Hash> = (size..size + b as u64).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            store.append(size, &leaves);
            tree.append_leaf_hashes(&leaves);
            size += b as u64;
            sizes.push(size);
        }
        for &s in &sizes {
            prop_assert_eq!(root_from_tiles(&store, s).unwrap(), xalo_ledger::merkle::tree_root(&tree, s).unwrap());
            let src = TileHashSource::new(&store, s);
            let index = s / 2;
            prop_assert_eq!(inclusion_proof(&src, index, s).unwrap(), inclusion_proof(&tree, index, s).unwrap());
            prop_assert_eq!(consistency_proof(&src, sizes[0], s).unwrap(), consistency_proof(&tree, sizes[0], s).unwrap());
        }
    }
}
