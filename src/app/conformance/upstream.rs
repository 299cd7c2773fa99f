//! The host-controlled upstream of a conformance run: a loopback HTTP server that answers with the
//! responses scripted for the current test vector, in order, and records every request it gets.
//!
//! During a run every egress plan is sent here instead of to its real host (after the plan's real
//! host was checked against the implementation's allow-list), so conformance never reaches a real
//! provider and sees exactly what the implementation sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// One scripted response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScriptedResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// A JSON body (sent as `application/json`), or a text body.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

/// A request the upstream received.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedRequest {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Script {
    responses: VecDeque<ScriptedResponse>,
    received: Vec<ReceivedRequest>,
}

pub struct Upstream {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let next = {
        let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
        s.received.push(ReceivedRequest {
            method: method.to_string(),
            path_and_query: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: body.to_vec(),
        });
        s.responses.pop_front()
    };
    let Some(r) = next else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the conformance upstream has no scripted response left")
            .into_response();
    };
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(status);
    for (k, v) in &r.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    // `{{request.headers.NAME}}` in a scripted body is replaced by that request header: a provider
    // that echoes what it was sent (some put the credential in error messages) is a case the suite
    // must be able to stage.
    let echo = |text: String| -> String {
        let mut out = text;
        for (name, value) in headers.iter() {
            let marker = format!("{{{{request.headers.{}}}}}", name.as_str());
            if out.contains(&marker) {
                out = out.replace(&marker, &String::from_utf8_lossy(value.as_bytes()));
            }
        }
        out
    };
    let body = match r.body {
        Some(serde_json::Value::String(text)) => axum::body::Body::from(echo(text)),
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            axum::body::Body::from(echo(serde_json::to_string(&json).unwrap_or_default()))
        }
        None => axum::body::Body::empty(),
    };
    builder.body(body).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

impl Upstream {
    /// Starts the server on 127.0.0.1 (an ephemeral port) on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let script = Arc::new(Mutex::new(Script::default()));
        let app = axum::Router::new().fallback(answer).with_state(script.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self { addr, script, shutdown: Some(tx) })
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the script and forgets what was received.
    pub fn load(&self, responses: Vec<ScriptedResponse>) {
        let mut s = self.script.lock().unwrap_or_else(|p| p.into_inner());
        s.responses = responses.into();
        s.received.clear();
    }

    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.script.lock().unwrap_or_else(|p| p.into_inner()).received.clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
