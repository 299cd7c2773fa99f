//! `vadyl bench invoke`: declarative invocation through the full path (binding resolution, artifact
//! by content hash, input check, host loop, egress with host-attached auth, response mapping,
//! invocation record) against a loopback upstream, beside a direct call of the same upstream with
//! the same HTTP client stack, in the same run; and, for one guest per language (Rust, C, Python,
//! JavaScript, built from `guests/`), its size, compile, cached load, instantiation, and invocation
//! through the full path (binding resolution, pooled pre-instantiated instance, bridge, call,
//! record; no egress) beside a raw Wasmtime instantiate-and-call of the same component with the
//! same engine configuration. `component` is the Rust guest's row. Latencies are per call; medians
//! and p99.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::{ensure, BenchResult};
use crate::app::invoke::{InvokeRequest, InvokeTarget};
use crate::app::lifecycle::ComponentUpload;
use crate::app::registry::OpenOptions;
use crate::app::App;
use crate::events::envelope::EventMetadata;
use crate::runtime::artifact::ArtifactStore as _;

#[derive(clap::Args, Debug, Clone)]
pub struct InvokeBenchOptions {
    /// Measured invocations (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 2000)]
    pub invocations: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub median_us: f64,
    pub p99_us: f64,
    pub baseline_median_us: f64,
    pub baseline_p99_us: f64,
    pub added_median_us: f64,
    pub ratio: f64,
    pub invocations: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeBenchReport {
    pub declarative: Latency,
    pub component: ComponentLatency,
    /// One entry per guest language (Rust, C, Python, JavaScript), each beside raw Wasmtime on the
    /// same component in the same run.
    pub languages: Vec<LanguageFigures>,
}

/// What a guest language costs: its component's size, compile time and memory, instantiation, and
/// the invoke path (refused input, no egress) beside a raw instantiate-and-call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LanguageFigures {
    pub language: &'static str,
    pub guest: &'static str,
    pub contract: &'static str,
    pub component_bytes: u64,
    /// The language's own build (cargo, clang, componentize-py, ComponentizeJS), once.
    pub toolchain_build_ms: u64,
    /// Cranelift compile of the component (validation included), once, no cache.
    pub compile_ms: u64,
    /// How much the process's peak resident memory grew during that compile.
    pub compile_peak_rss_growth_mib: f64,
    /// Loading the compiled code from the node's cache (what every start after the first pays).
    pub cached_load_ms: f64,
    /// New store + pooled instantiation, no call.
    pub instantiate_median_us: f64,
    pub instantiate_p99_us: f64,
    /// `App::invoke` through the binding: resolve, check the input, instantiate, call, record.
    pub invoke_median_us: f64,
    pub invoke_p99_us: f64,
    /// Raw Wasmtime: new store, instantiate, call with ready-made values.
    pub raw_median_us: f64,
    pub raw_p99_us: f64,
    pub ratio: f64,
    pub invocations: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentLatency {
    pub median_us: f64,
    pub p99_us: f64,
    pub raw_median_us: f64,
    pub raw_p99_us: f64,
    pub ratio: f64,
    pub invocations: usize,
}

/// Per-call latencies of one measured path, in microseconds, sorted.
struct Samples(Vec<f64>);

impl Samples {
    /// Times `n` calls of `call`, after `n / 10` untimed warm-up calls; a failed call fails the bench.
    async fn of(n: usize, mut call: impl AsyncFnMut() -> BenchResult<()>) -> BenchResult<Samples> {
        for _ in 0..n / 10 {
            call().await?;
        }
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            call().await?;
            latencies.push(started.elapsed().as_secs_f64() * 1e6);
        }
        latencies.sort_by(f64::total_cmp);
        Ok(Samples(latencies))
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }

    fn median(&self) -> f64 {
        self.percentile(0.5)
    }

    fn p99(&self) -> f64 {
        self.percentile(0.99)
    }

    /// This median over `baseline`'s, to two decimals.
    fn ratio_to(&self, baseline: &Samples) -> f64 {
        let b = baseline.median();
        if b > 0.0 {
            (self.median() / b * 100.0).round() / 100.0
        } else {
            0.0
        }
    }
}

const CHARGE: &str = r#"{"id":"ch_bench","object":"charge","amount":2000,"currency":"usd","status":"succeeded","captured":true,"created":1764072000}"#;

