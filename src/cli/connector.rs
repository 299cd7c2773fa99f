//! `vadyl connector …`: build an implementation from any source, print the manifest schema, run
//! conformance (which publishes a passing implementation), bind aliases, and invoke.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use vadyl::ids::{BindingAlias, BindingTarget, ContractRef, ImplementationId};

use super::args::{project_arg, BindingCommand, BuildCommand, ConformanceCommand, ConnectorCommand, SchemaCommand};
use super::client::{call_api, call_api_form, local_actor, open_registry, read_api, Conn};
use super::output::{self, Output};

pub(super) fn run(conn: &Conn, out: &Output, command: ConnectorCommand) -> anyhow::Result<()> {
    match command {
        ConnectorCommand::Build(c) => build(conn, out, c),
        ConnectorCommand::Schema(SchemaCommand::Declarative) => {
            println!("{}", serde_json::to_string_pretty(&vadyl::runtime::declarative::manifest_json_schema())?);
            Ok(())
        }
        ConnectorCommand::Binding(c) => binding(conn, out, c),
        ConnectorCommand::Conformance(ConformanceCommand::Run { implementation }) => {
            conformance(conn, out, &implementation)
        }
        ConnectorCommand::Test { wasm, descriptor, contract, manifest } => {
            let subject = match (&wasm, &descriptor, &contract, &manifest) {
                (Some(wasm), Some(descriptor), Some(contract), None) => {
                    super::dev::Subject::Component { wasm, descriptor, contract }
                }
                (None, _, _, Some(manifest)) => super::dev::Subject::Manifest(manifest),
                _ => bail!("give --wasm with --descriptor and --contract, or --manifest"),
            };
            super::dev::connector_test(out, subject)
        }
        ConnectorCommand::Invoke { alias, operation, input, project } => {
            invoke(conn, out, alias, operation, &input, project)
        }
    }
}

fn build(conn: &Conn, out: &Output, command: BuildCommand) -> anyhow::Result<()> {
    let v = match command {
        BuildCommand::Declarative { manifest } => {
            let text =
                std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
            let document: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", manifest.display()))?;
            call_api(conn, reqwest::Method::POST, "/build/declarative", Some(document))?
        }
        BuildCommand::Component { wasm, implementation, contract, descriptor } => {
            let id: ImplementationId = implementation.parse()?;
            let contract: ContractRef = contract.parse()?;
            let descriptor_json = read_json_file(&descriptor)?;
            match &conn.server {
                // Streamed from the file as multipart: never base64, never read whole here.
                Some(_) => {
                    use reqwest::blocking::multipart::{Form, Part};
                    let file = std::fs::File::open(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
                    let len = file.metadata().with_context(|| format!("cannot read {}", wasm.display()))?.len();
                    let form = Form::new()
                        .text("implementationId", id.to_string())
                        .text("contract", contract.to_string())
                        .part("descriptor", Part::text(descriptor_json.to_string()).mime_str("application/json")?)
                        .part(
                            "component",
                            Part::reader_with_length(file, len)
                                .file_name("component.wasm")
                                .mime_str("application/wasm")?,
                        );
                    call_api_form(conn, "/build/component", form)?
                }
                None => {
                    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
                    let app = open_registry(&conn.location)?;
                    let result = app.build_component(
                        &local_actor(),
                        id,
                        contract,
                        &descriptor_json,
                        vadyl::app::lifecycle::ComponentUpload::new(bytes),
                    )?;
                    app.registry().snapshot_if_stale(1000)?;
                    serde_json::to_value(&result)?
                }
            }
        }
        BuildCommand::Native { adapter, implementation, descriptor } => {
            let id: ImplementationId = implementation.parse()?;
            let descriptor = descriptor.as_deref().map(read_json_file).transpose()?;
            let body = json!({"implementationId": id, "adapter": adapter, "descriptor": descriptor});
            call_api(conn, reqwest::Method::POST, "/build/native", Some(body))?
        }
    };
    out.print(&v, output::build_summary);
    Ok(())
}

/// Runs the suite on the server, or in-process with a progress line per vector on stderr (and a
/// checkpoint over what the run wrote).
fn conformance(conn: &Conn, out: &Output, implementation: &str) -> anyhow::Result<()> {
    let id: ImplementationId = implementation.parse()?;
    let report = match &conn.server {
        Some(_) => call_api(conn, reqwest::Method::POST, "/conformance/run", Some(json!({"implementationId": id})))?,
        None => {
            let app = open_registry(&conn.location)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let json_mode = out.json;
            let report = runtime.block_on(app.run_conformance_with_progress(&local_actor(), &id, &mut |vector| {
                if !json_mode {
                    eprintln!("  running vector {vector} …");
                }
            }))?;
            app.registry().checkpoint(&local_actor())?;
            serde_json::to_value(&report)?
        }
    };
    out.print(&report, output::conformance_summary);
    if report["passed"] != json!(true) {
        bail!("conformance failed");
    }
    Ok(())
}

fn invoke(
    conn: &Conn,
    out: &Output,
    alias: String,
    operation: String,
    input: &str,
    project: Option<String>,
) -> anyhow::Result<()> {
    let project = project_arg(project)?;
    let alias: BindingAlias = alias.parse()?;
    let input: Value = serde_json::from_str(input).context("--input is not JSON")?;
    let v = call_api(
        conn,
        reqwest::Method::POST,
        "/invoke",
        Some(json!({"project": project, "alias": alias, "operation": operation, "input": input})),
    )?;
    out.print(&v, output::invoke_summary);
    Ok(())
}

fn binding(conn: &Conn, out: &Output, command: BindingCommand) -> anyhow::Result<()> {
    match command {
        BindingCommand::Create { alias, implementation, project } => {
            let project = project_arg(project)?;
            let alias: BindingAlias = alias.parse()?;
            let target: BindingTarget = implementation.parse()?;
            let v = call_api(
                conn,
                reqwest::Method::POST,
                "/bindings",
                Some(json!({ "project": project, "alias": alias, "implementation": target })),
            )?;
            out.print(&v, output::binding_summary);
        }
        BindingCommand::List { project } => {
            let project = project_arg(project)?;
            let v = read_api(conn, &format!("/bindings?project={project}"))?;
            out.print(&v, |v| output::bindings_summary(&project, v));
        }
        BindingCommand::Show { alias, project } => {
            let project = project_arg(project)?;
            let alias: BindingAlias = alias.parse()?;
            let v = read_api(conn, &format!("/bindings/{alias}?project={project}"))?;
            out.print(&v, output::binding_summary);
        }
    }
    Ok(())
}

fn read_json_file(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}
