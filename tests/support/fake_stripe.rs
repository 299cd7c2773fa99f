//! A fake Stripe API on loopback, for Vadyl's tests and for a newcomer's walkthrough.
//!
//! The Stripe charge connector has to be exercised against something that behaves like Stripe where a
//! connector can get it wrong — form-encoded bodies, bearer auth with the secret key, card declines, idempotency
//! keys whose first response is stored and replayed (500s included), `Request-Id` on every response,
//! `Retry-After` and `Stripe-Should-Retry` — without any network beyond 127.0.0.1. Tests start it with
//! [`FakeStripe::start`] (async) or [`FakeStripe::start_blocking`] (its own runtime thread), inject faults with
//! [`FakeStripe::push_fault`] or `POST /__fake/faults`, and inspect what the connector sent with
//! [`FakeStripe::requests`] or `GET /__fake/requests`.
//!
//! Stripe API surface (all under bearer auth `Authorization: Bearer <secret>`):
//! - `POST /v1/charges` (`amount`, `currency`, `source` or `customer`, `description`, `capture`,
//!   `receipt_email`, `statement_descriptor`, `metadata[key]`, `expand[]`). The card comes from one of Stripe's
//!   test tokens: `tok_visa`, `tok_visa_debit`, `tok_mastercard`, `tok_amex` succeed; `tok_chargeDeclined`,
//!   `tok_chargeDeclinedInsufficientFunds`, `tok_chargeDeclinedFraudulent`, `tok_chargeDeclinedExpiredCard`,
//!   `tok_chargeDeclinedIncorrectCvc`, `tok_chargeDeclinedProcessingError` decline with 402 (and leave a failed
//!   charge behind, as Stripe does). Any other token is `resource_missing`.
//! - `GET /v1/charges/{id}`, `POST /v1/refunds` (`charge`, `amount`, `reason`, `metadata[key]`),
//!   `GET /v1/refunds/{id}`. Anything else is Stripe's 404 "Unrecognized request URL".
//!
//! Idempotency follows Stripe's documented rule: a response is saved under its `Idempotency-Key` once the
//! endpoint has started executing (success, card decline, missing resource, injected 500); a request refused
//! before that (bad auth, parameter validation, injected 429/503, redirects) saves nothing. A retry with the
//! same key and the same method, path and parameters gets the saved status and body byte for byte, with
//! `Idempotent-Replayed: true`; anything else with that key is a 400 `idempotency_error`.
//!
//! Faults are queued and each one is consumed by the next `/v1` request (admin routes consume none). A fault
//! may delay (`delayMs`) and then do at most one of: answer with `status` (with `retryAfter` and
//! `shouldRetry` for the `Retry-After` and `Stripe-Should-Retry` headers; a 500 is saved under the request's
//! idempotency key, like Stripe), redirect (`redirectTo`, a 302), close the connection before anything runs
//! (`dropConnection`), or run the request, save it under its key, and close the connection instead of
//! answering (`dropResponse`: the lost-response case idempotency keys exist for).
//!
//! Admin routes (no auth): `POST /__fake/faults` (a fault object or an array of them), `DELETE /__fake/faults`,
//! `GET /__fake/requests`, `DELETE /__fake/requests`, `GET /__fake/charges`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::IntoFuture;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Longest delay a fault may ask for, so a typo cannot hang a test run.
pub const MAX_FAULT_DELAY_MS: u64 = 60_000;
/// Stripe accepts idempotency keys of up to 255 characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Smallest and largest charge amount accepted, in the currency's smallest unit (Stripe's USD limits).
pub const MIN_CHARGE_AMOUNT: i64 = 50;
pub const MAX_CHARGE_AMOUNT: i64 = 99_999_999;
/// How long a stopping server lets in-flight requests finish before it is torn down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const STRIPE_SHOULD_RETRY: HeaderName = HeaderName::from_static("stripe-should-retry");

/// What can go wrong starting the fake or feeding it faults.
#[derive(Debug, thiserror::Error)]
pub enum FakeStripeError {
    #[error("the fake Stripe server only listens on loopback, not on {0}")]
    NotLoopback(SocketAddr),
    #[error("the fake Stripe secret key is empty; pass the key the connector will send as its bearer token")]
    EmptySecret,
    #[error("cannot bind the fake Stripe server to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot read the address the fake Stripe server is bound to: {0}")]
    LocalAddr(io::Error),
    #[error("cannot set up the fake Stripe server's runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot start the fake Stripe server thread: {0}")]
    Thread(io::Error),
    #[error("invalid fault: {0}")]
    InvalidFault(String),
}

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
    fn new(request_id: &str, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Self {
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

/// A fault to apply to one upcoming `/v1` request. JSON form (camelCase) is what `POST /__fake/faults` takes,
/// e.g. `{"status": 429, "retryAfter": "1"}`, `{"status": 503, "shouldRetry": false}`, `{"delayMs": 200}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Answer with this error status (400–599) instead of running the request; a 500 is saved under the
    /// request's idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` header value (a string or a number in JSON); needs `status`.
    #[serde(default, deserialize_with = "string_or_number", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// `Stripe-Should-Retry: true|false`; needs `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should_retry: Option<bool>,
    /// Wait this long before doing anything else (at most [`MAX_FAULT_DELAY_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Answer `302 Found` with this `Location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// Close the connection without answering and without running the request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_connection: bool,
    /// Run the request (saving it under its idempotency key), then close the connection without answering.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_response: bool,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Raw>::deserialize(deserializer)?.map(|raw| match raw {
        Raw::Text(text) => text,
        Raw::Number(number) => number.to_string(),
    }))
}

