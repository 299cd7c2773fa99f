//! `POST /secrets`, `GET /secrets`: project secrets set over the API by an admin. The value goes in
//! and never comes out: the answer is the stored version's metadata (name, version, keyed
//! fingerprint, time), as in the CLI. With several nodes on one database, this is how a secret
//! reaches all of them without touching any node's disk.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::bindings::{project_or_default, ProjectQuery};
use super::problem::Problem;
use super::{ok, ApiJson, ApiQuery, ApiResult, AppState};
use crate::app::access::{Action, Principal};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetSecret {
    /// The project the secret belongs to (default `default`).
    #[serde(default)]
    pub project: Option<String>,
    /// 1 to 128 characters from A-Z, a-z, 0-9, '_', '.' and '-'.
    pub name: String,
    /// The value, as UTF-8 text; stored encrypted, never returned.
    pub value: String,
}

impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the value.
        f.debug_struct("SetSecret").field("project", &self.project).field("name", &self.name).finish_non_exhaustive()
    }
}

pub async fn set(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<SetSecret>,
) -> ApiResult {
    let project = project_or_default(body.project.as_deref())?;
    who.authorize(Action::ManageSecrets { project: &project })?;
    let value = Zeroizing::new(body.value.into_bytes());
    let app = st.app.clone();
    let (name, p) = (body.name, project.clone());
    let stored =
        tokio::task::spawn_blocking(move || app.set_secret(&p, &name, &value)).await.map_err(Problem::internal)??;
    Ok((StatusCode::CREATED, Json(json!({ "project": project, "secret": stored }))).into_response())
}

pub async fn list(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiQuery(q): ApiQuery<ProjectQuery>,
) -> ApiResult {
    let project = project_or_default(q.project.as_deref())?;
    who.authorize(Action::ReadProject { project: &project })?;
    let app = st.app.clone();
    let p = project.clone();
    let secrets = tokio::task::spawn_blocking(move || app.list_secrets(&p)).await.map_err(Problem::internal)??;
    ok(json!({ "project": project, "secrets": secrets }))
}
