//! Projection snapshots: the state at a position, with the digest that proves it unaltered.
//!
//! Start-up loads the newest snapshot and folds only the tail of the log after it. A snapshot is
//! trusted only if its digest recomputes and the log still holds, at the snapshot's position, the
//! event hash the snapshot recorded (so a snapshot can never outlive the history it was folded
//! from). Encoding and checking are pure; reading and writing the file is the caller's business.

use serde::{Deserialize, Serialize};

use super::{ProjectionDigests, Projections};

/// Bumped whenever the shape of [`Projections`] changes: an old snapshot is then ignored and the
/// projections are rebuilt from the log (which is always possible).
pub const SNAPSHOT_FORMAT: &str = "vadyl-projections/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub format: String,
    pub position: u64,
    /// Hex hash of the event at `position` (empty at position 0).
    pub head_hash: String,
    pub digests: ProjectionDigests,
    pub state: Projections,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot does not parse: {0}")]
    Malformed(String),
    #[error("the snapshot has format {found:?}, this release writes {SNAPSHOT_FORMAT:?}")]
    Format { found: String },
    #[error("the snapshot's digest does not match its state")]
    Digest,
}

impl Snapshot {
    pub fn capture(state: &Projections, head_hash: String) -> Self {
        Self {
            format: SNAPSHOT_FORMAT.to_owned(),
            position: state.position,
            head_hash,
            digests: state.digests(),
            state: state.clone(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks the digest; the caller still checks `head_hash` against the log.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let snapshot: Snapshot = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format { found: snapshot.format });
        }
        if snapshot.state.digests() != snapshot.digests || snapshot.state.position != snapshot.position {
            return Err(SnapshotError::Digest);
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_an_edit_is_caught() {
        let mut state = Projections::default();
        state.registry.checkpoints = 3;
        let snap = Snapshot::capture(&state, String::new());
        let bytes = snap.to_bytes();
        assert_eq!(Snapshot::from_bytes(&bytes).unwrap(), snap);
        let edited = String::from_utf8(bytes).unwrap().replace("\"checkpoints\":3", "\"checkpoints\":4");
        assert!(matches!(Snapshot::from_bytes(edited.as_bytes()), Err(SnapshotError::Digest)));
    }
}
