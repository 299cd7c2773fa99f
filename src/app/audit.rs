//! Audit: verify the log, replay it to a position, export it, prove an event's inclusion, and verify
//! exports and proofs offline with nothing but the registry's public key.
//!
//! Verification trusts nothing stored: it recomputes every event's hash from its canonical
//! encoding, follows the `prevHash` chain, rebuilds the RFC 6962 Merkle tree and checks every
//! signed checkpoint against the key the auditor supplies (not a key read from the log).

use std::io::Write;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use crate::events::checkpoint::{self, Checkpoint};
use crate::events::domain::{CheckpointSigned, DomainEvent};
use crate::events::envelope::{RecordedEvent, GENESIS_PREV_HASH};
use crate::events::merkle::{self, Hash32, MerkleAccumulator, MerkleError};
use crate::events::store::{EventStore, StoreError};
use crate::events::tiles::{self, StoredTree, TreeError};
use crate::keys::KEY_NAME;
use crate::projections::{ProjectionDigests, Projections};

pub const EXPORT_FORMAT: &str = "vadyl-export/1";
pub const PROOF_FORMAT: &str = "vadyl-inclusion-proof/1";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("position {position}: {reason}")]
    BadEvent { position: u64, reason: String },
    #[error("line {line}: {reason}")]
    BadExport { line: usize, reason: String },
    #[error("the proof does not verify: {0}")]
    BadProof(String),
    #[error("no checkpoint is signed yet")]
    NoCheckpoint,
    #[error("there is no event at position {0}")]
    NoEvent(u64),
    #[error("position {position} is not covered by a signed checkpoint yet (the newest covers {tree_size} events); the registry signs one on its cadence")]
    NotCovered { position: u64, tree_size: u64 },
    #[error("the history forked: {0}")]
    Fork(String),
    #[error("the public key is not usable: {0}")]
    BadKey(String),
    #[error("the export cannot be written")]
    Write(#[source] std::io::Error),
    #[error("the export cannot be read")]
    Read(#[source] std::io::Error),
}

impl From<MerkleError> for AuditError {
    fn from(e: MerkleError) -> Self {
        Self::BadProof(e.to_string())
    }
}

impl From<TreeError> for AuditError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::Store(e) => Self::Store(e),
            TreeError::Merkle(e) => e.into(),
        }
    }
}

/// The trust root an auditor supplies: a signed-note verifier key (`name+id+base64`, as `vadyl key
/// show` prints it) or a bare base64/hex ed25519 public key (then the name is `vadyl-registry`).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub name: String,
    pub key: VerifyingKey,
}

