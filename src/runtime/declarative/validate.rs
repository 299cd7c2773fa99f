//! Validation of a manifest document against the contract it claims to implement.
//!
//! [`validate`] is the only way to obtain a [`ValidManifest`], so the build step, the registry and
//! the engine never handle a manifest that has not passed every rule below. It reports *all* the
//! problems it finds (except that a document whose shape is wrong stops at the first shape error,
//! as serde does), each with a JSON Pointer (RFC 6901) into the manifest and a message that says
//! what is wrong, so an author can fix everything in one round.
//!
//! Rules, beyond the JSON Schema shape ([`super::manifest_json_schema`]):
//!
//! * identity: `manifestVersion` is 1; `name` is a slug; `version` is semver without build
//!   metadata; `contract` is exactly the given contract;
//! * operations: every contract operation is implemented, and no other;
//! * templates parse, use only the allowed filters and tests, and read only `input.<field>`
//!   paths that exist in the operation's input schema (nested fields included) and `config.<key>`
//!   keys that exist in the manifest's `config` (plus the variables a place documents, such as
//!   `body` and `timestamp` in an HMAC payload);
//! * URLs: the scheme, host and port are static (literal, or one leading `{{ config.<key> }}`) and
//!   on the egress allow-list; `http` only for loopback hosts; an input-supplied URL names a string
//!   input field;
//! * responses: every output mapping names an output field, every required output field is
//!   mapped, value mappings are singular JSONPath queries, `when` conditions parse, error codes are
//!   cases of the contract's `error-code`;
//! * retries: 1 to 10 attempts, bounded backoffs, `maxRetryAfterMs` ≤ 60000, only 4xx/5xx statuses,
//!   and a POST or PATCH that may be retried after a network error, a 5xx or a provider hint must
//!   send an idempotency key — a non-idempotent request without a key is never retried;
//! * secrets: auth secret names are valid references; no string anywhere in the manifest looks like
//!   secret material (`sk_live_…`, `Bearer <token>`, private keys…); credentials go through `auth`
//!   only (`authorization` and friends are refused as plain headers).
//!
//! The content hash of a manifest is the SHA-256 of [`canonical_bytes`]: the RFC 8785 encoding of
//! the document as submitted, so formatting and key order do not change it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::manifest::{
    Auth, Body, ConfigValue, ErrorRule, Manifest, Method, Operation, Request, RetryPolicy, StatusPattern, UrlSpec,
    ValueMapping, MANIFEST_VERSION,
};
use super::template;
use crate::contracts::ContractSpec;
use crate::ids::{ContentHash, ImplementationId, ImplementationName, JsonPointer};
use crate::runtime::host::egress::RESERVED_HEADERS;

/// Most attempts a retry policy may allow.
pub const MAX_ATTEMPTS: u32 = 10;
/// Longest initial backoff, in milliseconds.
pub const MAX_INITIAL_BACKOFF_MS: u64 = 10_000;
/// Longest backoff and longest honoured `Retry-After`, in milliseconds.
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// Bounds of a request timeout, in milliseconds.
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    /// JSON Pointer (RFC 6901) to the offending value in the manifest; `""` is the whole document.
    pub path: String,
    /// What is wrong, and what is expected instead.
    pub message: String,
}

/// A manifest that passed [`validate`] against its contract.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidManifest {
    manifest: Manifest,
    document: Value,
    canonical: Vec<u8>,
    id: ImplementationId,
}

impl ValidManifest {
    /// The typed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The document as submitted.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// `name:version`, e.g. `stripe-charge-adapter:1.0.0`.
    pub fn implementation_id(&self) -> &ImplementationId {
        &self.id
    }

    /// SHA-256 of [`canonical_bytes`].
    pub fn content_hash(&self) -> ContentHash {
        ContentHash::of(&self.canonical)
    }

    /// The `config` block as the JSON object templates see.
    pub fn config_json(&self) -> Value {
        Value::Object(self.manifest.config.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
    }
}

/// The RFC 8785 (JCS) encoding of the manifest document, used for its content hash and signature.
pub fn canonical_bytes(manifest: &ValidManifest) -> Vec<u8> {
    manifest.canonical.clone()
}

/// Validates `manifest_json` as an implementation of `contract`.
pub fn validate(manifest_json: &Value, contract: &ContractSpec) -> Result<ValidManifest, Vec<ManifestError>> {
    let manifest: Manifest = match serde_path_to_error::deserialize(manifest_json) {
        Ok(m) => m,
        Err(e) => return Err(vec![shape_error(&e)]),
    };
    // serde accepts a struct written as an array of its field values; a manifest must use objects.
    match serde_json::to_value(&manifest) {
        Ok(typed) => {
            if let Some(error) = positional_form(&typed, manifest_json, "") {
                return Err(vec![error]);
            }
        }
        Err(e) => return Err(vec![err("", format!("the manifest cannot be re-encoded: {e}"))]),
    }
    let mut v = Validator { errors: Vec::new(), manifest: &manifest, contract };
    let id = v.identity();
    v.config();
    v.egress();
    v.auth();
    v.redaction();
    v.operations();
    secret_scan(manifest_json, "", &mut v.errors);
    let mut errors = v.errors;
    let canonical = match serde_json_canonicalizer::to_vec(manifest_json) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            errors.push(err("", format!("the document cannot be canonicalized (RFC 8785): {e}")));
            None
        }
    };
    match (errors.is_empty(), id, canonical) {
        (true, Some(id), Some(canonical)) => {
            Ok(ValidManifest { manifest, document: manifest_json.clone(), canonical, id })
        }
        _ => Err(errors),
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError { path: path.into(), message: message.into() }
}

