//! Redaction and canary scanning: finding secret values, in any of their usual encodings, in text
//! that is about to leave the host, and cutting them out.
//!
//! Two jobs share this module, both pure (no I/O):
//!
//! - [`Redactor`] knows a set of secret values and looks for each one raw and in the encodings a
//!   connector is likely to put it in: lowercase/uppercase hex, standard and URL-safe base64 (padded
//!   and not), percent-encoding and JSON string escaping. The host runs it over logs, spans, errors
//!   and outputs before storing them, and the conformance check `secrets.no-raw-material` runs it
//!   with planted canaries to prove that nothing leaked.
//!
//!   Base64 needs care: a secret embedded in a longer string (`Basic base64(user:secret)`) is encoded
//!   differently depending on its byte offset modulo 3, and the characters at its edges mix in the
//!   neighbouring bytes. So for each of the three alignments the redactor keeps the characters that
//!   depend only on the secret (plus, for a secret at the end of the encoded data, the padded tail).
//!   What survives redaction is at most one edge character on each side, i.e. a few bits, never
//!   enough to recover the value.
//!
//!   Matching uses one multi-pattern searcher over every form of every secret, and every match is
//!   found (overlapping ones too), so two secrets that share bytes are both removed. Pattern sets are
//!   built per invocation (the sensitive fields of its input), so build time matters as much as
//!   search time: up to [`PACKED_MAX_PATTERNS`] patterns use the SIMD "packed" searcher (Teddy),
//!   which builds in a few microseconds where an Aho-Corasick automaton takes tens; larger sets use
//!   the automaton.
//!
//! - [`redact_pointers`] blanks the fields a contract marks sensitive, addressed by JSON Pointers
//!   (RFC 6901) in which the token `*` stands for every element of an array.

use std::fmt;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;

use crate::ids::{JsonPointer, JsonPointerError};

/// What replaces a redacted value or occurrence.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are matched only raw: their encodings are too short to search for
/// without redacting unrelated text.
pub const MIN_ENCODED_SECRET_LEN: usize = 4;

/// Why redaction could not be done as asked.
#[derive(Debug, thiserror::Error)]
pub enum RedactionError {
    #[error("cannot build the secret matcher ({patterns} patterns, {bytes} bytes): {source}")]
    Matcher { patterns: usize, bytes: usize, source: aho_corasick::BuildError },
    #[error("invalid JSON Pointer {pointer:?}: {reason}; the whole value was redacted instead")]
    InvalidPointer { pointer: String, reason: JsonPointerError },
}

/// The encoding in which a secret was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// The bytes themselves.
    Raw,
    /// Lowercase hexadecimal.
    HexLower,
    /// Uppercase hexadecimal.
    HexUpper,
    /// Standard base64 (`+/`), padded or not, at any byte alignment.
    Base64,
    /// URL-safe base64 (`-_`), padded or not, at any byte alignment.
    Base64Url,
    /// Percent-encoding (`%XX` for every byte outside RFC 3986's unreserved set).
    PercentEncoded,
    /// The body of a JSON string literal (quotes, backslashes and control characters escaped).
    JsonEscaped,
}

/// Where a secret was first found in a haystack. Carries no part of the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub form: Form,
    /// Byte offset of the match.
    pub offset: usize,
    /// Byte length of the match.
    pub len: usize,
}

/// Finds and removes known secret values. Cheap to share; build once per set of secrets. A redactor
/// is a list of pattern sets: a set built once (say, for a secret version) can be shared by many
/// redactors through [`Redactor::with`], so an invocation only builds the set for its own input.
#[derive(Clone, Default)]
pub struct Redactor {
    parts: Vec<std::sync::Arc<Patterns>>,
}

/// The most patterns handed to the packed searcher; beyond, an Aho-Corasick automaton.
pub const PACKED_MAX_PATTERNS: usize = 64;

