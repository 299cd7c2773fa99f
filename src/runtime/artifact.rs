//! Artifact identity: what the registry signs for an artifact and how a loader checks it.
//!
//! An artifact is addressed by the sha256 of its bytes. The registry signs the domain-separated
//! content hash; a loader recomputes the hash from the bytes it read and verifies the signature
//! before anything is parsed, compiled or run.

use ed25519_dalek::VerifyingKey;

use crate::ids::{ContentHash, SignatureBytes};

/// The message the registry key signs for an artifact.
pub fn signing_message(hash: &ContentHash) -> Vec<u8> {
    format!("vadyl artifact v1\n{hash}").into_bytes()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArtifactError {
    #[error("artifact bytes hash to {actual}, expected {expected}: the stored artifact was altered")]
    HashMismatch { expected: ContentHash, actual: ContentHash },
    #[error("the signature over {0} does not verify with the registry key")]
    BadSignature(ContentHash),
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactStoreError {
    #[error("artifact store I/O ({what}): {source}")]
    Io {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("artifact {0} is not in the store")]
    Missing(ContentHash),
    #[error(transparent)]
    Verification(#[from] ArtifactError),
}

/// The port artifacts are kept behind: bytes by their content hash. A backend only stores and
/// returns bytes; verification is [`load_verified`]'s, the same for every backend.
pub trait ArtifactStore: Send + Sync {
    /// Stores `bytes` under their content hash. Storing the same bytes again is a no-op. A reader
    /// never sees half an artifact.
    fn put(&self, bytes: &[u8]) -> Result<ContentHash, ArtifactStoreError>;
    /// The bytes stored under `hash`, unverified, or `None`.
    fn get(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, ArtifactStoreError>;
}

/// Reads an artifact and verifies its bytes against the hash and the registry's signature; nothing
/// unverified leaves this function.
pub fn load_verified(
    store: &dyn ArtifactStore,
    hash: &ContentHash,
    signature: &SignatureBytes,
    key: &VerifyingKey,
) -> Result<Vec<u8>, ArtifactStoreError> {
    let bytes = store.get(hash)?.ok_or(ArtifactStoreError::Missing(*hash))?;
    verify(&bytes, hash, signature, key)?;
    Ok(bytes)
}

/// Checks bytes against the content hash and signature recorded when they were built.
pub fn verify(
    bytes: &[u8],
    expected: &ContentHash,
    signature: &SignatureBytes,
    key: &VerifyingKey,
) -> Result<(), ArtifactError> {
    let actual = ContentHash::of(bytes);
    if &actual != expected {
        return Err(ArtifactError::HashMismatch { expected: *expected, actual });
    }
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(&signing_message(expected), &sig).map_err(|_| ArtifactError::BadSignature(*expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn altered_bytes_or_a_foreign_signature_are_refused() {
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let bytes = b"artifact";
        let hash = ContentHash::of(bytes);
        let sig = SignatureBytes(key.sign(&signing_message(&hash)).to_bytes());
        assert_eq!(verify(bytes, &hash, &sig, &key.verifying_key()), Ok(()));
        assert!(matches!(
            verify(b"artifacT", &hash, &sig, &key.verifying_key()),
            Err(ArtifactError::HashMismatch { .. })
        ));
        let other = SigningKey::from_bytes(&[2u8; 32]);
        assert_eq!(verify(bytes, &hash, &sig, &other.verifying_key()), Err(ArtifactError::BadSignature(hash)));
    }
}
