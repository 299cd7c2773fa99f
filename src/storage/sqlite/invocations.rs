//! The SQLite table of invocation records (`invocations.db`, WAL, `synchronous=NORMAL`): the
//! [`RecordTable`] behind the journal of `storage::records`, which holds the durability story.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::app::records::RecordError;
use crate::storage::records::{store, JournaledRecords, ListedRow, RecordTable, Row, TableError};

/// Invocation records on SQLite, journaled.
pub type SqliteInvocationRecords = JournaledRecords<SqliteRecordTable>;

pub struct SqliteRecordTable {
    conn: Mutex<Connection>,
}

impl SqliteRecordTable {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens the records at `db`, with their journal in `journal_dir`, and indexes what a process that
/// is gone left in the journal.
pub fn open(db: &Path, journal_dir: &Path) -> Result<SqliteInvocationRecords, RecordError> {
    let conn = Connection::open(db).map_err(store("open its database"))?;
    let init = |conn: &Connection| -> rusqlite::Result<()> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints are the indexer's job (`maintain`).
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
    JournaledRecords::open(SqliteRecordTable { conn: Mutex::new(conn) }, journal_dir)
}

impl RecordTable for SqliteRecordTable {
    fn insert(&self, rows: &[Row]) -> Result<(), TableError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            // OR IGNORE: a recovered journal's records that were indexed already stay one row.
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO invocations (id, at_ms, project, implementation, operation, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for row in rows {
                stmt.execute(params![row.id, row.at_ms, row.project, row.implementation, row.operation, row.record])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn list(&self, project: &str, after: i64, limit: i64) -> Result<Vec<ListedRow>, TableError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT rowid, at_ms, id, record FROM invocations WHERE project = ?1 AND rowid > ?2 ORDER BY rowid LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![project, after, limit], |r| {
            Ok(ListedRow { cursor: r.get(0)?, at_ms: r.get(1)?, id: r.get(2)?, record: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn get(&self, id: &str) -> Result<Option<String>, TableError> {
        let conn = self.conn();
        Ok(conn.query_row("SELECT record FROM invocations WHERE id = ?1", [id], |r| r.get(0)).optional()?)
    }

    fn maintain(&self) {
        if let Err(e) = self.conn().query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "cannot checkpoint the invocation records' WAL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::records::InvocationRecords;
    use crate::ids::ProjectId;
    use crate::storage::records::sample_record as record;

    fn open(dir: &Path) -> SqliteInvocationRecords {
        super::open(&dir.join("invocations.db"), &dir.join("invocations.journal")).unwrap()
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
        records.table().conn().execute_batch("ALTER TABLE invocations RENAME TO away").unwrap();
        records.append(1, &record("inv_kept")).unwrap();
        assert!(records.get("inv_kept").is_err(), "the index is gone, so the read fails");
        records.table().conn().execute_batch("ALTER TABLE away RENAME TO invocations").unwrap();
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
