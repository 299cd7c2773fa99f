//! Talking to the registry: over HTTP to a server (`--server URL`, with the CLI's bearer token), or
//! in-process through the same router on the data directory, so both modes give the same JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use vadyl::app::registry::OpenOptions;
use vadyl::app::App;
use vadyl::events::envelope::EventMetadata;
use vadyl::storage::sqlite::log::Durability;
use vadyl::storage::Location;

use super::serve::ADMIN_TOKEN_FILE;

/// Where a command's data lives: the data directory, or a server.
pub(super) struct Conn {
    pub(super) data_dir: PathBuf,
    pub(super) location: Location,
    pub(super) server: Option<String>,
}

/// The actor of what the CLI writes in-process: `local:$USER`.
pub(super) fn local_actor() -> EventMetadata {
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into());
    EventMetadata::actor(format!("local:{user}"))
}

/// Where the registry's state is: the data directory, and the database of `--store` if given.
pub(super) fn location(data_dir: &Path, store: Option<String>, keys_dir: Option<PathBuf>) -> anyhow::Result<Location> {
    let database = match store {
        Some(s) if vadyl::storage::postgres::is_database_url(&s) => Some(s),
        Some(s) if s.is_empty() || s == "sqlite" => None,
        Some(s) => bail!(
            "--store must be a postgres:// or postgresql:// URL (or \"sqlite\" for the data directory), not {s:?}"
        ),
        None => None,
    };
    Ok(Location { data_dir: data_dir.to_owned(), database, keys_dir })
}

/// Opens (or creates) the registry at `location`, for commands that run in-process.
pub(super) fn open_registry(location: &Location) -> anyhow::Result<App> {
    vadyl::storage::open_at(location, OpenOptions::default(), Durability::Full)
        .with_context(|| format!("cannot open the registry in {}", location.describe()))
}

/// The token the CLI sends to a server: `VADYL_TOKEN`, else the first line of `$VADYL_TOKEN_FILE`,
/// `~/.config/vadyl/token`, or the data directory's admin token — never a command-line argument,
/// which `ps` would show to every user of the machine.
fn bearer_token(data_dir: &Path) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var("VADYL_TOKEN") {
        return Ok(Some(t.trim().to_owned()));
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(f) = std::env::var_os("VADYL_TOKEN_FILE") {
        candidates.push(PathBuf::from(f));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".config/vadyl/token"));
    }
    candidates.push(data_dir.join(ADMIN_TOKEN_FILE));
    for path in candidates {
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(text.lines().next().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow!("cannot read the token file {}: {e}", path.display())),
        }
    }
    Ok(None)
}

/// `GET /api/Connector{path}` through [`call_api`].
pub(super) fn read_api(conn: &Conn, path: &str) -> anyhow::Result<Value> {
    call_api(conn, reqwest::Method::GET, path, None)
}

/// Sends a request to `/api/Connector{path}` on the server, or answers it in-process from the data
/// directory through the same router, so both modes give the same JSON. A status outside 2xx is an
/// error carrying the problem's detail.
pub(super) fn call_api(conn: &Conn, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let (status, value) = match &conn.server {
        Some(server) => {
            let url = format!("{}/api/Connector{path}", server.trim_end_matches('/'));
            let client = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
            let mut req = client.request(method, &url);
            if let Some(token) = bearer_token(&conn.data_dir)? {
                req = req.bearer_auth(token);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().with_context(|| format!("cannot reach {url}"))?;
            let status = resp.status().as_u16();
            let text = resp.text()?;
            (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        None => {
            let app = Arc::new(open_registry(&conn.location)?);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let result = runtime.block_on(in_process(app.clone(), method, path, body));
            app.registry().snapshot_if_stale(1000)?;
            result?
        }
    };
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        Err(problem_error(status, &value))
    }
}

/// A `multipart/form-data` POST on `--server` (a component upload, streamed from its file).
pub(super) fn call_api_form(
    conn: &Conn,
    path: &str,
    form: reqwest::blocking::multipart::Form,
) -> anyhow::Result<Value> {
    let server = conn.server.as_deref().ok_or_else(|| anyhow!("this needs --server"))?;
    let url = format!("{}/api/Connector{path}", server.trim_end_matches('/'));
    // A large component takes a while to send and to compile: the server's own timeout applies.
    let client = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(300)).build()?;
    let mut req = client.post(&url).multipart(form);
    if let Some(token) = bearer_token(&conn.data_dir)? {
        req = req.bearer_auth(token);
    }
    let resp = req.send().with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.text()?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        Err(problem_error(status, &value))
    }
}

/// A GET on `--server` whose body the caller reads as it arrives (exports, signed notes); a status
/// outside 2xx is an error carrying the problem's detail.
pub(super) fn remote_get(conn: &Conn, path: &str) -> anyhow::Result<reqwest::blocking::Response> {
    let server = conn.server.as_deref().ok_or_else(|| anyhow!("this needs --server"))?;
    let url = format!("{}/api/Connector{path}", server.trim_end_matches('/'));
    // No overall timeout: an export of a long history takes as long as it takes.
    let client = reqwest::blocking::Client::builder().timeout(None).build()?;
    let mut req = client.get(&url);
    if let Some(token) = bearer_token(&conn.data_dir)? {
        req = req.bearer_auth(token);
    }
    let resp = req.send().with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let text = resp.text()?;
    Err(problem_error(status, &serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// An answer outside 2xx as an error: the problem's detail and its listed errors.
fn problem_error(status: u16, value: &Value) -> anyhow::Error {
    {
        let mut detail =
            value.get("detail").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| value.to_string());
        for e in value.get("errors").and_then(Value::as_array).into_iter().flatten() {
            detail.push_str(&format!(
                "\n  {}: {}",
                e["path"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            ));
        }
        anyhow!("{detail} (HTTP {status})")
    }
}

async fn in_process(
    app: Arc<App>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let (status, value) =
        vadyl::http::call_local(vadyl::http::router(app.clone()), method.as_str(), path, body).await?;
    if (200..300).contains(&status) && method != reqwest::Method::GET {
        tokio::task::spawn_blocking(move || app.registry().checkpoint(&local_actor())).await??;
    }
    Ok((status, value))
}
