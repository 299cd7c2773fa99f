//! A hostile load on the HTTP surface: beyond the concurrency limit the server answers 503 with
//! Retry-After at once, keeps serving within the limit, and loses no acknowledged write; a token
//! over its rate is answered 429 while other tokens are served.

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

use common::vadyl_ok as ok;

#[test]
fn ten_times_the_concurrency_limit_gets_503_with_retry_after_and_loses_no_acknowledged_write() {
    const LIMIT: usize = 4;
    let (url, _) = common::receiver(Duration::from_millis(600));
    let port: u16 = url.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::set_secret(&data, "webhook-signing-secret", "whsec_load_test");
    let native = vadyl::runtime::native::find("vadyl.webhook-hmac").unwrap();
    let mut d = serde_json::to_value(native.default_descriptor()).unwrap();
    d["egress"]["allow"].as_array_mut().unwrap().push(json!({"scheme": "http", "host": "127.0.0.1", "port": port}));
    let d_path = dir.path().join("d.json");
    std::fs::write(&d_path, d.to_string()).unwrap();
    ok(
        &data,
        &[
            "connector",
            "build",
            "native",
            "--adapter",
            "vadyl.webhook-hmac",
            "--implementation",
            "hooks:1.0.0",
            "--descriptor",
            d_path.to_str().unwrap(),
        ],
    );
    ok(&data, &["connector", "conformance", "run", "--implementation", "hooks:1.0.0"]);
    ok(&data, &["connector", "binding", "create", "hooks", "--implementation", "hooks:1.0.0"]);

    let server = std::sync::Arc::new(Server::start_with(&data, &["--max-concurrent", &LIMIT.to_string()]));
    let client = reqwest::blocking::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    // 10x the limit at once: slow invocations and quick writes (bindings), all in flight together.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(LIMIT * 10));
    let threads: Vec<_> = (0..LIMIT * 10)
        .map(|i| {
            let (server, client, barrier, url) = (server.clone(), client.clone(), barrier.clone(), url.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let request = if i % 4 == 0 {
                    client
                        .post(server.url("/bindings"))
                        .json(&json!({"project": "load", "alias": format!("b{i}"), "implementation": "hooks:1.0.0"}))
                } else {
                    let input = json!({"endpointUrl": url, "eventType": "t", "eventId": format!("evt_{i}"),
                                       "payload": "{}", "occurredAt": "2026-11-25T12:00:00Z", "headers": []});
                    client
                        .post(server.url("/invoke"))
                        .json(&json!({"alias": "hooks", "operation": "deliver", "input": input}))
                };
                let r = request.bearer_auth(&server.token).send().unwrap();
                let status = r.status().as_u16();
                let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                let body: Value = r.json().unwrap_or(Value::Null);
                (i, status, retry_after, body)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.1 == 503).collect();
    let served: Vec<_> = results.iter().filter(|r| (200..300).contains(&r.1)).collect();
    assert!(!refused.is_empty(), "nothing was refused at 10x the limit: {results:?}");
    assert!(served.len() >= LIMIT, "the server stopped serving within its limit: {results:?}");
    for (_, status, retry_after, body) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"), "{status} {body}");
        assert_eq!(body["status"], 503, "a problem document: {body}");
    }
    for (i, status, _, body) in &results {
        assert!(*status == 503 || (200..300).contains(status), "request {i}: {status} {body}");
    }
    // Every acknowledged binding is there, after a restart too.
    let acknowledged: Vec<String> =
        results.iter().filter(|r| r.0 % 4 == 0 && r.1 == 201).map(|r| format!("b{}", r.0)).collect();
    let server = std::sync::Arc::try_unwrap(server).ok().unwrap();
    server.stop();
    let server = Server::start(&data);
    let (status, list) = server.get("/bindings?project=load");
    assert_eq!(status, 200, "{list}");
    let text = list.to_string();
    for alias in &acknowledged {
        assert!(text.contains(&format!("\"{alias}\"")), "acknowledged binding {alias} is missing: {list}");
    }
    let (status, _) = server.get("/contracts");
    assert_eq!(status, 200, "the server serves normally once the load is gone");
}

#[test]
fn a_token_over_its_rate_gets_429_with_retry_after_and_other_tokens_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["--rate-limit", "2", "--rate-limit-burst", "4"]);
    let client = reqwest::blocking::Client::new();
    let get = |token: &str| {
        let r = client.get(server.url("/contracts")).bearer_auth(token).send().unwrap();
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        (status, retry_after, content_type, r.json::<Value>().unwrap_or(Value::Null))
    };
    // A second token, issued before the admin token spends its burst (issuing counts as a request).
    let r = client
        .post(server.url("/tokens"))
        .bearer_auth(&server.token)
        .json(&json!({"role": "auditor", "label": "rate"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let issued: Value = r.json().unwrap();
    let auditor = issued["token"].as_str().unwrap().to_owned();

    let answers: Vec<_> = (0..8).map(|_| get(&server.token)).collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert!(statuses.iter().take(3).all(|s| *s == 200), "the rest of the burst is served: {statuses:?}");
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!(!refused.is_empty(), "8 requests at once exceed a burst of 4: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    for (_, retry_after, content_type, body) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{body}");
        assert_eq!(body["status"], 429);
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.starts_with("token ") && detail.contains("2 requests per second, bursts of 4"), "{detail}");
    }
    assert_eq!(get(&auditor).0, 200, "another token has its own allowance");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&server.token).0, 200, "after Retry-After the token is served again");
}
