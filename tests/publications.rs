//! Publications and contracts over real HTTP: the release manager's and the client's journeys.

mod common;

use common::{publish, Server};
use serde_json::json;

#[test]
fn contracts_are_served_with_schemas_derived_from_wit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (status, list) = server.get("/contracts");
    assert_eq!(status, 200, "{list}");
    let kinds: Vec<String> =
        list["contracts"].as_array().unwrap().iter().map(|c| c["contract"].as_str().unwrap().to_owned()).collect();
    assert!(kinds.contains(&"payment.charge@1".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"webhook.deliver@1".to_owned()), "{kinds:?}");

    let (status, charge) = server.get("/contracts/payment.charge/1");
    assert_eq!(status, 200, "{charge}");
    let ops: Vec<&str> = charge["operations"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(ops, ["charge", "refund"]);
    let input = &charge["operations"][0]["inputSchema"];
    assert_eq!(input["type"], "object");
    for field in ["amount", "currency", "source"] {
        assert!(input["required"].as_array().unwrap().contains(&json!(field)), "{field} required in {input}");
    }
    assert_eq!(input["properties"]["amount"]["type"], "integer");
    assert_eq!(input["properties"]["source"]["x-vadyl-sensitive"], true);
    assert_eq!(charge["operations"][0]["outputSchema"]["type"], "object");
    assert!(charge["sensitiveFields"].as_array().unwrap().contains(&json!({
        "operation": "charge", "direction": "input", "pointer": "/source"
    })));
    assert!(charge["witDigest"].as_str().unwrap().starts_with("sha256:"));

    let (status, webhook) = server.get("/contracts/webhook.deliver/1");
    assert_eq!(status, 200);
    assert_eq!(webhook["operations"][0]["name"], "deliver");

    for (path, want) in [
        ("/contracts/payment.charge/2", 404),
        ("/contracts/payment.charge/one", 400),
        ("/contracts/Payment/1", 400),
        ("/nope", 404),
    ] {
        let (status, body) = server.get(path);
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["detail"].is_string(), "{path} answers problem+json: {body}");
    }
}

#[test]
fn the_contract_catalogue_is_recorded_once_per_wit_digest() {
    let dir = tempfile::tempdir().unwrap();
    let count = |dir: &std::path::Path| {
        let reg = common::open(dir);
        reg.registry().read(|s| s.contracts.values().map(|c| c.revision).sum::<u32>())
    };
    assert_eq!(count(dir.path()), 2);
    // Opening again with the same WIT records nothing new.
    assert_eq!(count(dir.path()), 2);
    let reg = common::open(dir.path());
    let mut contract_events = 0;
    reg.registry()
        .store()
        .read_range(1, u64::MAX, &mut |e| {
            contract_events += usize::from(e.event_type == "ContractRegistered");
            Ok(())
        })
        .unwrap();
    assert_eq!(contract_events, 2);
}

