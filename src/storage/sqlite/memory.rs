//! The SQLite memory backend: [`SqliteMemory`] implements the runtime's
//! [`MemoryStore`](crate::runtime::host::memory::MemoryStore) port in its own database file (WAL),
//! beside the event log and never in it. The value types, the error, the argument checks and the
//! semantics every backend keeps are in `crate::runtime::host::memory`; this module is how SQLite
//! keeps them. Every table is keyed by a scope id.
//!
//! - **No lost updates.** Every write runs in one `BEGIN IMMEDIATE` transaction on the single write
//!   connection, so the read-check-write of put-if-absent, compare-exchange, conditional delete,
//!   journal append and lease acquisition is atomic, also against another process on the same file.
//!   Reads use a small pool of separate connections; WAL lets them run while a write commits.
//! - **Versions are never reused.** An entry is created at `floor + 1`, where `floor` is a per-scope
//!   high-water mark: a database trigger raises it to the version of every entry that is deleted or
//!   purged. A key that is deleted and recreated therefore starts above every version it ever had.
//!   In a scope where nothing was ever deleted or expired, new entries start at 1. This costs one
//!   row per scope instead of a tombstone per key ever written.
//! - **Fencing tokens strictly increase.** Tokens come from a per-scope counter, so released or
//!   expired lease rows can be purged without losing that property.
//! - **Expired means absent.** Every query filters on `expires_at > now`. Rows are removed lazily
//!   (when a write touches the key, when the scope hits its entry quota) and by
//!   [`MemoryStore::purge_expired`], in batches of short transactions.
//! - **Journals are gap-free.** Sequence numbers are assigned inside the write transaction.
//!
//! Durability defaults to `synchronous=FULL`: a version or fencing token handed out and then lost in
//! a power failure could be handed out again, which would break both guarantees above.
//!
//! SQLite errors become [`MemoryError::Unavailable`] when the database is busy or locked by another
//! process beyond the busy timeout, and [`MemoryError::Storage`] otherwise.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};

use crate::runtime::host::clock::Clock;
use crate::runtime::host::memory::{
    check_journal_name, check_key, check_lease_holder, check_lease_name, check_prefix, deadline_ms, Entry,
    JournalReceipt, JournalRecord, Lease, MemoryError, MemoryLimits, MemoryStore, PurgeReport, Scope, Snapshot,
};

#[cfg(test)]
mod tests;

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

/// Options for [`SqliteMemory::open_with`].
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

/// The memory database. `Send + Sync`: share one `Arc<SqliteMemory>` (as an `Arc<dyn MemoryStore>`)
/// among every invocation.
pub struct SqliteMemory {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    config: MemoryConfig,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMemory").field("path", &self.path).field("config", &self.config).finish_non_exhaustive()
    }
}

/// A failure inside this module: a memory answer, or a SQLite error still to be classified (at the
/// edge of [`SqliteMemory::read`] and [`SqliteMemory::write`], by [`Fail::into_memory`]).
enum Fail {
    Memory(MemoryError),
    Sql(rusqlite::Error),
}

impl From<MemoryError> for Fail {
    fn from(e: MemoryError) -> Self {
        Fail::Memory(e)
    }
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl Fail {
    fn into_memory(self) -> MemoryError {
        match self {
            Fail::Memory(e) => e,
            Fail::Sql(e) => sql_error(e),
        }
    }
}

/// Busy or locked beyond the busy timeout is `Unavailable` (retryable); anything else `Storage`.
fn sql_error(e: rusqlite::Error) -> MemoryError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => MemoryError::Unavailable(e.to_string()),
        _ => MemoryError::Storage(e.to_string()),
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

impl SqliteMemory {
    /// Opens (creating if needed) the memory database at `path` with default limits and durability.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, MemoryError> {
        Self::open_with(path, clock, MemoryConfig::default())
    }

    /// Opens (creating if needed) the memory database at `path`.
    pub fn open_with(path: &Path, clock: Arc<dyn Clock>, config: MemoryConfig) -> Result<Self, MemoryError> {
        let conn = Connection::open(path)
            .map_err(|e| MemoryError::Storage(format!("cannot open memory database {}: {e}", path.display())))?;
        let conn = Self::prepare_writer(path, conn, &config).map_err(Fail::into_memory)?;
        Ok(SqliteMemory {
            path: path.to_path_buf(),
            clock,
            config,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Sets the write connection up (WAL, durability) and creates or checks the schema.
    fn prepare_writer(path: &Path, conn: Connection, config: &MemoryConfig) -> Result<Connection, Fail> {
        conn.busy_timeout(config.busy_timeout)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(MemoryError::Storage(format!(
                "memory database {} cannot use WAL (journal_mode is {mode})",
                path.display()
            ))
            .into());
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
                ))
                .into());
            }
            tx.commit()?;
        }
        Ok(conn)
    }
}

