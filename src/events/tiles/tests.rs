use sha2::{Digest, Sha256};

use super::*;
use crate::events::merkle::{consistency_proof, inclusion_proof, leaf_hash, root};

#[test]
fn paths_follow_the_spec_examples() {
    let t = |kind, index, width| TileRef { kind, index, width };
    let l0 = TileKind::Hashes { level: 0 };
    assert_eq!(t(l0, 1_234_067, 256).path(), "tile/0/x001/x234/067");
    assert_eq!(t(l0, 0, 256).path(), "tile/0/000");
    assert_eq!(t(TileKind::Hashes { level: 1 }, 256, 8).path(), "tile/1/256.p/8");
    assert_eq!(t(TileKind::Entries, 1000, 256).path(), "tile/entries/x001/000");
    for tile in [
        t(l0, 1_234_067, 256),
        t(l0, 0, 1),
        t(TileKind::Hashes { level: 63 }, 999, 255),
        t(TileKind::Entries, 1000, 17),
    ] {
        let path = tile.path();
        assert_eq!(TileRef::parse(path.strip_prefix("tile/").unwrap()), Ok(tile), "{path}");
    }
}

#[test]
fn every_tile_has_one_spelling() {
    for bad in [
        "",
        "0",
        "00/000",
        "64/000",
        "0/00",
        "0/0000",
        "0/x000/001",
        "0/001/002",
        "0/x001",
        "0/000.p/0",
        "0/000.p/256",
        "0/000.p/08",
        "0/000.p",
        "entry/000",
        "0/x001/x002/003/.p/1",
        "-1/000",
        "0/abc",
    ] {
        assert!(TileRef::parse(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn widths_follow_the_tree() {
    assert_eq!(tile_width(0, 0, 0), 0);
    assert_eq!(tile_width(0, 0, 255), 255);
    assert_eq!(tile_width(0, 0, 300), 256);
    assert_eq!(tile_width(0, 1, 300), 44);
    assert_eq!(tile_width(1, 0, 300), 1);
    assert_eq!(tile_width(1, 0, 65_536 * 2), 256);
    assert_eq!(tile_width(1, 1, 65_536 * 2 + 256 * 3), 256);
    assert_eq!(tile_width(1, 2, 65_536 * 2 + 256 * 3), 3);
    assert_eq!(tile_width(2, 0, 65_535), 0);
    assert_eq!(tile_width(63, 0, u64::MAX), 0);
}

/// Tiles computed the slow way, straight from the definition.
struct NaiveTiles(Vec<Hash32>, usize);

impl TileReader for NaiveTiles {
    type Error = MerkleError;
    fn read_tile(&mut self, level: u8, index: u64, width: u64) -> Result<Vec<Hash32>, MerkleError> {
        self.1 += 1;
        let span = 1usize << (8 * level as usize);
        let first = index as usize * 256;
        Ok((first..first + width as usize).map(|i| root(&self.0[i * span..(i + 1) * span])).collect())
    }
}

fn leaves(n: usize) -> Vec<Hash32> {
    (0..n as u64).map(|i| leaf_hash(&Sha256::digest(i.to_be_bytes()).into())).collect()
}

#[test]
fn proofs_from_tiles_equal_proofs_from_all_leaves() {
    let all = leaves(70_000);
    for n in [1usize, 2, 255, 256, 257, 511, 65_535, 65_536, 65_537, 70_000] {
        let d = &all[..n];
        let mut tree = TiledTree::new(NaiveTiles(d.to_vec(), 0), n as u64);
        assert_eq!(tree.root().unwrap(), root(d), "root at {n}");
        for index in [0, n / 3, n - 1] {
            let want = inclusion_proof(d, index as u64).unwrap();
            assert_eq!(
                merkle::inclusion_proof_from(&mut tree, index as u64, n as u64).unwrap(),
                want,
                "n={n} i={index}"
            );
        }
        for old in [1, n / 2, n - 1].into_iter().filter(|&o| o >= 1) {
            let want = consistency_proof(d, old as u64).unwrap();
            assert_eq!(merkle::consistency_proof_from(&mut tree, old as u64, n as u64).unwrap(), want, "n={n} m={old}");
        }
        let peaks = tree.peaks().unwrap();
        let acc = merkle::MerkleAccumulator::from_peaks(n as u64, peaks).unwrap();
        assert_eq!(acc.root(), root(d));
    }
    // One tile per tile level: a proof in a tree of 70,000 reads at most 2 levels × (path + border) tiles.
    let mut tree = TiledTree::new(NaiveTiles(all.clone(), 0), 70_000);
    merkle::inclusion_proof_from(&mut tree, 12_345, 70_000).unwrap();
    assert!(tree.tiles_read() <= 4, "{} tiles", tree.tiles_read());
}

#[test]
fn a_node_outside_the_tree_is_refused_not_invented() {
    let mut tree = TiledTree::new(NaiveTiles(leaves(300), 0), 300);
    assert!(tree.node(0, 300).is_err());
    assert!(tree.node(8, 1).is_err());
    assert!(tree.node(2, 74).is_ok());
    assert!(merkle::inclusion_proof_from(&mut tree, 300, 300).is_err());
}

#[test]
fn entry_bundles_are_length_prefixed_event_hashes() {
    let a = [7u8; 32];
    let bytes = encode_entries(&[a, a]);
    assert_eq!(bytes.len(), 68);
    assert_eq!(&bytes[..2], &[0, 32]);
    assert_eq!(&bytes[2..34], &a);
}
