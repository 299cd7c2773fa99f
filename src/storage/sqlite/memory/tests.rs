//! Tests of the SQLite memory backend: every semantic test of `storage::memory_semantics`, and
//! three about SQLite itself (opening foreign files, the schema's own refusals, another process
//! holding the write lock).

use super::*;
use crate::runtime::host::clock::ManualClock;
use crate::storage::memory_semantics::{memory_semantics_tests, scope, Fixture, T0};

struct SqliteFixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: Arc<ManualClock>,
    store: Arc<dyn MemoryStore>,
}

fn fixture_with(config: MemoryConfig) -> SqliteFixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.sqlite");
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(SqliteMemory::open_with(&path, clock.clone(), config).unwrap());
    SqliteFixture { _dir: dir, path, clock, store }
}

fn fixture() -> SqliteFixture {
    fixture_with(MemoryConfig::default())
}

fn semantics_fixture(limits: MemoryLimits) -> Fixture {
    let f = fixture_with(MemoryConfig { limits, ..MemoryConfig::default() });
    let (path, clock) = (f.path.clone(), f.clock.clone());
    Fixture {
        clock: f.clock,
        store: f.store,
        reopen: Box::new(move || Arc::new(SqliteMemory::open(&path, clock.clone()).unwrap())),
        _keep: Box::new(f._dir),
    }
}

memory_semantics_tests!(semantics_fixture);

#[test]
fn open_refuses_what_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let missing_dir = dir.path().join("no-such-dir").join("memory.sqlite");
    assert!(matches!(SqliteMemory::open(&missing_dir, clock.clone()), Err(MemoryError::Storage(_))));

    let foreign = dir.path().join("foreign.sqlite");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch(
            "CREATE TABLE memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); \
             INSERT INTO memory_meta VALUES ('schema', 'something-else/7');",
        )
        .unwrap();
    let err = SqliteMemory::open(&foreign, clock.clone()).unwrap_err();
    assert!(matches!(&err, MemoryError::Storage(m) if m.contains("something-else/7")), "{err}");

    let not_sqlite = dir.path().join("garbage.sqlite");
    std::fs::write(&not_sqlite, vec![0x42; 4096]).unwrap();
    assert!(matches!(SqliteMemory::open(&not_sqlite, clock), Err(MemoryError::Storage(_))));
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
