//! Invocation records: a journal in front of a table, operational data beside the log.
//!
//! [`InvocationRecords::append`] returns once the record's line is in the node's journal
//! (`invocations.journal/`, see `storage::journal`): one `write(2)` on the invocation's path, so a
//! record whose invocation was answered survives the process being killed. A background thread
//! moves journaled records into the table in batches (one transaction each), and whoever opens the
//! data directory next indexes what a killed process left in its journal. Power loss may take the
//! last records with it, which is the trade the invoke path makes (see ARCHITECTURE.md,
//! Durability); the event log keeps its own durability.
//!
//! The table is a [`RecordTable`]: SQLite's `invocations.db` (`storage::sqlite::invocations`) or the
//! shared database's `invocations` (`storage::postgres::invocations`). Reads first index what is
//! pending, so a record is readable through this store as soon as it is appended; other processes
//! and nodes see it once the indexer has run (at most [`INDEX_EVERY_MAX`] later).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::records::{InvocationRecord, InvocationRecords, RecordError, StoredRecord};
use crate::ids::ProjectId;
use crate::storage::journal::{self, Journal};

pub type TableError = Box<dyn std::error::Error + Send + Sync>;

/// Where indexed records live: what a database does for [`JournaledRecords`].
pub trait RecordTable: Send + Sync + 'static {
    /// Stores `rows` in one transaction; a row whose id is stored already is skipped, so that a
    /// journal recovered after a kill between the commit and the segment's deletion adds nothing.
    fn insert(&self, rows: &[Row]) -> Result<(), TableError>;
    /// `project`'s rows after cursor `after`, in the order they were stored, at most `limit`.
    fn list(&self, project: &str, after: i64, limit: i64) -> Result<Vec<ListedRow>, TableError>;
    /// The record text stored under `id`.
    fn get(&self, id: &str) -> Result<Option<String>, TableError>;
    /// Housekeeping the indexer runs every [`MAINTAIN_EVERY`] (SQLite moves its WAL).
    fn maintain(&self) {}
}

/// A journaled record, as its row is written.
pub struct Row {
    pub id: String,
    pub at_ms: i64,
    pub project: String,
    pub implementation: String,
    pub operation: String,
    pub record: String,
}

/// A stored row as [`RecordTable::list`] answers it.
pub struct ListedRow {
    pub cursor: i64,
    pub at_ms: i64,
    pub id: String,
    pub record: String,
}

/// One journal line, `{"atMs":…,"record":…}`: the record and when it finished.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Line {
    at_ms: u64,
    record: InvocationRecord,
}

/// Maps a table or journal error to the store error for `action`.
pub fn store<E: Into<TableError>>(action: &'static str) -> impl FnOnce(E) -> RecordError {
    move |e| RecordError::Store { action, source: e.into() }
}

/// How long the indexer sleeps between batches while records arrive; it backs off to
/// [`INDEX_EVERY_MAX`] while none do.
const INDEX_EVERY: Duration = Duration::from_millis(5);
pub const INDEX_EVERY_MAX: Duration = Duration::from_millis(200);
/// How often the indexer runs [`RecordTable::maintain`] (so that no batch pays for it).
pub const MAINTAIN_EVERY: Duration = Duration::from_millis(500);
/// Records waiting beyond this make appenders index themselves: memory stays bounded when the
/// indexer cannot keep up.
const MAX_PENDING: usize = 20_000;

/// Records in a journal in front of a [`RecordTable`].
pub struct JournaledRecords<T: RecordTable> {
    shared: Arc<Shared<T>>,
    /// Dropping it stops the indexer, which indexes what is left first.
    _indexer: Indexer,
}

struct Shared<T> {
    table: T,
    journal: Journal<Row>,
    /// Held while indexing, so that a reader that takes it next sees every record appended before
    /// it asked.
    indexing: Mutex<()>,
}

