//! `POST /build/declarative` (the manifest document itself) and the manifest's JSON Schema.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::problem::Problem;
use super::{actor, ok, ApiJson, ApiResult, AppState};
use crate::lifecycle;

pub async fn declarative(State(st): State<AppState>, ApiJson(document): ApiJson<serde_json::Value>) -> ApiResult {
    let registry = st.registry.clone();
    let result = tokio::task::spawn_blocking(move || lifecycle::build_declarative(&registry, &actor(), &document))
        .await
        .map_err(Problem::internal)??;
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(serde_json::to_value(&result).unwrap_or_default())).into_response())
}

pub async fn declarative_schema() -> ApiResult {
    ok(crate::declarative::manifest_json_schema())
}
