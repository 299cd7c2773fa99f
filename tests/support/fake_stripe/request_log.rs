//! The request log: what the fake received, for tests to inspect.

use axum::http::{HeaderMap, Method, Uri};
use serde::Serialize;
/// One request as the fake received it (every request outside `/__fake/`), in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    /// The `Request-Id` the fake answered (or would have answered) with.
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names lower-cased, in the order received; values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body, decoded lossily as UTF-8 (Stripe bodies are form-encoded ASCII).
    pub body: String,
}

impl RecordedRequest {
    pub(super) fn new(request_id: &str, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Self {
        RecordedRequest {
            request_id: request_id.to_owned(),
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The last value of a form parameter in the body (e.g. `"metadata[order]"`), if the body decodes.
    pub fn form_param(&self, name: &str) -> Option<String> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&self.body).ok()?;
        pairs.into_iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}
