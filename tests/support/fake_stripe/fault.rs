//! Scripted behaviour: the faults a test queues for upcoming `/v1` requests, and their validation.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FakeStripeError, MAX_FAULT_DELAY_MS};
/// A fault to apply to one upcoming `/v1` request. JSON form (camelCase) is what `POST /__fake/faults` takes,
/// e.g. `{"status": 429, "retryAfter": "1"}`, `{"status": 503, "shouldRetry": false}`, `{"delayMs": 200}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Answer with this error status (400–599) instead of running the request; a 500 is saved under the
    /// request's idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` header value (a string or a number in JSON); needs `status`.
    #[serde(default, deserialize_with = "string_or_number", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// `Stripe-Should-Retry: true|false`; needs `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should_retry: Option<bool>,
    /// Wait this long before doing anything else (at most [`MAX_FAULT_DELAY_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Answer `302 Found` with this `Location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// Close the connection without answering and without running the request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_connection: bool,
    /// Run the request (saving it under its idempotency key), then close the connection without answering.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_response: bool,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Raw>::deserialize(deserializer)?.map(|raw| match raw {
        Raw::Text(text) => text,
        Raw::Number(number) => number.to_string(),
    }))
}

impl Fault {
    /// Answer with `status` and Stripe's error body for it.
    pub fn status(status: u16) -> Self {
        Fault { status: Some(status), ..Fault::default() }
    }

    /// `429` with `Retry-After: retry_after`.
    pub fn rate_limited(retry_after: impl Into<String>) -> Self {
        Fault { status: Some(429), retry_after: Some(retry_after.into()), ..Fault::default() }
    }

    /// `503` with `Stripe-Should-Retry: should_retry`.
    pub fn unavailable(should_retry: bool) -> Self {
        Fault { status: Some(503), should_retry: Some(should_retry), ..Fault::default() }
    }

    /// `500`, saved under the request's idempotency key like Stripe does.
    pub fn server_error() -> Self {
        Fault::status(500)
    }

    /// Only a delay; the request then runs normally.
    pub fn delay(ms: u64) -> Self {
        Fault { delay_ms: Some(ms), ..Fault::default() }
    }

    /// `302 Found` to `location`.
    pub fn redirect(location: impl Into<String>) -> Self {
        Fault { redirect_to: Some(location.into()), ..Fault::default() }
    }

    /// Close the connection before the request runs.
    pub fn drop_connection() -> Self {
        Fault { drop_connection: true, ..Fault::default() }
    }

    /// Run the request, then close the connection instead of answering.
    pub fn drop_response() -> Self {
        Fault { drop_response: true, ..Fault::default() }
    }

    pub fn with_delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = Some(ms);
        self
    }

    pub fn with_retry_after(mut self, retry_after: impl Into<String>) -> Self {
        self.retry_after = Some(retry_after.into());
        self
    }

    pub fn with_should_retry(mut self, should_retry: bool) -> Self {
        self.should_retry = Some(should_retry);
        self
    }

    pub(crate) fn validate(&self) -> Result<ValidFault, FakeStripeError> {
        let invalid = |message: String| Err(FakeStripeError::InvalidFault(message));
        let actions = [self.status.is_some(), self.redirect_to.is_some(), self.drop_connection, self.drop_response];
        let action_count = actions.iter().filter(|set| **set).count();
        if action_count > 1 {
            return invalid("a fault takes at most one of status, redirectTo, dropConnection, dropResponse".into());
        }
        if action_count == 0 && self.delay_ms.is_none() {
            return invalid("a fault must set status, redirectTo, dropConnection, dropResponse or delayMs".into());
        }
        if self.status.is_none() && (self.retry_after.is_some() || self.should_retry.is_some()) {
            return invalid("retryAfter and shouldRetry only go with a status".into());
        }
        let delay = match self.delay_ms {
            Some(ms) if ms > MAX_FAULT_DELAY_MS => {
                return invalid(format!("delayMs {ms} is longer than the {MAX_FAULT_DELAY_MS} ms allowed"))
            }
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };
        let action = if let Some(code) = self.status {
            let status = match StatusCode::from_u16(code) {
                Ok(status) if status.is_client_error() || status.is_server_error() => status,
                _ => return invalid(format!("status {code} is not an error status (400-599)")),
            };
            let retry_after = match &self.retry_after {
                Some(value) => Some(header_value("retryAfter", value)?),
                None => None,
            };
            FaultAction::Status { status, retry_after, should_retry: self.should_retry }
        } else if let Some(location) = &self.redirect_to {
            FaultAction::Redirect(header_value("redirectTo", location)?)
        } else if self.drop_connection {
            FaultAction::DropConnection
        } else if self.drop_response {
            FaultAction::DropResponse
        } else {
            FaultAction::Proceed
        };
        Ok(ValidFault { delay, action })
    }
}

fn header_value(field: &str, value: &str) -> Result<HeaderValue, FakeStripeError> {
    if value.trim().is_empty() {
        return Err(FakeStripeError::InvalidFault(format!("{field} is empty")));
    }
    HeaderValue::from_str(value)
        .map_err(|_| FakeStripeError::InvalidFault(format!("{field} {value:?} is not a valid HTTP header value")))
}

/// Parse the body of `POST /__fake/faults`: one fault object or an array of them.
pub fn parse_faults(body: &[u8]) -> Result<Vec<Fault>, FakeStripeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| FakeStripeError::InvalidFault(format!("the body is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(FakeStripeError::InvalidFault("expected a fault object or an array of them".into())),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            serde_json::from_value::<Fault>(item)
                .map_err(|e| FakeStripeError::InvalidFault(format!("fault #{index}: {e}")))
        })
        .collect()
}

/// A fault that passed [`Fault::validate`], ready to apply.
#[derive(Debug, Clone)]
pub(crate) struct ValidFault {
    pub(super) delay: Option<Duration>,
    pub(super) action: FaultAction,
}

#[derive(Debug, Clone)]
pub(super) enum FaultAction {
    Proceed,
    Status { status: StatusCode, retry_after: Option<HeaderValue>, should_retry: Option<bool> },
    Redirect(HeaderValue),
    DropConnection,
    DropResponse,
}
