//! `GET /events/stream`: the log as Server-Sent Events (SPEC §3, §8).
//!
//! A subscription catches up from a position (`?after=N`, or the `Last-Event-ID` a reconnecting
//! client sends, which wins) and then follows the log live. Each SSE event's `id` is the log
//! position and its `data` the canonical envelope, exactly as `/events/{position}` serves it, so a
//! consumer can check every `prevHash` against the hash before it as events arrive.
//!
//! One tail task per server reads each new event from the log once (reader connections, never the
//! writer) and broadcasts it to every subscriber through one bounded ring. A subscriber catches up
//! from the log on its own, then follows the ring; one that falls off the ring (it lagged by more
//! than the ring holds) goes back to the log for what it missed, so the ring's size bounds memory,
//! never correctness. Writers never wait for the feed: they only replace the registry's head watch.
//! Each subscriber's own buffer is bounded too; one whose buffer stays full for the stall timeout
//! has stopped reading and is disconnected, with a last `dropped` event saying why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::problem::Problem;
use super::{ApiQuery, ApiResult, AppState};
use crate::app::access::{Action, Principal};
use crate::app::App;

/// How the feed treats its subscribers.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// Events buffered per subscriber.
    pub buffer: usize,
    /// How long a full buffer may stay full before the subscriber is dropped.
    pub stall: Duration,
    /// A comment line this often keeps idle connections (and proxies) open.
    pub heartbeat: Duration,
    /// How often a caught-up subscriber looks for events appended by another process.
    pub poll: Duration,
}

impl Default for FeedLimits {
    fn default() -> Self {
        Self {
            buffer: 1024,
            stall: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            poll: Duration::from_millis(250),
        }
    }
}

/// Events read from the log per batch.
const BATCH: u64 = 256;

/// Events the shared ring holds: a subscriber this far behind the tail reads the log instead.
const RING: usize = 4096;

/// One event as the feed sends it: position and canonical envelope.
type FeedItem = Arc<(u64, String)>;

/// The shared tail: started with the first subscription, on the server's runtime.
#[derive(Clone, Default)]
pub struct FeedHub {
    ring: Arc<std::sync::OnceLock<tokio::sync::broadcast::Sender<FeedItem>>>,
}

impl FeedHub {
    /// The ring, with the tail task that fills it started if it is not yet.
    fn ring(&self, app: &Arc<App>, poll: Duration) -> tokio::sync::broadcast::Sender<FeedItem> {
        self.ring
            .get_or_init(|| {
                let (tx, _) = tokio::sync::broadcast::channel(RING);
                tokio::spawn(tail(app.clone(), tx.clone(), poll));
                tx
            })
            .clone()
    }
}

/// Reads every event appended after start-up once, and broadcasts it.
async fn tail(app: Arc<App>, ring: tokio::sync::broadcast::Sender<FeedItem>, poll: Duration) {
    let mut head = app.registry().watch_head();
    let mut cursor = match read_head(&app).await {
        Some(h) => h,
        None => return,
    };
    loop {
        match read_batch(&app, cursor + 1).await {
            Ok(batch) if !batch.is_empty() => {
                for item in batch {
                    cursor = item.0;
                    // No receiver is not an error: nobody is following right now.
                    let _ = ring.send(Arc::new(item));
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the event feed cannot read the log; retrying"),
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(poll) => {}
        }
    }
}

async fn read_head(app: &Arc<App>) -> Option<u64> {
    let a = app.clone();
    match tokio::task::spawn_blocking(move || a.log_head()).await {
        Ok(Ok(h)) => Some(h),
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::report::ErrorChain(&e), "the event feed cannot read the log's head");
            None
        }
        Err(_) => None,
    }
}