pub fn run_invoke_bench(opts: &InvokeBenchOptions) -> BenchResult<InvokeBenchReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // The upstream: a minimal charge endpoint on loopback.
        let upstream = axum::Router::new()
            .route("/v1/charges", axum::routing::post(|| async { ([("content-type", "application/json")], CHARGE) }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, upstream).await;
        });
        let base = format!("http://127.0.0.1:{port}");

        let dir = tempfile::tempdir()?;
        let app = crate::storage::open(dir.path(), OpenOptions::default())?;
        let registry = app.registry();
        let project = crate::ids::ProjectId::default_project();
        app.set_secret(&project, "stripe-secret-key", b"sk_test_bench_secret")?;
        let mut manifest: serde_json::Value =
            serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/stripe.connector.json")))?;
        manifest["config"]["baseUrl"] = json!(base);
        if let Some(allow) = manifest["egress"]["allow"].as_array_mut() {
            allow.push(json!({"scheme": "http", "host": "127.0.0.1", "port": port}));
        }
        let meta = EventMetadata::actor("bench");
        let built = app.build_declarative(&meta, &manifest)?;
        let report = app.run_conformance(&meta, &built.implementation_id).await?;
        ensure!(report.passed, "the bench manifest failed conformance: {:?}", report.checks);
        let target: crate::ids::BindingTarget = built.implementation_id.to_string().parse()?;
        registry.execute(&meta, |s| {
            crate::commands::bind(s, project.clone(), "bench".parse().expect("valid alias"), target.clone())
        })?;

        let input = json!({"amount": 2000, "currency": "usd", "source": "tok_visa", "metadata": []});
        let request = || InvokeRequest {
            project: project.clone(),
            target: InvokeTarget::Alias("bench".parse().expect("valid alias")),
            operation: "charge".into(),
            input: input.clone(),
        };
        let n = opts.invocations.max(10);
        let ours = Samples::of(n, async || {
            let r = app.invoke(request()).await?;
            ensure!(r.output.is_some(), "the bench invocation failed: {:?}", r.error);
            Ok(())
        })
        .await?;

        // Baseline: the same request with the same HTTP client library, a kept-alive client as a
        // direct caller would use.
        let body = "amount=2000&currency=usd&source=tok_visa";
        let client = reqwest::Client::builder().no_proxy().build()?;
        let url = format!("{base}/v1/charges");
        let baseline = Samples::of(n, async || {
            let resp = client
                .post(&url)
                .header("authorization", "Bearer sk_test_bench_secret")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await?;
            let bytes = resp.bytes().await?;
            let _: serde_json::Value = serde_json::from_slice(&bytes)?;
            Ok(())
        })
        .await?;
        let mut languages = Vec::new();
        for guest in LANGUAGE_GUESTS {
            languages.push(language_bench(&app, dir.path(), &meta, &project, guest, n).await?);
        }
        // The component figure is the Rust guest's row: the same guest, input and raw baseline.
        let rust = languages.iter().find(|l| l.language == "rust").ok_or("the Rust guest was not measured")?;
        let component = ComponentLatency {
            median_us: rust.invoke_median_us,
            p99_us: rust.invoke_p99_us,
            raw_median_us: rust.raw_median_us,
            raw_p99_us: rust.raw_p99_us,
            ratio: rust.ratio,
            invocations: rust.invocations,
        };
        Ok(InvokeBenchReport {
            component,
            languages,
            declarative: Latency {
                median_us: ours.median().round(),
                p99_us: ours.p99().round(),
                baseline_median_us: baseline.median().round(),
                baseline_p99_us: baseline.p99().round(),
                added_median_us: (ours.median() - baseline.median()).round(),
                ratio: ours.ratio_to(&baseline),
                invocations: n,
            },
        })
    })
}

/// A host for the raw baseline: the measured call makes no host call, and any that happened would
/// be refused.
struct NoHost;