/// Appends reference tokens to a JSON Pointer, escaping `~` and `/`.
fn ptr(base: &str, tokens: &[&str]) -> String {
    let mut out = base.to_string();
    for t in tokens {
        out.push('/');
        out.push_str(&JsonPointer::escape_token(t));
    }
    out
}

fn shape_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ManifestError {
    let mut tokens: Vec<String> = Vec::new();
    for segment in e.path().iter() {
        match segment {
            serde_path_to_error::Segment::Map { key } => tokens.push(key.clone()),
            serde_path_to_error::Segment::Seq { index } => tokens.push(index.to_string()),
            // No manifest enum is externally tagged, so a variant name is never a key of the document.
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    let message = e.inner().to_string();
    // serde reports an unknown field at the object holding it; point at the field itself.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, _)) = rest.split_once('`') {
            if tokens.last().map(String::as_str) != Some(field) {
                tokens.push(field.to_string());
            }
        }
    }
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    err(ptr("", &refs), message)
}

/// Finds a place where the document uses an array for what the typed manifest encodes as an
/// object (serde's positional form of structs and tagged enums), comparing the two trees.
fn positional_form(typed: &Value, original: &Value, path: &str) -> Option<ManifestError> {
    match (typed, original) {
        (Value::Object(t), Value::Object(o)) => {
            t.iter().find_map(|(k, tv)| o.get(k).and_then(|ov| positional_form(tv, ov, &ptr(path, &[k]))))
        }
        (Value::Object(_), _) => Some(err(path, "invalid type: expected an object with named fields")),
        (Value::Array(t), Value::Array(o)) => {
            t.iter().zip(o).enumerate().find_map(|(i, (tv, ov))| positional_form(tv, ov, &ptr(path, &[&i.to_string()])))
        }
        _ => None,
    }
}

/// RFC 9110 `token` (header names).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Secret references: the same slug rule as implementation names.
fn is_secret_name(s: &str) -> bool {
    s.parse::<ImplementationName>().is_ok()
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

/// Where a template is and which variables it may read.
struct Scope<'a> {
    /// Input schema of the operation, which `input.*` paths must exist in.
    input: &'a Value,
    /// Extra top-level variables allowed (no attributes), e.g. `body`.
    extra: &'a [&'a str],
}

/// The schema of property `name` of `schema`, looking through `anyOf`/`oneOf`/`allOf` (options).
fn schema_property<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    ["anyOf", "oneOf", "allOf"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| schema_property(branch, name))
}

/// Whether `schema` (or one of its option branches) has JSON type `ty`.
fn schema_has_type(schema: &Value, ty: &str) -> bool {
    schema.get("type").and_then(Value::as_str) == Some(ty)
        || ["anyOf", "oneOf"]
            .iter()
            .filter_map(|k| schema.get(*k).and_then(Value::as_array))
            .flatten()
            .any(|b| schema_has_type(b, ty))
}

/// Resolves a JSON Pointer against a schema: property names, `*` for array items, digits for
/// tuple positions; options are looked through.
fn schema_at_pointer<'a>(schema: &'a Value, pointer: &JsonPointer) -> Option<&'a Value> {
    let mut current = schema;
    for token in pointer.tokens() {
        current = if token == "*" {
            array_items(current)?
        } else if let Some(p) = schema_property(current, token) {
            p
        } else {
            let index: usize = token.parse().ok()?;
            tuple_item(current, index)?
        };
    }
    Some(current)
}

fn array_items(schema: &Value) -> Option<&Value> {
    schema.get("items").or_else(|| {
        ["anyOf", "oneOf"]
            .iter()
            .filter_map(|k| schema.get(*k).and_then(Value::as_array))
            .flatten()
            .find_map(array_items)
    })
}

fn tuple_item(schema: &Value, index: usize) -> Option<&Value> {
    schema.get("prefixItems").and_then(|p| p.get(index)).or_else(|| {
        ["anyOf", "oneOf"]
            .iter()
            .filter_map(|k| schema.get(*k).and_then(Value::as_array))
            .flatten()
            .find_map(|b| tuple_item(b, index))
    })
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

struct Validator<'a> {
    errors: Vec<ManifestError>,
    manifest: &'a Manifest,
    contract: &'a ContractSpec,
}

