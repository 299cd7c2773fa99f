//! Host time for the runtime's services: one small trait so every service that needs "now" (memory
//! expiry, leases) reads it from the same place, and tests can drive time by hand instead of sleeping.
//!
//! Times are milliseconds since the Unix epoch (UTC). The trait is object-safe and `Send + Sync`, so
//! one `Arc<dyn Clock>` is shared by every thread of the host.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn now_ms(&self) -> u64;
}

/// The machine's wall clock. A clock set before 1970 reads as 0; one past year 584 million
/// saturates at `u64::MAX`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
            Err(_) => 0,
        }
    }
}

/// A clock that only moves when told to; for tests. Share it as `Arc<ManualClock>` (it coerces to
/// `Arc<dyn Clock>`) and move time from the test while the code under test reads it.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock { now_ms: AtomicU64::new(start_ms) }
    }

    /// Sets the time to `ms` (it may go backwards).
    pub fn set(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`, saturating at `u64::MAX`; returns the new time.
    pub fn advance(&self, ms: u64) -> u64 {
        let mut current = self.now_ms.load(Ordering::SeqCst);
        loop {
            let next = current.saturating_add(ms);
            match self.now_ms.compare_exchange_weak(current, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = Arc::new(ManualClock::new(1_000));
        let shared: Arc<dyn Clock> = clock.clone();
        assert_eq!(shared.now_ms(), 1_000);
        assert_eq!(clock.advance(250), 1_250);
        assert_eq!(shared.now_ms(), 1_250);
        clock.set(10);
        assert_eq!(shared.now_ms(), 10);
        clock.set(u64::MAX - 1);
        assert_eq!(clock.advance(5), u64::MAX, "advance saturates instead of wrapping");
    }

    #[test]
    fn system_clock_is_after_2020() {
        // 2020-01-01T00:00:00Z; a reading before it means the conversion is wrong (or the host clock is).
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
