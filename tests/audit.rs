//! The auditor's journey through the CLI: verify, tamper detection, replay, export, prove, and
//! offline verification with only the public key.

mod common;

use std::path::Path;

use common::{stderr, stdout, vadyl};
use vadyl::app::audit::{self, TrustedKey};

/// A registry with some history: publications, an invalidation, bindings and checkpoints.
fn history(dir: &Path) {
    let reg = common::open(dir);
    common::publish(&reg, "stripe-charge-adapter:1.0.0", "payment.charge@1");
    common::publish(&reg, "webhook-signer:1.0.0", "webhook.deliver@1");
    common::bind(&reg, "shop", "stripe", "stripe-charge-adapter@^1");
    reg.registry().checkpoint(&common::actor("test")).unwrap();
    reg.registry().invalidate_publication(&common::actor("test"), vadyl::ids::PublicationVersion(2), "leak").unwrap();
    reg.registry().checkpoint(&common::actor("test")).unwrap();
}

fn verifier_key(dir: &Path) -> String {
    let out = vadyl(dir, &["--json", "key", "show"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["verifierKey"].as_str().unwrap().to_owned()
}

#[test]
fn the_database_refuses_update_and_delete_and_verify_names_an_out_of_band_edit() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path());
    let db = common::Database::of(dir.path());

    let ok = vadyl(dir.path(), &["audit", "verify"]);
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).contains("checkpoints verified"), "{}", stdout(&ok));

    let update = db.run("UPDATE events SET actor = 'mallory' WHERE position = 5;").unwrap_err();
    assert!(update.contains("append-only"), "{update}");
    let delete = db.run("DELETE FROM events WHERE position = 5;").unwrap_err();
    assert!(delete.contains("append-only"), "{delete}");

    // An attacker with access to the database lifts the guard and rewrites one event.
    let edit = format!("{} UPDATE events SET actor = 'mallory' WHERE position = 5;", db.lift_update_guard("events"));
    db.run(&edit).unwrap();
    let bad = vadyl(dir.path(), &["audit", "verify"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("first bad position is 5"), "{}", stderr(&bad));
    assert!(stdout(&bad).contains("position 5: the stored hash does not match"), "{}", stdout(&bad));
    // Only that position is bad: the checkpoints after it still commit to the original hash.
    assert!(!stdout(&bad).contains("position 6"), "{}", stdout(&bad));
}

#[test]
fn an_event_inserted_out_of_band_is_named_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path());
    let db = common::Database::of(dir.path());
    let zero = db.zero32();
    db.run(&format!(
        "INSERT INTO events SELECT MAX(position) + 2, 'forged', 's', 1, 'BindingCreated', 1, 'now', 'mallory', NULL, NULL, \
         '{{}}', {zero}, {zero} FROM events;"
    ))
    .unwrap();
    let out = vadyl(dir.path(), &["--json", "audit", "verify"]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let first = &report["problems"][0];
    assert!(first["reason"].as_str().unwrap().contains("expected position"), "{report}");
}

#[test]
fn a_rewritten_chain_is_caught_by_the_signed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path());
    let db = common::Database::of(dir.path());
    // Rewrite position 3's payload and recompute nothing: the hash mismatch names 3. A forger who
    // could also recompute hashes would still break the checkpoint signed over the old root.
    db.run(&format!("{} UPDATE events SET hash = {} WHERE position = 3;", db.lift_update_guard("events"), db.zero32()))
        .unwrap();
    let out = vadyl(dir.path(), &["--json", "audit", "verify"]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems[0]["position"], 3, "{report}");
    assert!(problems.iter().any(|p| p["reason"].as_str().unwrap().contains("Merkle root")), "{report}");
}

