//! The log as remote auditors read it: pages of events by position with filters, one event by
//! position or by id, and consistency proofs between two signed tree sizes.
//!
//! Events leave here exactly as stored (the canonical envelope with `prevHash` and `hash`), so a
//! reader can recompute every hash and link without trusting the server.

use serde::{Deserialize, Serialize};

use super::audit::{AuditError, TrustedKey};
use crate::events::envelope::RecordedEvent;
use crate::events::merkle::{self, Hash32};
use crate::events::store::{EventStore, StoreError};
use crate::events::tiles::{self, StoreTiles, StoredTree, TileKind, TileReader, TileRef};

/// Largest page a reader may ask for.
pub const MAX_PAGE: usize = 1000;
/// Page size when the reader names none.
pub const DEFAULT_PAGE: usize = 100;
/// Most events one page request examines: a filter that matches rarely still answers promptly,
/// with a cursor to go on from, instead of scanning the whole log in one request.
pub const MAX_SCAN: u64 = 10_000;

/// Which events a page holds. Filters combine with AND; times compare as RFC 3339 UTC strings,
/// which is how the writer assigns them.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events after this position (the cursor; 0 = from the start).
    pub after: u64,
    pub limit: usize,
    pub stream: Option<String>,
    pub event_type: Option<String>,
    pub actor: Option<String>,
    /// `recordedAt >= since`.
    pub since: Option<String>,
    /// `recordedAt < until`.
    pub until: Option<String>,
}

impl EventQuery {
    fn admits(&self, e: &RecordedEvent) -> bool {
        self.stream.as_ref().is_none_or(|s| *s == e.stream_id)
            && self.event_type.as_ref().is_none_or(|t| *t == e.event_type)
            && self.actor.as_ref().is_none_or(|a| *a == e.metadata.actor)
            && self.since.as_ref().is_none_or(|s| e.recorded_at.as_str() >= s.as_str())
            && self.until.as_ref().is_none_or(|u| e.recorded_at.as_str() < u.as_str())
    }
}

/// One page of the log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    /// Canonical envelopes, in position order.
    pub events: Vec<serde_json::Value>,
    /// The cursor for the next page (`after=`), or `None` when the page reached the head.
    pub next: Option<u64>,
    /// The log's head position when the page was read.
    pub head: u64,
}

/// Reads one page: up to `limit` events matching `query` after its cursor, examining at most
/// [`MAX_SCAN`] positions. The cursor is a position, so pages are stable while the log grows.
pub fn page(store: &dyn EventStore, query: &EventQuery) -> Result<EventPage, AuditError> {
    let head = store.head_position()?;
    let limit = query.limit.clamp(1, MAX_PAGE);
    let from = query.after.saturating_add(1);
    let to = head.min(query.after.saturating_add(MAX_SCAN));
    let mut events = Vec::new();
    let mut last_seen = query.after;
    // Windows a little larger than a page: a full page stops the scan within one window.
    let window = (limit as u64).max(256);
    let mut start = from;
    while start <= to && events.len() < limit {
        let end = to.min(start + window - 1);
        store.read_range(start, end, &mut |e: RecordedEvent| {
            if events.len() < limit {
                last_seen = e.position;
                if query.admits(&e) {
                    events.push(envelope_json(&e)?);
                }
            }
            Ok(())
        })?;
        start = end + 1;
    }
    let next = (last_seen < head).then_some(last_seen);
    Ok(EventPage { events, next, head })
}

/// The canonical envelope of `e` as JSON.
pub fn envelope_json(e: &RecordedEvent) -> Result<serde_json::Value, StoreError> {
    serde_json::from_slice(&e.canonical_line())
        .map_err(|err| StoreError::Corrupt { position: e.position, reason: format!("unencodable envelope: {err}") })
}

/// The RFC 6962 / RFC 9162 consistency proof between two tree sizes, with the signed checkpoint of
/// the larger one; the verifier brings the checkpoint it remembers for the smaller one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistencyProof {
    pub format: String,
    pub old_size: u64,
    pub tree_size: u64,
    /// Hex-encoded node hashes, in RFC 9162 §2.1.4 order.
    pub path: Vec<String>,
    /// The C2SP signed note of the checkpoint over `tree_size` events.
    pub checkpoint: String,
}

pub const CONSISTENCY_FORMAT: &str = "vadyl-consistency-proof/1";

/// Builds the proof that the tree of `old_size` events is a prefix of the tree the checkpoint
/// `checkpoint_note` (over `tree_size` events) commits to.
pub fn prove_consistency(
    store: &dyn EventStore,
    old_size: u64,
    checkpoint_note: &str,
    tree_size: u64,
) -> Result<ConsistencyProof, AuditError> {
    if old_size == 0 {
        return Err(AuditError::BadProof("a consistency proof starts from a tree of at least 1 event".into()));
    }
    if old_size >= tree_size {
        // Nothing to prove: the verifier compares the two signed checkpoints themselves (equal, or a
        // fork when the roots differ or this tree is smaller).
        return Ok(ConsistencyProof {
            format: CONSISTENCY_FORMAT.to_owned(),
            old_size,
            tree_size,
            path: Vec::new(),
            checkpoint: checkpoint_note.to_owned(),
        });
    }
    let path = merkle::consistency_proof_from(&mut StoredTree::over(store, tree_size), old_size, tree_size)
        .map_err(AuditError::from)?;
    Ok(ConsistencyProof {
        format: CONSISTENCY_FORMAT.to_owned(),
        old_size,
        tree_size,
        path: path.iter().map(hex::encode).collect(),
        checkpoint: checkpoint_note.to_owned(),
    })
}

