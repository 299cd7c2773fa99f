//! The `vadyl` command line (SPEC §9): the definition of the CLI and the glue to the library.
//!
//! Commands work on the embedded data directory by default, or against a running server with
//! `--server URL` where that makes sense (publication, implementation and contract reads, and
//! invalidation). Audit commands always work on a data directory: an auditor replays and verifies
//! the history itself. Human-readable output by default, `--json` for scripts; failures print a
//! message on stderr and exit non-zero.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use vadyl::app::audit::{self, TrustedKey};
use vadyl::app::registry::OpenOptions;
use vadyl::app::App;
use vadyl::events::envelope::EventMetadata;
use vadyl::ids::{BindingAlias, BindingTarget, ContractRef, ImplementationId, ProjectId, PublicationVersion};
use vadyl::storage::sqlite::log::{Durability, SqliteStore};
use vadyl::storage::EVENTS_DB;

#[derive(Parser, Debug)]
#[command(name = "vadyl", version, about = "Event-sourced publication registry and runtime for connectors")]
pub struct Cli {
    /// Data directory (SQLite log, keys, snapshots); created on first use.
    #[arg(long, global = true, env = "VADYL_DATA_DIR", default_value = "./vadyl-data")]
    pub data_dir: PathBuf,
    /// Talk to a running server instead of the data directory (e.g. http://127.0.0.1:8080).
    #[arg(long, global = true, env = "VADYL_SERVER")]
    pub server: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP API.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Requests handled at once; more are answered 503 with Retry-After.
        #[arg(long, default_value_t = 64)]
        max_concurrent: usize,
        /// Seconds before a request still running is answered 503.
        #[arg(long, default_value_t = 120)]
        request_timeout_secs: u64,
        /// Requests per second each token may send on average; more are answered 429 with
        /// Retry-After. 0 turns the per-token limit off.
        #[arg(long, default_value_t = vadyl::http::DEFAULT_TOKEN_RATE)]
        rate_limit: u32,
        /// Requests each token may send at once before the per-second rate applies.
        #[arg(long, default_value_t = vadyl::http::DEFAULT_TOKEN_BURST)]
        rate_limit_burst: u32,
    },
    /// The registry's signing key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Access tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Contracts read from the WIT package.
    #[command(subcommand)]
    Contract(ContractCommand),
    /// Built implementations.
    #[command(subcommand)]
    Implementation(ImplementationCommand),
    /// Publication versions: read, and roll back by invalidation.
    #[command(subcommand)]
    Publication(PublicationCommand),
    /// Build, test, bind and invoke connectors.
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// Secrets, stored encrypted; their values are never shown.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Verify, replay, export and prove the event history.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Print the public key (creating the key pair on first use).
    Show,
}