impl crate::runtime::adapter::StepHost for NoHost {
    fn build_plan(
        &mut self,
        _: crate::runtime::adapter::PlanRequest,
    ) -> Result<u64, crate::runtime::adapter::AdapterError> {
        Err(crate::runtime::adapter::AdapterError::Host("no host in the raw baseline".into()))
    }
    fn log(&mut self, _: &str, _: &str, _: serde_json::Value) {}
    fn record_span(&mut self, _: &str, _: serde_json::Value) {}
    fn now_ms(&mut self) -> u64 {
        0
    }
    fn hmac_sha256(&mut self, _: &str, _: &[u8]) -> Result<Vec<u8>, crate::runtime::adapter::AdapterError> {
        Err(crate::runtime::adapter::AdapterError::Host("no host in the raw baseline".into()))
    }
    fn assert_capability(&mut self, _: &str) -> Result<(), crate::runtime::adapter::AdapterError> {
        Err(crate::runtime::adapter::AdapterError::Host("no host in the raw baseline".into()))
    }
    fn attach_auth(
        &mut self,
        _: u64,
        _: crate::runtime::adapter::EgressAuth,
    ) -> Result<(), crate::runtime::adapter::AdapterError> {
        Err(crate::runtime::adapter::AdapterError::Host("no host in the raw baseline".into()))
    }
    fn secret_metadata(
        &mut self,
        _: &str,
    ) -> Result<crate::runtime::adapter::SecretInfo, crate::runtime::adapter::AdapterError> {
        Err(crate::runtime::adapter::AdapterError::Host("no host in the raw baseline".into()))
    }
    fn memory(
        &mut self,
        _: crate::runtime::adapter::MemoryCall,
    ) -> Result<crate::runtime::adapter::MemoryAnswer, crate::runtime::adapter::MemoryFailure> {
        Err(crate::runtime::adapter::MemoryFailure::Denied("no host in the raw baseline".into()))
    }
}

/// Raw Wasmtime: the same component, engine configuration, limits and pre-instantiation; a new
/// store, instantiate, call with ready-made values. No binding, bridge, host loop or record.
async fn raw_calls(
    adapter: &crate::runtime::component::ComponentAdapter,
    operation: &str,
    input: &serde_json::Value,
    n: usize,
) -> BenchResult<Samples> {
    let (index, args) = adapter.raw_call_parts(operation, input).ok_or("the guest lacks the operation")?;
    Samples::of(n, async || {
        let mut host = NoHost;
        let mut store = adapter.new_store(&mut host);
        let instance = adapter.instance_pre().instantiate(&mut store)?;
        let func = instance.get_func(&mut store, index).ok_or("no export")?;
        let mut results = [wasmtime::component::Val::Bool(false)];
        func.call(&mut store, &args, &mut results)?;
        Ok(())
    })
    .await
}

/// A guest per language, and an input it refuses before any host call (so that what is measured
/// is the path into and out of the guest, the same for every language).
struct LanguageGuest {
    language: &'static str,
    guest: &'static str,
    contract: &'static str,
    world: &'static str,
    operation: &'static str,
    input: &'static str,
}

