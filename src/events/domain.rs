//! The domain events: facts in the past tense, each with a type name, a schema version and a stream.
//!
//! Payloads are decoded through [`DomainEvent::decode`], which upcasts an older schema version to
//! the current one before deserializing. Old events are never rewritten in the log; a history
//! written by an older release must keep replaying (see `snapshots/`).

use serde::{Deserialize, Serialize};

use crate::ids::{
    BindingAlias, ContentHash, ContractRef, ImplementationId, ImplementationSource, ProjectId, PublicationVersion,
    SignatureBytes,
};

/// The registry's signing key became known to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryKeyRegistered {
    /// The signed-note key name (the checkpoints' origin).
    pub key_name: String,
    /// Hex of the 4-byte signed-note key id.
    pub key_id: String,
    pub algorithm: String,
    /// Standard base64 of the 32-byte ed25519 public key.
    pub public_key: String,
    /// The signed-note verifier key string (`name+keyid+base64`).
    pub verifier_key: String,
}

/// A signed checkpoint over positions `1..=treeSize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckpointSigned {
    pub tree_size: u64,
    /// Hex RFC 6962 Merkle root over the event hashes.
    pub root_hash: String,
    /// Hex hash of the event at `treeSize`.
    pub head_hash: String,
    /// The C2SP signed note.
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationSchema {
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub error_schema: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SensitiveFieldRef {
    pub operation: String,
    /// `input` or `output`.
    pub direction: String,
    /// JSON Pointer into the operation's input or output.
    pub pointer: String,
}

/// A contract world was read from WIT with a digest the log had not seen for this kind and major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContractRegistered {
    pub contract: ContractRef,
    pub package: String,
    pub world: String,
    pub interface: String,
    pub description: String,
    pub wit_digest: ContentHash,
    pub operations: Vec<OperationSchema>,
    pub sensitive_fields: Vec<SensitiveFieldRef>,
}

/// An implementation was built into a signed, content-addressed artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImplementationBuilt {
    pub implementation_id: ImplementationId,
    pub source: ImplementationSource,
    pub contract: ContractRef,
    pub content_hash: ContentHash,
    /// The registry's ed25519 signature over the content hash string.
    pub signature: SignatureBytes,
    pub artifact_size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckState {
    Passed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckResult {
    pub id: String,
    pub state: CheckState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A conformance run finished (whether it passed or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConformanceRunCompleted {
    pub run_id: String,
    pub implementation_id: ImplementationId,
    pub content_hash: ContentHash,
    pub contract: ContractRef,
    pub passed: bool,
    pub checks: Vec<CheckResult>,
    pub started_at: String,
    pub finished_at: String,
}

/// One implementation as a publication lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublicationEntry {
    pub implementation_id: ImplementationId,
    pub source: ImplementationSource,
    pub contract: ContractRef,
    pub content_hash: ContentHash,
    pub signature: SignatureBytes,
    pub conformance_run_id: String,
}

/// A new publication version: the previous `latest` set plus the admitted implementation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublicationCreated {
    pub publication_version: PublicationVersion,
    /// The `latest` this version extends (none for the first).
    pub based_on: Option<PublicationVersion>,
    pub admitted: ImplementationId,
    pub entries: Vec<PublicationEntry>,
    /// Registry signature over the canonical `{publicationVersion, basedOn, entries}`.
    pub signature: SignatureBytes,
    pub key_id: String,
}

/// A publication version was withdrawn; `latest` rolls back to the newest valid version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublicationInvalidated {
    pub publication_version: PublicationVersion,
    pub reason: String,
    pub previous_latest: Option<PublicationVersion>,
    pub new_latest: Option<PublicationVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindingCreated {
    pub project: ProjectId,
    pub alias: BindingAlias,
    /// `name:1.0.0` (pinned) or `name@^1` (floating).
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindingChanged {
    pub project: ProjectId,
    pub alias: BindingAlias,
    pub target: String,
    pub previous_target: String,
}

/// An access token was issued. Never carries the token or its hash: those live only in the token
/// store, so an export can be shared without handing out credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenIssued {
    pub token_id: String,
    pub role: crate::ids::Role,
    /// The one project a `project` token may act in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<ProjectId>,
    /// Implementation names a `publisher` token may build and run conformance for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implementations: Vec<String>,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRevoked {
    pub token_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    RegistryKeyRegistered(RegistryKeyRegistered),
    CheckpointSigned(CheckpointSigned),
    ContractRegistered(ContractRegistered),
    ImplementationBuilt(ImplementationBuilt),
    ConformanceRunCompleted(ConformanceRunCompleted),
    PublicationCreated(PublicationCreated),
    PublicationInvalidated(PublicationInvalidated),
    BindingCreated(BindingCreated),
    BindingChanged(BindingChanged),
    TokenIssued(TokenIssued),
    TokenRevoked(TokenRevoked),
}

/// Every event type with its current schema version.
pub const EVENT_TYPES: &[(&str, u32)] = &[
    ("RegistryKeyRegistered", 1),
    ("CheckpointSigned", 1),
    ("ContractRegistered", 1),
    ("ImplementationBuilt", 1),
    ("ConformanceRunCompleted", 1),
    ("PublicationCreated", 1),
    ("PublicationInvalidated", 1),
    ("BindingCreated", 1),
    ("BindingChanged", 1),
    ("TokenIssued", 1),
    ("TokenRevoked", 1),
];

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("{event_type} schema version {version} is newer than this release understands (up to {current})")]
    FutureVersion { event_type: String, version: u32, current: u32 },
    #[error("{event_type} v{version} payload does not decode: {reason}")]
    BadPayload { event_type: String, version: u32, reason: String },
}

