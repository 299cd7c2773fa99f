//! Artifacts by content hash in the shared database, so that what one node built every node can
//! load. Rows are append-only (a trigger); bytes are verified on read by
//! `runtime::artifact::load_verified`, exactly as with the artifact directory.

use crate::ids::ContentHash;
use crate::runtime::artifact::{ArtifactStore, ArtifactStoreError};

use super::Shared;

pub struct PostgresArtifacts {
    db: Shared,
}

fn failed<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl FnOnce(E) -> ArtifactStoreError {
    move |e| ArtifactStoreError::Io { what: what.to_owned(), source: Box::new(e) }
}

impl PostgresArtifacts {
    /// On a database the log has migrated.
    pub fn open(url: &str) -> Result<Self, ArtifactStoreError> {
        Ok(Self { db: Shared::open(url).map_err(failed("connect to the database"))? })
    }
}

impl ArtifactStore for PostgresArtifacts {
    fn put(&self, bytes: &[u8]) -> Result<ContentHash, ArtifactStoreError> {
        let hash = ContentHash::of(bytes);
        // Same bytes, same key: a second put (from this or another node) changes nothing.
        self.db
            .with(|c| {
                c.execute(
                    "INSERT INTO artifacts (hash, bytes) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                    &[&&hash.0[..], &bytes],
                )
            })
            .map_err(failed("store an artifact"))?;
        Ok(hash)
    }

    fn get(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, ArtifactStoreError> {
        self.db
            .with(|c| c.query_opt("SELECT bytes FROM artifacts WHERE hash = $1", &[&&hash.0[..]]))
            .map_err(failed("read an artifact"))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(failed("read an artifact"))
    }
}
