//! `GET /events/stream`: the log as Server-Sent Events (SPEC §3, §8).
//!
//! A subscription catches up from a position (`?after=N`, or the `Last-Event-ID` a reconnecting
//! client sends, which wins) and then follows the log live. Each SSE event's `id` is the log
//! position and its `data` the canonical envelope, exactly as `/events/{position}` serves it, so a
//! consumer can check every `prevHash` against the hash before it as events arrive.
//!
//! One producer task per subscriber reads the log (reader connections, never the writer) into a
//! bounded channel that the response body drains. Writers never wait for a subscriber: they only
//! replace the registry's head watch. A subscriber whose buffer stays full for the stall timeout has
//! stopped reading; it is disconnected, with a last `dropped` event saying why, rather than let its
//! backlog grow or its task linger.

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
    tokio::spawn(produce(st.app.clone(), after, tx, dropped.clone(), limits));
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

/// Reads the log after `cursor` into `tx` until the subscriber goes away or stops reading.
async fn produce(
    app: Arc<App>,
    mut cursor: u64,
    tx: mpsc::Sender<Event>,
    dropped: Arc<Mutex<Option<String>>>,
    limits: FeedLimits,
) {
    let mut head = app.registry().watch_head();
    loop {
        // Catch up with everything the log has now, batch by batch.
        loop {
            let a = app.clone();
            let from = cursor + 1;
            let batch = match tokio::task::spawn_blocking(move || a.events_from(from, BATCH)).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::report::ErrorChain(&e), "the event feed cannot read the log");
                    set(&dropped, "the server cannot read the log; reconnect with Last-Event-ID to resume".into());
                    return;
                }
                Err(_) => return,
            };
            if batch.is_empty() {
                break;
            }
            for (position, line) in batch {
                let event = Event::default().id(position.to_string()).data(line);
                match tokio::time::timeout(limits.stall, tx.send(event)).await {
                    Ok(Ok(())) => cursor = position,
                    // The client went away.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        let reason = format!(
                            "the subscriber read nothing for {} ms with {} events waiting; reconnect with \
                             Last-Event-ID: {cursor} to resume",
                            limits.stall.as_millis(),
                            limits.buffer
                        );
                        tracing::info!(cursor, "event feed subscriber dropped: {reason}");
                        set(&dropped, reason);
                        return;
                    }
                }
            }
        }
        // Caught up: wait for this process's next append, another process's (polled), or the
        // client's departure.
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(limits.poll) => {}
            () = tx.closed() => return,
        }
    }
}

fn set(slot: &Mutex<Option<String>>, reason: String) {
    if let Ok(mut r) = slot.lock() {
        *r = Some(reason);
    }
}
