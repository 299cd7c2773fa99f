//! Access control: bearer tokens with a role, and the one table that says which role may do what.
//!
//! A token is `vadyl_<id>_<secret>`: 64 random bits of id, 256 random bits of secret. The registry
//! keeps only the sha256 of the whole token, behind [`TokenHashes`] (owner-only `tokens.db` on
//! SQLite); the log
//! records the grant (`TokenIssued`: id, role, scope) and the revocation, never the token nor its
//! hash. A request is authenticated by looking the id up, comparing hashes in constant time, and
//! checking the grant is not revoked; every event it causes then records `token:<id>` as its actor.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::app::registry::{Registry, RegistryError};
use crate::commands;
use crate::events::envelope::EventMetadata;
use crate::ids::{ProjectId, Role};
use crate::projections::Projections;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the token store cannot {action}")]
    Store {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot draw a token from the operating system's randomness")]
    Random(#[source] rand::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The port token hashes are kept behind: id -> sha256 of the whole token. Nothing else about a
/// token is stored anywhere (its grant is an event).
pub trait TokenHashes: Send + Sync {
    fn insert(&self, token_id: &str, sha256: &[u8; 32]) -> Result<(), AccessError>;
    fn remove(&self, token_id: &str) -> Result<(), AccessError>;
    fn get(&self, token_id: &str) -> Result<Option<Vec<u8>>, AccessError>;
}

/// A freshly generated token: shown once, then only its hash exists.
pub struct NewToken {
    pub token_id: String,
    pub token: String,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Generates a token and stores its hash. The grant is recorded separately (`TokenIssued`).
pub fn generate(hashes: &dyn TokenHashes) -> Result<NewToken, AccessError> {
    use rand::RngCore;
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut id).map_err(AccessError::Random)?;
    rand::rngs::OsRng.try_fill_bytes(&mut secret).map_err(AccessError::Random)?;
    let token_id = hex::encode(id);
    let token = format!("vadyl_{token_id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    hashes.insert(&token_id, &hash(&token))?;
    Ok(NewToken { token_id, token })
}

/// The token id of `token` if its hash is stored, else `None`.
pub fn check(hashes: &dyn TokenHashes, token: &str) -> Result<Option<String>, AccessError> {
    let Some(id) = parse(token) else { return Ok(None) };
    let stored = hashes.get(id)?;
    let matches = stored.is_some_and(|h| {
        // Constant time in the hash bytes: a timing side channel must not reveal a prefix.
        let want = hash(token);
        h.len() == want.len() && h.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    Ok(matches.then(|| id.to_owned()))
}

/// The principal a bearer token acts as: its hash must be stored and its grant not revoked.
pub fn authenticate(
    registry: &Registry,
    hashes: &dyn TokenHashes,
    token: &str,
) -> Result<Option<Principal>, AccessError> {
    let Some(id) = check(hashes, token)? else { return Ok(None) };
    Ok(registry.read(|p| Principal::of_token(p, &id)))
}

/// Generates a token, stores its hash and records its grant; the token is returned once.
pub fn issue_token(
    registry: &Registry,
    hashes: &dyn TokenHashes,
    metadata: &EventMetadata,
    role: Role,
    project: Option<ProjectId>,
    implementations: Vec<String>,
    label: String,
) -> Result<NewToken, AccessError> {
    let new = generate(hashes)?;
    let grant =
        crate::events::domain::TokenIssued { token_id: new.token_id.clone(), role, project, implementations, label };
    match registry.execute(metadata, |s| commands::issue_token(s, grant.clone())) {
        Ok(_) => Ok(new),
        Err(e) => {
            // No grant, no token: drop the hash so nothing half-issued remains.
            let _ = hashes.remove(&new.token_id);
            Err(e.into())
        }
    }
}

/// The id part of a well-formed token.
fn parse(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("vadyl_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() == 43).then_some(id)
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `token:<id>`, or `local:<user>` for the owner of the data directory working on it directly.
    pub actor: String,
    pub role: Role,
    pub project: Option<ProjectId>,
    pub implementations: Vec<String>,
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Contracts, implementations, publications, schemas: the shared catalogue.
    ReadCatalogue,
    Build {
        implementation: &'a str,
    },
    Conformance {
        implementation: &'a str,
    },
    Invalidate,
    ReadProject {
        project: &'a ProjectId,
    },
    WriteProject {
        project: &'a ProjectId,
    },
    ManageTokens,
    ReadTokens,
    /// Set a project's secret (admins only: a project token must not be able to replace the key
    /// its own connector authenticates with).
    ManageSecrets {
        project: &'a ProjectId,
    },
    /// The log itself, checkpoints, proofs, replays and exports.
    ReadHistory,
}

/// Why a principal may not do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The role never may (403).
    Forbidden(String),
    /// Another project's data: answered exactly like a name that does not exist (404), so a
    /// project token cannot learn what other projects hold.
    Hidden,
}

impl Principal {
    /// The data directory's owner acting on it directly (no server): full authority, because the
    /// filesystem already granted it.
    pub fn local() -> Self {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Self { actor: format!("local:{user}"), role: Role::Admin, project: None, implementations: vec![] }
    }

    /// The principal of an authenticated token, if its grant exists and is not revoked.
    pub fn of_token(state: &Projections, token_id: &str) -> Option<Self> {
        let t = state.tokens.get(token_id).filter(|t| t.revoked.is_none())?;
        Some(Self {
            actor: format!("token:{token_id}"),
            role: t.role,
            project: t.project.clone(),
            implementations: t.implementations.clone(),
        })
    }

    /// The id of the token this principal authenticated with, if it did.
    pub fn token_id(&self) -> Option<&str> {
        self.actor.strip_prefix("token:")
    }

    pub fn metadata(&self) -> EventMetadata {
        EventMetadata::actor(&self.actor)
    }

    pub fn authorize(&self, action: Action<'_>) -> Result<(), Refusal> {
        let forbidden = || Refusal::Forbidden(format!("a {} token may not do this", self.role));
        match (self.role, action) {
            (Role::Admin, _) => Ok(()),
            (_, Action::ReadCatalogue) => Ok(()),
            (Role::Auditor, Action::ReadProject { .. } | Action::ReadTokens | Action::ReadHistory) => Ok(()),
            (Role::Publisher, Action::Build { implementation } | Action::Conformance { implementation }) => {
                if self.implementations.iter().any(|n| n == implementation) {
                    Ok(())
                } else {
                    Err(Refusal::Forbidden(format!(
                        "this publisher token may build and run conformance only for {}",
                        self.implementations.join(", ")
                    )))
                }
            }
            (Role::Project, Action::ReadProject { project } | Action::WriteProject { project }) => {
                if self.project.as_ref() == Some(project) {
                    Ok(())
                } else {
                    Err(Refusal::Hidden)
                }
            }
            _ => Err(forbidden()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_exactly_their_table() {
        let project: ProjectId = "shop".parse().unwrap();
        let other: ProjectId = "rival".parse().unwrap();
        let p = |role, project: Option<ProjectId>, names: &[&str]| Principal {
            actor: "token:x".into(),
            role,
            project,
            implementations: names.iter().map(|s| (*s).to_owned()).collect(),
        };
        let shop = p(Role::Project, Some(project.clone()), &[]);
        assert_eq!(shop.authorize(Action::WriteProject { project: &project }), Ok(()));
        assert_eq!(shop.authorize(Action::ReadProject { project: &other }), Err(Refusal::Hidden));
        assert!(shop.authorize(Action::Invalidate).is_err());
        let publisher = p(Role::Publisher, None, &["stripe"]);
        assert_eq!(publisher.authorize(Action::Build { implementation: "stripe" }), Ok(()));
        assert!(publisher.authorize(Action::Build { implementation: "other" }).is_err());
        assert!(publisher.authorize(Action::WriteProject { project: &project }).is_err());
        let auditor = p(Role::Auditor, None, &[]);
        assert_eq!(auditor.authorize(Action::ReadProject { project: &other }), Ok(()));
        assert!(auditor.authorize(Action::WriteProject { project: &other }).is_err());
        assert!(auditor.authorize(Action::ManageTokens).is_err());
        assert_eq!(p(Role::Admin, None, &[]).authorize(Action::ManageTokens), Ok(()));
    }
}
