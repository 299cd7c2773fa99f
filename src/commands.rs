//! Command handlers: `decide(&Projections, command) -> Result<Vec<DomainEvent>, CommandError>`.
//!
//! Architecture invariant: every function here is pure. It reads the state it is given and returns
//! the events that should be appended (possibly none, for an idempotent repeat) or the domain rule
//! that refuses the command. It never touches the store, the clock or the network; times and ids
//! come in with the command. `registry::Registry` appends what these return under the expected
//! versions of the state they decided from.

use crate::events::domain::{
    BindingChanged, BindingCreated, CheckpointSigned, ConformanceRunCompleted, ContractRegistered, DomainEvent,
    ImplementationBuilt, PublicationCreated, PublicationEntry, PublicationInvalidated, RegistryKeyRegistered,
};
use crate::ids::{
    BindingAlias, BindingTarget, ContentHash, ContractRef, ImplementationId, ProjectId, PublicationVersion,
};
use crate::keys::Signer;
use crate::projections::{Projections, Resolution};

/// A domain rule refused the command. Each maps to one HTTP status at the edge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 409: the state forbids it (already exists with other content, already invalidated…).
    #[error("{0}")]
    Conflict(String),
    /// 422: well-formed but not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// 410: it existed but is withdrawn.
    #[error("{0}")]
    Gone(String),
}

/// Records a contract when its WIT digest is new for its kind and major version.
pub fn register_contract(state: &Projections, contract: ContractRegistered) -> Vec<DomainEvent> {
    match state.contract(&contract.contract) {
        Some(known) if known.wit_digest == contract.wit_digest => Vec::new(),
        _ => vec![DomainEvent::ContractRegistered(contract)],
    }
}

/// Records the registry key the first time the log sees it.
pub fn register_key(state: &Projections, key: RegistryKeyRegistered) -> Vec<DomainEvent> {
    if state.registry.keys.iter().any(|k| k.public_key == key.public_key) {
        Vec::new()
    } else {
        vec![DomainEvent::RegistryKeyRegistered(key)]
    }
}

/// Records a signed checkpoint unless the newest event already is one.
pub fn sign_checkpoint(state: &Projections, checkpoint: CheckpointSigned) -> Vec<DomainEvent> {
    match &state.registry.last_checkpoint {
        Some(last) if last.recorded.position == state.position => Vec::new(),
        // A concurrent caller already signed this tree (or a larger one).
        Some(last) if last.tree_size >= checkpoint.tree_size => Vec::new(),
        _ if state.position == 0 => Vec::new(),
        _ => vec![DomainEvent::CheckpointSigned(checkpoint)],
    }
}

/// The outcome of a build command.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildDecision {
    /// New implementation: append the event.
    Created(Vec<DomainEvent>),
    /// The same id with the same content exists: nothing to append.
    AlreadyBuilt,
}

/// Implementation versions are immutable (SPEC §4): same content is idempotent, other content is a
/// conflict.
pub fn record_build(state: &Projections, built: ImplementationBuilt) -> Result<BuildDecision, CommandError> {
    if state.contract(&built.contract).is_none() {
        return Err(CommandError::Invalid(format!("unknown contract {}", built.contract)));
    }
    match check_rebuild(state, &built.implementation_id, &built.content_hash, &built.contract)? {
        true => Ok(BuildDecision::AlreadyBuilt),
        false => Ok(BuildDecision::Created(vec![DomainEvent::ImplementationBuilt(built)])),
    }
}

/// Implementation versions are immutable: building an existing id again is idempotent with the
/// same content and contract (`Ok(true)`: already built) and a conflict with any other. The build
/// use case asks this before it stores an artifact, so a refused rebuild writes nothing at all.
pub fn check_rebuild(
    state: &Projections,
    id: &ImplementationId,
    content_hash: &ContentHash,
    contract: &ContractRef,
) -> Result<bool, CommandError> {
    match state.implementation(id) {
        Some(existing) if &existing.content_hash == content_hash && &existing.contract == contract => Ok(true),
        Some(existing) => Err(CommandError::Conflict(format!(
            "{id} is already built with content {}; implementation versions are immutable, publish a new version",
            existing.content_hash
        ))),
        None => Ok(false),
    }
}

/// The bytes a publication's signature covers: a domain-separated canonical body.
pub fn publication_signing_message(
    version: PublicationVersion,
    based_on: Option<PublicationVersion>,
    entries: &[PublicationEntry],
) -> Vec<u8> {
    let body = serde_json::json!({ "publicationVersion": version, "basedOn": based_on, "entries": entries });
    let mut message = b"vadyl publication v1\n".to_vec();
    message.extend(serde_json_canonicalizer::to_vec(&body).unwrap_or_default());
    message
}

