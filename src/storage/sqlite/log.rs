//! The SQLite event log: the only module that knows SQL.
//!
//! One writer thread owns the write connection (`storage::group_commit`). Appenders hand it their
//! request over a channel and wait for the answer; the writer takes every request that is waiting, runs
//! them in one transaction — each inside its own savepoint, so a refused request writes nothing
//! while its neighbours commit — and syncs once. That is group commit: 64 concurrent writers share
//! one fsync instead of queueing for 64. Readers use their own connections (WAL lets them read
//! while the writer writes).
//!
//! The database itself enforces what it can: triggers refuse UPDATE and DELETE, and the primary key
//! refuses a second row at a position.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::events::append;
use crate::events::envelope::RecordedEvent;
use crate::events::merkle::{self, Hash32};
#[cfg(test)]
use crate::events::store::ExpectedVersion;
use crate::events::store::{AppendOutcome, AppendRequest, EventStore, Head, StoreError};
use crate::events::tiles;
use crate::storage::group_commit::{fail_all, WriteJob, Writer};

/// How hard a commit is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: every commit syncs the WAL; survives power loss.
    Full,
    /// `synchronous=NORMAL`: survives a killed process, may lose the last commits on power loss.
    Normal,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    position        INTEGER PRIMARY KEY,
    event_id        TEXT    NOT NULL UNIQUE,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    type            TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    recorded_at     TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    correlation_id  TEXT,
    causation_id    TEXT,
    payload         TEXT    NOT NULL,
    prev_hash       BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash            BLOB    NOT NULL CHECK (length(hash) = 32),
    UNIQUE (stream_id, stream_version)
);
CREATE TRIGGER IF NOT EXISTS events_refuse_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_refuse_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: DELETE refused'); END;

-- No INSERT trigger: positions and the chain are assigned by the one writer, the primary key makes
-- a position unrepeatable, and `vadyl audit verify` names any row inserted out of band (a gap or a
-- broken link). A per-row trigger here cost a quarter of the append throughput.
-- The Merkle tree's tiles above level 0 (events::tiles): node `idx` of tree height 8·level, written
-- in the transaction that completes it. Derived from the events, so a tampered row cannot forge
-- anything: proofs built from it fail against the signed checkpoints.
CREATE TABLE IF NOT EXISTS merkle_tiles (
    level INTEGER NOT NULL CHECK (level >= 1),
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    hash  BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS merkle_tiles_refuse_update BEFORE UPDATE ON merkle_tiles
BEGIN SELECT RAISE(ABORT, 'the Merkle tiles are append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS merkle_tiles_refuse_delete BEFORE DELETE ON merkle_tiles
BEGIN SELECT RAISE(ABORT, 'the Merkle tiles are append-only: DELETE refused'); END;

CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema', 'vadyl-events/1');
"#;

const SELECT_EVENT: &str = "SELECT position, event_id, stream_id, stream_version, type, schema_version, recorded_at, \
     actor, correlation_id, causation_id, payload, prev_hash, hash FROM events";

pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    /// Only asks `PRAGMA data_version`, which changes when another connection (the writer, or
    /// another process) commits: one connection, so that successive values are comparable.
    watch: Mutex<Connection>,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(conn)
}

fn blob32(position: u64, bytes: Vec<u8>) -> Result<Hash32, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt { position, reason: "a stored hash is not 32 bytes".into() })
}

fn blob32_ref(position: u64, value: rusqlite::types::ValueRef<'_>) -> Result<Hash32, StoreError> {
    value
        .as_blob()
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt { position, reason: "a stored hash is not a 32-byte blob".into() })
}

