//! The invocation host: runs one operation of one implementation under the host services.
//!
//! It implements [`StepHost`] for the adapter (plans are validated against the implementation's
//! allow-list when they are built; logs and spans are redacted before they are kept), executes each
//! plan through the egress executor with auth attached from the secrets service at send time, and
//! records everything the implementation learned from outside (exchanges, time readings) so an
//! invocation can be audited and replayed.

use std::sync::Arc;

use serde::Serialize;

use super::adapter::{
    AdapterError, EgressAuth, Exchange, ExchangeOutcome, LoopError, MemoryAnswer, MemoryCall, MemoryEntry,
    MemoryFailure, PlanRefusal, PlanRequest, SecretInfo, StepHost,
};
use super::host::clock::Clock;
use super::host::egress::{
    AllowList, AttachAuth, EgressError, EgressPlan, EgressRequest, Executor, Method, PlanLimits, RetryPolicy, Sleeper,
};
use super::host::memory::{MemoryError, MemoryStore, Scope};
use super::host::secrets::{PinnedSecrets, SecretStore};
use super::redaction::Redactor;
use crate::ids::ProjectId;

/// The host services an invocation runs with.
pub struct HostServices {
    pub secrets: Arc<SecretStore>,
    pub memory: Arc<dyn MemoryStore>,
    pub executor: Executor,
    pub clock: Arc<dyn Clock>,
    pub sleeper: Arc<dyn Sleeper>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    pub level: String,
    pub message: String,
    pub fields: serde_json::Value,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanRecord {
    pub name: String,
    pub attributes: serde_json::Value,
    pub at_ms: u64,
}

/// What one egress plan did, as kept for audit (bodies redacted).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRecord {
    pub plan: u64,
    pub method: String,
    /// The URL without query string.
    pub url: String,
    pub attempts: u32,
    pub status: Option<u16>,
    pub stop: String,
}

/// Everything an invocation produced besides its outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    pub logs: Vec<LogRecord>,
    pub spans: Vec<SpanRecord>,
    pub egress: Vec<EgressRecord>,
    /// Egress the host refused (plans to hosts outside the allow-list, redirects off it, blocked
    /// addresses), with the reason.
    pub refused_plans: Vec<String>,
    /// Time readings handed to the implementation, in order (for replay).
    pub time_readings: Vec<u64>,
    /// Plans sent with a credential the host placed in the request (bearer, basic, header).
    pub credential_plans: u32,
    /// Every other answer the host gave (memory, MACs, secret metadata), in order (for replay).
    pub tape: Vec<TapeEntry>,
    /// What the implementation emitted into logs and spans *before* redaction. Kept in memory only
    /// when an audit asks for it (conformance scans it: redaction hides a leak, it does not excuse
    /// it); never serialized.
    #[serde(skip)]
    pub raw_emissions: Vec<String>,
}

/// One answer the host handed an implementation, recorded for replay.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "call")]
pub enum TapeEntry {
    Memory { request: MemoryCall, answer: Result<MemoryAnswer, MemoryFailure> },
    Hmac { secret: String, answer: Result<Vec<u8>, String> },
    SecretMetadata { secret: String, answer: Result<SecretInfo, String> },
}

struct Planned {
    plan: EgressPlan,
    auth: Option<EgressAuth>,
    retry: RetryPolicy,
}

/// The per-invocation host.
pub struct InvocationHost<'a> {
    services: &'a HostServices,
    project: ProjectId,
    allow: AllowList,
    redactor: Redactor,
    plans: Vec<Planned>,
    /// Conformance runs send every plan to the host-controlled upstream instead (after checking the
    /// plan's real destination against `allow`).
    redirect: Option<(url::Url, AllowList)>,
    sleeper: Arc<dyn Sleeper>,
    /// Capabilities this invocation holds (`secret:<name>`, …); everything else is denied.
    grants: std::collections::BTreeSet<String>,
    /// Whose memory the Memory* imports reach; none means memory is denied.
    memory_scope: Option<Scope>,
    /// The secret versions this invocation reads.
    pinned: PinnedSecrets,
    keep_raw_emissions: bool,
    pub trace: Trace,
}

