//! The endpoints: parameter validation like Stripe's, the test cards, and creating and reading charges
//! and refunds.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;

use super::api::{Outcome, Reply, StripeError};
use super::{Card, Charge, FakeState, Refund, MAX_CHARGE_AMOUNT, MIN_CHARGE_AMOUNT};
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

/// A `POST /v1/charges` request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChargeRequest {
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) source: Option<String>,
    pub(crate) customer: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) capture: bool,
    pub(crate) receipt_email: Option<String>,
    pub(crate) statement_descriptor: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
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
pub(crate) fn validate_charge(params: &BTreeMap<String, String>) -> Result<ChargeRequest, StripeError> {
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

pub(crate) fn create_charge(state: &mut FakeState, params: &BTreeMap<String, String>, key: Option<&str>) -> Outcome {
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

pub(super) fn get_charge(state: &FakeState, id: &str) -> Reply {
    match state.charges.iter().find(|c| c.id == id) {
        Some(charge) => Reply::json(StatusCode::OK, &charge.to_json()),
        None => no_such("charge", id, "id"),
    }
}

pub(super) fn get_refund(state: &FakeState, id: &str) -> Reply {
    match state.refunds.iter().find(|r| r.id == id) {
        Some(refund) => Reply::json(StatusCode::OK, &refund.to_json()),
        None => no_such("refund", id, "id"),
    }
}

const REFUND_PARAMS: [&str; 3] = ["charge", "amount", "reason"];
const REFUND_REASONS: [&str; 3] = ["duplicate", "fraudulent", "requested_by_customer"];

pub(crate) fn create_refund(state: &mut FakeState, params: &BTreeMap<String, String>) -> Outcome {
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
