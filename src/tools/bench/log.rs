//! `vadyl bench log`: event-log throughput beside raw-SQLite baselines measured in the same run.
//!
//! Absolute numbers drift on shared machines, so every measurement is paired with a baseline that
//! does the same I/O without Vadyl's work (no hashing, no canonical encoding, no triggers, no
//! concurrency control), run in the same process on the same disk, and reported as a ratio. Each
//! figure is the median of several repetitions.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::BenchResult;
use crate::events::domain::{BindingChanged, BindingCreated, DomainEvent};
use crate::events::envelope::EventMetadata;
use crate::events::store::{AppendRequest, EventStore, ExpectedVersion, ProposedEvent};
use crate::storage::sqlite::log::{Durability, SqliteStore};

#[derive(clap::Args, Debug, Clone)]
pub struct LogBenchOptions {
    /// Events in the replay measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub replay_events: u64,
    /// Events per repetition of the batched-append measurement (appended 100 per append).
    #[arg(long, default_value_t = 200_000)]
    pub batched_events: u64,
    /// Events per repetition of the single-writer durable measurement.
    #[arg(long, default_value_t = 1_000)]
    pub single_events: u64,
    /// Events per writer per repetition of the 64-writer durable measurement.
    #[arg(long, default_value_t = 300)]
    pub concurrent_events_per_writer: u64,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// Directory for the benchmark databases (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    pub events_per_sec: f64,
    pub baseline_events_per_sec: f64,
    pub ratio: f64,
    pub events: u64,
    pub repetitions: usize,
    pub durability: &'static str,
    pub what: &'static str,
    pub baseline: &'static str,
    /// PostgreSQL's 64-writer row only: our throughput over one connection's one-row-per-transaction
    /// INSERTs (PostgreSQL flushes concurrent commits together, so the 64-connection baseline is
    /// itself a group commit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_one_row_per_transaction: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogBenchReport {
    pub append_batched: Measurement,
    pub append_single: Measurement,
    pub append_concurrent64: Measurement,
    pub replay: Measurement,
}

impl LogBenchReport {
    pub fn human(&self) -> String {
        let row = |name: &str, m: &Measurement| {
            format!(
                "{name:<20} {:>12.0} events/s   baseline {:>12.0} events/s   ratio {:>5.2}   ({} events, {}, median of {})",
                m.events_per_sec, m.baseline_events_per_sec, m.ratio, m.events, m.durability, m.repetitions
            )
        };
        [
            row("appendBatched", &self.append_batched),
            row("appendSingle", &self.append_single),
            row("appendConcurrent64", &self.append_concurrent64),
            row("replay", &self.replay),
        ]
        .join("\n")
    }
}

pub(super) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// A realistic event: a binding change, about the size of most registry events.
/// The batched measurement's appends of 100 events, made before the clock starts: an application
/// builds each event once and hands it over, so the benchmark does not time copying them.
pub(super) fn batched_requests(events: u64) -> Vec<AppendRequest> {
    let events: Vec<ProposedEvent> = (0..events).map(bench_event).collect();
    events.chunks(100).map(|c| AppendRequest::single("bench", ExpectedVersion::Any, c.to_vec(), meta())).collect()
}

pub(super) fn bench_event(i: u64) -> ProposedEvent {
    let event = if i < 1000 {
        DomainEvent::BindingCreated(BindingCreated {
            project: "bench".parse().unwrap_or_else(|_| crate::ids::ProjectId::default_project()),
            alias: alias(i),
            target: "stripe-charge-adapter@^1".into(),
        })
    } else {
        DomainEvent::BindingChanged(BindingChanged {
            project: "bench".parse().unwrap_or_else(|_| crate::ids::ProjectId::default_project()),
            alias: alias(i % 1000),
            target: format!("stripe-charge-adapter:1.0.{}", i % 97),
            previous_target: "stripe-charge-adapter@^1".into(),
        })
    };
    ProposedEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        payload: event.payload(),
    }
}

