//! The `DeclarativeBundle` manifest: a connector written as data, not code.
//!
//! A manifest (SPEC §1, the `stripe.connector.json` of SPEC §8) describes, for each operation of
//! one contract, the HTTP request to send, how to retry it, and how to map the response to the
//! contract's output or error. The one declarative engine inside Vadyl interprets it through the
//! same host services as components (egress plans, host-held secrets, host time), so the same
//! guarantees hold: the allow-list is enforced, and secret values never appear in the manifest,
//! the engine, or anything it records.
//!
//! It is close to an Airbyte low-code manifest, with what payment and webhook connectors need on
//! top: idempotency keys, HMAC signing by the host, capped `Retry-After`, provider retry hints,
//! a redaction list, and no secret material anywhere (secrets are referenced by name).
//!
//! This module holds the types (serde, `deny_unknown_fields` everywhere, lowerCamelCase fields)
//! and the published JSON Schema ([`manifest_json_schema`]). The schema describes the *shape*;
//! [`super::validate()`] adds the rules a schema cannot express (templates, JSONPath, contract
//! fit, allow-list, secrets) and is the only way to obtain a usable manifest.
//!
//! # Evaluation model (what the engine does with a manifest)
//!
//! For an operation, the engine renders the [`Request`] with the context
//! `{"input": <operation input>, "config": <manifest config>}` (see
//! [`super::template::template_context`]), builds an egress plan, has the host attach [`Auth`],
//! and hands the plan to the host. Each completed exchange is classified in this order:
//!
//! 1. **retry**: if attempts remain and the [`RetryPolicy`] says so (status, network error,
//!    provider hint), the same request (same idempotency key) is sent again after the backoff;
//! 2. **output**: a response whose status is in [`ResponseSpec::success_status`] is mapped to the
//!    output with [`ResponseSpec::output`];
//! 3. **error**: otherwise the first matching [`ErrorRule`] gives the contract error; when none
//!    matches, the error is `unexpected-response` (not retryable) for a response, and
//!    `timeout` or `upstream-unavailable` (retryable) for a network error.
//!
//! Mappings read the [`ResponseDocument`] with JSONPath.

use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::template;

// The HTTP types a manifest shares with the host's egress, which owns them (one definition each;
// their serde form and JSON Schema are the manifest's).
pub use crate::runtime::host::egress::{Jitter, Method, RetryPolicy, Scheme, StatusClass, StatusPattern};

/// The only manifest format version this release understands.
pub const MANIFEST_VERSION: u32 = 1;

/// Characters of the response body kept in [`ResponseDocument`]'s `text`.
pub const RESPONSE_TEXT_CHARS: usize = 1024;

/// Why a value mapping could not produce a value from a response document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("{0}")]
    Path(#[from] template::TemplateError),
    #[error("cannot convert {value} with `{conversion}`: {reason}")]
    Conversion { conversion: &'static str, value: String, reason: &'static str },
}

/// A connector implemented as a JSON manifest (`DeclarativeBundle`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Vadyl DeclarativeBundle manifest")]
pub struct Manifest {
    /// Format version of this document; must be `1`.
    #[schemars(range(min = 1, max = 1))]
    pub manifest_version: u32,
    /// Implementation name: a slug of 1 to 63 characters `[a-z0-9][a-z0-9-]*`, e.g.
    /// `stripe-charge-adapter`. With `version` it forms the implementation id `name:version`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub name: String,
    /// Semantic version of this implementation, without build metadata, e.g. `1.0.0`.
    pub version: String,
    /// What the connector does, for people reading the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The contract this manifest implements.
    pub contract: ContractTarget,
    /// Non-secret settings templates can read as `config.<key>`, e.g. `baseUrl`. Keys are
    /// lowerCamelCase identifiers; values are strings, integers or booleans.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, ConfigValue>,
    /// Where the connector may send requests.
    pub egress: Egress,
    /// How the host authenticates requests. Absent: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Extra data to redact in invocation records, logs and spans (the contract's sensitive
    /// fields are always redacted).
    #[serde(default)]
    pub redaction: Redaction,
    /// One entry per operation of the contract, keyed by operation name (e.g. `charge`).
    pub operations: BTreeMap<String, Operation>,
    /// How this connector's upstream answers in each of the contract's conformance vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conformance: Option<ConformanceFixtures>,
}