impl<'a> InvocationHost<'a> {
    /// `redactor` covers the secrets this invocation may use and the sensitive input values.
    pub fn new(services: &'a HostServices, project: ProjectId, allow: AllowList, redactor: Redactor) -> Self {
        let sleeper = services.sleeper.clone();
        Self {
            services,
            project,
            allow,
            redactor,
            plans: Vec::new(),
            redirect: None,
            sleeper,
            grants: Default::default(),
            memory_scope: None,
            pinned: PinnedSecrets::default(),
            keep_raw_emissions: false,
            trace: Trace::default(),
        }
    }

    /// Grants capabilities (`secret:<name>` for each secret the published artifact declares).
    pub fn with_grants(mut self, grants: impl IntoIterator<Item = String>) -> Self {
        self.grants.extend(grants);
        self
    }

    /// Gives the Memory* imports the memory of (project, implementation).
    pub fn with_memory(mut self, scope: Scope) -> Self {
        self.memory_scope = Some(scope);
        self
    }

    /// Reads the secrets at the versions resolved when the invocation started (see
    /// [`PinnedSecrets`]); without it, every use reads the latest version.
    pub fn with_pinned_secrets(mut self, pinned: PinnedSecrets) -> Self {
        self.pinned = pinned;
        self
    }

    /// Keeps what the implementation emits before redaction, for conformance to scan.
    pub fn keeping_raw_emissions(mut self) -> Self {
        self.keep_raw_emissions = true;
        self
    }

    fn check_grant(&self, capability: &str) -> Result<(), AdapterError> {
        if self.grants.contains(capability) {
            Ok(())
        } else {
            Err(AdapterError::Host(format!("capability {capability} is not granted to this implementation")))
        }
    }

    /// Waits between retries with `sleeper` (conformance records the waits instead of waiting).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Sends every plan to `origin` (an `http://127.0.0.1:PORT` upstream the host controls) once its
    /// real destination passed the allow-list: what conformance runs use.
    pub fn redirecting_to(mut self, origin: &str) -> Result<Self, EgressError> {
        let url = url::Url::parse(origin).map_err(|e| EgressError::InvalidUrl { reason: e.to_string() })?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let rule = super::host::egress::AllowRule::new(super::host::egress::Scheme::Http, host, url.port());
        self.redirect = Some((url, AllowList::new(vec![rule])?));
        Ok(self)
    }

    /// The allow-list a plan is finally built against, and its URL after any redirection.
    fn destination(&self, url: &str) -> Result<(String, &AllowList), EgressError> {
        let Some((origin, upstream_allow)) = &self.redirect else {
            return Ok((url.to_owned(), &self.allow));
        };
        let mut parsed = url::Url::parse(url).map_err(|e| EgressError::InvalidUrl { reason: e.to_string() })?;
        self.allow.check(&parsed)?;
        let rewritten = parsed
            .set_scheme(origin.scheme())
            .and_then(|()| parsed.set_host(origin.host_str()).map_err(|_| ()))
            .and_then(|()| parsed.set_port(origin.port()));
        if rewritten.is_err() {
            return Err(EgressError::InvalidUrl { reason: "cannot send this URL to the conformance upstream".into() });
        }
        Ok((parsed.to_string(), upstream_allow))
    }

