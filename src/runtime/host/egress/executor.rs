//! The executor: sends a plan, one attempt at a time, following redirects by hand with every hop checked
//! against the allow-list and the resolution guard, attaching credentials on the plan's origin only, and
//! records every attempt in the [`EgressOutcome`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::allow::{AllowList, RuleHost};
use super::guard::{address_class, HostResolver, PinnedOnly, SystemResolver};
use super::plan::EgressPlan;
use super::retry::{parse_retry_after, RetryPolicy, Sleeper};
use super::{redact_url, truncate, EgressError};

/// Most redirect hops one attempt follows before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// Adds credentials to an outgoing request right before it is sent; called once per attempt, and only for
/// hops on the plan's origin. Implemented by the secrets service, so plaintext exists only inside the egress
/// boundary. It may add headers or query parameters; changing the origin, userinfo or `Host` is refused.
pub trait AttachAuth: Send + Sync {
    fn attach(&self, request: &mut reqwest::Request) -> Result<(), EgressError>;
}

/// Attaches nothing: for endpoints that need no credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

impl AttachAuth for NoAuth {
    fn attach(&self, _request: &mut reqwest::Request) -> Result<(), EgressError> {
        Ok(())
    }
}

/// Transport failure classes (WIT `network-error-kind`; TLS failures are reported as `Connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkErrorKind {
    Dns,
    Connect,
    Timeout,
    ResponseTooLarge,
    Other,
}

/// A transport failure; the message never holds a URL or header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkError {
    pub kind: NetworkErrorKind,
    pub message: String,
}

/// A complete HTTP response (WIT `egress-response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressResponse {
    pub status: u16,
    /// In the order received; values that are not UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One sending of the plan (a whole redirect chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    /// Bounded by the executor's `max_response_bytes`.
    pub body: Vec<u8>,
    pub error: Option<NetworkError>,
    /// Redirect hops followed.
    pub redirects: u32,
    pub elapsed_ms: u64,
    /// The wait before this attempt (0 for the first).
    pub waited_ms_before: u64,
}

/// Why the executor stopped sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The response is final: a success, or a status the policy does not retry.
    Completed,
    /// The policy wanted another attempt but `max_attempts` were used.
    RetriesExhausted,
    /// The provider asked to wait longer than the policy's cap; the last response is returned.
    RetryAfterTooLong { hint_ms: u64, cap_ms: u64 },
    /// A retry was warranted but the method is not idempotent and the plan has no idempotency key.
    NotRetrySafe,
    /// The retry hint header (e.g. `Stripe-Should-Retry: false`) said not to retry.
    RetryHintRefused,
    /// A network error, and the policy does not retry those.
    NetworkErrorNotRetried,
    /// The response body exceeded the cap; retrying would not help.
    ResponseTooLarge,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Completed => f.write_str("the response is final"),
            StopReason::RetriesExhausted => f.write_str("every allowed attempt was used"),
            StopReason::RetryAfterTooLong { hint_ms, cap_ms } => {
                write!(f, "the provider asked to wait {hint_ms} ms, longer than the {cap_ms} ms the policy allows")
            }
            StopReason::NotRetrySafe => {
                f.write_str("the method is not idempotent and the plan has no idempotency key, so it is sent once")
            }
            StopReason::RetryHintRefused => f.write_str("the provider's retry hint header said not to retry"),
            StopReason::NetworkErrorNotRetried => f.write_str("the policy does not retry network errors"),
            StopReason::ResponseTooLarge => f.write_str("the response body exceeded the host's limit"),
        }
    }
}

/// The result of executing a plan: every attempt, the final response if the last attempt got one, and why
/// sending stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressOutcome {
    pub attempts: Vec<Attempt>,
    pub final_response: Option<EgressResponse>,
    pub stop: StopReason,
}

