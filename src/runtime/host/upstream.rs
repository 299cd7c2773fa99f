//! The host-controlled upstream of a conformance run: a loopback HTTP server that answers with the
//! responses scripted for the current test vector, in order, and records every request it gets.
//!
//! During a run every egress plan is sent here instead of to its real host (after the plan's real
//! host was checked against the implementation's allow-list), so conformance never reaches a real
//! provider and sees exactly what the implementation sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
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

/// Answers one request with the next scripted response, after recording it.
async fn answer(script: Arc<Mutex<Script>>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let headers = parts.headers;
    let next = {
        let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
        s.received.push(ReceivedRequest {
            method: parts.method.to_string(),
            path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: body.to_vec(),
        });
        s.responses.pop_front()
    };
    let failure = |text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    };
    let Some(r) = next else {
        return Ok(failure("the conformance upstream has no scripted response left"));
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
        Some(serde_json::Value::String(text)) => Bytes::from(echo(text)),
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(echo(serde_json::to_string(&json).unwrap_or_default()))
        }
        None => Bytes::new(),
    };
    Ok(builder.body(Full::new(body)).unwrap_or_else(|_| failure("a scripted response is not valid HTTP")))
}

impl Upstream {
    /// Starts the server on 127.0.0.1 (an ephemeral port) on the current tokio runtime: HTTP/1.1
    /// only, one task per connection, until the upstream is dropped.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let script = Arc::new(Mutex::new(Script::default()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let served = script.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let script = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| answer(script.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
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
