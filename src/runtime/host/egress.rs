//! Governed egress: the only place a connector's HTTP request leaves the host (SPEC §6, `EgressBuildPlan`).
//!
//! A guest never performs I/O. It describes a request, the host turns it into an [`EgressPlan`] with
//! [`EgressPlan::build`] (validated against the publication's [`AllowList`]), and later the host's
//! [`Executor`] sends it. Everything that decides *where* bytes go lives here, so it is checked in one place:
//!
//! - **Allow-list.** A URL must be `http`/`https`, carry no userinfo, and match a rule by scheme, host
//!   (exact, or `*.example.com` for subdomains) and port (a rule without a port means the scheme's default).
//!   IP literals match only a rule naming that exact literal.
//! - **Resolution guard.** Spin's CVE-2024-32980 let a spoofed `Host` header reach hosts the allow-list did
//!   not name; the lesson is to check the *resolved destination of every hop*, not a header. So a host name
//!   is resolved here, every address is classified, and loopback, private, link-local (including the cloud
//!   metadata address 169.254.169.254) and other special-purpose addresses are refused unless the matching
//!   rule names that exact IP literal (or is `localhost`, for loopback). The HTTP client is then pinned to the
//!   checked addresses (its own resolver refuses everything else), so DNS rebinding between the check and
//!   the connection cannot swap the destination. Plans may not set `Host`, and neither may auth attachment.
//! - **Redirects** are followed by hand (at most [`MAX_REDIRECTS`] hops); every hop is re-checked against the
//!   allow-list and the guard, and credentials ([`AttachAuth`]) are attached only to hops on the plan's origin.
//! - **Credentials** never sit in a plan: [`AttachAuth`] (implemented by the secrets service) adds them to
//!   each outgoing request right before it is sent, and may not change the request's destination.
//! - **Retries** follow [`RetryPolicy`]: exponential backoff with full jitter, `Retry-After` honoured up to a
//!   cap, a provider hint header (Stripe's `Stripe-Should-Retry`) overriding the status-based decision, and
//!   never a retry of POST/PATCH without an idempotency key (the same key is sent on every attempt).
//! - **Bounds.** Request bodies and headers are capped when the plan is built; response bodies are read up
//!   to a cap and refused past it; every attempt runs under the plan's timeout capped by host policy.
//!
//! Errors never carry header values or query strings (either may hold credentials): they name headers and
//! show URLs as scheme, host, port and path only.
//!
//! Policy refusals (allow-list, guard, redirects, auth) end [`Executor::execute`] with an [`EgressError`];
//! transport failures (DNS, connect, timeout, oversized response) are recorded in the attempt history of
//! the [`EgressOutcome`], which mirrors WIT's `egress-outcome` / `network-error`. A refusal ends the whole
//! execution, even after earlier attempts: the caller reports it as a `policy-denied` network error.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::{Host, Url};

/// Most redirect hops one attempt follows before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// Most attempts a [`RetryPolicy`] may ask for (the attempt history is kept in full, so it is bounded).
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;

/// Headers a plan may not set: the host owns routing (`Host`, CVE-2024-32980), framing, connection
/// management, and credentials (those come from [`AttachAuth`]).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "expect",
];