    /// The redactor every record of this invocation goes through.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn now(&self) -> u64 {
        self.services.clock.now_ms()
    }

    /// Executes plan `id` (with its retries) and returns the exchange the implementation sees.
    pub async fn execute_plan(&mut self, id: u64, sequence: u32) -> Result<Exchange, LoopError> {
        let index = usize::try_from(id).ok().and_then(|i| i.checked_sub(1)).ok_or(LoopError::UnknownPlan(id))?;
        let planned = self.plans.get(index).ok_or(LoopError::UnknownPlan(id))?;
        if matches!(
            planned.auth,
            Some(EgressAuth::Bearer { .. } | EgressAuth::Basic { .. } | EgressAuth::Header { .. })
        ) {
            self.trace.credential_plans += 1;
        }
        let auth = SecretAuth {
            secrets: self.services.secrets.clone(),
            pinned: self.pinned.clone(),
            project: self.project.clone(),
            auth: planned.auth.clone(),
        };
        let started = self.now();
        let allow = self.redirect.as_ref().map_or(&self.allow, |(_, upstream)| upstream);
        let result = self
            .services
            .executor
            .execute(&planned.plan, allow, &auth, &planned.retry, self.services.sleeper.as_ref())
            .await;
        let elapsed_ms = self.now().saturating_sub(started);
        let mut url = planned.plan.url().clone();
        url.set_query(None);
        let method = format!("{:?}", planned.plan.method()).to_uppercase();
        let sent_headers: Vec<(String, String)> = planned
            .plan
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut attempts = 0u32;
        let outcome = match result {
            Ok(outcome) => {
                attempts = u32::try_from(outcome.attempts.len()).unwrap_or(u32::MAX);
                self.trace.egress.push(EgressRecord {
                    plan: id,
                    method,
                    url: url.to_string(),
                    attempts: u32::try_from(outcome.attempts.len()).unwrap_or(u32::MAX),
                    status: outcome.final_response.as_ref().map(|r| r.status),
                    stop: outcome.stop.to_string(),
                });
                match outcome.final_response {
                    Some(r) => ExchangeOutcome::Response { status: r.status, headers: r.headers, body: r.body },
                    None => ExchangeOutcome::NetworkError {
                        message: outcome.last_error().map_or_else(|| outcome.stop.to_string(), |e| e.message.clone()),
                    },
                }
            }
            Err(e) => {
                let message = self.redactor.redact_str(&e.to_string());
                // A destination refused while the plan ran (a redirect off the allow-list, an address
                // the guard blocks) is an egress violation just like a refused plan.
                if matches!(
                    e,
                    EgressError::HostNotAllowed { .. }
                        | EgressError::RedirectNotAllowed { .. }
                        | EgressError::AddressNotAllowed { .. }
                ) {
                    self.trace.refused_plans.push(message.clone());
                }
                self.trace.egress.push(EgressRecord {
                    plan: id,
                    method,
                    url: url.to_string(),
                    attempts: 0,
                    status: None,
                    stop: message.clone(),
                });
                ExchangeOutcome::Refused { message: format!("refused by the host: {message}") }
            }
        };
        Ok(Exchange { plan: id, sequence, outcome, elapsed_ms, attempts, sent_headers })
    }
}

