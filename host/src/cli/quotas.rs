//! `sluice limits ...` and `sluice usage`.

use clap::Subcommand;

use super::jobs::urlencode;
use super::output::Output;
use super::{CliError, Client, json_arg};

#[derive(Subcommand)]
pub enum LimitCommand {
    /// The tenant's limits. Example: sluice --tenant acme limits get
    Get,
    /// Set the tenant's limits (admin).
    ///
    /// Example: sluice --tenant acme limits set '{"max_pending": 10000, "insert_rate": {"per_second": 100, "burst": 200}}'
    Set {
        /// The limits as JSON; fields left out are unlimited.
        limits: String,
    },
}

pub async fn limits(client: &Client, out: Output, command: LimitCommand) -> Result<(), CliError> {
    let limits = match command {
        LimitCommand::Get => client.get("/v1/limits").await?,
        LimitCommand::Set { limits } => client.put("/v1/limits", json_arg("limits", &limits)?).await?,
    };
    out.record(&limits);
    Ok(())
}

/// The tenant's usage, or one user's. Example: sluice usage --user u-1
pub async fn usage(client: &Client, out: Output, user: Option<String>) -> Result<(), CliError> {
    let usage = match user {
        Some(user) => client.get(&format!("/v1/users/{}/usage", urlencode(&user))).await?,
        None => client.get("/v1/usage").await?,
    };
    out.record(&usage);
    Ok(())
}
