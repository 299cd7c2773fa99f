//! The connector memory host service: durable key/value entries, journals and leases behind the
//! `vadyl:connector/memory` WIT interface (`wit/worlds/connector/memory.wit`).
//!
//! Memory is operational state, not history, so it lives in its own SQLite database (WAL) and never
//! in the event log. Everything is scoped per (project, implementation): every table is keyed by a
//! scope id, and no operation takes a key without its [`Scope`], so one scope can never read or
//! write another's keys.
//!
//! Guarantees the WIT promises, and how they are kept:
//!
//! - **No lost updates.** Every write runs in one `BEGIN IMMEDIATE` transaction on the single write
//!   connection, so the read-check-write of put-if-absent, compare-exchange, conditional delete,
//!   journal append and lease acquisition is atomic, also against another process on the same file.
//!   Reads use a small pool of separate connections; WAL lets them run while a write commits.
//! - **Versions are never reused.** An entry is created at `floor + 1`, where `floor` is a per-scope
//!   high-water mark: a database trigger raises it to the version of every entry that is deleted or
//!   purged. A key that is deleted and recreated therefore starts above every version it ever had,
//!   so a stale `expected` version can never match again (no ABA). In a scope where nothing was ever
//!   deleted or expired, new entries start at 1. This costs one row per scope instead of a
//!   tombstone per key ever written.
//! - **Fencing tokens strictly increase.** Tokens come from a per-scope counter, so a new holder of a
//!   lease always gets a larger token than any earlier holder of that lease (or of any other lease in
//!   the scope), and released or expired lease rows can be purged without losing that property.
//! - **Expired means absent.** An entry or lease whose `expires_at <= now` is invisible to every
//!   operation. Rows are removed lazily (when a write touches the key, when the scope hits its entry
//!   quota) and by [`MemoryStore::purge_expired`], which the host should call periodically.
//! - **Journals are gap-free.** Sequence numbers per (scope, journal) are 1, 2, 3, … assigned inside
//!   the write transaction; journals are never trimmed.
//!
//! Times are milliseconds since the Unix epoch, read from the shared [`Clock`] once per operation.
//! The WIT `timestamp` is `ms / 1000` seconds and `(ms % 1000) * 1_000_000` nanoseconds.
//!
//! Durability defaults to `synchronous=FULL`: a version or fencing token handed out and then lost in
//! a power failure could be handed out again, which would break both guarantees above.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};

use super::clock::Clock;

/// Longest key, journal name, lease name or prefix, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest project or implementation name in a [`Scope`], and longest lease holder, in bytes.
pub const MAX_SCOPE_PART_BYTES: usize = 256;

const SCHEMA_ID: &str = "vadyl-memory/1";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO memory_meta (key, value) VALUES ('schema', 'vadyl-memory/1');

-- One row per (project, implementation). Never deleted: it carries the counters that keep versions
-- and fencing tokens from being reused.
CREATE TABLE IF NOT EXISTS scopes (
    id              INTEGER PRIMARY KEY,
    project         TEXT    NOT NULL,
    implementation  TEXT    NOT NULL,
    version_floor   INTEGER NOT NULL DEFAULT 0 CHECK (version_floor >= 0),
    entry_count     INTEGER NOT NULL DEFAULT 0 CHECK (entry_count >= 0),
    lease_tokens    INTEGER NOT NULL DEFAULT 0 CHECK (lease_tokens >= 0),
    UNIQUE (project, implementation)
);

-- Keys are stored as BLOBs (their UTF-8 bytes) so a prefix is a byte range the index can seek.
CREATE TABLE IF NOT EXISTS entries (
    scope_id    INTEGER NOT NULL,
    key         BLOB    NOT NULL,
    value       BLOB    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    expires_at  INTEGER,
    UNIQUE (scope_id, key)
);
CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS entries_counted AFTER INSERT ON entries
BEGIN UPDATE scopes SET entry_count = entry_count + 1 WHERE id = NEW.scope_id; END;
CREATE TRIGGER IF NOT EXISTS entries_retired AFTER DELETE ON entries
BEGIN
    UPDATE scopes SET entry_count = entry_count - 1, version_floor = max(version_floor, OLD.version)
    WHERE id = OLD.scope_id;
END;
CREATE TRIGGER IF NOT EXISTS entries_version_increases BEFORE UPDATE OF version ON entries
WHEN NEW.version <= OLD.version
BEGIN SELECT RAISE(ABORT, 'memory entry versions only increase'); END;

CREATE TABLE IF NOT EXISTS journal_records (
    scope_id     INTEGER NOT NULL,
    journal      BLOB    NOT NULL,
    sequence     INTEGER NOT NULL CHECK (sequence >= 1),
    data         BLOB    NOT NULL,
    appended_at  INTEGER NOT NULL,
    UNIQUE (scope_id, journal, sequence)
);

CREATE TABLE IF NOT EXISTS leases (
    scope_id       INTEGER NOT NULL,
    name           BLOB    NOT NULL,
    holder         TEXT    NOT NULL,
    fencing_token  INTEGER NOT NULL CHECK (fencing_token >= 1),
    expires_at     INTEGER NOT NULL,
    PRIMARY KEY (scope_id, name)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS leases_token_never_decreases BEFORE UPDATE OF fencing_token ON leases
WHEN NEW.fencing_token < OLD.fencing_token
BEGIN SELECT RAISE(ABORT, 'fencing tokens only increase'); END;
"#;

/// Rows removed per transaction by [`MemoryStore::purge_expired`], so a large purge never holds the
/// write lock for long.
const PURGE_BATCH: i64 = 1_000;

/// Failure of a memory operation. The first ten cases mirror the WIT `memory-error` variant one to
/// one; [`MemoryError::Storage`] is a database failure the host maps as it sees fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// The key does not exist or has expired.
    #[error("no live entry: the key does not exist or has expired")]
    NotFound,
    /// `put_if_absent` found a live entry; carries its version.
    #[error("the key already exists at version {0}")]
    AlreadyExists(u64),
    /// A compare-exchange or conditional delete found another version; carries the current one
    /// (0 when the key is absent).
    #[error("version mismatch: the entry's current version is {0} (0 means absent)")]
    VersionMismatch(u64),
    /// `append_journal` expected another last sequence; carries the current last (0 = empty).
    #[error("sequence mismatch: the journal's last sequence number is {0}")]
    SequenceMismatch(u64),
    /// The lease is held by someone else until the given time (ms since the Unix epoch).
    #[error("the lease is held by another holder until {0} ms after the Unix epoch")]
    LeaseHeld(u64),
    /// The fencing token is not the current live holder's: the lease lapsed, was released or moved.
    #[error("the fencing token is not the current holder's: the lease lapsed, was released or moved")]
    LeaseLost,
    /// A key, prefix, name, holder or scope is malformed; says which and why.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A size, count or duration limit would be exceeded; says which.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The publication lacks the capability. Never produced by the store itself: it is the host's
    /// capability check's answer, here so the host has one error type to map onto the WIT variant.
    #[error("denied: {0}")]
    Denied(String),
    /// The database is locked by another process beyond the busy timeout; the call may be retried.
    #[error("memory store temporarily unavailable, retry: {0}")]
    Unavailable(String),
    /// The database failed or holds data this code did not write.
    #[error("memory store failure: {0}")]
    Storage(String),
}

impl From<rusqlite::Error> for MemoryError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => MemoryError::Unavailable(e.to_string()),
            _ => MemoryError::Storage(e.to_string()),
        }
    }
}

/// Whose memory an operation reads or writes: one (project, implementation) pair. The fields are
/// private so a `Scope` is always valid (non-empty, at most [`MAX_SCOPE_PART_BYTES`], no NUL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    project: String,
    implementation: String,
}

