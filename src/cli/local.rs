//! Commands on the data directory's own keys and secrets, which never go through `--server`: the
//! registry's signing key (`vadyl key show`) and encrypted project secrets (`vadyl secret …`).

use anyhow::{bail, Context};
use serde_json::json;

use super::args::{project_arg, SecretCommand};
use super::client::{open_registry, Conn};
use super::output::{self, Output};

/// `vadyl key show`: the public half of the signing key (creating the key pair on first use).
pub(super) fn key_show(location: &vadyl::storage::Location, out: &Output) -> anyhow::Result<()> {
    let key = vadyl::storage::registry_key(location)?;
    use vadyl::keys::Signer;
    out.print(
        &json!({
            "algorithm": "ed25519", "keyName": vadyl::keys::KEY_NAME, "keyId": key.key_id_hex(),
            "publicKey": key.public_key_base64(), "verifierKey": key.verifier_key(),
        }),
        output::key_summary,
    );
    Ok(())
}

/// `vadyl secret set|list`: values are read from standard input or the environment, never shown.
pub(super) fn secret(conn: &Conn, out: &Output, command: SecretCommand) -> anyhow::Result<()> {
    if conn.server.is_some() {
        bail!("secrets are set on the registry's own data directory, not through --server");
    }
    let app = open_registry(&conn.location)?;
    match command {
        SecretCommand::Set { name, project, from_env } => {
            let project = project_arg(project)?;
            let value = match from_env {
                Some(var) => std::env::var(&var).with_context(|| format!("environment variable {var} is not set"))?,
                None => {
                    use std::io::Read;
                    let mut v = String::new();
                    std::io::stdin().read_to_string(&mut v).context("cannot read the secret from standard input")?;
                    v
                }
            };
            // A trailing newline from `echo` or a heredoc is not part of the secret.
            let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
            if value.is_empty() {
                bail!("the secret value is empty");
            }
            let meta = app.set_secret(&project, &name, value.as_bytes())?;
            out.print(&serde_json::to_value(&meta)?, |_| {
                format!("stored {} version {} in project {project} ({})", meta.name, meta.version, meta.fingerprint)
            });
        }
        SecretCommand::List { project } => {
            let project = project_arg(project)?;
            let list = app.list_secrets(&project)?;
            out.print(&serde_json::to_value(&list)?, |_| {
                list.iter()
                    .map(|m| format!("{} v{} {}", m.name, m.version, m.fingerprint))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}
