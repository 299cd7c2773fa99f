//! `POST /invoke` (SPEC §5): resolve the binding against `latest`, load the artifact by content hash
//! (verified), check the input against the contract, run the operation under the host services, and
//! keep a redacted record of it.

use serde::Serialize;
use serde_json::{json, Value};

use crate::commands::CommandError;
use crate::ids::{BindingAlias, BindingTarget, ContentHash, ImplementationId, ProjectId, PublicationVersion};
use crate::lifecycle::{self, LifecycleError, Policy};
use crate::projections::{ContractView, Resolution};
use crate::registry::Registry;
use crate::runtime::adapter::run;
use crate::runtime::adapter::{Exchange, ExchangeOutcome, LoopError, Outcome};
use crate::runtime::host::memory::Scope;
use crate::runtime::host::secrets::SecretRef;
use crate::runtime::invocations::RecordKey;
use crate::runtime::invoke::{InvocationHost, Trace};
use crate::runtime::redaction::{redact_pointers, values_at, Redactor};

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
    policy: &Policy,
    contract: &ContractView,
    operation: &str,
    input: &Value,
) -> Result<Redactor, InvokeError> {
    let secrets = &registry.services().secrets;
    let mut redactor = Redactor::default();
    for name in &policy.secrets {
        // A missing secret is reported by the egress boundary when it is needed.
        let Ok(meta) = secrets.metadata(project, &SecretRef::latest(name)) else { continue };
        let key = (project.to_string(), name.clone(), meta.version.clone(), meta.fingerprint.clone());
        let part = registry.cached_secret_redactor(key, || {
            let plaintext = secrets
                .with_plaintext(project, &meta.pinned_ref(), <[u8]>::to_vec)
                .map_err(|e| InvokeError::Internal(e.to_string()))?;
            Redactor::new([plaintext]).map_err(|e| InvokeError::Internal(e.to_string()))
        })?;
        redactor = redactor.with(&part);
    }
    let mut values: Vec<Vec<u8>> = Vec::new();
    for pointer in sensitive_input_pointers(policy, contract, operation) {
        collect_strings(input, &pointer, &mut values);
    }
    let inputs = Redactor::new(values).map_err(|e| InvokeError::Internal(e.to_string()))?;
    Ok(redactor.with(&inputs))
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
    Scope::new(project.as_str(), id.name.as_str()).map_err(|e| InvokeError::Internal(e.to_string()))
}

/// Exchanges as kept in an invocation record: bodies redacted, text when UTF-8.
pub fn stored_exchanges(redactor: &Redactor, exchanges: &[Exchange]) -> Value {
    Value::Array(
        exchanges
            .iter()
            .map(|x| {
                let outcome = match &x.outcome {
                    ExchangeOutcome::Response { status, headers, body } => {
                        let body = match std::str::from_utf8(body) {
                            Ok(text) => json!({ "text": redactor.redact_str(text) }),
                            Err(_) => {
                                use base64::Engine;
                                json!({ "base64": base64::engine::general_purpose::STANDARD.encode(body) })
                            }
                        };
                        json!({"kind": "response", "status": status, "headers": redactor.redact_json(&json!(headers)), "body": body})
                    }
                    ExchangeOutcome::NetworkError { message } => {
                        json!({"kind": "networkError", "message": redactor.redact_str(message)})
                    }
                    ExchangeOutcome::Refused { message } => json!({"kind": "refused", "message": redactor.redact_str(message)}),
                };
                json!({"plan": x.plan, "sequence": x.sequence, "outcome": outcome, "elapsedMs": x.elapsed_ms,
                       "attempts": x.attempts, "sentHeaders": redactor.redact_json(&json!(x.sent_headers))})
            })
            .collect(),
    )
}

