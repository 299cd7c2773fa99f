//! Per-token request rates: one token cannot take the whole server.
//!
//! GCRA (the `governor` crate) keyed by token id: a token may send `burst` requests at once and
//! `per_second` on average; beyond that it is answered 429 with `Retry-After`. Only tokens that
//! authenticated are counted, so the table grows with issued tokens, never with what a client
//! makes up. The concurrency limit (503) still protects the server from many tokens at once.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How fast one token may send requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl TokenRate {
    /// `None` when `per_second` is 0 (no limit); a burst of 0 means one request at a time.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        Some(Self {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        })
    }
}

pub struct TokenRates {
    rate: TokenRate,
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl TokenRates {
    pub fn new(rate: TokenRate) -> Self {
        let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
        Self { rate, limiter: RateLimiter::keyed(quota), clock: DefaultClock::default() }
    }

    pub fn rate(&self) -> TokenRate {
        self.rate
    }

    /// Counts one request of `token_id`; `Err` says how long it must wait before the next.
    pub fn check(&self, token_id: &str) -> Result<(), Duration> {
        self.limiter.check_key(&token_id.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u32, burst: u32) -> TokenRate {
        TokenRate::new(per_second, burst).unwrap()
    }

    #[test]
    fn zero_means_no_limit() {
        assert_eq!(TokenRate::new(0, 10), None);
        assert_eq!(TokenRate::new(5, 0).map(|r| r.burst.get()), Some(1));
    }

    #[test]
    fn a_token_gets_its_burst_then_waits_and_others_are_not_affected() {
        let rates = TokenRates::new(rate(2, 3));
        for i in 0..3 {
            assert_eq!(rates.check("tok_a"), Ok(()), "request {i} is within the burst");
        }
        let wait = rates.check("tok_a").expect_err("the fourth request at once is refused");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "one cell per 500 ms: {wait:?}");
        assert_eq!(rates.check("tok_b"), Ok(()), "another token has its own allowance");
        std::thread::sleep(wait + Duration::from_millis(20));
        assert_eq!(rates.check("tok_a"), Ok(()), "after the wait the token may send again");
    }
}
