//! Shared support for integration tests that need stand-ins for outside services (declare with `mod support;`).
#![allow(dead_code)]

pub mod fake_stripe;
pub mod postgres;

use serde_json::{json, Value};

/// The example Stripe manifest (`examples/stripe.connector.json`) pointed at `fake` (its base URL and
/// an allow-list entry for its loopback port), as `version`.
pub fn stripe_manifest(fake: &fake_stripe::FakeStripe, version: &str) -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/stripe.connector.json"))
        .expect("the example manifest is in the repository");
    let mut m: Value = serde_json::from_str(&text).expect("the example manifest is JSON");
    let port: u16 = fake.base_url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("the fake has a port");
    m["version"] = json!(version);
    m["config"]["baseUrl"] = json!(fake.base_url());
    if let Some(allow) = m["egress"]["allow"].as_array_mut() {
        allow.push(json!({"scheme": "http", "host": "127.0.0.1", "port": port}));
    }
    m
}