/// Upstream responses for the contract's conformance vectors (SPEC §7): the contract says what
/// must happen in each vector, the connector says what its provider answers there. The suite serves
/// these from a host-controlled upstream, in order, one per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConformanceFixtures {
    /// Vector name -> the responses to serve, in order.
    pub fixtures: BTreeMap<String, Vec<FixtureResponse>>,
}

/// One scripted upstream response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixtureResponse {
    /// HTTP status.
    #[schemars(range(min = 100, max = 599))]
    pub status: u16,
    /// Response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON body (a string is sent as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// The contract a manifest implements: `kind@majorVersion`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContractTarget {
    /// Surface kind, e.g. `payment.charge`.
    pub kind: String,
    /// Major version, e.g. `1`.
    pub major_version: u32,
}

/// A non-secret configuration value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ConfigValue {
    /// A string, e.g. a base URL.
    String(String),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Bool(bool),
}

impl ConfigValue {
    /// The value as JSON, as templates see it.
    pub fn to_json(&self) -> Value {
        match self {
            ConfigValue::String(s) => Value::String(s.clone()),
            ConfigValue::Integer(i) => Value::from(*i),
            ConfigValue::Bool(b) => Value::Bool(*b),
        }
    }
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an integer or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue::String(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigValue, E> {
                i64::try_from(v)
                    .map(ConfigValue::Integer)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &"an integer within i64"))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The egress allow-list of the manifest. The host enforces it on every plan; validation also
/// checks every static request URL against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Egress {
    /// Origins requests may target. At least one.
    #[schemars(length(min = 1))]
    pub allow: Vec<AllowedOrigin>,
}

/// One allowed origin: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedOrigin {
    /// `https`, or `http` for loopback hosts only (local fakes in tests).
    pub scheme: Scheme,
    /// Lowercase DNS name or IP address, e.g. `api.stripe.com` or `127.0.0.1`. A leading `*.`
    /// (`*.hooks.example.com`) allows every subdomain, not the name itself.
    pub host: String,
    /// Port; the scheme's default port (443 or 80) when absent, and only that port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl AllowedOrigin {
    /// Whether `url` targets this origin (scheme, host and effective port all equal).
    pub fn permits(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let wanted = self.host.trim_start_matches('[').trim_end_matches(']');
        let host_ok = match wanted.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == wanted,
        };
        let port = self.port.unwrap_or(self.scheme.default_port());
        url.scheme() == self.scheme.as_str() && host_ok && url.port_or_known_default() == Some(port)
    }
}

impl Egress {
    /// Whether some allowed origin permits `url`.
    pub fn permits(&self, url: &url::Url) -> bool {
        self.allow.iter().any(|o| o.permits(url))
    }
}

/// Authentication the host attaches to every request (`secrets.attach-auth-to-egress-plan`).
/// Secrets are named, never included: the engine and the manifest never see their values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <secret>`.
    Bearer(BearerAuth),
    /// `Authorization: Basic base64(<username>:<secret>)`.
    Basic(BasicAuth),
    /// `<header>: <prefix><secret>`, e.g. `x-api-key`.
    ApiKeyHeader(ApiKeyHeaderAuth),
    /// A header carrying an HMAC computed by the host (webhook signatures).
    Hmac(HmacAuth),
}

impl Auth {
    /// The secret names this auth refers to, with the field that names them.
    pub fn secret_names(&self) -> Vec<(&'static str, &str)> {
        match self {
            Auth::Bearer(a) => vec![("secret", &a.secret)],
            Auth::Basic(a) => vec![("passwordSecret", &a.password_secret)],
            Auth::ApiKeyHeader(a) => vec![("secret", &a.secret)],
            Auth::Hmac(a) => vec![("secret", &a.secret)],
        }
    }

