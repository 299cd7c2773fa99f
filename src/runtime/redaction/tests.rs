use super::*;
use serde_json::json;

const CANARY: &str = "vadyl-canary-7f3a9c2e51d04b86";

#[test]
fn combined_redactors_find_and_redact_what_either_part_knows() {
    let secret = Redactor::new([b"sk_live_combined_secret".to_vec()]).unwrap();
    let input = Redactor::new([b"tok_card_4242".to_vec()]).unwrap();
    let both = Redactor::default().with(&secret).with(&input);
    assert!(!both.is_empty() && Redactor::default().is_empty());
    let text = "a tok_card_4242 then sk_live_combined_secret";
    assert_eq!(both.redact_str(text), "a [REDACTED] then [REDACTED]");
    assert_eq!(both.find(text.as_bytes()).map(|f| f.offset), Some(2), "the leftmost of either part");
    assert_eq!(secret.redact_str(text), "a tok_card_4242 then [REDACTED]", "parts are shared, not merged");
}

fn redactor(secrets: &[&[u8]]) -> Redactor {
    Redactor::new(secrets.iter().map(|s| s.to_vec())).unwrap()
}

fn form_in(r: &Redactor, text: &str) -> Option<Form> {
    r.find(text.as_bytes()).map(|f| f.form)
}

#[test]
fn finds_the_raw_and_hex_forms_and_redacts_them() {
    let r = redactor(&[CANARY.as_bytes()]);
    let raw = format!("GET /v1?token={CANARY}&x=1");
    assert_eq!(r.find(raw.as_bytes()), Some(Finding { form: Form::Raw, offset: 14, len: CANARY.len() }));
    assert_eq!(r.redact_str(&raw), "GET /v1?token=[REDACTED]&x=1");
    let lower = format!("digest={}.", hex::encode(CANARY));
    let upper = format!("DIGEST={}.", hex::encode_upper(CANARY));
    assert_eq!(form_in(&r, &lower), Some(Form::HexLower));
    assert_eq!(form_in(&r, &upper), Some(Form::HexUpper));
    assert_eq!(r.redact_str(&lower), "digest=[REDACTED].");
    assert_eq!(r.redact_str(&upper), "DIGEST=[REDACTED].");
}

#[test]
fn finds_base64_at_every_alignment_and_redacts_every_secret_determined_character() {
    let r = redactor(&[CANARY.as_bytes()]);
    let engines: [(base64::engine::GeneralPurpose, Form); 4] = [
        (STANDARD, Form::Base64),
        (STANDARD_NO_PAD, Form::Base64),
        (URL_SAFE, Form::Base64Url),
        (URL_SAFE_NO_PAD, Form::Base64Url),
    ];
    for (engine, form) in engines {
        for prefix_len in 0..7 {
            for suffix_len in 0..4 {
                let mut data = b"\xfb\xffpre:x"[..prefix_len].to_vec();
                data.extend_from_slice(CANARY.as_bytes());
                data.extend_from_slice(&b"\xfe?z"[..suffix_len]);
                let encoded = engine.encode(&data);
                let text = format!("before {encoded} after");
                let ctx = format!("{form:?} prefix {prefix_len} suffix {suffix_len}: {text}");
                // Where the alphabets agree (no `+/` or `-_` in the matched part) either form may be reported.
                let found = form_in(&r, &text);
                assert!(found == Some(form) || found == Some(Form::Base64), "{ctx}: {found:?}");

                let redacted = r.redact_str(&text);
                assert_eq!(r.find(redacted.as_bytes()), None, "{ctx}");
                let body = redacted.strip_prefix("before ").and_then(|s| s.strip_suffix(" after")).unwrap();
                let at = body.find(REDACTED).unwrap();
                let kept_tail = &body[at + REDACTED.len()..];
                assert_eq!(&body[..at], &encoded[..at], "{ctx}");
                assert!(encoded.ends_with(kept_tail), "{ctx}");
                // Every character determined by the secret alone was removed.
                let first = (8 * prefix_len).div_ceil(6);
                let end = 8 * (prefix_len + CANARY.len()) / 6;
                assert!(at <= first && encoded.len() - kept_tail.len() >= end, "{ctx} -> {redacted}");
            }
        }
    }
}

