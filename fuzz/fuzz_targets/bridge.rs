//! Fuzzes the JSON ↔ WIT value bridge (`vadyl::runtime::component::bridge::{to_val, to_json}`)
//! with the embedded WIT package.
//!
//! Input: bytes parsed as JSON (anything else is skipped), tried against every type an operation
//! of a contract exchanges with a guest: its `input` parameter, its `exchanges` parameter and its
//! step result.
//!
//! Properties:
//! * `to_val` never panics;
//! * a refusal names a JSON Pointer whose parent exists in the document (the offending value
//!   itself may be a missing field);
//! * an accepted value converts back: `to_json(to_val(x))` succeeds and equals `x`, where an absent
//!   member equals `null` (the bridge reads an absent `option` field as `none` and writes `none`
//!   as `null`) and integers compare exactly.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vadyl::runtime::component::bridge::{to_json, to_val};
use vadyl_fuzz::{same_json, Equality, Numbers};
use wit_parser::{Resolve, Type};

const ABSENT_IS_NULL: Equality = Equality { numbers: Numbers::Exact, absent_is_null: true };

struct Types {
    resolve: Resolve,
    /// `(label for messages, type)`, each type once.
    types: Vec<(String, Type)>,
}

static TYPES: LazyLock<Types> = LazyLock::new(|| {
    let catalogue = vadyl::contracts::load_embedded().expect("the embedded WIT contracts load");
    let (resolve, _) = vadyl::contracts::embedded_resolve().expect("the embedded WIT package resolves");
    let mut types: Vec<(String, Type)> = Vec::new();
    for spec in &catalogue.contracts {
        let (_, iface) = resolve
            .interfaces
            .iter()
            .find(|(id, _)| resolve.id_of(*id).as_deref() == Some(spec.interface.as_str()))
            .unwrap_or_else(|| panic!("contract {} has no interface {} in the WIT package", spec.id(), spec.interface));
        for f in iface.functions.values() {
            let params = f.params.iter().map(|p| (p.name.as_str(), p.ty));
            for (role, ty) in params.chain(f.result.map(|t| ("result", t))) {
                if !types.iter().any(|(_, t)| *t == ty) {
                    types.push((format!("{} {} {role}", spec.id(), f.name), ty));
                }
            }
        }
    }
    assert!(types.len() >= 3, "expected the operations of at least two contracts, found {}", types.len());
    Types { resolve, types }
});

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<Value>(data) else { return };
    let Types { resolve, types } = &*TYPES;
    for (label, ty) in types {
        match to_val(resolve, ty, &json) {
            Ok(val) => {
                let back = to_json(resolve, ty, &val)
                    .unwrap_or_else(|e| panic!("{label}: to_json refuses what to_val produced ({val:?}): {e}"));
                assert!(same_json(&back, &json, ABSENT_IS_NULL), "{label}: {json} comes back as {back}");
            }
            Err(e) => {
                let parent = e.pointer.rsplit_once('/').map(|(parent, _)| parent);
                assert!(
                    parent.is_some_and(|p| json.pointer(p).is_some()),
                    "{label}: error pointer {:?} does not lead into {json}: {}",
                    e.pointer,
                    e.message
                );
            }
        }
    }
});
