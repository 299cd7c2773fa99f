//! The event log on PostgreSQL, shared by every node that connects to the database.
//!
//! **Order.** Appends from every node are serialised by one transaction-scoped advisory lock
//! (`pg_advisory_xact_lock(APPEND_LOCK)`), taken as the transaction's first statement; the head is
//! read after it. PostgreSQL makes a transaction visible before it releases its locks, so the next
//! appender — and every reader — sees the previous append before the next one can commit: positions
//! are gap-free and become visible in position order. No reader ever has to skip a gap by time.
//!
//! **Group commit.** As with SQLite (`storage::group_commit`), one writer thread per node takes every
//! append waiting and commits them in one transaction, in two pipelined round trips whatever the
//! group's size (`writer`): lock, head and what other nodes appended since this node's last group;
//! then one multi-row INSERT, NOTIFY and COMMIT. Each request is decided in Rust against the group's
//! running state (`events::append`), so a refused request writes nothing and needs no savepoint,
//! while its neighbours commit.
//!
//! **Change notices.** The commit carries `NOTIFY vadyl_log`; a listener connection per node bumps
//! the change marker on each notice, and polls the head every `POLL` as a safety net, so a lost
//! notice costs latency, never correctness (a decision always reads the log first anyway).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Statement};

use crate::events::envelope::{EventMetadata, RecordedEvent};
use crate::events::merkle::{self, Hash32};
use crate::events::store::{AppendOutcome, AppendRequest, EventStore, Head, StoreError};
use crate::events::tiles;
use crate::storage::group_commit::Writer;
use crate::storage::sqlite::log::Durability;

use super::writer::{group_committer, WriterConn};

/// Serialises appends across every node; any constant no other application on the database uses.
pub(super) const APPEND_LOCK: i64 = 0x7661_6479_6c00_0001;
pub(super) const CHANNEL: &str = "vadyl_log";
/// How often the listener looks at the head when no notice came.
const POLL: Duration = Duration::from_millis(500);

pub(super) const COLUMNS: &str = "position, event_id, stream_id, stream_version, type, schema_version, recorded_at, \
     actor, correlation_id, causation_id, payload, prev_hash, hash";
pub(super) const HASHES_SQL: &str =
    "SELECT position, hash FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position";
pub(super) const TILES_SQL: &str =
    "SELECT idx, hash FROM merkle_tiles WHERE level = $1 AND idx BETWEEN $2 AND $3 ORDER BY idx";

/// The statements a reader connection prepares once (a text query costs an extra round trip each
/// time). The writer's are its own (`writer`).
struct Prepared {
    head: Statement,
    range: Statement,
    at: Statement,
    by_id: Statement,
    version: Statement,
    hashes: Statement,
    tiles: Statement,
}

impl Prepared {
    fn on(client: &mut Client) -> Result<Self, postgres::Error> {
        Ok(Self {
            head: client.prepare("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")?,
            range: client
                .prepare(&format!("SELECT {COLUMNS} FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position"))?,
            at: client.prepare(&format!("SELECT {COLUMNS} FROM events WHERE position = $1"))?,
            by_id: client.prepare(&format!("SELECT {COLUMNS} FROM events WHERE event_id = $1"))?,
            version: client.prepare(
                "SELECT stream_version FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1",
            )?,
            hashes: client.prepare(HASHES_SQL)?,
            tiles: client.prepare(TILES_SQL)?,
        })
    }
}

/// A connection with its statements.
struct Conn {
    client: Client,
    stmts: Prepared,
}

impl Conn {
    fn open(url: &str) -> Result<Self, StoreError> {
        let mut client = super::connect(url)?;
        let stmts = Prepared::on(&mut client)?;
        Ok(Self { client, stmts })
    }
}

