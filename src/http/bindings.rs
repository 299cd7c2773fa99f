//! Binding routes: `POST/GET /bindings`, `GET /bindings/{alias}` (SPEC §5, §8).
//!
//! Every binding is shown with what it resolves to *now* against `latest`, so a client sees a
//! rollback the moment it happens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::problem::Problem;
use super::{ok, ApiJson, ApiQuery, ApiResult, AppState};
use crate::ids::{BindingAlias, BindingTarget, ProjectId};
use crate::projections::{BindingView, Projections, Resolution};

/// The JSON of a binding with its current resolution.
pub fn binding_json(p: &Projections, b: &BindingView) -> serde_json::Value {
    let mut v = serde_json::to_value(b).unwrap_or_default();
    v["resolvesTo"] = match b.target.parse::<BindingTarget>() {
        Ok(target) => resolution_json(&p.resolve(&target)),
        Err(e) => json!({ "status": "invalid-target", "detail": e.to_string() }),
    };
    v
}

pub fn resolution_json(r: &Resolution<'_>) -> serde_json::Value {
    match r {
        Resolution::Resolved { publication, entry } => json!({
            "status": "resolved", "publicationVersion": publication,
            "implementationId": entry.implementation_id, "source": entry.source,
            "contract": entry.contract, "contentHash": entry.content_hash,
        }),
        Resolution::NoLongerPublished { implementation_id } => {
            json!({ "status": "no-longer-published", "implementationId": implementation_id })
        }
        Resolution::NoMatch => json!({ "status": "no-match" }),
        Resolution::NothingPublished => json!({ "status": "nothing-published" }),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBinding {
    project: Option<String>,
    alias: String,
    implementation: String,
}

pub fn project_or_default(project: Option<&str>) -> Result<ProjectId, Problem> {
    match project {
        None => Ok(ProjectId::default_project()),
        Some(p) => Ok(p.parse()?),
    }
}

pub async fn create(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    ApiJson(body): ApiJson<CreateBinding>,
) -> ApiResult {
    let project = project_or_default(body.project.as_deref())?;
    who.authorize(crate::app::access::Action::WriteProject { project: &project })?;
    let alias: BindingAlias = body.alias.parse()?;
    let target: BindingTarget = body.implementation.parse()?;
    let app = st.app.clone();
    let (p, a) = (project.clone(), alias.clone());
    let stored = tokio::task::spawn_blocking(move || {
        app.registry().execute(&who.metadata(), |s| crate::commands::bind(s, p.clone(), a.clone(), target.clone()))
    })
    .await
    .map_err(Problem::internal)??;
    let status =
        if stored.iter().any(|e| e.event_type == "BindingCreated") { StatusCode::CREATED } else { StatusCode::OK };
    let body = st.app.registry().read(|s| s.binding(&project, &alias).map(|b| binding_json(s, b)));
    let body = body.ok_or_else(|| Problem::internal("the binding vanished after it was stored"))?;
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectQuery {
    pub project: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult {
    let project = project_or_default(q.project.as_deref())?;
    if !super::visible(&who, &project)? {
        // Exactly what a project without bindings answers.
        return ok(json!({ "project": project, "bindings": [] }));
    }
    let list = st.app.registry().read(|s| s.bindings_of(&project).map(|b| binding_json(s, b)).collect::<Vec<_>>());
    ok(json!({ "project": project, "bindings": list }))
}

pub async fn show(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    Path(alias): Path<String>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult {
    let project = project_or_default(q.project.as_deref())?;
    let alias: BindingAlias = alias.parse()?;
    if !super::visible(&who, &project)? {
        return Err(Problem::not_found(format!("project {project} has no binding {alias}")));
    }
    st.app
        .registry()
        .read(|s| s.binding(&project, &alias).map(|b| binding_json(s, b)))
        .map_or_else(|| Err(Problem::not_found(format!("project {project} has no binding {alias}"))), ok)
}