/// Everything that can be refused or go wrong while building or executing a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("allow-list rule {index} is invalid: {reason}")]
    InvalidAllowRule { index: usize, reason: String },
    #[error("the URL is invalid: {reason}")]
    InvalidUrl { reason: String },
    #[error("scheme `{scheme}` is not allowed; egress uses http or https only")]
    SchemeNotAllowed { scheme: String },
    #[error(
        "the URL carries userinfo (a user name or password); credentials are attached by the host, never put in URLs"
    )]
    UserinfoNotAllowed,
    #[error("no allow-list rule matches {scheme}://{host}:{port}")]
    HostNotAllowed { scheme: String, host: String, port: u16 },
    #[error(
        "`{host}` resolved to {address}, a {class} address; only a rule naming that exact IP literal \
         (or `localhost`, for loopback) may reach it"
    )]
    AddressNotAllowed { host: String, address: IpAddr, class: AddressClass },
    #[error("header `{name}` is not allowed: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    #[error("the request headers take {size} bytes, over the limit of {limit}")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("the request body is {size} bytes, over the limit of {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("the timeout must be at least 1 ms")]
    InvalidTimeout,
    #[error("the retry policy is invalid: {reason}")]
    InvalidRetryPolicy { reason: &'static str },
    #[error("the egress executor configuration is invalid: {reason}")]
    InvalidConfig { reason: &'static str },
    #[error("redirect to {location} refused: {cause}")]
    RedirectNotAllowed { location: String, cause: Box<EgressError> },
    #[error("the redirect's Location header is unusable: {reason}")]
    InvalidRedirect { reason: String },
    #[error("more than {max} redirects")]
    TooManyRedirects { max: usize },
    #[error("attaching authentication failed: {reason}")]
    AuthFailed { reason: String },
    #[error(
        "authentication attachment changed the request's origin, userinfo or Host header; it may only add credentials"
    )]
    AuthChangedDestination,
    #[error("building the HTTP client failed: {reason}")]
    Client { reason: String },
}

// ---------------------------------------------------------------------------------------------------------
// Allow-list
// ---------------------------------------------------------------------------------------------------------

/// The two schemes egress speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme uses when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn parse(scheme: &str) -> Result<Scheme, EgressError> {
        match scheme {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            other => Err(EgressError::SchemeNotAllowed { scheme: truncate(other) }),
        }
    }
}

/// One allowed destination. `host` is an exact host name, a `*.example.com` wildcard (subdomains only, not
/// `example.com` itself), or an IP literal (`10.0.0.1`, `::1` or `[::1]`). `port: None` means the scheme's
/// default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub scheme: Scheme,
    pub host: String,
    pub port: Option<u16>,
}

impl AllowRule {
    /// A rule; it is validated when put into an [`AllowList`].
    pub fn new(scheme: Scheme, host: impl Into<String>, port: Option<u16>) -> AllowRule {
        AllowRule { scheme, host: host.into(), port }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RuleHost {
    /// Exact name, lowercased, without a trailing dot.
    Name(String),
    /// `*.example.com`, stored as `.example.com`.
    Wildcard(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CompiledRule {
    scheme: Scheme,
    host: RuleHost,
    port: u16,
}

impl CompiledRule {
    /// Whether a resolved address of this class may be reached through this rule. IP-literal rules never
    /// reach the guard (the URL names the address itself), so only `localhost` earns an exemption here.
    fn permits(&self, class: AddressClass) -> bool {
        matches!((&self.host, class), (RuleHost::Name(name), AddressClass::Loopback) if name == "localhost")
    }
}

/// The destinations a publication may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<AllowRule>,
    compiled: Vec<CompiledRule>,
}

impl AllowList {
    /// Validates and normalises every rule: hosts are lowercased (IDNA), wildcards must be `*.` followed by a
    /// name with at least one dot (`*.com` is refused), and no other `*` may appear.
    pub fn new(rules: Vec<AllowRule>) -> Result<AllowList, EgressError> {
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let host = compile_rule_host(&rule.host)
                    .map_err(|reason| EgressError::InvalidAllowRule { index, reason: reason.to_string() })?;
                Ok(CompiledRule { scheme: rule.scheme, host, port: rule.port.unwrap_or(rule.scheme.default_port()) })
            })
            .collect::<Result<Vec<_>, EgressError>>()?;
        Ok(AllowList { rules, compiled })
    }

    /// The rules as given.
    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }

    /// Checks a URL against the list: http(s) only, no userinfo, and a rule matching scheme, host and port.
    /// (The resolution guard runs at execution time, on every hop.)
    pub fn check(&self, url: &Url) -> Result<(), EgressError> {
        self.matching_rule(url).map(|_| ())
    }