fn alias(i: u64) -> crate::ids::BindingAlias {
    format!("alias-{i}").parse().unwrap_or_else(|_| unreachable!("alias-N is a valid slug"))
}

pub(super) fn meta() -> EventMetadata {
    EventMetadata::actor("bench")
}

const BASELINE_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS rows (position INTEGER PRIMARY KEY, event_id TEXT, stream_id TEXT, \
    stream_version INTEGER, type TEXT, schema_version INTEGER, recorded_at TEXT, actor TEXT, correlation_id TEXT, \
    causation_id TEXT, payload TEXT, prev_hash BLOB, hash BLOB)";

fn baseline_conn(path: &Path, durability: Durability) -> BenchResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(60))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if durability == Durability::Full { "FULL" } else { "NORMAL" })?;
    conn.execute_batch(BASELINE_SCHEMA)?;
    Ok(conn)
}

/// A row of the same size as the log's: same columns, a pre-rendered payload, fixed blobs.
fn baseline_insert(conn: &Connection, position: Option<i64>, payload: &str) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO rows (position, event_id, stream_id, stream_version, type, schema_version, recorded_at, actor, \
         correlation_id, causation_id, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, NULL, NULL, ?8, ?9, ?10)",
    )?;
    stmt.execute(params![
        position,
        "00000000-0000-4000-8000-000000000000",
        "binding-bench/alias-1",
        1,
        "BindingChanged",
        "2026-11-25T12:00:00.000000000Z",
        "bench",
        payload,
        &[7u8; 32][..],
        &[9u8; 32][..],
    ])
}

pub(super) fn sample_payload() -> String {
    crate::events::envelope::canonical_json(&bench_event(5000).payload).unwrap_or_default()
}