/// Decodes one `SELECT_EVENT` row. Hashes are copied straight out of SQLite's buffer.
fn row_to_event(row: &rusqlite::Row<'_>) -> Result<RecordedEvent, StoreError> {
    let position = row.get::<_, i64>(0)? as u64;
    Ok(RecordedEvent {
        position,
        event_id: row.get(1)?,
        stream_id: row.get(2)?,
        stream_version: row.get::<_, i64>(3)? as u64,
        event_type: row.get(4)?,
        schema_version: row.get::<_, i64>(5)? as u32,
        recorded_at: row.get(6)?,
        metadata: crate::events::envelope::EventMetadata {
            actor: row.get(7)?,
            correlation_id: row.get(8)?,
            causation_id: row.get(9)?,
        },
        payload: row.get(10)?,
        prev_hash: blob32_ref(position, row.get_ref(11)?)?,
        hash: blob32_ref(position, row.get_ref(12)?)?,
    })
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

impl SqliteStore {
    /// Opens (creating if needed) the log at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let mut conn = open_connection(path)?;
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        // Savepoint journals in memory, not in a temp file per savepoint; a larger page cache for the
        // indexes the writer keeps touching.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
        conn.execute_batch(SCHEMA)?;
        backfill_tiles(&mut conn)?;
        let writer = Writer::start("vadyl-log-writer", move |group| commit_group(&mut conn, group))?;
        let watch = Mutex::new(open_connection(path)?);
        Ok(Self { path: path.to_owned(), writer, readers: Mutex::new(Vec::new()), watch })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = match self.readers.lock().ok().and_then(|mut pool| pool.pop()) {
            Some(c) => c,
            None => open_connection(&self.path)?,
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < 8 {
                pool.push(conn);
            }
        }
        result
    }
}

/// Runs a group of requests in one transaction; a failed commit fails every request in it.
fn commit_group(conn: &mut Connection, group: &[WriteJob]) -> Vec<Result<AppendOutcome, StoreError>> {
    let run = |conn: &mut Connection| -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read the head inside the write lock: another process may have appended since.
        let mut head: Option<Head> = tx
            .query_row("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?
            .map(|(position, hash)| blob32(position, hash).map(|hash| Head { position, hash }))
            .transpose()?;
        let recorded_at = now_rfc3339();
        let mut results = Vec::with_capacity(group.len());
        for job in group {
            tx.execute_batch("SAVEPOINT job")?;
            let before = head;
            match append_one(&tx, &job.request, &mut head, &recorded_at) {
                Ok(outcome) => {
                    tx.execute_batch("RELEASE job")?;
                    results.push(Ok(outcome));
                }
                Err(e) => {
                    tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                    head = before;
                    results.push(Err(e));
                }
            }
        }
        if let Some(head) = head {
            extend_tiles(&tx, head.position)?;
        }
        tx.commit()?;
        Ok(results)
    };
    run(conn).unwrap_or_else(|e| fail_all(group.len(), e))
}

/// Builds the tiles a log written before tiles existed lacks (nothing, for any other log), before
/// anyone reads through this store.
fn backfill_tiles(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let size = tx.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| r.get::<_, i64>(0))?;
    extend_tiles(&tx, size as u64)?;
    tx.commit()?;
    Ok(())
}

/// Writes every tile node a tree of `size` leaves has completed and `merkle_tiles` lacks, level by
/// level: node `k` of tile level `L` is the root of nodes `256k … 256k+255` of level `L-1`.
/// Idempotent, so it also backfills.
fn extend_tiles(tx: &rusqlite::Transaction<'_>, size: u64) -> Result<(), StoreError> {
    let mut have_stmt = tx.prepare_cached("SELECT COALESCE(MAX(idx) + 1, 0) FROM merkle_tiles WHERE level = ?1")?;
    let mut insert = tx.prepare_cached("INSERT INTO merkle_tiles (level, idx, hash) VALUES (?1, ?2, ?3)")?;
    for level in 1..=tiles::MAX_TILE_LEVEL {
        let want = size.checked_shr(tiles::TILE_HEIGHT * u32::from(level)).unwrap_or(0);
        if want == 0 {
            break;
        }
        let have = have_stmt.query_row([level], |r| r.get::<_, i64>(0))? as u64;
        for k in have..want {
            let below = read_tile(tx, level - 1, k, tiles::TILE_WIDTH)?;
            if below.len() as u64 != tiles::TILE_WIDTH {
                return Err(StoreError::Corrupt {
                    position: k * tiles::TILE_WIDTH,
                    reason: format!("tile level {} has a gap under node {k} of level {level}", level - 1),
                });
            }
            insert.execute(params![level, k as i64, &merkle::root(&below)[..]])?;
        }
    }
    Ok(())
}

