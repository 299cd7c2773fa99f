use serde_json::{json, Value};

use super::*;
use crate::contracts::{load_embedded, Catalogue};

const STRIPE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/stripe.connector.json"));
const WEBHOOK: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/webhook.connector.json"));

fn catalogue() -> Catalogue {
    load_embedded().unwrap()
}

fn stripe() -> Value {
    serde_json::from_str(STRIPE).unwrap()
}

fn webhook() -> Value {
    serde_json::from_str(WEBHOOK).unwrap()
}

fn check(doc: &Value) -> Result<ValidManifest, Vec<ManifestError>> {
    let cat = catalogue();
    let kind = doc["contract"]["kind"].as_str().unwrap_or("payment.charge");
    let contract =
        if kind == "webhook.deliver" { cat.contract("webhook.deliver", 1) } else { cat.contract("payment.charge", 1) };
    validate(doc, contract.unwrap())
}

/// Sets (or with `None` removes) the value at `pointer`, creating nothing.
fn edit(mut doc: Value, pointer: &str, value: Option<Value>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let key = key.replace("~1", "/").replace("~0", "~");
    match doc.pointer_mut(parent).unwrap() {
        Value::Object(map) => {
            match value {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            };
        }
        Value::Array(items) => {
            let i: usize = key.parse().unwrap();
            match value {
                Some(v) => items[i] = v,
                None => {
                    items.remove(i);
                }
            }
        }
        other => panic!("cannot edit inside {other}"),
    }
    doc
}

