//! The log's writer connection: a group's statements go out **pipelined** (sent together, answered
//! in order), so a group commit costs two round trips to the server whatever its size — `BEGIN`,
//! the lock, the head and the catch-up together; then the INSERT, the notice and `COMMIT` together —
//! and **one** when this node wrote the last group too ([`try_speculative`]): the group is decided
//! on what the writer remembers, and its INSERT only lands on the head it was decided on.
//! Pipelining needs `tokio-postgres` itself (the synchronous `postgres` client waits for each
//! answer), driven by a current-thread runtime that belongs to the writer thread alone; readers keep
//! the synchronous client (`log`).
//!
//! Requests sent in one pipeline are executed in the order sent: a future of `tokio-postgres`
//! sends its request when first polled, and `futures_util::future::join*` polls in argument order.
//! The catch-up runs after the lock is granted, as its own statement with its own snapshot (READ
//! COMMITTED), so it sees every append that held the lock before.
//!
//! **What is read per group.** The writer remembers every stream's version as of the head it last
//! committed ([`KnownVersions`]); a group reads only the `(stream, version)` of the events other
//! nodes appended since, plus the versions of streams it has never seen — never a look-up per event
//! id, whose custom plan cost more to make than to run. An event id is idempotent all the same: the
//! INSERT's unique index refuses a stored id, and the group is then decided again with every id
//! looked up ([`Again::ProbeIds`]), so a retry is answered as a replay. A request refused for its
//! expected version has its ids looked up before the commit, because a retry of a committed append
//! is a replay, not a conflict. A memory that disagrees with the log (a unique stream version
//! refused, a catch-up too long, a log that is not the one remembered) is forgotten and read afresh.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::{join, join3, join_all};
use tokio_postgres::{Client, Statement};

use super::log::{head_of_columns, row_to_event, tile_bounds, tile_from_rows, APPEND_LOCK, CHANNEL, COLUMNS};
use super::log::{HASHES_SQL, TILES_SQL};
use crate::events::append;
use crate::events::envelope::RecordedEvent;
use crate::events::merkle::{self, Hash32};
use crate::events::store::{AppendOutcome, AppendRequest, Head, StoreError};
use crate::events::tiles;
use crate::storage::group_commit::{fail_all, WriteJob};
use crate::storage::sqlite::log::{now_rfc3339, Durability};

/// The statements the writer prepares once per connection.
struct Statements {
    begin: Statement,
    lock: Statement,
    head: Statement,
    catch_up: Statement,
    versions: Statement,
    by_ids: Statement,
    insert: Statement,
    insert_after: Statement,
    hashes: Statement,
    tiles: Statement,
    insert_tile: Statement,
    insert_tile_after: Statement,
    notify: Statement,
    commit: Statement,
    rollback: Statement,
}

struct Session {
    client: Client,
    stmts: Statements,
}

