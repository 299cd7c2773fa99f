//! `POST /conformance/run {"implementationId"}`: run the suite; 200 with the report, passed or not.

use axum::extract::State;
use serde::Deserialize;

use super::problem::Problem;
use super::{ok, ApiJson, ApiResult, AppState};
use crate::conformance::{self, ConformanceError};
use crate::ids::ImplementationId;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunBody {
    implementation_id: String,
}

impl From<ConformanceError> for Problem {
    fn from(e: ConformanceError) -> Self {
        match e {
            ConformanceError::Lifecycle(l) => l.into(),
            ConformanceError::Registry(r) => r.into(),
            ConformanceError::Setup(m) => Problem::internal(m),
        }
    }
}

pub async fn run(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
    ApiJson(body): ApiJson<RunBody>,
) -> ApiResult {
    let id: ImplementationId = body.implementation_id.parse()?;
    who.authorize(crate::auth::Action::Conformance { implementation: id.name.as_str() })?;
    let report = conformance::run(&st.registry, &who.metadata(), &id).await?;
    ok(serde_json::to_value(&report).unwrap_or_default())
}
