//! The runtime: artifacts by content hash, signature checks, and (in later work) the three engines
//! behind one adapter boundary and the closed set of host imports.
//!
//! Architecture invariant: the runtime never reads an artifact except through its content hash,
//! and refuses bytes whose sha256 or ed25519 signature does not verify.

pub mod adapter;
pub mod artifact;
pub mod component;
pub mod declarative;
pub mod host;
pub mod invoke;
pub mod native;
pub mod redaction;