impl Session {
    async fn open(url: &str, durability: Durability) -> Result<Self, StoreError> {
        let super::tls::Target { config, tls } = super::tls::target(url)?;
        let client = match tls {
            Some(tls) => drive(config.connect(tls).await?),
            None => drive(config.connect(tokio_postgres::NoTls).await?),
        };
        if durability == Durability::Normal {
            // Survives a killed node or client; the last commits may be lost if the server crashes.
            client.batch_execute("SET synchronous_commit = off").await?;
        }
        let stmts = Statements {
            begin: client.prepare("BEGIN").await?,
            lock: client.prepare("SELECT pg_advisory_xact_lock($1)").await?,
            head: client.prepare("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").await?,
            // Ordered by position with a limit: an index range scan whatever the table's statistics
            // were when the plan was cached.
            catch_up: client
                .prepare(
                    "SELECT stream_id, stream_version, hash FROM events WHERE position > $1 \
                     ORDER BY position LIMIT $2",
                )
                .await?,
            // One index probe per stream (LATERAL), whatever a young table's statistics say.
            versions: client
                .prepare(
                    "SELECT s.id, (SELECT e.stream_version FROM events e WHERE e.stream_id = s.id \
                     ORDER BY e.stream_version DESC LIMIT 1) FROM unnest($1::text[]) AS s(id)",
                )
                .await?,
            by_ids: client
                .prepare(&format!(
                    "SELECT e.* FROM unnest($1::text[]) AS i(id) CROSS JOIN LATERAL \
                     (SELECT {COLUMNS} FROM events WHERE event_id = i.id) AS e"
                ))
                .await?,
            insert: client.prepare(&format!("INSERT INTO events ({COLUMNS}) {EVENT_ROWS}")).await?,
            // The speculative INSERT: nothing, unless the head is the one the group was decided on.
            insert_after: client
                .prepare(&format!(
                    "INSERT INTO events ({COLUMNS}) {EVENT_ROWS} \
                     WHERE EXISTS (SELECT 1 FROM events WHERE position = $14::bigint AND hash = $15::bytea)"
                ))
                .await?,
            hashes: client.prepare(HASHES_SQL).await?,
            tiles: client.prepare(TILES_SQL).await?,
            insert_tile: client.prepare("INSERT INTO merkle_tiles (level, idx, hash) VALUES ($1, $2, $3)").await?,
            // A tile node written behind a speculative INSERT: nothing, unless that INSERT wrote.
            insert_tile_after: client
                .prepare(
                    "INSERT INTO merkle_tiles (level, idx, hash) SELECT $1::integer, $2::bigint, $3::bytea \
                     WHERE EXISTS (SELECT 1 FROM events WHERE position = $4::bigint AND hash = $5::bytea)",
                )
                .await?,
            notify: client.prepare("SELECT pg_notify($1, $2)").await?,
            commit: client.prepare("COMMIT").await?,
            rollback: client.prepare("ROLLBACK").await?,
        };
        Ok(Self { client, stmts })
    }
}

/// The rows of one multi-row INSERT into `events`, one array per column.
const EVENT_ROWS: &str = "SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
     $6::integer[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bytea[], $13::bytea[])";

/// Spawns the task that reads and writes the connection's messages, which runs whenever the
/// writer waits on the runtime (it only ever does: between groups it sleeps on its queue).
fn drive<S, T>((client, connection): (Client, tokio_postgres::Connection<S, T>)) -> Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %crate::report::ErrorChain(&e), "the log writer's database connection ended");
        }
    });
    client
}

/// The writer's connection, reopened when the server has closed it.
pub(super) struct WriterConn {
    runtime: tokio::runtime::Runtime,
    url: String,
    durability: Durability,
    session: Option<Session>,
    known: KnownVersions,
}

/// Stream versions as of log position `at`, kept between groups so that a group reads only what
/// changed since: the events after `at` (other nodes' appends, usually none) and the streams it has
/// never seen. Exact, because every append holds the lock: nothing lands between `at` and the head
/// read under the lock but the rows the catch-up returns.
#[derive(Default)]
struct KnownVersions {
    at: Option<u64>,
    /// The head at `at` (none for an empty log).
    head: Option<Head>,
    versions: HashMap<String, Option<u64>>,
    /// The leaf nodes of the positions after the last complete level-1 tile node up to `at`, when
    /// known: a group that completes a node computes it from these, without reading the log.
    leaves: Option<Vec<Hash32>>,
    /// The last group found another node's appends: the next one reads before it writes.
    contended: bool,
}

impl KnownVersions {
    /// Moves `leaves` from `old_size` to `new_size` by the leaf nodes of the positions between,
    /// dropping every node of a completed tile; learns them when the new ones cover the tile begun.
    fn advance_leaves(&mut self, old_size: u64, new_size: u64, new: impl Iterator<Item = Hash32>) {
        let keep = (new_size % tiles::TILE_WIDTH) as usize;
        let mut leaves = match self.leaves.take() {
            Some(leaves) => leaves,
            None if new_size - old_size >= keep as u64 => Vec::new(),
            None => return,
        };
        leaves.extend(new);
        if leaves.len() >= keep {
            leaves.drain(..leaves.len() - keep);
            self.leaves = Some(leaves);
        }
    }
}

/// The most events another node may have appended since the last group before the writer forgets
/// what it knows rather than catching up; and the most streams it remembers.
const CATCH_UP_LIMIT: i64 = 10_000;
const KNOWN_STREAMS: usize = 100_000;

