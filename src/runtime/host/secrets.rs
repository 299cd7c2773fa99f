//! The secrets host service: secret values encrypted at rest, used by the host on a guest's behalf.
//!
//! A guest names a secret by reference (name, optional version) and never receives its value
//! (`wit/worlds/connector/secrets.wit`). [`SecretStore`] is the service behind those imports; it
//! keeps everything that does not depend on where rows are stored — the encryption, HMACs,
//! fingerprints, name and value checks — and stores rows through the [`SecretRows`] port, which
//! only ever sees ciphertext and metadata. The SQLite rows are
//! `storage::sqlite::secrets::SqliteSecretRows`; the master key file (created on first use,
//! owner-only, refused when others can read it) is handled by `storage::keys`, and
//! `storage::open_secrets` puts the three together.
//!
//! - **Encryption at rest.** Each value is sealed with XChaCha20-Poly1305 under a key derived from the
//!   registry's 32-byte master key. Every row has its own random 24-byte nonce, and the associated
//!   data binds project, name, version and fingerprint, so a ciphertext copied into another row
//!   (another name, version or project) fails authentication instead of decrypting to the wrong
//!   secret.
//! - **One master key per store.** The rows keep a key check (an HMAC of a fixed label under the
//!   master key); [`SecretStore::new`] records it on first use and afterwards refuses another key
//!   rather than silently starting over with a key that cannot decrypt the stored secrets.
//! - **Projects are isolated.** Every row is keyed by project; another project's secret is
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
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Sha256, Sha512};
use zeroize::Zeroizing;

use crate::ids::ProjectId;

/// Longest accepted secret name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Largest accepted secret value, in bytes (64 KiB).
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Bytes of the authentication tag a stored ciphertext carries after the encrypted value.
pub const TAG_LEN: usize = 16;

const NONCE_LEN: usize = 24;
/// Domain-separation labels: the master key is never used directly, only through these.
const LABEL_AEAD: &[u8] = b"vadyl secrets aead v1";
const LABEL_FINGERPRINT: &[u8] = b"vadyl fingerprint v1";
const LABEL_KEY_CHECK: &[u8] = b"vadyl secrets key check v1";
const AD_PREFIX: &[u8] = b"vadyl-secret-row-v1";