impl Fault {
    /// Answer with `status` and Stripe's error body for it.
    pub fn status(status: u16) -> Self {
        Fault { status: Some(status), ..Fault::default() }
    }

    /// `429` with `Retry-After: retry_after`.
    pub fn rate_limited(retry_after: impl Into<String>) -> Self {
        Fault { status: Some(429), retry_after: Some(retry_after.into()), ..Fault::default() }
    }

    /// `503` with `Stripe-Should-Retry: should_retry`.
    pub fn unavailable(should_retry: bool) -> Self {
        Fault { status: Some(503), should_retry: Some(should_retry), ..Fault::default() }
    }

    /// `500`, saved under the request's idempotency key like Stripe does.
    pub fn server_error() -> Self {
        Fault::status(500)
    }

    /// Only a delay; the request then runs normally.
    pub fn delay(ms: u64) -> Self {
        Fault { delay_ms: Some(ms), ..Fault::default() }
    }

    /// `302 Found` to `location`.
    pub fn redirect(location: impl Into<String>) -> Self {
        Fault { redirect_to: Some(location.into()), ..Fault::default() }
    }

    /// Close the connection before the request runs.
    pub fn drop_connection() -> Self {
        Fault { drop_connection: true, ..Fault::default() }
    }

    /// Run the request, then close the connection instead of answering.
    pub fn drop_response() -> Self {
        Fault { drop_response: true, ..Fault::default() }
    }

    pub fn with_delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = Some(ms);
        self
    }

    pub fn with_retry_after(mut self, retry_after: impl Into<String>) -> Self {
        self.retry_after = Some(retry_after.into());
        self
    }

    pub fn with_should_retry(mut self, should_retry: bool) -> Self {
        self.should_retry = Some(should_retry);
        self
    }

    fn validate(&self) -> Result<ValidFault, FakeStripeError> {
        let invalid = |message: String| Err(FakeStripeError::InvalidFault(message));
        let actions = [self.status.is_some(), self.redirect_to.is_some(), self.drop_connection, self.drop_response];
        let action_count = actions.iter().filter(|set| **set).count();
        if action_count > 1 {
            return invalid("a fault takes at most one of status, redirectTo, dropConnection, dropResponse".into());
        }
        if action_count == 0 && self.delay_ms.is_none() {
            return invalid("a fault must set status, redirectTo, dropConnection, dropResponse or delayMs".into());
        }
        if self.status.is_none() && (self.retry_after.is_some() || self.should_retry.is_some()) {
            return invalid("retryAfter and shouldRetry only go with a status".into());
        }
        let delay = match self.delay_ms {
            Some(ms) if ms > MAX_FAULT_DELAY_MS => {
                return invalid(format!("delayMs {ms} is longer than the {MAX_FAULT_DELAY_MS} ms allowed"))
            }
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };
        let action = if let Some(code) = self.status {
            let status = match StatusCode::from_u16(code) {
                Ok(status) if status.is_client_error() || status.is_server_error() => status,
                _ => return invalid(format!("status {code} is not an error status (400-599)")),
            };
            let retry_after = match &self.retry_after {
                Some(value) => Some(header_value("retryAfter", value)?),
                None => None,
            };
            FaultAction::Status { status, retry_after, should_retry: self.should_retry }
        } else if let Some(location) = &self.redirect_to {
            FaultAction::Redirect(header_value("redirectTo", location)?)
        } else if self.drop_connection {
            FaultAction::DropConnection
        } else if self.drop_response {
            FaultAction::DropResponse
        } else {
            FaultAction::Proceed
        };
        Ok(ValidFault { delay, action })
    }
}

fn header_value(field: &str, value: &str) -> Result<HeaderValue, FakeStripeError> {
    if value.trim().is_empty() {
        return Err(FakeStripeError::InvalidFault(format!("{field} is empty")));
    }
    HeaderValue::from_str(value)
        .map_err(|_| FakeStripeError::InvalidFault(format!("{field} {value:?} is not a valid HTTP header value")))
}

/// Parse the body of `POST /__fake/faults`: one fault object or an array of them.
pub fn parse_faults(body: &[u8]) -> Result<Vec<Fault>, FakeStripeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| FakeStripeError::InvalidFault(format!("the body is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(FakeStripeError::InvalidFault("expected a fault object or an array of them".into())),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            serde_json::from_value::<Fault>(item)
                .map_err(|e| FakeStripeError::InvalidFault(format!("fault #{index}: {e}")))
        })
        .collect()
}

#[derive(Debug, Clone)]
struct ValidFault {
    delay: Option<Duration>,
    action: FaultAction,
}

#[derive(Debug, Clone)]
enum FaultAction {
    Proceed,
    Status { status: StatusCode, retry_after: Option<HeaderValue>, should_retry: Option<bool> },
    Redirect(HeaderValue),
    DropConnection,
    DropResponse,
}

/// The card a charge was made with, as Stripe returns it in `source` (a connector must redact it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub id: String,
    pub brand: String,
    pub last4: String,
    pub funding: String,
    pub exp_month: u32,
    pub exp_year: u32,
    pub fingerprint: String,
    pub country: String,
}

/// A charge the fake created (declined ones included, with `status == "failed"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    /// `"succeeded"` or `"failed"`.
    pub status: String,
    pub paid: bool,
    pub captured: bool,
    pub refunded: bool,
    pub created: i64,
    pub customer: Option<String>,
    pub description: Option<String>,
    pub receipt_email: Option<String>,
    pub statement_descriptor: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub card: Card,
    pub balance_transaction: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub decline_code: Option<String>,
    /// The `Idempotency-Key` of the request that created it.
    pub idempotency_key: Option<String>,
}