impl WriterConn {
    pub fn open(url: &str, durability: Durability) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let session = runtime.block_on(Session::open(url, durability))?;
        Ok(Self { runtime, url: url.to_owned(), durability, session: Some(session), known: KnownVersions::default() })
    }

    /// Commits `group`, answering each request at its index.
    pub fn commit(&mut self, group: &[WriteJob]) -> Vec<Result<AppendOutcome, StoreError>> {
        let Self { runtime, url, durability, session, known } = self;
        runtime.block_on(async {
            let session = match session {
                Some(s) if !s.client.is_closed() => s,
                _ => match Session::open(url, *durability).await {
                    Ok(s) => session.insert(s),
                    Err(e) => {
                        *session = None;
                        return fail_all(group.len(), e);
                    }
                },
            };
            commit_group(session, known, group).await
        })
    }
}

/// Why a group is decided again, inside [`commit_group`].
enum Again {
    /// An event id is already stored (a retry, or a reused id): look every id up this time.
    ProbeIds,
    /// What the writer knew of the streams cannot be used: read every version.
    Forget,
    /// Another node appended since: read what it appended.
    CatchUp,
}

/// Commits `group`. Event ids are not looked up beforehand: a request that reuses a stored id
/// makes the INSERT fail on the unique index, and the group is then decided again with every id
/// looked up, which answers a retry with what it stored and refuses just a request that mixes
/// stored and new ids. (A retry refused by its expected version is recognised without that: the
/// ids of refused requests are looked up before committing.)
async fn commit_group(
    session: &Session,
    known: &mut KnownVersions,
    group: &[WriteJob],
) -> Vec<Result<AppendOutcome, StoreError>> {
    let mut probe_all = false;
    match try_speculative(session, known, group).await {
        Speculation::Committed(answers) => return answers,
        Speculation::NotTried => {}
        Speculation::Lost(again) => {
            rollback(session).await;
            match again {
                Again::ProbeIds => probe_all = true,
                Again::Forget => *known = KnownVersions::default(),
                Again::CatchUp => known.contended = true,
            }
        }
    }
    let mut outcome = Err(StoreError::WriterStopped);
    for _ in 0..3 {
        outcome = try_group(session, known, group, probe_all).await;
        let again = match &outcome {
            Ok(Ok(_)) => return outcome.ok().and_then(Result::ok).unwrap_or_default(),
            Ok(Err(again)) => again,
            Err(e) if is_violation(e, "events_event_id_key") => &Again::ProbeIds,
            Err(e) if is_violation(e, "events_stream_id_stream_version_key") => &Again::Forget,
            Err(_) => break,
        };
        match again {
            Again::ProbeIds => probe_all = true,
            Again::Forget | Again::CatchUp => {}
        }
        *known = KnownVersions::default();
        rollback(session).await;
    }
    *known = KnownVersions::default();
    rollback(session).await;
    match outcome {
        Err(e) => fail_all(group.len(), e),
        Ok(_) => fail_all(group.len(), StoreError::Backend("the group could not be decided in three tries".into())),
    }
}

/// Ends whatever transaction a failure left open (none, when the pipelined COMMIT already turned
/// an aborted transaction into a rollback).
async fn rollback(session: &Session) {
    if !session.client.is_closed() {
        let _ = session.client.execute(&session.stmts.rollback, &[]).await;
    }
}

fn is_violation(e: &StoreError, constraint: &str) -> bool {
    let StoreError::Backend(source) = e else { return false };
    source.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.as_db_error()).is_some_and(|db| {
        db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION && db.constraint() == Some(constraint)
    })
}

/// The group's running state: what the requests decided so far see.
struct GroupState<'g> {
    head: Option<Head>,
    versions: HashMap<String, Option<u64>>,
    /// Events stored before this group, by id (looked up only when needed).
    stored: HashMap<String, RecordedEvent>,
    /// The group's new events in position order, and where each id is among them: the events are
    /// moved into the answers after the commit, never copied.
    new_events: Vec<RecordedEvent>,
    new_ids: HashMap<&'g str, usize>,
}

