//! Host services: what the host offers every implementation source (SPEC §6). Guests reach them
//! only through the closed set of host imports; the declarative engine and native adapters call
//! them directly, under the same rules.
//!
//! - `clock`: the host's time, injectable so expiry and replay are testable.
//! - `memory`: per (project, implementation) memory behind the `MemoryStore` port: value types,
//!   errors, the argument checks and the semantics every backend keeps. The SQLite backend is
//!   `storage::sqlite::memory`.
//! - `secrets`: encrypted secrets; plaintext only inside the egress boundary. The encryption,
//!   fingerprints and validation are here; rows are stored through the `SecretRows` port
//!   (`storage::sqlite::secrets`), and the master key file is read by `storage::keys`.
//! - `egress`: allow-listed, pinned, retried HTTP — the only way out.
//! - `upstream`: the host-controlled loopback server conformance runs send every plan to.
//!
//! Architecture invariant: nothing here knows SQL or a file layout; the storage layer implements
//! the ports and hands them in (`storage::open_with`).

pub mod clock;
pub mod egress;
pub mod memory;
pub mod secrets;
pub mod upstream;
