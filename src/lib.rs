//! Vadyl: an event-sourced publication registry and runtime for connectors.
//!
//! The append-only event log (`events`) is the only source of truth; `projections` fold it into
//! read models; `commands` decide new events from those models; `registry` is the application
//! service that joins them; `http` and `cli` are thin edges. See ARCHITECTURE.md for the codemap.

pub mod audit;
pub mod auth;
pub mod bench;
pub mod bench_invoke;
pub mod cli;
pub mod commands;
pub mod conformance;
pub mod contracts;
pub mod declarative;
pub mod events;
pub mod guests;
pub mod http;
pub mod ids;
pub mod invocation;
pub mod keys;
pub mod lifecycle;
pub mod projections;
pub mod registry;
pub mod replay;
pub mod runtime;
