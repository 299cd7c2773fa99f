//! `vadyl.webhook-hmac`: delivers `webhook.deliver@1` events following Standard Webhooks.
//!
//! POSTs the payload verbatim with `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{payload}")>`. The MAC is
//! computed by the host (SecretsHmac): this code never holds the signing secret either.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};

use super::NativeAdapter;
use crate::runtime::adapter::{
    Adapter, AdapterError, ContractFailure, Exchange, ExchangeOutcome, PlanRequest, Step, StepHost,
};
use crate::runtime::component::Descriptor;

pub struct WebhookHmac;

const DEFAULT_SECRET: &str = "webhook-signing-secret";
const MAX_ATTEMPTS: u64 = 5;

impl NativeAdapter for WebhookHmac {
    fn name(&self) -> &'static str {
        "vadyl.webhook-hmac"
    }

    fn version(&self) -> &'static str {
        "1.0.0"
    }

    fn contract(&self) -> crate::ids::ContractRef {
        crate::ids::ContractRef {
            kind: "webhook.deliver".parse().unwrap_or_else(|_| unreachable!("a valid literal kind")),
            major_version: 1,
        }
    }

    fn default_descriptor(&self) -> Descriptor {
        serde_json::from_value(json!({
            "egress": {"allow": [{"scheme": "https", "host": "*.hooks.example.com"}]},
            "secrets": [DEFAULT_SECRET],
            "redaction": {"outputPointers": ["/responseExcerpt"]},
            "conformance": {"fixtures": {
                "deliver-succeeds": [{"status": 200, "body": "ok"}],
                "deliver-endpoint-fails": [{"status": 500, "body": "the receiver is down"}],
            }},
        }))
        .unwrap_or_else(|e| unreachable!("the literal default descriptor parses: {e}"))
    }

    fn adapter(&self) -> Arc<dyn Adapter> {
        Arc::new(WebhookHmac)
    }
}

fn failure(code: &str, message: impl Into<String>, retryable: bool) -> Step {
    Step::Failed(ContractFailure {
        code: code.into(),
        message: message.into(),
        retryable,
        retry_after_ms: None,
        provider_code: None,
        details: vec![],
    })
}

fn rfc3339(ms: u64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(ms / 1000).ok()?).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

impl WebhookHmac {
    fn plan(&self, host: &mut dyn StepHost, input: &Value) -> Result<Step, AdapterError> {
        let text = |k: &str| input.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (endpoint, event_id, event_type, payload) =
            (text("endpointUrl"), text("eventId"), text("eventType"), text("payload"));
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Ok(failure("invalid-input", "endpointUrl must be an http(s) URL", false));
        }
        let secret = input.get("signingSecretRef").and_then(Value::as_str).unwrap_or(DEFAULT_SECRET).to_owned();
        let timestamp = host.now_ms() / 1000;
        let signed = format!("{event_id}.{timestamp}.{payload}");
        let tag = match host.hmac_sha256(&secret, signed.as_bytes()) {
            Ok(tag) => tag,
            Err(e) => return Ok(failure("host-denied", e.to_string(), false)),
        };
        let signature = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag));
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("user-agent".to_owned(), "vadyl-webhooks/1".to_owned()),
            ("webhook-id".to_owned(), event_id.clone()),
            ("webhook-timestamp".to_owned(), timestamp.to_string()),
            ("webhook-event-type".to_owned(), event_type.clone()),
            ("webhook-signature".to_owned(), signature),
        ];
        for pair in input.get("headers").and_then(Value::as_array).into_iter().flatten() {
            if let (Some(k), Some(v)) = (pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_str)) {
                headers.push((k.to_owned(), v.to_owned()));
            }
        }
        host.log("info", "delivering webhook", json!({"eventType": event_type, "eventId": event_id}));
        let plan = PlanRequest {
            method: "POST".into(),
            url: endpoint,
            headers,
            body: payload.into_bytes(),
            auth: None,
            idempotency_key: None,
            retry: None,
            timeout_ms: Some(10_000),
        };
        match host.build_plan(plan) {
            Ok(id) => Ok(Step::Egress(id)),
            Err(e) => Ok(failure("host-denied", e.to_string(), false)),
        }
    }
}

impl Adapter for WebhookHmac {
    fn step(
        &self,
        host: &mut dyn StepHost,
        operation: &str,
        input: &Value,
        exchanges: &[Exchange],
    ) -> Result<Step, AdapterError> {
        if operation != "deliver" {
            return Err(AdapterError::UnknownOperation(operation.to_owned()));
        }
        let Some(last) = exchanges.last() else { return self.plan(host, input) };
        let max = input.get("maxAttempts").and_then(Value::as_u64).unwrap_or(1).clamp(1, MAX_ATTEMPTS);
        let status = match &last.outcome {
            ExchangeOutcome::Response { status, .. } => Some(*status),
            _ => None,
        };
        let transient = status.is_none_or(|s| s == 429 || s >= 500);
        if matches!(last.outcome, ExchangeOutcome::Refused { .. }) {
            return Ok(failure("host-denied", "the host refused to deliver to this endpoint", false));
        }
        if transient && (exchanges.len() as u64) < max {
            return self.plan(host, input);
        }
        let excerpt = match &last.outcome {
            ExchangeOutcome::Response { body, .. } if !body.is_empty() => {
                Some(String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned())
            }
            _ => None,
        };
        let delivered_at = header(&last.sent_headers, "webhook-timestamp")
            .and_then(|t| t.parse::<u64>().ok())
            .and_then(|s| rfc3339(s * 1000));
        host.record_span("webhook.deliver", json!({"http.status_code": status, "attempts": exchanges.len()}));
        Ok(Step::Done(json!({
            "delivered": status.is_some_and(|s| (200..300).contains(&s)),
            "statusCode": status,
            "attemptCount": exchanges.len(),
            "signature": header(&last.sent_headers, "webhook-signature").unwrap_or_default(),
            "deliveredAt": delivered_at,
            "responseExcerpt": excerpt,
        })))
    }
}
