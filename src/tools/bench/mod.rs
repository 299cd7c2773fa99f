//! `vadyl bench log`, `vadyl bench invoke` and `vadyl bench audit`: each measurement beside a baseline in the same run.

pub mod audit;
pub mod invoke;
pub mod log;

/// What a benchmark can fail with: whatever it ran failed, with its cause kept.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Fails the benchmark with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}
pub(crate) use ensure;
