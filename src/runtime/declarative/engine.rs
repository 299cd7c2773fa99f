//! The canonical declarative engine: runs one manifest operation as a step function behind the
//! same [`Adapter`] boundary as native adapters and components.
//!
//! First step: render the request from the input and config (sandboxed templates; input values are
//! data, never templates), and ask the host for one egress plan — auth by secret reference,
//! idempotency key, retry policy. The host validates the plan against the allow-list, attaches the
//! credentials and runs the retries. Second step: classify the final response — success statuses
//! map to the output through JSONPath, anything else to a typed contract error by the error rules.

use std::collections::BTreeMap;

use serde_json::Value;

use super::manifest::{
    Auth, Body, MacEncoding, Manifest, MissingKey, Operation, ResponseDocument, RetryPolicy, UrlSpec,
};
use super::template;
use crate::runtime::adapter::{
    Adapter, AdapterError, ContractFailure, EgressAuth, Exchange, ExchangeOutcome, PlanRequest, Step, StepHost,
};

/// A built manifest, ready to run.
pub struct DeclarativeAdapter {
    manifest: Manifest,
    config: Value,
}

impl DeclarativeAdapter {
    pub fn new(manifest: Manifest) -> Self {
        let config = Value::Object(manifest.config.iter().map(|(k, v)| (k.clone(), v.to_json())).collect());
        Self { manifest, config }
    }

