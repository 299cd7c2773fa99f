//! The auditor's console in a real browser: headless Chromium driven over WebDriver
//! (`chromedriver`, Debian's `chromium-driver`), against `vadyl serve` on loopback. Every step
//! asserts on what the page shows (text and state of rendered elements), never on its source.
//! Screenshots of the main pages are written to `docs/console/` for the README.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bind, publish, vadyl_ok, Server};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver on a free loopback port and one headless Chromium session; both end on drop.
struct Browser {
    driver: Child,
    client: Client,
    downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group, and the Chromium it starts is in it: end the
        // whole group, or a failed test would leave browsers running behind it.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Ends the session (Chromium quits), then the driver.
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

async fn browser() -> Browser {
    let port = free_port();
    let chromedriver = std::env::var("VADYL_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{chromedriver} starts ({e}): install Debian's chromium and chromium-driver"));
    let url = format!("http://127.0.0.1:{port}");
    let ready = Instant::now();
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(ready.elapsed() < Duration::from_secs(20), "chromedriver answers on {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let downloads = tempfile::tempdir().unwrap();
    let profile = tempfile::tempdir().unwrap();
    // The flags keep Chromium off the network (this machine refuses outside connections).
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": std::env::var("VADYL_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into()),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1360,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
            "prefs": {
                "download.default_directory": downloads.path().display().to_string(),
                "download.prompt_for_download": false,
            },
        },
    });
    let caps = caps.as_object().cloned().unwrap();
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a Chromium session starts");
    Browser { driver, client, downloads, _profile: profile }
}

/// Polls `what` until it returns `Some`, or fails the test after `limit` saying what it waited for.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    eventually(Duration::from_secs(10), &format!("{css} to show {want:?}"), || async {
        text(c, css).await.filter(|t| t.contains(want))
    })
    .await
}

/// The element with `id`, once the page has rendered it (a route renders after its data arrives).
async fn by_id(c: &Client, id: &str) -> fantoccini::elements::Element {
    eventually(Duration::from_secs(10), &format!("#{id} to be on the page"), || async {
        c.find(Locator::Id(id)).await.ok()
    })
    .await
}

/// The states of the verification badges of the table `css`, row by row, once none is checking.
async fn badges(c: &Client, table: &str) -> Vec<(String, String, String)> {
    eventually(Duration::from_secs(20), "every badge to be decided", || async {
        let rows = c.find_all(Locator::Css(&format!("{table} tbody tr"))).await.ok()?;
        let mut out = Vec::new();
        for row in rows {
            let badge = row.find(Locator::Css(".verification .badge")).await.ok()?;
            let state = badge.attr("data-state").await.ok()??;
            if state == "checking" {
                return None;
            }
            let kind = row.attr("data-type").await.ok()?.unwrap_or_default();
            out.push((kind, state, badge.text().await.ok()?));
        }
        (!out.is_empty()).then_some(out)
    })
    .await
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Signs in with `token`, pinning `key`, and waits for the timeline.
async fn sign_in(c: &Client, base: &str, token: &str, key: &str) {
    c.goto(&format!("{base}/console")).await.unwrap();
    let field =
        eventually(Duration::from_secs(10), "the sign-in form", || async { c.find(Locator::Id("token")).await.ok() })
            .await;
    field.clear().await.unwrap();
    field.send_keys(token).await.unwrap();
    let pubkey = by_id(c, "pubkey").await;
    pubkey.clear().await.unwrap();
    pubkey.send_keys(key).await.unwrap();
    by_id(c, "signin-submit").await.click().await.unwrap();
    wait_text(c, "h2", "Timeline").await;
}

/// A registry with three publication versions (v3 invalidated over HTTP, so `latest` fell back to
/// v2), bindings in `shop`, an auditor token, and the verifier key to pin.
struct Seeded {
    _dir: tempfile::TempDir,
    server: Server,
    auditor: String,
    key: String,
    /// The position of the invalidation event.
    invalidated_at: u64,
}

fn seeded() -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = common::open(dir.path());
        // Real manifests, built by the build engine: 1.1.0 talks to one more host than 1.0.0.
        publish_example(&reg, "stripe.connector.json", "1.0.0", None);
        publish_example(&reg, "stripe.connector.json", "1.1.0", Some("eu.api.stripe.com"));
        publish_example(&reg, "webhook.connector.json", "1.0.0", None);
        bind(&reg, "shop", "pay", "stripe-charge-adapter@^1");
        bind(&reg, "shop", "hooks", "webhook-signer@^1");
    }
    let key: Value = serde_json::from_str(&vadyl_ok(dir.path(), &["--json", "key", "show"])).unwrap();
    let key = key["verifierKey"].as_str().unwrap().to_owned();
    let server = Server::start_with(dir.path(), &["--checkpoint-interval-secs", "1"]);
    let (status, body) =
        server.post("/publication/invalidate", &json!({"publicationVersion": 3, "reason": "webhook signer leaks"}));
    assert_eq!(status, 200, "{body}");
    let (_, page) = server.get("/events?type=PublicationInvalidated");
    let invalidated_at = page["events"][0]["position"].as_u64().unwrap();
    let (status, token) = server.post("/tokens", &json!({"role": "auditor", "label": "console test"}));
    assert_eq!(status, 201, "{token}");
    let auditor = token["token"].as_str().unwrap().to_owned();
    // Wait for a checkpoint over the invalidation, so that its proof exists.
    let started = Instant::now();
    while server.get(&format!("/audit/proof/inclusion?position={invalidated_at}")).0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "a checkpoint covers the invalidation");
        std::thread::sleep(Duration::from_millis(100));
    }
    Seeded { _dir: dir, server, auditor, key, invalidated_at }
}