impl Charge {
    /// The charge as Stripe's API renders it.
    pub fn to_json(&self) -> Value {
        let outcome = if self.status == "succeeded" {
            json!({ "network_status": "approved_by_network", "reason": null, "risk_level": "normal",
                    "seller_message": "Payment complete.", "type": "authorized" })
        } else {
            json!({ "network_status": "declined_by_network", "reason": self.decline_code, "risk_level": "normal",
                    "seller_message": "The bank did not return any further details with this decline.",
                    "type": "issuer_declined" })
        };
        let source = json!({
            "id": self.card.id, "object": "card", "brand": self.card.brand, "country": self.card.country,
            "customer": self.customer, "cvc_check": "pass", "exp_month": self.card.exp_month,
            "exp_year": self.card.exp_year, "fingerprint": self.card.fingerprint, "funding": self.card.funding,
            "last4": self.card.last4, "metadata": {},
        });
        json!({
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": if self.captured { self.amount } else { 0 },
            "amount_refunded": self.amount_refunded,
            "balance_transaction": self.balance_transaction,
            "captured": self.captured,
            "created": self.created,
            "currency": self.currency,
            "customer": self.customer,
            "description": self.description,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "livemode": false,
            "metadata": self.metadata,
            "outcome": outcome,
            "paid": self.paid,
            "payment_method": self.card.id,
            "receipt_email": self.receipt_email,
            "refunded": self.refunded,
            "source": source,
            "statement_descriptor": self.statement_descriptor,
            "status": self.status,
        })
    }
}

/// A refund the fake created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub id: String,
    pub charge: String,
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    pub created: i64,
    pub metadata: BTreeMap<String, String>,
    pub balance_transaction: String,
}

impl Refund {
    /// The refund as Stripe's API renders it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "balance_transaction": self.balance_transaction,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "metadata": self.metadata,
            "payment_intent": null,
            "reason": self.reason,
            "receipt_number": null,
            "source_transfer_reversal": null,
            "status": "succeeded",
            "transfer_reversal": null,
        })
    }
}

