//! `vadyl bench invoke`: declarative invocation through the full path (binding resolution, artifact
//! by content hash, input check, host loop, egress with host-attached auth, response mapping,
//! invocation record) against a loopback upstream, beside a direct call of the same upstream with
//! the same HTTP client stack, in the same run. Latencies are per call; medians and p99.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::events::envelope::EventMetadata;
use crate::invocation::{self, InvokeRequest, InvokeTarget};
use crate::registry::{OpenOptions, Registry};

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
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

const CHARGE: &str = r#"{"id":"ch_bench","object":"charge","amount":2000,"currency":"usd","status":"succeeded","captured":true,"created":1764072000}"#;

pub fn run_invoke_bench(opts: &InvokeBenchOptions) -> anyhow::Result<InvokeBenchReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // The upstream: a minimal charge endpoint on loopback.
        let app = axum::Router::new()
            .route("/v1/charges", axum::routing::post(|| async { ([("content-type", "application/json")], CHARGE) }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base = format!("http://127.0.0.1:{port}");

        let dir = tempfile::tempdir()?;
        let registry = Registry::open(dir.path(), OpenOptions::default())?;
        let project = crate::ids::ProjectId::default_project();
        registry.services().secrets.set(&project, "stripe-secret-key", b"sk_test_bench_secret")?;
        let mut manifest: serde_json::Value = serde_json::from_str(include_str!("../examples/stripe.connector.json"))?;
        manifest["config"]["baseUrl"] = json!(base);
        if let Some(allow) = manifest["egress"]["allow"].as_array_mut() {
            allow.push(json!({"scheme": "http", "host": "127.0.0.1", "port": port}));
        }
        let meta = EventMetadata::actor("bench");
        let built = crate::lifecycle::build_declarative(&registry, &meta, &manifest)?;
        let report = crate::conformance::run(&registry, &meta, &built.implementation_id).await?;
        anyhow::ensure!(report.passed, "the bench manifest failed conformance: {:?}", report.checks);
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
        for _ in 0..n / 10 {
            invocation::invoke(&registry, request()).await?;
        }
        let mut ours = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let r = invocation::invoke(&registry, request()).await?;
            ours.push(started.elapsed().as_secs_f64() * 1e6);
            anyhow::ensure!(r.output.is_some(), "the bench invocation failed: {:?}", r.error);
        }

        // Baseline: the same request with the same HTTP client library, a kept-alive client as a
        // direct caller would use.
        let body = "amount=2000&currency=usd&source=tok_visa";
        let mut base_lat = Vec::with_capacity(n);
        let client = reqwest::Client::builder().no_proxy().build()?;
        for i in 0..n + n / 10 {
            let started = Instant::now();
            let resp = client
                .post(format!("{base}/v1/charges"))
                .header("authorization", "Bearer sk_test_bench_secret")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await?;
            let bytes = resp.bytes().await?;
            let _: serde_json::Value = serde_json::from_slice(&bytes)?;
            if i >= n / 10 {
                base_lat.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
        ours.sort_by(|a, b| a.total_cmp(b));
        base_lat.sort_by(|a, b| a.total_cmp(b));
        let (m, bm) = (percentile(&ours, 0.5), percentile(&base_lat, 0.5));
        Ok(InvokeBenchReport {
            declarative: Latency {
                median_us: m.round(),
                p99_us: percentile(&ours, 0.99).round(),
                baseline_median_us: bm.round(),
                baseline_p99_us: percentile(&base_lat, 0.99).round(),
                added_median_us: (m - bm).round(),
                ratio: if bm > 0.0 { (m / bm * 100.0).round() / 100.0 } else { 0.0 },
                invocations: n,
            },
        })
    })
}
