//! `AuthoredComponent`: WebAssembly components on Wasmtime, behind the same [`Adapter`] boundary
//! as the declarative engine and the native adapters.
//!
//! - **Closed imports.** The [`Linker`] holds the six Vadyl host interfaces and nothing else. A
//!   build refuses a component importing anything more, naming each import; an artifact forced into
//!   the store still fails at instantiation.
//! - **No I/O in the guest.** An operation call answers `done`, `failed` or `egress(plan)`; the host
//!   loop (`adapter::run`) executes the plan and calls again with the exchange appended. Every call
//!   gets a fresh instance (pooling allocator + cached `InstancePre`, so this costs microseconds),
//!   which makes the step convention's "pure function of input and exchanges" true by construction.
//! - **Limits.** Epoch interruption with a background ticker and a deadline per call; linear memory
//!   and tables capped per store; a trap, a deadline or a limit ends that call with a clear error
//!   and nothing else (each call owns its store).
//! - **Trusted bytes only.** Artifacts are verified (sha256 and ed25519) before anything is compiled.
//!   Compiled code is cached on disk by content hash and engine fingerprint, each file carrying a
//!   MAC under a host key, so `Component::deserialize` only ever sees files this host wrote.

pub mod bridge;
pub mod descriptor;
mod imports;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::Mac;
use serde_json::Value;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Val};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wit_parser::{Resolve, Type, TypeDefKind};

use super::adapter::{Adapter, AdapterError, ContractFailure, Exchange, ExchangeOutcome, Step, StepHost};
pub use descriptor::Descriptor;

/// How often the epoch advances; deadlines are enforced to within one tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("the component imports what the host does not provide: {}", .0.join(", "))]
    ForbiddenImports(Vec<String>),
    #[error("the component does not implement contract {contract}: {reason}")]
    ExportMismatch { contract: String, reason: String },
    #[error("the bytes are not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("cannot instantiate the component: {0}")]
    Instantiate(String),
    #[error("the compiled-code cache failed: {0}")]
    Cache(String),
    #[error("the component runtime cannot start: {0}")]
    Engine(String),
    #[error(transparent)]
    Descriptor(#[from] descriptor::DescriptorError),
}

/// The WIT package resolved once, and what each contract's operations look like in it.
pub struct WitContracts {
    resolve: Resolve,
}

/// One operation's WIT types.
#[derive(Clone)]
struct OperationTypes {
    name: String,
    input: Type,
    exchanges: Type,
    step: Type,
}

impl WitContracts {
    pub fn load() -> Result<Self, ComponentError> {
        let (resolve, _) = crate::contracts::embedded_resolve().map_err(|e| ComponentError::Engine(e.to_string()))?;
        Ok(Self { resolve })
    }

    /// The exported interface (`vadyl:connector/payment-charge-v1-api@1.0.0`) and its operations.
    fn contract(&self, spec: &crate::contracts::ContractSpec) -> Result<(String, Vec<OperationTypes>), ComponentError> {
        let missing = |what: &str| ComponentError::Engine(format!("contract {}: {what}", spec.id()));
        let (iface_id, _) = self
            .resolve
            .interfaces
            .iter()
            .find(|(id, _)| self.resolve.id_of(*id).as_deref() == Some(spec.interface.as_str()))
            .ok_or_else(|| missing("its interface is not in the WIT package"))?;
        let iface = &self.resolve.interfaces[iface_id];
        let mut ops = Vec::new();
        for f in iface.functions.values() {
            let (Some(input), Some(exchanges), Some(step)) =
                (f.params.first().map(|p| p.ty), f.params.get(1).map(|p| p.ty), f.result)
            else {
                return Err(missing("an operation breaks the calling convention"));
            };
            ops.push(OperationTypes { name: f.name.clone(), input, exchanges, step });
        }
        Ok((spec.interface.clone(), ops))
    }

    pub fn resolve(&self) -> &Resolve {
        &self.resolve
    }
}

/// Store data of one call: the step's host, the limits, and the guest's telemetry budget.
pub struct GuestState {
    host: HostSlot,
    limits: Limits,
    spans: u32,
    telemetry_budget: u32,
}

