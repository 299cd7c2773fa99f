//! The HTTP API (SPEC §8): the only module that knows axum.
//!
//! Handlers parse and validate input into typed ids, call `Registry` (reads from the projections,
//! writes through `Registry::execute` on a blocking thread), and map errors to problem+json once,
//! through `problem::Problem`. No handler touches the store or SQL.

pub mod bindings;
pub mod build;
pub mod conformance;
pub mod consistency;
pub mod console;
pub mod drain;
pub mod feed;
pub mod history;
pub mod invoke;
pub mod memory;
pub mod openapi;
pub mod problem;
pub mod rate;
pub mod secrets;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::app::access::{Action, Principal, Refusal};
use crate::app::registry::Registry;
use crate::app::App;
use crate::events::envelope::EventMetadata;
use crate::ids::{ContractKind, ContractRef, ImplementationId, PublicationVersion};
use crate::projections::{Projections, PublicationView};
use problem::Problem;

pub type ApiResult = Result<Response, Problem>;

#[derive(Clone)]
pub struct AppState {
    pub app: Arc<App>,
    pub auth: Auth,
    /// Per-token request rates (none: unlimited).
    pub rates: Option<Arc<rate::TokenRates>>,
    /// How the event feed treats its subscribers.
    pub feed: feed::FeedLimits,
    /// The event feed's shared tail.
    pub hub: feed::FeedHub,
    /// Most bytes of a component upload (413 beyond).
    pub max_component_bytes: u64,
}

/// How requests are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Bearer tokens (a server).
    Tokens,
    /// The data directory's owner calling in-process (the CLI without `--server`).
    Local,
}

/// Attaches the caller's [`Principal`] to the request, or answers 401.
async fn authenticate(State(st): State<AppState>, mut req: Request, next: axum::middleware::Next) -> Response {
    let principal = match st.auth {
        Auth::Local => Some(Principal::local()),
        Auth::Tokens => {
            let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            match header.and_then(|h| h.strip_prefix("Bearer ")) {
                None => return unauthorized("send a token: Authorization: Bearer vadyl_…"),
                Some(token) => match st.app.authenticate(token.trim()) {
                    Ok(Some(principal)) => {
                        if let (Some(id), Some(rates)) = (principal.token_id(), &st.rates) {
                            if let Err(wait) = rates.check(id) {
                                return rate_limited(id, rates.rate(), wait);
                            }
                        }
                        Some(principal)
                    }
                    Ok(None) => None,
                    Err(e) => return Problem::from(e).into_response(),
                },
            }
        }
    };
    match principal {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => unauthorized("the token is malformed, unknown or revoked"),
    }
}

/// Whether `who` may read `project`: `Ok(false)` when the project must look like one that does not
/// exist (another project, for a project token), `Err` (403) when the role never may.
pub(crate) fn visible(who: &Principal, project: &crate::ids::ProjectId) -> Result<bool, Problem> {
    match who.authorize(Action::ReadProject { project }) {
        Ok(()) => Ok(true),
        Err(Refusal::Hidden) => Ok(false),
        Err(r) => Err(r.into()),
    }
}

fn rate_limited(token_id: &str, rate: rate::TokenRate, wait: Duration) -> Response {
    let detail = format!(
        "token {token_id} is over its rate ({} requests per second, bursts of {}); retry after the indicated delay",
        rate.per_second, rate.burst
    );
    let mut r = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", &detail).into_response();
    // Whole seconds, rounded up: a client that waits that long is let in.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs.max(1)));
    r
}

fn unauthorized(detail: &str) -> Response {
    let mut r = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    r.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    r
}

