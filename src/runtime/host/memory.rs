//! The connector memory host service: durable key/value entries, journals and leases behind the
//! `vadyl:connector/memory` WIT interface (`wit/worlds/connector/memory.wit`).
//!
//! This module is backend-neutral: the value types, [`MemoryError`], the argument checks every
//! backend shares, and the [`MemoryStore`] port whose doc states the semantics a backend must keep.
//! The SQLite implementation is `storage::sqlite::memory::SqliteMemory` (wired in by the
//! composition root, `storage::open_with`); the runtime and the application only ever hold an
//! `Arc<dyn MemoryStore>`.
//!
//! Memory is operational state, not history, so it never goes into the event log. Everything is
//! scoped per (project, implementation): no operation takes a key without its [`Scope`], so one
//! scope can never read or write another's keys.
//!
//! Times are milliseconds since the Unix epoch, read from the shared
//! [`Clock`](super::clock::Clock) once per operation. The WIT `timestamp` is `ms / 1000` seconds and
//! `(ms % 1000) * 1_000_000` nanoseconds.

/// Longest key, journal name, lease name or prefix, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest project or implementation name in a [`Scope`], and longest lease holder, in bytes.
pub const MAX_SCOPE_PART_BYTES: usize = 256;

/// The memory port: what the host offers a guest through the Memory* imports, over any backend.
///
/// Every method takes the [`Scope`] it works in and never reaches outside it. A backend must keep
/// these guarantees (the WIT promises them to guests; the shared tests of the SQLite backend in
/// `storage/sqlite/memory/tests.rs` call only these methods, so another backend can run them too):
///
/// - **Arguments first.** Each operation checks its arguments with the helpers of this module
///   ([`check_key`], [`check_journal_name`], [`check_lease_name`], [`check_lease_holder`],
///   [`check_prefix`], and the [`MemoryLimits`] checks), in argument order, before it reads or writes
///   anything, so a refused call changes nothing and every backend refuses with the same error.
/// - **No lost updates.** The read-check-write of put-if-absent, compare-exchange, conditional
///   delete, expire, journal append and lease acquisition is atomic: against other threads and
///   against other processes sharing the backend. Exactly one of many racing `put_if_absent` calls
///   for one key wins; every other gets `AlreadyExists(winner's version)`.
/// - **Versions are never reused.** A key's version strictly increases on every write. A key that
///   is deleted or expires and is then recreated starts above every version it ever had, so a stale
///   `expected` version can never match again (no ABA). In a scope where nothing was ever deleted or
///   expired, new entries start at 1 (SQLite keeps one per-scope high-water mark for this).
/// - **Journals are gap-free and ordered.** Sequence numbers per (scope, journal) are 1, 2, 3, …
///   with no gap and no repeat, assigned atomically with the append; journals are never trimmed.
/// - **Leases carry fencing tokens.** A live lease excludes every other acquisition; a new holder
///   always gets a token greater than every token issued before in the scope (for any lease), also
///   after releases, expiry and purges. A renewal keeps the token.
/// - **Expired means absent, everywhere.** An entry or lease whose expiry is `<= now` is invisible
///   to every operation (reads, snapshots, compare-exchange, delete, expire, fences, quotas), whether
///   or not it has been removed yet. [`MemoryStore::purge_expired`] removes them; the host should
///   call it periodically.
/// - **Durable once answered.** A version, sequence or fencing token handed out survives the process
///   being killed (SQLite's default durability also survives power loss); one lost and then handed
///   out again would break the guarantees above.
pub trait MemoryStore: Send + Sync {
    /// The limits this store enforces.
    fn limits(&self) -> &MemoryLimits;

    /// Reads one entry; `None` when absent or expired.
    fn get(&self, scope: &Scope, key: &str) -> Result<Option<Entry>, MemoryError>;

    /// Reads every live entry whose key starts with `prefix` (empty = all) from one consistent
    /// snapshot, sorted by key (byte order). `limit` is resolved by [`MemoryLimits::snapshot_limit`];
    /// the listing also stops before `max_snapshot_bytes` of keys and values, but always returns at
    /// least one entry. `truncated` says whether either cut it short.
    fn get_snapshot(&self, scope: &Scope, prefix: &str, limit: Option<u32>) -> Result<Snapshot, MemoryError>;

