//! The CLI as a user meets it: embedded data directory, `--server`, `--json`, exit codes.

mod common;

use common::{stderr, stdout, vadyl, Server};

#[test]
fn key_show_creates_the_key_once_and_prints_the_public_half() {
    let dir = tempfile::tempdir().unwrap();
    let first = vadyl(dir.path(), &["--json", "key", "show"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let v: serde_json::Value = serde_json::from_str(&stdout(&first)).unwrap();
    assert_eq!(v["algorithm"], "ed25519");
    assert!(v["verifierKey"].as_str().unwrap().starts_with("vadyl-registry+"));
    let again = vadyl(dir.path(), &["--json", "key", "show"]);
    assert_eq!(stdout(&first), stdout(&again));
    let key_file = std::fs::read_to_string(dir.path().join("keys/registry.ed25519")).unwrap();
    assert!(!stdout(&first).contains(key_file.split_whitespace().nth(1).unwrap()), "the secret seed was printed");
}

#[test]
fn publication_commands_work_embedded_and_against_a_server_with_clear_failures() {
    let dir = tempfile::tempdir().unwrap();
    let nothing = vadyl(dir.path(), &["publication", "latest"]);
    assert!(!nothing.status.success());
    assert!(stderr(&nothing).contains("nothing is published yet"), "{}", stderr(&nothing));
    {
        let reg = common::open(dir.path());
        common::publish(&reg, "stripe-charge-adapter:1.0.0", "payment.charge@1");
        common::publish(&reg, "stripe-charge-adapter:1.1.0", "payment.charge@1");
    }
    let latest = vadyl(dir.path(), &["publication", "latest"]);
    assert!(latest.status.success(), "{}", stderr(&latest));
    assert!(stdout(&latest).contains("publication 2 (valid, latest)"), "{}", stdout(&latest));

    let server = Server::start(dir.path());
    let remote = |args: &[&str]| {
        let mut all = vec!["--server", server.base.as_str()];
        all.extend_from_slice(args);
        vadyl(dir.path(), &all)
    };
    let out = remote(&["publication", "invalidate", "2", "--reason", "bad release"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("latest is now 1"), "{}", stdout(&out));
    let again = remote(&["publication", "invalidate", "2", "--reason", "bad release"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already invalidated") && stderr(&again).contains("409"), "{}", stderr(&again));
    let out = remote(&["--json", "publication", "version", "2"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "invalidated");
    let bad = remote(&["publication", "version", "zero"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("positive whole number"), "{}", stderr(&bad));
    let contracts = remote(&["--json", "contract", "show", "payment.charge@1"]);
    assert!(contracts.status.success(), "{}", stderr(&contracts));
    server.stop();

    // The server's clean stop signed a checkpoint over everything, which verifies.
    let verify = vadyl(dir.path(), &["audit", "verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn audit_commands_refuse_a_missing_log_and_bad_keys_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = vadyl(&dir.path().join("absent"), &["audit", "replay"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("there is no event log"), "{}", stderr(&out));
    let file = dir.path().join("x.ndjson");
    std::fs::write(&file, "{}\n").unwrap();
    let out = vadyl(dir.path(), &["audit", "verify-export", file.to_str().unwrap(), "--public-key", "not-a-key"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("public key is not usable"), "{}", stderr(&out));
}

#[test]
fn bench_log_reports_every_measurement_beside_its_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let out = vadyl(
        dir.path(),
        &[
            "--json",
            "bench",
            "log",
            "--replay-events",
            "3000",
            "--batched-events",
            "1000",
            "--single-events",
            "20",
            "--concurrent-events-per-writer",
            "2",
            "--repetitions",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for m in ["appendBatched", "appendSingle", "appendConcurrent64", "replay"] {
        for field in ["eventsPerSec", "baselineEventsPerSec", "ratio"] {
            assert!(v[m][field].as_f64().unwrap() > 0.0, "{m}.{field} in {v}");
        }
    }
    assert_eq!(v["replay"]["events"], 3000);
}

#[test]
fn bench_invoke_reports_latency_beside_a_direct_call() {
    let dir = tempfile::tempdir().unwrap();
    let out = vadyl(dir.path(), &["--json", "bench", "invoke", "--invocations", "20"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for field in ["medianUs", "p99Us", "baselineMedianUs"] {
        assert!(v["declarative"][field].as_f64().unwrap() > 0.0, "{field} in {v}");
    }
    assert!(v["declarative"]["addedMedianUs"].is_number(), "{v}");
}
