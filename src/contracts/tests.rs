use serde_json::{json, Value};

use super::*;

const PREAMBLE: &str = "package vadyl:connector@1.0.0;\n";

/// The embedded sources plus `extra` files, with `(file, from, to)` replacements applied.
fn sources_with(extra: &[(&str, &str)], replace: &[(&str, &str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = embedded_sources()
        .iter()
        .map(|(name, text)| {
            let mut text = text.to_string();
            for (file, from, to) in replace {
                if file == name {
                    assert!(text.contains(from), "{from:?} not found in {name}");
                    text = text.replace(from, to);
                }
            }
            (name.to_string(), text)
        })
        .collect();
    out.extend(extra.iter().map(|(n, t)| (n.to_string(), format!("{PREAMBLE}{t}"))));
    out
}

fn load(sources: &[(String, String)]) -> Result<Catalogue, ContractError> {
    let borrowed: Vec<(&str, &str)> = sources.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    load_sources(&borrowed)
}

fn load_extra(extra: &str) -> Result<Catalogue, ContractError> {
    load(&sources_with(&[("extra.wit", extra)], &[]))
}

fn catalogue() -> Catalogue {
    load_embedded().expect("embedded WIT loads")
}

fn required(schema: &Value) -> Vec<&str> {
    schema["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect()
}

/// A minimal valid operations interface + world, with `body` spliced into the interface.
fn test_contract(tag: &str, world: &str, body: &str) -> String {
    format!(
        "interface {world}-api {{\n    use types.{{plan-id, egress-exchange, contract-error}};\n{body}\n}}\n\n\
         /// Test contract.\n/// {tag}\nworld {world} {{\n    import memory;\n    export {world}-api;\n}}\n"
    )
}

const PING_OK: &str = "
    record ping-input { text: string }
    variant ping-step { done(string), egress(plan-id), failed(contract-error) }
    ping: func(input: ping-input, exchanges: list<egress-exchange>) -> ping-step;";

#[test]
fn embedded_contracts_load() {
    let cat = catalogue();
    let ids: Vec<String> = cat.contracts.iter().map(ContractSpec::id).collect();
    assert_eq!(ids, ["payment.charge@1", "webhook.deliver@1"]);

    let pay = cat.contract("payment.charge", 1).expect("payment.charge@1");
    assert_eq!(pay.package, "vadyl:connector@1.0.0");
    assert_eq!(pay.world, "payment-charge-v1");
    assert_eq!(pay.interface, "vadyl:connector/payment-charge-v1-api@1.0.0");
    assert_eq!(pay.description, "Charge payment sources and refund charges through a payment provider.");
    assert!(!pay.description.contains("@contract"));

    let hook = cat.contract("webhook.deliver", 1).expect("webhook.deliver@1");
    assert_eq!(hook.world, "webhook-deliver-v1");
    let names: Vec<&str> = hook.operations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["deliver"]);
    let deliver = &hook.operations[0];
    assert!(deliver.input_schema["properties"].get("signingSecretRef").is_some());
    for prop in ["statusCode", "attemptCount", "signature", "delivered", "deliveredAt"] {
        assert!(deliver.output_schema["properties"].get(prop).is_some(), "{prop}");
    }
    assert!(hook.sensitive_fields.iter().any(|f| f.pointer == "/payload" && f.direction == Direction::Input));
}

#[test]
fn payment_charge_operations_and_fields() {
    let cat = catalogue();
    let pay = cat.contract("payment.charge", 1).expect("payment.charge@1");
    let names: Vec<&str> = pay.operations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["charge", "refund"]);

    let charge = pay.operation("charge").expect("charge");
    assert_eq!(charge.input_schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(charge.input_schema["type"], "object");
    assert_eq!(charge.input_schema["additionalProperties"], false);
    assert_eq!(required(&charge.input_schema), ["amount", "currency", "source", "metadata"]);
    let props = &charge.input_schema["properties"];
    assert_eq!(props["amount"]["maximum"], json!(u64::MAX));
    assert_eq!(props["amount"]["minimum"], 0);
    assert_eq!(props["idempotencyKey"]["anyOf"][1], json!({"type": "null"}));
    assert_eq!(props["metadata"]["items"]["prefixItems"].as_array().map(Vec::len), Some(2));
    assert_eq!(required(&charge.output_schema), ["chargeId", "status", "amount", "currency", "captured"],);
    assert_eq!(
        charge.output_schema["properties"]["status"]["enum"],
        json!(["pending", "succeeded", "failed", "requires-action"])
    );

    let refund = pay.operation("refund").expect("refund");
    assert_eq!(required(&refund.input_schema), ["chargeId", "metadata"]);
    assert_eq!(
        refund.input_schema["properties"]["reason"]["anyOf"][0]["enum"],
        json!(["requested-by-customer", "duplicate", "fraudulent"])
    );
    assert_eq!(required(&refund.output_schema), ["refundId", "chargeId", "status", "amount", "currency"]);

    assert_eq!(required(&charge.error_schema), ["code", "message", "retryable", "details"]);
    assert_eq!(charge.error_schema, refund.error_schema);
}

#[test]
fn card_source_is_sensitive() {
    let cat = catalogue();
    let pay = cat.contract("payment.charge", 1).expect("payment.charge@1");
    assert_eq!(
        pay.sensitive_fields,
        [SensitiveField { operation: "charge".into(), direction: Direction::Input, pointer: "/source".into() }]
    );
    let source = &pay.operations[0].input_schema["properties"]["source"];
    assert_eq!(source["x-vadyl-sensitive"], true);
    assert_eq!(source["writeOnly"], true);
    assert_eq!(source["description"], "Card or token to charge.");
}

#[test]
fn digest_is_semantic() {
    let a = catalogue();
    let b = catalogue();
    assert_eq!(a, b);
    let digest = |c: &Catalogue, kind: &str| c.contract(kind, 1).map(|s| s.wit_digest);

    // Formatting does not change the digest.
    let reformatted = load(&sources_with(
        &[],
        &[(
            "payment-charge.wit",
            "        /// Provider customer id to attach the charge to.\n        customer: option<string>,\n",
            "\n        /// Provider customer id to attach the charge to.\n        customer  :   option< string > ,\n",
        )],
    ))
    .expect("reformatted loads");
    assert_eq!(digest(&a, "payment.charge"), digest(&reformatted, "payment.charge"));

    // Adding a field does.
    let changed = load(&sources_with(
        &[],
        &[(
            "payment-charge.wit",
            "        customer: option<string>,\n",
            "        customer: option<string>,\n        statement-suffix: option<string>,\n",
        )],
    ))
    .expect("modified loads");
    assert_ne!(digest(&a, "payment.charge"), digest(&changed, "payment.charge"));
    assert_eq!(digest(&a, "webhook.deliver"), digest(&changed, "webhook.deliver"));

    // The serialized digest is lowercase hex.
    let json = serde_json::to_value(&a.contracts[0]).expect("serializes");
    assert_eq!(json["witDigest"], hex::encode(a.contracts[0].wit_digest));
}

#[test]
fn nineteen_host_imports() {
    let cat = catalogue();
    let names: Vec<&str> = cat.host_imports.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "MemoryGet",
            "MemoryGetSnapshot",
            "MemoryPutIfAbsent",
            "MemoryCompareExchange",
            "MemoryAppendJournal",
            "MemoryAcquireLease",
            "MemoryReleaseLease",
            "MemoryDelete",
            "MemoryExpire",
            "ObservabilityRecordSpan",
            "ObservabilityLog",
            "SecretsSignRequest",
            "SecretsHmac",
            "SecretsAttachAuthToEgressPlan",
            "SecretsResolveRedactedMetadata",
            "SecretsDecryptForHostEgressOnly",
            "EgressBuildPlan",
            "TimeNow",
            "CapabilityAssert",
        ]
    );
    let now = cat.host_import("vadyl:connector/time@1.0.0", "now").expect("time.now");
    assert_eq!(now.name, "TimeNow");
    let get = &cat.host_imports[1];
    assert_eq!((get.interface.as_str(), get.function.as_str()), ("vadyl:connector/memory@1.0.0", "get-snapshot"));
}

