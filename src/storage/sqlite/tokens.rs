//! Token hashes in `tokens.db` (owner-only): id -> sha256 of the whole token, nothing else.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::app::access::{AccessError, TokenHashes};

pub struct SqliteTokenHashes {
    conn: Mutex<Connection>,
}

fn store(action: &'static str) -> impl FnOnce(rusqlite::Error) -> AccessError {
    move |e| AccessError::Store { action, source: Box::new(e) }
}

impl SqliteTokenHashes {
    pub fn open(path: &Path) -> Result<Self, AccessError> {
        let existed = path.exists();
        let conn = Connection::open(path).map_err(store("open its database"))?;
        if !existed {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| AccessError::Store { action: "restrict its file to its owner", source: Box::new(e) })?;
        }
        let init = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.execute_batch("CREATE TABLE IF NOT EXISTS token_hashes (id TEXT PRIMARY KEY, sha256 BLOB NOT NULL)")
        };
        init(&conn).map_err(store("create its table"))?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TokenHashes for SqliteTokenHashes {
    fn insert(&self, token_id: &str, sha256: &[u8; 32]) -> Result<(), AccessError> {
        self.conn()
            .execute("INSERT INTO token_hashes (id, sha256) VALUES (?1, ?2)", params![token_id, sha256.to_vec()])
            .map_err(store("store a token hash"))?;
        Ok(())
    }

    fn remove(&self, token_id: &str) -> Result<(), AccessError> {
        self.conn()
            .execute("DELETE FROM token_hashes WHERE id = ?1", [token_id])
            .map_err(store("remove a token hash"))?;
        Ok(())
    }

    fn get(&self, token_id: &str) -> Result<Option<Vec<u8>>, AccessError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT sha256 FROM token_hashes WHERE id = ?1").map_err(store("read"))?;
        stmt.query_row([token_id], |r| r.get(0)).optional().map_err(store("read"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::access::{check, generate};

    #[test]
    fn tokens_verify_by_hash_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteTokenHashes::open(&dir.path().join("tokens.db")).unwrap();
        let t = generate(&store).unwrap();
        assert_eq!(check(&store, &t.token).unwrap(), Some(t.token_id.clone()));
        let mut wrong = t.token.clone();
        wrong.pop();
        wrong.push(if t.token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(check(&store, &wrong).unwrap(), None);
        assert_eq!(check(&store, "Bearer nonsense").unwrap(), None);
        let raw = std::fs::read(dir.path().join("tokens.db")).unwrap();
        assert!(!raw.windows(t.token.len()).any(|w| w == t.token.as_bytes()), "the token itself is stored");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tokens.db")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the hash store is owner-only");
    }
}
