//! The clap definitions of every command, subcommand and option, and the parsing of option values
//! the commands share.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use vadyl::ids::ProjectId;

#[derive(Parser, Debug)]
#[command(name = "vadyl", version, about = "Event-sourced publication registry and runtime for connectors")]
pub struct Cli {
    /// Data directory (SQLite log, keys, snapshots); created on first use.
    #[arg(long, global = true, env = "VADYL_DATA_DIR", default_value = "./vadyl-data")]
    pub data_dir: PathBuf,
    /// Keep the log, tokens, artifacts and secret rows in this PostgreSQL database, shared with other
    /// nodes (postgres://user@host:port/db); the data directory then keeps this node's own state.
    #[arg(long, global = true, env = "VADYL_STORE")]
    pub store: Option<String>,
    /// The directory of the registry key and the secrets master key (default: <data-dir>/keys);
    /// nodes that share a database must be given the same keys.
    #[arg(long, global = true, env = "VADYL_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
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
        /// Sign a checkpoint over new events at least this often (seconds), so that recent events
        /// can be proven.
        #[arg(long, default_value_t = 10)]
        checkpoint_interval_secs: u64,
        /// Sign a checkpoint sooner, as soon as this many events are not covered by one.
        #[arg(long, default_value_t = 1000)]
        checkpoint_events: u64,
        /// Events buffered for each subscriber of the live feed (`/events/stream`).
        #[arg(long, default_value_t = 1024)]
        feed_buffer: usize,
        /// A feed subscriber whose buffer stays full this long (milliseconds) has stopped reading,
        /// and is disconnected with a reason.
        #[arg(long, default_value_t = 10_000)]
        feed_stall_ms: u64,
        /// Seconds between heartbeat comments on an idle feed.
        #[arg(long, default_value_t = 15)]
        feed_heartbeat_secs: u64,
        /// Largest component upload accepted by `POST /build/component`, in MiB (413 beyond).
        #[arg(long, default_value_t = vadyl::http::build::DEFAULT_COMPONENT_LIMIT >> 20)]
        max_component_mib: u64,
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
    /// Connector guests as source: scaffold one per language, build it into a component.
    #[command(subcommand)]
    Guest(GuestCommand),
}

#[derive(Subcommand, Debug)]
pub enum GuestCommand {
    /// Write a new guest into DIR that builds and passes `vadyl connector test` as it is.
    New {
        /// rust, c, python or js.
        #[arg(long)]
        lang: String,
        /// The contract it implements, e.g. `payment.charge@1`.
        #[arg(long)]
        contract: String,
        dir: PathBuf,
    },
    /// Build the guest in DIR (made by `guest new`) with its language's toolchain. Python and
    /// JavaScript toolchains are installed on first use (PyPI, npm) under --toolchains.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component; DIR/build/component.wasm by default.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the Python and JavaScript toolchains live; $VADYL_TOOLCHAINS, else
        /// ~/.cache/vadyl/toolchains.
        #[arg(long)]
        toolchains: Option<PathBuf>,
    },
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
    /// An author's loop: run the contract's conformance vectors against a component (with its
    /// descriptor's fixtures) or a declarative manifest, here, without a server, publishing
    /// nothing and writing to no registry's log. Exit 1 when a check fails.
    Test {
        /// The component to test (with --descriptor and --contract).
        #[arg(long, conflicts_with = "manifest", required_unless_present = "manifest", requires_all = ["descriptor", "contract"])]
        wasm: Option<PathBuf>,
        /// The component's descriptor (allow-list, secrets, fixtures, limits).
        #[arg(long)]
        descriptor: Option<PathBuf>,
        /// The contract the component implements, e.g. `payment.charge@1`.
        #[arg(long)]
        contract: Option<String>,
        /// A declarative manifest to test instead of a component.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
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
    /// Recompute the hash chain and check every signed checkpoint; exit 1 naming the first bad
    /// position. With --server: download the export and recompute everything here.
    Verify(KeyArg),
    /// Rebuild every projection from position 1 to POSITION and print their digests. With
    /// --server: from the downloaded, verified export (needs --public-key).
    Replay {
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Sign a checkpoint over the whole log (if the head is not covered yet). With --server: fetch
    /// the newest signed checkpoint and check its signature.
    Checkpoint(KeyArg),
    /// Write the history as canonical NDJSON with its signed checkpoint (with --server: download it).
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
    /// Print an RFC 6962 inclusion proof of one event against a signed checkpoint (with --server:
    /// fetched, and verified here when --public-key is given).
    Prove {
        #[arg(long, required_unless_present = "event_id", conflicts_with = "event_id")]
        position: Option<u64>,
        #[arg(long)]
        event_id: Option<String>,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Verify an inclusion proof offline with only the public key.
    VerifyProof {
        file: PathBuf,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Page through the log as stored (canonical envelopes), oldest first; with --all, follow the
    /// cursor to the head and check every hash link on the way.
    Events {
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Events per page (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        stream: Option<String>,
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// Follow the cursor until the head.
        #[arg(long)]
        all: bool,
    },
    /// Prove that the log still extends a checkpoint you remember (a file holding its signed note)
    /// and verify the proof here; a smaller or diverging history is refused as a fork.
    ProveConsistency {
        /// The signed note of the checkpoint you remember (`vadyl audit checkpoint` prints one).
        #[arg(long)]
        from_checkpoint: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Verify a consistency proof offline against the checkpoint you remember.
    VerifyConsistency {
        file: PathBuf,
        #[arg(long)]
        from_checkpoint: PathBuf,
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
    /// Inclusion-proof latency as the log grows (tiles vs reading every hash) and the live feed's
    /// fan-out and cost to writers.
    Audit(vadyl::tools::bench::audit::AuditBenchOptions),
}

/// The project a `--project` option names, or the default project without one.
pub fn project_arg(project: Option<String>) -> anyhow::Result<ProjectId> {
    Ok(match project {
        Some(p) => p.parse()?,
        None => ProjectId::default_project(),
    })
}