#[test]
fn load_dir_matches_embedded() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/wit/worlds/connector"));
    assert_eq!(load_dir(dir).expect("dir loads"), catalogue());

    // Every .wit file of the directory is embedded.
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".wit"))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<&str> = embedded_sources().iter().map(|(n, _)| *n).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded);
}

#[test]
fn load_dir_from_temp_dir_and_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (name, text) in sources_with(&[("extra.wit", &test_contract("@contract test.ping@1", "ping-v1", PING_OK))], &[])
    {
        std::fs::write(tmp.path().join(name), text).expect("write");
    }
    std::fs::write(tmp.path().join("README.md"), "not wit").expect("write");
    let cat = load_dir(tmp.path()).expect("temp dir loads");
    assert_eq!(cat.contracts.len(), 3);

    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(load_dir(empty.path()), Err(ContractError::NoSources(_))));
    assert!(matches!(load_dir(&empty.path().join("missing")), Err(ContractError::Io { .. })));
}

#[test]
fn calling_convention_is_enforced() {
    let cases = [
        (
            "missing exchanges",
            "record ping-input { text: string }
             variant ping-step { done(string), egress(plan-id), failed(contract-error) }
             ping: func(input: ping-input) -> ping-step;",
        ),
        (
            "wrong parameter name",
            "record ping-input { text: string }
             variant ping-step { done(string), egress(plan-id), failed(contract-error) }
             ping: func(request: ping-input, exchanges: list<egress-exchange>) -> ping-step;",
        ),
        (
            "exchanges of the wrong type",
            "record ping-input { text: string }
             variant ping-step { done(string), egress(plan-id), failed(contract-error) }
             ping: func(input: ping-input, exchanges: list<string>) -> ping-step;",
        ),
        (
            "input not a record",
            "variant ping-step { done(string), egress(plan-id), failed(contract-error) }
             ping: func(input: string, exchanges: list<egress-exchange>) -> ping-step;",
        ),
        (
            "result not named ping-step",
            "record ping-input { text: string }
             variant outcome { done(string), egress(plan-id), failed(contract-error) }
             ping: func(input: ping-input, exchanges: list<egress-exchange>) -> outcome;",
        ),
        (
            "no result",
            "record ping-input { text: string }
             ping: func(input: ping-input, exchanges: list<egress-exchange>);",
        ),
        (
            "missing failed case",
            "record ping-input { text: string }
             variant ping-step { done(string), egress(plan-id) }
             ping: func(input: ping-input, exchanges: list<egress-exchange>) -> ping-step;",
        ),
        (
            "egress carries a plain string",
            "record ping-input { text: string }
             variant ping-step { done(string), egress(string), failed(contract-error) }
             ping: func(input: ping-input, exchanges: list<egress-exchange>) -> ping-step;",
        ),
        (
            "extra case",
            "record ping-input { text: string }
             variant ping-step { done(string), egress(plan-id), failed(contract-error), retry }
             ping: func(input: ping-input, exchanges: list<egress-exchange>) -> ping-step;",
        ),
    ];
    for (what, body) in cases {
        let err = load_extra(&test_contract("@contract test.ping@1", "ping-v1", body)).expect_err(what);
        assert!(
            matches!(&err, ContractError::CallingConvention { world, function, .. } if world == "ping-v1" && function == "ping"),
            "{what}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("`ping-v1`") && message.contains("`ping`"), "{what}: {message}");
    }
}

#[test]
fn world_shape_is_enforced() {
    let no_export = "/// @contract test.none@1\nworld none-v1 { import memory; }";
    assert!(matches!(load_extra(no_export), Err(ContractError::InvalidWorld { world, .. }) if world == "none-v1"));

    let direct = "/// @contract test.direct@1\nworld direct-v1 { export ping: func() -> u32; }";
    let err = load_extra(direct).expect_err("direct function export");
    assert!(err.to_string().contains("`ping`"), "{err}");

    let inline = "/// @contract test.inline@1\nworld inline-v1 { export ops: interface { ping: func(); } }";
    assert!(matches!(load_extra(inline), Err(ContractError::InvalidWorld { .. })));
}

#[test]
fn contract_tags_are_checked() {
    let untagged = "interface plain-api { ping: func(); }\n/// No tag here.\nworld plain { export plain-api; }";
    assert!(matches!(load_extra(untagged), Err(ContractError::MissingContractTag { world }) if world == "plain"));

    let dup = test_contract("@contract payment.charge@1", "other-charge-v1", PING_OK);
    let err = load_extra(&dup).expect_err("duplicate");
    assert!(matches!(&err, ContractError::DuplicateContract { kind, major: 1, .. } if kind == "payment.charge"));
    assert!(err.to_string().contains("payment-charge-v1") && err.to_string().contains("other-charge-v1"));

    for bad in ["payment@1", "payment.charge", "payment.charge@01", "Payment.charge@1", "payment.charge@x", "a..b@1"] {
        let text = format!("/// @contract {bad}");
        assert!(
            matches!(contract_tag("w", &text), Err(ContractError::InvalidContractTag { .. })),
            "{bad} should be refused"
        );
    }
    assert!(matches!(contract_tag("w", "@contract"), Err(ContractError::InvalidContractTag { .. })));
    assert!(matches!(
        contract_tag("w", "@contract a.b@1\n@contract a.b@2"),
        Err(ContractError::InvalidContractTag { .. })
    ));
    assert_eq!(
        contract_tag("w", "x\n@contract surface.kind-two.sub@12 y").ok(),
        Some(("surface.kind-two.sub".into(), 12))
    );
    assert_eq!(strip_contract_tag("Title.\n\n@contract a.b@1\nMore @contract a.b@1 text."), "Title.\n\nMore text.");
    assert_eq!(strip_contract_tag("Not a @contractual term.\n@contract a.b@1"), "Not a @contractual term.");
}

#[test]
fn extra_imports_do_not_add_host_imports() {
    let extra = format!(
        "interface extra {{ ping: func() -> u32; }}\n{}",
        test_contract("@contract test.ping@1", "ping-v1", PING_OK)
            .replace("    import memory;\n", "    import memory;\n    import extra;\n")
    );
    let cat = load_extra(&extra).expect("world importing a non-host interface loads");
    assert!(cat.contract("test.ping", 1).is_some());
    assert_eq!(cat.host_imports, catalogue().host_imports);
    assert_eq!(cat.host_imports.len(), 19);
    assert!(cat.host_imports.iter().all(|h| !h.interface.contains("extra")));
}

#[test]
fn parse_and_package_errors_are_reported() {
    let err = load_sources(&[("bad.wit", "package vadyl:connector@1.0.0;\ninterface x { foo: func( }\n")])
        .expect_err("syntax error");
    assert!(matches!(&err, ContractError::Parse(m) if m.contains("bad.wit")), "{err}");

    let err = load_extra("interface y { use nope.{thing}; }").expect_err("resolve error");
    assert!(matches!(&err, ContractError::Parse(m) if m.contains("nope")), "{err}");

    let renamed = sources_with(
        &[],
        &[
            ("time.wit", "interface time {", "interface clock {"),
            ("payment-charge.wit", "import time;", "import clock;"),
            ("webhook-deliver.wit", "import time;", "import clock;"),
        ],
    );
    assert_eq!(load(&renamed), Err(ContractError::MissingHostInterface("time".into())));
    assert!(matches!(load_sources(&[]), Err(ContractError::NoSources(_))));
}

#[test]
fn unsupported_types_are_refused() {
    let resource = "
    resource conn;
    record ping-input { c: conn }
    variant ping-step { done(string), egress(plan-id), failed(contract-error) }
    ping: func(input: ping-input, exchanges: list<egress-exchange>) -> ping-step;";
    let err = load_extra(&test_contract("@contract test.res@1", "res-v1", resource)).expect_err("resource");
    assert!(matches!(&err, ContractError::UnsupportedType { function, .. } if function == "ping"), "{err:?}");
    assert!(err.to_string().contains("`own<conn>`"), "{err}");

    let nested = "
    record ping-input { o: option<option<u8>> }
    variant ping-step { done(string), egress(plan-id), failed(contract-error) }
    ping: func(input: ping-input, exchanges: list<egress-exchange>) -> ping-step;";
    let err = load_extra(&test_contract("@contract test.opt@1", "opt-v1", nested)).expect_err("nested option");
    assert!(matches!(err, ContractError::UnsupportedType { .. }), "{err:?}");
}

#[test]
fn schema_conventions() {
    let body = "
    /// Colours.
    enum color { red, dark-blue }
    flags perms { read, write }
    variant shape {
        /// Nothing.
        none,
        circle(f64),
        named(string),
    }
    record inner {
        /// The secret bit. @sensitive
        secret-value: string,
        plain: u8,
    }
    type my-alias = u16;
    record kitchen-input {
        a-char: char,
        small: s8,
        big: s64,
        bytes: list<u8>,
        pair: tuple<u32, string>,
        color: color,
        perms: perms,
        shape: shape,
        res: result<u32, string>,
        unit-res: result<_, string>,
        maybe: option<inner>,
        items: list<inner>,
        alias: my-alias,
        fixed: list<u8, 4>,
        real: f32,
        yes: bool,
    }
    variant kitchen-step { done(inner), egress(plan-id), failed(contract-error) }
    /// Cooks.
    kitchen: func(input: kitchen-input, exchanges: list<egress-exchange>) -> kitchen-step;";
    let cat = load_extra(&test_contract("@contract test.kitchen@1", "kitchen-v1", body)).expect("kitchen loads");
    let spec = cat.contract("test.kitchen", 1).expect("contract");
    let op = spec.operation("kitchen").expect("op");
    assert_eq!(op.description, "Cooks.");
    assert_eq!(spec.description, "Test contract.");
    let p = &op.input_schema["properties"];
    assert_eq!(p["aChar"], json!({"type": "string", "minLength": 1, "maxLength": 1}));
    assert_eq!(p["small"], json!({"type": "integer", "minimum": -128, "maximum": 127}));
    assert_eq!(p["big"]["minimum"], json!(i64::MIN));
    assert_eq!(p["bytes"], json!({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}}));
    assert_eq!(p["pair"]["prefixItems"].as_array().map(Vec::len), Some(2));
    assert_eq!((p["pair"]["minItems"].as_u64(), p["pair"]["maxItems"].as_u64()), (Some(2), Some(2)));
    assert_eq!(p["color"], json!({"type": "string", "enum": ["red", "dark-blue"], "description": "Colours."}));
    assert_eq!(
        p["perms"],
        json!({"type": "array", "items": {"type": "string", "enum": ["read", "write"]}, "uniqueItems": true})
    );
    let shape = p["shape"]["oneOf"].as_array().expect("oneOf");
    assert_eq!(shape[0], json!({"const": "none", "description": "Nothing."}));
    assert_eq!(shape[1]["properties"]["circle"], json!({"type": "number"}));
    assert_eq!(shape[1]["required"], json!(["circle"]));
    assert_eq!(p["res"]["oneOf"][0]["properties"]["ok"]["type"], "integer");
    assert_eq!(p["res"]["oneOf"][1]["properties"]["err"]["type"], "string");
    assert_eq!(p["unitRes"]["oneOf"][0], json!({"const": "ok"}));
    assert_eq!(p["maybe"]["anyOf"][1], json!({"type": "null"}));
    assert_eq!(p["alias"]["maximum"], 65535);
    assert_eq!((p["fixed"]["minItems"].as_u64(), p["fixed"]["maxItems"].as_u64()), (Some(4), Some(4)));
    assert_eq!(p["real"], json!({"type": "number"}));
    assert_eq!(p["yes"], json!({"type": "boolean"}));
    assert!(!required(&op.input_schema).contains(&"maybe"));
    assert!(required(&op.input_schema).contains(&"items"));

    let inner_in = &p["items"]["items"]["properties"]["secretValue"];
    assert_eq!((&inner_in["writeOnly"], &inner_in["x-vadyl-sensitive"]), (&json!(true), &json!(true)));
    assert_eq!(inner_in["description"], "The secret bit.");
    let inner_out = &op.output_schema["properties"]["secretValue"];
    assert_eq!(inner_out["x-vadyl-sensitive"], true);
    assert!(inner_out.get("writeOnly").is_none());

    let pointers: Vec<(Direction, &str)> =
        spec.sensitive_fields.iter().map(|f| (f.direction, f.pointer.as_str())).collect();
    assert_eq!(
        pointers,
        [
            (Direction::Input, "/maybe/secretValue"),
            (Direction::Input, "/items/*/secretValue"),
            (Direction::Output, "/secretValue"),
        ]
    );
}

#[test]
fn json_names() {
    assert_eq!(json_field_name("idempotency-key"), "idempotencyKey");
    assert_eq!(json_field_name("amount"), "amount");
    assert_eq!(json_field_name("a-b-c"), "aBC");
    assert_eq!(json_field_name("URL-path"), "urlPath");
    assert_eq!(pascal_case("attach-auth-to-egress-plan"), "AttachAuthToEgressPlan");
}
