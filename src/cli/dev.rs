//! The author's loop: `vadyl connector test` (conformance without a registry) and `vadyl guest new`
//! / `vadyl guest build` (a guest that builds and passes `connector test` out of the box).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use vadyl::ids::{ContractRef, ImplementationId};

use super::client::local_actor;
use super::output::Output;

/// The id a component is built under in the scratch registry (components carry no id of their own).
const UNDER_TEST: &str = "connector-under-test:0.0.0";

/// What `connector test` was given.
pub(super) enum Subject<'a> {
    Component { wasm: &'a Path, descriptor: &'a Path, contract: &'a str },
    Manifest(&'a Path),
}

/// Builds the subject in a scratch registry — a private temporary directory, removed on return —
/// and runs the contract's vectors there. The build checks and the conformance suite are the very
/// code a server runs, so the verdict is the one `conformance run` would give; but the user's data
/// directory is never opened, nothing is published anywhere, and no log outlives the command.
pub(super) fn connector_test(out: &Output, subject: Subject<'_>) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new().prefix("vadyl-connector-test-").tempdir()?;
    let app = vadyl::storage::open_with(
        scratch.path(),
        vadyl::app::registry::OpenOptions { register_contracts: true, use_snapshots: false },
        vadyl::storage::sqlite::log::Durability::Normal,
    )
    .context("cannot set up the scratch registry")?;
    let actor = local_actor();
    let (id, contract) = match subject {
        Subject::Component { wasm, descriptor, contract } => {
            let contract: ContractRef = contract.parse().context("--contract")?;
            let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let descriptor = read_json(descriptor)?;
            let id: ImplementationId = UNDER_TEST.parse()?;
            app.build_component(
                &actor,
                id.clone(),
                contract.clone(),
                &descriptor,
                vadyl::app::lifecycle::ComponentUpload::new(bytes),
            )
            .with_context(|| format!("{} does not build", wasm.display()))?;
            (id, contract)
        }
        Subject::Manifest(path) => {
            let document = read_json(path)?;
            let built = app
                .build_declarative(&actor, &document)
                .with_context(|| format!("{} does not build", path.display()))?;
            (built.implementation_id, built.contract)
        }
    };
    let total = vadyl::contracts::vectors::vectors(&contract.to_string()).map_or(0, |s| s.vectors.len());
    let progress = !out.json && std::io::stderr().is_terminal();
    let mut started = 0usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(app.run_conformance_with_progress(&actor, &id, &mut |vector| {
        started += 1;
        if progress {
            eprintln!("  [{started}/{total}] {vector} …");
        }
    }))?;
    drop(app);
    drop(scratch);
    let v = json!({
        "contract": contract,
        "passed": report.passed,
        "checks": report.checks,
        "vectors": report.vectors,
    });
    out.print(&v, test_summary);
    if !report.passed {
        bail!("the connector fails conformance");
    }
    Ok(())
}

fn test_summary(v: &Value) -> String {
    let mut text = format!(
        "conformance of a {} connector, run locally: {}\n",
        v["contract"].as_str().unwrap_or("?"),
        if v["passed"] == json!(true) { "passed" } else { "FAILED" }
    );
    for c in v["checks"].as_array().into_iter().flatten() {
        let mark = match c["state"].as_str() {
            Some("passed") => "ok  ",
            Some("failed") => "FAIL",
            _ => "skip",
        };
        text.push_str(&format!(
            "  {mark} {:<28}{}\n",
            c["id"].as_str().unwrap_or("?"),
            c["detail"].as_str().map(|d| format!(" {d}")).unwrap_or_default()
        ));
    }
    text.push_str("nothing was published and no registry's log was written");
    text
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

pub(super) fn guest(out: &Output, command: super::args::GuestCommand) -> anyhow::Result<()> {
    use vadyl::tools::guests::scaffold;
    match command {
        super::args::GuestCommand::New { lang, contract, dir } => {
            let lang: scaffold::Lang = lang.parse()?;
            let contract: ContractRef = contract.parse().context("--contract")?;
            let files = scaffold::new_guest(&dir, lang, &contract.to_string())?;
            let v = json!({"dir": dir, "lang": lang, "contract": contract, "files": files});
            out.print(&v, |v| {
                format!(
                    "a {} guest for {} in {}: next, `vadyl guest build {}` and `vadyl connector test` (see its README.md)",
                    v["lang"].as_str().unwrap_or("?"),
                    v["contract"].as_str().unwrap_or("?"),
                    v["dir"].as_str().unwrap_or("?"),
                    v["dir"].as_str().unwrap_or("?"),
                )
            });
            Ok(())
        }
        super::args::GuestCommand::Build { dir, out: target, toolchains } => {
            let toolchains = toolchains.unwrap_or_else(vadyl::tools::guests::default_toolchains_dir);
            let target = target.unwrap_or_else(|| scaffold::default_output(&dir));
            if !out.json && std::io::stderr().is_terminal() {
                eprintln!("  building {} …", dir.display());
            }
            let (m, bytes) = scaffold::build_guest(&dir, &toolchains, &target)?;
            let v = json!({"component": target, "bytes": bytes.len(), "lang": m.lang, "contract": m.contract});
            out.print(&v, |v| {
                format!(
                    "built {} ({} bytes) for {}",
                    v["component"].as_str().unwrap_or("?"),
                    v["bytes"],
                    v["contract"].as_str().unwrap_or("?")
                )
            });
            Ok(())
        }
    }
}
