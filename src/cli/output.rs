//! What the commands print: [`Output`] chooses between the JSON document (`--json`) and a human
//! summary, and the summaries of the API's answers live here, since a server and the in-process
//! router give the same JSON. Summaries of reports the CLI computes itself (audit, secrets,
//! benchmarks) stay beside their commands.

use serde_json::{json, Value};
use vadyl::ids::{ProjectId, PublicationVersion};

/// How to print: pretty JSON for scripts, or a summary for people.
pub(super) struct Output {
    pub(super) json: bool,
}

impl Output {
    /// Prints `value` as pretty JSON with `--json`, otherwise what `human` makes of it.
    pub(super) fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            println!("{}", human(value));
        }
    }
}

/// The answer itself, pretty-printed: for reads whose JSON is the clearest summary.
pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `vadyl key show`: the verifier key first, as `vadyl audit … --public-key` takes it.
pub(super) fn key_summary(v: &Value) -> String {
    format!(
        "{}\npublic key (base64): {}\nkey id: {}",
        v["verifierKey"].as_str().unwrap_or(""),
        v["publicKey"].as_str().unwrap_or(""),
        v["keyId"].as_str().unwrap_or("")
    )
}

/// A build of any source: the implementation, its content hash and signature.
pub(super) fn build_summary(v: &Value) -> String {
    format!(
        "{} {} ({}, {})\ncontent hash {}\nsignature {}",
        if v["created"] == json!(true) { "built" } else { "already built:" },
        v["implementationId"].as_str().unwrap_or("?"),
        v["source"].as_str().unwrap_or("?"),
        v["contract"].as_str().unwrap_or("?"),
        v["contentHash"].as_str().unwrap_or("?"),
        v["signature"].as_str().unwrap_or("?")
    )
}

/// A conformance run: the verdict, one line per check, and the publication it made.
pub(super) fn conformance_summary(v: &Value) -> String {
    let mut text = format!(
        "conformance run {} of {}: {}\n",
        v["runId"].as_str().unwrap_or("?"),
        v["implementationId"].as_str().unwrap_or("?"),
        if v["passed"] == json!(true) { "passed: true" } else { "passed: false" }
    );
    for c in v["checks"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "  {:<28} {}{}\n",
            c["id"].as_str().unwrap_or("?"),
            c["state"].as_str().unwrap_or("?"),
            c["detail"].as_str().map(|d| format!(" — {d}")).unwrap_or_default()
        ));
    }
    if let Some(p) = v["publicationVersion"].as_u64() {
        text.push_str(&format!("published in publication version {p}"));
    }
    text.trim_end().to_owned()
}

/// An invocation: what ran it, then its output or its error.
pub(super) fn invoke_summary(v: &Value) -> String {
    let head = format!(
        "{} via {} (publication {}, {})",
        v["invocationId"].as_str().unwrap_or("?"),
        v["implementationId"].as_str().unwrap_or("?"),
        v["publicationVersion"],
        v["contentHash"].as_str().unwrap_or("?")
    );
    if v["output"].is_null() {
        format!("{head}\nfailed: {}", serde_json::to_string_pretty(&v["error"]).unwrap_or_default())
    } else {
        format!("{head}\n{}", serde_json::to_string_pretty(&v["output"]).unwrap_or_default())
    }
}

/// A publication version: its status and one line per implementation in it.
pub(super) fn publication_summary(v: &Value) -> String {
    let entries = v["entries"].as_array().map(|e| {
        e.iter()
            .map(|e| {
                format!(
                    "  {} ({}, {}) {}",
                    e["implementationId"].as_str().unwrap_or("?"),
                    e["source"].as_str().unwrap_or("?"),
                    e["contract"].as_str().unwrap_or("?"),
                    e["contentHash"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    format!(
        "publication {} ({}{})\n{}",
        v["publicationVersion"],
        v["status"].as_str().unwrap_or("?"),
        if v["isLatest"] == json!(true) { ", latest" } else { "" },
        entries.unwrap_or_default()
    )
}

/// An invalidation: which version is latest now, if any.
pub(super) fn invalidated_summary(version: &PublicationVersion, v: &Value) -> String {
    match v["latest"]["publicationVersion"].as_u64() {
        Some(l) => format!("invalidated publication {version}; latest is now {l}"),
        None => format!("invalidated publication {version}; no valid publication remains"),
    }
}

/// A binding: its target and what it resolves to now.
pub(super) fn binding_summary(v: &Value) -> String {
    let r = &v["resolvesTo"];
    let now = match r["status"].as_str() {
        Some("resolved") => format!(
            "{} (publication {}, {})",
            r["implementationId"].as_str().unwrap_or("?"),
            r["publicationVersion"],
            r["contentHash"].as_str().unwrap_or("?")
        ),
        Some(other) => other.to_owned(),
        None => "?".to_owned(),
    };
    format!(
        "{}/{} → {}  resolves to {now}",
        v["project"].as_str().unwrap_or("?"),
        v["alias"].as_str().unwrap_or("?"),
        v["target"].as_str().unwrap_or("?")
    )
}

/// A project's bindings, one line each.
pub(super) fn bindings_summary(project: &ProjectId, v: &Value) -> String {
    let list = v["bindings"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        format!("project {project} has no bindings")
    } else {
        list.iter().map(binding_summary).collect::<Vec<_>>().join("\n")
    }
}

/// A new token: the token itself (shown this once), then its id and role.
pub(super) fn token_created_summary(v: &Value) -> String {
    format!(
        "{}\ntoken id {} ({}); shown once, stored only as a hash",
        v["token"].as_str().unwrap_or("?"),
        v["tokenId"].as_str().unwrap_or("?"),
        v["role"].as_str().unwrap_or("?")
    )
}
