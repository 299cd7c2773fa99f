//! Retries: the [`RetryPolicy`] (exponential backoff with jitter, `Retry-After`, provider hint headers)
//! and the [`Sleeper`] that waits between attempts.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName};

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

    pub(super) fn backoff_ms(&self, retry: u32) -> u64 {
        let ceiling = self.backoff_ceiling_ms(retry);
        match self.jitter {
            Jitter::Full => rand::thread_rng().gen_range(0..=ceiling),
            Jitter::None => ceiling,
        }
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