/// One API route: the router and the OpenAPI document are both built from [`api_routes`], so the
/// document cannot describe a route the server does not have, nor miss one.
pub struct ApiRoute {
    pub method: axum::http::Method,
    /// Path below `/api/Connector`, axum syntax (`{param}`), which is also OpenAPI's.
    pub path: &'static str,
    pub summary: &'static str,
    /// Roles allowed (documentation; enforced in the handler).
    pub roles: &'static str,
    /// JSON Schema of the request body.
    pub body: Option<fn() -> serde_json::Value>,
    /// Schema of the `multipart/form-data` form the route also takes.
    pub multipart: Option<fn() -> serde_json::Value>,
    /// JSON Schema of the query parameters (an object schema).
    pub query: Option<fn() -> serde_json::Value>,
    /// The media type of a successful answer when it is not JSON.
    pub produces: Option<&'static str>,
    pub handler: axum::routing::MethodRouter<AppState>,
}

fn schema<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default()
}

pub fn api_routes() -> Vec<ApiRoute> {
    use axum::http::Method;
    let r = |method: Method, path, summary, roles, handler| ApiRoute {
        method,
        path,
        summary,
        roles,
        body: None,
        multipart: None,
        query: None,
        produces: None,
        handler,
    };
    let all = "admin, publisher, project, auditor";
    vec![
        r(Method::GET, "/contracts", "Every registered contract", all, get(list_contracts)),
        r(Method::GET, "/contracts/{kind}/{major_version}", "One contract with its schemas", all, get(get_contract)),
        r(Method::GET, "/implementations", "Built implementations", all, get(list_implementations)),
        r(Method::GET, "/implementations/{implementation_id}", "One implementation", all, get(get_implementation)),
        r(
            Method::GET,
            "/implementations/{implementation_id}/configuration",
            "What an implementation declares (manifest, descriptor or native artifact), from its verified artifact",
            all,
            get(implementation_configuration),
        ),
        r(Method::GET, "/publication/latest", "The newest valid publication", all, get(latest_publication)),
        r(Method::GET, "/publication/version/{version}", "One publication version", all, get(publication_version)),
        r(
            Method::GET,
            "/publication/version/{version}/{implementation_id}",
            "One implementation in one publication version",
            all,
            get(publication_entry),
        ),
        ApiRoute {
            body: Some(schema::<InvalidateBody>),
            ..r(Method::POST, "/publication/invalidate", "Withdraw a version", "admin", post(invalidate_publication))
        },
        ApiRoute {
            body: Some(schema::<bindings::CreateBinding>),
            ..r(Method::POST, "/bindings", "Bind an alias in a project", "admin, project", post(bindings::create))
        },
        ApiRoute {
            query: Some(schema::<bindings::ProjectQuery>),
            ..r(Method::GET, "/bindings", "A project's bindings", "admin, project, auditor", get(bindings::list))
        },
        ApiRoute {
            query: Some(schema::<bindings::ProjectQuery>),
            ..r(Method::GET, "/bindings/{alias}", "One binding", "admin, project, auditor", get(bindings::show))
        },
        ApiRoute {
            query: Some(schema::<memory::MemoryQuery>),
            ..r(Method::GET, "/memory/get", "One memory entry", "admin, project, auditor", get(memory::get))
        },
        ApiRoute {
            body: Some(schema::<invoke::InvokeBody>),
            ..r(Method::POST, "/invoke", "Run an operation", "admin, project", post(invoke::invoke))
        },
        ApiRoute {
            body: Some(schema::<conformance::RunBody>),
            ..r(
                Method::POST,
                "/conformance/run",
                "Run the conformance suite",
                "admin, publisher",
                post(conformance::run),
            )
        },
        ApiRoute {
            body: Some(crate::runtime::declarative::manifest_json_schema),
            ..r(
                Method::POST,
                "/build/declarative",
                "Build a declarative bundle",
                "admin, publisher",
                post(build::declarative),
            )
        },
        ApiRoute {
            body: Some(schema::<build::ComponentBuild>),
            multipart: Some(build::multipart_schema),
            ..r(
                Method::POST,
                "/build/component",
                "Build a WebAssembly component (multipart/form-data, or JSON with the component in base64)",
                "admin, publisher",
                // Bounded in the handler: the JSON form by its own limit, the upload by the server's.
                post(build::component).layer(axum::extract::DefaultBodyLimit::disable()),
            )
        },
        ApiRoute {
            body: Some(schema::<build::NativeBuild>),
            ..r(Method::POST, "/build/native", "Register a built-in adapter", "admin, publisher", post(build::native))
        },
        ApiRoute {
            query: Some(schema::<conformance::RunsQuery>),
            ..r(Method::GET, "/conformance/runs", "Conformance runs as recorded, filtered", all, get(conformance::runs))
        },
        r(
            Method::GET,
            "/conformance/runs/{run_id}",
            "One conformance run with its report",
            all,
            get(conformance::run_by_id),
        ),
        ApiRoute {
            query: Some(schema::<invoke::RecordsQuery>),
            ..r(
                Method::GET,
                "/invocations",
                "A project's invocation records, oldest first",
                "admin, project, auditor",
                get(invoke::records),
            )
        },
        r(
            Method::GET,
            "/invocations/{invocation_id}",
            "One invocation record: redacted input, output, exchanges, trace and tape",
            "admin, project, auditor",
            get(invoke::record),
        ),
        r(Method::GET, "/build/declarative/schema", "The manifest's JSON Schema", all, get(build::declarative_schema)),
        ApiRoute {
            body: Some(schema::<tokens::CreateToken>),
            ..r(Method::POST, "/tokens", "Issue a token (shown once)", "admin", post(tokens::create))
        },
        r(Method::GET, "/tokens", "Every token's grant", "admin, auditor", get(tokens::list)),
        ApiRoute {
            body: Some(schema::<secrets::SetSecret>),
            ..r(
                Method::POST,
                "/secrets",
                "Store a project secret's next version (the value is never returned)",
                "admin",
                post(secrets::set),
            )
        },
        ApiRoute {
            query: Some(schema::<bindings::ProjectQuery>),
            ..r(
                Method::GET,
                "/secrets",
                "A project's secrets: metadata, never values",
                "admin, project, auditor",
                get(secrets::list),
            )
        },
        ApiRoute {
            query: Some(schema::<history::EventsQuery>),
            ..r(Method::GET, "/events", "A page of the log, as stored", "admin, auditor", get(history::list))
        },
        ApiRoute {
            query: Some(schema::<feed::StreamQuery>),
            produces: Some("text/event-stream"),
            ..r(
                Method::GET,
                "/events/stream",
                "The log as Server-Sent Events: catch up from a position (or Last-Event-ID), then live",
                "admin, auditor",
                get(feed::stream),
            )
        },
        r(Method::GET, "/events/{position}", "One event by position", "admin, auditor", get(history::by_position)),
        r(Method::GET, "/events/by-id/{event_id}", "One event by id", "admin, auditor", get(history::by_id)),
        ApiRoute {
            produces: Some("text/plain"),
            ..r(
                Method::GET,
                "/audit/checkpoint",
                "The newest signed checkpoint (C2SP signed note)",
                "admin, auditor",
                get(history::checkpoint),
            )
        },
        ApiRoute {
            query: Some(schema::<history::InclusionQuery>),
            ..r(
                Method::GET,
                "/audit/proof/inclusion",
                "An inclusion proof against the newest checkpoint",
                "admin, auditor",
                get(history::inclusion_proof),
            )
        },
        ApiRoute {
            query: Some(schema::<history::ConsistencyQuery>),
            ..r(
                Method::GET,
                "/audit/proof/consistency",
                "A consistency proof from a smaller tree to the newest checkpoint",
                "admin, auditor",
                get(history::consistency_proof),
            )
        },
        ApiRoute {
            query: Some(schema::<history::ReplayQuery>),
            ..r(
                Method::GET,
                "/audit/replay",
                "The projections' digests at a position",
                "admin, auditor",
                get(history::replay),
            )
        },
        ApiRoute {
            produces: Some("application/x-ndjson"),
            ..r(
                Method::GET,
                "/audit/export",
                "The history as canonical NDJSON with its checkpoint (streamed)",
                "admin, auditor",
                get(history::export),
            )
        },
        ApiRoute {
            produces: Some("text/plain"),
            ..r(
                Method::GET,
                "/tlog/checkpoint",
                "C2SP tlog-tiles: the newest checkpoint",
                "admin, auditor",
                get(history::tlog_checkpoint),
            )
        },
        ApiRoute {
            produces: Some("application/octet-stream"),
            ..r(
                Method::GET,
                "/tlog/tile/{*tile}",
                "C2SP tlog-tiles: a tile (`<L>/<N>[.p/<W>]`) or entry bundle (`entries/<N>[.p/<W>]`) of event hashes",
                "admin, auditor",
                get(history::tile),
            )
        },
        ApiRoute {
            body: Some(schema::<tokens::Revoke>),
            ..r(Method::POST, "/tokens/{token_id}/revoke", "Revoke a token", "admin", post(tokens::revoke))
        },
    ]
}

