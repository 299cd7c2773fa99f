//! The audit surface over the wire, as a remote auditor meets it: an `auditor` token, the registry's
//! public key, and a data directory of their own that holds nothing of the server's. Every step goes
//! through `vadyl … --server URL audit …`, and every check is recomputed on the auditor's side.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{stderr, stdout, vadyl, vadyl_bin, vadyl_ok, Server};
use serde_json::{json, Value};

/// `vadyl --data-dir <auditor's own dir> --server URL args…` with `token`.
fn remote(auditor_dir: &Path, server: &Server, token: &str, args: &[&str]) -> Output {
    Command::new(vadyl_bin())
        .arg("--data-dir")
        .arg(auditor_dir)
        .arg("--server")
        .arg(&server.base)
        .args(args)
        .env("VADYL_TOKEN", token)
        .env_remove("VADYL_SERVER")
        .output()
        .expect("the vadyl binary runs")
}

fn remote_ok(auditor_dir: &Path, server: &Server, token: &str, args: &[&str]) -> String {
    let out = remote(auditor_dir, server, token, args);
    assert!(out.status.success(), "{args:?}: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

fn public_key(data: &Path) -> String {
    let shown: Value = serde_json::from_str(&vadyl_ok(data, &["--json", "key", "show"])).unwrap();
    shown["verifierKey"].as_str().unwrap().to_owned()
}

fn issue(server: &Server, body: Value) -> String {
    let (status, v) = server.post("/tokens", &body);
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

fn get(server: &Server, token: &str, path: &str) -> (u16, String) {
    let r = reqwest::blocking::Client::new().get(server.url(path)).bearer_auth(token).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Waits until the server's own cadence has signed a checkpoint covering at least `size` events.
fn wait_for_checkpoint(server: &Server, size: u64) -> u64 {
    for _ in 0..100 {
        let (status, body) = get(server, &server.token, "/audit/checkpoint");
        if status == 200 {
            let tree: u64 = body.lines().nth(1).and_then(|l| l.parse().ok()).unwrap();
            if tree >= size {
                return tree;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no checkpoint over {size} events was signed on the cadence");
}

fn head(server: &Server) -> u64 {
    let (_, page) = server.get("/events?limit=1");
    page["head"].as_u64().unwrap()
}

#[test]
fn an_auditor_with_a_token_and_the_public_key_audits_a_remote_registry() {
    let (_dir, data) = common::hooks_in_two_projects();
    let key = public_key(&data);
    let server = Server::start_with(&data, &["--checkpoint-interval-secs", "1", "--checkpoint-events", "5"]);
    let auditor = issue(&server, json!({"role": "auditor", "label": "remote auditor"}));
    let own = tempfile::tempdir().unwrap();
    let mine = own.path();

    // The checkpoint, signed on the server's cadence, checked against the key here.
    wait_for_checkpoint(&server, head(&server) - 1);
    let cp: Value = serde_json::from_str(&remote_ok(
        mine,
        &server,
        &auditor,
        &["--json", "audit", "checkpoint", "--public-key", &key],
    ))
    .unwrap();
    let remembered = mine.join("remembered.note");
    std::fs::write(&remembered, cp["note"].as_str().unwrap()).unwrap();
    let remembered_size = cp["treeSize"].as_u64().unwrap();

    // The whole log, page by page (3 per page), every link checked by the CLI on the way.
    let all: Value = serde_json::from_str(&remote_ok(
        mine,
        &server,
        &auditor,
        &["--json", "audit", "events", "--limit", "3", "--all"],
    ))
    .unwrap();
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.len() as u64, all["head"].as_u64().unwrap(), "every event, once");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["position"], i as u64 + 1);
    }
    let page: Value = serde_json::from_str(&remote_ok(
        mine,
        &server,
        &auditor,
        &["--json", "audit", "events", "--type", "BindingCreated"],
    ))
    .unwrap();
    let bindings = page["events"].as_array().unwrap();
    assert_eq!(bindings.len(), 2, "{page}");
    assert!(bindings.iter().all(|e| e["type"] == "BindingCreated"));

    // Inclusion of an arbitrary event, by position and by id, verified offline.
    let proof = mine.join("proof.json");
    let position = (remembered_size / 2).max(1).to_string();
    remote_ok(
        mine,
        &server,
        &auditor,
        &["audit", "prove", "--position", &position, "--public-key", &key, "--out", proof.to_str().unwrap()],
    );
    let checked = vadyl_ok(mine, &["audit", "verify-proof", proof.to_str().unwrap(), "--public-key", &key]);
    assert!(checked.contains(&format!("event {position} ")), "{checked}");
    let id = bindings[0]["eventId"].as_str().unwrap();
    let by_id = remote_ok(mine, &server, &auditor, &["audit", "prove", "--event-id", id, "--public-key", &key]);
    let by_id: Value = serde_json::from_str(&by_id).unwrap();
    assert_eq!(by_id["event"]["eventId"], id);

    // The log grows; the new checkpoint is proven to extend the remembered one.
    let admin_binds = |alias: &str| {
        let (status, v) =
            server.post("/bindings", &json!({"project": "shop", "alias": alias, "implementation": "hooks:1.0.0"}));
        assert_eq!(status, 201, "{v}");
    };
    for alias in ["later-1", "later-2", "later-3"] {
        admin_binds(alias);
    }
    wait_for_checkpoint(&server, remembered_size + 4);
    let consistency = mine.join("consistency.json");
    let extended = remote_ok(
        mine,
        &server,
        &auditor,
        &[
            "audit",
            "prove-consistency",
            "--from-checkpoint",
            remembered.to_str().unwrap(),
            "--public-key",
            &key,
            "--out",
            consistency.to_str().unwrap(),
        ],
    );
    assert!(extended.contains(&format!("extends the remembered one of {remembered_size} events")), "{extended}");
    let verify_consistency = [
        "audit",
        "verify-consistency",
        consistency.to_str().unwrap(),
        "--from-checkpoint",
        remembered.to_str().unwrap(),
        "--public-key",
        &key,
    ];
    let offline = vadyl_ok(mine, &verify_consistency);
    assert!(offline.starts_with("ok:"), "{offline}");
    // A proof whose path was altered does not connect the two checkpoints.
    let mut altered: Value = serde_json::from_str(&std::fs::read_to_string(&consistency).unwrap()).unwrap();
    altered["path"][0] = json!("00".repeat(32));
    std::fs::write(&consistency, altered.to_string()).unwrap();
    let out = vadyl(mine, &verify_consistency);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not connected"), "{}", stderr(&out));

    // The export, downloaded and verified; the whole log verified here; a replay at a position,
    // folded here from the verified export, equal to the operator's own replay on the server's disk.
    let export = mine.join("history.ndjson");
    remote_ok(mine, &server, &auditor, &["audit", "export", "--out", export.to_str().unwrap()]);
    let verified = vadyl_ok(mine, &["audit", "verify-export", export.to_str().unwrap(), "--public-key", &key]);
    assert!(verified.starts_with("ok:"), "{verified}");
    let verified = remote_ok(mine, &server, &auditor, &["audit", "verify", "--public-key", &key]);
    assert!(verified.contains("recomputed here"), "{verified}");
    let theirs: Value = serde_json::from_str(&remote_ok(
        mine,
        &server,
        &auditor,
        &["--json", "audit", "replay", "--to", "4", "--public-key", &key],
    ))
    .unwrap();
    let (status, served) = server.get("/audit/replay?to=4");
    assert_eq!(status, 200, "{served}");
    assert_eq!(theirs["digests"], served["digests"]);
    assert_eq!(theirs["summary"]["position"], 4);

    // Against a server, the key must be given: the server's word is not trusted.
    let out = remote(mine, &server, &auditor, &["audit", "verify"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--public-key"), "{}", stderr(&out));
    // A different key refuses the server's checkpoint.
    let other = tempfile::tempdir().unwrap();
    let stranger = public_key(&other.path().join("data"));
    let out = remote(mine, &server, &auditor, &["audit", "checkpoint", "--public-key", &stranger]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    // The auditor's own directory holds nothing of the server's history.
    assert!(!mine.join("events.db").exists());
}

#[test]
fn a_project_token_cannot_read_the_log_and_bad_cursors_are_refused() {
    let (_dir, data) = common::hooks_in_two_projects();
    let server = Server::start_with(&data, &["--checkpoint-interval-secs", "1"]);
    let shop = issue(&server, json!({"role": "project", "project": "shop"}));
    let publisher = issue(&server, json!({"role": "publisher", "implementations": ["hooks"]}));
    for token in [&shop, &publisher] {
        for path in ["/events", "/events/1", "/audit/checkpoint", "/audit/export", "/audit/proof/inclusion?position=1"]
        {
            let (status, body) = get(&server, token, path);
            assert_eq!(status, 403, "{path}: {body}");
            assert!(!body.contains("rival"), "{path} leaked another project: {body}");
        }
    }
    for (path, status) in [
        ("/events?limit=0", 400),
        ("/events?limit=1001", 400),
        ("/events?after=x", 400),
        ("/events/0", 400),
        ("/events/999999", 404),
        ("/events/by-id/nope", 404),
        ("/audit/proof/inclusion", 400),
        ("/audit/proof/inclusion?position=999999", 404),
        ("/audit/proof/consistency?from=0", 400),
        ("/audit/replay?to=999999", 404),
    ] {
        let (got, body) = get(&server, &server.token, path);
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains("\"status\""), "{path}: a problem document: {body}");
    }
    // A page past the head is empty and has no next cursor; pages are stable as the log grows.
    let (_, first) = server.get("/events?limit=2");
    assert_eq!(first["next"], 2);
    let (_, past) = server.get("/events?after=999999");
    assert_eq!(past["events"], json!([]));
    assert!(past["next"].is_null());
}

/// Two histories signed by one key that diverge after a common prefix: a copy of the data
/// directory, each copy then appending something else.
#[test]
fn a_forked_history_is_refused_naming_the_checkpoints_that_disagree() {
    let (dir, a) = common::hooks_in_two_projects();
    let key = public_key(&a);
    let b = dir.path().join("fork");
    common::copy_registry(&a, &b);
    let checkpoint = |data: &Path| -> (String, u64, String) {
        let cp: Value = serde_json::from_str(&vadyl_ok(data, &["--json", "audit", "checkpoint"])).unwrap();
        (
            cp["note"].as_str().unwrap().to_owned(),
            cp["treeSize"].as_u64().unwrap(),
            cp["rootHash"].as_str().unwrap().to_owned(),
        )
    };
    let bind = |data: &Path, alias: &str| {
        vadyl_ok(data, &["connector", "binding", "create", alias, "--implementation", "hooks:1.0.0"]);
    };
    bind(&a, "only-in-a");
    bind(&b, "only-in-b");
    let (a_note, a_size, a_root) = checkpoint(&a);
    let (_, b_size, b_root) = checkpoint(&b);
    assert_eq!(a_size, b_size, "same size, different content");
    let remembered = dir.path().join("a.note");
    std::fs::write(&remembered, &a_note).unwrap();

    // Same size, different roots, on the server's own data directory.
    let args = ["audit", "prove-consistency", "--from-checkpoint", remembered.to_str().unwrap(), "--public-key", &key];
    let out = vadyl(&b, &args);
    assert!(!out.status.success(), "{}", stdout(&out));
    let said = stderr(&out);
    assert!(said.contains(&format!("two checkpoints over {a_size} events disagree")), "{said}");
    assert!(
        said.contains(&format!("remembered root {a_root}")) && said.contains(&format!("new root {b_root}")),
        "{said}"
    );

    // Remotely, after the server has signed more: the proof cannot connect the diverged trees.
    let server = Server::start(&b);
    let auditor = issue(&server, json!({"role": "auditor"}));
    let (status, _) = server.post("/bindings", &json!({"alias": "more-in-b", "implementation": "hooks:1.0.0"}));
    assert_eq!(status, 201);
    let own = tempfile::tempdir().unwrap();
    let out = remote(own.path(), &server, &auditor, &["audit", "checkpoint", "--public-key", &key]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.stop();
    let server = Server::start(&b);
    let out = remote(own.path(), &server, &auditor, &args);
    assert!(!out.status.success(), "{}", stdout(&out));
    let said = stderr(&out);
    assert!(said.contains("the history forked"), "{said}");
    assert!(said.contains(&format!("{a_size} events, root {a_root}")), "names the remembered checkpoint: {said}");
    assert!(said.contains("not connected by the proof"), "{said}");
    server.stop();

    // A remembered tree larger than what the server now signs: truncation or a fork.
    // (More events than the server added since: tokens, a binding, checkpoints.)
    for alias in ["more-in-a-1", "more-in-a-2", "more-in-a-3", "more-in-a-4", "more-in-a-5", "more-in-a-6"] {
        bind(&a, alias);
    }
    let (larger, larger_size, _) = checkpoint(&a);
    std::fs::write(&remembered, &larger).unwrap();
    let server = Server::start(&b);
    let out = remote(own.path(), &server, &auditor, &args);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("smaller than the remembered one"), "{said}");
    assert!(said.contains(&format!("{larger_size} events")), "{said}");
}

#[test]
fn an_auditor_finds_which_run_admitted_a_version_and_what_an_invocation_sent() {
    let (_dir, data) = common::hooks_in_two_projects();
    // A second, failing run on the same implementation must not be taken for the admitting one.
    let server = Server::start(&data);
    let auditor = issue(&server, json!({"role": "auditor"}));
    let (status, again) = server.post("/conformance/run", &json!({"implementationId": "hooks:1.0.0"}));
    assert_eq!(status, 200, "{again}");

    let (status, runs) = get(&server, &auditor, "/conformance/runs?publishedAs=1");
    assert_eq!(status, 200);
    let runs: Value = serde_json::from_str(&runs).unwrap();
    let admitted = runs["runs"].as_array().unwrap();
    assert_eq!(admitted.len(), 1, "exactly one run admitted version 1: {runs}");
    assert_eq!(admitted[0]["implementationId"], "hooks:1.0.0");
    assert_eq!(admitted[0]["passed"], true);
    let run_id = admitted[0]["runId"].as_str().unwrap();
    let (_, all) = get(&server, &auditor, "/conformance/runs?implementation=hooks:1.0.0&limit=1");
    let all: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["runs"].as_array().unwrap().len(), 1);
    let (_, rest) =
        get(&server, &auditor, &format!("/conformance/runs?implementation=hooks:1.0.0&after={}", all["next"]));
    let rest: Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1, "the cursor pages to the second run: {rest}");
    assert_ne!(rest["runs"][0]["runId"], all["runs"][0]["runId"]);
    let (status, one) = get(&server, &auditor, &format!("/conformance/runs/{run_id}"));
    assert_eq!(status, 200);
    let one: Value = serde_json::from_str(&one).unwrap();
    assert!(!one["checks"].as_array().unwrap().is_empty(), "the full report: {one}");
    assert_eq!(get(&server, &auditor, "/conformance/runs/conf_nope").0, 404);
    assert_eq!(get(&server, &auditor, "/conformance/runs?limit=0").0, 400);

    // An invocation, then its record as the auditor reads it.
    let (url, _seen) = common::receiver(std::time::Duration::ZERO);
    let input = json!({"endpointUrl": url, "eventType": "order.paid", "eventId": "evt_1", "payload": "{\"n\":1}",
                       "occurredAt": "2026-11-25T12:00:00Z", "headers": []});
    let (_, answer) =
        server.post("/invoke", &json!({"project": "shop", "alias": "hooks", "operation": "deliver", "input": input}));
    let id = answer["invocationId"].as_str().unwrap_or_else(|| panic!("{answer}")).to_owned();
    let (status, page) = get(&server, &auditor, "/invocations?project=shop");
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["records"][0]["invocationId"], id.as_str(), "{page}");
    assert_eq!(page["records"][0]["operation"], "deliver");
    let (status, record) = get(&server, &auditor, &format!("/invocations/{id}"));
    assert_eq!(status, 200);
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["project"], "shop");
    assert_eq!(record["input"]["eventId"], "evt_1", "{record}");
    assert_eq!(record["input"]["payload"], "[REDACTED]", "the contract's sensitive field is blanked");
    // What it asked the host, and what it sent (nothing: the project has no signing secret).
    assert_eq!(record["trace"]["tape"][0]["call"], "hmac", "{record}");
    assert_eq!(record["error"]["code"], "host-denied");
    assert_eq!(record["exchanges"], json!([]));
    let (_, empty) = get(&server, &auditor, "/invocations?project=rival");
    assert_eq!(serde_json::from_str::<Value>(&empty).unwrap()["records"], json!([]));
}
