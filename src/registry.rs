//! The application service: the one place where decisions meet the log.
//!
//! `Registry` owns the store, the signing key and the live projections. Every write goes through
//! [`Registry::execute`]: catch up with the log, run a pure command handler on the state, append its
//! events under the expected versions of the streams as that state saw them, then fold the stored
//! events into the state. A conflict (another writer got there first) catches up and decides again.
//! HTTP and CLI call this; neither touches the store directly for writes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::commands::{self, CommandError};
use crate::events::checkpoint::{self, Checkpoint};
use crate::events::domain::{CheckpointSigned, DomainEvent, RegistryKeyRegistered};
use crate::events::envelope::{EventMetadata, RecordedEvent};
use crate::events::merkle::{self, MerkleAccumulator};
use crate::events::sqlite::{Durability, SqliteStore};
use crate::events::store::{AppendRequest, EventStore, ExpectedVersion, ProposedEvent, StoreError, StreamAppend};
use crate::ids::PublicationVersion;
use crate::keys::{KeyError, RegistryKey, Signer, KEY_NAME};
use crate::projections::snapshot::{Snapshot, SNAPSHOT_FORMAT};
use crate::projections::{ApplyError, CheckpointView, Projections, PublicationView};
use crate::runtime::artifacts::ArtifactStore;
use crate::runtime::host::clock::{Clock, SystemClock};
use crate::runtime::host::egress::{Executor, ExecutorConfig, TokioSleeper};
use crate::runtime::host::memory::MemoryStore;
use crate::runtime::host::secrets::SecretStore;
use crate::runtime::invocations::InvocationLog;
use crate::runtime::invoke::HostServices;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the log cannot be folded: {0}")]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the contract catalogue cannot be loaded: {0}")]
    Contracts(String),
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("another writer kept changing the same streams; gave up after {0} attempts")]
    Contention(u32),
    #[error("host services: {0}")]
    Host(String),
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub durability: Durability,
    /// Record the embedded WIT contracts whose digest is new (off for read-only tools).
    pub register_contracts: bool,
    /// Load the projection snapshot at start-up and write one at close.
    pub use_snapshots: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { durability: Durability::Full, register_contracts: true, use_snapshots: true }
    }
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

pub struct Registry {
    data_dir: PathBuf,
    store: Arc<dyn EventStore>,
    key: RegistryKey,
    artifacts: ArtifactStore,
    services: HostServices,
    invocations: InvocationLog,
    tokens: crate::auth::TokenStore,
    /// Loaded artifacts by content hash: verified and parsed once, then shared.
    adapters: Mutex<HashMap<crate::ids::ContentHash, Arc<crate::lifecycle::Loaded>>>,
    /// Compiled redaction patterns of secret versions, keyed by (project, name, version, fingerprint):
    /// a new version has a new key, so a rotated secret is never matched by stale patterns.
    secret_redactors: Mutex<HashMap<(String, String, String, String), crate::runtime::redaction::Redactor>>,
    /// The Wasmtime engine and linker, started on first use (most commands never run a component).
    components: std::sync::OnceLock<Arc<crate::runtime::component::ComponentRuntime>>,
    /// Compiled input validators by (contract WIT digest, operation).
    validators: Mutex<HashMap<(crate::ids::ContentHash, String), Arc<jsonschema::Validator>>>,
    live: RwLock<Live>,
    /// The log's change marker when the live state last caught up (`u64::MAX`: never), so that a
    /// read skips the query for new events while nobody has committed.
    caught_up_at: std::sync::atomic::AtomicU64,
    snapshot_position: Mutex<u64>,
    use_snapshots: bool,
}

pub const EVENTS_DB: &str = "events.db";
const SNAPSHOT_FILE: &str = "projections.snapshot.json";

