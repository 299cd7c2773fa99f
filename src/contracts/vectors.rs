//! Conformance vectors: the inputs each contract's suite runs and what must happen for each. The
//! contract owns them (`vectors/<kind>@<major>.json`, embedded in the binary); implementations bring
//! only fixtures (what their provider answers). The suite that runs them is `app::conformance`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VectorFile {
    pub contract: String,
    pub vectors: Vec<Vector>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Vector {
    pub name: String,
    pub operation: String,
    pub input: Value,
    pub expect: Expectation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expectation {
    /// `done`, `failed`, or `any`.
    pub outcome: String,
    #[serde(default)]
    pub code: Option<String>,
    /// Output pointer -> input pointer whose value it must equal.
    #[serde(default)]
    pub output_echoes_input: BTreeMap<String, String>,
    #[serde(default)]
    pub min_attempts: Option<usize>,
    #[serde(default)]
    pub same_idempotency_key_on_retry: bool,
}

/// The vectors of a contract, embedded in the binary.
pub fn vectors(contract: &str) -> Option<VectorFile> {
    let text = match contract {
        "payment.charge@1" => include_str!("vectors/payment.charge@1.json"),
        "webhook.deliver@1" => include_str!("vectors/webhook.deliver@1.json"),
        _ => return None,
    };
    serde_json::from_str(text).ok()
}
