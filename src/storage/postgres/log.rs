//! The event log on PostgreSQL, shared by every node that connects to the database.
//!
//! **Order.** Appends from every node are serialised by one transaction-scoped advisory lock
//! (`pg_advisory_xact_lock(APPEND_LOCK)`), taken as the transaction's first statement; the head is
//! read after it. PostgreSQL makes a transaction visible before it releases its locks, so the next
//! appender — and every reader — sees the previous append before the next one can commit: positions
//! are gap-free and become visible in position order. No reader ever has to skip a gap by time.
//!
//! **Group commit.** As with SQLite (`storage::group_commit`), one writer thread per node takes every
//! append waiting and commits them in one transaction, in a fixed number of round trips whatever the
//! group's size: lock, head, one look-up of every event id and one of every stream's version, one
//! multi-row INSERT, then NOTIFY and COMMIT together. Each request is decided in Rust against the
//! group's running state (`events::append`), so a refused request writes nothing and needs no
//! savepoint, while its neighbours commit.
//!
//! **Change notices.** The commit carries `NOTIFY vadyl_log`; a listener connection per node bumps
//! the change marker on each notice, and polls the head every `POLL` as a safety net, so a lost
//! notice costs latency, never correctness (a decision always reads the log first anyway).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Statement};

use crate::events::append;
use crate::events::envelope::{EventMetadata, RecordedEvent};
use crate::events::merkle::{self, Hash32};
use crate::events::store::{AppendOutcome, AppendRequest, EventStore, Head, StoreError};
use crate::events::tiles;
use crate::storage::group_commit::{fail_all, WriteJob, Writer};
use crate::storage::sqlite::log::{now_rfc3339, Durability};

/// Serialises appends across every node; any constant no other application on the database uses.
const APPEND_LOCK: i64 = 0x7661_6479_6c00_0001;
const CHANNEL: &str = "vadyl_log";
/// How often the listener looks at the head when no notice came.
const POLL: Duration = Duration::from_millis(500);

const COLUMNS: &str = "position, event_id, stream_id, stream_version, type, schema_version, recorded_at, \
     actor, correlation_id, causation_id, payload, prev_hash, hash";

/// The statements one connection prepares once (a text query costs an extra round trip each time).
struct Prepared {
    head: Statement,
    by_ids: Statement,
    look: Statement,
    insert: Statement,
    range: Statement,
    at: Statement,
    by_id: Statement,
    version: Statement,
    hashes: Statement,
    tiles: Statement,
    insert_tile: Statement,
}

