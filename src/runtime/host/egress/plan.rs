//! Plans: what a guest asks for, validated into an [`EgressPlan`] (URL on the allow-list, headers, size
//! and timeout limits).

use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use super::allow::AllowList;
use super::{truncate, EgressError};

/// Headers neither a plan nor a manifest may set, lowercase: the host owns routing (`Host`,
/// CVE-2024-32980), framing and connection management, and credentials (`Authorization`,
/// `Proxy-Authorization`, `Cookie`) come from [`AttachAuth`](super::AttachAuth) or a manifest's `auth`.
/// Egress plan building and manifest validation both refuse these, case-insensitively.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "expect",
];

/// HTTP methods a plan may use (WIT `egress.method`); a manifest names one in uppercase, and may not
/// use `OPTIONS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schemars(description = "HTTP method.")]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    // Not in the manifest language (nor its schema): only components send it.
    #[serde(skip_deserializing)]
    Options,
}

impl std::str::FromStr for Method {
    type Err = String;

    /// The method from its name, in any case (`post`, `POST`).
    fn from_str(name: &str) -> Result<Method, String> {
        [Method::Get, Method::Head, Method::Post, Method::Put, Method::Patch, Method::Delete, Method::Options]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unsupported HTTP method {name:?}"))
    }
}

impl Method {
    /// Whether repeating the request has the same effect as sending it once (RFC 9110 §9.2.2). POST and
    /// PATCH are retried only with an idempotency key.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Patch)
    }

    /// The method as sent, e.g. `POST`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    pub(super) fn to_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Options => reqwest::Method::OPTIONS,
        }
    }
}

/// What a guest asks for (WIT `egress-request`), plus the idempotency key header the connector uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Total time for one attempt; the host default when `None`, capped by host policy.
    pub timeout_ms: Option<u64>,
    /// `(header name, value)`, e.g. `("Idempotency-Key", "…")`; sent unchanged on every attempt.
    pub idempotency_key: Option<(String, String)>,
}

/// Host policy applied when a plan is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLimits {
    pub max_body_bytes: usize,
    /// Sum of header name and value lengths, the idempotency key included.
    pub max_header_bytes: usize,
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
}

impl Default for PlanLimits {
    fn default() -> PlanLimits {
        PlanLimits {
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            default_timeout_ms: 30_000,
            max_timeout_ms: 60_000,
        }
    }
}

/// A validated request, ready for the [`Executor`](super::Executor). It holds no credentials: those are attached per attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPlan {
    method: Method,
    url: Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    timeout_ms: u64,
    idempotency_key: Option<(HeaderName, HeaderValue)>,
}

impl EgressPlan {
    /// `EgressBuildPlan`: parses and checks the URL against `allow`, validates headers (no reserved ones, no
    /// control characters), and applies the size and timeout limits.
    pub fn build(request: EgressRequest, allow: &AllowList, limits: &PlanLimits) -> Result<EgressPlan, EgressError> {
        let url = Url::parse(&request.url).map_err(|error| EgressError::InvalidUrl { reason: error.to_string() })?;
        allow.check(&url)?;

        let mut header_bytes = 0usize;
        let mut headers = Vec::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            header_bytes = header_bytes.saturating_add(name.len() + value.len());
            headers.push(plan_header(name, value)?);
        }
        let idempotency_key = match &request.idempotency_key {
            Some((name, value)) => {
                header_bytes = header_bytes.saturating_add(name.len() + value.len());
                let (name, value) = plan_header(name, value)?;
                if value.is_empty() {
                    return Err(EgressError::InvalidHeader {
                        name: name.to_string(),
                        reason: "the idempotency key is empty",
                    });
                }
                if headers.iter().any(|(other, _)| *other == name) {
                    return Err(EgressError::InvalidHeader {
                        name: name.to_string(),
                        reason: "it is the idempotency key header and may not also be set as a plain header",
                    });
                }
                Some((name, value))
            }
            None => None,
        };
        if header_bytes > limits.max_header_bytes {
            return Err(EgressError::HeadersTooLarge { size: header_bytes, limit: limits.max_header_bytes });
        }
        if request.body.len() > limits.max_body_bytes {
            return Err(EgressError::BodyTooLarge { size: request.body.len(), limit: limits.max_body_bytes });
        }
        let timeout_ms = match request.timeout_ms {
            Some(0) => return Err(EgressError::InvalidTimeout),
            Some(ms) => ms,
            None => limits.default_timeout_ms,
        }
        .min(limits.max_timeout_ms)
        .max(1);
        Ok(EgressPlan { method: request.method, url, headers, body: request.body, timeout_ms, idempotency_key })
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    pub fn idempotency_key(&self) -> Option<&(HeaderName, HeaderValue)> {
        self.idempotency_key.as_ref()
    }

    /// Whether the retry policy may send this plan more than once.
    pub fn is_retry_safe(&self) -> bool {
        self.method.is_idempotent() || self.idempotency_key.is_some()
    }
}

fn plan_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), EgressError> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| EgressError::InvalidHeader { name: truncate(name), reason: "the name is not a valid token" })?;
    if RESERVED_HEADERS.contains(&parsed.as_str()) {
        return Err(EgressError::InvalidHeader {
            name: parsed.to_string(),
            reason: "it is reserved for the host (routing, framing or credentials)",
        });
    }
    let value = HeaderValue::from_str(value).map_err(|_| EgressError::InvalidHeader {
        name: parsed.to_string(),
        reason: "the value contains control characters or non-visible bytes",
    })?;
    Ok((parsed, value))
}
