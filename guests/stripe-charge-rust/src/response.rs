//! Reading Stripe's answers: when an attempt is worth repeating, and what a final answer means —
//! the `retry` and `errors` sections of `examples/stripe.connector.json`, in code.
//!
//! | Final answer                      | Result                                              |
//! |-----------------------------------|-----------------------------------------------------|
//! | 200                               | `done` (or `unexpected-response` if unreadable)     |
//! | 402                               | `declined`, provider code from `error.code`         |
//! | 400                               | `invalid-input`, provider code                      |
//! | 401                               | `unauthenticated`                                   |
//! | 403                               | `permission-denied`                                 |
//! | 404                               | `not-found`, provider code                          |
//! | 409                               | `conflict` (retryable), provider code               |
//! | 429                               | `rate-limited` (retryable)                          |
//! | 5xx                               | `upstream-unavailable` (retryable)                  |
//! | any other status                  | `unexpected-response`                               |
//! | network error: timeout            | `timeout` (retryable)                               |
//! | network error: refused by policy  | `host-denied`                                       |
//! | network error: response too large | `unexpected-response`                               |
//! | other network errors              | `upstream-unavailable` (retryable)                  |
//!
//! Every error carries `retry-after-ms` when Stripe sent `Retry-After` in seconds, and Stripe's
//! `Request-Id` in its details. Before that, 409, 429, 5xx and network failures (except policy
//! refusals and oversized answers) are retried; Stripe's `Stripe-Should-Retry` header, when present
//! on a non-2xx answer, overrides that decision.

use serde_json::Value;

use crate::vadyl::connector::types::{
    Body, ContractError, EgressOutcome, EgressResponse, ErrorCode, NetworkError, NetworkErrorKind,
};

/// A contract error without provider code, details or retry hint.
pub fn contract_error(code: ErrorCode, message: impl Into<String>, retryable: bool) -> ContractError {
    ContractError {
        code,
        message: message.into(),
        retryable,
        retry_after_ms: None,
        provider_code: None,
        details: Vec::new(),
    }
}

/// Whether a failed attempt may succeed if repeated with the same idempotency key.
pub fn worth_retrying(outcome: &EgressOutcome) -> bool {
    match outcome {
        EgressOutcome::Response(response) if (200..300).contains(&response.status) => false,
        EgressOutcome::Response(response) => match header(response, "stripe-should-retry") {
            Some(hint) if hint.eq_ignore_ascii_case("true") => true,
            Some(hint) if hint.eq_ignore_ascii_case("false") => false,
            _ => matches!(response.status, 409 | 429 | 500..=599),
        },
        EgressOutcome::NetworkError(error) => {
            !matches!(error.kind, NetworkErrorKind::PolicyDenied | NetworkErrorKind::ResponseTooLarge)
        }
    }
}

