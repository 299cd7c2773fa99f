//! `POST /conformance/run {"implementationId"}`: run the suite; 200 with the report, passed or not.
//! `GET /conformance/runs[/{run_id}]`: every run the log recorded, with its full report.

use axum::extract::{Path, State};
use serde::Deserialize;

use super::problem::Problem;
use super::{ok, ApiJson, ApiQuery, ApiResult, AppState};
use crate::ids::{ImplementationId, PublicationVersion};
use crate::projections::ConformanceRunView;

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

/// `?implementation=&passed=&publishedAs=&after=&limit=`
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunsQuery {
    /// Only runs of this implementation (`name:version`).
    implementation: Option<String>,
    /// Only runs that passed (`true`) or failed (`false`).
    passed: Option<bool>,
    /// Only the run that admitted its implementation into this publication version.
    published_as: Option<u64>,
    /// Cursor: only runs recorded after this log position (default 0).
    after: Option<u64>,
    /// Runs per page, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// `GET /conformance/runs`: runs in the order the log recorded them, filtered.
pub async fn runs(State(st): State<AppState>, ApiQuery(q): ApiQuery<RunsQuery>) -> ApiResult {
    let implementation: Option<ImplementationId> = q.implementation.as_deref().map(str::parse).transpose()?;
    let limit = super::page_limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    let published_as = q.published_as.map(PublicationVersion);
    let (runs, next) = st.app.registry().read(|s| {
        let mut runs: Vec<&ConformanceRunView> = s
            .conformance_runs
            .values()
            .filter(|r| r.recorded.position > after)
            .filter(|r| implementation.as_ref().is_none_or(|i| *i == r.implementation_id))
            .filter(|r| q.passed.is_none_or(|p| p == r.passed))
            .filter(|r| published_as.is_none_or(|v| r.published_as == Some(v)))
            .collect();
        runs.sort_by_key(|r| r.recorded.position);
        let next = (runs.len() > limit).then(|| runs[limit - 1].recorded.position);
        runs.truncate(limit);
        (serde_json::to_value(&runs), next)
    });
    ok(serde_json::json!({ "runs": runs.map_err(Problem::internal)?, "next": next }))
}

/// `GET /conformance/runs/{run_id}`: one run with every check's result.
pub async fn run_by_id(State(st): State<AppState>, Path(run_id): Path<String>) -> ApiResult {
    let run = st.app.registry().read(|s| s.conformance_runs.get(&run_id).map(serde_json::to_value));
    match run {
        Some(v) => ok(v.map_err(Problem::internal)?),
        None => Err(Problem::not_found(format!("there is no conformance run {run_id:?}"))),
    }
}
