//! The fake Stripe's own tests (faults, auth, parameter validation, routing, refunds), in a binary of
//! their own so that they run once rather than in every test binary that includes `support`.

mod support;

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use support::fake_stripe::api::{check_auth, mask_key, parse_form, Outcome, Route};
use support::fake_stripe::endpoints::{create_charge, create_refund, validate_charge};
use support::fake_stripe::{parse_faults, FakeState, Fault, MAX_FAULT_DELAY_MS};

fn params(body: &str) -> BTreeMap<String, String> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    parse_form(&headers, body.as_bytes()).unwrap()
}

#[test]
fn faults_parse_from_json_and_validate() {
    let faults =
        parse_faults(br#"[{"status": 429, "retryAfter": 1}, {"status": 503, "shouldRetry": false}, {"delayMs": 5}]"#)
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
