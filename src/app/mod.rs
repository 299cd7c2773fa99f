//! The application layer: the use cases, each a function over the ports it needs, and [`App`], which
//! holds one set of ports and is what the edges (HTTP, CLI) call.
//!
//! - `registry` — decide → append → fold over the log, checkpoints, snapshots;
//! - `lifecycle` — build (declarative, component, native) and load (verify, then parse or compile);
//! - `invoke` — resolve a binding, check the input, run the host loop, record the invocation;
//! - `records` — the typed invocation record and the port it is kept behind;
//! - `conformance` — run a contract's vectors against an implementation and record the run;
//! - `replay` — feed a recorded invocation back to its artifact;
//! - `audit` — verify, replay, export, prove;
//! - `history` — the log as remote auditors page through it, and consistency proofs;
//! - `access` — tokens, principals, and the one table of what each role may do.
//!
//! Architecture invariant: nothing here knows SQL, axum or a data directory's layout; stores come
//! in as traits ([`Ports`]), implemented in `storage`. An edge reaches host state (memory, secrets,
//! tokens, records) only through a use case on [`App`], never through a store.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::events::envelope::EventMetadata;
use crate::events::store::{EventStore, StoreError};
use crate::events::tiles::TileRef;
use crate::ids::{ContractRef, ImplementationId, ProjectId, Role};
use crate::keys::RegistryKey;
use crate::projections::Projections;
use crate::runtime::artifact::ArtifactStore;
use crate::runtime::host::clock::Clock;
use crate::runtime::host::egress::{EgressError, Executor, ExecutorConfig, TokioSleeper};
use crate::runtime::host::memory::{Entry, MemoryError, MemoryStore, Scope};
use crate::runtime::host::secrets::{SecretError, SecretMetadata, SecretStore};
use crate::runtime::invoke::HostServices;

pub mod access;
pub mod audit;
pub mod conformance;
pub mod history;
pub mod invoke;
pub mod lifecycle;
pub mod records;
pub mod registry;
pub mod replay;

use access::{AccessError, NewToken, Principal, TokenHashes};
use audit::{AuditError, InclusionProof};
use conformance::{ConformanceError, ConformanceReport};
use history::{ConsistencyProof, EventPage, EventQuery};
use invoke::{InvokeError, InvokeRequest, InvokeResult};
use lifecycle::{BuildResult, LifecycleError, Loader};
use records::{InvocationRecord, InvocationRecords, RecordError, RecordPage, RecordSummary};
use registry::{OpenOptions, Registry, RegistryError, SnapshotStore};
use replay::{ReplayError, ReplayReport};

/// Every store the application needs, as the storage layer opened them.
pub struct Ports {
    pub log: Arc<dyn EventStore>,
    pub key: RegistryKey,
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
    pub artifacts: Arc<dyn ArtifactStore>,
    /// This node's compiled-code cache (local disk, never shared).
    pub compiled_dir: PathBuf,
    pub secrets: Arc<SecretStore>,
    pub memory: Arc<dyn MemoryStore>,
    pub records: Arc<dyn InvocationRecords>,
    pub tokens: Arc<dyn TokenHashes>,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the egress executor cannot start")]
    Egress(#[source] EgressError),
}

/// The registry and its runtime, behind one set of ports: what `vadyl serve` and the CLI run.
pub struct App {
    registry: Registry,
    loader: Loader,
    host: HostServices,
    records: Arc<dyn InvocationRecords>,
    tokens: Arc<dyn TokenHashes>,
    caches: invoke::Caches,
}

impl App {
    pub fn open(ports: Ports, options: OpenOptions) -> Result<Self, AppError> {
        let loader = Loader::new(ports.artifacts, ports.compiled_dir, &ports.key);
        let registry = Registry::open(ports.log, ports.key, ports.snapshots, options)?;
        let host = HostServices {
            secrets: ports.secrets,
            memory: ports.memory,
            executor: Executor::new(ExecutorConfig::default()).map_err(AppError::Egress)?,
            clock: ports.clock,
            sleeper: Arc::new(TokioSleeper),
        };
        Ok(Self {
            registry,
            loader,
            host,
            records: ports.records,
            tokens: ports.tokens,
            caches: invoke::Caches::default(),
        })
    }