/// The output or contract error a final answer stands for.
pub fn finish<T>(
    outcome: &EgressOutcome,
    read_success: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<T, ContractError> {
    let response = match outcome {
        EgressOutcome::Response(response) => response,
        EgressOutcome::NetworkError(error) => return Err(network_failure(error)),
    };
    let body = parse_body(&response.body);
    if response.status == 200 {
        let unreadable = |reason: String| {
            contract_error(ErrorCode::UnexpectedResponse, format!("Stripe's answer could not be read: {reason}"), false)
        };
        let body = body.ok_or_else(|| unreadable("the body is not JSON".to_owned()))?;
        return read_success(&body).map_err(unreadable);
    }
    Err(status_failure(response, &body.unwrap_or(Value::Null)))
}

/// Maps an error status; `body` is Stripe's JSON error document (or null).
fn status_failure(response: &EgressResponse, body: &Value) -> ContractError {
    let status = response.status;
    let stripe_message = body["error"]["message"].as_str();
    let stripe_code = body["error"]["code"].as_str().map(str::to_owned);
    let (code, message, retryable, provider_code) = match status {
        402 => (ErrorCode::Declined, stripe_message.unwrap_or("the card was declined"), false, stripe_code),
        400 => (ErrorCode::InvalidInput, stripe_message.unwrap_or("Stripe rejected the request"), false, stripe_code),
        401 => (ErrorCode::Unauthenticated, "Stripe refused the API key", false, None),
        403 => (ErrorCode::PermissionDenied, stripe_message.unwrap_or("the API key may not do this"), false, None),
        404 => (ErrorCode::NotFound, stripe_message.unwrap_or("Stripe has no such object"), false, stripe_code),
        409 => {
            (ErrorCode::Conflict, stripe_message.unwrap_or("the request conflicts with another one"), true, stripe_code)
        }
        429 => (ErrorCode::RateLimited, "Stripe rate limit reached", true, None),
        500..=599 => (ErrorCode::UpstreamUnavailable, "Stripe is unavailable", true, None),
        _ => {
            let message = format!("Stripe answered HTTP {status}, which this connector does not expect");
            return contract_error(ErrorCode::UnexpectedResponse, message, false);
        }
    };
    let mut error = contract_error(code, message, retryable);
    error.provider_code = provider_code;
    error.retry_after_ms = header(response, "retry-after")
        .and_then(|seconds| seconds.trim().parse::<u64>().ok())
        .map(|seconds| seconds.saturating_mul(1000));
    if let Some(decline_code) = body["error"]["decline_code"].as_str() {
        error.details.push(("declineCode".to_owned(), decline_code.to_owned()));
    }
    if let Some(request_id) = header(response, "request-id") {
        error.details.push(("requestId".to_owned(), request_id.to_owned()));
    }
    error
}

/// Maps a transport failure of the last attempt.
fn network_failure(error: &NetworkError) -> ContractError {
    match error.kind {
        NetworkErrorKind::Timeout => contract_error(ErrorCode::Timeout, "Stripe did not answer in time", true),
        NetworkErrorKind::PolicyDenied => contract_error(
            ErrorCode::HostDenied,
            format!("the host refused to send the request: {}", error.message),
            false,
        ),
        NetworkErrorKind::ResponseTooLarge => {
            contract_error(ErrorCode::UnexpectedResponse, "Stripe's answer exceeded the host's size limit", false)
        }
        NetworkErrorKind::Dns | NetworkErrorKind::Connect | NetworkErrorKind::Tls | NetworkErrorKind::Other => {
            let message = format!("Stripe could not be reached ({}): {}", kind_name(error.kind), error.message);
            contract_error(ErrorCode::UpstreamUnavailable, message, true)
        }
    }
}

/// The WIT name of an error code, e.g. `rate-limited`.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidInput => "invalid-input",
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::PermissionDenied => "permission-denied",
        ErrorCode::NotFound => "not-found",
        ErrorCode::Conflict => "conflict",
        ErrorCode::Declined => "declined",
        ErrorCode::RateLimited => "rate-limited",
        ErrorCode::UpstreamUnavailable => "upstream-unavailable",
        ErrorCode::Timeout => "timeout",
        ErrorCode::UnexpectedResponse => "unexpected-response",
        ErrorCode::HostDenied => "host-denied",
        ErrorCode::Internal => "internal",
    }
}

/// The WIT name of a network failure class, e.g. `timeout`.
pub fn kind_name(kind: NetworkErrorKind) -> &'static str {
    match kind {
        NetworkErrorKind::Dns => "dns",
        NetworkErrorKind::Connect => "connect",
        NetworkErrorKind::Tls => "tls",
        NetworkErrorKind::Timeout => "timeout",
        NetworkErrorKind::ResponseTooLarge => "response-too-large",
        NetworkErrorKind::PolicyDenied => "policy-denied",
        NetworkErrorKind::Other => "other",
    }
}

/// The first value of header `name` (case-insensitive).
pub fn header<'a>(response: &'a EgressResponse, name: &str) -> Option<&'a str> {
    response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