#[test]
fn an_export_verifies_offline_and_any_one_byte_change_breaks_it() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path());
    let key = verifier_key(dir.path());
    let export = dir.path().join("history.ndjson");
    let out = vadyl(dir.path(), &["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Offline: another machine with no data directory, only the file and the key.
    let elsewhere = tempfile::tempdir().unwrap();
    let empty = elsewhere.path().join("no-data");
    let ok = vadyl(&empty, &["audit", "verify-export", export.to_str().unwrap(), "--public-key", &key]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(!empty.exists(), "offline verification created a data directory");

    let bytes = std::fs::read(&export).unwrap();
    let trusted = TrustedKey::parse(&key).unwrap();
    assert!(audit::verify_export(&bytes, &trusted).is_ok());
    for i in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[i] ^= 0x01;
        assert!(
            audit::verify_export(&tampered, &trusted).is_err(),
            "changing byte {i} ({:?} → {:?}) went unnoticed",
            bytes[i] as char,
            tampered[i] as char
        );
    }
    // A different key refuses the genuine export.
    let other = tempfile::tempdir().unwrap();
    let other_key = verifier_key(other.path());
    let refused = vadyl(&empty, &["audit", "verify-export", export.to_str().unwrap(), "--public-key", &other_key]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("checkpoint"), "{}", stderr(&refused));
}

#[test]
fn an_inclusion_proof_verifies_against_the_checkpoint_and_fails_for_another_event() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path());
    let key = verifier_key(dir.path());
    let proof_path = dir.path().join("proof.json");
    let out = vadyl(dir.path(), &["audit", "prove", "--position", "6", "--out", proof_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let offline = tempfile::tempdir().unwrap();
    let ok = vadyl(offline.path(), &["audit", "verify-proof", proof_path.to_str().unwrap(), "--public-key", &key]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("event 6"), "{}", stdout(&ok));

    // Swap in another genuine event (position 7) but keep the path for 6: refused.
    let other = vadyl(dir.path(), &["audit", "prove", "--position", "7"]);
    let other: serde_json::Value = serde_json::from_str(&stdout(&other)).unwrap();
    let mut proof: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&proof_path).unwrap()).unwrap();
    proof["event"] = other["event"].clone();
    std::fs::write(&proof_path, proof.to_string()).unwrap();
    let bad = vadyl(offline.path(), &["audit", "verify-proof", proof_path.to_str().unwrap(), "--public-key", &key]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("does not verify"), "{}", stderr(&bad));

    // Same event, leaf index adjusted to match: the audit path no longer leads to the root.
    proof["leafIndex"] = serde_json::json!(6);
    std::fs::write(&proof_path, proof.to_string()).unwrap();
    let bad = vadyl(offline.path(), &["audit", "verify-proof", proof_path.to_str().unwrap(), "--public-key", &key]);
    assert!(!bad.status.success(), "{}", stdout(&bad));

    // An edited event (its payload changed) fails its own hash.
    let mut edited = other.clone();
    edited["event"]["actor"] = serde_json::json!("mallory");
    std::fs::write(&proof_path, edited.to_string()).unwrap();
    let bad = vadyl(offline.path(), &["audit", "verify-proof", proof_path.to_str().unwrap(), "--public-key", &key]);
    assert!(!bad.status.success());
}

#[test]
fn replay_from_zero_reproduces_the_live_digest_and_stops_at_any_position() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path());
    let live = common::open(dir.path()).registry().read(|s| s.digests());

    let out = vadyl(dir.path(), &["--json", "audit", "replay"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["digests"], serde_json::to_value(&live).unwrap());

    let out = vadyl(dir.path(), &["--json", "audit", "replay", "--to", "4"]);
    let early: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(early["summary"]["position"], 4);
    assert_ne!(early["digests"]["state"], report["digests"]["state"]);

    let human = vadyl(dir.path(), &["audit", "replay", "--to", "4"]);
    assert!(stdout(&human).contains("replayed to position 4"), "{}", stdout(&human));
    let beyond = vadyl(dir.path(), &["audit", "replay", "--to", "100000"]);
    assert!(!beyond.status.success());
    assert!(stderr(&beyond).contains("the log ends at position"), "{}", stderr(&beyond));
}

#[test]
fn start_up_from_a_snapshot_plus_tail_equals_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path());
    {
        let reg = common::open(dir.path());
        reg.registry().write_snapshot().unwrap();
        // A tail after the snapshot.
        common::publish(&reg, "stripe-charge-adapter:1.2.0", "payment.charge@1");
    }
    let from_snapshot = common::open(dir.path()).registry().read(|s| s.clone());
    let store =
        vadyl::storage::open_log(&common::location(dir.path()), vadyl::storage::sqlite::log::Durability::Full).unwrap();
    let replayed = audit::replay(store.as_ref(), None).unwrap();
    assert_eq!(from_snapshot, replayed);

    // A snapshot that no longer matches its digest is ignored, not trusted.
    let snap = dir.path().join("projections.snapshot.json");
    let text = std::fs::read_to_string(&snap).unwrap().replace("stripe-charge-adapter@^1", "stripe-charge-adapter@^2");
    std::fs::write(&snap, text).unwrap();
    assert_eq!(common::open(dir.path()).registry().read(|s| s.clone()), replayed);
}
