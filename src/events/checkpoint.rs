//! Signed checkpoints of Vadyl's event log, in C2SP signed-note form.
//!
//! A checkpoint is the registry's signed statement "at this moment my log has
//! `tree_size` events, their Merkle root is `root_hash`, and the hash chain
//! ends at `head_hash`". Once a checkpoint has been handed out, the registry
//! cannot quietly rewrite history: any later log must come with a Merkle
//! consistency proof back to it (see [`super::merkle`]), and every event
//! inclusion proof is checked against a root that someone holds a signature
//! for.
//!
//! The wire format is the one the transparency-log ecosystem already speaks:
//! a [C2SP tlog-checkpoint](https://c2sp.org/tlog-checkpoint) body (origin,
//! size, base64 root) with one Vadyl extension line for the hash-chain head,
//! wrapped in a [C2SP signed note](https://c2sp.org/signed-note) with an
//! Ed25519 signature. That lets off-the-shelf witnesses and verifiers (Go's
//! `sumdb/note`, transparency-dev) check the signature, and lets us reuse
//! their key format (`name+keyid+base64key`) for distributing our public key.
//!
//! ```text
//! vadyl.example/log
//! 42
//! M8XR+G5CPgDXtwzDX3A5k2bypzNh/SMs86NEpNZ2WUA=
//! head 2b5efe1b17ef34287cd751ceafca51a89be92940151d1fc45dab0e901665e3b0
//!
//! — vadyl.example/log b1WNQOSsqU26n6O61QnqLJ1TEaygcXvYfBJ1kIi8E7BIfHau5HtinUXgHaJtjwfHxLKeCOKkA7dMJQ9e2fXG0HI9DwM=
//! ```
//!
//! is verified with the verifier key
//! `vadyl.example/log+6f558d40+AYWTfZ+HGlfzalzRjILb1q1TXQRJkfENPgHvn7JZAzhM`.
//!
//! Parsing is deliberately strict and fail-closed: every value has exactly
//! one accepted spelling (no leading zeros, canonical base64, lowercase hex),
//! so a note either verifies and yields the checkpoint that was signed, or is
//! rejected; no edit to a note's text can produce a different checkpoint that
//! still verifies. Signatures are checked with `verify_strict`, which refuses
//! the malleable and small-order edge cases plain Ed25519 verification allows.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash32;

/// Largest note [`verify_note`] will look at, in bytes.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// Most signature lines [`verify_note`] will accept in one note (the limit Go's
/// `sumdb/note` uses; the spec requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// Starts every signature line: U+2014 EM DASH, then a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Signed-note signature type identifier for Ed25519.
const ED25519_SIGNATURE_TYPE: u8 = 0x01;

/// Prefix of the Vadyl extension line carrying the hash-chain head.
const HEAD_PREFIX: &str = "head ";

/// Why a checkpoint, note or verifier key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note text is not a checkpoint in exactly the shape [`Checkpoint::body`] writes.
    #[error("malformed checkpoint body: {0}")]
    MalformedBody(&'static str),
    /// The note does not follow the signed-note format.
    #[error("malformed signed note: {0}")]
    MalformedNote(&'static str),
    /// The note is over [`MAX_NOTE_BYTES`].
    #[error("signed note is {size} bytes, over the {max}-byte limit")]
    NoteTooLarge { size: usize, max: usize },
    /// The note has more than [`MAX_SIGNATURES`] signature lines.
    #[error("signed note has more than {max} signature lines")]
    TooManySignatures { max: usize },
    /// A key name is empty or contains whitespace, `+` or control characters.
    #[error("invalid key name: it must be non-empty and contain no spaces, '+' or control characters")]
    InvalidKeyName,
    /// A verifier key string is not `<name>+<8 hex key id>+<base64 key>`.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// A verifier key is for a signature algorithm other than Ed25519.
    #[error("unsupported verifier key type 0x{0:02x} (only Ed25519, 0x01, is supported)")]
    UnsupportedKeyType(u8),
    /// A verifier key is a small-order Ed25519 point, for which signatures prove nothing.
    #[error("verifier key is a weak (small-order) Ed25519 key")]
    WeakKey,
    /// A verifier key's key id does not match its name and public key.
    #[error("verifier key id {found} does not match its name and public key (expected {expected})")]
    KeyIdMismatch { expected: String, found: String },
    /// No signature line in the note is from the expected key.
    #[error("signed note has no signature from key {key_name:?} (key id {key_id})")]
    NoKnownSignature { key_name: String, key_id: String },
    /// A signature line from the expected key does not verify.
    #[error("signature from key {key_name:?} does not verify")]
    InvalidSignature { key_name: String },
}

/// A log's signed statement about its state at one size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// Identifies the log; by convention the same as the signing key's name.
    pub origin: String,
    /// Number of events (Merkle leaves) in the log.
    pub tree_size: u64,
    /// RFC 6962 Merkle root over the first `tree_size` events.
    pub root_hash: Hash32,
    /// Hash of the event at the head of the hash chain.
    pub head_hash: Hash32,
}

