//! Idempotency keys: the same key never charges twice, and one key never serves two different
//! requests.
//!
//! Stripe replays its stored answer when a key comes back, but silently answers with the *first*
//! request's result even if the body changed. So before the first attempt the connector records,
//! in host memory (`idempotency/<key>`, kept 24 hours like Stripe's own), a fingerprint of what it
//! is about to send. The same key with the same fingerprint is a safe replay; with another
//! fingerprint it is a caller bug, reported as `conflict` without contacting Stripe.
//!
//! Without a caller key, the key is derived from the request itself (`vadyl-<fingerprint>`), so
//! repeating an identical input is still safe. The fingerprint is a 128-bit FNV-1a hash: enough to
//! tell requests apart, and computed without any secret.

use crate::response::contract_error;
use crate::vadyl::connector::memory::{self, MemoryError};
use crate::vadyl::connector::types::{ContractError, ErrorCode};

/// How long a claimed key is remembered (Stripe keeps keys for 24 hours).
pub const TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Longest key Stripe accepts.
pub const MAX_KEY_LEN: usize = 255;

/// Hash of `parts` (length-prefixed, so part boundaries matter), as 32 lowercase hex digits.
pub fn fingerprint(parts: &[&str]) -> String {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET_BASIS;
    for part in parts {
        for byte in (part.len() as u64).to_le_bytes().iter().chain(part.as_bytes()) {
            hash ^= u128::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:032x}")
}

/// The key used when the caller gave none.
pub fn derived_key(fingerprint: &str) -> String {
    format!("vadyl-{fingerprint}")
}

/// A caller key must fit Stripe's limit and be sendable as a header value.
pub fn validate_key(key: &str) -> Result<(), ContractError> {
    let printable = key.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_KEY_LEN || !printable || key.trim() != key {
        let mut error = contract_error(
            ErrorCode::InvalidInput,
            format!(
                "the idempotency key must be 1 to {MAX_KEY_LEN} printable ASCII characters without surrounding spaces"
            ),
            false,
        );
        error.details.push(("field".to_owned(), "idempotencyKey".to_owned()));
        return Err(error);
    }
    Ok(())
}

/// Records `key` for the request with `fingerprint`, or checks it against an earlier record.
pub fn claim(key: &str, fingerprint: &str) -> Result<(), ContractError> {
    let memory_key = format!("idempotency/{key}");
    match memory::put_if_absent(&memory_key, fingerprint.as_bytes(), Some(TTL_MS)) {
        Ok(_) => Ok(()),
        Err(MemoryError::AlreadyExists(_)) => match memory::get(&memory_key) {
            Ok(Some(entry)) if entry.value == fingerprint.as_bytes() => Ok(()),
            Ok(Some(_)) => {
                let mut error =
                    contract_error(ErrorCode::Conflict, "idempotency key reused with a different request", false);
                error.details.push(("idempotencyKey".to_owned(), key.to_owned()));
                Err(error)
            }
            // Expired between the two calls: nothing to conflict with any more.
            Ok(None) => Ok(()),
            Err(error) => Err(memory_failure(error)),
        },
        Err(error) => Err(memory_failure(error)),
    }
}

fn memory_failure(error: MemoryError) -> ContractError {
    let (code, reason, retryable) = match error {
        MemoryError::InvalidKey(reason) => {
            (ErrorCode::InvalidInput, format!("unusable idempotency key: {reason}"), false)
        }
        MemoryError::Unavailable(reason) => {
            (ErrorCode::HostDenied, format!("host memory is unavailable: {reason}"), true)
        }
        MemoryError::Denied(reason) => (ErrorCode::HostDenied, format!("memory access denied: {reason}"), false),
        MemoryError::QuotaExceeded(reason) => {
            (ErrorCode::HostDenied, format!("memory quota exceeded: {reason}"), false)
        }
        other => (ErrorCode::Internal, format!("unexpected memory answer: {other:?}"), false),
    };
    contract_error(code, format!("cannot record the idempotency key: {reason}"), retryable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_separate_parts() {
        assert_eq!(fingerprint(&["charge", "amount=1"]), fingerprint(&["charge", "amount=1"]));
        assert_eq!(fingerprint(&["charge", "amount=1"]).len(), 32);
        assert_ne!(fingerprint(&["charge", "amount=1"]), fingerprint(&["charge", "amount=2"]));
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        // FNV-1a 128 of nothing is the offset basis.
        assert_eq!(fingerprint(&[]), "6c62272e07bb014262b821756295c58d");
    }

    #[test]
    fn keys_are_validated() {
        assert!(validate_key("conformance-charge-1").is_ok());
        assert!(validate_key("order 7").is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        for bad in ["", " lead", "trail ", "new\nline", "ü", &"k".repeat(MAX_KEY_LEN + 1)] {
            let error = validate_key(bad).expect_err(bad);
            assert_eq!(error.code, ErrorCode::InvalidInput, "{bad:?}");
        }
    }
}
