//! The adapter boundary and the host loop every implementation source runs under.
//!
//! An operation is a deterministic step function (the WIT calling convention of the contracts):
//! given the input and the egress exchanges completed so far, an implementation either finishes
//! (`Done`), fails with a typed contract error (`Failed`), or asks the host to perform one egress plan
//! it built through the host (`Egress`). The host executes the plan — allow-list, auth, retries,
//! timeouts all live on the host side — appends the exchange and calls the step again. Native
//! adapters, the declarative engine and Wasm components all sit behind [`Adapter`], so they share
//! this loop and its guarantees, and an invocation is replayable from its recorded exchanges.

use serde::{Deserialize, Serialize};

/// What the host hands back for an executed plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exchange {
    pub plan: u64,
    /// 0-based position of this exchange in the invocation.
    pub sequence: u32,
    pub outcome: ExchangeOutcome,
    pub elapsed_ms: u64,
    /// Attempts the host made (retries included).
    pub attempts: u32,
    /// The headers of the plan as the implementation built them (never the host-attached auth).
    pub sent_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ExchangeOutcome {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        #[serde(with = "body_text_or_base64")]
        body: Vec<u8>,
    },
    NetworkError {
        message: String,
    },
    /// The host refused to send (a redirect off the allow-list, a blocked address).
    Refused {
        message: String,
    },
}

impl Exchange {
    /// This exchange as an invocation record keeps it: headers, body and messages through `redact`.
    pub fn redacted(&self, redact_str: impl Fn(&str) -> String) -> Exchange {
        let pairs = |h: &[(String, String)]| h.iter().map(|(n, v)| (redact_str(n), redact_str(v))).collect::<Vec<_>>();
        let outcome = match &self.outcome {
            ExchangeOutcome::Response { status, headers, body } => ExchangeOutcome::Response {
                status: *status,
                headers: pairs(headers),
                // Binary bodies are kept as they are: the redactor matches text.
                body: match std::str::from_utf8(body) {
                    Ok(text) => redact_str(text).into_bytes(),
                    Err(_) => body.clone(),
                },
            },
            ExchangeOutcome::NetworkError { message } => ExchangeOutcome::NetworkError { message: redact_str(message) },
            ExchangeOutcome::Refused { message } => ExchangeOutcome::Refused { message: redact_str(message) },
        };
        Exchange {
            plan: self.plan,
            sequence: self.sequence,
            outcome,
            elapsed_ms: self.elapsed_ms,
            attempts: self.attempts,
            sent_headers: pairs(&self.sent_headers),
        }
    }
}

/// A body as JSON: `{"text": …}` when it is UTF-8, else `{"base64": …}`.
mod body_text_or_base64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    enum Body {
        Text(String),
        Base64(String),
    }

    pub fn serialize<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(body) {
            Ok(text) => Body::Text(text.to_owned()),
            Err(_) => Body::Base64(base64::engine::general_purpose::STANDARD.encode(body)),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Body::deserialize(d)? {
            Body::Text(text) => Ok(text.into_bytes()),
            Body::Base64(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| serde::de::Error::custom(format!("a recorded body is not base64: {e}"))),
        }
    }
}

/// A typed contract error (the contracts' `contract-error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractFailure {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// Non-sensitive diagnostics, as `[key, value]` pairs.
    #[serde(default)]
    pub details: Vec<(String, String)>,
}

/// One step of an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Done(serde_json::Value),
    Egress(u64),
    Failed(ContractFailure),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdapterError {
    #[error("the implementation has no operation {0:?}")]
    UnknownOperation(String),
    #[error("the implementation misbehaved: {0}")]
    Misbehaved(String),
    /// A component called a WASI function that its toolchain replaced by a trapping stub
    /// (componentize-py `--stub-wasi`): the host provides no WASI.
    #[error(
        "the implementation misbehaved: it called `{function}`, a WASI function its toolchain stubbed out \
         (componentize-py --stub-wasi traps there); this host provides no WASI: read the time with \
         time.now, reach the network with egress, keep state in memory (called from: {chain})"
    )]
    StubbedWasi { function: String, chain: String },
    #[error("host service refused: {0}")]
    Host(String),
    /// EgressBuildPlan refused the plan; `kind` says which rule (the WIT `egress-error` case).
    #[error("egress plan refused: {message}")]
    PlanRefused { kind: PlanRefusal, message: String },
}