/// The background thread that indexes journaled records and maintains the table.
struct Indexer {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Indexer {
    fn start<T: RecordTable>(shared: Arc<Shared<T>>) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new().name("vadyl-records-indexer".into()).spawn(move || {
            let mut wait = INDEX_EVERY;
            let mut last_maintained = std::time::Instant::now();
            loop {
                let stopping = !matches!(stopped.recv_timeout(wait), Err(crossbeam_channel::RecvTimeoutError::Timeout));
                match shared.index() {
                    Ok(0) => wait = (wait * 2).min(INDEX_EVERY_MAX),
                    Ok(_) => wait = INDEX_EVERY,
                    Err(e) => {
                        tracing::error!(error = %crate::report::ErrorChain(&e), "cannot index the journaled invocation records; they stay in the journal");
                        wait = INDEX_EVERY_MAX;
                    }
                }
                if stopping {
                    return;
                }
                if last_maintained.elapsed() >= MAINTAIN_EVERY {
                    last_maintained = std::time::Instant::now();
                    shared.table.maintain();
                }
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Row {
    fn of(at_ms: u64, record: &InvocationRecord, text: String) -> Self {
        Row {
            id: record.invocation_id.clone(),
            at_ms: i64::try_from(at_ms).unwrap_or(i64::MAX),
            project: record.project.as_str().to_owned(),
            implementation: record.implementation_id.to_string(),
            operation: record.operation.clone(),
            record: text,
        }
    }
}

impl<T: RecordTable> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.indexing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Indexes everything journaled so far, in one transaction; the number of records.
    fn index(&self) -> Result<usize, RecordError> {
        let _held = self.lock();
        self.index_locked()
    }

    fn index_locked(&self) -> Result<usize, RecordError> {
        let Some(batch) = self.journal.take().map_err(store("seal its journal"))? else { return Ok(0) };
        let n = batch.items.len();
        match self.table.insert(&batch.items) {
            Ok(()) => {
                if let Err(e) = batch.done() {
                    // Harmless: the next open re-indexes the segment, and the insert keeps one row.
                    tracing::warn!(error = %e, "cannot delete an indexed journal segment");
                }
                Ok(n)
            }
            Err(e) => {
                // The records stay journaled and pending, for the next attempt.
                self.journal.restore(batch);
                Err(store("index journaled records")(e))
            }
        }
    }
}

impl<T: RecordTable> JournaledRecords<T> {
    /// The records in `table`, with their journal in `journal_dir`; indexes what a process that is
    /// gone left in the journal.
    pub fn open(table: T, journal_dir: &Path) -> Result<Self, RecordError> {
        recover(&table, journal_dir)?;
        let journal = Journal::open(journal_dir).map_err(store("open its journal"))?;
        let shared = Arc::new(Shared { table, journal, indexing: Mutex::new(()) });
        let indexer = Indexer::start(shared.clone()).map_err(store("start its indexer"))?;
        Ok(Self { shared, _indexer: indexer })
    }

    /// The table, for its backend's own tests.
    #[cfg(test)]
    pub(crate) fn table(&self) -> &T {
        &self.shared.table
    }

    /// Runs `read` once every record appended so far is indexed.
    fn read<R>(&self, read: impl FnOnce(&T) -> Result<R, RecordError>) -> Result<R, RecordError> {
        let _held = self.shared.lock();
        self.shared.index_locked()?;
        read(&self.shared.table)
    }
}

/// Indexes the journal segments that processes which are gone left in `dir`, then deletes them.
fn recover<T: RecordTable>(table: &T, dir: &Path) -> Result<(), RecordError> {
    for orphan in journal::recover(dir).map_err(store("read a journal left by an earlier process"))? {
        let mut rows = Vec::with_capacity(orphan.lines.len());
        let mut unreadable = 0usize;
        for line in &orphan.lines {
            match serde_json::from_slice::<Line>(line) {
                Ok(Line { at_ms, record }) => match serde_json::to_string(&record) {
                    Ok(text) => rows.push(Row::of(at_ms, &record, text)),
                    Err(_) => unreadable += 1,
                },
                Err(_) => unreadable += 1,
            }
        }
        if orphan.torn > 0 {
            // Cut short before its write returned: its invocation was never answered.
            tracing::warn!(segment = %orphan.path().display(), bytes = orphan.torn, "a journaled invocation record was torn (never acknowledged); it is dropped");
        }
        table.insert(&rows).map_err(store("index a recovered journal"))?;
        if unreadable > 0 {
            // Kept for an operator to look at rather than deleted: those lines were acknowledged.
            let aside = orphan.path().with_extension("unreadable");
            tracing::error!(segment = %orphan.path().display(), lines = unreadable, aside = %aside.display(), "journaled invocation records do not decode; the segment is kept aside");
            std::fs::rename(orphan.path(), &aside).map_err(store("set an unreadable journal segment aside"))?;
        } else {
            orphan.done().map_err(store("delete a recovered journal segment"))?;
        }
    }
    Ok(())
}

impl<T: RecordTable> InvocationRecords for JournaledRecords<T> {
    fn append(&self, at_ms: u64, record: &InvocationRecord) -> Result<(), RecordError> {
        let text = serde_json::to_string(record).map_err(store("encode a record"))?;
        let line = format!("{{\"atMs\":{at_ms},\"record\":{text}}}");
        let waiting = self
            .shared
            .journal
            .append(line.as_bytes(), Row::of(at_ms, record, text))
            .map_err(store("write a record"))?;
        if waiting >= MAX_PENDING {
            // The record is durable already; a failure to index is the indexer's to report.
            if let Err(e) = self.shared.index() {
                tracing::warn!(error = %crate::report::ErrorChain(&e), waiting, "cannot index the journaled invocation records");
            }
        }
        Ok(())
    }

    fn list(&self, project: &ProjectId, after: u64, limit: usize) -> Result<Vec<StoredRecord>, RecordError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read(|t| t.list(project.as_str(), after, limit).map_err(store("read records")))?;
        rows.into_iter()
            .map(|r| {
                let record =
                    serde_json::from_str(&r.record).map_err(|source| RecordError::Corrupt { id: r.id, source })?;
                Ok(StoredRecord { cursor: r.cursor as u64, at_ms: r.at_ms as u64, record })
            })
            .collect()
    }

    fn get(&self, id: &str) -> Result<Option<InvocationRecord>, RecordError> {
        let text = self.read(|t| t.get(id).map_err(store("read a record")))?;
        text.map(|t| serde_json::from_str(&t).map_err(|source| RecordError::Corrupt { id: id.to_owned(), source }))
            .transpose()
    }
}

/// A small record with id `id`, for the backends' tests.
#[cfg(test)]
pub(crate) fn sample_record(id: &str) -> InvocationRecord {
    use crate::ids::{ContentHash, ImplementationSource, PublicationVersion};
    InvocationRecord {
        invocation_id: id.to_owned(),
        project: ProjectId::default_project(),
        implementation_id: "journal-test:1.0.0".parse().unwrap(),
        content_hash: ContentHash::of(b"artifact"),
        publication_version: PublicationVersion(1),
        operation: "charge".into(),
        source: ImplementationSource::DeclarativeBundle,
        input: serde_json::json!({"amount": 1}),
        output: Some(serde_json::json!({"ok": true})),
        error: None,
        trace: Default::default(),
        exchanges: vec![],
    }
}