impl TrustedKey {
    pub fn parse(text: &str) -> Result<Self, AuditError> {
        let text = text.trim();
        if let Ok((name, key)) = checkpoint::parse_verifier_key(text) {
            return Ok(Self { name, key });
        }
        let bytes = if text.len() == 64 {
            hex::decode(text).map_err(|_| AuditError::BadKey("64 characters but not hex".into()))?
        } else {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| AuditError::BadKey("expected a verifier key, base64 or hex".into()))?
        };
        let arr: [u8; 32] =
            bytes.try_into().map_err(|_| AuditError::BadKey("an ed25519 public key is 32 bytes".into()))?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|e| AuditError::BadKey(e.to_string()))?;
        Ok(Self { name: KEY_NAME.to_owned(), key })
    }

    /// The checkpoint a signed note carries, if the trusted key signed it.
    pub fn verify_note(&self, note: &str) -> Result<Checkpoint, String> {
        checkpoint::verify_note(note, &self.name, &self.key).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub position: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub events: u64,
    pub head_hash: String,
    pub checkpoints_verified: u64,
    pub last_checkpoint_tree_size: Option<u64>,
    /// Every problem found, in position order; the first is the first bad position.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

const ALTERED: &str = "the stored hash does not match the event's canonical encoding (the event was altered)";

/// Checks one event against its predecessor: position, chain link and recomputed hash.
fn check_link(e: &RecordedEvent, expected_position: u64, prev_hash: &Hash32) -> Result<(), String> {
    if e.position != expected_position {
        return Err(format!("expected position {expected_position}, found {}", e.position));
    }
    if &e.prev_hash != prev_hash {
        return Err("prevHash does not match the previous event's hash".into());
    }
    if e.compute_hash() != e.hash {
        return Err(ALTERED.into());
    }
    Ok(())
}

/// Recomputes the chain and checks every checkpoint in the log against `trusted`.
pub fn verify(store: &dyn EventStore, trusted: &TrustedKey) -> Result<VerifyReport, AuditError> {
    const MAX_PROBLEMS: usize = 100;
    let mut problems = Vec::new();
    let mut leaves: Vec<Hash32> = Vec::new();
    let mut checkpoints: Vec<(u64, CheckpointSigned)> = Vec::new();
    let mut prev = GENESIS_PREV_HASH;
    let mut expected = 1u64;
    store.read_range(1, u64::MAX, &mut |e| {
        if let Err(reason) = check_link(&e, expected, &prev) {
            if problems.len() < MAX_PROBLEMS {
                problems.push(Problem { position: e.position, reason });
            }
        }
        match DomainEvent::decode(&e.event_type, e.schema_version, &e.payload) {
            Ok(DomainEvent::CheckpointSigned(cp)) => checkpoints.push((e.position, cp)),
            Ok(_) => {}
            Err(err) if problems.len() < MAX_PROBLEMS => {
                problems.push(Problem { position: e.position, reason: err.to_string() })
            }
            Err(_) => {}
        }
        // Continue from what is stored, so one altered event is reported once, not at every
        // position after it.
        prev = e.hash;
        expected = e.position + 1;
        leaves.push(e.hash);
        Ok(())
    })?;
    let mut verified = 0;
    let mut last_size = None;
    for (position, cp) in &checkpoints {
        match check_checkpoint(cp, *position, &leaves, trusted) {
            Ok(()) => {
                verified += 1;
                last_size = Some(cp.tree_size);
            }
            Err(reason) => problems.push(Problem { position: *position, reason }),
        }
    }
    check_tiles(store, &leaves, &mut problems)?;
    problems.sort_by_key(|p| p.position);
    Ok(VerifyReport {
        events: leaves.len() as u64,
        head_hash: leaves.last().map(hex::encode).unwrap_or_default(),
        checkpoints_verified: verified,
        last_checkpoint_tree_size: last_size,
        problems,
    })
}

/// Compares the stored tile nodes with the tree rebuilt from the events: tiles are derived data,
/// and an altered one would make every proof through it fail, so the operator hears of it here.
fn check_tiles(store: &dyn EventStore, event_hashes: &[Hash32], problems: &mut Vec<Problem>) -> Result<(), AuditError> {
    let mut level: Vec<Hash32> = event_hashes.iter().map(merkle::leaf_hash).collect();
    for tile_level in 1..=tiles::MAX_TILE_LEVEL {
        // The nodes of this tile level: roots of 256 nodes of the level below.
        let nodes: Vec<Hash32> = level.chunks_exact(tiles::TILE_WIDTH as usize).map(merkle::root).collect();
        if nodes.is_empty() {
            break;
        }
        for (index, chunk) in nodes.chunks(tiles::TILE_WIDTH as usize).enumerate() {
            let stored = store.tile(tile_level, index as u64, chunk.len() as u64)?;
            for (i, node) in chunk.iter().enumerate() {
                if stored.get(i) != Some(node) {
                    let k = index as u64 * tiles::TILE_WIDTH + i as u64;
                    let span = 1u64 << (tiles::TILE_HEIGHT * u32::from(tile_level));
                    problems.push(Problem {
                        position: k * span + 1,
                        reason: format!(
                            "the stored Merkle tile node {tile_level}/{k} (events {}–{}) does not match the tree of \
                             the events: proofs and tiles served from it fail",
                            k * span + 1,
                            (k + 1) * span
                        ),
                    });
                }
            }
        }
        level = nodes;
    }
    Ok(())
}

fn check_checkpoint(
    cp: &CheckpointSigned,
    position: u64,
    leaves: &[Hash32],
    trusted: &TrustedKey,
) -> Result<(), String> {
    let note = trusted.verify_note(&cp.note).map_err(|e| format!("checkpoint signature: {e}"))?;
    if note.tree_size != cp.tree_size
        || hex::encode(note.root_hash) != cp.root_hash
        || hex::encode(note.head_hash) != cp.head_hash
    {
        return Err("the checkpoint's fields differ from its signed note".into());
    }
    if note.tree_size >= position {
        return Err(format!("a checkpoint at position {position} cannot cover tree size {}", note.tree_size));
    }
    let size = note.tree_size as usize;
    let leaf_hashes: Vec<Hash32> = leaves[..size].iter().map(merkle::leaf_hash).collect();
    if merkle::root(&leaf_hashes) != note.root_hash {
        return Err(format!("the Merkle root of the first {size} events differs from the signed checkpoint"));
    }
    if size > 0 && leaves[size - 1] != note.head_hash {
        return Err(format!("the hash of event {size} differs from the signed checkpoint's head"));
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplaySummary {
    pub position: u64,
    pub contracts: usize,
    pub implementations: usize,
    pub conformance_runs: usize,
    pub bindings: usize,
    pub publications: usize,
    pub latest_publication: Option<u64>,
    pub invalidated_publications: usize,
    pub checkpoints: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    pub digests: ProjectionDigests,
    pub summary: ReplaySummary,
}

pub fn summarize(p: &Projections) -> ReplaySummary {
    ReplaySummary {
        position: p.position,
        contracts: p.contracts.len(),
        implementations: p.implementations.len(),
        conformance_runs: p.conformance_runs.len(),
        bindings: p.bindings.len(),
        publications: p.publications.versions.len(),
        latest_publication: p.publications.latest().map(|v| v.publication_version.0),
        invalidated_publications: p.publications.versions.values().filter(|v| v.invalidated.is_some()).count(),
        checkpoints: p.registry.checkpoints,
    }
}

/// Rebuilds every projection from position 1 to `to` (inclusive), verifying each event's hash and
/// link on the way. Refuses a `to` beyond the head.
///
/// Two stages on two threads: one reads rows from the store, the other checks each link, decodes
/// and folds, in position order; recomputing the hashes is split between them. Batches pass
/// through a bounded channel.
pub fn replay(store: &dyn EventStore, to: Option<u64>) -> Result<Projections, AuditError> {
    const BATCH: usize = 1024;
    let head = store.head_position()?;
    let to = to.unwrap_or(head);
    if to > head {
        return Err(AuditError::BadEvent { position: to, reason: format!("the log ends at position {head}") });
    }
    let (tx, rx) = crossbeam_channel::bounded::<Result<Vec<RecordedEvent>, AuditError>>(16);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let result = store.read_range(1, to, &mut |e| {
                // This stage verifies the hashes of even positions, the folding stage those of odd
                // ones: the two threads then carry about the same load.
                if e.position % 2 == 0 && e.compute_hash() != e.hash {
                    let _ = tx.send(Err(AuditError::BadEvent { position: e.position, reason: ALTERED.into() }));
                    return Err(StoreError::WriterStopped);
                }
                batch.push(e);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    // The folding side stopped (it failed): stop reading.
                    tx.send(Ok(full)).map_err(|_| StoreError::WriterStopped)?;
                }
                Ok(())
            });
            match result {
                Ok(()) => {
                    let _ = tx.send(Ok(batch));
                }
                Err(StoreError::WriterStopped) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            }
        });
        let mut state = Projections::default();
        let mut prev = GENESIS_PREV_HASH;
        for batch in rx {
            for e in batch? {
                let bad = |reason: String| AuditError::BadEvent { position: e.position, reason };
                if e.position != state.position + 1 || e.prev_hash != prev {
                    return Err(bad(check_link(&e, state.position + 1, &prev).err().unwrap_or_default()));
                }
                if e.position % 2 == 1 && e.compute_hash() != e.hash {
                    return Err(bad(ALTERED.into()));
                }
                state.apply(&e).map_err(|err| bad(err.to_string()))?;
                prev = e.hash;
            }
        }
        if state.position != to {
            return Err(AuditError::BadEvent { position: state.position + 1, reason: "the log ended early".into() });
        }
        Ok(state)
    })
}

