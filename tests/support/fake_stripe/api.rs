//! How the fake answers a `/v1` request like Stripe: auth, routing, idempotency keys (check, run, save
//! under one lock), and Stripe's response and error bodies.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::endpoints::{create_charge, create_refund, get_charge, get_refund};
use super::{Shared, MAX_IDEMPOTENCY_KEY_LEN};
const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
pub(super) const STRIPE_SHOULD_RETRY: HeaderName = HeaderName::from_static("stripe-should-retry");

/// A response saved under an idempotency key, with the request it answered.
pub(super) struct SavedResponse {
    method: Method,
    path: String,
    params: BTreeMap<String, String>,
    reply: Reply,
}

/// A Stripe response before the per-response headers (`Request-Id`, `Idempotent-Replayed`) are added.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    pub(super) fn json(status: StatusCode, body: &Value) -> Self {
        Reply { status, body: body.to_string(), headers: vec![(header::CONTENT_TYPE, json_content_type())] }
    }

    pub(super) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub(super) fn into_response(self, request_id: &str, replayed: bool) -> Response {
        let mut headers = HeaderMap::new();
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        headers.insert(REQUEST_ID, generated_header(request_id));
        if replayed {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        (self.status, headers, self.body).into_response()
    }
}

fn json_content_type() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

fn generated_header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).expect("ids the fake generates are ASCII")
}

/// A Stripe error body: `{"error": {"type", "message", "code"?, "param"?, …}}`.
#[derive(Debug, Clone)]
pub(crate) struct StripeError {
    pub(crate) status: StatusCode,
    pub(super) kind: &'static str,
    pub(crate) message: String,
    pub(crate) code: Option<&'static str>,
    pub(crate) param: Option<String>,
    /// For card errors: the declined charge's id and the issuer's decline code (boxed to keep errors small).
    pub(super) declined: Option<Box<(String, &'static str)>>,
}

impl StripeError {
    pub(super) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        StripeError { status, kind, message: message.into(), code: None, param: None, declined: None }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        StripeError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub(super) fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub(super) fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub(super) fn missing(param: &str) -> Self {
        StripeError::invalid(format!("Missing required param: {param}.")).code("parameter_missing").param(param)
    }

    fn to_json(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), json!(self.kind));
        error.insert("message".into(), json!(self.message));
        if let Some(code) = self.code {
            error.insert("code".into(), json!(code));
            error.insert(
                "doc_url".into(),
                json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-"))),
            );
        }
        if let Some(param) = &self.param {
            error.insert("param".into(), json!(param));
        }
        if let Some(declined) = &self.declined {
            let (charge, decline_code) = declined.as_ref();
            error.insert("decline_code".into(), json!(decline_code));
            error.insert("charge".into(), json!(charge));
        }
        json!({ "error": error })
    }

    pub(super) fn reply(&self) -> Reply {
        Reply::json(self.status, &self.to_json())
    }
}

/// What an endpoint produced: `Executed` replies are saved under the idempotency key, `Refused` ones are not.
pub(crate) enum Outcome {
    Executed(Reply),
    Refused(Reply),
}

/// The `/v1` endpoints the fake implements.
pub(crate) enum Route {
    CreateCharge,
    GetCharge(String),
    CreateRefund,
    GetRefund(String),
}

impl Route {
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/v1/")?;
        let (collection, id) = match rest.split_once('/') {
            Some((collection, id)) if !id.is_empty() && !id.contains('/') => (collection, Some(id)),
            Some(_) => return None,
            None => (rest, None),
        };
        match (method.as_str(), collection, id) {
            ("POST", "charges", None) => Some(Route::CreateCharge),
            ("GET", "charges", Some(id)) => Some(Route::GetCharge(id.to_owned())),
            ("POST", "refunds", None) => Some(Route::CreateRefund),
            ("GET", "refunds", Some(id)) => Some(Route::GetRefund(id.to_owned())),
            _ => None,
        }
    }
}

