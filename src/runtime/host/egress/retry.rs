//! Retries: the [`RetryPolicy`] (exponential backoff with jitter, `Retry-After`, provider hint headers)
//! and the [`Sleeper`] that waits between attempts.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{BoxFuture, EgressError};

/// Most attempts a [`RetryPolicy`] may ask for (the attempt history is kept in full, so it is bounded).
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;

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

/// Randomization of retry delays (AWS "exponential backoff and jitter").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Exactly the computed delay.
    None,
    /// Uniform in `0..=delay` (the default).
    #[default]
    Full,
    // Known oddity, kept as it was: the backoff waits exactly the computed delay for `Equal`,
    // as for `None` (see `RetryPolicy::backoff_ms`), whatever the line below documents.
    /// `delay/2` plus uniform in `0..=delay/2`.
    Equal,
}

/// An HTTP status code (100 to 599) or a class string `"1xx"` … `"5xx"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StatusPattern {
    /// One status code.
    Code(u16),
    /// A class of codes.
    Class(StatusClass),
}

/// A status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusClass {
    #[serde(rename = "1xx")]
    Informational,
    #[serde(rename = "2xx")]
    Success,
    #[serde(rename = "3xx")]
    Redirection,
    #[serde(rename = "4xx")]
    ClientError,
    #[serde(rename = "5xx")]
    ServerError,
}

impl StatusPattern {
    /// Whether `status` is this code or in this class.
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusPattern::Code(c) => c == status,
            StatusPattern::Class(class) => {
                let first = match class {
                    StatusClass::Informational => 100,
                    StatusClass::Success => 200,
                    StatusClass::Redirection => 300,
                    StatusClass::ClientError => 400,
                    StatusClass::ServerError => 500,
                };
                (first..first + 100).contains(&status)
            }
        }
    }
}

impl<'de> Deserialize<'de> for StatusPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusPattern;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP status code 100..=599 or a class \"1xx\"..\"5xx\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusPattern, E> {
                match u16::try_from(v) {
                    Ok(code) if (100..=599).contains(&code) => Ok(StatusPattern::Code(code)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusPattern, E> {
                Err(E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusPattern, E> {
                let class = match v {
                    "1xx" => StatusClass::Informational,
                    "2xx" => StatusClass::Success,
                    "3xx" => StatusClass::Redirection,
                    "4xx" => StatusClass::ClientError,
                    "5xx" => StatusClass::ServerError,
                    _ => return Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                };
                Ok(StatusPattern::Class(class))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for StatusPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StatusPattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An HTTP status code or a class of codes.",
            "oneOf": [
                { "type": "integer", "minimum": 100, "maximum": 599 },
                { "type": "string", "enum": ["1xx", "2xx", "3xx", "4xx", "5xx"] }
            ]
        })
    }
}

/// When and how long to wait before sending a plan again: retries within one invocation.
///
/// One type serves both sides: a manifest's `retry` block deserializes into it, and the host executes
/// it. The field docs and serde defaults are the manifest's (this type publishes that part of the
/// manifest JSON Schema), and manifest validation checks the manifest's tighter bounds (1 to 10
/// attempts, …). The host's own bounds are [`RetryPolicy::validate`]'s: at most [`MAX_ATTEMPTS_LIMIT`]
/// attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(description = "Retries within one invocation.")]
pub struct RetryPolicy {
    /// Total attempts including the first, 1 to 10.
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: u32,
    /// Optional single-expression template giving the attempts the caller asks for (e.g.
    /// `{{ input.maxAttempts }}`); the effective count is clamped to 1..=`maxAttempts`, and
    /// undefined or null means `maxAttempts`.
    // A manifest field: the declarative engine renders it into `max_attempts` before a plan is
    // sent; the executor never reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_attempts: Option<String>,
    /// Delay before the second attempt, in milliseconds (0 to 10000).
    #[serde(default = "default_initial_backoff")]
    #[schemars(range(max = 10000))]
    pub initial_backoff_ms: u64,
    /// Cap of the exponential backoff, in milliseconds (at least `initialBackoffMs`, at most 60000).
    #[serde(default = "default_max_backoff")]
    #[schemars(range(max = 60000))]
    pub max_backoff_ms: u64,
    /// Factor applied to the delay after each attempt (1.0 to 10.0).
    #[serde(default = "default_multiplier")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub multiplier: f64,
    /// Randomization of each delay.
    #[serde(default)]
    pub jitter: Jitter,
    /// Response statuses that are retried, e.g. `[409, 429, "5xx"]`.
    #[serde(default)]
    pub retry_on_status: Vec<StatusPattern>,
    /// Whether transport failures (DNS, connect, TLS, timeout) are retried.
    #[serde(default)]
    pub retry_on_network_error: bool,
    /// Wait what a `Retry-After` header (seconds or HTTP date) asks before retrying, capped at
    /// `maxRetryAfterMs`; a longer wait ends the retries and is reported as `retryAfterMs`.
    #[serde(default = "yes")]
    pub honor_retry_after: bool,
    /// Longest `Retry-After` honoured, in milliseconds (at most 60000).
    #[serde(default = "default_max_retry_after")]
    #[schemars(range(max = 60000))]
    pub max_retry_after_ms: u64,
    /// A provider header that overrides the status rules, e.g. `Stripe-Should-Retry`: `true`
    /// retries (attempts permitting), `false` never retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_hint_header: Option<String>,
}

fn default_initial_backoff() -> u64 {
    200
}
fn default_max_backoff() -> u64 {
    5000
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_max_retry_after() -> u64 {
    10_000
}
fn yes() -> bool {
    true
}

/// The host's policy for plans built in code. (A manifest's omitted fields take the serde
/// defaults documented on each field instead: no status or network error is retried unless
/// listed, and `Retry-After` is capped at 10 s.)
impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            requested_attempts: None,
            initial_backoff_ms: 200,
            max_backoff_ms: 5_000,
            multiplier: 2.0,
            jitter: Jitter::Full,
            retry_on_status: [408, 425, 429, 500, 502, 503, 504].map(StatusPattern::Code).to_vec(),
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

    pub(super) fn backoff_ms(&self, retry: u32) -> u64 {
        let ceiling = self.backoff_ceiling_ms(retry);
        match self.jitter {
            Jitter::Full => rand::thread_rng().gen_range(0..=ceiling),
            // `Equal` waits the ceiling too: that is what it always did (documented otherwise).
            Jitter::None | Jitter::Equal => ceiling,
        }
    }

    /// Whether this policy retries a response with `status` (before any hint header has its say).
    pub fn retries_status(&self, status: u16) -> bool {
        self.retry_on_status.iter().any(|p| p.matches(status))
    }

    /// Whether a 5xx status can be retried under this policy.
    pub fn retries_server_errors(&self) -> bool {
        self.retry_on_status.iter().any(|p| (500..=599).any(|s| p.matches(s)))
    }

    /// The retry hint header's verdict, when present and `true` or `false` (case-insensitive).
    pub(super) fn hint(&self, headers: &HeaderMap) -> Option<bool> {
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
