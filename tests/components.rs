//! Authored components and built-in native adapters on the same lifecycle as declarative bundles:
//! guests built from source (Rust and C), conformance, bindings, invoke against loopback upstreams,
//! hostile fixtures, tampered artifacts and replay — driven through the CLI and HTTP.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{stderr, stdout, vadyl, Server};
use serde_json::{json, Value};
use support::fake_stripe::FakeStripe;
use vadyl::tools::guests;

const SECRET: &str = "sk_test_component_7c1e9a5b3d";
const SIGNING_SECRET: &str = "whsec_component_c0ffee_42";

fn guest_target() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests")
}

fn rust_guest(name: &str, features: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    guests::rust::build_rust_component(&guests::guests_dir().join(name), features, env, &guest_target())
        .unwrap_or_else(|e| panic!("building guest {name} {features:?}: {e}"))
}

fn c_guest(out: &Path) -> Vec<u8> {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/worlds/connector");
    guests::c::build_c_component(&guests::guests_dir().join("webhook-c"), &wit, "webhook-deliver-v1", &[], out)
        .unwrap_or_else(|e| panic!("building the C guest: {e}"))
}

fn descriptor(name: &str, loopback_port: u16) -> Value {
    let text = std::fs::read_to_string(guests::guests_dir().join(name).join("vadyl-descriptor.json")).unwrap();
    let mut d: Value = serde_json::from_str(&text).unwrap();
    d["egress"]["allow"]
        .as_array_mut()
        .unwrap()
        .push(json!({"scheme": "http", "host": "127.0.0.1", "port": loopback_port}));
    d
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

use common::{everything_stored, set_secret, vadyl_ok as ok};

/// `vadyl connector build component`: the CLI's answer.
fn build_component(data: &Path, wasm_path: &str, id: &str, contract: &str, descriptor_path: &str) -> String {
    let args = ["connector", "build", "component", "--wasm", wasm_path, "--implementation", id];
    ok(data, &[&args[..], &["--contract", contract, "--descriptor", descriptor_path]].concat())
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap()
}

#[test]
fn the_rust_component_conforms_is_bound_invoked_and_replayed_with_the_secret_host_side_only() {
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data, "stripe-secret-key", SECRET);
    let wasm = rust_guest("stripe-charge-rust", &[], &[("VADYL_GUEST_STRIPE_BASE_URL", &fake.base_url())]);
    let wasm_path = write(dir.path(), "stripe.wasm", &wasm);
    let d = descriptor("stripe-charge-rust", port_of(&fake.base_url()));
    let d_path = write(dir.path(), "descriptor.json", d.to_string().as_bytes());
    let build = [
        "connector",
        "build",
        "component",
        "--wasm",
        &wasm_path,
        "--implementation",
        "stripe-wasm:1.0.0",
        "--contract",
        "payment.charge@1",
        "--descriptor",
        &d_path,
    ];
    assert!(ok(&data, &build).contains("built stripe-wasm:1.0.0 (AuthoredComponent"));
    assert!(ok(&data, &build).contains("already built"));

    let report = ok(&data, &["connector", "conformance", "run", "--implementation", "stripe-wasm:1.0.0"]);
    assert!(report.contains("passed: true"), "{report}");
    ok(&data, &["connector", "binding", "create", "pay", "--implementation", "stripe-wasm@^1"]);
    let input = r#"{"amount": 2000, "currency": "usd", "source": "tok_visa", "idempotencyKey": "order-c1", "metadata": [["order", "c1"]]}"#;
    let out = ok(&data, &["--json", "connector", "invoke", "pay", "--operation", "charge", "--input", input]);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert!(result["output"]["chargeId"].as_str().unwrap().starts_with("ch_"), "{result}");
    assert_eq!(result["output"]["amount"], 2000);
    assert!(result["spans"].as_array().unwrap().iter().any(|s| s["name"] == "stripe.create-charge"), "{result}");
    let charge = fake.requests().into_iter().rfind(|r| r.path == "/v1/charges").unwrap();
    assert_eq!(charge.header("authorization"), Some(format!("Bearer {SECRET}").as_str()), "the host attached it");
    assert_eq!(charge.header("idempotency-key"), Some("order-c1"));

    // The guest's memory holds its idempotency record, never the secret.
    let server = Server::start(&data);
    let (status, memory) =
        server.get("/memory/get?project=default&implementation=stripe-wasm:1.0.0&key=idempotency%2Forder-c1");
    assert_eq!(status, 200, "{memory}");
    let (_, implementations) = server.get("/implementations");
    let ours = implementations["implementations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["implementationId"] == "stripe-wasm:1.0.0");
    assert_eq!(ours.unwrap()["source"], "AuthoredComponent");
    let (status, bad) =
        server.post("/invoke", &json!({"alias": "pay", "operation": "charge", "input": {"amount": -5}}));
    assert_eq!(status, 422, "the JSON is checked against the contract before the guest runs: {bad}");
    server.stop();

    // Replay without network: the fake is gone, the output is the same.
    let invocation = result["invocationId"].as_str().unwrap().to_owned();
    drop(fake);
    let replay = ok(&data, &["audit", "replay-invocation", &invocation]);
    assert!(replay.contains("the same output"), "{replay}");

    let export = dir.path().join("history.ndjson");
    ok(&data, &["audit", "export", "--out", export.to_str().unwrap()]);
    let mut places = everything_stored(&data);
    tamper_then_refuse(&data, input);
    places.push(("export".into(), std::fs::read(&export).unwrap()));
    places.push(("invoke response".into(), out.into_bytes()));
    places.push(("memory".into(), memory.to_string().into_bytes()));
    let scan = vadyl::runtime::redaction::Redactor::new([SECRET.as_bytes().to_vec(), b"tok_visa".to_vec()]).unwrap();
    for (place, bytes) in &places {
        assert!(scan.find(bytes).is_none(), "{place} holds the secret or the card source");
    }
}

fn verify_signature(headers: &[(String, String)], body: &str, event_id: &str) {
    use base64::Engine;
    use hmac::Mac;
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(format!("{event_id}.{}.{body}", get("webhook-timestamp")).as_bytes());
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(get("webhook-signature"), expected, "the receiver verifies the Standard Webhooks signature");
}

#[test]
fn the_c_component_and_the_native_adapter_deliver_signed_webhooks_beside_a_declarative_bundle() {
    let (url, seen) = common::receiver(Duration::ZERO);
    let port = port_of(&url);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data, "webhook-signing-secret", SIGNING_SECRET);

    // C component.
    let wasm = c_guest(&dir.path().join("c-build"));
    let wasm_path = write(dir.path(), "webhook.wasm", &wasm);
    let d_path = write(dir.path(), "c.json", descriptor("webhook-c", port).to_string().as_bytes());
    build_component(&data, &wasm_path, "webhook-c:1.0.0", "webhook.deliver@1", &d_path);
    // Native adapter, with the default policy widened to the loopback receiver.
    let native = vadyl::runtime::native::find("vadyl.webhook-hmac").unwrap();
    let mut nd = serde_json::to_value(native.default_descriptor()).unwrap();
    nd["egress"]["allow"].as_array_mut().unwrap().push(json!({"scheme": "http", "host": "127.0.0.1", "port": port}));
    let nd_path = write(dir.path(), "native.json", nd.to_string().as_bytes());
    ok(
        &data,
        &[
            "connector",
            "build",
            "native",
            "--adapter",
            "vadyl.webhook-hmac",
            "--implementation",
            "webhook-native:1.0.0",
            "--descriptor",
            &nd_path,
        ],
    );
    // And the declarative bundle of the same contract.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/webhook.connector.json")).unwrap();
    let mut m: Value = serde_json::from_str(&text).unwrap();
    m["egress"]["allow"].as_array_mut().unwrap().push(json!({"scheme": "http", "host": "127.0.0.1", "port": port}));
    let m_path = write(dir.path(), "webhook.connector.json", m.to_string().as_bytes());
    ok(&data, &["connector", "build", "declarative", "--manifest", &m_path]);

    for (id, alias) in [("webhook-c:1.0.0", "c"), ("webhook-native:1.0.0", "native"), ("webhook-signer:1.0.0", "decl")]
    {
        let report = ok(&data, &["connector", "conformance", "run", "--implementation", id]);
        assert!(report.contains("passed: true"), "{id}: {report}");
        ok(&data, &["connector", "binding", "create", alias, "--implementation", id]);
    }
    let payload = r#"{"order":"o-9","card":"4242-very-sensitive"}"#;
    for (alias, event) in [("c", "evt_c"), ("native", "evt_native"), ("decl", "evt_decl")] {
        let input = json!({"endpointUrl": url, "eventType": "order.paid", "eventId": event, "payload": payload,
                           "occurredAt": "2026-11-25T12:00:00Z", "headers": [["x-tenant", "shop"]]});
        let out = ok(
            &data,
            &["--json", "connector", "invoke", alias, "--operation", "deliver", "--input", &input.to_string()],
        );
        let result: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(result["output"]["delivered"], true, "{alias}: {result}");
        let deliveries = seen.lock().unwrap().clone();
        let (headers, body) =
            deliveries.iter().rfind(|(h, _)| h.iter().any(|(k, v)| k == "webhook-id" && v == event)).unwrap();
        assert_eq!(body, payload);
        verify_signature(headers, body, event);
        assert!(headers.iter().any(|(k, v)| k == "x-tenant" && v == "shop"), "{alias}: {headers:?}");
    }

    // The three sources, as GET /implementations and the publications show them.
    let server = Server::start(&data);
    let (_, list) = server.get("/implementations");
    let source = |id: &str| {
        list["implementations"].as_array().unwrap().iter().find(|i| i["implementationId"] == id).unwrap()["source"]
            .clone()
    };
    assert_eq!(source("webhook-c:1.0.0"), "AuthoredComponent");
    assert_eq!(source("webhook-native:1.0.0"), "BuiltInNative");
    assert_eq!(source("webhook-signer:1.0.0"), "DeclarativeBundle");
    let (status, latest) = server.get("/publication/latest");
    assert_eq!(status, 200);
    let text = latest.to_string();
    for s in ["AuthoredComponent", "BuiltInNative", "DeclarativeBundle"] {
        assert!(text.contains(s), "{s} missing from the latest publication: {latest}");
    }
    server.stop();

    let scan = vadyl::runtime::redaction::Redactor::new([SIGNING_SECRET.as_bytes().to_vec()]).unwrap();
    for (place, bytes) in everything_stored(&data) {
        assert!(scan.find(&bytes).is_none(), "{place} holds the signing secret");
    }
}

