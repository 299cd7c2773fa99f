//! Names of things: the identifiers every layer shares.
//!
//! Each identifier is a type with a validating parser, so a malformed name is refused once, at the
//! edge that received it, and the rest of the code never handles a bare string that might be wrong.
//! All of them serialize as the plain strings users type (`stripe-charge-adapter:1.0.0`,
//! `payment.charge`, `sha256:…`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Why an identifier was refused. The message names the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct IdError {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn id_error(what: &'static str, value: &str, reason: &'static str) -> IdError {
    IdError { what, value: value.chars().take(200).collect(), reason }
}

/// Lowercase slug: `[a-z0-9][a-z0-9-]{0,62}`. Used for names, projects and aliases so they are safe
/// in URLs, file names and stream ids without escaping.
fn check_slug(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > 63 {
        return Err(id_error(what, s, "must be 1 to 63 characters"));
    }
    let bytes = s.as_bytes();
    if !(bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit()) {
        return Err(id_error(what, s, "must start with a lowercase letter or a digit"));
    }
    if !bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-') {
        return Err(id_error(what, s, "may contain only lowercase letters, digits and '-'"));
    }
    Ok(())
}

/// Implements Display/FromStr-based serde for a type, so JSON carries the user-facing string form.
macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A slug-shaped identifier newtype (project, alias, implementation name).
macro_rules! slug_type {
    ($(#[$doc:meta])* $t:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $t(String);
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                check_slug($what, s)?;
                Ok(Self(s.to_owned()))
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        string_serde!($t);
    };
}

slug_type!(
    /// A project: the unit of isolation for bindings, memory and secrets.
    ProjectId,
    "project"
);
slug_type!(
    /// The name a project gives a binding (`stripe`).
    BindingAlias,
    "binding alias"
);
slug_type!(
    /// The name part of an implementation id (`stripe-charge-adapter`).
    ImplementationName,
    "implementation name"
);

impl ProjectId {
    /// The project used when a request names none (SPEC §8).
    pub fn default_project() -> Self {
        Self("default".to_owned())
    }
}

/// `name:semver`, e.g. `stripe-charge-adapter:1.0.0`. Immutable once built.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImplementationId {
    pub name: ImplementationName,
    pub version: semver::Version,
}

impl FromStr for ImplementationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (name, version) = s
            .split_once(':')
            .ok_or_else(|| id_error("implementation id", s, "must be name:semver, e.g. stripe-charge-adapter:1.0.0"))?;
        let name = name.parse()?;
        let version = semver::Version::parse(version).map_err(|_| {
            id_error("implementation id", s, "the version after ':' must be a semantic version such as 1.0.0")
        })?;
        if !version.build.is_empty() {
            return Err(id_error("implementation id", s, "build metadata (+…) is not allowed in a version"));
        }
        Ok(Self { name, version })
    }
}

impl fmt::Display for ImplementationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.version)
    }
}
string_serde!(ImplementationId);

/// A dotted surface kind such as `payment.charge`: two or more slug segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContractKind(String);

impl ContractKind {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContractKind {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let segments: Vec<&str> = s.split('.').collect();
        if segments.len() < 2 || s.len() > 127 {
            return Err(id_error("contract kind", s, "must be dotted lowercase segments, e.g. payment.charge"));
        }
        for seg in segments {
            check_slug("contract kind", seg)
                .map_err(|_| id_error("contract kind", s, "each dotted segment must be a lowercase slug"))?;
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for ContractKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(ContractKind);

/// A contract: a surface kind at one major version, written `payment.charge@1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContractRef {
    pub kind: ContractKind,
    pub major_version: u32,
}

impl FromStr for ContractRef {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (kind, major) =
            s.split_once('@').ok_or_else(|| id_error("contract", s, "must be kind@major, e.g. payment.charge@1"))?;
        let major_version =
            major.parse().map_err(|_| id_error("contract", s, "the major version after '@' must be a number"))?;
        Ok(Self { kind: kind.parse()?, major_version })
    }
}

impl fmt::Display for ContractRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.kind, self.major_version)
    }
}
string_serde!(ContractRef);

/// What a binding points at: one exact implementation, or the newest published version of a name
/// that satisfies a semver requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingTarget {
    /// `stripe-charge-adapter:1.0.0`
    Pinned(ImplementationId),
    /// `stripe-charge-adapter@^1`
    Floating { name: ImplementationName, requirement: semver::VersionReq },
}

