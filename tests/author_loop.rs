//! The connector author's loop, driven through the CLI: `vadyl connector test` runs the contract's
//! conformance vectors locally — no server, nothing published, no registry's log written — and
//! fails each check for the reason it names; `vadyl guest new` scaffolds a guest per language that
//! builds and passes `connector test` as it is.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{stderr, stdout};
use serde_json::{json, Value};
use vadyl::tools::guests;

fn guest_target() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests")
}

/// `vadyl connector test …` with a data directory that must never come to exist and a private
/// temporary directory that must be left empty.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        Self { _dir: dir, root }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.root.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn vadyl(&self, args: &[&str]) -> Output {
        let out = Command::new(common::vadyl_bin())
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .env("TMPDIR", self.root.join("tmp"))
            .env_remove("VADYL_SERVER")
            .output()
            .expect("the vadyl binary runs");
        self.assert_nothing_left();
        out
    }

    /// No registry came to exist: neither the data directory nor a scratch registry outlived the run.
    fn assert_nothing_left(&self) {
        assert!(!self.data().exists(), "connector test opened or created the data directory");
        let left: Vec<_> = std::fs::read_dir(self.root.join("tmp")).unwrap().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "connector test left {left:?} behind");
    }

    /// `connector test` on `wasm` with `descriptor`: its JSON report, and whether it exited 0.
    fn test(&self, wasm: &str, descriptor: &Value) -> (bool, Value, String) {
        let d = self.write("descriptor.json", descriptor.to_string().as_bytes());
        let args = ["connector", "test", "--wasm", wasm, "--descriptor", &d, "--contract", "payment.charge@1"];
        let text = self.vadyl(&args);
        let json = self.vadyl(&[&["--json"], &args[..]].concat());
        assert_eq!(text.status.success(), json.status.success());
        let report: Value = serde_json::from_str(&stdout(&json)).unwrap_or_else(|_| panic!("{}", stderr(&json)));
        (json.status.success(), report, stdout(&text))
    }
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap()
}