    fn matching_rule(&self, url: &Url) -> Result<&CompiledRule, EgressError> {
        let scheme = Scheme::parse(url.scheme())?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::UserinfoNotAllowed);
        }
        let host = url.host().ok_or_else(|| EgressError::InvalidUrl { reason: "the URL has no host".into() })?;
        let port = url.port().unwrap_or(scheme.default_port());
        let found = self.compiled.iter().find(|rule| {
            rule.scheme == scheme
                && rule.port == port
                && match (&rule.host, &host) {
                    (RuleHost::Name(name), Host::Domain(domain)) => name == trim_dot(domain),
                    (RuleHost::Wildcard(suffix), Host::Domain(domain)) => {
                        let domain = trim_dot(domain);
                        domain.len() > suffix.len() && domain.ends_with(suffix.as_str())
                    }
                    (RuleHost::Ip(ip), Host::Ipv4(v4)) => *ip == IpAddr::V4(*v4),
                    (RuleHost::Ip(ip), Host::Ipv6(v6)) => *ip == IpAddr::V6(*v6),
                    _ => false,
                }
        });
        found.ok_or_else(|| EgressError::HostNotAllowed {
            scheme: scheme.as_str().to_string(),
            host: truncate(&host.to_string()),
            port,
        })
    }
}

fn compile_rule_host(raw: &str) -> Result<RuleHost, &'static str> {
    if raw.is_empty() {
        return Err("the host is empty");
    }
    if let Some(suffix) = raw.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err("a wildcard may only be a leading `*.`");
        }
        return match Host::parse(suffix) {
            Ok(Host::Domain(domain)) => {
                let domain = trim_dot(&domain);
                if !domain.contains('.') {
                    Err("a wildcard must cover subdomains of a name with at least two labels (not `*.com`)")
                } else {
                    Ok(RuleHost::Wildcard(format!(".{domain}")))
                }
            }
            Ok(_) => Err("a wildcard cannot cover IP addresses"),
            Err(_) => Err("the host after `*.` is not a valid host name"),
        };
    }
    if raw.contains('*') {
        return Err("a wildcard may only be a leading `*.`");
    }
    let unbracketed = raw.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(raw);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(RuleHost::Ip(ip));
    }
    match Host::parse(raw) {
        Ok(Host::Domain(domain)) => Ok(RuleHost::Name(trim_dot(&domain).to_string())),
        Ok(Host::Ipv4(v4)) => Ok(RuleHost::Ip(IpAddr::V4(v4))),
        Ok(Host::Ipv6(v6)) => Ok(RuleHost::Ip(IpAddr::V6(v6))),
        Err(_) => Err("the host is not a valid host name or IP literal"),
    }
}

fn trim_dot(domain: &str) -> &str {
    domain.strip_suffix('.').unwrap_or(domain)
}

/// Caps untrusted text quoted in errors.
fn truncate(text: &str) -> String {
    const MAX: usize = 120;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A URL as it may appear in errors and records: scheme, host, port and path; never userinfo or the query
/// (either may carry credentials) or the fragment.
pub fn redact_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|port| format!(":{port}")).unwrap_or_default();
    truncate(&format!("{}://{host}{port}{}", url.scheme(), url.path()))
}

// ---------------------------------------------------------------------------------------------------------
// Resolution guard
// ---------------------------------------------------------------------------------------------------------

/// Why an address is refused by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    CloudMetadata,
    SharedCgnat,
    Multicast,
    Documentation,
    Reserved,
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressClass::Unspecified => "unspecified",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::CloudMetadata => "cloud metadata",
            AddressClass::SharedCgnat => "shared (carrier-grade NAT)",
            AddressClass::Multicast => "multicast",
            AddressClass::Documentation => "documentation",
            AddressClass::Reserved => "reserved",
        })
    }
}

