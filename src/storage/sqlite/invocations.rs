//! Invocation records: a journal in front of `invocations.db`, operational data beside the log.
//!
//! [`InvocationRecords::append`] returns once the record's line is in the journal
//! (`invocations.journal/`, see `storage::journal`): one `write(2)` on the invocation's path, so
//! a record whose invocation was answered survives the server being killed. A background thread
//! moves journaled records into SQLite in batches (one transaction each, WAL, `synchronous=NORMAL`),
//! and whoever opens the data directory next indexes what a killed process left in its journal.
//! Power loss may take the last records with it, which is the trade the invoke path makes (see
//! ARCHITECTURE.md, Durability); the event log stays `synchronous=FULL`.
//!
//! Reads first index what is pending, so a record is readable in this process as soon as it is
//! appended; another process on the same directory sees it once the indexer has run (at most
//! [`INDEX_EVERY_MAX`] later).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::app::records::{InvocationRecord, InvocationRecords, RecordError, StoredRecord};
use crate::ids::ProjectId;
use crate::storage::journal::{self, Journal};

pub struct SqliteInvocationRecords {
    shared: Arc<Shared>,
    /// Dropping it stops the indexer, which indexes what is left first.
    _indexer: Indexer,
}

struct Shared {
    conn: Mutex<Connection>,
    journal: Journal<Row>,
}

/// A journaled record, as its row will be written.
struct Row {
    id: String,
    at_ms: i64,
    project: String,
    implementation: String,
    operation: String,
    record: String,
}

/// One journal line, `{"atMs":…,"record":…}`: the record and when it finished.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Line {
    at_ms: u64,
    record: InvocationRecord,
}

/// Maps a SQLite or journal error to the store error for `action`.
fn store<E: std::error::Error + Send + Sync + 'static>(action: &'static str) -> impl FnOnce(E) -> RecordError {
    move |e| RecordError::Store { action, source: Box::new(e) }
}

/// How long the indexer sleeps between batches while records arrive; it backs off to
/// [`INDEX_EVERY_MAX`] while none do.
const INDEX_EVERY: Duration = Duration::from_millis(5);
pub const INDEX_EVERY_MAX: Duration = Duration::from_millis(200);
/// How often the indexer moves the WAL into the database (so that no batch pays for it).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// Records waiting beyond this make appenders index themselves: memory stays bounded when the
/// indexer cannot keep up.
const MAX_PENDING: usize = 20_000;

