//! The semantics every memory backend keeps, as test functions over a [`Fixture`] any backend
//! builds: `storage::sqlite::memory` and `storage::postgres::memory` each run all of them
//! ([`memory_semantics_tests!`]), so the two cannot drift apart. Each test reaches the store only
//! through the [`MemoryStore`] port.

use std::sync::{Arc, Barrier};
use std::thread;

use crate::runtime::host::clock::ManualClock;
use crate::runtime::host::memory::{
    MemoryError, MemoryLimits, MemoryStore, PurgeReport, Scope, MAX_KEY_BYTES, MAX_SCOPE_PART_BYTES,
};

pub(crate) const T0: u64 = 1_700_000_000_000;

/// A store under test, its clock (at [`T0`]), and how to open the same store again.
pub(crate) struct Fixture {
    pub clock: Arc<ManualClock>,
    pub store: Arc<dyn MemoryStore>,
    pub reopen: Box<dyn Fn() -> Arc<dyn MemoryStore>>,
    /// Whatever must live as long as the store (a temporary directory, a database server).
    pub _keep: Box<dyn std::any::Any>,
}

pub(crate) fn scope(project: &str) -> Scope {
    Scope::new(project, "stripe-charge-adapter:1.0.0").unwrap()
}

/// `#[test]`s running every semantic test against the fixture `make(limits)` builds.
macro_rules! memory_semantics_tests {
    ($make:expr) => {
        memory_semantics_tests!(@each $make; scopes_never_see_each_others_keys, compare_exchange_refuses_stale_versions_and_reports_the_current_one, conditional_delete, versions_are_never_reused_after_delete_expiry_or_reopen, exactly_one_of_sixteen_racing_put_if_absent_wins, concurrent_compare_exchange_increments_lose_no_update, concurrent_journal_appends_are_gap_free_and_ordered, leases_exclude_expire_and_fence_stale_holders, expired_entries_are_invisible_everywhere, snapshots_are_sorted_bounded_by_prefix_and_truncated, quotas_and_invalid_names_are_refused_without_writing);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                $crate::storage::memory_semantics::$name(&$make);
            }
        )*
    };
}
pub(crate) use memory_semantics_tests;

pub(crate) fn scopes_never_see_each_others_keys(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits::default());
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

pub(crate) fn compare_exchange_refuses_stale_versions_and_reports_the_current_one(
    make: &dyn Fn(MemoryLimits) -> Fixture,
) {
    let f = make(MemoryLimits::default());
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

pub(crate) fn conditional_delete(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits::default());
    let s = scope("p");
    assert!(!f.store.delete(&s, "k", None).unwrap(), "deleting an absent key deletes nothing");
    assert!(!f.store.delete(&s, "k", Some(4)).unwrap());
    f.store.put_if_absent(&s, "k", b"v", None).unwrap();
    assert_eq!(f.store.delete(&s, "k", Some(7)), Err(MemoryError::VersionMismatch(1)));
    assert!(f.store.get(&s, "k").unwrap().is_some(), "a refused delete leaves the entry");
    assert!(f.store.delete(&s, "k", Some(1)).unwrap());
    assert_eq!(f.store.get(&s, "k").unwrap(), None);
}

pub(crate) fn versions_are_never_reused_after_delete_expiry_or_reopen(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits::default());
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
    drop(f.store);
    let reopened = (f.reopen)();
    assert_eq!(reopened.get(&s, "k").unwrap().unwrap().version, 6);
    assert_eq!(reopened.put_if_absent(&s, "t", b"z", None).unwrap(), 8);
    // A scope that never retired anything still starts at 1.
    assert_eq!(reopened.put_if_absent(&scope("untouched"), "t", b"z", None).unwrap(), 1);
}

pub(crate) fn exactly_one_of_sixteen_racing_put_if_absent_wins(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits::default());
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

pub(crate) fn concurrent_compare_exchange_increments_lose_no_update(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits::default());
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

pub(crate) fn concurrent_journal_appends_are_gap_free_and_ordered(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits::default());
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
                    .map(|i| store.append_journal(&s, "events", format!("{t}:{i}").as_bytes(), None).unwrap().sequence)
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
            .filter_map(|r| String::from_utf8(r.data.clone()).unwrap().strip_prefix(&format!("{t}:")).map(String::from))
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

pub(crate) fn leases_exclude_expire_and_fence_stale_holders(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits::default());
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

pub(crate) fn expired_entries_are_invisible_everywhere(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits::default());
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

pub(crate) fn snapshots_are_sorted_bounded_by_prefix_and_truncated(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits { max_snapshot_bytes: 40, max_snapshot_limit: 3, ..MemoryLimits::default() });
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

pub(crate) fn quotas_and_invalid_names_are_refused_without_writing(make: &dyn Fn(MemoryLimits) -> Fixture) {
    let f = make(MemoryLimits {
        max_entries_per_scope: 2,
        max_value_bytes: 16,
        max_journal_records: 2,
        ..MemoryLimits::default()
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