    /// The headers this auth sets, with the field that names them.
    pub fn header_names(&self) -> Vec<(&'static str, &str)> {
        match self {
            Auth::Bearer(_) | Auth::Basic(_) => vec![("type", "authorization")],
            Auth::ApiKeyHeader(a) => vec![("header", &a.header)],
            Auth::Hmac(a) => {
                let mut names = vec![("header", a.header.as_str())];
                if let Some(t) = &a.timestamp_header {
                    names.push(("timestampHeader", t.as_str()));
                }
                names
            }
        }
    }
}

/// Bearer token auth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BearerAuth {
    /// Name of the host-held secret holding the token, e.g. `stripe-secret-key`.
    pub secret: String,
}

/// HTTP Basic auth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// User name, in clear (not a secret).
    pub username: String,
    /// Name of the host-held secret holding the password.
    pub password_secret: String,
}

/// A secret sent as a custom header value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyHeaderAuth {
    /// Header name, e.g. `x-api-key`.
    pub header: String,
    /// Name of the host-held secret holding the key.
    pub secret: String,
    /// Text placed before the secret, e.g. `Token `.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// An HMAC signature header, computed by the host with a secret the engine never sees.
///
/// Without `signedPayload` the host MACs the final request body
/// (`egress-auth.signature`). With it, the engine renders `signedPayload` and has the host MAC
/// that text (`secrets.hmac`), which covers schemes that sign more than the body, such as
/// Standard Webhooks (`{{ input.eventId }}.{{ timestamp }}.{{ body }}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HmacAuth {
    /// Header receiving `<prefix><mac>`, e.g. `webhook-signature`.
    pub header: String,
    /// Name of the host-held signing secret.
    pub secret: String,
    /// Name of a string field of every operation's input that, when present and not null,
    /// names the signing secret instead of `secret` (e.g. webhook.deliver's `signingSecretRef`).
    /// The host still only grants secrets bound to the publication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_from_input: Option<String>,
    /// Hash function.
    pub algorithm: HmacAlgorithm,
    /// Text encoding of the MAC.
    pub encoding: MacEncoding,
    /// Text placed before the encoded MAC, e.g. `sha256=` or `v1,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Template of the signed text. Variables: `body` (the final request body text),
    /// `timestamp` (Unix seconds from the host clock, recorded for replay), `input.*`, `config.*`.
    /// Absent: the body alone, MACed by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_payload: Option<String>,
    /// Header receiving the same `timestamp` the payload was signed with, e.g. `webhook-timestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_header: Option<String>,
}

/// HMAC hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// Text encoding of a MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MacEncoding {
    /// Lowercase hexadecimal.
    Hex,
    /// Standard base64 with padding.
    Base64,
    /// URL-safe base64 without padding.
    Base64url,
}

/// Data to redact beyond the contract's `@sensitive` fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redaction {
    /// Request and response header names whose values are redacted (case-insensitive). Auth
    /// headers are always redacted.
    #[serde(default)]
    pub headers: Vec<String>,
    /// JSON Pointers (RFC 6901) into every operation's input; `*` stands for every array element.
    #[serde(default)]
    pub input_pointers: Vec<String>,
    /// JSON Pointers into every operation's output.
    #[serde(default)]
    pub output_pointers: Vec<String>,
}

/// How one contract operation is carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Notes for readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The HTTP request.
    pub request: Request,
    /// The idempotency key header. Required when a non-idempotent request (POST, PATCH) may be
    /// retried after a network error, a 5xx or a provider retry hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
    /// Retries within one invocation. Absent: one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Which responses are a result, and how they map to the output.
    pub response: ResponseSpec,
    /// Contract errors for the other responses, first match wins.
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
}

/// An HTTP request. Every string is a template over `input.*` and `config.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Target URL.
    pub url: UrlSpec,
    /// Headers: name -> template. Credentials go in `auth`, never here; `authorization`, `host`,
    /// `content-length`, `transfer-encoding` and the auth and idempotency headers are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters: name -> template, appended URL-encoded after the URL's own query. A
    /// single-expression template that evaluates to null or undefined omits the parameter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// A single-expression template evaluating to extra headers, as an object or a list of
    /// `[name, value]` pairs (e.g. `{{ input.headers }}`); null or undefined adds none. The
    /// engine refuses names the `headers` rule refuses and values with control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_headers: Option<String>,
    /// Request body. Absent: no body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
    /// Timeout of one attempt in milliseconds (100 to 60000); the host default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 60000))]
    pub timeout_ms: Option<u64>,
}