/// The step's `&mut dyn StepHost`, reachable from host functions.
///
/// Wasmtime requires store data to be `'static`, while the host lives on the caller's stack for
/// exactly one `step`. The pointer is set when the store is created inside [`ComponentAdapter::step`]
/// and the store is dropped before `step` returns, so it never outlives the borrow it came from;
/// host functions run only inside `Func::call`, on the calling thread.
struct HostSlot(*mut (dyn StepHost + 'static));

// SAFETY: the slot only moves together with its store, which never leaves `step`'s thread.
unsafe impl Send for HostSlot {}

impl GuestState {
    fn host(&mut self) -> &mut dyn StepHost {
        // SAFETY: see `HostSlot`: the pointee outlives every store holding the slot, and `&mut self`
        // guarantees this is the only live reference derived from it.
        unsafe { &mut *self.host.0 }
    }
}

/// Memory and table limits of one store; remembers why it refused so the error can say it.
struct Limits {
    memory_bytes: usize,
    table_elements: usize,
    refused: Option<String>,
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.refused = Some(format!(
                "linear memory limit reached: the guest asked to grow from {current} to {desired} bytes, the limit is {} bytes",
                self.memory_bytes
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.refused = Some(format!(
                "table limit reached: {current} -> {desired} elements, the limit is {}",
                self.table_elements
            ));
            return Ok(false);
        }
        Ok(true)
    }
}

/// Advances the engine's epoch until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Result<Self, ComponentError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, engine) = (stop.clone(), engine.weak());
        std::thread::Builder::new()
            .name("vadyl-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| ComponentError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The engine, the closed linker and the compiled-code cache; one per registry.
pub struct ComponentRuntime {
    engine: Engine,
    linker: Linker<GuestState>,
    wit: WitContracts,
    cache_dir: PathBuf,
    cache_key: [u8; 32],
    fingerprint: String,
    _ticker: EpochTicker,
    /// One compile at a time on this node: compiling a 12–19 MB Python or JavaScript component
    /// takes 6–7 s and about 460 MiB at its peak (`vadyl bench invoke`), so concurrent uploads
    /// queue here instead of multiplying that memory.
    compiling: std::sync::Mutex<()>,
}

/// Concurrent instances the pool holds; beyond it a call fails fast instead of queueing.
const POOL_INSTANCES: u32 = 128;

/// The engine configuration every component (and the benchmark's raw baseline) runs with.
pub fn engine_config() -> Config {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    // A componentize-py guest is 38 core instances (CPython's modules) sharing one memory, a
    // ComponentizeJS guest 3: the pool fits a full house of Python guests, not only Rust ones.
    // An unused core-instance slot costs address space, not memory.
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 48)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 4)
        .max_memory_size(descriptor::MAX_MEMORY_BYTES as usize)
        .table_elements(10_000);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        // A slot's reservation is the memory ceiling (plus guards): pools stay small in address space
        // and bounds checks remain cheap.
        .memory_reservation(descriptor::MAX_MEMORY_BYTES)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    config
}

impl ComponentRuntime {
    /// `cache_dir` holds compiled code; `cache_key` authenticates it (derived from the registry key).
    pub fn new(cache_dir: &Path, cache_key: [u8; 32]) -> Result<Self, ComponentError> {
        let engine = Engine::new(&engine_config()).map_err(|e| ComponentError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        imports::add_to_linker(&mut linker).map_err(|e| ComponentError::Engine(format!("{e:#}")))?;
        create_private_dir(cache_dir)
            .map_err(|e| ComponentError::Cache(format!("cannot create {}: {e}", cache_dir.display())))?;
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("wasmtime48-{:016x}", h.finish())
        };
        let ticker = EpochTicker::start(&engine)?;
        Ok(Self {
            engine,
            linker,
            wit: WitContracts::load()?,
            cache_dir: cache_dir.to_owned(),
            cache_key,
            fingerprint,
            _ticker: ticker,
            compiling: std::sync::Mutex::new(()),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Every import of `component` outside the Vadyl host interfaces.
    pub fn forbidden_imports(&self, component: &Component) -> Vec<String> {
        let allowed: Vec<String> = crate::contracts::HOST_INTERFACES
            .iter()
            .chain(std::iter::once(&crate::contracts::SHARED_INTERFACE))
            .map(|i| format!("vadyl:connector/{i}@1.0.0"))
            .collect();
        component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .filter(|name| !allowed.contains(name))
            .collect()
    }

    /// Compiles (validating) freshly submitted bytes and checks them against `contract`: imports
    /// within the closed set, exports matching the contract world. Used at build.
    pub fn check(&self, bytes: &[u8], contract: &crate::contracts::ContractSpec) -> Result<(), ComponentError> {
        let component = self.compile(bytes)?;
        self.accept(&component, contract)
    }

    fn compile(&self, bytes: &[u8]) -> Result<Component, ComponentError> {
        let _one_at_a_time = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
        Component::new(&self.engine, bytes).map_err(|e| ComponentError::Invalid(format!("{e:#}")))
    }

    /// [`check`](Self::check) on an artifact about to be stored under `hash`, keeping its compiled
    /// code in the cache: the conformance run and the first invocation that follow load it instead
    /// of compiling a second time (seconds, for a 20 MB Python component).
    pub fn check_and_cache(
        &self,
        hash: &crate::ids::ContentHash,
        artifact: &[u8],
        contract: &crate::contracts::ContractSpec,
    ) -> Result<(), ComponentError> {
        let component = self.compiled(hash, artifact)?;
        self.accept(&component, contract)
    }

    /// What every compiled component must satisfy: imports within the closed set, exports matching
    /// the contract world.
    fn accept(&self, component: &Component, contract: &crate::contracts::ContractSpec) -> Result<(), ComponentError> {
        let forbidden = self.forbidden_imports(component);
        if !forbidden.is_empty() {
            return Err(ComponentError::ForbiddenImports(forbidden));
        }
        self.check_exports(component, contract)
    }

    fn check_exports(
        &self,
        component: &Component,
        spec: &crate::contracts::ContractSpec,
    ) -> Result<(), ComponentError> {
        let mismatch = |reason: String| ComponentError::ExportMismatch { contract: spec.id(), reason };
        let (interface, ops) = self.wit.contract(spec)?;
        let ty = component.component_type();
        let Some(wasmtime::component::types::ComponentItem::ComponentInstance(instance)) =
            ty.get_export(&self.engine, &interface).map(|e| e.ty)
        else {
            let exported: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_owned()).collect();
            return Err(mismatch(format!("it does not export `{interface}` (it exports: {})", exported.join(", "))));
        };
        for op in &ops {
            let Some(wasmtime::component::types::ComponentItem::ComponentFunc(func)) =
                instance.get_export(&self.engine, &op.name).map(|e| e.ty)
            else {
                return Err(mismatch(format!("`{interface}` has no function `{}`", op.name)));
            };
            let params: Vec<wasmtime::component::types::Type> = func.params().map(|(_, t)| t).collect();
            let results: Vec<wasmtime::component::types::Type> = func.results().collect();
            let resolve = &self.wit.resolve;
            let ok = params.len() == 2
                && results.len() == 1
                && same_type(resolve, &op.input, &params[0])
                && same_type(resolve, &op.exchanges, &params[1])
                && same_type(resolve, &op.step, &results[0]);
            if !ok {
                return Err(mismatch(format!("`{}` does not have the contract's signature", op.name)));
            }
        }
        Ok(())
    }

    /// Loads verified artifact bytes into a ready-to-instantiate adapter. The compiled form comes from
    /// the disk cache when this host wrote one for these exact bytes and engine.
    pub fn load(
        &self,
        content_hash: &crate::ids::ContentHash,
        verified_bytes: &[u8],
        contract: &crate::contracts::ContractSpec,
    ) -> Result<ComponentAdapter, ComponentError> {
        let descriptor = descriptor::extract(verified_bytes)?;
        let component = self.compiled(content_hash, verified_bytes)?;
        self.accept(&component, contract)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| ComponentError::Instantiate(format!("{e:#}")))?;
        let (interface, ops) = self.wit.contract(contract)?;
        let iface = component.get_export_index(None, &interface).ok_or_else(|| ComponentError::ExportMismatch {
            contract: contract.id(),
            reason: format!("no `{interface}`"),
        })?;
        let mut operations = Vec::new();
        for op in ops {
            let index = component.get_export_index(Some(&iface), &op.name).ok_or_else(|| {
                ComponentError::ExportMismatch { contract: contract.id(), reason: format!("no `{}`", op.name) }
            })?;
            operations.push((op, index));
        }
        Ok(ComponentAdapter { runtime: self.handle(), pre, operations, descriptor })
    }

    fn handle(&self) -> RuntimeHandle {
        RuntimeHandle { engine: self.engine.clone(), resolve: Arc::new(self.wit.resolve.clone()) }
    }

    fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.cache_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// The compiled component for `hash`: from the cache if this host wrote it (MAC checked), else
    /// compiled now and written back atomically.
    fn compiled(&self, hash: &crate::ids::ContentHash, bytes: &[u8]) -> Result<Component, ComponentError> {
        let path = self.cache_dir.join(format!("{}-{}.cwasm", hash.to_hex(), self.fingerprint));
        if let Ok(cached) = std::fs::read(&path) {
            if cached.len() > 32 {
                let (tag, code) = cached.split_at(32);
                if self.mac(code).as_slice() == tag {
                    // SAFETY: `code` is authenticated by a MAC under a key only this host holds, so it
                    // is a serialization this host's engine produced (the engine re-checks its
                    // compatibility); Wasmtime's requirement for `deserialize` is exactly that.
                    if let Ok(c) = unsafe { Component::deserialize(&self.engine, code) } {
                        return Ok(c);
                    }
                }
            }
            tracing::warn!(path = %path.display(), "ignoring a compiled-code cache entry this host did not write");
        }
        let component = self.compile(bytes)?;
        let code = component.serialize().map_err(|e| ComponentError::Cache(format!("{e:#}")))?;
        let mut file = self.mac(&code).to_vec();
        file.extend_from_slice(&code);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.cache_dir)?;
            tmp.write_all(&file)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            // The cache is an optimisation: a full disk costs a recompile, not the invocation.
            tracing::warn!(error = %e, "cannot write the compiled-code cache");
        }
        Ok(component)
    }
}

