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

/// The indexed columns of a record.
pub struct RecordKey {
    pub id: String,
    pub at_ms: u64,
    pub project: String,
    pub implementation: String,
    pub operation: String,
}

/// Builds the record's JSON. It runs on the writer thread, off the invocation's path, and must
/// only be handed values that are already safe to keep (or the redactor that makes them so).
pub type RecordBuilder = Box<dyn FnOnce() -> serde_json::Value + Send>;

struct Row {
    key: RecordKey,
    build: RecordBuilder,
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
/// After the first record of a batch arrives, the writer waits this long for more before writing.
/// Invocations that queue a record meanwhile find the writer awake and do not have to wake it (a
/// futex wake per invocation cost more than building the record); a record reaches the disk at
/// most this much later. A flush does not wait.
const GATHER: std::time::Duration = std::time::Duration::from_micros(500);

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

    /// Queues a record for writing; `build` makes its JSON on the writer thread. [`InvocationLog::get`]
    /// (and dropping the log) waits for queued records, so a reader never misses one.
    pub fn record(&self, key: RecordKey, build: RecordBuilder) -> Result<(), InvocationLogError> {
        let row = Row { key, build };
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
        if matches!(first, Message::Record(_)) {
            std::thread::sleep(GATHER);
        }
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let mut rows = Vec::with_capacity(batch.len());
        for m in batch {
            match m {
                Message::Record(Row { key, build }) => {
                    // A builder that panics loses its record, not the writer.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)) {
                        Ok(record) => rows.push((key, record.to_string())),
                        Err(_) => tracing::error!(invocation = %key.id, "building an invocation record panicked"),
                    }
                }
                Message::Flush(done) => flushes.push(done),
            }
        }
        if !rows.is_empty() {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = write_batch(&mut conn, &rows) {
                tracing::error!(error = %e, records = rows.len(), "cannot write invocation records");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn write_batch(conn: &mut Connection, rows: &[(RecordKey, String)]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO invocations (id, at_ms, project, implementation, operation, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (k, record) in rows {
            insert.execute(params![k.id, k.at_ms as i64, k.project, k.implementation, k.operation, record])?;
        }
    }
    tx.commit()
}
