//! `GET /console`: the auditor's console, a read-only single page over the audit API.
//!
//! The page, its script and its style sheet are embedded in the binary (`include_str!`), so one
//! command still starts everything and no request ever leaves this origin. The page holds no
//! secret of the server: it signs in with a token the user pastes (kept in the tab's
//! `sessionStorage`), calls only `GET` routes of `/api/Connector`, and checks what it shows itself —
//! each event's hash recomputed in the browser, its inclusion proof folded with SHA-256 and the
//! checkpoint's Ed25519 signature checked with WebCrypto against a key the auditor pins.
//!
//! This module only serves bytes with strict headers: a Content-Security-Policy that allows
//! scripts, styles and connections from this origin alone (no inline script, no framing), no
//! sniffing, no referrer. It never touches the registry.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

/// Same origin only; nothing inline; no plugins, frames or forms; `blob:` only for downloads.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes, to merge beside the API.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| async { asset(INDEX, "text/html; charset=utf-8") }))
        .route("/console/", get(|| async { asset(INDEX, "text/html; charset=utf-8") }))
        .route("/console/app.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/console/app.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The assets change with the binary; a stale script must not verify against a newer API.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_script_and_style_and_holds_no_inline_script() {
        assert!(INDEX.contains(r#"<script src="/console/app.js" defer></script>"#));
        assert!(INDEX.contains(r#"<link rel="stylesheet" href="/console/app.css">"#));
        // Every <script> has a src: CSP would refuse an inline one anyway, but say it here.
        assert_eq!(INDEX.matches("<script").count(), INDEX.matches("<script src=").count());
        // No inline event handler attributes (` onclick=` and the like).
        for (i, _) in INDEX.match_indices(" on") {
            let name: String = INDEX[i + 3..].chars().take_while(|c| c.is_ascii_lowercase()).collect();
            assert!(!INDEX[i + 3 + name.len()..].starts_with('='), "inline handler on{name}");
        }
        for asset in [INDEX, SCRIPT, STYLE] {
            assert!(!asset.contains("http://") && !asset.contains("https://"), "no third-party requests");
        }
    }

    #[test]
    fn the_script_only_reads() {
        // The console is read-only even for an admin token: it never sends anything but GET.
        for method in ["'POST'", "\"POST\"", "'DELETE'", "'PUT'", "'PATCH'"] {
            assert!(!SCRIPT.contains(method), "app.js mentions {method}");
        }
    }
}
