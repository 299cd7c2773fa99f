//! Host memory on PostgreSQL: [`PostgresMemory`] implements the runtime's
//! [`MemoryStore`](crate::runtime::host::memory::MemoryStore) port with the semantics of
//! `storage::sqlite::memory`, for several nodes at once.
//!
//! - **No lost updates across nodes.** Every write is one transaction that first locks its scope's
//!   row (`memory_scopes`, created on first use by an upsert that returns it locked), so the
//!   read-check-write of put-if-absent, compare-exchange, conditional delete, journal append and
//!   lease acquisition on one scope is serialised across every node; scopes do not wait for each
//!   other. Reads are single statements, each from one snapshot.
//! - **Versions are never reused; fencing tokens strictly increase.** The scope row keeps the
//!   high-water mark of retired versions and the lease-token counter, updated under its lock; a
//!   trigger refuses either going backwards.
//! - **Expired means absent**, filtered on every read against this node's clock (keep node clocks
//!   in sync, as for any lease service); rows are removed lazily and by `purge_expired`, which takes
//!   the same scope locks in the same order as a write.
//!
//! A deadlock or serialisation failure is retried; a server that cannot be reached is
//! `Unavailable`.

use std::sync::Arc;

use postgres::error::SqlState;
use postgres::Transaction;

use super::Shared;
use crate::runtime::host::clock::Clock;
use crate::runtime::host::memory::{
    check_journal_name, check_key, check_lease_holder, check_lease_name, check_prefix, deadline_ms, Entry,
    JournalReceipt, JournalRecord, Lease, MemoryError, MemoryLimits, MemoryStore, PurgeReport, Scope, Snapshot,
};

/// Scopes purged per transaction by [`MemoryStore::purge_expired`].
const PURGE_BATCH: i64 = 100;
/// Attempts of a write that lost a deadlock or serialisation race.
const ATTEMPTS: u32 = 8;

pub struct PostgresMemory {
    db: Shared,
    clock: Arc<dyn Clock>,
    limits: MemoryLimits,
}

impl std::fmt::Debug for PostgresMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresMemory").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// A memory answer, or a database error still to be classified.
enum Fail {
    Memory(MemoryError),
    Sql(postgres::Error),
}

impl From<MemoryError> for Fail {
    fn from(e: MemoryError) -> Self {
        Fail::Memory(e)
    }
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Sql(e)
    }
}

fn sql_error(e: &postgres::Error) -> MemoryError {
    if e.is_closed() || e.as_db_error().is_none() {
        MemoryError::Unavailable(e.to_string())
    } else {
        MemoryError::Storage(crate::report::ErrorChain(e).to_string())
    }
}

fn retryable(e: &postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// What [`PostgresMemory::insert_entry`] stores.
struct NewEntry<'a> {
    key: &'a str,
    value: &'a [u8],
    expires_at: Option<i64>,
}

/// A listed entry: key, value, version, expiry.
type EntryRow = (Vec<u8>, Vec<u8>, i64, Option<i64>);

/// The scope row a write holds locked.
struct ScopeRow {
    id: i64,
    version_floor: i64,
    entry_count: i64,
    lease_tokens: i64,
}

fn scope_row(r: &postgres::Row) -> Result<ScopeRow, postgres::Error> {
    Ok(ScopeRow {
        id: r.try_get(0)?,
        version_floor: r.try_get(1)?,
        entry_count: r.try_get(2)?,
        lease_tokens: r.try_get(3)?,
    })
}

/// The scope's row, created if needed, locked until the transaction ends.
fn ensure_scope(tx: &mut Transaction<'_>, scope: &Scope) -> Result<ScopeRow, Fail> {
    let row = tx.query_one(
        "INSERT INTO memory_scopes (project, implementation) VALUES ($1, $2) \
         ON CONFLICT (project, implementation) DO UPDATE SET project = EXCLUDED.project \
         RETURNING id, version_floor, entry_count, lease_tokens",
        &[&scope.project(), &scope.implementation()],
    )?;
    Ok(scope_row(&row)?)
}

