//! The secrets host service: secret values encrypted at rest, used by the host on a guest's behalf.
//!
//! A guest names a secret by reference (name, optional version) and never receives its value
//! (`wit/worlds/connector/secrets.wit`). This module is the store behind those imports:
//!
//! - **Encryption at rest.** Each value is sealed with XChaCha20-Poly1305 under a key derived from a
//!   32-byte master key that the registry keeps at `<keys_dir>/secrets.key`, owner-only like the
//!   signing key (`crate::keys`). Every row has its own random 24-byte nonce, and the associated data
//!   binds project, name, version and fingerprint, so a ciphertext copied into another row (another
//!   name, version or project) fails authentication instead of decrypting to the wrong secret.
//! - **Projects are isolated.** Every query is keyed by project; another project's secret is
//!   `NotFound`, not `Denied`, so a project cannot even learn that a name exists elsewhere.
//! - **Versions are immutable.** `set` always appends version `n + 1`; old versions keep working for
//!   references that pin them, which is what lets a connector rotate a key without downtime.
//! - **Metadata never carries the value.** The fingerprint is an HMAC-SHA256 keyed by a key derived
//!   from the master key (and bound to the project), so a leaked fingerprint cannot be used to confirm
//!   a guess of the value offline, and equal values in two projects do not look equal.
//! - **Plaintext stays inside the host.** `hmac` uses the value without returning it; the only way
//!   to see the bytes is [`SecretStore::with_plaintext`], which hands them to a closure in a buffer
//!   that is wiped when the closure returns, and which only the egress boundary may call.
//!
//! `Debug` implementations print names, versions and paths, never values or key material.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Sha256, Sha512};
use zeroize::Zeroizing;

use crate::ids::ProjectId;

/// The master key's file name inside the registry's keys directory.
pub const KEY_FILE: &str = "secrets.key";
/// Longest accepted secret name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Largest accepted secret value, in bytes (64 KiB).
pub const MAX_VALUE_LEN: usize = 64 * 1024;

const KEY_HEADER: &str = "vadyl-secrets-master-key-v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Domain-separation labels: the master key is never used directly, only through these.
const LABEL_AEAD: &[u8] = b"vadyl secrets aead v1";
const LABEL_FINGERPRINT: &[u8] = b"vadyl fingerprint v1";
const LABEL_KEY_CHECK: &[u8] = b"vadyl secrets key check v1";
const AD_PREFIX: &[u8] = b"vadyl-secret-row-v1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS secrets (
    project       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    nonce         BLOB    NOT NULL,
    ciphertext    BLOB    NOT NULL,
    fingerprint   TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (project, name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets_meta (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    key_check TEXT    NOT NULL
);
";

/// Why a secrets operation failed. Messages name the secret (never its value) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no secret named {name:?}{} in this project", version.as_ref().map(|v| format!(" with version {v:?}")).unwrap_or_default())]
    NotFound { name: String, version: Option<String> },
    #[error("invalid secret name {name:?}: use 1 to {MAX_NAME_LEN} characters from A-Z, a-z, 0-9, '_', '.' and '-'")]
    InvalidName { name: String },
    #[error("invalid value for secret {name:?}: it is {len} bytes, a secret value must be 1 to {MAX_VALUE_LEN} bytes")]
    InvalidValue { name: String, len: usize },
    #[error("cannot {action} the secrets master key file {path}: {source}")]
    KeyFileIo { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a Vadyl secrets master key file: {reason}")]
    KeyFileMalformed { path: PathBuf, reason: &'static str },
    #[error("{path} is readable by others (mode {mode:o}); run `chmod 600 {path}` — the secrets master key must be owner-only")]
    KeyFileTooOpen { path: PathBuf, mode: u32 },
    #[error("the secrets master key file {path} is missing but the secret store {db} was encrypted with a key; restore the key file (a new key could not decrypt the stored secrets)")]
    KeyFileMissing { path: PathBuf, db: PathBuf },
    #[error("the secrets master key in {path} is not the key the secret store {db} was encrypted with; restore the original key file")]
    KeyMismatch { path: PathBuf, db: PathBuf },
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
    #[error("cannot encrypt secret {name:?}: the value is longer than the cipher accepts")]
    Encrypt { name: String },
    #[error("secret {name:?} version {version} failed authentication: its ciphertext was altered or moved from another row, or the master key changed")]
    Decrypt { name: String, version: String },
    #[error("secret store database: cannot {action}: {source}")]
    Storage { action: &'static str, source: rusqlite::Error },
}

/// A guest's reference to a secret: a name, and a pinned version or (when absent) the latest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub name: String,
    pub version: Option<String>,
}

impl SecretRef {
    /// The latest version of `name`.
    pub fn latest(name: impl Into<String>) -> Self {
        Self { name: name.into(), version: None }
    }

    /// A pinned version of `name`.
    pub fn pinned(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: Some(version.into()) }
    }
}

/// What may be said about a secret: everything but its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretMetadata {
    pub name: String,
    /// Decimal version, `"1"`, `"2"`, …
    pub version: String,
    /// `hmac-sha256:` and 32 hex digits; a keyed hash, so it only detects change.
    pub fingerprint: String,
    /// Milliseconds since the Unix epoch when this version was stored.
    pub created_at_ms: i64,
}

