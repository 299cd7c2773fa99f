//! `vadyl audit …`: verify, replay, checkpoint, export and prove the event history. These always
//! work on a data directory, never through `--server`: an auditor replays and verifies the history
//! itself. Verification and replay open the log alone and write nothing; checkpoint, export and
//! prove sign a checkpoint over the head first.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde_json::json;
use vadyl::app::audit::{self, TrustedKey};
use vadyl::storage::sqlite::log::{Durability, SqliteStore};
use vadyl::storage::EVENTS_DB;

use super::args::{AuditCommand, KeyArg};
use super::client::{local_actor, open_registry};
use super::output::Output;

/// Runs one `vadyl audit` command on the data directory.
pub(super) fn run(data_dir: &Path, out: &Output, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::ReplayInvocation { invocation_id } => {
            let app = open_registry(data_dir)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(app.replay_invocation(&invocation_id))?;
            out.print(&serde_json::to_value(&report)?, |_| {
                format!(
                    "replayed {} ({} {}) from {} recorded exchange(s), {} time reading(s), {} other host answer(s), without network\n\
                     recorded output: {}\nreplayed output: {}\n{}",
                    report.invocation_id,
                    report.implementation_id,
                    report.operation,
                    report.exchanges,
                    report.time_readings,
                    report.tape_entries,
                    report.recorded,
                    report.replayed,
                    if report.matches { "the same output" } else { "DIFFERENT output" }
                )
            });
            if !report.matches {
                bail!("the replay did not reproduce the recorded output");
            }
            Ok(())
        }
        AuditCommand::Verify(key) => {
            let trusted = trusted_key(data_dir, &key)?;
            let store = open_log(data_dir)?;
            let report = audit::verify(&store, &trusted)?;
            out.print(&serde_json::to_value(&report)?, |_| {
                if report.ok() {
                    format!(
                        "ok: {} events, chain intact, {} checkpoints verified (head {})",
                        report.events, report.checkpoints_verified, report.head_hash
                    )
                } else {
                    report
                        .problems
                        .iter()
                        .map(|p| format!("position {}: {}", p.position, p.reason))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            });
            match report.problems.first() {
                None => Ok(()),
                Some(first) => {
                    bail!("verification failed: first bad position is {} ({})", first.position, first.reason)
                }
            }
        }
        AuditCommand::Replay { to } => {
            let store = open_log(data_dir)?;
            let report = audit::replay_report(&store, to)?;
            out.print(&serde_json::to_value(&report)?, |_| {
                let s = &report.summary;
                let mut text = format!(
                    "replayed to position {}\nstate digest {}\n",
                    s.position, report.digests.state
                );
                for (name, d) in &report.digests.projections {
                    text.push_str(&format!("  {name:<16} {d}\n"));
                }
                text.push_str(&format!(
                    "contracts {}, implementations {}, conformance runs {}, bindings {}, publications {} (latest {}, invalidated {}), checkpoints {}",
                    s.contracts, s.implementations, s.conformance_runs, s.bindings, s.publications,
                    s.latest_publication.map_or("none".into(), |v| v.to_string()), s.invalidated_publications, s.checkpoints
                ));
                text
            });
            Ok(())
        }
        AuditCommand::Checkpoint => {
            let app = open_registry(data_dir)?;
            let registry = app.registry();
            let cp = registry.checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
            out.print(&serde_json::to_value(&cp)?, |_| cp.note.clone());
            Ok(())
        }
        AuditCommand::Export { out: path } => {
            let app = open_registry(data_dir)?;
            let registry = app.registry();
            let cp = registry.checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
            let written = write_export(registry.store(), &cp.note, cp.tree_size, &path)?;
            out.print(
                &json!({"events": written, "treeSize": cp.tree_size, "rootHash": cp.root_hash, "out": path}),
                |_| {
                    format!(
                        "exported {written} events to {} (checkpoint over {} events, root {})",
                        path.display(),
                        cp.tree_size,
                        cp.root_hash
                    )
                },
            );
            Ok(())
        }
        AuditCommand::VerifyExport { file, key } => {
            let trusted = trusted_key(data_dir, &key)?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let summary = audit::verify_export(&bytes, &trusted)?;
            out.print(&serde_json::to_value(&summary)?, |_| {
                format!(
                    "ok: {} events verify against the signed checkpoint (root {})",
                    summary.events, summary.root_hash
                )
            });
            Ok(())
        }
        AuditCommand::Prove { position, out: path } => {
            let app = open_registry(data_dir)?;
            let registry = app.registry();
            let cp = registry.checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
            let proof = audit::prove(registry.store(), position, &cp.note, cp.tree_size)?;
            let text = serde_json::to_string_pretty(&proof)?;
            match path {
                Some(p) => std::fs::write(&p, &text).with_context(|| format!("cannot write {}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
        AuditCommand::VerifyProof { file, key } => {
            let trusted = trusted_key(data_dir, &key)?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let proof: audit::InclusionProof =
                serde_json::from_str(&text).with_context(|| format!("{} is not an inclusion proof", file.display()))?;
            let summary = audit::verify_proof(&proof, &trusted)?;
            out.print(&serde_json::to_value(&summary)?, |_| {
                format!(
                    "ok: event {} ({}) is included in the signed tree of {} events (root {})",
                    summary.position, summary.event_type, summary.tree_size, summary.root_hash
                )
            });
            Ok(())
        }
    }
}

/// The key audit checks trust: `--public-key` (the key itself or a file holding it), else the data
/// directory's own.
fn trusted_key(data_dir: &Path, arg: &KeyArg) -> anyhow::Result<TrustedKey> {
    match &arg.public_key {
        Some(k) => {
            // Accept the key itself or a file holding it.
            let text = if Path::new(k).is_file() { std::fs::read_to_string(k)? } else { k.clone() };
            Ok(TrustedKey::parse(&text)?)
        }
        None => {
            let key = vadyl::storage::registry_key(data_dir)?;
            Ok(TrustedKey::parse(&key.verifier_key())?)
        }
    }
}

/// Opens the log alone, without registering anything: audit reads must not write.
fn open_log(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    let path = data_dir.join(EVENTS_DB);
    if !path.exists() {
        bail!("there is no event log at {}", path.display());
    }
    Ok(SqliteStore::open(&path, Durability::Full)?)
}

/// Writes the export beside `out` and renames it into place, so a failed export leaves nothing.
fn write_export(
    store: &dyn vadyl::events::store::EventStore,
    note: &str,
    tree_size: u64,
    out: &Path,
) -> anyhow::Result<u64> {
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let written = match audit::export(store, note, tree_size, &mut w) {
        Ok(n) => n,
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
        }
    };
    let file = w.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot move the export into place at {}", out.display()))?;
    Ok(written)
}