/// Stream names. Streams are the unit of optimistic concurrency: a decision made from a stream's
/// state is appended with that stream's version as the expectation.
pub mod streams {
    use crate::ids::{BindingAlias, ContractRef, ImplementationId, ProjectId};

    pub const REGISTRY: &str = "registry";
    pub const CHECKPOINTS: &str = "checkpoints";
    pub const PUBLICATIONS: &str = "publications";

    pub fn contract(c: &ContractRef) -> String {
        format!("contract-{c}")
    }
    pub fn implementation(id: &ImplementationId) -> String {
        format!("implementation-{id}")
    }
    pub fn conformance(id: &ImplementationId) -> String {
        format!("conformance-{id}")
    }
    pub fn binding(project: &ProjectId, alias: &BindingAlias) -> String {
        format!("binding-{project}/{alias}")
    }

    pub fn token(token_id: &str) -> String {
        format!("token-{token_id}")
    }
}

impl DomainEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::RegistryKeyRegistered(_) => "RegistryKeyRegistered",
            Self::CheckpointSigned(_) => "CheckpointSigned",
            Self::ContractRegistered(_) => "ContractRegistered",
            Self::ImplementationBuilt(_) => "ImplementationBuilt",
            Self::ConformanceRunCompleted(_) => "ConformanceRunCompleted",
            Self::PublicationCreated(_) => "PublicationCreated",
            Self::PublicationInvalidated(_) => "PublicationInvalidated",
            Self::BindingCreated(_) => "BindingCreated",
            Self::BindingChanged(_) => "BindingChanged",
            Self::TokenIssued(_) => "TokenIssued",
            Self::TokenRevoked(_) => "TokenRevoked",
        }
    }

    pub fn schema_version(&self) -> u32 {
        current_version(self.event_type()).unwrap_or(1)
    }

    pub fn stream_id(&self) -> String {
        match self {
            Self::RegistryKeyRegistered(_) => streams::REGISTRY.to_owned(),
            Self::CheckpointSigned(_) => streams::CHECKPOINTS.to_owned(),
            Self::ContractRegistered(e) => streams::contract(&e.contract),
            Self::ImplementationBuilt(e) => streams::implementation(&e.implementation_id),
            Self::ConformanceRunCompleted(e) => streams::conformance(&e.implementation_id),
            Self::PublicationCreated(_) | Self::PublicationInvalidated(_) => streams::PUBLICATIONS.to_owned(),
            Self::BindingCreated(e) => streams::binding(&e.project, &e.alias),
            Self::BindingChanged(e) => streams::binding(&e.project, &e.alias),
            Self::TokenIssued(e) => streams::token(&e.token_id),
            Self::TokenRevoked(e) => streams::token(&e.token_id),
        }
    }

    pub fn payload(&self) -> serde_json::Value {
        let v = match self {
            Self::RegistryKeyRegistered(e) => serde_json::to_value(e),
            Self::CheckpointSigned(e) => serde_json::to_value(e),
            Self::ContractRegistered(e) => serde_json::to_value(e),
            Self::ImplementationBuilt(e) => serde_json::to_value(e),
            Self::ConformanceRunCompleted(e) => serde_json::to_value(e),
            Self::PublicationCreated(e) => serde_json::to_value(e),
            Self::PublicationInvalidated(e) => serde_json::to_value(e),
            Self::BindingCreated(e) => serde_json::to_value(e),
            Self::BindingChanged(e) => serde_json::to_value(e),
            Self::TokenIssued(e) => serde_json::to_value(e),
            Self::TokenRevoked(e) => serde_json::to_value(e),
        };
        // Cannot fail: every payload is plain data with string keys.
        v.unwrap_or(serde_json::Value::Null)
    }

    /// Decodes a stored payload, upcasting older schema versions first.
    pub fn decode(event_type: &str, version: u32, payload: &str) -> Result<Self, DecodeError> {
        decode_with(UPCASTERS, current_version, event_type, version, payload)
    }
}

/// One schema step: turns a payload of `event_type` at version `from` into version `from + 1`.
pub struct Upcaster {
    pub event_type: &'static str,
    pub from: u32,
    pub step: fn(serde_json::Value) -> Result<serde_json::Value, String>,
}

/// Every schema step this release knows. Every event type is at its first schema version today, so
/// the list is empty. When a payload changes shape: bump its entry in [`EVENT_TYPES`], add the step
/// here, and leave `snapshots/` untouched — its test then proves the old history still replays.
pub const UPCASTERS: &[Upcaster] = &[];

