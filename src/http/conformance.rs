//! `POST /conformance/run {"implementationId"}`: run the suite; 200 with the report, passed or not.

use axum::extract::State;
use serde::Deserialize;

use super::{ok, ApiJson, ApiResult, AppState};
use crate::ids::ImplementationId;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunBody {
    implementation_id: String,
}

pub async fn run(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    ApiJson(body): ApiJson<RunBody>,
) -> ApiResult {
    let id: ImplementationId = body.implementation_id.parse()?;
    who.authorize(crate::app::access::Action::Conformance { implementation: id.name.as_str() })?;
    let report = st.app.run_conformance(&who.metadata(), &id).await?;
    ok(serde_json::to_value(&report).unwrap_or_default())
}