pub fn replay_report(store: &dyn EventStore, to: Option<u64>) -> Result<ReplayReport, AuditError> {
    let state = replay(store, to)?;
    Ok(ReplayReport { digests: state.digests(), summary: summarize(&state) })
}

/// Writes events `1..=tree_size` as canonical NDJSON to `out`, then the signed checkpoint line;
/// returns how many events it wrote. Where the bytes go (a file renamed into place, a response
/// body) is the caller's business.
pub fn export(
    store: &dyn EventStore,
    checkpoint_note: &str,
    tree_size: u64,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let mut written = 0u64;
    let mut write_error = None;
    let read = store.read_range(1, tree_size, &mut |e| {
        let line = e.canonical_line();
        if let Err(err) = out.write_all(&line).and_then(|()| out.write_all(b"\n")) {
            write_error = Some(err);
            return Err(StoreError::Backend("the export's writer refused a line".into()));
        }
        written += 1;
        Ok(())
    });
    if let Some(err) = write_error {
        return Err(AuditError::Write(err));
    }
    read?;
    let trailer = serde_json::json!({ "checkpoint": checkpoint_note, "format": EXPORT_FORMAT });
    let trailer = serde_json_canonicalizer::to_vec(&trailer)
        .map_err(|e| AuditError::Write(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    out.write_all(&trailer).and_then(|()| out.write_all(b"\n")).map_err(AuditError::Write)?;
    out.flush().map_err(AuditError::Write)?;
    Ok(written)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportSummary {
    pub events: u64,
    pub tree_size: u64,
    pub root_hash: String,
    pub head_hash: String,
}

/// Verifies an export with only the trusted key: every line canonical, every hash recomputed,
/// the chain unbroken, the Merkle root and head equal to the signed checkpoint's.
pub fn verify_export(bytes: &[u8], trusted: &TrustedKey) -> Result<ExportSummary, AuditError> {
    verify_export_from(bytes, trusted, &mut |_| Ok(()))
}

/// Verifies an export like [`verify_export`] and returns its events, ready to replay.
pub fn read_export(bytes: &[u8], trusted: &TrustedKey) -> Result<(ExportSummary, Vec<RecordedEvent>), AuditError> {
    let mut events = Vec::new();
    let summary = verify_export_from(bytes, trusted, &mut |e| {
        events.push(e);
        Ok(())
    })?;
    Ok((summary, events))
}

/// Verifies an export read line by line from `reader` (a file, a download), handing each event
/// to `visit` once its line and link have checked out: memory stays constant whatever the size.
/// The signed checkpoint is the last line, so only the summary says the whole export verified;
/// what `visit` built is to be thrown away on an error.
pub fn verify_export_from(
    mut reader: impl std::io::BufRead,
    trusted: &TrustedKey,
    visit: &mut dyn FnMut(RecordedEvent) -> Result<(), AuditError>,
) -> Result<ExportSummary, AuditError> {
    let bad = |line: usize, reason: String| AuditError::BadExport { line, reason };
    let read_line = |reader: &mut dyn std::io::BufRead, n: usize| -> Result<Option<String>, AuditError> {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => match line.strip_suffix('\n') {
                Some(l) => Ok(Some(l.to_owned())),
                None => Err(bad(n, "an export ends with a newline".into())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(bad(n, "not UTF-8".into())),
            Err(e) => Err(AuditError::Read(e)),
        }
    };
    let mut tree = MerkleAccumulator::new();
    let mut prev = GENESIS_PREV_HASH;
    // One line of lookahead: a line is an event unless it is the last.
    let mut current = read_line(&mut reader, 1)?.ok_or(bad(0, "the export is empty".into()))?;
    let mut n = 1;
    while let Some(next) = read_line(&mut reader, n + 1)? {
        let line = std::mem::replace(&mut current, next);
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(n, format!("not JSON: {e}")))?;
        let canonical = serde_json_canonicalizer::to_string(&value).map_err(|e| bad(n, e.to_string()))?;
        if canonical != line {
            return Err(bad(n, "the line is not in canonical (RFC 8785) form".into()));
        }
        let event = RecordedEvent::from_json(&value).map_err(|r| bad(n, r))?;
        check_link(&event, n as u64, &prev).map_err(|r| bad(n, r))?;
        prev = event.hash;
        tree.push(merkle::leaf_hash(&event.hash));
        visit(event)?;
        n += 1;
    }
    let (trailer, events) = (current, (n - 1) as u64);
    let value: serde_json::Value =
        serde_json::from_str(&trailer).map_err(|e| bad(n, format!("the checkpoint line is not JSON: {e}")))?;
    if serde_json_canonicalizer::to_string(&value).ok().as_deref() != Some(trailer.as_str()) {
        return Err(bad(n, "the checkpoint line is not in canonical form".into()));
    }
    if value.get("format").and_then(|f| f.as_str()) != Some(EXPORT_FORMAT)
        || value.as_object().map(|o| o.len()) != Some(2)
    {
        return Err(bad(n, format!("the last line must be {{\"checkpoint\":…,\"format\":\"{EXPORT_FORMAT}\"}}")));
    }
    let note = value.get("checkpoint").and_then(|c| c.as_str()).ok_or(bad(n, "checkpoint must be a string".into()))?;
    let cp = trusted.verify_note(note).map_err(|e| bad(n, format!("checkpoint: {e}")))?;
    if cp.tree_size != events {
        return Err(bad(n, format!("the checkpoint covers {} events, the export holds {events}", cp.tree_size)));
    }
    if cp.root_hash != tree.root() {
        return Err(bad(n, "the Merkle root of the exported events differs from the signed checkpoint".into()));
    }
    if cp.tree_size > 0 && cp.head_hash != prev {
        return Err(bad(n, "the last event's hash differs from the signed checkpoint's head".into()));
    }
    Ok(ExportSummary {
        events,
        tree_size: cp.tree_size,
        root_hash: hex::encode(cp.root_hash),
        head_hash: hex::encode(cp.head_hash),
    })
}

/// Folds verified events (from an export) into projections.
pub fn replay_events(events: &[RecordedEvent]) -> Result<Projections, AuditError> {
    let mut state = Projections::default();
    for e in events {
        state.apply(e).map_err(|err| AuditError::BadEvent { position: e.position, reason: err.to_string() })?;
    }
    Ok(state)
}

/// An inclusion proof: the event, its audit path, and the signed checkpoint it leads to.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InclusionProof {
    pub format: String,
    pub event: serde_json::Value,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub audit_path: Vec<String>,
    pub checkpoint: String,
}

/// Builds the proof that the event at `position` is in the tree a signed checkpoint commits to.
pub fn prove(
    store: &dyn EventStore,
    position: u64,
    checkpoint_note: &str,
    tree_size: u64,
) -> Result<InclusionProof, AuditError> {
    if position == 0 || position > tree_size {
        return Err(AuditError::BadProof(format!(
            "position {position} is outside the checkpoint's tree of {tree_size} events"
        )));
    }
    let event = store
        .event_at(position)?
        .ok_or_else(|| AuditError::BadProof(format!("there is no event at position {position}")))?;
    let path = merkle::inclusion_proof_from(&mut StoredTree::over(store, tree_size), position - 1, tree_size)
        .map_err(AuditError::from)?;
    let event_value: serde_json::Value =
        serde_json::from_slice(&event.canonical_line()).map_err(|e| AuditError::BadProof(e.to_string()))?;
    Ok(InclusionProof {
        format: PROOF_FORMAT.to_owned(),
        event: event_value,
        leaf_index: position - 1,
        tree_size,
        audit_path: path.iter().map(hex::encode).collect(),
        checkpoint: checkpoint_note.to_owned(),
    })
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofSummary {
    pub position: u64,
    pub event_type: String,
    pub event_hash: String,
    pub tree_size: u64,
    pub root_hash: String,
}

/// Verifies a proof offline: the event's hash recomputes, its leaf sits at `leafIndex` under the
/// signed checkpoint's root, and the checkpoint is signed by the trusted key.
pub fn verify_proof(proof: &InclusionProof, trusted: &TrustedKey) -> Result<ProofSummary, AuditError> {
    let fail = |m: String| AuditError::BadProof(m);
    if proof.format != PROOF_FORMAT {
        return Err(fail(format!("unknown format {:?}", proof.format)));
    }
    let event = RecordedEvent::from_json(&proof.event).map_err(fail)?;
    if event.compute_hash() != event.hash {
        return Err(fail("the event's hash does not match its canonical encoding".into()));
    }
    if event.position != proof.leaf_index + 1 {
        return Err(fail(format!(
            "the event is at position {}, the proof is for leaf {}",
            event.position, proof.leaf_index
        )));
    }
    let cp = trusted.verify_note(&proof.checkpoint).map_err(|e| fail(format!("checkpoint: {e}")))?;
    if cp.tree_size != proof.tree_size {
        return Err(fail("the proof's tree size differs from the signed checkpoint's".into()));
    }
    let path = proof
        .audit_path
        .iter()
        .map(|h| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out)
                .map(|()| out)
                .map_err(|_| fail(format!("audit path entry {h:?} is not 32 hex bytes")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    merkle::verify_inclusion(&merkle::leaf_hash(&event.hash), proof.leaf_index, cp.tree_size, &path, &cp.root_hash)
        .map_err(|e| fail(e.to_string()))?;
    Ok(ProofSummary {
        position: event.position,
        event_type: event.event_type,
        event_hash: hex::encode(event.hash),
        tree_size: cp.tree_size,
        root_hash: hex::encode(cp.root_hash),
    })
}
