//! The SQLite implementations: the event log (`log`) and the side databases beside it — token
//! hashes (`tokens`), invocation records (`invocations`), host memory (`memory`) and encrypted
//! secrets (`secrets`).

pub mod invocations;
pub mod log;
pub mod tokens;
