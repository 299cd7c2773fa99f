//! `POST /invoke`: run an operation of a bound (or directly named, published) implementation.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::bindings::project_or_default;
use super::problem::Problem;
use super::{ok, ApiJson, ApiResult, AppState};
use crate::invocation::{self, InvokeError, InvokeRequest, InvokeTarget};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeBody {
    project: Option<String>,
    alias: Option<String>,
    implementation_id: Option<String>,
    operation: String,
    input: serde_json::Value,
}

impl From<InvokeError> for Problem {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::Command(c) => c.into(),
            InvokeError::InvalidInput(problems) => {
                let detail = InvokeError::InvalidInput(problems.clone()).to_string();
                let items = problems
                    .iter()
                    .map(|(path, message)| serde_json::json!({"path": path, "message": message}))
                    .collect();
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", detail)
                    .with_errors(serde_json::Value::Array(items))
            }
            InvokeError::Lifecycle(l) => l.into(),
            InvokeError::Implementation(m) => Problem::new(StatusCode::BAD_GATEWAY, "implementation-failed", m),
            InvokeError::Internal(m) => Problem::internal(m),
        }
    }
}

pub async fn invoke(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
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
    match who.authorize(crate::auth::Action::WriteProject { project: &project }) {
        Ok(()) => {}
        // Exactly what a binding that does not exist answers.
        Err(crate::auth::Refusal::Hidden) => {
            return Err(Problem::not_found(match &target {
                InvokeTarget::Alias(alias) => format!("project {project} has no binding {alias}"),
                InvokeTarget::Implementation(id) => format!("project {project} has no binding for {id}"),
            }))
        }
        Err(refusal) => return Err(refusal.into()),
    }
    let request = InvokeRequest { project, target, operation: body.operation, input: body.input };
    let result = invocation::invoke(&st.registry, request).await?;
    ok(serde_json::to_value(&result).unwrap_or_default())
}
