//! `POST /conformance/run {"implementationId"}`: run the suite; 200 with the report, passed or not.

use axum::extract::State;
use serde::Deserialize;

use super::problem::Problem;
use super::{actor, ok, ApiJson, ApiResult, AppState};
use crate::conformance::{self, ConformanceError};
use crate::ids::ImplementationId;

#[derive(Deserialize)]
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

pub async fn run(State(st): State<AppState>, ApiJson(body): ApiJson<RunBody>) -> ApiResult {
    let id: ImplementationId = body.implementation_id.parse()?;
    let report = conformance::run(&st.registry, &actor(), &id).await?;
    ok(serde_json::to_value(&report).unwrap_or_default())
}
