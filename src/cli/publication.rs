//! The registry's published state, from a server or the data directory: contracts, built
//! implementations, publication versions, and rolling back by invalidation.

use serde_json::json;
use vadyl::ids::{ContractRef, ImplementationId, PublicationVersion};

use super::args::{ContractCommand, ImplementationCommand, PublicationCommand};
use super::client::{call_api, read_api, Conn};
use super::output::{self, Output};

/// `vadyl contract list|show`.
pub(super) fn contract(conn: &Conn, out: &Output, command: ContractCommand) -> anyhow::Result<()> {
    let path = match &command {
        ContractCommand::List => "/contracts".to_owned(),
        ContractCommand::Show { contract } => {
            let c: ContractRef = contract.parse()?;
            format!("/contracts/{}/{}", c.kind, c.major_version)
        }
    };
    let v = read_api(conn, &path)?;
    out.print(&v, output::pretty);
    Ok(())
}

/// `vadyl implementation list|show`.
pub(super) fn implementation(conn: &Conn, out: &Output, command: ImplementationCommand) -> anyhow::Result<()> {
    let path = match &command {
        ImplementationCommand::List => "/implementations".to_owned(),
        ImplementationCommand::Show { implementation_id } => {
            let id: ImplementationId = implementation_id.parse()?;
            format!("/implementations/{id}")
        }
    };
    let v = read_api(conn, &path)?;
    out.print(&v, output::pretty);
    Ok(())
}

/// `vadyl publication latest|version|invalidate`.
pub(super) fn publication(conn: &Conn, out: &Output, command: PublicationCommand) -> anyhow::Result<()> {
    match command {
        PublicationCommand::Latest => {
            let v = read_api(conn, "/publication/latest")?;
            out.print(&v, output::publication_summary);
        }
        PublicationCommand::Version { version, implementation } => {
            let version: PublicationVersion = version.parse()?;
            match implementation {
                Some(id) => {
                    let id: ImplementationId = id.parse()?;
                    let v = read_api(conn, &format!("/publication/version/{version}/{id}"))?;
                    out.print(&v, output::pretty);
                }
                None => {
                    let v = read_api(conn, &format!("/publication/version/{version}"))?;
                    out.print(&v, output::publication_summary);
                }
            }
        }
        PublicationCommand::Invalidate { version, reason } => {
            let version: PublicationVersion = version.parse()?;
            let v = call_api(
                conn,
                reqwest::Method::POST,
                "/publication/invalidate",
                Some(json!({ "publicationVersion": version, "reason": reason })),
            )?;
            out.print(&v, |v| output::invalidated_summary(&version, v));
        }
    }
    Ok(())
}