/// What an adapter needs of its runtime: the engine and the WIT types.
#[derive(Clone)]
struct RuntimeHandle {
    engine: Engine,
    resolve: Arc<Resolve>,
}

/// One loaded component, ready to run calls.
pub struct ComponentAdapter {
    runtime: RuntimeHandle,
    pre: InstancePre<GuestState>,
    operations: Vec<(OperationTypes, ComponentExportIndex)>,
    descriptor: Descriptor,
}

impl ComponentAdapter {
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    pub fn engine(&self) -> &Engine {
        &self.runtime.engine
    }

    /// The cached pre-instantiation (for the benchmark's raw baseline).
    pub fn instance_pre(&self) -> &InstancePre<GuestState> {
        &self.pre
    }

    /// The export of `operation` and its arguments as WIT values (for the benchmark's raw baseline).
    pub fn raw_call_parts(&self, operation: &str, input: &Value) -> Option<(ComponentExportIndex, [Val; 2])> {
        let (op, index) = self.operations.iter().find(|(o, _)| o.name == operation)?;
        let input = bridge::to_val(&self.runtime.resolve, &op.input, input).ok()?;
        let exchanges = bridge::to_val(&self.runtime.resolve, &op.exchanges, &Value::Array(vec![])).ok()?;
        Some((*index, [input, exchanges]))
    }

