//! Lifecycle operations that need more than one decision: build (validate, store the artifact,
//! sign, record), and the loading of a published implementation for a run. HTTP and CLI call these;
//! the events they append are still decided by `commands`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::Value;

use crate::app::registry::{Registry, RegistryError};
use crate::commands::{self, BuildDecision, CommandError};
use crate::events::domain::ImplementationBuilt;
use crate::events::envelope::EventMetadata;
use crate::ids::{ContentHash, ContractRef, ImplementationId, ImplementationSource, SignatureBytes};
use crate::keys::{RegistryKey, Signer};
use crate::projections::ImplementationView;
use crate::runtime::adapter::Adapter;
use crate::runtime::artifact::{self, ArtifactStore, ArtifactStoreError};
use crate::runtime::component::{descriptor, ComponentError, ComponentRuntime, Descriptor};
use crate::runtime::declarative::engine::DeclarativeAdapter;
use crate::runtime::declarative::manifest::FixtureResponse;
use crate::runtime::declarative::{self, Manifest, ManifestError};
use crate::runtime::host::egress::{AllowList, AllowRule};

pub const DECLARATIVE_MEDIA_TYPE: &str = "application/vnd.vadyl.declarative+json";
pub const COMPONENT_MEDIA_TYPE: &str = "application/wasm";
pub const NATIVE_MEDIA_TYPE: &str = "application/vnd.vadyl.native+json";

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("the manifest is invalid ({} problem(s)); first: {}", .0.len(), .0.first().map_or(String::new(), |e| format!("{}: {}", e.path, e.message)))]
    InvalidManifest(Vec<ManifestError>),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the artifact of {implementation} cannot be {action}")]
    ArtifactStore {
        implementation: ImplementationId,
        action: &'static str,
        /// Boxed: the store's error is large, and every build result carries this type.
        #[source]
        source: Box<ArtifactStoreError>,
    },
    #[error("the embedded contract catalogue cannot be loaded")]
    Contracts(#[source] crate::contracts::ContractError),
    #[error(transparent)]
    Component(#[from] ComponentError),
    // Refusals of the request: the caller can fix these.
    #[error("no contract {0} is registered")]
    UnknownContract(ContractRef),
    #[error("the descriptor is not valid")]
    InvalidDescriptor(#[source] serde_json::Error),
    #[error("/conformance/fixtures/{name}: {contract} has no conformance vector named {name:?}")]
    UnknownFixture { contract: ContractRef, name: String },
    #[error("this binary has no native adapter {adapter:?}; it has: {available}")]
    UnknownNativeAdapter { adapter: String, available: String },
    // Failures of the registry itself: a stored artifact it cannot use, or a broken invariant.
    #[error("the allow-list is unusable")]
    AllowList(#[source] crate::runtime::host::egress::EgressError),
    #[error("the {what} cannot be canonicalized")]
    Canonicalize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} vanished after its build was recorded")]
    Vanished(ImplementationId),
    #[error("the stored {what} of {implementation} does not parse")]
    StoredArtifactUnreadable {
        implementation: ImplementationId,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{implementation} names native adapter {adapter:?}, which this binary lacks")]
    NativeAdapterMissing { implementation: ImplementationId, adapter: String },
    #[error(
        "{} was built against {} {} (by {}); this binary provides version {}: publish a new version",
        .0.implementation, .0.adapter, .0.built, .0.binary, .0.provided
    )]
    NativeVersionMismatch(Box<NativeVersionMismatch>),
}

/// A native artifact built against another version of its adapter than this binary provides.
#[derive(Debug)]
pub struct NativeVersionMismatch {
    pub implementation: ImplementationId,
    pub adapter: String,
    pub built: String,
    pub binary: String,
    pub provided: String,
}

/// Loads published artifacts for runs: verified by hash and signature, then parsed (declarative,
/// native) or compiled (components, on the engine started on first use), and cached by content
/// hash so that a run after the first pays none of it.
pub struct Loader {
    artifacts: Arc<dyn ArtifactStore>,
    compiled_dir: PathBuf,
    /// Authenticates the compiled-code cache; derived from the registry key, so only this
    /// registry can write entries its loader accepts.
    cache_key: [u8; 32],
    components: OnceLock<Arc<ComponentRuntime>>,
    loaded: Mutex<HashMap<ContentHash, Arc<Loaded>>>,
}

impl Loader {
    pub fn new(artifacts: Arc<dyn ArtifactStore>, compiled_dir: PathBuf, key: &RegistryKey) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"vadyl compiled-code cache v1\n");
        h.update(key.signing_key().as_bytes());
        Self {
            artifacts,
            compiled_dir,
            cache_key: h.finalize().into(),
            components: OnceLock::new(),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    pub fn artifacts(&self) -> &dyn ArtifactStore {
        self.artifacts.as_ref()
    }

    /// The component runtime (engine, closed linker, compiled-code cache), started on first use:
    /// most commands never run a component.
    pub fn components(&self) -> Result<Arc<ComponentRuntime>, ComponentError> {
        if let Some(rt) = self.components.get() {
            return Ok(rt.clone());
        }
        let rt = Arc::new(ComponentRuntime::new(&self.compiled_dir, self.cache_key)?);
        Ok(self.components.get_or_init(|| rt).clone())
    }

    /// The loaded implementation `id`, loading (and verifying) it on first use.
    pub fn load(&self, registry: &Registry, id: &ImplementationId) -> Result<Arc<Loaded>, LifecycleError> {
        let hash = registry
            .read(|s| s.implementation(id).map(|i| i.content_hash))
            .ok_or_else(|| CommandError::NotFound(format!("implementation {id} does not exist")))?;
        self.load_published(registry, id, hash)
    }

    /// [`Loader::load`] when the caller already knows the content hash (from the publication).
    pub fn load_published(
        &self,
        registry: &Registry,
        id: &ImplementationId,
        hash: ContentHash,
    ) -> Result<Arc<Loaded>, LifecycleError> {
        if let Some(a) = self.loaded.lock().unwrap_or_else(|p| p.into_inner()).get(&hash) {
            return Ok(a.clone());
        }
        let loaded = Arc::new(load(registry, self, id)?);
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).insert(hash, loaded.clone());
        Ok(loaded)
    }
}