/// The scope's row locked, or `None` when the scope was never written.
fn find_scope(tx: &mut Transaction<'_>, scope: &Scope) -> Result<Option<ScopeRow>, Fail> {
    let row = tx.query_opt(
        "SELECT id, version_floor, entry_count, lease_tokens FROM memory_scopes \
         WHERE project = $1 AND implementation = $2 FOR UPDATE",
        &[&scope.project(), &scope.implementation()],
    )?;
    Ok(row.map(|r| scope_row(&r)).transpose()?)
}

/// The live entry's version; an expired row is retired on the way.
fn live_entry(tx: &mut Transaction<'_>, s: &mut ScopeRow, key: &str, now: i64) -> Result<Option<i64>, Fail> {
    let row = tx.query_opt(
        "SELECT version, expires_at FROM memory_entries WHERE scope_id = $1 AND key = $2",
        &[&s.id, &key.as_bytes()],
    )?;
    let Some(row) = row else { return Ok(None) };
    let (version, expires_at): (i64, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
    if expires_at.is_some_and(|t| t <= now) {
        delete_entry(tx, s, key, version)?;
        return Ok(None);
    }
    Ok(Some(version))
}

fn delete_entry(tx: &mut Transaction<'_>, s: &mut ScopeRow, key: &str, version: i64) -> Result<(), Fail> {
    tx.execute("DELETE FROM memory_entries WHERE scope_id = $1 AND key = $2", &[&s.id, &key.as_bytes()])?;
    s.entry_count -= 1;
    s.version_floor = s.version_floor.max(version);
    save_counters(tx, s)
}

fn save_counters(tx: &mut Transaction<'_>, s: &ScopeRow) -> Result<(), Fail> {
    tx.execute(
        "UPDATE memory_scopes SET version_floor = $2, entry_count = $3, lease_tokens = $4 WHERE id = $1",
        &[&s.id, &s.version_floor, &s.entry_count.max(0), &s.lease_tokens],
    )?;
    Ok(())
}

/// A live lease: (holder, token, expires_at).
fn live_lease(
    tx: &mut Transaction<'_>,
    scope_id: i64,
    name: &str,
    now: i64,
) -> Result<Option<(String, i64, i64)>, Fail> {
    let row = tx.query_opt(
        "SELECT holder, fencing_token, expires_at FROM memory_leases WHERE scope_id = $1 AND name = $2 AND expires_at > $3",
        &[&scope_id, &name.as_bytes(), &now],
    )?;
    Ok(row.map(|r| Ok::<_, postgres::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).transpose()?)
}

fn stored_u64(column: &str, value: i64) -> Result<u64, MemoryError> {
    u64::try_from(value).map_err(|_| MemoryError::Storage(format!("stored {column} {value} is negative")))
}

impl PostgresMemory {
    /// On a database the log has migrated.
    pub fn open(url: &str, clock: Arc<dyn Clock>, limits: MemoryLimits) -> Result<Self, MemoryError> {
        let db = Shared::open(url).map_err(|e| MemoryError::Unavailable(crate::report::ErrorChain(&e).to_string()))?;
        Ok(Self { db, clock, limits })
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Runs `f` in one transaction with the time read once at its start; retried when it lost a
    /// deadlock or serialisation race, rolled back on any error.
    fn write<T: Send>(
        &self,
        f: impl Fn(&mut Transaction<'_>, i64) -> Result<T, Fail> + Send + Sync,
    ) -> Result<T, MemoryError> {
        let mut answer: Option<Result<T, MemoryError>> = None;
        for _ in 0..ATTEMPTS {
            let attempt = self.db.with(|client| {
                let mut tx = client.transaction()?;
                let out = f(&mut tx, self.now());
                match out {
                    Ok(v) => {
                        tx.commit()?;
                        Ok(Ok(v))
                    }
                    Err(Fail::Memory(e)) => Ok(Err(Fail::Memory(e))),
                    Err(Fail::Sql(e)) => Err(e),
                }
            });
            match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(Fail::Memory(e))) => return Err(e),
                Ok(Err(Fail::Sql(e))) | Err(e) if retryable(&e) => {
                    answer = Some(Err(MemoryError::Unavailable(e.to_string())));
                    continue;
                }
                Ok(Err(Fail::Sql(e))) | Err(e) => return Err(sql_error(&e)),
            }
        }
        answer.unwrap_or_else(|| Err(MemoryError::Unavailable("the write kept losing races".into())))
    }

    fn read<T: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, MemoryError> {
        self.db.with(f).map_err(|e| sql_error(&e))
    }

    /// Inserts a new entry at `floor + 1`, within the scope's quota (expired rows make room).
    fn insert_entry(
        &self,
        tx: &mut Transaction<'_>,
        (s, scope): (&mut ScopeRow, &Scope),
        new: NewEntry<'_>,
        now: i64,
    ) -> Result<u64, Fail> {
        let NewEntry { key, value, expires_at } = new;
        let max = self.limits.max_entries_per_scope;
        if stored_u64("entry_count", s.entry_count)? >= max {
            let retired = tx.query(
                "DELETE FROM memory_entries WHERE scope_id = $1 AND expires_at <= $2 RETURNING version",
                &[&s.id, &now],
            )?;
            for row in &retired {
                s.version_floor = s.version_floor.max(row.try_get(0)?);
            }
            s.entry_count -= retired.len() as i64;
            if stored_u64("entry_count", s.entry_count.max(0))? >= max {
                save_counters(tx, s)?;
                return Err(self.limits.scope_full(scope).into());
            }
        }
        let version = s
            .version_floor
            .checked_add(1)
            .ok_or_else(|| MemoryError::Storage("the scope's versions are exhausted".into()))?;
        tx.execute(
            "INSERT INTO memory_entries (scope_id, key, value, version, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[&s.id, &key.as_bytes(), &value, &version, &expires_at],
        )?;
        s.entry_count += 1;
        save_counters(tx, s)?;
        Ok(stored_u64("version", version)?)
    }
}

impl MemoryStore for PostgresMemory {
    fn limits(&self) -> &MemoryLimits {
        &self.limits
    }

    fn get(&self, scope: &Scope, key: &str) -> Result<Option<Entry>, MemoryError> {
        check_key(key)?;
        let now = self.now();
        let row = self.read(|c| {
            c.query_opt(
                "SELECT e.value, e.version, e.expires_at FROM memory_scopes s JOIN memory_entries e ON e.scope_id = s.id \
                 WHERE s.project = $1 AND s.implementation = $2 AND e.key = $3 \
                 AND (e.expires_at IS NULL OR e.expires_at > $4)",
                &[&scope.project(), &scope.implementation(), &key.as_bytes(), &now],
            )?
            .map(|r| Ok((r.try_get::<_, Vec<u8>>(0)?, r.try_get::<_, i64>(1)?, r.try_get::<_, Option<i64>>(2)?)))
            .transpose()
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

    fn get_snapshot(&self, scope: &Scope, prefix: &str, limit: Option<u32>) -> Result<Snapshot, MemoryError> {
        check_prefix(prefix)?;
        let limit = self.limits.snapshot_limit(limit);
        let max_bytes = self.limits.max_snapshot_bytes;
        let now = self.now();
        // One more row than asked for tells whether the limit cut the listing short. Keys are bytea,
        // compared bytewise, so a prefix is a range: `key >= prefix` and, for the upper end,
        // `substring(key for len) = prefix` (PostgreSQL has no byte-string successor function).
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = self.read(|c| {
            c.query(
                "SELECT e.key, e.value, e.version, e.expires_at FROM memory_scopes s JOIN memory_entries e ON e.scope_id = s.id \
                 WHERE s.project = $1 AND s.implementation = $2 AND e.key >= $3 \
                 AND substring(e.key FROM 1 FOR length($3)) = $3 \
                 AND (e.expires_at IS NULL OR e.expires_at > $4) ORDER BY e.key LIMIT $5",
                &[&scope.project(), &scope.implementation(), &prefix.as_bytes(), &now, &fetch],
            )
        })?;
        let mut entries = Vec::new();
        let (mut bytes, mut truncated) = (0usize, false);
        for row in rows {
            let read = |row: &postgres::Row| -> Result<EntryRow, postgres::Error> {
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
            };
            let (key, value, version, expires_at) = read(&row).map_err(|e| sql_error(&e))?;
            let size = key.len() + value.len();
            if entries.len() == limit || (!entries.is_empty() && bytes + size > max_bytes) {
                truncated = true;
                break;
            }
            bytes += size;
            entries.push(Entry {
                key: String::from_utf8(key)
                    .map_err(|_| MemoryError::Storage("a stored key is not valid UTF-8".into()))?,
                value,
                version: stored_u64("version", version)?,
                expires_at_ms: expires_at.map(|t| stored_u64("expires_at", t)).transpose()?,
            });
        }
        Ok(Snapshot { prefix: prefix.to_string(), entries, truncated })
    }

    fn read_journal(
        &self,
        scope: &Scope,
        journal: &str,
        from_sequence: u64,
        limit: u32,
    ) -> Result<Vec<JournalRecord>, MemoryError> {
        check_journal_name(journal)?;
        let from = i64::try_from(from_sequence).unwrap_or(i64::MAX);
        let rows = self.read(|c| {
            c.query(
                "SELECT j.sequence, j.data, j.appended_at FROM memory_scopes s JOIN memory_journal j ON j.scope_id = s.id \
                 WHERE s.project = $1 AND s.implementation = $2 AND j.journal = $3 AND j.sequence >= $4 \
                 ORDER BY j.sequence LIMIT $5",
                &[&scope.project(), &scope.implementation(), &journal.as_bytes(), &from, &i64::from(limit)],
            )
        })?;
        rows.iter()
            .map(|r| {
                let get = |r: &postgres::Row| -> Result<(i64, Vec<u8>, i64), postgres::Error> {
                    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
                };
                let (sequence, data, at) = get(r).map_err(|e| sql_error(&e))?;
                Ok(JournalRecord {
                    sequence: stored_u64("sequence", sequence)?,
                    data,
                    appended_at_ms: stored_u64("appended_at", at)?,
                })
            })
            .collect()
    }

    fn check_fence(&self, scope: &Scope, name: &str, token: u64) -> Result<(), MemoryError> {
        check_lease_name(name)?;
        let now = self.now();
        let current: Option<i64> = self.read(|c| {
            c.query_opt(
                "SELECT l.fencing_token FROM memory_scopes s JOIN memory_leases l ON l.scope_id = s.id \
                 WHERE s.project = $1 AND s.implementation = $2 AND l.name = $3 AND l.expires_at > $4",
                &[&scope.project(), &scope.implementation(), &name.as_bytes(), &now],
            )?
            .map(|r| r.try_get(0))
            .transpose()
        })?;
        match current {
            Some(current) if stored_u64("fencing_token", current)? == token => Ok(()),
            _ => Err(MemoryError::LeaseLost),
        }
    }

    fn put_if_absent(&self, scope: &Scope, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<u64, MemoryError> {
        check_key(key)?;
        self.limits.check_value(value)?;
        self.write(|tx, now| {
            let mut s = ensure_scope(tx, scope)?;
            if let Some(version) = live_entry(tx, &mut s, key, now)? {
                return Err(MemoryError::AlreadyExists(stored_u64("version", version)?).into());
            }
            let expires_at = ttl_ms.map(|ttl| deadline_ms(now, ttl));
            self.insert_entry(tx, (&mut s, scope), NewEntry { key, value, expires_at }, now)
        })
    }

    fn compare_exchange(&self, scope: &Scope, key: &str, expected: u64, value: &[u8]) -> Result<u64, MemoryError> {
        check_key(key)?;
        self.limits.check_value(value)?;
        self.write(|tx, now| {
            let mut s = ensure_scope(tx, scope)?;
            match live_entry(tx, &mut s, key, now)? {
                None if expected == 0 => {
                    self.insert_entry(tx, (&mut s, scope), NewEntry { key, value, expires_at: None }, now)
                }
                None => Err(MemoryError::VersionMismatch(0).into()),
                Some(version) if stored_u64("version", version)? == expected => {
                    let next = version
                        .checked_add(1)
                        .ok_or_else(|| MemoryError::Storage(format!("version of key {key:?} is exhausted")))?;
                    tx.execute(
                        "UPDATE memory_entries SET value = $3, version = $4 WHERE scope_id = $1 AND key = $2",
                        &[&s.id, &key.as_bytes(), &value, &next],
                    )?;
                    Ok(stored_u64("version", next)?)
                }
                Some(version) => Err(MemoryError::VersionMismatch(stored_u64("version", version)?).into()),
            }
        })
    }

    fn delete(&self, scope: &Scope, key: &str, expected: Option<u64>) -> Result<bool, MemoryError> {
        check_key(key)?;
        self.write(|tx, now| {
            let Some(mut s) = find_scope(tx, scope)? else { return Ok(false) };
            let Some(version) = live_entry(tx, &mut s, key, now)? else { return Ok(false) };
            let current = stored_u64("version", version)?;
            if expected.is_some_and(|want| want != current) {
                return Err(MemoryError::VersionMismatch(current).into());
            }
            delete_entry(tx, &mut s, key, version)?;
            Ok(true)
        })
    }

    fn expire(&self, scope: &Scope, key: &str, ttl_ms: Option<u64>) -> Result<(), MemoryError> {
        check_key(key)?;
        self.write(|tx, now| {
            let Some(mut s) = find_scope(tx, scope)? else { return Err(MemoryError::NotFound.into()) };
            if live_entry(tx, &mut s, key, now)?.is_none() {
                return Err(MemoryError::NotFound.into());
            }
            let expires_at = ttl_ms.map(|ttl| deadline_ms(now, ttl));
            tx.execute(
                "UPDATE memory_entries SET expires_at = $3 WHERE scope_id = $1 AND key = $2",
                &[&s.id, &key.as_bytes(), &expires_at],
            )?;
            Ok(())
        })
    }

    fn append_journal(
        &self,
        scope: &Scope,
        journal: &str,
        data: &[u8],
        expected_last: Option<u64>,
    ) -> Result<JournalReceipt, MemoryError> {
        check_journal_name(journal)?;
        self.limits.check_value(data)?;
        self.write(|tx, now| {
            let s = ensure_scope(tx, scope)?;
            let last: i64 = tx
                .query_one(
                    "SELECT coalesce(max(sequence), 0) FROM memory_journal WHERE scope_id = $1 AND journal = $2",
                    &[&s.id, &journal.as_bytes()],
                )?
                .try_get(0)?;
            let last_u64 = stored_u64("sequence", last)?;
            if expected_last.is_some_and(|want| want != last_u64) {
                return Err(MemoryError::SequenceMismatch(last_u64).into());
            }
            self.limits.check_journal_room(journal, last_u64)?;
            let sequence = last + 1;
            tx.execute(
                "INSERT INTO memory_journal (scope_id, journal, sequence, data, appended_at) VALUES ($1, $2, $3, $4, $5)",
                &[&s.id, &journal.as_bytes(), &sequence, &data, &now],
            )?;
            Ok(JournalReceipt { journal: journal.to_string(), sequence: stored_u64("sequence", sequence)? })
        })
    }

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
        self.limits.check_lease_ttl(ttl_ms)?;
        self.write(|tx, now| {
            let mut s = ensure_scope(tx, scope)?;
            let live = live_lease(tx, s.id, name, now)?;
            let expires_at = deadline_ms(now, ttl_ms);
            match (live, renew) {
                (Some((holder, token, _)), Some(want)) if stored_u64("fencing_token", token)? == want => {
                    tx.execute(
                        "UPDATE memory_leases SET expires_at = $3 WHERE scope_id = $1 AND name = $2",
                        &[&s.id, &name.as_bytes(), &expires_at],
                    )?;
                    Ok(Lease {
                        name: name.to_string(),
                        holder,
                        fencing_token: want,
                        expires_at_ms: stored_u64("expires_at", expires_at)?,
                    })
                }
                (_, Some(_)) => Err(MemoryError::LeaseLost.into()),
                (Some((_, _, until)), None) => Err(MemoryError::LeaseHeld(stored_u64("expires_at", until)?).into()),
                (None, None) => {
                    s.lease_tokens = s
                        .lease_tokens
                        .checked_add(1)
                        .ok_or_else(|| MemoryError::Storage("the scope's fencing tokens are exhausted".into()))?;
                    save_counters(tx, &s)?;
                    tx.execute(
                        "INSERT INTO memory_leases (scope_id, name, holder, fencing_token, expires_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope_id, name) DO UPDATE SET \
                         holder = EXCLUDED.holder, fencing_token = EXCLUDED.fencing_token, expires_at = EXCLUDED.expires_at",
                        &[&s.id, &name.as_bytes(), &holder, &s.lease_tokens, &expires_at],
                    )?;
                    Ok(Lease {
                        name: name.to_string(),
                        holder: holder.to_string(),
                        fencing_token: stored_u64("fencing_token", s.lease_tokens)?,
                        expires_at_ms: stored_u64("expires_at", expires_at)?,
                    })
                }
            }
        })
    }

    fn release_lease(&self, scope: &Scope, name: &str, token: u64) -> Result<(), MemoryError> {
        check_lease_name(name)?;
        self.write(|tx, now| {
            let Some(s) = find_scope(tx, scope)? else { return Err(MemoryError::LeaseLost.into()) };
            match live_lease(tx, s.id, name, now)? {
                Some((_, current, _)) if stored_u64("fencing_token", current)? == token => {
                    tx.execute(
                        "DELETE FROM memory_leases WHERE scope_id = $1 AND name = $2",
                        &[&s.id, &name.as_bytes()],
                    )?;
                    Ok(())
                }
                _ => Err(MemoryError::LeaseLost.into()),
            }
        })
    }

    /// Scope by scope, each under its row lock (the order a write takes locks in), in batches.
    fn purge_expired(&self) -> Result<PurgeReport, MemoryError> {
        let mut report = PurgeReport::default();
        let mut after = 0i64;
        loop {
            let (scopes, entries, leases) = self.write(|tx, now| {
                let ids: Vec<i64> = tx
                    .query(
                        "SELECT id FROM memory_scopes s WHERE id > $1 AND (\
                           EXISTS (SELECT 1 FROM memory_entries e WHERE e.scope_id = s.id AND e.expires_at <= $2) OR \
                           EXISTS (SELECT 1 FROM memory_leases l WHERE l.scope_id = s.id AND l.expires_at <= $2)) \
                         ORDER BY id LIMIT $3 FOR UPDATE",
                        &[&after, &now, &PURGE_BATCH],
                    )?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                let (mut entries, mut leases) = (0u64, 0u64);
                for id in &ids {
                    let retired = tx.query(
                        "DELETE FROM memory_entries WHERE scope_id = $1 AND expires_at <= $2 RETURNING version",
                        &[id, &now],
                    )?;
                    let floor = retired.iter().map(|r| r.try_get::<_, i64>(0)).collect::<Result<Vec<_>, _>>()?;
                    tx.execute(
                        "UPDATE memory_scopes SET entry_count = greatest(entry_count - $2, 0), \
                         version_floor = greatest(version_floor, $3) WHERE id = $1",
                        &[id, &(floor.len() as i64), &floor.iter().copied().max().unwrap_or(0)],
                    )?;
                    entries += floor.len() as u64;
                    leases +=
                        tx.execute("DELETE FROM memory_leases WHERE scope_id = $1 AND expires_at <= $2", &[id, &now])?;
                }
                Ok((ids, entries, leases))
            })?;
            report.entries += entries;
            report.leases += leases;
            match scopes.last() {
                Some(last) if scopes.len() as i64 == PURGE_BATCH => after = *last,
                _ => return Ok(report),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::host::clock::ManualClock;
    use crate::storage::memory_semantics::{memory_semantics_tests, Fixture, T0};
    use crate::storage::postgres::server::PgServer;

    /// A fresh server and database per test, migrated as a node's first start does.
    fn fixture(limits: MemoryLimits) -> Fixture {
        let server = PgServer::start().unwrap();
        let url = server.database("memory").unwrap();
        crate::storage::postgres::schema::migrate(&mut crate::storage::postgres::connect(&url).unwrap()).unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let store = Arc::new(PostgresMemory::open(&url, clock.clone(), limits.clone()).unwrap());
        let reopen_clock = clock.clone();
        Fixture {
            clock,
            store,
            reopen: Box::new(move || {
                Arc::new(PostgresMemory::open(&url, reopen_clock.clone(), limits.clone()).unwrap())
            }),
            _keep: Box::new(server),
        }
    }

    memory_semantics_tests!(fixture);
}