impl Checkpoint {
    /// The note body this checkpoint is signed as:
    /// `"<origin>\n<tree_size decimal>\n<base64 std root>\nhead <hex head_hash>\n"`.
    ///
    /// Only a checkpoint that passes [`validate`](Self::validate) round-trips
    /// through [`parse_body`](Self::parse_body).
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n{HEAD_PREFIX}{}\n",
            self.origin,
            self.tree_size,
            BASE64.encode(self.root_hash),
            hex::encode(self.head_hash)
        )
    }

    /// Parses a note body in exactly the shape [`body`](Self::body) writes,
    /// rejecting any other spelling of the same values.
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        use CheckpointError::MalformedBody;

        let body = body.strip_suffix('\n').ok_or(MalformedBody("must end with a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root), Some(head), None) =
            (lines.next(), lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(MalformedBody("must be exactly four lines: origin, tree size, root hash, head"));
        };

        check_origin(origin)?;
        let tree_size = parse_tree_size(size)?;
        let root_hash = decode_base64(root)
            .and_then(|bytes| <Hash32>::try_from(bytes).ok())
            .ok_or(MalformedBody("root hash must be 32 bytes in canonical standard base64"))?;
        let head_hash = head
            .strip_prefix(HEAD_PREFIX)
            .and_then(decode_lower_hex::<32>)
            .ok_or(MalformedBody("last line must be \"head \" and 64 lowercase hex digits"))?;

        Ok(Self { origin: origin.to_owned(), tree_size, root_hash, head_hash })
    }

    /// Checks that the origin can be written into a body that parses back to
    /// this checkpoint: non-empty, no control characters (so no newlines), and
    /// not starting with the signature-line prefix.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        check_origin(&self.origin)
    }
}

fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    use CheckpointError::MalformedBody;
    if origin.is_empty() {
        return Err(MalformedBody("origin must not be empty"));
    }
    if origin.chars().any(char::is_control) {
        return Err(MalformedBody("origin must not contain control characters"));
    }
    if origin.starts_with(SIGNATURE_PREFIX) {
        return Err(MalformedBody("origin must not start with the signature line prefix"));
    }
    Ok(())
}

/// ASCII decimal, no sign, no leading zeros unless the value is 0.
fn parse_tree_size(s: &str) -> Result<u64, CheckpointError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CheckpointError::MalformedBody("tree size must be ASCII decimal digits"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(CheckpointError::MalformedBody("tree size must not have leading zeros"));
    }
    s.parse().map_err(|_| CheckpointError::MalformedBody("tree size does not fit in 64 bits"))
}

/// Standard padded base64, accepted only in its one canonical spelling.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let bytes = BASE64.decode(s).ok()?;
    (BASE64.encode(&bytes) == s).then_some(bytes)
}