/// The special-purpose class of an address, or `None` for an ordinary public address. IPv4 addresses
/// embedded in IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`) are judged as
/// the IPv4 address they reach.
pub fn address_class(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<AddressClass> {
    Some(match ip.octets() {
        [0, ..] => AddressClass::Unspecified,
        [127, ..] => AddressClass::Loopback,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => AddressClass::Private,
        [169, 254, 169, 254] => AddressClass::CloudMetadata,
        [169, 254, ..] => AddressClass::LinkLocal,
        [100, 64..=127, ..] => AddressClass::SharedCgnat,
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => AddressClass::Documentation,
        [192, 0, 0, _] | [198, 18..=19, ..] => AddressClass::Reserved,
        [224..=239, ..] => AddressClass::Multicast,
        [240..=255, ..] => AddressClass::Reserved,
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<AddressClass> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_class(v4);
    }
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    let octets = ip.octets();
    let embedded_v4 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    // NAT64's well-known prefix reaches the IPv4 address it carries; judge that address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_class(embedded_v4);
    }
    // IPv4-compatible addresses (`::a.b.c.d`) are deprecated: never a legitimate destination.
    if segments[..6] == [0, 0, 0, 0, 0, 0] {
        return Some(v4_class(embedded_v4).unwrap_or(AddressClass::Reserved));
    }
    // AWS's IPv6 instance metadata endpoint, inside fd00::/8.
    if segments == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        return Some(AddressClass::CloudMetadata);
    }
    match segments[0] {
        s if s & 0xfe00 == 0xfc00 => Some(AddressClass::Private),
        s if s & 0xffc0 == 0xfe80 => Some(AddressClass::LinkLocal),
        s if s & 0xffc0 == 0xfec0 => Some(AddressClass::Reserved),
        s if s & 0xff00 == 0xff00 => Some(AddressClass::Multicast),
        0x2001 if segments[1] == 0x0db8 => Some(AddressClass::Documentation),
        _ => None,
    }
}

/// Resolves host names for the guard. The executor connects to exactly the addresses this returns (after
/// the guard accepted them), never to a second resolution.
pub trait HostResolver: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>>;
}

/// A boxed, sendable future (the traits here are object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The operating system's resolver, through `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// The HTTP client's own resolver: refuses every name, so a request can only reach the addresses pinned
/// with `resolve_to_addrs` after the guard checked them.
struct PinnedOnly;

impl reqwest::dns::Resolve for PinnedOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!("`{}` was not resolved through the egress guard", truncate(name.as_str()));
        Box::pin(async move { Err(message.into()) })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------------------

/// HTTP methods a plan may use (WIT `egress.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    /// Whether repeating the request has the same effect as sending it once (RFC 9110 §9.2.2). POST and
    /// PATCH are retried only with an idempotency key.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Patch)
    }

    fn to_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Options => reqwest::Method::OPTIONS,
        }
    }
}

/// What a guest asks for (WIT `egress-request`), plus the idempotency key header the connector uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Total time for one attempt; the host default when `None`, capped by host policy.
    pub timeout_ms: Option<u64>,
    /// `(header name, value)`, e.g. `("Idempotency-Key", "…")`; sent unchanged on every attempt.
    pub idempotency_key: Option<(String, String)>,
}

/// Host policy applied when a plan is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLimits {
    pub max_body_bytes: usize,
    /// Sum of header name and value lengths, the idempotency key included.
    pub max_header_bytes: usize,
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
}

impl Default for PlanLimits {
    fn default() -> PlanLimits {
        PlanLimits {
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            default_timeout_ms: 30_000,
            max_timeout_ms: 60_000,
        }
    }
}

/// A validated request, ready for the [`Executor`]. It holds no credentials: those are attached per attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPlan {
    method: Method,
    url: Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    timeout_ms: u64,
    idempotency_key: Option<(HeaderName, HeaderValue)>,
}