/// Which rule refused an egress plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanRefusal {
    HostNotAllowed,
    InvalidUrl,
    InvalidHeader,
    BodyTooLarge,
    Denied,
}

/// One implementation, whatever its source.
pub trait Adapter: Send + Sync {
    fn step(
        &self,
        host: &mut dyn StepHost,
        operation: &str,
        input: &serde_json::Value,
        exchanges: &[Exchange],
    ) -> Result<Step, AdapterError>;

    /// True when a step runs untrusted code for up to its deadline (components): the host loop then
    /// runs it where it cannot stall the async workers serving other requests.
    fn runs_guest_code(&self) -> bool {
        false
    }
}

/// The host services an implementation may use while it decides a step. Implemented by the
/// invocation host; the declarative engine and native adapters call it exactly as a component's
/// imports would.
pub trait StepHost {
    /// EgressBuildPlan: validates and registers a plan, returning its id. A host outside the
    /// allow-list is refused here.
    fn build_plan(&mut self, plan: PlanRequest) -> Result<u64, AdapterError>;
    /// ObservabilityLog: the host redacts before anything is stored.
    fn log(&mut self, level: &str, message: &str, fields: serde_json::Value);
    /// ObservabilityRecordSpan.
    fn record_span(&mut self, name: &str, attributes: serde_json::Value);
    /// TimeNow, in ms since the epoch (recorded for replay).
    fn now_ms(&mut self) -> u64;
    /// SecretsHmac: HMAC-SHA256 of `data` with the named secret, which the caller never sees.
    fn hmac_sha256(&mut self, secret: &str, data: &[u8]) -> Result<Vec<u8>, AdapterError>;
    /// CapabilityAssert: fails unless this invocation was granted `capability` (e.g.
    /// `secret:stripe-secret-key`).
    fn assert_capability(&mut self, capability: &str) -> Result<(), AdapterError>;
    /// SecretsAttachAuthToEgressPlan: the host attaches `auth` to plan `plan` when it sends it.
    fn attach_auth(&mut self, plan: u64, auth: EgressAuth) -> Result<(), AdapterError>;
    /// SecretsResolveRedactedMetadata: name, version and fingerprint, never the value.
    fn secret_metadata(&mut self, secret: &str) -> Result<SecretInfo, AdapterError>;
    /// The Memory* imports, scoped to this invocation's project and implementation. The answer is
    /// recorded so a replay sees the same memory.
    fn memory(&mut self, call: MemoryCall) -> Result<MemoryAnswer, MemoryFailure>;
}

/// What may be said about a secret (the WIT `secret-metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    pub name: String,
    pub version: String,
    pub fingerprint: String,
    pub created_at_ms: i64,
}

/// One memory operation (the WIT `memory` interface).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum MemoryCall {
    Get { key: String },
    GetSnapshot { prefix: String, limit: Option<u32> },
    PutIfAbsent { key: String, value: Vec<u8>, ttl_ms: Option<u64> },
    CompareExchange { key: String, expected: u64, value: Vec<u8> },
    AppendJournal { journal: String, data: Vec<u8>, expected_last: Option<u64> },
    AcquireLease { name: String, ttl_ms: u64, renew: Option<u64> },
    ReleaseLease { name: String, fencing_token: u64 },
    Delete { key: String, expected: Option<u64> },
    Expire { key: String, ttl_ms: Option<u64> },
}

/// A memory entry as a guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
}

/// The answer to a [`MemoryCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum MemoryAnswer {
    Entry { entry: Option<MemoryEntry> },
    Snapshot { prefix: String, entries: Vec<MemoryEntry>, truncated: bool },
    Version { version: u64 },
    Receipt { journal: String, sequence: u64 },
    Lease { name: String, fencing_token: u64, expires_at_ms: u64 },
    Deleted { deleted: bool },
    Done,
}

