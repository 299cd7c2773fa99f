//! The throwaway PostgreSQL server of the backend's tests (`vadyl::tools::pg_server`), started per
//! test and stopped when dropped.

pub struct PgServer(vadyl::tools::pg_server::PgServer);

impl PgServer {
    pub fn start() -> Self {
        Self(vadyl::tools::pg_server::PgServer::start().unwrap_or_else(|e| panic!("{}", vadyl::report::ErrorChain(&e))))
    }

    /// Creates database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.0.database(name).unwrap_or_else(|e| panic!("{}", vadyl::report::ErrorChain(&e)))
    }
}
