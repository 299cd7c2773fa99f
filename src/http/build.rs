//! `POST /build/declarative` (the manifest document itself), `POST /build/component` (component bytes
//! with their implementation id, contract and descriptor), `POST /build/native`, and the manifest's
//! JSON Schema.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::problem::Problem;
use super::{ok, ApiJson, ApiResult, AppState};

pub async fn declarative(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    ApiJson(document): ApiJson<serde_json::Value>,
) -> ApiResult {
    let name = document.get("name").and_then(serde_json::Value::as_str).unwrap_or_default();
    who.authorize(crate::app::access::Action::Build { implementation: name })?;
    let app = st.app.clone();
    let result = tokio::task::spawn_blocking(move || app.build_declarative(&who.metadata(), &document))
        .await
        .map_err(Problem::internal)??;
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(serde_json::to_value(&result).unwrap_or_default())).into_response())
}

pub async fn declarative_schema() -> ApiResult {
    ok(crate::runtime::declarative::manifest_json_schema())
}

/// `POST /build/component`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentBuild {
    /// `name:semver`.
    #[schemars(with = "String")]
    pub implementation_id: crate::ids::ImplementationId,
    /// `kind@major`, e.g. `payment.charge@1`.
    #[schemars(with = "String")]
    pub contract: crate::ids::ContractRef,
    /// What the component may do (allow-list, secrets, fixtures, limits).
    pub descriptor: serde_json::Value,
    /// The component's bytes, standard base64.
    pub component: String,
}

pub async fn component(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    ApiJson(body): ApiJson<ComponentBuild>,
) -> ApiResult {
    use base64::Engine;
    who.authorize(crate::app::access::Action::Build { implementation: body.implementation_id.name.as_str() })?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(body.component.as_bytes())
        .map_err(|e| Problem::bad_request(format!("/component is not standard base64: {e}")))?;
    let app = st.app.clone();
    let result = tokio::task::spawn_blocking(move || {
        app.build_component(&who.metadata(), body.implementation_id, body.contract, &body.descriptor, &wasm)
    })
    .await
    .map_err(Problem::internal)??;
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(serde_json::to_value(&result).unwrap_or_default())).into_response())
}

/// `POST /build/native`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NativeBuild {
    #[schemars(with = "String")]
    pub implementation_id: crate::ids::ImplementationId,
    /// The built-in adapter's name, e.g. `vadyl.webhook-hmac`.
    pub adapter: String,
    #[serde(default)]
    pub descriptor: Option<serde_json::Value>,
}

pub async fn native(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    ApiJson(body): ApiJson<NativeBuild>,
) -> ApiResult {
    who.authorize(crate::app::access::Action::Build { implementation: body.implementation_id.name.as_str() })?;
    let app = st.app.clone();
    let result = tokio::task::spawn_blocking(move || {
        app.build_native(&who.metadata(), body.implementation_id, &body.adapter, body.descriptor.as_ref())
    })
    .await
    .map_err(Problem::internal)??;
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(serde_json::to_value(&result).unwrap_or_default())).into_response())
}