/// Why a secrets operation failed. Messages name the secret (never its value) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no secret named {name:?}{} in this project", version.as_ref().map(|v| format!(" with version {v:?}")).unwrap_or_default())]
    NotFound { name: String, version: Option<String> },
    #[error("invalid secret name {name:?}: use 1 to {MAX_NAME_LEN} characters from A-Z, a-z, 0-9, '_', '.' and '-'")]
    InvalidName { name: String },
    #[error("invalid value for secret {name:?}: it is {len} bytes, a secret value must be 1 to {MAX_VALUE_LEN} bytes")]
    InvalidValue { name: String, len: usize },
    /// The rows were encrypted under another master key (the storage layer names the files).
    #[error(
        "the secrets master key is not the key the stored secrets were encrypted with; restore the original key file"
    )]
    KeyMismatch,
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
    #[error("cannot encrypt secret {name:?}: the value is longer than the cipher accepts")]
    Encrypt { name: String },
    #[error("secret {name:?} version {version} failed authentication: its ciphertext was altered or moved from another row, or the master key changed")]
    Decrypt { name: String, version: String },
    /// The backend behind [`SecretRows`] failed.
    #[error("secret store database: cannot {action}: {source}")]
    Storage { action: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
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

/// The version of each secret an invocation uses, resolved once when it starts (when its redactor
/// learns their values). Every later use in the invocation (auth attached at egress, MACs,
/// metadata) reads that version, so a rotation that lands mid-invocation can never hand the
/// implementation or the upstream a value the invocation's redactor does not know.
#[derive(Debug, Clone, Default)]
pub struct PinnedSecrets(Arc<std::collections::BTreeMap<String, Option<String>>>);

impl PinnedSecrets {
    /// `(name, version)` pairs; `None` for a secret that did not exist when the invocation started.
    pub fn new(versions: impl IntoIterator<Item = (String, Option<String>)>) -> Self {
        Self(Arc::new(versions.into_iter().collect()))
    }

    /// What a use of `name` reads: the version pinned at the start; the latest for a name that was
    /// never pinned (hosts that pin nothing, such as tools); a `NotFound` error for a secret that
    /// did not exist at the start, even if it has been set since.
    pub fn reference(&self, name: &str) -> Result<SecretRef, SecretError> {
        match self.0.get(name) {
            Some(Some(version)) => Ok(SecretRef::pinned(name, version.clone())),
            Some(None) => Err(SecretError::NotFound { name: name.to_owned(), version: None }),
            None => Ok(SecretRef::latest(name)),
        }
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

/// One version of a secret as sealed for storage: never the plaintext.
#[derive(Clone)]
pub struct SealedSecret {
    /// The row's own random nonce.
    pub nonce: Vec<u8>,
    /// The encrypted value followed by its [`TAG_LEN`]-byte tag.
    pub ciphertext: Vec<u8>,
    /// The keyed fingerprint of the value (bound into the ciphertext's associated data).
    pub fingerprint: String,
    /// Milliseconds since the Unix epoch when this version was stored.
    pub created_at_ms: i64,
}

/// One stored row: a version number (1, 2, …) and what was sealed for it.
#[derive(Clone)]
pub struct SecretRow {
    pub version: i64,
    pub sealed: SealedSecret,
}

/// The storage port of [`SecretStore`]: rows of (project, name, version) → sealed secret, and the
/// key check of the master key they were sealed under. A backend sees ciphertext and metadata only;
/// it needs no key and never decrypts.
///
/// A backend must keep: rows are never changed or deleted once stored; versions of one (project,
/// name) are 1, 2, 3, … with no gap or repeat, also between concurrent writers and processes; a
/// project's rows are invisible from every other project.
pub trait SecretRows: Send + Sync + fmt::Debug {
    /// Stores the next version of `name` in `project` — one more than the highest stored, 1 for a
    /// new name — and returns that version. Picking the version and storing the row is one atomic
    /// step: `seal` is called with the version (it is bound into the ciphertext) inside it, and its
    /// error aborts the insert. A backend that retries the step may call `seal` again.
    fn insert_next(
        &self,
        project: &ProjectId,
        name: &str,
        seal: &dyn Fn(i64) -> Result<SealedSecret, SecretError>,
    ) -> Result<i64, SecretError>;

    /// The row of `version` of `name` in `project`, the latest when `version` is `None`; `None` when
    /// there is no such row.
    fn load(&self, project: &ProjectId, name: &str, version: Option<i64>) -> Result<Option<SecretRow>, SecretError>;

    /// The metadata of the latest row of every name in `project`, ordered by name (the version as
    /// decimal text).
    fn list_latest(&self, project: &ProjectId) -> Result<Vec<SecretMetadata>, SecretError>;

    /// The recorded key check of the master key the rows are sealed under; `None` before the first
    /// [`SecretStore::new`] on these rows.
    fn key_check(&self) -> Result<Option<String>, SecretError>;

    /// Records `check` unless a key check is already recorded (an existing one is kept).
    fn record_key_check(&self, check: &str) -> Result<(), SecretError>;
}

/// The encrypted secret store: the secrets service over a [`SecretRows`] backend. One per registry;
/// safe to share between threads.
pub struct SecretStore {
    rows: Arc<dyn SecretRows>,
    /// Zeroizes its key on drop.
    cipher: XChaCha20Poly1305,
    fingerprint_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("SecretStore").field("rows", &self.rows).finish_non_exhaustive()
    }
}

impl SecretStore {
    /// The service over `rows`, sealing under `master` (wiped when dropped, like every key derived
    /// from it).
    ///
    /// Rows that already hold a key check refuse another master key ([`SecretError::KeyMismatch`]);
    /// rows without one record this key's check.
    pub fn new(master: Zeroizing<[u8; 32]>, rows: Arc<dyn SecretRows>) -> Result<Self, SecretError> {
        let check = hex::encode(hmac_sha256(&master[..], LABEL_KEY_CHECK));
        match rows.key_check()? {
            Some(stored) if stored != check => return Err(SecretError::KeyMismatch),
            Some(_) => {}
            None => rows.record_key_check(&check)?,
        }
        let aead_key = Zeroizing::new(hmac_sha256(&master[..], LABEL_AEAD));
        let fingerprint_key = Zeroizing::new(hmac_sha256(&master[..], LABEL_FINGERPRINT));
        let cipher = XChaCha20Poly1305::new((&*aead_key).into());
        Ok(Self { rows, cipher, fingerprint_key })
    }

    /// Stores `value` as a new version of `name` in `project` and returns its metadata.
    pub fn set(&self, project: &ProjectId, name: &str, value: &[u8]) -> Result<SecretMetadata, SecretError> {
        check_name(name)?;
        if value.is_empty() || value.len() > MAX_VALUE_LEN {
            return Err(SecretError::InvalidValue { name: name.to_owned(), len: value.len() });
        }
        let fingerprint = self.fingerprint(project, value);
        let created_at_ms = now_ms();
        let seal = |version: i64| -> Result<SealedSecret, SecretError> {
            // A fresh nonce for every call, so a backend that retries never reuses one.
            let mut nonce = [0u8; NONCE_LEN];
            fill_random(&mut nonce)?;
            let ad = associated_data(project, name, version, &fingerprint);
            let mut buf = Zeroizing::new(Vec::with_capacity(value.len() + TAG_LEN));
            buf.extend_from_slice(value);
            self.cipher
                .encrypt_in_place(&XNonce::from(nonce), &ad, &mut *buf)
                .map_err(|_| SecretError::Encrypt { name: name.to_owned() })?;
            // Encrypted in place: the buffer now holds only ciphertext and tag.
            Ok(SealedSecret {
                nonce: nonce.to_vec(),
                ciphertext: std::mem::take(&mut *buf),
                fingerprint: fingerprint.clone(),
                created_at_ms,
            })
        };
        let version = self.rows.insert_next(project, name, &seal)?;
        Ok(SecretMetadata { name: name.to_owned(), version: version.to_string(), fingerprint, created_at_ms })
    }

    /// The metadata of the referenced version (the latest when unpinned). Does not decrypt.
    pub fn metadata(&self, project: &ProjectId, secret: &SecretRef) -> Result<SecretMetadata, SecretError> {
        let row = self.load(project, secret)?;
        Ok(metadata_of(&secret.name, &row))
    }

    /// The latest version of every secret in `project`, ordered by name.
    pub fn list(&self, project: &ProjectId) -> Result<Vec<SecretMetadata>, SecretError> {
        self.rows.list_latest(project)
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
        let ad = associated_data(project, &secret.name, row.version, &row.sealed.fingerprint);
        let decrypt_error = || SecretError::Decrypt { name: secret.name.clone(), version: row.version.to_string() };
        let nonce = <[u8; NONCE_LEN]>::try_from(row.sealed.nonce.as_slice()).map_err(|_| decrypt_error())?;
        let mut buf = Zeroizing::new(Vec::with_capacity(row.sealed.ciphertext.len()));
        buf.extend_from_slice(&row.sealed.ciphertext);
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

    fn load(&self, project: &ProjectId, secret: &SecretRef) -> Result<SecretRow, SecretError> {
        check_name(&secret.name)?;
        let not_found = || SecretError::NotFound { name: secret.name.clone(), version: secret.version.clone() };
        let version = match &secret.version {
            None => None,
            Some(v) => Some(parse_version(v).ok_or_else(not_found)?),
        };
        self.rows.load(project, &secret.name, version)?.ok_or_else(not_found)
    }
}

fn metadata_of(name: &str, row: &SecretRow) -> SecretMetadata {
    SecretMetadata {
        name: name.to_owned(),
        version: row.version.to_string(),
        fingerprint: row.sealed.fingerprint.clone(),
        created_at_ms: row.sealed.created_at_ms,
    }
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

/// The service over an in-memory [`SecretRows`]: what holds whatever the backend. The SQLite rows
/// and the key file are tested in `storage/sqlite/secrets/tests.rs`.
#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::runtime::redaction::Redactor;

    const CANARY: &[u8] = b"vadyl-canary-7f3a9c2e51d04b86";

    /// (project, name, row) in a vector; its one lock makes `insert_next` atomic.
    #[derive(Default)]
    struct VecRows {
        rows: Mutex<Vec<(String, String, SecretRow)>>,
        key_check: Mutex<Option<String>>,
    }

    impl fmt::Debug for VecRows {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("VecRows")
        }
    }

    impl SecretRows for VecRows {
        fn insert_next(
            &self,
            project: &ProjectId,
            name: &str,
            seal: &dyn Fn(i64) -> Result<SealedSecret, SecretError>,
        ) -> Result<i64, SecretError> {
            let mut rows = self.rows.lock().unwrap();
            let last = rows.iter().filter(|r| r.0 == project.as_str() && r.1 == name).map(|r| r.2.version).max();
            let version = last.unwrap_or(0) + 1;
            let sealed = seal(version)?;
            rows.push((project.to_string(), name.to_owned(), SecretRow { version, sealed }));
            Ok(version)
        }

        fn load(
            &self,
            project: &ProjectId,
            name: &str,
            version: Option<i64>,
        ) -> Result<Option<SecretRow>, SecretError> {
            let rows = self.rows.lock().unwrap();
            let mut mine = rows.iter().filter(|r| r.0 == project.as_str() && r.1 == name).map(|r| &r.2);
            let row = match version {
                Some(v) => mine.find(|r| r.version == v),
                None => mine.max_by_key(|r| r.version),
            };
            Ok(row.cloned())
        }

        fn list_latest(&self, project: &ProjectId) -> Result<Vec<SecretMetadata>, SecretError> {
            let mut names: Vec<String> =
                self.rows.lock().unwrap().iter().filter(|r| r.0 == project.as_str()).map(|r| r.1.clone()).collect();
            names.sort();
            names.dedup();
            let latest = |name: &String| self.load(project, name, None).map(|row| row.map(|r| metadata_of(name, &r)));
            names.iter().filter_map(|name| latest(name).transpose()).collect()
        }

        fn key_check(&self) -> Result<Option<String>, SecretError> {
            Ok(self.key_check.lock().unwrap().clone())
        }

        fn record_key_check(&self, check: &str) -> Result<(), SecretError> {
            self.key_check.lock().unwrap().get_or_insert_with(|| check.to_owned());
            Ok(())
        }
    }

    fn project(s: &str) -> ProjectId {
        s.parse().unwrap()
    }

    #[test]
    fn a_backend_sees_only_ciphertext_and_metadata() {
        let rows = Arc::new(VecRows::default());
        let store = SecretStore::new(Zeroizing::new([7; 32]), rows.clone()).unwrap();
        let p = project("acme");
        let meta = store.set(&p, "k", CANARY).unwrap();
        assert_eq!(meta.version, "1");
        let redactor = Redactor::new([CANARY.to_vec()]).unwrap();
        for (_, _, row) in rows.rows.lock().unwrap().iter() {
            let sealed = &row.sealed;
            assert_eq!(sealed.ciphertext.len(), CANARY.len() + TAG_LEN);
            assert_eq!(sealed.nonce.len(), NONCE_LEN);
            for stored in [&sealed.nonce[..], &sealed.ciphertext[..], sealed.fingerprint.as_bytes()] {
                assert_eq!(redactor.find(stored), None);
            }
        }
        let plain = store.with_plaintext(&p, &SecretRef::latest("k"), <[u8]>::to_vec).unwrap();
        assert_eq!(plain, CANARY);
        let second = store.set(&p, "k", b"two").unwrap();
        assert_eq!(second.version, "2");
        assert_eq!(store.metadata(&p, &SecretRef::pinned("k", "1")).unwrap(), meta);
        assert_eq!(store.list(&p).unwrap(), vec![second]);
    }

    #[test]
    fn rows_sealed_under_one_master_key_refuse_another() {
        let rows = Arc::new(VecRows::default());
        let first = SecretStore::new(Zeroizing::new([1; 32]), rows.clone()).unwrap();
        assert!(rows.key_check().unwrap().is_some(), "the first key's check is recorded");
        first.set(&project("acme"), "k", CANARY).unwrap();
        drop(first);
        let err = SecretStore::new(Zeroizing::new([2; 32]), rows.clone()).unwrap_err();
        assert!(matches!(err, SecretError::KeyMismatch), "{err:?}");
        let again = SecretStore::new(Zeroizing::new([1; 32]), rows).unwrap();
        let plain = again.with_plaintext(&project("acme"), &SecretRef::latest("k"), <[u8]>::to_vec).unwrap();
        assert_eq!(plain, CANARY);
    }
}
