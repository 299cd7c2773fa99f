//! The stored shape of an event and its canonical encoding.
//!
//! Every event is hashed as `sha256(JCS(envelope without "hash"))` (RFC 8785), chained through
//! `prevHash`. Payloads are canonicalized once, when they are appended, and stored as canonical text;
//! the envelope encoder below then splices that text in unchanged. That makes hashing an event on
//! replay a string concatenation plus one sha256, instead of a JSON parse and re-serialization, and
//! it is exactly RFC 8785 because JCS is compositional (a canonical object inside a canonical object
//! is canonical). A unit test pins the equivalence against `serde_json_canonicalizer`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::merkle::Hash32;

/// The hash that precedes position 1 in the chain.
pub const GENESIS_PREV_HASH: Hash32 = [0u8; 32];

/// Who caused an event and in which conversation: recorded on every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// `system`, `local:<user>`, `http:anonymous`, later a token id.
    pub actor: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

impl EventMetadata {
    pub fn actor(actor: impl Into<String>) -> Self {
        Self { actor: actor.into(), correlation_id: None, causation_id: None }
    }
}

/// An event as the log holds it: immutable once appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Gap-free global position, starting at 1.
    pub position: u64,
    pub event_id: String,
    pub stream_id: String,
    /// Version within the stream, starting at 1.
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u32,
    /// RFC 3339, UTC, assigned by the writer at commit.
    pub recorded_at: String,
    pub metadata: EventMetadata,
    /// Canonical (RFC 8785) JSON text of the payload.
    pub payload: String,
    pub prev_hash: Hash32,
    pub hash: Hash32,
}

impl RecordedEvent {
    /// The bytes that are hashed: the canonical envelope without `hash`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        encode(self, None)
    }

    /// The canonical envelope including `hash`: one line of an export.
    pub fn canonical_line(&self) -> Vec<u8> {
        encode(self, Some(&self.hash))
    }

    pub fn compute_hash(&self) -> Hash32 {
        // Reuse one encoding buffer per thread: replay hashes millions of envelopes.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                encode_into(&mut buf, self, None);
                Sha256::digest(&buf[..]).into()
            }
            Err(_) => Sha256::digest(self.canonical_bytes()).into(),
        })
    }

    /// Parses an export line back into an event. The caller checks the line is canonical and the
    /// hash recomputes; this only checks the shape.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let obj = value.as_object().ok_or("an event must be a JSON object")?;
        let expected_keys = [
            "actor",
            "causationId",
            "correlationId",
            "eventId",
            "hash",
            "payload",
            "position",
            "prevHash",
            "recordedAt",
            "schemaVersion",
            "streamId",
            "streamVersion",
            "type",
        ];
        if obj.len() != expected_keys.len() || !expected_keys.iter().all(|k| obj.contains_key(*k)) {
            return Err(format!("an event has exactly the fields {expected_keys:?}"));
        }
        let s = |k: &str| obj[k].as_str().map(str::to_owned).ok_or(format!("{k} must be a string"));
        let opt = |k: &str| match &obj[k] {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(v) => Ok(Some(v.clone())),
            _ => Err(format!("{k} must be a string or null")),
        };
        let n = |k: &str| obj[k].as_u64().ok_or(format!("{k} must be a non-negative integer"));
        let h = |k: &str| -> Result<Hash32, String> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(s(k)?, &mut out).map_err(|_| format!("{k} must be 64 hex digits"))?;
            Ok(out)
        };
        Ok(Self {
            position: n("position")?,
            event_id: s("eventId")?,
            stream_id: s("streamId")?,
            stream_version: n("streamVersion")?,
            event_type: s("type")?,
            schema_version: u32::try_from(n("schemaVersion")?).map_err(|_| "schemaVersion is too large")?,
            recorded_at: s("recordedAt")?,
            metadata: EventMetadata {
                actor: s("actor")?,
                correlation_id: opt("correlationId")?,
                causation_id: opt("causationId")?,
            },
            payload: canonical_json(&obj["payload"]).map_err(|e| e.to_string())?,
            prev_hash: h("prevHash")?,
            hash: h("hash")?,
        })
    }
}

/// RFC 8785 canonical text of any JSON value.
///
/// Most payloads are "plain": integers that doubles represent exactly, no fractions, keys already in
/// RFC 8785 order. For those, serde_json's own compact output *is* the canonical form (same string
/// escaping, same integer digits), and it is ten times faster than the general canonicalizer, so
/// appends take that path; anything else goes through `serde_json_canonicalizer`.
pub fn canonical_json(value: &serde_json::Value) -> Result<String, serde_json::Error> {
    if is_plain(value) {
        serde_json::to_string(value)
    } else {
        serde_json_canonicalizer::to_string(value)
    }
}

/// True when serde_json's compact output of `value` is already RFC 8785.
fn is_plain(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    const EXACT: u64 = 1 << 53;
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => {
            n.as_u64().is_some_and(|u| u <= EXACT) || n.as_i64().is_some_and(|i| i.unsigned_abs() <= EXACT)
        }
        Value::Array(items) => items.iter().all(is_plain),
        Value::Object(map) => {
            // RFC 8785 sorts keys by UTF-16 code units; byte order agrees with it as long as no key
            // holds a character at or above U+E000. Also check the map iterates in sorted order
            // (it does unless serde_json's `preserve_order` feature is on somewhere in the build).
            let mut prev: Option<&String> = None;
            for (k, v) in map {
                if k.chars().any(|c| c >= '\u{e000}') || prev.is_some_and(|p| p.as_str() >= k.as_str()) || !is_plain(v)
                {
                    return false;
                }
                prev = Some(k);
            }
            true
        }
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Most strings need no escaping at all: copy them between quotes.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // serde_json's string escaping is the one RFC 8785 prescribes (short escapes for \b \f \n \r \t,
    // lowercase \u00xx for other control characters, nothing else escaped).
    serde_json::to_writer(&mut *out, s).unwrap_or_else(|_| unreachable!("writing a str to a Vec cannot fail"));
}