impl Scope {
    /// Validates and builds a scope.
    pub fn new(project: impl Into<String>, implementation: impl Into<String>) -> Result<Self, MemoryError> {
        let project = project.into();
        let implementation = implementation.into();
        check_text("project", &project, MAX_SCOPE_PART_BYTES)?;
        check_text("implementation", &implementation, MAX_SCOPE_PART_BYTES)?;
        Ok(Scope { project, implementation })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn implementation(&self) -> &str {
        &self.implementation
    }
}

/// A live entry (the WIT `entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    /// Current version; strictly increases on every write of the key.
    pub version: u64,
    /// Expiry in ms since the Unix epoch, if one is set.
    pub expires_at_ms: Option<u64>,
}

/// Every live entry under a prefix at one instant (the WIT `snapshot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub prefix: String,
    /// Sorted by key (byte order of the UTF-8 key, i.e. code point order).
    pub entries: Vec<Entry>,
    /// True when the entry limit or the byte budget cut the listing short.
    pub truncated: bool,
}

/// Receipt of a journal append (the WIT `journal-receipt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalReceipt {
    pub journal: String,
    /// Sequence number of the appended record; the first record is 1.
    pub sequence: u64,
}

/// One stored journal record, as [`MemoryStore::read_journal`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub sequence: u64,
    pub data: Vec<u8>,
    /// Host time of the append, ms since the Unix epoch.
    pub appended_at_ms: u64,
}

/// A held lease (the WIT `lease`, plus the holder the host named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// Strictly greater than every token issued before it in the scope.
    pub fencing_token: u64,
    /// When the lease lapses unless renewed or released, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// What one [`MemoryStore::purge_expired`] call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub entries: u64,
    pub leases: u64,
}

/// Size and count limits. Every limit is checked before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Largest entry value or journal record, in bytes.
    pub max_value_bytes: usize,
    /// Most entries one scope may hold (expired entries are purged before this is refused).
    pub max_entries_per_scope: u64,
    /// Most records one journal may hold.
    pub max_journal_records: u64,
    /// Entries a snapshot returns when the caller gives no limit.
    pub default_snapshot_limit: u32,
    /// Entries a snapshot returns at most; a larger requested limit is lowered to this.
    pub max_snapshot_limit: u32,
    /// Key and value bytes a snapshot returns at most (always at least one entry).
    pub max_snapshot_bytes: usize,
    /// Longest lease, in ms.
    pub max_lease_ttl_ms: u64,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            max_value_bytes: 1 << 20,
            max_entries_per_scope: 10_000,
            max_journal_records: 1_000_000,
            default_snapshot_limit: 100,
            max_snapshot_limit: 1_000,
            max_snapshot_bytes: 8 << 20,
            max_lease_ttl_ms: 3_600_000,
        }
    }
}

/// How hard a commit is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryDurability {
    /// `synchronous=FULL`: every commit syncs the WAL; nothing handed out is lost on power failure.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a killed process; the last commits may be lost on power failure,
    /// after which versions and fencing tokens could be handed out twice.
    Normal,
}

/// Options for [`MemoryStore::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    pub limits: MemoryLimits,
    pub durability: MemoryDurability,
    /// Idle read connections kept open for reuse (more are opened under load and then closed).
    pub read_pool_size: usize,
    /// How long a write waits for another process holding the database lock before `Unavailable`.
    pub busy_timeout: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            limits: MemoryLimits::default(),
            durability: MemoryDurability::default(),
            read_pool_size: 8,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The memory database. `Send + Sync`: share one `Arc<MemoryStore>` among every invocation.
pub struct MemoryStore {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    config: MemoryConfig,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("path", &self.path).field("config", &self.config).finish_non_exhaustive()
    }
}

/// The parts of a scope row a write needs.
struct ScopeRow {
    id: i64,
    version_floor: i64,
    entry_count: i64,
    lease_tokens: i64,
}

/// A live lease row.
struct LeaseRow {
    holder: String,
    token: i64,
    expires_at: i64,
}

