//! `POST /invoke` (SPEC §5): resolve the binding against `latest`, load the artifact by content hash
//! (verified), check the input against the contract, run the operation under the host services, and
//! keep a redacted record of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{json, Value};

use crate::app::lifecycle::{LifecycleError, Loader, Policy};
use crate::app::records::{InvocationRecord, InvocationRecords};
use crate::app::registry::Registry;
use crate::commands::CommandError;
use crate::ids::{BindingAlias, BindingTarget, ContentHash, ImplementationId, ProjectId, PublicationVersion};
use crate::projections::{ContractView, Resolution};
use crate::runtime::adapter::run;
use crate::runtime::adapter::{LoopError, Outcome};
use crate::runtime::host::memory::{MemoryError, Scope};
use crate::runtime::host::secrets::{PinnedSecrets, SecretError, SecretRef};
use crate::runtime::invoke::{HostServices, InvocationHost};
use crate::runtime::redaction::{redact_pointers, values_at, RedactionError, Redactor};

/// The ports an invocation needs: the state it resolves against, the loaded implementations, the
/// host services it runs under, the compiled-once caches and where its record goes.
pub struct Invoker<'a> {
    pub registry: &'a Registry,
    pub loader: &'a Loader,
    pub host: &'a HostServices,
    pub caches: &'a Caches,
    pub records: &'a dyn InvocationRecords,
}

/// What is compiled once per contract or secret version instead of once per call.
#[derive(Default)]
pub struct Caches {
    /// Compiled input validators by (contract WIT digest, operation).
    validators: Mutex<HashMap<(ContentHash, String), Arc<jsonschema::Validator>>>,
    /// Compiled redaction patterns of secret versions, keyed by (project, name, version,
    /// fingerprint): a new version has a new key, so a rotated secret is never matched by stale
    /// patterns.
    secret_redactors: Mutex<HashMap<(String, String, String, String), Redactor>>,
}

impl Caches {
    fn validator<E>(
        &self,
        key: (ContentHash, String),
        compile: impl FnOnce() -> Result<jsonschema::Validator, E>,
    ) -> Result<Arc<jsonschema::Validator>, E> {
        if let Some(v) = self.validators.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(v.clone());
        }
        let v = Arc::new(compile()?);
        self.validators.lock().unwrap_or_else(|p| p.into_inner()).insert(key, v.clone());
        Ok(v)
    }

    fn secret_redactor<E>(
        &self,
        key: (String, String, String, String),
        build: impl FnOnce() -> Result<Redactor, E>,
    ) -> Result<Redactor, E> {
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
}