/// The first `width` hashes of tile `index` at tile `level`: leaf hashes of the events for level
/// 0, stored tile nodes above.
fn read_tile(conn: &Connection, level: u8, index: u64, width: u64) -> Result<Vec<Hash32>, StoreError> {
    let first = index.saturating_mul(tiles::TILE_WIDTH);
    let last = first.saturating_add(width.min(tiles::TILE_WIDTH)).saturating_sub(1);
    let (first, last) = (i64::try_from(first).unwrap_or(i64::MAX), i64::try_from(last).unwrap_or(i64::MAX));
    let mut out = Vec::with_capacity(width as usize);
    if level == 0 {
        let mut stmt = conn
            .prepare_cached("SELECT position, hash FROM events WHERE position BETWEEN ?1 AND ?2 ORDER BY position")?;
        let mut rows = stmt.query(params![first.saturating_add(1), last.saturating_add(1)])?;
        while let Some(row) = rows.next()? {
            let position = row.get::<_, i64>(0)? as u64;
            out.push(merkle::leaf_hash(&blob32_ref(position, row.get_ref(1)?)?));
        }
    } else {
        let mut stmt = conn.prepare_cached(
            "SELECT idx, hash FROM merkle_tiles WHERE level = ?1 AND idx BETWEEN ?2 AND ?3 ORDER BY idx",
        )?;
        let mut rows = stmt.query(params![level, first, last])?;
        while let Some(row) = rows.next()? {
            let idx = row.get::<_, i64>(0)? as u64;
            out.push(blob32_ref(idx, row.get_ref(1)?)?);
        }
    }
    Ok(out)
}

fn append_one(
    tx: &rusqlite::Transaction<'_>,
    request: &AppendRequest,
    head: &mut Option<Head>,
    recorded_at: &str,
) -> Result<AppendOutcome, StoreError> {
    append::validate(request)?;
    // Idempotency: a retry of an append that already committed resends the same ids, so looking up
    // the first one tells a retry from a new append; any other reused id is caught by the UNIQUE
    // constraint on insert (and refused as a conflict).
    let mut find_id = tx.prepare_cached(&format!("{SELECT_EVENT} WHERE event_id = ?1"))?;
    let mut lookup = |id: &str| -> Result<Option<RecordedEvent>, StoreError> {
        let mut rows = find_id.query([id])?;
        rows.next()?.map(row_to_event).transpose()
    };
    let first = request.streams.iter().flat_map(|s| s.events.first()).next();
    if let Some(first) = first {
        if lookup(&first.event_id)?.is_some() {
            let mut stored = HashMap::new();
            for e in request.streams.iter().flat_map(|s| &s.events) {
                if let Some(event) = lookup(&e.event_id)? {
                    stored.insert(e.event_id.clone(), event);
                }
            }
            if let Some(outcome) = append::replay_of(request, |id| stored.get(id))? {
                return Ok(outcome);
            }
        }
    }

    let mut version_of = tx.prepare_cached(
        "SELECT stream_version FROM events WHERE stream_id = ?1 ORDER BY stream_version DESC LIMIT 1",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (position, event_id, stream_id, stream_version, type, schema_version, recorded_at, \
         actor, correlation_id, causation_id, payload, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    let mut events = Vec::with_capacity(request.event_count());
    for s in &request.streams {
        let current = version_of.query_row([&s.stream_id], |r| r.get::<_, i64>(0)).optional()?.map(|v| v as u64);
        let mut stream_version = append::admit(s, current)?;
        for proposed in &s.events {
            stream_version += 1;
            let event = append::seal(proposed, &s.stream_id, stream_version, *head, recorded_at, &request.metadata)?;
            let inserted = insert.execute(params![
                event.position as i64,
                event.event_id,
                event.stream_id,
                stream_version as i64,
                event.event_type,
                event.schema_version,
                event.recorded_at,
                event.metadata.actor,
                event.metadata.correlation_id,
                event.metadata.causation_id,
                event.payload,
                &event.prev_hash[..],
                &event.hash[..],
            ]);
            match inserted {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(f, Some(msg)))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation && msg.contains("event_id") =>
                {
                    return Err(StoreError::EventIdConflict { event_id: event.event_id });
                }
                Err(e) => return Err(e.into()),
            }
            *head = Some(Head { position: event.position, hash: event.hash });
            events.push(event);
        }
    }
    Ok(AppendOutcome { events, idempotent_replay: false })
}

impl EventStore for SqliteStore {
    fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.writer.append(request)
    }

    fn head(&self) -> Result<Option<Head>, StoreError> {
        self.with_reader(|conn| {
            conn.query_row("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?
            .map(|(position, hash)| blob32(position, hash).map(|hash| Head { position, hash }))
            .transpose()
        })
    }

    fn change_marker(&self) -> Result<Option<u64>, StoreError> {
        let conn = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached("PRAGMA data_version")?;
        let version: i64 = stmt.query_row([], |r| r.get(0))?;
        Ok(Some(version as u64))
    }

    fn read_range(
        &self,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(RecordedEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!("{SELECT_EVENT} WHERE position >= ?1 AND position <= ?2 ORDER BY position"))?;
            let to = i64::try_from(to).unwrap_or(i64::MAX);
            let mut rows = stmt.query(params![from as i64, to])?;
            while let Some(row) = rows.next()? {
                visit(row_to_event(row)?)?;
            }
            Ok(())
        })
    }

    fn event_at(&self, position: u64) -> Result<Option<RecordedEvent>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!("{SELECT_EVENT} WHERE position = ?1"))?;
            let mut rows = stmt.query([position as i64])?;
            rows.next()?.map(row_to_event).transpose()
        })
    }

    fn event_by_id(&self, event_id: &str) -> Result<Option<RecordedEvent>, StoreError> {
        self.with_reader(|conn| {
            // `event_id` is UNIQUE, so this is an index lookup.
            let mut stmt = conn.prepare_cached(&format!("{SELECT_EVENT} WHERE event_id = ?1"))?;
            let mut rows = stmt.query([event_id])?;
            rows.next()?.map(row_to_event).transpose()
        })
    }

    fn stream_version(&self, stream_id: &str) -> Result<Option<u64>, StoreError> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT stream_version FROM events WHERE stream_id = ?1 ORDER BY stream_version DESC LIMIT 1",
                    [stream_id],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .map(|v| v as u64))
        })
    }

    fn tile(&self, level: u8, index: u64, width: u64) -> Result<Vec<Hash32>, StoreError> {
        self.with_reader(|conn| read_tile(conn, level, index, width))
    }

    fn event_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash32>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT position, hash FROM events WHERE position BETWEEN ?1 AND ?2 ORDER BY position",
            )?;
            let from = i64::try_from(from).unwrap_or(i64::MAX);
            let to = i64::try_from(to).unwrap_or(i64::MAX);
            let mut rows = stmt.query([from, to])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let position = row.get::<_, i64>(0)? as u64;
                out.push(blob32(position, row.get(1)?)?);
            }
            Ok(out)
        })
    }
}

