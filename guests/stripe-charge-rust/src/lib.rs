//! `payment.charge@1` on Stripe, as a Vadyl WebAssembly component.
//!
//! This is the Rust twin of `examples/stripe.connector.json`: same requests (form-encoded
//! `POST /v1/charges` and `POST /v1/refunds`, `Stripe-Version`, `Idempotency-Key`), same retries, same
//! mapping of answers to outputs and contract errors. Copy it to start a connector of your own.
//!
//! # The step convention
//!
//! A connector never performs I/O. Each operation is a *step function*:
//!
//! ```text
//! charge(input, exchanges) -> done(output) | egress(plan) | failed(error)
//! ```
//!
//! 1. The host calls `charge(input, [])`. The connector validates the input, describes the HTTP
//!    request with `egress.build-plan` (the host checks it against the publication's allow-list),
//!    asks the host to add the API key with `secrets.attach-auth-to-egress-plan` (the key never enters
//!    the component), and returns `egress(plan)`.
//! 2. The host sends the request and calls `charge(input, [exchange])` again, on a *fresh instance*:
//!    nothing survives between calls except what the arguments and host imports say.
//! 3. The connector looks at the last exchange and either asks for another attempt (`egress` with a
//!    new plan for the same request), or finishes with `done` or `failed`.
//!
//! So every call is a pure function of (input, exchanges, host-import answers), which is what lets the
//! host replay an invocation for audit. Modules: [`operation`] drives these steps for any Stripe
//! call; [`charge`] and [`refund`] say what to send and how to read the answer; [`response`] maps
//! Stripe's errors; [`form`], [`idempotency`], [`json`] and [`telemetry`] are the helpers.

wit_bindgen::generate!({
    path: "../../wit/worlds/connector",
    world: "payment-charge-v1",
});

mod charge;
mod form;
mod idempotency;
mod json;
mod operation;
mod refund;
mod response;
mod telemetry;

use exports::vadyl::connector::payment_charge_v1_api::{
    ChargeInput, ChargeStep, EgressExchange, Guest, RefundInput, RefundStep,
};

/// Stripe's API origin; tests point it at a local fake by building with `VADYL_GUEST_STRIPE_BASE_URL`.
pub(crate) const BASE_URL: &str = match option_env!("VADYL_GUEST_STRIPE_BASE_URL") {
    Some(url) => url,
    None => "https://api.stripe.com",
};

/// The connector. It has no state: everything it knows arrives in each call.
struct StripeConnector;

impl Guest for StripeConnector {
    fn charge(input: ChargeInput, exchanges: Vec<EgressExchange>) -> ChargeStep {
        match charge::step(&input, &exchanges) {
            operation::Step::Done(output) => ChargeStep::Done(output),
            operation::Step::Egress(plan) => ChargeStep::Egress(plan),
            operation::Step::Failed(error) => ChargeStep::Failed(error),
        }
    }

    fn refund(input: RefundInput, exchanges: Vec<EgressExchange>) -> RefundStep {
        match refund::step(&input, &exchanges) {
            operation::Step::Done(output) => RefundStep::Done(output),
            operation::Step::Egress(plan) => RefundStep::Egress(plan),
            operation::Step::Failed(error) => RefundStep::Failed(error),
        }
    }
}

export!(StripeConnector);
