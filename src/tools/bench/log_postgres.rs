//! `vadyl --store postgres://… bench log`: the same four measurements as on SQLite, against the
//! PostgreSQL log, each beside a raw PostgreSQL baseline run in the same process on the same server:
//! plain INSERTs of rows of the same shape, same batch sizes, same `synchronous_commit`.
//!
//! Every repetition runs in a database of its own, created on the server the URL names and dropped
//! afterwards (the URL's role needs CREATEDB).

use std::sync::Arc;
use std::time::Instant;

use super::log::{
    batched_requests, bench_event, measurement, meta, rate, sample_payload, LogBenchOptions, LogBenchReport,
};
use super::BenchResult;
use crate::events::store::{AppendRequest, EventStore, ExpectedVersion, ProposedEvent};
use crate::storage::postgres::log::PostgresStore;
use crate::storage::sqlite::log::Durability;

const BASELINE_SCHEMA: &str = "CREATE TABLE rows (position bigserial PRIMARY KEY, event_id text, stream_id text, \
     stream_version bigint, type text, schema_version integer, recorded_at text, actor text, correlation_id text, \
     causation_id text, payload text, prev_hash bytea, hash bytea)";

/// Rows of the log's shape, each sent over the wire (ids, payloads and hashes of their own), as one
/// multi-row INSERT: what the log's own INSERT does, without deciding, hashing or the unique indexes.
const BASELINE_INSERT: &str = "INSERT INTO rows (event_id, stream_id, stream_version, type, schema_version, \
     recorded_at, actor, payload, prev_hash, hash) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::integer[], $6::text[], $7::text[], \
     $8::text[], $9::bytea[], $10::bytea[])";

/// A database created for one measurement, dropped when this is dropped.
struct Scratch {
    admin_url: String,
    name: String,
    url: String,
}

impl Scratch {
    fn create(admin_url: &str, what: &str) -> BenchResult<Self> {
        let mut url = url::Url::parse(admin_url)
            .map_err(|e| format!("the benchmark needs the store as a postgres:// URL ({e})"))?;
        let name = format!("vadyl_bench_{what}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = crate::storage::postgres::connect(admin_url)?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        url.set_path(&name);
        Ok(Self { admin_url: admin_url.to_owned(), name, url: url.to_string() })
    }

    fn baseline(&self, durability: Durability) -> BenchResult<postgres::Client> {
        let mut c = crate::storage::postgres::connect(&self.url)?;
        c.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {}; SET synchronous_commit = {}",
            BASELINE_SCHEMA.trim_start_matches("CREATE TABLE "),
            if durability == Durability::Full { "on" } else { "off" }
        ))?;
        Ok(c)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut admin) = crate::storage::postgres::connect(&self.admin_url) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

fn baseline_rows(c: &mut postgres::Client, stmt: &postgres::Statement, payload: &str, rows: usize) -> BenchResult<()> {
    let ids: Vec<String> = (0..rows).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let n = |v: &'static str| vec![v; rows];
    let versions: Vec<i64> = (1..=rows as i64).collect();
    let hashes: Vec<Vec<u8>> = (0..rows).map(|i| vec![i as u8; 32]).collect();
    c.execute(
        stmt,
        &[
            &ids,
            &n("binding-bench/alias-1"),
            &versions,
            &n("BindingChanged"),
            &vec![1i32; rows],
            &n("2026-11-25T12:00:00.000000000Z"),
            &n("bench"),
            &vec![payload; rows],
            &hashes,
            &hashes,
        ],
    )?;
    Ok(())
}