fn decode_lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Signed-note key name rules: non-empty, no Unicode whitespace, no `+`, and
/// (since notes may not contain them) no control characters.
fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// The signed-note key id of an Ed25519 key: the first 4 bytes of
/// `SHA-256(key_name || "\n" || 0x01 || public_key)`.
pub fn key_id(key_name: &str, public_key: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(key_name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519_SIGNATURE_TYPE]);
    hasher.update(public_key.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The signed-note verifier key string `"<name>+<8 hex key id>+<base64(0x01 || public key)>"`,
/// the form in which the public key is published.
pub fn verifier_key_string(key_name: &str, public_key: &VerifyingKey) -> String {
    let mut typed_key = [0u8; 33];
    typed_key[0] = ED25519_SIGNATURE_TYPE;
    typed_key[1..].copy_from_slice(public_key.as_bytes());
    format!("{key_name}+{}+{}", hex::encode(key_id(key_name, public_key)), BASE64.encode(typed_key))
}

/// Parses a verifier key string produced by [`verifier_key_string`] (or any
/// signed-note implementation), checking that its key id matches.
pub fn parse_verifier_key(s: &str) -> Result<(String, VerifyingKey), CheckpointError> {
    use CheckpointError::MalformedVerifierKey;

    // The name cannot contain '+', but the base64 key can.
    let (name, rest) = s.split_once('+').ok_or(MalformedVerifierKey("expected <name>+<key id>+<key>"))?;
    let (id_hex, key_b64) = rest.split_once('+').ok_or(MalformedVerifierKey("expected <name>+<key id>+<key>"))?;
    if !is_valid_key_name(name) {
        return Err(CheckpointError::InvalidKeyName);
    }
    let id = decode_lower_hex::<4>(id_hex).ok_or(MalformedVerifierKey("key id must be 8 lowercase hex digits"))?;
    let typed_key = decode_base64(key_b64).ok_or(MalformedVerifierKey("key must be canonical standard base64"))?;
    let key_bytes = match typed_key.split_first() {
        Some((&ED25519_SIGNATURE_TYPE, key)) => key,
        Some((&other, _)) => return Err(CheckpointError::UnsupportedKeyType(other)),
        None => return Err(MalformedVerifierKey("key is empty")),
    };
    let key_bytes: &[u8; 32] =
        key_bytes.try_into().map_err(|_| MalformedVerifierKey("Ed25519 public key must be 32 bytes"))?;
    let key = VerifyingKey::from_bytes(key_bytes).map_err(|_| MalformedVerifierKey("not an Ed25519 public key"))?;
    if key.to_edwards().compress().as_bytes() != key_bytes {
        return Err(MalformedVerifierKey("Ed25519 public key is not canonically encoded"));
    }
    if key.is_weak() {
        return Err(CheckpointError::WeakKey);
    }
    let expected = key_id(name, &key);
    if expected != id {
        return Err(CheckpointError::KeyIdMismatch { expected: hex::encode(expected), found: hex::encode(id) });
    }
    Ok((name.to_owned(), key))
}

/// Signs the checkpoint and returns the full note: body, blank line, and one
/// signature line `"— <key_name> <base64(key id || Ed25519 signature over the body)>\n"`.
///
/// The result only verifies if `key_name` is a valid key name and
/// `cp.validate()` passes; callers signing untrusted origins should check that
/// first.
pub fn sign_note(cp: &Checkpoint, key_name: &str, key: &SigningKey) -> String {
    sign_text(&cp.body(), key_name, key)
}

fn sign_text(text: &str, key_name: &str, key: &SigningKey) -> String {
    let signature = key.sign(text.as_bytes());
    let mut blob = [0u8; 4 + Signature::BYTE_SIZE];
    blob[..4].copy_from_slice(&key_id(key_name, &key.verifying_key()));
    blob[4..].copy_from_slice(&signature.to_bytes());
    format!("{text}\n{SIGNATURE_PREFIX}{key_name} {}\n", BASE64.encode(blob))
}

/// Verifies a signed note from the key (`key_name`, `key`) and returns the
/// checkpoint it carries.
///
/// Signatures from other keys are ignored, as the signed-note spec requires,
/// but the note is refused if it is malformed, if no signature is from this
/// key, if any signature from this key fails to verify, or if the text is not
/// a checkpoint. The checkpoint's origin is not compared with `key_name`:
/// callers decide which origins a key may speak for.
pub fn verify_note(note: &str, key_name: &str, key: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
    Checkpoint::parse_body(open_text(note, key_name, key)?)
}

/// The signed-note half of [`verify_note`]: returns the verified note text.
fn open_text<'a>(note: &'a str, key_name: &str, key: &VerifyingKey) -> Result<&'a str, CheckpointError> {
    use CheckpointError::MalformedNote;

    if note.len() > MAX_NOTE_BYTES {
        return Err(CheckpointError::NoteTooLarge { size: note.len(), max: MAX_NOTE_BYTES });
    }
    if !is_valid_key_name(key_name) {
        return Err(CheckpointError::InvalidKeyName);
    }
    // Bytes of multi-byte UTF-8 sequences are all >= 0x80, so this finds
    // exactly the control characters.
    if note.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(MalformedNote("contains a control character other than newline"));
    }
    let split = note.rfind("\n\n").ok_or(MalformedNote("no blank line before the signatures"))?;
    let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
    if text.starts_with(SIGNATURE_PREFIX) || text.contains("\n\u{2014} ") {
        return Err(MalformedNote("text contains a signature line"));
    }
    let signatures =
        signatures.strip_suffix('\n').ok_or(MalformedNote("signature lines must each end with a newline"))?;
    if signatures.is_empty() {
        return Err(MalformedNote("no signature lines"));
    }

    let expected_id = key_id(key_name, key);
    let mut verified = false;
    for (count, line) in signatures.split('\n').enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(CheckpointError::TooManySignatures { max: MAX_SIGNATURES });
        }
        let line = line.strip_prefix(SIGNATURE_PREFIX).ok_or(MalformedNote("signature line must start with \"— \""))?;
        let (name, encoded) =
            line.split_once(' ').ok_or(MalformedNote("signature line must be \"— <key name> <signature>\""))?;
        if !is_valid_key_name(name) {
            return Err(MalformedNote("invalid key name in signature line"));
        }
        let blob = decode_base64(encoded).ok_or(MalformedNote("signature must be canonical standard base64"))?;
        if blob.len() < 5 {
            return Err(MalformedNote("signature is shorter than a key id and one byte"));
        }
        let (id, signature) = blob.split_at(4);
        if name != key_name || id != expected_id {
            continue; // Someone else's signature (a witness, a rotated key): ignore it.
        }
        let invalid = || CheckpointError::InvalidSignature { key_name: key_name.to_owned() };
        let signature = Signature::from_slice(signature).map_err(|_| invalid())?;
        key.verify_strict(text.as_bytes(), &signature).map_err(|_| invalid())?;
        verified = true;
    }
    if !verified {
        return Err(CheckpointError::NoKnownSignature {
            key_name: key_name.to_owned(),
            key_id: hex::encode(expected_id),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