impl EgressOutcome {
    /// The last attempt's transport failure, when it had no response.
    pub fn last_error(&self) -> Option<&NetworkError> {
        self.attempts.last().and_then(|attempt| attempt.error.as_ref())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Executor
// ---------------------------------------------------------------------------------------------------------

/// Host-wide limits for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    pub connect_timeout: Duration,
    /// Caps each attempt (resolution, redirects and body included) whatever the plan asks.
    pub total_timeout: Duration,
    pub max_response_bytes: usize,
    pub user_agent: String,
}

impl Default for ExecutorConfig {
    fn default() -> ExecutorConfig {
        ExecutorConfig {
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(60),
            max_response_bytes: 1 << 20,
            user_agent: concat!("vadyl/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Sends plans.
pub struct Executor {
    config: ExecutorConfig,
    user_agent: HeaderValue,
    resolver: Arc<dyn HostResolver>,
    /// Clients by the exact (host, checked addresses) they are pinned to. Reusing one keeps its
    /// connections alive across invocations without weakening the pinning: a client only ever
    /// reaches the addresses it was built for, and a changed resolution gets a new client.
    clients: Mutex<std::collections::HashMap<PinKey, reqwest::Client>>,
}

/// What a cached client is pinned to: the host name (if any) and its checked addresses.
type PinKey = (Option<String>, Vec<SocketAddr>);

/// Bound on cached pinned clients (the cache is cleared when it grows past this).
const MAX_CACHED_CLIENTS: usize = 256;

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Why one attempt ended without a response.
enum Failure {
    Policy(EgressError),
    Network(NetworkError),
}

impl From<EgressError> for Failure {
    fn from(error: EgressError) -> Failure {
        Failure::Policy(error)
    }
}

struct Received {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    redirects: u32,
}

impl Executor {
    /// An executor using the system resolver.
    pub fn new(config: ExecutorConfig) -> Result<Executor, EgressError> {
        Executor::with_resolver(config, Arc::new(SystemResolver))
    }

    /// An executor using `resolver` for the resolution guard (tests, or a hardened resolver).
    pub fn with_resolver(config: ExecutorConfig, resolver: Arc<dyn HostResolver>) -> Result<Executor, EgressError> {
        if config.connect_timeout.is_zero() || config.total_timeout.is_zero() {
            return Err(EgressError::InvalidConfig { reason: "timeouts must be above zero" });
        }
        if config.max_response_bytes == 0 {
            return Err(EgressError::InvalidConfig { reason: "max_response_bytes must be above zero" });
        }
        let user_agent = HeaderValue::from_str(&config.user_agent)
            .map_err(|_| EgressError::InvalidConfig { reason: "the user agent is not a valid header value" })?;
        Ok(Executor { config, user_agent, resolver, clients: Mutex::new(std::collections::HashMap::new()) })
    }

    /// Sends `plan`, following redirects and retrying as `retry` says. Policy refusals end with an error;
    /// transport failures are recorded per attempt in the outcome.
    pub async fn execute(
        &self,
        plan: &EgressPlan,
        allow: &AllowList,
        auth: &dyn AttachAuth,
        retry: &RetryPolicy,
        sleeper: &dyn Sleeper,
    ) -> Result<EgressOutcome, EgressError> {
        retry.validate()?;
        let timeout = Duration::from_millis(plan.timeout_ms()).min(self.config.total_timeout);
        let mut attempts = Vec::new();
        let mut waited_ms_before = 0u64;
        loop {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, self.attempt(plan, allow, auth)).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Network(NetworkError {
                    kind: NetworkErrorKind::Timeout,
                    message: format!("no complete response within {} ms", timeout.as_millis()),
                })),
            };
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let attempt_no = u32::try_from(attempts.len()).unwrap_or(u32::MAX) + 1;
            let exhausted = attempt_no >= retry.max_attempts;

            let (stop, wait_ms) = match result {
                Err(Failure::Policy(error)) => return Err(error),
                Err(Failure::Network(error)) => {
                    let decision = if error.kind == NetworkErrorKind::ResponseTooLarge {
                        Err(StopReason::ResponseTooLarge)
                    } else if !retry.retry_on_network_error {
                        Err(StopReason::NetworkErrorNotRetried)
                    } else if !plan.is_retry_safe() {
                        Err(StopReason::NotRetrySafe)
                    } else if exhausted {
                        Err(StopReason::RetriesExhausted)
                    } else {
                        Ok(retry.backoff_ms(attempt_no - 1))
                    };
                    attempts.push(Attempt {
                        status: None,
                        headers: Vec::new(),
                        body: Vec::new(),
                        error: Some(error),
                        redirects: 0,
                        elapsed_ms,
                        waited_ms_before,
                    });
                    match decision {
                        Err(stop) => (Some(stop), 0),
                        Ok(wait) => (None, wait),
                    }
                }
                Ok(received) => {
                    let decision = decide_on_response(&received, plan, retry, exhausted, attempt_no);
                    attempts.push(Attempt {
                        status: Some(received.status),
                        headers: header_pairs(&received.headers),
                        body: received.body,
                        error: None,
                        redirects: received.redirects,
                        elapsed_ms,
                        waited_ms_before,
                    });
                    match decision {
                        Err(stop) => (Some(stop), 0),
                        Ok(wait) => (None, wait),
                    }
                }
            };
            if let Some(stop) = stop {
                let final_response = attempts.last().and_then(|attempt| {
                    attempt.status.map(|status| EgressResponse {
                        status,
                        headers: attempt.headers.clone(),
                        body: attempt.body.clone(),
                    })
                });
                return Ok(EgressOutcome { attempts, final_response, stop });
            }
            sleeper.sleep(Duration::from_millis(wait_ms)).await;
            waited_ms_before = wait_ms;
        }
    }

    /// One sending of the plan: the whole redirect chain, every hop checked.
    async fn attempt(&self, plan: &EgressPlan, allow: &AllowList, auth: &dyn AttachAuth) -> Result<Received, Failure> {
        let mut url = plan.url().clone();
        let mut method = plan.method().to_reqwest();
        let mut body = Some(plan.body().to_vec());
        let mut redirects = 0u32;
        loop {
            let pin = if redirects == 0 {
                self.guard(allow, &url).await?
            } else {
                match self.guard(allow, &url).await {
                    Ok(pin) => pin,
                    Err(Failure::Policy(cause)) => {
                        return Err(Failure::Policy(EgressError::RedirectNotAllowed {
                            location: redact_url(&url),
                            cause: Box::new(cause),
                        }))
                    }
                    Err(network) => return Err(network),
                }
            };
            let client = self.client(pin.as_ref().map(|(host, addrs)| (host.as_str(), addrs.as_slice())))?;
            let same_origin = url.origin() == plan.url().origin();

            let mut request = reqwest::Request::new(method.clone(), url.clone());
            for (name, value) in plan.headers().iter().chain(plan.idempotency_key()) {
                if !same_origin && name == reqwest::header::COOKIE {
                    continue;
                }
                if body.is_none() && is_body_header(name) {
                    continue;
                }
                request.headers_mut().append(name.clone(), value.clone());
            }
            if let Some(bytes) = body.as_ref().filter(|bytes| !bytes.is_empty()) {
                *request.body_mut() = Some(bytes.clone().into());
            }
            if same_origin {
                auth.attach(&mut request)?;
                let changed = request.url().origin() != url.origin()
                    || !request.url().username().is_empty()
                    || request.url().password().is_some()
                    || request.headers().contains_key(reqwest::header::HOST);
                if changed {
                    return Err(Failure::Policy(EgressError::AuthChangedDestination));
                }
            }

            let response = client.execute(request).await.map_err(|error| Failure::Network(network_error(error)))?;
            let status = response.status().as_u16();
            let location = response.headers().get(reqwest::header::LOCATION);
            if let (true, Some(location)) = (matches!(status, 301 | 302 | 303 | 307 | 308), location) {
                if redirects as usize >= MAX_REDIRECTS {
                    return Err(Failure::Policy(EgressError::TooManyRedirects { max: MAX_REDIRECTS }));
                }
                let location = location.to_str().map_err(|_| EgressError::InvalidRedirect {
                    reason: "the Location header is not visible ASCII".into(),
                })?;
                let next =
                    url.join(location).map_err(|error| EgressError::InvalidRedirect { reason: error.to_string() })?;
                // RFC 9110 §15.4: 303 turns into GET (HEAD stays HEAD); 301/302 after POST do too in practice.
                let becomes_get = (status == 303 && method != reqwest::Method::HEAD)
                    || (matches!(status, 301 | 302) && method == reqwest::Method::POST);
                if becomes_get {
                    method = reqwest::Method::GET;
                    body = None;
                }
                url = next;
                redirects += 1;
                continue;
            }
            let headers = response.headers().clone();
            let body = read_capped(response, self.config.max_response_bytes).await.map_err(Failure::Network)?;
            return Ok(Received { status, headers, body, redirects });
        }
    }

    /// Matches `url` to a rule and, for host names, resolves and classifies every address. Returns the
    /// addresses to pin the client to (`None` for an IP literal, which is its own destination).
    async fn guard(&self, allow: &AllowList, url: &Url) -> Result<Option<(String, Vec<SocketAddr>)>, Failure> {
        let rule = allow.matching_rule(url)?;
        if matches!(rule.host, RuleHost::Ip(_)) {
            return Ok(None);
        }
        let host = url.host_str().unwrap_or_default().to_string();
        let port = rule.port;
        let addrs = self.resolver.lookup(&host, port).await.map_err(|error| {
            Failure::Network(NetworkError {
                kind: NetworkErrorKind::Dns,
                message: format!("resolving `{}` failed: {error}", truncate(&host)),
            })
        })?;
        if addrs.is_empty() {
            return Err(Failure::Network(NetworkError {
                kind: NetworkErrorKind::Dns,
                message: format!("`{}` resolved to no address", truncate(&host)),
            }));
        }
        for addr in &addrs {
            if let Some(class) = address_class(addr.ip()) {
                if !rule.permits(class) {
                    return Err(Failure::Policy(EgressError::AddressNotAllowed {
                        host: truncate(&host),
                        address: addr.ip(),
                        class,
                    }));
                }
            }
        }
        let pinned = addrs.iter().map(|addr| SocketAddr::new(addr.ip(), port)).collect();
        Ok(Some((host, pinned)))
    }

    /// A client for one hop: no proxy (it would bypass the guard), no automatic redirects, no resolver but
    /// the pinned addresses.
    fn client(&self, pin: Option<(&str, &[SocketAddr])>) -> Result<reqwest::Client, EgressError> {
        let key = (pin.map(|(h, _)| h.to_owned()), pin.map(|(_, a)| a.to_vec()).unwrap_or_default());
        if let Some(client) = self.clients.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.config.connect_timeout)
            .user_agent(self.user_agent.clone())
            .dns_resolver(Arc::new(PinnedOnly))
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8);
        if let Some((host, addrs)) = pin {
            builder = builder.resolve_to_addrs(host, addrs);
        }
        let client =
            builder.build().map_err(|error| EgressError::Client { reason: error_chain(&error.without_url()) })?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// The retry decision for a response: `Ok(wait_ms)` to send again, `Err(stop)` to stop.
fn decide_on_response(
    received: &Received,
    plan: &EgressPlan,
    retry: &RetryPolicy,
    exhausted: bool,
    attempt_no: u32,
) -> Result<u64, StopReason> {
    if (200..300).contains(&received.status) {
        return Err(StopReason::Completed);
    }
    match retry.hint(&received.headers) {
        Some(false) => return Err(StopReason::RetryHintRefused),
        Some(true) => {}
        None if retry.retries_status(received.status) => {}
        None => return Err(StopReason::Completed),
    }
    if !plan.is_retry_safe() {
        return Err(StopReason::NotRetrySafe);
    }
    if exhausted {
        return Err(StopReason::RetriesExhausted);
    }
    let hinted = retry
        .honor_retry_after
        .then(|| received.headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok())
        .flatten()
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    match hinted {
        Some(hint_ms) if hint_ms > retry.max_retry_after_ms => {
            Err(StopReason::RetryAfterTooLong { hint_ms, cap_ms: retry.max_retry_after_ms })
        }
        Some(hint_ms) => Ok(hint_ms),
        None => Ok(retry.backoff_ms(attempt_no - 1)),
    }
}

fn is_body_header(name: &HeaderName) -> bool {
    matches!(name.as_str(), "content-type" | "content-encoding" | "content-language" | "content-location")
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

/// Reads a body, refusing it as soon as it is known to exceed `cap` (declared length or bytes read).
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, NetworkError> {
    let too_large = || NetworkError {
        kind: NetworkErrorKind::ResponseTooLarge,
        message: format!("the response body exceeds the limit of {cap} bytes"),
    };
    if response.content_length().is_some_and(|length| length > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network_error)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn network_error(error: reqwest::Error) -> NetworkError {
    let kind = if error.is_timeout() {
        NetworkErrorKind::Timeout
    } else if error.is_connect() {
        NetworkErrorKind::Connect
    } else {
        NetworkErrorKind::Other
    };
    NetworkError { kind, message: error_chain(&error.without_url()) }
}

/// An error and its sources, joined; reqwest's URL has been stripped by the caller.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
