//! Egress tests: pure checks (allow-list, guard classes, plans, retry maths) and real HTTP on loopback
//! against a scripted axum server. No test sends traffic anywhere but 127.0.0.0/8: hosts that "resolve"
//! elsewhere come from a fake resolver and are refused before any connection.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::Router;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use url::Url;

use super::*;

// ----- scripted loopback server -------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Scripted {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay_ms: u64,
}

fn reply(status: u16) -> Scripted {
    Scripted { status, headers: Vec::new(), body: Vec::new(), delay_ms: 0 }
}

impl Scripted {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Scripted {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Scripted {
        self.body = body.into();
        self
    }

    fn delay(mut self, ms: u64) -> Scripted {
        self.delay_ms = ms;
        self
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

#[derive(Default)]
struct ServerState {
    script: Mutex<VecDeque<Scripted>>,
    seen: Mutex<Vec<Seen>>,
}

struct TestServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
}

impl TestServer {
    /// Answers requests with `script` in order, then with `200 done`.
    async fn start(script: Vec<Scripted>) -> TestServer {
        TestServer::start_on("127.0.0.1", script).await
    }

    async fn start_on(ip: &str, script: Vec<Scripted>) -> TestServer {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState { script: Mutex::new(script.into()), seen: Mutex::default() });
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestServer { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn rule(&self) -> AllowRule {
        AllowRule::new(Scheme::Http, self.addr.ip().to_string(), Some(self.addr.port()))
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn handle(State(state): State<Arc<ServerState>>, request: Request) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec();
    let path = parts.uri.path_and_query().map(|pq| pq.to_string()).unwrap_or_default();
    state.seen.lock().unwrap().push(Seen { method: parts.method.to_string(), path, headers: parts.headers, body });
    let next = state.script.lock().unwrap().pop_front().unwrap_or_else(|| reply(200).body("done"));
    if next.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(next.delay_ms)).await;
    }
    let mut response = axum::http::Response::builder().status(next.status);
    for (name, value) in next.headers {
        response = response.header(name, value);
    }
    response.body(Body::from(next.body)).unwrap()
}

/// A raw HTTP/1.1 server that answers one request with a chunked body and no Content-Length.
fn chunked_server(chunks: usize, chunk_len: usize) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let mut head = [0u8; 4096];
        let _ = stream.read(&mut head);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        let chunk = vec![b'x'; chunk_len];
        for _ in 0..chunks {
            let _ = stream.write_all(format!("{chunk_len:x}\r\n").as_bytes());
            let _ = stream.write_all(&chunk);
            let _ = stream.write_all(b"\r\n");
        }
        let _ = stream.write_all(b"0\r\n\r\n");
    });
    addr
}

// ----- helpers ------------------------------------------------------------------------------------------

struct Bearer(&'static str);

impl AttachAuth for Bearer {
    fn attach(&self, request: &mut reqwest::Request) -> Result<(), EgressError> {
        let value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| EgressError::AuthFailed { reason: "the token is not a valid header value".into() })?;
        request.headers_mut().insert(AUTHORIZATION, value);
        Ok(())
    }
}

/// Tries to send the request somewhere else: must be refused.
struct Hijack(u16);

impl AttachAuth for Hijack {
    fn attach(&self, request: &mut reqwest::Request) -> Result<(), EgressError> {
        let _ = request.url_mut().set_port(Some(self.0));
        Ok(())
    }
}

struct FailingAuth;

impl AttachAuth for FailingAuth {
    fn attach(&self, _request: &mut reqwest::Request) -> Result<(), EgressError> {
        Err(EgressError::AuthFailed { reason: "secret `stripe` is revoked".into() })
    }
}

struct FakeResolver(Vec<(&'static str, Vec<IpAddr>)>);

impl HostResolver for FakeResolver {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        let found = self.0.iter().find(|(name, _)| *name == host).map(|(_, ips)| ips.clone());
        Box::pin(async move {
            match found {
                Some(ips) => Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect()),
                None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")),
            }
        })
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn allow(rules: Vec<AllowRule>) -> AllowList {
    AllowList::new(rules).unwrap()
}

fn request(method: Method, url: &str) -> EgressRequest {
    EgressRequest {
        method,
        url: url.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
        timeout_ms: Some(5_000),
        idempotency_key: None,
    }
}

fn build_plan(request: EgressRequest, allow: &AllowList) -> EgressPlan {
    EgressPlan::build(request, allow, &PlanLimits::default()).unwrap()
}

fn executor() -> Executor {
    Executor::new(ExecutorConfig { max_response_bytes: 1024, ..ExecutorConfig::default() }).unwrap()
}

fn executor_with(resolver: FakeResolver) -> Executor {
    Executor::with_resolver(
        ExecutorConfig { max_response_bytes: 1024, ..ExecutorConfig::default() },
        Arc::new(resolver),
    )
    .unwrap()
}

/// Deterministic policy: backoff 100, 200, 300 (capped), retries 429/500/503, Stripe's hint header.
fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff_ms: 100,
        max_backoff_ms: 300,
        multiplier: 2.0,
        jitter: Jitter::None,
        requested_attempts: None,
        retry_on_status: vec![StatusPattern::Code(429), StatusPattern::Code(500), StatusPattern::Code(503)],
        retry_on_network_error: true,
        honor_retry_after: true,
        max_retry_after_ms: 10_000,
        retry_hint_header: Some("Stripe-Should-Retry".into()),
    }
}

