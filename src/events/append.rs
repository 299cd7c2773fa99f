//! What every backend decides the same way when it appends: the checks on a request, the sealing of
//! a proposed event into a chained, hashed one, and telling an idempotent retry from a conflict.
//! The backends (`storage::sqlite::log`, `storage::postgres::log`) only read and write rows around
//! these decisions, so that SQLite and PostgreSQL cannot drift apart on what an append means.

use std::collections::HashSet;

use super::envelope::{canonical_json, EventMetadata, RecordedEvent, GENESIS_PREV_HASH};
use super::store::{AppendOutcome, AppendRequest, Head, ProposedEvent, StoreError, StreamAppend};

/// Refuses a request no backend could store: no events, an id or a stream twice, schema version 0.
pub fn validate(request: &AppendRequest) -> Result<(), StoreError> {
    if request.event_count() == 0 {
        return Err(StoreError::InvalidAppend("an append must carry at least one event".into()));
    }
    let mut ids = HashSet::new();
    let mut streams = HashSet::new();
    for s in &request.streams {
        if !streams.insert(s.stream_id.as_str()) {
            return Err(StoreError::InvalidAppend(format!("stream {} appears twice in one append", s.stream_id)));
        }
        for e in &s.events {
            if !ids.insert(e.event_id.as_str()) {
                return Err(StoreError::InvalidAppend(format!("event id {} appears twice in one append", e.event_id)));
            }
            if e.schema_version == 0 {
                return Err(StoreError::InvalidAppend("schema versions start at 1".into()));
            }
        }
    }
    Ok(())
}

/// Whether `stream`'s expected version admits its `current` one; the version its events start
/// after when it does.
pub fn admit(stream: &StreamAppend, current: Option<u64>) -> Result<u64, StoreError> {
    if stream.expected.admits(current) {
        Ok(current.unwrap_or(0))
    } else {
        Err(StoreError::WrongExpectedVersion {
            stream_id: stream.stream_id.clone(),
            expected: stream.expected,
            actual: current,
        })
    }
}

/// The next event of the chain after `head`: position, `prevHash`, canonical payload and `hash`.
pub fn seal(
    proposed: &ProposedEvent,
    stream_id: &str,
    stream_version: u64,
    head: Option<Head>,
    recorded_at: &str,
    metadata: &EventMetadata,
) -> Result<RecordedEvent, StoreError> {
    let (position, prev_hash) = match head {
        Some(h) => (h.position + 1, h.hash),
        None => (1, GENESIS_PREV_HASH),
    };
    let payload = canonical_json(&proposed.payload)
        .map_err(|e| StoreError::InvalidAppend(format!("payload cannot be canonicalized: {e}")))?;
    let mut event = RecordedEvent {
        position,
        event_id: proposed.event_id.clone(),
        stream_id: stream_id.to_owned(),
        stream_version,
        event_type: proposed.event_type.clone(),
        schema_version: proposed.schema_version,
        recorded_at: recorded_at.to_owned(),
        metadata: metadata.clone(),
        payload,
        prev_hash,
        hash: GENESIS_PREV_HASH,
    };
    event.hash = event.compute_hash();
    Ok(event)
}

/// What the stored events with the request's ids say about it: `None` when none is stored (a new
/// append); the stored events when every one is, in the same streams with the same types (a retry
/// of an append that committed); a conflict otherwise. `stored` finds the stored event of an id.
pub fn replay_of<'a>(
    request: &AppendRequest,
    stored: impl Fn(&str) -> Option<&'a RecordedEvent>,
) -> Result<Option<AppendOutcome>, StoreError> {
    let mut found = Vec::new();
    let mut first_missing = None;
    for s in &request.streams {
        for e in &s.events {
            match stored(&e.event_id) {
                Some(event) => {
                    if event.stream_id != s.stream_id || event.event_type != e.event_type {
                        return Err(StoreError::EventIdConflict { event_id: e.event_id.clone() });
                    }
                    found.push(event.clone());
                }
                None => first_missing = first_missing.or(Some(&e.event_id)),
            }
        }
    }
    match (found.first(), first_missing) {
        (None, _) => Ok(None),
        (Some(_), None) => {
            found.sort_by_key(|e| e.position);
            Ok(Some(AppendOutcome { events: found, idempotent_replay: true }))
        }
        (Some(stored), Some(_)) => Err(StoreError::EventIdConflict { event_id: stored.event_id.clone() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::store::{ExpectedVersion, StreamAppend};
    use std::collections::HashMap;

    fn proposed(id: &str) -> ProposedEvent {
        ProposedEvent { event_id: id.into(), event_type: "T".into(), schema_version: 1, payload: serde_json::json!({}) }
    }

    fn request(streams: &[(&str, &[&str])]) -> AppendRequest {
        AppendRequest {
            streams: streams
                .iter()
                .map(|(s, ids)| StreamAppend {
                    stream_id: (*s).into(),
                    expected: ExpectedVersion::Any,
                    events: ids.iter().map(|i| proposed(i)).collect(),
                })
                .collect(),
            metadata: EventMetadata::actor("t"),
        }
    }

    #[test]
    fn requests_no_backend_could_store_are_refused() {
        assert!(validate(&request(&[("a", &["1"]), ("b", &["2"])])).is_ok());
        for bad in [request(&[]), request(&[("a", &["1", "1"])]), request(&[("a", &["1"]), ("a", &["2"])])] {
            assert!(matches!(validate(&bad), Err(StoreError::InvalidAppend(_))));
        }
        let mut zero = request(&[("a", &["1"])]);
        zero.streams[0].events[0].schema_version = 0;
        assert!(matches!(validate(&zero), Err(StoreError::InvalidAppend(_))));
    }

    #[test]
    fn a_retry_is_told_from_a_conflict() {
        let meta = EventMetadata::actor("t");
        let e1 = seal(&proposed("1"), "a", 1, None, "now", &meta).unwrap();
        let e2 = seal(&proposed("2"), "a", 2, Some(Head { position: 1, hash: e1.hash }), "now", &meta).unwrap();
        assert_eq!((e2.position, e2.prev_hash), (2, e1.hash));
        assert_eq!(e2.hash, e2.compute_hash());
        let stored: HashMap<_, _> = [("1".to_owned(), e1.clone()), ("2".to_owned(), e2)].into();
        assert!(replay_of(&request(&[("a", &["3"])]), |id| stored.get(id)).unwrap().is_none());
        let again = replay_of(&request(&[("a", &["2", "1"])]), |id| stored.get(id)).unwrap().unwrap();
        assert!(again.idempotent_replay);
        assert_eq!(again.events.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 2]);
        for conflict in [request(&[("a", &["1", "9"])]), request(&[("a", &["9", "1"])]), request(&[("b", &["1"])])] {
            assert!(matches!(replay_of(&conflict, |id| stored.get(id)), Err(StoreError::EventIdConflict { .. })));
        }
    }
}