/// One compiled set of patterns.
struct Patterns {
    matcher: Matcher,
    /// The form of each pattern, by pattern index.
    forms: Vec<Form>,
    /// Longest pattern, in bytes (bounds how far `find` must look past a match).
    max_len: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the patterns: they are the secrets.
        let patterns: usize = self.parts.iter().map(|p| p.forms.len()).sum();
        f.debug_struct("Redactor").field("patterns", &patterns).finish()
    }
}

impl Redactor {
    /// Builds a redactor for `secrets`. Empty values are ignored; values shorter than
    /// [`MIN_ENCODED_SECRET_LEN`] are matched raw only.
    pub fn new(secrets: impl IntoIterator<Item = Vec<u8>>) -> Result<Self, RedactionError> {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut forms = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut push = |pattern: Vec<u8>, form: Form| {
            if !pattern.is_empty() && seen.insert(pattern.clone()) {
                patterns.push(pattern);
                forms.push(form);
            }
        };
        for secret in secrets {
            for (pattern, form) in forms_of(&secret) {
                push(pattern, form);
            }
        }
        let max_len = patterns.iter().map(Vec::len).max().unwrap_or(0);
        if patterns.is_empty() {
            return Ok(Self::default());
        }
        let matcher = Matcher::build(&patterns)?;
        Ok(Self { parts: vec![std::sync::Arc::new(Patterns { matcher, forms, max_len })] })
    }

    /// This redactor plus everything `other` looks for (sharing `other`'s compiled patterns).
    pub fn with(mut self, other: &Redactor) -> Self {
        self.parts.extend(other.parts.iter().cloned());
        self
    }

    /// Whether the redactor has anything to look for.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The leftmost occurrence of any form of any secret (the longest one when several start there).
    pub fn find(&self, haystack: &[u8]) -> Option<Finding> {
        let mut best: Option<Finding> = None;
        for part in &self.parts {
            if let Some(f) = part.find(haystack) {
                if best.is_none_or(|b| f.offset < b.offset || (f.offset == b.offset && f.len > b.len)) {
                    best = Some(f);
                }
            }
        }
        best
    }