fn ms(values: &[u64]) -> Vec<Duration> {
    values.iter().map(|value| Duration::from_millis(*value)).collect()
}

fn url(text: &str) -> Url {
    Url::parse(text).unwrap()
}

// ----- allow-list ---------------------------------------------------------------------------------------

#[test]
fn allow_list_matches_exact_wildcard_and_ports() {
    let list = allow(vec![
        AllowRule::new(Scheme::Https, "api.stripe.com", None),
        AllowRule::new(Scheme::Https, "*.example.com", Some(8443)),
        AllowRule::new(Scheme::Http, "127.0.0.1", Some(9000)),
        AllowRule::new(Scheme::Https, "[::1]", None),
    ]);
    list.check(&url("https://api.stripe.com/v1/charges")).unwrap();
    list.check(&url("https://API.Stripe.com:443/v1")).unwrap();
    list.check(&url("https://api.stripe.com./v1")).unwrap();
    list.check(&url("https://a.example.com:8443/")).unwrap();
    list.check(&url("https://a.b.example.com:8443/")).unwrap();
    list.check(&url("http://127.0.0.1:9000/")).unwrap();
    list.check(&url("https://[::1]/")).unwrap();

    for refused in [
        "http://api.stripe.com/",          // scheme differs
        "https://api.stripe.com:8443/",    // port differs from the default
        "https://evil-api.stripe.com/",    // not exact
        "https://api.stripe.com.evil.io/", // suffix attack
        "https://example.com:8443/",       // the wildcard covers subdomains only
        "https://a.example.com/",          // wildcard rule names port 8443
        "https://badexample.com:8443/",    // not a subdomain
        "http://127.0.0.1:9001/",
        "http://127.1:9000/", // the same address spelled differently is still 127.0.0.1: allowed below
    ] {
        let result = list.check(&url(refused));
        if refused.starts_with("http://127.1:") {
            assert!(result.is_ok(), "{refused} normalises to 127.0.0.1");
        } else {
            assert!(matches!(result, Err(EgressError::HostNotAllowed { .. })), "{refused}: {result:?}");
        }
    }
}

#[test]
fn allow_list_refuses_userinfo_other_schemes_and_unlisted_ips() {
    let list = allow(vec![AllowRule::new(Scheme::Https, "api.stripe.com", None)]);
    let error = list.check(&url("https://user:hunter2@api.stripe.com/")).unwrap_err();
    assert_eq!(error, EgressError::UserinfoNotAllowed);
    assert!(!error.to_string().contains("hunter2"));
    assert_eq!(list.check(&url("https://token@api.stripe.com/")), Err(EgressError::UserinfoNotAllowed));
    assert!(matches!(
        list.check(&url("ftp://api.stripe.com/")),
        Err(EgressError::SchemeNotAllowed { scheme }) if scheme == "ftp"
    ));
    assert!(matches!(list.check(&url("file:///etc/passwd")), Err(EgressError::SchemeNotAllowed { .. })));
    for literal in ["http://10.0.0.1/", "http://169.254.169.254/latest/meta-data", "http://[::ffff:10.0.0.1]/"] {
        assert!(matches!(list.check(&url(literal)), Err(EgressError::HostNotAllowed { .. })), "{literal}");
    }
}

#[test]
fn private_ip_is_allowed_only_when_named_exactly() {
    let refused = allow(vec![AllowRule::new(Scheme::Http, "*.internal.example", None)]);
    let error = refused.check(&url("http://10.0.0.1/")).unwrap_err();
    assert_eq!(error.to_string(), "no allow-list rule matches http://10.0.0.1:80");
    let named = allow(vec![AllowRule::new(Scheme::Http, "10.0.0.1", None)]);
    named.check(&url("http://10.0.0.1/")).unwrap();
    assert!(named.check(&url("http://10.0.0.2/")).is_err());
}

#[test]
fn allow_rules_are_validated() {
    for (host, expected) in [
        ("", "the host is empty"),
        ("*.com", "at least two labels"),
        ("*.*.example.com", "leading `*.`"),
        ("api.*.example.com", "leading `*.`"),
        ("*.10.0.0.1", "cannot cover IP addresses"),
        ("exa mple.com", "not a valid host name"),
    ] {
        let error = AllowList::new(vec![
            AllowRule::new(Scheme::Https, "ok.example.com", None),
            AllowRule::new(Scheme::Https, host, None),
        ])
        .unwrap_err();
        assert!(
            matches!(&error, EgressError::InvalidAllowRule { index: 1, reason } if reason.contains(expected)),
            "{host}: {error}"
        );
    }
    let list = allow(vec![AllowRule::new(Scheme::Https, "Bücher.Example", None)]);
    list.check(&url("https://xn--bcher-kva.example/")).unwrap();
    assert_eq!(list.rules()[0].host, "Bücher.Example");
}