impl EgressPlan {
    /// `EgressBuildPlan`: parses and checks the URL against `allow`, validates headers (no reserved ones, no
    /// control characters), and applies the size and timeout limits.
    pub fn build(request: EgressRequest, allow: &AllowList, limits: &PlanLimits) -> Result<EgressPlan, EgressError> {
        let url = Url::parse(&request.url).map_err(|error| EgressError::InvalidUrl { reason: error.to_string() })?;
        allow.check(&url)?;

        let mut header_bytes = 0usize;
        let mut headers = Vec::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            header_bytes = header_bytes.saturating_add(name.len() + value.len());
            headers.push(plan_header(name, value)?);
        }
        let idempotency_key = match &request.idempotency_key {
            Some((name, value)) => {
                header_bytes = header_bytes.saturating_add(name.len() + value.len());
                let (name, value) = plan_header(name, value)?;
                if value.is_empty() {
                    return Err(EgressError::InvalidHeader {
                        name: name.to_string(),
                        reason: "the idempotency key is empty",
                    });
                }
                if headers.iter().any(|(other, _)| *other == name) {
                    return Err(EgressError::InvalidHeader {
                        name: name.to_string(),
                        reason: "it is the idempotency key header and may not also be set as a plain header",
                    });
                }
                Some((name, value))
            }
            None => None,
        };
        if header_bytes > limits.max_header_bytes {
            return Err(EgressError::HeadersTooLarge { size: header_bytes, limit: limits.max_header_bytes });
        }
        if request.body.len() > limits.max_body_bytes {
            return Err(EgressError::BodyTooLarge { size: request.body.len(), limit: limits.max_body_bytes });
        }
        let timeout_ms = match request.timeout_ms {
            Some(0) => return Err(EgressError::InvalidTimeout),
            Some(ms) => ms,
            None => limits.default_timeout_ms,
        }
        .min(limits.max_timeout_ms)
        .max(1);
        Ok(EgressPlan { method: request.method, url, headers, body: request.body, timeout_ms, idempotency_key })
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    pub fn idempotency_key(&self) -> Option<&(HeaderName, HeaderValue)> {
        self.idempotency_key.as_ref()
    }

    /// Whether the retry policy may send this plan more than once.
    pub fn is_retry_safe(&self) -> bool {
        self.method.is_idempotent() || self.idempotency_key.is_some()
    }
}

fn plan_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), EgressError> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| EgressError::InvalidHeader { name: truncate(name), reason: "the name is not a valid token" })?;
    if RESERVED_HEADERS.contains(&parsed.as_str()) {
        return Err(EgressError::InvalidHeader {
            name: parsed.to_string(),
            reason: "it is reserved for the host (routing, framing or credentials)",
        });
    }
    let value = HeaderValue::from_str(value).map_err(|_| EgressError::InvalidHeader {
        name: parsed.to_string(),
        reason: "the value contains control characters or non-visible bytes",
    })?;
    Ok((parsed, value))
}

// ---------------------------------------------------------------------------------------------------------
// Auth, sleeping, retry policy
// ---------------------------------------------------------------------------------------------------------

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

/// Waits between attempts. Tests and replays use [`RecordingSleeper`] so nothing actually waits.
pub trait Sleeper: Send + Sync {
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
}

/// Real waiting, with `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Records every requested wait and returns at once.
#[derive(Debug, Default)]
pub struct RecordingSleeper {
    slept: Mutex<Vec<Duration>>,
}

impl RecordingSleeper {
    /// The waits requested so far, in order.
    pub fn slept(&self) -> Vec<Duration> {
        self.slept.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Sleeper for RecordingSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        self.slept.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(duration);
        Box::pin(std::future::ready(()))
    }
}

/// How backoff delays are randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, backoff]` ("full jitter"): spreads retries of many clients apart.
    Full,
    /// Exactly the exponential backoff.
    None,
}

