//! The Merkle tree as C2SP `tlog-tiles` (<https://c2sp.org/tlog-tiles>).
//!
//! A tile is a row of up to 256 consecutive hashes of one tree level: tile level `L` holds the
//! nodes at tree height `8·L`, and tile `N` of that level holds nodes `256·N …`. Level 0 holds the
//! leaf hashes. A tile whose 256 nodes all exist is *full* and never changes; the rightmost tile of
//! a level is *partial* (`.p/W`, its first `W` nodes), and a partial tile of a given width never
//! changes either — the tree only grows to the right. Every node of the tree is either in a tile or
//! the root of at most 255 consecutive hashes of the tile below, so any proof reads one tile per
//! level of tiles: O(log₂₅₆ n) reads.
//!
//! Entry bundles (`tile/entries/N`) hold the tree's entries, each a uint16 big-endian length and
//! the bytes. Vadyl's entries are the 32-byte **event hashes**: the leaf hash of an entry is
//! `SHA-256(0x00 ‖ entry)`, so a standard client recomputes exactly the level-0 tiles, and the
//! event each entry commits to is one `GET /events/{position}` away (its canonical encoding hashes
//! to the entry). Canonical events themselves could not be entries: they may exceed the 65,535-byte
//! entry limit, and the tree is over their hashes, not their bytes.
//!
//! Pure: paths, widths and the [`NodeSource`] over a [`TileReader`]; no I/O.

use std::collections::HashMap;

use super::merkle::{self, Hash32, MerkleError, NodeSource};
use super::store::{EventStore, StoreError};

/// Tree levels per tile level.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// The spec's bound on `L` in a tile path.
pub const MAX_TILE_LEVEL: u8 = 63;

/// What a tile path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// Hashes of tree height `8·level`.
    Hashes { level: u8 },
    /// The entries of the leaves under level-0 tile `index`.
    Entries,
}

/// One tile: kind, index and width (1 to 256; 256 is a full tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRef {
    pub kind: TileKind,
    pub index: u64,
    pub width: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilePathError {
    #[error("a tile path is `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`")]
    Shape,
    #[error("the tile level must be a decimal from 0 to 63 without leading zeros")]
    Level,
    #[error("the tile index must be 3-digit groups, all but the last prefixed with `x`, without a leading zero group")]
    Index,
    #[error("a partial tile's width must be a decimal from 1 to 255 without leading zeros")]
    Width,
}

impl TileRef {
    /// Parses the part of a tile URL after `tile/`: `0/x001/x234/067`, `1/000.p/17`, `entries/005`.
    /// Strict: every tile has exactly one spelling.
    pub fn parse(path: &str) -> Result<Self, TilePathError> {
        let mut parts: Vec<&str> = path.split('/').collect();
        let first = parts.first().copied().ok_or(TilePathError::Shape)?;
        let kind = if first == "entries" {
            TileKind::Entries
        } else {
            TileKind::Hashes {
                level: parse_decimal(first, u64::from(MAX_TILE_LEVEL)).ok_or(TilePathError::Level)? as u8,
            }
        };
        parts.remove(0);
        // A partial tile ends `NNN.p/W`.
        let mut width = TILE_WIDTH as u16;
        if parts.len() >= 2 && parts[parts.len() - 2].ends_with(".p") {
            let w = parts.pop().ok_or(TilePathError::Shape)?;
            width = parse_decimal(w, TILE_WIDTH - 1).filter(|&w| w >= 1).ok_or(TilePathError::Width)? as u16;
            let last = parts.len() - 1;
            parts[last] = parts[last].trim_end_matches(".p");
        }
        if parts.is_empty() {
            return Err(TilePathError::Shape);
        }
        let mut index: u64 = 0;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let digits = if last { Some(*part) } else { part.strip_prefix('x') };
            let group = digits
                .filter(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u64>().ok())
                .ok_or(TilePathError::Index)?;
            if i == 0 && group == 0 && !last {
                return Err(TilePathError::Index);
            }
            index = index.checked_mul(1000).and_then(|n| n.checked_add(group)).ok_or(TilePathError::Index)?;
        }
        Ok(Self { kind, index, width })
    }

    /// The path below the log's prefix, e.g. `tile/0/x001/x234/067.p/8`.
    pub fn path(&self) -> String {
        let level = match self.kind {
            TileKind::Hashes { level } => level.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut groups = Vec::new();
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        let index = groups
            .iter()
            .rev()
            .enumerate()
            .map(|(i, g)| if i + 1 == groups.len() { format!("{g:03}") } else { format!("x{g:03}") })
            .collect::<Vec<_>>()
            .join("/");
        if self.is_full() {
            format!("tile/{level}/{index}")
        } else {
            format!("tile/{level}/{index}.p/{}", self.width)
        }
    }

    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The tile level whose nodes this tile's bytes are (entries belong to level 0).
    pub fn level(&self) -> u8 {
        match self.kind {
            TileKind::Hashes { level } => level,
            TileKind::Entries => 0,
        }
    }
}

fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse::<u64>().ok().filter(|&v| v <= max)
}

/// How many nodes of tile `index` at tile `level` exist in a tree of `tree_size` leaves (0 to 256).
pub fn tile_width(level: u8, index: u64, tree_size: u64) -> u64 {
    let nodes = tree_size.checked_shr(TILE_HEIGHT * u32::from(level)).unwrap_or(0);
    nodes.saturating_sub(index.saturating_mul(TILE_WIDTH)).min(TILE_WIDTH)
}

/// Tile bytes: the hashes, concatenated.
pub fn encode_hashes(hashes: &[Hash32]) -> Vec<u8> {
    hashes.concat()
}

/// An entry bundle: each entry as a uint16 big-endian length and its bytes.
pub fn encode_entries(event_hashes: &[Hash32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event_hashes.len() * 34);
    for h in event_hashes {
        out.extend_from_slice(&(h.len() as u16).to_be_bytes());
        out.extend_from_slice(h);
    }
    out
}

/// Reads the first `width` hashes of tile `index` at tile `level`.
pub trait TileReader {
    type Error: From<MerkleError>;
    fn read_tile(&mut self, level: u8, index: u64, width: u64) -> Result<Vec<Hash32>, Self::Error>;
}

/// A [`NodeSource`] over the tiles of a tree of `tree_size` leaves. Each tile is read once.
pub struct TiledTree<R> {
    reader: R,
    tree_size: u64,
    tiles: HashMap<(u8, u64), Vec<Hash32>>,
}

impl<R: TileReader> TiledTree<R> {
    pub fn new(reader: R, tree_size: u64) -> Self {
        Self { reader, tree_size, tiles: HashMap::new() }
    }

    /// Tiles read so far.
    pub fn tiles_read(&self) -> usize {
        self.tiles.len()
    }

    /// The RFC 6962 root of the whole tree.
    pub fn root(&mut self) -> Result<Hash32, R::Error> {
        merkle::range_root(self, 0, self.tree_size)
    }

    /// The accumulator's peaks: the perfect subtrees the tree decomposes into, leftmost first.
    pub fn peaks(&mut self) -> Result<Vec<Hash32>, R::Error> {
        merkle::range_peaks(self, 0, self.tree_size)
    }
}

impl<R: TileReader> NodeSource for TiledTree<R> {
    type Error = R::Error;

    fn node(&mut self, level: u32, index: u64) -> Result<Hash32, R::Error> {
        let out_of_range = || MerkleError::IndexOutOfRange { index: index << level, tree_size: self.tree_size };
        let tile_level = level / TILE_HEIGHT;
        let below = level % TILE_HEIGHT;
        // The node is the root of 2^below consecutive hashes of its tile level, all in one tile.
        let first = index.checked_shl(below).ok_or_else(out_of_range)?;
        let tile = first / TILE_WIDTH;
        let offset = (first % TILE_WIDTH) as usize;
        let count = 1usize << below;
        let level_u8 = u8::try_from(tile_level).map_err(|_| out_of_range())?;
        let width = tile_width(level_u8, tile, self.tree_size);
        if (offset + count) as u64 > width {
            return Err(out_of_range().into());
        }
        let hashes = match self.tiles.entry((level_u8, tile)) {
            std::collections::hash_map::Entry::Occupied(cached) => cached.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let hashes = self.reader.read_tile(level_u8, tile, width)?;
                if hashes.len() as u64 != width {
                    return Err(out_of_range().into());
                }
                slot.insert(hashes)
            }
        };
        Ok(merkle::root(&hashes[offset..offset + count]))
    }
}

/// Why a tree over the store could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Merkle(#[from] MerkleError),
}

/// The log's stored tiles as a [`TileReader`].
pub struct StoreTiles<'a>(pub &'a dyn EventStore);

impl TileReader for StoreTiles<'_> {
    type Error = TreeError;
    fn read_tile(&mut self, level: u8, index: u64, width: u64) -> Result<Vec<Hash32>, TreeError> {
        let hashes = self.0.tile(level, index, width)?;
        if hashes.len() as u64 != width {
            return Err(StoreError::Corrupt {
                position: index.saturating_mul(TILE_WIDTH),
                reason: format!("tile {level}/{index} has {} of its {width} hashes", hashes.len()),
            }
            .into());
        }
        Ok(hashes)
    }
}

/// The Merkle tree of the log's first `tree_size` events, read from the store's tiles.
pub type StoredTree<'a> = TiledTree<StoreTiles<'a>>;

impl<'a> StoredTree<'a> {
    pub fn over(store: &'a dyn EventStore, tree_size: u64) -> Self {
        TiledTree::new(StoreTiles(store), tree_size)
    }
}

#[cfg(test)]
mod tests;