/// What a verified consistency proof established.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistencySummary {
    pub old_size: u64,
    pub old_root: String,
    pub tree_size: u64,
    pub root_hash: String,
}

/// Verifies offline that the remembered checkpoint `old_note` and the proof's checkpoint are both
/// signed by the trusted key and that the proof connects them. Two checkpoints of one size with
/// different roots, or a newer tree smaller than the remembered one, are a fork and are refused
/// naming both.
pub fn verify_consistency(
    proof: &ConsistencyProof,
    old_note: &str,
    trusted: &TrustedKey,
) -> Result<ConsistencySummary, AuditError> {
    let fail = |m: String| AuditError::BadProof(m);
    if proof.format != CONSISTENCY_FORMAT {
        return Err(fail(format!("unknown format {:?}", proof.format)));
    }
    let old = trusted.verify_note(old_note).map_err(|e| fail(format!("the remembered checkpoint: {e}")))?;
    let new = trusted.verify_note(&proof.checkpoint).map_err(|e| fail(format!("the new checkpoint: {e}")))?;
    let describe = |size: u64, root: &Hash32| format!("{size} events, root {}", hex::encode(root));
    if new.tree_size < old.tree_size {
        return Err(AuditError::Fork(format!(
            "the new checkpoint ({}) is smaller than the remembered one ({}): the log was truncated or forked",
            describe(new.tree_size, &new.root_hash),
            describe(old.tree_size, &old.root_hash)
        )));
    }
    if new.tree_size == old.tree_size && new.root_hash != old.root_hash {
        return Err(AuditError::Fork(format!(
            "two checkpoints over {} events disagree: remembered root {}, new root {}",
            old.tree_size,
            hex::encode(old.root_hash),
            hex::encode(new.root_hash)
        )));
    }
    if proof.old_size != old.tree_size || proof.tree_size != new.tree_size {
        // A proof is only ever asked for from the remembered size, to the checkpoint it carries.
        return Err(fail(format!(
            "the proof is from {} to {} events, the checkpoints are over {} and {}",
            proof.old_size, proof.tree_size, old.tree_size, new.tree_size
        )));
    }
    let path = decode_path(&proof.path)?;
    merkle::verify_consistency(old.tree_size, new.tree_size, &old.root_hash, &new.root_hash, &path).map_err(|e| {
        AuditError::Fork(format!(
            "the remembered checkpoint ({}) and the new one ({}) are not connected by the proof: {e}",
            describe(old.tree_size, &old.root_hash),
            describe(new.tree_size, &new.root_hash)
        ))
    })?;
    Ok(ConsistencySummary {
        old_size: old.tree_size,
        old_root: hex::encode(old.root_hash),
        tree_size: new.tree_size,
        root_hash: hex::encode(new.root_hash),
    })
}

/// Hex node hashes as 32-byte hashes.
pub fn decode_path(path: &[String]) -> Result<Vec<Hash32>, AuditError> {
    path.iter()
        .map(|h| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out)
                .map(|()| out)
                .map_err(|_| AuditError::BadProof(format!("proof entry {h:?} is not 32 hex bytes")))
        })
        .collect()
}

/// One tile's bytes as `tlog-tiles` serves them, or `None` when the log does not have all of its
/// `width` nodes yet. Tiles are read up to the log's head, not the newest checkpoint: a tile never
/// changes once it exists, so a reader may fetch ahead of the checkpoint it verifies against.
pub fn tile_bytes(store: &dyn EventStore, tile: TileRef) -> Result<Option<Vec<u8>>, AuditError> {
    let size = store.head_position()?;
    let width = u64::from(tile.width);
    if tiles::tile_width(tile.level(), tile.index, size) < width {
        return Ok(None);
    }
    let bytes = match tile.kind {
        TileKind::Hashes { level } => tiles::encode_hashes(&StoreTiles(store).read_tile(level, tile.index, width)?),
        TileKind::Entries => {
            let first = tile.index * tiles::TILE_WIDTH + 1;
            let hashes = store.event_hashes(first, first + width - 1)?;
            if hashes.len() as u64 != width {
                return Err(AuditError::Store(StoreError::Corrupt {
                    position: first,
                    reason: format!("{} has {} of its {width} entries", tile.path(), hashes.len()),
                }));
            }
            tiles::encode_entries(&hashes)
        }
    };
    Ok(Some(bytes))
}
