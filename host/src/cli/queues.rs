//! `sluice queues ...`.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::output::{Output, cell};
use super::{CliError, Client};

#[derive(Subcommand)]
pub enum QueueCommand {
    /// A queue's configuration, breakers and counts. Example: sluice queues show emails
    Show { queue: String },
    /// Change a queue's configuration (other settings keep their values).
    ///
    /// Example: sluice queues set emails --max-attempts 8 --backoff-base-ms 500
    Set(SetArgs),
    /// Stop handing out the queue's jobs (inserts go on). Example: sluice queues pause emails
    Pause { queue: String },
    /// Hand out the queue's jobs again. Example: sluice queues resume emails
    Resume { queue: String },
    /// Close the queue's failure breakers; parked jobs go back to pending.
    ///
    /// Example: sluice queues reset-breaker emails
    ResetBreaker { queue: String },
}

#[derive(Args)]
pub struct SetArgs {
    queue: String,
    #[arg(long)]
    backoff_base_ms: Option<u64>,
    #[arg(long)]
    backoff_cap_ms: Option<u64>,
    #[arg(long)]
    max_attempts: Option<u32>,
    #[arg(long)]
    breaker_threshold: Option<u32>,
    #[arg(long)]
    breaker_window_ms: Option<u64>,
    /// Accepted payload schema versions, comma-separated. Example: 1,2
    #[arg(long, value_delimiter = ',')]
    schema_versions: Option<Vec<u32>>,
    /// Pending longer than this is stuck (0: never).
    #[arg(long)]
    pending_timeout_ms: Option<u64>,
    /// Processing without progress longer than this is stuck (0: never).
    #[arg(long)]
    processing_timeout_ms: Option<u64>,
    /// Parked longer than this is stuck (0: never).
    #[arg(long)]
    parked_timeout_ms: Option<u64>,
}

pub async fn run(client: &Client, out: Output, command: QueueCommand) -> Result<(), CliError> {
    match command {
        QueueCommand::Show { queue } => show(out, &client.get(&format!("/v1/queues/{queue}")).await?),
        QueueCommand::Set(a) => {
            let mut body = Map::new();
            let mut put = |k: &str, v: Value| {
                if !v.is_null() {
                    body.insert(k.into(), v);
                }
            };
            put("backoff_base_ms", json!(a.backoff_base_ms));
            put("backoff_cap_ms", json!(a.backoff_cap_ms));
            put("max_attempts", json!(a.max_attempts));
            put("breaker_threshold", json!(a.breaker_threshold));
            put("breaker_window_ms", json!(a.breaker_window_ms));
            put("schema_versions", json!(a.schema_versions));
            put("pending_timeout_ms", json!(a.pending_timeout_ms));
            put("processing_timeout_ms", json!(a.processing_timeout_ms));
            put("parked_timeout_ms", json!(a.parked_timeout_ms));
            if body.is_empty() {
                return Err(CliError::Usage("nothing to set: give at least one setting".into()));
            }
            show(out, &client.put(&format!("/v1/queues/{}", a.queue), Value::Object(body)).await?);
        }
        QueueCommand::Pause { queue } => {
            let r = client.post(&format!("/v1/queues/{queue}/pause"), json!({})).await?;
            out.done(&r, &format!("queue {queue} paused"));
        }
        QueueCommand::Resume { queue } => {
            let r = client.post(&format!("/v1/queues/{queue}/resume"), json!({})).await?;
            out.done(&r, &format!("queue {queue} resumed"));
        }
        QueueCommand::ResetBreaker { queue } => {
            let r = client.post(&format!("/v1/queues/{queue}/breaker/reset"), json!({})).await?;
            out.done(&r, &format!("breakers of {queue} closed; {} parked jobs back to pending", cell(&r["unparked"])));
        }
    }
    Ok(())
}

fn show(out: Output, q: &Value) {
    if out.json {
        return out.record(q);
    }
    let mut flat = Map::new();
    flat.insert("queue".into(), q["name"].clone());
    for (k, v) in q["config"].as_object().into_iter().flatten() {
        flat.insert(k.clone(), v.clone());
    }
    for (k, v) in q["counts"].as_object().into_iter().flatten() {
        flat.insert(format!("jobs {k}"), v.clone());
    }
    for b in q["breakers"].as_array().into_iter().flatten() {
        flat.insert(
            format!("breaker {}", cell(&b["kind"])),
            json!(format!("{} ({} failures in window)", cell(&b["state"]), cell(&b["failures_in_window"]))),
        );
    }
    out.record(&Value::Object(flat));
}
