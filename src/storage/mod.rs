//! Storage: the implementations of every store port, and the layout of a data directory.
//!
//! - `sqlite` — the event log and every SQLite side database: tokens, invocation records, host
//!   memory (`sqlite::memory::SqliteMemory`, the runtime's `MemoryStore` port) and the secret rows
//!   (`sqlite::secrets::SqliteSecretRows`, the runtime's `SecretRows` port);
//! - `artifacts` — the content-addressed artifact store (files under a `cap_std::fs::Dir`);
//! - `journal` — an append-only journal of lines that a background indexer moves into a slower
//!   store (the invocation records' fast, kill-safe append);
//! - `keys` — the registry key file, the secrets master key file and the owner-only file helpers;
//! - [`open`] — the composition root: opens every store of a data directory and hands them to
//!   [`App::open`](crate::app::App::open); [`open_secrets`] is its secrets part (master key file +
//!   SQLite rows → the runtime's `SecretStore`).
//!
//! What stays in the runtime is what every backend shares: memory's value types, errors, argument
//! checks and semantics (`runtime::host::memory`), and the secrets' encryption, fingerprints and
//! validation (`runtime::host::secrets`).
//!
//! Architecture invariant: this is the only module that knows SQL or a data directory's file names.
//! The layers above see traits; a PostgreSQL backend is another module beside `sqlite`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::access::TokenHashes;
use crate::app::registry::{OpenOptions, SnapshotStore};
use crate::app::{App, AppError, Ports};
use crate::events::store::{EventStore, StoreError};
use crate::runtime::artifact::ArtifactStore;
use crate::runtime::host::clock::{Clock, SystemClock};
use crate::runtime::host::memory::{MemoryError, MemoryStore};
use crate::runtime::host::secrets::{SecretError, SecretRows, SecretStore};

pub mod artifacts;
mod group_commit;
pub mod journal;
pub mod keys;
#[cfg(test)]
pub(crate) mod log_semantics;
#[cfg(test)]
pub(crate) mod memory_semantics;
pub mod postgres;
pub mod records;
pub mod sqlite;

use sqlite::log::{Durability, SqliteStore};
use sqlite::memory::SqliteMemory;
use sqlite::secrets::SqliteSecretRows;