#[test]
fn redacted_urls_drop_userinfo_query_and_fragment() {
    assert_eq!(
        redact_url(&url("https://u:p@api.example.com:8443/v1/x?api_key=sk_live#frag")),
        "https://api.example.com:8443/v1/x"
    );
}

// ----- resolution guard classes -------------------------------------------------------------------------

#[test]
fn special_purpose_addresses_are_classified() {
    for (text, class) in [
        ("0.0.0.0", AddressClass::Unspecified),
        ("127.0.0.1", AddressClass::Loopback),
        ("127.8.9.10", AddressClass::Loopback),
        ("10.0.0.1", AddressClass::Private),
        ("172.16.0.1", AddressClass::Private),
        ("172.31.255.255", AddressClass::Private),
        ("192.168.1.1", AddressClass::Private),
        ("169.254.169.254", AddressClass::CloudMetadata),
        ("169.254.1.1", AddressClass::LinkLocal),
        ("100.64.0.1", AddressClass::SharedCgnat),
        ("192.0.2.1", AddressClass::Documentation),
        ("224.0.0.1", AddressClass::Multicast),
        ("255.255.255.255", AddressClass::Reserved),
        ("::", AddressClass::Unspecified),
        ("::1", AddressClass::Loopback),
        ("::ffff:10.0.0.1", AddressClass::Private),
        ("::ffff:169.254.169.254", AddressClass::CloudMetadata),
        ("::10.0.0.1", AddressClass::Private),
        ("::8.8.8.8", AddressClass::Reserved),
        ("64:ff9b::7f00:1", AddressClass::Loopback),
        ("fd00:ec2::254", AddressClass::CloudMetadata),
        ("fc00::1", AddressClass::Private),
        ("fe80::1", AddressClass::LinkLocal),
        ("ff02::1", AddressClass::Multicast),
        ("2001:db8::1", AddressClass::Documentation),
    ] {
        assert_eq!(address_class(ip(text)), Some(class), "{text}");
    }
    for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "93.184.215.14", "2606:4700::1111", "64:ff9b::808:808"] {
        assert_eq!(address_class(ip(public)), None, "{public}");
    }
}

// ----- plans --------------------------------------------------------------------------------------------

#[test]
fn plan_build_refuses_out_of_list_hosts_and_bad_urls() {
    let list = allow(vec![AllowRule::new(Scheme::Https, "api.stripe.com", None)]);
    let limits = PlanLimits::default();
    let error = EgressPlan::build(request(Method::Get, "https://evil.example/x?secret=1"), &list, &limits).unwrap_err();
    assert_eq!(error, EgressError::HostNotAllowed { scheme: "https".into(), host: "evil.example".into(), port: 443 });
    assert!(!error.to_string().contains("secret"));
    assert!(matches!(
        EgressPlan::build(request(Method::Get, "not a url"), &list, &limits),
        Err(EgressError::InvalidUrl { .. })
    ));
    assert_eq!(
        EgressPlan::build(request(Method::Get, "https://k:sk_live@api.stripe.com/"), &list, &limits),
        Err(EgressError::UserinfoNotAllowed)
    );
}

#[test]
fn plan_build_validates_headers_without_echoing_values() {
    let list = allow(vec![AllowRule::new(Scheme::Https, "api.stripe.com", None)]);
    let limits = PlanLimits::default();
    let with_header = |name: &str, value: &str| {
        let mut req = request(Method::Post, "https://api.stripe.com/v1/charges");
        req.headers.push((name.to_string(), value.to_string()));
        EgressPlan::build(req, &list, &limits)
    };
    for reserved in ["Host", "authorization", "Proxy-Authorization", "Content-Length", "Transfer-Encoding"] {
        let error = with_header(reserved, "x").unwrap_err();
        assert!(matches!(&error, EgressError::InvalidHeader { reason, .. } if reason.contains("reserved")), "{error}");
    }
    let error = with_header("x-api-key", "sk_live_secret\r\nInjected: 1").unwrap_err();
    assert!(matches!(&error, EgressError::InvalidHeader { name, .. } if name == "x-api-key"));
    assert!(!error.to_string().contains("sk_live_secret"));
    assert!(matches!(with_header("bad name", "x"), Err(EgressError::InvalidHeader { .. })));
    let ok = with_header("Content-Type", "application/x-www-form-urlencoded").unwrap();
    assert_eq!(ok.headers()[0].0, "content-type");
}

