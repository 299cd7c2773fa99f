//! `POST /build/declarative` (the manifest document itself), `POST /build/component` (component bytes
//! with their implementation id, contract and descriptor), `POST /build/native`, and the manifest's
//! JSON Schema.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::problem::Problem;
use super::{ok, ApiJson, ApiResult, AppState};
use crate::app::lifecycle::ComponentUpload;

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

/// `POST /build/component`: `multipart/form-data` (the CLI's way, and the only way for a large
/// component) or the JSON document [`ComponentBuild`] (base64, up to [`COMPONENT_JSON_LIMIT`]).
pub async fn component(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<crate::app::access::Principal>,
    req: axum::extract::Request,
) -> ApiResult {
    let multipart = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    let (id, contract, descriptor, upload) = if multipart {
        upload::receive(&st, &who, req).await?
    } else {
        use axum::extract::FromRequest;
        use base64::Engine;
        let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, COMPONENT_JSON_LIMIT)));
        let ApiJson(body) = ApiJson::<ComponentBuild>::from_request(req, &st).await?;
        who.authorize(crate::app::access::Action::Build { implementation: body.implementation_id.name.as_str() })?;
        let wasm = base64::engine::general_purpose::STANDARD
            .decode(body.component.as_bytes())
            .map_err(|e| Problem::bad_request(format!("/component is not standard base64: {e}")))?;
        (body.implementation_id, body.contract, body.descriptor, ComponentUpload::new(wasm))
    };
    let app = st.app.clone();
    let result =
        tokio::task::spawn_blocking(move || app.build_component(&who.metadata(), id, contract, &descriptor, upload))
            .await
            .map_err(Problem::internal)??;
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(serde_json::to_value(&result).unwrap_or_default())).into_response())
}

/// The JSON form carries the component in base64 (a third larger) and is read whole: it stays for
/// small components and old clients; anything large goes as multipart.
pub const COMPONENT_JSON_LIMIT: usize = 24 << 20;

/// A component's upload limit when the server is not told otherwise: a Python component
/// (componentize-py, ≈ 20–40 MB) with room to spare.
pub const DEFAULT_COMPONENT_LIMIT: u64 = 128 << 20;

/// The multipart form of `POST /build/component`, documented in OpenAPI beside the JSON one.
pub fn multipart_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["implementationId", "contract", "descriptor", "component"],
        "properties": {
            "implementationId": {"type": "string", "description": "`name:semver`; sent before `component`"},
            "contract": {"type": "string", "description": "`kind@major`; sent before `component`"},
            "descriptor": {"type": "string", "description": "the descriptor, a JSON document; sent before `component`"},
            "component": {"type": "string", "format": "binary",
                          "description": "the component's bytes (application/wasm), up to the server's limit"},
        },
    })
}

mod upload {
    //! Receiving a multipart component upload: the small fields first (so that the caller is
    //! authorized before a byte of component is taken), then the component streamed to an
    //! anonymous temporary file and hashed as it arrives, under the server's limit.

    use std::io::{Read, Seek, Write};

    use axum::http::StatusCode;
    use sha2::Digest;

    use super::super::problem::Problem;
    use super::super::AppState;
    use crate::app::access::{Action, Principal};
    use crate::app::lifecycle::ComponentUpload;
    use crate::ids::{ContractRef, ImplementationId};

    /// Most bytes of a text field (the descriptor is the largest: fixtures included).
    const FIELD_LIMIT: usize = 1 << 20;

    type Received = (ImplementationId, ContractRef, serde_json::Value, ComponentUpload);

    fn too_large(limit: u64) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!(
                "the component is larger than this server's limit of {limit} bytes ({} MiB); \
                 the operator sets it with `vadyl serve --max-component-mib`",
                limit >> 20
            ),
        )
    }

    fn malformed(e: axum::extract::multipart::MultipartError) -> Problem {
        Problem::bad_request(format!("the multipart body is malformed: {}", e.body_text()))
    }

    pub(super) async fn receive(
        st: &AppState,
        who: &Principal,
        req: axum::extract::Request,
    ) -> Result<Received, Problem> {
        use axum::extract::FromRequest;
        let limit = st.max_component_bytes;
        // A declared length over the limit is refused before anything is read.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit + 2 * FIELD_LIMIT as u64) {
            return Err(too_large(limit));
        }
        let mut form = axum::extract::Multipart::from_request(req, st)
            .await
            .map_err(|e| Problem::bad_request(format!("the body is not multipart/form-data: {}", e.body_text())))?;
        let mut id: Option<ImplementationId> = None;
        let mut contract: Option<ContractRef> = None;
        let mut descriptor: Option<serde_json::Value> = None;
        let mut component: Option<ComponentUpload> = None;
        while let Some(mut field) = form.next_field().await.map_err(malformed)? {
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                "component" => {
                    let (Some(id), Some(_), Some(_)) = (&id, &contract, &descriptor) else {
                        return Err(Problem::bad_request(
                            "send implementationId, contract and descriptor before component",
                        ));
                    };
                    if component.is_some() {
                        return Err(Problem::bad_request("the form has two component parts"));
                    }
                    who.authorize(Action::Build { implementation: id.name.as_str() })?;
                    let io = |e: std::io::Error| Problem::internal(format!("cannot spool the upload: {e}"));
                    // Unlinked at creation: whatever happens next, nothing of the upload stays on disk.
                    let mut spool = tempfile::tempfile().map_err(io)?;
                    let mut hasher = sha2::Sha256::new();
                    let mut len = 0u64;
                    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                        len += chunk.len() as u64;
                        if len > limit {
                            return Err(too_large(limit));
                        }
                        hasher.update(&chunk);
                        spool.write_all(&chunk).map_err(io)?;
                    }
                    let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                        spool.rewind()?;
                        // Room for the descriptor section, so that embedding it does not copy.
                        let mut bytes = Vec::with_capacity(len as usize + 4 * FIELD_LIMIT);
                        spool.read_to_end(&mut bytes)?;
                        Ok(bytes)
                    })
                    .await
                    .map_err(Problem::internal)?
                    .map_err(io)?;
                    component = Some(ComponentUpload::received(bytes, hasher));
                }
                "implementationId" | "contract" | "descriptor" => {
                    let mut text = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                        if text.len() + chunk.len() > FIELD_LIMIT {
                            return Err(Problem::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "payload-too-large",
                                format!("the {name} part is larger than {FIELD_LIMIT} bytes"),
                            ));
                        }
                        text.extend_from_slice(&chunk);
                    }
                    let text = String::from_utf8(text)
                        .map_err(|_| Problem::bad_request(format!("the {name} part is not UTF-8")))?;
                    let invalid = |e: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", e);
                    match name.as_str() {
                        "implementationId" => {
                            id = Some(text.trim().parse().map_err(|e| invalid(format!("implementationId: {e}")))?)
                        }
                        "contract" => {
                            contract = Some(text.trim().parse().map_err(|e| invalid(format!("contract: {e}")))?)
                        }
                        _ => {
                            descriptor = Some(
                                serde_json::from_str(&text)
                                    .map_err(|e| invalid(format!("descriptor is not JSON: {e}")))?,
                            )
                        }
                    }
                }
                other => {
                    return Err(Problem::bad_request(format!(
                        "unknown part {other:?}: the form takes implementationId, contract, descriptor and component"
                    )))
                }
            }
        }
        match (id, contract, descriptor, component) {
            (Some(id), Some(contract), Some(descriptor), Some(component)) => Ok((id, contract, descriptor, component)),
            _ => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "the form needs the parts implementationId, contract, descriptor and component",
            )),
        }
    }
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