    /// A store for one call, with limits and deadline set.
    pub fn new_store(&self, host: &mut dyn StepHost) -> Store<GuestState> {
        let ptr: *mut (dyn StepHost + '_) = host;
        // SAFETY: only the lifetime bound changes; see `HostSlot` for why the pointer never outlives
        // the borrow (the store is dropped within the caller's use of `host`).
        let ptr: *mut (dyn StepHost + 'static) = unsafe { std::mem::transmute(ptr) };
        let limits = self.descriptor.limits;
        let state = GuestState {
            host: HostSlot(ptr),
            limits: Limits {
                memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                table_elements: 10_000,
                refused: None,
            },
            spans: 0,
            telemetry_budget: imports::telemetry_budget(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        // Every epoch tick checks the wall clock: the deadline is the call's real elapsed time, not a
        // count of ticks (a ticker delayed under load would otherwise stretch it), and time spent
        // blocked in a host call counts too. At the hard deadline the callback traps.
        let hard_deadline = Instant::now() + Duration::from_millis(limits.deadline_ms);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= hard_deadline {
                Err(Trap::Interrupt.into())
            } else {
                Ok(wasmtime::UpdateDeadline::Continue(1))
            }
        });
        store
    }

    fn explain(&self, store: &Store<GuestState>, error: &wasmtime::Error, started: Instant) -> AdapterError {
        let elapsed = started.elapsed().as_millis();
        if let Some(refused) = &store.data().limits.refused {
            return AdapterError::Misbehaved(format!("the guest was stopped: {refused}"));
        }
        let message = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => format!(
                "the guest exceeded its deadline of {} ms and was interrupted after {elapsed} ms",
                self.descriptor.limits.deadline_ms
            ),
            Some(Trap::StackOverflow) => "the guest overflowed its stack".to_owned(),
            Some(trap) => {
                let frames = error.downcast_ref::<wasmtime::WasmBacktrace>().map(named_frames).unwrap_or_default();
                if let Some(stub) = stubbed_wasi(*trap, &frames) {
                    return stub;
                }
                match frames.first() {
                    Some(_) => format!("the guest trapped: {trap}, in {}", chain(&frames)),
                    None => format!("the guest trapped: {trap}"),
                }
            }
            None => format!("the guest failed: {error:#}"),
        };
        AdapterError::Misbehaved(message)
    }
}

/// One frame of a trap's backtrace that has a name: (module, function), innermost first. The
/// bool says whether unnamed frames (a toolchain's stubs, adapters) sat above it.
type Frame = (String, String, bool);

fn named_frames(backtrace: &wasmtime::WasmBacktrace) -> Vec<Frame> {
    let mut unnamed_above = false;
    let mut out = Vec::new();
    for f in backtrace.frames() {
        match f.func_name() {
            Some(name) => {
                out.push((f.module().name().unwrap_or("?").to_owned(), name.to_owned(), unnamed_above));
                unnamed_above = false;
            }
            None => unnamed_above = true,
        }
    }
    out
}

/// `f` ← `g` ← `h` (module): the innermost named frames, for a trap message.
fn chain(frames: &[Frame]) -> String {
    frames.iter().take(4).map(|(module, name, _)| format!("`{name}` ({module})")).collect::<Vec<_>>().join(" ← ")
}

/// A trap inside a toolchain's WASI stub: `unreachable` in unnamed code called straight from the C
/// library (wasi-libc, which componentize-py links as `libc.so`), the only caller of WASI imports.
fn stubbed_wasi(trap: Trap, frames: &[Frame]) -> Option<AdapterError> {
    let (module, function, stub_above) = frames.first()?;
    (trap == Trap::UnreachableCodeReached && *stub_above && module.starts_with("libc"))
        .then(|| AdapterError::StubbedWasi { function: function.clone(), chain: chain(frames) })
}

impl Adapter for ComponentAdapter {
    fn step(
        &self,
        host: &mut dyn StepHost,
        operation: &str,
        input: &Value,
        exchanges: &[Exchange],
    ) -> Result<Step, AdapterError> {
        let (op, index) = self
            .operations
            .iter()
            .find(|(o, _)| o.name == operation)
            .ok_or_else(|| AdapterError::UnknownOperation(operation.to_owned()))?;
        let resolve = &self.runtime.resolve;
        let input = bridge::to_val(resolve, &op.input, input)
            .map_err(|e| AdapterError::Misbehaved(format!("the input does not fit the contract's WIT type: {e}")))?;
        let exchanges = bridge::to_val(resolve, &op.exchanges, &exchanges_json(exchanges))
            .map_err(|e| AdapterError::Misbehaved(format!("cannot pass the exchanges to the guest: {e}")))?;
        let mut store = self.new_store(host);
        let started = Instant::now();
        let instance = match self.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(self.explain(&store, &e, started)),
        };
        let func = instance
            .get_func(&mut store, index)
            .ok_or_else(|| AdapterError::Misbehaved(format!("the component lost its export `{operation}`")))?;
        let mut results = [Val::Bool(false)];
        if let Err(e) = func.call(&mut store, &[input, exchanges], &mut results) {
            return Err(self.explain(&store, &e, started));
        }
        drop(store);
        let step = bridge::to_json(resolve, &op.step, &results[0])
            .map_err(|e| AdapterError::Misbehaved(format!("the guest's answer does not fit the contract: {e}")))?;
        step_of(step)
    }