/// At most this many egress exchanges per invocation.
pub const MAX_EXCHANGES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("the input does not match the contract ({} problem(s))", .0.len())]
    InvalidInput(Vec<(String, String)>),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("the implementation failed: {0}")]
    Implementation(String),
    #[error("the contract's input schema for {operation} does not compile: {reason}")]
    Schema { operation: String, reason: String },
    #[error("binding {alias} has an unreadable target")]
    BindingTarget {
        alias: String,
        #[source]
        source: crate::ids::IdError,
    },
    #[error("contract {0} is not registered")]
    UnknownContract(crate::ids::ContractRef),
    #[error("the secrets of the invocation cannot be read")]
    Secrets(#[from] SecretError),
    #[error("the invocation's redactor cannot be built")]
    Redaction(#[from] RedactionError),
    #[error("the invocation's memory scope is invalid")]
    Memory(#[from] MemoryError),
}

/// What to invoke.
pub struct InvokeRequest {
    pub project: ProjectId,
    pub target: InvokeTarget,
    pub operation: String,
    pub input: Value,
}

pub enum InvokeTarget {
    Alias(BindingAlias),
    Implementation(ImplementationId),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeResult {
    pub invocation_id: String,
    pub implementation_id: ImplementationId,
    pub content_hash: ContentHash,
    pub publication_version: PublicationVersion,
    pub operation: String,
    /// The operation's output, when it completed.
    pub output: Option<Value>,
    /// The typed contract error, when it failed.
    pub error: Option<Value>,
    pub spans: Value,
    /// Whether the invocation's record was committed before this answer (see `app::records`).
    pub recorded: bool,
    /// Why the record could not be written, when `recorded` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
}

/// What a binding resolves to now.
struct Resolved {
    implementation_id: ImplementationId,
    publication: PublicationVersion,
    content_hash: ContentHash,
    contract: std::sync::Arc<ContractView>,
}

/// Resolves what `request` runs now.
fn resolve(registry: &Registry, request: &InvokeRequest) -> Result<Resolved, InvokeError> {
    registry.read(|s| {
        let target = match &request.target {
            InvokeTarget::Alias(alias) => {
                let binding = s.binding(&request.project, alias).ok_or_else(|| {
                    CommandError::NotFound(format!("project {} has no binding {alias}", request.project))
                })?;
                binding
                    .target
                    .parse::<BindingTarget>()
                    .map_err(|source| InvokeError::BindingTarget { alias: alias.to_string(), source })?
            }
            InvokeTarget::Implementation(id) => BindingTarget::Pinned(id.clone()),
        };
        let (publication, entry) = match s.resolve(&target) {
            Resolution::Resolved { publication, entry } => (publication, entry),
            Resolution::NoLongerPublished { implementation_id } => {
                let known = s.implementation(&implementation_id).is_some_and(|i| !i.published_in.is_empty());
                return Err(if known {
                    CommandError::Gone(format!(
                        "{implementation_id} is no longer in the latest publication (its publication was invalidated); \
                         a pinned binding never runs something else"
                    ))
                } else {
                    CommandError::NotFound(format!("{implementation_id} is not published"))
                }
                .into());
            }
            Resolution::NoMatch => {
                return Err(CommandError::Gone(format!("nothing in the latest publication satisfies {target}")).into())
            }
            Resolution::NothingPublished => {
                return Err(CommandError::Gone("nothing is published (every version is invalidated)".into()).into())
            }
        };
        let contract =
            s.contract(&entry.contract).cloned().ok_or_else(|| InvokeError::UnknownContract(entry.contract.clone()))?;
        Ok(Resolved {
            implementation_id: entry.implementation_id.clone(),
            publication,
            content_hash: entry.content_hash,
            contract,
        })
    })
}

/// Checks `input` against the operation's input schema; every problem with its JSON Pointer.
pub fn check_input(
    caches: &Caches,
    contract: &ContractView,
    operation: &str,
    input: &Value,
) -> Result<(), InvokeError> {
    let op = contract.operations.iter().find(|o| o.name == operation).ok_or_else(|| {
        CommandError::NotFound(format!("contract {} has no operation {operation:?}", contract.contract))
    })?;
    let validator = caches.validator((contract.wit_digest, operation.to_owned()), || {
        jsonschema::validator_for(&op.input_schema)
            .map_err(|e| InvokeError::Schema { operation: operation.to_owned(), reason: e.to_string() })
    })?;
    let problems: Vec<(String, String)> =
        validator.iter_errors(input).map(|e| (e.instance_path().to_string(), e.to_string())).take(20).collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvokeError::InvalidInput(problems))
    }
}

/// The values an invocation must never leak: the plaintext of the secrets the manifest uses, and the
/// sensitive fields of the input; with the secret versions it learned, which the invocation then
/// reads throughout (a rotation mid-invocation must not bring in a value the redactor lacks).
pub fn redactor_for(
    host: &HostServices,
    caches: &Caches,
    project: &ProjectId,
    policy: &Policy,
    contract: &ContractView,
    operation: &str,
    input: &Value,
) -> Result<(Redactor, PinnedSecrets), InvokeError> {
    let secrets = &host.secrets;
    let mut redactor = Redactor::default();
    let mut pinned = Vec::with_capacity(policy.secrets.len());
    for name in &policy.secrets {
        // A missing secret is reported by the egress boundary when it is needed.
        let Ok(meta) = secrets.metadata(project, &SecretRef::latest(name)) else {
            pinned.push((name.clone(), None));
            continue;
        };
        pinned.push((name.clone(), Some(meta.version.clone())));
        let key = (project.to_string(), name.clone(), meta.version.clone(), meta.fingerprint.clone());
        let part = caches.secret_redactor(key, || -> Result<Redactor, InvokeError> {
            let plaintext = secrets.with_plaintext(project, &meta.pinned_ref(), <[u8]>::to_vec)?;
            Ok(Redactor::new([plaintext])?)
        })?;
        redactor = redactor.with(&part);
    }
    let mut values: Vec<Vec<u8>> = Vec::new();
    for pointer in sensitive_input_pointers(policy, contract, operation) {
        collect_strings(input, &pointer, &mut values);
    }
    let inputs = Redactor::new(values)?;
    Ok((redactor.with(&inputs), PinnedSecrets::new(pinned)))
}

pub fn sensitive_input_pointers(policy: &Policy, contract: &ContractView, operation: &str) -> Vec<String> {
    sensitive_pointers(contract, operation, "input", &policy.input_pointers)
}

/// The output fields a record keeps blanked: the contract's and the manifest's.
pub fn sensitive_output_pointers(policy: &Policy, contract: &ContractView, operation: &str) -> Vec<String> {
    sensitive_pointers(contract, operation, "output", &policy.output_pointers)
}

fn sensitive_pointers(contract: &ContractView, operation: &str, direction: &str, own: &[String]) -> Vec<String> {
    contract
        .sensitive_fields
        .iter()
        .filter(|f| f.operation == operation && f.direction == direction)
        .map(|f| f.pointer.clone())
        .chain(own.iter().cloned())
        .collect()
}

/// The text of every value at `pointer`, as it would appear in a log or a body: strings as they
/// are, other values as JSON (an object marked sensitive is matched as a whole).
fn collect_strings(input: &Value, pointer: &str, out: &mut Vec<Vec<u8>>) {
    for v in values_at(input, pointer) {
        match v {
            Value::String(s) if s.is_empty() => {}
            Value::String(s) => out.push(s.as_bytes().to_vec()),
            Value::Null => {}
            other => out.push(other.to_string().into_bytes()),
        }
    }
}

/// Memory of (project, implementation name): what the Memory* imports reach.
pub fn memory_scope(project: &ProjectId, id: &ImplementationId) -> Result<Scope, InvokeError> {
    Ok(Scope::new(project.as_str(), id.name.as_str())?)
}

/// The JSON of a contract failure.
pub fn failure_json(f: &crate::runtime::adapter::ContractFailure) -> Value {
    json!({
        "code": f.code, "message": f.message, "retryable": f.retryable, "retryAfterMs": f.retry_after_ms,
        "providerCode": f.provider_code, "details": f.details,
    })
}

impl Invoker<'_> {
    /// Runs an invocation end to end, and answers once its record is committed.
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResult, InvokeError> {
        let Resolved { implementation_id, publication, content_hash, contract } = resolve(self.registry, &request)?;
        check_input(self.caches, &contract, &request.operation, &request.input)?;
        let loaded = self.loader.load_published(self.registry, &implementation_id, content_hash)?;
        let policy = &loaded.policy;
        let (redactor, pinned) = redactor_for(
            self.host,
            self.caches,
            &request.project,
            policy,
            &contract,
            &request.operation,
            &request.input,
        )?;
        let mut host = InvocationHost::new(self.host, request.project.clone(), policy.allow.clone(), redactor)
            .with_grants(policy.grants())
            .with_memory(memory_scope(&request.project, &implementation_id)?)
            .with_pinned_secrets(pinned);
        let result = run(loaded.adapter.as_ref(), &mut host, &request.operation, &request.input, MAX_EXCHANGES).await;
        let trace = std::mem::take(&mut host.trace);
        let redactor = host.redactor().clone();
        let (output, error, exchanges) = match result {
            Ok((Outcome::Done(output), x)) => (Some(redactor.redact_json(&output)), None, x),
            Ok((Outcome::Failed(f), x)) => (None, Some(redactor.redact_json(&failure_json(&f))), x),
            Err(LoopError::Adapter(e)) => return Err(InvokeError::Implementation(redactor.redact_str(&e.to_string()))),
            Err(e) => return Err(InvokeError::Implementation(redactor.redact_str(&e.to_string()))),
        };
        let invocation_id = format!("inv_{}", uuid::Uuid::now_v7().simple());
        let spans = serde_json::to_value(&trace.spans).unwrap_or_default();
        let mut input = request.input;
        let _ = redact_pointers(&mut input, &sensitive_input_pointers(policy, &contract, &request.operation));
        let mut kept_output = output.clone();
        if let Some(out) = kept_output.as_mut() {
            let _ = redact_pointers(out, &sensitive_output_pointers(policy, &contract, &request.operation));
        }
        let record = InvocationRecord {
            invocation_id: invocation_id.clone(),
            project: request.project,
            implementation_id: implementation_id.clone(),
            content_hash,
            publication_version: publication,
            operation: request.operation.clone(),
            source: policy.source,
            input: redactor.redact_json(&input),
            output: kept_output,
            error: error.clone(),
            trace,
            exchanges: exchanges.iter().map(|x| x.redacted(|s| redactor.redact_str(s))).collect(),
        };
        let written = self.records.append(self.host.clock.now_ms(), &record);
        if let Err(e) = &written {
            tracing::error!(invocation = %invocation_id, error = %crate::report::ErrorChain(e), "the invocation record was not written");
        }
        Ok(InvokeResult {
            invocation_id,
            implementation_id,
            content_hash,
            publication_version: publication,
            operation: request.operation,
            output,
            error,
            spans,
            recorded: written.is_ok(),
            record_error: written.err().map(|e| crate::report::ErrorChain(&e).to_string()),
        })
    }
}