/// The API for in-process calls by the data directory's owner.
pub fn router(app: Arc<App>) -> Router {
    router_with(app, Auth::Local, None, feed::FeedLimits::default(), build::DEFAULT_COMPONENT_LIMIT)
}

pub fn router_with(
    app: Arc<App>,
    auth: Auth,
    rates: Option<Arc<rate::TokenRates>>,
    feed: feed::FeedLimits,
    max_component_bytes: u64,
) -> Router {
    let state = AppState { app, auth, rates, feed, hub: feed::FeedHub::default(), max_component_bytes };
    let mut api = Router::new();
    let mut by_path: Vec<(&'static str, axum::routing::MethodRouter<AppState>)> = Vec::new();
    for route in api_routes() {
        match by_path.iter_mut().find(|(p, _)| *p == route.path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(route.handler),
            None => by_path.push((route.path, route.handler)),
        }
    }
    for (path, handler) in by_path {
        api = api.route(path, handler);
    }
    // Authenticated first (outermost), so that only a caller with a token makes a node read the log.
    let api = api
        .layer(axum::middleware::from_fn_with_state(state.clone(), consistency::read_your_writes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .nest("/api/Connector", api)
        .route("/api/openapi.json", get(openapi::serve))
        .merge(console::routes())
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "this route does not take that method")
        })
        // Bodies are bounded where they are read (extractors), so the refusal is a problem document.
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        // Outermost but for tracing, so that even a refusal by `authenticate` drains the upload.
        .layer(axum::middleware::from_fn(drain::drain_refused_bodies))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// A JSON body whose rejections (bad syntax, wrong content type, unknown fields) are problem+json.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::JsonDataError(e)) => {
                Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", e.body_text()))
            }
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "the request body is too large for this route",
            )),
            Err(e) => Err(Problem::bad_request(e.body_text())),
        }
    }
}

