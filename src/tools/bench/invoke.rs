//! `vadyl bench invoke`: declarative invocation through the full path (binding resolution, artifact
//! by content hash, input check, host loop, egress with host-attached auth, response mapping,
//! invocation record) against a loopback upstream, beside a direct call of the same upstream with
//! the same HTTP client stack, in the same run; and component invocation through the full path
//! (binding resolution, pooled pre-instantiated instance, bridge, call, record; no egress) beside a
//! raw Wasmtime instantiate-and-call of the same component with the same engine configuration.
//! Latencies are per call; medians and p99.

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
        let component = component_bench(&app, dir.path(), &meta, &project, n).await?;
        Ok(InvokeBenchReport {
            component,
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

/// The Rust Stripe component (built from `guests/` for this run), invoked with an input it refuses
/// before any host call (a currency that is not three letters): the path without egress.
async fn component_bench(
    app: &App,
    data_dir: &std::path::Path,
    meta: &EventMetadata,
    project: &crate::ids::ProjectId,
    n: usize,
) -> BenchResult<ComponentLatency> {
    let guest = crate::tools::guests::guests_dir().join("stripe-charge-rust");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("guests");
    let wasm = crate::tools::guests::rust::build_rust_component(&guest, &[], &[], &target)?;
    let descriptor: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(guest.join("vadyl-descriptor.json"))?)?;
    let id: crate::ids::ImplementationId = "bench-component:1.0.0".parse()?;
    let contract: crate::ids::ContractRef = "payment.charge@1".parse()?;
    app.build_component(meta, id.clone(), contract, &descriptor, ComponentUpload::new(wasm))?;
    let report = app.run_conformance(meta, &id).await?;
    let registry = app.registry();
    ensure!(report.passed, "the bench component failed conformance: {:?}", report.checks);
    let target: crate::ids::BindingTarget = id.to_string().parse()?;
    registry.execute(meta, |s| {
        crate::commands::bind(s, project.clone(), "bench-wasm".parse().expect("valid alias"), target.clone())
    })?;
    let input = json!({"amount": 2000, "currency": "u5d", "source": "tok_visa", "metadata": []});
    let request = || InvokeRequest {
        project: project.clone(),
        target: InvokeTarget::Alias("bench-wasm".parse().expect("valid alias")),
        operation: "charge".into(),
        input: input.clone(),
    };
    let ours = Samples::of(n, async || {
        let r = app.invoke(request()).await?;
        ensure!(r.error.as_ref().is_some_and(|e| e["code"] == "invalid-input"), "unexpected answer {r:?}");
        Ok(())
    })
    .await?;

    // Raw: the same component, engine configuration, limits and pre-instantiation; a new store,
    // instantiate, call with ready-made values. No binding, bridge, host loop or record.
    let view = registry.read(|s| s.implementation(&id).cloned()).ok_or("the bench component vanished")?;
    // The raw baseline reads the artifact and compiles it itself, beside the registry's runtime.
    let artifacts = crate::storage::artifacts::FileArtifacts::open(&data_dir.join("artifacts"))?;
    let bytes = artifacts.get(&view.content_hash)?.ok_or("the bench artifact vanished")?;
    let spec = crate::contracts::load_embedded()?
        .contract("payment.charge", 1)
        .cloned()
        .ok_or("payment.charge@1 is missing")?;
    let raw_runtime = crate::runtime::component::ComponentRuntime::new(&data_dir.join("bench-compiled"), [7u8; 32])?;
    let adapter = raw_runtime.load(&view.content_hash, &bytes, &spec)?;
    let (index, args) = adapter.raw_call_parts("charge", &input).ok_or("the component has no charge")?;
    let raw = Samples::of(n, async || {
        let mut host = NoHost;
        let mut store = adapter.new_store(&mut host);
        let instance = adapter.instance_pre().instantiate(&mut store)?;
        let func = instance.get_func(&mut store, index).ok_or("no export")?;
        let mut results = [wasmtime::component::Val::Bool(false)];
        func.call(&mut store, &args, &mut results)?;
        Ok(())
    })
    .await?;
    Ok(ComponentLatency {
        median_us: ours.median().round(),
        p99_us: ours.p99().round(),
        raw_median_us: raw.median().round(),
        raw_p99_us: raw.p99().round(),
        ratio: ours.ratio_to(&raw),
        invocations: n,
    })
}
