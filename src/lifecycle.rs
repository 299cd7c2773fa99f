//! Lifecycle operations that need more than one decision: build (validate, store the artifact,
//! sign, record), and the loading of a published implementation for a run. HTTP and CLI call these;
//! the events they append are still decided by `commands`.

use serde::Serialize;
use serde_json::Value;

use crate::commands::{self, BuildDecision, CommandError};
use crate::declarative::engine::DeclarativeAdapter;
use crate::declarative::{self, Manifest, ManifestError};
use crate::events::domain::ImplementationBuilt;
use crate::events::envelope::EventMetadata;
use crate::ids::{ContentHash, ContractRef, ImplementationId, ImplementationSource, SignatureBytes};
use crate::keys::Signer;
use crate::registry::{Registry, RegistryError};
use crate::runtime::artifact;

pub const DECLARATIVE_MEDIA_TYPE: &str = "application/vnd.vadyl.declarative+json";

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("the manifest is invalid ({} problem(s)); first: {}", .0.len(), .0.first().map_or(String::new(), |e| format!("{}: {}", e.path, e.message)))]
    InvalidManifest(Vec<ManifestError>),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Artifact(String),
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

/// Builds a declarative manifest into a signed, content-addressed artifact and records the build.
pub fn build_declarative(
    registry: &Registry,
    metadata: &EventMetadata,
    document: &Value,
) -> Result<BuildResult, LifecycleError> {
    let kind = document.pointer("/contract/kind").and_then(Value::as_str);
    let major = document.pointer("/contract/majorVersion").and_then(Value::as_u64);
    let (Some(kind), Some(major)) = (kind, major) else {
        return Err(invalid("/contract", "the manifest must name its contract: {\"kind\": …, \"majorVersion\": …}"));
    };
    let catalogue = crate::contracts::load_embedded().map_err(|e| LifecycleError::Artifact(e.to_string()))?;
    let major = u32::try_from(major).map_err(|_| invalid("/contract/majorVersion", "too large"))?;
    let spec = catalogue
        .contract(kind, major)
        .ok_or_else(|| invalid("/contract", format!("no contract {kind}@{major} is registered")))?;
    let valid = declarative::validate(document, spec).map_err(LifecycleError::InvalidManifest)?;
    let id = valid.implementation_id().clone();
    let contract: ContractRef =
        format!("{kind}@{major}").parse().map_err(|e: crate::ids::IdError| invalid("/contract", e.to_string()))?;
    let bytes = declarative::canonical_bytes(&valid);
    let content_hash = ContentHash::of(&bytes);
    // Refuse a conflicting rebuild before writing anything.
    if let Some(existing) = registry.read(|s| s.implementation(&id).map(|i| i.content_hash)) {
        if existing != content_hash {
            return Err(CommandError::Conflict(format!(
                "{id} is already built with content {existing}; implementation versions are immutable, publish a new version"
            ))
            .into());
        }
    }
    registry.artifacts().put(&bytes).map_err(|e| LifecycleError::Artifact(e.to_string()))?;
    let signature = registry.key().sign(&artifact::signing_message(&content_hash));
    let built = ImplementationBuilt {
        implementation_id: id.clone(),
        source: ImplementationSource::DeclarativeBundle,
        contract: contract.clone(),
        content_hash,
        signature,
        artifact_size: bytes.len() as u64,
        media_type: DECLARATIVE_MEDIA_TYPE.to_owned(),
    };
    let stored = registry.execute(metadata, |s| match commands::record_build(s, built.clone())? {
        BuildDecision::Created(events) => Ok(events),
        BuildDecision::AlreadyBuilt => Ok(Vec::new()),
    })?;
    let created = !stored.is_empty();
    let view = registry
        .read(|s| s.implementation(&id).cloned())
        .ok_or_else(|| LifecycleError::Artifact(format!("{id} vanished after its build was recorded")))?;
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

/// Loads a built implementation's artifact (verifying hash and signature) as a runnable adapter.
pub fn load_declarative(registry: &Registry, id: &ImplementationId) -> Result<DeclarativeAdapter, LifecycleError> {
    let view = registry
        .read(|s| s.implementation(id).cloned())
        .ok_or_else(|| CommandError::NotFound(format!("implementation {id} does not exist")))?;
    if view.source != ImplementationSource::DeclarativeBundle {
        return Err(LifecycleError::Artifact(format!(
            "{id} is a {} implementation, not a declarative bundle",
            view.source
        )));
    }
    let bytes = registry
        .artifacts()
        .get_verified(&view.content_hash, &view.signature, &registry.key().verifying_key())
        .map_err(|e| LifecycleError::Artifact(e.to_string()))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| LifecycleError::Artifact(format!("the stored manifest of {id} does not parse: {e}")))?;
    Ok(DeclarativeAdapter::new(manifest))
}
