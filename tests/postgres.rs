//! Several `vadyl serve` nodes on one real PostgreSQL server (started by the test on a free loopback
//! port): one log, one chain, one state, and nothing lost when a node is killed mid-load.

mod common;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{stderr, stdout, Server};
use serde_json::{json, Value};
use support::fake_stripe::FakeStripe;
use support::postgres::PgServer;

const SECRET: &str = "sk_test_pg_9d2e4b6a8c0f1e3d";

/// `--store URL --keys-dir DIR`: what every node of one registry is started with.
fn node_args(url: &str, keys: &Path) -> Vec<String> {
    vec!["--store".into(), url.into(), "--keys-dir".into(), keys.display().to_string()]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn vadyl_global(data_dir: &Path, global: &[&str], args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::vadyl_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(global)
        .args(args)
        .env_remove("VADYL_SERVER")
        .output()
        .expect("the vadyl binary runs")
}

/// Every event of the log, read through `server`'s `/events`, checking that pages are contiguous.
fn whole_log(server: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let (status, page) = server.get(&format!("/events?after={after}&limit=1000"));
        assert_eq!(status, 200, "{page}");
        for e in page["events"].as_array().expect("events") {
            let p = e["position"].as_u64().expect("position");
            assert_eq!(p, after + 1, "positions are gap-free");
            after = p;
            out.push(e.clone());
        }
        if page["next"].is_null() {
            return out;
        }
    }
}

