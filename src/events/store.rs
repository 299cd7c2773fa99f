//! The event store seam: what the domain needs from a log, independent of the database.
//!
//! SQLite (`events::sqlite`) implements it today; a PostgreSQL backend for several registry nodes
//! sharing one database implements the same trait later. The contract every backend keeps:
//! positions are gap-free and start at 1; each stream's versions are gap-free and start at 1; an
//! append is all-or-nothing across every stream it touches; an expected-version mismatch writes
//! nothing; an append whose event ids are all stored already is answered with the stored events
//! (idempotent retry); every event carries `prev_hash`/`hash` of the chain; an acknowledged append
//! is durable.

use super::envelope::{EventMetadata, RecordedEvent};
use super::merkle::Hash32;

/// Optimistic concurrency per stream, as in EventStoreDB/KurrentDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (any version).
    StreamExists,
    /// The stream's current version must be exactly this.
    Exact(u64),
}

impl ExpectedVersion {
    /// What a decision made from a state that saw `current` expects.
    pub fn from_current(current: Option<u64>) -> Self {
        match current {
            None => Self::NoStream,
            Some(v) => Self::Exact(v),
        }
    }

    pub fn admits(&self, current: Option<u64>) -> bool {
        match (self, current) {
            (Self::Any, _) => true,
            (Self::NoStream, None) => true,
            (Self::StreamExists, Some(_)) => true,
            (Self::Exact(want), Some(have)) => *want == have,
            _ => false,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("stream exists"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// An event proposed for appending; the store assigns position, stream version, time and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedEvent {
    pub event_id: String,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<ProposedEvent>,
}

/// One atomic append: every stream's events commit together or not at all.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub streams: Vec<StreamAppend>,
    pub metadata: EventMetadata,
}

impl AppendRequest {
    pub fn single(
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
        metadata: EventMetadata,
    ) -> Self {
        Self { streams: vec![StreamAppend { stream_id: stream_id.into(), expected, events }], metadata }
    }

    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }
}

#[derive(Debug, Clone)]
pub struct AppendOutcome {
    /// The events as stored, in position order.
    pub events: Vec<RecordedEvent>,
    /// True when every event id was already stored: nothing new was written.
    pub idempotent_replay: bool,
}

/// The newest event's position and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub position: u64,
    pub hash: Hash32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream_id} expected {expected} but is at {}", actual.map_or("no stream".to_owned(), |v| format!("version {v}")))]
    WrongExpectedVersion { stream_id: String, expected: ExpectedVersion, actual: Option<u64> },
    #[error("event id {event_id} is already stored with other content or in another append")]
    EventIdConflict { event_id: String },
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    #[error("the log's database failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the event log is corrupt at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    #[error("the store's writer has stopped")]
    WriterStopped,
}

/// The log. Methods block; async callers use `spawn_blocking`.
pub trait EventStore: Send + Sync {
    fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    fn head(&self) -> Result<Option<Head>, StoreError>;

    /// The newest event's position, 0 for an empty log.
    fn head_position(&self) -> Result<u64, StoreError> {
        Ok(self.head()?.map_or(0, |h| h.position))
    }

    /// A value that changes whenever anyone (this process or another) commits to the log, read
    /// without touching the events themselves; `None` when the store cannot tell, and readers must
    /// then look for new events every time. Values are only comparable with each other.
    fn change_marker(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// A watch whose value changes whenever anyone commits, for stores that learn of commits as they
    /// happen (PostgreSQL's notices) and not only when asked; `None` when the store cannot push.
    fn subscribe_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Calls `visit` for every event with `from <= position <= to`, in order. Stops at the first
    /// error `visit` returns.
    fn read_range(
        &self,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(RecordedEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    fn event_at(&self, position: u64) -> Result<Option<RecordedEvent>, StoreError>;

    /// The event stored under `event_id`, if any.
    fn event_by_id(&self, event_id: &str) -> Result<Option<RecordedEvent>, StoreError>;

    /// The current version of a stream, `None` if it has no events.
    fn stream_version(&self, stream_id: &str) -> Result<Option<u64>, StoreError>;

    /// The event hashes of positions `from..=to`, in order: the Merkle tree's entries (its leaves
    /// before leaf hashing).
    fn event_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash32>, StoreError>;

    /// The first `width` hashes of the Merkle tree's tile `index` at tile `level` (tree height
    /// `8·level`, see `events::tiles`); level 0 is the leaf hashes. A backend keeps the tiles of
    /// every level above 0 in the same transaction as the events they cover, so that a proof reads
    /// one tile per level instead of the whole log. Fewer than `width` hashes when the tree does
    /// not have them yet.
    fn tile(&self, level: u8, index: u64, width: u64) -> Result<Vec<Hash32>, StoreError>;
}