fn push_opt(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_hex(out: &mut Vec<u8>, h: &Hash32) {
    out.push(b'"');
    let mut buf = [0u8; 64];
    // Cannot fail: the buffer is exactly twice the input.
    if hex::encode_to_slice(h, &mut buf).is_ok() {
        out.extend_from_slice(&buf);
    }
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

fn encode(e: &RecordedEvent, hash: Option<&Hash32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + e.payload.len());
    encode_into(&mut out, e, hash);
    out
}

/// Keys in RFC 8785 order (UTF-16 code unit order; all keys here are ASCII, so byte order).
fn encode_into(out: &mut Vec<u8>, e: &RecordedEvent, hash: Option<&Hash32>) {
    out.extend_from_slice(b"{\"actor\":");
    push_str(out, &e.metadata.actor);
    out.extend_from_slice(b",\"causationId\":");
    push_opt(out, &e.metadata.causation_id);
    out.extend_from_slice(b",\"correlationId\":");
    push_opt(out, &e.metadata.correlation_id);
    out.extend_from_slice(b",\"eventId\":");
    push_str(out, &e.event_id);
    if let Some(h) = hash {
        out.extend_from_slice(b",\"hash\":");
        push_hex(out, h);
    }
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(e.payload.as_bytes());
    out.extend_from_slice(b",\"position\":");
    push_u64(out, e.position);
    out.extend_from_slice(b",\"prevHash\":");
    push_hex(out, &e.prev_hash);
    out.extend_from_slice(b",\"recordedAt\":");
    push_str(out, &e.recorded_at);
    out.extend_from_slice(b",\"schemaVersion\":");
    push_u64(out, u64::from(e.schema_version));
    out.extend_from_slice(b",\"streamId\":");
    push_str(out, &e.stream_id);
    out.extend_from_slice(b",\"streamVersion\":");
    push_u64(out, e.stream_version);
    out.extend_from_slice(b",\"type\":");
    push_str(out, &e.event_type);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordedEvent {
        let payload = serde_json::json!({"z": 1, "a": "é\u{1f}\"\\/", "n": [1.5, 1e21, -0.0], "€": true});
        RecordedEvent {
            position: 42,
            event_id: "evt-\u{7}\n".into(),
            stream_id: "publications".into(),
            stream_version: 7,
            event_type: "PublicationCreated".into(),
            schema_version: 1,
            recorded_at: "2026-11-25T12:00:00.123456789Z".into(),
            metadata: EventMetadata {
                actor: "local:root".into(),
                correlation_id: Some("c".into()),
                causation_id: None,
            },
            payload: canonical_json(&payload).unwrap(),
            prev_hash: [7u8; 32],
            hash: [9u8; 32],
        }
    }

    fn as_value(e: &RecordedEvent, with_hash: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "actor": e.metadata.actor, "causationId": e.metadata.causation_id,
            "correlationId": e.metadata.correlation_id, "eventId": e.event_id,
            "payload": serde_json::from_str::<serde_json::Value>(&e.payload).unwrap(),
            "position": e.position, "prevHash": hex::encode(e.prev_hash), "recordedAt": e.recorded_at,
            "schemaVersion": e.schema_version, "streamId": e.stream_id, "streamVersion": e.stream_version,
            "type": e.event_type,
        });
        if with_hash {
            v["hash"] = serde_json::Value::String(hex::encode(e.hash));
        }
        v
    }

    #[test]
    fn envelope_encoding_is_rfc8785() {
        let e = sample();
        let reference = serde_json_canonicalizer::to_vec(&as_value(&e, false)).unwrap();
        assert_eq!(e.canonical_bytes(), reference);
        let reference_line = serde_json_canonicalizer::to_vec(&as_value(&e, true)).unwrap();
        assert_eq!(e.canonical_line(), reference_line);
    }

    #[test]
    fn the_fast_path_agrees_with_the_reference_canonicalizer() {
        let samples = [
            serde_json::json!({"b": 1, "a": [true, null, "x\u{1}\"\\/\n"], "c": {"z": -9007199254740992i64, "y": 9007199254740992u64}}),
            serde_json::json!({"big": 18446744073709551615u64, "neg": -9007199254740993i64}),
            serde_json::json!({"f": 1.5, "e": 1e21, "z": -0.0, "i": 3.0}),
            serde_json::json!({"\u{10000}": 1, "\u{e000}": 2, "a": 3, "é": 4}),
            serde_json::json!([{"€": "€"}, [], {}, "", 0]),
        ];
        for v in samples {
            assert_eq!(canonical_json(&v).unwrap(), serde_json_canonicalizer::to_string(&v).unwrap(), "{v}");
        }
    }

    #[test]
    fn export_line_parses_back_to_the_same_event() {
        let e = sample();
        let v: serde_json::Value = serde_json::from_slice(&e.canonical_line()).unwrap();
        assert_eq!(RecordedEvent::from_json(&v).unwrap(), e);
        let mut extra = v.clone();
        extra["surprise"] = serde_json::Value::Bool(true);
        assert!(RecordedEvent::from_json(&extra).is_err());
    }
}
