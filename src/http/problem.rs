//! RFC 9457 problem documents: the one place errors become HTTP statuses. Every error type of the
//! layers below has its `From` here and nowhere else.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::registry::RegistryError;
use crate::commands::CommandError;

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Itemised problems (e.g. every invalid manifest field, with its JSON Pointer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("https://vadyl.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
        }
    }

    pub fn with_errors(mut self, errors: serde_json::Value) -> Self {
        self.errors = Some(errors);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        // The detail is logged, not sent: internal errors may name paths and SQL.
        tracing::error!(error = %detail, "internal error");
        Self::internal_opaque()
    }

    /// [`Problem::internal`] for an error with causes: the whole chain goes to the log.
    pub fn internal_error(e: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %crate::report::ErrorChain(e), "internal error");
        Self::internal_opaque()
    }

    fn internal_opaque() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the registry failed to handle the request; see its log",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

impl From<CommandError> for Problem {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound(d) => Self::new(StatusCode::NOT_FOUND, "not-found", d),
            CommandError::Conflict(d) => Self::new(StatusCode::CONFLICT, "conflict", d),
            CommandError::Invalid(d) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", d),
            CommandError::Gone(d) => Self::new(StatusCode::GONE, "gone", d),
        }
    }
}

impl From<RegistryError> for Problem {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Command(c) => c.into(),
            RegistryError::Store(crate::events::store::StoreError::WrongExpectedVersion { .. })
            | RegistryError::Contention(_) => {
                Self::new(StatusCode::CONFLICT, "concurrent-change", format!("{e}; retry the request"))
            }
            other => Self::internal_error(&other),
        }
    }
}

impl From<crate::app::records::RecordError> for Problem {
    fn from(e: crate::app::records::RecordError) -> Self {
        Self::internal_error(&e)
    }
}

impl From<crate::ids::IdError> for Problem {
    fn from(e: crate::ids::IdError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<crate::app::lifecycle::LifecycleError> for Problem {
    fn from(e: crate::app::lifecycle::LifecycleError) -> Self {
        use crate::app::lifecycle::LifecycleError;
        match e {
            LifecycleError::InvalidManifest(errors) => {
                let detail = LifecycleError::InvalidManifest(errors.clone()).to_string();
                let items = errors.iter().map(|e| serde_json::json!({"path": e.path, "message": e.message})).collect();
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-manifest", detail)
                    .with_errors(serde_json::Value::Array(items))
            }
            LifecycleError::Registry(r) => r.into(),
            e @ (LifecycleError::UnknownContract(_)
            | LifecycleError::InvalidDescriptor(_)
            | LifecycleError::UnknownFixture { .. }
            | LifecycleError::UnknownNativeAdapter { .. }) => {
                Self::bad_request(crate::report::ErrorChain(&e).to_string())
            }
            e @ (LifecycleError::ArtifactStore { .. }
            | LifecycleError::Contracts(_)
            | LifecycleError::AllowList(_)
            | LifecycleError::Canonicalize { .. }
            | LifecycleError::Vanished(_)
            | LifecycleError::StoredArtifactUnreadable { .. }
            | LifecycleError::NativeAdapterMissing { .. }
            | LifecycleError::NativeVersionMismatch(_)) => Self::internal_error(&e),
            LifecycleError::Component(c) => {
                use crate::runtime::component::ComponentError as C;
                match c {
                    C::ForbiddenImports(imports) => {
                        let detail = C::ForbiddenImports(imports.clone()).to_string();
                        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "forbidden-imports", detail)
                            .with_errors(serde_json::json!(imports))
                    }
                    C::ExportMismatch { .. } | C::Invalid(_) | C::Descriptor(_) => {
                        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-component", c.to_string())
                    }
                    C::Instantiate(_) | C::Cache(_) | C::Engine(_) => Self::internal_error(&c),
                }
            }
        }
    }
}

impl From<crate::app::conformance::ConformanceError> for Problem {
    fn from(e: crate::app::conformance::ConformanceError) -> Self {
        use crate::app::conformance::ConformanceError;
        match e {
            ConformanceError::Lifecycle(l) => l.into(),
            ConformanceError::Registry(r) => r.into(),
            other => Self::internal_error(&other),
        }
    }
}

impl From<crate::app::invoke::InvokeError> for Problem {
    fn from(e: crate::app::invoke::InvokeError) -> Self {
        use crate::app::invoke::InvokeError;
        match e {
            InvokeError::Command(c) => c.into(),
            InvokeError::InvalidInput(problems) => {
                let detail = InvokeError::InvalidInput(problems.clone()).to_string();
                let items = problems
                    .iter()
                    .map(|(path, message)| serde_json::json!({"path": path, "message": message}))
                    .collect();
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", detail)
                    .with_errors(serde_json::Value::Array(items))
            }
            InvokeError::Lifecycle(l) => l.into(),
            InvokeError::Implementation(m) => Self::new(StatusCode::BAD_GATEWAY, "implementation-failed", m),
            other => Self::internal_error(&other),
        }
    }
}

impl From<crate::runtime::host::secrets::SecretError> for Problem {
    fn from(e: crate::runtime::host::secrets::SecretError) -> Self {
        use crate::runtime::host::secrets::SecretError;
        match e {
            SecretError::InvalidName { .. } | SecretError::InvalidValue { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
            SecretError::NotFound { .. } => Self::not_found(e.to_string()),
            other => Self::internal_error(&other),
        }
    }
}

impl From<crate::app::access::AccessError> for Problem {
    fn from(e: crate::app::access::AccessError) -> Self {
        match e {
            crate::app::access::AccessError::Registry(r) => r.into(),
            other => Self::internal_error(&other),
        }
    }
}

impl From<crate::app::access::Refusal> for Problem {
    fn from(r: crate::app::access::Refusal) -> Self {
        use crate::app::access::Refusal;
        match r {
            Refusal::Forbidden(m) => Problem::new(StatusCode::FORBIDDEN, "forbidden", m),
            Refusal::Hidden => Problem::not_found("no such project for this token"),
        }
    }
}

impl From<crate::app::audit::AuditError> for Problem {
    fn from(e: crate::app::audit::AuditError) -> Self {
        use crate::app::audit::AuditError;
        match e {
            AuditError::NoCheckpoint | AuditError::NoEvent(_) => Self::not_found(e.to_string()),
            AuditError::NotCovered { .. } => Self::new(StatusCode::CONFLICT, "not-covered", e.to_string()),
            AuditError::BadProof(_) => Self::bad_request(e.to_string()),
            other => Self::internal_error(&other),
        }
    }
}
