//! Invocation records for audit: what ran, on which artifact, with which (redacted) input and
//! outcome, and everything the implementation learned from outside. Operational data, so it lives in
//! its own SQLite file rather than in the event log.

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

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
    conn: Arc<Mutex<Connection>>,
    queue: Mutex<Option<SyncSender<Message>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Row {
    id: String,
    at_ms: u64,
    project: String,
    implementation: String,
    operation: String,
    /// Serialized by the writer, off the invocation's path.
    record: serde_json::Value,
}

enum Message {
    Record(Row),
    /// Answered once everything queued before it is written.
    Flush(SyncSender<()>),
}

/// Records waiting to be written; beyond it `record` waits (backpressure, never loss).
const QUEUE: usize = 4096;
/// Most records written in one transaction.
const BATCH: usize = 256;

impl InvocationLog {
    pub fn open(path: &Path) -> Result<Self, InvocationLogError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Records survive a crashed process once written; the last ones may be lost on power
        // failure, which is the trade an invocation hot path can afford (the event log stays FULL).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS invocations (
                id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, project TEXT NOT NULL,
                implementation TEXT NOT NULL, operation TEXT NOT NULL, record TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS invocations_by_project ON invocations (project, at_ms);",
        )?;
        let conn = Arc::new(Mutex::new(conn));
        // Invocations hand their record to one writer thread, which writes whatever has queued up
        // in one transaction: an invocation does not wait for SQLite, and a burst costs one commit.
        let (tx, rx) = sync_channel::<Message>(QUEUE);
        let writer_conn = conn.clone();
        let writer = std::thread::Builder::new()
            .name("vadyl-invocation-log".into())
            .spawn(move || write_loop(&writer_conn, &rx))
            .map_err(|e| InvocationLogError(format!("cannot start the record writer: {e}")))?;
        Ok(Self { conn, queue: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)) })
    }

    /// Queues a record for writing; the caller has redacted it. [`InvocationLog::get`] (and dropping
    /// the log) waits for queued records, so a reader never misses one.
    pub fn record(
        &self,
        id: &str,
        at_ms: u64,
        project: &str,
        implementation: &str,
        operation: &str,
        record: serde_json::Value,
    ) -> Result<(), InvocationLogError> {
        let row = Row {
            id: id.to_owned(),
            at_ms,
            project: project.to_owned(),
            implementation: implementation.to_owned(),
            operation: operation.to_owned(),
            record,
        };
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner()).clone();
        queue
            .ok_or_else(|| InvocationLogError("the log is closed".into()))?
            .send(Message::Record(row))
            .map_err(|_| InvocationLogError("the record writer stopped".into()))
    }

    /// Waits until every record queued so far is written.
    pub fn flush(&self) -> Result<(), InvocationLogError> {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(queue) = queue else { return Ok(()) };
        let (done, wait) = sync_channel(1);
        queue.send(Message::Flush(done)).map_err(|_| InvocationLogError("the record writer stopped".into()))?;
        wait.recv().map_err(|_| InvocationLogError("the record writer stopped".into()))
    }

    pub fn get(&self, id: &str) -> Result<Option<serde_json::Value>, InvocationLogError> {
        self.flush()?;
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let text: Option<String> =
            conn.query_row("SELECT record FROM invocations WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| InvocationLogError(e.to_string()))).transpose()
    }
}

impl Drop for InvocationLog {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain what is left and stop.
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

fn write_loop(conn: &Mutex<Connection>, rx: &Receiver<Message>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let rows: Vec<&Row> = batch
            .iter()
            .filter_map(|m| match m {
                Message::Record(r) => Some(r),
                Message::Flush(_) => None,
            })
            .collect();
        if !rows.is_empty() {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = write_batch(&mut conn, &rows) {
                tracing::error!(error = %e, records = rows.len(), "cannot write invocation records");
            }
        }
        for m in batch {
            if let Message::Flush(done) = m {
                let _ = done.send(());
            }
        }
    }
}

fn write_batch(conn: &mut Connection, rows: &[&Row]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO invocations (id, at_ms, project, implementation, operation, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for r in rows {
            insert.execute(params![
                r.id,
                r.at_ms as i64,
                r.project,
                r.implementation,
                r.operation,
                r.record.to_string()
            ])?;
        }
    }
    tx.commit()
}
