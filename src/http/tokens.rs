//! `POST /tokens`, `GET /tokens`, `POST /tokens/{id}/revoke`: access tokens. The token itself is in
//! the creation answer and nowhere else, ever.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::problem::Problem;
use super::{ok, ApiJson, ApiResult, AppState};
use crate::app::access::{Action, Principal};
use crate::ids::{ProjectId, Role};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateToken {
    /// `admin`, `publisher`, `project` or `auditor`.
    #[schemars(with = "String")]
    pub role: Role,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub project: Option<ProjectId>,
    #[serde(default)]
    pub implementations: Vec<String>,
    #[serde(default)]
    pub label: String,
}

pub async fn create(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult {
    who.authorize(Action::ManageTokens)?;
    let app = st.app.clone();
    let role = body.role;
    let new = tokio::task::spawn_blocking(move || {
        app.issue_token(&who.metadata(), body.role, body.project, body.implementations, body.label)
    })
    .await
    .map_err(Problem::internal)??;
    let grant = st.app.registry().read(|p| p.tokens.get(&new.token_id).cloned());
    Ok((
        StatusCode::CREATED,
        Json(json!({"tokenId": new.token_id, "token": new.token, "role": role, "grant": grant,
                    "note": "store the token now: it is shown once and kept only as a hash"})),
    )
        .into_response())
}

pub async fn list(State(st): State<AppState>, Extension(who): Extension<Principal>) -> ApiResult {
    who.authorize(Action::ReadTokens)?;
    let tokens = st.app.registry().read(|p| p.tokens.values().cloned().collect::<Vec<_>>());
    ok(json!({ "tokens": tokens }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revoke {
    pub reason: String,
}

pub async fn revoke(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(token_id): Path<String>,
    ApiJson(body): ApiJson<Revoke>,
) -> ApiResult {
    who.authorize(Action::ManageTokens)?;
    let app = st.app.clone();
    let id = token_id.clone();
    tokio::task::spawn_blocking(move || {
        app.registry().execute(&who.metadata(), |s| crate::commands::revoke_token(s, &id, &body.reason))
    })
    .await
    .map_err(Problem::internal)??;
    let grant = st.app.registry().read(|p| p.tokens.get(&token_id).cloned());
    ok(json!({ "token": grant }))
}