/// A request URL: a template with a static origin, or an absolute URL taken from the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum UrlSpec {
    /// A URL template whose scheme, host and port are static: either written literally
    /// (`https://api.stripe.com/v1/charges/{{ input.chargeId | urlencode }}`) or given by one
    /// leading `{{ config.<key> }}` holding an absolute URL, followed by nothing, `/…` or `?…`
    /// (`{{ config.baseUrl }}/v1/charges`). Validation checks that origin against the allow-list;
    /// a template in the host part is refused.
    Template(String),
    /// The whole URL is an input field (webhook endpoints). The field must be a string of the
    /// operation's input; at run time it must be an absolute URL without credentials or fragment
    /// whose origin is on the allow-list, or the operation fails with `invalid-input` before any
    /// request is made.
    FromInput(UrlFromInput),
}

/// See [`UrlSpec::FromInput`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlFromInput {
    /// Top-level input field holding the URL, e.g. `endpointUrl`.
    pub from_input: String,
}

impl<'de> Deserialize<'de> for UrlSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UrlSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a URL template string or {\"fromInput\": \"<field>\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UrlSpec, E> {
                Ok(UrlSpec::Template(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UrlSpec, A::Error> {
                UrlFromInput::deserialize(de::value::MapAccessDeserializer::new(map)).map(UrlSpec::FromInput)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for UrlSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UrlSpec".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let from_input = generator.subschema_for::<UrlFromInput>();
        json_schema!({
            "description": "A URL template with a static origin (`https://host/...` or `{{ config.baseUrl }}/...`), or {\"fromInput\": field}.",
            "oneOf": [ { "type": "string" }, from_input ]
        })
    }
}

/// A request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "encoding", rename_all = "camelCase", deny_unknown_fields)]
pub enum Body {
    /// `application/json`: a JSON template (string leaves are templates; a leaf that is exactly
    /// one `{{ expression }}` keeps the expression's JSON type).
    Json(JsonBody),
    /// `application/x-www-form-urlencoded`, with bracket notation for nested values.
    Form(FormBody),
    /// A text body sent exactly as rendered (e.g. a webhook payload that must not be re-encoded).
    Text(TextBody),
}

/// See [`Body::Json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonBody {
    /// The JSON template.
    pub template: Value,
    /// Remove object members whose rendered value is null (default `true`), so absent optional
    /// inputs are left out rather than sent as `null`.
    #[serde(default = "yes")]
    pub omit_nulls: bool,
}

/// See [`Body::Form`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormBody {
    /// Field name -> JSON template. Rendered values are encoded as: string as is; number and
    /// boolean as their JSON text; null omitted; object `name[key]=…` and array `name[0]=…`,
    /// recursively (the convention of Stripe and Rails). E.g.
    /// `"metadata": "{{ input.metadata | from_pairs }}"` sends `metadata[order]=42`.
    pub fields: BTreeMap<String, Value>,
}

/// See [`Body::Text`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TextBody {
    /// `content-type` header, e.g. `application/json`.
    pub content_type: String,
    /// Template of the body text.
    pub template: String,
}

fn yes() -> bool {
    true
}

/// The idempotency key sent with every attempt of one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Idempotency {
    /// Header name, e.g. `Idempotency-Key`.
    pub header: String,
    /// Template of the key, e.g. `{{ input.idempotencyKey }}`. Rendered once per invocation;
    /// every retry sends the same key.
    pub value: String,
    /// What to do when the key renders empty, null or undefined (the caller sent none).
    #[serde(default)]
    pub when_missing: MissingKey,
}

/// Behaviour when an idempotency key cannot be rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MissingKey {
    /// Send the request without the header and never retry it (the default): a request that is
    /// not idempotent and has no key is sent at most once.
    #[default]
    SingleAttempt,
    /// Fail the operation with `invalid-input` before sending anything.
    Reject,
}