/// The background thread that indexes journaled records and checkpoints the WAL.
struct Indexer {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Indexer {
    fn start(shared: Arc<Shared>) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new().name("vadyl-records-indexer".into()).spawn(move || {
            let mut wait = INDEX_EVERY;
            let mut last_checkpoint = std::time::Instant::now();
            loop {
                let stopping = !matches!(stopped.recv_timeout(wait), Err(crossbeam_channel::RecvTimeoutError::Timeout));
                let mut conn = shared.conn();
                match shared.index(&mut conn) {
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
                if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    last_checkpoint = std::time::Instant::now();
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "cannot checkpoint the invocation records' WAL");
                    }
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

fn insert(conn: &Connection, rows: &[Row]) -> rusqlite::Result<()> {
    // OR IGNORE: recovering a journal whose records were already indexed (a kill between the
    // commit and the segment's deletion) inserts nothing twice.
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO invocations (id, at_ms, project, implementation, operation, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for row in rows {
        stmt.execute(params![row.id, row.at_ms, row.project, row.implementation, row.operation, row.record])?;
    }
    Ok(())
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

impl Shared {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Indexes everything journaled so far, in one transaction; the number of records. Called with
    /// the connection held, so that a reader that holds it next sees every record appended before
    /// it asked.
    fn index(&self, conn: &mut Connection) -> Result<usize, RecordError> {
        let Some(batch) = self.journal.take().map_err(store("seal its journal"))? else { return Ok(0) };
        let n = batch.items.len();
        let written = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            insert(&tx, &batch.items)?;
            tx.commit()
        })();
        match written {
            Ok(()) => {
                if let Err(e) = batch.done() {
                    // Harmless: the next open re-indexes the segment, and OR IGNORE keeps one row.
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

impl SqliteInvocationRecords {
    /// Opens the records at `db`, with their journal in `journal_dir`, and indexes what a process
    /// that is gone left in the journal.
    pub fn open(db: &Path, journal_dir: &Path) -> Result<Self, RecordError> {
        let mut conn = Connection::open(db).map_err(store("open its database"))?;
        let init = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // Checkpoints are the indexer's job.
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
        recover(&mut conn, journal_dir)?;
        let journal = Journal::open(journal_dir).map_err(store("open its journal"))?;
        let shared = Arc::new(Shared { conn: Mutex::new(conn), journal });
        let indexer = Indexer::start(shared.clone()).map_err(store("start its indexer"))?;
        Ok(Self { shared, _indexer: indexer })
    }

    /// Runs `read` on the connection once every record appended so far is indexed.
    fn read<R>(&self, read: impl FnOnce(&Connection) -> Result<R, RecordError>) -> Result<R, RecordError> {
        let mut conn = self.shared.conn();
        self.shared.index(&mut conn)?;
        read(&conn)
    }
}

/// Indexes the journal segments that processes which are gone left in `dir`, then deletes them.
fn recover(conn: &mut Connection, dir: &Path) -> Result<(), RecordError> {
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
        let tx = conn.transaction().map_err(store("index a recovered journal"))?;
        insert(&tx, &rows).map_err(store("index a recovered journal"))?;
        tx.commit().map_err(store("index a recovered journal"))?;
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

impl InvocationRecords for SqliteInvocationRecords {
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
            let mut conn = self.shared.conn();
            if let Err(e) = self.shared.index(&mut conn) {
                tracing::warn!(error = %crate::report::ErrorChain(&e), waiting, "cannot index the journaled invocation records");
            }
        }
        Ok(())
    }

    fn list(&self, project: &ProjectId, after: u64, limit: usize) -> Result<Vec<StoredRecord>, RecordError> {
        self.read(|conn| {
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
        })
    }

    fn get(&self, id: &str) -> Result<Option<InvocationRecord>, RecordError> {
        let text: Option<String> = self.read(|conn| {
            conn.query_row("SELECT record FROM invocations WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(store("read a record"))
        })?;
        text.map(|t| serde_json::from_str(&t).map_err(|source| RecordError::Corrupt { id: id.to_owned(), source }))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ContentHash, ImplementationSource, PublicationVersion};

    fn record(id: &str) -> InvocationRecord {
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

    fn open(dir: &Path) -> SqliteInvocationRecords {
        SqliteInvocationRecords::open(&dir.join("invocations.db"), &dir.join("invocations.journal")).unwrap()
    }

    #[test]
    fn an_appended_record_is_readable_at_once_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let records = open(dir.path());
        for i in 0..5 {
            records.append(1_000 + i, &record(&format!("inv_{i}"))).unwrap();
        }
        assert_eq!(records.get("inv_3").unwrap(), Some(record("inv_3")), "reads index what is pending first");
        let listed = records.list(&ProjectId::default_project(), 0, 10).unwrap();
        let ids: Vec<_> = listed.iter().map(|s| s.record.invocation_id.as_str()).collect();
        assert_eq!(ids, ["inv_0", "inv_1", "inv_2", "inv_3", "inv_4"], "in the order they were appended");
        assert_eq!(listed[4].at_ms, 1_004);
        records.append(2_000, &record("inv_5")).unwrap();
        drop(records);
        let journal = dir.path().join("invocations.journal");
        assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 0, "a closed store leaves no journal behind");
        assert_eq!(open(dir.path()).get("inv_5").unwrap(), Some(record("inv_5")));
    }

    #[test]
    fn a_journal_left_by_a_killed_process_is_indexed_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        // What a killed server leaves: a segment nobody holds, its last line cut short, and one
        // record that the store had already indexed before the kill.
        let line = |id: &str, at: u64| {
            format!("{{\"atMs\":{at},\"record\":{}}}\n", serde_json::to_string(&record(id)).unwrap())
        };
        {
            let records = open(dir.path());
            records.append(5, &record("inv_indexed")).unwrap();
            assert!(records.get("inv_indexed").unwrap().is_some());
        }
        let journal = dir.path().join("invocations.journal");
        let text = format!("{}{}{}{{\"atMs\":9,\"rec", line("inv_indexed", 5), line("inv_a", 7), line("inv_b", 8));
        std::fs::write(journal.join("0190a0a0a0a0a0a0a0a0a0a0a0a0a0a0.ndjson"), text).unwrap();

        let records = open(dir.path());
        assert_eq!(records.get("inv_a").unwrap(), Some(record("inv_a")));
        assert_eq!(records.get("inv_b").unwrap(), Some(record("inv_b")));
        let all = records.list(&ProjectId::default_project(), 0, 10).unwrap();
        assert_eq!(all.len(), 3, "a record indexed before the kill is not indexed twice");
        assert_eq!(
            std::fs::read_dir(&journal).unwrap().count(),
            1,
            "the orphan is gone; this store's own segment remains"
        );
    }

    #[test]
    fn records_that_cannot_be_indexed_stay_pending_and_are_indexed_once_the_database_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let records = open(dir.path());
        records.shared.conn().execute_batch("ALTER TABLE invocations RENAME TO away").unwrap();
        records.append(1, &record("inv_kept")).unwrap();
        assert!(records.get("inv_kept").is_err(), "the index is gone, so the read fails");
        records.shared.conn().execute_batch("ALTER TABLE away RENAME TO invocations").unwrap();
        assert_eq!(records.get("inv_kept").unwrap(), Some(record("inv_kept")), "nothing was lost meanwhile");
    }

    #[test]
    fn a_journal_line_that_does_not_decode_is_kept_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("invocations.journal");
        std::fs::create_dir_all(&journal).unwrap();
        std::fs::write(
            journal.join("0190a0a0a0a0a0a0a0a0a0a0a0a0a0a0.ndjson"),
            "{\"atMs\":1,\"record\":{\"bad\":1}}\n",
        )
        .unwrap();
        let _records = open(dir.path());
        assert!(journal.join("0190a0a0a0a0a0a0a0a0a0a0a0a0a0a0.unreadable").exists());
    }
}