/// Auth, routing, idempotency and the endpoint itself; synchronous so the check-run-save sequence for an
/// idempotency key happens under one lock.
pub(super) fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    forced_500: Option<Reply>,
) -> (Reply, bool) {
    if let Err(error) = check_auth(&shared.secret, headers) {
        return (error.reply(), false);
    }
    let Some(route) = Route::parse(method, uri.path()) else {
        let message = format!(
            "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
            method,
            uri.path()
        );
        return (StripeError::new(StatusCode::NOT_FOUND, "invalid_request_error", message).reply(), false);
    };
    let is_post = method == Method::POST;
    let key = if is_post {
        match idempotency_key(headers) {
            Ok(key) => key,
            Err(error) => return (error.reply(), false),
        }
    } else {
        None
    };
    let params = if is_post {
        match parse_form(headers, body) {
            Ok(params) => params,
            Err(error) => return (error.reply(), false),
        }
    } else {
        BTreeMap::new()
    };
    let mut state = shared.lock();
    if let Some(key) = &key {
        if let Some(saved) = state.saved.get(key) {
            if saved.method != *method || saved.path != uri.path() {
                let message = format!(
                    "Keys for idempotent requests can only be used for the same endpoint they were first used for \
                     ('{} {}' vs '{} {}'). Try using a key other than '{key}' if you meant to execute a different request.",
                    saved.method,
                    saved.path,
                    method,
                    uri.path()
                );
                return (StripeError::new(StatusCode::BAD_REQUEST, "idempotency_error", message).reply(), false);
            }
            if saved.params != params {
                let message = format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. \
                     Try using a key other than '{key}' if you meant to execute a different request."
                );
                return (StripeError::new(StatusCode::BAD_REQUEST, "idempotency_error", message).reply(), false);
            }
            return (saved.reply.clone(), true);
        }
    }
    let outcome = match forced_500 {
        Some(reply) => Outcome::Executed(reply),
        None => match route {
            Route::CreateCharge => create_charge(&mut state, &params, key.as_deref()),
            Route::GetCharge(id) => Outcome::Refused(get_charge(&state, &id)),
            Route::CreateRefund => create_refund(&mut state, &params),
            Route::GetRefund(id) => Outcome::Refused(get_refund(&state, &id)),
        },
    };
    match outcome {
        Outcome::Refused(reply) => (reply, false),
        Outcome::Executed(reply) => {
            if let Some(key) = key {
                let saved =
                    SavedResponse { method: method.clone(), path: uri.path().to_owned(), params, reply: reply.clone() };
                state.saved.insert(key, saved);
            }
            (reply, false)
        }
    }
}

pub(crate) fn check_auth(secret: &str, headers: &HeaderMap) -> Result<(), StripeError> {
    let unauthorized =
        |message: String| Err(StripeError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message));
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using \
             Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication \
             for details, or we can help at https://support.stripe.com/."
                .into(),
        );
    };
    let Ok(value) = value.to_str() else {
        return unauthorized("Invalid API Key provided: the Authorization header is not valid ASCII".into());
    };
    let Some((scheme, key)) = value.trim().split_once(' ') else {
        return unauthorized(format!(
            "Invalid Authorization header: expected 'Bearer YOUR_SECRET_KEY', got {} characters without a scheme",
            value.len()
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return unauthorized(format!(
            "This fake Stripe accepts only Bearer auth ('Authorization: Bearer YOUR_SECRET_KEY'), not {scheme}."
        ));
    }
    let key = key.trim();
    if key != secret {
        return unauthorized(format!("Invalid API Key provided: {}", mask_key(key)));
    }
    Ok(())
}

/// Mask an API key the way Stripe does in its 401 message: the `sk_test_`-style prefix and the last four
/// characters stay, everything else becomes `*` (short keys are masked completely).
pub(crate) fn mask_key(key: &str) -> String {
    const PREFIXES: [&str; 6] = ["sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_"];
    let prefix = PREFIXES.iter().find(|p| key.starts_with(**p)).copied().unwrap_or("");
    let rest: Vec<char> = key[prefix.len()..].chars().collect();
    if rest.len() < 12 {
        return format!("{prefix}{}", "*".repeat(rest.len()));
    }
    let tail: String = rest[rest.len() - 4..].iter().collect();
    format!("{prefix}{}{tail}", "*".repeat(rest.len() - 4))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, StripeError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key =
        value.to_str().map_err(|_| StripeError::invalid("The Idempotency-Key header must be printable ASCII."))?.trim();
    if key.is_empty() {
        return Err(StripeError::invalid("The Idempotency-Key header is empty."));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(StripeError::invalid(format!(
            "Idempotency keys can be at most {MAX_IDEMPOTENCY_KEY_LEN} characters long; this one has {}.",
            key.len()
        )));
    }
    Ok(Some(key.to_owned()))
}

/// Decode a form-encoded body into parameters (the last value wins for a repeated name).
pub(crate) fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<BTreeMap<String, String>, StripeError> {
    if body.is_empty() {
        return Ok(BTreeMap::new());
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(StripeError::invalid(format!(
                "Invalid request: Stripe takes form-encoded parameters (Content-Type: \
                 application/x-www-form-urlencoded), not {:?}.",
                String::from_utf8_lossy(content_type.as_bytes())
            )));
        }
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| StripeError::invalid(format!("Invalid request: the body is not form-encoded ({e}).")))?;
    Ok(pairs.into_iter().collect())
}
