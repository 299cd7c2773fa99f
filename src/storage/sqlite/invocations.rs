//! Invocation records in `invocations.db`: operational data beside the log, not in it.
//!
//! [`InvocationRecords::append`] commits before it returns (WAL, `synchronous=NORMAL`): a record
//! whose invocation was answered survives the server being killed. Power loss may take the last
//! commits with it, which is the trade the invoke path makes (see ARCHITECTURE.md, Durability); the
//! event log stays `synchronous=FULL`. Concurrent invocations share the connection, each in its own
//! short transaction; WAL makes a commit an append to one file, not a sync.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::app::records::{InvocationRecord, InvocationRecords, RecordError, StoredRecord};
use crate::ids::ProjectId;

pub struct SqliteInvocationRecords {
    conn: Mutex<Connection>,
}

fn store(action: &'static str) -> impl FnOnce(rusqlite::Error) -> RecordError {
    move |e| RecordError::Store { action, source: Box::new(e) }
}

impl SqliteInvocationRecords {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let conn = Connection::open(path).map_err(store("open its database"))?;
        let init = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS invocations (
                    id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, project TEXT NOT NULL,
                    implementation TEXT NOT NULL, operation TEXT NOT NULL, record TEXT NOT NULL);
                 CREATE INDEX IF NOT EXISTS invocations_by_project ON invocations (project, at_ms);
                 -- (project, rowid): a project's records in the order they were stored, for paging.
                 CREATE INDEX IF NOT EXISTS invocations_by_project_seq ON invocations (project);",
            )
        };
        init(&conn).map_err(store("create its table"))?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl InvocationRecords for SqliteInvocationRecords {
    fn append(&self, at_ms: u64, record: &InvocationRecord) -> Result<(), RecordError> {
        let text = serde_json::to_string(record)
            .map_err(|e| RecordError::Store { action: "encode a record", source: Box::new(e) })?;
        let at_ms = i64::try_from(at_ms).unwrap_or(i64::MAX);
        let conn = self.conn();
        // One statement outside an explicit transaction is its own transaction: committed (in
        // the WAL) when `execute` returns.
        conn.prepare_cached(
            "INSERT INTO invocations (id, at_ms, project, implementation, operation, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                record.invocation_id,
                at_ms,
                record.project.as_str(),
                record.implementation_id.to_string(),
                record.operation,
                text
            ])
        })
        .map_err(store("write a record"))?;
        Ok(())
    }

    fn list(&self, project: &ProjectId, after: u64, limit: usize) -> Result<Vec<StoredRecord>, RecordError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT rowid, at_ms, id, record FROM invocations WHERE project = ?1 AND rowid > ?2 ORDER BY rowid LIMIT ?3",
            )
            .map_err(store("read records"))?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![project.as_str(), after, limit], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })
            .map_err(store("read records"))?;
        let mut out = Vec::new();
        for row in rows {
            let (cursor, at_ms, id, text) = row.map_err(store("read records"))?;
            let record = serde_json::from_str(&text).map_err(|source| RecordError::Corrupt { id, source })?;
            out.push(StoredRecord { cursor: cursor as u64, at_ms: at_ms as u64, record });
        }
        Ok(out)
    }

    fn get(&self, id: &str) -> Result<Option<InvocationRecord>, RecordError> {
        let text: Option<String> = self
            .conn()
            .query_row("SELECT record FROM invocations WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(store("read a record"))?;
        text.map(|t| serde_json::from_str(&t).map_err(|source| RecordError::Corrupt { id: id.to_owned(), source }))
            .transpose()
    }
}