#[test]
fn a_forbidden_import_is_named_at_build_and_refused_at_instantiation_when_forced_into_the_store() {
    // A component importing WASI (text format: this is its source).
    let wat = r#"(component
        (import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func (result (list string))))))
    )"#;
    let wasm = wat::parse_str(wat).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wasm_path = write(dir.path(), "wasi.wasm", &wasm);
    let d = descriptor("stripe-charge-rust", 1);
    let d_path = write(dir.path(), "d.json", d.to_string().as_bytes());
    let out = vadyl(
        &data,
        &[
            "connector",
            "build",
            "component",
            "--wasm",
            &wasm_path,
            "--implementation",
            "sneaky:1.0.0",
            "--contract",
            "payment.charge@1",
            "--descriptor",
            &d_path,
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wasi:cli/environment@0.2.0"), "the import is named: {}", stderr(&out));
    let reg = common::open(&data);
    assert!(
        reg.registry().read(|s| s.implementation(&"sneaky:1.0.0".parse().unwrap()).is_none()),
        "nothing was recorded"
    );

    // Forced into the store (bytes signed and recorded behind the build's back): the loader refuses it.
    let with_descriptor = vadyl::runtime::component::descriptor::embed(&wasm, d.to_string().as_bytes()).unwrap();
    let id = common::build_with_bytes(&reg, "sneaky:1.0.0", "payment.charge@1", &with_descriptor);
    let err = match reg.load(&id) {
        Ok(_) => panic!("a component importing WASI was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("wasi:cli/environment@0.2.0"), "{err}");
}

/// Flips one byte of the stored component: the next load (a fresh process) refuses it by hash, and
/// nothing is compiled from it.
fn tamper_then_refuse(data: &Path, input: &str) {
    let compiled = data.join("compiled");
    std::fs::remove_dir_all(&compiled).unwrap();
    common::Database::of(data).flip_a_component_byte(data);
    let out = vadyl(data, &["--json", "connector", "invoke", "pay", "--operation", "charge", "--input", input]);
    assert!(!out.status.success(), "a tampered artifact ran: {}", stdout(&out));
    assert!(stderr(&out).contains("altered"), "the refusal says why: {}", stderr(&out));
    let leftovers = std::fs::read_dir(&compiled).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "nothing was compiled from the tampered bytes");
}

/// What one hostile build must do, and the descriptor it ships with.
fn hostile_descriptor(fixture_body: Value, deadline_ms: u64) -> Value {
    let vectors = ["charge-succeeds", "charge-declined", "charge-retried-after-transient-failure", "refund-succeeds"];
    let fixtures: serde_json::Map<String, Value> =
        vectors.iter().map(|v| ((*v).to_owned(), json!([{"status": 200, "body": fixture_body.clone()}]))).collect();
    json!({
        "egress": {"allow": [{"scheme": "https", "host": "api.stripe.com"}]},
        "secrets": ["stripe-secret-key"],
        "idempotencyHeaders": {"charge": "Idempotency-Key"},
        "conformance": {"fixtures": fixtures},
        "limits": {"deadlineMs": deadline_ms, "memoryBytes": 8 << 20},
    })
}

fn build_hostile(data: &Path, dir: &Path, feature: &str, descriptor: &Value) -> String {
    let wasm = rust_guest("hostile-rust", &[feature], &[]);
    let wasm_path = write(dir, &format!("{feature}.wasm"), &wasm);
    let d_path = write(dir, &format!("{feature}.json"), descriptor.to_string().as_bytes());
    let id = format!("hostile-{feature}:1.0.0");
    build_component(data, &wasm_path, &id, "payment.charge@1", &d_path);
    id
}

fn failing_conformance(data: &Path, id: &str) -> Value {
    let out = vadyl(data, &["--json", "connector", "conformance", "run", "--implementation", id]);
    assert!(!out.status.success(), "{id} passed conformance: {}", stdout(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap()
}

#[test]
fn hostile_components_are_stopped_with_clear_errors_while_the_server_keeps_serving() {
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data, "stripe-secret-key", SECRET);
    let plain = json!({"id": "ch_x", "status": "succeeded", "amount": 1, "currency": "usd", "captured": true});

    // The loop, the memory bomb and the stack overflow end their call with what stopped them.
    let looping = build_hostile(&data, dir.path(), "loop", &hostile_descriptor(plain.clone(), 200));
    let report = failing_conformance(&data, &looping);
    let detail = check(&report, "contract.shape")["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("exceeded its deadline of 200 ms"), "{detail}");
    let after: u64 = detail.split("interrupted after ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((200..=250).contains(&after), "stopped {after} ms into a 200 ms deadline");
    let bomb = build_hostile(&data, dir.path(), "memory-bomb", &hostile_descriptor(plain.clone(), 2000));
    let detail = check(&failing_conformance(&data, &bomb), "contract.shape")["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("linear memory limit reached") && detail.contains("8388608"), "{detail}");
    let deep = build_hostile(&data, dir.path(), "stack-overflow", &hostile_descriptor(plain.clone(), 2000));
    let detail = check(&failing_conformance(&data, &deep), "contract.shape")["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("overflowed its stack"), "{detail}");

    // Logging what the provider echoed (the host-attached credential) and reaching for another host
    // fail the checks built for them.
    let echo = json!({"id": "ch_x", "echo": "{{request.headers.authorization}}"});
    let logger = build_hostile(&data, dir.path(), "log-secret", &hostile_descriptor(echo, 2000));
    let report = failing_conformance(&data, &logger);
    assert_eq!(check(&report, "secrets.no-raw-material")["state"], "failed", "{report}");
    let exfil = build_hostile(&data, dir.path(), "bad-egress", &hostile_descriptor(plain, 2000));
    let report = failing_conformance(&data, &exfil);
    assert_eq!(check(&report, "egress.allowed-hosts")["state"], "failed", "{report}");
    assert!(check(&report, "egress.allowed-hosts")["detail"].as_str().unwrap().contains("evil.example.net"));

    // Side by side: hostile components admitted behind the suite's back (the harness records a pass)
    // run on the server next to a good one, which keeps answering.
    let wasm = rust_guest("stripe-charge-rust", &[], &[("VADYL_GUEST_STRIPE_BASE_URL", &fake.base_url())]);
    let wasm_path = write(dir.path(), "good.wasm", &wasm);
    let d_path = write(
        dir.path(),
        "good.json",
        descriptor("stripe-charge-rust", port_of(&fake.base_url())).to_string().as_bytes(),
    );
    build_component(&data, &wasm_path, "good:1.0.0", "payment.charge@1", &d_path);
    ok(&data, &["connector", "conformance", "run", "--implementation", "good:1.0.0"]);
    {
        let reg = common::open(&data);
        for (id, run) in [(&looping, "conf_forced_loop"), (&bomb, "conf_forced_bomb")] {
            common::conformance(&reg, &id.parse().unwrap(), run, true);
        }
        common::bind(&reg, "default", "loop", &looping);
        common::bind(&reg, "default", "bomb", &bomb);
        common::bind(&reg, "default", "good", "good:1.0.0");
    }
    // Without the per-token rate limit: the good component is invoked as fast as the server answers,
    // and what is measured here is isolation from the hostile guests, not the token's rate.
    let server = Arc::new(Server::start_with(&data, &["--rate-limit", "0"]));
    let input = json!({"amount": 100, "currency": "usd", "source": "tok_visa", "metadata": []});
    let hostile: Vec<_> = ["loop", "bomb", "loop", "bomb"]
        .into_iter()
        .map(|alias| {
            let (server, input) = (server.clone(), input.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                for _ in 0..3 {
                    answers
                        .push(server.post("/invoke", &json!({"alias": alias, "operation": "charge", "input": input})));
                }
                answers
            })
        })
        .collect();
    let started = Instant::now();
    let mut good = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let mut i = input.clone();
        i["idempotencyKey"] = json!(format!("side-{good}"));
        let (status, body) = server.post("/invoke", &json!({"alias": "good", "operation": "charge", "input": i}));
        assert_eq!(status, 200, "{body}");
        assert!(body["output"]["chargeId"].is_string(), "{body}");
        good += 1;
    }
    assert!(good >= 5, "only {good} good invocations completed beside the hostile ones");
    for h in hostile {
        for (status, body) in h.join().unwrap() {
            assert!(status >= 400, "{body}");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("deadline") || detail.contains("memory limit"), "{body}");
        }
    }
}

/// `wasm` with a custom section of padding appended, `total` bytes in all: a component as large as
/// a Python or JavaScript guest, whose code is still the small Rust guest's (custom sections are
/// carried, never compiled).
fn padded(wasm: &[u8], total: usize) -> Vec<u8> {
    let name = b"vadyl-test-padding";
    // Section: id 0, size (LEB128, 4 bytes for 2 MiB to 256 MiB), name length, name, padding.
    let padding = total - wasm.len() - 1 - 4 - 1 - name.len();
    let size = 1 + name.len() + padding;
    assert!((1 << 21..1 << 28).contains(&size), "the size takes 4 LEB128 bytes");
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(wasm);
    out.push(0);
    out.extend_from_slice(&[
        (size & 0x7f) as u8 | 0x80,
        ((size >> 7) & 0x7f) as u8 | 0x80,
        ((size >> 14) & 0x7f) as u8 | 0x80,
        (size >> 21) as u8,
    ]);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(total, 0x5a);
    out
}

fn multipart_build(server: &Server, id: &str, descriptor: &Value, wasm: Vec<u8>) -> (u16, Value) {
    use reqwest::blocking::multipart::{Form, Part};
    let form = Form::new()
        .text("implementationId", id.to_owned())
        .text("contract", "payment.charge@1")
        .text("descriptor", descriptor.to_string())
        .part("component", Part::bytes(wasm).file_name("c.wasm").mime_str("application/wasm").unwrap());
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
        .post(server.url("/build/component"))
        .bearer_auth(&server.token)
        .multipart(form)
        .send()
        .expect("the upload reaches the server");
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Files under `dir` (relative paths), for "nothing was written" checks.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_forty_megabyte_component_uploads_over_http_and_the_cli_and_one_over_the_limit_is_refused_with_nothing_written() {
    const { assert!(vadyl::http::build::DEFAULT_COMPONENT_LIMIT >= 64 << 20, "the default fits a Python component") };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wasm = rust_guest("stripe-charge-rust", &[], &[]);
    let big = padded(&wasm, 40 << 20);
    assert_eq!(big.len(), 40 << 20);
    let big_path = write(dir.path(), "big.wasm", &big);
    let d = descriptor("stripe-charge-rust", 9);
    let d_path = write(dir.path(), "descriptor.json", d.to_string().as_bytes());
    // No checkpoint on a timer during the test: "no event was appended" must mean the upload's.
    let server = Server::start_with(
        &data,
        &["--max-component-mib", "48", "--checkpoint-interval-secs", "3600", "--checkpoint-events", "1000000"],
    );

    // The CLI streams the file as multipart: no base64, no 24 MiB JSON cap.
    let out = ok(
        &data,
        &[
            "--server",
            &server.base,
            "--json",
            "connector",
            "build",
            "component",
            "--wasm",
            &big_path,
            "--implementation",
            "big-cli:1.0.0",
            "--contract",
            "payment.charge@1",
            "--descriptor",
            &d_path,
        ],
    );
    let built: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(built["created"], true, "{built}");
    assert!(built["artifactSize"].as_u64().unwrap() > 40 << 20, "{built}");
    // The content hash covers the component and the embedded descriptor, hashed as they arrived.
    let (status, via_http) = multipart_build(&server, "big-http:1.0.0", &d, big.clone());
    assert_eq!(status, 201, "{via_http}");
    assert_eq!(via_http["contentHash"], built["contentHash"], "the same bytes and descriptor, the same artifact");
    // Whichever backend keeps it, some stored value is the artifact: its bytes rehash to the hash.
    let hash = built["contentHash"].as_str().unwrap().to_owned();
    let stored = everything_stored(&data);
    assert!(
        stored.iter().any(|(_, bytes)| format!("sha256:{}", vadyl::ids::ContentHash::of(bytes).to_hex()) == hash),
        "no stored value hashes to {hash}"
    );

    // Over the limit: 413, a problem naming the limit, and nothing written.
    let (_, before) = server.get("/events?limit=1000");
    let files_before = files_under(&data);
    let (status, problem) = multipart_build(&server, "too-big:1.0.0", &d, padded(&wasm, 60 << 20));
    assert_eq!(status, 413, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("48 MiB") && detail.contains("--max-component-mib"), "{detail}");
    let too_big_path = write(dir.path(), "too-big.wasm", &padded(&wasm, 50 << 20));
    let o = vadyl(
        &data,
        &[
            "--server",
            &server.base,
            "connector",
            "build",
            "component",
            "--wasm",
            &too_big_path,
            "--implementation",
            "too-big:1.0.0",
            "--contract",
            "payment.charge@1",
            "--descriptor",
            &d_path,
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("48 MiB"), "{}", stderr(&o));
    let (_, after) = server.get("/events?limit=1000");
    assert_eq!(before["events"], after["events"], "no event was appended");
    assert_eq!(files_before, files_under(&data), "no file was added under the data directory");
    let (status, _) = server.get("/implementations/too-big:1.0.0");
    assert_eq!(status, 404);
    server.stop();
}

fn js_guest(name: &str, world: &str, out: &Path) -> Vec<u8> {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/worlds/connector");
    let source =
        guests::guests_dir().join(name).join(if world.starts_with("webhook") { "webhook.js" } else { "app.js" });
    guests::js::build_js_component(&source, &wit, world, &guests::repository_toolchains_dir(), out)
        .unwrap_or_else(|e| panic!("building the JavaScript guest {name}: {e}"))
}

#[test]
fn the_javascript_component_is_built_from_source_conforms_and_delivers_signed_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = js_guest("webhook-js", "webhook-deliver-v1", &dir.path().join("js-build").join("webhook.wasm"));
    webhook_guest_lifecycle(dir.path(), "webhook-js", &wasm);
}

#[test]
fn the_python_webhook_component_is_built_from_source_conforms_and_delivers_signed_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("py-build").join("webhook.wasm");
    let wasm = python_guest("webhook-python", "webhook-deliver-v1", &[], &out);
    webhook_guest_lifecycle(dir.path(), "webhook-python", &wasm);
}

/// Build, conformance, binding, a signed delivery to a loopback receiver (the signature checked with
/// the secret the host holds), replay, and the secret nowhere.
fn webhook_guest_lifecycle(dir: &Path, guest: &str, wasm: &[u8]) {
    let (url, seen) = common::receiver(Duration::ZERO);
    let port = port_of(&url);
    let data = dir.join("data");
    set_secret(&data, "webhook-signing-secret", SIGNING_SECRET);
    let imports = guests::component_imports(wasm).unwrap();
    assert!(imports.iter().all(|i| i.starts_with("vadyl:connector/")), "only Vadyl interfaces: {imports:?}");
    let wasm_path = write(dir, &format!("{guest}.wasm"), wasm);
    let d_path = write(dir, &format!("{guest}.json"), descriptor(guest, port).to_string().as_bytes());
    let id = format!("{guest}:1.0.0");
    let built = build_component(&data, &wasm_path, &id, "webhook.deliver@1", &d_path);
    assert!(built.contains(&format!("built {id} (AuthoredComponent")), "{built}");
    let report = ok(&data, &["connector", "conformance", "run", "--implementation", &id]);
    assert!(report.contains("passed: true"), "{report}");
    ok(&data, &["connector", "binding", "create", "hooks", "--implementation", &format!("{guest}@^1")]);
    let payload = r#"{"order":"o-guest","card":"4242-very-sensitive"}"#;
    let event = format!("evt_{}", guest.replace('-', "_"));
    let input = json!({"endpointUrl": url, "eventType": "order.paid", "eventId": event, "payload": payload,
                       "occurredAt": "2026-11-25T12:00:00Z", "headers": [["x-tenant", "shop"]]});
    let out =
        ok(&data, &["--json", "connector", "invoke", "hooks", "--operation", "deliver", "--input", &input.to_string()]);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["output"]["delivered"], true, "{result}");
    assert_eq!(result["output"]["statusCode"], 200, "{result}");
    let deliveries = seen.lock().unwrap().clone();
    let (headers, body) =
        deliveries.iter().rfind(|(h, _)| h.iter().any(|(k, v)| k == "webhook-id" && *v == event)).unwrap();
    assert_eq!(body, payload);
    verify_signature(headers, body, &event);
    assert!(headers.iter().any(|(k, v)| k == "x-tenant" && v == "shop"), "{headers:?}");

    let invocation = result["invocationId"].as_str().unwrap();
    replayed_and_kept_secret(&data, dir, invocation, [out, report], &[SIGNING_SECRET.as_bytes()]);
}

/// The invocation replays to the same output without network, and none of `secrets` is anywhere:
/// not under the data directory, not in the export, not in `answers`.
fn replayed_and_kept_secret<const N: usize>(
    data: &Path,
    dir: &Path,
    invocation: &str,
    answers: [String; N],
    secrets: &[&[u8]],
) {
    let replay = ok(data, &["audit", "replay-invocation", invocation]);
    assert!(replay.contains("the same output"), "{replay}");
    let export = dir.join("history.ndjson");
    ok(data, &["audit", "export", "--out", export.to_str().unwrap()]);
    let mut places = everything_stored(data);
    places.push(("export".into(), std::fs::read(&export).unwrap()));
    places.extend(answers.into_iter().map(|a| ("an answer".to_owned(), a.into_bytes())));
    let scan = vadyl::runtime::redaction::Redactor::new(secrets.iter().map(|s| s.to_vec())).unwrap();
    for (place, bytes) in &places {
        assert!(scan.find(bytes).is_none(), "{place} holds a secret or the card source");
    }
}

fn python_guest(name: &str, world: &str, constants: &[(&str, &str)], out: &Path) -> Vec<u8> {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/worlds/connector");
    let app = guests::guests_dir().join(name);
    guests::python::build_python_component(
        &app,
        "app",
        &wit,
        world,
        constants,
        &guests::repository_toolchains_dir(),
        out,
    )
    .unwrap_or_else(|e| panic!("building the Python guest {name}: {e}"))
}

#[test]
fn the_python_component_is_built_from_source_conforms_and_charges_with_the_secret_host_side_only() {
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data, "stripe-secret-key", SECRET);
    let wasm = python_guest(
        "stripe-charge-python",
        "payment-charge-v1",
        &[("STRIPE_BASE_URL", &fake.base_url())],
        &dir.path().join("py-build").join("charge.wasm"),
    );
    let imports = guests::component_imports(&wasm).unwrap();
    assert!(imports.iter().all(|i| i.starts_with("vadyl:connector/")), "only Vadyl interfaces: {imports:?}");
    let wasm_path = write(dir.path(), "charge-python.wasm", &wasm);
    let d = descriptor("stripe-charge-python", port_of(&fake.base_url()));
    let d_path = write(dir.path(), "descriptor.json", d.to_string().as_bytes());
    let built = build_component(&data, &wasm_path, "stripe-python:1.0.0", "payment.charge@1", &d_path);
    assert!(built.contains("built stripe-python:1.0.0 (AuthoredComponent"), "{built}");
    let report = ok(&data, &["connector", "conformance", "run", "--implementation", "stripe-python:1.0.0"]);
    assert!(report.contains("passed: true"), "{report}");
    ok(&data, &["connector", "binding", "create", "pay", "--implementation", "stripe-python@^1"]);
    let input = r#"{"amount": 2000, "currency": "usd", "source": "tok_visa", "idempotencyKey": "order-py1", "metadata": [["order", "py1"]]}"#;
    let out = ok(&data, &["--json", "connector", "invoke", "pay", "--operation", "charge", "--input", input]);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert!(result["output"]["chargeId"].as_str().unwrap().starts_with("ch_"), "{result}");
    assert_eq!(result["output"]["amount"], 2000, "{result}");
    let charge = fake.requests().into_iter().rfind(|r| r.path == "/v1/charges").unwrap();
    assert_eq!(charge.header("authorization"), Some(format!("Bearer {SECRET}").as_str()), "the host attached it");
    assert_eq!(charge.header("idempotency-key"), Some("order-py1"));
    let charge_id = result["output"]["chargeId"].as_str().unwrap();
    let refund = json!({"chargeId": charge_id, "amount": 500, "idempotencyKey": "refund-py1", "metadata": []});
    let refunded: Value = serde_json::from_str(&ok(
        &data,
        &["--json", "connector", "invoke", "pay", "--operation", "refund", "--input", &refund.to_string()],
    ))
    .unwrap();
    assert_eq!(refunded["output"]["chargeId"], charge_id, "{refunded}");
    assert_eq!(refunded["output"]["amount"], 500, "{refunded}");

    let invocation = result["invocationId"].as_str().unwrap().to_owned();
    drop(fake);
    replayed_and_kept_secret(&data, dir.path(), &invocation, [out, report], &[SECRET.as_bytes(), b"tok_visa"]);
}

#[test]
fn a_python_guest_that_calls_a_stubbed_wasi_function_fails_with_a_clear_error_and_the_server_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wasm = python_guest("hostile-python", "payment-charge-v1", &[], &dir.path().join("py-hostile").join("h.wasm"));
    let wasm_path = write(dir.path(), "hostile-python.wasm", &wasm);
    let d = descriptor("stripe-charge-python", 9);
    let d_path = write(dir.path(), "descriptor.json", d.to_string().as_bytes());
    build_component(&data, &wasm_path, "py-wasi:1.0.0", "payment.charge@1", &d_path);
    let report = failing_conformance(&data, "py-wasi:1.0.0");
    let detail = check(&report, "contract.shape")["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("it called `wall_clock_now`, a WASI function its toolchain stubbed out"), "{detail}");
    {
        // Admitted behind the suite's back, to show what an invocation answers.
        let reg = common::open(&data);
        common::conformance(&reg, &"py-wasi:1.0.0".parse().unwrap(), "conf_forced_py", true);
        common::bind(&reg, "default", "wasi", "py-wasi:1.0.0");
    }
    let server = Server::start(&data);
    let input = json!({"amount": 100, "currency": "usd", "source": "tok_visa", "metadata": []});
    let started = Instant::now();
    let (status, problem) = server.post("/invoke", &json!({"alias": "wasi", "operation": "charge", "input": input}));
    assert_eq!(status, 502, "{problem}");
    assert!(started.elapsed() < Duration::from_secs(10), "the trap ends the call, it does not hang");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("`wall_clock_now`") && detail.contains("time.now"), "{detail}");
    assert!(detail.contains("`time_time` (libpython"), "the call chain shows where: {detail}");
    let (status, _) = server.get("/implementations");
    assert_eq!(status, 200, "the server carries on");
    server.stop();
}
