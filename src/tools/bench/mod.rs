//! `vadyl bench log`, `vadyl bench invoke` and `vadyl bench audit`: each measurement beside a baseline in the same run.

pub mod audit;
pub mod invoke;
pub mod log;
mod log_postgres;

/// The directory a benchmark writes its databases in: `dir`, or a temporary one, removed with the
/// returned guard.
pub(crate) fn bench_dir(dir: Option<&std::path::Path>) -> BenchResult<(Option<tempfile::TempDir>, std::path::PathBuf)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            Ok((None, d.to_owned()))
        }
        None => {
            let tmp = tempfile::tempdir()?;
            let path = tmp.path().to_owned();
            Ok((Some(tmp), path))
        }
    }
}

/// Removes an SQLite database and its WAL and shared-memory files, if they exist.
pub(crate) fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

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