impl StepHost for InvocationHost<'_> {
    fn build_plan(&mut self, plan: PlanRequest) -> Result<u64, AdapterError> {
        let method = parse_method(&plan.method)?;
        // Auth may only use secrets the published artifact declared.
        let secret = plan.auth.as_ref().map(|a| match a {
            EgressAuth::Bearer { secret }
            | EgressAuth::Header { secret, .. }
            | EgressAuth::HmacSha256 { secret, .. } => secret.clone(),
            EgressAuth::Basic { password_secret, .. } => password_secret.clone(),
        });
        if let Some(name) = secret {
            if let Err(e) = self.check_grant(&format!("secret:{name}")) {
                self.trace.refused_plans.push(e.to_string());
                return Err(AdapterError::PlanRefused { kind: PlanRefusal::Denied, message: e.to_string() });
            }
        }
        let built = self.destination(&plan.url).and_then(|(url, allow)| {
            let request = EgressRequest {
                method,
                url,
                headers: plan.headers,
                body: plan.body,
                timeout_ms: plan.timeout_ms,
                idempotency_key: plan.idempotency_key,
            };
            EgressPlan::build(request, allow, &PlanLimits::default())
        });
        match built {
            Ok(built) => {
                self.plans.push(Planned {
                    plan: built,
                    auth: plan.auth,
                    retry: plan.retry.unwrap_or_else(RetryPolicy::never),
                });
                Ok(self.plans.len() as u64)
            }
            Err(e) => {
                let reason = self.redactor.redact_str(&e.to_string());
                self.trace.refused_plans.push(reason.clone());
                let kind = match e {
                    EgressError::HostNotAllowed { .. }
                    | EgressError::SchemeNotAllowed { .. }
                    | EgressError::AddressNotAllowed { .. } => PlanRefusal::HostNotAllowed,
                    EgressError::InvalidHeader { .. } | EgressError::HeadersTooLarge { .. } => {
                        PlanRefusal::InvalidHeader
                    }
                    EgressError::BodyTooLarge { .. } => PlanRefusal::BodyTooLarge,
                    _ => PlanRefusal::InvalidUrl,
                };
                Err(AdapterError::PlanRefused { kind, message: reason })
            }
        }
    }

    fn log(&mut self, level: &str, message: &str, fields: serde_json::Value) {
        let at_ms = self.now();
        if self.keep_raw_emissions {
            self.trace.raw_emissions.push(format!("{message} {fields}"));
        }
        self.trace.logs.push(LogRecord {
            level: level.to_owned(),
            message: self.redactor.redact_str(message),
            fields: self.redactor.redact_json(&fields),
            at_ms,
        });
    }

    fn record_span(&mut self, name: &str, attributes: serde_json::Value) {
        let at_ms = self.now();
        if self.keep_raw_emissions {
            self.trace.raw_emissions.push(format!("{name} {attributes}"));
        }
        self.trace.spans.push(SpanRecord {
            name: self.redactor.redact_str(name),
            attributes: self.redactor.redact_json(&attributes),
            at_ms,
        });
    }

    fn now_ms(&mut self) -> u64 {
        let now = self.now();
        self.trace.time_readings.push(now);
        now
    }

    fn assert_capability(&mut self, capability: &str) -> Result<(), AdapterError> {
        self.check_grant(capability)
    }

    fn hmac_sha256(&mut self, secret: &str, data: &[u8]) -> Result<Vec<u8>, AdapterError> {
        self.check_grant(&format!("secret:{secret}"))?;
        let answer = self
            .pinned
            .reference(secret)
            .and_then(|r| {
                self.services.secrets.hmac(&self.project, &r, super::host::secrets::HmacAlgorithm::Sha256, data)
            })
            .map_err(|e| self.redactor.redact_str(&e.to_string()));
        self.trace.tape.push(TapeEntry::Hmac { secret: secret.to_owned(), answer: answer.clone() });
        answer.map_err(AdapterError::Host)
    }

    fn attach_auth(&mut self, plan: u64, auth: EgressAuth) -> Result<(), AdapterError> {
        let secret = match &auth {
            EgressAuth::Bearer { secret }
            | EgressAuth::Header { secret, .. }
            | EgressAuth::HmacSha256 { secret, .. } => secret,
            EgressAuth::Basic { password_secret, .. } => password_secret,
        };
        if let Err(e) = self.check_grant(&format!("secret:{secret}")) {
            self.trace.refused_plans.push(e.to_string());
            return Err(e);
        }
        let planned = usize::try_from(plan)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.plans.get_mut(i))
            .ok_or_else(|| AdapterError::Host(format!("plan {plan} was not built in this invocation")))?;
        if planned.auth.is_some() {
            return Err(AdapterError::Host(format!("plan {plan} already has auth attached")));
        }
        planned.auth = Some(auth);
        Ok(())
    }

    fn secret_metadata(&mut self, secret: &str) -> Result<SecretInfo, AdapterError> {
        self.check_grant(&format!("secret:{secret}"))?;
        let answer = self
            .pinned
            .reference(secret)
            .and_then(|r| self.services.secrets.metadata(&self.project, &r))
            .map(|m| SecretInfo {
                name: m.name,
                version: m.version,
                fingerprint: m.fingerprint,
                created_at_ms: m.created_at_ms,
            })
            .map_err(|e| self.redactor.redact_str(&e.to_string()));
        self.trace.tape.push(TapeEntry::SecretMetadata { secret: secret.to_owned(), answer: answer.clone() });
        answer.map_err(AdapterError::Host)
    }

    fn memory(&mut self, call: MemoryCall) -> Result<MemoryAnswer, MemoryFailure> {
        let answer = match &self.memory_scope {
            None => Err(MemoryFailure::Denied("this invocation has no memory".into())),
            Some(scope) => memory_call(self.services.memory.as_ref(), scope, &call).map_err(memory_failure),
        };
        self.trace.tape.push(TapeEntry::Memory { request: call, answer: answer.clone() });
        answer
    }
}

