//! The shared database's table of invocation records: the [`RecordTable`] behind each node's
//! journal (`storage::records`), so that a record is listed and read through every node once its
//! node has indexed it (at most `records::INDEX_EVERY_MAX` after the invocation was answered).

use std::path::Path;

use super::Shared;
use crate::app::records::RecordError;
use crate::storage::records::{store, JournaledRecords, ListedRow, RecordTable, Row, TableError};

/// Held from the first cursor drawn to the commit, so that cursors become visible in order.
const RECORDS_LOCK: i64 = 0x7661_6479_6c00_0002;

/// Invocation records in the shared database, journaled on this node.
pub type PostgresInvocationRecords = JournaledRecords<PostgresRecordTable>;

pub struct PostgresRecordTable {
    db: Shared,
}

/// The records in the database at `url` (migrated by the log), with this node's journal in
/// `journal_dir`.
pub fn open(url: &str, journal_dir: &Path) -> Result<PostgresInvocationRecords, RecordError> {
    let db = Shared::open(url).map_err(store("connect to the database"))?;
    JournaledRecords::open(PostgresRecordTable { db }, journal_dir)
}

impl RecordTable for PostgresRecordTable {
    fn insert(&self, rows: &[Row]) -> Result<(), TableError> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.at_ms).collect();
        let projects: Vec<&str> = rows.iter().map(|r| r.project.as_str()).collect();
        let implementations: Vec<&str> = rows.iter().map(|r| r.implementation.as_str()).collect();
        let operations: Vec<&str> = rows.iter().map(|r| r.operation.as_str()).collect();
        let records: Vec<&str> = rows.iter().map(|r| r.record.as_str()).collect();
        self.db.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RECORDS_LOCK])?;
            tx.execute(
                "INSERT INTO invocations (id, at_ms, project, implementation, operation, record) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                 ON CONFLICT (id) DO NOTHING",
                &[&ids, &at, &projects, &implementations, &operations, &records],
            )?;
            tx.commit()
        })?;
        Ok(())
    }

    fn list(&self, project: &str, after: i64, limit: i64) -> Result<Vec<ListedRow>, TableError> {
        let rows = self.db.with(|c| {
            c.query(
                "SELECT seq, at_ms, id, record FROM invocations WHERE project = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&project, &after, &limit],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(ListedRow { cursor: r.try_get(0)?, at_ms: r.try_get(1)?, id: r.try_get(2)?, record: r.try_get(3)? })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()?)
    }

    fn get(&self, id: &str) -> Result<Option<String>, TableError> {
        let row = self.db.with(|c| c.query_opt("SELECT record FROM invocations WHERE id = $1", &[&id]))?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::records::InvocationRecords;
    use crate::ids::ProjectId;
    use crate::storage::records::sample_record;

    #[test]
    fn a_record_indexed_by_one_node_is_listed_and_read_by_another_once_each_in_order() {
        let server = crate::storage::postgres::server::PgServer::start().unwrap();
        let url = server.database("records").unwrap();
        crate::storage::postgres::schema::migrate(&mut crate::storage::postgres::connect(&url).unwrap()).unwrap();
        let dirs = tempfile::tempdir().unwrap();
        let a = open(&url, &dirs.path().join("a")).unwrap();
        let b = open(&url, &dirs.path().join("b")).unwrap();
        for i in 0..5 {
            a.append(i, &sample_record(&format!("inv_a{i}"))).unwrap();
            b.append(i, &sample_record(&format!("inv_b{i}"))).unwrap();
        }
        // Each node reads its own records at once; the other's once its indexer has run.
        assert_eq!(a.get("inv_a3").unwrap(), Some(sample_record("inv_a3")));
        let started = std::time::Instant::now();
        while b.get("inv_a4").unwrap().is_none() {
            assert!(started.elapsed() < std::time::Duration::from_secs(2), "B never saw A's records");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop((a, b));
        let again = open(&url, &dirs.path().join("a")).unwrap();
        let all = again.list(&ProjectId::default_project(), 0, 100).unwrap();
        let mut ids: Vec<_> = all.iter().map(|r| r.record.invocation_id.clone()).collect();
        assert!(all.windows(2).all(|w| w[1].cursor > w[0].cursor), "cursors increase");
        let page = again.list(&ProjectId::default_project(), all[4].cursor, 100).unwrap();
        assert_eq!(page.len(), 5, "paging by cursor resumes after it");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10, "every record once");
    }
}
