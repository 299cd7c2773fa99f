//! The live feed (`GET /events/stream`) as its consumers meet it: a subscriber that joins while
//! events are appended gets each exactly once, in order, with unbroken hash links, across a forced
//! reconnect with `Last-Event-ID`; a subscriber that stops reading is dropped, with a reason, while
//! writers and other subscribers carry on.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use common::Server;
use serde_json::{json, Value};
use vadyl::events::envelope::RecordedEvent;

/// One SSE event: `id`, `event` (empty for the default) and `data`.
#[derive(Debug, Default)]
struct Sse {
    id: Option<String>,
    event: String,
    data: String,
}

/// Reads the next event, skipping comments (heartbeats); `None` at the end of the stream.
fn next_event(reader: &mut impl BufRead) -> Option<Sse> {
    let mut event = Sse::default();
    let mut any = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return any.then_some(event);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if any {
                return Some(event);
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        any = true;
        let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = value.to_owned(),
            "data" => event.data.push_str(value),
            _ => {}
        }
    }
}

fn subscribe(server: &Server, last_event_id: Option<u64>) -> BufReader<reqwest::blocking::Response> {
    subscribe_at(&server.base, &server.token, last_event_id)
}

fn subscribe_at(base: &str, token: &str, last_event_id: Option<u64>) -> BufReader<reqwest::blocking::Response> {
    let mut req = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(format!("{base}/api/Connector/events/stream"))
        .bearer_auth(token)
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let r = req.send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    BufReader::new(r)
}

fn head(server: &Server) -> u64 {
    server.get("/events?limit=1").1["head"].as_u64().unwrap()
}

/// Checks `e` follows `prev` (position, hash link, its own hash) and returns its position and hash.
fn check_next(e: &Sse, prev: &mut (u64, String)) {
    let value: Value = serde_json::from_str(&e.data).unwrap();
    let event = RecordedEvent::from_json(&value).unwrap();
    assert_eq!(e.id.as_deref(), Some(event.position.to_string().as_str()), "the SSE id is the position");
    assert_eq!(event.position, prev.0 + 1, "every event once, in order");
    if prev.0 > 0 {
        assert_eq!(hex::encode(event.prev_hash), prev.1, "position {} links to the one before", event.position);
    }
    assert_eq!(event.compute_hash(), event.hash, "position {} hashes to its hash", event.position);
    *prev = (event.position, hex::encode(event.hash));
}

#[test]
fn a_subscriber_gets_every_event_once_in_order_across_a_reconnect() {
    let (_dir, data) = common::hooks_in_two_projects();
    let server = Server::start(&data);
    let writer = {
        let (base, token) = (server.base.clone(), server.token.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            for i in 0..150 {
                let r = client
                    .post(format!("{base}/api/Connector/bindings"))
                    .bearer_auth(&token)
                    .json(&json!({"project": "shop", "alias": format!("live-{i}"), "implementation": "hooks:1.0.0"}))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };

    let mut prev = (0u64, String::new());
    let mut feed = subscribe(&server, None);
    while prev.0 < 60 {
        let e = next_event(&mut feed).expect("the feed stays open");
        check_next(&e, &mut prev);
    }
    // A forced disconnect mid-stream, then a reconnect from the last id received.
    drop(feed);
    let mut feed = subscribe(&server, Some(prev.0));
    writer.join().unwrap();
    let end = head(&server);
    assert!(end > 150, "the writer appended while we read");
    while prev.0 < end {
        let e = next_event(&mut feed).expect("the feed stays open");
        check_next(&e, &mut prev);
    }
    assert_eq!(prev.0, end);

    // A Last-Event-ID that is not a position is refused, not taken as 0.
    let r = reqwest::blocking::Client::new()
        .get(server.url("/events/stream"))
        .bearer_auth(&server.token)
        .header("last-event-id", "yesterday")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("Last-Event-ID"));
}

#[test]
fn a_subscriber_that_stops_reading_is_dropped_while_writers_and_readers_carry_on() {
    let (_dir, data) = common::hooks_in_two_projects();
    // A log long enough (about 12 MB of events) to fill the socket buffers of a client that reads
    // nothing: loopback send buffers grow to 4 MB at most here.
    const SEED: u64 = 20_000;
    common::bind_many(&common::open(&data), "shop", "seed", SEED as usize, "hooks:1.0.0");
    let server = Server::start_with(&data, &["--feed-buffer", "8", "--feed-stall-ms", "300"]);

    // The stalled subscriber: asks for the feed and never reads.
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "GET /api/Connector/events/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\nConnection: close\r\n\r\n",
        server.token
    )
    .unwrap();

    // A healthy subscriber from the start, and writers, at the same time.
    let healthy = {
        let base = server.base.clone();
        let token = server.token.clone();
        std::thread::spawn(move || {
            let mut feed = subscribe_at(&base, &token, None);
            let mut prev = (0u64, String::new());
            let mut target = u64::MAX;
            while prev.0 < target {
                let e = next_event(&mut feed).expect("the healthy feed stays open");
                assert_eq!(e.event, "", "the healthy subscriber is not dropped");
                check_next(&e, &mut prev);
                if prev.0 > SEED && target == u64::MAX {
                    target = SEED + 100;
                }
            }
            prev.0
        })
    };
    for i in 0..100 {
        let (status, body) = server.post(
            "/bindings",
            &json!({"project": "shop", "alias": format!("during-{i}"), "implementation": "hooks:1.0.0"}),
        );
        assert_eq!(status, 201, "a write while a subscriber is stalled: {body}");
    }
    assert!(healthy.join().unwrap() >= SEED + 100);

    // The stalled one was disconnected: what it was sent ends with the reason, then the stream ends.
    std::thread::sleep(Duration::from_millis(600));
    stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut received = Vec::new();
    stalled.read_to_end(&mut received).expect("the server closes the stalled subscription");
    let text = String::from_utf8_lossy(&received);
    let ids = text.lines().filter(|l| l.starts_with("id:")).count() as u64;
    assert!(ids < head(&server), "the stalled subscriber was not sent the whole log ({ids} events)");
    assert!(text.contains("event: dropped"), "a reason is sent last: …{}", &text[text.len().saturating_sub(400)..]);
    assert!(text.contains("read nothing for 300 ms"), "…{}", &text[text.len().saturating_sub(400)..]);
}
