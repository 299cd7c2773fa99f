//! The closed set of host imports, as Wasmtime host functions.
//!
//! `bindgen!` generates one `Host` trait per Vadyl host interface from the WIT package; this module
//! implements them on [`GuestState`] by calling the [`StepHost`] of the step in progress — the same
//! host services the declarative engine and native adapters use. The linker holds these six
//! interfaces and nothing else, so a component importing anything more (any `wasi:*` included)
//! cannot be instantiated.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::GuestState;
use crate::runtime::adapter::{
    AdapterError, EgressAuth, MemoryAnswer, MemoryCall, MemoryEntry, MemoryFailure, PlanRefusal, PlanRequest,
};

wasmtime::component::bindgen!({
    path: "wit/worlds/connector",
    world: "payment-charge-v1",
});

use self::vadyl::connector::{capability, egress, memory, observability, secrets, time, types};

/// Adds the six Vadyl host interfaces, and only them, to `linker`.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<GuestState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    types::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    memory::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    observability::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    secrets::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    egress::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    time::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    capability::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    Ok(())
}

/// Plan ids the guest sees: opaque strings, only meaningful within the invocation.
pub fn plan_id(plan: u64) -> String {
    format!("plan-{plan}")
}

pub fn parse_plan_id(id: &str) -> Option<u64> {
    id.strip_prefix("plan-")?.parse().ok()
}

fn timestamp(ms: u64) -> types::Timestamp {
    types::Timestamp { seconds: ms / 1000, nanoseconds: u32::try_from((ms % 1000) * 1_000_000).unwrap_or(0) }
}

fn ms(t: &types::Timestamp) -> u64 {
    t.seconds.saturating_mul(1000).saturating_add(u64::from(t.nanoseconds / 1_000_000))
}

impl types::Host for GuestState {}

impl memory::Host for GuestState {
    fn get(&mut self, key: String) -> Result<Option<memory::Entry>, memory::MemoryError> {
        match self.host().memory(MemoryCall::Get { key }).map_err(memory_error)? {
            MemoryAnswer::Entry { entry } => Ok(entry.map(wit_entry)),
            other => Err(unexpected(&other)),
        }
    }

    fn get_snapshot(&mut self, prefix: String, limit: Option<u32>) -> Result<memory::Snapshot, memory::MemoryError> {
        match self.host().memory(MemoryCall::GetSnapshot { prefix, limit }).map_err(memory_error)? {
            MemoryAnswer::Snapshot { prefix, entries, truncated } => {
                Ok(memory::Snapshot { prefix, entries: entries.into_iter().map(wit_entry).collect(), truncated })
            }
            other => Err(unexpected(&other)),
        }
    }

