//! The append-only event log: event types, canonical encoding, the hash chain, the Merkle tree and
//! signed checkpoints over it, and the store that keeps it (SQLite by default).
//!
//! Architecture invariant: only `sqlite` knows SQL. Everything else here is pure.

pub mod checkpoint;
pub mod domain;
pub mod envelope;
pub mod merkle;
pub mod sqlite;
pub mod store;
