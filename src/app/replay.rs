//! `vadyl audit replay-invocation ID`: re-runs a recorded invocation without network.
//!
//! Everything an implementation learns from outside passes through the host, and the invocation
//! record keeps it: the exchanges (responses, redacted), the time readings, and the tape of every
//! other answer (memory, MACs, secret metadata). The replay host hands the same answers back in the
//! same order to the same artifact (loaded by content hash, verified), so a deterministic
//! implementation produces the same output; any divergence is reported, not papered over.

use serde::Serialize;
use serde_json::Value;

use crate::app::lifecycle::{self, Loader};
use crate::app::records::{InvocationRecords, RecordError};
use crate::app::registry::Registry;
use crate::runtime::adapter::{
    run, AdapterError, EgressAuth, Exchange, ExecutePlan, LoopError, MemoryAnswer, MemoryCall, MemoryFailure, Outcome,
    PlanRequest, SecretInfo, StepHost,
};
use crate::runtime::invoke::TapeEntry;
use crate::runtime::redaction::redact_pointers;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no invocation {0} is recorded")]
    NotFound(String),
    #[error("the record of {id} cannot be replayed: {reason}")]
    Unreadable { id: String, reason: String },
    #[error(transparent)]
    Load(#[from] lifecycle::LifecycleError),
    #[error("the invocation record cannot be read")]
    Record(#[from] RecordError),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    pub invocation_id: String,
    pub implementation_id: String,
    pub operation: String,
    pub exchanges: usize,
    pub time_readings: usize,
    pub tape_entries: usize,
    /// The recorded output (or error), as stored.
    pub recorded: Value,
    /// What the replay produced, redacted the same way.
    pub replayed: Value,
    pub matches: bool,
    /// Where the replay asked for something the recording does not hold.
    pub divergences: Vec<String>,
}

struct ReplayHost {
    exchanges: Vec<Exchange>,
    times: std::vec::IntoIter<u64>,
    tape: std::vec::IntoIter<TapeEntry>,
    grants: Vec<String>,
    plans: u64,
    divergences: Vec<String>,
}

impl ReplayHost {
    fn next_tape(&mut self, wanted: &str) -> Option<TapeEntry> {
        let entry = self.tape.next();
        if entry.is_none() {
            self.divergences.push(format!("the implementation asked for {wanted}, which the recording does not hold"));
        }
        entry
    }
}

impl StepHost for ReplayHost {
    fn build_plan(&mut self, _plan: PlanRequest) -> Result<u64, AdapterError> {
        self.plans += 1;
        Ok(self.plans)
    }
    fn log(&mut self, _: &str, _: &str, _: Value) {}
    fn record_span(&mut self, _: &str, _: Value) {}
    fn now_ms(&mut self) -> u64 {
        self.times.next().unwrap_or_else(|| {
            self.divergences.push("the implementation read the time more often than recorded".into());
            0
        })
    }
    fn hmac_sha256(&mut self, secret: &str, _data: &[u8]) -> Result<Vec<u8>, AdapterError> {
        match self.next_tape("a MAC") {
            Some(TapeEntry::Hmac { secret: s, answer }) if s == secret => answer.map_err(AdapterError::Host),
            other => {
                self.divergences.push(format!("expected a MAC with {secret:?}, the recording has {other:?}"));
                Err(AdapterError::Host("replay diverged".into()))
            }
        }
    }
    fn assert_capability(&mut self, capability: &str) -> Result<(), AdapterError> {
        if self.grants.iter().any(|g| g == capability) {
            Ok(())
        } else {
            Err(AdapterError::Host(format!("capability {capability} is not granted to this implementation")))
        }
    }
    fn attach_auth(&mut self, _plan: u64, _auth: EgressAuth) -> Result<(), AdapterError> {
        Ok(())
    }
    fn secret_metadata(&mut self, secret: &str) -> Result<SecretInfo, AdapterError> {
        match self.next_tape("secret metadata") {
            Some(TapeEntry::SecretMetadata { secret: s, answer }) if s == secret => answer.map_err(AdapterError::Host),
            other => {
                self.divergences.push(format!("expected metadata of {secret:?}, the recording has {other:?}"));
                Err(AdapterError::Host("replay diverged".into()))
            }
        }
    }
    fn memory(&mut self, call: MemoryCall) -> Result<MemoryAnswer, MemoryFailure> {
        match self.next_tape("a memory answer") {
            Some(TapeEntry::Memory { request, answer }) if same_target(&request, &call) => answer,
            other => {
                self.divergences.push(format!("expected memory call {call:?}, the recording has {other:?}"));
                Err(MemoryFailure::Unavailable("replay diverged".into()))
            }
        }
    }
}

impl ExecutePlan for ReplayHost {
    async fn execute(&mut self, plan: u64, sequence: u32) -> Result<Exchange, LoopError> {
        let recorded = self.exchanges.get(sequence as usize).cloned();
        match recorded {
            Some(x) if x.plan == plan => Ok(x),
            _ => {
                self.divergences
                    .push(format!("the implementation ran plan {plan} as exchange {sequence}, not recorded"));
                Err(LoopError::UnknownPlan(plan))
            }
        }
    }
}

/// Whether a replayed memory call is the recorded one: same operation on the same key. Values may
/// differ because the record keeps the input with its sensitive fields redacted, and a guest that
/// derives a value from them (a request fingerprint) derives another one in the replay.
fn same_target(recorded: &MemoryCall, replayed: &MemoryCall) -> bool {
    use MemoryCall as M;
    match (recorded, replayed) {
        (M::Get { key: a }, M::Get { key: b })
        | (M::PutIfAbsent { key: a, .. }, M::PutIfAbsent { key: b, .. })
        | (M::CompareExchange { key: a, .. }, M::CompareExchange { key: b, .. })
        | (M::Delete { key: a, .. }, M::Delete { key: b, .. })
        | (M::Expire { key: a, .. }, M::Expire { key: b, .. })
        | (M::GetSnapshot { prefix: a, .. }, M::GetSnapshot { prefix: b, .. })
        | (M::AppendJournal { journal: a, .. }, M::AppendJournal { journal: b, .. })
        | (M::AcquireLease { name: a, .. }, M::AcquireLease { name: b, .. })
        | (M::ReleaseLease { name: a, .. }, M::ReleaseLease { name: b, .. }) => a == b,
        _ => false,
    }
}

fn unreadable(id: &str, reason: impl Into<String>) -> ReplayError {
    ReplayError::Unreadable { id: id.to_owned(), reason: reason.into() }
}

/// Replays invocation `id` and compares its outcome with the recorded one.
pub async fn replay_invocation(
    registry: &Registry,
    loader: &Loader,
    records: &dyn InvocationRecords,
    id: &str,
) -> Result<ReplayReport, ReplayError> {
    let record = records.get(id)?.ok_or_else(|| ReplayError::NotFound(id.to_owned()))?;
    let implementation = record.implementation_id.clone();
    let view = registry
        .read(|s| s.implementation(&implementation).cloned())
        .ok_or_else(|| unreadable(id, format!("{implementation} is not in the registry")))?;
    if record.content_hash != view.content_hash {
        return Err(unreadable(id, "the recorded content hash is not the implementation's artifact"));
    }
    let operation = record.operation.clone();
    let exchanges = record.exchanges.clone();
    let times = record.trace.time_readings.clone();
    let tape: Vec<TapeEntry> = record.trace.tape.clone();
    let loaded = loader.load_published(registry, &implementation, view.content_hash)?;
    let (n_exchanges, n_times, n_tape) = (exchanges.len(), times.len(), tape.len());
    let mut host = ReplayHost {
        exchanges,
        times: times.into_iter(),
        tape: tape.into_iter(),
        grants: loaded.policy.grants(),
        plans: 0,
        divergences: Vec::new(),
    };
    let result =
        run(loaded.adapter.as_ref(), &mut host, &operation, &record.input, crate::app::invoke::MAX_EXCHANGES).await;
    let (recorded, replayed) = match result {
        Ok((Outcome::Done(mut output), _)) => {
            let contract = registry.read(|s| s.contract(&view.contract).cloned());
            let pointers = contract
                .map(|c| crate::app::invoke::sensitive_output_pointers(&loaded.policy, &c, &operation))
                .unwrap_or_else(|| loaded.policy.output_pointers.clone());
            let _ = redact_pointers(&mut output, &pointers);
            (record.output.clone().unwrap_or(Value::Null), output)
        }
        Ok((Outcome::Failed(f), _)) => {
            (record.error.clone().unwrap_or(Value::Null), crate::app::invoke::failure_json(&f))
        }
        Err(e) => (record.output.clone().unwrap_or(Value::Null), serde_json::json!({ "replayError": e.to_string() })),
    };
    Ok(ReplayReport {
        invocation_id: id.to_owned(),
        implementation_id: implementation.to_string(),
        operation,
        exchanges: n_exchanges,
        time_readings: n_times,
        tape_entries: n_tape,
        matches: recorded == replayed && host.divergences.is_empty(),
        recorded,
        replayed,
        divergences: host.divergences,
    })
}
