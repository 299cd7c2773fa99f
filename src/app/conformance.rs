//! Conformance (SPEC §7): run an implementation on its contract's test vectors against a
//! host-controlled upstream, decide each check from what actually happened, and record the run —
//! which publishes the implementation when every check passed.
//!
//! The contract owns the vectors (`vectors/<kind>@<major>.json`: inputs and what must happen); the
//! implementation owns the fixtures (what its provider answers in each vector). Every plan the
//! implementation builds is checked against its own allow-list, then sent to the loopback upstream
//! instead of the real host, so a run never reaches a real provider.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::app::invoke::{
    check_input, failure_json, memory_scope, redactor_for, sensitive_input_pointers, Invoker, MAX_EXCHANGES,
};
use crate::app::lifecycle::{self, LifecycleError};
use crate::app::registry::RegistryError;
use crate::commands;
use crate::contracts::vectors::vectors;
use crate::events::domain::{CheckResult, CheckState, ConformanceRunCompleted};
use crate::events::envelope::EventMetadata;
use crate::ids::ImplementationId;
use crate::projections::ContractView;
use crate::runtime::adapter::Outcome;
use crate::runtime::host::egress::RecordingSleeper;
use crate::runtime::host::memory::Scope;
use crate::runtime::host::upstream::{ScriptedResponse, Upstream};
use crate::runtime::invoke::InvocationHost;
use crate::runtime::redaction::Redactor;

