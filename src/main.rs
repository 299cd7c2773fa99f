//! The `vadyl` binary: the command line (`cli`) over the library. The only code that uses `anyhow`.

use clap::Parser;

mod cli;

// Replay hands millions of small allocations from the reading thread to the folding thread;
// mimalloc frees across threads without the contention glibc's allocator shows there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VADYL_LOG").unwrap_or_else(|_| "vadyl=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
