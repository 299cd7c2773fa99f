//! Durability: a registry process killed with SIGKILL while writers append loses no acknowledged
//! event, and its chain verifies after restart.
//!
//! The test re-runs its own binary as the registry process (the child branch below): eight writer
//! threads create bindings through `Registry::execute` — the path every HTTP write takes — and
//! print `ack <alias> <position>` only after the append returned. The parent kills the child
//! mid-stream and checks every acknowledged event against the reopened log.

mod common;

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