fn entry(e: super::host::memory::Entry) -> MemoryEntry {
    MemoryEntry { key: e.key, value: e.value, version: e.version, expires_at_ms: e.expires_at_ms }
}

fn memory_call(store: &dyn MemoryStore, scope: &Scope, call: &MemoryCall) -> Result<MemoryAnswer, MemoryError> {
    Ok(match call {
        MemoryCall::Get { key } => MemoryAnswer::Entry { entry: store.get(scope, key)?.map(entry) },
        MemoryCall::GetSnapshot { prefix, limit } => {
            let s = store.get_snapshot(scope, prefix, *limit)?;
            MemoryAnswer::Snapshot {
                prefix: s.prefix,
                entries: s.entries.into_iter().map(entry).collect(),
                truncated: s.truncated,
            }
        }
        MemoryCall::PutIfAbsent { key, value, ttl_ms } => {
            MemoryAnswer::Version { version: store.put_if_absent(scope, key, value, *ttl_ms)? }
        }
        MemoryCall::CompareExchange { key, expected, value } => {
            MemoryAnswer::Version { version: store.compare_exchange(scope, key, *expected, value)? }
        }
        MemoryCall::AppendJournal { journal, data, expected_last } => {
            let r = store.append_journal(scope, journal, data, *expected_last)?;
            MemoryAnswer::Receipt { journal: r.journal, sequence: r.sequence }
        }
        MemoryCall::AcquireLease { name, ttl_ms, renew } => {
            // The holder is the scope itself: leases exclude concurrent invocations of one
            // implementation in one project.
            let l = store.acquire_lease(scope, name, scope.implementation(), *ttl_ms, *renew)?;
            MemoryAnswer::Lease { name: l.name, fencing_token: l.fencing_token, expires_at_ms: l.expires_at_ms }
        }
        MemoryCall::ReleaseLease { name, fencing_token } => {
            store.release_lease(scope, name, *fencing_token)?;
            MemoryAnswer::Done
        }
        MemoryCall::Delete { key, expected } => MemoryAnswer::Deleted { deleted: store.delete(scope, key, *expected)? },
        MemoryCall::Expire { key, ttl_ms } => {
            store.expire(scope, key, *ttl_ms)?;
            MemoryAnswer::Done
        }
    })
}

fn memory_failure(e: MemoryError) -> MemoryFailure {
    match e {
        MemoryError::NotFound => MemoryFailure::NotFound,
        MemoryError::AlreadyExists(v) => MemoryFailure::AlreadyExists(v),
        MemoryError::VersionMismatch(v) => MemoryFailure::VersionMismatch(v),
        MemoryError::SequenceMismatch(v) => MemoryFailure::SequenceMismatch(v),
        MemoryError::LeaseHeld(t) => MemoryFailure::LeaseHeld(t),
        MemoryError::LeaseLost => MemoryFailure::LeaseLost,
        MemoryError::InvalidKey(m) => MemoryFailure::InvalidKey(m),
        MemoryError::QuotaExceeded(m) => MemoryFailure::QuotaExceeded(m),
        MemoryError::Denied(m) => MemoryFailure::Denied(m),
        MemoryError::Unavailable(m) | MemoryError::Storage(m) => MemoryFailure::Unavailable(m),
    }
}