impl<'g> GroupState<'g> {
    fn new(head: Option<Head>, versions: HashMap<String, Option<u64>>, stored: HashMap<String, RecordedEvent>) -> Self {
        Self { head, versions, stored, new_events: Vec::new(), new_ids: HashMap::new() }
    }

    /// The event stored under `id`, before this group or by an earlier request of it.
    fn event_of(&self, id: &str) -> Option<&RecordedEvent> {
        self.stored.get(id).or_else(|| self.new_ids.get(id).map(|&i| &self.new_events[i]))
    }
}

/// What one request of a group was decided to be, before the group is committed.
enum Decided {
    /// New events: the next `n` of the group's new events.
    Fresh(usize),
    /// A retry of a committed append, answered with what it stored.
    Replay(AppendOutcome),
}

type Answers = Vec<Result<AppendOutcome, StoreError>>;

/// The answers of a committed group: each fresh request gets its own events, moved.
fn answers(decided: Vec<Result<Decided, StoreError>>, new_events: Vec<RecordedEvent>) -> Answers {
    let mut events = new_events.into_iter();
    decided
        .into_iter()
        .map(|d| match d? {
            Decided::Fresh(n) => {
                Ok(AppendOutcome { events: events.by_ref().take(n).collect(), idempotent_replay: false })
            }
            Decided::Replay(outcome) => Ok(outcome),
        })
        .collect()
}

async fn stored_events(session: &Session, ids: &[&str]) -> Result<HashMap<String, RecordedEvent>, StoreError> {
    let mut stored = HashMap::new();
    if !ids.is_empty() {
        for row in session.client.query(&session.stmts.by_ids, &[&ids]).await? {
            let event = row_to_event(&row)?;
            stored.insert(event.event_id.clone(), event);
        }
    }
    Ok(stored)
}