impl SecretMetadata {
    /// A reference pinned to exactly this version, so that a later `set` cannot change what it means.
    /// Resolve with [`SecretStore::metadata`] first and use this ref when the version used must be
    /// reported (e.g. the WIT `signature.secret-version`).
    pub fn pinned_ref(&self) -> SecretRef {
        SecretRef::pinned(self.name.clone(), self.version.clone())
    }
}

/// Hash function for [`SecretStore::hmac`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HmacAlgorithm {
    Sha256,
    Sha512,
}

/// The encrypted secret store. One per registry; safe to share between threads.
pub struct SecretStore {
    conn: Mutex<Connection>,
    /// Zeroizes its key on drop.
    cipher: XChaCha20Poly1305,
    fingerprint_key: Zeroizing<[u8; 32]>,
    db_path: PathBuf,
    key_path: PathBuf,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("SecretStore").field("db_path", &self.db_path).field("key_path", &self.key_path).finish()
    }
}

/// One stored row, still encrypted.
struct Row {
    version: i64,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    fingerprint: String,
    created_at_ms: i64,
}

impl SecretStore {
    /// Opens (creating if needed) the store at `db_path`, with the master key at `<keys_dir>/secrets.key`.
    ///
    /// The key is created on first use (directory 0700, file 0600). A key file readable by group or
    /// others is refused. A store that already holds an encrypted key check refuses a missing or
    /// different key file rather than silently starting over with a key that cannot decrypt it.
    pub fn open(db_path: &Path, keys_dir: &Path) -> Result<Self, SecretError> {
        let conn = Connection::open(db_path).map_err(storage("open the database"))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(storage("enable WAL"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(storage("set the busy timeout"))?;
        conn.execute_batch(SCHEMA).map_err(storage("create the schema"))?;

        let key_path = keys_dir.join(KEY_FILE);
        let stored_check: Option<String> = conn
            .query_row("SELECT key_check FROM secrets_meta WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(storage("read the key check"))?;
        let master = if key_path.exists() {
            load_master_key(&key_path)?
        } else if stored_check.is_some() {
            return Err(SecretError::KeyFileMissing { path: key_path, db: db_path.to_owned() });
        } else {
            create_master_key(keys_dir, &key_path)?
        };

        let check = hex::encode(hmac_sha256(&master[..], LABEL_KEY_CHECK));
        match stored_check {
            Some(stored) if stored != check => {
                return Err(SecretError::KeyMismatch { path: key_path, db: db_path.to_owned() })
            }
            Some(_) => {}
            None => {
                conn.execute("INSERT OR IGNORE INTO secrets_meta (id, key_check) VALUES (1, ?1)", params![check])
                    .map_err(storage("record the key check"))?;
            }
        }

        let aead_key = Zeroizing::new(hmac_sha256(&master[..], LABEL_AEAD));
        let fingerprint_key = Zeroizing::new(hmac_sha256(&master[..], LABEL_FINGERPRINT));
        let cipher = XChaCha20Poly1305::new((&*aead_key).into());
        Ok(Self { conn: Mutex::new(conn), cipher, fingerprint_key, db_path: db_path.to_owned(), key_path })
    }

    /// Path of the master key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Stores `value` as a new version of `name` in `project` and returns its metadata.
    pub fn set(&self, project: &ProjectId, name: &str, value: &[u8]) -> Result<SecretMetadata, SecretError> {
        check_name(name)?;
        if value.is_empty() || value.len() > MAX_VALUE_LEN {
            return Err(SecretError::InvalidValue { name: name.to_owned(), len: value.len() });
        }
        let fingerprint = self.fingerprint(project, value);
        let created_at_ms = now_ms();
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;

        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage("begin a write transaction"))?;
        let version: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM secrets WHERE project = ?1 AND name = ?2",
                params![project.as_str(), name],
                |r| r.get(0),
            )
            .map_err(storage("find the next version"))?;

        let ad = associated_data(project, name, version, &fingerprint);
        let mut buf = Zeroizing::new(Vec::with_capacity(value.len() + TAG_LEN));
        buf.extend_from_slice(value);
        self.cipher
            .encrypt_in_place(&XNonce::from(nonce), &ad, &mut *buf)
            .map_err(|_| SecretError::Encrypt { name: name.to_owned() })?;

        tx.execute(
            "INSERT INTO secrets (project, name, version, nonce, ciphertext, fingerprint, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![project.as_str(), name, version, &nonce[..], &buf[..], fingerprint, created_at_ms],
        )
        .map_err(storage("insert the secret"))?;
        tx.commit().map_err(storage("commit the secret"))?;
        Ok(SecretMetadata { name: name.to_owned(), version: version.to_string(), fingerprint, created_at_ms })
    }

    /// The metadata of the referenced version (the latest when unpinned). Does not decrypt.
    pub fn metadata(&self, project: &ProjectId, secret: &SecretRef) -> Result<SecretMetadata, SecretError> {
        let row = self.load(project, secret)?;
        Ok(metadata_of(&secret.name, &row))
    }

    /// The latest version of every secret in `project`, ordered by name.
    pub fn list(&self, project: &ProjectId) -> Result<Vec<SecretMetadata>, SecretError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT s.name, s.version, s.fingerprint, s.created_at_ms FROM secrets s
                 JOIN (SELECT name, MAX(version) AS version FROM secrets WHERE project = ?1 GROUP BY name) latest
                   ON s.name = latest.name AND s.version = latest.version
                 WHERE s.project = ?1 ORDER BY s.name",
            )
            .map_err(storage("prepare the listing"))?;
        let rows = stmt
            .query_map(params![project.as_str()], |r| {
                Ok(SecretMetadata {
                    name: r.get(0)?,
                    version: r.get::<_, i64>(1)?.to_string(),
                    fingerprint: r.get(2)?,
                    created_at_ms: r.get(3)?,
                })
            })
            .map_err(storage("list secrets"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(storage("read a listed secret"))
    }

    /// HMAC of `data` keyed with the referenced secret. The value is decrypted only for the
    /// computation and wiped afterwards.
    pub fn hmac(
        &self,
        project: &ProjectId,
        secret: &SecretRef,
        algorithm: HmacAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, SecretError> {
        self.with_plaintext(project, secret, |key| match algorithm {
            HmacAlgorithm::Sha256 => mac_bytes::<Hmac<Sha256>>(key, data),
            HmacAlgorithm::Sha512 => mac_bytes::<Hmac<Sha512>>(key, data),
        })
    }

    /// SecretsDecryptForHostEgressOnly: decrypts the referenced secret and passes the plaintext to `f`.
    ///
    /// **Only the host's egress boundary may call this** (to place a credential into a request it is
    /// about to send, or to compute a MAC/signature in this module). Nothing derived from the bytes
    /// other than a MAC or signature may leave `f`: not into a return value that reaches a guest, an
    /// event, a log, a span, memory or an error. The plaintext lives in a buffer that is zeroed when
    /// `f` returns.
    pub(crate) fn with_plaintext<R>(
        &self,
        project: &ProjectId,
        secret: &SecretRef,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, SecretError> {
        let row = self.load(project, secret)?;
        let ad = associated_data(project, &secret.name, row.version, &row.fingerprint);
        let decrypt_error = || SecretError::Decrypt { name: secret.name.clone(), version: row.version.to_string() };
        let nonce = <[u8; NONCE_LEN]>::try_from(row.nonce.as_slice()).map_err(|_| decrypt_error())?;
        let mut buf = Zeroizing::new(Vec::with_capacity(row.ciphertext.len()));
        buf.extend_from_slice(&row.ciphertext);
        self.cipher.decrypt_in_place(&XNonce::from(nonce), &ad, &mut *buf).map_err(|_| decrypt_error())?;
        Ok(f(&buf))
    }

    /// The keyed fingerprint of `plaintext` in `project` (`hmac-sha256:` + 32 hex digits), as stored
    /// in metadata. For the egress boundary's binding receipts; it reveals nothing without the key.
    pub fn fingerprint(&self, project: &ProjectId, plaintext: &[u8]) -> String {
        let mut mac = keyed::<Hmac<Sha256>>(&self.fingerprint_key[..]);
        mac.update(&(project.as_str().len() as u64).to_be_bytes());
        mac.update(project.as_str().as_bytes());
        mac.update(plaintext);
        let digest = mac.finalize().into_bytes();
        format!("hmac-sha256:{}", hex::encode(&digest[..16]))
    }

    fn load(&self, project: &ProjectId, secret: &SecretRef) -> Result<Row, SecretError> {
        check_name(&secret.name)?;
        let not_found = || SecretError::NotFound { name: secret.name.clone(), version: secret.version.clone() };
        let version = match &secret.version {
            None => None,
            Some(v) => Some(parse_version(v).ok_or_else(not_found)?),
        };
        let conn = self.lock();
        let read = |r: &rusqlite::Row<'_>| {
            Ok(Row {
                version: r.get(0)?,
                nonce: r.get(1)?,
                ciphertext: r.get(2)?,
                fingerprint: r.get(3)?,
                created_at_ms: r.get(4)?,
            })
        };
        // Cached statements: this runs on every invocation that uses a secret.
        let row = match version {
            Some(v) => conn
                .prepare_cached(
                    "SELECT version, nonce, ciphertext, fingerprint, created_at_ms FROM secrets
                     WHERE project = ?1 AND name = ?2 AND version = ?3",
                )
                .and_then(|mut st| st.query_row(params![project.as_str(), secret.name, v], read).optional()),
            None => conn
                .prepare_cached(
                    "SELECT version, nonce, ciphertext, fingerprint, created_at_ms FROM secrets
                     WHERE project = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1",
                )
                .and_then(|mut st| st.query_row(params![project.as_str(), secret.name], read).optional()),
        };
        row.map_err(storage("read the secret"))?.ok_or_else(not_found)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done write: rusqlite rolls back an
        // uncommitted transaction when it is dropped, so the connection is safe to reuse.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn metadata_of(name: &str, row: &Row) -> SecretMetadata {
    SecretMetadata {
        name: name.to_owned(),
        version: row.version.to_string(),
        fingerprint: row.fingerprint.clone(),
        created_at_ms: row.created_at_ms,
    }
}

fn storage(action: &'static str) -> impl Fn(rusqlite::Error) -> SecretError {
    move |source| SecretError::Storage { action, source }
}

/// `[A-Za-z0-9_.-]{1,128}`.
fn check_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SecretError::InvalidName { name: name.chars().take(200).collect() })
    }
}