/// Which final responses are results, and how they become the operation's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseSpec {
    /// Statuses mapped to the output, e.g. `[200, 201]` or `["2xx"]`. A contract that reports
    /// failed deliveries as output (webhook.deliver) lists every class.
    #[schemars(length(min = 1))]
    pub success_status: Vec<StatusPattern>,
    /// Also map a final network error to the output (the document's `status` is then null).
    #[serde(default)]
    pub output_on_network_error: bool,
    /// Output field (top-level property of the contract output) -> mapping. Every required
    /// field must be mapped; an unmapped optional field is omitted.
    pub output: BTreeMap<String, ValueMapping>,
}

/// A contract error for responses that are not results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorRule {
    /// Response statuses this rule applies to; empty matches every status that is not a result.
    /// Must be empty when `onNetworkError` is set.
    #[serde(default)]
    pub status: Vec<StatusPattern>,
    /// Apply to a final network error (document `status` null) instead of to responses.
    #[serde(default)]
    pub on_network_error: bool,
    /// Extra condition: a JSONPath that must select at least one node of the response document,
    /// e.g. `$.body.error[?@.type == 'card_error']`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Contract error code, one of the contract's `error-code` cases, e.g. `declined`.
    pub code: String,
    /// The error message. Must not carry secrets or sensitive input; the engine redacts known
    /// sensitive values. Absent: a generic message naming the code and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<ValueMapping>,
    /// The provider's own error code, e.g. `$.body.error.code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<ValueMapping>,
    /// Whether repeating the operation (same idempotency key) may succeed.
    pub retryable: bool,
    /// Extra non-sensitive diagnostics: key -> mapping (rendered as text).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, ValueMapping>,
}

/// How one value is read from the [`ResponseDocument`]: a JSONPath string (`"$.body.id"`), or a
/// [`MappingRule`] object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ValueMapping {
    /// A singular JSONPath query; no match or `null` gives `null`.
    Path(String),
    /// A rule with a default, a conversion or a lookup table.
    Rule(MappingRule),
}

/// A value mapping with options. Exactly one of `path` and `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MappingRule {
    /// Singular JSONPath query into the response document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Used when `path` selects nothing or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Conversion applied to a found value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convert: Option<Conversion>,
    /// Lookup table applied after `convert`: a value whose text (a string itself, or the JSON
    /// text of a number or boolean) is a key is replaced; other values pass unchanged. E.g.
    /// `{"requires_action": "requires-action"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Value>,
}

/// Conversions for [`MappingRule::convert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Conversion {
    /// Number or boolean to its JSON text; strings unchanged.
    String,
    /// Integer, or a string of an integer, to an integer.
    Integer,
    /// `"true"`/`"false"` or a boolean to a boolean.
    Boolean,
    /// Unix seconds (integer) to an RFC 3339 UTC timestamp.
    UnixSecondsToRfc3339,
}

impl Conversion {
    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Conversion::String => "string",
            Conversion::Integer => "integer",
            Conversion::Boolean => "boolean",
            Conversion::UnixSecondsToRfc3339 => "unixSecondsToRfc3339",
        }
    }

    /// Applies the conversion.
    pub fn apply(self, value: &Value) -> Result<Value, MappingError> {
        let fail = |reason| MappingError::Conversion {
            conversion: self.as_str(),
            value: value.to_string().chars().take(64).collect(),
            reason,
        };
        match (self, value) {
            (Conversion::String, Value::String(_)) => Ok(value.clone()),
            (Conversion::String, Value::Number(_) | Value::Bool(_)) => Ok(Value::String(value.to_string())),
            (Conversion::String, _) => Err(fail("only strings, numbers and booleans convert to text")),
            (Conversion::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            (Conversion::Integer, Value::String(s)) => {
                if let Ok(i) = s.parse::<i64>() {
                    Ok(Value::from(i))
                } else if let Ok(u) = s.parse::<u64>() {
                    Ok(Value::from(u))
                } else {
                    Err(fail("not an integer"))
                }
            }
            (Conversion::Integer, _) => Err(fail("not an integer")),
            (Conversion::Boolean, Value::Bool(_)) => Ok(value.clone()),
            (Conversion::Boolean, Value::String(s)) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
            (Conversion::Boolean, _) => Err(fail("not a boolean or \"true\"/\"false\"")),
            (Conversion::UnixSecondsToRfc3339, Value::Number(n)) => {
                let secs = n.as_i64().ok_or_else(|| fail("not an integer number of seconds"))?;
                let at = time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| fail("out of range"))?;
                let text = at
                    .format(&time::format_description::well_known::Rfc3339)
                    .map_err(|_| fail("cannot be formatted as RFC 3339"))?;
                Ok(Value::String(text))
            }
            (Conversion::UnixSecondsToRfc3339, _) => Err(fail("not an integer number of seconds")),
        }
    }
}