    /// Reads up to `limit` records of `journal` starting at sequence `from_sequence`, in order. For
    /// the host and audit; guests only append.
    fn read_journal(
        &self,
        scope: &Scope,
        journal: &str,
        from_sequence: u64,
        limit: u32,
    ) -> Result<Vec<JournalRecord>, MemoryError>;

    /// Succeeds only if `token` is the fencing token of the live lease `name` at this instant, else
    /// `LeaseLost`. A host guards a side effect with it; the lease can still lapse right after, so a
    /// resource that must be fenced strictly should itself compare tokens.
    fn check_fence(&self, scope: &Scope, name: &str, token: u64) -> Result<(), MemoryError>;

    /// Creates `key` with `value` only if no live entry has it (else `AlreadyExists(version)`);
    /// returns the new version. `ttl_ms` sets an expiry relative to now (0 = already expired, see
    /// [`deadline_ms`]). Refuses a new entry beyond `max_entries_per_scope` live entries.
    fn put_if_absent(&self, scope: &Scope, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<u64, MemoryError>;

    /// Replaces the value of `key` if its current version is `expected` (0 = the key must be absent,
    /// and is then created without expiry); returns the new version. An existing expiry is kept.
    /// Otherwise `VersionMismatch(current)`, 0 meaning absent.
    fn compare_exchange(&self, scope: &Scope, key: &str, expected: u64, value: &[u8]) -> Result<u64, MemoryError>;

    /// Deletes `key`, only if its version is `expected` when given (otherwise `VersionMismatch` with
    /// the current version). Returns whether an entry was deleted: `false` when it was already absent
    /// or expired, so retrying a delete whose answer was lost is harmless.
    fn delete(&self, scope: &Scope, key: &str, expected: Option<u64>) -> Result<bool, MemoryError>;

    /// Sets (`Some`, relative to now; 0 = expire now) or clears (`None`) the expiry of `key`.
    /// `NotFound` when the key is absent or already expired. The version does not change: it tracks
    /// the value, and a compare-exchange keeps the expiry.
    fn expire(&self, scope: &Scope, key: &str, ttl_ms: Option<u64>) -> Result<(), MemoryError>;

    /// Appends `data` to `journal` and returns its sequence number. With `expected_last`, succeeds
    /// only if the journal's last sequence equals it (0 = empty), else `SequenceMismatch(actual
    /// last)`. Refuses an append beyond `max_journal_records`.
    fn append_journal(
        &self,
        scope: &Scope,
        journal: &str,
        data: &[u8],
        expected_last: Option<u64>,
    ) -> Result<JournalReceipt, MemoryError>;

    /// Acquires lease `name` for `holder` for `ttl_ms` (1..=`max_lease_ttl_ms`).
    ///
    /// - Free or expired, `renew` = `None`: a new lease with a fencing token greater than any issued
    ///   before in the scope.
    /// - Live: `LeaseHeld(expires_at)`.
    /// - `renew` = `Some(token)`: extends the live lease if `token` is its token (same token, same
    ///   holder); otherwise `LeaseLost`, also when the lease lapsed, because the caller cannot know
    ///   what happened while it did not hold it.
    fn acquire_lease(
        &self,
        scope: &Scope,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        renew: Option<u64>,
    ) -> Result<Lease, MemoryError>;

    /// Releases lease `name` held with `token`; `LeaseLost` if `token` is not the live lease's.
    fn release_lease(&self, scope: &Scope, name: &str, token: u64) -> Result<(), MemoryError>;

    /// Removes every expired entry and lease. Versions and fencing tokens stay unrepeatable.
    fn purge_expired(&self) -> Result<PurgeReport, MemoryError>;
}

/// Failure of a memory operation. The first ten cases mirror the WIT `memory-error` variant one to
/// one; [`MemoryError::Storage`] is a backend failure the host maps as it sees fit.
///
/// Backend-neutral on purpose: a backend turns its own errors into [`MemoryError::Unavailable`]
/// (the backend is busy or locked; the call may be retried) or [`MemoryError::Storage`] (anything
/// else), keeping the message, so the host and the guest see the same cases whatever stores the
/// memory. The cases carry text rather than a boxed source so the type stays `Clone + Eq`: the host
/// records every answer on the invocation's tape and compares them on replay.
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
    /// The backend is locked by another process beyond its busy timeout; the call may be retried.
    #[error("memory store temporarily unavailable, retry: {0}")]
    Unavailable(String),
    /// The backend failed or holds data this code did not write.
    #[error("memory store failure: {0}")]
    Storage(String),
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

/// Size and count limits, the same for every backend. Every limit is checked before anything is
/// written.
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

impl MemoryLimits {
    /// Refuses an entry value or journal record larger than `max_value_bytes`.
    pub fn check_value(&self, value: &[u8]) -> Result<(), MemoryError> {
        let max = self.max_value_bytes;
        if value.len() > max {
            return Err(MemoryError::QuotaExceeded(format!(
                "value is {} bytes; at most {max} are allowed",
                value.len()
            )));
        }
        Ok(())
    }