/// Canonical positive decimal (`1`, `2`, … — no sign, no leading zeros); anything else names no version.
fn parse_version(v: &str) -> Option<i64> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Binds a ciphertext to its row. Length prefixes make the encoding unambiguous.
fn associated_data(project: &ProjectId, name: &str, version: i64, fingerprint: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_PREFIX.len() + project.as_str().len() + name.len() + fingerprint.len() + 32);
    ad.extend_from_slice(AD_PREFIX);
    for part in [project.as_str().as_bytes(), name.as_bytes(), fingerprint.as_bytes()] {
        ad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        ad.extend_from_slice(part);
    }
    ad.extend_from_slice(&version.to_be_bytes());
    ad
}

fn mac_bytes<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = keyed::<M>(key);
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// A keyed HMAC instance. HMAC accepts keys of every length (longer ones are hashed first), so
/// `new_from_slice` cannot fail here.
fn keyed<M: Mac + KeyInit>(key: &[u8]) -> M {
    <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of every length")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = keyed::<Hmac<Sha256>>(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn fill_random(buf: &mut [u8]) -> Result<(), SecretError> {
    use rand::RngCore;
    rand::rngs::OsRng.try_fill_bytes(buf).map_err(|e| SecretError::Random(e.to_string()))
}

// ---- The master key file (same approach as `crate::keys`: 0700 directory, 0600 file, refuse open modes). ----