impl Validator<'_> {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(err(path, message));
    }

    fn identity(&mut self) -> Option<ImplementationId> {
        let m = self.manifest;
        if m.manifest_version != MANIFEST_VERSION {
            self.push(
                "/manifestVersion",
                format!(
                    "manifest version {} is not supported; this registry reads version {MANIFEST_VERSION}",
                    m.manifest_version
                ),
            );
        }
        let name = match m.name.parse::<ImplementationName>() {
            Ok(name) => Some(name),
            Err(e) => {
                self.push("/name", format!("{e}; use a slug such as `stripe-charge-adapter`"));
                None
            }
        };
        let version = match semver::Version::parse(&m.version) {
            Ok(v) if !v.build.is_empty() => {
                self.push("/version", format!("version `{}` has build metadata (+…), which is not allowed", m.version));
                None
            }
            Ok(v) => Some(v),
            Err(e) => {
                self.push("/version", format!("version `{}` is not a semantic version such as 1.0.0: {e}", m.version));
                None
            }
        };
        if m.contract.kind != self.contract.kind {
            self.push(
                "/contract/kind",
                format!(
                    "the manifest declares contract kind `{}` but is validated against `{}`",
                    m.contract.kind, self.contract.kind
                ),
            );
        }
        if m.contract.major_version != self.contract.major_version {
            self.push(
                "/contract/majorVersion",
                format!(
                    "the manifest declares major version {} but the contract is {}",
                    m.contract.major_version,
                    self.contract.id()
                ),
            );
        }
        Some(ImplementationId { name: name?, version: version? })
    }

    fn config(&mut self) {
        for (key, value) in &self.manifest.config {
            let path = ptr("/config", &[key]);
            let mut chars = key.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_alphanumeric());
            if !ok || key.len() > 64 {
                self.push(&path, format!("config key `{key}` must be a lowerCamelCase identifier ([a-z][A-Za-z0-9]*, at most 64 characters)"));
            }
            if let ConfigValue::String(s) = value {
                if s.len() > 2048 || has_control(s) {
                    self.push(&path, "config strings must be at most 2048 characters without control characters");
                }
            }
        }
    }

    fn egress(&mut self) {
        let mut seen = BTreeSet::new();
        if self.manifest.egress.allow.is_empty() {
            self.push("/egress/allow", "the allow-list is empty; name at least one origin the connector calls");
        }
        for (i, origin) in self.manifest.egress.allow.iter().enumerate() {
            let path = ptr("/egress/allow", &[&i.to_string()]);
            let host = origin.host.as_str();
            let (wildcard, bare) = match host.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, host),
            };
            let host_ok = bare == bare.to_ascii_lowercase()
                && !bare.is_empty()
                && match url::Host::parse(bare) {
                    Ok(url::Host::Domain(d)) => d == bare && (!wildcard || d.contains('.')),
                    Ok(url::Host::Ipv4(ip)) => !wildcard && ip.to_string() == bare,
                    Ok(url::Host::Ipv6(ip)) => !wildcard && format!("[{ip}]") == bare,
                    Err(_) => false,
                };
            if !host_ok {
                self.push(
                    ptr(&path, &["host"]),
                    format!("`{host}` is not a lowercase host name or a canonical IP address (IPv6 in brackets; a wildcard is `*.` followed by a domain with at least two labels)"),
                );
            }
            if origin.scheme == super::manifest::Scheme::Http && !is_loopback(bare) {
                self.push(
                    ptr(&path, &["scheme"]),
                    format!("plain http is only allowed for loopback hosts, not `{host}`; use https"),
                );
            }
            if origin.port == Some(0) {
                self.push(ptr(&path, &["port"]), "port 0 is not a valid port");
            }
            if !seen.insert((origin.scheme.as_str(), host, origin.port)) {
                self.push(&path, "duplicate allow-list entry");
            }
        }
    }

    fn auth(&mut self) {
        let Some(auth) = &self.manifest.auth else { return };
        for (field, name) in auth.secret_names() {
            if !is_secret_name(name) {
                self.push(
                    ptr("/auth", &[field]),
                    format!("`{name}` is not a valid secret name: use a slug such as `stripe-secret-key` (1 to 63 of [a-z0-9-]); put the value in the secret store, never in the manifest"),
                );
            }
        }
        for (field, name) in auth.header_names() {
            if field != "type" && !is_token(name) {
                self.push(ptr("/auth", &[field]), format!("`{name}` is not a valid header name"));
            } else if field != "type" && RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                self.push(
                    ptr("/auth", &[field]),
                    format!("header `{name}` is reserved; use the `bearer` or `basic` auth type"),
                );
            }
        }
        match auth {
            Auth::Basic(b) => {
                if b.username.is_empty() || b.username.contains(':') || has_control(&b.username) {
                    self.push("/auth/username", "the user name must be non-empty, without ':' or control characters");
                }
            }
            Auth::ApiKeyHeader(a) => {
                if a.prefix.as_deref().is_some_and(has_control) {
                    self.push("/auth/prefix", "the prefix must not contain control characters");
                }
            }
            Auth::Hmac(h) => {
                if h.prefix.as_deref().is_some_and(has_control) {
                    self.push("/auth/prefix", "the prefix must not contain control characters");
                }
                let ops: Vec<_> = self.contract.operations.iter().collect();
                if let Some(payload) = &h.signed_payload {
                    for op in &ops {
                        let scope = Scope { input: &op.input_schema, extra: &["body", "timestamp"] };
                        if !self.template("/auth/signedPayload", payload, &scope, &op.name) {
                            break;
                        }
                    }
                }
                if let Some(field) = &h.secret_from_input {
                    for op in &ops {
                        match schema_property(&op.input_schema, field) {
                            Some(s) if schema_has_type(s, "string") => {}
                            _ => {
                                self.push(
                                    "/auth/secretFromInput",
                                    format!("`{field}` is not a string field of the input of operation `{}`", op.name),
                                );
                                break;
                            }
                        }
                    }
                }
            }
            Auth::Bearer(_) => {}
        }
    }

    fn redaction(&mut self) {
        let r = &self.manifest.redaction;
        for (i, h) in r.headers.iter().enumerate() {
            if !is_token(h) {
                self.push(ptr("/redaction/headers", &[&i.to_string()]), format!("`{h}` is not a valid header name"));
            }
        }
        let lists = [("inputPointers", &r.input_pointers, true), ("outputPointers", &r.output_pointers, false)];
        for (field, pointers, input) in lists {
            for (i, p) in pointers.iter().enumerate() {
                let path = ptr("/redaction", &[field, &i.to_string()]);
                let pointer = match JsonPointer::parse(p) {
                    Ok(pointer) if !pointer.is_root() => pointer,
                    _ => {
                        self.push(path, format!("`{p}` is not a JSON Pointer such as `/source`"));
                        continue;
                    }
                };
                let found = self.contract.operations.iter().any(|op| {
                    let schema = if input { &op.input_schema } else { &op.output_schema };
                    schema_at_pointer(schema, &pointer).is_some()
                });
                if !found {
                    let what = if input { "input" } else { "output" };
                    self.push(
                        path,
                        format!("`{p}` does not point into the {what} of any operation of {}", self.contract.id()),
                    );
                }
            }
        }
    }

    fn operations(&mut self) {
        let ops = &self.manifest.operations;
        for op in &self.contract.operations {
            if !ops.contains_key(&op.name) {
                self.push(
                    "/operations",
                    format!(
                        "operation `{}` of {} is missing; every contract operation must be implemented",
                        op.name,
                        self.contract.id()
                    ),
                );
            }
        }
        for (name, op) in ops {
            let path = ptr("/operations", &[name]);
            match self.contract.operation(name) {
                None => {
                    let known: Vec<&str> = self.contract.operations.iter().map(|o| o.name.as_str()).collect();
                    self.push(
                        path,
                        format!("{} has no operation `{name}` (it has: {})", self.contract.id(), known.join(", ")),
                    );
                }
                Some(spec) => self.operation(&path, op, spec),
            }
        }
    }

    /// Checks one template; returns whether it was valid.
    fn template(&mut self, path: &str, source: &str, scope: &Scope, op: &str) -> bool {
        let vars = match template::referenced_variables(source) {
            Ok(vars) => vars,
            Err(e) => {
                self.push(path, e.to_string());
                return false;
            }
        };
        let before = self.errors.len();
        for var in vars {
            let mut parts = var.split('.');
            let root = parts.next().unwrap_or_default();
            let rest: Vec<&str> = parts.collect();
            match root {
                "input" => {
                    if rest.is_empty() {
                        self.push(path, "refer to input fields (`input.amount`), not to `input` as a whole");
                        continue;
                    }
                    let mut current = scope.input;
                    for (depth, field) in rest.iter().enumerate() {
                        match schema_property(current, field) {
                            Some(next) => current = next,
                            None => {
                                let at = format!("input.{}", rest[..=depth].join("."));
                                self.push(path, format!("`{at}` is not a field of the input of operation `{op}`"));
                                break;
                            }
                        }
                    }
                }
                "config" => match rest.as_slice() {
                    [key] if self.manifest.config.contains_key(*key) => {}
                    [key] => self.push(path, format!("`config.{key}` is not defined in the manifest's `config`")),
                    _ => self.push(path, format!("`{var}`: refer to a config value as `config.<key>`")),
                },
                name if scope.extra.contains(&name) && rest.is_empty() => {}
                _ => {
                    let mut allowed = vec!["input.<field>", "config.<key>"];
                    allowed.extend(scope.extra.iter().copied());
                    self.push(
                        path,
                        format!("unknown variable `{var}`; a template here may read {}", allowed.join(", ")),
                    );
                }
            }
        }
        self.errors.len() == before
    }

    /// Checks every string leaf of a JSON template.
    fn json_template(&mut self, path: &str, value: &Value, scope: &Scope, op: &str) {
        match value {
            Value::String(s) => {
                self.template(path, s, scope, op);
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.json_template(&ptr(path, &[&i.to_string()]), item, scope, op);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    self.json_template(&ptr(path, &[k]), item, scope, op);
                }
            }
            _ => {}
        }
    }

    fn single_expression(&mut self, path: &str, source: &str, scope: &Scope, op: &str) {
        if template::single_expression(source).is_none() {
            self.push(path, "must be a single `{{ expression }}`");
        } else {
            self.template(path, source, scope, op);
        }
    }

    fn operation(&mut self, path: &str, op: &Operation, spec: &crate::contracts::OperationSpec) {
        let scope = Scope { input: &spec.input_schema, extra: &[] };
        let mut own_headers: Vec<(String, String)> = Vec::new();
        if let Some(auth) = &self.manifest.auth {
            for (field, name) in auth.header_names() {
                own_headers.push((name.to_ascii_lowercase(), format!("/auth/{field}")));
            }
        }
        if let Some(idem) = &op.idempotency {
            let ipath = ptr(path, &["idempotency"]);
            if !is_token(&idem.header) {
                self.push(ptr(&ipath, &["header"]), format!("`{}` is not a valid header name", idem.header));
            } else if RESERVED_HEADERS.contains(&idem.header.to_ascii_lowercase().as_str()) {
                self.push(ptr(&ipath, &["header"]), format!("header `{}` is reserved", idem.header));
            } else if let Some((_, owner)) = own_headers.iter().find(|(h, _)| *h == idem.header.to_ascii_lowercase()) {
                self.push(ptr(&ipath, &["header"]), format!("header `{}` is already set by {owner}", idem.header));
            }
            self.template(&ptr(&ipath, &["value"]), &idem.value, &scope, &spec.name);
            own_headers.push((idem.header.to_ascii_lowercase(), ipath));
        }
        self.request(&ptr(path, &["request"]), &op.request, &scope, &spec.name, &own_headers);
        if let Some(retry) = &op.retry {
            self.retry(&ptr(path, &["retry"]), retry, &scope, &spec.name);
            let risky = retry.max_attempts > 1
                && (retry.retry_on_network_error || retry.retries_server_errors() || retry.retry_hint_header.is_some());
            if risky && !op.request.method.is_idempotent() && op.idempotency.is_none() {
                self.push(
                    ptr(path, &["retry"]),
                    format!(
                        "a {} may be retried after a network error, a 5xx or a provider hint, but the operation sends no idempotency key: the provider could execute it twice. Add `idempotency` or set `maxAttempts` to 1",
                        op.request.method.as_str()
                    ),
                );
            }
        }
        self.response(&ptr(path, &["response"]), op, spec);
        let codes: Vec<&str> = spec
            .error_schema
            .get("properties")
            .and_then(|p| p.get("code"))
            .and_then(|c| c.get("enum"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (i, rule) in op.errors.iter().enumerate() {
            self.error_rule(&ptr(path, &["errors", &i.to_string()]), rule, &codes);
        }
    }

    fn header_name(&mut self, path: &str, name: &str, own: &[(String, String)], has_body: bool) {
        let lower = name.to_ascii_lowercase();
        if !is_token(name) {
            self.push(path, format!("`{name}` is not a valid header name"));
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            self.push(
                path,
                format!("header `{name}` may not be set by a manifest: credentials go in `auth` (with a secret name), and the host sets the others"),
            );
        } else if lower == "content-type" && has_body {
            self.push(path, "`content-type` follows from the body's encoding (or `contentType` of a text body)");
        } else if let Some((_, owner)) = own.iter().find(|(h, _)| *h == lower) {
            self.push(path, format!("header `{name}` is already set by {owner}"));
        }
    }

    fn request(&mut self, path: &str, req: &Request, scope: &Scope, op: &str, own: &[(String, String)]) {
        let upath = ptr(path, &["url"]);
        match &req.url {
            UrlSpec::Template(t) => {
                if self.template(&upath, t, scope, op) {
                    self.url_origin(&upath, t);
                }
            }
            UrlSpec::FromInput(f) => {
                let field_ok =
                    schema_property(scope.input, &f.from_input).is_some_and(|s| schema_has_type(s, "string"));
                if !field_ok {
                    self.push(
                        ptr(&upath, &["fromInput"]),
                        format!("`{}` is not a string field of the input of operation `{op}`", f.from_input),
                    );
                }
            }
        }
        for (name, value) in &req.headers {
            let hpath = ptr(path, &["headers", name]);
            self.header_name(&hpath, name, own, req.body.is_some());
            if has_control(value) {
                self.push(&hpath, "a header value may not contain line breaks or other control characters");
            }
            self.template(&hpath, value, scope, op);
        }
        for (name, value) in &req.query {
            let qpath = ptr(path, &["query", name]);
            if name.is_empty() {
                self.push(&qpath, "a query parameter needs a name");
            }
            self.template(&qpath, value, scope, op);
        }
        if let Some(extra) = &req.extra_headers {
            self.single_expression(&ptr(path, &["extraHeaders"]), extra, scope, op);
        }
        if let Some(body) = &req.body {
            let bpath = ptr(path, &["body"]);
            match body {
                Body::Json(j) => self.json_template(&ptr(&bpath, &["template"]), &j.template, scope, op),
                Body::Form(f) => {
                    for (name, value) in &f.fields {
                        let fpath = ptr(&bpath, &["fields", name]);
                        if name.is_empty() {
                            self.push(&fpath, "a form field needs a name");
                        }
                        self.json_template(&fpath, value, scope, op);
                    }
                }
                Body::Text(t) => {
                    let ct = t.content_type.as_str();
                    let valid =
                        ct.split_once('/').is_some_and(|(a, b)| is_token(a) && !b.is_empty()) && !has_control(ct);
                    if !valid {
                        self.push(
                            ptr(&bpath, &["contentType"]),
                            format!("`{ct}` is not a media type such as `application/json`"),
                        );
                    }
                    self.template(&ptr(&bpath, &["template"]), &t.template, scope, op);
                }
            }
            if req.method == Method::Get || req.method == Method::Head {
                self.push(&bpath, format!("a {} request has no body", req.method.as_str()));
            }
        }
        if let Some(ms) = req.timeout_ms {
            if !TIMEOUT_RANGE_MS.contains(&ms) {
                self.push(
                    ptr(path, &["timeoutMs"]),
                    format!("timeout {ms} ms is outside {}..={} ms", TIMEOUT_RANGE_MS.start(), TIMEOUT_RANGE_MS.end()),
                );
            }
        }
    }

    /// Checks that a URL template has a static origin on the allow-list.
    fn url_origin(&mut self, path: &str, source: &str) {
        let origin = match static_origin(source, &self.manifest.config) {
            Ok(origin) => origin,
            Err(message) => return self.push(path, message),
        };
        if !self.manifest.egress.permits(&origin) {
            self.push(
                path,
                format!(
                    "the URL targets `{}`, which is not on the egress allow-list (/egress/allow)",
                    describe_origin(&origin)
                ),
            );
        }
    }

    fn retry(&mut self, path: &str, r: &RetryPolicy, scope: &Scope, op: &str) {
        if !(1..=MAX_ATTEMPTS).contains(&r.max_attempts) {
            self.push(
                ptr(path, &["maxAttempts"]),
                format!("maxAttempts must be 1 to {MAX_ATTEMPTS}, not {}", r.max_attempts),
            );
        }
        if r.initial_backoff_ms > MAX_INITIAL_BACKOFF_MS {
            self.push(
                ptr(path, &["initialBackoffMs"]),
                format!("initialBackoffMs must be at most {MAX_INITIAL_BACKOFF_MS}"),
            );
        }
        if r.max_backoff_ms > MAX_BACKOFF_MS || r.max_backoff_ms < r.initial_backoff_ms {
            self.push(
                ptr(path, &["maxBackoffMs"]),
                format!("maxBackoffMs must be between initialBackoffMs and {MAX_BACKOFF_MS}"),
            );
        }
        if !(r.multiplier.is_finite() && (1.0..=10.0).contains(&r.multiplier)) {
            self.push(ptr(path, &["multiplier"]), "multiplier must be between 1.0 and 10.0");
        }
        if r.max_retry_after_ms > MAX_BACKOFF_MS {
            self.push(ptr(path, &["maxRetryAfterMs"]), format!("maxRetryAfterMs must be at most {MAX_BACKOFF_MS}"));
        }
        for (i, p) in r.retry_on_status.iter().enumerate() {
            if !(400..=599).any(|s| p.matches(s)) {
                self.push(ptr(path, &["retryOnStatus", &i.to_string()]), "only 4xx and 5xx responses can be retried");
            }
        }
        if let Some(h) = &r.retry_hint_header {
            if !is_token(h) {
                self.push(ptr(path, &["retryHintHeader"]), format!("`{h}` is not a valid header name"));
            }
        }
        if let Some(t) = &r.requested_attempts {
            self.single_expression(&ptr(path, &["requestedAttempts"]), t, scope, op);
        }
    }

    fn response(&mut self, path: &str, op: &Operation, spec: &crate::contracts::OperationSpec) {
        let resp = &op.response;
        if resp.success_status.is_empty() {
            self.push(
                ptr(path, &["successStatus"]),
                "list at least one status whose response is the operation's result",
            );
        }
        let properties = spec.output_schema.get("properties").and_then(Value::as_object);
        for (field, mapping) in &resp.output {
            let fpath = ptr(path, &["output", field]);
            if !properties.is_some_and(|p| p.contains_key(field)) {
                let known: Vec<&str> = properties.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                self.push(
                    &fpath,
                    format!(
                        "`{field}` is not a field of the output of operation `{}` (fields: {})",
                        spec.name,
                        known.join(", ")
                    ),
                );
            }
            self.mapping(&fpath, mapping);
        }
        let required = spec
            .output_schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        for field in required {
            if !resp.output.contains_key(field) {
                self.push(
                    ptr(path, &["output"]),
                    format!("required output field `{field}` of operation `{}` is not mapped", spec.name),
                );
            }
        }
    }

    fn mapping(&mut self, path: &str, mapping: &ValueMapping) {
        match mapping {
            ValueMapping::Path(p) => self.singular_path(path, p),
            ValueMapping::Rule(rule) => match (&rule.path, &rule.value) {
                (Some(p), None) => self.singular_path(&ptr(path, &["path"]), p),
                (None, Some(_)) => {
                    if rule.default.is_some() || rule.convert.is_some() || !rule.values.is_empty() {
                        self.push(path, "a constant `value` takes no `default`, `convert` or `values`");
                    }
                }
                _ => self.push(path, "a mapping rule needs exactly one of `path` and `value`"),
            },
        }
    }

    fn singular_path(&mut self, path: &str, p: &str) {
        if let Err(e) = template::parse_json_path(p) {
            self.push(path, e.to_string());
        } else if !template::is_singular_query(p) {
            self.push(
                path,
                format!("`{p}` may select several values; a mapping needs a singular query (names and indexes only, e.g. `$.body.data[0].id`)"),
            );
        }
    }

    fn error_rule(&mut self, path: &str, rule: &ErrorRule, codes: &[&str]) {
        if !codes.contains(&rule.code.as_str()) {
            self.push(
                ptr(path, &["code"]),
                format!(
                    "`{}` is not an error code of {}; use one of: {}",
                    rule.code,
                    self.contract.id(),
                    codes.join(", ")
                ),
            );
        }
        if rule.on_network_error && !rule.status.is_empty() {
            self.push(ptr(path, &["status"]), "a rule for network errors matches no status; remove `status`");
        }
        if let Some(when) = &rule.when {
            if let Err(e) = template::parse_json_path(when) {
                self.push(ptr(path, &["when"]), e.to_string());
            }
        }
        if let Some(m) = &rule.message {
            self.mapping(&ptr(path, &["message"]), m);
        }
        if let Some(m) = &rule.provider_code {
            self.mapping(&ptr(path, &["providerCode"]), m);
        }
        for (key, m) in &rule.details {
            let dpath = ptr(path, &["details", key]);
            if key.is_empty() {
                self.push(&dpath, "a detail needs a key");
            }
            self.mapping(&dpath, m);
        }
        for (i, p) in rule.status.iter().enumerate() {
            if matches!(p, StatusPattern::Code(c) if *c < 300) || matches!(p, StatusPattern::Class(_) if p.matches(200))
            {
                self.push(
                    ptr(path, &["status", &i.to_string()]),
                    "a 1xx or 2xx status is not an error; use `response.successStatus`",
                );
            }
        }
    }
}

fn describe_origin(url: &url::Url) -> String {
    match url.port() {
        Some(p) => format!("{}://{}:{p}", url.scheme(), url.host_str().unwrap_or_default()),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
    }
}

/// The static origin of a URL template (see [`UrlSpec::Template`]), as a parsed URL.
fn static_origin(source: &str, config: &BTreeMap<String, ConfigValue>) -> Result<url::Url, String> {
    // `base` holds the scheme and authority; `templated_after` says whether template code follows
    // it directly (so an unterminated authority would be completed by a template).
    let (base, templated_after) = if source.starts_with("{{") {
        let end = source.find("}}").ok_or("unterminated `{{`")?;
        let inner = source[2..end].trim_matches(['-', '+']).trim();
        let key =
            inner.strip_prefix("config.").filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
        let Some(key) = key else {
            return Err(format!(
                "the URL's scheme and host must be static: start it with `https://host/` or with `{{{{ config.<key> }}}}`, not `{{{{ {inner} }}}}`"
            ));
        };
        let base = match config.get(key) {
            Some(ConfigValue::String(s)) => s.clone(),
            _ => {
                return Err(format!(
                    "`config.{key}` must be a string holding an absolute URL such as `https://api.example.com`"
                ))
            }
        };
        let rest = &source[end + 2..];
        if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
            return Err(format!(
                "the URL's host must be static: after `{{{{ config.{key} }}}}` the template must continue with `/` or `?`, not `{}`",
                rest.chars().take(20).collect::<String>()
            ));
        }
        (base, false)
    } else {
        let code = ["{{", "{%", "{#"].iter().filter_map(|m| source.find(m)).min();
        let literal_end = code.unwrap_or(source.len());
        (source[..literal_end].to_string(), code.is_some())
    };
    let Some((scheme, after)) = base.split_once("://") else {
        return Err(format!("`{}` is not an absolute https URL", base.chars().take(80).collect::<String>()));
    };
    let authority_end = after.find(['/', '?', '#', '\\']);
    if authority_end.is_none() && templated_after {
        return Err(
            "the URL's host must be static: a template in the host or port would let input choose where requests go"
                .into(),
        );
    }
    let authority = &after[..authority_end.unwrap_or(after.len())];
    if after[authority.len()..].starts_with('\\') {
        return Err("backslashes are not allowed in a URL".into());
    }
    if authority.contains('@') {
        return Err("the URL must not carry user info (`user:password@`); use `auth`".into());
    }
    if scheme != "https" && scheme != "http" {
        return Err(format!("scheme `{scheme}` is not allowed; use https"));
    }
    let origin = url::Url::parse(&format!("{scheme}://{authority}/"))
        .map_err(|e| format!("invalid URL origin `{scheme}://{authority}`: {e}"))?;
    if origin.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(origin)
}