#[test]
fn two_nodes_on_one_database_share_publications_bindings_and_one_chain() {
    let pg = PgServer::start();
    let url = pg.database("two_nodes");
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let global = node_args(&url, &keys);
    let global = refs(&global);

    // The secret is set once, in the database, and read by both nodes.
    let printed = common::set_secret_global(&a_dir, &global, "stripe-secret-key", &format!("{SECRET}\n"));
    assert!(!printed.contains(SECRET));
    let a = Server::start_global(&a_dir, &global, &[]);
    let mut b = Server::start_global(&b_dir, &global, &[]);
    assert!(!a.token.is_empty(), "node A created the first admin token");
    assert!(!b_dir.join("admin.token").exists(), "node B saw A's token in the shared store and made none");
    b.token = a.token.clone();

    // The secret's next version, set over the API through B (a route that never returns it), is
    // what both nodes see.
    let (status, stored) = b.post("/secrets", &json!({"name": "stripe-secret-key", "value": SECRET}));
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["secret"]["version"], "2", "{stored}");
    assert!(!stored.to_string().contains(SECRET), "the answer holds the secret: {stored}");
    let (status, problem) = b.post("/secrets", &json!({"name": "../bad", "value": "x"}));
    assert_eq!(status, 422, "{problem}");
    let (_, listed) = a.get("/secrets");
    assert_eq!(listed["secrets"][0]["version"], "2", "{listed}");
    assert!(!listed.to_string().contains(SECRET));

    // Built and published through A.
    for version in ["1.0.0", "1.1.0"] {
        let (status, built) = a.post("/build/declarative", &support::stripe_manifest(&fake, version));
        assert_eq!(status, 201, "{built}");
        let (status, report) =
            a.post("/conformance/run", &json!({"implementationId": format!("stripe-charge-adapter:{version}")}));
        assert_eq!((status, &report["passed"]), (200, &json!(true)), "{report}");
    }
    // Bound through B.
    for (alias, target) in [("floating", "stripe-charge-adapter@^1"), ("pinned", "stripe-charge-adapter:1.1.0")] {
        let (status, bound) =
            b.post("/bindings", &json!({"project": "shop", "alias": alias, "implementation": target}));
        assert_eq!(status, 201, "{bound}");
    }
    // Read-your-writes through the other node: B's answer says how far B had folded the log, and
    // A, given that figure, answers from a state that has folded it (reading the log, not waiting
    // for the notice).
    let http = reqwest::blocking::Client::new();
    let bound = http
        .post(b.url("/bindings"))
        .bearer_auth(&b.token)
        .json(&json!({"project": "shop", "alias": "ryw", "implementation": "stripe-charge-adapter:1.0.0"}))
        .send()
        .unwrap();
    assert_eq!(bound.status(), 201);
    let position: u64 = bound.headers()["vadyl-log-position"].to_str().unwrap().parse().unwrap();
    let at_least = |value: &str| {
        http.get(a.url("/bindings/ryw?project=shop"))
            .bearer_auth(&a.token)
            .header("vadyl-log-position-at-least", value)
            .send()
            .unwrap()
    };
    let read = at_least(&position.to_string());
    assert_eq!(read.status(), 200, "A does not answer with the binding just made on B");
    assert!(read.headers()["vadyl-log-position"].to_str().unwrap().parse::<u64>().unwrap() >= position);
    let beyond = at_least(&(position + 1_000_000).to_string());
    assert_eq!(beyond.status(), 409);
    let problem: Value = beyond.json().unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("the log ends at position"), "{problem}");
    assert_eq!(at_least("soon").status(), 400);

    // A sees B's bindings as soon as B's commit notice reaches it (well within a second).
    let bound = Instant::now();
    while a.get("/bindings/pinned?project=shop").0 != 200 {
        assert!(bound.elapsed() < Duration::from_secs(1), "A does not see the bindings made on B");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("A saw B's bindings after {:?}", bound.elapsed());
    // Invoked through both: B loads the artifact A built from the shared store.
    let charge = |node: &Server, alias: &str| {
        node.post(
            "/invoke",
            &json!({"project": "shop", "alias": alias, "operation": "charge",
                    "input": {"amount": 700, "currency": "usd", "source": "tok_visa", "metadata": []}}),
        )
    };
    for node in [&a, &b] {
        let (status, answer) = charge(node, "floating");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["implementationId"], "stripe-charge-adapter:1.1.0");
        assert!(!answer.to_string().contains(SECRET), "the secret leaked into an answer");
    }

    // Invalidated on B; A follows within a second.
    let (status, _) = b.post("/publication/invalidate", &json!({"publicationVersion": 2, "reason": "double-charges"}));
    assert_eq!(status, 200);
    let invalidated = Instant::now();
    loop {
        let (_, latest) = a.get("/publication/latest");
        let (_, floating) = a.get("/bindings/floating?project=shop");
        if latest["publicationVersion"] == 1
            && latest["admitted"] == "stripe-charge-adapter:1.0.0"
            && floating["resolvesTo"]["implementationId"] == "stripe-charge-adapter:1.0.0"
        {
            break;
        }
        assert!(invalidated.elapsed() < Duration::from_secs(1), "A still shows {latest} and {floating}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, after) = charge(&a, "floating");
    assert_eq!((status, &after["implementationId"]), (200, &json!("stripe-charge-adapter:1.0.0")), "{after}");
    let (status, gone) = charge(&a, "pinned");
    assert_eq!(status, 410, "{gone}");

    // One log: both nodes serve the same events, chained.
    let (from_a, from_b) = (whole_log(&a), whole_log(&b));
    assert!(from_a.len() > 10);
    let shorter = from_a.len().min(from_b.len());
    assert_eq!(from_a[..shorter], from_b[..shorter], "the nodes disagree about the log");
    for pair in from_a.windows(2) {
        assert_eq!(pair[1]["prevHash"], pair[0]["hash"], "the chain is one");
    }
    a.stop();
    b.stop();

    // The auditor's verification, against the database itself.
    let out = vadyl_global(&dir.path().join("auditor"), &global, &["--json", "audit", "verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("verify prints JSON");
    assert!(report["events"].as_u64().unwrap_or(0) >= from_a.len() as u64, "{report}");
}

#[test]
fn sixty_four_writers_on_two_nodes_lose_nothing_when_one_node_is_killed() {
    let pg = PgServer::start();
    let url = pg.database("writers");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let global = node_args(&url, &keys);
    let global = refs(&global);
    // One token drives all 64 writers: no per-token rate limit for the load.
    let load_limits = ["--max-concurrent", "128", "--rate-limit", "0"];
    let a = Server::start_global(&dir.path().join("a"), &global, &load_limits);
    let mut b = Server::start_global(&dir.path().join("b"), &global, &load_limits);
    b.token = a.token.clone();
    let (base_a, base_b, token) = (a.base.clone(), b.base.clone(), a.token.clone());
    let a = Arc::new(Mutex::new(Some(a)));

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..64 {
        let base = if w % 2 == 0 { base_a.clone() } else { base_b.clone() };
        let (stop, acked, token) = (stop.clone(), acked.clone(), token.clone());
        writers.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
            let mut n = 0u32;
            while !stop.load(Ordering::Acquire) {
                let sent = client
                    .post(format!("{base}/api/Connector/tokens"))
                    .bearer_auth(&token)
                    .json(&json!({"role": "auditor", "label": format!("writer {w} #{n}")}))
                    .send();
                n += 1;
                match sent {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let body: Value = r.json().expect("a JSON answer");
                        acked.lock().unwrap().push(body["tokenId"].as_str().expect("tokenId").to_owned());
                    }
                    // The killed node's writers stop at their first refused connection.
                    Ok(r) => panic!("writer {w}: {} {}", r.status(), r.text().unwrap_or_default()),
                    Err(_) => return,
                }
            }
        }));
    }

    // Readers poll during the load: one through B's HTTP API, one on the database itself. Neither
    // may ever see a position appear behind one it has already read.
    let http_reader = {
        let (stop, base, token) = (stop.clone(), base_b.clone(), token.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let (mut after, mut pages) = (0u64, 0u32);
            while !stop.load(Ordering::Acquire) {
                let page: Value = client
                    .get(format!("{base}/api/Connector/events?after={after}&limit=500"))
                    .bearer_auth(&token)
                    .send()
                    .and_then(|r| r.json())
                    .expect("B answers a page");
                for e in page["events"].as_array().expect("events") {
                    let p = e["position"].as_u64().expect("position");
                    assert_eq!(p, after + 1, "the HTTP reader saw position {p} right after {after}");
                    after = p;
                }
                pages += 1;
            }
            (after, pages)
        })
    };
    let db_reader = {
        let (stop, url) = (stop.clone(), url.clone());
        std::thread::spawn(move || {
            let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("the reader connects");
            let (mut after, mut polls) = (0i64, 0u32);
            while !stop.load(Ordering::Acquire) {
                for row in
                    db.query("SELECT position FROM events WHERE position > $1 ORDER BY position", &[&after]).unwrap()
                {
                    let p: i64 = row.get(0);
                    assert_eq!(p, after + 1, "the database reader saw position {p} right after {after}");
                    after = p;
                }
                polls += 1;
            }
            (after, polls)
        })
    };

    std::thread::sleep(Duration::from_millis(2500));
    let before_kill = acked.lock().unwrap().len();
    // SIGKILL: no shutdown, no final checkpoint, whatever the node had in flight is cut off.
    a.lock().unwrap().take().expect("node A runs").child.kill().expect("SIGKILL node A");
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().expect("a writer ended cleanly");
    }
    let (http_seen, pages) = http_reader.join().expect("the HTTP reader never saw a position out of order");
    let (db_seen, polls) = db_reader.join().expect("the database reader never saw a position out of order");
    let acked = acked.lock().unwrap().clone();
    assert!(before_kill > 100, "the load was real: {before_kill} appends before the kill");
    assert!(acked.len() > before_kill, "B kept accepting writes after A died");
    assert!(pages > 5 && polls > 5 && http_seen > 0 && db_seen > 0, "the readers read during the load");

    // Every acknowledged token is in the log exactly once; positions are gap-free and chained.
    let log = whole_log(&b);
    let mut issued: HashMap<String, usize> = HashMap::new();
    for e in &log {
        if e["type"] == "TokenIssued" {
            *issued.entry(e["payload"]["tokenId"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
    }
    for id in &acked {
        assert_eq!(issued.get(id), Some(&1), "acknowledged token {id} is not in the log exactly once");
    }
    for pair in log.windows(2) {
        assert_eq!(pair[1]["prevHash"], pair[0]["hash"]);
    }
    // Stopped as an operator stops it, the surviving node signs a checkpoint over everything with
    // the one registry key.
    b.stop();
    let out = vadyl_global(&dir.path().join("auditor"), &global, &["--json", "audit", "verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("verify prints JSON");
    assert!(report["checkpointsVerified"].as_u64().unwrap_or(0) >= 1, "{report}");
}

/// Two nodes' memory stores (each with its own connections, as two `vadyl serve` processes hold
/// them) race on the same keys, round after round.
#[test]
fn two_nodes_racing_compare_exchange_and_leases_have_one_winner_per_round() {
    use std::sync::Barrier;
    use vadyl::runtime::host::clock::SystemClock;
    use vadyl::runtime::host::memory::{MemoryError, MemoryLimits, MemoryStore, Scope};
    use vadyl::storage::postgres::memory::PostgresMemory;

    const ROUNDS: u64 = 2000;
    let pg = PgServer::start();
    let url = pg.database("memory_race");
    // The first node's start migrates the schema.
    drop(
        vadyl::storage::postgres::log::PostgresStore::open(&url, vadyl::storage::sqlite::log::Durability::Full)
            .unwrap(),
    );
    let node = || Arc::new(PostgresMemory::open(&url, Arc::new(SystemClock), MemoryLimits::default()).unwrap());
    let nodes: [Arc<PostgresMemory>; 2] = [node(), node()];
    let scope = Scope::new("shop", "counter-adapter:1.0.0").unwrap();
    nodes[0].put_if_absent(&scope, "leader", b"none", None).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let (store, scope, barrier) = (store.clone(), scope.clone(), barrier.clone());
            std::thread::spawn(move || {
                let me = format!("node-{i}");
                let (mut cas_wins, mut lease_wins) = (Vec::new(), Vec::new());
                for round in 0..ROUNDS {
                    barrier.wait();
                    // Both read the same version, then both try to move it on: one may win.
                    let seen = store.get(&scope, "leader").unwrap().expect("the key exists").version;
                    barrier.wait();
                    match store.compare_exchange(&scope, "leader", seen, format!("{me}:{round}").as_bytes()) {
                        Ok(version) => cas_wins.push((round, version)),
                        Err(MemoryError::VersionMismatch(_)) => {}
                        Err(e) => panic!("{me} round {round}: {e}"),
                    }
                    barrier.wait();
                    match store.acquire_lease(&scope, "job", &me, 60_000, None) {
                        Ok(lease) => {
                            store.check_fence(&scope, "job", lease.fencing_token).unwrap();
                            lease_wins.push((round, lease.fencing_token));
                        }
                        Err(MemoryError::LeaseHeld(_)) => {}
                        Err(e) => panic!("{me} round {round}: {e}"),
                    }
                    barrier.wait();
                    if let Some((r, token)) = lease_wins.last() {
                        if *r == round {
                            store.release_lease(&scope, "job", *token).unwrap();
                        }
                    }
                    // No lost update: both add one to a shared counter, retrying on a lost race.
                    loop {
                        let current = store.get(&scope, "count").unwrap();
                        let (version, n) = match &current {
                            Some(e) => (e.version, String::from_utf8_lossy(&e.value).parse::<u64>().unwrap()),
                            None => (0, 0),
                        };
                        match store.compare_exchange(&scope, "count", version, (n + 1).to_string().as_bytes()) {
                            Ok(_) => break,
                            Err(MemoryError::VersionMismatch(_)) => continue,
                            Err(e) => panic!("{me} round {round}: {e}"),
                        }
                    }
                }
                (cas_wins, lease_wins)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("a node's thread ended")).collect();
    let mut cas: Vec<(u64, u64)> = results.iter().flat_map(|(c, _)| c.clone()).collect();
    let mut leases: Vec<(u64, u64)> = results.iter().flat_map(|(_, l)| l.clone()).collect();
    cas.sort();
    leases.sort();
    assert_eq!(
        cas.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        (0..ROUNDS).collect::<Vec<_>>(),
        "one CAS winner per round"
    );
    assert_eq!(
        leases.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        (0..ROUNDS).collect::<Vec<_>>(),
        "one lease per round"
    );
    assert!(cas.windows(2).all(|w| w[1].1 > w[0].1), "versions strictly increase");
    assert!(leases.windows(2).all(|w| w[1].1 > w[0].1), "fencing tokens strictly increase");
    let both = results.iter().filter(|(c, _)| !c.is_empty()).count();
    assert_eq!(both, 2, "both nodes won some rounds: the race was real");
    let count = nodes[1].get(&scope, "count").unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&count.value), (2 * ROUNDS).to_string(), "no lost update");
}
