//! Access control as a hostile client meets it: every route × every role (and no token, a malformed
//! one, a revoked one), project isolation without an existence oracle, and actors on every event.

mod common;

use std::path::Path;

use common::{stderr, vadyl, Server};
use serde_json::{json, Value};

/// The log's head position, read straight from the database.
fn head(data: &Path) -> i64 {
    common::Database::of(data).head()
}

fn call(server: &Server, token: Option<&str>, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let mut req = match method {
        "GET" => client.get(server.url(path)),
        _ => client.post(server.url(path)),
    };
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    // A live feed never ends: its status is the answer.
    if r.headers().get("content-type").is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream")) {
        return (status, Value::Null);
    }
    (status, r.json().unwrap_or(Value::Null))
}

fn issue(server: &Server, body: Value) -> (String, String) {
    let (status, v) = call(server, Some(&server.token), "POST", "/tokens", Some(&body));
    assert_eq!(status, 201, "{v}");
    (v["token"].as_str().unwrap().to_owned(), v["tokenId"].as_str().unwrap().to_owned())
}

#[test]
fn every_route_by_every_role_allows_exactly_its_table_and_refusals_write_nothing() {
    let (_dir, data) = common::hooks_in_two_projects();
    let server = Server::start(&data);
    assert!(server.token.starts_with("vadyl_"), "serve wrote an admin token");
    let (publisher, _) = issue(&server, json!({"role": "publisher", "implementations": ["hooks", "webhook-signer"]}));
    let (project, _) = issue(&server, json!({"role": "project", "project": "shop"}));
    let (auditor, _) = issue(&server, json!({"role": "auditor"}));
    let (revoked, revoked_id) = issue(&server, json!({"role": "admin", "label": "leaked"}));
    let (status, _) = call(
        &server,
        Some(&server.token),
        "POST",
        &format!("/tokens/{revoked_id}/revoke"),
        Some(&json!({"reason": "leaked"})),
    );
    assert_eq!(status, 200);
    let (_, victim) = issue(&server, json!({"role": "auditor", "label": "to revoke in the matrix"}));
    let victim_path = format!("/tokens/{victim}/revoke");

    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/webhook.connector.json")).unwrap(),
    )
    .unwrap();
    let invoke = json!({"project": "shop", "alias": "hooks", "operation": "deliver", "input": {
        "endpointUrl": "https://in.hooks.example.com/x", "eventType": "t", "eventId": "e", "payload": "{}",
        "occurredAt": "2026-11-25T12:00:00Z", "headers": []}});
    let all = ["admin", "publisher", "project", "auditor"];
    let (_, first) = call(&server, Some(&server.token), "GET", "/events/1", None);
    let first_id = first["eventId"].as_str().unwrap_or_else(|| panic!("no eventId in {first}")).to_owned();
    let history = vec!["admin", "auditor"];
    // (method, path, body, roles allowed)
    let routes: Vec<(&str, String, Option<Value>, Vec<&str>)> = vec![
        ("GET", "/contracts".into(), None, all.to_vec()),
        ("GET", "/contracts/payment.charge/1".into(), None, all.to_vec()),
        ("GET", "/implementations".into(), None, all.to_vec()),
        ("GET", "/implementations/hooks:1.0.0".into(), None, all.to_vec()),
        ("GET", "/implementations/hooks:1.0.0/configuration".into(), None, all.to_vec()),
        ("GET", "/publication/latest".into(), None, all.to_vec()),
        ("GET", "/publication/version/1".into(), None, all.to_vec()),
        ("GET", "/publication/version/1/hooks:1.0.0".into(), None, all.to_vec()),
        ("GET", "/build/declarative/schema".into(), None, all.to_vec()),
        ("GET", "/bindings?project=shop".into(), None, vec!["admin", "project", "auditor"]),
        ("GET", "/bindings/hooks?project=shop".into(), None, vec!["admin", "project", "auditor"]),
        (
            "GET",
            "/memory/get?project=shop&implementation=hooks:1.0.0&key=k".into(),
            None,
            vec!["admin", "project", "auditor"],
        ),
        (
            "POST",
            "/bindings".into(),
            Some(json!({"project": "shop", "alias": "hooks2", "implementation": "hooks:1.0.0"})),
            vec!["admin", "project"],
        ),
        ("POST", "/invoke".into(), Some(invoke), vec!["admin", "project"]),
        (
            "POST",
            "/conformance/run".into(),
            Some(json!({"implementationId": "hooks:1.0.0"})),
            vec!["admin", "publisher"],
        ),
        ("POST", "/build/declarative".into(), Some(manifest), vec!["admin", "publisher"]),
        (
            "POST",
            "/build/native".into(),
            Some(json!({"implementationId": "hooks:1.0.0", "adapter": "vadyl.webhook-hmac"})),
            vec!["admin", "publisher"],
        ),
        (
            "POST",
            "/build/component".into(),
            Some(json!({"implementationId": "hooks:9.0.0", "contract": "webhook.deliver@1",
                        "descriptor": {"egress": {"allow": [{"scheme": "https", "host": "a.example.com"}]}},
                        "component": "AGFzbQ0AAQA="})),
            vec!["admin", "publisher"],
        ),
        (
            "POST",
            "/publication/invalidate".into(),
            Some(json!({"publicationVersion": 99, "reason": "matrix"})),
            vec!["admin"],
        ),
        ("POST", "/tokens".into(), Some(json!({"role": "auditor", "label": "matrix"})), vec!["admin"]),
        ("GET", "/tokens".into(), None, vec!["admin", "auditor"]),
        (
            "POST",
            "/secrets".into(),
            Some(json!({"project": "shop", "name": "matrix-key", "value": "s3cr3t-matrix"})),
            vec!["admin"],
        ),
        ("GET", "/secrets?project=shop".into(), None, vec!["admin", "project", "auditor"]),
        ("POST", victim_path, Some(json!({"reason": "matrix"})), vec!["admin"]),
        ("GET", "/conformance/runs?passed=true".into(), None, all.to_vec()),
        ("GET", "/conformance/runs/conf_unknown".into(), None, all.to_vec()),
        ("GET", "/invocations?project=shop".into(), None, vec!["admin", "project", "auditor"]),
        ("GET", "/invocations/inv_unknown".into(), None, vec!["admin", "project", "auditor"]),
        ("GET", "/events?limit=5".into(), None, history.clone()),
        ("GET", "/events/1".into(), None, history.clone()),
        ("GET", "/events/stream?after=1".into(), None, history.clone()),
        ("GET", format!("/events/by-id/{first_id}"), None, history.clone()),
        ("GET", "/audit/checkpoint".into(), None, history.clone()),
        ("GET", "/audit/proof/inclusion?position=1".into(), None, history.clone()),
        ("GET", "/audit/proof/consistency?from=1".into(), None, history.clone()),
        ("GET", "/audit/replay?to=1".into(), None, history.clone()),
        ("GET", "/audit/export".into(), None, history.clone()),
        ("GET", "/tlog/checkpoint".into(), None, history.clone()),
        ("GET", "/tlog/tile/0/000.p/1".into(), None, history.clone()),
        ("GET", "/tlog/tile/entries/000.p/1".into(), None, history.clone()),
    ];
    // Every route the server has is in the matrix.
    for route in vadyl::http::api_routes() {
        let template: Vec<&str> = route.path.split('/').collect();
        let covered = routes.iter().any(|(method, path, _, _)| {
            let concrete: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
            // A catch-all (`{*tile}`) takes the rest of the path.
            let catch_all = template.last().is_some_and(|t| t.starts_with("{*"));
            *method == route.method.as_str()
                && (concrete.len() == template.len() || catch_all && concrete.len() >= template.len())
                && concrete.iter().zip(&template).all(|(c, t)| t.starts_with('{') || c == t)
        });
        assert!(covered, "{} {} is not in the route × role matrix", route.method, route.path);
    }
    let tokens =
        [("admin", server.token.clone()), ("publisher", publisher), ("project", project), ("auditor", auditor)];
    let mut checked = 0;
    for (method, path, body, allowed) in &routes {
        // Refused first, so the allowed call (which may write) comes last.
        let mut order: Vec<&(&str, String)> = tokens.iter().filter(|(r, _)| !allowed.contains(r)).collect();
        order.extend(tokens.iter().filter(|(r, _)| allowed.contains(r)));
        for (role, token) in order {
            let before = head(&data);
            let (status, answer) = call(&server, Some(token), method, path, body.as_ref());
            if allowed.contains(role) {
                assert!(![401, 403].contains(&status), "{role} {method} {path}: {status} {answer}");
            } else {
                assert_eq!(status, 403, "{role} {method} {path}: {answer}");
                assert_eq!(answer["status"], 403, "a problem document: {answer}");
                assert_eq!(head(&data), before, "{role} {method} {path} was refused but wrote");
            }
            checked += 1;
        }
        for (who, token) in
            [("no token", None), ("malformed", Some("vadyl_nothex_x")), ("revoked", Some(revoked.as_str()))]
        {
            let before = head(&data);
            let (status, answer) = call(&server, token, method, path, body.as_ref());
            assert_eq!(status, 401, "{who} {method} {path}: {answer}");
            assert_eq!(head(&data), before, "{who} {method} {path} wrote");
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * 7);
}