/// Query parameters whose rejections are problem+json too.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(Problem::bad_request(e.body_text())),
        }
    }
}

/// A page size from `?limit=`: 1 to `history::MAX_PAGE`, `history::DEFAULT_PAGE` when absent.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, Problem> {
    use crate::app::history::{DEFAULT_PAGE, MAX_PAGE};
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(l) if (1..=MAX_PAGE).contains(&l) => Ok(l),
        Some(l) => Err(Problem::bad_request(format!("limit must be 1 to {MAX_PAGE}; got {l}"))),
    }
}

pub(crate) fn ok(value: serde_json::Value) -> ApiResult {
    Ok(Json(value).into_response())
}

async fn list_contracts(State(st): State<AppState>) -> ApiResult {
    let contracts = st.app.registry().read(|p| {
        p.contracts
            .values()
            .map(|c| {
                json!({
                    "contract": c.contract, "kind": c.kind, "majorVersion": c.major_version,
                    "world": c.world, "description": c.description, "witDigest": c.wit_digest,
                    "revision": c.revision,
                    "operations": c.operations.iter().map(|o| &o.name).collect::<Vec<_>>(),
                    "sensitiveFields": c.sensitive_fields,
                })
            })
            .collect::<Vec<_>>()
    });
    ok(json!({ "contracts": contracts }))
}

