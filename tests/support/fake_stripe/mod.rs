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
//!
//! The files: this one has the handle ([`FakeStripe`]) and the state it shares with the server;
//! `server` the listener, admin routes and fault application; `fault` the scripted faults; `api` auth,
//! routing, idempotency and Stripe's bodies; `endpoints` the charge and refund endpoints; `resources`
//! charges and refunds as Stripe renders them; `request_log` the recorded requests. Internals marked
//! `pub(crate)` are there for the fake's own tests in `tests/fake_stripe.rs`; the API is what this module
//! exports as `pub`.
#![allow(dead_code)]

pub(crate) mod api;
pub(crate) mod endpoints;
mod fault;
mod request_log;
mod resources;
mod server;

pub use fault::{parse_faults, Fault};
pub use request_log::RecordedRequest;
pub use resources::{Card, Charge, Refund};

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::watch;

use api::SavedResponse;
use fault::ValidFault;
use server::serve;

/// Longest delay a fault may ask for, so a typo cannot hang a test run.
pub const MAX_FAULT_DELAY_MS: u64 = 60_000;
/// Stripe accepts idempotency keys of up to 255 characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Smallest and largest charge amount accepted, in the currency's smallest unit (Stripe's USD limits).
pub const MIN_CHARGE_AMOUNT: i64 = 50;
pub const MAX_CHARGE_AMOUNT: i64 = 99_999_999;

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

/// Everything the fake remembers, behind [`Shared`]'s lock.
#[derive(Default)]
pub(crate) struct FakeState {
    counters: HashMap<&'static str, u64>,
    requests: Vec<RecordedRequest>,
    faults: VecDeque<ValidFault>,
    pub(crate) charges: Vec<Charge>,
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
