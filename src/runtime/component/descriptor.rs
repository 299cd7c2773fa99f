//! The policy a component is published with, and how it travels inside the artifact.
//!
//! A component's code says what it does; its descriptor says what it may do: the origins it may
//! reach, the secrets it may use, which of its fields are sensitive, what its provider answers in
//! each conformance vector, and its runtime limits. At build the host embeds the canonical
//! descriptor into the component as a custom section (`vadyl:descriptor`), so the one artifact that
//! is hashed and signed carries both: nobody can widen a published component's allow-list without
//! breaking its signature. Wasmtime ignores custom sections, so the bytes still run as they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::runtime::declarative::manifest::{ConformanceFixtures, Egress, Redaction};

/// Name of the custom section the host writes.
pub const SECTION: &str = "vadyl:descriptor";

/// Upper bounds an author may ask for; the host's own ceilings.
pub const MAX_DEADLINE_MS: u64 = 30_000;
pub const MAX_MEMORY_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Descriptor {
    /// Origins egress plans may target.
    pub egress: Egress,
    /// Names of the secrets the component may attach, sign or MAC with (its grants).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Extra sensitive pointers beyond the contract's `@sensitive` fields.
    #[serde(default)]
    pub redaction: Redaction,
    /// Operation -> the request header carrying its idempotency key (checked by conformance).
    #[serde(default)]
    pub idempotency_headers: BTreeMap<String, String>,
    /// What the provider answers in each conformance vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conformance: Option<ConformanceFixtures>,
    #[serde(default)]
    pub limits: Limits,
}

/// Per-call runtime limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock budget of one call into the guest (epoch deadline).
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    /// Linear memory the guest may grow to.
    #[serde(default = "default_memory")]
    pub memory_bytes: u64,
}

fn default_deadline() -> u64 {
    1_000
}

fn default_memory() -> u64 {
    16 << 20
}

impl Default for Limits {
    fn default() -> Self {
        Self { deadline_ms: default_deadline(), memory_bytes: default_memory() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("the descriptor is not valid: {0}")]
    Invalid(String),
    #[error("the component already carries a `{SECTION}` section; the host writes it at build")]
    AlreadyEmbedded,
    #[error("the artifact carries no `{SECTION}` section")]
    Missing,
    #[error("the component's binary is malformed: {0}")]
    Malformed(String),
}

impl Descriptor {
    /// Checks what serde cannot: limits within the host's ceilings, secret names well formed.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        let l = self.limits;
        if l.deadline_ms == 0 || l.deadline_ms > MAX_DEADLINE_MS {
            return Err(DescriptorError::Invalid(format!(
                "/limits/deadlineMs must be between 1 and {MAX_DEADLINE_MS}, not {}",
                l.deadline_ms
            )));
        }
        if l.memory_bytes < 1 << 16 || l.memory_bytes > MAX_MEMORY_BYTES {
            return Err(DescriptorError::Invalid(format!(
                "/limits/memoryBytes must be between 65536 and {MAX_MEMORY_BYTES}, not {}",
                l.memory_bytes
            )));
        }
        for (i, s) in self.secrets.iter().enumerate() {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
                return Err(DescriptorError::Invalid(format!("/secrets/{i} {s:?} is not a secret name")));
            }
        }
        if self.egress.allow.is_empty() {
            return Err(DescriptorError::Invalid("/egress/allow must name at least one origin".into()));
        }
        Ok(())
    }
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends the descriptor as a custom section (id 0: name, then bytes) at the end of the component.
pub fn embed(component: &[u8], canonical_descriptor: &[u8]) -> Result<Vec<u8>, DescriptorError> {
    let mut out = Vec::with_capacity(component.len() + section_len(canonical_descriptor));
    out.extend_from_slice(component);
    embed_in_place(&mut out, canonical_descriptor)?;
    Ok(out)
}

/// Bytes [`embed_in_place`] adds for this descriptor, at most (for a `Vec::with_capacity`).
pub fn section_len(canonical_descriptor: &[u8]) -> usize {
    canonical_descriptor.len() + SECTION.len() + 16
}

/// [`embed`] without a copy of the component: the section is appended to `component` itself (a
/// 40 MB upload is held once, not twice). Returns where the appended section starts.
pub fn embed_in_place(component: &mut Vec<u8>, canonical_descriptor: &[u8]) -> Result<usize, DescriptorError> {
    if find(component)?.is_some() {
        return Err(DescriptorError::AlreadyEmbedded);
    }
    let mut payload = Vec::with_capacity(canonical_descriptor.len() + SECTION.len() + 8);
    leb128(SECTION.len(), &mut payload);
    payload.extend_from_slice(SECTION.as_bytes());
    payload.extend_from_slice(canonical_descriptor);
    let start = component.len();
    component.reserve(payload.len() + 6);
    component.push(0);
    leb128(payload.len(), component);
    component.extend_from_slice(&payload);
    Ok(start)
}

/// The embedded descriptor's bytes, if the component carries one at its top level.
pub fn find(component: &[u8]) -> Result<Option<&[u8]>, DescriptorError> {
    let malformed = |e: wasmparser::BinaryReaderError| DescriptorError::Malformed(e.to_string());
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.map_err(malformed)? {
            // Nested modules and components have their own sections; only the outermost counts.
            wasmparser::Payload::ModuleSection { .. } | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::CustomSection(c) if depth == 0 && c.name() == SECTION => return Ok(Some(c.data())),
            _ => {}
        }
    }
    Ok(None)
}

/// Reads the embedded descriptor.
pub fn extract(component: &[u8]) -> Result<Descriptor, DescriptorError> {
    let bytes = find(component)?.ok_or(DescriptorError::Missing)?;
    serde_json::from_slice(bytes).map_err(|e| DescriptorError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_descriptor_rides_in_a_custom_section_once() {
        let d = br#"{"egress":{"allow":[{"scheme":"https","host":"api.stripe.com"}]},"secrets":["k"]}"#;
        let with = embed(EMPTY_COMPONENT, d).unwrap();
        assert_eq!(find(&with).unwrap(), Some(&d[..]));
        assert_eq!(extract(&with).unwrap().secrets, vec!["k".to_owned()]);
        assert_eq!(embed(&with, d), Err(DescriptorError::AlreadyEmbedded));
        assert_eq!(extract(EMPTY_COMPONENT), Err(DescriptorError::Missing));
        assert!(matches!(find(b"\0asm\x0d\0\x01\0\x00\x7f"), Err(DescriptorError::Malformed(_))));
    }

    #[test]
    fn limits_outside_the_ceilings_are_refused() {
        let mut d: Descriptor =
            serde_json::from_str(r#"{"egress":{"allow":[{"scheme":"https","host":"a.example.com"}]}}"#).unwrap();
        assert_eq!(d.validate(), Ok(()));
        d.limits.deadline_ms = 0;
        assert!(d.validate().is_err());
        d.limits = Limits { deadline_ms: 10, memory_bytes: MAX_MEMORY_BYTES + 1 };
        assert!(d.validate().unwrap_err().to_string().contains("memoryBytes"));
    }
}