    fn put_if_absent(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<u64, memory::MemoryError> {
        version(self.host().memory(MemoryCall::PutIfAbsent { key, value, ttl_ms }))
    }

    fn compare_exchange(&mut self, key: String, expected: u64, value: Vec<u8>) -> Result<u64, memory::MemoryError> {
        version(self.host().memory(MemoryCall::CompareExchange { key, expected, value }))
    }

    fn append_journal(
        &mut self,
        journal: String,
        data: Vec<u8>,
        expected_last: Option<u64>,
    ) -> Result<memory::JournalReceipt, memory::MemoryError> {
        match self.host().memory(MemoryCall::AppendJournal { journal, data, expected_last }).map_err(memory_error)? {
            MemoryAnswer::Receipt { journal, sequence } => Ok(memory::JournalReceipt { journal, sequence }),
            other => Err(unexpected(&other)),
        }
    }

    fn acquire_lease(
        &mut self,
        name: String,
        ttl_ms: u64,
        renew: Option<u64>,
    ) -> Result<memory::Lease, memory::MemoryError> {
        match self.host().memory(MemoryCall::AcquireLease { name, ttl_ms, renew }).map_err(memory_error)? {
            MemoryAnswer::Lease { name, fencing_token, expires_at_ms } => {
                Ok(memory::Lease { name, fencing_token, expires_at: timestamp(expires_at_ms) })
            }
            other => Err(unexpected(&other)),
        }
    }

    fn release_lease(&mut self, name: String, fencing_token: u64) -> Result<(), memory::MemoryError> {
        self.host().memory(MemoryCall::ReleaseLease { name, fencing_token }).map(|_| ()).map_err(memory_error)
    }

    fn delete(&mut self, key: String, expected: Option<u64>) -> Result<bool, memory::MemoryError> {
        match self.host().memory(MemoryCall::Delete { key, expected }).map_err(memory_error)? {
            MemoryAnswer::Deleted { deleted } => Ok(deleted),
            other => Err(unexpected(&other)),
        }
    }

    fn expire(&mut self, key: String, ttl_ms: Option<u64>) -> Result<(), memory::MemoryError> {
        self.host().memory(MemoryCall::Expire { key, ttl_ms }).map(|_| ()).map_err(memory_error)
    }
}

fn wit_entry(e: MemoryEntry) -> memory::Entry {
    memory::Entry { key: e.key, value: e.value, version: e.version, expires_at: e.expires_at_ms.map(timestamp) }
}

fn version(answer: Result<MemoryAnswer, MemoryFailure>) -> Result<u64, memory::MemoryError> {
    match answer.map_err(memory_error)? {
        MemoryAnswer::Version { version } => Ok(version),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(answer: &MemoryAnswer) -> memory::MemoryError {
    memory::MemoryError::Unavailable(format!("the host answered {answer:?} to another call"))
}

fn memory_error(f: MemoryFailure) -> memory::MemoryError {
    use memory::MemoryError as W;
    match f {
        MemoryFailure::NotFound => W::NotFound,
        MemoryFailure::AlreadyExists(v) => W::AlreadyExists(v),
        MemoryFailure::VersionMismatch(v) => W::VersionMismatch(v),
        MemoryFailure::SequenceMismatch(v) => W::SequenceMismatch(v),
        MemoryFailure::LeaseHeld(t) => W::LeaseHeld(timestamp(t)),
        MemoryFailure::LeaseLost => W::LeaseLost,
        MemoryFailure::InvalidKey(m) => W::InvalidKey(m),
        MemoryFailure::QuotaExceeded(m) => W::QuotaExceeded(m),
        MemoryFailure::Denied(m) => W::Denied(m),
        MemoryFailure::Unavailable(m) => W::Unavailable(m),
    }
}

fn attribute_json(attributes: &[observability::Attribute]) -> Value {
    let mut map = Map::new();
    for a in attributes {
        let v = match &a.value {
            observability::AttributeValue::Text(s) => json!(s),
            observability::AttributeValue::Integer(i) => json!(i),
            observability::AttributeValue::Float(f) => json!(f),
            observability::AttributeValue::Boolean(b) => json!(b),
        };
        map.insert(a.key.clone(), v);
    }
    Value::Object(map)
}

/// Telemetry a single call may emit; beyond it the guest is told it is rate limited.
const MAX_TELEMETRY_PER_CALL: u32 = 256;

impl observability::Host for GuestState {
    fn record_span(
        &mut self,
        span: observability::SpanData,
    ) -> Result<observability::SpanId, observability::ObservabilityError> {
        self.telemetry()?;
        if span.ended_at.seconds < span.started_at.seconds {
            return Err(observability::ObservabilityError::Invalid("the span ends before it starts".into()));
        }
        let mut attributes = attribute_json(&span.attributes);
        if let Value::Object(map) = &mut attributes {
            map.insert("span.startedAtMs".into(), json!(ms(&span.started_at)));
            map.insert("span.endedAtMs".into(), json!(ms(&span.ended_at)));
            map.insert("span.status".into(), json!(format!("{:?}", span.status).to_lowercase()));
            if let Some(parent) = &span.parent {
                map.insert("span.parent".into(), json!(parent));
            }
        }
        self.spans += 1;
        let id = format!("span-{}", self.spans);
        self.host().record_span(&span.name, attributes);
        Ok(id)
    }

    fn log(
        &mut self,
        level: observability::Level,
        message: String,
        attributes: Vec<observability::Attribute>,
    ) -> Result<(), observability::ObservabilityError> {
        self.telemetry()?;
        let level = format!("{level:?}").to_lowercase();
        self.host().log(&level, &message, attribute_json(&attributes));
        Ok(())
    }
}

impl GuestState {
    fn telemetry(&mut self) -> Result<(), observability::ObservabilityError> {
        self.telemetry_budget =
            self.telemetry_budget.checked_sub(1).ok_or(observability::ObservabilityError::RateLimited)?;
        Ok(())
    }
}

pub(super) fn telemetry_budget() -> u32 {
    MAX_TELEMETRY_PER_CALL
}

fn encode(bytes: &[u8], encoding: secrets::Encoding) -> String {
    match encoding {
        secrets::Encoding::Hex => hex::encode(bytes),
        secrets::Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        secrets::Encoding::Base64url => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    }
}

fn secrets_error(e: AdapterError) -> secrets::SecretsError {
    let message = e.to_string();
    if message.contains("not granted") {
        secrets::SecretsError::Denied(message)
    } else if message.contains("no secret named") {
        secrets::SecretsError::NotFound(message)
    } else {
        secrets::SecretsError::Unavailable(message)
    }
}

impl GuestState {
    /// The version a guest's reference means now; a pinned version other than the current one is not
    /// available (the host keeps only the current value reachable for guests).
    fn resolve_version(&mut self, secret: &secrets::SecretRef) -> Result<String, secrets::SecretsError> {
        let info = self.host().secret_metadata(&secret.name).map_err(secrets_error)?;
        match &secret.version {
            Some(v) if *v != info.version => Err(secrets::SecretsError::NotFound(format!(
                "secret {:?} version {v:?} is not its current version",
                secret.name
            ))),
            _ => Ok(info.version),
        }
    }

    fn mac(
        &mut self,
        secret: &secrets::SecretRef,
        message: &[u8],
        encoding: secrets::Encoding,
    ) -> Result<secrets::Signature, secrets::SecretsError> {
        let secret_version = self.resolve_version(secret)?;
        let tag = self.host().hmac_sha256(&secret.name, message).map_err(secrets_error)?;
        Ok(secrets::Signature { value: encode(&tag, encoding), encoding, secret_version })
    }
}

impl secrets::Host for GuestState {
    fn sign_request(
        &mut self,
        secret: secrets::SecretRef,
        algorithm: secrets::SignatureAlgorithm,
        message: Vec<u8>,
        encoding: secrets::Encoding,
    ) -> Result<secrets::Signature, secrets::SecretsError> {
        match algorithm {
            secrets::SignatureAlgorithm::HmacSha256 => self.mac(&secret, &message, encoding),
            other => Err(secrets::SecretsError::UnsupportedAlgorithm(format!(
                "{other:?}: this host signs with hmac-sha256 only; asymmetric signing keys are not stored"
            ))),
        }
    }

    fn hmac(
        &mut self,
        secret: secrets::SecretRef,
        algorithm: secrets::HmacAlgorithm,
        message: Vec<u8>,
        encoding: secrets::Encoding,
    ) -> Result<secrets::Signature, secrets::SecretsError> {
        match algorithm {
            secrets::HmacAlgorithm::Sha256 => self.mac(&secret, &message, encoding),
            secrets::HmacAlgorithm::Sha512 => {
                Err(secrets::SecretsError::UnsupportedAlgorithm("sha512: use sha256".into()))
            }
        }
    }

    fn attach_auth_to_egress_plan(
        &mut self,
        plan: String,
        auth: secrets::EgressAuth,
    ) -> Result<(), secrets::SecretsError> {
        let id = parse_plan_id(&plan)
            .ok_or_else(|| secrets::SecretsError::InvalidPlan(format!("{plan:?} is not a plan of this invocation")))?;
        let pinned = |r: &secrets::SecretRef| {
            if r.version.is_some() {
                Err(secrets::SecretsError::InvalidPlan(
                    "egress auth always uses the secret's current version; leave `version` empty".into(),
                ))
            } else {
                Ok(r.name.clone())
            }
        };
        let auth = match auth {
            secrets::EgressAuth::Bearer(r) => EgressAuth::Bearer { secret: pinned(&r)? },
            secrets::EgressAuth::Basic(b) => {
                EgressAuth::Basic { username: b.username, password_secret: pinned(&b.password)? }
            }
            secrets::EgressAuth::Header(h) => {
                EgressAuth::Header { header: h.name, prefix: h.prefix, secret: pinned(&h.secret)? }
            }
            secrets::EgressAuth::Signature(s) => {
                if s.algorithm != secrets::HmacAlgorithm::Sha256 || s.encoding == secrets::Encoding::Base64url {
                    return Err(secrets::SecretsError::UnsupportedAlgorithm(
                        "body signatures are HMAC-SHA256 in hex or base64".into(),
                    ));
                }
                EgressAuth::HmacSha256 {
                    header: s.header_name,
                    prefix: s.prefix,
                    secret: pinned(&s.secret)?,
                    base64: s.encoding == secrets::Encoding::Base64,
                }
            }
        };
        self.host().attach_auth(id, auth).map_err(|e| match e {
            AdapterError::Host(m) if m.contains("not granted") => secrets::SecretsError::Denied(m),
            other => secrets::SecretsError::InvalidPlan(other.to_string()),
        })
    }

    fn resolve_redacted_metadata(
        &mut self,
        secret: secrets::SecretRef,
    ) -> Result<secrets::SecretMetadata, secrets::SecretsError> {
        let info = self.host().secret_metadata(&secret.name).map_err(secrets_error)?;
        if let Some(v) = &secret.version {
            if *v != info.version {
                return Err(secrets::SecretsError::NotFound(format!("version {v:?} is not the current one")));
            }
        }
        let created_ms = u64::try_from(info.created_at_ms).unwrap_or(0);
        Ok(secrets::SecretMetadata {
            name: info.name,
            version: info.version,
            fingerprint: info.fingerprint,
            created_at: Some(timestamp(created_ms)),
            expires_at: None,
        })
    }

    fn decrypt_for_host_egress_only(
        &mut self,
        _key: secrets::SecretRef,
        _ciphertext: Vec<u8>,
        _plan: String,
        _placement: secrets::Placement,
    ) -> Result<secrets::BindingReceipt, secrets::SecretsError> {
        // Guest-supplied ciphertext would need a host key pair published to guests; this host keeps
        // secrets only in its own store and attaches them with `attach-auth-to-egress-plan`.
        Err(secrets::SecretsError::Denied(
            "guest-supplied ciphertext is not accepted by this host; store the secret with `vadyl secret set` \
             and use attach-auth-to-egress-plan"
                .into(),
        ))
    }
}

fn method(m: egress::Method) -> &'static str {
    match m {
        egress::Method::Get => "GET",
        egress::Method::Head => "HEAD",
        egress::Method::Post => "POST",
        egress::Method::Put => "PUT",
        egress::Method::Patch => "PATCH",
        egress::Method::Delete => "DELETE",
        egress::Method::Options => "OPTIONS",
    }
}

impl egress::Host for GuestState {
    fn build_plan(&mut self, request: egress::EgressRequest) -> Result<String, egress::EgressError> {
        let body = match request.body {
            types::Body::Empty => Vec::new(),
            types::Body::Text(t) => t.into_bytes(),
            types::Body::Bytes(b) => b,
        };
        let plan = PlanRequest {
            method: method(request.method).to_owned(),
            url: request.url,
            headers: request.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body,
            auth: None,
            idempotency_key: None,
            retry: None,
            timeout_ms: request.timeout_ms,
        };
        match self.host().build_plan(plan) {
            Ok(id) => Ok(plan_id(id)),
            Err(AdapterError::PlanRefused { kind, message }) => Err(match kind {
                PlanRefusal::HostNotAllowed => egress::EgressError::HostNotAllowed(message),
                PlanRefusal::InvalidUrl => egress::EgressError::InvalidUrl(message),
                PlanRefusal::InvalidHeader => egress::EgressError::InvalidHeader(message),
                PlanRefusal::BodyTooLarge => egress::EgressError::BodyTooLarge(0),
                PlanRefusal::Denied => egress::EgressError::Denied(message),
            }),
            Err(e) => Err(egress::EgressError::Denied(e.to_string())),
        }
    }
}

impl time::Host for GuestState {
    fn now(&mut self) -> Result<types::Timestamp, time::TimeError> {
        Ok(timestamp(self.host().now_ms()))
    }
}

impl capability::Host for GuestState {
    fn assert(&mut self, request: capability::CapabilityRequest) -> Result<(), capability::CapabilityError> {
        let name = match (request.name.as_str(), request.target) {
            ("secrets.use", Some(t)) => format!("secret:{t}"),
            ("secrets.use", None) => {
                return Err(capability::CapabilityError::Denied("secrets.use needs the secret's name".into()))
            }
            (other @ ("egress" | "memory.read" | "memory.write" | "time" | "observability"), _) => {
                // Every published component holds these (each is still checked at its own import).
                let _ = other;
                return Ok(());
            }
            (other, _) => return Err(capability::CapabilityError::Unknown(other.to_owned())),
        };
        self.host().assert_capability(&name).map_err(|e| capability::CapabilityError::Denied(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_ids_round_trip_and_foreign_ids_are_refused() {
        assert_eq!(parse_plan_id(&plan_id(7)), Some(7));
        assert_eq!(parse_plan_id("7"), None);
        assert_eq!(parse_plan_id("plan-x"), None);
        assert_eq!(ms(&timestamp(1_700_000_000_123)), 1_700_000_000_123);
    }
}
