//! The `DeclarativeBundle` implementation source: connectors written as a JSON manifest.
//!
//! * [`manifest`] — the manifest types and their published JSON Schema;
//! * [`template`] — the expression languages: sandboxed minijinja templates and RFC 9535 JSONPath;
//! * [`mod@validate`] — validation against a contract, producing a [`ValidManifest`] and its canonical
//!   bytes (the content hash input).

pub mod engine;
pub mod manifest;
pub mod template;
pub mod validate;

pub use manifest::{manifest_json_schema, Manifest};
pub use validate::{canonical_bytes, validate, ManifestError, ValidManifest};
