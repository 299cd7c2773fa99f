//! Invocation records for audit: what ran, on which artifact, with which (redacted) input and
//! outcome, and everything the implementation learned from outside. Operational data, so it lives in
//! its own SQLite file rather than in the event log.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
#[error("invocation log: {0}")]
pub struct InvocationLogError(String);

impl From<rusqlite::Error> for InvocationLogError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

pub struct InvocationLog {
    conn: Mutex<Connection>,
}

impl InvocationLog {
    pub fn open(path: &Path) -> Result<Self, InvocationLogError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Records survive a crashed process; the last ones may be lost on power failure, which is
        // the trade an invocation hot path can afford (the event log itself stays FULL).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS invocations (
                id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, project TEXT NOT NULL,
                implementation TEXT NOT NULL, operation TEXT NOT NULL, record TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS invocations_by_project ON invocations (project, at_ms);",
        )?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// Stores a record; the caller has redacted it.
    pub fn record(
        &self,
        id: &str,
        at_ms: u64,
        project: &str,
        implementation: &str,
        operation: &str,
        record: &serde_json::Value,
    ) -> Result<(), InvocationLogError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT INTO invocations (id, at_ms, project, implementation, operation, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, at_ms as i64, project, implementation, operation, record.to_string()],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<serde_json::Value>, InvocationLogError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let text: Option<String> =
            conn.query_row("SELECT record FROM invocations WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| InvocationLogError(e.to_string()))).transpose()
    }
}
