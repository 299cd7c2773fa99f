//! `refund`: refund all or part of a charge with `POST /v1/refunds`.

use serde_json::Value;

use crate::exports::vadyl::connector::payment_charge_v1_api::{
    ContractError, EgressExchange, RefundInput, RefundOutput, RefundReason, RefundStatus,
};
use crate::form::Form;
use crate::json;
use crate::operation::{self, Step, StripeRequest};
use crate::response::contract_error;
use crate::telemetry;
use crate::vadyl::connector::types::ErrorCode;

/// One step of `refund` (see the crate documentation for the convention).
pub fn step(input: &RefundInput, exchanges: &[EgressExchange]) -> Step<RefundOutput> {
    match request(input) {
        Ok(request) => operation::run(&request, exchanges, read_refund),
        Err(error) => Step::Failed(error),
    }
}

/// Validates the input and describes the Stripe call.
fn request(input: &RefundInput) -> Result<StripeRequest, ContractError> {
    if input.charge_id.is_empty() {
        return Err(invalid("chargeId", "the charge id is empty"));
    }
    if input.amount == Some(0) {
        return Err(invalid("amount", "the amount must be positive when given"));
    }
    let reason = input.reason.map(|reason| match reason {
        RefundReason::RequestedByCustomer => "requested_by_customer",
        RefundReason::Duplicate => "duplicate",
        RefundReason::Fraudulent => "fraudulent",
    });

    let mut form = Form::default();
    form.field("charge", &input.charge_id)
        .optional("amount", input.amount.map(|amount| amount.to_string()).as_deref())
        .optional("reason", reason)
        .metadata(&input.metadata);

    let mut request = StripeRequest::new(
        "refund",
        "/v1/refunds",
        "stripe.create-refund",
        form.finish(),
        input.idempotency_key.as_deref(),
    )?;
    request.summary = input.amount.map(|amount| telemetry::integer("amount", amount)).into_iter().collect();
    Ok(request)
}

/// Reads a Stripe refund object (`output` in the manifest's `refund.response`).
fn read_refund(body: &Value) -> Result<RefundOutput, String> {
    let status = match json::string(body, "status")?.as_str() {
        "pending" | "requires_action" => RefundStatus::Pending,
        "succeeded" => RefundStatus::Succeeded,
        "failed" => RefundStatus::Failed,
        "canceled" => RefundStatus::Canceled,
        other => return Err(format!("unknown refund status `{other}`")),
    };
    Ok(RefundOutput {
        refund_id: json::string(body, "id")?,
        charge_id: json::string(body, "charge")?,
        status,
        amount: json::unsigned(body, "amount")?,
        currency: json::string(body, "currency")?,
    })
}

fn invalid(field: &str, message: &str) -> ContractError {
    let mut error = contract_error(ErrorCode::InvalidInput, message, false);
    error.details.push(("field".to_owned(), field.to_owned()));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> RefundInput {
        RefundInput {
            charge_id: "ch_conformance_1".to_owned(),
            amount: Some(2000),
            reason: Some(RefundReason::RequestedByCustomer),
            metadata: Vec::new(),
            idempotency_key: Some("conformance-refund-1".to_owned()),
        }
    }

    #[test]
    fn the_request_mirrors_the_manifest() {
        let partial = request(&input()).unwrap();
        assert_eq!(partial.path, "/v1/refunds");
        assert_eq!(partial.form, "charge=ch_conformance_1&amount=2000&reason=requested_by_customer");
        let whole = request(&RefundInput { amount: None, reason: None, ..input() }).unwrap();
        assert_eq!(whole.form, "charge=ch_conformance_1");
    }

    #[test]
    fn a_refund_key_differs_from_a_charge_key_for_the_same_form() {
        let refund = request(&RefundInput { idempotency_key: None, ..input() }).unwrap();
        let charge = StripeRequest::new("charge", "/v1/charges", "s", refund.form.clone(), None).unwrap();
        assert_ne!(refund.fingerprint, charge.fingerprint);
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(
            request(&RefundInput { charge_id: String::new(), ..input() }).err().unwrap().code,
            ErrorCode::InvalidInput
        );
        assert_eq!(request(&RefundInput { amount: Some(0), ..input() }).err().unwrap().code, ErrorCode::InvalidInput);
    }

    #[test]
    fn a_stripe_refund_is_read() {
        let body: Value = serde_json::from_str(
            r#"{"id":"re_conf_1","object":"refund","amount":2000,"charge":"ch_conformance_1","currency":"usd","status":"succeeded"}"#,
        )
        .unwrap();
        let output = read_refund(&body).unwrap();
        assert_eq!((output.refund_id.as_str(), output.charge_id.as_str()), ("re_conf_1", "ch_conformance_1"));
        assert_eq!((output.status, output.amount, output.currency.as_str()), (RefundStatus::Succeeded, 2000, "usd"));
        let pending =
            serde_json::json!({"id":"re","charge":"ch","amount":1,"currency":"usd","status":"requires_action"});
        assert_eq!(read_refund(&pending).unwrap().status, RefundStatus::Pending);
        let odd = serde_json::json!({"id":"re","charge":"ch","amount":1,"currency":"usd","status":"odd"});
        assert!(read_refund(&odd).is_err());
    }
}
