//! The throwaway PostgreSQL server of the backend's tests (`vadyl::storage::postgres::server`), started per
//! test and stopped when dropped.

pub struct PgServer(vadyl::storage::postgres::server::PgServer);

impl PgServer {
    pub fn start() -> Self {
        Self(
            vadyl::storage::postgres::server::PgServer::start()
                .unwrap_or_else(|e| panic!("{}", vadyl::report::ErrorChain(&e))),
        )
    }

    /// Creates database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.0.database(name).unwrap_or_else(|e| panic!("{}", vadyl::report::ErrorChain(&e)))
    }
}
