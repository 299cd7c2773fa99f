//! `POST /invoke` (SPEC §5): resolve the binding against `latest`, load the artifact by content hash
//! (verified), check the input against the contract, run the operation under the host services, and
//! keep a redacted record of it.

use serde::Serialize;
use serde_json::{json, Value};

use crate::commands::CommandError;
use crate::declarative::engine::DeclarativeAdapter;
use crate::ids::{BindingAlias, BindingTarget, ContentHash, ImplementationId, ProjectId, PublicationVersion};
use crate::lifecycle::{self, LifecycleError};
use crate::projections::{ContractView, Resolution};
use crate::registry::Registry;
use crate::runtime::adapter::run;
use crate::runtime::adapter::{LoopError, Outcome};
use crate::runtime::host::egress::{AllowList, AllowRule, Scheme};
use crate::runtime::host::secrets::SecretRef;
use crate::runtime::invoke::{InvocationHost, Trace};
use crate::runtime::redaction::{redact_pointers, Redactor};

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
    #[error("{0}")]
    Internal(String),
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
    #[serde(skip)]
    pub trace: Trace,
}

/// Resolves what `request` runs now.
fn resolve(
    registry: &Registry,
    request: &InvokeRequest,
) -> Result<(ImplementationId, PublicationVersion, ContractView), InvokeError> {
    registry.read(|s| {
        let target = match &request.target {
            InvokeTarget::Alias(alias) => {
                let binding = s.binding(&request.project, alias).ok_or_else(|| {
                    CommandError::NotFound(format!("project {} has no binding {alias}", request.project))
                })?;
                binding
                    .target
                    .parse::<BindingTarget>()
                    .map_err(|e| InvokeError::Internal(format!("binding {alias} has an unreadable target: {e}")))?
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
        let contract = s
            .contract(&entry.contract)
            .cloned()
            .ok_or_else(|| InvokeError::Internal(format!("contract {} is not registered", entry.contract)))?;
        Ok((entry.implementation_id.clone(), publication, contract))
    })
}

/// Checks `input` against the operation's input schema; every problem with its JSON Pointer.
pub fn check_input(
    registry: &Registry,
    contract: &ContractView,
    operation: &str,
    input: &Value,
) -> Result<(), InvokeError> {
    let op = contract.operations.iter().find(|o| o.name == operation).ok_or_else(|| {
        CommandError::NotFound(format!("contract {} has no operation {operation:?}", contract.contract))
    })?;
    let validator = registry.cached_validator((contract.wit_digest, operation.to_owned()), || {
        jsonschema::validator_for(&op.input_schema)
            .map_err(|e| InvokeError::Internal(format!("the contract's input schema does not compile: {e}")))
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
/// sensitive fields of the input.
pub fn redactor_for(
    registry: &Registry,
    project: &ProjectId,
    adapter: &DeclarativeAdapter,
    contract: &ContractView,
    operation: &str,
    input: &Value,
) -> Result<Redactor, InvokeError> {
    let mut values: Vec<Vec<u8>> = Vec::new();
    if let Some(auth) = &adapter.manifest().auth {
        for (_, name) in auth.secret_names() {
            // A missing secret is reported by the egress boundary when it is needed.
            if let Ok(v) = registry.services().secrets.with_plaintext(project, &SecretRef::latest(name), <[u8]>::to_vec)
            {
                values.push(v);
            }
        }
    }
    for pointer in sensitive_input_pointers(adapter, contract, operation) {
        collect_strings(input, &pointer, &mut values);
    }
    Redactor::new(values).map_err(|e| InvokeError::Internal(e.to_string()))
}

pub fn sensitive_input_pointers(adapter: &DeclarativeAdapter, contract: &ContractView, operation: &str) -> Vec<String> {
    let mut pointers: Vec<String> = contract
        .sensitive_fields
        .iter()
        .filter(|f| f.operation == operation && f.direction == "input")
        .map(|f| f.pointer.clone())
        .collect();
    pointers.extend(adapter.manifest().redaction.input_pointers.iter().cloned());
    pointers
}

fn collect_strings(input: &Value, pointer: &str, out: &mut Vec<Vec<u8>>) {
    let mut probe = input.clone();
    let mut marked = probe.clone();
    // Find the values at the pointer by redacting a copy and diffing: handles `*` like redaction does.
    if redact_pointers(&mut marked, &[pointer.to_owned()]).is_err() {
        return;
    }
    fn diff(a: &Value, b: &Value, out: &mut Vec<Vec<u8>>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => x.iter().for_each(|(k, v)| diff(v, &y[k], out)),
            (Value::Array(x), Value::Array(y)) => x.iter().zip(y).for_each(|(v, w)| diff(v, w, out)),
            (v, w) if v != w => match v {
                Value::String(s) if !s.is_empty() => out.push(s.as_bytes().to_vec()),
                Value::Null => {}
                other => out.push(other.to_string().into_bytes()),
            },
            _ => {}
        }
    }
    diff(&probe, &marked, out);
    probe.take();
}

/// What a declarative implementation is granted: the secrets its published manifest names.
pub fn grants(adapter: &DeclarativeAdapter) -> Vec<String> {
    adapter
        .manifest()
        .auth
        .as_ref()
        .map(|a| a.secret_names().into_iter().map(|(_, n)| format!("secret:{n}")).collect())
        .unwrap_or_default()
}

pub fn allow_list(adapter: &DeclarativeAdapter) -> Result<AllowList, InvokeError> {
    let rules = adapter
        .manifest()
        .egress
        .allow
        .iter()
        .map(|o| {
            let scheme = if o.scheme.as_str() == "https" { Scheme::Https } else { Scheme::Http };
            AllowRule::new(scheme, o.host.clone(), o.port)
        })
        .collect();
    AllowList::new(rules).map_err(|e| InvokeError::Internal(format!("the manifest's allow-list is unusable: {e}")))
}

/// The JSON of a contract failure.
pub fn failure_json(f: &crate::runtime::adapter::ContractFailure) -> Value {
    json!({
        "code": f.code, "message": f.message, "retryable": f.retryable, "retryAfterMs": f.retry_after_ms,
        "providerCode": f.provider_code, "details": f.details,
    })
}

/// Runs an invocation end to end.
pub async fn invoke(registry: &Registry, request: InvokeRequest) -> Result<InvokeResult, InvokeError> {
    let (implementation_id, publication, contract) = resolve(registry, &request)?;
    check_input(registry, &contract, &request.operation, &request.input)?;
    let view = registry
        .read(|s| s.implementation(&implementation_id).cloned())
        .ok_or_else(|| InvokeError::Internal(format!("{implementation_id} vanished")))?;
    let adapter =
        registry.cached_adapter(view.content_hash, || lifecycle::load_declarative(registry, &implementation_id))?;
    let redactor = redactor_for(registry, &request.project, &adapter, &contract, &request.operation, &request.input)?;
    let allow = allow_list(&adapter)?;
    let services = registry.services();
    let mut host =
        InvocationHost::new(services, request.project.clone(), allow, redactor).with_grants(grants(&adapter));
    let result = run(adapter.as_ref(), &mut host, &request.operation, &request.input, MAX_EXCHANGES).await;
    let trace = host.trace.clone();
    let redactor = host.redactor();
    let (output, error) = match result {
        Ok((Outcome::Done(output), _)) => (Some(redactor.redact_json(&output)), None),
        Ok((Outcome::Failed(f), _)) => (None, Some(redactor.redact_json(&failure_json(&f)))),
        Err(LoopError::Adapter(e)) => return Err(InvokeError::Implementation(redactor.redact_str(&e.to_string()))),
        Err(e) => return Err(InvokeError::Implementation(redactor.redact_str(&e.to_string()))),
    };
    let invocation_id = format!("inv_{}", uuid::Uuid::now_v7().simple());
    let mut stored_input = request.input.clone();
    let _ = redact_pointers(&mut stored_input, &sensitive_input_pointers(&adapter, &contract, &request.operation));
    // The record keeps the output without the fields the contract or the manifest mark sensitive.
    let mut stored_output = output.clone();
    if let Some(out) = stored_output.as_mut() {
        let mut pointers: Vec<String> = contract
            .sensitive_fields
            .iter()
            .filter(|f| f.operation == request.operation && f.direction == "output")
            .map(|f| f.pointer.clone())
            .collect();
        pointers.extend(adapter.manifest().redaction.output_pointers.iter().cloned());
        let _ = redact_pointers(out, &pointers);
    }
    let record = json!({
        "invocationId": invocation_id, "project": request.project, "implementationId": implementation_id,
        "contentHash": view.content_hash, "publicationVersion": publication, "operation": request.operation,
        "input": redactor.redact_json(&stored_input), "output": stored_output, "error": error, "trace": trace,
    });
    let now = services.clock.now_ms();
    registry
        .invocations()
        .record(
            &invocation_id,
            now,
            request.project.as_str(),
            &implementation_id.to_string(),
            &request.operation,
            &record,
        )
        .map_err(|e| InvokeError::Internal(e.to_string()))?;
    Ok(InvokeResult {
        invocation_id,
        implementation_id,
        content_hash: view.content_hash,
        publication_version: publication,
        operation: request.operation,
        output,
        error,
        spans: serde_json::to_value(&trace.spans).unwrap_or_default(),
        trace,
    })
}
