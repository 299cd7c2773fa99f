//! The `vadyl` command line (SPEC §9): the definition of the CLI and the glue to the library.
//!
//! Commands work on the embedded data directory by default, or against a running server with
//! `--server URL` where that makes sense (publication, implementation and contract reads, and
//! invalidation). Audit commands always work on a data directory: an auditor replays and verifies
//! the history itself. Human-readable output by default, `--json` for scripts; failures print a
//! message on stderr and exit non-zero.
//!
//! Where things are:
//! - `args` — the clap definitions of every command and option.
//! - `client` — where a command's data lives (`Conn`): requests to a server with the CLI's token,
//!   or in-process through the same router on the data directory.
//! - `output` — `--json` or a human summary, and the summaries of the API's answers.
//! - `serve` — `vadyl serve`: limits, the first admin token, the loopback check.
//! - one module per command family: `publication` (contracts, implementations, publications),
//!   `connector` (build, schema, conformance, bindings, invoke), `token`, `local` (the signing key
//!   and secrets, on the data directory only), `audit`, `bench`.
//!
//! `run` below only dispatches.

mod args;
mod audit;
mod bench;
mod client;
mod connector;
mod dev;
mod local;
mod output;
mod publication;
mod serve;
mod token;

pub use args::Cli;

use args::{Command, KeyCommand};
use client::Conn;
use output::Output;

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    let Cli { data_dir, server, store, keys_dir, command, .. } = cli;
    let location = client::location(&data_dir, store, keys_dir)?;
    let conn = Conn { data_dir, location, server };
    match command {
        Command::Serve {
            listen,
            max_concurrent,
            request_timeout_secs,
            rate_limit,
            rate_limit_burst,
            checkpoint_interval_secs,
            checkpoint_events,
            feed_buffer,
            feed_stall_ms,
            feed_heartbeat_secs,
            max_component_mib,
        } => serve::serve(
            &conn.location,
            &listen,
            vadyl::http::Limits {
                feed: vadyl::http::feed::FeedLimits {
                    buffer: feed_buffer.max(1),
                    stall: std::time::Duration::from_millis(feed_stall_ms.max(1)),
                    heartbeat: std::time::Duration::from_secs(feed_heartbeat_secs.max(1)),
                    ..Default::default()
                },
                max_component_bytes: max_component_mib.max(1).saturating_mul(1 << 20),
                ..serve::limits(max_concurrent, request_timeout_secs, rate_limit, rate_limit_burst)
            },
            vadyl::http::CheckpointCadence {
                interval: std::time::Duration::from_secs(checkpoint_interval_secs.max(1)),
                events: checkpoint_events.max(1),
            },
        ),
        Command::Key(KeyCommand::Show) => local::key_show(&conn.location, &out),
        Command::Token(c) => token::run(&conn, &out, c),
        Command::Contract(c) => publication::contract(&conn, &out, c),
        Command::Implementation(c) => publication::implementation(&conn, &out, c),
        Command::Publication(c) => publication::publication(&conn, &out, c),
        Command::Connector(c) => connector::run(&conn, &out, c),
        Command::Secret(c) => local::secret(&conn, &out, c),
        Command::Audit(c) => audit::run(&conn, &out, c),
        Command::Bench(c) => bench::run(&out, c, conn.location.database.as_deref()),
        Command::Guest(c) => dev::guest(&out, c),
    }
}