/// Builds the example manifest `file` as `version` (allowing `extra_host` too) with the build
/// engine, and records a passing conformance run for it: the next publication version.
fn publish_example(reg: &vadyl::app::App, file: &str, version: &str, extra_host: Option<&str>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(file);
    let mut manifest: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    manifest["version"] = json!(version);
    if let Some(host) = extra_host {
        manifest["egress"]["allow"].as_array_mut().unwrap().push(json!({"scheme": "https", "host": host}));
    }
    let built = reg.build_declarative(&common::actor("test:builder"), &manifest).unwrap();
    let id = built.implementation_id;
    common::conformance(reg, &id, &format!("conf_{}", id.to_string().replace([':', '.'], "_")), true);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

#[test]
fn an_auditor_walks_the_history_verifies_it_travels_in_time_diffs_and_downloads() {
    let s = seeded();
    let base = s.server.base.clone();
    let admin = s.server.token.clone();
    runtime().block_on(async {
        let b = browser().await;
        let c = &b.client;

        // Sign in with the auditor token, pinning the registry's key: the timeline opens.
        sign_in(c, &base, &s.auditor, &s.key).await;
        wait_text(c, "#trust-badge", "checkpoint verified").await;
        let rows = badges(c, "#events").await;
        assert!(rows.len() >= 10, "{rows:?}");
        // Every event the page shows is verified in the page; only checkpoint events newer than
        // the newest checkpoint wait for the next one (a checkpoint never covers its own event).
        for (kind, state, detail) in &rows {
            let fine = state == "verified" || (kind == "CheckpointSigned" && state == "pending");
            assert!(fine, "{kind}: {state} {detail}");
        }
        assert!(rows.iter().any(|(k, _, _)| k == "PublicationInvalidated"));
        screenshot(c, "timeline").await;

        // A new event appears in the open timeline within a second of its append.
        let before = c.find_all(Locator::Css("#events tbody tr")).await.unwrap().len();
        bind_over_http(&base, &admin, "live").await;
        let answered = Instant::now();
        // The server may sign a checkpoint meanwhile, so the binding is any new row, not the last.
        let shown = eventually(Duration::from_secs(1), "the new binding in the open timeline", || async {
            let rows = c.find_all(Locator::Css("#events tbody tr")).await.ok()?;
            for row in rows.iter().skip(before) {
                let t = row.text().await.ok()?;
                if t.contains("BindingCreated") {
                    return Some(t);
                }
            }
            None
        })
        .await;
        assert!(shown.contains("BindingCreated") && shown.contains("live"), "{shown}");
        eprintln!("a new event showed in the timeline {:?} after its append was answered", answered.elapsed());

        // Filter by type: only the invalidation remains.
        by_id(c, "filter-type").await.send_keys("PublicationInvalidated").await.unwrap();
        by_id(c, "apply-filters").await.click().await.unwrap();
        let filtered = eventually(Duration::from_secs(10), "the filtered timeline", || async {
            let rows = badges(c, "#events").await;
            (rows.len() == 1).then_some(rows)
        })
        .await;
        assert_eq!(filtered[0].0, "PublicationInvalidated");
        assert_eq!(filtered[0].1, "verified", "{filtered:?}");
        let row = text(c, "#events tbody tr").await.unwrap();
        assert!(row.contains("webhook signer leaks") && row.contains("latest → 2"), "{row}");

        // Open the publication: its invalidation, and the version latest fell back to.
        c.find(Locator::Css("#events tbody tr a[href='#/publication/3']")).await.unwrap().click().await.unwrap();
        wait_text(c, "h2", "Publication v3").await;
        wait_text(c, "#publication-status", "invalidated").await;
        wait_text(c, "#invalidation", "webhook signer leaks").await;
        wait_text(c, "#fell-back-to", "v2").await;
        wait_text(c, "#latest", "v2").await;
        assert!(text(c, "#entries").await.unwrap().contains("webhook-signer:1.0.0"));
        screenshot(c, "publication").await;

        // Back to before the invalidation: v3 is valid and latest again.
        let position = by_id(c, "at-position").await;
        position.send_keys(&format!("{}\n", s.invalidated_at - 1)).await.unwrap();
        wait_text(c, "#at-state", &format!("after event {}", s.invalidated_at - 1)).await;
        wait_text(c, "#publication-status", "valid").await;
        wait_text(c, "#latest", "v3").await;
        wait_text(c, "#digests", "projection digests at").await;
        screenshot(c, "time-travel").await;

        // The project then and now: `hooks` follows webhook-signer@^1, which v3 alone listed.
        c.goto(&format!("{base}/console#/project/shop")).await.unwrap();
        wait_text(c, "#bindings tr[data-alias='hooks'] .resolved-then", "webhook-signer:1.0.0 (in v3)").await;
        wait_text(c, "#bindings tr[data-alias='hooks'] .resolves", "no-match").await;
        wait_text(c, "#bindings tr[data-alias='pay'] .resolves", "stripe-charge-adapter:1.1.0 (in v2)").await;
        screenshot(c, "project").await;
        c.goto(&format!("{base}/console#/publication/3")).await.unwrap();
        wait_text(c, "#latest", "v3").await;
        by_id(c, "at-now").await.click().await.unwrap();
        wait_text(c, "#latest", "v2").await;

        // Diff v2 and v3: the status differs and one entry is added, with its manifest.
        c.find(Locator::LinkText("diff with v2")).await.unwrap().click().await.unwrap();
        wait_text(c, "#diff-summary", "between v2 and v3").await;
        let fields = changed_fields(c).await;
        assert!(fields.contains(&"status".to_owned()), "{fields:?}");
        assert!(fields.contains(&"entry webhook-signer:1.0.0".to_owned()), "{fields:?}");
        assert!(fields.contains(&"webhook-signer /egress/allow/0/host".to_owned()), "{fields:?}");
        assert!(!fields.iter().any(|f| f.starts_with("stripe-charge-adapter")), "{fields:?}");

        // Diff v1 and v2: the stripe adapter moved to 1.1.0, whose manifest allows one more host.
        let a = by_id(c, "diff-a").await;
        a.select_by_value("1").await.unwrap();
        let b2 = by_id(c, "diff-b").await;
        b2.select_by_value("2").await.unwrap();
        by_id(c, "diff-go").await.click().await.unwrap();
        wait_text(c, "#diff-summary", "between v1 and v2").await;
        let fields = changed_fields(c).await;
        assert!(fields.contains(&"entry stripe-charge-adapter:1.1.0".to_owned()), "{fields:?}");
        assert!(fields.contains(&"stripe-charge-adapter /version".to_owned()), "{fields:?}");
        assert!(fields.contains(&"stripe-charge-adapter /egress/allow/2/host".to_owned()), "{fields:?}");
        let row = text(c, "#diff tr[data-field='stripe-charge-adapter /egress/allow/2/host']").await.unwrap();
        assert!(row.contains("eu.api.stripe.com"), "{row}");
        screenshot(c, "diff").await;

        // The implementation page shows the manifest from its verified artifact.
        c.goto(&format!("{base}/console#/implementation/stripe-charge-adapter:1.1.0")).await.unwrap();
        wait_text(c, "#configuration-what", "manifest").await;
        wait_text(c, "#configuration", "eu.api.stripe.com").await;
        wait_text(c, "#runs", "passed").await;

        // Download the export: a file with every event and the signed checkpoint.
        c.find(Locator::LinkText("Downloads")).await.unwrap().click().await.unwrap();
        by_id(c, "download-export").await.click().await.unwrap();
        let file = b.downloads.path().join("vadyl-export.ndjson");
        let export = eventually(Duration::from_secs(10), "the downloaded export", || async {
            std::fs::read_to_string(&file).ok().filter(|t| t.ends_with('\n'))
        })
        .await;
        let last: Value = serde_json::from_str(export.lines().last().unwrap()).unwrap();
        assert!(last["checkpoint"].as_str().unwrap().contains("\n\n\u{2014} "), "{last}");
        assert!(export.lines().count() as u64 > s.invalidated_at);

        // The console only reads, even for an admin token, and says so.
        sign_out(c).await;
        sign_in(c, &base, &admin, &s.key).await;
        assert!(text(c, "header").await.unwrap().contains("read-only"));
        b.close().await;
    });
}

/// Binds `alias` in project `shop` over HTTP as the admin: one new event in the log.
async fn bind_over_http(base: &str, admin: &str, alias: &str) {
    let answer = reqwest::Client::new()
        .post(format!("{base}/api/Connector/bindings"))
        .bearer_auth(admin)
        .json(&json!({"project": "shop", "alias": alias, "implementation": "stripe-charge-adapter@^1"}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.text().await.unwrap_or_default());
}

/// The `data-field` of every changed row of the diff.
async fn changed_fields(c: &Client) -> Vec<String> {
    let mut fields = Vec::new();
    for row in c.find_all(Locator::Css("#diff tr.changed")).await.unwrap() {
        fields.push(row.attr("data-field").await.unwrap().unwrap_or_default());
    }
    fields
}

async fn sign_out(c: &Client) {
    by_id(c, "signout").await.click().await.unwrap();
    wait_text(c, "h2", "Sign in").await;
}

#[test]
fn a_wrong_key_or_token_is_refused_at_sign_in_with_the_reason() {
    let s = seeded();
    let base = s.server.base.clone();
    runtime().block_on(async {
        let b = browser().await;
        let c = &b.client;
        c.goto(&format!("{base}/console")).await.unwrap();
        let token = eventually(Duration::from_secs(10), "the sign-in form", || async {
            c.find(Locator::Id("token")).await.ok()
        })
        .await;
        token.send_keys("vadyl_not_a_token").await.unwrap();
        by_id(c, "pubkey").await.send_keys(&s.key).await.unwrap();
        by_id(c, "signin-submit").await.click().await.unwrap();
        wait_text(c, "#signin-error", "the server refused the token").await;

        // A key that is not the registry's: signing in works, but the checkpoint fails, named.
        let other = "vadyl+00000000+AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        by_id(c, "token").await.clear().await.unwrap();
        by_id(c, "token").await.send_keys(&s.auditor).await.unwrap();
        by_id(c, "pubkey").await.clear().await.unwrap();
        by_id(c, "pubkey").await.send_keys(other).await.unwrap();
        by_id(c, "signin-submit").await.click().await.unwrap();
        wait_text(c, "#signin-error", "key id does not match").await;
        b.close().await;
    });
}

/// A test-only proxy in front of the server that rewrites one event in every page of `/events`
/// it forwards: the invalidation's reason. The live feed is not proxied.
async fn tampering_proxy(upstream: String) -> String {
    use axum::body::Body;
    use axum::http::{Request, Response, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            if path.starts_with("/api/Connector/events/stream") {
                return Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(Body::empty()).unwrap();
            }
            let mut forward = http.get(format!("{upstream}{path}"));
            for (name, value) in req.headers() {
                if name == "authorization" || name == "accept" {
                    forward = forward.header(name.as_str(), value.as_bytes());
                }
            }
            let answer = forward.send().await.unwrap();
            let status = answer.status().as_u16();
            let content_type = answer.headers().get("content-type").cloned();
            let csp = answer.headers().get("content-security-policy").cloned();
            let mut body = answer.bytes().await.unwrap().to_vec();
            if path.starts_with("/api/Connector/events?") {
                let mut page: Value = serde_json::from_slice(&body).unwrap();
                for e in page["events"].as_array_mut().into_iter().flatten() {
                    if e["type"] == "PublicationInvalidated" {
                        e["payload"]["reason"] = json!("routine maintenance");
                    }
                }
                body = serde_json::to_vec(&page).unwrap();
            }
            let mut response = Response::builder().status(status);
            if let Some(ct) = content_type {
                response = response.header("content-type", ct);
            }
            if let Some(csp) = csp {
                response = response.header("content-security-policy", csp);
            }
            response.body(Body::from(body)).unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[test]
fn an_event_tampered_with_on_the_way_shows_as_failing_and_the_rest_as_verified() {
    let s = seeded();
    let upstream = s.server.base.clone();
    runtime().block_on(async {
        let proxy = tampering_proxy(upstream).await;
        let b = browser().await;
        let c = &b.client;
        sign_in(c, &proxy, &s.auditor, &s.key).await;
        let rows = badges(c, "#events").await;
        let failed: Vec<_> = rows.iter().filter(|(_, state, _)| state == "failed").collect();
        assert_eq!(failed.len(), 1, "{rows:?}");
        assert_eq!(failed[0].0, "PublicationInvalidated");
        assert!(failed[0].2.contains("content does not match its hash"), "{failed:?}");
        // What the page shows is the tampered text, flagged: the server's word is never the proof.
        let row = text(c, "#events tbody tr[data-type='PublicationInvalidated']").await.unwrap();
        assert!(row.contains("routine maintenance"), "{row}");
        for (kind, state, detail) in &rows {
            if kind != "PublicationInvalidated" {
                assert!(state == "verified" || kind == "CheckpointSigned", "{kind}: {state} {detail}");
            }
        }
        screenshot(c, "tampered").await;
        b.close().await;
    });
}

/// Appends `count` binding events straight to the log (1000 bindings in project `load`, each
/// created then changed), in appends of 1000: a big history without a million HTTP calls.
fn load_history(reg: &vadyl::app::App, count: u64) {
    use vadyl::events::domain::{BindingChanged, BindingCreated, DomainEvent};
    use vadyl::events::store::{AppendRequest, ExpectedVersion, ProposedEvent};
    let proposed = |event: DomainEvent| ProposedEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        payload: event.payload(),
    };
    let per_alias = count / 1000;
    for a in 0..1000 {
        let alias: vadyl::ids::BindingAlias = format!("alias-{a}").parse().unwrap();
        let project: vadyl::ids::ProjectId = "load".parse().unwrap();
        let mut events = vec![proposed(DomainEvent::BindingCreated(BindingCreated {
            project: project.clone(),
            alias: alias.clone(),
            target: "stripe-charge-adapter@^1".into(),
        }))];
        for i in 1..per_alias {
            events.push(proposed(DomainEvent::BindingChanged(BindingChanged {
                project: project.clone(),
                alias: alias.clone(),
                target: format!("stripe-charge-adapter:1.{}.0", i % 2),
                previous_target: format!("stripe-charge-adapter:1.{}.0", (i + 1) % 2),
            })));
        }
        let stream = vadyl::events::domain::streams::binding(&project, &alias);
        let request = AppendRequest::single(stream, ExpectedVersion::NoStream, events, common::actor("test:load"));
        reg.registry().store().append(request).unwrap();
    }
}

#[test]
fn the_timeline_opens_on_a_million_events_within_a_second_and_stays_live() {
    let count: u64 = std::env::var("VADYL_CONSOLE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = common::open(dir.path());
        publish(&reg, "stripe-charge-adapter:1.0.0", "payment.charge@1");
        publish(&reg, "stripe-charge-adapter:1.1.0", "payment.charge@1");
        let started = Instant::now();
        load_history(&reg, count);
        eprintln!("appended {count} events in {:?}", started.elapsed());
    }
    let key: Value = serde_json::from_str(&vadyl_ok(dir.path(), &["--json", "key", "show"])).unwrap();
    let key = key["verifierKey"].as_str().unwrap().to_owned();
    let server = Server::start_with(dir.path(), &["--checkpoint-interval-secs", "1"]);
    let (status, token) = server.post("/tokens", &json!({"role": "auditor"}));
    assert_eq!(status, 201, "{token}");
    let auditor = token["token"].as_str().unwrap().to_owned();
    let (base, admin) = (server.base.clone(), server.token.clone());
    runtime().block_on(async {
        let b = browser().await;
        let c = &b.client;
        sign_in(c, &base, &auditor, &key).await;
        // Open the timeline afresh and time its first page: the newest events, one page of them.
        c.goto(&format!("{base}/console#/publications")).await.unwrap();
        wait_text(c, "h2", "Publications").await;
        let opened = Instant::now();
        c.find(Locator::LinkText("Timeline")).await.unwrap().click().await.unwrap();
        eventually(Duration::from_secs(5), "the first page of the timeline", || async {
            let n = c.find_all(Locator::Css("#events tbody tr")).await.ok()?.len();
            (n > 0).then_some(())
        })
        .await;
        let first_page = opened.elapsed();
        eprintln!("the timeline's first page of a {count}-event log showed in {first_page:?}");
        assert!(first_page < Duration::from_secs(1), "first page in {first_page:?}");
        let state = text(c, "#page-state").await.unwrap();
        assert!(state.starts_with("50 events shown"), "{state}");
        let rows = badges(c, "#events").await;
        assert!(rows.iter().all(|(kind, state, _)| state == "verified" || kind == "CheckpointSigned"), "{rows:?}");
        // Paging back goes to the 50 events just before, without loading the rest.
        let first_position = || async {
            let first = c.find(Locator::Css("#events tbody tr")).await.ok()?;
            first.attr("data-position").await.ok()??.parse::<u64>().ok()
        };
        let newest_first = first_position().await.unwrap();
        assert!(newest_first > count - 100, "the newest page starts at {newest_first}");
        by_id(c, "page-earlier").await.click().await.unwrap();
        eventually(Duration::from_secs(5), "the earlier page", || async {
            (first_position().await? == newest_first - 50).then_some(())
        })
        .await;

        // Live on a big log too: back on the newest page, an append shows within a second.
        c.find(Locator::LinkText("Timeline")).await.unwrap().click().await.unwrap();
        wait_text(c, "#live-state", "live").await;
        let before = c.find_all(Locator::Css("#events tbody tr")).await.unwrap().len();
        bind_over_http(&base, &admin, "late").await;
        eventually(Duration::from_secs(1), "the new event in the open timeline", || async {
            let n = c.find_all(Locator::Css("#events tbody tr")).await.ok()?.len();
            (n > before).then_some(())
        })
        .await;
        b.close().await;
    });
}
