//! Tests of the secret store as the registry opens it: the runtime's `SecretStore` over
//! [`SqliteSecretRows`] and the master key file, through [`open_secrets`]. Tampering goes straight
//! to the SQLite file, as an attacker with the disk would.

use std::fs;
use std::io::Write;

use sha2::Sha256;

use super::*;
use crate::runtime::host::secrets::{HmacAlgorithm, SecretRef, SecretStore, MAX_NAME_LEN, MAX_VALUE_LEN, TAG_LEN};
use crate::runtime::redaction::Redactor;
use crate::storage::keys::{open_owner_only, SecretKeyError, SECRETS_KEY_FILE, SECRETS_KEY_HEADER};
use crate::storage::{open_secrets, SecretsOpenError};

const CANARY: &[u8] = b"vadyl-canary-7f3a9c2e51d04b86";

fn project(s: &str) -> ProjectId {
    s.parse().unwrap()
}

fn open(dir: &Path) -> Result<SecretStore, SecretsOpenError> {
    open_secrets(&dir.join("secrets.db"), &dir.join("keys"))
}

fn key_file(dir: &Path) -> std::path::PathBuf {
    dir.join("keys").join(SECRETS_KEY_FILE)
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
    db.execute("UPDATE secrets SET fingerprint = 'hmac-sha256:00' WHERE name = 'beta' AND version = 2", []).unwrap();
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
    let key_hex = fs::read_to_string(key_file(dir.path())).unwrap();
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
            store.hmac(&p, &SecretRef::latest("tc2"), HmacAlgorithm::Sha256, b"what do ya want for nothing?").unwrap()
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
    let key_path = key_file(dir.path());
    assert!(key_path.exists());
    assert_eq!(fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(dir.path().join("keys")).unwrap().permissions().mode() & 0o777, 0o700);
    drop(store);
    for mode in [0o640, 0o604, 0o644] {
        fs::set_permissions(&key_path, fs::Permissions::from_mode(mode)).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, SecretsOpenError::KeyFile(SecretKeyError::TooOpen { mode: m, .. }) if *m == mode),
            "{err:?}"
        );
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
    let key_path = key_file(dir.path());
    drop(store);
    let original = fs::read(&key_path).unwrap();

    fs::remove_file(&key_path).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, SecretsOpenError::KeyFileMissing { .. }), "{err:?}");
    assert!(!key_path.exists(), "a replacement key must not be generated");

    let mut other = open_owner_only(&key_path).unwrap();
    other.write_all(format!("{SECRETS_KEY_HEADER} {}\n", "ab".repeat(32)).as_bytes()).unwrap();
    drop(other);
    assert!(matches!(open(dir.path()), Err(SecretsOpenError::KeyMismatch { .. })));

    fs::remove_file(&key_path).unwrap();
    open_owner_only(&key_path).unwrap().write_all(b"not a key\n").unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(err, SecretsOpenError::KeyFile(SecretKeyError::Malformed { reason: "missing header", .. })),
        "{err:?}"
    );

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
