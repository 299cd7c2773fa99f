//! The server: a loopback listener whose connections a fault can cut, the admin routes under `/__fake/`,
//! and the `/v1` handler that records each request and applies the next fault before answering.

use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::api::{handle, Reply, StripeError, STRIPE_SHOULD_RETRY};
use super::fault::{FaultAction, ValidFault};
use super::{parse_faults, Charge, Fault, RecordedRequest, Shared};
/// How long a stopping server lets in-flight requests finish before it is torn down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The per-connection switch a fault uses to close the connection without an answer.
#[derive(Debug, Clone)]
struct Connection {
    dropped: Arc<AtomicBool>,
}

impl Connection {
    fn drop_now(&self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Connected<axum::serve::IncomingStream<'_, ControlledListener>> for Connection {
    fn connect_info(stream: axum::serve::IncomingStream<'_, ControlledListener>) -> Self {
        Connection { dropped: Arc::clone(&stream.io().dropped) }
    }
}

/// A TCP listener whose connections can be cut from a handler (see [`Connection`]).
struct ControlledListener(TcpListener);

impl axum::serve::Listener for ControlledListener {
    type Io = ControlledStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, remote)) => {
                    return (ControlledStream { inner, dropped: Arc::new(AtomicBool::new(false)) }, remote)
                }
                // Accept errors are per-connection or transient (e.g. out of file descriptors): back off, retry.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP stream that fails every read and write once its connection is marked dropped, so hyper closes
/// the socket without writing a response.
struct ControlledStream {
    inner: TcpStream,
    dropped: Arc<AtomicBool>,
}

impl ControlledStream {
    fn check(&self) -> io::Result<()> {
        if self.dropped.load(Ordering::SeqCst) {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "fake Stripe dropped this connection on purpose"))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for ControlledStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ControlledStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serve until `stopped` turns true; in-flight requests then get [`SHUTDOWN_GRACE`] to finish.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>, stopped: watch::Receiver<bool>) {
    let mut graceful = stopped.clone();
    let mut hard = stopped;
    let app = router(shared).into_make_service_with_connect_info::<Connection>();
    let server = axum::serve(ControlledListener(listener), app)
        .with_graceful_shutdown(async move {
            // An error means the handle is gone, which also means stop.
            let _ = graceful.wait_for(|stop| *stop).await;
        })
        .into_future();
    let deadline = async move {
        let _ = hard.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                eprintln!("fake Stripe server stopped with an error: {e}");
            }
        }
        () = deadline => {}
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/__fake/faults", post(admin_push_faults).delete(admin_clear_faults))
        .route("/__fake/requests", get(admin_requests).delete(admin_clear_requests))
        .route("/__fake/charges", get(admin_charges))
        .fallback(api)
        .with_state(shared)
}

fn admin_error(message: String) -> Response {
    let body = json!({ "error": { "type": "fake_admin_error", "message": message } });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn admin_push_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let valid = match parse_faults(&body).and_then(|faults| faults.iter().map(Fault::validate).collect()) {
        Ok(valid) => valid,
        Err(e) => return admin_error(e.to_string()),
    };
    let valid: Vec<ValidFault> = valid;
    let queued = valid.len();
    let mut state = shared.lock();
    state.faults.extend(valid);
    Json(json!({ "queued": queued, "pending": state.faults.len() })).into_response()
}

async fn admin_clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    let mut state = shared.lock();
    let cleared = state.faults.len();
    state.faults.clear();
    Json(json!({ "cleared": cleared })).into_response()
}

async fn admin_requests(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.lock().requests.clone()).into_response()
}

async fn admin_clear_requests(State(shared): State<Arc<Shared>>) -> Response {
    let mut state = shared.lock();
    let cleared = state.requests.len();
    state.requests.clear();
    Json(json!({ "cleared": cleared })).into_response()
}

async fn admin_charges(State(shared): State<Arc<Shared>>) -> Response {
    let charges: Vec<Value> = shared.lock().charges.iter().map(Charge::to_json).collect();
    Json(charges).into_response()
}

/// Every request outside `/__fake/`: record, apply the next fault, then behave like Stripe.
///
/// The work runs in its own task so that, as on the real service, a client that gives up (a timeout during
/// a `delayMs` fault) does not stop the request from completing and being saved under its idempotency key.
async fn api(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match tokio::spawn(api_task(shared, connection, method, uri, headers, body)).await {
        Ok(response) => response,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the fake Stripe handler failed: {e}")).into_response(),
    }
}

async fn api_task(
    shared: Arc<Shared>,
    connection: Connection,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request_id, fault) = {
        let mut state = shared.lock();
        let request_id = state.next_id("req");
        state.requests.push(RecordedRequest::new(&request_id, &method, &uri, &headers, &body));
        let fault = if uri.path().starts_with("/v1/") { state.faults.pop_front() } else { None };
        (request_id, fault)
    };
    let mut forced_500 = None;
    let mut drop_response = false;
    if let Some(fault) = fault {
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        match fault.action {
            FaultAction::Proceed => {}
            FaultAction::DropConnection => {
                connection.drop_now();
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            FaultAction::DropResponse => drop_response = true,
            FaultAction::Redirect(location) => {
                let reply = Reply { status: StatusCode::FOUND, body: String::new(), headers: vec![] }
                    .with_header(header::LOCATION, location);
                return reply.into_response(&request_id, false);
            }
            FaultAction::Status { status, retry_after, should_retry } => {
                let mut reply = injected_error(status).reply();
                if let Some(retry_after) = retry_after {
                    reply = reply.with_header(header::RETRY_AFTER, retry_after);
                }
                if let Some(should_retry) = should_retry {
                    let value = HeaderValue::from_static(if should_retry { "true" } else { "false" });
                    reply = reply.with_header(STRIPE_SHOULD_RETRY, value);
                }
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    forced_500 = Some(reply);
                } else {
                    return reply.into_response(&request_id, false);
                }
            }
        }
    }
    let (reply, replayed) = handle(&shared, &method, &uri, &headers, &body, forced_500);
    if drop_response {
        connection.drop_now();
    }
    reply.into_response(&request_id, replayed)
}

fn injected_error(status: StatusCode) -> StripeError {
    match status.as_u16() {
        429 => StripeError::new(
            status,
            "invalid_request_error",
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        )
        .code("rate_limit"),
        500 => StripeError::new(status, "api_error", "An unknown error occurred"),
        code if code >= 500 => {
            StripeError::new(status, "api_error", "Stripe is temporarily unavailable. Please retry.")
        }
        code => StripeError::invalid(format!("The request failed with status {code} (fault injected by the fake).")),
    }
}
