//! History routes for auditors (SPEC §3, §4, §8): the log page by page and event by event, the
//! latest signed checkpoint, inclusion and consistency proofs, a replay at a position and the
//! export as a streamed NDJSON download.
//!
//! Roles `admin` and `auditor` only. A `project` token is refused (403): the log interleaves every
//! project's bindings with the shared catalogue, and a filtered log could not be verified (the hash
//! chain links every event to the one before it, and a proof reveals the tree's shape), so a
//! project's own history is read through its bindings and invocation records instead.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::problem::Problem;
use super::{ok, ApiQuery, ApiResult, AppState};
use crate::app::access::{Action, Principal};
use crate::app::history::EventQuery;
use crate::app::App;
use crate::events::tiles::TileRef;

/// `?after=&limit=&stream=&type=&actor=&since=&until=`
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Cursor: only events after this position (default 0, the start).
    after: Option<u64>,
    /// Events per page, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// Only this stream (e.g. `binding-shop-pay`).
    stream: Option<String>,
    /// Only this event type (e.g. `PublicationInvalidated`).
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Only events by this actor.
    actor: Option<String>,
    /// Only events recorded at or after this RFC 3339 UTC time.
    since: Option<String>,
    /// Only events recorded before this RFC 3339 UTC time.
    until: Option<String>,
}

fn may_read_history(who: &Principal) -> Result<(), Problem> {
    who.authorize(Action::ReadHistory).map_err(Problem::from)
}

/// Runs a blocking read of the log off the async threads.
async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&App) -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    let app = st.app.clone();
    tokio::task::spawn_blocking(move || f(&app)).await.map_err(Problem::internal)?
}

pub async fn list(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult {
    may_read_history(&who)?;
    let query = EventQuery {
        after: q.after.unwrap_or(0),
        limit: super::page_limit(q.limit)?,
        stream: q.stream,
        event_type: q.event_type,
        actor: q.actor,
        since: q.since,
        until: q.until,
    };
    let page = blocking(&st, move |app| Ok(app.events_page(&query)?)).await?;
    ok(serde_json::to_value(page).map_err(Problem::internal)?)
}

pub async fn by_position(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(position): Path<String>,
) -> ApiResult {
    may_read_history(&who)?;
    let position: u64 = position
        .parse()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| Problem::bad_request(format!("a position is a whole number from 1; got {position:?}")))?;
    let event = blocking(&st, move |app| Ok(app.event_at(position)?)).await?;
    event.map_or_else(|| Err(Problem::not_found(format!("there is no event at position {position}"))), ok)
}

pub async fn by_id(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(event_id): Path<String>,
) -> ApiResult {
    may_read_history(&who)?;
    let id = event_id.clone();
    let event = blocking(&st, move |app| Ok(app.event_by_id(&id)?)).await?;
    event.map_or_else(|| Err(Problem::not_found(format!("there is no event with id {event_id:?}"))), ok)
}

/// The newest signed checkpoint as a C2SP signed note (`text/plain`).
pub async fn checkpoint(State(st): State<AppState>, axum::Extension(who): axum::Extension<Principal>) -> ApiResult {
    may_read_history(&who)?;
    let note = st.app.registry().read(|s| s.registry.last_checkpoint.as_ref().map(|c| c.note.clone()));
    let note = note.ok_or_else(|| Problem::not_found("no checkpoint is signed yet"))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

/// The newest checkpoint for `tlog-tiles` clients, which poll it: cached for a second at most.
pub async fn tlog_checkpoint(state: State<AppState>, who: axum::Extension<Principal>) -> ApiResult {
    let mut response = checkpoint(state, who).await?;
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache, max-age=1"));
    Ok(response)
}

/// `GET /tlog/tile/<L>/<N>[.p/<W>]` and `/tlog/tile/entries/<N>[.p/<W>]` (C2SP tlog-tiles): the
/// tile's raw bytes. Tiles never change once they exist, so they are cached for a year.
pub async fn tile(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(path): Path<String>,
) -> ApiResult {
    may_read_history(&who)?;
    let tile = TileRef::parse(&path).map_err(|e| Problem::not_found(format!("{path:?} is not a tile: {e}")))?;
    let bytes = blocking(&st, move |app| Ok(app.tile(tile)?)).await?;
    let bytes = bytes.ok_or_else(|| Problem::not_found(format!("the log does not have {} yet", tile.path())))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response())
}