    /// The log and its projections: every read of current state, and every write (through
    /// `execute` and a command from `commands`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn build_declarative(&self, metadata: &EventMetadata, document: &Value) -> Result<BuildResult, LifecycleError> {
        lifecycle::build_declarative(&self.registry, &self.loader, metadata, document)
    }

    pub fn build_component(
        &self,
        metadata: &EventMetadata,
        id: ImplementationId,
        contract: ContractRef,
        descriptor: &Value,
        wasm: lifecycle::ComponentUpload,
    ) -> Result<BuildResult, LifecycleError> {
        lifecycle::build_component(&self.registry, &self.loader, metadata, id, contract, descriptor, wasm)
    }

    pub fn build_native(
        &self,
        metadata: &EventMetadata,
        id: ImplementationId,
        adapter: &str,
        descriptor: Option<&Value>,
    ) -> Result<BuildResult, LifecycleError> {
        lifecycle::build_native(&self.registry, &self.loader, metadata, id, adapter, descriptor)
    }

    /// The content-addressed artifact store this application builds into and loads from.
    pub fn artifacts(&self) -> &dyn ArtifactStore {
        self.loader.artifacts()
    }

    /// The loaded (verified, parsed or compiled) implementation, cached by content hash.
    /// What `id` declares (manifest, descriptor or native artifact), from its verified artifact.
    pub fn configuration(&self, id: &ImplementationId) -> Result<serde_json::Value, LifecycleError> {
        lifecycle::configuration(&self.registry, &self.loader, id)
    }

    pub fn load(&self, id: &ImplementationId) -> Result<Arc<lifecycle::Loaded>, LifecycleError> {
        self.loader.load(&self.registry, id)
    }