async fn try_group(
    session: &Session,
    known: &mut KnownVersions,
    group: &[WriteJob],
    probe_all: bool,
) -> Result<Result<Answers, Again>, StoreError> {
    let Session { client, stmts } = session;
    let mut streams: Vec<&str> =
        group.iter().flat_map(|j| j.request.streams.iter().map(|s| s.stream_id.as_str())).collect();
    streams.sort_unstable();
    streams.dedup();
    let unknown: Vec<&str> = streams.iter().copied().filter(|s| !known.versions.contains_key(*s)).collect();
    let since = known.at.map(|at| at as i64);
    // One round trip: BEGIN and the lock, then what changed since the last group and the streams
    // never seen, read after the lock is granted.
    let ((begun, locked, head_row), (caught_up, looked_up)) = join(
        join3(
            client.execute(&stmts.begin, &[]),
            client.execute(&stmts.lock, &[&APPEND_LOCK]),
            client.query_opt(&stmts.head, &[]),
        ),
        join(
            async {
                match since {
                    Some(at) => client.query(&stmts.catch_up, &[&at, &(CATCH_UP_LIMIT + 1)]).await.map(Some),
                    None => Ok(None),
                }
            },
            async {
                if unknown.is_empty() {
                    Ok(Vec::new())
                } else {
                    client.query(&stmts.versions, &[&unknown]).await
                }
            },
        ),
    )
    .await;
    begun?;
    locked?;
    let head = head_row?.map(|r| head_of_columns(r.try_get(0)?, r.try_get(1)?)).transpose()?;
    let old_size = head.map_or(0, |h| h.position);
    if let Some(rows) = caught_up? {
        let behind = since.map_or(0, |at| old_size as i64 - at);
        if !(0..=CATCH_UP_LIMIT).contains(&behind) {
            // The log is not the one remembered, or moved too far: read every version afresh.
            return Ok(Err(Again::Forget));
        }
        known.contended = !rows.is_empty();
        let mut foreign = Vec::with_capacity(rows.len());
        for row in rows {
            let version = row.try_get::<_, i64>(1)? as u64;
            let entry = known.versions.entry(row.try_get::<_, String>(0)?).or_insert(None);
            *entry = Some(entry.map_or(version, |v| v.max(version)));
            let hash: &[u8] = row.try_get(2)?;
            let hash: Hash32 = hash.try_into().map_err(|_| StoreError::Corrupt {
                position: old_size,
                reason: "an event's hash is not 32 bytes".into(),
            })?;
            foreign.push(merkle::leaf_hash(&hash));
        }
        if let Some(at) = since {
            known.advance_leaves(at as u64, old_size, foreign.into_iter());
        }
    } else if old_size % tiles::TILE_WIDTH == 0 {
        known.leaves = Some(Vec::new());
    }
    for row in looked_up? {
        let version: Option<i64> = row.try_get(1)?;
        known.versions.insert(row.try_get::<_, String>(0)?, version.map(|v| v as u64));
    }
    known.at = Some(old_size);
    known.head = head;
    let ids: Vec<&str> = if probe_all {
        group
            .iter()
            .flat_map(|j| j.request.streams.iter().flat_map(|s| &s.events))
            .map(|e| e.event_id.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let stored = stored_events(session, &ids).await?;
    let versions = streams.iter().map(|s| ((*s).to_owned(), known.versions.get(*s).copied().flatten())).collect();
    let mut state = GroupState::new(head, versions, stored);
    let recorded_at = now_rfc3339();
    let mut results: Vec<Result<Decided, StoreError>> =
        group.iter().map(|job| decide_one(&mut state, &job.request, &recorded_at)).collect();
    if !probe_all {
        // A request refused by its expected version may be the retry of an append that was
        // stored: its ids tell, and it is then answered with what was stored.
        let refused: Vec<usize> =
            (0..group.len()).filter(|i| matches!(results[*i], Err(StoreError::WrongExpectedVersion { .. }))).collect();
        let ids: Vec<&str> = refused
            .iter()
            .flat_map(|i| group[*i].request.streams.iter().flat_map(|s| &s.events))
            .map(|e| e.event_id.as_str())
            .collect();
        let stored = stored_events(session, &ids).await?;
        for i in refused {
            match append::replay_of(&group[i].request, |id| stored.get(id)) {
                Ok(None) => {}
                Ok(Some(outcome)) => results[i] = Ok(Decided::Replay(outcome)),
                Err(e) => results[i] = Err(e),
            }
        }
    }
    let new_size = state.head.map_or(0, |h| h.position);
    let notice = new_size.to_string();
    let notice_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&CHANNEL, &notice];
    let (notify, commit) = (client.execute(&stmts.notify, &notice_params), client.execute(&stmts.commit, &[]));
    if state.new_events.is_empty() {
        let (notified, committed) = join(notify, commit).await;
        notified?;
        committed?;
    } else if tiles_complete(old_size, new_size) {
        // The tile nodes read the rows just inserted: the INSERT is answered first.
        insert_events(client, &stmts.insert, &state.new_events, None).await?;
        extend_tiles(session, old_size, new_size).await?;
        let (notified, committed) = join(notify, commit).await;
        notified?;
        committed?;
    } else {
        // One round trip. Should the INSERT fail, the COMMIT behind it finds the transaction
        // aborted and rolls it back: the INSERT's error is the one reported.
        let (inserted, notified, committed) =
            join3(insert_events(client, &stmts.insert, &state.new_events, None), notify, commit).await;
        inserted?;
        notified?;
        committed?;
    }
    known.committed(old_size, &mut state);
    Ok(Ok(answers(results, state.new_events)))
}

impl KnownVersions {
    /// What the writer knows once `state`'s events are committed on a log of `old_size` events:
    /// the versions are exact as of the new head.
    fn committed(&mut self, old_size: u64, state: &mut GroupState) {
        if self.versions.len() > KNOWN_STREAMS {
            self.versions.clear();
        }
        let new_size = state.head.map_or(0, |h| h.position);
        self.versions.extend(std::mem::take(&mut state.versions));
        self.advance_leaves(old_size, new_size, state.new_events.iter().map(|e| merkle::leaf_hash(&e.hash)));
        self.at = Some(new_size);
        self.head = state.head;
    }
}

/// How a speculative group ended ([`try_speculative`]).
enum Speculation {
    /// Not tried: what the writer knows does not cover the group, or the group needs a read.
    NotTried,
    Committed(Answers),
    /// Nothing was written; the group is decided again, reading first.
    Lost(Again),
}

/// Commits `group` in **one** round trip when nothing suggests another node appended since this
/// node's last group: the group is decided on what the writer remembers, and `BEGIN`, the lock,
/// the INSERT, any tile node, the notice and `COMMIT` go out together. The INSERT is correct
/// exactly when the head is still the one remembered, and it makes sure of it: the first new
/// position is the remembered head's successor, so another node's append since makes it fail on
/// the primary key, and a log that is not the one remembered (no event at the remembered head with
/// its hash) makes it insert nothing. Either way nothing is written and the group goes the long way.
async fn try_speculative(session: &Session, known: &mut KnownVersions, group: &[WriteJob]) -> Speculation {
    let (Some(old_head), Some(at)) = (known.head, known.at) else { return Speculation::NotTried };
    if known.contended || old_head.position != at {
        return Speculation::NotTried;
    }
    let covered = group.iter().flat_map(|j| &j.request.streams).all(|s| known.versions.contains_key(&s.stream_id));
    if !covered {
        return Speculation::NotTried;
    }
    let versions = group
        .iter()
        .flat_map(|j| &j.request.streams)
        .map(|s| (s.stream_id.clone(), known.versions.get(&s.stream_id).copied().flatten()))
        .collect();
    let mut state = GroupState::new(Some(old_head), versions, HashMap::new());
    let recorded_at = now_rfc3339();
    let results: Vec<Result<Decided, StoreError>> =
        group.iter().map(|job| decide_one(&mut state, &job.request, &recorded_at)).collect();
    // A refusal by expected version may be a retry of a stored append, which only a read tells.
    if state.new_events.is_empty() || results.iter().any(|r| matches!(r, Err(StoreError::WrongExpectedVersion { .. })))
    {
        return Speculation::NotTried;
    }
    let new_head = state.head.unwrap_or(old_head);
    let new_size = new_head.position;
    // Level-1 tile nodes are computed from the leaves remembered; a higher node reads the log.
    let shift = 2 * tiles::TILE_HEIGHT;
    if at >> shift != new_size >> shift {
        return Speculation::NotTried;
    }
    let mut nodes = Vec::new();
    if tiles_complete(at, new_size) {
        let Some(leaves) = &known.leaves else { return Speculation::NotTried };
        let all: Vec<Hash32> =
            leaves.iter().copied().chain(state.new_events.iter().map(|e| merkle::leaf_hash(&e.hash))).collect();
        let first = at >> tiles::TILE_HEIGHT;
        for (i, tile) in all.chunks_exact(tiles::TILE_WIDTH as usize).enumerate() {
            nodes.push(((first + i as u64) as i64, merkle::root(tile)));
        }
    }
    let Session { client, stmts } = session;
    let notice = new_size.to_string();
    let notice_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&CHANNEL, &notice];
    let (new_position, old_position) = (new_size as i64, at as i64);
    let new_hash = &new_head.hash[..];
    let node_hashes: Vec<(i64, &[u8])> = nodes.iter().map(|(idx, hash)| (*idx, &hash[..])).collect();
    let tile_params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 5]> = node_hashes
        .iter()
        .map(|(idx, hash)| -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
            [&1i32, idx, hash, &new_position, &new_hash]
        })
        .collect();
    let tiles_written = join_all(tile_params.iter().map(|p| client.execute(&stmts.insert_tile_after, &p[..])));
    let ((begun, locked, inserted), (tiles_written, notified, committed)) = join(
        join3(
            client.execute(&stmts.begin, &[]),
            client.execute(&stmts.lock, &[&APPEND_LOCK]),
            insert_events(client, &stmts.insert_after, &state.new_events, Some((old_position, &old_head.hash))),
        ),
        join3(tiles_written, client.execute(&stmts.notify, &notice_params), client.execute(&stmts.commit, &[])),
    )
    .await;
    let written = (|| -> Result<bool, StoreError> {
        begun?;
        locked?;
        let inserted = inserted?;
        for t in tiles_written {
            t?;
        }
        notified?;
        committed?;
        Ok(inserted == state.new_events.len() as u64)
    })();
    match written {
        Ok(true) => {
            known.committed(at, &mut state);
            Speculation::Committed(answers(results, state.new_events))
        }
        // The remembered head is not in the log: an empty transaction was committed.
        Ok(false) => Speculation::Lost(Again::Forget),
        Err(e) if is_violation(&e, "events_pkey") => Speculation::Lost(Again::CatchUp),
        Err(e) if is_violation(&e, "events_event_id_key") => Speculation::Lost(Again::ProbeIds),
        Err(_) => Speculation::Lost(Again::Forget),
    }
}

