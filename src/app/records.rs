//! Invocation records: what ran, on which artifact, with which (redacted) input and outcome, and
//! everything the implementation learned from outside (exchanges, time readings, the tape of host
//! answers) so that `vadyl audit replay-invocation` can run it again without a network.
//!
//! One typed [`InvocationRecord`], serialized by serde both ways: the record kept is the record read
//! back, and a record that does not decode is an error, never a silently defaulted field.
//!
//! Durability (ARCHITECTURE.md, "Durability"): [`InvocationRecords::append`] returns only once the
//! record survives the process being killed (the SQLite store journals it), and the invocation is
//! answered only after it returns. An answer that carries
//! an `invocationId` and `recorded: true` therefore has a record that survives a killed server; if
//! the write fails, the answer says `recorded: false` with the reason.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{ContentHash, ImplementationId, ImplementationSource, ProjectId, PublicationVersion};
use crate::runtime::adapter::Exchange;
use crate::runtime::invoke::Trace;

/// One invocation, as kept for audit. Every string in it has passed the invocation's redactor,
/// and the contract's sensitive fields are blanked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvocationRecord {
    pub invocation_id: String,
    pub project: ProjectId,
    pub implementation_id: ImplementationId,
    pub content_hash: ContentHash,
    pub publication_version: PublicationVersion,
    pub operation: String,
    pub source: ImplementationSource,
    pub input: Value,
    /// The output when the operation completed, else `null`.
    pub output: Option<Value>,
    /// The typed contract error when it failed, else `null`.
    pub error: Option<Value>,
    pub trace: Trace,
    /// Egress exchanges with redacted headers, bodies and messages.
    pub exchanges: Vec<Exchange>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the invocation record store cannot {action}")]
    Store {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("invocation record {id} does not decode")]
    Corrupt {
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The port invocation records are kept behind.
pub trait InvocationRecords: Send + Sync {
    /// Stores `record` (finished at `at_ms`, host clock) and returns once it is durable: a record
    /// appended here survives the process being killed right after, and `get` and `list` on this
    /// store see it.
    fn append(&self, at_ms: u64, record: &InvocationRecord) -> Result<(), RecordError>;
    fn get(&self, id: &str) -> Result<Option<InvocationRecord>, RecordError>;
    /// `project`'s records stored after the cursor `after` (0: from the first), oldest first, at
    /// most `limit`, each with its cursor and its host-clock time.
    fn list(&self, project: &ProjectId, after: u64, limit: usize) -> Result<Vec<StoredRecord>, RecordError>;
}

/// A record as listed: where it sits in the store (the cursor), when it finished, what it holds.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub cursor: u64,
    pub at_ms: u64,
    pub record: InvocationRecord,
}

/// One line of a project's invocation history.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordSummary {
    pub cursor: u64,
    pub invocation_id: String,
    pub at_ms: u64,
    pub implementation_id: ImplementationId,
    pub content_hash: ContentHash,
    pub publication_version: PublicationVersion,
    pub operation: String,
    /// `ok` when the operation returned an output, `error` when it failed.
    pub outcome: &'static str,
    pub exchanges: usize,
}

impl From<&StoredRecord> for RecordSummary {
    fn from(s: &StoredRecord) -> Self {
        let r = &s.record;
        Self {
            cursor: s.cursor,
            invocation_id: r.invocation_id.clone(),
            at_ms: s.at_ms,
            implementation_id: r.implementation_id.clone(),
            content_hash: r.content_hash,
            publication_version: r.publication_version,
            operation: r.operation.clone(),
            outcome: if r.output.is_some() { "ok" } else { "error" },
            exchanges: r.exchanges.len(),
        }
    }
}

/// One page of a project's invocation history.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordPage {
    pub records: Vec<RecordSummary>,
    /// The cursor for the next page (`after=`), or `None` at the end.
    pub next: Option<u64>,
}