    /// Refuses a lease ttl outside 1..=`max_lease_ttl_ms`.
    pub fn check_lease_ttl(&self, ttl_ms: u64) -> Result<(), MemoryError> {
        let max_ttl = self.max_lease_ttl_ms;
        if ttl_ms == 0 || ttl_ms > max_ttl {
            return Err(MemoryError::QuotaExceeded(format!(
                "lease ttl of {ttl_ms} ms is outside the allowed 1..={max_ttl} ms"
            )));
        }
        Ok(())
    }

    /// The number of entries a snapshot returns at most: the requested limit (or
    /// `default_snapshot_limit`), lowered to `max_snapshot_limit`.
    pub fn snapshot_limit(&self, requested: Option<u32>) -> usize {
        requested.unwrap_or(self.default_snapshot_limit).min(self.max_snapshot_limit) as usize
    }

    /// Refuses an append to a journal that already holds `records` records when that is the most
    /// one journal may hold.
    pub fn check_journal_room(&self, journal: &str, records: u64) -> Result<(), MemoryError> {
        if records >= self.max_journal_records {
            return Err(MemoryError::QuotaExceeded(format!(
                "journal {journal:?} holds {records} records, the most one journal may hold"
            )));
        }
        Ok(())
    }

    /// The refusal of a new entry in a scope that holds `max_entries_per_scope` live entries (a
    /// backend counts only live ones: it removes or ignores expired entries before refusing).
    pub fn scope_full(&self, scope: &Scope) -> MemoryError {
        MemoryError::QuotaExceeded(format!(
            "scope {}/{} holds {} entries, the most it may hold",
            scope.project, scope.implementation, self.max_entries_per_scope
        ))
    }
}

/// `now_ms + ttl_ms`, saturating at `i64::MAX`: every time a backend stores is a signed 64-bit
/// count of ms, so a huge TTL means "as late as can be stored" rather than an overflow.
pub fn deadline_ms(now_ms: i64, ttl_ms: u64) -> i64 {
    now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
}

/// Checks an entry key (non-empty, at most [`MAX_KEY_BYTES`], no NUL).
pub fn check_key(key: &str) -> Result<(), MemoryError> {
    check_text("key", key, MAX_KEY_BYTES)
}

/// Checks a journal name (non-empty, at most [`MAX_KEY_BYTES`], no NUL).
pub fn check_journal_name(journal: &str) -> Result<(), MemoryError> {
    check_text("journal name", journal, MAX_KEY_BYTES)
}

/// Checks a lease name (non-empty, at most [`MAX_KEY_BYTES`], no NUL).
pub fn check_lease_name(name: &str) -> Result<(), MemoryError> {
    check_text("lease name", name, MAX_KEY_BYTES)
}

/// Checks a lease holder (non-empty, at most [`MAX_SCOPE_PART_BYTES`], no NUL).
pub fn check_lease_holder(holder: &str) -> Result<(), MemoryError> {
    check_text("lease holder", holder, MAX_SCOPE_PART_BYTES)
}

/// Checks a snapshot prefix: empty (everything), or like a key.
pub fn check_prefix(prefix: &str) -> Result<(), MemoryError> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_text("prefix", prefix, MAX_KEY_BYTES)
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