impl Registry {
    pub fn open(data_dir: &Path, options: OpenOptions) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(data_dir).map_err(|source| RegistryError::Io {
            action: "create data directory",
            path: data_dir.to_owned(),
            source,
        })?;
        let key = RegistryKey::load_or_create(&data_dir.join("keys"))?;
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&data_dir.join(EVENTS_DB), options.durability)?);
        let host = |e: String| RegistryError::Host(e);
        let artifacts = ArtifactStore::open(&data_dir.join("artifacts")).map_err(|e| host(e.to_string()))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let services = HostServices {
            secrets: Arc::new(
                SecretStore::open(&data_dir.join("secrets.db"), &data_dir.join("keys"))
                    .map_err(|e| host(e.to_string()))?,
            ),
            memory: Arc::new(
                MemoryStore::open(&data_dir.join("memory.db"), clock.clone()).map_err(|e| host(e.to_string()))?,
            ),
            executor: Executor::new(ExecutorConfig::default()).map_err(|e| host(e.to_string()))?,
            clock,
            sleeper: Arc::new(TokioSleeper),
        };
        let invocations = InvocationLog::open(&data_dir.join("invocations.db")).map_err(|e| host(e.to_string()))?;
        let tokens = crate::auth::TokenStore::open(&data_dir.join("tokens.db")).map_err(|e| host(e.to_string()))?;
        let registry = Self {
            data_dir: data_dir.to_owned(),
            store,
            key,
            artifacts,
            services,
            invocations,
            tokens,
            adapters: Mutex::new(HashMap::new()),
            components: std::sync::OnceLock::new(),
            secret_redactors: Mutex::new(HashMap::new()),
            validators: Mutex::new(HashMap::new()),
            live: RwLock::new(Live::default()),
            caught_up_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            snapshot_position: Mutex::new(0),
            use_snapshots: options.use_snapshots,
        };
        if options.use_snapshots {
            registry.load_snapshot();
        }
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

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn store(&self) -> &dyn EventStore {
        self.store.as_ref()
    }

    pub fn key(&self) -> &RegistryKey {
        &self.key
    }

    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    pub fn services(&self) -> &HostServices {
        &self.services
    }

    pub fn invocations(&self) -> &InvocationLog {
        &self.invocations
    }

    pub fn tokens(&self) -> &crate::auth::TokenStore {
        &self.tokens
    }

    /// Generates a token, stores its hash and records its grant; the token is returned once.
    pub fn issue_token(
        &self,
        metadata: &EventMetadata,
        role: crate::ids::Role,
        project: Option<crate::ids::ProjectId>,
        implementations: Vec<String>,
        label: String,
    ) -> Result<crate::auth::NewToken, RegistryError> {
        let new = self.tokens.generate().map_err(|e| RegistryError::Command(CommandError::Invalid(e.to_string())))?;
        let grant = crate::events::domain::TokenIssued {
            token_id: new.token_id.clone(),
            role,
            project,
            implementations,
            label,
        };
        match self.execute(metadata, |s| commands::issue_token(s, grant.clone())) {
            Ok(_) => Ok(new),
            Err(e) => {
                // No grant, no token: drop the hash so nothing half-issued remains.
                let _ = self.tokens.forget(&new.token_id);
                Err(e)
            }
        }
    }

    /// The loaded implementation of an artifact, loading (and verifying) it on first use.
    pub fn cached_adapter<E>(
        &self,
        hash: crate::ids::ContentHash,
        load: impl FnOnce() -> Result<crate::lifecycle::Loaded, E>,
    ) -> Result<Arc<crate::lifecycle::Loaded>, E> {
        if let Some(a) = self.adapters.lock().unwrap_or_else(|p| p.into_inner()).get(&hash) {
            return Ok(a.clone());
        }
        let adapter = Arc::new(load()?);
        self.adapters.lock().unwrap_or_else(|p| p.into_inner()).insert(hash, adapter.clone());
        Ok(adapter)
    }

    /// The redaction patterns of one secret version, built on first use.
    pub fn cached_secret_redactor<E>(
        &self,
        key: (String, String, String, String),
        build: impl FnOnce() -> Result<crate::runtime::redaction::Redactor, E>,
    ) -> Result<crate::runtime::redaction::Redactor, E> {
        if let Some(r) = self.secret_redactors.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(r.clone());
        }
        let r = build()?;
        let mut cache = self.secret_redactors.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a registry with more live secret versions than this rebuilds some patterns.
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(key, r.clone());
        Ok(r)
    }

    /// The component runtime (engine, closed linker, compiled-code cache under the data directory).
    pub fn components(
        &self,
    ) -> Result<Arc<crate::runtime::component::ComponentRuntime>, crate::runtime::component::ComponentError> {
        if let Some(rt) = self.components.get() {
            return Ok(rt.clone());
        }
        // The cache MAC key is derived from the registry key: only this registry can write entries
        // its loader accepts.
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, b"vadyl compiled-code cache v1\n");
        sha2::Digest::update(&mut h, self.key.signing_key().as_bytes());
        let cache_key: [u8; 32] = sha2::Digest::finalize(h).into();
        let rt =
            Arc::new(crate::runtime::component::ComponentRuntime::new(&self.data_dir.join("compiled"), cache_key)?);
        Ok(self.components.get_or_init(|| rt).clone())
    }

    /// A compiled validator, compiling on first use.
    pub fn cached_validator<E>(
        &self,
        key: (crate::ids::ContentHash, String),
        compile: impl FnOnce() -> Result<jsonschema::Validator, E>,
    ) -> Result<Arc<jsonschema::Validator>, E> {
        if let Some(v) = self.validators.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(v.clone());
        }
        let v = Arc::new(compile()?);
        self.validators.lock().unwrap_or_else(|p| p.into_inner()).insert(key, v.clone());
        Ok(v)
    }

    /// Runs `f` on the current projections, after folding anything another process appended.
    pub fn read<R>(&self, f: impl FnOnce(&Projections) -> R) -> R {
        if let Err(e) = self.catch_up_if_changed() {
            tracing::error!(error = %e, "cannot catch up with the log; answering from the state as it is");
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
        match failure {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
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
                let mut tree = MerkleAccumulator::new();
                for h in self.store.hashes(live.projections.position)? {
                    tree.push(merkle::leaf_hash(&h));
                }
                live.tree = Some(tree);
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

    fn snapshot_path(&self) -> PathBuf {
        self.data_dir.join(SNAPSHOT_FILE)
    }

    /// Loads the snapshot if it is intact and still matches the log; otherwise start from zero.
    fn load_snapshot(&self) {
        let Ok(bytes) = std::fs::read(self.snapshot_path()) else { return };
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

    /// Writes a snapshot of the live projections (atomically: temp file, fsync, rename).
    pub fn write_snapshot(&self) -> Result<(), RegistryError> {
        let (bytes, position) = {
            let live = self.live.read().unwrap_or_else(|p| p.into_inner());
            let snapshot = Snapshot::capture(&live.projections, hex::encode(live.head_hash));
            let streams = live.streams.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let merkle_peaks = live.tree.as_ref().map(|t| t.peaks().iter().map(hex::encode).collect());
            let file = SnapshotFile { snapshot, streams, merkle_peaks };
            (serde_json::to_vec(&file).unwrap_or_default(), live.projections.position)
        };
        let path = self.snapshot_path();
        let tmp = path.with_extension("json.tmp");
        let io = |action, source| RegistryError::Io { action, path: tmp.clone(), source };
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
            f.write_all(&bytes).map_err(|e| io("write", e))?;
            f.sync_all().map_err(|e| io("sync", e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
        *self.snapshot_position.lock().unwrap_or_else(|p| p.into_inner()) = position;
        Ok(())
    }

    /// Writes a snapshot if the state moved at least `min_events` since the last one.
    pub fn snapshot_if_stale(&self, min_events: u64) -> Result<(), RegistryError> {
        if !self.use_snapshots {
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
    let catalogue = crate::contracts::load_embedded().map_err(|e| RegistryError::Contracts(e.to_string()))?;
    catalogue
        .contracts
        .into_iter()
        .map(|c| {
            let contract: crate::ids::ContractRef =
                c.id().parse().map_err(|e: crate::ids::IdError| RegistryError::Contracts(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A read skips the query for new events only while nobody has committed: events that another
    /// process (here, a second registry on the same directory) appends are seen by the next read.
    #[test]
    fn reads_see_what_another_process_appended() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = || OpenOptions { use_snapshots: false, ..OpenOptions::default() };
        let server = Registry::open(dir.path(), options()).expect("open");
        let cli = Registry::open(dir.path(), options()).expect("open again");
        let count = |r: &Registry| r.read(|s| s.tokens.len());
        assert_eq!(count(&server), 0);
        assert_eq!(count(&server), 0, "an unchanged log answers from the live state");
        let meta = EventMetadata::actor("test");
        cli.issue_token(&meta, crate::ids::Role::Auditor, None, vec![], "from the CLI".into()).expect("issue");
        assert_eq!(count(&server), 1, "the other registry's event is folded at the next read");
        server.issue_token(&meta, crate::ids::Role::Auditor, None, vec![], "from the server".into()).expect("issue");
        assert_eq!((count(&server), count(&cli)), (2, 2));
    }
}