impl From<CommandError> for LifecycleError {
    fn from(e: CommandError) -> Self {
        Self::Registry(RegistryError::Command(e))
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildResult {
    pub implementation_id: ImplementationId,
    pub source: ImplementationSource,
    pub contract: ContractRef,
    pub content_hash: ContentHash,
    pub signature: SignatureBytes,
    pub artifact_size: u64,
    /// False when identical content was already built (nothing was written).
    pub created: bool,
}

fn invalid(path: &str, message: impl Into<String>) -> LifecycleError {
    LifecycleError::InvalidManifest(vec![ManifestError { path: path.to_owned(), message: message.into() }])
}

/// A built implementation ready to run, whatever its source: the adapter and the policy its
/// artifact was published with. Cached by content hash.
pub struct Loaded {
    pub adapter: Arc<dyn Adapter>,
    pub policy: Policy,
}

/// What a published artifact allows and declares; the invocation host and conformance read it the
/// same way for all three sources.
pub struct Policy {
    pub source: ImplementationSource,
    pub allow: AllowList,
    /// Secrets the implementation may use (its `secret:<name>` grants).
    pub secrets: Vec<String>,
    /// Sensitive pointers beyond the contract's `@sensitive` fields.
    pub input_pointers: Vec<String>,
    pub output_pointers: Vec<String>,
    /// Operation -> idempotency header, for `egress.idempotency-on-retry`.
    pub idempotency_headers: BTreeMap<String, String>,
    /// Vector name -> what the provider answers.
    pub fixtures: BTreeMap<String, Vec<FixtureResponse>>,
}

impl Policy {
    pub fn grants(&self) -> Vec<String> {
        self.secrets.iter().map(|n| format!("secret:{n}")).collect()
    }

    fn from_descriptor(source: ImplementationSource, d: &Descriptor) -> Result<Self, LifecycleError> {
        Ok(Self {
            source,
            allow: allow_list(&d.egress)?,
            secrets: d.secrets.clone(),
            input_pointers: d.redaction.input_pointers.clone(),
            output_pointers: d.redaction.output_pointers.clone(),
            idempotency_headers: d.idempotency_headers.clone(),
            fixtures: d.conformance.as_ref().map(|c| c.fixtures.clone()).unwrap_or_default(),
        })
    }
}

fn allow_list(egress: &crate::runtime::declarative::manifest::Egress) -> Result<AllowList, LifecycleError> {
    let rules = egress.allow.iter().map(|o| AllowRule::new(o.scheme, o.host.clone(), o.port)).collect();
    AllowList::new(rules).map_err(LifecycleError::AllowList)
}

/// Stores `bytes` by content hash, signs them and records the build (refusing a conflicting rebuild
/// before writing anything). Shared by the three sources.
#[allow(clippy::too_many_arguments)]
fn record_artifact(
    registry: &Registry,
    loader: &Loader,
    metadata: &EventMetadata,
    id: ImplementationId,
    source: ImplementationSource,
    contract: ContractRef,
    bytes: &[u8],
    content_hash: ContentHash,
    media_type: &str,
) -> Result<BuildResult, LifecycleError> {
    registry.read(|s| commands::check_rebuild(s, &id, &content_hash, &contract))?;
    loader.artifacts.put(bytes).map_err(|source| LifecycleError::ArtifactStore {
        implementation: id.clone(),
        action: "stored",
        source: Box::new(source),
    })?;
    let signature = registry.key().sign(&artifact::signing_message(&content_hash));
    let built = ImplementationBuilt {
        implementation_id: id.clone(),
        source,
        contract: contract.clone(),
        content_hash,
        signature,
        artifact_size: bytes.len() as u64,
        media_type: media_type.to_owned(),
    };
    let stored = registry.execute(metadata, |s| match commands::record_build(s, built.clone())? {
        BuildDecision::Created(events) => Ok(events),
        BuildDecision::AlreadyBuilt => Ok(Vec::new()),
    })?;
    let created = !stored.is_empty();
    let view = registry.read(|s| s.implementation(&id).cloned()).ok_or_else(|| LifecycleError::Vanished(id.clone()))?;
    Ok(BuildResult {
        implementation_id: id,
        source: view.source,
        contract,
        content_hash: view.content_hash,
        signature: view.signature,
        artifact_size: view.artifact_size,
        created: created && view.content_hash == content_hash,
    })
}

fn contract_spec(contract: &ContractRef) -> Result<crate::contracts::ContractSpec, LifecycleError> {
    let catalogue = crate::contracts::load_embedded().map_err(LifecycleError::Contracts)?;
    catalogue
        .contract(contract.kind.as_str(), contract.major_version)
        .cloned()
        .ok_or_else(|| LifecycleError::UnknownContract(contract.clone()))
}

/// Builds a declarative manifest into a signed, content-addressed artifact and records the build.
pub fn build_declarative(
    registry: &Registry,
    loader: &Loader,
    metadata: &EventMetadata,
    document: &Value,
) -> Result<BuildResult, LifecycleError> {
    let kind = document.pointer("/contract/kind").and_then(Value::as_str);
    let major = document.pointer("/contract/majorVersion").and_then(Value::as_u64);
    let (Some(kind), Some(major)) = (kind, major) else {
        return Err(invalid("/contract", "the manifest must name its contract: {\"kind\": …, \"majorVersion\": …}"));
    };
    let catalogue = crate::contracts::load_embedded().map_err(LifecycleError::Contracts)?;
    let major = u32::try_from(major).map_err(|_| invalid("/contract/majorVersion", "too large"))?;
    let spec = catalogue
        .contract(kind, major)
        .ok_or_else(|| invalid("/contract", format!("no contract {kind}@{major} is registered")))?;
    let valid = declarative::validate(document, spec).map_err(LifecycleError::InvalidManifest)?;
    let id = valid.implementation_id().clone();
    let contract: ContractRef =
        format!("{kind}@{major}").parse().map_err(|e: crate::ids::IdError| invalid("/contract", e.to_string()))?;
    let bytes = declarative::canonical_bytes(&valid);
    record_artifact(
        registry,
        loader,
        metadata,
        id,
        ImplementationSource::DeclarativeBundle,
        contract,
        &bytes,
        ContentHash::of(&bytes),
        DECLARATIVE_MEDIA_TYPE,
    )
}

/// Builds a WebAssembly component: refuses imports outside the host interfaces (naming each) and
/// exports that do not match the contract world, embeds the descriptor, then signs, stores and
/// records the one artifact.
pub fn build_component(
    registry: &Registry,
    loader: &Loader,
    metadata: &EventMetadata,
    id: ImplementationId,
    contract: ContractRef,
    descriptor: &Value,
    upload: ComponentUpload,
) -> Result<BuildResult, LifecycleError> {
    let spec = contract_spec(&contract)?;
    let parsed: Descriptor = serde_json::from_value(descriptor.clone()).map_err(LifecycleError::InvalidDescriptor)?;
    parsed.validate().map_err(ComponentError::from)?;
    validate_fixtures(&parsed, &contract)?;
    let canonical = serde_json_canonicalizer::to_vec(&parsed)
        .map_err(|source| LifecycleError::Canonicalize { what: "descriptor", source })?;
    let ComponentUpload { mut bytes, mut hasher } = upload;
    let section = descriptor::embed_in_place(&mut bytes, &canonical).map_err(ComponentError::from)?;
    sha2::Digest::update(&mut hasher, &bytes[section..]);
    let content_hash = ContentHash::from_hasher(hasher);
    // A refused rebuild is refused before the compile, and a compiled artifact is compiled once:
    // the custom section changes nothing in the code, so the artifact is what is compiled and cached.
    registry.read(|s| commands::check_rebuild(s, &id, &content_hash, &contract))?;
    loader.components()?.check_and_cache(&content_hash, &bytes, &spec)?;
    record_artifact(
        registry,
        loader,
        metadata,
        id,
        ImplementationSource::AuthoredComponent,
        contract,
        &bytes,
        content_hash,
        COMPONENT_MEDIA_TYPE,
    )
}

/// A component as it arrived: its bytes, and a sha256 over exactly those bytes that the receiver
/// kept running while they came in, so the artifact's content hash costs only the descriptor
/// section on top of it and the bytes are never hashed or held twice.
pub struct ComponentUpload {
    bytes: Vec<u8>,
    hasher: sha2::Sha256,
}

impl ComponentUpload {
    /// Bytes already in memory, hashed now.
    pub fn new(bytes: Vec<u8>) -> Self {
        let hasher = <sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes);
        Self { bytes, hasher }
    }

    /// Bytes a receiver hashed as they arrived: `hasher` has seen exactly `bytes`, in order.
    pub fn received(bytes: Vec<u8>, hasher: sha2::Sha256) -> Self {
        debug_assert_eq!(
            ContentHash::from_hasher(hasher.clone()),
            ContentHash::of(&bytes),
            "the running hash must cover exactly the received bytes"
        );
        Self { bytes, hasher }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn validate_fixtures(d: &Descriptor, contract: &ContractRef) -> Result<(), LifecycleError> {
    let Some(conformance) = &d.conformance else { return Ok(()) };
    let vectors = crate::contracts::vectors::vectors(&contract.to_string());
    for name in conformance.fixtures.keys() {
        if !vectors.as_ref().is_some_and(|v| v.vectors.iter().any(|x| &x.name == name)) {
            return Err(LifecycleError::UnknownFixture { contract: contract.clone(), name: name.clone() });
        }
    }
    Ok(())
}

/// The artifact of a first-party native adapter: which adapter, from which build, with its policy.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NativeArtifact {
    /// Name of the adapter compiled into this binary, e.g. `vadyl.webhook-hmac`.
    pub adapter: String,
    /// The adapter's own version.
    pub adapter_version: String,
    /// The Vadyl build that provides it.
    pub binary: String,
    #[serde(flatten)]
    pub descriptor: Descriptor,
}

/// Registers a built-in native adapter as an implementation: the artifact is a descriptor naming
/// the adapter and the build of the binary, signed and stored like any other.
pub fn build_native(
    registry: &Registry,
    loader: &Loader,
    metadata: &EventMetadata,
    id: ImplementationId,
    adapter: &str,
    descriptor: Option<&Value>,
) -> Result<BuildResult, LifecycleError> {
    let native = crate::runtime::native::find(adapter).ok_or_else(|| LifecycleError::UnknownNativeAdapter {
        adapter: adapter.to_owned(),
        available: crate::runtime::native::names().join(", "),
    })?;
    let descriptor = match descriptor {
        Some(v) => serde_json::from_value(v.clone()).map_err(LifecycleError::InvalidDescriptor)?,
        None => native.default_descriptor(),
    };
    descriptor.validate().map_err(ComponentError::from)?;
    let contract = native.contract();
    validate_fixtures(&descriptor, &contract)?;
    let artifact = NativeArtifact {
        adapter: adapter.to_owned(),
        adapter_version: native.version().to_owned(),
        binary: binary_build(),
        descriptor,
    };
    let bytes = serde_json_canonicalizer::to_vec(&artifact)
        .map_err(|source| LifecycleError::Canonicalize { what: "native artifact", source })?;
    record_artifact(
        registry,
        loader,
        metadata,
        id,
        ImplementationSource::BuiltInNative,
        contract,
        &bytes,
        ContentHash::of(&bytes),
        NATIVE_MEDIA_TYPE,
    )
}

/// The build of this binary, as native artifacts name it.
pub fn binary_build() -> String {
    format!("vadyl {}", env!("CARGO_PKG_VERSION"))
}

/// An implementation's view and its artifact's bytes, verified against hash and signature.
fn verified_artifact(
    registry: &Registry,
    loader: &Loader,
    id: &ImplementationId,
) -> Result<(ImplementationView, Vec<u8>), LifecycleError> {
    let view = registry
        .read(|s| s.implementation(id).cloned())
        .ok_or_else(|| CommandError::NotFound(format!("implementation {id} does not exist")))?;
    let bytes = artifact::load_verified(
        loader.artifacts(),
        &view.content_hash,
        &view.signature,
        &registry.key().verifying_key(),
    )
    .map_err(|source| LifecycleError::ArtifactStore {
        implementation: id.clone(),
        action: "loaded",
        source: Box::new(source),
    })?;
    Ok((view, bytes))
}

/// What an implementation declares, read from its verified artifact: a declarative bundle's
/// manifest, a component's embedded descriptor, a native adapter's artifact (adapter, build and
/// descriptor). Allow-lists, secret names and limits are in it; secret values never are.
pub fn configuration(registry: &Registry, loader: &Loader, id: &ImplementationId) -> Result<Value, LifecycleError> {
    let (view, bytes) = verified_artifact(registry, loader, id)?;
    let unreadable =
        |what, source| LifecycleError::StoredArtifactUnreadable { implementation: id.clone(), what, source };
    let (what, document) = match view.source {
        ImplementationSource::DeclarativeBundle => {
            ("manifest", serde_json::from_slice(&bytes).map_err(|e| unreadable("manifest", e))?)
        }
        ImplementationSource::AuthoredComponent => {
            let embedded = descriptor::find(&bytes).map_err(ComponentError::from)?;
            let document = match embedded {
                Some(d) => serde_json::from_slice(d).map_err(|e| unreadable("descriptor", e))?,
                None => Value::Null,
            };
            ("descriptor", document)
        }
        ImplementationSource::BuiltInNative => {
            ("native artifact", serde_json::from_slice(&bytes).map_err(|e| unreadable("native artifact", e))?)
        }
    };
    Ok(serde_json::json!({
        "implementationId": id, "source": view.source, "contentHash": view.content_hash,
        "what": what, "document": document,
    }))
}

/// Loads a built implementation's artifact (verifying hash and signature before anything is parsed
/// or compiled) as a runnable adapter with its policy.
/// Uncached: [`Loader::load`] is what runs use.
pub fn load(registry: &Registry, loader: &Loader, id: &ImplementationId) -> Result<Loaded, LifecycleError> {
    let (view, bytes) = verified_artifact(registry, loader, id)?;
    match view.source {
        ImplementationSource::DeclarativeBundle => {
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|source| {
                LifecycleError::StoredArtifactUnreadable { implementation: id.clone(), what: "manifest", source }
            })?;
            let policy = Policy {
                source: view.source,
                allow: allow_list(&manifest.egress)?,
                secrets: manifest
                    .auth
                    .as_ref()
                    .map(|a| a.secret_names().into_iter().map(|(_, n)| n.to_owned()).collect())
                    .unwrap_or_default(),
                input_pointers: manifest.redaction.input_pointers.clone(),
                output_pointers: manifest.redaction.output_pointers.clone(),
                idempotency_headers: manifest
                    .operations
                    .iter()
                    .filter_map(|(name, op)| Some((name.clone(), op.idempotency.as_ref()?.header.clone())))
                    .collect(),
                fixtures: manifest.conformance.as_ref().map(|c| c.fixtures.clone()).unwrap_or_default(),
            };
            Ok(Loaded { adapter: Arc::new(DeclarativeAdapter::new(manifest)), policy })
        }
        ImplementationSource::AuthoredComponent => {
            let spec = contract_spec(&view.contract)?;
            let adapter = loader.components()?.load(&view.content_hash, &bytes, &spec)?;
            let policy = Policy::from_descriptor(view.source, adapter.descriptor())?;
            Ok(Loaded { adapter: Arc::new(adapter), policy })
        }
        ImplementationSource::BuiltInNative => {
            let artifact: NativeArtifact = serde_json::from_slice(&bytes).map_err(|source| {
                LifecycleError::StoredArtifactUnreadable { implementation: id.clone(), what: "native artifact", source }
            })?;
            let native = crate::runtime::native::find(&artifact.adapter).ok_or_else(|| {
                LifecycleError::NativeAdapterMissing { implementation: id.clone(), adapter: artifact.adapter.clone() }
            })?;
            if native.version() != artifact.adapter_version {
                return Err(LifecycleError::NativeVersionMismatch(Box::new(NativeVersionMismatch {
                    implementation: id.clone(),
                    adapter: artifact.adapter,
                    built: artifact.adapter_version,
                    binary: artifact.binary,
                    provided: native.version().to_owned(),
                })));
            }
            let policy = Policy::from_descriptor(view.source, &artifact.descriptor)?;
            Ok(Loaded { adapter: native.adapter(), policy })
        }
    }
}