fn parse_body(body: &Body) -> Option<Value> {
    match body {
        Body::Empty => None,
        Body::Text(text) => serde_json::from_str(text).ok(),
        Body::Bytes(bytes) => serde_json::from_slice(bytes).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vadyl::connector::types::Header;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> EgressOutcome {
        EgressOutcome::Response(EgressResponse {
            status,
            headers: headers.iter().map(|(n, v)| Header { name: (*n).to_owned(), value: (*v).to_owned() }).collect(),
            body: Body::Text(body.to_owned()),
        })
    }

    fn network(kind: NetworkErrorKind) -> EgressOutcome {
        EgressOutcome::NetworkError(NetworkError { kind, message: "boom".to_owned() })
    }

    fn failure(outcome: &EgressOutcome) -> ContractError {
        finish(outcome, |_| Ok(())).expect_err("an error status")
    }

    #[test]
    fn transient_failures_are_retried() {
        for status in [409, 429, 500, 503] {
            assert!(worth_retrying(&answer(status, &[], "{}")), "{status}");
        }
        for status in [200, 400, 401, 402, 403, 404] {
            assert!(!worth_retrying(&answer(status, &[], "{}")), "{status}");
        }
        assert!(worth_retrying(&network(NetworkErrorKind::Timeout)));
        assert!(worth_retrying(&network(NetworkErrorKind::Connect)));
        assert!(!worth_retrying(&network(NetworkErrorKind::PolicyDenied)));
        assert!(!worth_retrying(&network(NetworkErrorKind::ResponseTooLarge)));
    }

    #[test]
    fn stripe_should_retry_overrides_the_status() {
        assert!(!worth_retrying(&answer(503, &[("Stripe-Should-Retry", "false")], "{}")));
        assert!(worth_retrying(&answer(400, &[("stripe-should-retry", "true")], "{}")));
        assert!(!worth_retrying(&answer(200, &[("Stripe-Should-Retry", "true")], "{}")));
    }

    #[test]
    fn a_decline_carries_stripe_codes_and_request_id() {
        let body = r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"generic_decline","message":"Your card was declined."}}"#;
        let error = failure(&answer(402, &[("Request-Id", "req_1")], body));
        assert_eq!(error.code, ErrorCode::Declined);
        assert_eq!(error.message, "Your card was declined.");
        assert_eq!(error.provider_code.as_deref(), Some("card_declined"));
        assert!(!error.retryable);
        assert!(error.details.contains(&("declineCode".to_owned(), "generic_decline".to_owned())));
        assert!(error.details.contains(&("requestId".to_owned(), "req_1".to_owned())));
    }

    #[test]
    fn statuses_map_to_contract_codes() {
        let cases = [
            (400, ErrorCode::InvalidInput, false),
            (401, ErrorCode::Unauthenticated, false),
            (403, ErrorCode::PermissionDenied, false),
            (404, ErrorCode::NotFound, false),
            (409, ErrorCode::Conflict, true),
            (429, ErrorCode::RateLimited, true),
            (500, ErrorCode::UpstreamUnavailable, true),
            (599, ErrorCode::UpstreamUnavailable, true),
            (302, ErrorCode::UnexpectedResponse, false),
            (201, ErrorCode::UnexpectedResponse, false),
        ];
        for (status, code, retryable) in cases {
            let error = failure(&answer(status, &[], "not json"));
            assert_eq!((error.code, error.retryable), (code, retryable), "{status}");
        }
        assert_eq!(failure(&answer(402, &[], "")).message, "the card was declined");
    }

    #[test]
    fn retry_after_becomes_milliseconds() {
        assert_eq!(failure(&answer(429, &[("Retry-After", " 2 ")], "{}")).retry_after_ms, Some(2000));
        assert_eq!(failure(&answer(429, &[("Retry-After", "Wed, 21 Oct 2015")], "{}")).retry_after_ms, None);
        assert_eq!(failure(&answer(429, &[], "{}")).retry_after_ms, None);
    }

    #[test]
    fn network_failures_map_by_kind() {
        let code = |kind| finish(&network(kind), |_| Ok(())).expect_err("no response").code;
        assert_eq!(code(NetworkErrorKind::Timeout), ErrorCode::Timeout);
        assert_eq!(code(NetworkErrorKind::Dns), ErrorCode::UpstreamUnavailable);
        assert_eq!(code(NetworkErrorKind::PolicyDenied), ErrorCode::HostDenied);
        assert_eq!(code(NetworkErrorKind::ResponseTooLarge), ErrorCode::UnexpectedResponse);
    }

    #[test]
    fn a_success_is_read_or_reported_as_unexpected() {
        let read = |body: &Value| body["id"].as_str().map(str::to_owned).ok_or_else(|| "no id".to_owned());
        assert_eq!(finish(&answer(200, &[], r#"{"id":"ch_1"}"#), read).unwrap(), "ch_1");
        let error = finish(&answer(200, &[], r#"{"id":1}"#), read).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnexpectedResponse);
        assert!(error.message.contains("no id"), "{}", error.message);
        let error = finish(&answer(200, &[], "<html>"), read).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnexpectedResponse);
        let bytes = EgressOutcome::Response(EgressResponse {
            status: 200,
            headers: Vec::new(),
            body: Body::Bytes(br#"{"id":"ch_2"}"#.to_vec()),
        });
        assert_eq!(finish(&bytes, read).unwrap(), "ch_2");
    }
}