fn create_master_key(keys_dir: &Path, path: &Path) -> Result<Zeroizing<[u8; 32]>, SecretError> {
    create_private_dir(keys_dir)?;
    let mut key = Zeroizing::new([0u8; 32]);
    fill_random(&mut key[..])?;
    let text = Zeroizing::new(format!("{KEY_HEADER} {}\n", hex::encode(&key[..])));
    let io = |action, source| SecretError::KeyFileIo { action, path: path.to_owned(), source };
    let mut file = match open_owner_only(path) {
        Ok(file) => file,
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return load_master_key(path),
        Err(e) => return Err(io("create", e)),
    };
    file.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    Ok(key)
}

fn load_master_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, SecretError> {
    check_owner_only(path)?;
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| SecretError::KeyFileIo {
        action: "read",
        path: path.to_owned(),
        source,
    })?);
    let malformed = |reason| SecretError::KeyFileMalformed { path: path.to_owned(), reason };
    let hex_key = text
        .trim_end()
        .strip_prefix(KEY_HEADER)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| malformed("missing header"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_key, &mut key[..]).map_err(|_| malformed("the key is not 64 hex digits"))?;
    Ok(key)
}

fn create_private_dir(dir: &Path) -> Result<(), SecretError> {
    crate::storage::keys::create_private_dir(dir).map_err(|source| SecretError::KeyFileIo {
        action: "create directory",
        path: dir.to_owned(),
        source,
    })
}

