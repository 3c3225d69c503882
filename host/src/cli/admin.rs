//! `sluice tenants ...` and `sluice keys ...`.

use clap::Subcommand;
use serde_json::json;

use super::output::Output;
use super::{CliError, Client};

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant. Example: sluice tenants create acme
    Create {
        /// 1-64 characters of a-z, 0-9 and '-'.
        id: String,
    },
    /// List tenants. Example: sluice tenants list
    List,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key; its secret is printed once.
    ///
    /// Example: sluice keys create --name ci --role producer --for-tenant acme
    Create {
        #[arg(long)]
        name: String,
        /// admin, operator, tenant-admin, producer, worker, auditor or user.
        #[arg(long)]
        role: String,
        /// The tenant the key belongs to (leave out for keys spanning tenants).
        #[arg(long = "for-tenant")]
        for_tenant: Option<String>,
        /// For a `user` key: the user it speaks for.
        #[arg(long)]
        user_id: Option<String>,
    },
    /// List keys (never their secrets). Example: sluice keys list
    List,
    /// Revoke a key; it stops working at once. Example: sluice keys revoke 3f2a9c0d1e2b
    Revoke { id: String },
}

pub async fn tenants(client: &Client, out: Output, command: TenantCommand) -> Result<(), CliError> {
    match command {
        TenantCommand::Create { id } => {
            let t = client.post("/v1/tenants", json!({ "id": id })).await?;
            out.done(&t, &format!("tenant {id} created"));
        }
        TenantCommand::List => {
            let list = client.get("/v1/tenants").await?;
            out.rows(&list, list["tenants"].as_array().map_or(&[], |v| v), &["id", "created_at"]);
        }
    }
    Ok(())
}

pub async fn keys(client: &Client, out: Output, command: KeyCommand) -> Result<(), CliError> {
    match command {
        KeyCommand::Create { name, role, for_tenant, user_id } => {
            let body = json!({ "name": name, "role": role, "tenant": for_tenant, "user_id": user_id });
            let key = client.post("/v1/keys", body).await?;
            let message = format!(
                "key {} ({}) created. Its secret, shown only now:\n{}",
                key["id"].as_str().unwrap_or("?"),
                key["role"].as_str().unwrap_or("?"),
                key["secret"].as_str().unwrap_or("?")
            );
            out.done(&key, &message);
        }
        KeyCommand::List => {
            let list = client.get("/v1/keys").await?;
            out.rows(
                &list,
                list["keys"].as_array().map_or(&[], |v| v),
                &["id", "name", "role", "tenant", "created_at", "revoked_at"],
            );
        }
        KeyCommand::Revoke { id } => {
            let key = client.delete(&format!("/v1/keys/{id}")).await?;
            out.done(&key, &format!("key {id} revoked"));
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum HostCommand {
    /// Pause the whole host: no queue hands out jobs. Example: sluice admin pause
    Pause,
    /// Resume the whole host. Example: sluice admin resume
    Resume,
    /// Checkpoints of the whole host: create, list, show, delete.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
}

#[derive(Subcommand)]
pub enum CheckpointCommand {
    /// Take a checkpoint now (the host keeps serving). Example: sluice admin checkpoint create
    Create,
    /// List checkpoints. Example: sluice admin checkpoint list
    List,
    /// Show one checkpoint. Example: sluice admin checkpoint show cp-0192...
    Show { id: String },
    /// Delete a checkpoint and its file. Example: sluice admin checkpoint delete cp-0192...
    Delete { id: String },
    /// Restore a checkpoint into a paused scope: a dry run unless --confirm.
    ///
    /// Example: sluice admin checkpoint restore cp-0192... --for-tenant acme --queue emails --confirm
    Restore {
        id: String,
        /// The tenant to restore (leave out for the whole host; admin keys only).
        #[arg(long = "for-tenant")]
        for_tenant: Option<String>,
        /// Only these queues of the tenant (repeat the flag).
        #[arg(long = "queue")]
        queues: Vec<String>,
        /// Do it; without this flag only the report of what would change is printed.
        #[arg(long)]
        confirm: bool,
    },
}

pub async fn host(client: &Client, out: Output, command: HostCommand) -> Result<(), CliError> {
    let (path, message) = match command {
        HostCommand::Pause => ("/v1/admin/pause", "host paused: no job is handed out"),
        HostCommand::Resume => ("/v1/admin/resume", "host resumed"),
        HostCommand::Checkpoint(c) => return checkpoint(client, out, c).await,
    };
    let r = client.post(path, json!({})).await?;
    out.done(&r, message);
    Ok(())
}

async fn checkpoint(client: &Client, out: Output, command: CheckpointCommand) -> Result<(), CliError> {
    match command {
        CheckpointCommand::Create => {
            let c = client.post("/v1/admin/checkpoints", json!({})).await?;
            out.done(&c, &format!("checkpoint {} taken ({} bytes)", c["id"].as_str().unwrap_or("?"), c["bytes"]));
        }
        CheckpointCommand::List => {
            let list = client.get("/v1/admin/checkpoints").await?;
            out.rows(
                &list,
                list["checkpoints"].as_array().map_or(&[], |v| v),
                &["id", "created_at", "schema_version", "bytes", "jobs"],
            );
        }
        CheckpointCommand::Show { id } => out.record(&client.get(&format!("/v1/admin/checkpoints/{id}")).await?),
        CheckpointCommand::Restore { id, for_tenant, queues, confirm } => {
            let queues = (!queues.is_empty()).then_some(queues);
            let body = json!({ "tenant": for_tenant, "queues": queues, "confirm": confirm });
            let r = client.post(&format!("/v1/admin/checkpoints/{id}/restore"), body).await?;
            let verb = if confirm { "restored" } else { "would restore (dry run; add --confirm)" };
            let message = format!(
                "{verb}: {} jobs, {} going back to an earlier state, {} completed jobs running again, {} created since (kept)",
                r["jobs_in_checkpoint"], r["going_back"], r["run_again"], r["created_since"]
            );
            out.done(&r, &message);
        }
        CheckpointCommand::Delete { id } => {
            let c = client.delete(&format!("/v1/admin/checkpoints/{id}")).await?;
            out.done(&c, &format!("checkpoint {id} deleted"));
        }
    }
    Ok(())
}