impl Prepared {
    fn on(client: &mut Client) -> Result<Self, postgres::Error> {
        Ok(Self {
            head: client.prepare("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")?,
            // One index probe per id, whatever the planner thinks of a young table's statistics
            // (`event_id = ANY($1)` was planned as a sequential scan: 5 ms at 5,000 events).
            by_ids: client.prepare(&format!(
                "SELECT e.* FROM unnest($1::text[]) AS i(id) CROSS JOIN LATERAL \
                 (SELECT {COLUMNS} FROM events WHERE event_id = i.id) AS e"
            ))?,
            // The head, every stream's version and which of the given ids are stored, in one
            // statement and so from one snapshot: rows tagged 0 (head), 1 (stream), 2 (stored id).
            look: client.prepare(
                "SELECT 0, h.position, h.hash, NULL::text FROM \
                   (SELECT position, hash FROM events ORDER BY position DESC LIMIT 1) AS h \
                 UNION ALL SELECT 1, (SELECT e.stream_version FROM events e WHERE e.stream_id = s.id \
                   ORDER BY e.stream_version DESC LIMIT 1), NULL, s.id FROM unnest($1::text[]) AS s(id) \
                 UNION ALL SELECT 2, e.position, NULL, e.event_id FROM unnest($2::text[]) AS i(id) \
                   CROSS JOIN LATERAL (SELECT position, event_id FROM events WHERE event_id = i.id) AS e",
            )?,
            insert: client.prepare(&format!(
                "INSERT INTO events ({COLUMNS}) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], \
                 $4::bigint[], $5::text[], $6::integer[], $7::text[], $8::text[], $9::text[], $10::text[], \
                 $11::text[], $12::bytea[], $13::bytea[])"
            ))?,
            range: client
                .prepare(&format!("SELECT {COLUMNS} FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position"))?,
            at: client.prepare(&format!("SELECT {COLUMNS} FROM events WHERE position = $1"))?,
            by_id: client.prepare(&format!("SELECT {COLUMNS} FROM events WHERE event_id = $1"))?,
            version: client.prepare(
                "SELECT stream_version FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1",
            )?,
            hashes: client
                .prepare("SELECT position, hash FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position")?,
            tiles: client.prepare(
                "SELECT idx, hash FROM merkle_tiles WHERE level = $1 AND idx BETWEEN $2 AND $3 ORDER BY idx",
            )?,
            insert_tile: client.prepare("INSERT INTO merkle_tiles (level, idx, hash) VALUES ($1, $2, $3)")?,
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
        if durability == Durability::Normal {
            // Survives a killed node or client; the last commits may be lost if the server crashes.
            client.batch_execute("SET synchronous_commit = off")?;
        }
        let stmts = Prepared::on(&mut client)?;
        let mut writer_conn = Conn { client, stmts };
        check_tiles(&mut writer_conn)?;
        let changes = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let writer = Writer::start(
            "vadyl-pg-writer",
            group_committer(writer_conn, url.to_owned(), durability, changes.clone()),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let (listen_url, listen_changes, listen_stop) = (url.to_owned(), changes.clone(), stop.clone());
        std::thread::Builder::new()
            .name("vadyl-pg-listen".into())
            .spawn(move || listen_loop(&listen_url, &listen_changes, &listen_stop))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self { url: url.to_owned(), writer, readers: Mutex::new(Vec::new()), changes, stop })
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

/// Commits each group on `conn`, reconnecting first when the server has closed it, and tells this
/// node's readers that the log may have moved.
fn group_committer(
    mut conn: Conn,
    url: String,
    durability: Durability,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
) -> impl FnMut(&[WriteJob]) -> Vec<Result<AppendOutcome, StoreError>> {
    move |group| {
        if conn.client.is_closed() {
            match reconnect(&url, durability) {
                Ok(c) => conn = c,
                Err(e) => return fail_all(group.len(), e),
            }
        }
        let results = commit_group(&mut conn, group);
        bump(&changes);
        results
    }
}

fn reconnect(url: &str, durability: Durability) -> Result<Conn, StoreError> {
    let mut conn = Conn::open(url)?;
    if durability == Durability::Normal {
        conn.client.batch_execute("SET synchronous_commit = off")?;
    }
    Ok(conn)
}

/// The group's running state: what the requests decided so far see.
struct GroupState {
    head: Option<Head>,
    versions: HashMap<String, Option<u64>>,
    stored: HashMap<String, RecordedEvent>,
    new_events: Vec<RecordedEvent>,
}

/// Commits `group`. Only the first event id of each request is looked up (a retry resends every
/// id, so the first tells a retry from a new append); another reused id makes the INSERT fail on
/// the unique index, and the group is then decided again with every id looked up, which refuses
/// just the request that reused it.
fn commit_group(conn: &mut Conn, group: &[WriteJob]) -> Vec<Result<AppendOutcome, StoreError>> {
    let mut outcome = try_group(conn, group, false);
    if matches!(&outcome, Err(e) if is_event_id_violation(e)) {
        rollback(conn);
        outcome = try_group(conn, group, true);
    }
    outcome.unwrap_or_else(|e| {
        rollback(conn);
        fail_all(group.len(), e)
    })
}

fn rollback(conn: &mut Conn) {
    if !conn.client.is_closed() {
        let _ = conn.client.batch_execute("ROLLBACK");
    }
}

fn is_event_id_violation(e: &StoreError) -> bool {
    let StoreError::Backend(source) = e else { return false };
    source.downcast_ref::<postgres::Error>().and_then(|e| e.as_db_error()).is_some_and(|db| {
        db.code() == &postgres::error::SqlState::UNIQUE_VIOLATION && db.constraint() == Some("events_event_id_key")
    })
}

fn try_group(
    conn: &mut Conn,
    group: &[WriteJob],
    probe_all: bool,
) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
    conn.client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({APPEND_LOCK})"))?;
    let Conn { client, stmts } = conn;
    let firsts: Vec<&str> = group
        .iter()
        .filter_map(|j| j.request.streams.iter().flat_map(|s| s.events.first()).next())
        .map(|e| e.event_id.as_str())
        .collect();
    let mut streams: Vec<&str> =
        group.iter().flat_map(|j| j.request.streams.iter().map(|s| s.stream_id.as_str())).collect();
    streams.sort_unstable();
    streams.dedup();
    // Read after the lock: every append that held it before is visible now.
    let (mut head, mut versions, mut found) = (None::<Head>, HashMap::new(), std::collections::HashSet::new());
    for row in client.query(&stmts.look, &[&streams, &firsts])? {
        match row.try_get::<_, i32>(0)? {
            0 => head = Some(head_of_columns(row.try_get(1)?, row.try_get(2)?)?),
            1 => {
                let version: Option<i64> = row.try_get(1)?;
                versions.insert(row.try_get::<_, String>(3)?, version.map(|v| v as u64));
            }
            _ => {
                found.insert(row.try_get::<_, String>(3)?);
            }
        }
    }
    // The stored events of every request that is a retry (or of all, when asked), in full.
    let probe: Vec<&str> = group
        .iter()
        .filter(|j| {
            probe_all
                || j.request
                    .streams
                    .iter()
                    .flat_map(|s| s.events.first())
                    .next()
                    .is_some_and(|e| found.contains(&e.event_id))
        })
        .flat_map(|j| j.request.streams.iter().flat_map(|s| &s.events))
        .map(|e| e.event_id.as_str())
        .collect();
    let mut stored = HashMap::new();
    if !probe.is_empty() {
        for row in client.query(&stmts.by_ids, &[&probe])? {
            let event = row_to_event(&row)?;
            stored.insert(event.event_id.clone(), event);
        }
    }
    let old_size = head.map_or(0, |h| h.position);
    let mut state = GroupState { head, versions, stored, new_events: Vec::new() };
    let recorded_at = now_rfc3339();
    let results: Vec<_> = group.iter().map(|job| decide_one(&mut state, &job.request, &recorded_at)).collect();
    if !state.new_events.is_empty() {
        insert_events(client, &stmts.insert, &state.new_events)?;
    }
    let new_size = state.head.map_or(0, |h| h.position);
    extend_tiles(client, stmts, old_size, new_size)?;
    client.batch_execute(&format!("SELECT pg_notify('{CHANNEL}', '{new_size}'); COMMIT"))?;
    Ok(results)
}

/// Decides one request against the group's state; on success the state holds its events.
fn decide_one(state: &mut GroupState, request: &AppendRequest, recorded_at: &str) -> Result<AppendOutcome, StoreError> {
    append::validate(request)?;
    if let Some(outcome) = append::replay_of(request, &state.stored)? {
        return Ok(outcome);
    }
    let mut head = state.head;
    let mut events = Vec::with_capacity(request.event_count());
    let mut new_versions = Vec::with_capacity(request.streams.len());
    for s in &request.streams {
        let current = state.versions.get(&s.stream_id).copied().flatten();
        if !s.expected.admits(current) {
            return Err(StoreError::WrongExpectedVersion {
                stream_id: s.stream_id.clone(),
                expected: s.expected,
                actual: current,
            });
        }
        let mut stream_version = current.unwrap_or(0);
        for proposed in &s.events {
            stream_version += 1;
            let event = append::seal(proposed, &s.stream_id, stream_version, head, recorded_at, &request.metadata)?;
            head = Some(Head { position: event.position, hash: event.hash });
            events.push(event);
        }
        new_versions.push((s.stream_id.clone(), stream_version));
    }
    state.head = head;
    state.versions.extend(new_versions.into_iter().map(|(s, v)| (s, Some(v))));
    for e in &events {
        state.stored.insert(e.event_id.clone(), e.clone());
    }
    state.new_events.extend(events.iter().cloned());
    Ok(AppendOutcome { events, idempotent_replay: false })
}

fn insert_events(client: &mut Client, insert: &Statement, events: &[RecordedEvent]) -> Result<(), StoreError> {
    let positions: Vec<i64> = events.iter().map(|e| e.position as i64).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    let versions: Vec<i64> = events.iter().map(|e| e.stream_version as i64).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let schemas: Vec<i32> = events.iter().map(|e| e.schema_version as i32).collect();
    let times: Vec<&str> = events.iter().map(|e| e.recorded_at.as_str()).collect();
    let actors: Vec<&str> = events.iter().map(|e| e.metadata.actor.as_str()).collect();
    let correlations: Vec<Option<&str>> = events.iter().map(|e| e.metadata.correlation_id.as_deref()).collect();
    let causations: Vec<Option<&str>> = events.iter().map(|e| e.metadata.causation_id.as_deref()).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    let prevs: Vec<&[u8]> = events.iter().map(|e| &e.prev_hash[..]).collect();
    let hashes: Vec<&[u8]> = events.iter().map(|e| &e.hash[..]).collect();
    client.execute(
        insert,
        &[
            &positions,
            &ids,
            &streams,
            &versions,
            &types,
            &schemas,
            &times,
            &actors,
            &correlations,
            &causations,
            &payloads,
            &prevs,
            &hashes,
        ],
    )?;
    Ok(())
}

/// Writes the tile nodes that growing the tree from `old_size` to `new_size` leaves completes.
/// Every commit leaves the tiles complete for its size, so the nodes present are exactly those of
/// `old_size` and nothing needs to be asked.
fn extend_tiles(client: &mut Client, stmts: &Prepared, old_size: u64, new_size: u64) -> Result<(), StoreError> {
    for level in 1..=tiles::MAX_TILE_LEVEL {
        let shift = tiles::TILE_HEIGHT * u32::from(level);
        let (have, want) = (old_size.checked_shr(shift).unwrap_or(0), new_size.checked_shr(shift).unwrap_or(0));
        if want == 0 || have == want {
            break;
        }
        for k in have..want {
            let below = read_tile(client, stmts, level - 1, k, tiles::TILE_WIDTH)?;
            if below.len() as u64 != tiles::TILE_WIDTH {
                return Err(StoreError::Corrupt {
                    position: k * tiles::TILE_WIDTH,
                    reason: format!("tile level {} has a gap under node {k} of level {level}", level - 1),
                });
            }
            client.execute(&stmts.insert_tile, &[&i32::from(level), &(k as i64), &&merkle::root(&below)[..]])?;
        }
    }
    Ok(())
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

fn read_tile(
    client: &mut Client,
    stmts: &Prepared,
    level: u8,
    index: u64,
    width: u64,
) -> Result<Vec<Hash32>, StoreError> {
    let first = index.saturating_mul(tiles::TILE_WIDTH);
    let last = first.saturating_add(width.min(tiles::TILE_WIDTH)).saturating_sub(1);
    let (first, last) = (i64::try_from(first).unwrap_or(i64::MAX), i64::try_from(last).unwrap_or(i64::MAX));
    let mut out = Vec::with_capacity(width as usize);
    if level == 0 {
        for row in client.query(&stmts.hashes, &[&first.saturating_add(1), &last.saturating_add(1)])? {
            let position = row.try_get::<_, i64>(0)? as u64;
            out.push(merkle::leaf_hash(&hash32(position, row.try_get(1)?)?));
        }
    } else {
        for row in client.query(&stmts.tiles, &[&i32::from(level), &first, &last])? {
            let idx = row.try_get::<_, i64>(0)? as u64;
            out.push(hash32(idx, row.try_get(1)?)?);
        }
    }
    Ok(out)
}

fn hash32(position: u64, bytes: &[u8]) -> Result<Hash32, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt { position, reason: "a stored hash is not 32 bytes".into() })
}

fn head_of(row: &postgres::Row) -> Result<Head, StoreError> {
    head_of_columns(row.try_get(0)?, row.try_get(1)?)
}

fn head_of_columns(position: i64, hash: &[u8]) -> Result<Head, StoreError> {
    let position = position as u64;
    Ok(Head { position, hash: hash32(position, hash)? })
}

fn row_to_event(row: &postgres::Row) -> Result<RecordedEvent, StoreError> {
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
            .and_then(|mut c| c.batch_execute(&format!("LISTEN {CHANNEL}")).map(|_| c))
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
}