async fn get_contract(State(st): State<AppState>, Path((kind, major)): Path<(String, String)>) -> ApiResult {
    let kind: ContractKind = kind.parse()?;
    let major_version: u32 =
        major.parse().map_err(|_| Problem::bad_request(format!("majorVersion {major:?} must be a whole number")))?;
    let contract = ContractRef { kind, major_version };
    st.app
        .registry()
        .read(|p| p.contract(&contract).map(|c| serde_json::to_value(c).unwrap_or_default()))
        .map_or_else(|| Err(Problem::not_found(format!("contract {contract} is not registered"))), ok)
}

fn implementation_json(p: &Projections, id: &ImplementationId) -> Option<serde_json::Value> {
    let view = p.implementation(id)?;
    let mut v = serde_json::to_value(view).ok()?;
    let in_latest = p.publications.latest().is_some_and(|l| l.entry(id).is_some());
    v["inLatestPublication"] = json!(in_latest);
    Some(v)
}

async fn list_implementations(State(st): State<AppState>) -> ApiResult {
    let list = st.app.registry().read(|p| {
        p.implementations.values().filter_map(|i| implementation_json(p, &i.implementation_id)).collect::<Vec<_>>()
    });
    ok(json!({ "implementations": list }))
}

async fn get_implementation(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id: ImplementationId = id.parse()?;
    st.app
        .registry()
        .read(|p| implementation_json(p, &id))
        .map_or_else(|| Err(Problem::not_found(format!("implementation {id} does not exist"))), ok)
}

async fn implementation_configuration(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id: ImplementationId = id.parse()?;
    let app = st.app.clone();
    // Reading and verifying an artifact is disk work: off the async threads.
    let document = tokio::task::spawn_blocking(move || app.configuration(&id)).await.map_err(Problem::internal)??;
    ok(document)
}

pub fn publication_json(p: &Projections, view: &PublicationView) -> serde_json::Value {
    let mut v = serde_json::to_value(view).unwrap_or_default();
    v["status"] = json!(view.status());
    v["isLatest"] = json!(p.publications.latest().map(|l| l.publication_version) == Some(view.publication_version));
    v
}

async fn latest_publication(State(st): State<AppState>) -> ApiResult {
    st.app
        .registry()
        .read(|p| p.publications.latest().map(|l| publication_json(p, l)))
        .map_or_else(|| Err(Problem::not_found("nothing is published yet (or every version is invalidated)")), ok)
}

fn parse_version(v: &str) -> Result<PublicationVersion, Problem> {
    Ok(v.parse()?)
}

async fn publication_version(State(st): State<AppState>, Path(version): Path<String>) -> ApiResult {
    let version = parse_version(&version)?;
    st.app
        .registry()
        .read(|p| p.publications.get(version).map(|v| publication_json(p, v)))
        .map_or_else(|| Err(Problem::not_found(format!("publication version {version} does not exist"))), ok)
}