fn parse_method(m: &str) -> Result<Method, AdapterError> {
    m.parse().map_err(AdapterError::Host)
}

impl super::adapter::ExecutePlan for InvocationHost<'_> {
    fn execute(
        &mut self,
        plan: u64,
        sequence: u32,
    ) -> impl std::future::Future<Output = Result<Exchange, LoopError>> + Send {
        self.execute_plan(plan, sequence)
    }
}

/// Attaches auth from the secrets service, inside the egress boundary only.
struct SecretAuth {
    secrets: Arc<SecretStore>,
    pinned: PinnedSecrets,
    project: ProjectId,
    auth: Option<EgressAuth>,
}

fn header_value(value: &[u8]) -> Result<reqwest::header::HeaderValue, EgressError> {
    let mut v = reqwest::header::HeaderValue::from_bytes(value)
        .map_err(|_| EgressError::AuthFailed { reason: "the secret is not a valid header value".into() })?;
    v.set_sensitive(true);
    Ok(v)
}

impl SecretAuth {
    fn with_secret<R>(&self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Result<R, EgressError> {
        self.pinned
            .reference(name)
            .and_then(|r| self.secrets.with_plaintext(&self.project, &r, f))
            .map_err(|e| EgressError::AuthFailed { reason: e.to_string() })
    }
}

impl AttachAuth for SecretAuth {
    fn attach(&self, request: &mut reqwest::Request) -> Result<(), EgressError> {
        use base64::Engine;
        use reqwest::header::{HeaderName, AUTHORIZATION};
        let Some(auth) = &self.auth else { return Ok(()) };
        let (name, value) = match auth {
            EgressAuth::Bearer { secret } => {
                let value = self.with_secret(secret, |s| {
                    let mut v = b"Bearer ".to_vec();
                    v.extend_from_slice(s);
                    header_value(&v)
                })??;
                (AUTHORIZATION, value)
            }
            EgressAuth::Basic { username, password_secret } => {
                let value = self.with_secret(password_secret, |s| {
                    let mut raw = format!("{username}:").into_bytes();
                    raw.extend_from_slice(s);
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
                    header_value(format!("Basic {encoded}").as_bytes())
                })??;
                (AUTHORIZATION, value)
            }
            EgressAuth::Header { header, prefix, secret } => {
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| EgressError::AuthFailed { reason: format!("{header:?} is not a header name") })?;
                let value = self.with_secret(secret, |s| {
                    let mut v = prefix.clone().unwrap_or_default().into_bytes();
                    v.extend_from_slice(s);
                    header_value(&v)
                })??;
                (name, value)
            }
            EgressAuth::HmacSha256 { header, prefix, secret, base64 } => {
                use hmac::Mac;
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| EgressError::AuthFailed { reason: format!("{header:?} is not a header name") })?;
                let body = request.body().and_then(|b| b.as_bytes()).unwrap_or_default().to_vec();
                let tag = self
                    .with_secret(secret, |s| {
                        hmac::Hmac::<sha2::Sha256>::new_from_slice(s).map(|mut mac| {
                            mac.update(&body);
                            mac.finalize().into_bytes().to_vec()
                        })
                    })?
                    .map_err(|_| EgressError::AuthFailed { reason: "the HMAC key is unusable".into() })?;
                let encoded =
                    if *base64 { base64::engine::general_purpose::STANDARD.encode(tag) } else { hex::encode(tag) };
                (name, header_value(format!("{}{encoded}", prefix.as_deref().unwrap_or_default()).as_bytes())?)
            }
        };
        request.headers_mut().insert(name, value);
        Ok(())
    }
}