use crate::storage::keys::open_owner_only;

fn check_owner_only(path: &Path) -> Result<(), SecretError> {
    match crate::storage::keys::too_open_mode(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(SecretError::KeyFileTooOpen { path: path.to_owned(), mode }),
        Err(source) => Err(SecretError::KeyFileIo { action: "stat", path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::redaction::Redactor;

    const CANARY: &[u8] = b"vadyl-canary-7f3a9c2e51d04b86";

    fn project(s: &str) -> ProjectId {
        s.parse().unwrap()
    }

    fn open(dir: &Path) -> Result<SecretStore, SecretError> {
        SecretStore::open(&dir.join("secrets.db"), &dir.join("keys"))
    }

    fn fresh() -> (tempfile::TempDir, SecretStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        (dir, store)
    }

    fn plaintext(store: &SecretStore, p: &ProjectId, r: &SecretRef) -> Result<Vec<u8>, SecretError> {
        store.with_plaintext(p, r, |bytes| bytes.to_vec())
    }

    fn raw_db(dir: &Path) -> Connection {
        Connection::open(dir.join("secrets.db")).unwrap()
    }

    #[test]
    fn a_value_round_trips_and_survives_reopening() {
        let (dir, store) = fresh();
        let p = project("acme");
        let meta = store.set(&p, "stripe-api-key", CANARY).unwrap();
        assert_eq!((meta.name.as_str(), meta.version.as_str()), ("stripe-api-key", "1"));
        assert!(meta.created_at_ms > 0);
        assert_eq!(plaintext(&store, &p, &SecretRef::latest("stripe-api-key")).unwrap(), CANARY);
        drop(store);
        let store = open(dir.path()).unwrap();
        assert_eq!(plaintext(&store, &p, &SecretRef::pinned("stripe-api-key", "1")).unwrap(), CANARY);
        assert_eq!(store.metadata(&p, &SecretRef::latest("stripe-api-key")).unwrap(), meta);
    }

    #[test]
    fn the_value_is_not_stored_in_clear() {
        let (dir, store) = fresh();
        store.set(&project("acme"), "k", CANARY).unwrap();
        let redactor = Redactor::new([CANARY.to_vec()]).unwrap();
        let ciphertexts: Vec<Vec<u8>> = raw_db(dir.path())
            .prepare("SELECT ciphertext FROM secrets")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ciphertexts.len(), 1);
        assert_eq!(ciphertexts[0].len(), CANARY.len() + TAG_LEN);
        assert_eq!(redactor.find(&ciphertexts[0]), None);
        drop(store);
        for file in ["secrets.db", "secrets.db-wal"] {
            if let Ok(bytes) = fs::read(dir.path().join(file)) {
                assert_eq!(redactor.find(&bytes), None, "{file}");
            }
        }
    }

    #[test]
    fn a_new_version_leaves_old_versions_intact() {
        let (_dir, store) = fresh();
        let p = project("acme");
        let v1 = store.set(&p, "token", b"first-value").unwrap();
        let v2 = store.set(&p, "token", b"second-value").unwrap();
        assert_eq!((v1.version.as_str(), v2.version.as_str()), ("1", "2"));
        assert_ne!(v1.fingerprint, v2.fingerprint);
        assert_eq!(plaintext(&store, &p, &v1.pinned_ref()).unwrap(), b"first-value");
        assert_eq!(plaintext(&store, &p, &SecretRef::latest("token")).unwrap(), b"second-value");
        assert_eq!(store.metadata(&p, &SecretRef::pinned("token", "1")).unwrap(), v1);
        assert_eq!(store.list(&p).unwrap(), vec![v2.clone()]);
        // The same value again is still a new version, with the same fingerprint.
        let v3 = store.set(&p, "token", b"first-value").unwrap();
        assert_eq!((v3.version.as_str(), &v3.fingerprint), ("3", &v1.fingerprint));
    }

    #[test]
    fn unknown_or_malformed_versions_are_not_found() {
        let (_dir, store) = fresh();
        let p = project("acme");
        store.set(&p, "token", b"value-1").unwrap();
        for version in ["2", "0", "01", "+1", "-1", "one", "", "99999999999999999999999"] {
            let err = store.metadata(&p, &SecretRef::pinned("token", version)).unwrap_err();
            assert!(
                matches!(&err, SecretError::NotFound { name, version: Some(v) } if name == "token" && v == version),
                "{version}: {err:?}"
            );
        }
        let err = store.metadata(&p, &SecretRef::latest("missing")).unwrap_err();
        assert_eq!(err.to_string(), "no secret named \"missing\" in this project");
        let err = store.metadata(&p, &SecretRef::pinned("token", "7")).unwrap_err();
        assert_eq!(err.to_string(), "no secret named \"token\" with version \"7\" in this project");
    }

    #[test]
    fn tampered_ciphertext_fails_to_decrypt() {
        let (dir, store) = fresh();
        let p = project("acme");
        store.set(&p, "token", CANARY).unwrap();
        let db = raw_db(dir.path());
        let mut ciphertext: Vec<u8> = db.query_row("SELECT ciphertext FROM secrets", [], |r| r.get(0)).unwrap();
        ciphertext[3] ^= 0x01;
        db.execute("UPDATE secrets SET ciphertext = ?1", params![ciphertext]).unwrap();
        let err = plaintext(&store, &p, &SecretRef::latest("token")).unwrap_err();
        assert!(matches!(&err, SecretError::Decrypt { name, version } if name == "token" && version == "1"), "{err:?}");
        assert!(err.to_string().contains("failed authentication"), "{err}");
        // HMAC goes through the same check.
        assert!(matches!(
            store.hmac(&p, &SecretRef::latest("token"), HmacAlgorithm::Sha256, b"x"),
            Err(SecretError::Decrypt { .. })
        ));
        // A truncated nonce is refused the same way, not a panic.
        raw_db(dir.path()).execute("UPDATE secrets SET nonce = X'0102'", []).unwrap();
        assert!(matches!(plaintext(&store, &p, &SecretRef::latest("token")), Err(SecretError::Decrypt { .. })));
    }

    #[test]
    fn rows_moved_between_names_versions_or_projects_fail_to_decrypt() {
        let (dir, store) = fresh();
        let (a, b) = (project("acme"), project("globex"));
        store.set(&a, "alpha", b"alpha-value").unwrap();
        store.set(&a, "beta", b"beta-value").unwrap();
        store.set(&a, "beta", b"beta-value-2").unwrap();
        store.set(&b, "alpha", b"globex-alpha").unwrap();
        let db = raw_db(dir.path());
        let copy = |from: (&str, &str, i64), to: (&str, &str, i64)| {
            db.execute(
                "UPDATE secrets SET (nonce, ciphertext, fingerprint) =
                   (SELECT nonce, ciphertext, fingerprint FROM secrets WHERE project = ?1 AND name = ?2 AND version = ?3)
                 WHERE project = ?4 AND name = ?5 AND version = ?6",
                params![from.0, from.1, from.2, to.0, to.1, to.2],
            )
            .unwrap()
        };
        assert_eq!(copy(("acme", "alpha", 1), ("acme", "beta", 1)), 1);
        assert!(matches!(plaintext(&store, &a, &SecretRef::pinned("beta", "1")), Err(SecretError::Decrypt { .. })));
        assert_eq!(copy(("acme", "beta", 2), ("acme", "alpha", 1)), 1);
        assert!(matches!(plaintext(&store, &a, &SecretRef::latest("alpha")), Err(SecretError::Decrypt { .. })));
        assert_eq!(copy(("acme", "beta", 2), ("globex", "alpha", 1)), 1);
        assert!(matches!(plaintext(&store, &b, &SecretRef::latest("alpha")), Err(SecretError::Decrypt { .. })));
        // Untouched rows still decrypt.
        assert_eq!(plaintext(&store, &a, &SecretRef::latest("beta")).unwrap(), b"beta-value-2");
        // Editing the stored fingerprint is caught too.
        db.execute("UPDATE secrets SET fingerprint = 'hmac-sha256:00' WHERE name = 'beta' AND version = 2", [])
            .unwrap();
        assert!(matches!(plaintext(&store, &a, &SecretRef::latest("beta")), Err(SecretError::Decrypt { .. })));
    }

    #[test]
    fn metadata_listing_errors_and_debug_never_contain_the_value() {
        let (dir, store) = fresh();
        let p = project("acme");
        let redactor = Redactor::new([CANARY.to_vec()]).unwrap();
        let meta = store.set(&p, "canary", CANARY).unwrap();
        let mut texts = vec![
            format!("{meta:?}"),
            serde_json::to_string(&meta).unwrap(),
            format!("{:?}", store.metadata(&p, &SecretRef::latest("canary")).unwrap()),
            format!("{:?}", store.list(&p).unwrap()),
            format!("{store:?}"),
            format!("{:?}", store.hmac(&p, &SecretRef::latest("canary"), HmacAlgorithm::Sha256, b"m").unwrap()),
        ];
        let errors = [
            store.set(&p, "bad name", CANARY).unwrap_err(),
            store.metadata(&project("other"), &SecretRef::latest("canary")).unwrap_err(),
        ];
        for err in &errors {
            texts.push(format!("{err} {err:?}"));
        }
        raw_db(dir.path()).execute("UPDATE secrets SET ciphertext = zeroblob(length(ciphertext))", []).unwrap();
        let err = plaintext(&store, &p, &SecretRef::latest("canary")).unwrap_err();
        texts.push(format!("{err} {err:?}"));
        let key_hex = fs::read_to_string(store.key_path()).unwrap();
        let key_hex = key_hex.trim_end().rsplit(' ').next().unwrap().to_owned();
        let key_redactor = Redactor::new([key_hex.into_bytes()]).unwrap();
        for text in &texts {
            assert_eq!(redactor.find(text.as_bytes()), None, "the value leaked into {text}");
            assert_eq!(key_redactor.find(text.as_bytes()), None, "the key leaked into {text}");
        }
        assert!(meta.fingerprint.starts_with("hmac-sha256:") && meta.fingerprint.len() == 12 + 32);
    }

    #[test]
    fn the_fingerprint_is_keyed_and_project_bound() {
        use sha2::Digest;
        let (_dir, store) = fresh();
        let (a, b) = (project("acme"), project("globex"));
        let fa = store.set(&a, "k", CANARY).unwrap().fingerprint;
        let fb = store.set(&b, "k", CANARY).unwrap().fingerprint;
        assert_ne!(fa, fb, "equal values in two projects must not look equal");
        assert_eq!(fa, store.fingerprint(&a, CANARY));
        let unkeyed = hex::encode(&Sha256::digest(CANARY)[..16]);
        assert!(!fa.contains(&unkeyed));
        // Another registry's key gives another fingerprint for the same value.
        let (_other_dir, other) = fresh();
        assert_ne!(other.set(&a, "k", CANARY).unwrap().fingerprint, fa);
    }

    #[test]
    fn projects_cannot_see_each_others_secrets() {
        let (_dir, store) = fresh();
        let (a, b) = (project("acme"), project("globex"));
        store.set(&a, "shared-name", b"acme-only").unwrap();
        let r = SecretRef::latest("shared-name");
        assert!(matches!(store.metadata(&b, &r), Err(SecretError::NotFound { .. })));
        assert!(matches!(plaintext(&store, &b, &r), Err(SecretError::NotFound { .. })));
        assert!(matches!(store.hmac(&b, &r, HmacAlgorithm::Sha256, b"x"), Err(SecretError::NotFound { .. })));
        assert!(store.list(&b).unwrap().is_empty());
        // B's own secret of the same name starts at version 1 and does not disturb A's.
        assert_eq!(store.set(&b, "shared-name", b"globex-only").unwrap().version, "1");
        assert_eq!(plaintext(&store, &a, &r).unwrap(), b"acme-only");
        assert_eq!(plaintext(&store, &b, &r).unwrap(), b"globex-only");
    }

    #[test]
    fn list_returns_the_latest_version_of_each_name() {
        let (_dir, store) = fresh();
        let p = project("acme");
        store.set(&p, "b", b"b-1").unwrap();
        store.set(&p, "a", b"a-1").unwrap();
        store.set(&p, "b", b"b-2").unwrap();
        let listed: Vec<(String, String)> = store.list(&p).unwrap().into_iter().map(|m| (m.name, m.version)).collect();
        assert_eq!(listed, [("a".into(), "1".into()), ("b".into(), "2".into())]);
    }

    #[test]
    fn names_and_values_are_validated() {
        let (_dir, store) = fresh();
        let p = project("acme");
        let long = "x".repeat(MAX_NAME_LEN);
        for ok in ["a", "A_b.c-9", long.as_str()] {
            store.set(&p, ok, b"v").unwrap();
        }
        let too_long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "a b", "a/b", "ключ", "a\0", too_long.as_str()] {
            assert!(matches!(store.set(&p, bad, b"v"), Err(SecretError::InvalidName { .. })), "{bad:?}");
            assert!(matches!(store.metadata(&p, &SecretRef::latest(bad)), Err(SecretError::InvalidName { .. })));
        }
        store.set(&p, "max", &vec![7u8; MAX_VALUE_LEN]).unwrap();
        let err = store.set(&p, "big", &vec![7u8; MAX_VALUE_LEN + 1]).unwrap_err();
        assert!(matches!(err, SecretError::InvalidValue { len, .. } if len == MAX_VALUE_LEN + 1));
        let err = store.set(&p, "empty", b"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for secret \"empty\": it is 0 bytes, a secret value must be 1 to 65536 bytes"
        );
        assert!(matches!(store.metadata(&p, &SecretRef::latest("big")), Err(SecretError::NotFound { .. })));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let (_dir, store) = fresh();
        let p = project("acme");
        // Test case 1: key = 0x0b * 20, data = "Hi There".
        store.set(&p, "tc1", &[0x0b; 20]).unwrap();
        let r = SecretRef::latest("tc1");
        assert_eq!(
            hex::encode(store.hmac(&p, &r, HmacAlgorithm::Sha256, b"Hi There").unwrap()),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(store.hmac(&p, &r, HmacAlgorithm::Sha512, b"Hi There").unwrap()),
            "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde\
             daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"
        );
        // Test case 2: key = "Jefe", data = "what do ya want for nothing?".
        store.set(&p, "tc2", b"Jefe").unwrap();
        assert_eq!(
            hex::encode(
                store
                    .hmac(&p, &SecretRef::latest("tc2"), HmacAlgorithm::Sha256, b"what do ya want for nothing?")
                    .unwrap()
            ),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_master_key_is_owner_only_and_open_modes_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        let key_path = dir.path().join("keys").join(KEY_FILE);
        assert_eq!(store.key_path(), key_path);
        assert_eq!(fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.path().join("keys")).unwrap().permissions().mode() & 0o777, 0o700);
        drop(store);
        for mode in [0o640, 0o604, 0o644] {
            fs::set_permissions(&key_path, fs::Permissions::from_mode(mode)).unwrap();
            let err = open(dir.path()).unwrap_err();
            assert!(matches!(&err, SecretError::KeyFileTooOpen { mode: m, .. } if *m == mode), "{err:?}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o400)).unwrap();
        open(dir.path()).unwrap();
    }

    #[test]
    fn a_missing_wrong_or_malformed_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        store.set(&project("acme"), "k", CANARY).unwrap();
        let key_path = store.key_path().to_owned();
        drop(store);
        let original = fs::read(&key_path).unwrap();

        fs::remove_file(&key_path).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(matches!(err, SecretError::KeyFileMissing { .. }), "{err:?}");
        assert!(!key_path.exists(), "a replacement key must not be generated");

        let mut other = open_owner_only(&key_path).unwrap();
        other.write_all(format!("{KEY_HEADER} {}\n", "ab".repeat(32)).as_bytes()).unwrap();
        drop(other);
        assert!(matches!(open(dir.path()), Err(SecretError::KeyMismatch { .. })));

        fs::remove_file(&key_path).unwrap();
        open_owner_only(&key_path).unwrap().write_all(b"not a key\n").unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(matches!(err, SecretError::KeyFileMalformed { reason: "missing header", .. }), "{err:?}");

        fs::remove_file(&key_path).unwrap();
        open_owner_only(&key_path).unwrap().write_all(&original).unwrap();
        let store = open(dir.path()).unwrap();
        assert_eq!(plaintext(&store, &project("acme"), &SecretRef::latest("k")).unwrap(), CANARY);
    }

    #[test]
    fn concurrent_writers_get_distinct_versions() {
        let (_dir, store) = fresh();
        let store = std::sync::Arc::new(store);
        let p = project("acme");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (store, p) = (store.clone(), p.clone());
                std::thread::spawn(move || store.set(&p, "k", format!("value-{i}").as_bytes()).unwrap().version)
            })
            .collect();
        let mut versions: Vec<i64> = handles.into_iter().map(|h| h.join().unwrap().parse().unwrap()).collect();
        versions.sort_unstable();
        assert_eq!(versions, (1..=8).collect::<Vec<_>>());
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SecretStore>();
    }
}