fn decode_with(
    upcasters: &[Upcaster],
    current_version: fn(&str) -> Option<u32>,
    event_type: &str,
    version: u32,
    payload: &str,
) -> Result<DomainEvent, DecodeError> {
    let current = current_version(event_type).ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
    if version > current || version == 0 {
        return Err(DecodeError::FutureVersion { event_type: event_type.to_owned(), version, current });
    }
    let bad = |reason: String| DecodeError::BadPayload { event_type: event_type.to_owned(), version, reason };
    if version == current {
        // The common case: no upcasting, so decode straight from the text.
        return decode_current_str(event_type, payload).map_err(|e| bad(e.to_string()));
    }
    let mut value: serde_json::Value = serde_json::from_str(payload).map_err(|e| bad(e.to_string()))?;
    for from in version..current {
        let upcaster = upcasters
            .iter()
            .find(|u| u.event_type == event_type && u.from == from)
            .ok_or_else(|| bad(format!("no upcaster from v{from} to v{}", from + 1)))?;
        value = (upcaster.step)(value).map_err(&bad)?;
    }
    // Upcast payloads are rare (old history only): re-read them through the one typed decoder.
    decode_current_str(event_type, &value.to_string()).map_err(|e| bad(e.to_string()))
}

fn decode_current_str(event_type: &str, text: &str) -> Result<DomainEvent, serde_json::Error> {
    fn de<T: serde::de::DeserializeOwned>(t: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(t)
    }
    use DomainEvent as E;
    match event_type {
        "RegistryKeyRegistered" => de(text).map(E::RegistryKeyRegistered),
        "CheckpointSigned" => de(text).map(E::CheckpointSigned),
        "ContractRegistered" => de(text).map(E::ContractRegistered),
        "ImplementationBuilt" => de(text).map(E::ImplementationBuilt),
        "ConformanceRunCompleted" => de(text).map(E::ConformanceRunCompleted),
        "PublicationCreated" => de(text).map(E::PublicationCreated),
        "PublicationInvalidated" => de(text).map(E::PublicationInvalidated),
        "BindingCreated" => de(text).map(E::BindingCreated),
        "TokenIssued" => de(text).map(E::TokenIssued),
        "TokenRevoked" => de(text).map(E::TokenRevoked),
        // The caller checked the type against EVENT_TYPES.
        _ => de(text).map(E::BindingChanged),
    }
}

fn current_version(event_type: &str) -> Option<u32> {
    EVENT_TYPES.iter().find(|(t, _)| *t == event_type).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_unknown_types_future_versions_and_bad_payloads() {
        assert!(matches!(DomainEvent::decode("Nope", 1, "{}"), Err(DecodeError::UnknownType(_))));
        assert!(matches!(
            DomainEvent::decode("BindingCreated", 2, "{}"),
            Err(DecodeError::FutureVersion { version: 2, current: 1, .. })
        ));
        let err =
            DomainEvent::decode("BindingCreated", 1, r#"{"project":"p","alias":"a","target":"x:1.0.0","extra":1}"#)
                .unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn older_versions_are_upcast_step_by_step_before_decoding() {
        // A world where BindingCreated is at v2 and v1 named the target `implementation`.
        fn rename(mut v: serde_json::Value) -> Result<serde_json::Value, String> {
            let obj = v.as_object_mut().ok_or("not an object")?;
            let target = obj.remove("implementation").ok_or("no implementation field")?;
            obj.insert("target".into(), target);
            Ok(v)
        }
        fn versions(t: &str) -> Option<u32> {
            if t == "BindingCreated" {
                Some(2)
            } else {
                current_version(t)
            }
        }
        let steps = [Upcaster { event_type: "BindingCreated", from: 1, step: rename }];
        let v1 = r#"{"project":"p","alias":"a","implementation":"x:1.0.0"}"#;
        let event = decode_with(&steps, versions, "BindingCreated", 1, v1).unwrap();
        assert!(matches!(event, DomainEvent::BindingCreated(ref b) if b.target == "x:1.0.0"));
        let v2 = r#"{"project":"p","alias":"a","target":"x:1.0.0"}"#;
        assert_eq!(decode_with(&steps, versions, "BindingCreated", 2, v2).unwrap(), event);
        // A missing step is a clear error, not a silent mis-decode.
        let err = decode_with(&[], versions, "BindingCreated", 1, v1).unwrap_err();
        assert!(err.to_string().contains("no upcaster from v1 to v2"), "{err}");
    }

    #[test]
    fn payload_round_trips() {
        let e = DomainEvent::BindingCreated(BindingCreated {
            project: "p".parse().unwrap(),
            alias: "stripe".parse().unwrap(),
            target: "stripe-charge-adapter@^1".into(),
        });
        let text = crate::events::envelope::canonical_json(&e.payload()).unwrap();
        assert_eq!(DomainEvent::decode(e.event_type(), e.schema_version(), &text).unwrap(), e);
        assert_eq!(e.stream_id(), "binding-p/stripe");
    }
}
