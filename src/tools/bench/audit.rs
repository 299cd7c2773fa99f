//! `vadyl bench audit`: what auditing costs as the log grows, and what the live feed costs writers.
//!
//! 1. Inclusion proofs (`audit::prove`, what `/audit/proof/inclusion` runs) at growing log sizes,
//!    beside the cost of one tile read and beside the proof the way it was built before tiles
//!    (read every hash, build from the slice). The first must grow with log₂₅₆ n, the second with n.
//! 2. The feed: 100 SSE subscribers on a real server on loopback while writers append through the
//!    registry; events delivered per second, and the writers' throughput with and without them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::log::{bench_event, median, meta};
use super::{ensure, BenchResult};
use crate::app::audit;
use crate::events::merkle;
use crate::events::store::{AppendRequest, EventStore, ExpectedVersion};
use crate::events::tiles::StoredTree;
use crate::storage::sqlite::log::{Durability, SqliteStore};

#[derive(clap::Args, Debug, Clone)]
pub struct AuditBenchOptions {
    /// Log sizes at which proofs are measured.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10_000u64, 100_000, 1_000_000])]
    pub sizes: Vec<u64>,
    /// Proofs timed at each size.
    #[arg(long, default_value_t = 500)]
    pub proofs: usize,
    /// Proofs the pre-tiles way (every hash read) at each size: they are slow at 10^6.
    #[arg(long, default_value_t = 5)]
    pub full_read_proofs: usize,
    /// Subscribers of the feed measurement.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Events appended in each feed measurement (by four writers).
    #[arg(long, default_value_t = 2_000)]
    pub feed_events: u64,
    /// Directory for the benchmark databases (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofAt {
    pub events: u64,
    pub median_us: f64,
    pub p99_us: f64,
    /// Tiles one proof reads (the largest over the sampled proofs).
    pub max_tiles_read: usize,
    /// One level-0 tile read (256 hashes), median.
    pub tile_read_median_us: f64,
    /// The proof built from every hash, as before tiles, median.
    pub full_read_median_us: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedMeasurement {
    pub subscribers: usize,
    pub events: u64,
    pub writers: usize,
    /// Writers' appends per second with no subscriber.
    pub writer_events_per_sec_alone: f64,
    /// Writers' appends per second with every subscriber following.
    pub writer_events_per_sec_with_subscribers: f64,
    /// `with / alone`: 1.0 means the feed costs writers nothing.
    pub writer_ratio: f64,
    /// Events delivered per second, summed over subscribers, from the first append until the last
    /// subscriber has the last event.
    pub delivered_events_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditBenchReport {
    pub inclusion_proofs: Vec<ProofAt>,
    pub feed: FeedMeasurement,
}

impl AuditBenchReport {
    pub fn human(&self) -> String {
        let mut lines: Vec<String> = self
            .inclusion_proofs
            .iter()
            .map(|p| {
                format!(
                    "inclusion proof at {:>8} events: median {:>7.1} µs, p99 {:>7.1} µs, ≤ {} tiles; one tile read {:>6.1} µs; \
                     reading every hash instead {:>10.0} µs",
                    p.events, p.median_us, p.p99_us, p.max_tiles_read, p.tile_read_median_us, p.full_read_median_us
                )
            })
            .collect();
        let f = &self.feed;
        lines.push(format!(
            "feed: {} subscribers, {} events by {} writers: delivered {:.0} events/s; writers {:.0} events/s with, {:.0} alone (ratio {:.2})",
            f.subscribers,
            f.events,
            f.writers,
            f.delivered_events_per_sec,
            f.writer_events_per_sec_with_subscribers,
            f.writer_events_per_sec_alone,
            f.writer_ratio
        ));
        lines.join("\n")
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// A spread of positions in `1..=size`, the same every run (a multiplicative hash of the index).
fn positions(size: u64, n: usize) -> impl Iterator<Item = u64> {
    (0..n as u64).map(move |i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % size + 1)
}

fn time_us(f: impl FnOnce() -> BenchResult<()>) -> BenchResult<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64() * 1e6)
}

fn proofs(opts: &AuditBenchOptions, dir: &std::path::Path) -> BenchResult<Vec<ProofAt>> {
    let path = dir.join("audit-proofs.db");
    super::remove_db(&path);
    let store = SqliteStore::open(&path, Durability::Normal)?;
    let mut sizes = opts.sizes.clone();
    sizes.sort_unstable();
    let mut appended = 0u64;
    let mut out = Vec::new();
    for size in sizes {
        while appended < size {
            let n = (size - appended).min(1000);
            let events = (appended..appended + n).map(bench_event).collect();
            store.append(AppendRequest::single("bench", ExpectedVersion::Any, events, meta()))?;
            appended += n;
        }
        let mut latencies = Vec::with_capacity(opts.proofs);
        let mut max_tiles = 0;
        for position in positions(size, opts.proofs) {
            latencies.push(time_us(|| {
                audit::prove(&store, position, "bench checkpoint", size)?;
                Ok(())
            })?);
            let mut tree = StoredTree::over(&store, size);
            merkle::inclusion_proof_from(&mut tree, position - 1, size)?;
            max_tiles = max_tiles.max(tree.tiles_read());
        }
        latencies.sort_by(f64::total_cmp);
        let tile_reads = positions(size / 256, opts.proofs.min(200))
            .map(|k| {
                time_us(|| {
                    ensure!(store.tile(0, k - 1, 256)?.len() == 256, "tile {} is not full", k - 1);
                    Ok(())
                })
            })
            .collect::<BenchResult<Vec<f64>>>()?;
        let full_reads = positions(size, opts.full_read_proofs.max(1))
            .map(|position| {
                time_us(|| {
                    let leaves: Vec<_> = store.event_hashes(1, size)?.iter().map(merkle::leaf_hash).collect();
                    merkle::inclusion_proof(&leaves, position - 1)?;
                    Ok(())
                })
            })
            .collect::<BenchResult<Vec<f64>>>()?;
        out.push(ProofAt {
            events: size,
            median_us: percentile(&latencies, 0.5),
            p99_us: percentile(&latencies, 0.99),
            max_tiles_read: max_tiles,
            tile_read_median_us: median(tile_reads),
            full_read_median_us: median(full_reads),
        });
    }
    drop(store);
    super::remove_db(&path);
    Ok(out)
}

const WRITERS: usize = 4;

/// Appends `events` bindings through the registry from four writer threads; events per second.
fn write(app: &Arc<crate::app::App>, target: &crate::ids::BindingTarget, round: &str, events: u64) -> BenchResult<f64> {
    let started = Instant::now();
    std::thread::scope(|scope| -> BenchResult<()> {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                scope.spawn(move || -> BenchResult<()> {
                    let project = crate::ids::ProjectId::default_project();
                    for i in (w as u64..events).step_by(WRITERS) {
                        let alias: crate::ids::BindingAlias = format!("{round}-{i}").parse()?;
                        app.registry().execute(&meta(), |s| {
                            crate::commands::bind(s, project.clone(), alias.clone(), target.clone())
                        })?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a writer panicked")??;
        }
        Ok(())
    })?;
    Ok(events as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Follows the feed from `after` until it has delivered `until`; counts what it received.
async fn subscriber(url: String, after: u64, until: u64, delivered: Arc<AtomicU64>) -> BenchResult<()> {
    let client = reqwest::Client::new();
    let mut response = client.get(url).header("last-event-id", after.to_string()).send().await?;
    ensure!(response.status().is_success(), "the feed answered {}", response.status());
    let mut line = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        for &b in chunk.iter() {
            if b != b'\n' {
                line.push(b);
                continue;
            }
            if let Some(id) = line.strip_prefix(b"id: ") {
                delivered.fetch_add(1, Ordering::Relaxed);
                let position: u64 = std::str::from_utf8(id)?.trim().parse()?;
                if position >= until {
                    return Ok(());
                }
            }
            line.clear();
        }
    }
    Err("the feed ended early".into())
}

fn feed(opts: &AuditBenchOptions, dir: &std::path::Path) -> BenchResult<FeedMeasurement> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let data = dir.join("audit-feed");
    let _ = std::fs::remove_dir_all(&data);
    let app = Arc::new(crate::storage::open(&data, crate::app::registry::OpenOptions::default())?);
    let id: crate::ids::ImplementationId = "bench-hooks:1.0.0".parse()?;
    app.build_native(&meta(), id.clone(), "vadyl.webhook-hmac", None)?;
    let report = runtime.block_on(app.run_conformance(&meta(), &id))?;
    ensure!(report.passed, "the bench adapter failed conformance");
    let target: crate::ids::BindingTarget = id.to_string().parse()?;

    let alone = write(&app, &target, "alone", opts.feed_events)?;

    let listener = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))?;
    let url = format!("http://{}/api/Connector/events/stream", listener.local_addr()?);
    let router = crate::http::router(app.clone());
    runtime.spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let start = app.registry().read(|s| s.position);
    // Each binding is one event, so the head after the writers is known in advance.
    let until = start + opts.feed_events;
    let delivered = Arc::new(AtomicU64::new(0));
    let subscribers: Vec<_> = (0..opts.subscribers)
        .map(|_| runtime.spawn(subscriber(url.clone(), start, until, delivered.clone())))
        .collect();
    // Every subscriber connected and caught up (nothing to catch up) before the clock starts.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let with = write(&app, &target, "with", opts.feed_events)?;
    for s in subscribers {
        runtime.block_on(s)??;
    }
    let delivered_per_sec = delivered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    ensure!(
        delivered.load(Ordering::Relaxed) == opts.subscribers as u64 * opts.feed_events,
        "the subscribers received {} events, not {}",
        delivered.load(Ordering::Relaxed),
        opts.subscribers as u64 * opts.feed_events
    );
    drop(runtime);
    let _ = std::fs::remove_dir_all(&data);
    Ok(FeedMeasurement {
        subscribers: opts.subscribers,
        events: opts.feed_events,
        writers: WRITERS,
        writer_events_per_sec_alone: alone,
        writer_events_per_sec_with_subscribers: with,
        writer_ratio: (with / alone * 100.0).round() / 100.0,
        delivered_events_per_sec: delivered_per_sec,
    })
}

pub fn run_audit_bench(opts: &AuditBenchOptions) -> BenchResult<AuditBenchReport> {
    let (_tmp, dir) = super::bench_dir(opts.dir.as_deref())?;
    let inclusion_proofs = proofs(opts, &dir)?;
    let feed = feed(opts, &dir)?;
    Ok(AuditBenchReport { inclusion_proofs, feed })
}
