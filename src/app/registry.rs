//! The application service: the one place where decisions meet the log.
//!
//! `Registry` owns the store, the signing key and the live projections. Every write goes through
//! [`Registry::execute`]: catch up with the log, run a pure command handler on the state, append its
//! events under the expected versions of the streams as that state saw them, then fold the stored
//! events into the state. A conflict (another writer got there first) catches up and decides again.
//! HTTP and CLI call this; neither touches the store directly for writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use crate::commands::{self, CommandError};
use crate::events::checkpoint::{self, Checkpoint};
use crate::events::domain::{CheckpointSigned, DomainEvent, RegistryKeyRegistered};
use crate::events::envelope::{EventMetadata, RecordedEvent};
use crate::events::merkle::{self, MerkleAccumulator};
use crate::events::store::{AppendRequest, EventStore, ExpectedVersion, ProposedEvent, StoreError, StreamAppend};
use crate::events::tiles::{StoredTree, TreeError};
use crate::ids::PublicationVersion;
use crate::keys::{RegistryKey, Signer, KEY_NAME};
use crate::projections::snapshot::{Snapshot, SNAPSHOT_FORMAT};
use crate::projections::{ApplyError, CheckpointView, Projections, PublicationView};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the log cannot be folded")]
    Apply(#[from] ApplyError),
    #[error("the contract catalogue cannot be loaded")]
    Contracts(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the projection snapshot cannot be written")]
    Snapshot(#[source] std::io::Error),
    #[error("the log's Merkle tree cannot be read")]
    Tree(#[from] TreeError),
    #[error("another writer kept changing the same streams; gave up after {0} attempts")]
    Contention(u32),
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Record the embedded WIT contracts whose digest is new (off for read-only tools).
    pub register_contracts: bool,
    /// Load the projection snapshot at start-up and write one at close.
    pub use_snapshots: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { register_contracts: true, use_snapshots: true }
    }
}

/// Where the projection snapshot is kept: a port, so that the registry never knows a file name.
/// A snapshot is only a cache of the log (checked against it on load), so losing one costs a
/// replay, never a fact.
pub trait SnapshotStore: Send + Sync {
    /// The bytes last saved, or `None` when there are none.
    fn load(&self) -> std::io::Result<Option<Vec<u8>>>;
    /// Replaces the snapshot atomically (a reader sees the old bytes or the new, never half).
    fn save(&self, bytes: &[u8]) -> std::io::Result<()>;
}

/// The state a decision is made from: projections plus each stream's version as they saw it.
#[derive(Default)]
struct Live {
    projections: Projections,
    streams: HashMap<String, u64>,
    head_hash: [u8; 32],
    /// The Merkle tree over every applied event, built lazily at the first checkpoint.
    tree: Option<MerkleAccumulator>,
}

impl Live {
    fn fold(&mut self, e: &RecordedEvent) -> Result<(), ApplyError> {
        self.projections.apply(e)?;
        self.streams.insert(e.stream_id.clone(), e.stream_version);
        self.head_hash = e.hash;
        if let Some(tree) = self.tree.as_mut() {
            tree.push(merkle::leaf_hash(&e.hash));
        }
        Ok(())
    }
}

/// The file a snapshot lives in, with the stream versions it needs beside it.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotFile {
    snapshot: Snapshot,
    streams: BTreeMap<String, u64>,
    /// The Merkle accumulator's peaks (hex) at the snapshot's position, if it was built.
    #[serde(default)]
    merkle_peaks: Option<Vec<String>>,
}

/// The log and the state folded from it: every decision and every read of the projections.
pub struct Registry {
    store: Arc<dyn EventStore>,
    key: RegistryKey,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    live: RwLock<Live>,
    /// The log's change marker when the live state last caught up (`u64::MAX`: never), so that a
    /// read skips the query for new events while nobody has committed.
    caught_up_at: std::sync::atomic::AtomicU64,
    snapshot_position: Mutex<u64>,
    /// The newest position folded, for live subscribers (`GET /events/stream`): a watch, so that a
    /// writer only replaces a value and never waits for a subscriber.
    head: tokio::sync::watch::Sender<u64>,
}

impl Registry {
    /// Opens the registry on a log: loads the snapshot (when given one and it still matches the
    /// log), folds the tail, records the registry key and, if asked, the embedded contracts.
    pub fn open(
        store: Arc<dyn EventStore>,
        key: RegistryKey,
        snapshots: Option<Arc<dyn SnapshotStore>>,
        options: OpenOptions,
    ) -> Result<Self, RegistryError> {
        let registry = Self {
            store,
            key,
            snapshots: snapshots.filter(|_| options.use_snapshots),
            live: RwLock::new(Live::default()),
            caught_up_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            snapshot_position: Mutex::new(0),
            head: tokio::sync::watch::Sender::new(0),
        };
        registry.load_snapshot();
        registry.catch_up()?;
        let system = EventMetadata::actor("system");
        let key_event = RegistryKeyRegistered {
            key_name: KEY_NAME.to_owned(),
            key_id: registry.key.key_id_hex(),
            algorithm: "ed25519".to_owned(),
            public_key: registry.key.public_key_base64(),
            verifier_key: registry.key.verifier_key(),
        };
        registry.execute(&system, |s| Ok(commands::register_key(s, key_event.clone())))?;
        if options.register_contracts {
            for contract in contract_events()? {
                registry.execute(&system, |s| Ok(commands::register_contract(s, contract.clone())))?;
            }
        }
        Ok(registry)
    }

    /// The log, for the use cases that read it whole (audit, replay, export).
    pub fn store(&self) -> &dyn EventStore {
        self.store.as_ref()
    }

    pub fn key(&self) -> &RegistryKey {
        &self.key
    }

    /// Runs `f` on the current projections, after folding anything another process appended.
    pub fn read<R>(&self, f: impl FnOnce(&Projections) -> R) -> R {
        if let Err(e) = self.catch_up_if_changed() {
            tracing::error!(error = %crate::report::ErrorChain(&e), "cannot catch up with the log; answering from the state as it is");
        }
        match self.live.read() {
            Ok(live) => f(&live.projections),
            Err(poisoned) => f(&poisoned.into_inner().projections),
        }
    }

    fn live_mut(&self) -> std::sync::RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Registry::catch_up`], unless nobody has committed to the log since the last time.
    ///
    /// The marker is read before catching up and stored after: whatever value is stored, every
    /// commit made before it was read has been folded, so a skip never hides an event (racing
    /// readers at worst store an older marker and cause one extra catch-up).
    fn catch_up_if_changed(&self) -> Result<(), RegistryError> {
        use std::sync::atomic::Ordering;
        let marker = self.store.change_marker()?;
        if marker.is_some_and(|m| m == self.caught_up_at.load(Ordering::Acquire)) {
            return Ok(());
        }
        self.catch_up()?;
        if let Some(m) = marker {
            self.caught_up_at.store(m, Ordering::Release);
        }
        Ok(())
    }

    /// Folds every event the log has beyond the live state (written by this or another process).
    pub fn catch_up(&self) -> Result<(), RegistryError> {
        let mut live = self.live_mut();
        let from = live.projections.position + 1;
        let mut failure = None;
        self.store
            .read_range(from, u64::MAX, &mut |e| {
                if let Err(err) = live.fold(&e) {
                    failure = Some(err);
                    return Err(StoreError::Corrupt { position: e.position, reason: "cannot be folded".into() });
                }
                Ok(())
            })
            .or_else(|e| if failure.is_some() { Ok(()) } else { Err(e) })?;
        let position = live.projections.position;
        drop(live);
        self.head.send_if_modified(|head| std::mem::replace(head, position) != position);
        match failure {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }

    /// The newest position folded.
    pub fn folded_position(&self) -> u64 {
        *self.head.borrow()
    }

    /// Folds the log up to `position` at least, when it has that many events, reading the log
    /// itself rather than waiting for a change notice: what a client that wrote through another
    /// node asks for to read its own writes. The position folded after.
    pub fn catch_up_to(&self, position: u64) -> Result<u64, RegistryError> {
        if self.folded_position() < position {
            self.catch_up()?;
        }
        Ok(self.folded_position())
    }

    /// Changes whenever anyone commits to the log, for logs that push notices (several nodes on one
    /// database); `None` when the log cannot, and only this process's appends move the state.
    pub fn log_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.store.subscribe_changes()
    }

    /// The newest position folded, changing as events are appended through this registry (or
    /// folded from another process's appends).
    pub fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Decides with `decide` on the current state and appends what it returns, atomically.
    /// Returns the stored events (empty when the decision was to do nothing).
    ///
    /// No lock is held across the append: concurrent commands on different streams are appended
    /// in the same group commit, and the expected versions catch commands that raced on the same
    /// stream (they decide again). Stored events are folded by reading the log in order, so the
    /// projections never see positions out of order.
    pub fn execute(
        &self,
        metadata: &EventMetadata,
        decide: impl Fn(&Projections) -> Result<Vec<DomainEvent>, CommandError>,
    ) -> Result<Vec<RecordedEvent>, RegistryError> {
        const ATTEMPTS: u32 = 20;
        for _ in 0..ATTEMPTS {
            self.catch_up()?;
            let request = {
                let live = self.live.read().unwrap_or_else(|p| p.into_inner());
                let events = decide(&live.projections)?;
                if events.is_empty() {
                    return Ok(Vec::new());
                }
                to_request(&live, events, metadata)
            };
            match self.store.append(request) {
                Ok(outcome) => {
                    self.catch_up()?;
                    return Ok(outcome.events);
                }
                // Someone else appended to a stream we decided from: look again.
                Err(StoreError::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Contention(ATTEMPTS))
    }

    /// Invalidates a publication version and returns the new `latest`.
    pub fn invalidate_publication(
        &self,
        metadata: &EventMetadata,
        version: PublicationVersion,
        reason: &str,
    ) -> Result<Option<PublicationView>, RegistryError> {
        self.execute(metadata, |s| commands::invalidate_publication(s, version, reason))?;
        Ok(self.read(|s| s.publications.latest().cloned()))
    }

    /// Signs a checkpoint over the whole log unless the newest event already is one; returns the
    /// newest checkpoint.
    pub fn checkpoint(&self, metadata: &EventMetadata) -> Result<Option<CheckpointView>, RegistryError> {
        self.catch_up()?;
        let signed = {
            let mut live = self.live_mut();
            if live.tree.is_none() {
                // The peaks come from the stored tiles: O(log n) reads, not the whole log.
                let size = live.projections.position;
                let peaks = StoredTree::over(self.store.as_ref(), size).peaks()?;
                live.tree = Some(MerkleAccumulator::from_peaks(size, peaks).map_err(TreeError::from)?);
            }
            let tree_size = live.projections.position;
            let root = live.tree.as_ref().map_or_else(merkle::empty_root, |t| t.root());
            let cp = Checkpoint { origin: KEY_NAME.to_owned(), tree_size, root_hash: root, head_hash: live.head_hash };
            CheckpointSigned {
                tree_size,
                root_hash: hex::encode(root),
                head_hash: hex::encode(live.head_hash),
                note: checkpoint::sign_note(&cp, KEY_NAME, self.key.signing_key()),
            }
        };
        self.execute(metadata, |s| Ok(commands::sign_checkpoint(s, signed.clone())))?;
        Ok(self.read(|s| s.registry.last_checkpoint.clone()))
    }

    /// Loads the snapshot if it is intact and still matches the log; otherwise start from zero.
    fn load_snapshot(&self) {
        let Some(snapshots) = &self.snapshots else { return };
        let bytes = match snapshots.load() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %crate::report::ErrorChain(&e), "cannot read the projection snapshot; rebuilding from the log");
                return;
            }
        };
        let Ok(file) = serde_json::from_slice::<SnapshotFile>(&bytes) else {
            tracing::warn!("ignoring an unreadable projection snapshot; rebuilding from the log");
            return;
        };
        if file.snapshot.format != SNAPSHOT_FORMAT {
            return;
        }
        let Ok(snapshot) = Snapshot::from_bytes(&file.snapshot.to_bytes()) else {
            tracing::warn!("ignoring a projection snapshot whose digest does not match; rebuilding from the log");
            return;
        };
        let matches_log = match self.store.event_at(snapshot.position) {
            Ok(Some(e)) => hex::encode(e.hash) == snapshot.head_hash,
            _ => false,
        };
        if !matches_log {
            tracing::warn!(position = snapshot.position, "the projection snapshot does not match the log; rebuilding");
            return;
        }
        let mut live = self.live_mut();
        let mut head_hash = [0u8; 32];
        if hex::decode_to_slice(&snapshot.head_hash, &mut head_hash).is_err() {
            return;
        }
        live.projections = snapshot.state;
        live.streams = file.streams.into_iter().collect();
        live.head_hash = head_hash;
        live.tree = file.merkle_peaks.and_then(|peaks| {
            let peaks = peaks
                .iter()
                .map(|h| {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(h, &mut out).ok().map(|()| out)
                })
                .collect::<Option<Vec<_>>>()?;
            MerkleAccumulator::from_peaks(snapshot.position, peaks).ok()
        });
        *self.snapshot_position.lock().unwrap_or_else(|p| p.into_inner()) = snapshot.position;
    }

    /// Writes a snapshot of the live projections through the snapshot port (atomically).
    pub fn write_snapshot(&self) -> Result<(), RegistryError> {
        let Some(snapshots) = &self.snapshots else { return Ok(()) };
        let (bytes, position) = {
            let live = self.live.read().unwrap_or_else(|p| p.into_inner());
            let snapshot = Snapshot::capture(&live.projections, hex::encode(live.head_hash));
            let streams = live.streams.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let merkle_peaks = live.tree.as_ref().map(|t| t.peaks().iter().map(hex::encode).collect());
            let file = SnapshotFile { snapshot, streams, merkle_peaks };
            let bytes = serde_json::to_vec(&file).map_err(|e| RegistryError::Snapshot(e.into()))?;
            (bytes, live.projections.position)
        };
        snapshots.save(&bytes).map_err(RegistryError::Snapshot)?;
        *self.snapshot_position.lock().unwrap_or_else(|p| p.into_inner()) = position;
        Ok(())
    }

    /// Writes a snapshot if the state moved at least `min_events` since the last one.
    pub fn snapshot_if_stale(&self, min_events: u64) -> Result<(), RegistryError> {
        if self.snapshots.is_none() {
            return Ok(());
        }
        let last = *self.snapshot_position.lock().unwrap_or_else(|p| p.into_inner());
        if self.read(|s| s.position) >= last + min_events.max(1) {
            self.write_snapshot()?;
        }
        Ok(())
    }
}

/// The `ContractRegistered` facts of the WIT package embedded in this binary.
pub fn contract_events() -> Result<Vec<crate::events::domain::ContractRegistered>, RegistryError> {
    use crate::events::domain::{ContractRegistered, OperationSchema, SensitiveFieldRef};
    let catalogue = crate::contracts::load_embedded().map_err(|e| RegistryError::Contracts(Box::new(e)))?;
    catalogue
        .contracts
        .into_iter()
        .map(|c| {
            let contract: crate::ids::ContractRef =
                c.id().parse().map_err(|e: crate::ids::IdError| RegistryError::Contracts(Box::new(e)))?;
            Ok(ContractRegistered {
                contract,
                package: c.package,
                world: c.world,
                interface: c.interface,
                description: c.description,
                wit_digest: crate::ids::ContentHash(c.wit_digest),
                operations: c
                    .operations
                    .into_iter()
                    .map(|o| OperationSchema {
                        name: o.name,
                        description: o.description,
                        input_schema: o.input_schema,
                        output_schema: o.output_schema,
                        error_schema: o.error_schema,
                    })
                    .collect(),
                sensitive_fields: c
                    .sensitive_fields
                    .into_iter()
                    .map(|f| SensitiveFieldRef {
                        operation: f.operation,
                        direction: match f.direction {
                            crate::contracts::Direction::Input => "input".to_owned(),
                            crate::contracts::Direction::Output => "output".to_owned(),
                        },
                        pointer: f.pointer,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Groups decided events by stream, each under the version its stream had in the deciding state.
fn to_request(live: &Live, events: Vec<DomainEvent>, metadata: &EventMetadata) -> AppendRequest {
    let mut streams: Vec<StreamAppend> = Vec::new();
    for event in events {
        let stream_id = event.stream_id();
        let proposed = ProposedEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            payload: event.payload(),
        };
        match streams.iter_mut().find(|s| s.stream_id == stream_id) {
            Some(s) => s.events.push(proposed),
            None => {
                let expected = ExpectedVersion::from_current(live.streams.get(&stream_id).copied());
                streams.push(StreamAppend { stream_id, expected, events: vec![proposed] });
            }
        }
    }
    AppendRequest { streams, metadata: metadata.clone() }
}
