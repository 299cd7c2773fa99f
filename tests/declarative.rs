//! The declarative lifecycle end to end, as a connector author and an application meet it: secret,
//! build, conformance, binding and invoke through the CLI and HTTP, against a fake Stripe on
//! 127.0.0.1.

mod common;
mod support;

use std::path::Path;

use common::{stderr, stdout, vadyl, Server};
use serde_json::{json, Value};
use support::fake_stripe::FakeStripe;

const SECRET: &str = "sk_test_e2e_5f1d0c9a7b3e4d2c";

/// The example manifest pointed at the fake, as `version`.
fn manifest_for(fake: &FakeStripe, version: &str) -> Value {
    support::stripe_manifest(fake, version)
}

fn write_manifest(dir: &Path, m: &Value, name: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(m).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

fn set_secret(data: &Path) {
    let printed = common::set_secret(data, "stripe-secret-key", &format!("{SECRET}\n"));
    assert!(!printed.contains(SECRET), "the secret was echoed");
}

use common::everything_stored;

#[test]
fn build_conform_bind_invoke_with_the_secret_attached_by_the_host_only() {
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data);
    let manifest = write_manifest(dir.path(), &manifest_for(&fake, "1.0.0"), "stripe.connector.json");

    let out = vadyl(&data, &["connector", "build", "declarative", "--manifest", &manifest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("built stripe-charge-adapter:1.0.0"), "{}", stdout(&out));
    let again = vadyl(&data, &["connector", "build", "declarative", "--manifest", &manifest]);
    assert!(stdout(&again).contains("already built"), "{}", stdout(&again));

    let out = vadyl(&data, &["connector", "conformance", "run", "--implementation", "stripe-charge-adapter:1.0.0"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("passed: true"), "{}", stdout(&out));
    assert!(stderr(&out).contains("running vector charge-succeeds"), "progress is shown: {}", stderr(&out));
    for check in ["contract.shape", "egress.allowed-hosts", "secrets.no-raw-material", "observability.redaction"] {
        assert!(stdout(&out).contains(check), "{check} missing from {}", stdout(&out));
    }

    let out =
        vadyl(&data, &["connector", "binding", "create", "stripe", "--implementation", "stripe-charge-adapter:1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let input = r#"{"amount": 2000, "currency": "usd", "source": "tok_visa", "idempotencyKey": "order-1", "metadata": [["order", "1"]]}"#;
    let out = vadyl(&data, &["--json", "connector", "invoke", "stripe", "--operation", "charge", "--input", input]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(result["output"]["chargeId"].as_str().unwrap().starts_with("ch_"), "{result}");
    assert_eq!(result["output"]["status"], "succeeded");
    assert_eq!(result["output"]["amount"], 2000);
    assert_eq!(result["publicationVersion"], 1);
    assert!(!result["spans"].as_array().unwrap().is_empty());

    // The fake saw the bearer secret, attached by the host, and the form body.
    let charges: Vec<_> = fake.requests().into_iter().filter(|r| r.path == "/v1/charges").collect();
    let last = charges.last().unwrap();
    assert_eq!(last.header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
    assert_eq!(last.header("idempotency-key"), Some("order-1"));

    // Over HTTP too, and the same idempotency key replays the same charge.
    let server = Server::start(&data);
    let (status, second) = server.post(
        "/invoke",
        &json!({"alias": "stripe", "operation": "charge", "input": serde_json::from_str::<Value>(input).unwrap()}),
    );
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["output"]["chargeId"], result["output"]["chargeId"]);
    let (status, declined) = server.post(
        "/invoke",
        &json!({"alias": "stripe", "operation": "charge",
                "input": {"amount": 100, "currency": "usd", "source": "tok_chargeDeclined", "metadata": []}}),
    );
    assert_eq!(status, 200, "{declined}");
    assert_eq!(declined["error"]["code"], "declined", "{declined}");
    let (status, bad) =
        server.post("/invoke", &json!({"alias": "stripe", "operation": "charge", "input": {"amount": "lots"}}));
    assert_eq!(status, 422, "{bad}");
    assert!(bad["errors"].as_array().is_some_and(|e| !e.is_empty()), "{bad}");
    let (status, _) = server.post("/invoke", &json!({"alias": "nope", "operation": "charge", "input": {}}));
    assert_eq!(status, 404);
    server.stop();

    // Neither the secret nor the card source is anywhere the registry keeps data, nor in what it
    // answered.
    let export = dir.path().join("history.ndjson");
    let out = vadyl(&data, &["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut places = everything_stored(&data);
    places.push(("export".into(), std::fs::read(&export).unwrap()));
    places.push(("invoke response".into(), stdout(&out).into_bytes()));
    places.push(("http invoke response".into(), second.to_string().into_bytes()));
    let scan = vadyl::runtime::redaction::Redactor::new([SECRET.as_bytes().to_vec(), b"tok_visa".to_vec()]).unwrap();
    for (place, bytes) in &places {
        if place.ends_with("secrets.db") || place.ends_with("secrets.db-wal") {
            continue; // encrypted at rest; checked by its own tests
        }
        assert!(scan.find(bytes).is_none(), "{place} holds the secret or the card source");
    }
}

#[test]
fn a_manifest_whose_output_breaks_the_contract_fails_conformance_and_publishes_nothing() {
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data);
    let mut m = manifest_for(&fake, "2.0.0");
    // `amount` must be an integer; map it to the currency string instead.
    m["operations"]["charge"]["response"]["output"]["amount"] = json!("$.body.currency");
    let manifest = write_manifest(dir.path(), &m, "broken.json");
    let out = vadyl(&data, &["connector", "build", "declarative", "--manifest", &manifest]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out =
        vadyl(&data, &["--json", "connector", "conformance", "run", "--implementation", "stripe-charge-adapter:2.0.0"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["passed"], false);
    let shape = report["checks"].as_array().unwrap().iter().find(|c| c["id"] == "contract.shape").unwrap();
    assert_eq!(shape["state"], "failed");
    assert!(shape["detail"].as_str().unwrap().contains("amount"), "{shape}");
    assert!(report["publicationVersion"].is_null());
    let latest = vadyl(&data, &["publication", "latest"]);
    assert!(!latest.status.success(), "a failed run published something: {}", stdout(&latest));
}

#[test]
fn over_http_a_rollback_moves_floating_bindings_back_and_pinned_ones_answer_410() {
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data);
    let server = Server::start(&data);
    for version in ["1.0.0", "1.1.0"] {
        let (status, built) = server.post("/build/declarative", &manifest_for(&fake, version));
        assert_eq!(status, 201, "{built}");
        let (status, report) =
            server.post("/conformance/run", &json!({"implementationId": format!("stripe-charge-adapter:{version}")}));
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["passed"], true, "{report}");
    }
    let (status, same) = server.post("/build/declarative", &manifest_for(&fake, "1.1.0"));
    assert_eq!(status, 200, "identical content is idempotent: {same}");
    let mut other = manifest_for(&fake, "1.1.0");
    other["description"] = json!("different content, same id");
    let (status, conflict) = server.post("/build/declarative", &other);
    assert_eq!(status, 409, "{conflict}");

    for (alias, target) in [("floating", "stripe-charge-adapter@^1"), ("pinned", "stripe-charge-adapter:1.1.0")] {
        let (status, b) =
            server.post("/bindings", &json!({"project": "shop", "alias": alias, "implementation": target}));
        assert_eq!(status, 201, "{b}");
    }
    let charge = |alias: &str| {
        server.post(
            "/invoke",
            &json!({"project": "shop", "alias": alias, "operation": "charge",
                    "input": {"amount": 700, "currency": "usd", "source": "tok_visa", "metadata": []}}),
        )
    };
    let (status, before) = charge("floating");
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["implementationId"], "stripe-charge-adapter:1.1.0");

    // Roll back the publication that admitted 1.1.0.
    let (status, _) =
        server.post("/publication/invalidate", &json!({"publicationVersion": 2, "reason": "1.1.0 double-charges"}));
    assert_eq!(status, 200);
    let (status, after) = charge("floating");
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["implementationId"], "stripe-charge-adapter:1.0.0");
    assert_eq!(after["publicationVersion"], 1);
    let (status, gone) = charge("pinned");
    assert_eq!(status, 410, "{gone}");
    assert!(gone["detail"].as_str().unwrap().contains("no longer"), "{gone}");
    // Another project cannot invoke shop's bindings: same answer as a name that does not exist.
    let (status, _) =
        server.post("/invoke", &json!({"project": "other", "alias": "floating", "operation": "charge", "input": {}}));
    assert_eq!(status, 404);
}

#[test]
fn hostile_manifests_and_requests_get_a_clear_4xx_and_change_nothing() {
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let good = manifest_for(&fake, "1.0.0");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut m = good.clone();
        f(&mut m);
        m
    };
    let cases: Vec<(&str, Value)> = vec![
        ("unknown field", with(&|m| m["surprise"] = json!(true))),
        ("wrong type", with(&|m| m["operations"]["charge"]["retry"]["maxAttempts"] = json!("four"))),
        ("path traversal in the name", with(&|m| m["name"] = json!("../../etc"))),
        (
            "template injection",
            with(&|m| m["operations"]["charge"]["request"]["headers"]["X"] = json!("{% include '/etc/passwd' %}")),
        ),
        (
            "host not allowed",
            with(&|m| m["operations"]["charge"]["request"]["url"] = json!("https://evil.example.com/v1/charges")),
        ),
        (
            "templated host",
            with(&|m| {
                m["operations"]["charge"]["request"]["url"] = json!("https://{{ input.currency }}.example.com/x")
            }),
        ),
        (
            "raw secret literal",
            with(&|m| {
                m["operations"]["charge"]["request"]["headers"]["Authorization"] = json!("Bearer sk_live_abcdef123456")
            }),
        ),
        ("unknown contract", with(&|m| m["contract"]["kind"] = json!("payment.teleport"))),
        (
            "missing operation",
            with(&|m| {
                m["operations"].as_object_mut().unwrap().remove("refund");
            }),
        ),
    ];
    for (what, manifest) in cases {
        let (status, problem) = server.post("/build/declarative", &manifest);
        assert!((400..500).contains(&status), "{what}: {status} {problem}");
        assert!(problem["detail"].is_string(), "{what}: {problem}");
    }
    let (status, _, _) = server.post_raw("/build/declarative", "application/json", "{\"manifestVersion\": 1,");
    assert_eq!(status, 400);
    let (status, _, _) = server.post_raw("/build/declarative", "application/json", &"[".repeat(2 << 20));
    assert_eq!(status, 413);
    for body in [
        json!({"implementationId": "../../etc/passwd:1.0.0"}),
        json!({"implementationId": "stripe-charge-adapter:1.0.0", "extra": 1}),
        json!({"implementationId": 5}),
    ] {
        let (status, problem) = server.post("/conformance/run", &body);
        assert!((400..500).contains(&status), "{body}: {status} {problem}");
    }
    let (status, _) = server.post("/conformance/run", &json!({"implementationId": "ghost:1.0.0"}));
    assert_eq!(status, 404);
    server.stop();
    let reg = common::open(&data);
    assert_eq!(reg.registry().read(|s| s.implementations.len()), 0, "nothing was built");
}

#[test]
fn each_conformance_check_fails_on_a_manifest_built_to_break_it() {
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data);
    let base = manifest_for(&fake, "3.0.0");
    let fixture = |m: &mut Value, vector: &str, responses: Value| m["conformance"]["fixtures"][vector] = responses;
    type Breaker = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, &str, Breaker)> = vec![
        (
            "3.0.1",
            "egress.allowed-hosts",
            Box::new(move |m: &mut Value| {
                fixture(
                    m,
                    "charge-succeeds",
                    json!([{"status": 302, "headers": {"Location": "https://evil.example.com/steal"}}]),
                )
            }),
        ),
        (
            "3.0.2",
            "secrets.no-raw-material",
            Box::new(move |m: &mut Value| {
                fixture(
                    m,
                    "charge-declined",
                    json!([{"status": 402, "body": {"error": {
                    "type": "card_error", "code": "card_declined",
                    "message": "Declined for key {{request.headers.authorization}}"}}}]),
                )
            }),
        ),
        (
            "3.0.3",
            "egress.idempotency-on-retry",
            Box::new(|m: &mut Value| {
                let op = m["operations"]["charge"].as_object_mut().unwrap();
                op.remove("idempotency");
                op.remove("retry");
            }),
        ),
        (
            "3.0.5",
            "observability.redaction",
            Box::new(|m: &mut Value| {
                m["operations"]["charge"]["request"]["query"] = json!({"card": "{{ input.source }}"});
            }),
        ),
        (
            "3.0.4",
            "contract.errors",
            Box::new(|m: &mut Value| m["operations"]["charge"]["errors"][0]["code"] = json!("internal")),
        ),
    ];
    for (version, check, breaker) in cases {
        let mut m = base.clone();
        m["version"] = json!(version);
        breaker(&mut m);
        let manifest = write_manifest(dir.path(), &m, &format!("{version}.json"));
        let out = vadyl(&data, &["connector", "build", "declarative", "--manifest", &manifest]);
        assert!(out.status.success(), "{version}: {}", stderr(&out));
        let id = format!("stripe-charge-adapter:{version}");
        let out = vadyl(&data, &["--json", "connector", "conformance", "run", "--implementation", &id]);
        assert!(!out.status.success(), "{version} passed conformance");
        let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let state = report["checks"].as_array().unwrap().iter().find(|c| c["id"] == check).unwrap();
        assert_eq!(state["state"], "failed", "{version}: {check} should fail: {report}");
        assert!(state["detail"].as_str().is_some_and(|d| !d.is_empty()), "{report}");
        assert!(!stdout(&out).contains(SECRET));
    }
    let latest = vadyl(&data, &["publication", "latest"]);
    assert!(!latest.status.success(), "a failed run published something: {}", stdout(&latest));
}

#[test]
fn the_webhook_manifest_signs_with_a_host_held_secret_and_is_delivered() {
    use base64::Engine;
    use hmac::Mac;
    let (url, seen) = common::receiver(std::time::Duration::ZERO);
    let port: u16 = url.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signing_secret = "whsec_e2e_c0ffee_0123456789";
    common::set_secret(&data, "webhook-signing-secret", signing_secret);
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/webhook.connector.json")).unwrap();
    let mut m: Value = serde_json::from_str(&text).unwrap();
    m["egress"]["allow"].as_array_mut().unwrap().push(json!({"scheme": "http", "host": "127.0.0.1", "port": port}));
    let manifest = write_manifest(dir.path(), &m, "webhook.json");
    for args in [
        vec!["connector", "build", "declarative", "--manifest", manifest.as_str()],
        vec!["connector", "conformance", "run", "--implementation", "webhook-signer:1.0.0"],
        vec!["connector", "binding", "create", "hooks", "--implementation", "webhook-signer@^1"],
    ] {
        let out = vadyl(&data, &args);
        assert!(out.status.success(), "{args:?}: {}{}", stdout(&out), stderr(&out));
    }
    let payload = r#"{"order":"o-77","card":"4242-secret-ish"}"#;
    let input = json!({"endpointUrl": url, "eventType": "order.paid", "eventId": "evt_77", "payload": payload,
                       "occurredAt": "2026-11-25T12:00:00Z", "headers": [["x-tenant", "shop"]]});
    let out = vadyl(
        &data,
        &["--json", "connector", "invoke", "hooks", "--operation", "deliver", "--input", &input.to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(result["output"]["delivered"], true, "{result}");
    let deliveries = seen.lock().unwrap().clone();
    let (headers, body) = deliveries.last().unwrap();
    assert_eq!(body, payload);
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    let timestamp = get("webhook-timestamp");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_secret.as_bytes()).unwrap();
    mac.update(format!("evt_77.{timestamp}.{payload}").as_bytes());
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(get("webhook-signature"), expected, "the receiver can verify the Standard Webhooks signature");
    assert_eq!(result["output"]["signature"], expected);
    assert_eq!(get("webhook-id"), "evt_77");
    assert_eq!(get("x-tenant"), "shop");
    let scan =
        vadyl::runtime::redaction::Redactor::new([signing_secret.as_bytes().to_vec(), b"4242-secret-ish".to_vec()])
            .unwrap();
    for (place, bytes) in everything_stored(&data) {
        if place.contains("secrets.db") {
            continue;
        }
        assert!(scan.find(&bytes).is_none(), "{place} holds the signing secret or the sensitive payload");
    }
    assert!(scan.find(stdout(&out).as_bytes()).is_none());

    // The caller may name the signing secret, but only one the published manifest was granted:
    // another secret of the project is refused at the host boundary (CapabilityAssert).
    let mut other = input.clone();
    other["eventId"] = json!("evt_78");
    other["signingSecretRef"] = json!("stripe-secret-key");
    let before = seen.lock().unwrap().len();
    let out = vadyl(
        &data,
        &["--json", "connector", "invoke", "hooks", "--operation", "deliver", "--input", &other.to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let denied: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(denied["error"]["code"], "permission-denied", "{denied}");
    assert_eq!(seen.lock().unwrap().len(), before, "nothing was delivered");
}

#[test]
fn an_upstream_redirect_off_the_allow_list_is_refused_by_the_host_as_a_typed_error() {
    let fake = FakeStripe::start_blocking(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    set_secret(&data);
    let manifest = write_manifest(dir.path(), &manifest_for(&fake, "1.0.0"), "m.json");
    for args in [
        vec!["connector", "build", "declarative", "--manifest", manifest.as_str()],
        vec!["connector", "conformance", "run", "--implementation", "stripe-charge-adapter:1.0.0"],
        vec!["connector", "binding", "create", "stripe", "--implementation", "stripe-charge-adapter@^1"],
    ] {
        let out = vadyl(&data, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    fake.push_fault(support::fake_stripe::Fault::redirect("http://169.254.169.254/latest/meta-data")).unwrap();
    let input =
        r#"{"amount": 100, "currency": "usd", "source": "tok_visa", "idempotencyKey": "redir-1", "metadata": []}"#;
    let out = vadyl(&data, &["--json", "connector", "invoke", "stripe", "--operation", "charge", "--input", input]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(result["error"]["code"], "host-denied", "{result}");
    assert_eq!(result["error"]["retryable"], false);
    assert!(!stdout(&out).contains(SECRET));
}

/// An invocation reads its secrets at the versions it resolved when it started (and built its
/// redactor from): a rotation that lands mid-invocation changes neither the MAC nor the metadata it
/// gets, and a secret that did not exist at the start stays missing. A host that pins nothing
/// reads the latest.
#[test]
fn an_invocation_reads_the_secret_versions_it_started_with() {
    use hmac::Mac as _;
    use vadyl::runtime::adapter::StepHost as _;
    use vadyl::runtime::host::secrets::PinnedSecrets;

    let dir = tempfile::tempdir().unwrap();
    let app = common::open(dir.path());
    let project = vadyl::ids::ProjectId::default_project();
    let first = app.set_secret(&project, "signing-key", b"first-value-0123").unwrap();
    let grants = ["secret:signing-key".to_owned(), "secret:later-key".to_owned()];
    let host = |pinned: Option<PinnedSecrets>| {
        let allow = vadyl::runtime::host::egress::AllowList::new(vec![]).unwrap();
        let host = vadyl::runtime::invoke::InvocationHost::new(
            app.host_services(),
            project.clone(),
            allow,
            vadyl::runtime::redaction::Redactor::default(),
        )
        .with_grants(grants.clone());
        match pinned {
            Some(p) => host.with_pinned_secrets(p),
            None => host,
        }
    };
    let mut pinned = host(Some(PinnedSecrets::new([
        ("signing-key".to_owned(), Some(first.version.clone())),
        ("later-key".to_owned(), None),
    ])));
    // The rotation, and a secret set after the start.
    app.set_secret(&project, "signing-key", b"second-value-4567").unwrap();
    app.set_secret(&project, "later-key", b"later-value-89ab").unwrap();

    let mac = |key: &[u8]| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        m.update(b"payload");
        m.finalize().into_bytes().to_vec()
    };
    assert_eq!(pinned.secret_metadata("signing-key").unwrap().version, first.version);
    assert_eq!(pinned.hmac_sha256("signing-key", b"payload").unwrap(), mac(b"first-value-0123"));
    assert!(pinned.secret_metadata("later-key").is_err(), "a secret missing at the start stays missing");
    assert!(pinned.hmac_sha256("later-key", b"payload").is_err());

    let mut latest = host(None);
    assert_ne!(latest.secret_metadata("signing-key").unwrap().version, first.version);
    assert_eq!(latest.hmac_sha256("signing-key", b"payload").unwrap(), mac(b"second-value-4567"));
}
