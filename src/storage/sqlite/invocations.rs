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
    /// Dropping it stops the checkpointer thread.
    _checkpointer: Option<Checkpointer>,
}

fn store(action: &'static str) -> impl FnOnce(rusqlite::Error) -> RecordError {
    move |e| RecordError::Store { action, source: Box::new(e) }
}

/// How often the background thread moves the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Moves committed WAL frames into the database on its own connection, so that no invocation's
/// record commit pays for a checkpoint (SQLite's automatic checkpoint runs inside whichever commit
/// crosses the threshold). `PASSIVE` never blocks a writer; durability is unchanged, since a
/// commit is durable (to this store's standard) once it is in the WAL.
struct Checkpointer {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(1))?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("vadyl-records-checkpoint".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "cannot checkpoint the invocation records' WAL");
                    }
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SqliteInvocationRecords {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let conn = Connection::open(path).map_err(store("open its database"))?;
        let init = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // Checkpoints are the background thread's job.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS invocations (
                    id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, project TEXT NOT NULL,
                    implementation TEXT NOT NULL, operation TEXT NOT NULL, record TEXT NOT NULL);
                 -- (project, rowid): a project's records in the order they were stored, for paging.
                 -- It replaces (project, at_ms), which nothing read: one index less per record.
                 DROP INDEX IF EXISTS invocations_by_project;
                 CREATE INDEX IF NOT EXISTS invocations_by_project_seq ON invocations (project);",
            )
        };
        init(&conn).map_err(store("create its table"))?;
        let checkpointer = Checkpointer::start(path).map_err(store("start its checkpointer"))?;
        Ok(Self { conn: Mutex::new(conn), _checkpointer: Some(checkpointer) })
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
