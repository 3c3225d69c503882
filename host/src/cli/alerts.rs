//! `sluice alerts ...`.

use clap::Subcommand;
use serde_json::json;

use super::output::Output;
use super::{CliError, Client};

#[derive(Subcommand)]
pub enum AlertCommand {
    /// The tenant's alerts, firing and resolved. Example: sluice alerts list
    List,
    /// Every alert event, in order. Example: sluice alerts history
    History,
    /// Acknowledge an alert. Example: sluice alerts ack emails:depth
    Ack { id: String },
}

pub async fn run(client: &Client, out: Output, command: AlertCommand) -> Result<(), CliError> {
    match command {
        AlertCommand::List => {
            let list = client.get("/v1/alerts").await?;
            out.rows(
                &list,
                list["alerts"].as_array().map_or(&[], |v| v),
                &["id", "state", "severity", "value", "fired_at", "acknowledged_by", "message"],
            );
        }
        AlertCommand::History => {
            let h = client.get("/v1/alerts/history").await?;
            out.rows(&h, h["events"].as_array().map_or(&[], |v| v), &["at", "alert", "event", "value", "message"]);
        }
        AlertCommand::Ack { id } => {
            let a = client.post(&format!("/v1/alerts/{id}/ack"), json!({})).await?;
            out.done(&a, &format!("alert {id} acknowledged"));
        }
    }
    Ok(())
}