/// Why a memory call failed (the WIT `memory-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase", tag = "kind", content = "detail")]
pub enum MemoryFailure {
    #[error("not found")]
    NotFound,
    #[error("already exists at version {0}")]
    AlreadyExists(u64),
    #[error("version mismatch: current version {0}")]
    VersionMismatch(u64),
    #[error("sequence mismatch: last sequence {0}")]
    SequenceMismatch(u64),
    #[error("lease held until {0} ms")]
    LeaseHeld(u64),
    #[error("lease lost")]
    LeaseLost,
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A request for an egress plan, before the host validated it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The auth the host attaches (SecretsAttachAuthToEgressPlan), by secret reference.
    pub auth: Option<EgressAuth>,
    pub idempotency_key: Option<(String, String)>,
    pub retry: Option<crate::runtime::host::egress::RetryPolicy>,
    pub timeout_ms: Option<u64>,
}

/// Auth attached by the host, naming secrets, never holding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressAuth {
    /// `Authorization: Bearer <secret>`
    Bearer { secret: String },
    /// `Authorization: Basic base64(username:secret)`
    Basic { username: String, password_secret: String },
    /// `<header>: <prefix><secret>`
    Header { header: String, prefix: Option<String>, secret: String },
    /// `<header>: <prefix><hex or base64 HMAC-SHA256(secret, body)>`
    HmacSha256 { header: String, prefix: Option<String>, secret: String, base64: bool },
}

/// Why a host loop stopped without an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoopError {
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    #[error("the operation asked for more than {0} egress exchanges")]
    TooManyExchanges(usize),
    #[error("egress failed: {0}")]
    Egress(String),
    #[error("the step asked to run plan {0}, which it did not build in this invocation")]
    UnknownPlan(u64),
}

/// The result of driving an operation to its end.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done(serde_json::Value),
    Failed(ContractFailure),
}

/// A host that can also run the plans a step asks for.
pub trait ExecutePlan: StepHost {
    /// Performs plan `plan` (with its retries) and returns the exchange the implementation sees.
    fn execute(
        &mut self,
        plan: u64,
        sequence: u32,
    ) -> impl std::future::Future<Output = Result<Exchange, LoopError>> + Send;
}

