//! Golden replay: `snapshots/history.ndjson` is a history written by an earlier release (a signed
//! export), and `snapshots/projections.json` is the state it must replay to. A release that can no
//! longer read old events, or folds them differently, fails here.
//!
//! Regenerate only on purpose (a deliberate change of the projections' shape), with
//! `VADYL_REGENERATE_SNAPSHOTS=1 cargo test --test snapshots`, and say why in the commit.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use vadyl::app::audit::{self, TrustedKey};
use vadyl::events::domain::EVENT_TYPES;
use vadyl::ids::{ImplementationSource, PublicationVersion};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("snapshots")
}

#[test]
fn the_committed_history_replays_exactly() {
    if std::env::var_os("VADYL_REGENERATE_SNAPSHOTS").is_some() {
        regenerate();
    }
    let key = std::fs::read_to_string(dir().join("registry.pub")).unwrap();
    let trusted = TrustedKey::parse(&key).unwrap();
    let history = std::fs::read(dir().join("history.ndjson")).unwrap();
    let (summary, events) = audit::read_export(&history, &trusted).expect("the committed history verifies");
    assert_eq!(summary.events as usize, events.len());

    let types: BTreeSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    for (t, _) in EVENT_TYPES {
        assert!(types.contains(t), "snapshots/history.ndjson has no {t} event; regenerate it to cover every type");
    }

    let state = audit::replay_events(&events).expect("the committed history replays");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("projections.json")).unwrap()).unwrap();
    assert_eq!(serde_json::to_value(state.digests()).unwrap(), expected["digests"], "projection digests differ");
    assert_eq!(serde_json::to_value(&state).unwrap(), expected["state"], "replayed state differs");
}

/// Writes the fixture with the project's own tools: command handlers through `Registry`, then the
/// audit export.
fn regenerate() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = common::open(tmp.path());
    let stripe = common::publish(&reg, "stripe-charge-adapter:1.0.0", "payment.charge@1");
    let broken =
        common::build(&reg, "stripe-charge-adapter:1.1.0", "payment.charge@1", ImplementationSource::AuthoredComponent);
    common::conformance(&reg, &broken, "conf_broken_1", false);
    common::publish(&reg, "stripe-charge-adapter:1.2.0", "payment.charge@1");
    let native = common::build(&reg, "webhook-signer:1.0.0", "webhook.deliver@1", ImplementationSource::BuiltInNative);
    common::conformance(&reg, &native, "conf_webhook_1", true);
    common::bind(&reg, "shop", "stripe", "stripe-charge-adapter@^1");
    common::bind(&reg, "shop", "hooks", "webhook-signer:1.0.0");
    common::bind(&reg, "shop", "stripe", &stripe.to_string());
    reg.registry().checkpoint(&common::actor("snapshot-generator")).unwrap();
    reg.registry()
        .invalidate_publication(
            &common::actor("release-manager"),
            PublicationVersion(2),
            "1.2.0 double-charges on retry",
        )
        .unwrap();
    common::bind(&reg, "other", "stripe", "stripe-charge-adapter@^1");
    let auditor = reg
        .issue_token(&common::actor("admin"), vadyl::ids::Role::Auditor, None, vec![], "quarterly audit".into())
        .unwrap();
    reg.issue_token(
        &common::actor("admin"),
        vadyl::ids::Role::Project,
        Some("shop".parse().unwrap()),
        vec![],
        "shop backend".into(),
    )
    .unwrap();
    reg.registry()
        .execute(&common::actor("admin"), |s| vadyl::commands::revoke_token(s, &auditor.token_id, "audit finished"))
        .unwrap();
    let cp = reg.registry().checkpoint(&common::actor("snapshot-generator")).unwrap().unwrap();
    let mut out = std::fs::File::create(dir().join("history.ndjson")).unwrap();
    audit::export(reg.registry().store(), &cp.note, cp.tree_size, &mut out).unwrap();
    std::fs::write(dir().join("registry.pub"), format!("{}\n", reg.registry().key().verifier_key())).unwrap();
    let key = TrustedKey::parse(&reg.registry().key().verifier_key()).unwrap();
    let (_, events) = audit::read_export(&std::fs::read(dir().join("history.ndjson")).unwrap(), &key).unwrap();
    let state = audit::replay_events(&events).unwrap();
    let doc = serde_json::json!({ "digests": state.digests(), "state": state });
    std::fs::write(dir().join("projections.json"), serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
}