impl FromStr for BindingTarget {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if let Some((name, req)) = s.split_once('@') {
            let requirement = semver::VersionReq::parse(req).map_err(|_| {
                id_error("binding target", s, "the requirement after '@' must be a semver range such as ^1")
            })?;
            Ok(Self::Floating { name: name.parse()?, requirement })
        } else if s.contains(':') {
            Ok(Self::Pinned(s.parse()?))
        } else {
            Err(id_error("binding target", s, "must be name:1.0.0 (pinned) or name@^1 (floating)"))
        }
    }
}

impl fmt::Display for BindingTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pinned(id) => write!(f, "{id}"),
            Self::Floating { name, requirement } => write!(f, "{name}@{requirement}"),
        }
    }
}
string_serde!(BindingTarget);

/// The sha256 of an artifact's (or a document's) canonical bytes, written `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
    /// The hash a running sha256 has reached (bytes hashed as they arrived).
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl FromStr for ContentHash {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let hex_part =
            s.strip_prefix("sha256:").ok_or_else(|| id_error("content hash", s, "must start with 'sha256:'"))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| id_error("content hash", s, "must be 64 lowercase hex digits after 'sha256:'"))?;
        Ok(Self(out))
    }
}
string_serde!(ContentHash);

/// A publication's number: 1, 2, 3… Never reused, never decreasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PublicationVersion(pub u64);

impl FromStr for PublicationVersion {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Self(n)),
            _ => Err(id_error("publication version", s, "must be a positive whole number")),
        }
    }
}

impl fmt::Display for PublicationVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where an implementation comes from (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ImplementationSource {
    BuiltInNative,
    DeclarativeBundle,
    AuthoredComponent,
}

impl fmt::Display for ImplementationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BuiltInNative => "BuiltInNative",
            Self::DeclarativeBundle => "DeclarativeBundle",
            Self::AuthoredComponent => "AuthoredComponent",
        })
    }
}

/// An ed25519 signature, serialized as standard base64.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes(pub [u8; 64]);

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureBytes({self})")
    }
}

impl fmt::Display for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine;
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl FromStr for SignatureBytes {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| id_error("signature", s, "must be standard base64"))?;
        let arr: [u8; 64] =
            bytes.try_into().map_err(|_| id_error("signature", s, "an ed25519 signature is 64 bytes"))?;
        Ok(Self(arr))
    }
}
string_serde!(SignatureBytes);

/// Why a string is not a JSON Pointer (RFC 6901).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonPointerError {
    #[error("a JSON Pointer must be empty or start with '/'")]
    NoLeadingSlash,
    #[error("'~' must be followed by '0' or '1'")]
    BadEscape,
}

/// A JSON Pointer (RFC 6901): `""` (the whole document) or `/`-prefixed reference tokens, in which `~`
/// appears only as `~0` (a `~`) or `~1` (a `/`). It holds the unescaped tokens; [`fmt::Display`] and
/// serde write the escaped string form, so parsing and printing a valid pointer gives it back unchanged.
///
/// What a token means is up to whoever resolves the pointer: the redactor, for one, reads a `*` token
/// as "every element of an array".
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JsonPointer {
    tokens: Vec<String>,
}

impl JsonPointer {
    /// The pointer to the whole document, `""`.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, JsonPointerError> {
        if s.is_empty() {
            return Ok(Self::root());
        }
        let rest = s.strip_prefix('/').ok_or(JsonPointerError::NoLeadingSlash)?;
        let tokens = rest.split('/').map(unescape_token).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { tokens })
    }

    /// Whether this is the pointer to the whole document.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The unescaped reference tokens, outermost first.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Appends a reference token (unescaped: `a/b` is one token, written `a~1b`).
    pub fn push(&mut self, token: impl Into<String>) {
        self.tokens.push(token.into());
    }

    /// This pointer with one more reference token.
    pub fn child(&self, token: impl Into<String>) -> Self {
        let mut child = self.clone();
        child.push(token);
        child
    }

    /// A reference token in its escaped form: `~` as `~0`, `/` as `~1`.
    pub fn escape_token(token: &str) -> std::borrow::Cow<'_, str> {
        if token.contains(['~', '/']) {
            std::borrow::Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
        } else {
            std::borrow::Cow::Borrowed(token)
        }
    }
}

fn unescape_token(token: &str) -> Result<String, JsonPointerError> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err(JsonPointerError::BadEscape),
        }
    }
    Ok(out)
}