/// A running fake Stripe server on 127.0.0.1; stops when dropped.
pub struct FakeStripe {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeStripe {
    /// Start on an ephemeral loopback port, on the current tokio runtime.
    pub async fn start(secret: impl Into<String>) -> Result<Self, FakeStripeError> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), secret).await
    }

    /// Start on a given loopback address (port 0 picks a free one), on the current tokio runtime.
    pub async fn start_on(addr: SocketAddr, secret: impl Into<String>) -> Result<Self, FakeStripeError> {
        let shared = Shared::new(secret.into())?;
        if !addr.ip().is_loopback() {
            return Err(FakeStripeError::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr).await.map_err(|source| FakeStripeError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(FakeStripeError::LocalAddr)?;
        let (shutdown, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
        Ok(FakeStripe { addr, shared, shutdown, thread: None })
    }

    /// Start on an ephemeral loopback port, served by a runtime on its own thread, for synchronous tests.
    /// Dropping the handle stops the server and joins the thread.
    pub fn start_blocking(secret: impl Into<String>) -> Result<Self, FakeStripeError> {
        let shared = Shared::new(secret.into())?;
        let wanted = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let std_listener =
            std::net::TcpListener::bind(wanted).map_err(|source| FakeStripeError::Bind { addr: wanted, source })?;
        let addr = std_listener.local_addr().map_err(FakeStripeError::LocalAddr)?;
        std_listener.set_nonblocking(true).map_err(FakeStripeError::Runtime)?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(FakeStripeError::Runtime)?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(std_listener).map_err(FakeStripeError::Runtime)?
        };
        let (shutdown, stopped) = watch::channel(false);
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fake-stripe-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, server_shared, stopped)))
            .map_err(FakeStripeError::Thread)?;
        Ok(FakeStripe { addr, shared, shutdown, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url()` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Every request received so far outside `/__fake/`, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Queue a fault for the next `/v1` request not already claimed by an earlier fault.
    pub fn push_fault(&self, fault: Fault) -> Result<(), FakeStripeError> {
        let valid = fault.validate()?;
        self.shared.lock().faults.push_back(valid);
        Ok(())
    }

    /// Faults still waiting for a request.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().faults.len()
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every charge created so far (declined ones included), in order.
    pub fn charges(&self) -> Vec<Charge> {
        self.shared.lock().charges.clone()
    }

    pub fn charge(&self, id: &str) -> Option<Charge> {
        self.shared.lock().charges.iter().find(|c| c.id == id).cloned()
    }

    /// Every refund created so far, in order.
    pub fn refunds(&self) -> Vec<Refund> {
        self.shared.lock().refunds.clone()
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

struct Shared {
    secret: String,
    state: Mutex<FakeState>,
}

impl Shared {
    fn new(secret: String) -> Result<Arc<Self>, FakeStripeError> {
        if secret.trim().is_empty() {
            return Err(FakeStripeError::EmptySecret);
        }
        Ok(Arc::new(Shared { secret, state: Mutex::new(FakeState::default()) }))
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // Nothing panics while holding the lock; if something ever did, the state is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Default)]
struct FakeState {
    counters: HashMap<&'static str, u64>,
    requests: Vec<RecordedRequest>,
    faults: VecDeque<ValidFault>,
    charges: Vec<Charge>,
    refunds: Vec<Refund>,
    saved: HashMap<String, SavedResponse>,
}

impl FakeState {
    /// Deterministic ids per server: `ch_fake000001`, `ch_fake000002`, … one counter per prefix.
    fn next_id(&mut self, prefix: &'static str) -> String {
        let counter = self.counters.entry(prefix).or_insert(0);
        *counter += 1;
        format!("{prefix}_fake{counter:06}")
    }
}

struct SavedResponse {
    method: Method,
    path: String,
    params: BTreeMap<String, String>,
    reply: Reply,
}

/// A Stripe response before the per-response headers (`Request-Id`, `Idempotent-Replayed`) are added.
#[derive(Debug, Clone)]
struct Reply {
    status: StatusCode,
    body: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    fn json(status: StatusCode, body: &Value) -> Self {
        Reply { status, body: body.to_string(), headers: vec![(header::CONTENT_TYPE, json_content_type())] }
    }

    fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_response(self, request_id: &str, replayed: bool) -> Response {
        let mut headers = HeaderMap::new();
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        headers.insert(REQUEST_ID, generated_header(request_id));
        if replayed {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        (self.status, headers, self.body).into_response()
    }
}

fn json_content_type() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

fn generated_header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).expect("ids the fake generates are ASCII")
}

/// A Stripe error body: `{"error": {"type", "message", "code"?, "param"?, …}}`.
#[derive(Debug, Clone)]
struct StripeError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    code: Option<&'static str>,
    param: Option<String>,
    /// For card errors: the declined charge's id and the issuer's decline code (boxed to keep errors small).
    declined: Option<Box<(String, &'static str)>>,
}

impl StripeError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        StripeError { status, kind, message: message.into(), code: None, param: None, declined: None }
    }

    fn invalid(message: impl Into<String>) -> Self {
        StripeError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    fn missing(param: &str) -> Self {
        StripeError::invalid(format!("Missing required param: {param}.")).code("parameter_missing").param(param)
    }

    fn to_json(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), json!(self.kind));
        error.insert("message".into(), json!(self.message));
        if let Some(code) = self.code {
            error.insert("code".into(), json!(code));
            error.insert(
                "doc_url".into(),
                json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-"))),
            );
        }
        if let Some(param) = &self.param {
            error.insert("param".into(), json!(param));
        }
        if let Some(declined) = &self.declined {
            let (charge, decline_code) = declined.as_ref();
            error.insert("decline_code".into(), json!(decline_code));
            error.insert("charge".into(), json!(charge));
        }
        json!({ "error": error })
    }

    fn reply(&self) -> Reply {
        Reply::json(self.status, &self.to_json())
    }
}

/// What an endpoint produced: `Executed` replies are saved under the idempotency key, `Refused` ones are not.
enum Outcome {
    Executed(Reply),
    Refused(Reply),
}

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
async fn serve(listener: TcpListener, shared: Arc<Shared>, stopped: watch::Receiver<bool>) {
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

enum Route {
    CreateCharge,
    GetCharge(String),
    CreateRefund,
    GetRefund(String),
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/v1/")?;
        let (collection, id) = match rest.split_once('/') {
            Some((collection, id)) if !id.is_empty() && !id.contains('/') => (collection, Some(id)),
            Some(_) => return None,
            None => (rest, None),
        };
        match (method.as_str(), collection, id) {
            ("POST", "charges", None) => Some(Route::CreateCharge),
            ("GET", "charges", Some(id)) => Some(Route::GetCharge(id.to_owned())),
            ("POST", "refunds", None) => Some(Route::CreateRefund),
            ("GET", "refunds", Some(id)) => Some(Route::GetRefund(id.to_owned())),
            _ => None,
        }
    }
}

/// Auth, routing, idempotency and the endpoint itself; synchronous so the check-run-save sequence for an
/// idempotency key happens under one lock.
fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    forced_500: Option<Reply>,
) -> (Reply, bool) {
    if let Err(error) = check_auth(&shared.secret, headers) {
        return (error.reply(), false);
    }
    let Some(route) = Route::parse(method, uri.path()) else {
        let message = format!(
            "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
            method,
            uri.path()
        );
        return (StripeError::new(StatusCode::NOT_FOUND, "invalid_request_error", message).reply(), false);
    };
    let is_post = method == Method::POST;
    let key = if is_post {
        match idempotency_key(headers) {
            Ok(key) => key,
            Err(error) => return (error.reply(), false),
        }
    } else {
        None
    };
    let params = if is_post {
        match parse_form(headers, body) {
            Ok(params) => params,
            Err(error) => return (error.reply(), false),
        }
    } else {
        BTreeMap::new()
    };
    let mut state = shared.lock();
    if let Some(key) = &key {
        if let Some(saved) = state.saved.get(key) {
            if saved.method != *method || saved.path != uri.path() {
                let message = format!(
                    "Keys for idempotent requests can only be used for the same endpoint they were first used for \
                     ('{} {}' vs '{} {}'). Try using a key other than '{key}' if you meant to execute a different request.",
                    saved.method,
                    saved.path,
                    method,
                    uri.path()
                );
                return (StripeError::new(StatusCode::BAD_REQUEST, "idempotency_error", message).reply(), false);
            }
            if saved.params != params {
                let message = format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. \
                     Try using a key other than '{key}' if you meant to execute a different request."
                );
                return (StripeError::new(StatusCode::BAD_REQUEST, "idempotency_error", message).reply(), false);
            }
            return (saved.reply.clone(), true);
        }
    }
    let outcome = match forced_500 {
        Some(reply) => Outcome::Executed(reply),
        None => match route {
            Route::CreateCharge => create_charge(&mut state, &params, key.as_deref()),
            Route::GetCharge(id) => Outcome::Refused(get_charge(&state, &id)),
            Route::CreateRefund => create_refund(&mut state, &params),
            Route::GetRefund(id) => Outcome::Refused(get_refund(&state, &id)),
        },
    };
    match outcome {
        Outcome::Refused(reply) => (reply, false),
        Outcome::Executed(reply) => {
            if let Some(key) = key {
                let saved =
                    SavedResponse { method: method.clone(), path: uri.path().to_owned(), params, reply: reply.clone() };
                state.saved.insert(key, saved);
            }
            (reply, false)
        }
    }
}

fn check_auth(secret: &str, headers: &HeaderMap) -> Result<(), StripeError> {
    let unauthorized =
        |message: String| Err(StripeError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message));
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using \
             Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication \
             for details, or we can help at https://support.stripe.com/."
                .into(),
        );
    };
    let Ok(value) = value.to_str() else {
        return unauthorized("Invalid API Key provided: the Authorization header is not valid ASCII".into());
    };
    let Some((scheme, key)) = value.trim().split_once(' ') else {
        return unauthorized(format!(
            "Invalid Authorization header: expected 'Bearer YOUR_SECRET_KEY', got {} characters without a scheme",
            value.len()
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return unauthorized(format!(
            "This fake Stripe accepts only Bearer auth ('Authorization: Bearer YOUR_SECRET_KEY'), not {scheme}."
        ));
    }
    let key = key.trim();
    if key != secret {
        return unauthorized(format!("Invalid API Key provided: {}", mask_key(key)));
    }
    Ok(())
}

/// Mask an API key the way Stripe does in its 401 message: the `sk_test_`-style prefix and the last four
/// characters stay, everything else becomes `*` (short keys are masked completely).
fn mask_key(key: &str) -> String {
    const PREFIXES: [&str; 6] = ["sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_"];
    let prefix = PREFIXES.iter().find(|p| key.starts_with(**p)).copied().unwrap_or("");
    let rest: Vec<char> = key[prefix.len()..].chars().collect();
    if rest.len() < 12 {
        return format!("{prefix}{}", "*".repeat(rest.len()));
    }
    let tail: String = rest[rest.len() - 4..].iter().collect();
    format!("{prefix}{}{tail}", "*".repeat(rest.len() - 4))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, StripeError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key =
        value.to_str().map_err(|_| StripeError::invalid("The Idempotency-Key header must be printable ASCII."))?.trim();
    if key.is_empty() {
        return Err(StripeError::invalid("The Idempotency-Key header is empty."));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(StripeError::invalid(format!(
            "Idempotency keys can be at most {MAX_IDEMPOTENCY_KEY_LEN} characters long; this one has {}.",
            key.len()
        )));
    }
    Ok(Some(key.to_owned()))
}

/// Decode a form-encoded body into parameters (the last value wins for a repeated name).
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<BTreeMap<String, String>, StripeError> {
    if body.is_empty() {
        return Ok(BTreeMap::new());
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(StripeError::invalid(format!(
                "Invalid request: Stripe takes form-encoded parameters (Content-Type: \
                 application/x-www-form-urlencoded), not {:?}.",
                String::from_utf8_lossy(content_type.as_bytes())
            )));
        }
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| StripeError::invalid(format!("Invalid request: the body is not form-encoded ({e}).")))?;
    Ok(pairs.into_iter().collect())
}

/// `metadata[key]` → `Some(Ok("key"))`; a malformed `metadata…` name → `Some(Err(..))`; otherwise `None`.
fn metadata_key(name: &str) -> Option<Result<&str, StripeError>> {
    let rest = name.strip_prefix("metadata")?;
    let inner = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    Some(match inner {
        Some(key) if !key.is_empty() && !key.contains('[') && !key.contains(']') => {
            if key.chars().count() > 40 {
                Err(StripeError::invalid(format!("Metadata key {key:?} is longer than 40 characters."))
                    .code("parameter_invalid_string")
                    .param(name))
            } else {
                Ok(key)
            }
        }
        _ => Err(StripeError::invalid(format!("Invalid metadata parameter {name:?}: use metadata[key]=value."))
            .param("metadata")),
    })
}

fn is_expand(name: &str) -> bool {
    name.strip_prefix("expand[").is_some_and(|rest| rest.ends_with(']'))
}

/// Check names against an endpoint's known parameters and collect `metadata[…]`.
fn check_params(params: &BTreeMap<String, String>, known: &[&str]) -> Result<BTreeMap<String, String>, StripeError> {
    let mut metadata = BTreeMap::new();
    for (name, value) in params {
        if known.contains(&name.as_str()) || is_expand(name) {
            continue;
        }
        match metadata_key(name) {
            Some(Ok(key)) => {
                if value.chars().count() > 500 {
                    return Err(StripeError::invalid(format!(
                        "Metadata value for {key:?} is longer than 500 characters."
                    ))
                    .code("parameter_invalid_string")
                    .param(name.as_str()));
                }
                // On create, an empty value means "no such key", as on Stripe.
                if !value.is_empty() {
                    metadata.insert(key.to_owned(), value.clone());
                }
            }
            Some(Err(error)) => return Err(error),
            None => {
                return Err(StripeError::invalid(format!("Received unknown parameter: {name}"))
                    .code("parameter_unknown")
                    .param(name.as_str()))
            }
        }
    }
    if metadata.len() > 50 {
        return Err(StripeError::invalid("Metadata can have at most 50 keys.").param("metadata"));
    }
    Ok(metadata)
}

fn parse_integer(params: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, StripeError> {
    match params.get(name) {
        None => Ok(None),
        Some(raw) => raw.trim().parse::<i64>().map(Some).map_err(|_| {
            StripeError::invalid(format!("Invalid integer: {raw}")).code("parameter_invalid_integer").param(name)
        }),
    }
}

fn non_empty(params: &BTreeMap<String, String>, name: &str) -> Option<String> {
    params.get(name).filter(|v| !v.is_empty()).cloned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ChargeRequest {
    amount: i64,
    currency: String,
    source: Option<String>,
    customer: Option<String>,
    description: Option<String>,
    capture: bool,
    receipt_email: Option<String>,
    statement_descriptor: Option<String>,
    metadata: BTreeMap<String, String>,
}

const CHARGE_PARAMS: [&str; 9] = [
    "amount",
    "currency",
    "source",
    "customer",
    "description",
    "capture",
    "receipt_email",
    "statement_descriptor",
    "statement_descriptor_suffix",
];

/// Parameter validation for `POST /v1/charges` (failures here are not saved under an idempotency key).
fn validate_charge(params: &BTreeMap<String, String>) -> Result<ChargeRequest, StripeError> {
    let metadata = check_params(params, &CHARGE_PARAMS)?;
    let amount = parse_integer(params, "amount")?.ok_or_else(|| StripeError::missing("amount"))?;
    if amount < MIN_CHARGE_AMOUNT {
        return Err(StripeError::invalid(format!(
            "Amount must be at least {MIN_CHARGE_AMOUNT} in the currency's smallest unit, got {amount}."
        ))
        .code("amount_too_small")
        .param("amount"));
    }
    if amount > MAX_CHARGE_AMOUNT {
        return Err(StripeError::invalid(format!("Amount must be no more than {MAX_CHARGE_AMOUNT}, got {amount}."))
            .code("amount_too_large")
            .param("amount"));
    }
    let currency = params.get("currency").ok_or_else(|| StripeError::missing("currency"))?;
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(StripeError::invalid(format!("Invalid currency: {currency}. Use a three-letter ISO code."))
            .param("currency"));
    }
    let capture = match params.get("capture").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(StripeError::invalid(format!("Invalid boolean: {other}"))
                .code("parameter_invalid_boolean")
                .param("capture"))
        }
    };
    let source = non_empty(params, "source");
    let customer = non_empty(params, "customer");
    if source.is_none() && customer.is_none() {
        return Err(StripeError::invalid("Must provide source or customer.").code("parameter_missing").param("source"));
    }
    Ok(ChargeRequest {
        amount,
        currency: currency.to_ascii_lowercase(),
        source,
        customer,
        description: non_empty(params, "description"),
        capture,
        receipt_email: non_empty(params, "receipt_email"),
        statement_descriptor: non_empty(params, "statement_descriptor"),
        metadata,
    })
}

struct Decline {
    code: &'static str,
    decline_code: &'static str,
    message: &'static str,
}

struct TestCard {
    token: &'static str,
    brand: &'static str,
    last4: &'static str,
    funding: &'static str,
    decline: Option<Decline>,
}

const fn card(token: &'static str, brand: &'static str, last4: &'static str, funding: &'static str) -> TestCard {
    TestCard { token, brand, last4, funding, decline: None }
}

const fn declined(
    token: &'static str,
    last4: &'static str,
    code: &'static str,
    decline_code: &'static str,
    message: &'static str,
) -> TestCard {
    TestCard { token, brand: "Visa", last4, funding: "credit", decline: Some(Decline { code, decline_code, message }) }
}

/// Stripe's test tokens that the fake knows.
const TEST_CARDS: [TestCard; 10] = [
    card("tok_visa", "Visa", "4242", "credit"),
    card("tok_visa_debit", "Visa", "5556", "debit"),
    card("tok_mastercard", "MasterCard", "4444", "credit"),
    card("tok_amex", "American Express", "8431", "credit"),
    declined("tok_chargeDeclined", "0002", "card_declined", "generic_decline", "Your card was declined."),
    declined(
        "tok_chargeDeclinedInsufficientFunds",
        "9995",
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    declined("tok_chargeDeclinedFraudulent", "0019", "card_declined", "fraudulent", "Your card was declined."),
    declined("tok_chargeDeclinedExpiredCard", "0069", "expired_card", "expired_card", "Your card has expired."),
    declined(
        "tok_chargeDeclinedIncorrectCvc",
        "0127",
        "incorrect_cvc",
        "incorrect_cvc",
        "Your card's security code is incorrect.",
    ),
    declined(
        "tok_chargeDeclinedProcessingError",
        "0119",
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
];

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn create_charge(state: &mut FakeState, params: &BTreeMap<String, String>, key: Option<&str>) -> Outcome {
    let request = match validate_charge(params) {
        Ok(request) => request,
        Err(error) => return Outcome::Refused(error.reply()),
    };
    // From here on the endpoint is executing: every answer is saved under the idempotency key.
    let Some(source) = &request.source else {
        let customer = request.customer.clone().unwrap_or_default();
        let error =
            StripeError::invalid(format!("No such customer: '{customer}'")).code("resource_missing").param("customer");
        return Outcome::Executed(error.reply());
    };
    let Some(test_card) = TEST_CARDS.iter().find(|c| c.token == source) else {
        let error = StripeError::invalid(format!("No such token: '{source}'")).code("resource_missing").param("source");
        return Outcome::Executed(error.reply());
    };
    let card = Card {
        id: state.next_id("card"),
        brand: test_card.brand.to_owned(),
        last4: test_card.last4.to_owned(),
        funding: test_card.funding.to_owned(),
        exp_month: 12,
        exp_year: 2034,
        fingerprint: format!("fakeFingerprint{}", test_card.last4),
        country: "US".to_owned(),
    };
    let id = state.next_id("ch");
    let succeeded = test_card.decline.is_none();
    let balance_transaction = if succeeded && request.capture { Some(state.next_id("txn")) } else { None };
    let charge = Charge {
        id: id.clone(),
        amount: request.amount,
        amount_refunded: 0,
        currency: request.currency,
        status: if succeeded { "succeeded" } else { "failed" }.to_owned(),
        paid: succeeded,
        captured: succeeded && request.capture,
        refunded: false,
        created: now_unix(),
        customer: request.customer,
        description: request.description,
        receipt_email: request.receipt_email,
        statement_descriptor: request.statement_descriptor,
        metadata: request.metadata,
        card,
        balance_transaction,
        failure_code: test_card.decline.as_ref().map(|d| d.code.to_owned()),
        failure_message: test_card.decline.as_ref().map(|d| d.message.to_owned()),
        decline_code: test_card.decline.as_ref().map(|d| d.decline_code.to_owned()),
        idempotency_key: key.map(str::to_owned),
    };
    let reply = match &test_card.decline {
        None => Reply::json(StatusCode::OK, &charge.to_json()),
        Some(decline) => StripeError {
            status: StatusCode::PAYMENT_REQUIRED,
            kind: "card_error",
            message: decline.message.to_owned(),
            code: Some(decline.code),
            param: None,
            declined: Some(Box::new((id, decline.decline_code))),
        }
        .reply(),
    };
    state.charges.push(charge);
    Outcome::Executed(reply)
}

fn no_such(kind: &str, id: &str, param: &str) -> Reply {
    StripeError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("No such {kind}: '{id}'"))
        .code("resource_missing")
        .param(param)
        .reply()
}

fn get_charge(state: &FakeState, id: &str) -> Reply {
    match state.charges.iter().find(|c| c.id == id) {
        Some(charge) => Reply::json(StatusCode::OK, &charge.to_json()),
        None => no_such("charge", id, "id"),
    }
}

fn get_refund(state: &FakeState, id: &str) -> Reply {
    match state.refunds.iter().find(|r| r.id == id) {
        Some(refund) => Reply::json(StatusCode::OK, &refund.to_json()),
        None => no_such("refund", id, "id"),
    }
}

const REFUND_PARAMS: [&str; 3] = ["charge", "amount", "reason"];
const REFUND_REASONS: [&str; 3] = ["duplicate", "fraudulent", "requested_by_customer"];

fn create_refund(state: &mut FakeState, params: &BTreeMap<String, String>) -> Outcome {
    let validated = (|| {
        let metadata = check_params(params, &REFUND_PARAMS)?;
        let charge_id = non_empty(params, "charge").ok_or_else(|| StripeError::missing("charge"))?;
        let amount = parse_integer(params, "amount")?;
        if let Some(amount) = amount.filter(|a| *a < 1) {
            return Err(StripeError::invalid(format!("Invalid positive integer: {amount}"))
                .code("parameter_invalid_integer")
                .param("amount"));
        }
        let reason = non_empty(params, "reason");
        if let Some(reason) = reason.as_deref().filter(|r| !REFUND_REASONS.contains(r)) {
            return Err(StripeError::invalid(format!(
                "Invalid reason: {reason}; must be one of duplicate, fraudulent, or requested_by_customer"
            ))
            .param("reason"));
        }
        Ok((charge_id, amount, reason, metadata))
    })();
    let (charge_id, amount, reason, metadata) = match validated {
        Ok(validated) => validated,
        Err(error) => return Outcome::Refused(error.reply()),
    };
    let Some(index) = state.charges.iter().position(|c| c.id == charge_id) else {
        return Outcome::Executed(no_such("charge", &charge_id, "charge"));
    };
    let charge = &state.charges[index];
    if charge.status != "succeeded" {
        let error = StripeError::invalid(format!("Charge {charge_id} has no successful payment to refund."))
            .code("charge_not_refundable")
            .param("charge");
        return Outcome::Executed(error.reply());
    }
    let refundable = charge.amount - charge.amount_refunded;
    if refundable == 0 {
        let error = StripeError::invalid(format!("Charge {charge_id} has already been refunded."))
            .code("charge_already_refunded")
            .param("charge");
        return Outcome::Executed(error.reply());
    }
    let amount = amount.unwrap_or(refundable);
    if amount > refundable {
        let error = StripeError::invalid(format!(
            "Refund amount ({amount}) is greater than unrefunded amount on charge ({refundable})"
        ))
        .code("amount_too_large")
        .param("amount");
        return Outcome::Executed(error.reply());
    }
    let currency = charge.currency.clone();
    let refund = Refund {
        id: state.next_id("re"),
        charge: charge_id,
        amount,
        currency,
        reason,
        created: now_unix(),
        metadata,
        balance_transaction: state.next_id("txn"),
    };
    let charge = &mut state.charges[index];
    charge.amount_refunded += amount;
    charge.refunded = charge.amount_refunded == charge.amount;
    let reply = Reply::json(StatusCode::OK, &refund.to_json());
    state.refunds.push(refund);
    Outcome::Executed(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(body: &str) -> BTreeMap<String, String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        parse_form(&headers, body.as_bytes()).unwrap()
    }

    #[test]
    fn faults_parse_from_json_and_validate() {
        let faults = parse_faults(
            br#"[{"status": 429, "retryAfter": 1}, {"status": 503, "shouldRetry": false}, {"delayMs": 5}]"#,
        )
        .unwrap();
        assert_eq!(faults[0], Fault::rate_limited("1"));
        assert_eq!(faults[1], Fault::unavailable(false));
        assert_eq!(faults[2], Fault::delay(5));
        assert!(faults.iter().all(|f| f.validate().is_ok()));
        assert_eq!(parse_faults(br#"{"dropConnection": true}"#).unwrap(), vec![Fault::drop_connection()]);
    }

    #[test]
    fn bad_faults_are_refused_with_a_reason() {
        let unknown = parse_faults(br#"{"statu": 500}"#).unwrap_err().to_string();
        assert!(unknown.contains("fault #0") && unknown.contains("statu"), "{unknown}");
        assert!(parse_faults(b"[1]").is_err());
        assert!(parse_faults(b"not json").unwrap_err().to_string().contains("not JSON"));
        let cases = [
            (Fault::status(200), "not an error status"),
            (Fault::default(), "must set"),
            (Fault { retry_after: Some("1".into()), ..Fault::delay(1) }, "only go with a status"),
            (Fault { drop_connection: true, ..Fault::status(500) }, "at most one"),
            (Fault::delay(MAX_FAULT_DELAY_MS + 1), "longer than"),
            (Fault::rate_limited("bad\nvalue"), "not a valid HTTP header value"),
            (Fault::redirect(" "), "empty"),
        ];
        for (fault, expected) in cases {
            let message = fault.validate().unwrap_err().to_string();
            assert!(message.contains(expected), "{fault:?}: {message}");
        }
    }

    #[test]
    fn api_keys_are_masked_like_stripe_does() {
        assert_eq!(mask_key("sk_test_abcdefghijklmnop1234"), "sk_test_****************1234");
        assert_eq!(mask_key("sk_test_short"), "sk_test_*****");
        assert_eq!(mask_key("whatever-secret-value"), "*****************alue");
    }

    #[test]
    fn auth_accepts_only_the_configured_bearer_key() {
        let mut headers = HeaderMap::new();
        assert!(check_auth("sk_test_x", &headers).unwrap_err().message.contains("did not provide an API key"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic c2tfdGVzdF94Og=="));
        assert!(check_auth("sk_test_x", &headers).unwrap_err().message.contains("only Bearer"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk_test_y"));
        assert_eq!(check_auth("sk_test_x", &headers).unwrap_err().status, StatusCode::UNAUTHORIZED);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer sk_test_x"));
        assert!(check_auth("sk_test_x", &headers).is_ok());
    }

    #[test]
    fn charge_params_validate_like_stripe() {
        let ok = validate_charge(&params("amount=2000&currency=USD&source=tok_visa&metadata[order]=42")).unwrap();
        assert_eq!((ok.amount, ok.currency.as_str(), ok.capture), (2000, "usd", true));
        assert_eq!(ok.metadata.get("order").map(String::as_str), Some("42"));
        let cases = [
            ("currency=usd&source=tok_visa", "parameter_missing", "amount"),
            ("amount=abc&currency=usd&source=tok_visa", "parameter_invalid_integer", "amount"),
            ("amount=10&currency=usd&source=tok_visa", "amount_too_small", "amount"),
            ("amount=2000&source=tok_visa", "parameter_missing", "currency"),
            ("amount=2000&currency=usd", "parameter_missing", "source"),
            ("amount=2000&currency=usd&source=tok_visa&colour=red", "parameter_unknown", "colour"),
            ("amount=2000&currency=usd&source=tok_visa&capture=maybe", "parameter_invalid_boolean", "capture"),
        ];
        for (body, code, param) in cases {
            let error = validate_charge(&params(body)).unwrap_err();
            assert_eq!((error.code, error.param.as_deref()), (Some(code), Some(param)), "{body}");
        }
        assert!(validate_charge(&params("amount=2000&currency=us1&source=tok_visa")).is_err());
        assert!(validate_charge(&params("amount=2000&currency=usd&source=tok_visa&metadata[a][b]=1")).is_err());
    }

    #[test]
    fn forms_must_be_form_encoded() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let error = parse_form(&headers, br#"{"amount":1}"#).unwrap_err();
        assert!(error.message.contains("form-encoded"), "{}", error.message);
        assert_eq!(params("a=1&a=2").get("a").map(String::as_str), Some("2"));
    }

    #[test]
    fn routes_cover_only_what_the_fake_implements() {
        assert!(matches!(Route::parse(&Method::POST, "/v1/charges"), Some(Route::CreateCharge)));
        assert!(matches!(Route::parse(&Method::GET, "/v1/charges/ch_1"), Some(Route::GetCharge(id)) if id == "ch_1"));
        assert!(matches!(Route::parse(&Method::POST, "/v1/refunds"), Some(Route::CreateRefund)));
        assert!(Route::parse(&Method::GET, "/v1/charges").is_none());
        assert!(Route::parse(&Method::POST, "/v1/charges/ch_1/capture").is_none());
        assert!(Route::parse(&Method::POST, "/v2/charges").is_none());
    }

    #[test]
    fn refunds_track_what_is_left_on_the_charge() {
        let mut state = FakeState::default();
        let created = create_charge(&mut state, &params("amount=1000&currency=usd&source=tok_visa"), None);
        assert!(matches!(created, Outcome::Executed(ref r) if r.status == StatusCode::OK));
        let refund = |state: &mut FakeState, body: &str| match create_refund(state, &params(body)) {
            Outcome::Executed(reply) | Outcome::Refused(reply) => reply,
        };
        assert_eq!(refund(&mut state, "charge=ch_fake000001&amount=400").status, StatusCode::OK);
        let too_much = refund(&mut state, "charge=ch_fake000001&amount=700");
        assert!(too_much.body.contains("amount_too_large"), "{}", too_much.body);
        assert_eq!(refund(&mut state, "charge=ch_fake000001").status, StatusCode::OK);
        assert!(state.charges[0].refunded);
        assert!(refund(&mut state, "charge=ch_fake000001").body.contains("charge_already_refunded"));
        assert_eq!(refund(&mut state, "charge=ch_nope").status, StatusCode::NOT_FOUND);
        assert!(refund(&mut state, "charge=ch_fake000001&reason=bored").body.contains("\"param\":\"reason\""));
    }
}