impl MemoryStore {
    /// Opens (creating if needed) the memory database at `path` with default limits and durability.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, MemoryError> {
        Self::open_with(path, clock, MemoryConfig::default())
    }

    /// Opens (creating if needed) the memory database at `path`.
    pub fn open_with(path: &Path, clock: Arc<dyn Clock>, config: MemoryConfig) -> Result<Self, MemoryError> {
        let conn = Connection::open(path)
            .map_err(|e| MemoryError::Storage(format!("cannot open memory database {}: {e}", path.display())))?;
        conn.busy_timeout(config.busy_timeout)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(MemoryError::Storage(format!(
                "memory database {} cannot use WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        let synchronous = match config.durability {
            MemoryDurability::Full => "FULL",
            MemoryDurability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.set_prepared_statement_cache_capacity(64);
        let mut conn = conn;
        {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            let schema: String =
                tx.query_row("SELECT value FROM memory_meta WHERE key = 'schema'", [], |row| row.get(0))?;
            if schema != SCHEMA_ID {
                return Err(MemoryError::Storage(format!(
                    "{} holds schema {schema:?}, not {SCHEMA_ID:?}: not a memory database this version can use",
                    path.display()
                )));
            }
            tx.commit()?;
        }
        Ok(MemoryStore {
            path: path.to_path_buf(),
            clock,
            config,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &MemoryLimits {
        &self.config.limits
    }

    // ---- reads ----

    /// Reads one entry; `None` when absent or expired.
    pub fn get(&self, scope: &Scope, key: &str) -> Result<Option<Entry>, MemoryError> {
        check_name("key", key)?;
        let now = self.now();
        let row = self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT e.value, e.version, e.expires_at FROM scopes s JOIN entries e ON e.scope_id = s.id \
                     WHERE s.project = ?1 AND s.implementation = ?2 AND e.key = ?3 \
                     AND (e.expires_at IS NULL OR e.expires_at > ?4)",
                )?
                .query_row(params![scope.project, scope.implementation, key.as_bytes(), now], |row| {
                    Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?, row.get::<_, Option<i64>>(2)?))
                })
                .optional()?)
        })?;
        row.map(|(value, version, expires_at)| {
            Ok(Entry {
                key: key.to_string(),
                value,
                version: stored_u64("version", version)?,
                expires_at_ms: expires_at.map(|t| stored_u64("expires_at", t)).transpose()?,
            })
        })
        .transpose()
    }

    /// Reads every live entry whose key starts with `prefix` (empty = all) in one statement, hence
    /// from one consistent snapshot; sorted by key. `limit` defaults to `default_snapshot_limit` and
    /// is lowered to `max_snapshot_limit`; the listing also stops before `max_snapshot_bytes`.
    pub fn get_snapshot(&self, scope: &Scope, prefix: &str, limit: Option<u32>) -> Result<Snapshot, MemoryError> {
        check_prefix(prefix)?;
        let limits = &self.config.limits;
        let limit = limit.unwrap_or(limits.default_snapshot_limit).min(limits.max_snapshot_limit) as usize;
        let now = self.now();
        self.read(|conn| {
            // One more row than asked for tells whether the limit cut the listing short.
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
            let upper = prefix_upper_bound(prefix.as_bytes());
            let select =
                "SELECT e.key, e.value, e.version, e.expires_at FROM scopes s JOIN entries e ON e.scope_id = s.id \
                 WHERE s.project = ?1 AND s.implementation = ?2 AND e.key >= ?3 \
                 AND (e.expires_at IS NULL OR e.expires_at > ?4)";
            let mut stmt;
            let mut rows = match &upper {
                Some(upper) => {
                    stmt = conn.prepare_cached(&format!("{select} AND e.key < ?6 ORDER BY e.key LIMIT ?5"))?;
                    stmt.query(params![scope.project, scope.implementation, prefix.as_bytes(), now, fetch, upper])?
                }
                None => {
                    stmt = conn.prepare_cached(&format!("{select} ORDER BY e.key LIMIT ?5"))?;
                    stmt.query(params![scope.project, scope.implementation, prefix.as_bytes(), now, fetch])?
                }
            };
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            let mut truncated = false;
            while let Some(row) = rows.next()? {
                let key: Vec<u8> = row.get(0)?;
                let value: Vec<u8> = row.get(1)?;
                let size = key.len() + value.len();
                if entries.len() == limit || (!entries.is_empty() && bytes + size > limits.max_snapshot_bytes) {
                    truncated = true;
                    break;
                }
                bytes += size;
                entries.push(Entry {
                    key: String::from_utf8(key)
                        .map_err(|_| MemoryError::Storage("a stored key is not valid UTF-8".into()))?,
                    value,
                    version: stored_u64("version", row.get(2)?)?,
                    expires_at_ms: row.get::<_, Option<i64>>(3)?.map(|t| stored_u64("expires_at", t)).transpose()?,
                });
            }
            Ok(Snapshot { prefix: prefix.to_string(), entries, truncated })
        })
    }

    /// Reads up to `limit` records of `journal` starting at sequence `from_sequence`, in order. For
    /// the host and audit; guests only append.
    pub fn read_journal(
        &self,
        scope: &Scope,
        journal: &str,
        from_sequence: u64,
        limit: u32,
    ) -> Result<Vec<JournalRecord>, MemoryError> {
        check_name("journal name", journal)?;
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT j.sequence, j.data, j.appended_at FROM scopes s JOIN journal_records j ON j.scope_id = s.id \
                 WHERE s.project = ?1 AND s.implementation = ?2 AND j.journal = ?3 AND j.sequence >= ?4 \
                 ORDER BY j.sequence LIMIT ?5",
            )?;
            let from = i64::try_from(from_sequence).unwrap_or(i64::MAX);
            let mut rows =
                stmt.query(params![scope.project, scope.implementation, journal.as_bytes(), from, i64::from(limit)])?;
            let mut records = Vec::new();
            while let Some(row) = rows.next()? {
                records.push(JournalRecord {
                    sequence: stored_u64("sequence", row.get(0)?)?,
                    data: row.get(1)?,
                    appended_at_ms: stored_u64("appended_at", row.get(2)?)?,
                });
            }
            Ok(records)
        })
    }

    /// Succeeds only if `token` is the fencing token of the live lease `name` at this instant. A host
    /// guards a side effect with it; the lease can still lapse right after, so a resource that must
    /// be fenced strictly should itself compare tokens.
    pub fn check_fence(&self, scope: &Scope, name: &str, token: u64) -> Result<(), MemoryError> {
        check_name("lease name", name)?;
        let now = self.now();
        let current: Option<i64> = self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT l.fencing_token FROM scopes s JOIN leases l ON l.scope_id = s.id \
                     WHERE s.project = ?1 AND s.implementation = ?2 AND l.name = ?3 AND l.expires_at > ?4",
                )?
                .query_row(params![scope.project, scope.implementation, name.as_bytes(), now], |row| row.get(0))
                .optional()?)
        })?;
        match current {
            Some(current) if stored_u64("fencing_token", current)? == token => Ok(()),
            _ => Err(MemoryError::LeaseLost),
        }
    }

    // ---- entry writes ----

    /// Creates `key` with `value` only if no live entry has it; returns the new version.
    /// `ttl_ms` sets an expiry relative to now (0 = already expired).
    pub fn put_if_absent(
        &self,
        scope: &Scope,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<u64, MemoryError> {
        check_name("key", key)?;
        self.check_value(value)?;
        self.write(|tx, now| {
            let scope_row = ensure_scope(tx, scope)?;
            if let Some((version, _)) = live_entry(tx, scope_row.id, key, now)? {
                return Err(MemoryError::AlreadyExists(stored_u64("version", version)?));
            }
            let expires_at = ttl_ms.map(|ttl| deadline(now, ttl));
            self.insert_entry(tx, scope, key, value, expires_at, now)
        })
    }

    /// Replaces the value of `key` if its current version is `expected` (0 = the key must be absent,
    /// and is then created without expiry); returns the new version. An existing expiry is kept.
    pub fn compare_exchange(&self, scope: &Scope, key: &str, expected: u64, value: &[u8]) -> Result<u64, MemoryError> {
        check_name("key", key)?;
        self.check_value(value)?;
        self.write(|tx, now| {
            let scope_row = ensure_scope(tx, scope)?;
            match live_entry(tx, scope_row.id, key, now)? {
                None if expected == 0 => self.insert_entry(tx, scope, key, value, None, now),
                None => Err(MemoryError::VersionMismatch(0)),
                Some((version, _)) if stored_u64("version", version)? == expected => {
                    let next = version
                        .checked_add(1)
                        .ok_or_else(|| MemoryError::Storage(format!("version of key {key:?} is exhausted")))?;
                    tx.prepare_cached("UPDATE entries SET value = ?3, version = ?4 WHERE scope_id = ?1 AND key = ?2")?
                        .execute(params![scope_row.id, key.as_bytes(), value, next])?;
                    stored_u64("version", next)
                }
                Some((version, _)) => Err(MemoryError::VersionMismatch(stored_u64("version", version)?)),
            }
        })
    }

    /// Deletes `key`, only if its version is `expected` when given (otherwise `VersionMismatch` with
    /// the current version). Returns whether an entry was deleted: `false` when it was already absent
    /// or expired, so retrying a delete whose answer was lost is harmless.
    pub fn delete(&self, scope: &Scope, key: &str, expected: Option<u64>) -> Result<bool, MemoryError> {
        check_name("key", key)?;
        self.write(|tx, now| {
            let Some(scope_row) = find_scope(tx, scope)? else { return Ok(false) };
            let Some((version, _)) = live_entry(tx, scope_row.id, key, now)? else { return Ok(false) };
            let version = stored_u64("version", version)?;
            if let Some(expected) = expected {
                if expected != version {
                    return Err(MemoryError::VersionMismatch(version));
                }
            }
            delete_entry(tx, scope_row.id, key)?;
            Ok(true)
        })
    }

    /// Sets (`Some`, relative to now; 0 = expire now) or clears (`None`) the expiry of `key`.
    /// `NotFound` when the key is absent or already expired. The version does not change: it tracks
    /// the value, and a compare-exchange keeps the expiry.
    pub fn expire(&self, scope: &Scope, key: &str, ttl_ms: Option<u64>) -> Result<(), MemoryError> {
        check_name("key", key)?;
        self.write(|tx, now| {
            let Some(scope_row) = find_scope(tx, scope)? else { return Err(MemoryError::NotFound) };
            if live_entry(tx, scope_row.id, key, now)?.is_none() {
                return Err(MemoryError::NotFound);
            }
            let expires_at = ttl_ms.map(|ttl| deadline(now, ttl));
            tx.prepare_cached("UPDATE entries SET expires_at = ?3 WHERE scope_id = ?1 AND key = ?2")?
                .execute(params![scope_row.id, key.as_bytes(), expires_at])?;
            Ok(())
        })
    }

    // ---- journals ----

    /// Appends `data` to `journal`. With `expected_last`, succeeds only if the journal's last sequence
    /// equals it (0 = empty), else `SequenceMismatch(actual last)`.
    pub fn append_journal(
        &self,
        scope: &Scope,
        journal: &str,
        data: &[u8],
        expected_last: Option<u64>,
    ) -> Result<JournalReceipt, MemoryError> {
        check_name("journal name", journal)?;
        self.check_value(data)?;
        self.write(|tx, now| {
            let scope_row = ensure_scope(tx, scope)?;
            let last: i64 = tx
                .prepare_cached(
                    "SELECT coalesce(max(sequence), 0) FROM journal_records WHERE scope_id = ?1 AND journal = ?2",
                )?
                .query_row(params![scope_row.id, journal.as_bytes()], |row| row.get(0))?;
            let last_u64 = stored_u64("sequence", last)?;
            if let Some(expected) = expected_last {
                if expected != last_u64 {
                    return Err(MemoryError::SequenceMismatch(last_u64));
                }
            }
            if last_u64 >= self.config.limits.max_journal_records {
                return Err(MemoryError::QuotaExceeded(format!(
                    "journal {journal:?} holds {last_u64} records, the most one journal may hold"
                )));
            }
            let sequence = last + 1;
            tx.prepare_cached(
                "INSERT INTO journal_records (scope_id, journal, sequence, data, appended_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![scope_row.id, journal.as_bytes(), sequence, data, now])?;
            Ok(JournalReceipt { journal: journal.to_string(), sequence: stored_u64("sequence", sequence)? })
        })
    }

    // ---- leases ----

    /// Acquires lease `name` for `holder` for `ttl_ms` (1..=`max_lease_ttl_ms`).
    ///
    /// - Free or expired, `renew` = `None`: a new lease with a fencing token greater than any issued
    ///   before in the scope.
    /// - Live: `LeaseHeld(expires_at)`.
    /// - `renew` = `Some(token)`: extends the live lease if `token` is its token (same token, same
    ///   holder); otherwise `LeaseLost`, also when the lease lapsed, because the caller cannot know
    ///   what happened while it did not hold it.
    pub fn acquire_lease(
        &self,
        scope: &Scope,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        renew: Option<u64>,
    ) -> Result<Lease, MemoryError> {
        check_name("lease name", name)?;
        check_text("lease holder", holder, MAX_SCOPE_PART_BYTES)?;
        let max_ttl = self.config.limits.max_lease_ttl_ms;
        if ttl_ms == 0 || ttl_ms > max_ttl {
            return Err(MemoryError::QuotaExceeded(format!(
                "lease ttl of {ttl_ms} ms is outside the allowed 1..={max_ttl} ms"
            )));
        }
        self.write(|tx, now| {
            let scope_row = ensure_scope(tx, scope)?;
            let live = live_lease(tx, scope_row.id, name, now)?;
            let expires_at = deadline(now, ttl_ms);
            match (live, renew) {
                (Some(lease), Some(token)) if stored_u64("fencing_token", lease.token)? == token => {
                    tx.prepare_cached("UPDATE leases SET expires_at = ?3 WHERE scope_id = ?1 AND name = ?2")?
                        .execute(params![scope_row.id, name.as_bytes(), expires_at])?;
                    Ok(Lease {
                        name: name.to_string(),
                        holder: lease.holder,
                        fencing_token: token,
                        expires_at_ms: stored_u64("expires_at", expires_at)?,
                    })
                }
                (_, Some(_)) => Err(MemoryError::LeaseLost),
                (Some(lease), None) => Err(MemoryError::LeaseHeld(stored_u64("expires_at", lease.expires_at)?)),
                (None, None) => {
                    let token = scope_row
                        .lease_tokens
                        .checked_add(1)
                        .ok_or_else(|| MemoryError::Storage("the scope's fencing tokens are exhausted".into()))?;
                    tx.prepare_cached("UPDATE scopes SET lease_tokens = ?2 WHERE id = ?1")?
                        .execute(params![scope_row.id, token])?;
                    tx.prepare_cached(
                        "INSERT INTO leases (scope_id, name, holder, fencing_token, expires_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (scope_id, name) DO UPDATE SET \
                         holder = excluded.holder, fencing_token = excluded.fencing_token, \
                         expires_at = excluded.expires_at",
                    )?
                    .execute(params![scope_row.id, name.as_bytes(), holder, token, expires_at])?;
                    Ok(Lease {
                        name: name.to_string(),
                        holder: holder.to_string(),
                        fencing_token: stored_u64("fencing_token", token)?,
                        expires_at_ms: stored_u64("expires_at", expires_at)?,
                    })
                }
            }
        })
    }

    /// Releases lease `name` held with `token`; `LeaseLost` if `token` is not the live lease's.
    pub fn release_lease(&self, scope: &Scope, name: &str, token: u64) -> Result<(), MemoryError> {
        check_name("lease name", name)?;
        self.write(|tx, now| {
            let Some(scope_row) = find_scope(tx, scope)? else { return Err(MemoryError::LeaseLost) };
            match live_lease(tx, scope_row.id, name, now)? {
                Some(lease) if stored_u64("fencing_token", lease.token)? == token => {
                    tx.prepare_cached("DELETE FROM leases WHERE scope_id = ?1 AND name = ?2")?
                        .execute(params![scope_row.id, name.as_bytes()])?;
                    Ok(())
                }
                _ => Err(MemoryError::LeaseLost),
            }
        })
    }

    // ---- maintenance ----

    /// Removes every expired entry and lease, in batches of short transactions. Versions and fencing
    /// tokens stay unrepeatable: the scope counters keep their high-water marks.
    pub fn purge_expired(&self) -> Result<PurgeReport, MemoryError> {
        let mut report = PurgeReport::default();
        loop {
            let (entries, leases) = self.write(|tx, now| {
                let entries = tx
                    .prepare_cached(
                        "DELETE FROM entries WHERE rowid IN \
                         (SELECT rowid FROM entries WHERE expires_at <= ?1 LIMIT ?2)",
                    )?
                    .execute(params![now, PURGE_BATCH])?;
                let leases = tx
                    .prepare_cached(
                        "DELETE FROM leases WHERE (scope_id, name) IN \
                         (SELECT scope_id, name FROM leases WHERE expires_at <= ?1 LIMIT ?2)",
                    )?
                    .execute(params![now, PURGE_BATCH])?;
                Ok((entries, leases))
            })?;
            report.entries += entries as u64;
            report.leases += leases as u64;
            if (entries as i64) < PURGE_BATCH && (leases as i64) < PURGE_BATCH {
                return Ok(report);
            }
        }
    }

    // ---- internals ----

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    fn check_value(&self, value: &[u8]) -> Result<(), MemoryError> {
        let max = self.config.limits.max_value_bytes;
        if value.len() > max {
            return Err(MemoryError::QuotaExceeded(format!(
                "value is {} bytes; at most {max} are allowed",
                value.len()
            )));
        }
        Ok(())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the write connection, with the time read
    /// once inside the lock. An `Err` from `f` rolls back.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>, i64) -> Result<T, MemoryError>) -> Result<T, MemoryError> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx, self.now())?;
        tx.commit()?;
        Ok(out)
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a write drops its Transaction, which rolls back: the connection is fine.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a pooled read connection (opening one when the pool is empty) and puts the
    /// connection back afterwards, unless the pool is full.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, MemoryError>) -> Result<T, MemoryError> {
        let pooled = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.path)?;
                conn.busy_timeout(self.config.busy_timeout)?;
                conn.pragma_update(None, "query_only", true)?;
                conn.set_prepared_statement_cache_capacity(32);
                conn
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < self.config.read_pool_size {
            pool.push(conn);
        }
        out
    }

    /// Inserts a new entry at `floor + 1`, after making room within the scope's entry quota. Reads
    /// the scope row afresh: the caller's `live_entry` may just have retired an expired row.
    fn insert_entry(
        &self,
        tx: &Transaction<'_>,
        scope: &Scope,
        key: &str,
        value: &[u8],
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<u64, MemoryError> {
        let max = self.config.limits.max_entries_per_scope;
        let mut row = ensure_scope(tx, scope)?;
        if stored_u64("entry_count", row.entry_count)? >= max {
            tx.prepare_cached("DELETE FROM entries WHERE scope_id = ?1 AND expires_at <= ?2")?
                .execute(params![row.id, now])?;
            row = ensure_scope(tx, scope)?;
            if stored_u64("entry_count", row.entry_count)? >= max {
                return Err(MemoryError::QuotaExceeded(format!(
                    "scope {}/{} holds {max} entries, the most it may hold",
                    scope.project, scope.implementation
                )));
            }
        }
        let version = row
            .version_floor
            .checked_add(1)
            .ok_or_else(|| MemoryError::Storage("the scope's versions are exhausted".into()))?;
        tx.prepare_cached(
            "INSERT INTO entries (scope_id, key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![row.id, key.as_bytes(), value, version, expires_at])?;
        stored_u64("version", version)
    }
}

fn find_scope(tx: &Transaction<'_>, scope: &Scope) -> Result<Option<ScopeRow>, MemoryError> {
    Ok(tx
        .prepare_cached(
            "SELECT id, version_floor, entry_count, lease_tokens FROM scopes WHERE project = ?1 AND implementation = ?2",
        )?
        .query_row(params![scope.project, scope.implementation], |row| {
            Ok(ScopeRow { id: row.get(0)?, version_floor: row.get(1)?, entry_count: row.get(2)?, lease_tokens: row.get(3)? })
        })
        .optional()?)
}

fn ensure_scope(tx: &Transaction<'_>, scope: &Scope) -> Result<ScopeRow, MemoryError> {
    if let Some(row) = find_scope(tx, scope)? {
        return Ok(row);
    }
    tx.prepare_cached("INSERT INTO scopes (project, implementation) VALUES (?1, ?2)")?
        .execute(params![scope.project, scope.implementation])?;
    Ok(ScopeRow { id: tx.last_insert_rowid(), version_floor: 0, entry_count: 0, lease_tokens: 0 })
}

/// The live entry's (version, expires_at); an expired row is deleted on the way (raising the floor).
fn live_entry(
    tx: &Transaction<'_>,
    scope_id: i64,
    key: &str,
    now: i64,
) -> Result<Option<(i64, Option<i64>)>, MemoryError> {
    let row: Option<(i64, Option<i64>)> = tx
        .prepare_cached("SELECT version, expires_at FROM entries WHERE scope_id = ?1 AND key = ?2")?
        .query_row(params![scope_id, key.as_bytes()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    match row {
        Some((_, Some(expires_at))) if expires_at <= now => {
            delete_entry(tx, scope_id, key)?;
            Ok(None)
        }
        other => Ok(other),
    }
}

fn delete_entry(tx: &Transaction<'_>, scope_id: i64, key: &str) -> Result<(), MemoryError> {
    tx.prepare_cached("DELETE FROM entries WHERE scope_id = ?1 AND key = ?2")?
        .execute(params![scope_id, key.as_bytes()])?;
    Ok(())
}

fn live_lease(tx: &Transaction<'_>, scope_id: i64, name: &str, now: i64) -> Result<Option<LeaseRow>, MemoryError> {
    Ok(tx
        .prepare_cached(
            "SELECT holder, fencing_token, expires_at FROM leases WHERE scope_id = ?1 AND name = ?2 AND expires_at > ?3",
        )?
        .query_row(params![scope_id, name.as_bytes(), now], |row| {
            Ok(LeaseRow { holder: row.get(0)?, token: row.get(1)?, expires_at: row.get(2)? })
        })
        .optional()?)
}

/// `now + ttl`, saturating at the largest time SQLite can store.
fn deadline(now: i64, ttl_ms: u64) -> i64 {
    now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
}

/// A stored integer the schema keeps non-negative; a negative one means the file was edited.
fn stored_u64(column: &str, value: i64) -> Result<u64, MemoryError> {
    u64::try_from(value).map_err(|_| MemoryError::Storage(format!("stored {column} {value} is negative")))
}

/// The smallest byte string greater than every string starting with `prefix`; `None` for the empty
/// prefix (no upper bound). UTF-8 never contains 0xFF, but the loop handles it anyway.
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xFF {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

fn check_text(what: &str, value: &str, max: usize) -> Result<(), MemoryError> {
    if value.is_empty() {
        return Err(MemoryError::InvalidKey(format!("{what} is empty")));
    }
    if value.len() > max {
        return Err(MemoryError::InvalidKey(format!("{what} is {} bytes; at most {max} are allowed", value.len())));
    }
    if let Some(at) = value.bytes().position(|b| b == 0) {
        return Err(MemoryError::InvalidKey(format!("{what} contains a NUL byte at offset {at}")));
    }
    Ok(())
}

fn check_name(what: &str, value: &str) -> Result<(), MemoryError> {
    check_text(what, value, MAX_KEY_BYTES)
}

fn check_prefix(prefix: &str) -> Result<(), MemoryError> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_text("prefix", prefix, MAX_KEY_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::host::clock::ManualClock;
    use std::sync::Barrier;
    use std::thread;

    const T0: u64 = 1_700_000_000_000;

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        clock: Arc<ManualClock>,
        store: Arc<MemoryStore>,
    }

    fn fixture_with(config: MemoryConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.sqlite");
        let clock = Arc::new(ManualClock::new(T0));
        let store = Arc::new(MemoryStore::open_with(&path, clock.clone(), config).unwrap());
        Fixture { _dir: dir, path, clock, store }
    }

    fn fixture() -> Fixture {
        fixture_with(MemoryConfig::default())
    }

    fn scope(project: &str) -> Scope {
        Scope::new(project, "stripe-charge-adapter:1.0.0").unwrap()
    }

    #[test]
    fn scopes_never_see_each_others_keys() {
        let f = fixture();
        let (a, b) = (scope("alpha"), scope("beta"));
        let other_impl = Scope::new("alpha", "other-adapter:1.0.0").unwrap();
        assert_eq!(f.store.put_if_absent(&a, "k", b"from-a", None).unwrap(), 1);
        assert_eq!(f.store.get(&b, "k").unwrap(), None);
        assert_eq!(f.store.get(&other_impl, "k").unwrap(), None);
        assert!(f.store.get_snapshot(&b, "", None).unwrap().entries.is_empty());
        // The same key in another scope is an independent entry.
        assert_eq!(f.store.put_if_absent(&b, "k", b"from-b", None).unwrap(), 1);
        assert_eq!(f.store.compare_exchange(&b, "k", 1, b"b2").unwrap(), 2);
        assert_eq!(f.store.get(&a, "k").unwrap().unwrap().value, b"from-a");
        assert!(!f.store.delete(&other_impl, "k", None).unwrap());
        assert_eq!(f.store.expire(&other_impl, "k", Some(1)), Err(MemoryError::NotFound));
        assert_eq!(f.store.get(&a, "k").unwrap().unwrap().version, 1);
        // Journals and leases are scoped too.
        assert_eq!(f.store.append_journal(&a, "j", b"x", None).unwrap().sequence, 1);
        assert_eq!(f.store.append_journal(&b, "j", b"y", Some(0)).unwrap().sequence, 1);
        let lease = f.store.acquire_lease(&a, "l", "inv-a", 1_000, None).unwrap();
        f.store.acquire_lease(&b, "l", "inv-b", 1_000, None).unwrap();
        assert_eq!(f.store.check_fence(&other_impl, "l", lease.fencing_token), Err(MemoryError::LeaseLost));
        assert_eq!(f.store.release_lease(&other_impl, "l", lease.fencing_token), Err(MemoryError::LeaseLost));
    }

    #[test]
    fn compare_exchange_refuses_stale_versions_and_reports_the_current_one() {
        let f = fixture();
        let s = scope("p");
        assert_eq!(f.store.compare_exchange(&s, "k", 3, b"v"), Err(MemoryError::VersionMismatch(0)));
        assert_eq!(f.store.compare_exchange(&s, "k", 0, b"v1").unwrap(), 1, "expected 0 creates an absent key");
        assert_eq!(f.store.compare_exchange(&s, "k", 0, b"again"), Err(MemoryError::VersionMismatch(1)));
        assert_eq!(f.store.compare_exchange(&s, "k", 1, b"v2").unwrap(), 2);
        assert_eq!(f.store.compare_exchange(&s, "k", 1, b"stale"), Err(MemoryError::VersionMismatch(2)));
        let entry = f.store.get(&s, "k").unwrap().unwrap();
        assert_eq!((entry.value.as_slice(), entry.version, entry.expires_at_ms), (&b"v2"[..], 2, None));
        assert_eq!(f.store.put_if_absent(&s, "k", b"x", None), Err(MemoryError::AlreadyExists(2)));
    }

    #[test]
    fn conditional_delete() {
        let f = fixture();
        let s = scope("p");
        assert!(!f.store.delete(&s, "k", None).unwrap(), "deleting an absent key deletes nothing");
        assert!(!f.store.delete(&s, "k", Some(4)).unwrap());
        f.store.put_if_absent(&s, "k", b"v", None).unwrap();
        assert_eq!(f.store.delete(&s, "k", Some(7)), Err(MemoryError::VersionMismatch(1)));
        assert!(f.store.get(&s, "k").unwrap().is_some(), "a refused delete leaves the entry");
        assert!(f.store.delete(&s, "k", Some(1)).unwrap());
        assert_eq!(f.store.get(&s, "k").unwrap(), None);
    }

    #[test]
    fn versions_are_never_reused_after_delete_expiry_or_reopen() {
        let f = fixture();
        let s = scope("p");
        f.store.put_if_absent(&s, "k", b"a", None).unwrap();
        f.store.compare_exchange(&s, "k", 1, b"b").unwrap();
        f.store.compare_exchange(&s, "k", 2, b"c").unwrap();
        assert!(f.store.delete(&s, "k", None).unwrap());
        // A holder of version 3 from before the delete must never match the recreated key.
        let recreated = f.store.put_if_absent(&s, "k", b"new", None).unwrap();
        assert_eq!(recreated, 4);
        assert_eq!(f.store.compare_exchange(&s, "k", 3, b"stale"), Err(MemoryError::VersionMismatch(4)));

        // Expiry retires versions the same way, whether purged lazily by a write or by purge_expired.
        f.store.compare_exchange(&s, "k", 4, b"v5").unwrap();
        f.store.expire(&s, "k", Some(10)).unwrap();
        f.clock.advance(10);
        assert_eq!(f.store.compare_exchange(&s, "k", 0, b"fresh").unwrap(), 6);
        assert_eq!(f.store.put_if_absent(&s, "t", b"x", Some(5)).unwrap(), 6, "new keys start above the floor (5)");
        f.clock.advance(5);
        assert_eq!(f.store.purge_expired().unwrap(), PurgeReport { entries: 1, leases: 0 });
        assert_eq!(f.store.put_if_absent(&s, "t", b"y", None).unwrap(), 7, "the purge raised the floor to 6");

        // The floor survives a reopen.
        assert!(f.store.delete(&s, "t", None).unwrap());
        let path = f.path.clone();
        let clock = f.clock.clone();
        drop(f.store);
        let reopened = MemoryStore::open(&path, clock).unwrap();
        assert_eq!(reopened.get(&s, "k").unwrap().unwrap().version, 6);
        assert_eq!(reopened.put_if_absent(&s, "t", b"z", None).unwrap(), 8);
        // A scope that never retired anything still starts at 1.
        assert_eq!(reopened.put_if_absent(&scope("untouched"), "t", b"z", None).unwrap(), 1);
    }

    #[test]
    fn exactly_one_of_sixteen_racing_put_if_absent_wins() {
        let f = fixture();
        let s = scope("p");
        let barrier = Arc::new(Barrier::new(16));
        let handles: Vec<_> = (0..16u8)
            .map(|i| {
                let (store, s, barrier) = (f.store.clone(), s.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    store.put_if_absent(&s, "leader", &[i], None)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert_eq!(*winners[0], Ok(1));
        assert!(results.iter().filter(|r| r.is_err()).all(|r| *r == Err(MemoryError::AlreadyExists(1))));
    }

    #[test]
    fn concurrent_compare_exchange_increments_lose_no_update() {
        let f = fixture();
        let s = scope("p");
        const THREADS: u64 = 16;
        const EACH: u64 = 20;
        f.store.put_if_absent(&s, "counter", &0u64.to_le_bytes(), None).unwrap();
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (store, s) = (f.store.clone(), s.clone());
                thread::spawn(move || {
                    let mut conflicts = 0;
                    for _ in 0..EACH {
                        loop {
                            let entry = store.get(&s, "counter").unwrap().unwrap();
                            let n = u64::from_le_bytes(entry.value.try_into().unwrap());
                            match store.compare_exchange(&s, "counter", entry.version, &(n + 1).to_le_bytes()) {
                                Ok(_) => break,
                                Err(MemoryError::VersionMismatch(_)) => conflicts += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    conflicts
                })
            })
            .collect();
        let conflicts: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let entry = f.store.get(&s, "counter").unwrap().unwrap();
        assert_eq!(u64::from_le_bytes(entry.value.try_into().unwrap()), THREADS * EACH);
        assert_eq!(entry.version, 1 + THREADS * EACH, "one version per successful write");
        eprintln!("{conflicts} compare-exchange conflicts retried");
    }

    #[test]
    fn concurrent_journal_appends_are_gap_free_and_ordered() {
        let f = fixture();
        let s = scope("p");
        const THREADS: u64 = 8;
        const EACH: u64 = 25;
        let barrier = Arc::new(Barrier::new(THREADS as usize));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, s, barrier) = (f.store.clone(), s.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    (0..EACH)
                        .map(|i| {
                            store.append_journal(&s, "events", format!("{t}:{i}").as_bytes(), None).unwrap().sequence
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let seqs = h.join().unwrap();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one thread's appends are ordered: {seqs:?}");
            all.extend(seqs);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=THREADS * EACH).collect::<Vec<_>>());
        let records = f.store.read_journal(&s, "events", 1, u32::MAX).unwrap();
        assert_eq!(records.iter().map(|r| r.sequence).collect::<Vec<_>>(), (1..=THREADS * EACH).collect::<Vec<_>>());
        // Each thread's records appear in the order it appended them.
        for t in 0..THREADS {
            let mine: Vec<_> = records
                .iter()
                .filter_map(|r| {
                    String::from_utf8(r.data.clone()).unwrap().strip_prefix(&format!("{t}:")).map(String::from)
                })
                .collect();
            assert_eq!(mine, (0..EACH).map(|i| i.to_string()).collect::<Vec<_>>());
        }
        let n = THREADS * EACH;
        assert_eq!(f.store.append_journal(&s, "events", b"x", Some(n - 1)), Err(MemoryError::SequenceMismatch(n)));
        assert_eq!(f.store.append_journal(&s, "events", b"x", Some(n)).unwrap().sequence, n + 1);
        assert_eq!(f.store.append_journal(&s, "other", b"x", Some(3)), Err(MemoryError::SequenceMismatch(0)));
        let page = f.store.read_journal(&s, "events", n, 10).unwrap();
        assert_eq!(page.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![n, n + 1]);
        assert_eq!(page[1].appended_at_ms, T0);
        assert!(f.store.read_journal(&s, "missing", 1, 10).unwrap().is_empty());
    }

    #[test]
    fn leases_exclude_expire_and_fence_stale_holders() {
        let f = fixture();
        let s = scope("p");
        let first = f.store.acquire_lease(&s, "sync", "inv-1", 1_000, None).unwrap();
        assert_eq!(first.expires_at_ms, T0 + 1_000);
        assert_eq!(first.holder, "inv-1");
        f.store.check_fence(&s, "sync", first.fencing_token).unwrap();
        assert_eq!(
            f.store.acquire_lease(&s, "sync", "inv-2", 1_000, None),
            Err(MemoryError::LeaseHeld(T0 + 1_000)),
            "a live lease excludes another holder"
        );
        assert_eq!(f.store.acquire_lease(&s, "sync", "inv-1", 1_000, None), Err(MemoryError::LeaseHeld(T0 + 1_000)));

        // Renewal with the current token extends it and keeps the token.
        f.clock.advance(600);
        let renewed = f.store.acquire_lease(&s, "sync", "inv-1", 1_000, Some(first.fencing_token)).unwrap();
        assert_eq!((renewed.fencing_token, renewed.expires_at_ms), (first.fencing_token, T0 + 1_600));
        assert_eq!(
            f.store.acquire_lease(&s, "sync", "inv-2", 1_000, Some(first.fencing_token + 1)),
            Err(MemoryError::LeaseLost)
        );

        // After expiry another holder gets it with a larger token; the old token is fenced off.
        f.clock.advance(1_000);
        assert_eq!(f.store.check_fence(&s, "sync", first.fencing_token), Err(MemoryError::LeaseLost));
        assert_eq!(
            f.store.acquire_lease(&s, "sync", "inv-1", 1_000, Some(first.fencing_token)),
            Err(MemoryError::LeaseLost),
            "a lapsed lease cannot be renewed"
        );
        let second = f.store.acquire_lease(&s, "sync", "inv-2", 1_000, None).unwrap();
        assert!(second.fencing_token > first.fencing_token);
        assert_eq!(f.store.check_fence(&s, "sync", first.fencing_token), Err(MemoryError::LeaseLost));
        assert_eq!(f.store.release_lease(&s, "sync", first.fencing_token), Err(MemoryError::LeaseLost));
        assert_eq!(
            f.store.acquire_lease(&s, "sync", "inv-1", 1_000, Some(first.fencing_token)),
            Err(MemoryError::LeaseLost)
        );
        f.store.check_fence(&s, "sync", second.fencing_token).unwrap();

        // Release frees it at once; tokens keep growing after release and after purge.
        f.store.release_lease(&s, "sync", second.fencing_token).unwrap();
        assert_eq!(f.store.release_lease(&s, "sync", second.fencing_token), Err(MemoryError::LeaseLost));
        assert_eq!(f.store.check_fence(&s, "sync", second.fencing_token), Err(MemoryError::LeaseLost));
        let third = f.store.acquire_lease(&s, "sync", "inv-3", 50, None).unwrap();
        assert!(third.fencing_token > second.fencing_token);
        f.clock.advance(50);
        assert_eq!(f.store.purge_expired().unwrap(), PurgeReport { entries: 0, leases: 1 });
        let fourth = f.store.acquire_lease(&s, "sync", "inv-4", 50, None).unwrap();
        assert!(fourth.fencing_token > third.fencing_token);

        assert!(matches!(f.store.acquire_lease(&s, "x", "h", 0, None), Err(MemoryError::QuotaExceeded(_))));
        let too_long = f.store.limits().max_lease_ttl_ms + 1;
        assert!(matches!(f.store.acquire_lease(&s, "x", "h", too_long, None), Err(MemoryError::QuotaExceeded(_))));
        assert!(matches!(f.store.acquire_lease(&s, "x", "", 10, None), Err(MemoryError::InvalidKey(_))));
    }

    #[test]
    fn expired_entries_are_invisible_everywhere() {
        let f = fixture();
        let s = scope("p");
        assert_eq!(f.store.put_if_absent(&s, "session:a", b"a", Some(100)).unwrap(), 1);
        f.store.put_if_absent(&s, "session:b", b"b", None).unwrap();
        assert_eq!(f.store.get(&s, "session:a").unwrap().unwrap().expires_at_ms, Some(T0 + 100));
        f.clock.advance(99);
        assert!(f.store.get(&s, "session:a").unwrap().is_some());
        f.clock.advance(1);
        assert_eq!(f.store.get(&s, "session:a").unwrap(), None, "expires_at <= now is expired");
        let snap = f.store.get_snapshot(&s, "session:", None).unwrap();
        assert_eq!(snap.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), vec!["session:b"]);
        assert_eq!(f.store.compare_exchange(&s, "session:a", 1, b"x"), Err(MemoryError::VersionMismatch(0)));
        assert_eq!(f.store.expire(&s, "session:a", None), Err(MemoryError::NotFound));
        assert!(!f.store.delete(&s, "session:a", None).unwrap());
        assert_eq!(f.store.put_if_absent(&s, "session:a", b"again", None).unwrap(), 2);

        // expire(Some) sets a deadline, expire(None) clears it, and the version stays.
        f.store.expire(&s, "session:b", Some(10)).unwrap();
        assert_eq!(f.store.get(&s, "session:b").unwrap().unwrap().expires_at_ms, Some(T0 + 110));
        f.store.expire(&s, "session:b", None).unwrap();
        f.clock.advance(1_000);
        let b = f.store.get(&s, "session:b").unwrap().unwrap();
        assert_eq!((b.version, b.expires_at_ms), (1, None));
        // compare-exchange keeps an expiry; expire(Some(0)) expires now.
        f.store.expire(&s, "session:b", Some(500)).unwrap();
        f.store.compare_exchange(&s, "session:b", 1, b"b2").unwrap();
        assert_eq!(f.store.get(&s, "session:b").unwrap().unwrap().expires_at_ms, Some(T0 + 1_600));
        f.store.expire(&s, "session:b", Some(0)).unwrap();
        assert_eq!(f.store.get(&s, "session:b").unwrap(), None);
        assert_eq!(f.store.expire(&s, "never", Some(1)), Err(MemoryError::NotFound));
        // A huge TTL saturates instead of overflowing.
        f.store.put_if_absent(&s, "forever", b"f", Some(u64::MAX)).unwrap();
        assert_eq!(f.store.get(&s, "forever").unwrap().unwrap().expires_at_ms, Some(i64::MAX as u64));
    }

    #[test]
    fn snapshots_are_sorted_bounded_by_prefix_and_truncated() {
        let f = fixture_with(MemoryConfig {
            limits: MemoryLimits { max_snapshot_bytes: 40, max_snapshot_limit: 3, ..MemoryLimits::default() },
            ..MemoryConfig::default()
        });
        let s = scope("p");
        for key in ["b/2", "b/1", "a", "b", "b0", "c", "é/1", "é/2", "b/3"] {
            f.store.put_if_absent(&s, key, b"v", None).unwrap();
        }
        let snap = f.store.get_snapshot(&s, "b/", Some(10)).unwrap();
        assert_eq!(snap.prefix, "b/");
        assert_eq!(snap.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), vec!["b/1", "b/2", "b/3"]);
        assert!(!snap.truncated);
        let snap = f.store.get_snapshot(&s, "b/", Some(2)).unwrap();
        assert_eq!(snap.entries.len(), 2);
        assert!(snap.truncated);
        let snap = f.store.get_snapshot(&s, "é", None).unwrap();
        assert_eq!(snap.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), vec!["é/1", "é/2"]);
        let all = f.store.get_snapshot(&s, "", None).unwrap();
        assert_eq!(all.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), vec!["a", "b", "b/1"]);
        assert!(all.truncated, "the limit is lowered to max_snapshot_limit");
        let none = f.store.get_snapshot(&s, "a", Some(0)).unwrap();
        assert!(none.entries.is_empty() && none.truncated);
        assert!(!f.store.get_snapshot(&s, "zz", None).unwrap().truncated);

        // The byte budget stops the listing but always returns at least one entry.
        f.store.put_if_absent(&s, "big/1", &[7; 30], None).unwrap();
        f.store.put_if_absent(&s, "big/2", &[7; 30], None).unwrap();
        let snap = f.store.get_snapshot(&s, "big/", None).unwrap();
        assert_eq!((snap.entries.len(), snap.truncated), (1, true));
        let wide = f.store.get_snapshot(&s, "big/2", None).unwrap();
        assert_eq!((wide.entries.len(), wide.truncated), (1, false));
    }

    #[test]
    fn quotas_and_invalid_names_are_refused_without_writing() {
        let f = fixture_with(MemoryConfig {
            limits: MemoryLimits {
                max_entries_per_scope: 2,
                max_value_bytes: 16,
                max_journal_records: 2,
                ..MemoryLimits::default()
            },
            ..MemoryConfig::default()
        });
        let s = scope("p");
        let too_big = [0u8; 17];
        assert!(matches!(f.store.put_if_absent(&s, "k", &too_big, None), Err(MemoryError::QuotaExceeded(_))));
        assert!(matches!(f.store.compare_exchange(&s, "k", 0, &too_big), Err(MemoryError::QuotaExceeded(_))));
        assert!(matches!(f.store.append_journal(&s, "j", &too_big, None), Err(MemoryError::QuotaExceeded(_))));
        assert_eq!(f.store.get(&s, "k").unwrap(), None);

        f.store.put_if_absent(&s, "one", &[0; 16], None).unwrap();
        f.store.put_if_absent(&s, "two", b"", Some(10)).unwrap();
        let err = f.store.put_if_absent(&s, "three", b"x", None).unwrap_err();
        assert!(matches!(&err, MemoryError::QuotaExceeded(m) if m.contains("2 entries")), "{err}");
        assert!(matches!(f.store.compare_exchange(&s, "three", 0, b"x"), Err(MemoryError::QuotaExceeded(_))));
        // Updating an existing key is not a new entry; another scope has its own quota.
        f.store.compare_exchange(&s, "one", 1, b"1").unwrap();
        f.store.put_if_absent(&scope("q"), "three", b"x", None).unwrap();
        // An expired entry makes room.
        f.clock.advance(10);
        f.store.put_if_absent(&s, "three", b"x", None).unwrap();
        assert!(f.store.delete(&s, "one", None).unwrap());
        f.store.put_if_absent(&s, "four", b"x", None).unwrap();

        f.store.append_journal(&s, "j", b"1", None).unwrap();
        f.store.append_journal(&s, "j", b"2", None).unwrap();
        assert!(matches!(f.store.append_journal(&s, "j", b"3", None), Err(MemoryError::QuotaExceeded(_))));

        let long = "k".repeat(MAX_KEY_BYTES + 1);
        for bad in ["", "a\0b", long.as_str()] {
            assert!(matches!(f.store.get(&s, bad), Err(MemoryError::InvalidKey(_))), "{bad:?}");
            assert!(matches!(f.store.put_if_absent(&s, bad, b"", None), Err(MemoryError::InvalidKey(_))));
            assert!(matches!(f.store.compare_exchange(&s, bad, 0, b""), Err(MemoryError::InvalidKey(_))));
            assert!(matches!(f.store.delete(&s, bad, None), Err(MemoryError::InvalidKey(_))));
            assert!(matches!(f.store.expire(&s, bad, None), Err(MemoryError::InvalidKey(_))));
            assert!(matches!(f.store.append_journal(&s, bad, b"", None), Err(MemoryError::InvalidKey(_))));
            assert!(matches!(f.store.acquire_lease(&s, bad, "h", 10, None), Err(MemoryError::InvalidKey(_))));
            assert!(matches!(f.store.release_lease(&s, bad, 1), Err(MemoryError::InvalidKey(_))));
        }
        let err = f.store.get(&s, "a\0b").unwrap_err();
        assert_eq!(err.to_string(), "invalid key: key contains a NUL byte at offset 1");
        assert!(matches!(f.store.get_snapshot(&s, "a\0", None), Err(MemoryError::InvalidKey(_))));
        assert!(matches!(f.store.get_snapshot(&s, &long, None), Err(MemoryError::InvalidKey(_))));
        f.store.get(&s, &"k".repeat(MAX_KEY_BYTES)).unwrap();

        assert!(matches!(Scope::new("", "impl"), Err(MemoryError::InvalidKey(_))));
        assert!(matches!(Scope::new("p", "x".repeat(MAX_SCOPE_PART_BYTES + 1)), Err(MemoryError::InvalidKey(_))));
        assert!(matches!(Scope::new("p\0", "impl"), Err(MemoryError::InvalidKey(_))));
    }

    #[test]
    fn open_refuses_what_it_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
        let missing_dir = dir.path().join("no-such-dir").join("memory.sqlite");
        assert!(matches!(MemoryStore::open(&missing_dir, clock.clone()), Err(MemoryError::Storage(_))));

        let foreign = dir.path().join("foreign.sqlite");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch(
                "CREATE TABLE memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); \
                 INSERT INTO memory_meta VALUES ('schema', 'something-else/7');",
            )
            .unwrap();
        let err = MemoryStore::open(&foreign, clock.clone()).unwrap_err();
        assert!(matches!(&err, MemoryError::Storage(m) if m.contains("something-else/7")), "{err}");

        let not_sqlite = dir.path().join("garbage.sqlite");
        std::fs::write(&not_sqlite, vec![0x42; 4096]).unwrap();
        assert!(matches!(MemoryStore::open(&not_sqlite, clock), Err(MemoryError::Storage(_))));
    }

    #[test]
    fn the_database_refuses_versions_and_tokens_going_backwards() {
        let f = fixture();
        let s = scope("p");
        f.store.put_if_absent(&s, "k", b"v", None).unwrap();
        f.store.compare_exchange(&s, "k", 1, b"v2").unwrap();
        let lease = f.store.acquire_lease(&s, "l", "h", 100, None).unwrap();
        let conn = Connection::open(&f.path).unwrap();
        let err = conn.execute("UPDATE entries SET version = 1", []).unwrap_err();
        assert!(err.to_string().contains("only increase"), "{err}");
        let err = conn.execute("UPDATE leases SET fencing_token = 0", []).unwrap_err();
        assert!(err.to_string().contains("CHECK") || err.to_string().contains("only increase"), "{err}");
        conn.execute("UPDATE entries SET expires_at = -5", []).unwrap();
        let err = f.store.compare_exchange(&s, "k", 2, b"v3").unwrap_err();
        assert_eq!(err, MemoryError::VersionMismatch(0), "an expiry in the past means expired");
        f.store.check_fence(&s, "l", lease.fencing_token).unwrap();
    }

    #[test]
    fn another_process_holding_the_write_lock_makes_writes_unavailable() {
        let f = fixture_with(MemoryConfig { busy_timeout: Duration::from_millis(50), ..MemoryConfig::default() });
        let s = scope("p");
        f.store.put_if_absent(&s, "k", b"v", None).unwrap();
        let mut other = Connection::open(&f.path).unwrap();
        let tx = other.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        assert!(matches!(f.store.put_if_absent(&s, "x", b"v", None), Err(MemoryError::Unavailable(_))));
        assert_eq!(f.store.get(&s, "k").unwrap().unwrap().value, b"v", "reads go on under WAL");
        tx.rollback().unwrap();
        f.store.put_if_absent(&s, "x", b"v", None).unwrap();
    }
}