/// The log in a PostgreSQL database.
pub struct PostgresStore {
    url: String,
    writer: Writer,
    readers: Mutex<Vec<Conn>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("database", &super::describe(&self.url)).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url`, applies the migrations this binary knows (or refuses a newer database),
    /// and starts this node's writer and change listener.
    pub fn open(url: &str, durability: Durability) -> Result<Self, StoreError> {
        super::off_runtime(|| Self::open_here(url, durability, true))
    }

    /// [`PostgresStore::open`] for readers that must not write (the audit commands): the database
    /// must already hold a log at this binary's schema version; nothing is migrated.
    pub fn open_existing(url: &str) -> Result<Self, StoreError> {
        super::off_runtime(|| Self::open_here(url, Durability::Full, false))
    }

    fn open_here(url: &str, durability: Durability, migrate: bool) -> Result<Self, StoreError> {
        let mut client = super::connect(url)?;
        let schema = if migrate { super::schema::migrate(&mut client) } else { super::schema::check(&mut client) };
        schema.map_err(|e| StoreError::Backend(Box::new(e)))?;
        let stmts = Prepared::on(&mut client)?;
        let mut conn = Conn { client, stmts };
        check_tiles(&mut conn)?;
        let changes = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let writer_conn = WriterConn::open(url, durability)?;
        let writer = Writer::start("vadyl-pg-writer", group_committer(writer_conn, changes.clone()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (listen_url, listen_changes, listen_stop) = (url.to_owned(), changes.clone(), stop.clone());
        std::thread::Builder::new()
            .name("vadyl-pg-listen".into())
            .spawn(move || listen_loop(&listen_url, &listen_changes, &listen_stop))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        // The connection that migrated becomes the first reader.
        Ok(Self { url: url.to_owned(), writer, readers: Mutex::new(vec![conn]), changes, stop })
    }

    /// `f` on a pooled reader connection, off any async runtime (see [`super::off_runtime`]).
    fn with_reader<T: Send>(&self, f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send) -> Result<T, StoreError> {
        super::off_runtime(|| self.with_conn(f))
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = match self.readers.lock().ok().and_then(|mut pool| pool.pop()) {
            Some(c) if !c.client.is_closed() => c,
            _ => Conn::open(&self.url)?,
        };
        let result = f(&mut conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < 8 && !conn.client.is_closed() {
                pool.push(conn);
            }
        }
        result
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        let readers = std::mem::take(self.readers.get_mut().unwrap_or_else(|p| p.into_inner()));
        super::off_runtime(move || drop(readers));
        // The writer stops when its field drops, after this.
        self.stop.store(true, Ordering::Release);
    }
}

fn bump(changes: &tokio::sync::watch::Sender<u64>) {
    changes.send_modify(|v| *v = v.wrapping_add(1));
}

/// Refuses to start on a log whose stored tiles do not match its size (a node that wrote events
/// without them): the invariant [`extend_tiles`] relies on.
fn check_tiles(conn: &mut Conn) -> Result<(), StoreError> {
    let size =
        conn.client.query_opt(&conn.stmts.head, &[])?.map(|r| head_of(&r)).transpose()?.map_or(0, |h| h.position);
    for level in 1..=tiles::MAX_TILE_LEVEL {
        let want = size.checked_shr(tiles::TILE_HEIGHT * u32::from(level)).unwrap_or(0);
        let have: i64 = conn
            .client
            .query_one("SELECT COUNT(*) FROM merkle_tiles WHERE level = $1", &[&i32::from(level)])?
            .try_get(0)?;
        if have as u64 != want {
            return Err(StoreError::Corrupt {
                position: size,
                reason: format!("tile level {level} holds {have} nodes where a log of {size} events has {want}"),
            });
        }
        if want == 0 {
            break;
        }
    }
    Ok(())
}

/// The query bounds of tile `index` of `level`, `width` entries wide: positions for level 0 (the
/// events' hashes), node indices above.
pub(super) fn tile_bounds(level: u8, index: u64, width: u64) -> (i64, i64) {
    let first = index.saturating_mul(tiles::TILE_WIDTH);
    let last = first.saturating_add(width.min(tiles::TILE_WIDTH)).saturating_sub(1);
    let (first, last) = (i64::try_from(first).unwrap_or(i64::MAX), i64::try_from(last).unwrap_or(i64::MAX));
    if level == 0 {
        (first.saturating_add(1), last.saturating_add(1))
    } else {
        (first, last)
    }
}

/// A tile's nodes from the rows of [`HASHES_SQL`] (level 0: leaf hashes of the events) or
/// [`TILES_SQL`] (above).
pub(super) fn tile_from_rows(level: u8, rows: &[postgres::Row]) -> Result<Vec<Hash32>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let at = row.try_get::<_, i64>(0)? as u64;
        let hash = hash32(at, row.try_get(1)?)?;
        out.push(if level == 0 { merkle::leaf_hash(&hash) } else { hash });
    }
    Ok(out)
}

fn read_tile(
    client: &mut Client,
    stmts: &Prepared,
    level: u8,
    index: u64,
    width: u64,
) -> Result<Vec<Hash32>, StoreError> {
    let (first, last) = tile_bounds(level, index, width);
    let rows = if level == 0 {
        client.query(&stmts.hashes, &[&first, &last])?
    } else {
        client.query(&stmts.tiles, &[&i32::from(level), &first, &last])?
    };
    tile_from_rows(level, &rows)
}

fn hash32(position: u64, bytes: &[u8]) -> Result<Hash32, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt { position, reason: "a stored hash is not 32 bytes".into() })
}

fn head_of(row: &postgres::Row) -> Result<Head, StoreError> {
    head_of_columns(row.try_get(0)?, row.try_get(1)?)
}

pub(super) fn head_of_columns(position: i64, hash: &[u8]) -> Result<Head, StoreError> {
    let position = position as u64;
    Ok(Head { position, hash: hash32(position, hash)? })
}

pub(super) fn row_to_event(row: &postgres::Row) -> Result<RecordedEvent, StoreError> {
    let position = row.try_get::<_, i64>(0)? as u64;
    Ok(RecordedEvent {
        position,
        event_id: row.try_get(1)?,
        stream_id: row.try_get(2)?,
        stream_version: row.try_get::<_, i64>(3)? as u64,
        event_type: row.try_get(4)?,
        schema_version: row.try_get::<_, i32>(5)? as u32,
        recorded_at: row.try_get(6)?,
        metadata: EventMetadata {
            actor: row.try_get(7)?,
            correlation_id: row.try_get(8)?,
            causation_id: row.try_get(9)?,
        },
        payload: row.try_get(10)?,
        prev_hash: hash32(position, row.try_get(11)?)?,
        hash: hash32(position, row.try_get(12)?)?,
    })
}

/// Bumps `changes` on every notice on [`CHANNEL`], and whenever the head moved without one; keeps
/// reconnecting until `stop`.
fn listen_loop(url: &str, changes: &tokio::sync::watch::Sender<u64>, stop: &AtomicBool) {
    let mut last_head: Option<i64> = None;
    while !stop.load(Ordering::Acquire) {
        let mut client = match super::connect(url)
            .and_then(|mut c| Ok(c.batch_execute(&format!("LISTEN {CHANNEL}")).map(|_| c)?))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %crate::report::ErrorChain(&e), "the log's change listener cannot connect; retrying");
                std::thread::sleep(POLL);
                continue;
            }
        };
        // Notices may have been missed while disconnected.
        bump(changes);
        while !stop.load(Ordering::Acquire) && !client.is_closed() {
            let mut notified = false;
            {
                let mut notifications = client.notifications();
                let mut it = notifications.timeout_iter(POLL);
                while let Ok(Some(_)) = it.next() {
                    notified = true;
                }
            }
            if notified {
                bump(changes);
                continue;
            }
            match client.query_one("SELECT COALESCE(MAX(position), 0) FROM events", &[]).and_then(|r| r.try_get(0)) {
                Ok(head) => {
                    if last_head.is_some_and(|h| h != head) {
                        bump(changes);
                    }
                    last_head = Some(head);
                }
                Err(_) => break,
            }
        }
    }
}

impl EventStore for PostgresStore {
    fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.writer.append(request)
    }

    fn head(&self) -> Result<Option<Head>, StoreError> {
        self.with_reader(|c| c.client.query_opt(&c.stmts.head, &[])?.map(|r| head_of(&r)).transpose())
    }

    fn change_marker(&self) -> Result<Option<u64>, StoreError> {
        Ok(Some(*self.changes.borrow()))
    }

    fn subscribe_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }

    fn read_range(
        &self,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(RecordedEvent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (from, to) = (i64::try_from(from).unwrap_or(i64::MAX), i64::try_from(to).unwrap_or(i64::MAX));
        let stream = |c: &mut Conn, visit: &mut dyn FnMut(RecordedEvent) -> Result<bool, StoreError>| {
            let params: [&(dyn postgres::types::ToSql + Sync); 2] = [&from, &to];
            let mut rows = c.client.query_raw(&c.stmts.range, params)?;
            while let Some(row) = rows.next()? {
                if !visit(row_to_event(&row)?)? {
                    break;
                }
            }
            Ok(())
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return self.with_conn(|c| stream(c, &mut |e| visit(e).map(|()| true)));
        }
        // Inside a runtime the rows are read on a thread of their own and handed over as they
        // arrive, so a long range is streamed, not collected; a visitor that stops ends the query.
        let (tx, rx) = crossbeam_channel::bounded::<RecordedEvent>(1024);
        std::thread::scope(|s| {
            let producer = s.spawn(move || self.with_conn(|c| stream(c, &mut |e| Ok(tx.send(e).is_ok()))));
            let mut visited = Ok(());
            for event in rx.iter() {
                if let Err(e) = visit(event) {
                    visited = Err(e);
                    break;
                }
            }
            drop(rx);
            let produced = producer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            visited.and(produced)
        })
    }

    fn event_at(&self, position: u64) -> Result<Option<RecordedEvent>, StoreError> {
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        self.with_reader(|c| c.client.query_opt(&c.stmts.at, &[&position])?.map(|r| row_to_event(&r)).transpose())
    }

    fn event_by_id(&self, event_id: &str) -> Result<Option<RecordedEvent>, StoreError> {
        self.with_reader(|c| c.client.query_opt(&c.stmts.by_id, &[&event_id])?.map(|r| row_to_event(&r)).transpose())
    }

    fn stream_version(&self, stream_id: &str) -> Result<Option<u64>, StoreError> {
        self.with_reader(|c| {
            Ok(c.client
                .query_opt(&c.stmts.version, &[&stream_id])?
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?
                .map(|v| v as u64))
        })
    }

    fn event_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash32>, StoreError> {
        self.with_reader(|c| {
            let (from, to) = (i64::try_from(from).unwrap_or(i64::MAX), i64::try_from(to).unwrap_or(i64::MAX));
            let mut out = Vec::new();
            for row in c.client.query(&c.stmts.hashes, &[&from, &to])? {
                let position = row.try_get::<_, i64>(0)? as u64;
                out.push(hash32(position, row.try_get(1)?)?);
            }
            Ok(out)
        })
    }

    fn tile(&self, level: u8, index: u64, width: u64) -> Result<Vec<Hash32>, StoreError> {
        self.with_reader(|c| read_tile(&mut c.client, &c.stmts, level, index, width))
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        Self::Backend(Box::new(e))
    }
}

impl From<super::ConnectError> for StoreError {
    fn from(e: super::ConnectError) -> Self {
        match e {
            super::ConnectError::Postgres(e) => Self::Backend(Box::new(e)),
            other => Self::Backend(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::store::ExpectedVersion;
    use crate::storage::log_semantics::{self, append, log_semantics_tests};
    use crate::storage::postgres::server::PgServer;

    fn database(name: &str) -> (PgServer, String) {
        let server = PgServer::start().unwrap();
        let url = server.database(name).unwrap();
        (server, url)
    }

    fn semantics_store() -> log_semantics::Fixture {
        let (server, url) = database("log");
        log_semantics::Fixture {
            store: Arc::new(PostgresStore::open(&url, Durability::Normal).unwrap()),
            _keep: Box::new(server),
        }
    }

    log_semantics_tests!(semantics_store);

    #[test]
    fn the_database_refuses_changes_to_history_even_from_its_owner() {
        let (_server, url) = database("append_only");
        let s = PostgresStore::open(&url, Durability::Normal).unwrap();
        // Enough events for a stored tile node, so the row triggers on tiles have a row to guard.
        let ids: Vec<String> = (1..=300).map(|i| i.to_string()).collect();
        append(&s, "a", ExpectedVersion::Any, &ids.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let mut owner = crate::storage::postgres::connect(&url).unwrap();
        for sql in [
            "UPDATE events SET payload = '{}' WHERE position = 1",
            "DELETE FROM events WHERE position = 2",
            "TRUNCATE events",
            "UPDATE merkle_tiles SET hash = hash",
            "TRUNCATE merkle_tiles",
        ] {
            let e = owner.batch_execute(sql).unwrap_err();
            assert!(crate::report::ErrorChain(&e).to_string().contains("append-only"), "{sql}: {e}");
        }
        let rewrite = owner.batch_execute(
            "INSERT INTO events VALUES (2, 'x', 's', 1, 't', 1, 'now', 'a', NULL, NULL, '{}', \
             decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'))",
        );
        assert!(rewrite.is_err(), "a position cannot be written twice");
        // A node role with only the documented grants cannot change history either, trigger or not.
        owner
            .batch_execute(
                "CREATE ROLE vadyl_node LOGIN; GRANT SELECT, INSERT ON events, merkle_tiles TO vadyl_node; \
                 ALTER TABLE events DISABLE TRIGGER events_append_only",
            )
            .unwrap();
        let node_url = url.replace("postgres://vadyl@", "postgres://vadyl_node@");
        let mut node = crate::storage::postgres::connect(&node_url).unwrap();
        let e = node.batch_execute("UPDATE events SET payload = '{}' WHERE position = 1").unwrap_err();
        assert!(crate::report::ErrorChain(&e).to_string().contains("permission denied"), "{e}");
        let e = node.batch_execute("ALTER TABLE events ENABLE TRIGGER events_append_only").unwrap_err();
        assert!(crate::report::ErrorChain(&e).to_string().contains("owner"), "{e}");
    }

    #[test]
    fn a_database_migrated_by_a_newer_binary_is_refused() {
        let (_server, url) = database("newer");
        drop(PostgresStore::open(&url, Durability::Normal).unwrap());
        let mut owner = crate::storage::postgres::connect(&url).unwrap();
        owner.batch_execute("INSERT INTO vadyl_schema (version) VALUES (999)").unwrap();
        let e = PostgresStore::open(&url, Durability::Normal).unwrap_err();
        let message = crate::report::ErrorChain(&e).to_string();
        assert!(message.contains("999") && message.contains("newer"), "{message}");
        // Opening again after an older open changed nothing: migrations are applied once.
        let versions: i64 = owner.query_one("SELECT count(*) FROM vadyl_schema", &[]).unwrap().get(0);
        assert_eq!(versions as usize, crate::storage::postgres::schema::MIGRATIONS.len() + 1);
    }

    #[test]
    fn two_stores_on_one_database_share_one_order_and_see_each_others_appends() {
        let (_server, url) = database("two");
        let (a, b) = (
            PostgresStore::open(&url, Durability::Normal).unwrap(),
            PostgresStore::open(&url, Durability::Normal).unwrap(),
        );
        let before = b.change_marker().unwrap();
        append(&a, "s", ExpectedVersion::NoStream, &["1"]).unwrap();
        let notified = std::time::Instant::now();
        while b.change_marker().unwrap() == before {
            assert!(notified.elapsed() < std::time::Duration::from_secs(2), "B never heard of A's commit");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // B decides on what A wrote: its expected version is checked against A's append.
        let e = append(&b, "s", ExpectedVersion::NoStream, &["2"]).unwrap_err();
        assert!(matches!(e, StoreError::WrongExpectedVersion { actual: Some(1), .. }), "{e}");
        let out = append(&b, "s", ExpectedVersion::Exact(1), &["2"]).unwrap();
        assert_eq!(out.events[0].prev_hash, a.event_at(1).unwrap().unwrap().hash, "one chain");
        assert!(append(&a, "s", ExpectedVersion::Any, &["2"]).unwrap().idempotent_replay, "ids are global");
    }

    #[test]
    fn a_writer_that_remembers_stream_versions_catches_up_on_another_nodes_appends() {
        let (_server, url) = database("known");
        let (a, b) = (
            PostgresStore::open(&url, Durability::Normal).unwrap(),
            PostgresStore::open(&url, Durability::Normal).unwrap(),
        );
        append(&b, "s", ExpectedVersion::NoStream, &["b1"]).unwrap();
        append(&a, "s", ExpectedVersion::Exact(1), &["a2"]).unwrap();
        // B remembered s at version 1; the catch-up under the lock tells it A moved s to 2.
        let e = append(&b, "s", ExpectedVersion::Exact(1), &["b-stale"]).unwrap_err();
        assert!(matches!(e, StoreError::WrongExpectedVersion { actual: Some(2), .. }), "{e}");
        assert_eq!(append(&b, "s", ExpectedVersion::Exact(2), &["b3"]).unwrap().events[0].stream_version, 3);
        // More appends than a catch-up reads: B forgets what it knew and reads the versions afresh.
        let ids: Vec<String> = (0..10_050).map(|i| format!("bulk{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        append(&a, "t", ExpectedVersion::Any, &refs).unwrap();
        append(&a, "s", ExpectedVersion::Exact(3), &["a4"]).unwrap();
        let e = append(&b, "s", ExpectedVersion::Exact(3), &["b-stale-2"]).unwrap_err();
        assert!(matches!(e, StoreError::WrongExpectedVersion { actual: Some(4), .. }), "{e}");
        let out = append(&b, "s", ExpectedVersion::Exact(4), &["b5"]).unwrap();
        assert_eq!((out.events[0].stream_version, out.events[0].position), (5, 10_055));
        // A retry refused by its expected version is answered with what it stored.
        let again = append(&b, "s", ExpectedVersion::Exact(4), &["b5"]).unwrap();
        assert!(again.idempotent_replay && again.events[0].position == 10_055);
    }

    #[test]
    fn tile_nodes_written_by_two_interleaved_writers_are_the_roots_of_what_they_cover() {
        let (_server, url) = database("interleaved");
        let (a, b) = (
            PostgresStore::open(&url, Durability::Normal).unwrap(),
            PostgresStore::open(&url, Durability::Normal).unwrap(),
        );
        // A writes long runs (its nodes computed from the leaves it remembers), B short ones in
        // between (A then reads what B appended), past the first level-2 node.
        let mut n = 0usize;
        let mut round = 0;
        while n <= 66_000 {
            let long = 1_000 + round * 37 % 250;
            let ids: Vec<String> = (0..long).map(|i| format!("a{round}-{i}")).collect();
            append(&a, "a", ExpectedVersion::Any, &ids.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            for k in 0..3 {
                // Several in a row from A too, so that A goes the one-round-trip way between.
                append(&a, "a", ExpectedVersion::Any, &[&format!("a{round}-x{k}")]).unwrap();
            }
            let short: Vec<String> = (0..1 + round % 3).map(|i| format!("b{round}-{i}")).collect();
            append(&b, "b", ExpectedVersion::Any, &short.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            n += long + 3 + short.len();
            round += 1;
        }
        let size = a.head_position().unwrap();
        assert_eq!(size, n as u64);
        let level1 = a.tile(1, 0, size >> tiles::TILE_HEIGHT).unwrap();
        assert_eq!(level1.len() as u64, (size >> tiles::TILE_HEIGHT).min(tiles::TILE_WIDTH));
        for (k, node) in level1.iter().enumerate() {
            let leaves = a.tile(0, k as u64, tiles::TILE_WIDTH).unwrap();
            assert_eq!(*node, merkle::root(&leaves), "level-1 node {k}");
        }
        let level2 = a.tile(2, 0, 1).unwrap();
        assert_eq!(level2, vec![merkle::root(&level1)]);
    }
}