/// The host loop every implementation source runs under: step, execute the requested plan, step
/// again with one more exchange, until the operation finishes.
pub async fn run<H: ExecutePlan + Send>(
    adapter: &dyn Adapter,
    host: &mut H,
    operation: &str,
    input: &serde_json::Value,
    max_exchanges: usize,
) -> Result<(Outcome, Vec<Exchange>), LoopError> {
    let mut exchanges: Vec<Exchange> = Vec::new();
    loop {
        let step = if adapter.runs_guest_code()
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        {
            tokio::task::block_in_place(|| adapter.step(host, operation, input, &exchanges))
        } else {
            adapter.step(host, operation, input, &exchanges)
        };
        match step? {
            Step::Done(output) => return Ok((Outcome::Done(output), exchanges)),
            Step::Failed(f) => return Ok((Outcome::Failed(f), exchanges)),
            Step::Egress(plan) => {
                if exchanges.len() >= max_exchanges {
                    return Err(LoopError::TooManyExchanges(max_exchanges));
                }
                let sequence = u32::try_from(exchanges.len()).unwrap_or(u32::MAX);
                let exchange = host.execute(plan, sequence).await?;
                exchanges.push(exchange);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks for one plan, then answers with the upstream's status.
    struct OneCall;

    impl Adapter for OneCall {
        fn step(
            &self,
            host: &mut dyn StepHost,
            operation: &str,
            _input: &serde_json::Value,
            exchanges: &[Exchange],
        ) -> Result<Step, AdapterError> {
            if operation != "ping" {
                return Err(AdapterError::UnknownOperation(operation.into()));
            }
            match exchanges.first() {
                None => {
                    let plan = host.build_plan(PlanRequest {
                        method: "GET".into(),
                        url: "http://127.0.0.1/ping".into(),
                        headers: vec![],
                        body: vec![],
                        auth: None,
                        idempotency_key: None,
                        retry: None,
                        timeout_ms: None,
                    })?;
                    Ok(Step::Egress(plan))
                }
                Some(Exchange { outcome: ExchangeOutcome::Response { status, .. }, .. }) => {
                    Ok(Step::Done(serde_json::json!({ "status": status })))
                }
                Some(_) => Ok(Step::Failed(ContractFailure {
                    code: "upstream-unavailable".into(),
                    message: "network".into(),
                    retryable: true,
                    retry_after_ms: None,
                    provider_code: None,
                    details: vec![],
                })),
            }
        }
    }

    /// Loops forever asking for plans.
    struct Greedy;

    impl Adapter for Greedy {
        fn step(
            &self,
            host: &mut dyn StepHost,
            _: &str,
            _: &serde_json::Value,
            _: &[Exchange],
        ) -> Result<Step, AdapterError> {
            let plan = host.build_plan(PlanRequest {
                method: "GET".into(),
                url: "http://127.0.0.1/".into(),
                headers: vec![],
                body: vec![],
                auth: None,
                idempotency_key: None,
                retry: None,
                timeout_ms: None,
            })?;
            Ok(Step::Egress(plan))
        }
    }

    #[derive(Default)]
    struct TestHost {
        plans: Vec<PlanRequest>,
        /// The status every executed plan answers with.
        status: u16,
    }

    impl StepHost for TestHost {
        fn build_plan(&mut self, plan: PlanRequest) -> Result<u64, AdapterError> {
            self.plans.push(plan);
            Ok(self.plans.len() as u64)
        }
        fn log(&mut self, _: &str, _: &str, _: serde_json::Value) {}
        fn record_span(&mut self, _: &str, _: serde_json::Value) {}
        fn now_ms(&mut self) -> u64 {
            0
        }
        fn hmac_sha256(&mut self, _: &str, _: &[u8]) -> Result<Vec<u8>, AdapterError> {
            Err(AdapterError::Host("no secrets in this test".into()))
        }
        fn assert_capability(&mut self, capability: &str) -> Result<(), AdapterError> {
            Err(AdapterError::Host(format!("{capability} is not granted in this test")))
        }
        fn attach_auth(&mut self, _: u64, _: EgressAuth) -> Result<(), AdapterError> {
            Err(AdapterError::Host("no secrets in this test".into()))
        }
        fn secret_metadata(&mut self, _: &str) -> Result<SecretInfo, AdapterError> {
            Err(AdapterError::Host("no secrets in this test".into()))
        }
        fn memory(&mut self, _: MemoryCall) -> Result<MemoryAnswer, MemoryFailure> {
            Err(MemoryFailure::Unavailable("no memory in this test".into()))
        }
    }

    impl ExecutePlan for TestHost {
        async fn execute(&mut self, plan: u64, sequence: u32) -> Result<Exchange, LoopError> {
            if plan as usize > self.plans.len() {
                return Err(LoopError::UnknownPlan(plan));
            }
            Ok(Exchange {
                plan,
                sequence,
                outcome: ExchangeOutcome::Response { status: self.status, headers: vec![], body: vec![] },
                elapsed_ms: 1,
                attempts: 1,
                sent_headers: vec![],
            })
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn the_loop_runs_a_plan_and_resumes_the_step() {
        let mut host = TestHost { status: 204, ..TestHost::default() };
        let (outcome, exchanges) = block_on(run(&OneCall, &mut host, "ping", &serde_json::Value::Null, 4)).unwrap();
        assert_eq!(outcome, Outcome::Done(serde_json::json!({"status": 204})));
        assert_eq!(exchanges.len(), 1);
        assert_eq!(host.plans.len(), 1);
    }

    #[test]
    fn the_loop_bounds_exchanges_and_reports_adapter_errors() {
        let mut host = TestHost { status: 200, ..TestHost::default() };
        let err = block_on(run(&Greedy, &mut host, "x", &serde_json::Value::Null, 3)).unwrap_err();
        assert_eq!(err, LoopError::TooManyExchanges(3));
        let err = block_on(run(&OneCall, &mut host, "nope", &serde_json::Value::Null, 3)).unwrap_err();
        assert_eq!(err, LoopError::Adapter(AdapterError::UnknownOperation("nope".into())));
    }
}