async fn read_batch(app: &Arc<App>, from: u64) -> Result<Vec<(u64, String)>, String> {
    let a = app.clone();
    match tokio::task::spawn_blocking(move || a.events_from(from, BATCH)).await {
        Ok(Ok(batch)) => Ok(batch),
        Ok(Err(e)) => Err(crate::report::ErrorChain(&e).to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `?after=N`
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Start after this position (default 0: the whole log). A `Last-Event-ID` header overrides it.
    after: Option<u64>,
}

pub async fn stream(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> ApiResult {
    who.authorize(Action::ReadHistory).map_err(Problem::from)?;
    let after = match headers.get("last-event-id") {
        Some(value) => value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            Problem::bad_request("Last-Event-ID must be the position of the last event received (a whole number)")
        })?,
        None => q.after.unwrap_or(0),
    };
    let limits = st.feed;
    let (tx, rx) = mpsc::channel::<Event>(limits.buffer.max(1));
    let dropped = Arc::new(Mutex::new(None::<String>));
    // Subscribed before catching up, so that nothing appended meanwhile falls between the two.
    let live = st.hub.ring(&st.app, limits.poll).subscribe();
    tokio::spawn(produce(st.app.clone(), after, live, tx, dropped.clone(), limits));
    let events = futures_util::stream::unfold((rx, dropped, false), |(mut rx, dropped, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(event) => Some((Ok::<_, std::convert::Infallible>(event), (rx, dropped, false))),
            // The producer is gone: say why, if it dropped us, and end the response.
            None => {
                let reason = dropped.lock().ok().and_then(|mut r| r.take())?;
                let data = serde_json::json!({ "reason": reason }).to_string();
                Some((Ok(Event::default().event("dropped").data(data)), (rx, dropped, true)))
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(limits.heartbeat).text("heartbeat")).into_response())
}

/// Why a subscriber stops.
enum Stop {
    /// The client went away.
    Gone,
    /// Dropped, with the reason it is told.
    Dropped(String),
}

/// Feeds one subscriber: from the log until it has caught up, then from the ring, back to the log
/// whenever the ring skipped something.
async fn produce(
    app: Arc<App>,
    mut cursor: u64,
    mut live: tokio::sync::broadcast::Receiver<FeedItem>,
    tx: mpsc::Sender<Event>,
    dropped: Arc<Mutex<Option<String>>>,
    limits: FeedLimits,
) {
    let stop = loop {
        if let Err(stop) = catch_up(&app, &mut cursor, &tx, limits).await {
            break stop;
        }
        if let Err(stop) = follow(&mut live, &mut cursor, &tx, limits).await {
            break stop;
        }
    };
    if let Stop::Dropped(reason) = stop {
        tracing::info!(cursor, "event feed subscriber dropped: {reason}");
        set(&dropped, reason);
    }
}

/// Sends everything the log holds after `cursor`.
async fn catch_up(app: &Arc<App>, cursor: &mut u64, tx: &mpsc::Sender<Event>, limits: FeedLimits) -> Result<(), Stop> {
    loop {
        let batch = read_batch(app, *cursor + 1).await.map_err(|e| {
            tracing::warn!(error = %e, "the event feed cannot read the log");
            Stop::Dropped(format!("the server cannot read the log; reconnect with Last-Event-ID: {cursor} to resume"))
        })?;
        if batch.is_empty() {
            return Ok(());
        }
        for (position, line) in batch {
            send(tx, position, line, *cursor, limits).await?;
            *cursor = position;
        }
    }
}

/// Sends what the ring brings, in order; returns `Ok` when the ring skipped ahead of `cursor`
/// (a gap, or this subscriber lagged off the ring), so that the log fills in.
async fn follow(
    live: &mut tokio::sync::broadcast::Receiver<FeedItem>,
    cursor: &mut u64,
    tx: &mpsc::Sender<Event>,
    limits: FeedLimits,
) -> Result<(), Stop> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let item = tokio::select! {
            item = live.recv() => item,
            () = tx.closed() => return Err(Stop::Gone),
        };
        match item {
            Ok(item) if item.0 <= *cursor => {}
            Ok(item) if item.0 == *cursor + 1 => {
                send(tx, item.0, item.1.clone(), *cursor, limits).await?;
                *cursor = item.0;
            }
            Ok(_) | Err(RecvError::Lagged(_)) => return Ok(()),
            Err(RecvError::Closed) => return Err(Stop::Gone),
        }
    }
}

/// Hands one event to the subscriber's buffer, waiting at most the stall timeout for room.
async fn send(
    tx: &mpsc::Sender<Event>,
    position: u64,
    line: String,
    cursor: u64,
    limits: FeedLimits,
) -> Result<(), Stop> {
    let event = Event::default().id(position.to_string()).data(line);
    match tokio::time::timeout(limits.stall, tx.send(event)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Stop::Gone),
        Err(_) => Err(Stop::Dropped(format!(
            "the subscriber read nothing for {} ms with {} events waiting; reconnect with Last-Event-ID: {cursor} \
             to resume",
            limits.stall.as_millis(),
            limits.buffer
        ))),
    }
}

fn set(slot: &Mutex<Option<String>>, reason: String) {
    if let Ok(mut r) = slot.lock() {
        *r = Some(reason);
    }
}