// The `EventStore` seam knows no database; SQLite's errors become its backend errors here.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Backend(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::log_semantics::{self, append, log_semantics_tests};

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("events.db"), Durability::Normal).unwrap();
        (dir, store)
    }

    fn semantics_store() -> log_semantics::Fixture {
        let (dir, store) = store();
        log_semantics::Fixture { store: std::sync::Arc::new(store), _keep: Box::new(dir) }
    }

    log_semantics_tests!(semantics_store);

    #[test]
    fn the_database_refuses_update_delete_and_rewriting_a_position() {
        let (d, s) = store();
        append(&s, "a", ExpectedVersion::Any, &["1", "2"]).unwrap();
        let conn = Connection::open(d.path().join("events.db")).unwrap();
        let e = conn.execute("UPDATE events SET payload = '{}' WHERE position = 1", []).unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(conn.execute("DELETE FROM events WHERE position = 2", []).is_err());
        let rewrite = conn.execute(
            "INSERT INTO events VALUES (2, 'x', 's', 1, 't', 1, 'now', 'a', NULL, NULL, '{}', zeroblob(32), zeroblob(32))",
            [],
        );
        assert!(rewrite.is_err(), "a position cannot be written twice");
    }

    #[test]
    fn tiles_are_backfilled_for_an_old_log() {
        let (d, s) = store();
        let ids: Vec<String> = (0..70_000).map(|i| format!("e{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        append(&s, "a", ExpectedVersion::Any, &refs).unwrap();
        drop(s);
        // A log from before tiles: the table is rebuilt at open.
        let conn = Connection::open(d.path().join("events.db")).unwrap();
        conn.execute_batch("DROP TABLE merkle_tiles").unwrap();
        drop(conn);
        let s = SqliteStore::open(&d.path().join("events.db"), Durability::Normal).unwrap();
        log_semantics::assert_tree_matches_the_events(&s, 70_000);
        let conn = Connection::open(d.path().join("events.db")).unwrap();
        let e = conn.execute("UPDATE merkle_tiles SET hash = zeroblob(32)", []).unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
    }
}