fn stripe_descriptor() -> Value {
    let path = guests::guests_dir().join("stripe-charge-rust").join("vadyl-descriptor.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rust_guest(name: &str, features: &[&str]) -> Vec<u8> {
    guests::rust::build_rust_component(&guests::guests_dir().join(name), features, &[], &guest_target())
        .unwrap_or_else(|e| panic!("building guest {name} {features:?}: {e}"))
}

#[test]
fn connector_test_passes_a_good_guest_and_fails_each_check_for_its_reason_without_writing_any_log() {
    let sandbox = Sandbox::new();
    let good = sandbox.write("good.wasm", &rust_guest("stripe-charge-rust", &[]));
    let (passed, report, text) = sandbox.test(&good, &stripe_descriptor());
    assert!(passed, "{report}");
    assert!(text.contains("passed") && text.contains("ok   contract.shape"), "{text}");
    assert!(text.contains("nothing was published"), "{text}");
    assert_eq!(report["vectors"].as_array().unwrap().len(), 4, "{report}");

    // One broken fixture (or policy) per check, each failing that check with its reason.
    let mut no_fixture = stripe_descriptor();
    no_fixture["conformance"]["fixtures"].as_object_mut().unwrap().remove("charge-succeeds");
    let mut approves_declines = stripe_descriptor();
    approves_declines["conformance"]["fixtures"]["charge-declined"] =
        stripe_descriptor()["conformance"]["fixtures"]["charge-succeeds"].clone();
    let mut other_host = stripe_descriptor();
    other_host["egress"]["allow"] = json!([{"scheme": "https", "host": "api.example.org"}]);
    let mut no_transient_failure = stripe_descriptor();
    no_transient_failure["conformance"]["fixtures"]["charge-retried-after-transient-failure"] =
        json!([stripe_descriptor()["conformance"]["fixtures"]["charge-retried-after-transient-failure"][2]]);
    let mut echoes_the_key = stripe_descriptor();
    echoes_the_key["conformance"]["fixtures"]["charge-succeeds"][0]["body"]["id"] =
        json!("{{request.headers.authorization}}");
    let cases = [
        (&good, no_fixture, "contract.shape", "charge-succeeds: the implementation supplies no upstream fixture"),
        (&good, approves_declines, "contract.errors", "charge-declined: expected the operation to end failed"),
        (&good, other_host, "egress.allowed-hosts", "no allow-list rule matches https://api.stripe.com"),
        (&good, no_transient_failure, "egress.idempotency-on-retry", "1 attempt(s) after a transient failure"),
        (&good, echoes_the_key, "secrets.no-raw-material", "the planted secret appears in the output or error"),
    ];
    for (wasm, descriptor, id, reason) in cases {
        let (passed, report, text) = sandbox.test(wasm, &descriptor);
        assert!(!passed, "{id}: {report}");
        assert_eq!(check(&report, id)["state"], "failed", "{id}: {report}");
        let detail = check(&report, id)["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{id}: {detail}");
        assert!(text.contains(&format!("FAIL {id}")) && text.contains(reason), "{text}");
    }

    // Sensitive input in the guest's own logs: the redaction check.
    let leaky = sandbox.write("leaky.wasm", &rust_guest("hostile-rust", &["log-input"]));
    let plain = json!({"id": "ch_x", "status": "succeeded", "amount": 1, "currency": "usd", "captured": true});
    let fixtures: serde_json::Map<String, Value> =
        ["charge-succeeds", "charge-declined", "charge-retried-after-transient-failure", "refund-succeeds"]
            .iter()
            .map(|v| ((*v).to_owned(), json!([{"status": 200, "body": plain.clone()}])))
            .collect();
    let descriptor = json!({
        "egress": {"allow": [{"scheme": "https", "host": "api.stripe.com"}]},
        "secrets": ["stripe-secret-key"],
        "idempotencyHeaders": {"charge": "Idempotency-Key"},
        "conformance": {"fixtures": fixtures},
    });
    let (passed, report, text) = sandbox.test(&leaky, &descriptor);
    assert!(!passed);
    let detail = check(&report, "observability.redaction")["detail"].as_str().unwrap();
    assert!(detail.contains("a sensitive input field appears in what it sent to logs and spans"), "{detail}");
    assert!(text.contains("FAIL observability.redaction"), "{text}");

    // What cannot even be built says so, and nothing is left either.
    let junk = sandbox.write("junk.json", b"{ not json");
    let o =
        sandbox.vadyl(&["connector", "test", "--wasm", &good, "--descriptor", &junk, "--contract", "payment.charge@1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not JSON"), "{}", stderr(&o));
    let d = sandbox.write("d.json", stripe_descriptor().to_string().as_bytes());
    let o =
        sandbox.vadyl(&["connector", "test", "--wasm", &good, "--descriptor", &d, "--contract", "webhook.deliver@1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not build"), "{}", stderr(&o));
}

#[test]
fn connector_test_runs_a_declarative_manifest_too() {
    let sandbox = Sandbox::new();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stripe.connector.json");
    let o = sandbox.vadyl(&["--json", "connector", "test", "--manifest", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["contract"], "payment.charge@1");
}

#[test]
fn guest_new_then_guest_build_then_connector_test_passes_in_every_language() {
    let sandbox = Sandbox::new();
    let toolchains = guests::repository_toolchains_dir();
    let cases = [
        ("rust", "payment.charge@1"),
        ("c", "webhook.deliver@1"),
        ("python", "payment.charge@1"),
        ("python", "webhook.deliver@1"),
        ("js", "webhook.deliver@1"),
        ("js", "payment.charge@1"),
    ];
    for (lang, contract) in cases {
        let dir = sandbox.root.join(format!("guest-{lang}-{}", contract.replace(['.', '@'], "-")));
        let dir_s = dir.to_str().unwrap();
        let o = sandbox.vadyl(&["guest", "new", "--lang", lang, "--contract", contract, dir_s]);
        assert!(o.status.success(), "{lang}: {}", stderr(&o));
        assert!(dir.join("README.md").exists() && dir.join("wit/types.wit").exists(), "{lang}");
        let build = Command::new(common::vadyl_bin())
            .args(["--json", "guest", "build", dir_s, "--toolchains", toolchains.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(build.status.success(), "{lang} {contract}: {}", stderr(&build));
        let built: Value = serde_json::from_str(&stdout(&build)).unwrap();
        let wasm = built["component"].as_str().unwrap().to_owned();
        assert_eq!(wasm, dir.join("build/component.wasm").to_str().unwrap());
        let descriptor = dir.join("vadyl-descriptor.json");
        let o = sandbox.vadyl(&[
            "connector",
            "test",
            "--wasm",
            &wasm,
            "--descriptor",
            descriptor.to_str().unwrap(),
            "--contract",
            contract,
        ]);
        assert!(o.status.success(), "{lang} {contract}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("passed"), "{}", stdout(&o));
    }

    // What cannot be scaffolded says why, and writes nothing.
    let o = sandbox.vadyl(&["guest", "new", "--lang", "cobol", "--contract", "payment.charge@1", "x"]);
    assert!(!o.status.success() && stderr(&o).contains("choose rust, c, python or js"), "{}", stderr(&o));
    let taken = sandbox.root.join("guest-rust-payment-charge-1");
    let o =
        sandbox.vadyl(&["guest", "new", "--lang", "rust", "--contract", "payment.charge@1", taken.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("is not empty"), "{}", stderr(&o));
    let o = sandbox.vadyl(&["guest", "build", sandbox.root.join("tmp").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("vadyl-guest.json"), "{}", stderr(&o));
}
