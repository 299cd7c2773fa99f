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

/// Reads one HTTP/1.1 response (status line, headers, a Content-Length body) off `conn`.
fn read_response(conn: &mut std::io::BufReader<std::net::TcpStream>) -> (u16, String) {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    conn.read_line(&mut line).expect("a status line");
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        conn.read_line(&mut header).expect("a header line");
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("a numeric content-length");
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).expect("the whole body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn a_refused_upload_gets_its_problem_and_the_connection_stays_usable() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let addr = server.base.trim_start_matches("http://").to_owned();
    let stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(stream);

    // 3 MiB against the 1 MiB limit, and 4 MiB without a token: both are refused before the handler
    // reads a byte, and both answers must still arrive whole, on the same connection.
    for (body_len, token, want, says) in
        [(3usize << 20, server.token.as_str(), 413, "too large"), (4 << 20, "", 401, "token")]
    {
        let body = format!("{{\"reason\": \"{}\"}}", "x".repeat(body_len));
        let auth = if token.is_empty() { String::new() } else { format!("authorization: Bearer {token}\r\n") };
        let head = format!(
            "POST /api/Connector/publication/invalidate HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(body.as_bytes()).expect("the server reads the refused body instead of resetting");
        let (status, problem) = read_response(&mut reader);
        assert_eq!(status, want, "{problem}");
        let problem: Value = serde_json::from_str(&problem).expect("a problem document");
        assert!(problem["detail"].as_str().unwrap_or("").to_lowercase().contains(says), "{problem}");
    }

    let head = format!(
        "GET /api/Connector/publication/latest HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\r\n",
        server.token
    );
    writer.write_all(head.as_bytes()).unwrap();
    let (status, body) = read_response(&mut reader);
    assert_eq!(status, 404, "an empty registry has no latest publication: {body}");
}
