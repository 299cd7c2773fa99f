//! `vadyl serve`: the HTTP API on a data directory, with its limits, the first admin token, and the
//! refusal to listen beyond loopback before any token exists.

use std::sync::Arc;

use anyhow::{bail, Context};
use vadyl::events::envelope::EventMetadata;
use vadyl::http::Limits;

use super::client::open_registry;

/// Where `vadyl serve` writes the first admin token (owner-only).
pub(super) const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The server's limits from `vadyl serve`'s options (a request timeout of at least one second).
pub(super) fn limits(
    max_concurrent: usize,
    request_timeout_secs: u64,
    rate_limit: u32,
    rate_limit_burst: u32,
) -> Limits {
    Limits {
        max_concurrent,
        request_timeout: std::time::Duration::from_secs(request_timeout_secs.max(1)),
        per_token: vadyl::http::rate::TokenRate::new(rate_limit, rate_limit_burst),
        ..Limits::default()
    }
}

/// Opens the registry, checks the address, creates the first admin token if there is none, and
/// serves until the process is stopped.
pub(super) fn serve(
    location: &vadyl::storage::Location,
    listen: &str,
    limits: Limits,
    cadence: vadyl::http::CheckpointCadence,
) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr =
        listen.parse().with_context(|| format!("--listen {listen:?} is not an address such as 127.0.0.1:8080"))?;
    let data_dir = location.data_dir.as_path();
    let app = Arc::new(open_registry(location)?);
    let has_tokens = app.registry().read(|p| p.tokens.values().any(|t| t.revoked.is_none()));
    if !addr.ip().is_loopback() && !has_tokens {
        bail!(
            "refusing to listen on {addr}, which is not a loopback address, before any access token exists: \
             start once on 127.0.0.1 (which creates an admin token) or run `vadyl token create --role admin`"
        );
    }
    let token_file = data_dir.join(ADMIN_TOKEN_FILE);
    if !has_tokens && !token_file.exists() {
        let new = app.issue_token(
            &EventMetadata::actor("system"),
            vadyl::ids::Role::Admin,
            None,
            vec![],
            "initial admin token (vadyl serve)".into(),
        )?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_file)
            .with_context(|| format!("cannot write {}", token_file.display()))?;
        writeln!(f, "{}", new.token)?;
        eprintln!(
            "created an admin token ({}) in {} (readable by you only); send it as `Authorization: Bearer …`, \
             or set VADYL_TOKEN for the CLI",
            new.token_id,
            token_file.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // Tests and scripts read this line to learn the port when listening on :0.
        match &location.database {
            Some(_) => println!(
                "vadyl listening on http://{local} (database {}, node data directory {})",
                location.describe(),
                data_dir.display()
            ),
            None => println!("vadyl listening on http://{local} (data directory {})", data_dir.display()),
        }
        Ok(vadyl::http::serve(app, listener, limits, cadence).await?)
    })
}
