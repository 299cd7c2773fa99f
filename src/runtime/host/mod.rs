//! Host services: what the host offers every implementation source (SPEC §6). Guests reach them
//! only through the closed set of host imports; the declarative engine and native adapters call
//! them directly, under the same rules.
//!
//! - `clock`: the host's time, injectable so expiry and replay are testable.
//! - `memory`: per (project, implementation) memory in its own SQLite file.
//! - `secrets`: encrypted secrets; plaintext only inside the egress boundary.
//! - `egress`: allow-listed, pinned, retried HTTP — the only way out.
//! - `upstream`: the host-controlled loopback server conformance runs send every plan to.

pub mod clock;
pub mod egress;
pub mod memory;
pub mod secrets;
pub mod upstream;
