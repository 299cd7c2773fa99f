//! Fuzzes the declarative manifest parser and validator (`vadyl::runtime::declarative::validate`).
//!
//! Input: bytes parsed as JSON (anything else is skipped). The document is validated against the
//! contract it names when the catalogue has it, `payment.charge@1` otherwise.
//!
//! Properties:
//! * `validate` never panics;
//! * a refusal carries at least one error, each with a JSON Pointer (`""` or starting with `/`)
//!   and a message;
//! * an accepted manifest's `canonical_bytes` are the RFC 8785 encoding of the document, are the
//!   same when the document is validated again, and are a fixed point: the canonical text, parsed
//!   and validated, is accepted with the same bytes (so the content hash does not depend on
//!   formatting).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vadyl::contracts::Catalogue;
use vadyl::runtime::declarative::{canonical_bytes, validate};

static CATALOGUE: LazyLock<Catalogue> =
    LazyLock::new(|| vadyl::contracts::load_embedded().expect("the embedded WIT contracts load"));

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else { return };
    let named = doc.get("contract").and_then(|c| {
        let kind = c.get("kind")?.as_str()?;
        let major = u32::try_from(c.get("majorVersion")?.as_u64()?).ok()?;
        CATALOGUE.contract(kind, major)
    });
    let contract = match named {
        Some(c) => c,
        None => CATALOGUE.contract("payment.charge", 1).expect("payment.charge@1 is embedded"),
    };

    let valid = match validate(&doc, contract) {
        Ok(valid) => valid,
        Err(errors) => {
            assert!(!errors.is_empty(), "validate refused the manifest without saying why");
            for e in &errors {
                assert!(e.path.is_empty() || e.path.starts_with('/'), "not a JSON Pointer: {e:?}");
                assert!(!e.message.is_empty(), "an error without a message at {:?}", e.path);
            }
            return;
        }
    };

    let bytes = canonical_bytes(&valid);
    let reference = serde_json_canonicalizer::to_vec(&doc).expect("a parsed document canonicalizes");
    assert_eq!(bytes, reference, "canonical_bytes is not the RFC 8785 encoding of the document");

    let again = validate(&doc, contract).expect("validating the same document twice gives the same answer");
    assert_eq!(canonical_bytes(&again), bytes, "canonical bytes differ between two validations");
    assert_eq!(again.content_hash(), valid.content_hash());

    let reparsed: Value = serde_json::from_slice(&bytes).expect("canonical bytes are JSON");
    match validate(&reparsed, contract) {
        Ok(v) => assert_eq!(canonical_bytes(&v), bytes, "the canonical form re-encodes differently"),
        Err(errors) => panic!(
            "the manifest is valid but its canonical form {} is not: {errors:?}",
            String::from_utf8_lossy(&bytes)
        ),
    }
});