/// The files of a data directory.
pub const EVENTS_DB: &str = "events.db";
const TOKENS_DB: &str = "tokens.db";
const INVOCATIONS_DB: &str = "invocations.db";
const INVOCATIONS_JOURNAL: &str = "invocations.journal";
const MEMORY_DB: &str = "memory.db";
const SECRETS_DB: &str = "secrets.db";
const KEYS_DIR: &str = "keys";
const ARTIFACTS_DIR: &str = "artifacts";
const COMPILED_DIR: &str = "compiled";
const SNAPSHOT_FILE: &str = "projections.snapshot.json";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {what} in {dir}")]
    Store {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    App(#[from] AppError),
}

/// Why the secret store of a data directory cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretsOpenError {
    #[error(transparent)]
    KeyFile(#[from] keys::SecretKeyError),
    #[error("the secrets master key file {path} is missing but the secret store {db} was encrypted with a key; restore the key file (a new key could not decrypt the stored secrets)")]
    KeyFileMissing { path: PathBuf, db: String },
    #[error("the secrets master key in {path} is not the key the secret store {db} was encrypted with; restore the original key file")]
    KeyMismatch { path: PathBuf, db: String },
    #[error(transparent)]
    Store(SecretError),
}

/// Where a registry's state lives: a data directory, and optionally a shared PostgreSQL database.
///
/// With a database, the log, token hashes, artifacts and secret rows live there, shared by every
/// node, as are host memory and invocation records; the data directory keeps what is this node's
/// own: the compiled-code cache, the projection snapshot, the invocation records' write-ahead
/// journal, and by default the keys. Nodes
/// that share a database must share the keys too: `keys_dir` points every node at the same files.
#[derive(Debug, Clone)]
pub struct Location {
    pub data_dir: PathBuf,
    /// A `postgres://` URL; `None` for the embedded default (everything in `data_dir`).
    pub database: Option<String>,
    /// The directory of the registry key and the secrets master key; `<data_dir>/keys` by default.
    pub keys_dir: Option<PathBuf>,
}

impl Location {
    /// Everything in one data directory: the embedded default.
    pub fn dir(data_dir: &Path) -> Self {
        Self { data_dir: data_dir.to_owned(), database: None, keys_dir: None }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir.clone().unwrap_or_else(|| self.data_dir.join(KEYS_DIR))
    }

    /// What to name in messages: the database (without its password) or the data directory.
    pub fn describe(&self) -> String {
        match &self.database {
            Some(url) => postgres::describe(url),
            None => self.data_dir.display().to_string(),
        }
    }
}

/// Opens (creating on first use) every store of the data directory `dir` and the application on
/// top of them.
pub fn open(dir: &Path, options: OpenOptions) -> Result<App, OpenError> {
    open_at(&Location::dir(dir), options, Durability::Full)
}

/// [`open`] with the log's durability chosen (the benchmarks measure both).
pub fn open_with(dir: &Path, options: OpenOptions, durability: Durability) -> Result<App, OpenError> {
    open_at(&Location::dir(dir), options, durability)
}

/// Opens every store at `location` and the application on top of them.
pub fn open_at(location: &Location, options: OpenOptions, durability: Durability) -> Result<App, OpenError> {
    let dir = location.data_dir.as_path();
    std::fs::create_dir_all(dir).map_err(|source| OpenError::DataDir { path: dir.to_owned(), source })?;
    let failed = |what: &'static str| {
        move |e: Box<dyn std::error::Error + Send + Sync>| OpenError::Store { what, dir: dir.to_owned(), source: e }
    };
    let keys_dir = location.keys_dir();
    let key = keys::load_or_create(&keys_dir).map_err(|e| failed("the registry key")(Box::new(e)))?;
    let log = open_log(location, durability).map_err(|e| failed("the event log")(Box::new(e)))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (artifacts, secret_rows, tokens): (Arc<dyn ArtifactStore>, Arc<dyn SecretRows>, Arc<dyn TokenHashes>) =
        match &location.database {
            Some(url) => (
                Arc::new(
                    postgres::artifacts::PostgresArtifacts::open(url)
                        .map_err(|e| failed("the artifact store")(Box::new(e)))?,
                ),
                Arc::new(
                    postgres::secrets::PostgresSecretRows::open(url)
                        .map_err(|e| failed("the secret store")(Box::new(e)))?,
                ),
                Arc::new(
                    postgres::tokens::PostgresTokenHashes::open(url)
                        .map_err(|e| failed("the token store")(Box::new(e)))?,
                ),
            ),
            None => (
                Arc::new(
                    artifacts::FileArtifacts::open(&dir.join(ARTIFACTS_DIR))
                        .map_err(|e| failed("the artifact store")(Box::new(e)))?,
                ),
                Arc::new(
                    SqliteSecretRows::open(&dir.join(SECRETS_DB))
                        .map_err(|e| failed("the secret store")(Box::new(e)))?,
                ),
                Arc::new(
                    sqlite::tokens::SqliteTokenHashes::open(&dir.join(TOKENS_DB))
                        .map_err(|e| failed("the token store")(Box::new(e)))?,
                ),
            ),
        };
    let ports = Ports {
        log,
        key,
        snapshots: Some(Arc::new(FileSnapshot { path: dir.join(SNAPSHOT_FILE) })),
        artifacts,
        compiled_dir: dir.join(COMPILED_DIR),
        secrets: Arc::new(
            secret_store(secret_rows, &location.describe(), &keys_dir)
                .map_err(|e| failed("the secret store")(Box::new(e)))?,
        ),
        memory: match &location.database {
            Some(url) => Arc::new(
                postgres::memory::PostgresMemory::open(
                    url,
                    clock.clone(),
                    crate::runtime::host::memory::MemoryLimits::default(),
                )
                .map_err(|e| failed("the memory store")(Box::new(e)))?,
            ),
            None => {
                open_memory(&dir.join(MEMORY_DB), clock.clone()).map_err(|e| failed("the memory store")(Box::new(e)))?
            }
        },
        records: match &location.database {
            Some(url) => Arc::new(
                postgres::invocations::open(url, &dir.join(INVOCATIONS_JOURNAL))
                    .map_err(|e| failed("the invocation records")(Box::new(e)))?,
            ),
            None => Arc::new(
                sqlite::invocations::open(&dir.join(INVOCATIONS_DB), &dir.join(INVOCATIONS_JOURNAL))
                    .map_err(|e| failed("the invocation records")(Box::new(e)))?,
            ),
        },
        tokens,
        clock,
    };
    Ok(App::open(ports, options)?)
}