/// Prefixes of well-known secret formats. A string containing one is refused.
const SECRET_PREFIXES: &[(&str, &str)] = &[
    ("sk_live_", "a Stripe live secret key"),
    ("sk_test_", "a Stripe test secret key"),
    ("rk_live_", "a Stripe restricted key"),
    ("rk_test_", "a Stripe restricted key"),
    ("whsec_", "a webhook signing secret"),
    ("xoxb-", "a Slack token"),
    ("xoxp-", "a Slack token"),
    ("ghp_", "a GitHub token"),
    ("github_pat_", "a GitHub token"),
    ("glpat-", "a GitLab token"),
    ("-----BEGIN", "a PEM key or certificate"),
];

/// Why `s` looks like secret material, if it does.
fn looks_like_secret(s: &str) -> Option<String> {
    for (prefix, what) in SECRET_PREFIXES {
        if s.contains(prefix) {
            return Some(format!("it contains `{prefix}`, which looks like {what}"));
        }
    }
    let bytes = s.as_bytes();
    for i in 0..bytes.len().saturating_sub(19) {
        let w = &bytes[i..i + 20];
        if (w.starts_with(b"AKIA") || w.starts_with(b"ASIA"))
            && w[4..].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            && bytes.get(i + 20).is_none_or(|b| !b.is_ascii_alphanumeric())
        {
            return Some("it contains what looks like an AWS access key id".into());
        }
    }
    let lower = s.to_ascii_lowercase();
    for scheme in ["bearer", "basic"] {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(scheme) {
            let start = from + pos;
            from = start + scheme.len();
            let boundary = lower[..start].chars().next_back().is_none_or(|c| !c.is_ascii_alphanumeric());
            let after = &s[from..];
            let trimmed = after.trim_start_matches([' ', '\t']);
            if !boundary || trimmed.len() == after.len() {
                continue;
            }
            let token: String =
                trimmed.chars().take_while(|c| c.is_ascii_alphanumeric() || "-._~+/=:".contains(*c)).collect();
            if looks_random(&token) {
                return Some(format!(
                    "it contains a literal `{} <credential>`; credentials go in `auth` as a secret name",
                    &s[start..from]
                ));
            }
        }
    }
    None
}