    fn runs_guest_code(&self) -> bool {
        true
    }
}

/// The step JSON (`{"done": …}`, `{"egress": "plan-1"}`, `{"failed": …}`) as a [`Step`].
fn step_of(step: Value) -> Result<Step, AdapterError> {
    let Value::Object(mut obj) = step else {
        return Err(AdapterError::Misbehaved("the step is not a variant".into()));
    };
    if let Some(output) = obj.remove("done") {
        return Ok(Step::Done(output));
    }
    if let Some(plan) = obj.remove("egress") {
        let id = plan.as_str().and_then(imports::parse_plan_id).ok_or_else(|| {
            AdapterError::Misbehaved(format!("the guest returned {plan}, which is not a plan id the host issued"))
        })?;
        return Ok(Step::Egress(id));
    }
    if let Some(error) = obj.remove("failed") {
        let failure: ContractFailure = serde_json::from_value(error)
            .map_err(|e| AdapterError::Misbehaved(format!("the guest's contract error is malformed: {e}")))?;
        return Ok(Step::Failed(failure));
    }
    Err(AdapterError::Misbehaved("the step has no known case".into()))
}

/// Exchanges in the contract's JSON shape (`types.egress-exchange`).
fn exchanges_json(exchanges: &[Exchange]) -> Value {
    Value::Array(
        exchanges
            .iter()
            .map(|x| {
                let outcome = match &x.outcome {
                    ExchangeOutcome::Response { status, headers, body } => {
                        let body = match std::str::from_utf8(body) {
                            _ if body.is_empty() => Value::String("empty".into()),
                            Ok(text) => serde_json::json!({ "text": text }),
                            Err(_) => serde_json::json!({ "bytes": body }),
                        };
                        let headers: Vec<Value> =
                            headers.iter().map(|(n, v)| serde_json::json!({"name": n, "value": v})).collect();
                        serde_json::json!({"response": {"status": status, "headers": headers, "body": body}})
                    }
                    ExchangeOutcome::NetworkError { message } => {
                        let kind = if message.contains("timed out") || message.contains("timeout") {
                            "timeout"
                        } else {
                            "other"
                        };
                        serde_json::json!({"network-error": {"kind": kind, "message": message}})
                    }
                    ExchangeOutcome::Refused { message } => {
                        serde_json::json!({"network-error": {"kind": "policy-denied", "message": message}})
                    }
                };
                serde_json::json!({
                    "plan": imports::plan_id(x.plan), "sequence": x.sequence, "outcome": outcome,
                    "elapsedMs": x.elapsed_ms,
                })
            })
            .collect(),
    )
}