fn victim_id(token: &str) -> &str {
    token.split('_').nth(1).unwrap()
}

#[test]
fn a_project_token_learns_nothing_about_another_project() {
    let (_dir, data) = common::hooks_in_two_projects();
    let server = Server::start(&data);
    let (shop, _) = issue(&server, json!({"role": "project", "project": "shop"}));
    let probe = |project: &str| -> Vec<(u16, String)> {
        let invoke = json!({"project": project, "alias": "hooks", "operation": "deliver", "input": {}});
        let by_id = json!({"project": project, "implementationId": "hooks:1.0.0", "operation": "deliver", "input": {}});
        let bind = json!({"project": project, "alias": "mine", "implementation": "hooks:1.0.0"});
        [
            call(&server, Some(&shop), "GET", &format!("/bindings?project={project}"), None),
            call(&server, Some(&shop), "GET", &format!("/bindings/hooks?project={project}"), None),
            call(
                &server,
                Some(&shop),
                "GET",
                &format!("/memory/get?project={project}&implementation=hooks:1.0.0&key=k"),
                None,
            ),
            call(&server, Some(&shop), "POST", "/invoke", Some(&invoke)),
            call(&server, Some(&shop), "POST", "/invoke", Some(&by_id)),
            call(&server, Some(&shop), "POST", "/bindings", Some(&bind)),
            call(&server, Some(&shop), "GET", &format!("/invocations?project={project}"), None),
        ]
        .into_iter()
        .map(|(s, v)| (s, v.to_string().replace(project, "<project>")))
        .collect()
    };
    // The rival project has an invocation record (a failed delivery is recorded too).
    let invoke = json!({"project": "rival", "alias": "hooks", "operation": "deliver", "input": {
        "endpointUrl": "https://in.hooks.example.com/x", "eventType": "t", "eventId": "e", "payload": "{}",
        "occurredAt": "2026-11-25T12:00:00Z", "headers": []}});
    let (_, answer) = call(&server, Some(&server.token), "POST", "/invoke", Some(&invoke));
    let rival_record =
        answer["invocationId"].as_str().unwrap_or_else(|| panic!("no invocationId in {answer}")).to_owned();
    let (status, listed) = call(&server, Some(&server.token), "GET", "/invocations?project=rival", None);
    assert_eq!(status, 200);
    assert_eq!(listed["records"][0]["invocationId"], rival_record.as_str(), "{listed}");
    let (status, seen) = call(&server, Some(&shop), "GET", &format!("/invocations/{rival_record}"), None);
    let (ghost_status, ghost) = call(&server, Some(&shop), "GET", "/invocations/inv_00000000000000000000000000", None);
    assert_eq!((status, ghost_status), (404, 404), "another project's record is not shown: {seen}");
    assert_eq!(
        seen.to_string().replace(&rival_record, "<id>"),
        ghost.to_string().replace("inv_00000000000000000000000000", "<id>"),
        "another project's record looks exactly like one that does not exist"
    );
    let before = head(&data);
    let rival = probe("rival"); // exists, with a binding `hooks` and an invocation
    let ghost = probe("ghost"); // never existed
    assert_eq!(rival, ghost, "answers about an existing project differ from a missing one");
    assert!(rival.iter().all(|(s, _)| *s == 404 || *s == 200), "{rival:?}");
    assert_eq!(head(&data), before, "probing another project wrote something");
    // Its own project works.
    let (status, list) = call(&server, Some(&shop), "GET", "/bindings?project=shop", None);
    assert_eq!(status, 200);
    assert_eq!(list["bindings"].as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn every_change_records_its_actor_and_the_export_holds_token_ids_never_tokens() {
    let (dir, data) = common::hooks_in_two_projects();
    let server = Server::start(&data);
    let admin_id = victim_id(&server.token).to_owned();
    let server_token = server.token.clone();
    let (project, project_id) = issue(&server, json!({"role": "project", "project": "shop"}));
    let (status, _) = call(
        &server,
        Some(&project),
        "POST",
        "/bindings",
        Some(&json!({"project": "shop", "alias": "again", "implementation": "hooks:1.0.0"})),
    );
    assert_eq!(status, 201);
    let (status, _) = call(
        &server,
        Some(&server.token),
        "POST",
        "/conformance/run",
        Some(&json!({"implementationId": "hooks:1.0.0"})),
    );
    assert_eq!(status, 200);
    let (status, _) = call(
        &server,
        Some(&server.token),
        "POST",
        &format!("/tokens/{project_id}/revoke"),
        Some(&json!({"reason": "rotated"})),
    );
    assert_eq!(status, 200);
    let (status, _) = call(&server, Some(&project), "GET", "/bindings?project=shop", None);
    assert_eq!(status, 401, "a revoked token is refused at once");
    server.stop();

    let export = dir.path().join("history.ndjson");
    let out = vadyl(&data, &["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&export).unwrap();
    for token in [&project, &server_token] {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(token.as_bytes());
        let scan = vadyl::runtime::redaction::Redactor::new([token.as_bytes().to_vec(), digest.to_vec()]).unwrap();
        assert!(scan.find(text.as_bytes()).is_none(), "the export holds a token or its hash");
    }
    assert!(text.contains(&project_id) && text.contains(&admin_id), "the export names token ids");
    let events: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let actor_of = |t: &str| -> Vec<String> {
        events.iter().filter(|e| e["type"] == t).map(|e| e["actor"].as_str().unwrap_or("").to_owned()).collect()
    };
    assert!(actor_of("BindingCreated").contains(&format!("token:{project_id}")));
    assert!(actor_of("ConformanceRunCompleted").contains(&format!("token:{admin_id}")));
    assert!(actor_of("TokenIssued").contains(&format!("token:{admin_id}")));
    assert!(actor_of("TokenRevoked").contains(&format!("token:{admin_id}")));
    for (t, _) in vadyl::events::domain::EVENT_TYPES {
        assert!(actor_of(t).iter().all(|a| !a.is_empty()), "{t} without an actor");
    }
}

#[test]
fn the_openapi_document_matches_the_router() {
    let (_dir, data) = common::hooks_in_two_projects();
    let server = Server::start(&data);
    let doc: Value = reqwest::blocking::get(format!("{}/api/openapi.json", server.base)).unwrap().json().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 18, "{}", paths.len());
    for (path, ops) in paths {
        let concrete = path
            .replace("{kind}", "payment.charge")
            .replace("{major_version}", "1")
            .replace("{implementation_id}", "hooks:1.0.0")
            .replace("{version}", "1")
            .replace("{alias}", "hooks")
            .replace("{token_id}", "0000000000000000");
        for method in ops.as_object().unwrap().keys() {
            let (status, body) = call(
                &server,
                Some(&server.token),
                &method.to_uppercase(),
                &concrete,
                Some(&json!({})).filter(|_| method == "post"),
            );
            assert_ne!(body["detail"], "no such route", "{method} {path} is documented but not routed");
            assert_ne!(status, 405, "{method} {path} is documented with the wrong method");
        }
    }
    // And a route that is not documented is not served.
    let (status, body) = call(&server, Some(&server.token), "GET", "/not-a-route", None);
    assert_eq!((status, body["detail"].as_str()), (404, Some("no such route")));
}
