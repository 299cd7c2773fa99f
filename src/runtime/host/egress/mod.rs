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
//!
//! The module is split by job: [`allow`] (the allow-list), [`guard`] (address classes and the resolution
//! guard), [`plan`] (building plans: methods, headers, limits), [`retry`] (the retry policy, backoff and
//! `Retry-After`) and [`executor`] (sending a plan: clients, redirects, attempts and their outcomes). Every
//! public item is re-exported here, so callers name `egress::X`.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use url::Url;

pub mod allow;
pub mod executor;
pub mod guard;
pub mod plan;
pub mod retry;

pub use allow::{AllowList, AllowRule, Scheme};
pub use executor::{
    AttachAuth, Attempt, EgressOutcome, EgressResponse, Executor, ExecutorConfig, NetworkError, NetworkErrorKind,
    NoAuth, StopReason, MAX_REDIRECTS,
};
pub use guard::{address_class, AddressClass, HostResolver, SystemResolver};
pub use plan::{EgressPlan, EgressRequest, Method, PlanLimits, RESERVED_HEADERS};
pub use retry::{
    parse_retry_after, Jitter, RecordingSleeper, RetryPolicy, Sleeper, StatusClass, StatusPattern, TokioSleeper,
    MAX_ATTEMPTS_LIMIT,
};

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

/// A boxed, sendable future (the traits here are object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

#[cfg(test)]
mod tests;
