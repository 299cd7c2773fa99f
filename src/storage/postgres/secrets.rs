//! The sealed secret rows in the shared database: what the secrets service sealed (nonce,
//! ciphertext, fingerprint, time) and the master key's check; never a value or a key. Every node
//! must be given the same master key file (`docs/postgres.md`); the check refuses a node whose key
//! differs instead of letting it seal rows the others cannot open.
//!
//! A version is picked and inserted in one statement; the primary key makes two nodes that pick the
//! same version collide, and the loser retries, so versions stay gap-free without a lock.

use std::fmt;

use postgres::error::SqlState;

use crate::ids::ProjectId;
use crate::runtime::host::secrets::{SealedSecret, SecretError, SecretMetadata, SecretRow, SecretRows};

use super::Shared;

pub struct PostgresSecretRows {
    db: Shared,
}

impl fmt::Debug for PostgresSecretRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSecretRows").finish_non_exhaustive()
    }
}

fn storage<E: std::error::Error + Send + Sync + 'static>(action: &'static str) -> impl Fn(E) -> SecretError {
    move |source| SecretError::Storage { action, source: Box::new(source) }
}

const ROW: &str = "version, nonce, ciphertext, fingerprint, created_at_ms";

fn row_of(r: &postgres::Row) -> Result<SecretRow, postgres::Error> {
    Ok(SecretRow {
        version: r.try_get(0)?,
        sealed: SealedSecret {
            nonce: r.try_get(1)?,
            ciphertext: r.try_get(2)?,
            fingerprint: r.try_get(3)?,
            created_at_ms: r.try_get(4)?,
        },
    })
}

impl PostgresSecretRows {
    /// On a database the log has migrated.
    pub fn open(url: &str) -> Result<Self, SecretError> {
        Ok(Self { db: Shared::open(url).map_err(storage("connect to the database"))? })
    }
}

impl SecretRows for PostgresSecretRows {
    fn insert_next(
        &self,
        project: &ProjectId,
        name: &str,
        seal: &dyn Fn(i64) -> Result<SealedSecret, SecretError>,
    ) -> Result<i64, SecretError> {
        const ATTEMPTS: u32 = 20;
        for _ in 0..ATTEMPTS {
            let version: i64 = self
                .db
                .with(|c| {
                    c.query_one(
                        "SELECT COALESCE(MAX(version), 0) + 1 FROM secrets WHERE project = $1 AND name = $2",
                        &[&project.as_str(), &name],
                    )?
                    .try_get(0)
                })
                .map_err(storage("find the next version"))?;
            let sealed = seal(version)?;
            let inserted = self.db.with(|c| {
                c.execute(
                    "INSERT INTO secrets (project, name, version, nonce, ciphertext, fingerprint, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &project.as_str(),
                        &name,
                        &version,
                        &sealed.nonce,
                        &sealed.ciphertext,
                        &sealed.fingerprint,
                        &sealed.created_at_ms,
                    ],
                )
            });
            match inserted {
                Ok(_) => return Ok(version),
                // Another node stored this version first: seal the next one.
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => continue,
                Err(e) => return Err(storage("insert the secret")(e)),
            }
        }
        Err(SecretError::Storage {
            action: "insert the secret",
            source: format!("{ATTEMPTS} concurrent writers took every version this one picked").into(),
        })
    }

    fn load(&self, project: &ProjectId, name: &str, version: Option<i64>) -> Result<Option<SecretRow>, SecretError> {
        let row = self.db.with(|c| match version {
            Some(v) => c.query_opt(
                &format!("SELECT {ROW} FROM secrets WHERE project = $1 AND name = $2 AND version = $3"),
                &[&project.as_str(), &name, &v],
            ),
            None => c.query_opt(
                &format!("SELECT {ROW} FROM secrets WHERE project = $1 AND name = $2 ORDER BY version DESC LIMIT 1"),
                &[&project.as_str(), &name],
            ),
        });
        row.map_err(storage("read the secret"))?.map(|r| row_of(&r)).transpose().map_err(storage("read the secret"))
    }

    fn list_latest(&self, project: &ProjectId) -> Result<Vec<SecretMetadata>, SecretError> {
        let rows = self
            .db
            .with(|c| {
                c.query(
                    "SELECT DISTINCT ON (name) name, version, fingerprint, created_at_ms FROM secrets \
                     WHERE project = $1 ORDER BY name, version DESC",
                    &[&project.as_str()],
                )
            })
            .map_err(storage("list secrets"))?;
        rows.iter()
            .map(|r| {
                Ok(SecretMetadata {
                    name: r.try_get(0)?,
                    version: r.try_get::<_, i64>(1)?.to_string(),
                    fingerprint: r.try_get(2)?,
                    created_at_ms: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()
            .map_err(storage("read a listed secret"))
    }

    fn key_check(&self) -> Result<Option<String>, SecretError> {
        self.db
            .with(|c| c.query_opt("SELECT key_check FROM secrets_meta WHERE id = 1", &[]))
            .map_err(storage("read the key check"))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(storage("read the key check"))
    }

    fn record_key_check(&self, check: &str) -> Result<(), SecretError> {
        self.db
            .with(|c| {
                c.execute(
                    "INSERT INTO secrets_meta (id, key_check) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                    &[&check],
                )
            })
            .map_err(storage("record the key check"))?;
        Ok(())
    }
}
