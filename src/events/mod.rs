//! The append-only event log: event types, canonical encoding, the hash chain, the Merkle tree and
//! signed checkpoints over it, and the `EventStore` trait a backend implements (`storage::sqlite::log`
//! is the default).
//!
//! Architecture invariant: pure. No SQL, no files, no clock.

pub mod append;
pub mod checkpoint;
pub mod domain;
pub mod envelope;
pub mod merkle;
pub mod store;
pub mod tiles;
