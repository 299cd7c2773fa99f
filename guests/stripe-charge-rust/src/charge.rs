//! `charge`: create a charge with `POST /v1/charges`.

use serde_json::Value;

use crate::exports::vadyl::connector::payment_charge_v1_api::{
    ChargeInput, ChargeOutput, ChargeStatus, ContractError, EgressExchange,
};
use crate::form::Form;
use crate::json;
use crate::operation::{self, Step, StripeRequest};
use crate::response::contract_error;
use crate::telemetry;
use crate::vadyl::connector::types::ErrorCode;

/// One step of `charge` (see the crate documentation for the convention).
pub fn step(input: &ChargeInput, exchanges: &[EgressExchange]) -> Step<ChargeOutput> {
    match request(input) {
        Ok(request) => operation::run(&request, exchanges, read_charge),
        Err(error) => Step::Failed(error),
    }
}

/// Validates the input and describes the Stripe call.
fn request(input: &ChargeInput) -> Result<StripeRequest, ContractError> {
    if input.amount == 0 {
        return Err(invalid("amount", "the amount must be positive"));
    }
    if input.currency.len() != 3 || !input.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid("currency", "the currency must be a three-letter ISO 4217 code"));
    }
    if input.source.is_empty() {
        return Err(invalid("source", "the payment source is empty"));
    }
    let currency = input.currency.to_ascii_lowercase();

    let mut form = Form::default();
    form.field("amount", &input.amount.to_string())
        .field("currency", &currency)
        .field("source", &input.source)
        .optional("description", input.description.as_deref())
        .optional("customer", input.customer.as_deref())
        .optional("capture", input.capture.map(|capture| if capture { "true" } else { "false" }))
        .metadata(&input.metadata);

    let mut request = StripeRequest::new(
        "charge",
        "/v1/charges",
        "stripe.create-charge",
        form.finish(),
        input.idempotency_key.as_deref(),
    )?;
    request.summary = vec![telemetry::integer("amount", input.amount), telemetry::text("currency", &currency)];
    request.sensitive = vec![input.source.clone()];
    Ok(request)
}

/// Reads a Stripe charge object (`output` in the manifest's `charge.response`).
fn read_charge(body: &Value) -> Result<ChargeOutput, String> {
    let status = match json::string(body, "status")?.as_str() {
        "succeeded" => ChargeStatus::Succeeded,
        "pending" => ChargeStatus::Pending,
        "failed" => ChargeStatus::Failed,
        "requires_action" => ChargeStatus::RequiresAction,
        other => return Err(format!("unknown charge status `{other}`")),
    };
    Ok(ChargeOutput {
        charge_id: json::string(body, "id")?,
        status,
        amount: json::unsigned(body, "amount")?,
        currency: json::string(body, "currency")?,
        captured: json::boolean(body, "captured")?,
        receipt_url: json::optional_string(body, "receipt_url")?,
        failure_code: json::optional_string(body, "failure_code")?,
        created_at: json::optional_unsigned(body, "created")?.map(json::unix_seconds_to_rfc3339).transpose()?,
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

    fn input() -> ChargeInput {
        ChargeInput {
            amount: 2000,
            currency: "USD".to_owned(),
            source: "tok_conformance_visa_4242".to_owned(),
            description: Some("conformance order 1".to_owned()),
            customer: None,
            capture: Some(false),
            metadata: vec![("order".to_owned(), "1".to_owned())],
            idempotency_key: Some("conformance-charge-1".to_owned()),
        }
    }

    #[test]
    fn the_request_mirrors_the_manifest() {
        let charge = request(&input()).unwrap();
        assert_eq!(charge.path, "/v1/charges");
        assert_eq!(
            charge.form,
            "amount=2000&currency=usd&source=tok_conformance_visa_4242&description=conformance+order+1\
             &capture=false&metadata%5Border%5D=1"
        );
        assert_eq!(charge.idempotency_key, "conformance-charge-1");
        assert_eq!(charge.sensitive, ["tok_conformance_visa_4242"]);
    }

    #[test]
    fn bad_input_is_refused_before_any_request() {
        let field_of = |input: ChargeInput| {
            let error = request(&input).err().unwrap();
            assert_eq!(error.code, ErrorCode::InvalidInput);
            error.details[0].1.clone()
        };
        assert_eq!(field_of(ChargeInput { amount: 0, ..input() }), "amount");
        for currency in ["us", "usdd", "u5d", "€ur", ""] {
            assert_eq!(field_of(ChargeInput { currency: currency.to_owned(), ..input() }), "currency");
        }
        assert_eq!(field_of(ChargeInput { source: String::new(), ..input() }), "source");
        assert_eq!(field_of(ChargeInput { idempotency_key: Some(String::new()), ..input() }), "idempotencyKey");
    }

    #[test]
    fn a_stripe_charge_is_read() {
        let body: Value = serde_json::from_str(
            r#"{"id":"ch_conf_1","object":"charge","amount":2000,"currency":"usd","status":"succeeded",
                "captured":true,"paid":true,"created":1764072000,
                "receipt_url":"https://pay.stripe.com/receipts/ch_conf_1","failure_code":null}"#,
        )
        .unwrap();
        let output = read_charge(&body).unwrap();
        assert_eq!(output.charge_id, "ch_conf_1");
        assert_eq!(output.status, ChargeStatus::Succeeded);
        assert_eq!((output.amount, output.currency.as_str(), output.captured), (2000, "usd", true));
        assert_eq!(output.receipt_url.as_deref(), Some("https://pay.stripe.com/receipts/ch_conf_1"));
        assert_eq!(output.failure_code, None);
        assert_eq!(output.created_at.as_deref(), Some("2025-11-25T12:00:00Z"));
    }

    #[test]
    fn an_unexpected_charge_is_refused() {
        let read = |text: &str| read_charge(&serde_json::from_str(text).unwrap()).unwrap_err();
        assert!(read(r#"{"id":"ch","amount":1,"currency":"usd","status":"odd","captured":true}"#).contains("odd"));
        assert!(read(r#"{"amount":1,"currency":"usd","status":"pending","captured":true}"#).contains("`id`"));
        assert!(
            read(r#"{"id":"ch","amount":1,"currency":"usd","status":"pending","captured":true,"created":"x"}"#)
                .contains("`created`")
        );
    }
}