/// The memory store at `path`, as the runtime holds it.
fn open_memory(path: &Path, clock: Arc<dyn Clock>) -> Result<Arc<dyn MemoryStore>, MemoryError> {
    Ok(Arc::new(SqliteMemory::open(path, clock)?))
}

/// Opens the secret store: its SQLite rows at `db`, and the master key at `<keys_dir>/secrets.key`.
///
/// The key is created on first use (directory 0700, file 0600). A key file readable by group or
/// others is refused. Rows that already hold a key check refuse a missing or different key file
/// rather than silently starting over with a key that cannot decrypt them.
pub fn open_secrets(db: &Path, keys_dir: &Path) -> Result<SecretStore, SecretsOpenError> {
    let rows = SqliteSecretRows::open(db).map_err(SecretsOpenError::Store)?;
    secret_store(Arc::new(rows), &db.display().to_string(), keys_dir)
}

/// The secret store over `rows` (named `db` in messages), with the master key of `keys_dir`.
fn secret_store(rows: Arc<dyn SecretRows>, db: &str, keys_dir: &Path) -> Result<SecretStore, SecretsOpenError> {
    let path = keys_dir.join(keys::SECRETS_KEY_FILE);
    let sealed_before = rows.key_check().map_err(SecretsOpenError::Store)?.is_some();
    let master = if path.exists() {
        keys::load_secrets_key(&path)?
    } else if sealed_before {
        return Err(SecretsOpenError::KeyFileMissing { path, db: db.to_owned() });
    } else {
        keys::create_secrets_key(keys_dir, &path)?
    };
    SecretStore::new(master, rows).map_err(|e| match e {
        SecretError::KeyMismatch => SecretsOpenError::KeyMismatch { path, db: db.to_owned() },
        e => SecretsOpenError::Store(e),
    })
}

/// The event log at `location` alone, for the audit commands that read it without opening the
/// registry.
pub fn open_log(location: &Location, durability: Durability) -> Result<Arc<dyn EventStore>, StoreError> {
    Ok(match &location.database {
        Some(url) => Arc::new(postgres::log::PostgresStore::open(url, durability)?),
        None => Arc::new(SqliteStore::open(&location.data_dir.join(EVENTS_DB), durability)?),
    })
}

/// The log at `location` for readers that must not write (the audit commands): refused when there
/// is none yet, and never created or migrated.
pub fn open_existing_log(location: &Location) -> Result<Arc<dyn EventStore>, StoreError> {
    match &location.database {
        Some(url) => Ok(Arc::new(postgres::log::PostgresStore::open_existing(url)?)),
        None => {
            let path = location.data_dir.join(EVENTS_DB);
            if !path.exists() {
                return Err(StoreError::Backend(format!("there is no event log at {}", path.display()).into()));
            }
            Ok(Arc::new(SqliteStore::open(&path, Durability::Full)?))
        }
    }
}

/// The registry key at `location` (created on first use).
pub fn registry_key(location: &Location) -> Result<crate::keys::RegistryKey, keys::KeyError> {
    keys::load_or_create(&location.keys_dir())
}

/// The projection snapshot as a file: written to a temporary name, synced, renamed into place.
struct FileSnapshot {
    path: PathBuf,
}

impl SnapshotStore for FileSnapshot {
    fn load(&self) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn save(&self, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read skips the query for new events only while nobody has committed: events that another
    /// process (here, a second registry on the same directory) appends are seen by the next read.
    #[test]
    fn reads_see_what_another_process_appended() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = || OpenOptions { use_snapshots: false, ..OpenOptions::default() };
        let server = open(dir.path(), options()).expect("open");
        let cli = open(dir.path(), options()).expect("open again");
        let count = |a: &App| a.registry().read(|s| s.tokens.len());
        assert_eq!(count(&server), 0);
        assert_eq!(count(&server), 0, "an unchanged log answers from the live state");
        let meta = crate::events::envelope::EventMetadata::actor("test");
        cli.issue_token(&meta, crate::ids::Role::Auditor, None, vec![], "from the CLI".into()).expect("issue");
        assert_eq!(count(&server), 1, "the other registry's event is folded at the next read");
        server.issue_token(&meta, crate::ids::Role::Auditor, None, vec![], "from the server".into()).expect("issue");
        assert_eq!((count(&server), count(&cli)), (2, 2));
    }
}
