//! PostgreSQL: the backend that lets several `vadyl serve` nodes share one log and one state.
//!
//! - `schema` — the versioned migrations the binary applies (and refuses when the database is newer);
//! - `server` — a throwaway PostgreSQL server (initdb + pg_ctl), for the tests of this backend;
//! - `tls` — TLS to the server as libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` say;
//! - `log` — the event log ([`log::PostgresStore`], the `EventStore` port);
//! - `tokens`, `artifacts`, `secrets`, `memory`, `invocations` — token hashes, artifacts by content
//!   hash, the sealed secret rows, host memory and the invocation records' table: the same ports
//!   SQLite and the artifact directory implement.
//!
//! The driver is the synchronous `postgres` crate (rust-postgres, over `tokio-postgres`): every store
//! port is a blocking trait called from `spawn_blocking` or a writer thread, so an async pool would
//! only add a runtime hop per query; each connection is owned by one thread or a small pool here.
//! The log's writer alone speaks `tokio-postgres` directly, on a runtime of its own thread, because
//! pipelining a group's statements halves its round trips (`writer`).

pub mod artifacts;
pub mod invocations;
pub mod log;
pub mod memory;
pub mod schema;
pub mod secrets;
pub mod server;
pub mod tls;
pub mod tokens;
mod writer;

pub use tls::ConnectError;

/// Whether `location` names a PostgreSQL database rather than a data directory.
pub fn is_database_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Opens one connection to `url` (a libpq-style URL or key-value string), with TLS as its
/// `sslmode` and `sslrootcert` say (`tls`).
pub fn connect(url: &str) -> Result<postgres::Client, ConnectError> {
    Ok(Connector::new(url)?.connect()?)
}

/// Where and how to connect, read from a URL once: reconnecting reads no file again.
#[derive(Clone)]
pub struct Connector {
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    pub fn new(url: &str) -> Result<Self, ConnectError> {
        let tls::Target { config, tls } = tls::target(url)?;
        Ok(Self { config: postgres::Config::from(config), tls })
    }

    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        }
    }
}

/// Runs `f` where the synchronous client may block. `postgres` drives each connection with a small
/// runtime of its own and panics when asked to from a thread that is inside another runtime (an
/// async task, or `spawn_blocking`), which is where HTTP handlers call the stores from; such calls
/// move to a scoped thread of their own. Threads outside any runtime (the log's writer and
/// listener, the CLI) call `f` directly.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A few connections to one database, handed to one caller at a time and reopened when the server
/// has closed them: what the side stores (tokens, artifacts, secrets, memory) share.
pub struct Shared {
    connector: Connector,
    idle: std::sync::Mutex<Vec<postgres::Client>>,
}

/// Idle connections a [`Shared`] keeps; more are opened under load, then closed.
const IDLE: usize = 8;

impl Shared {
    pub fn open(url: &str) -> Result<Self, ConnectError> {
        let connector = Connector::new(url)?;
        let client = off_runtime(|| connector.connect())?;
        Ok(Self { connector, idle: std::sync::Mutex::new(vec![client]) })
    }

    /// `f` on a connection of the pool, off any async runtime (see [`off_runtime`]).
    pub fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, postgres::Error> {
        off_runtime(|| {
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut client = match pooled {
                Some(c) if !c.is_closed() => c,
                _ => self.connector.connect()?,
            };
            let out = f(&mut client);
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE && !client.is_closed() {
                idle.push(client);
            }
            out
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing a connection blocks on its runtime too.
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        off_runtime(move || drop(idle));
    }
}

/// A short, password-free description of `url` for messages and logs.
pub fn describe(url: &str) -> String {
    match tls::target(url) {
        Ok(tls::Target { config: c, .. }) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default();
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("postgres://{}@{host}:{port}/{}", c.get_user().unwrap_or(""), c.get_dbname().unwrap_or(""))
        }
        // What is wrong with it is said by the error this describes the location of.
        Err(_) => "a PostgreSQL URL whose options cannot be used".to_owned(),
    }
}