/// Reads [`stored_exchanges`] back (for replay).
pub fn exchanges_from_record(v: &Value) -> Result<Vec<Exchange>, String> {
    let pairs = |v: &Value| -> Vec<(String, String)> { serde_json::from_value(v.clone()).unwrap_or_default() };
    let items = v.as_array().ok_or("the record has no exchanges array")?;
    items
        .iter()
        .map(|x| {
            let o = &x["outcome"];
            let outcome = match o["kind"].as_str() {
                Some("response") => {
                    let body = if let Some(t) = o["body"]["text"].as_str() {
                        t.as_bytes().to_vec()
                    } else {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD
                            .decode(o["body"]["base64"].as_str().unwrap_or_default())
                            .map_err(|e| format!("a recorded body does not decode: {e}"))?
                    };
                    let status = o["status"].as_u64().and_then(|s| u16::try_from(s).ok()).ok_or("bad status")?;
                    ExchangeOutcome::Response { status, headers: pairs(&o["headers"]), body }
                }
                Some("networkError") => {
                    ExchangeOutcome::NetworkError { message: o["message"].as_str().unwrap_or_default().to_owned() }
                }
                Some("refused") => {
                    ExchangeOutcome::Refused { message: o["message"].as_str().unwrap_or_default().to_owned() }
                }
                other => return Err(format!("unknown recorded outcome {other:?}")),
            };
            Ok(Exchange {
                plan: x["plan"].as_u64().ok_or("bad plan")?,
                sequence: x["sequence"].as_u64().and_then(|s| u32::try_from(s).ok()).ok_or("bad sequence")?,
                outcome,
                elapsed_ms: x["elapsedMs"].as_u64().unwrap_or(0),
                attempts: x["attempts"].as_u64().and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
                sent_headers: pairs(&x["sentHeaders"]),
            })
        })
        .collect()
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
    let Resolved { implementation_id, publication, content_hash, contract } = resolve(registry, &request)?;
    check_input(registry, &contract, &request.operation, &request.input)?;
    let loaded = registry.cached_adapter(content_hash, || lifecycle::load(registry, &implementation_id))?;
    let policy = &loaded.policy;
    let redactor = redactor_for(registry, &request.project, policy, &contract, &request.operation, &request.input)?;
    let services = registry.services();
    let mut host = InvocationHost::new(services, request.project.clone(), policy.allow.clone(), redactor)
        .with_grants(policy.grants())
        .with_memory(memory_scope(&request.project, &implementation_id)?);
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
    let key = RecordKey {
        id: invocation_id.clone(),
        at_ms: services.clock.now_ms(),
        project: request.project.to_string(),
        implementation: implementation_id.to_string(),
        operation: request.operation.clone(),
    };
    let pointers = RecordPointers {
        input: sensitive_input_pointers(policy, &contract, &request.operation),
        output: sensitive_output_pointers(policy, &contract, &request.operation),
    };
    let header = json!({
        "invocationId": invocation_id, "project": request.project, "implementationId": implementation_id,
        "contentHash": content_hash, "publicationVersion": publication, "operation": request.operation,
        "source": policy.source,
    });
    let (input, kept_output, kept_error) = (request.input, output.clone(), error.clone());
    registry
        .invocations()
        .record(
            key,
            Box::new(move || {
                build_record(header, &redactor, &pointers, input, kept_output, kept_error, &trace, &exchanges)
            }),
        )
        .map_err(|e| InvokeError::Internal(e.to_string()))?;
    Ok(InvokeResult {
        invocation_id,
        implementation_id,
        content_hash,
        publication_version: publication,
        operation: request.operation,
        output,
        error,
        spans,
    })
}

/// The fields of an operation's input and output that a record keeps blanked.
struct RecordPointers {
    input: Vec<String>,
    output: Vec<String>,
}

/// An invocation's record, as the invocation log keeps it: sensitive fields blanked, every
/// string redacted. Runs on the log's writer thread.
#[allow(clippy::too_many_arguments)]
fn build_record(
    mut record: Value,
    redactor: &Redactor,
    pointers: &RecordPointers,
    mut input: Value,
    mut output: Option<Value>,
    error: Option<Value>,
    trace: &Trace,
    exchanges: &[Exchange],
) -> Value {
    let _ = redact_pointers(&mut input, &pointers.input);
    if let Some(out) = output.as_mut() {
        let _ = redact_pointers(out, &pointers.output);
    }
    if let Value::Object(fields) = &mut record {
        fields.insert("input".into(), redactor.redact_json(&input));
        fields.insert("output".into(), output.unwrap_or(Value::Null));
        fields.insert("error".into(), error.unwrap_or(Value::Null));
        fields.insert("trace".into(), serde_json::to_value(trace).unwrap_or_default());
        fields.insert("exchanges".into(), stored_exchanges(redactor, exchanges));
    }
    record
}