/// Whether a word after `Bearer`/`Basic` looks like a credential rather than prose ("bearer
/// authentication"): at least 8 characters with a digit, several capitals among lowercase
/// letters (base64), or base64/token punctuation.
fn looks_random(token: &str) -> bool {
    let upper = token.chars().filter(char::is_ascii_uppercase).count();
    let lower = token.chars().filter(char::is_ascii_lowercase).count();
    token.len() >= 8
        && (token.chars().any(|c| c.is_ascii_digit())
            || (upper >= 2 && lower >= 2)
            || token.chars().any(|c| "+/=_-.~:".contains(c)))
}

/// Refuses strings (and object keys) that look like secret material, anywhere in the document.
fn secret_scan(value: &Value, path: &str, errors: &mut Vec<ManifestError>) {
    let refuse = |errors: &mut Vec<ManifestError>, path: String, why: String| {
        errors.push(err(path, format!("this looks like a raw secret: {why}. A manifest must not contain secret values; reference a host-held secret by name in `auth`")));
    };
    match value {
        Value::String(s) => {
            if let Some(why) = looks_like_secret(s) {
                refuse(errors, path.to_string(), why);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                secret_scan(item, &ptr(path, &[&i.to_string()]), errors);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let child = ptr(path, &[k]);
                if let Some(why) = looks_like_secret(k) {
                    refuse(errors, child.clone(), why);
                }
                secret_scan(item, &child, errors);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