#[test]
fn invalidation_rolls_latest_back_and_keeps_versions_readable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = common::open(dir.path());
        publish(&reg, "stripe-charge-adapter:1.0.0", "payment.charge@1");
        publish(&reg, "stripe-charge-adapter:1.1.0", "payment.charge@1");
        publish(&reg, "webhook-signer:1.0.0", "webhook.deliver@1");
    }
    let server = Server::start(dir.path());

    let (status, latest) = server.get("/publication/latest");
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["publicationVersion"], 3);
    assert_eq!(latest["entries"].as_array().unwrap().len(), 3);
    assert_eq!(latest["status"], "valid");

    let (status, implementations) = server.get("/implementations");
    assert_eq!(status, 200);
    assert_eq!(implementations["implementations"].as_array().unwrap().len(), 3);
    let (status, one) = server.get("/implementations/webhook-signer:1.0.0");
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["source"], "DeclarativeBundle");
    assert_eq!(one["inLatestPublication"], true);

    // Invalidating the latest moves latest to the previous valid version, at once.
    let (status, body) =
        server.post("/publication/invalidate", &json!({"publicationVersion": 3, "reason": "webhook signer leaks"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["latest"]["publicationVersion"], 2);
    let (_, latest) = server.get("/publication/latest");
    assert_eq!(latest["publicationVersion"], 2);
    let (_, one) = server.get("/implementations/webhook-signer:1.0.0");
    assert_eq!(one["inLatestPublication"], false);

    // Invalidating a non-latest version leaves latest alone.
    let (status, body) =
        server.post("/publication/invalidate", &json!({"publicationVersion": 1, "reason": "superseded"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["latest"]["publicationVersion"], 2);

    // Versioned views stay readable, with their status.
    let (status, v3) = server.get("/publication/version/3");
    assert_eq!(status, 200);
    assert_eq!(v3["status"], "invalidated");
    assert_eq!(v3["invalidated"]["reason"], "webhook signer leaks");
    // The actor is the token that asked: an auditor can answer "who invalidated version 3, and why".
    let token_id = server.token.split('_').nth(1).unwrap();
    assert_eq!(v3["invalidated"]["recorded"]["actor"], format!("token:{token_id}"));
    let (status, entry) = server.get("/publication/version/3/webhook-signer:1.0.0");
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["publicationStatus"], "invalidated");
    assert!(entry["contentHash"].as_str().unwrap().starts_with("sha256:"));

    // Unknown or already invalidated versions are clear 4xx answers.
    for (body, want, says) in [
        (json!({"publicationVersion": 3, "reason": "again"}), 409, "already invalidated"),
        (json!({"publicationVersion": 99, "reason": "x"}), 404, "does not exist"),
        (json!({"publicationVersion": 0, "reason": "x"}), 422, "starts at 1"),
        (json!({"publicationVersion": 2, "reason": "  "}), 422, "reason"),
        (json!({"publicationVersion": 2}), 422, "reason"),
        (json!({"publicationVersion": 2, "reason": "x", "force": true}), 422, "force"),
    ] {
        let (status, problem) = server.post("/publication/invalidate", &body);
        assert_eq!(status, want, "{body} → {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(says), "{problem}");
        assert_eq!(problem["status"], want);
    }
    let (status, problem, content_type) = server.post_raw("/publication/invalidate", "application/json", "{not json");
    assert_eq!(status, 400, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    let (status, _, _) = server.post_raw("/publication/invalidate", "text/plain", "{}");
    assert_eq!(status, 415);
    let huge = format!("{{\"publicationVersion\": 2, \"reason\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let (status, problem, content_type) = server.post_raw("/publication/invalidate", "application/json", &huge);
    assert_eq!(status, 413, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    let (status, problem, content_type) = server.post_raw("/publication/latest", "application/json", "{}");
    assert_eq!(status, 405, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    for (path, want) in [
        ("/publication/version/0", 400),
        ("/publication/version/abc", 400),
        ("/publication/version/9", 404),
        ("/publication/version/2/webhook-signer:1.0.0", 404),
        ("/publication/version/2/not-an-id", 400),
        ("/implementations/nope:1.0.0", 404),
    ] {
        let (status, body) = server.get(path);
        assert_eq!(status, want, "{path}: {body}");
    }

    // Nothing the refused requests sent was written: two invalidations, no more.
    server.stop();
    let reg = common::open(dir.path());
    let invalidated =
        reg.registry().read(|s| s.publications.versions.values().filter(|v| v.invalidated.is_some()).count());
    assert_eq!(invalidated, 2);
    assert_eq!(reg.registry().read(|s| s.publications.latest().map(|l| l.publication_version.0)), Some(2));
}

#[test]
fn invalidating_every_version_leaves_no_latest_and_floating_bindings_follow_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let reg = common::open(dir.path());
    publish(&reg, "stripe-charge-adapter:1.0.0", "payment.charge@1");
    publish(&reg, "stripe-charge-adapter:1.1.0", "payment.charge@1");
    common::bind(&reg, "shop", "stripe", "stripe-charge-adapter@^1");
    common::bind(&reg, "shop", "pinned", "stripe-charge-adapter:1.1.0");
    let resolve = |alias: &str| {
        reg.registry().read(|s| {
            let b = s.binding(&"shop".parse().unwrap(), &alias.parse().unwrap()).unwrap();
            match s.resolve(&b.target.parse().unwrap()) {
                vadyl::projections::Resolution::Resolved { entry, .. } => entry.implementation_id.to_string(),
                other => format!("{other:?}"),
            }
        })
    };
    assert_eq!(resolve("stripe"), "stripe-charge-adapter:1.1.0");
    reg.registry()
        .invalidate_publication(&common::actor("test"), vadyl::ids::PublicationVersion(2), "bad release")
        .unwrap();
    assert_eq!(resolve("stripe"), "stripe-charge-adapter:1.0.0", "floating follows the rollback");
    assert!(resolve("pinned").starts_with("NoLongerPublished"), "pinned does not silently run something else");
    let latest = reg
        .registry()
        .invalidate_publication(&common::actor("test"), vadyl::ids::PublicationVersion(1), "all bad")
        .unwrap();
    assert!(latest.is_none());
    assert_eq!(resolve("stripe"), "NothingPublished");
}
