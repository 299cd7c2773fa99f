//! Durability: a registry process killed with SIGKILL loses nothing it acknowledged.
//!
//! - Appends: the test re-runs its own binary as the registry process (the child branch below):
//!   eight writer threads create bindings through `Registry::execute` — the path every HTTP write
//!   takes — and print `ack <alias> <position>` only after the append returned. The parent kills the
//!   child mid-stream and checks every acknowledged event against the reopened log.
//! - Invocation records: a real `vadyl serve` answers invokes from eight clients and is killed right
//!   after the last answer the test waits for; every `invocationId` a client was given has its record.

mod common;
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "VADYL_CRASH_CHILD_DATA_DIR";

fn child(data_dir: &str) {
    let reg = std::sync::Arc::new(common::open(std::path::Path::new(data_dir)));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let reg = reg.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let alias = format!("w{t}-{i}");
                    let target: vadyl::ids::BindingTarget = "stripe-charge-adapter@^1".parse().unwrap();
                    let stored = reg
                        .registry()
                        .execute(&common::actor("crash-writer"), |s| {
                            vadyl::commands::bind(s, "shop".parse().unwrap(), alias.parse().unwrap(), target.clone())
                        })
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {alias} {}", stored[0].position).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = common::open(dir.path());
        common::publish(&reg, "stripe-charge-adapter:1.0.0", "payment.charge@1");
    }
    let mut registry_process = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "acknowledged_appends_survive_sigkill", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = registry_process.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = BTreeMap::new();
    while acked.len() < 300 {
        let line = lines.next().expect("the registry process acknowledges appends").unwrap();
        if let Some(rest) = line.strip_prefix("ack ") {
            let (alias, position) = rest.split_once(' ').unwrap();
            acked.insert(alias.to_owned(), position.parse::<u64>().unwrap());
        }
    }
    // SIGKILL, while the writers are mid-append.
    registry_process.kill().unwrap();
    registry_process.wait().unwrap();
    // Acknowledgements already written to the pipe before the kill count too.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ack ") {
            if let Some((alias, position)) = rest.split_once(' ') {
                if let Ok(p) = position.parse::<u64>() {
                    acked.insert(alias.to_owned(), p);
                }
            }
        }
    }

    let verify = common::vadyl(dir.path(), &["audit", "verify"]);
    assert!(verify.status.success(), "{}{}", common::stdout(&verify), common::stderr(&verify));
    let reg = common::open(dir.path());
    let project: vadyl::ids::ProjectId = "shop".parse().unwrap();
    for (alias, position) in &acked {
        let binding = reg.registry().read(|s| s.binding(&project, &alias.parse().unwrap()).cloned());
        let binding = binding.unwrap_or_else(|| panic!("acknowledged binding {alias} was lost"));
        assert_eq!(binding.created.position, *position, "{alias}");
        assert_eq!(binding.created.actor, "crash-writer");
    }
    let total = reg.registry().read(|s| s.bindings.len());
    assert!(total >= acked.len(), "{total} bindings stored, {} acknowledged", acked.len());
}

const SECRET: &str = "sk_test_crash_0c4b7e2a91d5f3e6";

#[test]
fn every_answered_invocation_has_its_record_after_sigkill() {
    let fake = support::fake_stripe::FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::set_secret(&data, "stripe-secret-key", &format!("{SECRET}\n"));
    let manifest = dir.path().join("stripe.connector.json");
    std::fs::write(&manifest, support::stripe_manifest(&fake, "1.0.0").to_string()).unwrap();
    let manifest = manifest.to_str().unwrap();
    common::vadyl_ok(&data, &["connector", "build", "declarative", "--manifest", manifest]);
    common::vadyl_ok(&data, &["connector", "conformance", "run", "--implementation", "stripe-charge-adapter:1.0.0"]);
    common::vadyl_ok(
        &data,
        &["connector", "binding", "create", "pay", "--implementation", "stripe-charge-adapter:1.0.0"],
    );

    let server = common::Server::start_with(&data, &["--rate-limit", "0"]);
    let (url, token) = (server.url("/invoke"), server.token.clone());
    let (answers, answered) = std::sync::mpsc::channel::<serde_json::Value>();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (url, token, answers) = (url.clone(), token.clone(), answers.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                for i in 0.. {
                    let input = serde_json::json!({"amount": 100 + i, "currency": "usd", "source": "tok_visa",
                                                   "idempotencyKey": format!("crash-{c}-{i}"), "metadata": []});
                    let body = serde_json::json!({"alias": "pay", "operation": "charge", "input": input});
                    // Once the server is gone, requests fail and the client stops.
                    let Ok(response) = http.post(&url).bearer_auth(&token).json(&body).send() else { return };
                    let status = response.status();
                    let Ok(answer) = response.json::<serde_json::Value>() else { return };
                    assert_eq!(status, 200, "{answer}");
                    if answers.send(answer).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(answers);
    let mut seen = Vec::new();
    while seen.len() < 200 {
        seen.push(answered.recv().expect("the clients get answers"));
    }
    // SIGKILL right after an answer: no shutdown, no checkpoint, no snapshot.
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for client in clients {
        client.join().unwrap();
    }
    // Answers that reached a client before the kill count too.
    seen.extend(answered.try_iter());

    let app = common::open(&data);
    for answer in &seen {
        let id = answer["invocationId"].as_str().unwrap_or_else(|| panic!("no invocationId in {answer}"));
        assert_eq!(answer["recorded"], true, "the store was healthy, so every answer is recorded: {answer}");
        let record =
            app.invocation_record(id).unwrap().unwrap_or_else(|| panic!("answered invocation {id} has no record"));
        assert_eq!(record.invocation_id, id);
        assert_eq!(record.output.as_ref(), Some(&answer["output"]), "{id}");
        assert_eq!(record.operation, "charge");
    }
}