pub(super) fn rate(events: u64, started: Instant) -> f64 {
    events as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

/// The log benchmark on SQLite, or on the PostgreSQL database `store` names.
pub fn run_log_bench(opts: &LogBenchOptions, store: Option<&str>) -> BenchResult<LogBenchReport> {
    if let Some(url) = store {
        return super::log_postgres::run(url, opts);
    }
    let (_tmp, dir) = super::bench_dir(opts.dir.as_deref())?;
    let reps = opts.repetitions.max(1);
    let payload = sample_payload();
    let fresh = |name: &str, rep: usize| -> std::path::PathBuf {
        let p = dir.join(format!("{name}-{rep}.db"));
        super::remove_db(&p);
        p
    };

    // 1. Batched appends, 100 events per append.
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let store = SqliteStore::open(&fresh("batched", rep), Durability::Normal)?;
        let requests = batched_requests(opts.batched_events);
        let started = Instant::now();
        for request in requests {
            store.append(request)?;
        }
        ours.push(rate(opts.batched_events, started));
        drop(store);
        let mut conn = baseline_conn(&fresh("batched-baseline", rep), Durability::Normal)?;
        let started = Instant::now();
        for _ in 0..opts.batched_events / 100 {
            let tx = conn.transaction()?;
            for _ in 0..100 {
                baseline_insert(&tx, None, &payload)?;
            }
            tx.commit()?;
        }
        base.push(rate(opts.batched_events / 100 * 100, started));
    }
    let append_batched = measurement(
        ours,
        base,
        opts.batched_events,
        reps,
        "NORMAL",
        "100 events per append, hashed and chained",
        "plain INSERTs, 100 rows per transaction",
    );

    // 2. Single-event durable appends, one writer.
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let store = SqliteStore::open(&fresh("single", rep), Durability::Full)?;
        let started = Instant::now();
        for i in 0..opts.single_events {
            store.append(AppendRequest::single("bench", ExpectedVersion::Any, vec![bench_event(i)], meta()))?;
        }
        ours.push(rate(opts.single_events, started));
        drop(store);
        let conn = baseline_conn(&fresh("single-baseline", rep), Durability::Full)?;
        let started = Instant::now();
        for _ in 0..opts.single_events {
            baseline_insert(&conn, None, &payload)?;
        }
        base.push(rate(opts.single_events, started));
    }
    let append_single = measurement(
        ours,
        base,
        opts.single_events,
        reps,
        "FULL",
        "one event per append, one writer",
        "plain INSERT, one row per transaction",
    );

    // 3. 64 concurrent writers, single-event durable appends (group commit).
    let per = opts.concurrent_events_per_writer;
    let total = per * 64;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let store = Arc::new(SqliteStore::open(&fresh("concurrent", rep), Durability::Full)?);
        let started = Instant::now();
        let handles: Vec<_> = (0..64u64)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || -> BenchResult<()> {
                    for i in 0..per {
                        let stream = format!("bench-{w}");
                        store.append(AppendRequest::single(
                            stream,
                            ExpectedVersion::Any,
                            vec![bench_event(i)],
                            meta(),
                        ))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| Box::<dyn std::error::Error + Send + Sync>::from("a bench writer panicked"))??;
        }
        ours.push(rate(total, started));
        drop(store);
        let path = fresh("concurrent-baseline", rep);
        drop(baseline_conn(&path, Durability::Full)?);
        let started = Instant::now();
        let handles: Vec<_> = (0..64u64)
            .map(|_| {
                let path = path.clone();
                let payload = payload.clone();
                std::thread::spawn(move || -> BenchResult<()> {
                    let conn = baseline_conn(&path, Durability::Full)?;
                    for _ in 0..per {
                        baseline_insert(&conn, None, &payload)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| Box::<dyn std::error::Error + Send + Sync>::from("a baseline writer panicked"))??;
        }
        base.push(rate(total, started));
    }
    let append_concurrent64 = measurement(
        ours,
        base,
        total,
        reps,
        "FULL",
        "64 threads, one event per append, group commit",
        "64 connections, plain INSERT, one row per transaction",
    );

    // 4. Replay of the whole log: read, recompute every hash, check the chain, fold projections.
    let replay_path = fresh("replay", 0);
    {
        let store = SqliteStore::open(&replay_path, Durability::Normal)?;
        let mut i = 0;
        while i < opts.replay_events {
            let n = (opts.replay_events - i).min(1000);
            let batch: Vec<ProposedEvent> = (i..i + n).map(bench_event).collect();
            store.append(AppendRequest::single("bench", ExpectedVersion::Any, batch, meta()))?;
            i += n;
        }
    }
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let store = SqliteStore::open(&replay_path, Durability::Normal)?;
        let started = Instant::now();
        let state = crate::app::audit::replay(&store, None)?;
        ours.push(rate(state.position, started));
        drop(store);
        let conn = Connection::open(&replay_path)?;
        let started = Instant::now();
        let mut stmt = conn.prepare("SELECT position, payload FROM events ORDER BY position")?;
        let mut rows = stmt.query([])?;
        let mut n = 0u64;
        while let Some(row) = rows.next()? {
            let text: String = row.get(1)?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            if !v.is_null() {
                n += 1;
            }
        }
        base.push(rate(n, started));
    }
    let replay = measurement(
        ours,
        base,
        opts.replay_events,
        reps,
        "NORMAL",
        "read, recompute hashes, check chain, decode and fold all projections",
        "plain SELECT scan with JSON decode",
    );

    Ok(LogBenchReport { append_batched, append_single, append_concurrent64, replay })
}

pub(super) fn measurement(
    ours: Vec<f64>,
    base: Vec<f64>,
    events: u64,
    repetitions: usize,
    durability: &'static str,
    what: &'static str,
    baseline: &'static str,
) -> Measurement {
    let (o, b) = (median(ours), median(base));
    Measurement {
        events_per_sec: o.round(),
        baseline_events_per_sec: b.round(),
        ratio: if b > 0.0 { (o / b * 1000.0).round() / 1000.0 } else { 0.0 },
        events,
        repetitions,
        durability,
        what,
        baseline,
        vs_one_row_per_transaction: None,
    }
}