#[test]
fn finds_a_canary_inside_basic_auth() {
    let r = redactor(&[CANARY.as_bytes()]);
    let header = format!("Authorization: Basic {}", STANDARD.encode(format!("user:{CANARY}")));
    assert_eq!(form_in(&r, &header), Some(Form::Base64));
    let redacted = r.redact_str(&header);
    assert!(redacted.starts_with("Authorization: Basic dXNlcj") && redacted.contains(REDACTED), "{redacted}");
    assert_eq!(r.find(redacted.as_bytes()), None);
}

#[test]
fn finds_percent_encoded_and_json_escaped_forms() {
    let secret = "p@ss w/rd\"\\!";
    let r = redactor(&[secret.as_bytes()]);
    let query = "https://api.example/v1?key=p%40ss%20w%2Frd%22%5C%21&a=b";
    assert_eq!(form_in(&r, query), Some(Form::PercentEncoded));
    assert_eq!(r.redact_str(query), "https://api.example/v1?key=[REDACTED]&a=b");
    let json_text = serde_json::to_string(&json!({ "password": secret })).unwrap();
    assert_eq!(form_in(&r, &json_text), Some(Form::JsonEscaped));
    assert_eq!(r.redact_str(&json_text), r#"{"password":"[REDACTED]"}"#);
}

#[test]
fn short_secrets_are_matched_raw_only() {
    let r = redactor(&[b"abc"]);
    assert_eq!(form_in(&r, "xxabcxx"), Some(Form::Raw));
    assert_eq!(form_in(&r, "hex 616263 and base64 YWJj"), None);
    assert_eq!(r.redact_str("xxabcxx"), "xx[REDACTED]xx");
}

#[test]
fn clean_text_and_empty_redactors_change_nothing() {
    let r = redactor(&[CANARY.as_bytes()]);
    let text = "The quick brown fox jumps over the lazy dog. dmFkeWwtY2FuYXJ5 76616479";
    assert_eq!(r.find(text.as_bytes()), None);
    assert_eq!(r.redact_str(text), text);
    let empty = redactor(&[b""]);
    assert!(empty.is_empty());
    assert_eq!(empty.find(b"anything"), None);
    assert_eq!(empty.redact_str("anything"), "anything");
    assert_eq!(empty.redact_json(&json!({"a": "anything"})), json!({"a": "anything"}));
}

#[test]
fn overlapping_and_adjacent_secrets_are_removed_entirely() {
    let r = redactor(&[b"abcdef12", b"ef12ghij", b"zzzz"]);
    assert_eq!(r.redact_str("xxabcdef12ghijyy"), "xx[REDACTED]yy");
    assert_eq!(r.redact_str("abcdef12zzzz-zzzz"), "[REDACTED]-[REDACTED]");
}

#[test]
fn the_packed_searcher_and_the_automaton_redact_the_same() {
    // Few secrets use the packed searcher; enough of them to exceed its limit use the automaton.
    let few: Vec<&[u8]> = vec![b"aaaa", b"abcdef12", b"ef12ghij"];
    let filler: Vec<String> = (0..10).map(|i| format!("filler-secret-{i:02}")).collect();
    let mut many = few.clone();
    many.extend(filler.iter().map(|f| f.as_bytes()));
    let (small, large) = (redactor(&few), redactor(&many));
    assert!(matches!(small.parts[0].matcher, Matcher::Packed(_)));
    assert!(matches!(large.parts[0].matcher, Matcher::Automaton(_)), "{} patterns", large.parts[0].forms.len());
    for text in ["aaaaaa", "xaaaaaaay", "xxabcdef12ghijyy", "abcdef12aaaa", "YWFhYQ==", "nothing here", ""] {
        assert_eq!(small.redact_str(text), large.redact_str(text), "{text:?}");
        assert_eq!(small.find(text.as_bytes()), large.find(text.as_bytes()), "{text:?}");
    }
    assert_eq!(small.redact_str("xaaaaaaay"), "x[REDACTED]y", "self-overlapping occurrences are all removed");
}

#[test]
fn find_reports_the_leftmost_occurrence() {
    let r = redactor(&[CANARY.as_bytes(), b"second-secret-value"]);
    let text = format!("0123456789{} then second-secret-value then {CANARY}", hex::encode_upper(CANARY));
    assert_eq!(r.find(text.as_bytes()), Some(Finding { form: Form::HexUpper, offset: 10, len: 2 * CANARY.len() }));
}

#[test]
fn binary_secrets_are_found_in_bytes_and_encodings() {
    let secret = [0xff, 0x00, 0xfe, 0x01, 0x80, 0x7f];
    let r = redactor(&[&secret]);
    let mut bytes = b"head".to_vec();
    bytes.extend_from_slice(&secret);
    assert_eq!(r.find(&bytes).map(|f| (f.form, f.offset)), Some((Form::Raw, 4)));
    let text = format!("sig={}", URL_SAFE_NO_PAD.encode(secret));
    assert_eq!(form_in(&r, &text), Some(Form::Base64Url));
    assert_eq!(r.redact_str(&text), "sig=[REDACTED]");
}

#[test]
fn debug_does_not_print_the_secrets() {
    let r = redactor(&[CANARY.as_bytes()]);
    let debug = format!("{r:?}");
    assert!(debug.starts_with("Redactor"));
    assert_eq!(r.find(debug.as_bytes()), None);
}

#[test]
fn redact_json_covers_strings_keys_and_numbers() {
    let r = redactor(&[CANARY.as_bytes(), b"12345678"]);
    let v = json!({
        CANARY: ["x", format!("Bearer {CANARY}"), 5, { "pin": 12345678, "ok": true, "none": null }],
        "encoded": hex::encode(CANARY),
    });
    assert_eq!(
        r.redact_json(&v),
        json!({
            REDACTED: ["x", "Bearer [REDACTED]", 5, { "pin": REDACTED, "ok": true, "none": null }],
            "encoded": REDACTED,
        })
    );
}

#[test]
fn redact_pointers_follows_rfc_6901_with_a_star_for_array_elements() {
    let mut v = json!({
        "metadata": [["k1", "v1"], ["k2", "v2"]],
        "card": { "number": "4242", "brand": "visa" },
        "a/b": { "~x": 1, "y": 2 },
        "list": [1, 2],
        "obj": { "*": "star", "other": "kept" },
    });
    let pointers: Vec<String> = [
        "/metadata/*/1",
        "/card/number",
        "/a~1b/~0x",
        "/missing/x",
        "/list/5",
        "/list/01",
        "/list/-",
        "/card/brand/deeper",
        "/obj/*",
    ]
    .map(String::from)
    .into();
    redact_pointers(&mut v, &pointers).unwrap();
    assert_eq!(
        v,
        json!({
            "metadata": [["k1", REDACTED], ["k2", REDACTED]],
            "card": { "number": REDACTED, "brand": "visa" },
            "a/b": { "~x": REDACTED, "y": 2 },
            "list": [1, 2],
            "obj": { "*": REDACTED, "other": "kept" },
        })
    );
    let mut list = json!([{"s": 1}, {"s": 2}, {"t": 3}]);
    redact_pointers(&mut list, &["/*/s".to_owned(), "/1".to_owned()]).unwrap();
    assert_eq!(list, json!([{"s": REDACTED}, REDACTED, {"t": 3}]));
    let mut whole = json!({"a": 1});
    redact_pointers(&mut whole, &[String::new()]).unwrap();
    assert_eq!(whole, json!(REDACTED));
}

#[test]
fn an_invalid_pointer_redacts_everything_and_says_which() {
    for (pointer, reason) in [("card", "start with '/'"), ("/a~2b", "'~' must be followed")] {
        let mut v = json!({"card": "4242"});
        let err = redact_pointers(&mut v, &["/ok".to_owned(), pointer.to_owned()]).unwrap_err();
        assert_eq!(v, json!(REDACTED));
        assert!(matches!(&err, RedactionError::InvalidPointer { pointer: p, .. } if p == pointer));
        assert!(err.to_string().contains(reason), "{err}");
    }
}