/// `?position=N` or `?eventId=…`
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InclusionQuery {
    position: Option<u64>,
    event_id: Option<String>,
}

pub async fn inclusion_proof(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> ApiResult {
    may_read_history(&who)?;
    let proof = blocking(&st, move |app| {
        let position = match (q.position, q.event_id) {
            (Some(p), None) => p,
            (None, Some(id)) => app
                .event_by_id(&id)?
                .and_then(|e| e["position"].as_u64())
                .ok_or_else(|| Problem::not_found(format!("there is no event with id {id:?}")))?,
            _ => return Err(Problem::bad_request("name the event by exactly one of position or eventId")),
        };
        Ok(app.prove_inclusion(position)?)
    })
    .await?;
    ok(serde_json::to_value(proof).map_err(Problem::internal)?)
}

/// `?from=M`: the tree size of the checkpoint the verifier remembers.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
}

pub async fn consistency_proof(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult {
    may_read_history(&who)?;
    let proof = blocking(&st, move |app| Ok(app.prove_consistency(q.from)?)).await?;
    ok(serde_json::to_value(proof).map_err(Problem::internal)?)
}

/// `?to=N`: replay up to position N (default: the head); `&project=P` adds P's bindings and what
/// each resolved to then.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    to: Option<u64>,
    project: Option<String>,
}

pub async fn replay(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiQuery(q): ApiQuery<ReplayQuery>,
) -> ApiResult {
    may_read_history(&who)?;
    let Some(project) = q.project else {
        let report = blocking(&st, move |app| Ok(app.replay_to(q.to)?)).await?;
        return ok(serde_json::to_value(report).map_err(Problem::internal)?);
    };
    let project: crate::ids::ProjectId = project.parse()?;
    let answer = blocking(&st, move |app| {
        let state = app.state_at(q.to)?;
        let report =
            crate::app::audit::ReplayReport { digests: state.digests(), summary: crate::app::audit::summarize(&state) };
        let mut v = serde_json::to_value(report).map_err(Problem::internal)?;
        let bindings: Vec<_> = state.bindings_of(&project).map(|b| super::bindings::binding_json(&state, b)).collect();
        v["project"] = serde_json::json!(project);
        v["bindings"] = serde_json::Value::Array(bindings);
        Ok(v)
    })
    .await?;
    ok(answer)
}

/// The export (canonical NDJSON ending in its signed checkpoint), streamed as it is read: a
/// writer on a blocking thread fills a bounded channel that the response body drains, so memory
/// stays bounded whatever the log's size, and a client that stops reading stops the writer.
pub async fn export(State(st): State<AppState>, axum::Extension(who): axum::Extension<Principal>) -> ApiResult {
    may_read_history(&who)?;
    let (cp_note, tree_size) = st
        .app
        .registry()
        .read(|s| s.registry.last_checkpoint.as_ref().map(|c| (c.note.clone(), c.tree_size)))
        .ok_or_else(|| Problem::not_found("no checkpoint is signed yet, so there is nothing to export against"))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let app = st.app.clone();
    tokio::task::spawn_blocking(move || {
        let mut sink = ChannelWriter { tx: tx.clone(), buffer: Vec::with_capacity(CHUNK) };
        let written = app.export(&mut sink, &cp_note, tree_size).and_then(|_| sink.flush_chunk());
        if let Err(e) = written {
            tracing::warn!(error = %crate::report::ErrorChain(&e), "the export stream stopped");
            let _ = tx.blocking_send(Err(std::io::Error::other("the export stopped; see the server's log")));
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    let body = Body::from_stream(chunks);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"vadyl-history.ndjson\""),
        ],
        body,
    )
        .into_response())
}

const CHUNK: usize = 64 << 10;

/// `io::Write` into the response channel, in chunks; fails once the client has gone.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn flush_chunk(&mut self) -> Result<(), crate::app::audit::AuditError> {
        std::io::Write::flush(self).map_err(crate::app::audit::AuditError::Write)
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client stopped reading"))
    }
}
