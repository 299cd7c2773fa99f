//! The registry's ed25519 signing key as the domain sees it: a signer and its public halves.
//!
//! The key signs checkpoints (as C2SP signed notes), publications and artifacts. Its public half is
//! what auditors pin: `vadyl key show` prints it, and offline verification needs nothing else.
//! Where the seed is kept (an owner-only file in the data directory) is `storage::keys`'s business;
//! nothing here touches a disk.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::events::checkpoint;
use crate::ids::SignatureBytes;

/// The signed-note key name, which is also the checkpoints' origin line.
pub const KEY_NAME: &str = "vadyl-registry";

/// Signs with the registry key; decisions that produce signed facts take this, not the key itself.
pub trait Signer {
    fn sign(&self, message: &[u8]) -> SignatureBytes;
    fn key_id_hex(&self) -> String;
}

pub struct RegistryKey {
    signing: SigningKey,
    /// Where the seed was read from, for messages (`vadyl key show`); never read here.
    path: PathBuf,
}

impl std::fmt::Debug for RegistryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret half.
        f.debug_struct("RegistryKey").field("key_id", &self.key_id_hex()).field("path", &self.path).finish()
    }
}

impl RegistryKey {
    pub fn from_seed(seed: &[u8; 32], path: impl Into<PathBuf>) -> Self {
        Self { signing: SigningKey::from_bytes(seed), path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn public_key_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.verifying_key().as_bytes())
    }

    /// The signed-note verifier key: everything an offline verifier needs.
    pub fn verifier_key(&self) -> String {
        checkpoint::verifier_key_string(KEY_NAME, &self.verifying_key())
    }
}

impl Signer for RegistryKey {
    fn sign(&self, message: &[u8]) -> SignatureBytes {
        SignatureBytes(self.signing.sign(message).to_bytes())
    }

    fn key_id_hex(&self) -> String {
        hex::encode(checkpoint::key_id(KEY_NAME, &self.verifying_key()))
    }
}