#[test]
fn plan_build_applies_limits_and_checks_the_idempotency_key() {
    let list = allow(vec![AllowRule::new(Scheme::Https, "api.stripe.com", None)]);
    let limits =
        PlanLimits { max_body_bytes: 8, max_header_bytes: 64, default_timeout_ms: 1_000, max_timeout_ms: 2_000 };
    let base = || request(Method::Post, "https://api.stripe.com/v1/charges");

    let mut big = base();
    big.body = vec![0; 9];
    assert_eq!(EgressPlan::build(big, &list, &limits), Err(EgressError::BodyTooLarge { size: 9, limit: 8 }));

    let mut many = base();
    many.headers = vec![("x-a".into(), "a".repeat(70))];
    assert!(matches!(EgressPlan::build(many, &list, &limits), Err(EgressError::HeadersTooLarge { limit: 64, .. })));

    let mut zero = base();
    zero.timeout_ms = Some(0);
    assert_eq!(EgressPlan::build(zero, &list, &limits), Err(EgressError::InvalidTimeout));
    let mut long = base();
    long.timeout_ms = Some(60_000);
    assert_eq!(EgressPlan::build(long, &list, &limits).unwrap().timeout_ms(), 2_000);
    let mut default = base();
    default.timeout_ms = None;
    assert_eq!(EgressPlan::build(default, &list, &limits).unwrap().timeout_ms(), 1_000);

    let mut duplicate = base();
    duplicate.headers = vec![("Idempotency-Key".into(), "a".into())];
    duplicate.idempotency_key = Some(("idempotency-key".into(), "b".into()));
    assert!(matches!(EgressPlan::build(duplicate, &list, &limits), Err(EgressError::InvalidHeader { .. })));
    let mut empty = base();
    empty.idempotency_key = Some(("Idempotency-Key".into(), String::new()));
    assert!(matches!(EgressPlan::build(empty, &list, &limits), Err(EgressError::InvalidHeader { .. })));

    let without_key = EgressPlan::build(base(), &list, &limits).unwrap();
    assert!(!without_key.is_retry_safe());
    let mut keyed = base();
    keyed.idempotency_key = Some(("Idempotency-Key".into(), "order-1".into()));
    assert!(EgressPlan::build(keyed, &list, &limits).unwrap().is_retry_safe());
    let mut put = base();
    put.method = Method::Put;
    assert!(EgressPlan::build(put, &list, &limits).unwrap().is_retry_safe());
}

// ----- retry policy maths -------------------------------------------------------------------------------

#[test]
fn retry_policies_are_validated() {
    let invalid = |policy: RetryPolicy| matches!(policy.validate(), Err(EgressError::InvalidRetryPolicy { .. }));
    assert!(invalid(RetryPolicy { max_attempts: 0, ..policy() }));
    assert!(invalid(RetryPolicy { max_attempts: 21, ..policy() }));
    assert!(invalid(RetryPolicy { multiplier: 0.5, ..policy() }));
    assert!(invalid(RetryPolicy { multiplier: f64::NAN, ..policy() }));
    assert!(invalid(RetryPolicy { initial_backoff_ms: 500, max_backoff_ms: 100, ..policy() }));
    assert!(invalid(RetryPolicy { retry_hint_header: Some("bad header".into()), ..policy() }));
    policy().validate().unwrap();
    RetryPolicy::default().validate().unwrap();
}

#[test]
fn backoff_grows_and_is_capped_and_full_jitter_stays_below_it() {
    let exact = policy();
    assert_eq!((0..5).map(|retry| exact.backoff_ms(retry)).collect::<Vec<_>>(), vec![100, 200, 300, 300, 300]);
    assert_eq!(exact.backoff_ceiling_ms(u32::MAX), 300);
    let jittered = RetryPolicy { jitter: Jitter::Full, ..policy() };
    for retry in 0..50 {
        assert!(jittered.backoff_ms(retry % 4) <= jittered.backoff_ceiling_ms(retry % 4));
    }
}

#[test]
fn retry_after_parses_seconds_and_http_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(parse_retry_after("1", now), Some(1_000));
    assert_eq!(parse_retry_after(" 120 ", now), Some(120_000));
    assert_eq!(parse_retry_after("99999999999999999999999", now), Some(u64::MAX));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
    assert_eq!(parse_retry_after(&later, now), Some(7_000));
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
    assert_eq!(parse_retry_after(&earlier, now), Some(0));
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("-1", now), None);
    assert_eq!(parse_retry_after("", now), None);
}

#[test]
fn executor_config_is_validated() {
    let bad = |config: ExecutorConfig| matches!(Executor::new(config), Err(EgressError::InvalidConfig { .. }));
    assert!(bad(ExecutorConfig { max_response_bytes: 0, ..ExecutorConfig::default() }));
    assert!(bad(ExecutorConfig { total_timeout: Duration::ZERO, ..ExecutorConfig::default() }));
    assert!(bad(ExecutorConfig { user_agent: "bad\nagent".into(), ..ExecutorConfig::default() }));
}

