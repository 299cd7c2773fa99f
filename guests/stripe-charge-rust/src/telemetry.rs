//! Logs and spans through the host's `observability` interface.
//!
//! Only non-sensitive facts go here: amounts, currencies, status codes, attempt counts. Never the
//! card source, never a response header or body (Stripe may echo request data). Telemetry failures
//! are ignored: they must not change the operation's result.

use crate::vadyl::connector::observability::{self, Attribute, AttributeValue, Level, SpanData, SpanStatus};
use crate::vadyl::connector::time;
use crate::vadyl::connector::types::{ContractError, EgressExchange, EgressOutcome, Timestamp};

/// An integer attribute (saturating at `i64::MAX`).
pub fn integer(key: &str, value: u64) -> Attribute {
    Attribute { key: key.to_owned(), value: AttributeValue::Integer(i64::try_from(value).unwrap_or(i64::MAX)) }
}

/// A text attribute.
pub fn text(key: &str, value: &str) -> Attribute {
    Attribute { key: key.to_owned(), value: AttributeValue::Text(value.to_owned()) }
}

/// Emits a log record.
pub fn log(level: Level, message: &str, attributes: &[Attribute]) {
    let _ = observability::log(level, message, attributes);
}

/// Records the span of a finished call: from the first attempt (host time minus the time the
/// attempts took) to now, with the last status code, the attempt count and the outcome.
pub fn record_span<T>(name: &str, exchanges: &[EgressExchange], result: &Result<T, ContractError>) {
    let Ok(now) = time::now() else {
        return;
    };
    let spent_ms = exchanges.iter().fold(0u64, |total, exchange| total.saturating_add(exchange.elapsed_ms));
    let mut attributes = vec![integer("stripe.attempts", exchanges.len() as u64)];
    if let Some(EgressOutcome::Response(response)) = exchanges.last().map(|exchange| &exchange.outcome) {
        attributes.push(integer("http.status_code", u64::from(response.status)));
    }
    let (status, outcome) = match result {
        Ok(_) => (SpanStatus::Ok, "done"),
        Err(error) => (SpanStatus::Error, crate::response::code_name(error.code)),
    };
    attributes.push(text("outcome", outcome));
    let span = SpanData {
        name: name.to_owned(),
        parent: None,
        started_at: before(now, spent_ms),
        ended_at: now,
        status,
        attributes,
    };
    let _ = observability::record_span(&span);
}

/// `at` minus `ms` milliseconds, not before the epoch.
fn before(at: Timestamp, ms: u64) -> Timestamp {
    let total_ns = u128::from(at.seconds) * 1_000_000_000 + u128::from(at.nanoseconds);
    let start_ns = total_ns.saturating_sub(u128::from(ms) * 1_000_000);
    Timestamp {
        seconds: u64::try_from(start_ns / 1_000_000_000).unwrap_or(u64::MAX),
        nanoseconds: (start_ns % 1_000_000_000) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_start_is_before_the_end() {
        let at = Timestamp { seconds: 10, nanoseconds: 200_000_000 };
        let start = before(at, 1_500);
        assert_eq!((start.seconds, start.nanoseconds), (8, 700_000_000));
        let clamped = before(at, 60_000);
        assert_eq!((clamped.seconds, clamped.nanoseconds), (0, 0));
    }

    #[test]
    fn integers_saturate() {
        assert!(matches!(integer("k", u64::MAX).value, AttributeValue::Integer(i64::MAX)));
        assert!(matches!(integer("k", 7).value, AttributeValue::Integer(7)));
    }
}
