//! Bindings over HTTP and the CLI: per project, only to published implementations, each showing
//! what it resolves to now.

mod common;

use common::{publish, stderr, stdout, vadyl, Server};
use serde_json::json;

#[test]
fn bindings_resolve_against_latest_and_follow_rollbacks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = common::open(dir.path());
        publish(&reg, "stripe-charge-adapter:1.0.0", "payment.charge@1");
        publish(&reg, "stripe-charge-adapter:1.1.0", "payment.charge@1");
    }
    let server = Server::start(dir.path());
    let (status, floating) = server.post(
        "/bindings",
        &json!({"project": "shop", "alias": "stripe", "implementation": "stripe-charge-adapter@^1"}),
    );
    assert_eq!(status, 201, "{floating}");
    assert_eq!(floating["resolvesTo"]["implementationId"], "stripe-charge-adapter:1.1.0");
    assert_eq!(floating["resolvesTo"]["publicationVersion"], 2);
    let (status, again) = server.post(
        "/bindings",
        &json!({"project": "shop", "alias": "stripe", "implementation": "stripe-charge-adapter@^1"}),
    );
    assert_eq!(status, 200, "an identical binding is idempotent: {again}");
    assert_eq!(again["revision"], 1);
    let (status, pinned) = server.post(
        "/bindings",
        &json!({"project": "shop", "alias": "pinned", "implementation": "stripe-charge-adapter:1.1.0"}),
    );
    assert_eq!(status, 201, "{pinned}");

    // Roll back the version that admitted 1.1.0.
    let (status, _) =
        server.post("/publication/invalidate", &json!({"publicationVersion": 2, "reason": "1.1.0 is broken"}));
    assert_eq!(status, 200);
    let (_, floating) = server.get("/bindings/stripe?project=shop");
    assert_eq!(floating["resolvesTo"]["implementationId"], "stripe-charge-adapter:1.0.0");
    let (_, pinned) = server.get("/bindings/pinned?project=shop");
    assert_eq!(pinned["resolvesTo"]["status"], "no-longer-published");

    // Changing a binding is an event too.
    let (status, changed) = server.post(
        "/bindings",
        &json!({"project": "shop", "alias": "pinned", "implementation": "stripe-charge-adapter:1.0.0"}),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["revision"], 2);
    assert_eq!(changed["resolvesTo"]["status"], "resolved");

    let (_, list) = server.get("/bindings?project=shop");
    assert_eq!(list["bindings"].as_array().unwrap().len(), 2);
    // Projects are isolated: another project sees none of them.
    let (_, other) = server.get("/bindings?project=other");
    assert_eq!(other["bindings"], json!([]));
    let (status, _) = server.get("/bindings/stripe?project=other");
    assert_eq!(status, 404);
    // A missing project means `default`.
    let (_, default) = server.get("/bindings");
    assert_eq!(default["project"], "default");

    for (body, want) in [
        (json!({"alias": "x", "implementation": "stripe-charge-adapter:1.1.0"}), 422), // not in latest any more
        (json!({"alias": "x", "implementation": "nobody@^1"}), 422),
        (json!({"alias": "../etc", "implementation": "stripe-charge-adapter@^1"}), 400),
        (json!({"alias": "x", "implementation": "stripe-charge-adapter"}), 400),
        (json!({"project": "Shop!", "alias": "x", "implementation": "stripe-charge-adapter@^1"}), 400),
        (json!({"alias": "x", "implementation": "stripe-charge-adapter@^1", "extra": 1}), 422),
        (json!({"alias": 7, "implementation": "stripe-charge-adapter@^1"}), 422),
    ] {
        let (status, problem) = server.post("/bindings", &body);
        assert_eq!(status, want, "{body} → {problem}");
        assert!(problem["detail"].is_string(), "{problem}");
    }
    let (status, problem) = server.get("/bindings?project=shop&surprise=1");
    assert_eq!(status, 400, "{problem}");
    server.stop();
    let reg = common::open(dir.path());
    assert_eq!(reg.registry().read(|s| s.bindings.len()), 2, "refused requests wrote nothing");
}

#[test]
fn the_cli_creates_lists_and_shows_bindings() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = common::open(dir.path());
        publish(&reg, "stripe-charge-adapter:1.0.0", "payment.charge@1");
    }
    let out = vadyl(
        dir.path(),
        &["connector", "binding", "create", "stripe", "--implementation", "stripe-charge-adapter:1.0.0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("default/stripe → stripe-charge-adapter:1.0.0"), "{}", stdout(&out));
    let out = vadyl(dir.path(), &["connector", "binding", "list"]);
    assert!(stdout(&out).contains("resolves to stripe-charge-adapter:1.0.0 (publication 1"), "{}", stdout(&out));
    let out = vadyl(dir.path(), &["--json", "connector", "binding", "show", "stripe"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["resolvesTo"]["status"], "resolved");
    let out = vadyl(dir.path(), &["connector", "binding", "show", "nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has no binding nope"), "{}", stderr(&out));
    let out = vadyl(dir.path(), &["connector", "binding", "create", "x", "--implementation", "ghost:1.0.0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not in the latest publication"), "{}", stderr(&out));
}