/// Decides one request against the group's state; on success the state holds its events.
fn decide_one<'g>(
    state: &mut GroupState<'g>,
    request: &'g AppendRequest,
    recorded_at: &str,
) -> Result<Decided, StoreError> {
    append::validate(request)?;
    if let Some(outcome) = append::replay_of(request, |id| state.event_of(id))? {
        return Ok(Decided::Replay(outcome));
    }
    let mut head = state.head;
    let mut events = Vec::with_capacity(request.event_count());
    let mut new_versions = Vec::with_capacity(request.streams.len());
    for s in &request.streams {
        let mut stream_version = append::admit(s, state.versions.get(&s.stream_id).copied().flatten())?;
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
    let first = state.new_events.len();
    let ids = request.streams.iter().flat_map(|s| &s.events).map(|e| e.event_id.as_str());
    state.new_ids.extend(ids.zip(first..));
    let n = events.len();
    state.new_events.extend(events);
    Ok(Decided::Fresh(n))
}

/// Inserts `events` with `insert`, or with `insert_after` given the head (`after`) it must follow;
/// the rows inserted.
async fn insert_events(
    client: &Client,
    insert: &Statement,
    events: &[RecordedEvent],
    after: Option<(i64, &Hash32)>,
) -> Result<u64, StoreError> {
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
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
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
    ];
    let after_hash = after.map(|(_, hash)| &hash[..]);
    if let (Some((position, _)), Some(hash)) = (&after, &after_hash) {
        params.push(position);
        params.push(hash);
    }
    Ok(client.execute(insert, &params).await?)
}