/// Whether the component's type `actual` is the contract's WIT type `expected`.
fn same_type(resolve: &Resolve, expected: &Type, actual: &wasmtime::component::types::Type) -> bool {
    use wasmtime::component::types::Type as T;
    match (expected, actual) {
        (Type::Bool, T::Bool)
        | (Type::U8, T::U8)
        | (Type::U16, T::U16)
        | (Type::U32, T::U32)
        | (Type::U64, T::U64)
        | (Type::S8, T::S8)
        | (Type::S16, T::S16)
        | (Type::S32, T::S32)
        | (Type::S64, T::S64)
        | (Type::F32, T::Float32)
        | (Type::F64, T::Float64)
        | (Type::Char, T::Char)
        | (Type::String, T::String) => true,
        (Type::Id(id), actual) => match (&resolve.types[*id].kind, actual) {
            (TypeDefKind::Type(inner), a) => same_type(resolve, inner, a),
            (TypeDefKind::Record(r), T::Record(a)) => {
                a.fields().len() == r.fields.len()
                    && r.fields
                        .iter()
                        .zip(a.fields())
                        .all(|(f, g)| f.name == g.name && same_type(resolve, &f.ty, &g.ty))
            }
            (TypeDefKind::Variant(v), T::Variant(a)) => {
                a.cases().len() == v.cases.len()
                    && v.cases.iter().zip(a.cases()).all(|(c, d)| {
                        c.name == d.name
                            && match (&c.ty, &d.ty) {
                                (None, None) => true,
                                (Some(x), Some(y)) => same_type(resolve, x, y),
                                _ => false,
                            }
                    })
            }
            (TypeDefKind::Enum(e), T::Enum(a)) => e.cases.iter().map(|c| c.name.as_str()).eq(a.names()),
            (TypeDefKind::Flags(f), T::Flags(a)) => f.flags.iter().map(|c| c.name.as_str()).eq(a.names()),
            (TypeDefKind::Option(inner), T::Option(a)) => same_type(resolve, inner, &a.ty()),
            (TypeDefKind::Result(r), T::Result(a)) => {
                let same = |x: &Option<Type>, y: Option<wasmtime::component::types::Type>| match (x, y) {
                    (None, None) => true,
                    (Some(x), Some(y)) => same_type(resolve, x, &y),
                    _ => false,
                };
                same(&r.ok, a.ok()) && same(&r.err, a.err())
            }
            (TypeDefKind::List(inner), T::List(a)) => same_type(resolve, inner, &a.ty()),
            (TypeDefKind::Tuple(t), T::Tuple(a)) => {
                a.types().len() == t.types.len()
                    && t.types.iter().zip(a.types()).all(|(x, y)| same_type(resolve, x, &y))
            }
            _ => false,
        },
        _ => false,
    }
}

/// The compiled-code cache is this node's own: a directory only its owner can list (0700).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}