/// The project conformance runs in: canary secrets and memory live here, never in a user's project.
pub const CONFORMANCE_PROJECT: &str = "vadyl-conformance";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConformanceReport {
    pub run_id: String,
    pub implementation_id: ImplementationId,
    pub passed: bool,
    pub checks: Vec<CheckResult>,
    /// The publication version this run created, if it admitted the implementation.
    pub publication_version: Option<u64>,
    pub vectors: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("contract {0} is not registered")]
    UnknownContract(crate::ids::ContractRef),
    #[error("there are no conformance vectors for {0}")]
    NoVectors(crate::ids::ContractRef),
    #[error("the conformance project's name is invalid")]
    Project(#[source] crate::ids::IdError),
    #[error("the canary secrets cannot be planted")]
    Secrets(#[from] crate::runtime::host::secrets::SecretError),
    #[error("a scanner for the canary or sensitive values cannot be built")]
    Redaction(#[from] crate::runtime::redaction::RedactionError),
    #[error("the host-controlled upstream cannot start")]
    Upstream(#[source] std::io::Error),
    #[error("the conformance host cannot be set up")]
    Host(#[source] crate::runtime::host::egress::EgressError),
    #[error("a vector cannot be prepared")]
    Invoke(#[from] crate::app::invoke::InvokeError),
    #[error("the implementation's memory cannot be scanned")]
    Memory(#[from] crate::runtime::host::memory::MemoryError),
}

/// Failures per check, in the order checks are reported.
#[derive(Default)]
struct Findings(BTreeMap<&'static str, Vec<String>>);

const CHECKS: &[&str] = &[
    "contract.shape",
    "contract.errors",
    "egress.allowed-hosts",
    "egress.idempotency-on-retry",
    "secrets.no-raw-material",
    "observability.redaction",
];

impl Findings {
    fn fail(&mut self, check: &'static str, detail: String) {
        self.0.entry(check).or_default().push(detail);
    }

    fn results(&self, applicable: &BTreeMap<&'static str, bool>) -> Vec<CheckResult> {
        CHECKS
            .iter()
            .map(|id| match self.0.get(id) {
                Some(problems) => {
                    CheckResult { id: (*id).into(), state: CheckState::Failed, detail: Some(problems.join("; ")) }
                }
                None if applicable.get(id).copied().unwrap_or(true) => {
                    CheckResult { id: (*id).into(), state: CheckState::Passed, detail: None }
                }
                None => CheckResult {
                    id: (*id).into(),
                    state: CheckState::Skipped,
                    detail: Some("no vector of this contract exercises it".into()),
                },
            })
            .collect()
    }
}

fn random_canary() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("vadyl-canary-{}", hex::encode(bytes))
}

fn validates(schema: &Value, value: &Value) -> Result<(), String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("schema does not compile: {e}"))?;
    let problems: Vec<String> =
        validator.iter_errors(value).take(5).map(|e| format!("{} {}", e.instance_path(), e)).collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}

/// Runs the suite and records the run (publishing the implementation if it passed).
pub async fn run(
    inv: &Invoker<'_>,
    metadata: &EventMetadata,
    id: &ImplementationId,
) -> Result<ConformanceReport, ConformanceError> {
    run_with_progress(inv, metadata, id, &mut |_| {}).await
}

/// Like [`run`], reporting each vector's name as it starts.
pub async fn run_with_progress(
    inv: &Invoker<'_>,
    metadata: &EventMetadata,
    id: &ImplementationId,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<ConformanceReport, ConformanceError> {
    let registry = inv.registry;
    let started_at = now_rfc3339();
    let view = registry.read(|s| s.implementation(id).cloned()).ok_or_else(|| {
        RegistryError::Command(commands::CommandError::NotFound(format!("implementation {id} does not exist")))
    })?;
    let contract: std::sync::Arc<ContractView> = registry
        .read(|s| s.contract(&view.contract).cloned())
        .ok_or_else(|| ConformanceError::UnknownContract(view.contract.clone()))?;
    // Loaded afresh, not from the run cache: a conformance run re-verifies the stored artifact.
    let loaded = lifecycle::load(registry, inv.loader, id)?;
    let policy = &loaded.policy;
    let suite =
        vectors(&view.contract.to_string()).ok_or_else(|| ConformanceError::NoVectors(view.contract.clone()))?;
    let project = CONFORMANCE_PROJECT.parse().map_err(ConformanceError::Project)?;
    let services = inv.host;

    // Plant a fresh canary as every secret the implementation uses.
    let canary = random_canary();
    let secret_names = &policy.secrets;
    for name in secret_names {
        services.secrets.set(&project, name, canary.as_bytes())?;
    }
    let canary_scan = Redactor::new([canary.clone().into_bytes()])?;
    let upstream = Upstream::start().await.map_err(ConformanceError::Upstream)?;
    let allow = policy.allow.clone();
    let fixtures = &policy.fixtures;

    let mut findings = Findings::default();
    let mut applicable: BTreeMap<&'static str, bool> =
        [("egress.idempotency-on-retry", false), ("contract.errors", false)].into_iter().collect();
    let mut vector_reports = Vec::new();
    for vector in &suite.vectors {
        progress(&vector.name);
        let v = &vector.name;
        if check_input(inv.caches, &contract, &vector.operation, &vector.input).is_err() {
            findings.fail("contract.shape", format!("{v}: the vector's input does not fit the contract (suite bug)"));
            continue;
        }
        let Some(responses) = fixtures.get(v) else {
            findings.fail(
                "contract.shape",
                format!("{v}: the implementation supplies no upstream fixture for this vector"),
            );
            continue;
        };
        upstream.load(
            responses
                .iter()
                .map(|r| ScriptedResponse {
                    status: r.status,
                    headers: r.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    body: r.body.clone(),
                })
                .collect(),
        );
        let (redactor, pinned) =
            redactor_for(services, inv.caches, &project, policy, &contract, &vector.operation, &vector.input)?;
        let host = InvocationHost::new(services, project.clone(), allow.clone(), redactor)
            .redirecting_to(&upstream.origin())
            .map_err(ConformanceError::Host)?
            .with_sleeper(Arc::new(RecordingSleeper::default()))
            .with_grants(policy.grants())
            .with_memory(memory_scope(&project, id)?)
            .with_pinned_secrets(pinned)
            .keeping_raw_emissions();
        let mut host = host;
        let result = crate::runtime::adapter::run(
            loaded.adapter.as_ref(),
            &mut host,
            &vector.operation,
            &vector.input,
            MAX_EXCHANGES,
        )
        .await;
        let trace = host.trace.clone();
        let received = upstream.received();

        // What came out, as the caller and the records would see it.
        let (outcome_kind, outcome_json) = match &result {
            Ok((Outcome::Done(output), _)) => ("done", output.clone()),
            Ok((Outcome::Failed(f), _)) => ("failed", failure_json(f)),
            Err(e) => ("error", json!({ "error": e.to_string() })),
        };
        let op = contract.operations.iter().find(|o| o.name == vector.operation);
        match (&result, op) {
            (Err(e), _) => findings.fail("contract.shape", format!("{v}: the operation did not finish: {e}")),
            (_, None) => {
                findings.fail("contract.shape", format!("{v}: the contract has no operation {}", vector.operation))
            }
            (Ok((Outcome::Done(output), _)), Some(op)) => {
                if let Err(p) = validates(&op.output_schema, output) {
                    findings.fail("contract.shape", format!("{v}: the output does not match the contract: {p}"));
                }
                for (out_ptr, in_ptr) in &vector.expect.output_echoes_input {
                    if output.pointer(out_ptr) != vector.input.pointer(in_ptr) {
                        findings.fail("contract.shape", format!("{v}: output {out_ptr} does not carry input {in_ptr}"));
                    }
                }
            }
            (Ok((Outcome::Failed(f), _)), Some(op)) => {
                if let Err(p) = validates(&op.error_schema, &failure_json(f)) {
                    findings.fail("contract.errors", format!("{v}: the error is not a contract error: {p}"));
                }
            }
        }
        match vector.expect.outcome.as_str() {
            "any" => {}
            expected if expected != outcome_kind => findings.fail(
                if expected == "failed" { "contract.errors" } else { "contract.shape" },
                format!("{v}: expected the operation to end {expected}, it ended {outcome_kind}"),
            ),
            _ => {}
        }
        if let Some(code) = &vector.expect.code {
            applicable.insert("contract.errors", true);
            if outcome_json["code"].as_str() != Some(code) {
                findings
                    .fail("contract.errors", format!("{v}: expected error code {code}, got {}", outcome_json["code"]));
            }
        }

        // egress.allowed-hosts: every plan targeted an allowed host.
        for refused in &trace.refused_plans {
            findings.fail("egress.allowed-hosts", format!("{v}: {refused}"));
        }

        // egress.idempotency-on-retry: the same key on every attempt.
        if vector.expect.same_idempotency_key_on_retry {
            applicable.insert("egress.idempotency-on-retry", true);
            let header = policy.idempotency_headers.get(&vector.operation).cloned();
            let min = vector.expect.min_attempts.unwrap_or(2);
            match header {
                None => {
                    findings.fail("egress.idempotency-on-retry", format!("{v}: the operation sends no idempotency key"))
                }
                Some(h) => {
                    let keys: Vec<Option<&str>> = received.iter().map(|r| r.header(&h)).collect();
                    if received.len() < min {
                        findings.fail(
                            "egress.idempotency-on-retry",
                            format!(
                                "{v}: {} attempt(s) after a transient failure, expected at least {min}",
                                received.len()
                            ),
                        );
                    } else if keys.iter().any(Option::is_none) || keys.windows(2).any(|w| w[0] != w[1]) {
                        findings.fail(
                            "egress.idempotency-on-retry",
                            format!("{v}: the {h} header changed between attempts"),
                        );
                    }
                }
            }
        }

        // secrets.no-raw-material: the canary never appears in what the implementation produced.
        let memory_scope = Scope::new(project.as_str(), view.implementation_id.name.as_str())?;
        let memory = services.memory.get_snapshot(&memory_scope, "", None).map(|s| s.entries).unwrap_or_default();
        let mut places: Vec<(&str, Vec<u8>)> = vec![
            ("the output or error", outcome_json.to_string().into_bytes()),
            ("logs", serde_json::to_vec(&trace.logs).unwrap_or_default()),
            ("spans", serde_json::to_vec(&trace.spans).unwrap_or_default()),
            ("egress records", serde_json::to_vec(&trace.egress).unwrap_or_default()),
            // What the implementation emitted before the host redacted it: redaction hides a
            // leak from the records, it does not make the implementation safe.
            ("what it sent to logs and spans", trace.raw_emissions.join("\n").into_bytes()),
        ];
        for e in &memory {
            places.push(("memory", e.value.clone()));
        }
        for (place, bytes) in &places {
            if let Some(found) = canary_scan.find(bytes) {
                findings.fail(
                    "secrets.no-raw-material",
                    format!("{v}: the planted secret appears in {place} ({:?})", found.form),
                );
            }
        }
        // And the host did attach it: a suite that never exercised auth would prove nothing.
        if trace.credential_plans > 0 && !received.is_empty() {
            let attached = received
                .iter()
                .all(|r| r.headers.iter().any(|(_, value)| canary_scan.find(value.as_bytes()).is_some()));
            if !attached {
                findings.fail(
                    "secrets.no-raw-material",
                    format!("{v}: the host-attached credential was missing from a request"),
                );
            }
        }

        // observability.redaction: sensitive input never appears unredacted in logs or spans.
        let mut sensitive: Vec<Vec<u8>> = Vec::new();
        for p in sensitive_input_pointers(policy, &contract, &vector.operation) {
            if let Some(Value::String(s)) = vector.input.pointer(&p) {
                if !s.is_empty() {
                    sensitive.push(s.clone().into_bytes());
                }
            }
        }
        if !sensitive.is_empty() {
            let scan = Redactor::new(sensitive)?;
            for (place, bytes) in places
                .iter()
                .filter(|(p, _)| matches!(*p, "logs" | "spans" | "egress records" | "what it sent to logs and spans"))
            {
                if scan.find(bytes).is_some() {
                    findings
                        .fail("observability.redaction", format!("{v}: a sensitive input field appears in {place}"));
                }
            }
            // A sensitive field in a URL ends up in every access log between here and the provider.
            if received.iter().any(|r| scan.find(r.path_and_query.as_bytes()).is_some()) {
                findings.fail(
                    "observability.redaction",
                    format!("{v}: a sensitive input field is sent in the request URL, where proxy and provider logs keep it"),
                );
            }
        }
        vector_reports.push(json!({
            "name": v, "operation": vector.operation, "outcome": outcome_kind,
            "requests": received.len(), "refusedPlans": trace.refused_plans.len(),
        }));
    }
    drop(upstream);

    let checks = findings.results(&applicable);
    let passed = checks.iter().all(|c| c.state != CheckState::Failed);
    let run_id = format!("conf_{}", uuid::Uuid::now_v7().simple());
    let run = ConformanceRunCompleted {
        run_id: run_id.clone(),
        implementation_id: id.clone(),
        content_hash: view.content_hash,
        contract: view.contract.clone(),
        passed,
        checks: checks.clone(),
        started_at,
        finished_at: now_rfc3339(),
    };
    let stored = registry.execute(metadata, |s| commands::complete_conformance_run(s, run.clone(), registry.key()))?;
    let publication_version = stored
        .iter()
        .filter(|e| e.event_type == "PublicationCreated")
        .find_map(|e| serde_json::from_str::<Value>(&e.payload).ok()?.get("publicationVersion")?.as_u64());
    Ok(ConformanceReport {
        run_id,
        implementation_id: id.clone(),
        passed,
        checks,
        publication_version,
        vectors: vector_reports,
    })
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
