//! `sluice holds ...`, `sluice retention`, `sluice users delete` and `sluice deletions ...`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::jobs::urlencode;
use super::output::Output;
use super::{CliError, Client};

/// What a legal hold is on: one job or one user.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct HoldTarget {
    /// The job's job_uuid.
    #[arg(long)]
    job: Option<String>,
    /// The user's user_id (all of the user's jobs, now and to come).
    #[arg(long)]
    user: Option<String>,
}

impl HoldTarget {
    fn path(&self) -> String {
        match (&self.job, &self.user) {
            (Some(job), _) => format!("/v1/jobs/{}/hold", urlencode(job)),
            (None, Some(user)) => format!("/v1/users/{}/hold", urlencode(user)),
            (None, None) => unreachable!("clap requires one of --job and --user"),
        }
    }
}

#[derive(Subcommand)]
pub enum HoldCommand {
    /// Place a legal hold. Example: sluice holds place --user u-1 --reason "case 42"
    Place {
        #[command(flatten)]
        target: HoldTarget,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a legal hold. Example: sluice holds lift --job 0192...
    Lift {
        #[command(flatten)]
        target: HoldTarget,
    },
}

pub async fn holds(client: &Client, out: Output, command: HoldCommand) -> Result<(), CliError> {
    match command {
        HoldCommand::Place { target, reason } => {
            let held = client.put(&target.path(), json!({ "reason": reason })).await?;
            out.done(&held, "legal hold placed");
        }
        HoldCommand::Lift { target } => {
            let lifted = client.delete(&target.path()).await?;
            out.done(&lifted, "legal hold lifted");
        }
    }
    Ok(())
}

/// What retention deleted and legal holds kept. Example: sluice retention
pub async fn retention(client: &Client, out: Output) -> Result<(), CliError> {
    out.record(&client.get("/v1/retention").await?);
    Ok(())
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Delete all of a user's data (right to delete); prints the receipt.
    ///
    /// Example: sluice --tenant acme users delete u-1
    Delete { user_id: String },
}

pub async fn users(client: &Client, out: Output, command: UserCommand) -> Result<(), CliError> {
    match command {
        UserCommand::Delete { user_id } => {
            let receipt = client.delete(&format!("/v1/users/{}/data", urlencode(&user_id))).await?;
            let message = format!(
                "deleted: {} jobs, {} kept under legal hold; receipt {} (erasure from the files follows)",
                receipt["jobs_deleted"],
                receipt["held_kept"],
                receipt["id"].as_str().unwrap_or("?")
            );
            out.done(&receipt, &message);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum DeletionCommand {
    /// The tenant's deletion receipts. Example: sluice deletions list
    List,
    /// One receipt. Example: sluice deletions show 0192...
    Show { id: String },
}

pub async fn deletions(client: &Client, out: Output, command: DeletionCommand) -> Result<(), CliError> {
    match command {
        DeletionCommand::List => {
            let list = client.get("/v1/deletions").await?;
            out.rows(
                &list,
                list["receipts"].as_array().map_or(&[], |v| v),
                &["id", "requested_at", "jobs_deleted", "held_kept", "erasure_completed_at"],
            );
        }
        DeletionCommand::Show { id } => out.record(&client.get(&format!("/v1/deletions/{}", urlencode(&id))).await?),
    }
    Ok(())
}