/// Records a finished conformance run; a passing run of an implementation that `latest` does not
/// list yet also creates the next publication version, in the same append.
pub fn complete_conformance_run(
    state: &Projections,
    run: ConformanceRunCompleted,
    signer: &dyn Signer,
) -> Result<Vec<DomainEvent>, CommandError> {
    let imp = state
        .implementation(&run.implementation_id)
        .ok_or_else(|| CommandError::NotFound(format!("implementation {} does not exist", run.implementation_id)))?;
    if imp.content_hash != run.content_hash {
        return Err(CommandError::Conflict(format!(
            "run {} tested content {} but {} is {}",
            run.run_id, run.content_hash, run.implementation_id, imp.content_hash
        )));
    }
    if state.conformance_runs.contains_key(&run.run_id) {
        return Err(CommandError::Conflict(format!("conformance run {} is already recorded", run.run_id)));
    }
    let latest = state.publications.latest();
    let already_published = latest.is_some_and(|p| p.entry(&run.implementation_id).is_some());
    let mut events = Vec::new();
    if run.passed && !already_published {
        let version = PublicationVersion(state.publications.newest_version().map_or(1, |v| v.0 + 1));
        let based_on = latest.map(|p| p.publication_version);
        let mut entries: Vec<PublicationEntry> = latest.map(|p| p.entries.clone()).unwrap_or_default();
        entries.push(PublicationEntry {
            implementation_id: run.implementation_id.clone(),
            source: imp.source,
            contract: imp.contract.clone(),
            content_hash: imp.content_hash,
            signature: imp.signature,
            conformance_run_id: run.run_id.clone(),
        });
        entries.sort_by(|a, b| a.implementation_id.cmp(&b.implementation_id));
        let signature = signer.sign(&publication_signing_message(version, based_on, &entries));
        let admitted = run.implementation_id.clone();
        events.push(DomainEvent::ConformanceRunCompleted(run));
        events.push(DomainEvent::PublicationCreated(PublicationCreated {
            publication_version: version,
            based_on,
            admitted,
            entries,
            signature,
            key_id: signer.key_id_hex(),
        }));
    } else {
        events.push(DomainEvent::ConformanceRunCompleted(run));
    }
    Ok(events)
}

/// Creates a binding or points an existing one elsewhere. Only targets that resolve against
/// `latest` now can be bound.
pub fn bind(
    state: &Projections,
    project: ProjectId,
    alias: BindingAlias,
    target: BindingTarget,
) -> Result<Vec<DomainEvent>, CommandError> {
    match state.resolve(&target) {
        Resolution::Resolved { .. } => {}
        Resolution::NothingPublished => {
            return Err(CommandError::Invalid(format!("nothing is published yet; {target} cannot be bound")))
        }
        Resolution::NoLongerPublished { implementation_id } => {
            return Err(CommandError::Invalid(format!(
                "{implementation_id} is not in the latest publication; only published implementations can be bound"
            )))
        }
        Resolution::NoMatch => {
            return Err(CommandError::Invalid(format!(
                "no implementation in the latest publication satisfies {target}"
            )))
        }
    }
    let target_text = target.to_string();
    Ok(match state.binding(&project, &alias) {
        Some(existing) if existing.target == target_text => Vec::new(),
        Some(existing) => vec![DomainEvent::BindingChanged(BindingChanged {
            project,
            alias,
            target: target_text,
            previous_target: existing.target.clone(),
        })],
        None => vec![DomainEvent::BindingCreated(BindingCreated { project, alias, target: target_text })],
    })
}

/// Withdraws a publication version; `latest` rolls back to the newest valid version at once.
pub fn invalidate_publication(
    state: &Projections,
    version: PublicationVersion,
    reason: &str,
) -> Result<Vec<DomainEvent>, CommandError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CommandError::Invalid("an invalidation needs a reason".into()));
    }
    if reason.len() > 2000 {
        return Err(CommandError::Invalid("the reason is longer than 2000 bytes".into()));
    }
    let publication = state
        .publications
        .get(version)
        .ok_or_else(|| CommandError::NotFound(format!("publication version {version} does not exist")))?;
    if let Some(inv) = &publication.invalidated {
        return Err(CommandError::Conflict(format!(
            "publication version {version} is already invalidated (at position {}: {})",
            inv.recorded.position, inv.reason
        )));
    }
    let previous_latest = state.publications.latest().map(|p| p.publication_version);
    let new_latest = state
        .publications
        .versions
        .values()
        .rev()
        .find(|p| p.invalidated.is_none() && p.publication_version != version)
        .map(|p| p.publication_version);
    Ok(vec![DomainEvent::PublicationInvalidated(PublicationInvalidated {
        publication_version: version,
        reason: reason.to_owned(),
        previous_latest,
        new_latest,
    })])
}

/// Issues a token's grant (the token itself is generated and hashed by the caller, outside events).
pub fn issue_token(
    state: &Projections,
    grant: crate::events::domain::TokenIssued,
) -> Result<Vec<DomainEvent>, CommandError> {
    use crate::ids::Role;
    if state.tokens.contains_key(&grant.token_id) {
        return Err(CommandError::Conflict(format!("token {} already exists", grant.token_id)));
    }
    match (grant.role, &grant.project, grant.implementations.is_empty()) {
        (Role::Project, None, _) => return Err(CommandError::Invalid("a project token needs --project".into())),
        (Role::Project, Some(_), false) | (Role::Admin | Role::Auditor, _, false) => {
            return Err(CommandError::Invalid("only publisher tokens name implementations".into()))
        }
        (Role::Admin | Role::Auditor | Role::Publisher, Some(_), _) => {
            return Err(CommandError::Invalid("only project tokens name a project".into()))
        }
        (Role::Publisher, None, true) => {
            return Err(CommandError::Invalid("a publisher token needs at least one --implementation name".into()))
        }
        _ => {}
    }
    if grant.label.len() > 200 {
        return Err(CommandError::Invalid("a token label is at most 200 characters".into()));
    }
    Ok(vec![DomainEvent::TokenIssued(grant)])
}

/// Revokes a token; revoking twice is a no-op.
pub fn revoke_token(state: &Projections, token_id: &str, reason: &str) -> Result<Vec<DomainEvent>, CommandError> {
    let token = state.tokens.get(token_id).ok_or_else(|| CommandError::NotFound(format!("no token {token_id}")))?;
    if token.revoked.is_some() {
        return Ok(Vec::new());
    }
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CommandError::Invalid("a revocation needs a reason".into()));
    }
    Ok(vec![DomainEvent::TokenRevoked(crate::events::domain::TokenRevoked {
        token_id: token_id.to_owned(),
        reason: reason.to_owned(),
    })])
}