impl ValueMapping {
    /// The JSONPath this mapping reads, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            ValueMapping::Path(p) => Some(p),
            ValueMapping::Rule(r) => r.path.as_deref(),
        }
    }

    /// Evaluates the mapping against a response document (see [`ResponseDocument::to_json`]).
    pub fn evaluate(&self, doc: &Value) -> Result<Value, MappingError> {
        let found = |path: &str| -> Result<Option<Value>, MappingError> {
            let path = template::compiled_json_path(path)?;
            Ok(template::extract(&path, doc).filter(|v| !v.is_null()))
        };
        match self {
            ValueMapping::Path(p) => Ok(found(p)?.unwrap_or(Value::Null)),
            ValueMapping::Rule(rule) => {
                if let Some(value) = &rule.value {
                    return Ok(value.clone());
                }
                let value = match rule.path.as_deref() {
                    Some(p) => found(p)?,
                    None => None,
                };
                let Some(value) = value else { return Ok(rule.default.clone().unwrap_or(Value::Null)) };
                let value = match rule.convert {
                    Some(c) => c.apply(&value)?,
                    None => value,
                };
                let key = match &value {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
                    _ => None,
                };
                Ok(key.and_then(|k| rule.values.get(&k).cloned()).unwrap_or(value))
            }
        }
    }
}

impl<'de> Deserialize<'de> for ValueMapping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValueMapping;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSONPath string such as \"$.body.id\" or a mapping rule object")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ValueMapping, E> {
                Ok(ValueMapping::Path(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ValueMapping, A::Error> {
                MappingRule::deserialize(de::value::MapAccessDeserializer::new(map)).map(ValueMapping::Rule)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ValueMapping {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ValueMapping".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let rule = generator.subschema_for::<MappingRule>();
        json_schema!({
            "description": "A singular JSONPath query into the response document (e.g. \"$.body.id\"), or a mapping rule.",
            "oneOf": [ { "type": "string", "pattern": "^\\$" }, rule ]
        })
    }
}

/// What response mappings read: one JSON document per final exchange.
///
/// ```json
/// { "status": 200, "success": true, "headers": {"content-type": "application/json"},
///   "body": {"id": "ch_1"}, "text": "{\"id\":\"ch_1\"}", "networkError": null,
///   "attempts": 1, "completedAt": "2026-01-01T00:00:00Z", "signature": null,
///   "input": {...}, "config": {...} }
/// ```
///
/// * `status`: the HTTP status, `null` after a network error; `success`: whether it is 2xx;
/// * `headers`: response headers, names lowercased, repeated headers joined with `", "`;
/// * `body`: the body parsed as JSON, or `null` when it is not JSON; `text`: the first
///   [`RESPONSE_TEXT_CHARS`] characters of the body as text (lossy UTF-8);
/// * `networkError`: `{"kind", "message"}` (kinds as in WIT `network-error-kind`) or `null`;
/// * `attempts`: attempts made; `completedAt`: host time when the exchange ended (RFC 3339);
/// * `signature`: the value of the HMAC header sent, when `auth` is `hmac`, else `null`;
/// * `input`, `config`: the operation input and the manifest config.
///
/// Credentials attached by the host are never part of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseDocument {
    /// HTTP status, `None` after a network error.
    pub status: Option<u16>,
    /// Response headers in the order received.
    pub headers: Vec<(String, String)>,
    /// Raw response body.
    pub body: Vec<u8>,
    /// `(kind, message)` of a network error.
    pub network_error: Option<(String, String)>,
    /// Attempts made.
    pub attempts: u32,
    /// Host time at completion, RFC 3339.
    pub completed_at: String,
    /// HMAC header value sent, if any.
    pub signature: Option<String>,
    /// Operation input.
    pub input: Value,
    /// Manifest config as JSON.
    pub config: Value,
}

impl ResponseDocument {
    /// The JSON document mappings are evaluated against.
    pub fn to_json(&self) -> Value {
        let mut headers = serde_json::Map::new();
        for (name, value) in &self.headers {
            let name = name.to_ascii_lowercase();
            match headers.get_mut(&name) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(value);
                }
                _ => {
                    headers.insert(name, Value::String(value.clone()));
                }
            }
        }
        let body = serde_json::from_slice::<Value>(&self.body).unwrap_or(Value::Null);
        let text: String = String::from_utf8_lossy(&self.body).chars().take(RESPONSE_TEXT_CHARS).collect();
        serde_json::json!({
            "status": self.status,
            "success": self.status.is_some_and(|s| (200..300).contains(&s)),
            "headers": headers,
            "body": body,
            "text": text,
            "networkError": self.network_error.as_ref().map(|(kind, message)| serde_json::json!({"kind": kind, "message": message})),
            "attempts": self.attempts,
            "completedAt": self.completed_at,
            "signature": self.signature,
            "input": self.input,
            "config": self.config,
        })
    }
}