/// When and how long to wait before sending a plan again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = never retry); at most [`MAX_ATTEMPTS_LIMIT`].
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub multiplier: f64,
    pub jitter: Jitter,
    /// Statuses worth retrying (2xx never is).
    pub retry_on_status: Vec<u16>,
    /// Retry DNS, connect and timeout failures (never an oversized response).
    pub retry_on_network_error: bool,
    /// Wait as long as `Retry-After` (seconds or HTTP-date) says, up to `max_retry_after_ms`.
    pub honor_retry_after: bool,
    /// A longer `Retry-After` stops retrying: the last response is returned.
    pub max_retry_after_ms: u64,
    /// A header whose `true`/`false` overrides the status-based decision, e.g. `Stripe-Should-Retry`.
    pub retry_hint_header: Option<String>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 200,
            max_backoff_ms: 5_000,
            multiplier: 2.0,
            jitter: Jitter::Full,
            retry_on_status: vec![408, 425, 429, 500, 502, 503, 504],
            retry_on_network_error: true,
            honor_retry_after: true,
            max_retry_after_ms: 30_000,
            retry_hint_header: None,
        }
    }
}

impl RetryPolicy {
    /// Send once, never retry.
    pub fn never() -> RetryPolicy {
        RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
    }

    /// Checks the policy's internal consistency.
    pub fn validate(&self) -> Result<(), EgressError> {
        let invalid = |reason| Err(EgressError::InvalidRetryPolicy { reason });
        if self.max_attempts == 0 {
            return invalid("max_attempts must be at least 1");
        }
        if self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return invalid("max_attempts is over the limit of 20");
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return invalid("multiplier must be a finite number of at least 1");
        }
        if self.initial_backoff_ms > self.max_backoff_ms {
            return invalid("initial_backoff_ms is above max_backoff_ms");
        }
        if let Some(name) = &self.retry_hint_header {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return invalid("retry_hint_header is not a valid header name");
            }
        }
        Ok(())
    }

    /// The exponential backoff ceiling before retry number `retry` (0 for the first retry), capped.
    pub fn backoff_ceiling_ms(&self, retry: u32) -> u64 {
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let raw = self.initial_backoff_ms as f64 * self.multiplier.powi(exponent);
        if raw >= self.max_backoff_ms as f64 {
            self.max_backoff_ms
        } else {
            raw as u64
        }
    }

    fn backoff_ms(&self, retry: u32) -> u64 {
        let ceiling = self.backoff_ceiling_ms(retry);
        match self.jitter {
            Jitter::Full => rand::thread_rng().gen_range(0..=ceiling),
            Jitter::None => ceiling,
        }
    }

    /// The retry hint header's verdict, when present and `true` or `false` (case-insensitive).
    fn hint(&self, headers: &HeaderMap) -> Option<bool> {
        let value = headers.get(self.retry_hint_header.as_deref()?)?.to_str().ok()?.trim();
        if value.eq_ignore_ascii_case("true") {
            Some(true)
        } else if value.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    }
}

/// `Retry-After` as milliseconds from `now`: delta-seconds or an HTTP-date (a past date means 0). `None`
/// when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Some(value.parse::<u64>().unwrap_or(u64::MAX).saturating_mul(1000));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    let wait = date.duration_since(now).unwrap_or(Duration::ZERO);
    Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------------------------------------

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
        let timeout = Duration::from_millis(plan.timeout_ms).min(self.config.total_timeout);
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
        let mut url = plan.url.clone();
        let mut method = plan.method.to_reqwest();
        let mut body = Some(plan.body.clone());
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
            let same_origin = url.origin() == plan.url.origin();

            let mut request = reqwest::Request::new(method.clone(), url.clone());
            for (name, value) in plan.headers.iter().chain(plan.idempotency_key.iter()) {
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
        None if retry.retry_on_status.contains(&received.status) => {}
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

#[cfg(test)]
mod tests;
