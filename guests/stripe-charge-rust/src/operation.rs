//! Drives one Stripe call through the step convention, for any operation.
//!
//! [`charge`](crate::charge) and [`refund`](crate::refund) describe their call as a [`StripeRequest`]
//! (rebuilt identically from the input on every step) and hand [`run`] a function that reads a
//! successful answer. [`run`] then does the rest:
//!
//! - no exchange yet: claim the idempotency key in host memory, log, and ask for the request;
//! - the last exchange was a transient failure and fewer than [`MAX_ATTEMPTS`] were made: ask for
//!   the *same* request again (same body, same `Idempotency-Key`, so Stripe never charges twice);
//! - otherwise: map the last exchange to the output or a contract error, and record a span.
//!
//! The component cannot sleep, so attempts follow each other without backoff; callers that get a
//! `retryable` error (with `retry-after-ms` when Stripe sent `Retry-After`) wait and call again.

use crate::idempotency;
use crate::response::{self, contract_error};
use crate::telemetry;
use crate::vadyl::connector::egress::{self, EgressError, EgressRequest, Method};
use crate::vadyl::connector::observability::{Attribute, Level};
use crate::vadyl::connector::secrets::{self, EgressAuth, SecretRef, SecretsError};
use crate::vadyl::connector::types::{Body, ContractError, EgressExchange, EgressOutcome, ErrorCode, Header, PlanId};

/// Most requests per invocation, first attempt included (`retry.maxAttempts` in the manifest).
pub const MAX_ATTEMPTS: usize = 4;

/// The Stripe API version this connector's mapping is written against.
pub const STRIPE_VERSION: &str = "2024-06-20";

/// The host-held secret with the Stripe API key; the host attaches it as a bearer token.
pub const API_KEY_SECRET: &str = "stripe-secret-key";

/// Per-request timeout asked of the host (it may cap it).
const TIMEOUT_MS: u64 = 30_000;

/// Values shorter than this are not scrubbed from messages (they would match too much).
const MIN_SCRUBBED_LEN: usize = 4;

/// What an operation step returns, before it is wrapped into the operation's own step variant.
pub enum Step<T> {
    Done(T),
    Egress(PlanId),
    Failed(ContractError),
}

/// One Stripe API call.
pub struct StripeRequest {
    /// `charge` or `refund`: logged, and part of the fingerprint, so a key cannot serve two operations.
    pub operation: &'static str,
    /// API path, e.g. `/v1/charges`.
    pub path: &'static str,
    /// Name of the span recorded when the call finishes.
    pub span_name: &'static str,
    /// The `application/x-www-form-urlencoded` body.
    pub form: String,
    /// Sent as `Idempotency-Key` on every attempt.
    pub idempotency_key: String,
    /// Hash of what is sent; stored with the key to detect reuse with another request.
    pub fingerprint: String,
    /// Non-sensitive attributes for the "creating ..." log record.
    pub summary: Vec<Attribute>,
    /// Input values that must never appear in an error (e.g. the card source), even when Stripe
    /// echoes them in a message.
    pub sensitive: Vec<String>,
}

impl StripeRequest {
    /// A request with the caller's idempotency key, or, when there is none, one derived from the
    /// request itself (so retries of the same input reuse it).
    pub fn new(
        operation: &'static str,
        path: &'static str,
        span_name: &'static str,
        form: String,
        idempotency_key: Option<&str>,
    ) -> Result<Self, ContractError> {
        let fingerprint = idempotency::fingerprint(&[operation, path, &form]);
        let idempotency_key = match idempotency_key {
            Some(key) => {
                idempotency::validate_key(key)?;
                key.to_owned()
            }
            None => idempotency::derived_key(&fingerprint),
        };
        Ok(Self {
            operation,
            path,
            span_name,
            form,
            idempotency_key,
            fingerprint,
            summary: Vec::new(),
            sensitive: Vec::new(),
        })
    }
}

/// One step of `request`, given the exchanges so far; `read_success` turns Stripe's JSON answer to
/// a successful request into the operation's output (or says what is wrong with it).
pub fn run<T>(
    request: &StripeRequest,
    exchanges: &[EgressExchange],
    read_success: impl FnOnce(&serde_json::Value) -> Result<T, String>,
) -> Step<T> {
    let Some(last) = exchanges.last() else {
        if let Err(error) = idempotency::claim(&request.idempotency_key, &request.fingerprint) {
            return Step::Failed(error);
        }
        telemetry::log(Level::Info, &format!("creating {}", request.operation), &request.summary);
        return send(request);
    };

    if exchanges.len() < MAX_ATTEMPTS && response::worth_retrying(&last.outcome) {
        let mut attributes = vec![telemetry::integer("attempt", exchanges.len() as u64 + 1)];
        attributes.extend(outcome_attribute(&last.outcome));
        telemetry::log(Level::Warn, "retrying after a transient Stripe failure", &attributes);
        return send(request);
    }

    let result = response::finish(&last.outcome, read_success).map_err(|error| scrub(error, &request.sensitive));
    telemetry::record_span(request.span_name, exchanges, &result);
    match result {
        Ok(output) => Step::Done(output),
        Err(error) => Step::Failed(error),
    }
}

