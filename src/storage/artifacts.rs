//! The content-addressed artifact store under the data directory.
//!
//! Artifacts live at `artifacts/sha256/<2 hex>/<64 hex>`, named by the sha256 of their bytes, and are
//! reached only through a `cap_std::fs::Dir` opened once on the `artifacts` directory, so no path
//! computed here can escape it. Writes go to a temporary name and are renamed into place, so a
//! reader never sees half an artifact. Verification is `runtime::artifact::load_verified`'s.

use std::io::Write;
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::ids::ContentHash;
use crate::runtime::artifact::{ArtifactStore, ArtifactStoreError};

/// Artifacts as files: `artifacts/sha256/<2 hex>/<64 hex>`.
pub struct FileArtifacts {
    dir: Dir,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArtifactStoreError {
    let what = what.into();
    move |source| ArtifactStoreError::Io { what, source: Box::new(source) }
}

fn relative_path(hash: &ContentHash) -> (String, String) {
    let hex = hash.to_hex();
    let shard = format!("sha256/{}", &hex[..2]);
    let file = format!("{shard}/{hex}");
    (shard, file)
}

impl FileArtifacts {
    /// Opens (creating) `root` as the store's directory.
    pub fn open(root: &Path) -> Result<Self, ArtifactStoreError> {
        std::fs::create_dir_all(root).map_err(io(format!("create {}", root.display())))?;
        let dir = Dir::open_ambient_dir(root, ambient_authority()).map_err(io(format!("open {}", root.display())))?;
        Ok(Self { dir })
    }
}

impl ArtifactStore for FileArtifacts {
    fn put(&self, bytes: &[u8]) -> Result<ContentHash, ArtifactStoreError> {
        let hash = ContentHash::of(bytes);
        let (shard, file) = relative_path(&hash);
        if self.dir.exists(&file) {
            return Ok(hash);
        }
        self.dir.create_dir_all(&shard).map_err(io(format!("create {shard}")))?;
        let tmp = format!("{file}.tmp-{}", uuid::Uuid::new_v4());
        {
            let mut f = self.dir.create(&tmp).map_err(io(format!("create {tmp}")))?;
            f.write_all(bytes).map_err(io(format!("write {tmp}")))?;
            f.sync_all().map_err(io(format!("sync {tmp}")))?;
        }
        self.dir.rename(&tmp, &self.dir, &file).map_err(io(format!("rename {tmp}")))?;
        Ok(hash)
    }

    fn get(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, ArtifactStoreError> {
        let (_, file) = relative_path(hash);
        let bytes = match self.dir.read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("read {file}"))(e)),
        };
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SignatureBytes;
    use crate::runtime::artifact::{self, load_verified, ArtifactError};
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn stored_bytes_come_back_verified_and_tampering_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileArtifacts::open(&dir.path().join("artifacts")).unwrap();
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let hash = store.put(b"manifest bytes").unwrap();
        assert_eq!(store.put(b"manifest bytes").unwrap(), hash, "idempotent");
        let sig = SignatureBytes(key.sign(&artifact::signing_message(&hash)).to_bytes());
        assert_eq!(load_verified(&store, &hash, &sig, &key.verifying_key()).unwrap(), b"manifest bytes");

        let path = dir.path().join("artifacts").join(relative_path(&hash).1);
        std::fs::write(&path, b"manifest bytez").unwrap();
        assert!(matches!(
            load_verified(&store, &hash, &sig, &key.verifying_key()),
            Err(ArtifactStoreError::Verification(ArtifactError::HashMismatch { .. }))
        ));
        let missing = ContentHash::of(b"nothing");
        assert!(matches!(
            load_verified(&store, &missing, &sig, &key.verifying_key()),
            Err(ArtifactStoreError::Missing(_))
        ));
    }
}