#[track_caller]
fn assert_refused(doc: &Value, path: &str, needle: &str) {
    let errors = check(doc).expect_err("the manifest should be refused");
    assert!(
        errors.iter().any(|e| e.path == path && e.message.contains(needle)),
        "expected an error at {path:?} mentioning {needle:?}, got:\n{}",
        errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn both_examples_validate_against_the_real_contracts() {
    let stripe = check(&stripe()).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(stripe.implementation_id().to_string(), "stripe-charge-adapter:1.0.0");
    assert_eq!(stripe.config_json()["baseUrl"], "https://api.stripe.com");
    let webhook = check(&webhook()).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(webhook.implementation_id().to_string(), "webhook-signer:1.0.0");
    assert_eq!(webhook.manifest().operations.len(), 1);
}

#[test]
fn canonical_bytes_ignore_formatting_and_key_order() {
    let a = check(&stripe()).unwrap();
    let reordered: Value = serde_json::from_str(&serde_json::to_string_pretty(&stripe()).unwrap()).unwrap();
    let b = check(&reordered).unwrap();
    assert_eq!(canonical_bytes(&a), canonical_bytes(&b));
    assert_eq!(canonical_bytes(&a), serde_json_canonicalizer::to_vec(&stripe()).unwrap());
    assert_eq!(a.content_hash(), ContentHash::of(&canonical_bytes(&a)));
    let changed = check(&edit(stripe(), "/description", Some(json!("other")))).unwrap();
    assert_ne!(a.content_hash(), changed.content_hash());
}

#[test]
fn the_same_manifest_can_target_a_loopback_fake_through_config() {
    let local = edit(stripe(), "/config/baseUrl", Some(json!("http://127.0.0.1:12111")));
    check(&local).unwrap();
    let other_port = edit(stripe(), "/config/baseUrl", Some(json!("http://127.0.0.1:9999")));
    assert_refused(&other_port, "/operations/charge/request/url", "not on the egress allow-list");
}

#[test]
fn missing_and_extra_operations() {
    let missing = edit(stripe(), "/operations/refund", None);
    assert_refused(&missing, "/operations", "operation `refund` of payment.charge@1 is missing");
    let extra = edit(stripe(), "/operations/capture", Some(stripe()["operations"]["refund"].clone()));
    assert_refused(&extra, "/operations/capture", "has no operation `capture`");
}

#[test]
fn output_mappings_must_fit_the_output_schema() {
    let unknown = edit(stripe(), "/operations/charge/response/output/nope", Some(json!("$.body.nope")));
    assert_refused(&unknown, "/operations/charge/response/output/nope", "`nope` is not a field of the output");
    let unmapped = edit(stripe(), "/operations/refund/response/output/refundId", None);
    assert_refused(&unmapped, "/operations/refund/response/output", "required output field `refundId`");
    let optional_unmapped = edit(stripe(), "/operations/charge/response/output/receiptUrl", None);
    check(&optional_unmapped).unwrap();
}

#[test]
fn templates_may_only_read_existing_input_fields_and_config_keys() {
    let nope = edit(stripe(), "/operations/charge/request/body/fields/amount", Some(json!("{{ input.nope }}")));
    assert_refused(&nope, "/operations/charge/request/body/fields/amount", "`input.nope` is not a field of the input");
    let nested = edit(stripe(), "/operations/charge/request/headers/X-Test", Some(json!("{{ input.currency.code }}")));
    assert_refused(&nested, "/operations/charge/request/headers/X-Test", "`input.currency.code`");
    let other_op = edit(stripe(), "/operations/refund/request/body/fields/source", Some(json!("{{ input.source }}")));
    assert_refused(&other_op, "/operations/refund/request/body/fields/source", "operation `refund`");
    let config =
        edit(stripe(), "/operations/charge/request/headers/Stripe-Version", Some(json!("{{ config.apiVersion }}")));
    assert_refused(&config, "/operations/charge/request/headers/Stripe-Version", "`config.apiVersion` is not defined");
    let whole = edit(stripe(), "/operations/charge/request/body/fields/all", Some(json!("{{ input | tojson }}")));
    assert_refused(&whole, "/operations/charge/request/body/fields/all", "not to `input` as a whole");
    let global = edit(stripe(), "/operations/charge/request/body/fields/n", Some(json!("{{ range(3) }}")));
    assert_refused(&global, "/operations/charge/request/body/fields/n", "unknown variable `range`");
    let syntax = edit(stripe(), "/operations/charge/idempotency/value", Some(json!("{{ input.idempotencyKey ")));
    assert_refused(&syntax, "/operations/charge/idempotency/value", "invalid template syntax");
    let filter =
        edit(stripe(), "/operations/charge/request/body/fields/currency", Some(json!("{{ input.currency | title }}")));
    assert_refused(&filter, "/operations/charge/request/body/fields/currency", "unknown filter `title`");
    let json_body = edit(
        stripe(),
        "/operations/refund/request/body",
        Some(
            json!({"encoding": "json", "template": {"refund": {"charge": "{{ input.chargeId }}", "tags": ["{{ input.nope }}"]}}}),
        ),
    );
    assert_refused(&json_body, "/operations/refund/request/body/template/refund/tags/0", "`input.nope`");
    let hmac_payload = edit(webhook(), "/auth/signedPayload", Some(json!("{{ timestamp }}.{{ signature }}")));
    assert_refused(&hmac_payload, "/auth/signedPayload", "unknown variable `signature`");
}

#[test]
fn json_paths_must_parse_and_be_singular() {
    let bad = edit(stripe(), "/operations/charge/response/output/chargeId", Some(json!("$.body[")));
    assert_refused(&bad, "/operations/charge/response/output/chargeId", "invalid JSONPath");
    let plural = edit(stripe(), "/operations/charge/response/output/chargeId", Some(json!("$.body.data[*].id")));
    assert_refused(&plural, "/operations/charge/response/output/chargeId", "singular query");
    let rule = edit(stripe(), "/operations/charge/response/output/createdAt/path", Some(json!("$..created")));
    assert_refused(&rule, "/operations/charge/response/output/createdAt/path", "singular query");
    let when = edit(stripe(), "/operations/charge/errors/0/when", Some(json!("$.body.error[?@.type ==")));
    assert_refused(&when, "/operations/charge/errors/0/when", "invalid JSONPath");
    let when_ok = edit(stripe(), "/operations/charge/errors/0/when", Some(json!("$.body.error[?@ == 'card_error']")));
    check(&when_ok).unwrap();
    let both = edit(
        stripe(),
        "/operations/charge/response/output/captured",
        Some(json!({"path": "$.body.captured", "value": true})),
    );
    assert_refused(&both, "/operations/charge/response/output/captured", "exactly one of `path` and `value`");
}

#[test]
fn error_codes_must_be_contract_codes() {
    let bad = edit(stripe(), "/operations/charge/errors/0/code", Some(json!("card-declined")));
    assert_refused(
        &bad,
        "/operations/charge/errors/0/code",
        "`card-declined` is not an error code of payment.charge@1",
    );
    let success = edit(stripe(), "/operations/charge/errors/0/status", Some(json!([201])));
    assert_refused(&success, "/operations/charge/errors/0/status/0", "not an error");
}

#[test]
fn urls_must_have_a_static_allowed_origin() {
    let url = "/operations/charge/request/url";
    let foreign = edit(stripe(), url, Some(json!("https://api.evil.example/v1/charges")));
    assert_refused(&foreign, url, "`https://api.evil.example`, which is not on the egress allow-list");
    let config_foreign = edit(stripe(), "/config/baseUrl", Some(json!("https://api.stripe.com.evil.example")));
    assert_refused(&config_foreign, url, "not on the egress allow-list");
    for templated in [
        "https://{{ input.customer }}.stripe.com/v1/charges",
        "https://api.stripe.com{{ input.customer }}/v1",
        "https://api.stripe.com:{{ input.amount }}/v1",
        "{{ input.customer }}/v1/charges",
        "{{ config.baseUrl }}{{ input.customer }}/v1",
        "{{ config.baseUrl }}.evil.example/v1",
    ] {
        let doc = edit(stripe(), url, Some(json!(templated)));
        assert_refused(&doc, url, "static");
    }
    let path_template =
        edit(stripe(), url, Some(json!("https://api.stripe.com/v1/charges/{{ input.customer | urlencode }}")));
    check(&path_template).unwrap();
    let userinfo = edit(stripe(), url, Some(json!("https://user@api.stripe.com/v1/charges")));
    assert_refused(&userinfo, url, "user info");
    let ftp = edit(stripe(), url, Some(json!("ftp://api.stripe.com/v1")));
    assert_refused(&ftp, url, "scheme `ftp`");
    let int_config = edit(stripe(), "/config/baseUrl", Some(json!(3)));
    assert_refused(&int_config, url, "must be a string holding an absolute URL");
    let from_input = edit(webhook(), "/operations/deliver/request/url/fromInput", Some(json!("eventUrl")));
    assert_refused(&from_input, "/operations/deliver/request/url/fromInput", "`eventUrl` is not a string field");
    let from_number = edit(webhook(), "/operations/deliver/request/url/fromInput", Some(json!("maxAttempts")));
    assert_refused(&from_number, "/operations/deliver/request/url/fromInput", "not a string field");
}

#[test]
fn egress_allow_list_rules() {
    let http = edit(stripe(), "/egress/allow/0/scheme", Some(json!("http")));
    assert_refused(&http, "/egress/allow/0/scheme", "only allowed for loopback");
    let upper = edit(stripe(), "/egress/allow/0/host", Some(json!("API.stripe.com")));
    assert_refused(&upper, "/egress/allow/0/host", "lowercase");
    let wildcard = edit(stripe(), "/egress/allow/0/host", Some(json!("*.com")));
    assert_refused(&wildcard, "/egress/allow/0/host", "wildcard");
    let path = edit(stripe(), "/egress/allow/0/host", Some(json!("api.stripe.com/v1")));
    assert_refused(&path, "/egress/allow/0/host", "not a lowercase host name");
    let short_ip = edit(stripe(), "/egress/allow/1/host", Some(json!("127.1")));
    assert_refused(&short_ip, "/egress/allow/1/host", "canonical IP address");
    let v6 = edit(stripe(), "/egress/allow/1/host", Some(json!("[::1]")));
    let v6 = edit(v6, "/config/baseUrl", Some(json!("http://[::1]:12111")));
    check(&v6).unwrap();
    let empty = edit(stripe(), "/egress/allow", Some(json!([])));
    assert_refused(&empty, "/egress/allow", "empty");
}

#[test]
fn raw_secrets_are_refused_wherever_they_are() {
    let header = edit(stripe(), "/operations/charge/request/headers/X-Key", Some(json!("sk_live_51HxAbCdEf")));
    assert_refused(&header, "/operations/charge/request/headers/X-Key", "looks like a raw secret");
    let bearer = edit(stripe(), "/operations/charge/request/headers/X-Auth", Some(json!("Bearer abcdef0123456789")));
    assert_refused(&bearer, "/operations/charge/request/headers/X-Auth", "`Bearer <credential>`");
    let config = edit(stripe(), "/config/apiKey", Some(json!("sk_test_4eC39HqLyjWDarjtT1zdp7dc")));
    assert_refused(&config, "/config/apiKey", "Stripe test secret key");
    let query = edit(stripe(), "/operations/refund/request/query", Some(json!({"key": "whsec_abcdef"})));
    assert_refused(&query, "/operations/refund/request/query/key", "webhook signing secret");
    let body =
        edit(stripe(), "/operations/charge/request/body/fields/x", Some(json!({"nested": ["AKIAIOSFODNN7EXAMPLE"]})));
    assert_refused(&body, "/operations/charge/request/body/fields/x/nested/0", "AWS access key");
    let url = edit(
        stripe(),
        "/operations/charge/request/url",
        Some(json!("https://api.stripe.com/v1/charges?key=sk_live_x")),
    );
    assert_refused(&url, "/operations/charge/request/url", "Stripe live secret key");
    let pem = edit(stripe(), "/description", Some(json!("-----BEGIN PRIVATE KEY-----\nMIIB")));
    assert_refused(&pem, "/description", "PEM");
    let authorization =
        edit(stripe(), "/operations/charge/request/headers/Authorization", Some(json!("{{ config.baseUrl }}")));
    assert_refused(&authorization, "/operations/charge/request/headers/Authorization", "credentials go in `auth`");
    // A templated bearer value is not a literal credential, and ordinary words are fine.
    let prose = "Sends Bearer {{ token }}; supports bearer authentication and Basic Authentication of users";
    check(&edit(stripe(), "/description", Some(json!(prose)))).unwrap();
    let basic = edit(stripe(), "/operations/charge/request/headers/X-Auth", Some(json!("Basic dXNlcjpwYXNz")));
    assert_refused(&basic, "/operations/charge/request/headers/X-Auth", "`Basic <credential>`");
    let key = edit(stripe(), "/operations/charge/request/headers/sk_live_key", Some(json!("x")));
    assert_refused(&key, "/operations/charge/request/headers/sk_live_key", "looks like a raw secret");
    // Pointers escape `/` in keys (RFC 6901).
    let slash = edit(stripe(), "/operations/charge/request/headers/X~1Key", Some(json!("x")));
    assert_refused(&slash, "/operations/charge/request/headers/X~1Key", "not a valid header name");
}

#[test]
fn auth_references_secrets_by_valid_name() {
    let bad = edit(stripe(), "/auth/secret", Some(json!("Stripe Key!")));
    assert_refused(&bad, "/auth/secret", "not a valid secret name");
    let basic = edit(stripe(), "/auth", Some(json!({"type": "basic", "username": "acct", "passwordSecret": "../etc"})));
    assert_refused(&basic, "/auth/passwordSecret", "not a valid secret name");
    let header =
        edit(stripe(), "/auth", Some(json!({"type": "apiKeyHeader", "header": "Authorization", "secret": "k"})));
    assert_refused(&header, "/auth/header", "reserved");
    let unknown = edit(stripe(), "/auth", Some(json!({"type": "bearer", "secret": "k", "token": "x"})));
    assert_refused(&unknown, "/auth/token", "unknown field `token`");
    let kind = edit(stripe(), "/auth", Some(json!({"type": "oauth", "secret": "k"})));
    assert_refused(&kind, "/auth/type", "unknown variant `oauth`");
    let from_input = edit(webhook(), "/auth/secretFromInput", Some(json!("eventId2")));
    assert_refused(&from_input, "/auth/secretFromInput", "not a string field of the input of operation `deliver`");
    let clash = edit(stripe(), "/operations/charge/request/headers/idempotency-key", Some(json!("x")));
    assert_refused(
        &clash,
        "/operations/charge/request/headers/idempotency-key",
        "already set by /operations/charge/idempotency",
    );
}

#[test]
fn non_idempotent_retries_need_an_idempotency_key() {
    let no_key = edit(stripe(), "/operations/charge/idempotency", None);
    assert_refused(&no_key, "/operations/charge/retry", "sends no idempotency key");
    let single = edit(no_key.clone(), "/operations/charge/retry/maxAttempts", Some(json!(1)));
    check(&single).unwrap();
    // Retrying only on 429 after a refusal cannot execute the request twice.
    let mut only_429 = edit(no_key, "/operations/charge/retry/retryOnStatus", Some(json!([429])));
    only_429 = edit(only_429, "/operations/charge/retry/retryOnNetworkError", Some(json!(false)));
    assert_refused(&only_429, "/operations/charge/retry", "provider hint");
    let only_429 = edit(only_429, "/operations/charge/retry/retryHintHeader", None);
    check(&only_429).unwrap();
    let mut get = edit(stripe(), "/operations/refund/idempotency", None);
    get = edit(get, "/operations/refund/request/method", Some(json!("PUT")));
    check(&get).unwrap();
}

#[test]
fn retry_settings_must_be_sane() {
    let r = "/operations/charge/retry";
    assert_refused(
        &edit(stripe(), &format!("{r}/maxAttempts"), Some(json!(11))),
        &format!("{r}/maxAttempts"),
        "1 to 10",
    );
    assert_refused(
        &edit(stripe(), &format!("{r}/maxAttempts"), Some(json!(0))),
        &format!("{r}/maxAttempts"),
        "1 to 10",
    );
    assert_refused(
        &edit(stripe(), &format!("{r}/maxRetryAfterMs"), Some(json!(120000))),
        &format!("{r}/maxRetryAfterMs"),
        "at most 60000",
    );
    assert_refused(
        &edit(stripe(), &format!("{r}/maxBackoffMs"), Some(json!(100))),
        &format!("{r}/maxBackoffMs"),
        "between",
    );
    assert_refused(
        &edit(stripe(), &format!("{r}/multiplier"), Some(json!(0.5))),
        &format!("{r}/multiplier"),
        "1.0 and 10.0",
    );
    assert_refused(
        &edit(stripe(), &format!("{r}/retryOnStatus/0"), Some(json!("2xx"))),
        &format!("{r}/retryOnStatus/0"),
        "4xx and 5xx",
    );
    assert_refused(
        &edit(stripe(), "/operations/charge/request/timeoutMs", Some(json!(600000))),
        "/operations/charge/request/timeoutMs",
        "outside",
    );
    let requested =
        edit(webhook(), "/operations/deliver/retry/requestedAttempts", Some(json!("at most {{ input.maxAttempts }}")));
    assert_refused(&requested, "/operations/deliver/retry/requestedAttempts", "single `{{ expression }}`");
}

#[test]
fn shape_errors_point_at_the_offending_value() {
    assert_refused(&edit(stripe(), "/extra", Some(json!(1))), "/extra", "unknown field `extra`");
    assert_refused(
        &edit(stripe(), "/operations/charge/retry/maxAttempts", Some(json!("four"))),
        "/operations/charge/retry/maxAttempts",
        "invalid type",
    );
    assert_refused(&edit(stripe(), "/manifestVersion", Some(json!("1"))), "/manifestVersion", "invalid type");
    assert_refused(
        &edit(stripe(), "/operations/charge/request/method", Some(json!("TRACE"))),
        "/operations/charge/request/method",
        "unknown variant `TRACE`",
    );
    assert_refused(
        &edit(stripe(), "/operations/charge/response/successStatus/0", Some(json!(700))),
        "/operations/charge/response/successStatus/0",
        "status code",
    );
    assert_refused(
        &edit(stripe(), "/operations/charge/request/body/encoding", Some(json!("xml"))),
        "/operations/charge/request/body/encoding",
        "unknown variant `xml`",
    );
    assert_refused(
        &edit(
            stripe(),
            "/operations/charge/response/output/amount",
            Some(json!({"path": "$.body.amount", "cast": "int"})),
        ),
        "/operations/charge/response/output/amount/cast",
        "unknown field `cast`",
    );
    assert_refused(&edit(stripe(), "/contract", None), "", "missing field `contract`");
    assert_refused(
        &edit(stripe(), "/config/flag", Some(json!(1.5))),
        "/config/flag",
        "a string, an integer or a boolean",
    );
    assert_refused(&json!([1]), "", "invalid length");
    // serde's positional form of a struct (an array of field values) is refused.
    assert_refused(&edit(stripe(), "/contract", Some(json!(["payment.charge", 1]))), "/contract", "expected an object");
    assert_refused(
        &edit(stripe(), "/auth", Some(json!(["bearer", "stripe-secret-key"]))),
        "/auth",
        "expected an object",
    );
}

#[test]
fn identity_rules() {
    assert_refused(&edit(stripe(), "/name", Some(json!("../stripe"))), "/name", "invalid implementation name");
    assert_refused(&edit(stripe(), "/name", Some(json!("Stripe"))), "/name", "lowercase");
    assert_refused(&edit(stripe(), "/version", Some(json!("1.0"))), "/version", "not a semantic version");
    assert_refused(&edit(stripe(), "/version", Some(json!("1.0.0+build.5"))), "/version", "build metadata");
    assert_refused(&edit(stripe(), "/manifestVersion", Some(json!(2))), "/manifestVersion", "not supported");
    let cat = catalogue();
    let errors = validate(&stripe(), cat.contract("webhook.deliver", 1).unwrap()).unwrap_err();
    assert!(errors.iter().any(|e| e.path == "/contract/kind"), "{errors:?}");
    assert_refused(
        &edit(stripe(), "/contract/majorVersion", Some(json!(2))),
        "/contract/majorVersion",
        "payment.charge@1",
    );
}

#[test]
fn redaction_pointers_must_exist() {
    let bad = edit(stripe(), "/redaction/inputPointers/0", Some(json!("/card")));
    assert_refused(&bad, "/redaction/inputPointers/0", "does not point into the input");
    let syntax = edit(stripe(), "/redaction/outputPointers/0", Some(json!("receiptUrl")));
    assert_refused(&syntax, "/redaction/outputPointers/0", "not a JSON Pointer");
    let tuple = edit(stripe(), "/redaction/inputPointers/0", Some(json!("/metadata/*/1")));
    check(&tuple).unwrap();
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut doc = edit(stripe(), "/name", Some(json!("Bad Name")));
    doc = edit(doc, "/operations/charge/errors/0/code", Some(json!("nope")));
    doc = edit(doc, "/operations/refund/response/output/chargeId", Some(json!("$[")));
    let errors = check(&doc).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for p in ["/name", "/operations/charge/errors/0/code", "/operations/refund/response/output/chargeId"] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
}

#[test]
fn example_requests_render_as_intended() {
    use crate::runtime::declarative::template::{render_leaf, render_value, template_context};
    let valid = check(&stripe()).unwrap();
    let op = &valid.manifest().operations["refund"];
    let Some(Body::Form(form)) = &op.request.body else { panic!("form body expected") };
    let input =
        json!({"chargeId": "ch_1", "amount": null, "reason": "requested-by-customer", "metadata": [["order", "42"]]});
    let ctx = template_context(&input, &valid.config_json());
    let fields = render_value(&serde_json::to_value(&form.fields).unwrap(), &ctx).unwrap();
    assert_eq!(
        fields,
        json!({"charge": "ch_1", "amount": null, "reason": "requested_by_customer", "metadata": {"order": "42"}})
    );
    let no_reason = template_context(&json!({"chargeId": "ch_1", "metadata": []}), &valid.config_json());
    assert_eq!(render_leaf(form.fields["reason"].as_str().unwrap(), &no_reason).unwrap(), Value::Null);
    let UrlSpec::Template(url) = &op.request.url else { panic!("template url expected") };
    assert_eq!(template::render(url, &ctx).unwrap(), "https://api.stripe.com/v1/refunds");
}

#[test]
fn every_reserved_header_is_refused_by_egress_plans_and_manifests() {
    use crate::runtime::host::egress::{
        AllowList, AllowRule, EgressError, EgressPlan, EgressRequest, Method, PlanLimits, Scheme,
    };
    let allow = AllowList::new(vec![AllowRule::new(Scheme::Https, "api.stripe.com", None)]).unwrap();
    let plan = |headers: Vec<(String, String)>, idempotency_key: Option<(String, String)>| {
        let request = EgressRequest {
            method: Method::Post,
            url: "https://api.stripe.com/v1/charges".into(),
            headers,
            body: Vec::new(),
            timeout_ms: None,
            idempotency_key,
        };
        EgressPlan::build(request, &allow, &PlanLimits::default())
    };
    let reserved_refusal = |result: &Result<EgressPlan, EgressError>| matches!(result, Err(EgressError::InvalidHeader { reason, .. }) if reason.contains("reserved"));
    assert!(RESERVED_HEADERS.len() >= 13);
    for reserved in RESERVED_HEADERS {
        assert_eq!(*reserved, reserved.to_ascii_lowercase(), "the list is lowercase");
        let mixed: String =
            reserved.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
        for name in [reserved.to_string(), mixed] {
            let header = plan(vec![(name.clone(), "x".into())], None);
            assert!(reserved_refusal(&header), "egress plan header {name}: {header:?}");
            let key = plan(Vec::new(), Some((name.clone(), "k-1".into())));
            assert!(reserved_refusal(&key), "egress idempotency key header {name}: {key:?}");

            let path = format!("/operations/charge/request/headers/{name}");
            assert_refused(&edit(stripe(), &path, Some(json!("x"))), &path, "may not be set by a manifest");
            let idempotency = edit(stripe(), "/operations/charge/idempotency/header", Some(json!(name)));
            assert_refused(&idempotency, "/operations/charge/idempotency/header", "is reserved");
            let api_key = edit(
                stripe(),
                "/auth",
                Some(json!({"type": "apiKeyHeader", "header": name, "secret": "stripe-secret-key"})),
            );
            assert_refused(&api_key, "/auth/header", "is reserved");
        }
    }
}
