//! `vadyl audit …`: verify, replay, checkpoint, export and prove the event history, on a data
//! directory or, with `--server`, against a running registry with only a token and the registry's
//! public key. Against a server the verification happens here: the export is downloaded and every
//! hash, link, root and signature recomputed; proofs are checked against the key the auditor gives,
//! never against the server's word. On a data directory, verification and replay open the log alone
//! and write nothing; checkpoint, export and prove sign a checkpoint over the head first.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use serde_json::json;
use vadyl::app::audit::{self, TrustedKey};
use vadyl::app::history::{self, ConsistencyProof};
use vadyl::events::store::EventStore;
use vadyl::storage::Location;

use super::args::{AuditCommand, KeyArg};
use super::client::{local_actor, open_registry, read_api, remote_get, Conn};
use super::output::Output;

/// Runs one `vadyl audit` command on the data directory or against `--server`.
pub(super) fn run(conn: &Conn, out: &Output, command: AuditCommand) -> anyhow::Result<()> {
    let location = &conn.location;
    let remote = conn.server.is_some();
    match command {
        AuditCommand::ReplayInvocation { invocation_id } => {
            if remote {
                bail!("replay-invocation re-runs the artifact on this machine: run it on the data directory");
            }
            let app = open_registry(location)?;
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
        AuditCommand::Verify(key) if remote => {
            let trusted = trusted_key(conn, &key)?;
            // Streamed: verified line by line as it arrives, never held whole.
            let download = std::io::BufReader::new(remote_get(conn, "/audit/export")?);
            let summary = audit::verify_export_from(download, &trusted, &mut |_| Ok(()))
                .context("the history the server sent does not verify against the trusted key")?;
            out.print(&serde_json::to_value(&summary)?, |_| {
                format!(
                    "ok: {} events downloaded and recomputed here, chain intact, root {} matches the checkpoint signed by the trusted key",
                    summary.events, summary.root_hash
                )
            });
            Ok(())
        }
        AuditCommand::Verify(key) => {
            let trusted = trusted_key(conn, &key)?;
            let store = open_log(location)?;
            let report = audit::verify(store.as_ref(), &trusted)?;
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
        AuditCommand::Replay { to, key } => {
            let report = if remote {
                // From the verified export, folded here: the server's own replay is not the proof.
                let trusted = trusted_key(conn, &key)?;
                // Folded as the export streams in; the fold counts only once the whole export
                // (its signed checkpoint is the last line) has verified.
                let download = std::io::BufReader::new(remote_get(conn, "/audit/export")?);
                let mut state = vadyl::projections::Projections::default();
                let summary = audit::verify_export_from(download, &trusted, &mut |e| {
                    if to.is_none_or(|to| e.position <= to) {
                        state.apply(&e).map_err(|err| audit::AuditError::BadEvent {
                            position: e.position,
                            reason: err.to_string(),
                        })?;
                    }
                    Ok(())
                })
                .context("the history the server sent does not verify against the trusted key")?;
                if let Some(to) = to.filter(|to| *to > summary.events) {
                    bail!("position {to} is beyond the signed history ({} events)", summary.events);
                }
                audit::ReplayReport { digests: state.digests(), summary: audit::summarize(&state) }
            } else {
                audit::replay_report(open_log(location)?.as_ref(), to)?
            };
            out.print(&serde_json::to_value(&report)?, |_| replay_text(&report));
            Ok(())
        }
        AuditCommand::Checkpoint(key) if remote => {
            let note =
                String::from_utf8(download(conn, "/audit/checkpoint")?).context("the checkpoint is not UTF-8 text")?;
            let cp = trusted_key(conn, &key)?
                .verify_note(&note)
                .map_err(|e| anyhow!("the server's checkpoint does not verify: {e}"))?;
            out.print(&json!({"treeSize": cp.tree_size, "rootHash": hex::encode(cp.root_hash), "note": note}), |_| {
                note.trim_end().to_owned()
            });
            Ok(())
        }
        AuditCommand::Checkpoint(_) => {
            let app = open_registry(location)?;
            let cp = app.registry().checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
            out.print(&serde_json::to_value(&cp)?, |_| cp.note.trim_end().to_owned());
            Ok(())
        }
        AuditCommand::Export { out: path } if remote => {
            let written = write_atomically(&path, |file| {
                let mut response = remote_get(conn, "/audit/export")?;
                let n = std::io::copy(&mut response, file).context("the download stopped")?;
                Ok(n)
            })?;
            out.print(&json!({"bytes": written, "out": path}), |_| {
                format!(
                    "downloaded {written} bytes to {}; check it with vadyl audit verify-export {} --public-key …",
                    path.display(),
                    path.display()
                )
            });
            Ok(())
        }
        AuditCommand::Export { out: path } => {
            let app = open_registry(location)?;
            let registry = app.registry();
            let cp = registry.checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
            let written = write_atomically(&path, |file| {
                let mut w = std::io::BufWriter::new(file);
                let n = app.export(&mut w, &cp.note, cp.tree_size)?;
                w.flush()?;
                Ok(n)
            })?;
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
            let trusted = trusted_key(conn, &key)?;
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
        AuditCommand::Prove { position, event_id, out: path, key } => {
            let proof: audit::InclusionProof = if remote {
                let query = match (&position, &event_id) {
                    (Some(p), _) => format!("position={p}"),
                    (None, Some(id)) => format!("eventId={}", url_escape(id)),
                    (None, None) => bail!("name the event with --position or --event-id"),
                };
                let bytes = download(conn, &format!("/audit/proof/inclusion?{query}"))?;
                serde_json::from_slice(&bytes).context("the server's answer is not an inclusion proof")?
            } else {
                let app = open_registry(location)?;
                app.registry().checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
                let position = match (position, &event_id) {
                    (Some(p), _) => p,
                    (None, Some(id)) => app
                        .event_by_id(id)?
                        .and_then(|e| e["position"].as_u64())
                        .ok_or_else(|| anyhow!("there is no event with id {id:?}"))?,
                    (None, None) => bail!("name the event with --position or --event-id"),
                };
                app.prove_inclusion(position)?
            };
            // Checked here before it is handed on, whenever there is a key to check it with.
            if !remote || key.public_key.is_some() {
                audit::verify_proof(&proof, &trusted_key(conn, &key)?)
                    .context("the inclusion proof does not verify")?;
            }
            let text = serde_json::to_string_pretty(&proof)?;
            match path {
                Some(p) => std::fs::write(&p, &text).with_context(|| format!("cannot write {}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
        AuditCommand::VerifyProof { file, key } => {
            let trusted = trusted_key(conn, &key)?;
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
        AuditCommand::Events { after, limit, stream, event_type, actor, all } => {
            let filtered = stream.is_some() || event_type.is_some() || actor.is_some();
            let mut filters = String::new();
            for (name, value) in [("stream", &stream), ("type", &event_type), ("actor", &actor)] {
                if let Some(v) = value {
                    filters.push_str(&format!("&{name}={}", url_escape(v)));
                }
            }
            let mut cursor = after;
            let mut previous: Option<(u64, String)> = None;
            let mut events = Vec::new();
            loop {
                let page = read_api(conn, &format!("/events?after={cursor}&limit={limit}{filters}"))?;
                let batch = page["events"].as_array().cloned().unwrap_or_default();
                for e in &batch {
                    let (position, hash) = (e["position"].as_u64().unwrap_or(0), e["hash"].as_str().unwrap_or(""));
                    // Unfiltered pages are contiguous: each event links to the one before it.
                    if let (false, Some((p, h))) = (filtered, &previous) {
                        if position != p + 1 || e["prevHash"].as_str() != Some(h.as_str()) {
                            bail!("the log is not contiguous at position {position}: it does not link to position {p}");
                        }
                    }
                    previous = Some((position, hash.to_owned()));
                }
                events.extend(batch);
                match page["next"].as_u64() {
                    Some(next) if all => cursor = next,
                    next => {
                        let summary = json!({"events": events, "next": next, "head": page["head"]});
                        out.print(&summary, |_| {
                            let mut text = String::new();
                            for e in &events {
                                text.push_str(&format!(
                                    "{:>8}  {}  {:<28} {:<40} {}\n",
                                    e["position"],
                                    e["recordedAt"].as_str().unwrap_or(""),
                                    e["type"].as_str().unwrap_or(""),
                                    e["streamId"].as_str().unwrap_or(""),
                                    e["actor"].as_str().unwrap_or("")
                                ));
                            }
                            match next {
                                Some(n) => text.push_str(&format!("more after position {n}: --after {n}")),
                                None => {
                                    text.push_str(&format!("{} event(s); the head is {}", events.len(), page["head"]))
                                }
                            }
                            text
                        });
                        return Ok(());
                    }
                }
            }
        }
        AuditCommand::ProveConsistency { from_checkpoint, out: path, key } => {
            let trusted = trusted_key(conn, &key)?;
            let old_note = read_note(&from_checkpoint)?;
            let old = trusted
                .verify_note(&old_note)
                .map_err(|e| anyhow!("the remembered checkpoint {} does not verify: {e}", from_checkpoint.display()))?;
            let proof: ConsistencyProof = if remote {
                let bytes = download(conn, &format!("/audit/proof/consistency?from={}", old.tree_size))?;
                serde_json::from_slice(&bytes).context("the server's answer is not a consistency proof")?
            } else {
                let app = open_registry(location)?;
                app.registry().checkpoint(&local_actor())?.ok_or_else(|| anyhow!("the log is empty"))?;
                app.prove_consistency(old.tree_size)?
            };
            let summary = history::verify_consistency(&proof, &old_note, &trusted)?;
            if let Some(p) = &path {
                std::fs::write(p, serde_json::to_string_pretty(&proof)?)
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            out.print(&serde_json::to_value(&summary)?, |_| consistency_text(&summary));
            Ok(())
        }
        AuditCommand::VerifyConsistency { file, from_checkpoint, key } => {
            let trusted = trusted_key(conn, &key)?;
            let old_note = read_note(&from_checkpoint)?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let proof: ConsistencyProof = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a consistency proof", file.display()))?;
            let summary = history::verify_consistency(&proof, &old_note, &trusted)?;
            out.print(&serde_json::to_value(&summary)?, |_| consistency_text(&summary));
            Ok(())
        }
    }
}

fn replay_text(report: &audit::ReplayReport) -> String {
    let s = &report.summary;
    let mut text = format!("replayed to position {}\nstate digest {}\n", s.position, report.digests.state);
    for (name, d) in &report.digests.projections {
        text.push_str(&format!("  {name:<16} {d}\n"));
    }
    text.push_str(&format!(
        "contracts {}, implementations {}, conformance runs {}, bindings {}, publications {} (latest {}, invalidated {}), checkpoints {}",
        s.contracts, s.implementations, s.conformance_runs, s.bindings, s.publications,
        s.latest_publication.map_or("none".into(), |v| v.to_string()), s.invalidated_publications, s.checkpoints
    ));
    text
}

fn consistency_text(s: &history::ConsistencySummary) -> String {
    format!(
        "ok: the signed tree of {} events (root {}) extends the remembered one of {} events (root {})",
        s.tree_size, s.root_hash, s.old_size, s.old_root
    )
}

fn read_note(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read the checkpoint note {}", path.display()))
}

/// The whole body of a GET on the server.
fn download(conn: &Conn, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut response = remote_get(conn, path)?;
    let mut bytes = Vec::new();
    std::io::copy(&mut response, &mut bytes).with_context(|| format!("the download of {path} stopped"))?;
    Ok(bytes)
}

/// Percent-encodes a query value (event ids are plain, but nothing is assumed).
fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The key audit checks trust: `--public-key` (the key itself or a file holding it), else the data
/// directory's own.
fn trusted_key(conn: &Conn, arg: &KeyArg) -> anyhow::Result<TrustedKey> {
    match &arg.public_key {
        Some(k) => {
            // Accept the key itself or a file holding it.
            let text = if Path::new(k).is_file() { std::fs::read_to_string(k)? } else { k.clone() };
            Ok(TrustedKey::parse(&text)?)
        }
        None if conn.server.is_some() => bail!(
            "against --server, give the registry's public key with --public-key (the verifier key `vadyl key show` prints); \
             the server's word is not trusted"
        ),
        None => {
            let key = vadyl::storage::registry_key(&conn.location)?;
            Ok(TrustedKey::parse(&key.verifier_key())?)
        }
    }
}

/// Opens the log alone, without registering anything: audit reads must not write.
fn open_log(location: &Location) -> anyhow::Result<Arc<dyn EventStore>> {
    vadyl::storage::open_existing_log(location)
        .with_context(|| format!("cannot read the event log in {}", location.describe()))
}

/// Writes `out` through `write` into a file beside it, syncs it and renames it into place, so a
/// failed or interrupted write leaves nothing at `out`.
fn write_atomically(out: &Path, write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<u64>) -> anyhow::Result<u64> {
    let tmp = out.with_extension("partial");
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let written = match write(&mut file).and_then(|n| Ok(file.sync_all().map(|()| n)?)) {
        Ok(n) => n,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", out.display()));
        }
    };
    std::fs::rename(&tmp, out).with_context(|| format!("cannot move the export into place at {}", out.display()))?;
    Ok(written)
}
