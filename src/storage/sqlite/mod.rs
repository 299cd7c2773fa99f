//! The SQLite implementations: the event log (`log`) and the side databases beside it — token
//! hashes (`tokens`), invocation records (`invocations`), host memory (`memory`: [`SqliteMemory`],
//! the runtime's `MemoryStore` port) and the rows of the encrypted secrets (`secrets`:
//! [`SqliteSecretRows`], the runtime's `SecretRows` port; ciphertext and metadata only, the
//! encryption stays in `runtime::host::secrets` and the master key file is in `storage::keys`).
//!
//! [`SqliteMemory`]: memory::SqliteMemory
//! [`SqliteSecretRows`]: secrets::SqliteSecretRows

pub mod invocations;
pub mod log;
pub mod memory;
pub mod secrets;
pub mod tokens;