#[derive(Subcommand, Debug)]
pub enum ContractCommand {
    List,
    /// e.g. `vadyl contract show payment.charge@1`
    Show {
        contract: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImplementationCommand {
    List,
    Show { implementation_id: String },
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a new version of NAME; the value comes from standard input (or --from-env VAR), never
    /// from the command line, where `ps` would show it.
    Set {
        name: String,
        #[arg(long)]
        project: Option<String>,
        /// Read the value from this environment variable instead of standard input.
        #[arg(long)]
        from_env: Option<String>,
    },
    /// Redacted metadata of a project's secrets: name, version, fingerprint.
    List {
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token; it is printed once and stored only as a hash.
    Create {
        /// admin, publisher, project or auditor.
        #[arg(long)]
        role: String,
        /// The project a `project` token acts in.
        #[arg(long)]
        project: Option<String>,
        /// Implementation names a `publisher` token may build (repeat).
        #[arg(long = "implementation")]
        implementations: Vec<String>,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Every token's grant (never the token).
    List,
    /// Revoke a token by id.
    Revoke {
        token_id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConnectorCommand {
    /// Build an implementation into a signed, content-addressed artifact.
    #[command(subcommand)]
    Build(BuildCommand),
    /// Print the JSON Schema of an implementation format.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Bindings of a project's aliases to published implementations.
    #[command(subcommand)]
    Binding(BindingCommand),
    /// Run the conformance suite; a passing run publishes the implementation.
    #[command(subcommand)]
    Conformance(ConformanceCommand),
    /// Run an operation of a bound implementation.
    Invoke {
        alias: String,
        #[arg(long)]
        operation: String,
        /// The operation's input, as JSON.
        #[arg(long)]
        input: String,
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BuildCommand {
    /// Build a DeclarativeBundle manifest (JSON).
    Declarative {
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Build an AuthoredComponent: a WebAssembly component importing only the Vadyl host interfaces.
    Component {
        /// The component (`.wasm`).
        #[arg(long)]
        wasm: PathBuf,
        /// `name:semver`.
        #[arg(long)]
        implementation: String,
        /// `kind@major`, e.g. `payment.charge@1`.
        #[arg(long)]
        contract: String,
        /// The descriptor (JSON): allowed origins, secrets, sensitive fields, conformance fixtures, limits.
        #[arg(long)]
        descriptor: PathBuf,
    },
    /// Register a BuiltInNative adapter of this binary as an implementation.
    Native {
        /// The adapter's name, e.g. `vadyl.webhook-hmac`.
        #[arg(long)]
        adapter: String,
        #[arg(long)]
        implementation: String,
        /// A descriptor replacing the adapter's default policy.
        #[arg(long)]
        descriptor: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConformanceCommand {
    Run {
        #[arg(long)]
        implementation: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// The DeclarativeBundle manifest schema.
    Declarative,
}

#[derive(Subcommand, Debug)]
pub enum BindingCommand {
    /// Bind ALIAS to `name:1.0.0` (pinned) or `name@^1` (floating); changes an existing binding.
    Create {
        alias: String,
        #[arg(long)]
        implementation: String,
        #[arg(long)]
        project: Option<String>,
    },
    List {
        #[arg(long)]
        project: Option<String>,
    },
    Show {
        alias: String,
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PublicationCommand {
    /// The newest valid publication version.
    Latest,
    /// One publication version (or one implementation in it), with its status.
    Version {
        version: String,
        #[arg(long)]
        implementation: Option<String>,
    },
    /// Withdraw a version; `latest` rolls back to the newest valid one.
    Invalidate {
        version: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args, Debug)]
pub struct KeyArg {
    /// Trusted public key: the verifier key `vadyl key show` prints, or base64/hex. Defaults to the
    /// data directory's own key.
    #[arg(long)]
    pub public_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain and check every signed checkpoint; exit 1 naming the first bad position.
    Verify(KeyArg),
    /// Rebuild every projection from position 1 to POSITION and print their digests.
    Replay {
        #[arg(long)]
        to: Option<u64>,
    },
    /// Sign a checkpoint over the whole log (if the head is not covered yet).
    Checkpoint,
    /// Write the history as canonical NDJSON with its signed checkpoint.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an export offline with only the public key.
    VerifyExport {
        file: PathBuf,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Print an RFC 6962 inclusion proof of the event at POSITION against a signed checkpoint.
    Prove {
        #[arg(long)]
        position: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify an inclusion proof offline with only the public key.
    VerifyProof {
        file: PathBuf,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Re-run a recorded invocation from what the host handed it (responses, time, memory, MACs),
    /// without network, and compare the output with the recorded one.
    ReplayInvocation { invocation_id: String },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Event log throughput beside raw-SQLite baselines measured in the same run.
    Log(vadyl::tools::bench::log::LogBenchOptions),
    /// Declarative invocation through the full path beside a direct call of the same upstream.
    Invoke(vadyl::tools::bench::invoke::InvokeBenchOptions),
}

/// Where a command's data lives: the data directory, or a server.
struct Conn {
    data_dir: PathBuf,
    server: Option<String>,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    let Cli { data_dir, server, command, .. } = cli;
    let cli = Conn { data_dir, server };
    match command {
        Command::Serve { listen, max_concurrent, request_timeout_secs, rate_limit, rate_limit_burst } => serve(
            &cli.data_dir,
            &listen,
            vadyl::http::Limits {
                max_concurrent,
                request_timeout: std::time::Duration::from_secs(request_timeout_secs.max(1)),
                per_token: vadyl::http::rate::TokenRate::new(rate_limit, rate_limit_burst),
            },
        ),
        Command::Key(KeyCommand::Show) => {
            let key = vadyl::storage::registry_key(&cli.data_dir)?;
            use vadyl::keys::Signer;
            out.print(
                &json!({
                    "algorithm": "ed25519", "keyName": vadyl::keys::KEY_NAME, "keyId": key.key_id_hex(),
                    "publicKey": key.public_key_base64(), "verifierKey": key.verifier_key(),
                }),
                |v| {
                    format!(
                        "{}\npublic key (base64): {}\nkey id: {}",
                        v["verifierKey"].as_str().unwrap_or(""),
                        v["publicKey"].as_str().unwrap_or(""),
                        v["keyId"].as_str().unwrap_or("")
                    )
                },
            );
            Ok(())
        }
        Command::Contract(c) => {
            let path = match &c {
                ContractCommand::List => "/contracts".to_owned(),
                ContractCommand::Show { contract } => {
                    let c: ContractRef = contract.parse()?;
                    format!("/contracts/{}/{}", c.kind, c.major_version)
                }
            };
            let v = read_api(&cli, &path)?;
            out.print(&v, |v| serde_json::to_string_pretty(v).unwrap_or_default());
            Ok(())
        }
        Command::Implementation(c) => {
            let path = match &c {
                ImplementationCommand::List => "/implementations".to_owned(),
                ImplementationCommand::Show { implementation_id } => {
                    let id: ImplementationId = implementation_id.parse()?;
                    format!("/implementations/{id}")
                }
            };
            let v = read_api(&cli, &path)?;
            out.print(&v, |v| serde_json::to_string_pretty(v).unwrap_or_default());
            Ok(())
        }
        Command::Publication(c) => publication(&cli, &out, c),
        Command::Connector(ConnectorCommand::Binding(c)) => binding(&cli, &out, c),
        Command::Connector(ConnectorCommand::Build(BuildCommand::Declarative { manifest })) => {
            let text =
                std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
            let document: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", manifest.display()))?;
            let v = call_api(&cli, reqwest::Method::POST, "/build/declarative", Some(document))?;
            out.print(&v, build_summary);
            Ok(())
        }
        Command::Connector(ConnectorCommand::Build(BuildCommand::Component {
            wasm,
            implementation,
            contract,
            descriptor,
        })) => {
            use base64::Engine;
            let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let descriptor = read_json_file(&descriptor)?;
            let id: ImplementationId = implementation.parse()?;
            let contract: ContractRef = contract.parse()?;
            let body = json!({
                "implementationId": id, "contract": contract, "descriptor": descriptor,
                "component": base64::engine::general_purpose::STANDARD.encode(&bytes),
            });
            let v = call_api(&cli, reqwest::Method::POST, "/build/component", Some(body))?;
            out.print(&v, build_summary);
            Ok(())
        }
        Command::Connector(ConnectorCommand::Build(BuildCommand::Native { adapter, implementation, descriptor })) => {
            let id: ImplementationId = implementation.parse()?;
            let descriptor = descriptor.as_deref().map(read_json_file).transpose()?;
            let body = json!({"implementationId": id, "adapter": adapter, "descriptor": descriptor});
            let v = call_api(&cli, reqwest::Method::POST, "/build/native", Some(body))?;
            out.print(&v, build_summary);
            Ok(())
        }
        Command::Connector(ConnectorCommand::Conformance(ConformanceCommand::Run { implementation })) => {
            let id: ImplementationId = implementation.parse()?;
            let report = match &cli.server {
                Some(_) => {
                    call_api(&cli, reqwest::Method::POST, "/conformance/run", Some(json!({"implementationId": id})))?
                }
                None => {
                    let app = open_registry(&cli.data_dir)?;
                    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
                    let json_mode = out.json;
                    let report =
                        runtime.block_on(app.run_conformance_with_progress(&local_actor(), &id, &mut |vector| {
                            if !json_mode {
                                eprintln!("  running vector {vector} …");
                            }
                        }))?;
                    app.registry().checkpoint(&local_actor())?;
                    serde_json::to_value(&report)?
                }
            };
            out.print(&report, |v| {
                let mut text = format!(
                    "conformance run {} of {}: {}\n",
                    v["runId"].as_str().unwrap_or("?"),
                    v["implementationId"].as_str().unwrap_or("?"),
                    if v["passed"] == json!(true) { "passed: true" } else { "passed: false" }
                );
                for c in v["checks"].as_array().into_iter().flatten() {
                    text.push_str(&format!(
                        "  {:<28} {}{}\n",
                        c["id"].as_str().unwrap_or("?"),
                        c["state"].as_str().unwrap_or("?"),
                        c["detail"].as_str().map(|d| format!(" — {d}")).unwrap_or_default()
                    ));
                }
                if let Some(p) = v["publicationVersion"].as_u64() {
                    text.push_str(&format!("published in publication version {p}"));
                }
                text.trim_end().to_owned()
            });
            if report["passed"] != json!(true) {
                bail!("conformance failed");
            }
            Ok(())
        }
        Command::Connector(ConnectorCommand::Invoke { alias, operation, input, project }) => {
            let project = project_arg(project)?;
            let alias: BindingAlias = alias.parse()?;
            let input: Value = serde_json::from_str(&input).context("--input is not JSON")?;
            let v = call_api(
                &cli,
                reqwest::Method::POST,
                "/invoke",
                Some(json!({"project": project, "alias": alias, "operation": operation, "input": input})),
            )?;
            out.print(&v, |v| {
                let head = format!(
                    "{} via {} (publication {}, {})",
                    v["invocationId"].as_str().unwrap_or("?"),
                    v["implementationId"].as_str().unwrap_or("?"),
                    v["publicationVersion"],
                    v["contentHash"].as_str().unwrap_or("?")
                );
                if v["output"].is_null() {
                    format!("{head}\nfailed: {}", serde_json::to_string_pretty(&v["error"]).unwrap_or_default())
                } else {
                    format!("{head}\n{}", serde_json::to_string_pretty(&v["output"]).unwrap_or_default())
                }
            });
            Ok(())
        }
        Command::Connector(ConnectorCommand::Schema(SchemaCommand::Declarative)) => {
            println!("{}", serde_json::to_string_pretty(&vadyl::runtime::declarative::manifest_json_schema())?);
            Ok(())
        }
        Command::Secret(c) => secret(&cli, &out, c),
        Command::Token(TokenCommand::Create { role, project, implementations, label }) => {
            let role: vadyl::ids::Role = role.parse()?;
            let body = json!({"role": role, "project": project, "implementations": implementations, "label": label});
            let v = call_api(&cli, reqwest::Method::POST, "/tokens", Some(body))?;
            out.print(&v, |v| {
                format!(
                    "{}\ntoken id {} ({}); shown once, stored only as a hash",
                    v["token"].as_str().unwrap_or("?"),
                    v["tokenId"].as_str().unwrap_or("?"),
                    v["role"].as_str().unwrap_or("?")
                )
            });
            Ok(())
        }
        Command::Token(TokenCommand::List) => {
            let v = read_api(&cli, "/tokens")?;
            out.print(&v, |v| serde_json::to_string_pretty(v).unwrap_or_default());
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { token_id, reason }) => {
            let v = call_api(
                &cli,
                reqwest::Method::POST,
                &format!("/tokens/{token_id}/revoke"),
                Some(json!({ "reason": reason })),
            )?;
            out.print(&v, |_| format!("revoked {token_id}"));
            Ok(())
        }
        Command::Audit(c) => audit_command(&cli.data_dir, &out, c),
        Command::Bench(BenchCommand::Invoke(opts)) => {
            let report = vadyl::tools::bench::invoke::run_invoke_bench(&opts).map_err(anyhow::Error::from_boxed)?;
            out.print(&serde_json::to_value(&report)?, |_| {
                let (d, c) = (&report.declarative, &report.component);
                format!(
                    "declarative invoke: median {:.0} µs, p99 {:.0} µs; direct call median {:.0} µs, p99 {:.0} µs; added {:.0} µs at the median ({} invocations)\n\
                     component invoke (no egress): median {:.0} µs, p99 {:.0} µs; raw wasmtime instantiate+call median {:.0} µs, p99 {:.0} µs; ratio {:.2}",
                    d.median_us, d.p99_us, d.baseline_median_us, d.baseline_p99_us, d.added_median_us, d.invocations,
                    c.median_us, c.p99_us, c.raw_median_us, c.raw_p99_us, c.ratio
                )
            });
            Ok(())
        }
        Command::Bench(BenchCommand::Log(opts)) => {
            let report = vadyl::tools::bench::log::run_log_bench(&opts).map_err(anyhow::Error::from_boxed)?;
            out.print(&serde_json::to_value(&report)?, |_| report.human());
            Ok(())
        }
    }
}

struct Output {
    json: bool,
}

impl Output {
    fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            println!("{}", human(value));
        }
    }
}

fn local_actor() -> EventMetadata {
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into());
    EventMetadata::actor(format!("local:{user}"))
}

fn open_registry(data_dir: &Path) -> anyhow::Result<App> {
    vadyl::storage::open(data_dir, OpenOptions::default())
        .with_context(|| format!("cannot open the registry in {}", data_dir.display()))
}

/// Where `vadyl serve` writes the first admin token (owner-only).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

fn serve(data_dir: &Path, listen: &str, limits: vadyl::http::Limits) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr =
        listen.parse().with_context(|| format!("--listen {listen:?} is not an address such as 127.0.0.1:8080"))?;
    let app = Arc::new(open_registry(data_dir)?);
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
        println!("vadyl listening on http://{local} (data directory {})", data_dir.display());
        Ok(vadyl::http::serve(app, listener, limits).await?)
    })
}

/// Reads `/api/Connector{path}` from the server, or answers it in-process from the data directory
/// through the same router, so both modes give the same JSON.
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

fn read_api(cli: &Conn, path: &str) -> anyhow::Result<Value> {
    call_api(cli, reqwest::Method::GET, path, None)
}

fn call_api(cli: &Conn, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let (status, value) = match &cli.server {
        Some(server) => {
            let url = format!("{}/api/Connector{path}", server.trim_end_matches('/'));
            let client = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
            let mut req = client.request(method, &url);
            if let Some(token) = bearer_token(&cli.data_dir)? {
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
            let app = Arc::new(open_registry(&cli.data_dir)?);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let result = runtime.block_on(in_process(app.clone(), method, path, body));
            app.registry().snapshot_if_stale(1000)?;
            result?
        }
    };
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        let mut detail =
            value.get("detail").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| value.to_string());
        for e in value.get("errors").and_then(Value::as_array).into_iter().flatten() {
            detail.push_str(&format!(
                "\n  {}: {}",
                e["path"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            ));
        }
        bail!("{detail} (HTTP {status})")
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

fn publication(cli: &Conn, out: &Output, command: PublicationCommand) -> anyhow::Result<()> {
    let human = |v: &Value| -> String {
        let entries = v["entries"].as_array().map(|e| {
            e.iter()
                .map(|e| {
                    format!(
                        "  {} ({}, {}) {}",
                        e["implementationId"].as_str().unwrap_or("?"),
                        e["source"].as_str().unwrap_or("?"),
                        e["contract"].as_str().unwrap_or("?"),
                        e["contentHash"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        format!(
            "publication {} ({}{})\n{}",
            v["publicationVersion"],
            v["status"].as_str().unwrap_or("?"),
            if v["isLatest"] == json!(true) { ", latest" } else { "" },
            entries.unwrap_or_default()
        )
    };
    match command {
        PublicationCommand::Latest => {
            let v = read_api(cli, "/publication/latest")?;
            out.print(&v, human);
        }
        PublicationCommand::Version { version, implementation } => {
            let version: PublicationVersion = version.parse()?;
            match implementation {
                Some(id) => {
                    let id: ImplementationId = id.parse()?;
                    let v = read_api(cli, &format!("/publication/version/{version}/{id}"))?;
                    out.print(&v, |v| serde_json::to_string_pretty(v).unwrap_or_default());
                }
                None => {
                    let v = read_api(cli, &format!("/publication/version/{version}"))?;
                    out.print(&v, human);
                }
            }
        }
        PublicationCommand::Invalidate { version, reason } => {
            let version: PublicationVersion = version.parse()?;
            let v = call_api(
                cli,
                reqwest::Method::POST,
                "/publication/invalidate",
                Some(json!({ "publicationVersion": version, "reason": reason })),
            )?;
            out.print(&v, |v| match v["latest"]["publicationVersion"].as_u64() {
                Some(l) => format!("invalidated publication {version}; latest is now {l}"),
                None => format!("invalidated publication {version}; no valid publication remains"),
            });
        }
    }
    Ok(())
}

fn project_arg(project: Option<String>) -> anyhow::Result<ProjectId> {
    Ok(match project {
        Some(p) => p.parse()?,
        None => ProjectId::default_project(),
    })
}

fn binding(cli: &Conn, out: &Output, command: BindingCommand) -> anyhow::Result<()> {
    let human = |v: &Value| {
        let r = &v["resolvesTo"];
        let now = match r["status"].as_str() {
            Some("resolved") => format!(
                "{} (publication {}, {})",
                r["implementationId"].as_str().unwrap_or("?"),
                r["publicationVersion"],
                r["contentHash"].as_str().unwrap_or("?")
            ),
            Some(other) => other.to_owned(),
            None => "?".to_owned(),
        };
        format!(
            "{}/{} → {}  resolves to {now}",
            v["project"].as_str().unwrap_or("?"),
            v["alias"].as_str().unwrap_or("?"),
            v["target"].as_str().unwrap_or("?")
        )
    };
    match command {
        BindingCommand::Create { alias, implementation, project } => {
            let project = project_arg(project)?;
            let alias: BindingAlias = alias.parse()?;
            let target: BindingTarget = implementation.parse()?;
            let v = call_api(
                cli,
                reqwest::Method::POST,
                "/bindings",
                Some(json!({ "project": project, "alias": alias, "implementation": target })),
            )?;
            out.print(&v, human);
        }
        BindingCommand::List { project } => {
            let project = project_arg(project)?;
            let v = read_api(cli, &format!("/bindings?project={project}"))?;
            out.print(&v, |v| {
                let list = v["bindings"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    format!("project {project} has no bindings")
                } else {
                    list.iter().map(&human).collect::<Vec<_>>().join("\n")
                }
            });
        }
        BindingCommand::Show { alias, project } => {
            let project = project_arg(project)?;
            let alias: BindingAlias = alias.parse()?;
            let v = read_api(cli, &format!("/bindings/{alias}?project={project}"))?;
            out.print(&v, human);
        }
    }
    Ok(())
}

fn secret(cli: &Conn, out: &Output, command: SecretCommand) -> anyhow::Result<()> {
    if cli.server.is_some() {
        bail!("secrets are set on the registry's own data directory, not through --server");
    }
    let app = open_registry(&cli.data_dir)?;
    match command {
        SecretCommand::Set { name, project, from_env } => {
            let project = project_arg(project)?;
            let value = match from_env {
                Some(var) => std::env::var(&var).with_context(|| format!("environment variable {var} is not set"))?,
                None => {
                    use std::io::Read;
                    let mut v = String::new();
                    std::io::stdin().read_to_string(&mut v).context("cannot read the secret from standard input")?;
                    v
                }
            };
            // A trailing newline from `echo` or a heredoc is not part of the secret.
            let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
            if value.is_empty() {
                bail!("the secret value is empty");
            }
            let meta = app.set_secret(&project, &name, value.as_bytes())?;
            out.print(&serde_json::to_value(&meta)?, |_| {
                format!("stored {} version {} in project {project} ({})", meta.name, meta.version, meta.fingerprint)
            });
        }
        SecretCommand::List { project } => {
            let project = project_arg(project)?;
            let list = app.list_secrets(&project)?;
            out.print(&serde_json::to_value(&list)?, |_| {
                list.iter()
                    .map(|m| format!("{} v{} {}", m.name, m.version, m.fingerprint))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

fn trusted_key(data_dir: &Path, arg: &KeyArg) -> anyhow::Result<TrustedKey> {
    match &arg.public_key {
        Some(k) => {
            // Accept the key itself or a file holding it.
            let text = if Path::new(k).is_file() { std::fs::read_to_string(k)? } else { k.clone() };
            Ok(TrustedKey::parse(&text)?)
        }
        None => {
            let key = vadyl::storage::registry_key(data_dir)?;
            Ok(TrustedKey::parse(&key.verifier_key())?)
        }
    }
}

/// Opens the log alone, without registering anything: audit reads must not write.
fn open_log(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    let path = data_dir.join(EVENTS_DB);
    if !path.exists() {
        bail!("there is no event log at {}", path.display());
    }
    Ok(SqliteStore::open(&path, Durability::Full)?)
}

fn read_json_file(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn build_summary(v: &Value) -> String {
    format!(
        "{} {} ({}, {})\ncontent hash {}\nsignature {}",
        if v["created"] == json!(true) { "built" } else { "already built:" },
        v["implementationId"].as_str().unwrap_or("?"),
        v["source"].as_str().unwrap_or("?"),
        v["contract"].as_str().unwrap_or("?"),
        v["contentHash"].as_str().unwrap_or("?"),
        v["signature"].as_str().unwrap_or("?")
    )
}

fn audit_command(data_dir: &Path, out: &Output, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::ReplayInvocation { invocation_id } => {
            let app = open_registry(data_dir)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(app.replay_invocation(&invocation_id))?;
            out.print(&serde_json::to_value(&report)?, |_| {
                format!(
                    "replayed {} ({} {}) from {} recorded exchange(s), {} time reading(s), {} other host answer(s), without network\n\
                     recorded output: {}\nreplayed output: {}\n{}",
                    report.invocation_id,
                    report.implementation_id,
                    report.operation,
                    report.exchanges,
                    report.time_readings,
                    report.tape_entries,
                    report.recorded,
                    report.replayed,
                    if report.matches { "the same output" } else { "DIFFERENT output" }
                )
            });
            if !report.matches {
                bail!("the replay did not reproduce the recorded output");
            }
            Ok(())
        }
        AuditCommand::Verify(key) => {
            let trusted = trusted_key(data_dir, &key)?;
            let store = open_log(data_dir)?;
            let report = audit::verify(&store, &trusted)?;
            out.print(&serde_json::to_value(&report)?, |_| {
                if report.ok() {
                    format!(
                        "ok: {} events, chain intact, {} checkpoints verified (head {})",
                        report.events, report.checkpoints_verified, report.head_hash
                    )
                } else {
                    report
                        .problems
                        .iter()
                        .map(|p| format!("position {}: {}", p.position, p.reason))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            });
            match report.problems.first() {
                None => Ok(()),
                Some(first) => {
                    bail!("verification failed: first bad position is {} ({})", first.position, first.reason)
                }
            }
        }
        AuditCommand::Replay { to } => {
            let store = open_log(data_dir)?;
            let report = audit::replay_report(&store, to)?;
            out.print(&serde_json::to_value(&report)?, |_| {
                let s = &report.summary;
                let mut text = format!(
                    "replayed to position {}\nstate digest {}\n",
                    s.position, report.digests.state
                );
                for (name, d) in &report.digests.projections {
                    text.push_str(&format!("  {name:<16} {d}\n"));
                }
                text.push_str(&format!(
                    "contracts {}, implementations {}, conformance runs {}, bindings {}, publications {} (latest {}, invalidated {}), checkpoints {}",
                    s.contracts, s.implementations, s.conformance_runs, s.bindings, s.publications,
                    s.latest_publication.map_or("none".into(), |v| v.to_string()), s.invalidated_publications, s.checkpoints
                ));
                text
            });
            Ok(())
        }
        AuditCommand::Checkpoint => {
            let app = open_registry(data_dir)?;
            let registry = app.registry();
            let cp = registry.checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
            out.print(&serde_json::to_value(&cp)?, |_| cp.note.clone());
            Ok(())
        }
        AuditCommand::Export { out: path } => {
            let app = open_registry(data_dir)?;
            let registry = app.registry();
            let cp = registry.checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
            let written = write_export(registry.store(), &cp.note, cp.tree_size, &path)?;
            out.print(
                &json!({"events": written, "treeSize": cp.tree_size, "rootHash": cp.root_hash, "out": path}),
                |_| {
                    format!(
                        "exported {written} events to {} (checkpoint over {} events, root {})",
                        path.display(),
                        cp.tree_size,
                        cp.root_hash
                    )
                },
            );
            Ok(())
        }
        AuditCommand::VerifyExport { file, key } => {
            let trusted = trusted_key(data_dir, &key)?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let summary = audit::verify_export(&bytes, &trusted)?;
            out.print(&serde_json::to_value(&summary)?, |_| {
                format!(
                    "ok: {} events verify against the signed checkpoint (root {})",
                    summary.events, summary.root_hash
                )
            });
            Ok(())
        }
        AuditCommand::Prove { position, out: path } => {
            let app = open_registry(data_dir)?;
            let registry = app.registry();
            let cp = registry.checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
            let proof = audit::prove(registry.store(), position, &cp.note, cp.tree_size)?;
            let text = serde_json::to_string_pretty(&proof)?;
            match path {
                Some(p) => std::fs::write(&p, &text).with_context(|| format!("cannot write {}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
        AuditCommand::VerifyProof { file, key } => {
            let trusted = trusted_key(data_dir, &key)?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let proof: audit::InclusionProof =
                serde_json::from_str(&text).with_context(|| format!("{} is not an inclusion proof", file.display()))?;
            let summary = audit::verify_proof(&proof, &trusted)?;
            out.print(&serde_json::to_value(&summary)?, |_| {
                format!(
                    "ok: event {} ({}) is included in the signed tree of {} events (root {})",
                    summary.position, summary.event_type, summary.tree_size, summary.root_hash
                )
            });
            Ok(())
        }
    }
}

/// Writes the export beside `out` and renames it into place, so a failed export leaves nothing.
fn write_export(
    store: &dyn vadyl::events::store::EventStore,
    note: &str,
    tree_size: u64,
    out: &Path,
) -> anyhow::Result<u64> {
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let written = match audit::export(store, note, tree_size, &mut w) {
        Ok(n) => n,
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
        }
    };
    let file = w.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot move the export into place at {}", out.display()))?;
    Ok(written)
}
