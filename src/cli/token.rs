//! `vadyl token create|list|revoke`, on a server or the data directory.

use serde_json::json;

use super::args::TokenCommand;
use super::client::{call_api, read_api, Conn};
use super::output::{self, Output};

pub(super) fn run(conn: &Conn, out: &Output, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { role, project, implementations, label } => {
            let role: vadyl::ids::Role = role.parse()?;
            let body = json!({"role": role, "project": project, "implementations": implementations, "label": label});
            let v = call_api(conn, reqwest::Method::POST, "/tokens", Some(body))?;
            out.print(&v, output::token_created_summary);
        }
        TokenCommand::List => {
            let v = read_api(conn, "/tokens")?;
            out.print(&v, output::pretty);
        }
        TokenCommand::Revoke { token_id, reason } => {
            let v = call_api(
                conn,
                reqwest::Method::POST,
                &format!("/tokens/{token_id}/revoke"),
                Some(json!({ "reason": reason })),
            )?;
            out.print(&v, |_| format!("revoked {token_id}"));
        }
    }
    Ok(())
}
