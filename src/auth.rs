//! Access control: bearer tokens with a role, and the one table that says which role may do what.
//!
//! A token is `vadyl_<id>_<secret>`: 64 random bits of id, 256 random bits of secret. The registry
//! keeps only the sha256 of the whole token, in `tokens.db` beside the log (owner-only); the log
//! records the grant (`TokenIssued`: id, role, scope) and the revocation, never the token nor its
//! hash. A request is authenticated by looking the id up, comparing hashes in constant time, and
//! checking the grant is not revoked; every event it causes then records `token:<id>` as its actor.

use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::events::envelope::EventMetadata;
use crate::ids::{ProjectId, Role};
use crate::projections::Projections;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token store: {0}")]
    Store(String),
}

impl From<rusqlite::Error> for AuthError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.to_string())
    }
}

/// The hashes of issued tokens.
pub struct TokenStore {
    conn: Mutex<Connection>,
}

/// A freshly generated token: shown once, then only its hash exists.
pub struct NewToken {
    pub token_id: String,
    pub token: String,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenStore {
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let existed = path.exists();
        let conn = Connection::open(path)?;
        if !existed {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| AuthError::Store(format!("cannot restrict {}: {e}", path.display())))?;
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS token_hashes (id TEXT PRIMARY KEY, sha256 BLOB NOT NULL)")?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// Generates a token and stores its hash. The grant is recorded separately (`TokenIssued`).
    pub fn generate(&self) -> Result<NewToken, AuthError> {
        use rand::RngCore;
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token_id = hex::encode(id);
        let token = format!("vadyl_{token_id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT INTO token_hashes (id, sha256) VALUES (?1, ?2)",
            params![token_id, hash(&token).to_vec()],
        )?;
        Ok(NewToken { token_id, token })
    }

    /// Removes a hash whose grant could not be recorded.
    pub fn forget(&self, token_id: &str) -> Result<(), AuthError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute("DELETE FROM token_hashes WHERE id = ?1", [token_id])?;
        Ok(())
    }

    /// The token id of `token` if its hash is stored, else `None`.
    pub fn check(&self, token: &str) -> Result<Option<String>, AuthError> {
        let Some(id) = parse(token) else { return Ok(None) };
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let stored: Option<Vec<u8>> = conn
            .prepare_cached("SELECT sha256 FROM token_hashes WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let matches = stored.is_some_and(|h| {
            // Constant time in the hash bytes: a timing side channel must not reveal a prefix.
            let want = hash(token);
            h.len() == want.len() && h.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        Ok(matches.then(|| id.to_owned()))
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

    pub fn metadata(&self) -> EventMetadata {
        EventMetadata::actor(&self.actor)
    }

    pub fn authorize(&self, action: Action<'_>) -> Result<(), Refusal> {
        let forbidden = || Refusal::Forbidden(format!("a {} token may not do this", self.role));
        match (self.role, action) {
            (Role::Admin, _) => Ok(()),
            (_, Action::ReadCatalogue) => Ok(()),
            (Role::Auditor, Action::ReadProject { .. } | Action::ReadTokens) => Ok(()),
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
    fn tokens_verify_by_hash_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(&dir.path().join("tokens.db")).unwrap();
        let t = store.generate().unwrap();
        assert_eq!(store.check(&t.token).unwrap(), Some(t.token_id.clone()));
        let mut wrong = t.token.clone();
        wrong.pop();
        wrong.push(if t.token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(store.check(&wrong).unwrap(), None);
        assert_eq!(store.check("Bearer nonsense").unwrap(), None);
        let raw = std::fs::read(dir.path().join("tokens.db")).unwrap();
        assert!(!raw.windows(t.token.len()).any(|w| w == t.token.as_bytes()), "the token itself is stored");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tokens.db")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the hash store is owner-only");
    }

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