    /// Overrides config values (conformance points `baseUrl` at its own upstream this way).
    pub fn with_config(mut self, key: &str, value: Value) -> Self {
        if let Value::Object(map) = &mut self.config {
            map.insert(key.to_owned(), value);
        }
        self
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

fn failure(code: &str, message: impl Into<String>, retryable: bool) -> Step {
    Step::Failed(ContractFailure {
        code: code.to_owned(),
        message: message.into(),
        retryable,
        retry_after_ms: None,
        provider_code: None,
        details: Vec::new(),
    })
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Form encoding with bracketed keys for nested objects (`metadata[order]=1`), as Stripe expects.
fn flatten_form(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                flatten_form(&format!("{prefix}[{k}]"), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten_form(&format!("{prefix}[{i}]"), v, out);
            }
        }
        other => {
            if let Some(text) = as_text(other) {
                out.push((prefix.to_owned(), text));
            }
        }
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// The secret an HMAC signs with: the one the caller names in the input field the manifest allows,
/// else the manifest's own. (The host still refuses any secret the artifact was not granted.)
fn signing_secret(a: &super::manifest::HmacAuth, input: &Value) -> String {
    a.secret_from_input
        .as_deref()
        .and_then(|field| input.get(field))
        .and_then(Value::as_str)
        .map_or_else(|| a.secret.clone(), str::to_owned)
}

fn egress_auth(auth: &Auth, input: &Value) -> Result<EgressAuth, AdapterError> {
    Ok(match auth {
        Auth::Bearer(a) => EgressAuth::Bearer { secret: a.secret.clone() },
        Auth::Basic(a) => {
            EgressAuth::Basic { username: a.username.clone(), password_secret: a.password_secret.clone() }
        }
        Auth::ApiKeyHeader(a) => {
            EgressAuth::Header { header: a.header.clone(), prefix: a.prefix.clone(), secret: a.secret.clone() }
        }
        Auth::Hmac(a) => {
            if !matches!(a.algorithm, super::manifest::HmacAlgorithm::Sha256) {
                return Err(AdapterError::Misbehaved("only HMAC-SHA256 request signing is supported".into()));
            }
            let secret = signing_secret(a, input);
            EgressAuth::HmacSha256 {
                header: a.header.clone(),
                prefix: a.prefix.clone(),
                secret,
                base64: !matches!(a.encoding, MacEncoding::Hex),
            }
        }
    })
}

impl DeclarativeAdapter {
    fn operation(&self, name: &str) -> Result<&Operation, AdapterError> {
        self.manifest.operations.get(name).ok_or_else(|| AdapterError::UnknownOperation(name.to_owned()))
    }

    fn first_step(
        &self,
        host: &mut dyn StepHost,
        name: &str,
        op: &Operation,
        input: &Value,
    ) -> Result<Step, AdapterError> {
        let ctx = template::template_context(input, &self.config);
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            failure("invalid-input", format!("cannot render the {what}: {e}"), false)
        };
        let req = &op.request;
        let url = match &req.url {
            UrlSpec::Template(t) => match template::render(t, &ctx) {
                Ok(u) => u,
                Err(e) => return Ok(bad("URL", &e)),
            },
            UrlSpec::FromInput(f) => match input.get(&f.from_input).and_then(Value::as_str) {
                Some(u) => u.to_owned(),
                None => {
                    return Ok(failure("invalid-input", format!("input field {} must be a URL", f.from_input), false))
                }
            },
        };
        let mut url = match url::Url::parse(&url) {
            Ok(u) => u,
            Err(e) => return Ok(failure("invalid-input", format!("the rendered URL is not valid: {e}"), false)),
        };
        if !req.query.is_empty() {
            let mut pairs = Vec::new();
            for (k, t) in &req.query {
                match template::render_leaf(t, &ctx) {
                    Ok(v) => {
                        if let Some(text) = as_text(&v) {
                            pairs.push((k.clone(), text));
                        }
                    }
                    Err(e) => return Ok(bad("query", &e)),
                }
            }
            url.query_pairs_mut().extend_pairs(pairs);
        }
        let mut headers = Vec::new();
        for (k, t) in &req.headers {
            // An optional input that is absent leaves the header out.
            match template::render_leaf(t, &ctx).map(|v| as_text(&v)) {
                Ok(Some(v)) if v.contains(['\r', '\n']) => {
                    return Ok(failure("invalid-input", format!("header {k} would contain a line break"), false))
                }
                Ok(Some(v)) if !v.is_empty() => headers.push((k.clone(), v)),
                Ok(_) => {}
                Err(e) => return Ok(bad("headers", &e)),
            }
        }
        if let Some(extra) = &req.extra_headers {
            // `[[name, value], …]` from the input (e.g. webhook.deliver's `headers`).
            match template::render_leaf(extra, &ctx) {
                Ok(Value::Array(pairs)) => {
                    for pair in pairs {
                        match (pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_str)) {
                            (Some(k), Some(v)) if !v.contains(['\r', '\n']) => {
                                headers.push((k.to_owned(), v.to_owned()))
                            }
                            _ => {
                                return Ok(failure(
                                    "invalid-input",
                                    "extra headers must be [name, value] text pairs",
                                    false,
                                ))
                            }
                        }
                    }
                }
                Ok(Value::Null) => {}
                Ok(_) => {
                    return Ok(failure("invalid-input", "extra headers must be a list of [name, value] pairs", false))
                }
                Err(e) => return Ok(bad("extra headers", &e)),
            }
        }
        let body = match &req.body {
            None => Vec::new(),
            Some(Body::Json(j)) => match template::render_value(&j.template, &ctx) {
                Ok(v) => {
                    headers.push(("Content-Type".into(), "application/json".into()));
                    let v = if j.omit_nulls { strip_nulls(v) } else { v };
                    serde_json::to_vec(&v).unwrap_or_default()
                }
                Err(e) => return Ok(bad("JSON body", &e)),
            },
            Some(Body::Form(f)) => {
                let mut pairs = Vec::new();
                for (k, t) in &f.fields {
                    match template::render_value(t, &ctx) {
                        Ok(v) => flatten_form(k, &v, &mut pairs),
                        Err(e) => return Ok(bad("form body", &e)),
                    }
                }
                headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
                url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish().into_bytes()
            }
            Some(Body::Text(t)) => match template::render(&t.template, &ctx) {
                Ok(text) => {
                    headers.push(("Content-Type".into(), t.content_type.clone()));
                    text.into_bytes()
                }
                Err(e) => return Ok(bad("text body", &e)),
            },
        };
        let idempotency_key = match &op.idempotency {
            None => None,
            Some(i) => match template::render_leaf(&i.value, &ctx).map(|v| as_text(&v).unwrap_or_default()) {
                Ok(v) if !v.trim().is_empty() => Some((i.header.clone(), v)),
                Ok(_) if i.when_missing == MissingKey::Reject => {
                    return Ok(failure("invalid-input", "this operation needs an idempotency key", false))
                }
                Ok(_) => None,
                Err(e) => return Ok(bad("idempotency key", &e)),
            },
        };
        let requested = op
            .retry
            .as_ref()
            .and_then(|r| r.requested_attempts.as_deref())
            .and_then(|t| template::render_leaf(t, &ctx).ok())
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
            .and_then(|n| u32::try_from(n).ok());
        let retry = op.retry.as_ref().map(|r| RetryPolicy {
            // The caller may ask for fewer attempts than the manifest allows, never more.
            max_attempts: requested.map_or(r.max_attempts, |n| n.clamp(1, r.max_attempts)),
            requested_attempts: None,
            ..r.clone()
        });
        let auth = match &self.manifest.auth {
            // A signed-payload scheme (Standard Webhooks): the engine renders the text to sign and
            // has the host MAC it (SecretsHmac); the secret never leaves the host.
            Some(Auth::Hmac(a)) if a.signed_payload.is_some() => {
                let timestamp = host.now_ms() / 1000;
                let mut sign_ctx = ctx.json().clone();
                sign_ctx["timestamp"] = Value::from(timestamp);
                sign_ctx["body"] = Value::String(String::from_utf8_lossy(&body).into_owned());
                let payload = match template::render(a.signed_payload.as_deref().unwrap_or_default(), &sign_ctx) {
                    Ok(p) => p,
                    Err(e) => return Ok(bad("signed payload", &e)),
                };
                let secret = signing_secret(a, input);
                if let Err(AdapterError::Host(reason)) = host.assert_capability(&format!("secret:{secret}")) {
                    return Ok(failure("permission-denied", reason, false));
                }
                let mac = match host.hmac_sha256(&secret, payload.as_bytes()) {
                    Ok(mac) => mac,
                    Err(AdapterError::Host(reason)) => return Ok(failure("host-denied", reason, false)),
                    Err(e) => return Err(e),
                };
                use base64::Engine;
                let encoded = match a.encoding {
                    MacEncoding::Hex => hex::encode(&mac),
                    _ => base64::engine::general_purpose::STANDARD.encode(&mac),
                };
                headers.push((a.header.clone(), format!("{}{encoded}", a.prefix.as_deref().unwrap_or_default())));
                if let Some(th) = &a.timestamp_header {
                    headers.push((th.clone(), timestamp.to_string()));
                }
                None
            }
            Some(a) => Some(egress_auth(a, input)?),
            None => None,
        };
        let mut span_url = url.clone();
        span_url.set_query(None);
        host.record_span(
            "egress.plan",
            serde_json::json!({ "operation": name, "method": req.method.as_str(), "url": span_url.as_str() }),
        );
        let plan = PlanRequest {
            method: req.method.as_str().to_owned(),
            url: url.to_string(),
            headers,
            body,
            auth,
            idempotency_key,
            retry,
            timeout_ms: req.timeout_ms,
        };
        match host.build_plan(plan) {
            Ok(id) => Ok(Step::Egress(id)),
            Err(AdapterError::Host(reason) | AdapterError::PlanRefused { message: reason, .. }) => {
                Ok(failure("host-denied", reason, false))
            }
            Err(e) => Err(e),
        }
    }

    fn last_step(
        &self,
        host: &mut dyn StepHost,
        name: &str,
        op: &Operation,
        input: &Value,
        exchange: &Exchange,
    ) -> Step {
        let now = host.now_ms();
        let completed_at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let (status, headers, body, network_error) = match &exchange.outcome {
            ExchangeOutcome::Response { status, headers, body } => (Some(*status), headers.clone(), body.clone(), None),
            // What the host refused is the host's answer, not the upstream's: a typed denial.
            ExchangeOutcome::Refused { message } => return failure("host-denied", message.clone(), false),
            ExchangeOutcome::NetworkError { message } => {
                (None, Vec::new(), Vec::new(), Some(("network".to_owned(), message.clone())))
            }
        };
        let signature = match &self.manifest.auth {
            Some(Auth::Hmac(a)) => {
                exchange.sent_headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(&a.header)).map(|(_, v)| v.clone())
            }
            _ => None,
        };
        let doc = ResponseDocument {
            status,
            headers,
            body,
            network_error,
            attempts: exchange.attempts.max(1),
            completed_at,
            signature,
            input: input.clone(),
            config: self.config.clone(),
        }
        .to_json();
        let is_result = match status {
            Some(s) => op.response.success_status.iter().any(|p| p.matches(s)),
            None => op.response.output_on_network_error,
        };
        let outcome = if is_result { self.map_output(op, &doc) } else { self.map_error(op, status, &doc) };
        host.log(
            "info",
            "operation finished",
            serde_json::json!({
                "operation": name,
                "status": status,
                "outcome": match &outcome { Step::Done(_) => "done", Step::Failed(f) => f.code.as_str(), Step::Egress(_) => "egress" },
            }),
        );
        outcome
    }