pub fn run(url: &str, opts: &LogBenchOptions) -> BenchResult<LogBenchReport> {
    let reps = opts.repetitions.max(1);
    let payload = sample_payload();

    // 1. Batched appends, 100 events per append.
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let db = Scratch::create(url, "batched")?;
        let store = PostgresStore::open(&db.url, Durability::Normal)?;
        let requests = batched_requests(opts.batched_events);
        let started = Instant::now();
        for request in requests {
            store.append(request)?;
        }
        ours.push(rate(opts.batched_events, started));
        drop(store);
        let mut c = db.baseline(Durability::Normal)?;
        let stmt = c.prepare(BASELINE_INSERT)?;
        let started = Instant::now();
        for _ in 0..opts.batched_events / 100 {
            baseline_rows(&mut c, &stmt, &payload, 100)?;
        }
        base.push(rate(opts.batched_events / 100 * 100, started));
    }
    let append_batched = measurement(
        ours,
        base,
        opts.batched_events,
        reps,
        "synchronous_commit=off",
        "100 events per append, hashed and chained",
        "one INSERT of 100 rows (sent, not generated) per transaction",
    );

    // 2. Single-event durable appends, one writer.
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let db = Scratch::create(url, "single")?;
        let store = PostgresStore::open(&db.url, Durability::Full)?;
        let started = Instant::now();
        for i in 0..opts.single_events {
            store.append(AppendRequest::single("bench", ExpectedVersion::Any, vec![bench_event(i)], meta()))?;
        }
        ours.push(rate(opts.single_events, started));
        drop(store);
        let mut c = db.baseline(Durability::Full)?;
        let stmt = c.prepare(BASELINE_INSERT)?;
        let started = Instant::now();
        for _ in 0..opts.single_events {
            baseline_rows(&mut c, &stmt, &payload, 1)?;
        }
        base.push(rate(opts.single_events, started));
    }
    let append_single = measurement(
        ours,
        base,
        opts.single_events,
        reps,
        "synchronous_commit=on",
        "one event per append, one writer",
        "plain INSERT, one row per transaction",
    );
    let one_row_per_transaction = append_single.baseline_events_per_sec;

    // 3. 64 concurrent writers, single-event durable appends (group commit).
    let per = opts.concurrent_events_per_writer;
    let total = per * 64;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let db = Scratch::create(url, "concurrent")?;
        let store = Arc::new(PostgresStore::open(&db.url, Durability::Full)?);
        let started = Instant::now();
        let handles: Vec<_> = (0..64u64)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || -> BenchResult<()> {
                    for i in 0..per {
                        let request = AppendRequest::single(
                            format!("bench-{w}"),
                            ExpectedVersion::Any,
                            vec![bench_event(i)],
                            meta(),
                        );
                        store.append(request)?;
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
        drop(db.baseline(Durability::Full)?);
        let started = Instant::now();
        let handles: Vec<_> = (0..64u64)
            .map(|_| {
                let (url, payload) = (db.url.clone(), payload.clone());
                std::thread::spawn(move || -> BenchResult<()> {
                    let mut c = crate::storage::postgres::connect(&url)?;
                    let stmt = c.prepare(BASELINE_INSERT)?;
                    for _ in 0..per {
                        baseline_rows(&mut c, &stmt, &payload, 1)?;
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
    let mut append_concurrent64 = measurement(
        ours,
        base,
        total,
        reps,
        "synchronous_commit=on",
        "64 threads, one event per append, group commit",
        "64 connections, plain INSERT, one row per transaction",
    );
    append_concurrent64.vs_one_row_per_transaction = Some(if one_row_per_transaction > 0.0 {
        (append_concurrent64.events_per_sec / one_row_per_transaction * 1000.0).round() / 1000.0
    } else {
        0.0
    });

    // 4. Replay of the whole log: read, recompute every hash, check the chain, fold projections.
    let db = Scratch::create(url, "replay")?;
    {
        let store = PostgresStore::open(&db.url, Durability::Normal)?;
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
        let store = PostgresStore::open(&db.url, Durability::Normal)?;
        let started = Instant::now();
        let state = crate::app::audit::replay(&store, None)?;
        ours.push(rate(state.position, started));
        drop(store);
        let mut c = crate::storage::postgres::connect(&db.url)?;
        let started = Instant::now();
        let mut n = 0u64;
        let params: [&(dyn postgres::types::ToSql + Sync); 0] = [];
        let mut rows = c.query_raw("SELECT position, payload FROM events ORDER BY position", params)?;
        use postgres::fallible_iterator::FallibleIterator;
        while let Some(row) = rows.next()? {
            let text: &str = row.try_get(1)?;
            let v: serde_json::Value = serde_json::from_str(text)?;
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
        "synchronous_commit=off",
        "read, recompute hashes, check chain, decode and fold all projections",
        "plain SELECT scan with JSON decode",
    );

    Ok(LogBenchReport { append_batched, append_single, append_concurrent64, replay })
}