const LANGUAGE_GUESTS: &[LanguageGuest] = &[
    LanguageGuest {
        language: "rust",
        guest: "stripe-charge-rust",
        contract: "payment.charge@1",
        world: "payment-charge-v1",
        operation: "charge",
        input: r#"{"amount": 2000, "currency": "u5d", "source": "tok_visa", "metadata": []}"#,
    },
    LanguageGuest {
        language: "c",
        guest: "webhook-c",
        contract: "webhook.deliver@1",
        world: "webhook-deliver-v1",
        operation: "deliver",
        input: r#"{"endpointUrl": "ftp://hooks.example.com/x", "eventType": "t", "eventId": "e", "payload": "{}", "occurredAt": "2026-11-25T12:00:00Z", "headers": []}"#,
    },
    LanguageGuest {
        language: "python",
        guest: "stripe-charge-python",
        contract: "payment.charge@1",
        world: "payment-charge-v1",
        operation: "charge",
        input: r#"{"amount": 2000, "currency": "u5d", "source": "tok_visa", "metadata": []}"#,
    },
    LanguageGuest {
        language: "js",
        guest: "stripe-charge-js",
        contract: "payment.charge@1",
        world: "payment-charge-v1",
        operation: "charge",
        input: r#"{"amount": 2000, "currency": "u5d", "source": "tok_visa", "metadata": []}"#,
    },
];

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`); 0 where /proc is not there.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak resident set to the current one (Linux: `5` into `clear_refs`), so that the
/// peak read afterwards is this compile's, not an earlier guest's.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn build_guest(g: &LanguageGuest, out_dir: &std::path::Path) -> BenchResult<Vec<u8>> {
    use crate::tools::guests;
    let dir = guests::guests_dir().join(g.guest);
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/worlds/connector");
    let toolchains = guests::repository_toolchains_dir();
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("guests");
    Ok(match g.language {
        "rust" => guests::rust::build_rust_component(&dir, &[], &[], &target)?,
        "c" => guests::c::build_c_component(&dir, &wit, g.world, &[], &out_dir.join("c"))?,
        "python" => guests::python::build_python_component(
            &dir,
            "app",
            &wit,
            g.world,
            &[],
            &toolchains,
            &out_dir.join("python").join("component.wasm"),
        )?,
        _ => guests::js::build_js_component(
            &dir.join("app.js"),
            &wit,
            g.world,
            &toolchains,
            &out_dir.join("js").join("component.wasm"),
        )?,
    })
}

async fn language_bench(
    app: &App,
    data_dir: &std::path::Path,
    meta: &EventMetadata,
    project: &crate::ids::ProjectId,
    g: &LanguageGuest,
    n: usize,
) -> BenchResult<LanguageFigures> {
    let started = Instant::now();
    let wasm = build_guest(g, &data_dir.join("guest-builds"))?;
    let toolchain_build_ms = started.elapsed().as_millis() as u64;
    let component_bytes = wasm.len() as u64;
    let (kind, major) = g.contract.split_once('@').ok_or("a contract is kind@major")?;
    let spec = crate::contracts::load_embedded()?
        .contract(kind, major.parse()?)
        .cloned()
        .ok_or("the bench contract is missing")?;

    // Compile once, fresh, watching the peak resident set.
    let raw_runtime =
        crate::runtime::component::ComponentRuntime::new(&data_dir.join(format!("raw-{}", g.language)), [9u8; 32])?;
    reset_peak_rss();
    let rss_before = status_bytes("VmRSS:");
    let started = Instant::now();
    raw_runtime.check(&wasm, &spec)?;
    let compile_ms = started.elapsed().as_millis() as u64;
    let compile_peak_rss_growth_mib =
        ((status_bytes("VmHWM:").saturating_sub(rss_before)) as f64 / (1 << 20) as f64 * 10.0).round() / 10.0;

    let descriptor: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        crate::tools::guests::guests_dir().join(g.guest).join("vadyl-descriptor.json"),
    )?)?;
    let id: crate::ids::ImplementationId = format!("bench-{}:1.0.0", g.language).parse()?;
    app.build_component(meta, id.clone(), g.contract.parse()?, &descriptor, ComponentUpload::new(wasm))?;
    let report = app.run_conformance(meta, &id).await?;
    ensure!(report.passed, "the {} bench guest failed conformance: {:?}", g.language, report.checks);
    let alias: crate::ids::BindingAlias = format!("bench-{}", g.language).parse()?;
    let target: crate::ids::BindingTarget = id.to_string().parse()?;
    app.registry().execute(meta, |s| crate::commands::bind(s, project.clone(), alias.clone(), target.clone()))?;
    let input: serde_json::Value = serde_json::from_str(g.input)?;
    let invoke = Samples::of(n, async || {
        let r = app
            .invoke(InvokeRequest {
                project: project.clone(),
                target: InvokeTarget::Alias(alias.clone()),
                operation: g.operation.into(),
                input: input.clone(),
            })
            .await?;
        ensure!(r.error.as_ref().is_some_and(|e| e["code"] == "invalid-input"), "unexpected answer {r:?}");
        Ok(())
    })
    .await?;

    // Raw Wasmtime on the stored artifact (descriptor embedded), compiled into its own cache.
    let view = app.registry().read(|s| s.implementation(&id).cloned()).ok_or("the bench guest vanished")?;
    let artifacts = crate::storage::artifacts::FileArtifacts::open(&data_dir.join("artifacts"))?;
    let bytes = artifacts.get(&view.content_hash)?.ok_or("the bench artifact vanished")?;
    raw_runtime.load(&view.content_hash, &bytes, &spec)?;
    let reopened =
        crate::runtime::component::ComponentRuntime::new(&data_dir.join(format!("raw-{}", g.language)), [9u8; 32])?;
    let started = Instant::now();
    let adapter = reopened.load(&view.content_hash, &bytes, &spec)?;
    let cached_load_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    let instantiate = Samples::of(n, async || {
        let mut host = NoHost;
        let mut store = adapter.new_store(&mut host);
        adapter.instance_pre().instantiate(&mut store)?;
        Ok(())
    })
    .await?;
    let raw = raw_calls(&adapter, g.operation, &input, n).await?;
    Ok(LanguageFigures {
        language: g.language,
        guest: g.guest,
        contract: g.contract,
        component_bytes,
        toolchain_build_ms,
        compile_ms,
        compile_peak_rss_growth_mib,
        cached_load_ms,
        instantiate_median_us: instantiate.median().round(),
        instantiate_p99_us: instantiate.p99().round(),
        invoke_median_us: invoke.median().round(),
        invoke_p99_us: invoke.p99().round(),
        raw_median_us: raw.median().round(),
        raw_p99_us: raw.p99().round(),
        ratio: invoke.ratio_to(&raw),
        invocations: n,
    })
}
