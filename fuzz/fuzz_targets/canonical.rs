//! Fuzzes the canonical JSON encoding of event payloads (`vadyl::events::envelope::canonical_json`,
//! RFC 8785 with a fast path for "plain" values) and the typed decoding of payloads
//! (`vadyl::events::domain::DomainEvent::decode`).
//!
//! Properties, for input bytes that parse as JSON:
//! * `canonical_json` equals `serde_json_canonicalizer` byte for byte (the fast path is never taken
//!   where serde_json's compact output differs from RFC 8785);
//! * decoding the canonical text gives the value back (numbers compared as the doubles RFC 8785
//!   says they are), and encoding that again gives the same text (idempotence).
//!
//! Properties, for input bytes that are UTF-8 (JSON or not):
//! * `DomainEvent::decode` never panics, for every event type at its current version, at versions
//!   0 and current + 1, and for an unknown type;
//! * when the canonical text of the input decodes as an event, the event's own payload, canonicalized,
//!   decodes back to an equal event.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vadyl::events::domain::{DomainEvent, EVENT_TYPES};
use vadyl::events::envelope::canonical_json;
use vadyl_fuzz::{same_json, Equality, Numbers};

const AS_DOUBLES: Equality = Equality { numbers: Numbers::AsDoubles, absent_is_null: false };

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for (event_type, version) in EVENT_TYPES {
        let _ = DomainEvent::decode(event_type, *version, text);
        assert!(DomainEvent::decode(event_type, 0, text).is_err(), "{event_type} decoded at version 0");
        assert!(DomainEvent::decode(event_type, version + 1, text).is_err(), "{event_type} decoded a future version");
    }
    assert!(DomainEvent::decode("NoSuchEvent", 1, text).is_err(), "an unknown event type decoded");

    let Ok(value) = serde_json::from_str::<Value>(text) else { return };
    let ours = canonical_json(&value).expect("a parsed value canonicalizes");
    let reference = serde_json_canonicalizer::to_string(&value).expect("the reference canonicalizes a parsed value");
    assert_eq!(ours, reference, "canonical_json differs from RFC 8785 for {value}");

    let decoded: Value = serde_json::from_str(&ours).expect("canonical text is JSON");
    assert!(same_json(&decoded, &value, AS_DOUBLES), "canonical text {ours} decodes to {decoded}, not {value}");
    assert_eq!(
        canonical_json(&decoded).expect("a decoded value canonicalizes"),
        ours,
        "canonicalization is not idempotent"
    );

    for (event_type, version) in EVENT_TYPES {
        let Ok(event) = DomainEvent::decode(event_type, *version, &ours) else { continue };
        assert_eq!(event.event_type(), *event_type);
        let payload = canonical_json(&event.payload()).expect("an event payload canonicalizes");
        match DomainEvent::decode(event.event_type(), event.schema_version(), &payload) {
            Ok(back) => assert_eq!(back, event, "{event_type}: {ours} re-encodes as {payload}, a different event"),
            Err(e) => panic!("{event_type}: {ours} decodes, but its re-encoding {payload} does not: {e}"),
        }
    }
});
