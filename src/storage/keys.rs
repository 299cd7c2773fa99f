//! Where the keys live: owner-only files in the data directory's keys directory, generated on first
//! use, refused when others can read them.
//!
//! - the registry's signing key (`registry.ed25519`, [`load_or_create`]);
//! - the secrets master key (`secrets.key`, [`load_secrets_key`] and [`create_secrets_key`]), which
//!   the secrets service (`crate::runtime::host::secrets`) receives as 32 bytes;
//! - the owner-only file helpers the other file stores share.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::keys::RegistryKey;

const KEY_FILE: &str = "registry.ed25519";
const KEY_HEADER: &str = "vadyl-ed25519-seed-v1";

/// The secrets master key's file name inside the keys directory.
pub const SECRETS_KEY_FILE: &str = "secrets.key";
/// The first word of a secrets master key file; the key follows as 64 hex digits.
pub(crate) const SECRETS_KEY_HEADER: &str = "vadyl-secrets-master-key-v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a Vadyl key file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path} is readable by others (mode {mode:o}); run `chmod 600 {path}` — a signing key must be owner-only")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("cannot read a random seed from the operating system: {0}")]
    Random(String),
}

/// Loads the registry key from `keys_dir`, creating the directory (0700) and the key (0600) on
/// first use.
pub fn load_or_create(keys_dir: &Path) -> Result<RegistryKey, KeyError> {
    let path = keys_dir.join(KEY_FILE);
    if path.exists() {
        return load(&path);
    }
    create_private_dir(keys_dir).map_err(|source| KeyError::Io {
        action: "create directory",
        path: keys_dir.to_owned(),
        source,
    })?;
    let mut seed = [0u8; 32];
    getrandom_seed(&mut seed)?;
    let text = format!("{KEY_HEADER} {}\n", hex::encode(seed));
    let io = |action, source| KeyError::Io { action, path: path.clone(), source };
    let mut file = open_owner_only(&path).map_err(|e| io("create", e))?;
    file.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    Ok(RegistryKey::from_seed(&seed, path))
}

fn load(path: &Path) -> Result<RegistryKey, KeyError> {
    check_owner_only(path)?;
    let text =
        fs::read_to_string(path).map_err(|source| KeyError::Io { action: "read", path: path.to_owned(), source })?;
    let malformed = |reason: &str| KeyError::Malformed { path: path.to_owned(), reason: reason.to_owned() };
    let hex_seed = text
        .trim_end()
        .strip_prefix(KEY_HEADER)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| malformed("missing header"))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(hex_seed, &mut seed).map_err(|_| malformed("the seed is not 64 hex digits"))?;
    Ok(RegistryKey::from_seed(&seed, path))
}

/// Why the secrets master key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("cannot {action} the secrets master key file {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a Vadyl secrets master key file: {reason}")]
    Malformed { path: PathBuf, reason: &'static str },
    #[error("{path} is readable by others (mode {mode:o}); run `chmod 600 {path}` — the secrets master key must be owner-only")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
}

/// Creates a new secrets master key at `path` inside `keys_dir` (directory 0700, file 0600). When
/// another process created the file first, its key is loaded instead.
pub fn create_secrets_key(keys_dir: &Path, path: &Path) -> Result<Zeroizing<[u8; 32]>, SecretKeyError> {
    create_private_dir(keys_dir).map_err(|source| SecretKeyError::Io {
        action: "create directory",
        path: keys_dir.to_owned(),
        source,
    })?;
    let mut key = Zeroizing::new([0u8; 32]);
    {
        use rand::RngCore;
        rand::rngs::OsRng.try_fill_bytes(&mut key[..]).map_err(|e| SecretKeyError::Random(e.to_string()))?;
    }
    let text = Zeroizing::new(format!("{SECRETS_KEY_HEADER} {}\n", hex::encode(&key[..])));
    let io = |action, source| SecretKeyError::Io { action, path: path.to_owned(), source };
    let mut file = match open_owner_only(path) {
        Ok(file) => file,
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return load_secrets_key(path),
        Err(e) => return Err(io("create", e)),
    };
    file.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    Ok(key)
}

/// Loads the secrets master key at `path`, refusing a file that group or others can read.
pub fn load_secrets_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, SecretKeyError> {
    match too_open_mode(path) {
        Ok(None) => {}
        Ok(Some(mode)) => return Err(SecretKeyError::TooOpen { path: path.to_owned(), mode }),
        Err(source) => return Err(SecretKeyError::Io { action: "stat", path: path.to_owned(), source }),
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| SecretKeyError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?);
    let malformed = |reason| SecretKeyError::Malformed { path: path.to_owned(), reason };
    let hex_key = text
        .trim_end()
        .strip_prefix(SECRETS_KEY_HEADER)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| malformed("missing header"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_key, &mut key[..]).map_err(|_| malformed("the key is not 64 hex digits"))?;
    Ok(key)
}

fn getrandom_seed(seed: &mut [u8; 32]) -> Result<(), KeyError> {
    use rand::RngCore;
    rand::rngs::OsRng.try_fill_bytes(seed).map_err(|e| KeyError::Random(e.to_string()))
}

/// Creates a directory readable only by its owner (0700 on Unix), if it does not exist.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)?;
    Ok(())
}

/// Opens a new file for writing with owner-only permissions (0600 on Unix); fails if it exists.
pub fn open_owner_only(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The file's permission bits when group or others can reach it (a key file must be owner-only).
pub fn too_open_mode(path: &Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Ok(Some(mode));
        }
    }
    let _ = path;
    Ok(None)
}

fn check_owner_only(path: &Path) -> Result<(), KeyError> {
    match too_open_mode(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(KeyError::TooOpen { path: path.to_owned(), mode }),
        Err(source) => Err(KeyError::Io { action: "stat", path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_owner_only_and_reloads_identically() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let a = load_or_create(&keys).unwrap();
        let b = load_or_create(&keys).unwrap();
        assert_eq!(a.verifying_key(), b.verifying_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(a.path()).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o700);
            fs::set_permissions(a.path(), fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(load_or_create(&keys), Err(KeyError::TooOpen { .. })));
        }
    }
}