/// Has the host plan the request and attach the API key; returns the plan to execute.
fn send<T>(request: &StripeRequest) -> Step<T> {
    let plan = egress::build_plan(&EgressRequest {
        method: Method::Post,
        url: format!("{}{}", crate::BASE_URL, request.path),
        headers: vec![
            header("Content-Type", "application/x-www-form-urlencoded"),
            header("Stripe-Version", STRIPE_VERSION),
            header("Idempotency-Key", &request.idempotency_key),
        ],
        body: Body::Text(request.form.clone()),
        timeout_ms: Some(TIMEOUT_MS),
    });
    let plan = match plan {
        Ok(plan) => plan,
        Err(error) => {
            let message = format!("the host refused the request to Stripe: {}", describe_egress_error(&error));
            return Step::Failed(contract_error(ErrorCode::HostDenied, message, false));
        }
    };
    let api_key = EgressAuth::Bearer(SecretRef { name: API_KEY_SECRET.to_owned(), version: None });
    if let Err(error) = secrets::attach_auth_to_egress_plan(&plan, &api_key) {
        let (reason, retryable) = describe_secrets_error(&error);
        let message = format!("the host could not attach the Stripe API key: {reason}");
        return Step::Failed(contract_error(ErrorCode::HostDenied, message, retryable));
    }
    Step::Egress(plan)
}

fn header(name: &str, value: &str) -> Header {
    Header { name: name.to_owned(), value: value.to_owned() }
}

/// `http.status_code` of a response, or `network.error` of a failure, for logs.
fn outcome_attribute(outcome: &EgressOutcome) -> Option<Attribute> {
    Some(match outcome {
        EgressOutcome::Response(response) => telemetry::integer("http.status_code", u64::from(response.status)),
        EgressOutcome::NetworkError(error) => telemetry::text("network.error", response::kind_name(error.kind)),
    })
}

/// Replaces every sensitive input value in the error's texts with `[redacted]`.
fn scrub(mut error: ContractError, sensitive: &[String]) -> ContractError {
    for value in sensitive.iter().filter(|v| v.len() >= MIN_SCRUBBED_LEN) {
        let clean = |text: &mut String| {
            if text.contains(value.as_str()) {
                *text = text.replace(value.as_str(), "[redacted]");
            }
        };
        clean(&mut error.message);
        error.provider_code.iter_mut().for_each(clean);
        error.details.iter_mut().for_each(|(_, detail)| clean(detail));
    }
    error
}

fn describe_egress_error(error: &EgressError) -> String {
    match error {
        EgressError::HostNotAllowed(host) => format!("host `{host}` is not on the allow-list"),
        EgressError::InvalidUrl(reason) => format!("invalid URL: {reason}"),
        EgressError::InvalidHeader(name) => format!("header `{name}` is not allowed"),
        EgressError::BodyTooLarge(limit) => format!("the body exceeds {limit} bytes"),
        EgressError::TooManyPlans => "too many requests in one invocation".to_owned(),
        EgressError::Denied(reason) => format!("egress denied: {reason}"),
    }
}

/// The reason, and whether trying again later may help.
fn describe_secrets_error(error: &SecretsError) -> (String, bool) {
    match error {
        SecretsError::NotFound(name) => (format!("secret `{name}` is not granted"), false),
        SecretsError::Denied(reason) => (format!("denied: {reason}"), false),
        SecretsError::UnsupportedAlgorithm(reason) => (format!("unsupported: {reason}"), false),
        SecretsError::InvalidPlan(reason) => (format!("invalid plan: {reason}"), false),
        SecretsError::DecryptionFailed => ("the secret could not be decrypted".to_owned(), false),
        SecretsError::Unavailable(reason) => (format!("the secret store is unavailable: {reason}"), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_are_scrubbed_from_errors() {
        let mut error = contract_error(ErrorCode::InvalidInput, "No such token: 'tok_secret_123'", false);
        error.details.push(("param".to_owned(), "tok_secret_123".to_owned()));
        error.provider_code = Some("resource_missing".to_owned());
        let error = scrub(error, &["tok_secret_123".to_owned(), "ok".to_owned()]);
        assert_eq!(error.message, "No such token: '[redacted]'");
        assert_eq!(error.details[0].1, "[redacted]");
        assert_eq!(error.provider_code.as_deref(), Some("resource_missing"), "short values are left alone");
    }

    #[test]
    fn a_missing_key_is_derived_from_the_request() {
        let a = StripeRequest::new("charge", "/v1/charges", "s", "amount=1".to_owned(), None).unwrap();
        let b = StripeRequest::new("charge", "/v1/charges", "s", "amount=1".to_owned(), None).unwrap();
        let c = StripeRequest::new("charge", "/v1/charges", "s", "amount=2".to_owned(), None).unwrap();
        assert_eq!(a.idempotency_key, b.idempotency_key);
        assert_ne!(a.idempotency_key, c.idempotency_key);
        assert!(a.idempotency_key.starts_with("vadyl-"));
        let given = StripeRequest::new("charge", "/v1/charges", "s", "amount=1".to_owned(), Some("order-7")).unwrap();
        assert_eq!(given.idempotency_key, "order-7");
        assert_eq!(given.fingerprint, a.fingerprint);
    }

    #[test]
    fn an_unusable_key_is_invalid_input() {
        let error = StripeRequest::new("charge", "/v1/charges", "s", String::new(), Some("bad\nkey")).err().unwrap();
        assert_eq!(error.code, ErrorCode::InvalidInput);
    }
}
