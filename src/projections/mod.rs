//! Read models folded from the log: contracts, implementations, conformance runs, bindings,
//! publications, and the registry's own key and checkpoints.
//!
//! Architecture invariant: this module is a pure function of the events. It never performs I/O,
//! never reads the clock, never draws randomness; times it shows come from the events' envelopes.
//! Replaying the same events always produces the same state and the same digests, which is what
//! `vadyl audit replay` and the `snapshots/` fixtures check.

pub mod snapshot;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::domain::{
    CheckResult, CheckpointSigned, ContractRegistered, DecodeError, DomainEvent, OperationSchema, PublicationEntry,
    RegistryKeyRegistered, SensitiveFieldRef,
};
use crate::events::envelope::RecordedEvent;
use crate::ids::{
    BindingTarget, ContentHash, ContractRef, ImplementationId, ImplementationSource, ProjectId, PublicationVersion,
    SignatureBytes,
};

/// Who did something and when, as the log recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    pub position: u64,
    pub at: String,
    pub actor: String,
}

impl Recorded {
    fn of(e: &RecordedEvent) -> Self {
        Self { position: e.position, at: e.recorded_at.clone(), actor: e.metadata.actor.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractView {
    pub contract: ContractRef,
    pub kind: String,
    pub major_version: u32,
    pub package: String,
    pub world: String,
    pub interface: String,
    pub description: String,
    pub wit_digest: ContentHash,
    /// 1 for the first registration; +1 each time the WIT digest changes.
    pub revision: u32,
    pub operations: Vec<OperationSchema>,
    pub sensitive_fields: Vec<SensitiveFieldRef>,
    pub registered: Recorded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConformanceSummary {
    pub runs: u32,
    pub last_run_id: String,
    pub last_passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImplementationView {
    pub implementation_id: ImplementationId,
    pub source: ImplementationSource,
    pub contract: ContractRef,
    pub content_hash: ContentHash,
    pub signature: SignatureBytes,
    pub artifact_size: u64,
    pub media_type: String,
    pub built: Recorded,
    pub conformance: Option<ConformanceSummary>,
    /// Publication versions that list this implementation (whatever their status).
    pub published_in: Vec<PublicationVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConformanceRunView {
    pub run_id: String,
    pub implementation_id: ImplementationId,
    pub content_hash: ContentHash,
    pub contract: ContractRef,
    pub passed: bool,
    pub checks: Vec<CheckResult>,
    pub started_at: String,
    pub finished_at: String,
    /// The publication version this run created, if it admitted the implementation.
    pub published_as: Option<PublicationVersion>,
    pub recorded: Recorded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingView {
    pub project: ProjectId,
    pub alias: crate::ids::BindingAlias,
    pub target: String,
    pub revision: u32,
    pub created: Recorded,
    pub updated: Recorded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invalidation {
    pub reason: String,
    pub recorded: Recorded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicationView {
    pub publication_version: PublicationVersion,
    pub based_on: Option<PublicationVersion>,
    pub admitted: ImplementationId,
    pub entries: Vec<PublicationEntry>,
    pub signature: SignatureBytes,
    pub key_id: String,
    pub created: Recorded,
    pub invalidated: Option<Invalidation>,
}

impl PublicationView {
    pub fn status(&self) -> &'static str {
        if self.invalidated.is_some() {
            "invalidated"
        } else {
            "valid"
        }
    }

    pub fn entry(&self, id: &ImplementationId) -> Option<&PublicationEntry> {
        self.entries.iter().find(|e| &e.implementation_id == id)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicationsView {
    pub versions: BTreeMap<u64, PublicationView>,
}

impl PublicationsView {
    /// The newest version that is not invalidated.
    pub fn latest(&self) -> Option<&PublicationView> {
        self.versions.values().rev().find(|p| p.invalidated.is_none())
    }

    pub fn newest_version(&self) -> Option<PublicationVersion> {
        self.versions.keys().next_back().map(|v| PublicationVersion(*v))
    }

    pub fn get(&self, v: PublicationVersion) -> Option<&PublicationView> {
        self.versions.get(&v.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointView {
    pub tree_size: u64,
    pub root_hash: String,
    pub head_hash: String,
    pub note: String,
    pub recorded: Recorded,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryView {
    pub keys: Vec<RegistryKeyRegistered>,
    pub last_checkpoint: Option<CheckpointView>,
    pub checkpoints: u64,
}

/// Every projection, at one log position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Projections {
    /// The last applied position.
    pub position: u64,
    /// Shared: an invocation holds its contract's view without copying the schemas.
    pub contracts: BTreeMap<String, std::sync::Arc<ContractView>>,
    pub implementations: BTreeMap<String, ImplementationView>,
    pub conformance_runs: BTreeMap<String, ConformanceRunView>,
    /// Keyed `project/alias`.
    pub bindings: BTreeMap<String, BindingView>,
    pub publications: PublicationsView,
    pub registry: RegistryView,
    /// Access tokens by id: who may do what (never the token or its hash).
    pub tokens: BTreeMap<String, TokenView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub token_id: String,
    pub role: crate::ids::Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<crate::ids::ProjectId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implementations: Vec<String>,
    pub label: String,
    pub issued: Recorded,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<TokenRevocation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRevocation {
    pub reason: String,
    pub recorded: Recorded,
}

/// Why an event could not be applied. Either the log holds an event this release cannot read, or
/// the log breaks a domain rule the command handlers keep (which only tampering can cause).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("position {position}: {source}")]
    Decode { position: u64, source: DecodeError },
    #[error("position {position}: expected position {expected} (events must be applied in order)")]
    OutOfOrder { position: u64, expected: u64 },
    #[error("position {position}: {reason}")]
    Inconsistent { position: u64, reason: String },
}

/// The projection names, in digest order.
pub const PROJECTION_NAMES: &[&str] =
    &["contracts", "implementations", "conformanceRuns", "bindings", "publications", "registry", "tokens"];

impl Projections {
    /// Folds one event. Events must come in position order, without gaps.
    pub fn apply(&mut self, e: &RecordedEvent) -> Result<(), ApplyError> {
        if e.position != self.position + 1 {
            return Err(ApplyError::OutOfOrder { position: e.position, expected: self.position + 1 });
        }
        let event = DomainEvent::decode(&e.event_type, e.schema_version, &e.payload)
            .map_err(|source| ApplyError::Decode { position: e.position, source })?;
        self.apply_decoded(e, event)?;
        self.position = e.position;
        Ok(())
    }

    fn apply_decoded(&mut self, e: &RecordedEvent, event: DomainEvent) -> Result<(), ApplyError> {
        let inconsistent = |reason: String| ApplyError::Inconsistent { position: e.position, reason };
        match event {
            DomainEvent::RegistryKeyRegistered(k) => self.registry.keys.push(k),
            DomainEvent::CheckpointSigned(CheckpointSigned { tree_size, root_hash, head_hash, note }) => {
                self.registry.checkpoints += 1;
                self.registry.last_checkpoint =
                    Some(CheckpointView { tree_size, root_hash, head_hash, note, recorded: Recorded::of(e) });
            }
            DomainEvent::ContractRegistered(c) => {
                let key = c.contract.to_string();
                let revision = self.contracts.get(&key).map_or(1, |old| old.revision + 1);
                let ContractRegistered {
                    contract,
                    package,
                    world,
                    interface,
                    description,
                    wit_digest,
                    operations,
                    sensitive_fields,
                } = c;
                self.contracts.insert(
                    key,
                    std::sync::Arc::new(ContractView {
                        kind: contract.kind.to_string(),
                        major_version: contract.major_version,
                        contract,
                        package,
                        world,
                        interface,
                        description,
                        wit_digest,
                        revision,
                        operations,
                        sensitive_fields,
                        registered: Recorded::of(e),
                    }),
                );
            }
            DomainEvent::ImplementationBuilt(b) => {
                let key = b.implementation_id.to_string();
                if self.implementations.contains_key(&key) {
                    return Err(inconsistent(format!("{key} was built twice")));
                }
                self.implementations.insert(
                    key,
                    ImplementationView {
                        implementation_id: b.implementation_id,
                        source: b.source,
                        contract: b.contract,
                        content_hash: b.content_hash,
                        signature: b.signature,
                        artifact_size: b.artifact_size,
                        media_type: b.media_type,
                        built: Recorded::of(e),
                        conformance: None,
                        published_in: Vec::new(),
                    },
                );
            }
            DomainEvent::ConformanceRunCompleted(r) => {
                let imp = self
                    .implementations
                    .get_mut(&r.implementation_id.to_string())
                    .ok_or_else(|| inconsistent(format!("conformance run for unknown {}", r.implementation_id)))?;
                let runs = imp.conformance.as_ref().map_or(0, |c| c.runs) + 1;
                imp.conformance =
                    Some(ConformanceSummary { runs, last_run_id: r.run_id.clone(), last_passed: r.passed });
                self.conformance_runs.insert(
                    r.run_id.clone(),
                    ConformanceRunView {
                        run_id: r.run_id,
                        implementation_id: r.implementation_id,
                        content_hash: r.content_hash,
                        contract: r.contract,
                        passed: r.passed,
                        checks: r.checks,
                        started_at: r.started_at,
                        finished_at: r.finished_at,
                        published_as: None,
                        recorded: Recorded::of(e),
                    },
                );
            }
            DomainEvent::PublicationCreated(p) => {
                let v = p.publication_version;
                if let Some(newest) = self.publications.newest_version() {
                    if v.0 != newest.0 + 1 {
                        return Err(inconsistent(format!("publication {v} follows {newest}")));
                    }
                } else if v.0 != 1 {
                    return Err(inconsistent(format!("the first publication is numbered {v}")));
                }
                for entry in &p.entries {
                    if let Some(imp) = self.implementations.get_mut(&entry.implementation_id.to_string()) {
                        imp.published_in.push(v);
                    }
                    if entry.implementation_id == p.admitted {
                        if let Some(run) = self.conformance_runs.get_mut(&entry.conformance_run_id) {
                            run.published_as = Some(v);
                        }
                    }
                }
                self.publications.versions.insert(
                    v.0,
                    PublicationView {
                        publication_version: v,
                        based_on: p.based_on,
                        admitted: p.admitted,
                        entries: p.entries,
                        signature: p.signature,
                        key_id: p.key_id,
                        created: Recorded::of(e),
                        invalidated: None,
                    },
                );
            }
            DomainEvent::PublicationInvalidated(i) => {
                let publication = self.publications.versions.get_mut(&i.publication_version.0).ok_or_else(|| {
                    inconsistent(format!("invalidation of unknown publication {}", i.publication_version))
                })?;
                publication.invalidated = Some(Invalidation { reason: i.reason, recorded: Recorded::of(e) });
            }
            DomainEvent::BindingCreated(b) => {
                let key = format!("{}/{}", b.project, b.alias);
                self.bindings.insert(
                    key,
                    BindingView {
                        project: b.project,
                        alias: b.alias,
                        target: b.target,
                        revision: 1,
                        created: Recorded::of(e),
                        updated: Recorded::of(e),
                    },
                );
            }
            DomainEvent::BindingChanged(b) => {
                let key = format!("{}/{}", b.project, b.alias);
                let binding = self
                    .bindings
                    .get_mut(&key)
                    .ok_or_else(|| inconsistent(format!("change of unknown binding {key}")))?;
                binding.target = b.target;
                binding.revision += 1;
                binding.updated = Recorded::of(e);
            }
            DomainEvent::TokenIssued(t) => {
                if self.tokens.contains_key(&t.token_id) {
                    return Err(inconsistent(format!("token {} issued twice", t.token_id)));
                }
                self.tokens.insert(
                    t.token_id.clone(),
                    TokenView {
                        token_id: t.token_id,
                        role: t.role,
                        project: t.project,
                        implementations: t.implementations,
                        label: t.label,
                        issued: Recorded::of(e),
                        revoked: None,
                    },
                );
            }
            DomainEvent::TokenRevoked(r) => {
                let token = self
                    .tokens
                    .get_mut(&r.token_id)
                    .ok_or_else(|| inconsistent(format!("revocation of unknown token {}", r.token_id)))?;
                token.revoked = Some(TokenRevocation { reason: r.reason, recorded: Recorded::of(e) });
            }
        }
        Ok(())
    }

    /// sha256 of the RFC 8785 encoding of each projection, and of all of them together.
    pub fn digests(&self) -> ProjectionDigests {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut per_projection = BTreeMap::new();
        let mut all = Sha256::new();
        for name in PROJECTION_NAMES {
            let canonical = serde_json_canonicalizer::to_vec(&value[*name]).unwrap_or_default();
            let digest = ContentHash::of(&canonical);
            all.update(name.as_bytes());
            all.update(digest.0);
            per_projection.insert((*name).to_owned(), digest);
        }
        ProjectionDigests {
            position: self.position,
            state: ContentHash(all.finalize().into()),
            projections: per_projection,
        }
    }

    pub fn implementation(&self, id: &ImplementationId) -> Option<&ImplementationView> {
        self.implementations.get(&id.to_string())
    }

    pub fn contract(&self, c: &ContractRef) -> Option<&std::sync::Arc<ContractView>> {
        self.contracts.get(&c.to_string())
    }

    pub fn binding(&self, project: &ProjectId, alias: &crate::ids::BindingAlias) -> Option<&BindingView> {
        self.bindings.get(&format!("{project}/{alias}"))
    }

    pub fn bindings_of<'a>(&'a self, project: &'a ProjectId) -> impl Iterator<Item = &'a BindingView> + 'a {
        self.bindings.values().filter(move |b| &b.project == project)
    }

    /// What a binding target runs now: the entry of `latest` it selects, if any.
    pub fn resolve(&self, target: &BindingTarget) -> Resolution<'_> {
        let Some(latest) = self.publications.latest() else {
            return Resolution::NothingPublished;
        };
        match target {
            BindingTarget::Pinned(id) => match latest.entry(id) {
                Some(entry) => Resolution::Resolved { publication: latest.publication_version, entry },
                None => Resolution::NoLongerPublished { implementation_id: id.clone() },
            },
            BindingTarget::Floating { name, requirement } => latest
                .entries
                .iter()
                .filter(|e| &e.implementation_id.name == name && requirement.matches(&e.implementation_id.version))
                .max_by(|a, b| a.implementation_id.version.cmp(&b.implementation_id.version))
                .map_or(Resolution::NoMatch, |entry| Resolution::Resolved {
                    publication: latest.publication_version,
                    entry,
                }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resolution<'a> {
    Resolved {
        publication: PublicationVersion,
        entry: &'a PublicationEntry,
    },
    /// A pinned implementation that `latest` no longer lists (answered 410).
    NoLongerPublished {
        implementation_id: ImplementationId,
    },
    /// A floating requirement that nothing in `latest` satisfies.
    NoMatch,
    NothingPublished,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionDigests {
    pub position: u64,
    /// Digest over every projection's digest.
    pub state: ContentHash,
    pub projections: BTreeMap<String, ContentHash>,
}