impl MemoryStore for SqliteMemory {
    fn limits(&self) -> &MemoryLimits {
        &self.config.limits
    }

    // ---- reads ----

    fn get(&self, scope: &Scope, key: &str) -> Result<Option<Entry>, MemoryError> {
        check_key(key)?;
        let now = self.now();
        let row = self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT e.value, e.version, e.expires_at FROM scopes s JOIN entries e ON e.scope_id = s.id \
                     WHERE s.project = ?1 AND s.implementation = ?2 AND e.key = ?3 \
                     AND (e.expires_at IS NULL OR e.expires_at > ?4)",
                )?
                .query_row(params![scope.project(), scope.implementation(), key.as_bytes(), now], |row| {
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

    /// In one statement, hence from one consistent snapshot.
    fn get_snapshot(&self, scope: &Scope, prefix: &str, limit: Option<u32>) -> Result<Snapshot, MemoryError> {
        check_prefix(prefix)?;
        let limits = &self.config.limits;
        let limit = limits.snapshot_limit(limit);
        let now = self.now();
        self.read(|conn| {
            // One more row than asked for tells whether the limit cut the listing short.
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
            let upper = prefix_upper_bound(prefix.as_bytes());
            let select =
                "SELECT e.key, e.value, e.version, e.expires_at FROM scopes s JOIN entries e ON e.scope_id = s.id \
                 WHERE s.project = ?1 AND s.implementation = ?2 AND e.key >= ?3 \
                 AND (e.expires_at IS NULL OR e.expires_at > ?4)";
            let (project, implementation) = (scope.project(), scope.implementation());
            let mut stmt;
            let mut rows = match &upper {
                Some(upper) => {
                    stmt = conn.prepare_cached(&format!("{select} AND e.key < ?6 ORDER BY e.key LIMIT ?5"))?;
                    stmt.query(params![project, implementation, prefix.as_bytes(), now, fetch, upper])?
                }
                None => {
                    stmt = conn.prepare_cached(&format!("{select} ORDER BY e.key LIMIT ?5"))?;
                    stmt.query(params![project, implementation, prefix.as_bytes(), now, fetch])?
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

    fn read_journal(
        &self,
        scope: &Scope,
        journal: &str,
        from_sequence: u64,
        limit: u32,
    ) -> Result<Vec<JournalRecord>, MemoryError> {
        check_journal_name(journal)?;
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT j.sequence, j.data, j.appended_at FROM scopes s JOIN journal_records j ON j.scope_id = s.id \
                 WHERE s.project = ?1 AND s.implementation = ?2 AND j.journal = ?3 AND j.sequence >= ?4 \
                 ORDER BY j.sequence LIMIT ?5",
            )?;
            let from = i64::try_from(from_sequence).unwrap_or(i64::MAX);
            let mut rows = stmt.query(params![
                scope.project(),
                scope.implementation(),
                journal.as_bytes(),
                from,
                i64::from(limit)
            ])?;
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

    fn check_fence(&self, scope: &Scope, name: &str, token: u64) -> Result<(), MemoryError> {
        check_lease_name(name)?;
        let now = self.now();
        let current: Option<i64> = self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT l.fencing_token FROM scopes s JOIN leases l ON l.scope_id = s.id \
                     WHERE s.project = ?1 AND s.implementation = ?2 AND l.name = ?3 AND l.expires_at > ?4",
                )?
                .query_row(params![scope.project(), scope.implementation(), name.as_bytes(), now], |row| row.get(0))
                .optional()?)
        })?;
        match current {
            Some(current) if stored_u64("fencing_token", current)? == token => Ok(()),
            _ => Err(MemoryError::LeaseLost),
        }
    }

    // ---- entry writes ----

    fn put_if_absent(&self, scope: &Scope, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<u64, MemoryError> {
        check_key(key)?;
        self.config.limits.check_value(value)?;
        self.write(|tx, now| {
            let scope_row = ensure_scope(tx, scope)?;
            if let Some((version, _)) = live_entry(tx, scope_row.id, key, now)? {
                return Err(MemoryError::AlreadyExists(stored_u64("version", version)?).into());
            }
            let expires_at = ttl_ms.map(|ttl| deadline_ms(now, ttl));
            self.insert_entry(tx, scope, key, value, expires_at, now)
        })
    }

    fn compare_exchange(&self, scope: &Scope, key: &str, expected: u64, value: &[u8]) -> Result<u64, MemoryError> {
        check_key(key)?;
        self.config.limits.check_value(value)?;
        self.write(|tx, now| {
            let scope_row = ensure_scope(tx, scope)?;
            match live_entry(tx, scope_row.id, key, now)? {
                None if expected == 0 => self.insert_entry(tx, scope, key, value, None, now),
                None => Err(MemoryError::VersionMismatch(0).into()),
                Some((version, _)) if stored_u64("version", version)? == expected => {
                    let next = version
                        .checked_add(1)
                        .ok_or_else(|| MemoryError::Storage(format!("version of key {key:?} is exhausted")))?;
                    tx.prepare_cached("UPDATE entries SET value = ?3, version = ?4 WHERE scope_id = ?1 AND key = ?2")?
                        .execute(params![scope_row.id, key.as_bytes(), value, next])?;
                    Ok(stored_u64("version", next)?)
                }
                Some((version, _)) => Err(MemoryError::VersionMismatch(stored_u64("version", version)?).into()),
            }
        })
    }

    fn delete(&self, scope: &Scope, key: &str, expected: Option<u64>) -> Result<bool, MemoryError> {
        check_key(key)?;
        self.write(|tx, now| {
            let Some(scope_row) = find_scope(tx, scope)? else { return Ok(false) };
            let Some((version, _)) = live_entry(tx, scope_row.id, key, now)? else { return Ok(false) };
            let version = stored_u64("version", version)?;
            if let Some(expected) = expected {
                if expected != version {
                    return Err(MemoryError::VersionMismatch(version).into());
                }
            }
            delete_entry(tx, scope_row.id, key)?;
            Ok(true)
        })
    }

    fn expire(&self, scope: &Scope, key: &str, ttl_ms: Option<u64>) -> Result<(), MemoryError> {
        check_key(key)?;
        self.write(|tx, now| {
            let Some(scope_row) = find_scope(tx, scope)? else { return Err(MemoryError::NotFound.into()) };
            if live_entry(tx, scope_row.id, key, now)?.is_none() {
                return Err(MemoryError::NotFound.into());
            }
            let expires_at = ttl_ms.map(|ttl| deadline_ms(now, ttl));
            tx.prepare_cached("UPDATE entries SET expires_at = ?3 WHERE scope_id = ?1 AND key = ?2")?
                .execute(params![scope_row.id, key.as_bytes(), expires_at])?;
            Ok(())
        })
    }

    // ---- journals ----

    fn append_journal(
        &self,
        scope: &Scope,
        journal: &str,
        data: &[u8],
        expected_last: Option<u64>,
    ) -> Result<JournalReceipt, MemoryError> {
        check_journal_name(journal)?;
        self.config.limits.check_value(data)?;
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
                    return Err(MemoryError::SequenceMismatch(last_u64).into());
                }
            }
            self.config.limits.check_journal_room(journal, last_u64)?;
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

    fn acquire_lease(
        &self,
        scope: &Scope,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        renew: Option<u64>,
    ) -> Result<Lease, MemoryError> {
        check_lease_name(name)?;
        check_lease_holder(holder)?;
        self.config.limits.check_lease_ttl(ttl_ms)?;
        self.write(|tx, now| {
            let scope_row = ensure_scope(tx, scope)?;
            let live = live_lease(tx, scope_row.id, name, now)?;
            let expires_at = deadline_ms(now, ttl_ms);
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
                (_, Some(_)) => Err(MemoryError::LeaseLost.into()),
                (Some(lease), None) => Err(MemoryError::LeaseHeld(stored_u64("expires_at", lease.expires_at)?).into()),
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

    fn release_lease(&self, scope: &Scope, name: &str, token: u64) -> Result<(), MemoryError> {
        check_lease_name(name)?;
        self.write(|tx, now| {
            let Some(scope_row) = find_scope(tx, scope)? else { return Err(MemoryError::LeaseLost.into()) };
            match live_lease(tx, scope_row.id, name, now)? {
                Some(lease) if stored_u64("fencing_token", lease.token)? == token => {
                    tx.prepare_cached("DELETE FROM leases WHERE scope_id = ?1 AND name = ?2")?
                        .execute(params![scope_row.id, name.as_bytes()])?;
                    Ok(())
                }
                _ => Err(MemoryError::LeaseLost.into()),
            }
        })
    }

    // ---- maintenance ----

    /// In batches of short transactions, so a large purge never holds the write lock for long; the
    /// scope counters keep their high-water marks.
    fn purge_expired(&self) -> Result<PurgeReport, MemoryError> {
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
}

impl SqliteMemory {
    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the write connection, with the time read
    /// once inside the lock. An `Err` from `f` rolls back.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>, i64) -> Result<T, Fail>) -> Result<T, MemoryError> {
        let mut conn = self.writer();
        let run = |conn: &mut Connection| -> Result<T, Fail> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx, self.now())?;
            tx.commit()?;
            Ok(out)
        };
        run(&mut conn).map_err(Fail::into_memory)
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a write drops its Transaction, which rolls back: the connection is fine.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a pooled read connection (opening one when the pool is empty) and puts the
    /// connection back afterwards, unless the pool is full.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Fail>) -> Result<T, MemoryError> {
        let pooled = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self.open_reader().map_err(sql_error)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < self.config.read_pool_size {
            pool.push(conn);
        }
        out.map_err(Fail::into_memory)
    }

    fn open_reader(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(self.config.busy_timeout)?;
        conn.pragma_update(None, "query_only", true)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
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
    ) -> Result<u64, Fail> {
        let max = self.config.limits.max_entries_per_scope;
        let mut row = ensure_scope(tx, scope)?;
        if stored_u64("entry_count", row.entry_count)? >= max {
            tx.prepare_cached("DELETE FROM entries WHERE scope_id = ?1 AND expires_at <= ?2")?
                .execute(params![row.id, now])?;
            row = ensure_scope(tx, scope)?;
            if stored_u64("entry_count", row.entry_count)? >= max {
                return Err(self.config.limits.scope_full(scope).into());
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
        Ok(stored_u64("version", version)?)
    }
}

fn find_scope(tx: &Transaction<'_>, scope: &Scope) -> Result<Option<ScopeRow>, Fail> {
    Ok(tx
        .prepare_cached(
            "SELECT id, version_floor, entry_count, lease_tokens FROM scopes WHERE project = ?1 AND implementation = ?2",
        )?
        .query_row(params![scope.project(), scope.implementation()], |row| {
            Ok(ScopeRow { id: row.get(0)?, version_floor: row.get(1)?, entry_count: row.get(2)?, lease_tokens: row.get(3)? })
        })
        .optional()?)
}

fn ensure_scope(tx: &Transaction<'_>, scope: &Scope) -> Result<ScopeRow, Fail> {
    if let Some(row) = find_scope(tx, scope)? {
        return Ok(row);
    }
    tx.prepare_cached("INSERT INTO scopes (project, implementation) VALUES (?1, ?2)")?
        .execute(params![scope.project(), scope.implementation()])?;
    Ok(ScopeRow { id: tx.last_insert_rowid(), version_floor: 0, entry_count: 0, lease_tokens: 0 })
}

/// The live entry's (version, expires_at); an expired row is deleted on the way (raising the floor).
fn live_entry(tx: &Transaction<'_>, scope_id: i64, key: &str, now: i64) -> Result<Option<(i64, Option<i64>)>, Fail> {
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

fn delete_entry(tx: &Transaction<'_>, scope_id: i64, key: &str) -> Result<(), Fail> {
    tx.prepare_cached("DELETE FROM entries WHERE scope_id = ?1 AND key = ?2")?
        .execute(params![scope_id, key.as_bytes()])?;
    Ok(())
}

fn live_lease(tx: &Transaction<'_>, scope_id: i64, name: &str, now: i64) -> Result<Option<LeaseRow>, Fail> {
    Ok(tx
        .prepare_cached(
            "SELECT holder, fencing_token, expires_at FROM leases WHERE scope_id = ?1 AND name = ?2 AND expires_at > ?3",
        )?
        .query_row(params![scope_id, name.as_bytes(), now], |row| {
            Ok(LeaseRow { holder: row.get(0)?, token: row.get(1)?, expires_at: row.get(2)? })
        })
        .optional()?)
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
