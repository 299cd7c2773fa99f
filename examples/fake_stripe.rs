//! Run the fake Stripe API used by the tests, for trying the Stripe connector by hand:
//!
//! ```text
//! cargo run --example fake_stripe -- --port 12111 --secret sk_test_vadyl_demo
//! ```
//!
//! It listens on 127.0.0.1 only, prints `fake stripe listening on http://127.0.0.1:PORT`, and serves until
//! Ctrl-C. Inspect it with `curl http://127.0.0.1:PORT/__fake/requests`; queue faults with
//! `curl -X POST http://127.0.0.1:PORT/__fake/faults -d '{"status": 429, "retryAfter": "1"}'`.

#[path = "../tests/support/fake_stripe/mod.rs"]
mod fake_stripe;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use fake_stripe::{FakeStripe, FakeStripeError};

const DEFAULT_PORT: u16 = 12111;
const DEFAULT_SECRET: &str = "sk_test_vadyl_demo";
const USAGE: &str =
    "usage: fake_stripe [--port PORT (default 12111, 0 = any free port)] [--secret KEY (default sk_test_vadyl_demo)]";

/// Why the example could not run.
#[derive(Debug, thiserror::Error)]
enum ExampleError {
    #[error("{0}\n{USAGE}")]
    Usage(String),
    #[error(transparent)]
    Server(#[from] FakeStripeError),
    #[error("cannot wait for Ctrl-C: {0}")]
    Signal(std::io::Error),
}

struct Options {
    port: u16,
    secret: String,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, ExampleError> {
    let mut options = Options { port: DEFAULT_PORT, secret: DEFAULT_SECRET.to_owned() };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" => {
                let value = args.next().ok_or_else(|| ExampleError::Usage("--port needs a value".into()))?;
                options.port = value
                    .parse()
                    .map_err(|_| ExampleError::Usage(format!("--port {value:?} is not a port number (0-65535)")))?;
            }
            "--secret" => {
                options.secret = args.next().ok_or_else(|| ExampleError::Usage("--secret needs a value".into()))?;
            }
            other => return Err(ExampleError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    Ok(Some(options))
}

async fn run() -> Result<(), ExampleError> {
    let Some(options) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let server = FakeStripe::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)), options.secret).await?;
    println!("fake stripe listening on {}", server.base_url());
    tokio::signal::ctrl_c().await.map_err(ExampleError::Signal)?;
    drop(server);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake_stripe: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_default_and_parse() {
        let defaults = parse_args(args(&[])).unwrap().unwrap();
        assert_eq!((defaults.port, defaults.secret.as_str()), (DEFAULT_PORT, DEFAULT_SECRET));
        let given = parse_args(args(&["--port", "0", "--secret", "sk_test_x"])).unwrap().unwrap();
        assert_eq!((given.port, given.secret.as_str()), (0, "sk_test_x"));
        assert!(parse_args(args(&["--help"])).unwrap().is_none());
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        let message = |list: &[&str]| parse_args(args(list)).err().unwrap().to_string();
        assert!(message(&["--port", "99999"]).contains("not a port number"));
        assert!(message(&["--port"]).contains("needs a value"));
        assert!(message(&["--verbose"]).contains("unknown argument"));
    }
}
