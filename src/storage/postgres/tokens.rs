//! Token hashes in the shared database: id -> sha256 of the whole token, nothing else, so that a
//! token issued through one node is accepted by every node.

use crate::app::access::{AccessError, TokenHashes};

use super::Shared;

pub struct PostgresTokenHashes {
    db: Shared,
}

fn store<E: std::error::Error + Send + Sync + 'static>(action: &'static str) -> impl FnOnce(E) -> AccessError {
    move |e| AccessError::Store { action, source: Box::new(e) }
}

impl PostgresTokenHashes {
    /// On a database the log has migrated.
    pub fn open(url: &str) -> Result<Self, AccessError> {
        Ok(Self { db: Shared::open(url).map_err(store("connect to its database"))? })
    }
}

impl TokenHashes for PostgresTokenHashes {
    fn insert(&self, token_id: &str, sha256: &[u8; 32]) -> Result<(), AccessError> {
        self.db
            .with(|c| c.execute("INSERT INTO token_hashes (id, sha256) VALUES ($1, $2)", &[&token_id, &&sha256[..]]))
            .map_err(store("store a token hash"))?;
        Ok(())
    }

    fn remove(&self, token_id: &str) -> Result<(), AccessError> {
        self.db
            .with(|c| c.execute("DELETE FROM token_hashes WHERE id = $1", &[&token_id]))
            .map_err(store("remove a token hash"))?;
        Ok(())
    }

    fn get(&self, token_id: &str) -> Result<Option<Vec<u8>>, AccessError> {
        self.db
            .with(|c| c.query_opt("SELECT sha256 FROM token_hashes WHERE id = $1", &[&token_id]))
            .map_err(store("read"))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(store("read"))
    }
}
