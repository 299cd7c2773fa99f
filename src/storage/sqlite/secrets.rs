//! The SQLite rows of the secret store: [`SqliteSecretRows`] implements the runtime's
//! [`SecretRows`] port in `secrets.db` (WAL). It stores what the secrets service sealed —
//! nonce, ciphertext, fingerprint, creation time — and the master key's check, never a plaintext
//! value or a key. The encryption is in `crate::runtime::host::secrets`, the master key file in
//! `crate::storage::keys`.
//!
//! A new version is picked and inserted in one `BEGIN IMMEDIATE` transaction, so concurrent writers
//! (threads or processes) get distinct, gap-free versions.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::ids::ProjectId;
use crate::runtime::host::secrets::{SealedSecret, SecretError, SecretMetadata, SecretRow, SecretRows};

#[cfg(test)]
mod tests;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS secrets (
    project       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    nonce         BLOB    NOT NULL,
    ciphertext    BLOB    NOT NULL,
    fingerprint   TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (project, name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets_meta (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    key_check TEXT    NOT NULL
);
";

/// The secret rows in one SQLite file; safe to share between threads.
pub struct SqliteSecretRows {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl fmt::Debug for SqliteSecretRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSecretRows").field("path", &self.path).finish_non_exhaustive()
    }
}

fn storage(action: &'static str) -> impl Fn(rusqlite::Error) -> SecretError {
    move |source| SecretError::Storage { action, source: Box::new(source) }
}

impl SqliteSecretRows {
    /// Opens (creating if needed) the rows at `path`.
    pub fn open(path: &Path) -> Result<Self, SecretError> {
        let conn = Connection::open(path).map_err(storage("open the database"))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(storage("enable WAL"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(storage("set the busy timeout"))?;
        conn.execute_batch(SCHEMA).map_err(storage("create the schema"))?;
        Ok(Self { conn: Mutex::new(conn), path: path.to_owned() })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done write: rusqlite rolls back an
        // uncommitted transaction when it is dropped, so the connection is safe to reuse.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SecretRows for SqliteSecretRows {
    fn insert_next(
        &self,
        project: &ProjectId,
        name: &str,
        seal: &dyn Fn(i64) -> Result<SealedSecret, SecretError>,
    ) -> Result<i64, SecretError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage("begin a write transaction"))?;
        let version: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM secrets WHERE project = ?1 AND name = ?2",
                params![project.as_str(), name],
                |r| r.get(0),
            )
            .map_err(storage("find the next version"))?;
        // An error here drops `tx`, which rolls back.
        let sealed = seal(version)?;
        tx.execute(
            "INSERT INTO secrets (project, name, version, nonce, ciphertext, fingerprint, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                project.as_str(),
                name,
                version,
                sealed.nonce,
                sealed.ciphertext,
                sealed.fingerprint,
                sealed.created_at_ms
            ],
        )
        .map_err(storage("insert the secret"))?;
        tx.commit().map_err(storage("commit the secret"))?;
        Ok(version)
    }

    fn load(&self, project: &ProjectId, name: &str, version: Option<i64>) -> Result<Option<SecretRow>, SecretError> {
        let conn = self.lock();
        let read = |r: &rusqlite::Row<'_>| {
            Ok(SecretRow {
                version: r.get(0)?,
                sealed: SealedSecret {
                    nonce: r.get(1)?,
                    ciphertext: r.get(2)?,
                    fingerprint: r.get(3)?,
                    created_at_ms: r.get(4)?,
                },
            })
        };
        // Cached statements: this runs on every invocation that uses a secret.
        let row = match version {
            Some(v) => conn
                .prepare_cached(
                    "SELECT version, nonce, ciphertext, fingerprint, created_at_ms FROM secrets
                     WHERE project = ?1 AND name = ?2 AND version = ?3",
                )
                .and_then(|mut st| st.query_row(params![project.as_str(), name, v], read).optional()),
            None => conn
                .prepare_cached(
                    "SELECT version, nonce, ciphertext, fingerprint, created_at_ms FROM secrets
                     WHERE project = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1",
                )
                .and_then(|mut st| st.query_row(params![project.as_str(), name], read).optional()),
        };
        row.map_err(storage("read the secret"))
    }

    fn list_latest(&self, project: &ProjectId) -> Result<Vec<SecretMetadata>, SecretError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT s.name, s.version, s.fingerprint, s.created_at_ms FROM secrets s
                 JOIN (SELECT name, MAX(version) AS version FROM secrets WHERE project = ?1 GROUP BY name) latest
                   ON s.name = latest.name AND s.version = latest.version
                 WHERE s.project = ?1 ORDER BY s.name",
            )
            .map_err(storage("prepare the listing"))?;
        let rows = stmt
            .query_map(params![project.as_str()], |r| {
                Ok(SecretMetadata {
                    name: r.get(0)?,
                    version: r.get::<_, i64>(1)?.to_string(),
                    fingerprint: r.get(2)?,
                    created_at_ms: r.get(3)?,
                })
            })
            .map_err(storage("list secrets"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(storage("read a listed secret"))
    }

    fn key_check(&self) -> Result<Option<String>, SecretError> {
        self.lock()
            .query_row("SELECT key_check FROM secrets_meta WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(storage("read the key check"))
    }

    fn record_key_check(&self, check: &str) -> Result<(), SecretError> {
        self.lock()
            .execute("INSERT OR IGNORE INTO secrets_meta (id, key_check) VALUES (1, ?1)", params![check])
            .map_err(storage("record the key check"))?;
        Ok(())
    }
}