impl FromStr for JsonPointer {
    type Err = JsonPointerError;
    fn from_str(s: &str) -> Result<Self, JsonPointerError> {
        Self::parse(s)
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.tokens {
            write!(f, "/{}", Self::escape_token(token))?;
        }
        Ok(())
    }
}
string_serde!(JsonPointer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implementation_ids_round_trip_and_refuse_garbage() {
        let id: ImplementationId = "stripe-charge-adapter:1.0.0".parse().unwrap();
        assert_eq!(id.to_string(), "stripe-charge-adapter:1.0.0");
        for bad in ["stripe", "Stripe:1.0.0", "stripe:1", "stripe:1.0.0+build", ":1.0.0", "a/b:1.0.0"] {
            assert!(bad.parse::<ImplementationId>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn contract_refs_and_hashes_parse() {
        let c: ContractRef = "payment.charge@1".parse().unwrap();
        assert_eq!(c.kind.as_str(), "payment.charge");
        assert_eq!(c.major_version, 1);
        assert!("payment@1".parse::<ContractRef>().is_err());
        assert!("payment.charge@x".parse::<ContractRef>().is_err());
        let h = ContentHash::of(b"abc");
        assert_eq!(h.to_string().parse::<ContentHash>().unwrap(), h);
        assert!("md5:00".parse::<ContentHash>().is_err());
        assert!("0".parse::<PublicationVersion>().is_err());
    }

    #[test]
    fn json_pointers_parse_unescape_and_print_back() {
        let root: JsonPointer = "".parse().unwrap();
        assert!(root.is_root() && root.tokens().is_empty());
        assert_eq!(root, JsonPointer::root());
        assert_eq!(root.to_string(), "");

        let p: JsonPointer = "/a~1b/~0c/0/".parse().unwrap();
        assert_eq!(p.tokens(), ["a/b", "~c", "0", ""]);
        assert_eq!(p.to_string(), "/a~1b/~0c/0/");
        // `~01` is `~` then `1`, not `/`.
        assert_eq!(JsonPointer::parse("/~01").unwrap().tokens(), ["~1"]);
        assert_eq!(JsonPointer::parse("/*").unwrap().tokens(), ["*"]);

        for (bad, error) in [
            ("a", JsonPointerError::NoLeadingSlash),
            ("#/a", JsonPointerError::NoLeadingSlash),
            ("/a~", JsonPointerError::BadEscape),
            ("/a~2b", JsonPointerError::BadEscape),
            ("/ok/~x", JsonPointerError::BadEscape),
        ] {
            assert_eq!(bad.parse::<JsonPointer>(), Err(error), "{bad}");
        }
        assert!(JsonPointerError::NoLeadingSlash.to_string().contains("start with '/'"));
        assert!(JsonPointerError::BadEscape.to_string().contains("'~' must be followed"));
    }

    #[test]
    fn json_pointer_children_are_escaped_and_serde_uses_the_string() {
        let mut p = JsonPointer::root().child("operations").child("a/b~c");
        p.push("0");
        assert_eq!(p.to_string(), "/operations/a~1b~0c/0");
        assert_eq!(p.tokens(), ["operations", "a/b~c", "0"]);
        assert_eq!(p.to_string().parse::<JsonPointer>().unwrap(), p);
        assert_eq!(JsonPointer::escape_token("plain"), "plain");
        assert_eq!(JsonPointer::escape_token("~/"), "~0~1");

        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json, serde_json::json!("/operations/a~1b~0c/0"));
        assert_eq!(serde_json::from_value::<JsonPointer>(json).unwrap(), p);
        assert!(serde_json::from_value::<JsonPointer>(serde_json::json!("no-slash")).is_err());
    }
}

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Build, conformance, invalidate, secrets, tokens: everything.
    Admin,
    /// Build and run conformance for the implementation names the token lists.
    Publisher,
    /// Bindings, invoke and memory of one project.
    Project,
    /// Read everything, export, verify; change nothing.
    Auditor,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Admin => "admin",
            Self::Publisher => "publisher",
            Self::Project => "project",
            Self::Auditor => "auditor",
        })
    }
}

impl FromStr for Role {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "publisher" => Ok(Self::Publisher),
            "project" => Ok(Self::Project),
            "auditor" => Ok(Self::Auditor),
            other => Err(id_error("role", other, "use admin, publisher, project or auditor")),
        }
    }
}
