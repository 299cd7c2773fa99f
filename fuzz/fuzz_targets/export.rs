//! Fuzzes the offline export verifier (`vadyl::app::audit::verify_export`) on raw bytes.
//!
//! The trusted key is the one that signed `snapshots/history.ndjson`, which seeds the corpus, so
//! mutations start from an export that verifies.
//!
//! Properties:
//! * `verify_export` never panics, whatever the bytes;
//! * when it accepts, `read_export` accepts too and returns as many events as the summary counts,
//!   every event re-encodes to exactly its export line (the canonical envelope), and folding the
//!   events into projections does not panic.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vadyl::app::audit::{read_export, replay_events, verify_export, TrustedKey};

static KEY: LazyLock<TrustedKey> = LazyLock::new(|| {
    TrustedKey::parse(include_str!("../../snapshots/registry.pub")).expect("snapshots/registry.pub is a verifier key")
});

fuzz_target!(|data: &[u8]| {
    let Ok(summary) = verify_export(data, &KEY) else { return };
    let (again, events) = read_export(data, &KEY).expect("read_export accepts what verify_export accepts");
    assert_eq!(summary.events, again.events);
    assert_eq!(summary.events, events.len() as u64);
    let text = std::str::from_utf8(data).expect("an accepted export is UTF-8");
    for (line, event) in text.split('\n').zip(&events) {
        assert_eq!(
            String::from_utf8_lossy(&event.canonical_line()),
            line,
            "event {} does not re-encode to its line",
            event.position
        );
    }
    let _ = replay_events(&events);
});