    fn map_output(&self, op: &Operation, doc: &Value) -> Step {
        let mut output = serde_json::Map::new();
        for (field, mapping) in &op.response.output {
            match mapping.evaluate(doc) {
                Ok(Value::Null) => {}
                Ok(v) => {
                    output.insert(field.clone(), v);
                }
                Err(e) => return failure("unexpected-response", format!("output field {field}: {e}"), false),
            }
        }
        Step::Done(Value::Object(output))
    }

    fn map_error(&self, op: &Operation, status: Option<u16>, doc: &Value) -> Step {
        let rule = op.errors.iter().find(|r| {
            let status_ok = match status {
                Some(s) => !r.on_network_error && (r.status.is_empty() || r.status.iter().any(|p| p.matches(s))),
                None => r.on_network_error,
            };
            let when_ok = r
                .when
                .as_deref()
                .is_none_or(|w| template::compiled_json_path(w).map(|p| template::matches(&p, doc)).unwrap_or(false));
            status_ok && when_ok
        });
        let Some(rule) = rule else {
            return match status {
                Some(s) => {
                    failure("unexpected-response", format!("the upstream answered {s}, which no rule maps"), false)
                }
                None => failure("upstream-unavailable", "the upstream could not be reached", true),
            };
        };
        let text = |m: &super::manifest::ValueMapping| m.evaluate(doc).ok().as_ref().and_then(as_text);
        let message = rule.message.as_ref().and_then(text).unwrap_or_else(|| match status {
            Some(s) => format!("{} (HTTP {s})", rule.code),
            None => format!("{} (network error)", rule.code),
        });
        let details: BTreeMap<String, String> =
            rule.details.iter().filter_map(|(k, m)| text(m).map(|v| (k.clone(), v))).collect();
        let retry_after_ms =
            doc["headers"]["retry-after"].as_str().and_then(|s| s.trim().parse::<u64>().ok()).map(|s| s * 1000);
        Step::Failed(ContractFailure {
            code: rule.code.clone(),
            message,
            retryable: rule.retryable,
            retry_after_ms,
            provider_code: rule.provider_code.as_ref().and_then(text),
            details: details.into_iter().collect(),
        })
    }
}

impl Adapter for DeclarativeAdapter {
    fn step(
        &self,
        host: &mut dyn StepHost,
        operation: &str,
        input: &Value,
        exchanges: &[Exchange],
    ) -> Result<Step, AdapterError> {
        let op = self.operation(operation)?;
        match exchanges {
            [] => self.first_step(host, operation, op, input),
            [.., last] => Ok(self.last_step(host, operation, op, input, last)),
        }
    }
}