/// The published JSON Schema (draft 2020-12) of the manifest document.
pub fn manifest_json_schema() -> Value {
    schemars::schema_for!(Manifest).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_is_published_with_descriptions_and_closed_objects() {
        let schema = manifest_json_schema();
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(schema["title"], "Vadyl DeclarativeBundle manifest");
        assert_eq!(schema["additionalProperties"], false);
        let required: Vec<&str> = schema["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        for field in ["manifestVersion", "name", "version", "contract", "egress", "operations"] {
            assert!(required.contains(&field), "{field} required");
        }
        let defs = schema["$defs"].as_object().unwrap();
        for def in ["Operation", "Request", "RetryPolicy", "Auth", "Body", "StatusPattern", "ValueMapping", "ErrorRule"]
        {
            assert!(defs.contains_key(def), "{def} missing from $defs");
        }
        assert_eq!(defs["RetryPolicy"]["additionalProperties"], false);
        assert!(defs["RetryPolicy"]["properties"]["maxAttempts"]["description"].as_str().unwrap().contains("1 to 10"));
        assert_eq!(defs["RetryPolicy"]["properties"]["maxAttempts"]["maximum"], 10);
        assert!(schema["properties"]["name"]["description"].as_str().unwrap().contains("slug"));
    }

    #[test]
    fn status_patterns_parse_and_match() {
        let p: Vec<StatusPattern> = serde_json::from_value(json!([429, "5xx"])).unwrap();
        assert!(p[0].matches(429) && !p[0].matches(428));
        assert!(p[1].matches(500) && p[1].matches(599) && !p[1].matches(600) && !p[1].matches(499));
        for bad in [json!(99), json!(600), json!("6xx"), json!(-1), json!(true)] {
            assert!(serde_json::from_value::<StatusPattern>(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_value(&p).unwrap(), json!([429, "5xx"]));
    }

    #[test]
    fn value_mappings_evaluate() {
        let doc = json!({"body": {"id": "ch_1", "created": 1700000000, "status": "requires_action", "n": "42"}});
        let m = |v: Value| serde_json::from_value::<ValueMapping>(v).unwrap();
        assert_eq!(m(json!("$.body.id")).evaluate(&doc).unwrap(), json!("ch_1"));
        assert_eq!(m(json!("$.body.nope")).evaluate(&doc).unwrap(), Value::Null);
        assert_eq!(
            m(json!({"path": "$.body.created", "convert": "unixSecondsToRfc3339"})).evaluate(&doc).unwrap(),
            json!("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            m(json!({"path": "$.body.status", "values": {"requires_action": "requires-action"}}))
                .evaluate(&doc)
                .unwrap(),
            json!("requires-action")
        );
        assert_eq!(m(json!({"path": "$.body.n", "convert": "integer"})).evaluate(&doc).unwrap(), json!(42));
        assert_eq!(m(json!({"path": "$.body.nope", "default": 7})).evaluate(&doc).unwrap(), json!(7));
        assert_eq!(m(json!({"value": true})).evaluate(&doc).unwrap(), json!(true));
        let err = m(json!({"path": "$.body.id", "convert": "integer"})).evaluate(&doc).unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
        assert!(serde_json::from_value::<ValueMapping>(json!({"path": "$.a", "bogus": 1})).is_err());
    }

    #[test]
    fn allowed_origins_match_scheme_host_and_port_exactly() {
        let o = |v: Value| serde_json::from_value::<AllowedOrigin>(v).unwrap();
        let url = |s: &str| url::Url::parse(s).unwrap();
        let stripe = o(json!({"scheme": "https", "host": "api.stripe.com"}));
        assert!(stripe.permits(&url("https://api.stripe.com/v1/charges")));
        assert!(stripe.permits(&url("https://API.stripe.com:443/v1")));
        assert!(!stripe.permits(&url("http://api.stripe.com/v1")));
        assert!(!stripe.permits(&url("https://api.stripe.com:8443/v1")));
        assert!(!stripe.permits(&url("https://api.stripe.com.evil.io/v1")));
        let local = o(json!({"scheme": "http", "host": "127.0.0.1", "port": 12111}));
        assert!(local.permits(&url("http://127.0.0.1:12111/v1")));
        assert!(!local.permits(&url("http://127.0.0.1/v1")));
        let wild = o(json!({"scheme": "https", "host": "*.hooks.example.com"}));
        assert!(wild.permits(&url("https://a.hooks.example.com/x")));
        assert!(!wild.permits(&url("https://hooks.example.com/x")));
        assert!(!wild.permits(&url("https://evilhooks.example.com/x")));
    }

    #[test]
    fn response_document_shape() {
        let ok = ResponseDocument {
            status: Some(201),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-A".into(), "1".into()),
                ("x-a".into(), "2".into()),
            ],
            body: br#"{"id":"x"}"#.to_vec(),
            network_error: None,
            attempts: 2,
            completed_at: "2026-01-01T00:00:00Z".into(),
            signature: Some("v1,abc".into()),
            input: json!({"a": 1}),
            config: json!({}),
        };
        let doc = ok.to_json();
        assert_eq!(doc["status"], 201);
        assert_eq!(doc["success"], true);
        assert_eq!(doc["headers"]["x-a"], "1, 2");
        assert_eq!(doc["body"]["id"], "x");
        assert_eq!(doc["text"], r#"{"id":"x"}"#);
        assert_eq!(doc["signature"], "v1,abc");
        assert_eq!(doc["networkError"], Value::Null);

        let failed = ResponseDocument {
            status: None,
            body: "é".repeat(RESPONSE_TEXT_CHARS + 5).into_bytes(),
            network_error: Some(("timeout".into(), "slow".into())),
            ..ok
        }
        .to_json();
        assert_eq!(failed["status"], Value::Null);
        assert_eq!(failed["success"], false);
        assert_eq!(failed["body"], Value::Null, "not JSON");
        assert_eq!(failed["text"].as_str().unwrap().chars().count(), RESPONSE_TEXT_CHARS);
        assert_eq!(failed["networkError"]["kind"], "timeout");
    }

    #[test]
    fn typed_manifest_round_trips_through_serde() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/stripe.connector.json"));
        let manifest: Manifest = serde_json::from_str(text).unwrap();
        let again: Manifest = serde_json::from_value(serde_json::to_value(&manifest).unwrap()).unwrap();
        assert_eq!(manifest, again);
    }
}