    fn invoker(&self) -> invoke::Invoker<'_> {
        invoke::Invoker {
            registry: &self.registry,
            loader: &self.loader,
            host: &self.host,
            caches: &self.caches,
            records: self.records.as_ref(),
        }
    }

    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResult, InvokeError> {
        self.invoker().invoke(request).await
    }

    /// Runs the suite and records the run (publishing the implementation if it passed).
    pub async fn run_conformance(
        &self,
        metadata: &EventMetadata,
        id: &ImplementationId,
    ) -> Result<ConformanceReport, ConformanceError> {
        conformance::run(&self.invoker(), metadata, id).await
    }

    /// [`App::run_conformance`], reporting each vector's name as it starts.
    pub async fn run_conformance_with_progress(
        &self,
        metadata: &EventMetadata,
        id: &ImplementationId,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ConformanceReport, ConformanceError> {
        conformance::run_with_progress(&self.invoker(), metadata, id, progress).await
    }

    pub async fn replay_invocation(&self, id: &str) -> Result<ReplayReport, ReplayError> {
        replay::replay_invocation(&self.registry, &self.loader, self.records.as_ref(), id).await
    }

    pub fn invocation_record(&self, id: &str) -> Result<Option<InvocationRecord>, RecordError> {
        self.records.get(id)
    }

    /// One page of `project`'s invocation history, oldest first.
    pub fn invocation_records(&self, project: &ProjectId, after: u64, limit: usize) -> Result<RecordPage, RecordError> {
        // One more than asked tells whether there is a next page.
        let mut stored = self.records.list(project, after, limit + 1)?;
        let more = stored.len() > limit;
        stored.truncate(limit);
        let next = if more { stored.last().map(|s| s.cursor) } else { None };
        Ok(RecordPage { records: stored.iter().map(RecordSummary::from).collect(), next })
    }

    /// One memory entry of (project, implementation name), as the Memory* imports see it.
    pub fn memory_get(&self, scope: &Scope, key: &str) -> Result<Option<Entry>, MemoryError> {
        self.host.memory.get(scope, key)
    }

    pub fn set_secret(&self, project: &ProjectId, name: &str, value: &[u8]) -> Result<SecretMetadata, SecretError> {
        self.host.secrets.set(project, name, value)
    }

    pub fn list_secrets(&self, project: &ProjectId) -> Result<Vec<SecretMetadata>, SecretError> {
        self.host.secrets.list(project)
    }

    /// The principal a bearer token acts as, or `None` when it is unknown or revoked.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>, AccessError> {
        access::authenticate(&self.registry, self.tokens.as_ref(), token)
    }

    /// Generates a token, stores its hash and records its grant; the token is returned once.
    pub fn issue_token(
        &self,
        metadata: &EventMetadata,
        role: Role,
        project: Option<ProjectId>,
        implementations: Vec<String>,
        label: String,
    ) -> Result<NewToken, AccessError> {
        access::issue_token(&self.registry, self.tokens.as_ref(), metadata, role, project, implementations, label)
    }

    /// One page of the log (history routes).
    pub fn events_page(&self, query: &EventQuery) -> Result<EventPage, AuditError> {
        history::page(self.registry.store(), query)
    }

    /// The log's head position (0 when empty).
    pub fn log_head(&self) -> Result<u64, AuditError> {
        Ok(self.registry.store().head_position()?)
    }

    /// Up to `limit` events from position `from` on, as `(position, canonical envelope)`.
    pub fn events_from(&self, from: u64, limit: u64) -> Result<Vec<(u64, String)>, AuditError> {
        let mut out = Vec::new();
        self.registry.store().read_range(from, from.saturating_add(limit.max(1) - 1), &mut |e| {
            let line = String::from_utf8(e.canonical_line())
                .map_err(|_| StoreError::Corrupt { position: e.position, reason: "an envelope is not UTF-8".into() })?;
            out.push((e.position, line));
            Ok(())
        })?;
        Ok(out)
    }

    /// The canonical envelope at `position`.
    pub fn event_at(&self, position: u64) -> Result<Option<Value>, AuditError> {
        Ok(self.registry.store().event_at(position)?.map(|e| history::envelope_json(&e)).transpose()?)
    }

    /// The canonical envelope stored under `event_id`.
    pub fn event_by_id(&self, event_id: &str) -> Result<Option<Value>, AuditError> {
        Ok(self.registry.store().event_by_id(event_id)?.map(|e| history::envelope_json(&e)).transpose()?)
    }

    /// The newest signed checkpoint's note and tree size.
    fn signed_head(&self) -> Result<(String, u64), AuditError> {
        self.registry
            .read(|s| s.registry.last_checkpoint.as_ref().map(|c| (c.note.clone(), c.tree_size)))
            .ok_or(AuditError::NoCheckpoint)
    }

    /// The inclusion proof of the event at `position` against the newest signed checkpoint.
    pub fn prove_inclusion(&self, position: u64) -> Result<InclusionProof, AuditError> {
        let (note, tree_size) = self.signed_head()?;
        let head = self.registry.store().head_position()?;
        if position == 0 || position > head {
            return Err(AuditError::NoEvent(position));
        }
        if position > tree_size {
            return Err(AuditError::NotCovered { position, tree_size });
        }
        audit::prove(self.registry.store(), position, &note, tree_size)
    }

    /// The consistency proof from a tree of `old_size` events to the newest signed checkpoint.
    pub fn prove_consistency(&self, old_size: u64) -> Result<ConsistencyProof, AuditError> {
        let (note, tree_size) = self.signed_head()?;
        history::prove_consistency(self.registry.store(), old_size, &note, tree_size)
    }

    /// Every projection as it stood at position `to` (the head if `None`), rebuilt from the log
    /// with every hash and link verified on the way.
    pub fn state_at(&self, to: Option<u64>) -> Result<Projections, AuditError> {
        let head = self.registry.store().head_position()?;
        if let Some(to) = to.filter(|to| *to > head) {
            return Err(AuditError::NoEvent(to));
        }
        audit::replay(self.registry.store(), to)
    }

    /// The projections' summary and digests as they stood at position `to` (the head if `None`).
    pub fn replay_to(&self, to: Option<u64>) -> Result<audit::ReplayReport, AuditError> {
        let head = self.registry.store().head_position()?;
        if let Some(to) = to.filter(|to| *to > head) {
            return Err(AuditError::NoEvent(to));
        }
        audit::replay_report(self.registry.store(), to)
    }

    /// Writes the export over the signed tree of `tree_size` events, ending in `note`.
    pub fn export(&self, out: &mut dyn std::io::Write, note: &str, tree_size: u64) -> Result<u64, AuditError> {
        audit::export(self.registry.store(), note, tree_size, out)
    }

    /// The bytes of one `tlog-tiles` tile or entry bundle, or `None` while the log is too short
    /// to have it.
    pub fn tile(&self, tile: TileRef) -> Result<Option<Vec<u8>>, AuditError> {
        history::tile_bytes(self.registry.store(), tile)
    }

    /// The host services, for the benchmarks that drive the runtime beside the use cases.
    pub fn host_services(&self) -> &HostServices {
        &self.host
    }
}