/// Whether growing the tree from `old_size` to `new_size` completes a level-1 tile node (and so
/// maybe higher ones).
fn tiles_complete(old_size: u64, new_size: u64) -> bool {
    old_size >> tiles::TILE_HEIGHT != new_size >> tiles::TILE_HEIGHT
}

/// Writes the tile nodes that growing the tree from `old_size` to `new_size` leaves completes.
/// Every commit leaves the tiles complete for its size, so the nodes present are exactly those of
/// `old_size` and nothing needs to be asked.
async fn extend_tiles(session: &Session, old_size: u64, new_size: u64) -> Result<(), StoreError> {
    let Session { client, stmts } = session;
    for level in 1..=tiles::MAX_TILE_LEVEL {
        let shift = tiles::TILE_HEIGHT * u32::from(level);
        let (have, want) = (old_size.checked_shr(shift).unwrap_or(0), new_size.checked_shr(shift).unwrap_or(0));
        if want == 0 || have == want {
            break;
        }
        for k in have..want {
            let below = level - 1;
            let (first, last) = tile_bounds(below, k, tiles::TILE_WIDTH);
            let rows = if below == 0 {
                client.query(&stmts.hashes, &[&first, &last]).await?
            } else {
                client.query(&stmts.tiles, &[&i32::from(below), &first, &last]).await?
            };
            let nodes = tile_from_rows(below, &rows)?;
            if nodes.len() as u64 != tiles::TILE_WIDTH {
                return Err(StoreError::Corrupt {
                    position: k * tiles::TILE_WIDTH,
                    reason: format!("tile level {below} has a gap under node {k} of level {level}"),
                });
            }
            client.execute(&stmts.insert_tile, &[&i32::from(level), &(k as i64), &&merkle::root(&nodes)[..]]).await?;
        }
    }
    Ok(())
}

/// The writer's commit function for [`crate::storage::group_commit::Writer`]: commits each group
/// and tells this node's readers that the log may have moved.
pub(super) fn group_committer(
    mut conn: WriterConn,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
) -> impl FnMut(&[WriteJob]) -> Vec<Result<AppendOutcome, StoreError>> {
    move |group| {
        let results = conn.commit(group);
        changes.send_modify(|v| *v = v.wrapping_add(1));
        results
    }
}
