//! `POST /invoke`: run an operation of a bound (or directly named, published) implementation.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::bindings::project_or_default;
use super::problem::Problem;
use super::{ok, ApiJson, ApiResult, AppState};
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