async fn publication_entry(State(st): State<AppState>, Path((version, id)): Path<(String, String)>) -> ApiResult {
    let version = parse_version(&version)?;
    let id: ImplementationId = id.parse()?;
    st.app.registry().read(|p| {
        let publication = p
            .publications
            .get(version)
            .ok_or_else(|| Problem::not_found(format!("publication version {version} does not exist")))?;
        let entry = publication
            .entry(&id)
            .ok_or_else(|| Problem::not_found(format!("publication version {version} does not list {id}")))?;
        let mut v = serde_json::to_value(entry).unwrap_or_default();
        v["publicationVersion"] = json!(version);
        v["publicationStatus"] = json!(publication.status());
        v["invalidated"] = json!(publication.invalidated);
        ok(v)
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InvalidateBody {
    publication_version: u64,
    reason: String,
}

async fn invalidate_publication(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiJson(body): ApiJson<InvalidateBody>,
) -> ApiResult {
    who.authorize(Action::Invalidate)?;
    let version = PublicationVersion(body.publication_version);
    if version.0 == 0 {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "publicationVersion starts at 1"));
    }
    let app = st.app.clone();
    let latest = tokio::task::spawn_blocking(move || {
        app.registry().invalidate_publication(&who.metadata(), version, &body.reason)
    })
    .await
    .map_err(Problem::internal)??;
    let latest = st.app.registry().read(|p| latest.as_ref().map(|l| publication_json(p, l)));
    ok(json!({ "invalidated": version, "latest": latest }))
}

/// How much a server takes on at once, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests handled at once; beyond it a request is refused at once with 503 and `Retry-After`
    /// rather than queued (a queue only turns overload into timeouts for everybody).
    pub max_concurrent: usize,
    /// A request still running after this is answered 503; work already handed to the registry
    /// finishes (a write is acknowledged only by its 2xx).
    pub request_timeout: Duration,
    /// How fast each token may send requests (429 beyond); `None` for no per-token limit.
    pub per_token: Option<rate::TokenRate>,
    /// How the event feed (`/events/stream`) treats its subscribers.
    pub feed: feed::FeedLimits,
    /// Most bytes of a component upload (`POST /build/component`); 413 beyond.
    pub max_component_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            request_timeout: Duration::from_secs(120),
            per_token: rate::TokenRate::new(DEFAULT_TOKEN_RATE, DEFAULT_TOKEN_BURST),
            feed: feed::FeedLimits::default(),
            max_component_bytes: build::DEFAULT_COMPONENT_LIMIT,
        }
    }
}

/// Requests per second one token may send by default: far above what a person or a deploy
/// pipeline sends, low enough that one runaway client cannot hold the whole server.
pub const DEFAULT_TOKEN_RATE: u32 = 100;
/// Requests one token may send at once by default.
pub const DEFAULT_TOKEN_BURST: u32 = 200;

/// Seconds a refused client is asked to wait.
const RETRY_AFTER_SECS: u64 = 1;

/// The router behind load shedding, a concurrency limit and a request timeout, every refusal a
/// problem document. Health checks bypass the limit so an overloaded server still says it is alive.
pub fn limited(app: Arc<App>, limits: Limits) -> Router {
    use axum::error_handling::HandleErrorLayer;
    use tower::ServiceBuilder;
    let rates = limits.per_token.map(|r| Arc::new(rate::TokenRates::new(r)));
    let api = router_with(app, Auth::Tokens, rates, limits.feed, limits.max_component_bytes).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|e: axum::BoxError| async move {
                let (detail, slug) = if e.is::<tower::load_shed::error::Overloaded>() {
                    ("the server is at its concurrency limit; retry after the indicated delay", "overloaded")
                } else if e.is::<tower::timeout::error::Elapsed>() {
                    ("the request took longer than the server's request timeout", "timeout")
                } else {
                    ("the server could not take the request", "unavailable")
                };
                let mut response = Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, detail).into_response();
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(RETRY_AFTER_SECS));
                response
            }))
            .load_shed()
            .concurrency_limit(limits.max_concurrent.max(1))
            .timeout(limits.request_timeout),
    );
    Router::new().route("/healthz", get(|| async { Json(json!({"status": "ok"})) })).merge(api)
}

/// When the server signs a checkpoint on its own: proofs cover an event at most this long, or this
/// many events, after it was appended.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointCadence {
    /// Sign when the head is not covered and this long has passed since the last signing.
    pub interval: Duration,
    /// Sign as soon as this many events are not covered, whatever the time.
    pub events: u64,
}

impl Default for CheckpointCadence {
    fn default() -> Self {
        Self { interval: Duration::from_secs(10), events: 1000 }
    }
}

/// How often the event-count threshold is looked at: a read of the projections, no I/O.
const CADENCE_POLL: Duration = Duration::from_millis(200);

