//! `POST /invoke`: run an operation of a bound (or directly named, published) implementation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::bindings::project_or_default;
use super::problem::Problem;
use super::{ok, ApiJson, ApiQuery, ApiResult, AppState};
use crate::app::invoke::{InvokeRequest, InvokeTarget};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeBody {
    project: Option<String>,
    alias: Option<String>,
    implementation_id: Option<String>,
    operation: String,
    input: serde_json::Value,
}

pub async fn invoke(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    ApiJson(body): ApiJson<InvokeBody>,
) -> ApiResult {
    let project = project_or_default(body.project.as_deref())?;
    let target = match (body.alias, body.implementation_id) {
        (Some(alias), None) => InvokeTarget::Alias(alias.parse()?),
        (None, Some(id)) => InvokeTarget::Implementation(id.parse()?),
        _ => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "give exactly one of alias and implementationId",
            ))
        }
    };
    match who.authorize(crate::app::access::Action::WriteProject { project: &project }) {
        Ok(()) => {}
        // Exactly what a binding that does not exist answers.
        Err(crate::app::access::Refusal::Hidden) => {
            return Err(Problem::not_found(match &target {
                InvokeTarget::Alias(alias) => format!("project {project} has no binding {alias}"),
                InvokeTarget::Implementation(id) => format!("project {project} has no binding for {id}"),
            }))
        }
        Err(refusal) => return Err(refusal.into()),
    }
    let request = InvokeRequest { project, target, operation: body.operation, input: body.input };
    let result = st.app.invoke(request).await?;
    ok(serde_json::to_value(&result).unwrap_or_default())
}

/// `?project=&after=&limit=`
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// The project (default `default`).
    project: Option<String>,
    /// Cursor: only records stored after this one (default 0, the first).
    after: Option<u64>,
    /// Records per page, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// `GET /invocations?project=`: a project's invocation history, oldest first. A project token
/// sees its own project only; another project's history looks empty, as a project without
/// invocations does.
pub async fn records(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    ApiQuery(q): ApiQuery<RecordsQuery>,
) -> ApiResult {
    let project = project_or_default(q.project.as_deref())?;
    let limit = super::page_limit(q.limit)?;
    if !super::visible(&who, &project)? {
        return ok(serde_json::json!({ "records": [], "next": null }));
    }
    let app = st.app.clone();
    let after = q.after.unwrap_or(0);
    let page = tokio::task::spawn_blocking(move || app.invocation_records(&project, after, limit))
        .await
        .map_err(Problem::internal)??;
    ok(serde_json::to_value(page).map_err(Problem::internal)?)
}

/// `GET /invocations/{invocation_id}`: one record with its redacted exchanges, trace and tape.
pub async fn record(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    // A role that reads no project's records is refused before anything is looked up.
    super::visible(&who, &crate::ids::ProjectId::default_project())?;
    let app = st.app.clone();
    let wanted = id.clone();
    let record =
        tokio::task::spawn_blocking(move || app.invocation_record(&wanted)).await.map_err(Problem::internal)??;
    let missing = || Problem::not_found(format!("there is no invocation record {id:?}"));
    let record = record.ok_or_else(missing)?;
    // Another project's record looks exactly like one that does not exist.
    if !super::visible(&who, &record.project)? {
        return Err(missing());
    }
    ok(serde_json::to_value(&record).map_err(Problem::internal)?)
}