    /// Replaces every occurrence of every form with `[REDACTED]`; overlapping or adjacent occurrences
    /// become one marker. A raw secret that is not valid UTF-8 on its own can split a character; the
    /// leftover bytes become U+FFFD.
    pub fn redact_str(&self, s: &str) -> String {
        let spans = self.spans(s.as_bytes());
        if spans.is_empty() {
            return s.to_owned();
        }
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        for (start, end) in spans {
            out.extend_from_slice(&bytes[at..start]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = end;
        }
        out.extend_from_slice(&bytes[at..]);
        match String::from_utf8(out) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Redacts every string and object key in `v`, recursively. A number whose text contains a
    /// secret becomes the string `[REDACTED]`. Two keys that redact to the same text collapse into one
    /// (the later wins): the output is for display and audit, not for round-tripping.
    pub fn redact_json(&self, v: &Value) -> Value {
        if self.is_empty() {
            return v.clone();
        }
        match v {
            Value::String(s) => Value::String(self.redact_str(s)),
            Value::Number(n) if self.find(n.to_string().as_bytes()).is_some() => Value::String(REDACTED.to_owned()),
            Value::Array(items) => Value::Array(items.iter().map(|item| self.redact_json(item)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, item)| (self.redact_str(k), self.redact_json(item))).collect())
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
        }
    }

    /// Every occurrence as merged, sorted `(start, end)` byte ranges.
    fn spans(&self, haystack: &[u8]) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = self
            .parts
            .iter()
            .flat_map(|p| p.matcher.occurrences(haystack).map(|(_, start, end)| (start, end)))
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

impl Patterns {
    fn find(&self, haystack: &[u8]) -> Option<Finding> {
        let mut best: Option<Finding> = None;
        if let Matcher::Packed(searcher) = &self.matcher {
            // Leftmost-longest is exactly the finding asked for.
            return searcher.find(haystack).map(|m| Finding {
                form: self.forms[m.pattern().as_usize()],
                offset: m.start(),
                len: m.len(),
            });
        }
        for (pattern, start, end) in self.matcher.occurrences(haystack) {
            if let Some(b) = best {
                // Matches arrive by end offset; once they end this far right, none can start before `b`.
                if end.saturating_sub(self.max_len) > b.offset {
                    break;
                }
                if start > b.offset || (start == b.offset && end - start <= b.len) {
                    continue;
                }
            }
            best = Some(Finding { form: self.forms[pattern], offset: start, len: end - start });
        }
        best
    }
}

/// A multi-pattern searcher.
enum Matcher {
    /// Teddy (or Rabin-Karp on short haystacks), leftmost-longest; cheap to build for small sets.
    Packed(aho_corasick::packed::Searcher),
    /// Standard-semantics automaton, for sets too large for the packed searcher.
    Automaton(AhoCorasick),
}

impl Matcher {
    fn build(patterns: &[Vec<u8>]) -> Result<Self, RedactionError> {
        if patterns.len() <= PACKED_MAX_PATTERNS {
            let packed = aho_corasick::packed::Config::new()
                .match_kind(aho_corasick::packed::MatchKind::LeftmostLongest)
                .builder()
                .extend(patterns)
                .build();
            if let Some(searcher) = packed {
                return Ok(Self::Packed(searcher));
            }
        }
        // A contiguous NFA searches the short texts we scan fast; a DFA would cost more to build
        // than a whole invocation.
        AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
            .build(patterns)
            .map(Self::Automaton)
            .map_err(|source| RedactionError::Matcher {
                patterns: patterns.len(),
                bytes: patterns.iter().map(Vec::len).sum(),
                source,
            })
    }

    /// `(pattern, start, end)` of every occurrence, ordered by end for the automaton and by start
    /// for the packed searcher. The packed searcher reports the longest match at each start, which
    /// covers every shorter one there: the union of the ranges is the same.
    fn occurrences<'h>(&'h self, haystack: &'h [u8]) -> Box<dyn Iterator<Item = (usize, usize, usize)> + 'h> {
        match self {
            Self::Automaton(ac) => {
                Box::new(ac.find_overlapping_iter(haystack).map(|m| (m.pattern().as_usize(), m.start(), m.end())))
            }
            Self::Packed(searcher) => {
                let mut at = 0;
                Box::new(std::iter::from_fn(move || {
                    let m = searcher.find(haystack.get(at..)?)?;
                    let (start, end) = (at + m.start(), at + m.end());
                    at = start + 1;
                    Some((m.pattern().as_usize(), start, end))
                }))
            }
        }
    }
}

/// Every searchable form of one secret.
fn forms_of(secret: &[u8]) -> Vec<(Vec<u8>, Form)> {
    let mut out = Vec::new();
    if secret.is_empty() {
        return out;
    }
    out.push((secret.to_vec(), Form::Raw));
    let percent = percent_encode(secret);
    if percent != secret {
        out.push((percent, Form::PercentEncoded));
    }
    if let Ok(text) = std::str::from_utf8(secret) {
        if let Ok(quoted) = serde_json::to_string(text) {
            let body = &quoted[1..quoted.len() - 1];
            if body.as_bytes() != secret {
                out.push((body.as_bytes().to_vec(), Form::JsonEscaped));
            }
        }
    }
    if secret.len() < MIN_ENCODED_SECRET_LEN {
        return out;
    }
    out.push((hex::encode(secret).into_bytes(), Form::HexLower));
    out.push((hex::encode_upper(secret).into_bytes(), Form::HexUpper));
    for (padded, unpadded, form) in
        [(STANDARD, STANDARD_NO_PAD, Form::Base64), (URL_SAFE, URL_SAFE_NO_PAD, Form::Base64Url)]
    {
        for pattern in base64_forms(secret, &padded, &unpadded) {
            out.push((pattern, form));
        }
    }
    out
}

/// Base64 of `secret` at byte offsets 0, 1 and 2 modulo 3: for each, the characters that depend on
/// the secret alone (when more data follows) and the padded and unpadded tails (when it ends there).
fn base64_forms(secret: &[u8], padded: &impl Engine, unpadded: &impl Engine) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for k in 0..3usize {
        let mut data = vec![0u8; k];
        data.extend_from_slice(secret);
        let with_pad = padded.encode(&data);
        let without_pad = unpadded.encode(&data);
        // Character i covers bits [6i, 6i + 6); the secret covers bits [8k, 8(k + n)).
        let first = (8 * k).div_ceil(6);
        let end = 8 * data.len() / 6;
        out.push(without_pad.as_bytes()[first..end].to_vec());
        out.push(without_pad.as_bytes()[first..].to_vec());
        out.push(with_pad.as_bytes()[first..].to_vec());
    }
    out
}

fn percent_encode(bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
    out
}

/// Replaces the values at `pointers` (RFC 6901 JSON Pointers) with the string `[REDACTED]`.
///
/// The token `*` addresses every element of an array (`/metadata/*/1`); on an object it is the
/// member named `*`, as RFC 6901 says. Paths that do not exist are skipped. A pointer that is not a
/// valid JSON Pointer is a bug in whoever produced it; rather than leave the field it meant exposed,
/// the whole value is redacted and the error names the pointer.
pub fn redact_pointers(value: &mut Value, pointers: &[String]) -> Result<(), RedactionError> {
    let mut parsed = Vec::with_capacity(pointers.len());
    for pointer in pointers {
        match parse_pointer(pointer) {
            Ok(tokens) => parsed.push(tokens),
            Err(reason) => {
                *value = Value::String(REDACTED.to_owned());
                return Err(RedactionError::InvalidPointer { pointer: pointer.chars().take(200).collect(), reason });
            }
        }
    }
    for tokens in &parsed {
        redact_at(value, tokens);
    }
    Ok(())
}

/// The unescaped reference tokens of a pointer (`*` keeps its meaning: the walkers below read it).
fn parse_pointer(pointer: &str) -> Result<Vec<String>, JsonPointerError> {
    JsonPointer::parse(pointer).map(|pointer| pointer.tokens().to_vec())
}

fn redact_at(value: &mut Value, tokens: &[String]) {
    let Some((token, rest)) = tokens.split_first() else {
        *value = Value::String(REDACTED.to_owned());
        return;
    };
    match value {
        Value::Array(items) if token == "*" => items.iter_mut().for_each(|item| redact_at(item, rest)),
        Value::Array(items) => {
            if let Some(item) = array_index(token).and_then(|i| items.get_mut(i)) {
                redact_at(item, rest);
            }
        }
        Value::Object(map) => {
            if let Some(item) = map.get_mut(token.as_str()) {
                redact_at(item, rest);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// The values `pointer` addresses in `value` (with `*` as in [`redact_pointers`]); none for a
/// pointer that is invalid or leads nowhere.
pub fn values_at<'v>(value: &'v Value, pointer: &str) -> Vec<&'v Value> {
    fn walk<'v>(value: &'v Value, tokens: &[String], out: &mut Vec<&'v Value>) {
        let Some((token, rest)) = tokens.split_first() else {
            out.push(value);
            return;
        };
        match value {
            Value::Array(items) if token == "*" => items.iter().for_each(|item| walk(item, rest, out)),
            Value::Array(items) => {
                if let Some(item) = array_index(token).and_then(|i| items.get(i)) {
                    walk(item, rest, out);
                }
            }
            Value::Object(map) => {
                if let Some(item) = map.get(token.as_str()) {
                    walk(item, rest, out);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(tokens) = parse_pointer(pointer) {
        walk(value, &tokens, &mut out);
    }
    out
}

/// RFC 6901 array index: `0` or a decimal without leading zeros.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests;