/// Serves until Ctrl-C / SIGTERM. Signs checkpoints on `cadence` and snapshots in the background,
/// and both once more on the way out, so a clean stop leaves a signed head and a fresh snapshot.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    limits: Limits,
    cadence: CheckpointCadence,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    let maintenance = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CADENCE_POLL.min(cadence.interval));
            let (mut signed_at, mut snapshot_at) = (tokio::time::Instant::now(), tokio::time::Instant::now());
            loop {
                tick.tick().await;
                let (head, covered) = app
                    .registry()
                    .read(|s| (s.position, s.registry.last_checkpoint.as_ref().map_or(0, |c| c.tree_size)));
                // The newest checkpoint is itself an event, one past the tree it covers.
                let uncovered = head.saturating_sub(covered).saturating_sub(1);
                let sign =
                    uncovered > 0 && (signed_at.elapsed() >= cadence.interval || uncovered >= cadence.events.max(1));
                let snapshot = snapshot_at.elapsed() >= cadence.interval;
                if sign {
                    signed_at = tokio::time::Instant::now();
                    let a = app.clone();
                    let _ = tokio::task::spawn_blocking(move || sign_checkpoint(a.registry())).await;
                }
                if snapshot {
                    snapshot_at = tokio::time::Instant::now();
                    let a = app.clone();
                    let _ = tokio::task::spawn_blocking(move || snapshot_if_stale(a.registry())).await;
                }
            }
        })
    };
    // Another node's appends reach this node's state (and its live feed) as soon as the log says
    // someone committed, not only at the next read.
    let follower = app.registry().log_changes().map(|mut changes| {
        let app = app.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let a = app.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.registry().catch_up()).await {
                    tracing::warn!(error = %crate::report::ErrorChain(&e), "cannot fold the log's new events");
                }
            }
        })
    });
    axum::serve(listener, limited(app.clone(), limits)).with_graceful_shutdown(shutdown_signal()).await?;
    maintenance.abort();
    if let Some(f) = follower {
        f.abort();
    }
    tokio::task::spawn_blocking(move || maintain(app.registry())).await.map_err(std::io::Error::other)?;
    Ok(())
}

fn maintain(registry: &Registry) {
    sign_checkpoint(registry);
    snapshot_if_stale(registry);
}

fn sign_checkpoint(registry: &Registry) {
    if let Err(e) = registry.checkpoint(&EventMetadata::actor("system")) {
        tracing::error!(error = %crate::report::ErrorChain(&e), "checkpoint failed");
    }
}

fn snapshot_if_stale(registry: &Registry) {
    if let Err(e) = registry.snapshot_if_stale(1) {
        tracing::error!(error = %crate::report::ErrorChain(&e), "snapshot failed");
    }
}

/// Sends one request to `router` in-process and returns the status and the JSON body (`null` when
/// the body is empty): how the CLI without `--server` runs a read command through the very handlers
/// a server uses, so both modes print the same JSON.
pub async fn call_local(
    router: Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), LocalCallError> {
    use tower::ServiceExt;
    let builder = axum::http::Request::builder().method(method).uri(format!("/api/Connector{path}"));
    let request = match body {
        Some(b) => builder
            .header("content-type", "application/json")
            .body(axum::body::Body::from(serde_json::to_vec(&b).map_err(LocalCallError::Json)?)),
        None => builder.body(axum::body::Body::empty()),
    }
    .map_err(|e| LocalCallError::Request(e.to_string()))?;
    let response = router.oneshot(request).await.map_err(|e| LocalCallError::Request(e.to_string()))?;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .map_err(|e| LocalCallError::Request(e.to_string()))?;
    let value = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(LocalCallError::Json)?
    };
    Ok((status, value))
}

#[derive(Debug, thiserror::Error)]
pub enum LocalCallError {
    #[error("the in-process request failed: {0}")]
    Request(String),
    #[error("the in-process answer is not JSON")]
    Json(#[source] serde_json::Error),
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
