use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VADYL_LOG").unwrap_or_else(|_| "vadyl=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = vadyl::cli::Cli::parse();
    match vadyl::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