#[test]
fn recording_sleeper_records_without_waiting() {
    let sleeper = RecordingSleeper::default();
    let started = Instant::now();
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
        sleeper.sleep(Duration::from_secs(3600)).await;
        sleeper.sleep(Duration::from_millis(5)).await;
    });
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(sleeper.slept(), vec![Duration::from_secs(3600), Duration::from_millis(5)]);
}

// ----- execution over real HTTP -------------------------------------------------------------------------

#[tokio::test]
async fn allowed_request_succeeds_with_auth_attached_by_attach_auth() {
    let server = TestServer::start(vec![reply(200).header("request-id", "req_1").body("charged")]).await;
    let list = allow(vec![server.rule()]);
    let mut req = request(Method::Post, &server.url("/v1/charges?expand=x"));
    req.headers = vec![("Content-Type".into(), "application/x-www-form-urlencoded".into())];
    req.body = b"amount=100".to_vec();
    let plan = build_plan(req, &list);
    let outcome =
        executor().execute(&plan, &list, &Bearer("sk_test_1"), &policy(), &RecordingSleeper::default()).await.unwrap();

    assert_eq!(outcome.stop, StopReason::Completed);
    let response = outcome.final_response.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"charged");
    assert!(response.headers.contains(&("request-id".into(), "req_1".into())));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/charges?expand=x");
    assert_eq!(seen[0].headers[AUTHORIZATION.as_str()], "Bearer sk_test_1");
    assert_eq!(seen[0].headers["content-type"], "application/x-www-form-urlencoded");
    assert!(seen[0].headers["user-agent"].to_str().unwrap().starts_with("vadyl/"));
    assert_eq!(seen[0].body, b"amount=100");
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(outcome.attempts[0].waited_ms_before, 0);
}

