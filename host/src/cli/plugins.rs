//! `sluice plugins ...`: upload, inspect, delete, bind and check plugins.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::output::{Output, cell};
use super::{CliError, Client};
use crate::model::PluginKind;
use crate::plugins::{Compiler, PluginLimits, check};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Upload a component built for wasm32-wasip2.
    ///
    /// Example: sluice plugins upload target/wasm32-wasip2/release/my_validator.wasm --name my-validator --kind validator --version 1.0.0
    Upload {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// validator, tagger, migrator or alert-policy.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        version: String,
    },
    /// List the tenant's plugins. Example: sluice plugins list
    List,
    /// Show one plugin. Example: sluice plugins show 3f1c...
    Show { digest: String },
    /// Delete a plugin (refused while bound). Example: sluice plugins delete 3f1c...
    Delete { digest: String },
    /// Bind a plugin to a queue (or '*' for every queue) for its kind.
    ///
    /// Example: sluice plugins bind --queue emails --kind validator --plugin 3f1c... --failure-policy closed
    Bind {
        /// A queue name, or '*' for every queue without its own binding.
        #[arg(long)]
        queue: String,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        plugin: String,
        /// closed (refuse when the plugin fails) or open (let the action through).
        #[arg(long, default_value = "closed")]
        failure_policy: String,
        #[arg(long, default_value = "stable")]
        stage: String,
    },
    /// Remove a binding. Example: sluice plugins unbind --queue emails --kind validator
    Unbind {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        kind: String,
        #[arg(long, default_value = "stable")]
        stage: String,
    },
    /// List the tenant's bindings. Example: sluice plugins bindings
    Bindings,
    /// Run the upload checks on a file, offline: component, imports, exports, compile.
    ///
    /// Example: sluice plugins check my_validator.wasm --kind validator
    Check {
        file: PathBuf,
        #[arg(long)]
        kind: String,
    },
}

fn read(file: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(file).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))
}

fn kind(text: &str) -> Result<PluginKind, CliError> {
    PluginKind::parse(text).ok_or_else(|| CliError::Usage("--kind: validator, tagger, migrator or alert-policy".into()))
}

const PLUGIN_COLUMNS: &[&str] = &["digest", "name", "kind", "version", "size", "created_at"];

pub async fn run(client: &Client, out: Output, command: PluginCommand) -> Result<(), CliError> {
    match command {
        PluginCommand::Upload { file, name, kind: k, version } => {
            kind(&k)?;
            let bytes = read(&file)?;
            let query =
                format!("name={}&kind={k}&version={}", super::jobs::urlencode(&name), super::jobs::urlencode(&version));
            let plugin = client.post_bytes(&format!("/v1/plugins?{query}"), "application/wasm", bytes).await?;
            out.done(&plugin, &format!("plugin {} uploaded: {}", cell(&plugin["name"]), cell(&plugin["digest"])));
        }
        PluginCommand::List => {
            let list = client.get("/v1/plugins").await?;
            out.rows(&list, list["plugins"].as_array().map_or(&[], |v| v), PLUGIN_COLUMNS);
        }
        PluginCommand::Show { digest } => out.record(&client.get(&format!("/v1/plugins/{digest}")).await?),
        PluginCommand::Delete { digest } => {
            let plugin = client.delete(&format!("/v1/plugins/{digest}")).await?;
            out.done(&plugin, &format!("plugin {digest} deleted"));
        }
        PluginCommand::Bind { queue, kind: k, plugin, failure_policy, stage } => {
            kind(&k)?;
            let path = format!("/v1/bindings/{}/{k}/{stage}", super::jobs::urlencode(&queue));
            let binding = client.put(&path, json!({ "plugin": plugin, "failure_policy": failure_policy })).await?;
            out.done(&binding, &format!("{k} {plugin} bound to {queue} ({stage})"));
        }
        PluginCommand::Unbind { queue, kind: k, stage } => {
            kind(&k)?;
            let path = format!("/v1/bindings/{}/{k}/{stage}", super::jobs::urlencode(&queue));
            let binding = client.delete(&path).await?;
            out.done(&binding, &format!("{k} unbound from {queue} ({stage})"));
        }
        PluginCommand::Bindings => {
            let list = client.get("/v1/bindings").await?;
            out.rows(
                &list,
                list["bindings"].as_array().map_or(&[], |v| v),
                &["queue", "kind", "stage", "plugin", "failure_policy"],
            );
        }
        PluginCommand::Check { file, kind: k } => {
            let bytes = read(&file)?;
            let limits = PluginLimits::default();
            let checked = check(&bytes, kind(&k)?, limits.upload_bytes).map_err(problem)?;
            let engine = crate::plugins::engine(&limits).map_err(|e| CliError::Usage(e.to_string()))?;
            Compiler::InProcess.precompile(&engine, &bytes, &limits).await.map_err(problem)?;
            let report = json!({ "ok": true, "contract": checked.contract, "imports": checked.imports });
            out.done(
                &report,
                &format!(
                    "{} passes the upload checks ({k}, contract {}, {} imports)",
                    file.display(),
                    checked.contract,
                    checked.imports.len()
                ),
            );
        }
    }
    Ok(())
}

fn problem(e: crate::error::Error) -> CliError {
    CliError::Problem { status: e.code.status(), code: e.code.as_str().to_owned(), detail: e.reason }
}
