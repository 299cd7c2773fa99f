//! Vadyl: an event-sourced publication registry and runtime for connectors.
//!
//! The crate is layered; each layer imports only the ones above it in this list (ARCHITECTURE.md
//! has the codemap, and `tests/layers.rs` keeps the rule):
//!
//! - **domain** — `ids`, `keys`, `events`, `projections`, `commands`, `contracts`: pure types, folds
//!   and decisions; no I/O.
//! - **runtime** — `runtime`: the adapter boundary, the three implementation sources (declarative,
//!   component, native) and the host services, with the storage ports those services need.
//! - **application** — `app`: the use cases (build, load, invoke, conformance, replay, audit,
//!   access), each taking the ports it needs.
//! - **storage** — `storage`: the SQLite and file implementations of every port, and the one place
//!   that knows a data directory's layout.
//! - **edges** — `http` (axum) here, the CLI in the binary.
//! - **tools** — `tools`: benchmarks and guest builders, never on a request path.

pub mod app;
pub mod commands;
pub mod contracts;
pub mod events;
pub mod http;
pub mod ids;
pub mod keys;
pub mod projections;
pub mod report;
pub mod runtime;
pub mod storage;
pub mod tools;