#[tokio::test]
async fn host_not_allowed_is_refused_before_any_connection() {
    let server = TestServer::start(vec![]).await;
    let planned_with = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &planned_with);
    // The publication's allow-list at execution time no longer lists this port.
    let now = allow(vec![AllowRule::new(Scheme::Http, "127.0.0.1", Some(server.addr.port().wrapping_add(1)))]);
    let error =
        executor().execute(&plan, &now, &Bearer("t"), &policy(), &RecordingSleeper::default()).await.unwrap_err();
    assert!(matches!(error, EgressError::HostNotAllowed { port, .. } if port == server.addr.port()));
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn failing_or_hijacking_auth_stops_before_sending() {
    let server = TestServer::start(vec![]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let sleeper = RecordingSleeper::default();
    let error = executor().execute(&plan, &list, &FailingAuth, &policy(), &sleeper).await.unwrap_err();
    assert!(matches!(error, EgressError::AuthFailed { .. }));
    let error = executor().execute(&plan, &list, &Hijack(1), &policy(), &sleeper).await.unwrap_err();
    assert_eq!(error, EgressError::AuthChangedDestination);
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn same_origin_redirect_is_followed_with_auth() {
    let server = TestServer::start(vec![reply(302).header("location", "/v1/final"), reply(200).body("final")]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/v1/start")), &list);
    let outcome =
        executor().execute(&plan, &list, &Bearer("tok"), &policy(), &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.final_response.unwrap().body, b"final");
    assert_eq!(outcome.attempts[0].redirects, 1);
    let seen = server.seen();
    assert_eq!(seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["/v1/start", "/v1/final"]);
    assert!(seen.iter().all(|s| s.headers[AUTHORIZATION.as_str()] == "Bearer tok"));
}

#[tokio::test]
async fn cross_origin_redirect_gets_no_credentials() {
    let target = TestServer::start(vec![reply(200).body("landed")]).await;
    let origin = TestServer::start(vec![reply(307).header("location", target.url("/landing"))]).await;
    let list = allow(vec![origin.rule(), target.rule()]);
    let mut req = request(Method::Get, &origin.url("/start"));
    // A plan cannot carry a cookie at all (it is a reserved header); the executor's cross-origin
    // cookie stripping stays as a second line.
    req.headers = vec![("Cookie".into(), "session=abc".into()), ("x-trace".into(), "t1".into())];
    assert!(matches!(
        EgressPlan::build(req.clone(), &list, &PlanLimits::default()),
        Err(EgressError::InvalidHeader { name, .. }) if name == "cookie"
    ));
    req.headers.remove(0);
    let plan = build_plan(req, &list);
    let outcome =
        executor().execute(&plan, &list, &Bearer("tok"), &policy(), &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.final_response.unwrap().body, b"landed");
    assert_eq!(origin.seen()[0].headers[AUTHORIZATION.as_str()], "Bearer tok");
    let landed = &target.seen()[0];
    assert!(!landed.headers.contains_key(AUTHORIZATION.as_str()));
    assert!(!landed.headers.contains_key("cookie"));
    assert_eq!(landed.headers["x-trace"], "t1");
}

#[tokio::test]
async fn redirect_to_a_host_not_allowed_is_refused() {
    let server =
        TestServer::start(vec![reply(302).header("location", "http://evil.example/steal?token=sk_live_1")]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let error =
        executor().execute(&plan, &list, &Bearer("tok"), &policy(), &RecordingSleeper::default()).await.unwrap_err();
    match &error {
        EgressError::RedirectNotAllowed { location, cause } => {
            assert_eq!(location, "http://evil.example/steal");
            assert!(matches!(**cause, EgressError::HostNotAllowed { .. }));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!error.to_string().contains("sk_live_1"));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn redirect_to_an_allowed_name_that_resolves_privately_is_refused() {
    let server = TestServer::start(vec![reply(301).header("location", "http://api.example.com/x")]).await;
    let list = allow(vec![server.rule(), AllowRule::new(Scheme::Http, "api.example.com", None)]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let executor = executor_with(FakeResolver(vec![("api.example.com", vec![ip("10.0.0.1")])]));
    let error = executor.execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap_err();
    assert!(matches!(
        &error,
        EgressError::RedirectNotAllowed { cause, .. }
            if matches!(**cause, EgressError::AddressNotAllowed { class: AddressClass::Private, .. })
    ));
}

#[tokio::test]
async fn redirect_loops_stop_after_the_limit() {
    let server = TestServer::start(vec![reply(302).header("location", "/again"); 10]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/again")), &list);
    let error = executor().execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap_err();
    assert_eq!(error, EgressError::TooManyRedirects { max: MAX_REDIRECTS });
    assert_eq!(server.seen().len(), MAX_REDIRECTS + 1);
}

#[tokio::test]
async fn see_other_turns_a_post_into_a_get_without_body() {
    let server = TestServer::start(vec![reply(303).header("location", "/result"), reply(200)]).await;
    let list = allow(vec![server.rule()]);
    let mut req = request(Method::Post, &server.url("/submit"));
    req.headers = vec![("content-type".into(), "application/json".into())];
    req.body = b"{}".to_vec();
    let plan = build_plan(req, &list);
    executor().execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap();
    let seen = server.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].body.as_slice()), ("POST", b"{}".as_slice()));
    assert_eq!((seen[1].method.as_str(), seen[1].body.as_slice()), ("GET", b"".as_slice()));
    assert!(!seen[1].headers.contains_key("content-type"));
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_hint_above_the_cap_stops() {
    let server = TestServer::start(vec![reply(429).header("retry-after", "1"), reply(200).body("ok")]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let sleeper = RecordingSleeper::default();
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &sleeper).await.unwrap();
    assert_eq!(sleeper.slept(), ms(&[1_000]));
    assert_eq!(outcome.attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [Some(429), Some(200)]);
    assert_eq!(outcome.attempts[1].waited_ms_before, 1_000);
    assert_eq!(outcome.final_response.unwrap().status, 200);

    let server = TestServer::start(vec![reply(429).header("retry-after", "120").body("slow down")]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let sleeper = RecordingSleeper::default();
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &sleeper).await.unwrap();
    assert_eq!(outcome.stop, StopReason::RetryAfterTooLong { hint_ms: 120_000, cap_ms: 10_000 });
    assert!(outcome.stop.to_string().contains("120000 ms"));
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(outcome.final_response.unwrap().body, b"slow down");
    assert!(sleeper.slept().is_empty());
}

#[tokio::test]
async fn retry_after_as_http_date_is_honoured() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let server = TestServer::start(vec![reply(503).header("retry-after", date)]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let sleeper = RecordingSleeper::default();
    executor().execute(&plan, &list, &NoAuth, &policy(), &sleeper).await.unwrap();
    let waited = sleeper.slept()[0];
    assert!(waited > Duration::from_secs(1) && waited <= Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn server_errors_are_retried_with_capped_backoff() {
    let server = TestServer::start(vec![reply(503); 5]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let sleeper = RecordingSleeper::default();
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &sleeper).await.unwrap();
    assert_eq!(outcome.stop, StopReason::RetriesExhausted);
    assert_eq!(outcome.attempts.len(), 4);
    assert_eq!(sleeper.slept(), ms(&[100, 200, 300]));
    assert_eq!(outcome.final_response.unwrap().status, 503);
    assert_eq!(server.seen().len(), 4);

    let server = TestServer::start(vec![reply(503); 5]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let sleeper = RecordingSleeper::default();
    let jittered = RetryPolicy { jitter: Jitter::Full, ..policy() };
    executor().execute(&plan, &list, &NoAuth, &jittered, &sleeper).await.unwrap();
    let slept = sleeper.slept();
    assert_eq!(slept.len(), 3);
    for (retry, wait) in slept.iter().enumerate() {
        assert!(*wait <= Duration::from_millis(jittered.backoff_ceiling_ms(retry as u32)));
        assert!(*wait <= Duration::from_millis(jittered.max_backoff_ms));
    }
}

#[tokio::test]
async fn statuses_outside_the_policy_are_final() {
    let server = TestServer::start(vec![reply(404).body("no such charge")]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap();
    assert_eq!((outcome.stop, outcome.attempts.len()), (StopReason::Completed, 1));
    assert_eq!(outcome.final_response.unwrap().status, 404);
}

#[tokio::test]
async fn post_without_idempotency_key_is_sent_once_and_with_a_key_is_retried_with_the_same_key() {
    let server = TestServer::start(vec![reply(503), reply(200)]).await;
    let list = allow(vec![server.rule()]);
    let plan_once = build_plan(request(Method::Post, &server.url("/v1/charges")), &list);
    let sleeper = RecordingSleeper::default();
    let outcome = executor().execute(&plan_once, &list, &NoAuth, &policy(), &sleeper).await.unwrap();
    assert_eq!(outcome.stop, StopReason::NotRetrySafe);
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(outcome.final_response.unwrap().status, 503);
    assert_eq!(server.seen().len(), 1);
    assert!(sleeper.slept().is_empty());

    let server = TestServer::start(vec![reply(503), reply(500), reply(200)]).await;
    let list = allow(vec![server.rule()]);
    let mut keyed = request(Method::Post, &server.url("/v1/charges"));
    keyed.idempotency_key = Some(("Idempotency-Key".into(), "order-42".into()));
    keyed.body = b"amount=1".to_vec();
    let plan_keyed = build_plan(keyed, &list);
    let outcome = executor().execute(&plan_keyed, &list, &NoAuth, &policy(), &sleeper).await.unwrap();
    assert_eq!(outcome.attempts.len(), 3);
    assert_eq!(outcome.final_response.unwrap().status, 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.headers["idempotency-key"] == "order-42" && s.body == b"amount=1"));
}

#[tokio::test]
async fn retry_hint_header_overrides_the_status() {
    let server = TestServer::start(vec![reply(503).header("stripe-should-retry", "false"), reply(200)]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.stop, StopReason::RetryHintRefused);
    assert_eq!(outcome.attempts.len(), 1);

    let server = TestServer::start(vec![reply(409).header("Stripe-Should-Retry", "TRUE"), reply(200)]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [Some(409), Some(200)]);
}

#[tokio::test]
async fn network_errors_are_retried_only_when_enabled() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let list = allow(vec![AllowRule::new(Scheme::Http, "127.0.0.1", Some(closed.port()))]);
    let plan = build_plan(request(Method::Get, &format!("http://{closed}/?api_key=sk_live_9")), &list);

    let sleeper = RecordingSleeper::default();
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &sleeper).await.unwrap();
    assert_eq!(outcome.stop, StopReason::RetriesExhausted);
    assert_eq!(outcome.attempts.len(), 4);
    assert_eq!(sleeper.slept(), ms(&[100, 200, 300]));
    assert!(outcome.final_response.is_none());
    let error = outcome.last_error().unwrap();
    assert_eq!(error.kind, NetworkErrorKind::Connect);
    assert!(!error.message.contains("sk_live_9"), "{}", error.message);

    let no_network_retry = RetryPolicy { retry_on_network_error: false, ..policy() };
    let outcome = executor().execute(&plan, &list, &NoAuth, &no_network_retry, &sleeper).await.unwrap();
    assert_eq!(outcome.stop, StopReason::NetworkErrorNotRetried);
    assert_eq!(outcome.attempts.len(), 1);
}

#[tokio::test]
async fn slow_responses_time_out() {
    let server = TestServer::start(vec![reply(200).delay(3_000)]).await;
    let list = allow(vec![server.rule()]);
    let mut req = request(Method::Get, &server.url("/"));
    req.timeout_ms = Some(200);
    let plan = build_plan(req, &list);
    let never = RetryPolicy::never();
    let outcome = executor().execute(&plan, &list, &NoAuth, &never, &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.last_error().unwrap().kind, NetworkErrorKind::Timeout);
    assert!(outcome.attempts[0].elapsed_ms < 2_000);
}

#[tokio::test]
async fn oversized_bodies_are_refused_and_not_retried() {
    let server = TestServer::start(vec![reply(200).body(vec![b'a'; 1025]), reply(200).body(vec![b'b'; 1024])]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.stop, StopReason::ResponseTooLarge);
    assert_eq!(outcome.attempts.len(), 1);
    assert!(outcome.final_response.is_none());
    assert_eq!(outcome.last_error().unwrap().kind, NetworkErrorKind::ResponseTooLarge);
    // Exactly at the cap is fine.
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.final_response.unwrap().body.len(), 1024);

    // No Content-Length: reading stops once the streamed body passes the cap.
    let addr = chunked_server(8, 512);
    let list = allow(vec![AllowRule::new(Scheme::Http, "127.0.0.1", Some(addr.port()))]);
    let plan = build_plan(request(Method::Get, &format!("http://{addr}/")), &list);
    let outcome = executor().execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.stop, StopReason::ResponseTooLarge);
}

#[tokio::test]
async fn guard_refuses_names_resolving_to_special_addresses() {
    let cases = [
        ("api.example.com", vec![ip("127.0.0.1")], AddressClass::Loopback),
        ("api.example.com", vec![ip("93.184.215.14"), ip("169.254.169.254")], AddressClass::CloudMetadata),
        ("api.example.com", vec![ip("::ffff:192.168.0.10")], AddressClass::Private),
        ("localhost", vec![ip("10.0.0.1")], AddressClass::Private),
    ];
    for (host, ips, class) in cases {
        let list =
            allow(vec![AllowRule::new(Scheme::Http, host, None), AllowRule::new(Scheme::Http, "*.example.com", None)]);
        let plan = build_plan(request(Method::Get, &format!("http://{host}/")), &list);
        let executor = executor_with(FakeResolver(vec![(host, ips)]));
        let error = executor.execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap_err();
        assert!(
            matches!(&error, EgressError::AddressNotAllowed { class: found, .. } if *found == class),
            "{host}: {error}"
        );
    }
}

#[tokio::test]
async fn dns_failures_are_network_errors() {
    let list = allow(vec![AllowRule::new(Scheme::Http, "nowhere.example", None)]);
    let plan = build_plan(request(Method::Get, "http://nowhere.example/"), &list);
    let executor = executor_with(FakeResolver(vec![]));
    let never = RetryPolicy::never();
    let outcome = executor.execute(&plan, &list, &NoAuth, &never, &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.last_error().unwrap().kind, NetworkErrorKind::Dns);
}

#[tokio::test]
async fn the_connection_goes_to_the_checked_address_not_a_second_resolution() {
    // The server listens on 127.0.0.2 only; the system would resolve `localhost` to 127.0.0.1 or ::1.
    let server = TestServer::start_on("127.0.0.2", vec![reply(200).body("pinned")]).await;
    let list = allow(vec![AllowRule::new(Scheme::Http, "localhost", Some(server.addr.port()))]);
    let plan = build_plan(request(Method::Get, &format!("http://localhost:{}/", server.addr.port())), &list);
    let executor = executor_with(FakeResolver(vec![("localhost", vec![ip("127.0.0.2")])]));
    let outcome = executor.execute(&plan, &list, &NoAuth, &policy(), &RecordingSleeper::default()).await.unwrap();
    assert_eq!(outcome.final_response.unwrap().body, b"pinned");
    assert_eq!(server.seen()[0].headers["host"], format!("localhost:{}", server.addr.port()));
}

#[tokio::test]
async fn invalid_retry_policy_is_refused_before_sending() {
    let server = TestServer::start(vec![]).await;
    let list = allow(vec![server.rule()]);
    let plan = build_plan(request(Method::Get, &server.url("/")), &list);
    let bad = RetryPolicy { max_attempts: 0, ..policy() };
    let error = executor().execute(&plan, &list, &NoAuth, &bad, &RecordingSleeper::default()).await.unwrap_err();
    assert!(matches!(error, EgressError::InvalidRetryPolicy { .. }));
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn https_is_spoken_tls_failures_are_connect_errors() {
    // A plain-HTTP server behind an https rule: the TLS handshake fails, and that is a connect error.
    let server = TestServer::start(vec![]).await;
    let list = allow(vec![AllowRule::new(Scheme::Https, "127.0.0.1", Some(server.addr.port()))]);
    let plan = build_plan(request(Method::Get, &format!("https://{}/", server.addr)), &list);
    let never = RetryPolicy::never();
    let outcome = executor().execute(&plan, &list, &NoAuth, &never, &RecordingSleeper::default()).await.unwrap();
    let error = outcome.last_error().unwrap();
    assert_eq!(error.kind, NetworkErrorKind::Connect, "{}", error.message);
    assert!(server.seen().is_empty());
}

#[test]
fn methods_schemes_and_jitter_read_as_manifests_write_them() {
    let method = |text: &str| serde_json::from_value::<Method>(serde_json::json!(text));
    assert_eq!(method("POST").unwrap(), Method::Post);
    assert!(method("post").is_err());
    assert!(method("OPTIONS").is_err(), "a manifest cannot ask for OPTIONS");
    assert_eq!(serde_json::to_value(Method::Options).unwrap(), "OPTIONS");
    assert_eq!(Method::Patch.as_str(), "PATCH");
    assert_eq!(serde_json::from_value::<Scheme>(serde_json::json!("https")).unwrap(), Scheme::Https);
    assert_eq!(serde_json::to_value(Jitter::default()).unwrap(), "full");
    let parsed: RetryPolicy = serde_json::from_value(serde_json::json!({"maxAttempts": 2})).unwrap();
    assert_eq!(
        (parsed.retry_on_status.len(), parsed.retry_on_network_error, parsed.max_retry_after_ms),
        (0, false, 10_000)
    );
    assert!(RetryPolicy::default().retries_status(503) && !RetryPolicy::default().retries_status(404));
}
