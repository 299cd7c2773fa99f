//! The promises every event-log backend keeps, as test functions over a store any backend opens:
//! `storage::sqlite::log` and `storage::postgres::log` each run all of them
//! ([`log_semantics_tests!`]). Each reaches the store only through the [`EventStore`] port.

use std::sync::Arc;

use crate::events::envelope::{EventMetadata, GENESIS_PREV_HASH};
use crate::events::merkle::{self, Hash32};
use crate::events::store::{AppendOutcome, AppendRequest, EventStore, ExpectedVersion, ProposedEvent, StoreError};
use crate::events::tiles::StoredTree;

/// A fresh, empty log, and whatever must live as long as it.
pub(crate) struct Fixture {
    pub store: Arc<dyn EventStore>,
    pub _keep: Box<dyn std::any::Any>,
}

fn ev(id: &str) -> ProposedEvent {
    ProposedEvent {
        event_id: id.into(),
        event_type: "Test".into(),
        schema_version: 1,
        payload: serde_json::json!({"id": id}),
    }
}

pub(crate) fn append(
    store: &dyn EventStore,
    stream: &str,
    expected: ExpectedVersion,
    ids: &[&str],
) -> Result<AppendOutcome, StoreError> {
    store.append(AppendRequest::single(
        stream,
        expected,
        ids.iter().map(|i| ev(i)).collect(),
        EventMetadata::actor("test"),
    ))
}

/// The tree read from the stored tiles has the root of the events' own hashes, at `size` and at
/// a smaller size.
pub(crate) fn assert_tree_matches_the_events(store: &dyn EventStore, size: u64) {
    let leaves: Vec<Hash32> = store.event_hashes(1, size).unwrap().iter().map(merkle::leaf_hash).collect();
    assert_eq!(StoredTree::over(store, size).root().unwrap(), merkle::root(&leaves), "root at {size}");
    let half = size / 2 + 1;
    assert_eq!(StoredTree::over(store, half).root().unwrap(), merkle::root(&leaves[..half as usize]), "root at {half}");
}

/// `#[test]`s running every log test against the store `make()` opens.
macro_rules! log_semantics_tests {
    ($make:expr) => {
        log_semantics_tests!(@each $make; positions_and_stream_versions_are_gap_free_and_chained,
            a_conflicting_append_writes_nothing_and_a_repeat_is_idempotent,
            tiles_are_kept_with_the_events, concurrent_appends_with_the_same_expected_version_have_one_winner);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                $crate::storage::log_semantics::$name(&$make);
            }
        )*
    };
}
pub(crate) use log_semantics_tests;

pub(crate) fn positions_and_stream_versions_are_gap_free_and_chained(make: &dyn Fn() -> Fixture) {
    let f = make();
    let s = f.store.as_ref();
    append(s, "a", ExpectedVersion::NoStream, &["1", "2"]).unwrap();
    append(s, "b", ExpectedVersion::NoStream, &["3"]).unwrap();
    let out = append(s, "a", ExpectedVersion::Exact(2), &["4"]).unwrap();
    assert_eq!(out.events[0].position, 4);
    assert_eq!(out.events[0].stream_version, 3);
    assert_eq!(s.stream_version("a").unwrap(), Some(3));
    assert_eq!(s.event_by_id("3").unwrap().map(|e| e.position), Some(3));
    let mut prev = GENESIS_PREV_HASH;
    let mut n = 0;
    s.read_range(1, u64::MAX, &mut |e| {
        n += 1;
        assert_eq!(e.position, n);
        assert_eq!(e.prev_hash, prev);
        assert_eq!(e.compute_hash(), e.hash);
        prev = e.hash;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 4);
    assert_eq!(s.head().unwrap().map(|h| h.hash), Some(prev));
}

pub(crate) fn a_conflicting_append_writes_nothing_and_a_repeat_is_idempotent(make: &dyn Fn() -> Fixture) {
    let f = make();
    let s = f.store.as_ref();
    append(s, "a", ExpectedVersion::NoStream, &["1"]).unwrap();
    let err = append(s, "a", ExpectedVersion::NoStream, &["2"]).unwrap_err();
    assert!(matches!(err, StoreError::WrongExpectedVersion { actual: Some(1), .. }), "{err}");
    assert_eq!(s.head().unwrap().unwrap().position, 1);
    let again = append(s, "a", ExpectedVersion::NoStream, &["1"]).unwrap();
    assert!(again.idempotent_replay);
    assert_eq!(again.events[0].position, 1);
    // Mixing a stored id with a new one is refused, not half-applied.
    assert!(matches!(append(s, "a", ExpectedVersion::Any, &["1", "9"]), Err(StoreError::EventIdConflict { .. })));
    assert!(matches!(append(s, "a", ExpectedVersion::Any, &["9", "1"]), Err(StoreError::EventIdConflict { .. })));
    assert_eq!(s.head().unwrap().unwrap().position, 1);
}

pub(crate) fn tiles_are_kept_with_the_events(make: &dyn Fn() -> Fixture) {
    let f = make();
    let s = f.store.as_ref();
    // Appends of uneven sizes, so that tiles complete inside, at the end of and across groups.
    let mut n = 0u64;
    for batch in [1usize, 255, 1, 300, 65_000, 17] {
        let ids: Vec<String> = (0..batch).map(|i| format!("e{}", n + i as u64)).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        append(s, "a", ExpectedVersion::Any, &refs).unwrap();
        n += batch as u64;
        assert_tree_matches_the_events(s, n);
    }
    assert_eq!(s.tile(1, 0, 256).unwrap().len(), 256);
    assert_eq!(s.tile(2, 0, 1).unwrap().len(), 1);
}

pub(crate) fn concurrent_appends_with_the_same_expected_version_have_one_winner(make: &dyn Fn() -> Fixture) {
    let f = make();
    append(f.store.as_ref(), "a", ExpectedVersion::NoStream, &["0"]).unwrap();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let s = f.store.clone();
            std::thread::spawn(move || append(s.as_ref(), "a", ExpectedVersion::Exact(1), &[&format!("w{i}")]).is_ok())
        })
        .collect();
    let wins = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
    assert_eq!(wins, 1);
    assert_eq!(f.store.head().unwrap().unwrap().position, 2);
}
