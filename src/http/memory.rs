//! `GET /memory/get?project=&implementation=&key=` (SPEC §8): one memory entry of one
//! implementation in one project.

use axum::extract::State;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::bindings::project_or_default;
use super::problem::Problem;
use super::{ok, ApiQuery, ApiResult, AppState};
use crate::ids::ImplementationId;
use crate::runtime::host::memory::Scope;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryQuery {
    project: Option<String>,
    implementation: String,
    key: String,
}

pub async fn get(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    ApiQuery(q): ApiQuery<MemoryQuery>,
) -> ApiResult {
    let project = project_or_default(q.project.as_deref())?;
    let implementation: ImplementationId = q.implementation.parse()?;
    if !super::visible(&who, &project)? {
        // Exactly what a key that does not exist answers.
        return Err(Problem::not_found(format!(
            "no memory entry {:?} for {implementation} in project {project}",
            q.key
        )));
    }
    // Memory is shared by every version of an implementation name within a project.
    let scope =
        Scope::new(project.as_str(), implementation.name.as_str()).map_err(|e| Problem::bad_request(e.to_string()))?;
    let app = st.app.clone();
    let key = q.key.clone();
    let entry = tokio::task::spawn_blocking(move || app.memory_get(&scope, &key))
        .await
        .map_err(Problem::internal)?
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let entry = entry.ok_or_else(|| {
        Problem::not_found(format!("no memory entry {:?} for {implementation} in project {project}", q.key))
    })?;
    let text = String::from_utf8(entry.value.clone()).ok();
    ok(json!({
        "key": entry.key,
        "value": text,
        "valueBase64": base64::engine::general_purpose::STANDARD.encode(&entry.value),
        "version": entry.version,
        "expiresAt": entry.expires_at_ms.map(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())),
    }))
}
