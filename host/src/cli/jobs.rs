//! `sluice jobs ...`.

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{Output, cell};
use super::{CliError, Client, json_arg};

#[derive(Subcommand)]
pub enum JobCommand {
    /// Insert one job.
    ///
    /// Example: sluice jobs add --queue emails --kind send --user u-1 --payload '{"to":"a@b.c"}'
    Add(AddArgs),
    /// Insert jobs from a JSON-lines file (one job object per line, as POST /v1/jobs takes).
    ///
    /// Example: sluice jobs add-bulk --file jobs.jsonl
    AddBulk {
        #[arg(long)]
        file: PathBuf,
        /// Jobs per request (1 to 1000).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Show one job. Example: sluice jobs get 0192f1c4-...
    Get { job_uuid: String },
    /// List jobs, oldest first. Example: sluice jobs list --queue emails --state failed
    List(ListArgs),
    /// Every action on a job, in order. Example: sluice jobs history 0192f1c4-...
    History { job_uuid: String },
    /// Send a failed job back to pending with a fresh attempt budget (progress kept).
    ///
    /// Example: sluice jobs retry 0192f1c4-...
    Retry { job_uuid: String },
    /// Run a completed or abandoned job again; needs --override.
    ///
    /// Example: sluice jobs replay 0192f1c4-... --override --resume
    Replay {
        job_uuid: String,
        /// Confirm replaying a finished job.
        #[arg(long = "override")]
        override_terminal: bool,
        /// Keep the saved progress instead of starting from scratch.
        #[arg(long)]
        resume: bool,
    },
    /// Abandon a pending or failed job. Example: sluice jobs cancel 0192f1c4-...
    Cancel { job_uuid: String },
}

#[derive(Args)]
pub struct AddArgs {
    #[arg(long)]
    queue: String,
    #[arg(long)]
    kind: String,
    /// The end user the job is about.
    #[arg(long = "user")]
    user_id: String,
    /// The payload, as JSON.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Client-chosen job_uuid (generated when absent).
    #[arg(long)]
    job_uuid: Option<String>,
    #[arg(long)]
    priority: Option<i32>,
    /// Run no sooner than this many ms from now.
    #[arg(long)]
    delay_ms: Option<u64>,
    #[arg(long)]
    max_attempts: Option<u32>,
    #[arg(long)]
    schema_version: Option<u32>,
    #[arg(long)]
    trace_id: Option<String>,
    /// Tags, as a JSON object.
    #[arg(long)]
    tags: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    queue: Option<String>,
    /// pending, processing, completed, failed or abandoned.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    #[arg(long = "user")]
    user_id: Option<String>,
    #[arg(long)]
    parked: Option<bool>,
    /// Only jobs flagged stuck (true) or not (false).
    #[arg(long)]
    stuck: Option<bool>,
    /// Jobs per page (1 to 500).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Start after this cursor (from a previous page).
    #[arg(long)]
    cursor: Option<u64>,
    /// Follow the cursor through every page.
    #[arg(long)]
    all: bool,
}

const JOB_COLUMNS: &[&str] = &["job_uuid", "queue", "kind", "state", "attempt", "priority", "parked", "created_at"];

pub async fn run(client: &Client, out: Output, command: JobCommand) -> Result<(), CliError> {
    match command {
        JobCommand::Add(a) => {
            let mut job = json!({ "queue": a.queue, "kind": a.kind, "user_id": a.user_id, "payload": json_arg("--payload", &a.payload)? });
            let optional = [
                ("job_uuid", json!(a.job_uuid)),
                ("priority", json!(a.priority)),
                ("delay_ms", json!(a.delay_ms)),
                ("max_attempts", json!(a.max_attempts)),
                ("schema_version", json!(a.schema_version)),
                ("trace_id", json!(a.trace_id)),
                ("tags", a.tags.as_deref().map(|t| json_arg("--tags", t)).transpose()?.unwrap_or(Value::Null)),
            ];
            for (k, v) in optional {
                if !v.is_null() {
                    job[k] = v;
                }
            }
            let stored = client.post("/v1/jobs", job).await?;
            out.done(&stored, &format!("job {} added to {}", cell(&stored["job_uuid"]), cell(&stored["queue"])));
        }
        JobCommand::AddBulk { file, batch } => add_bulk(client, out, &file, batch).await?,
        JobCommand::Get { job_uuid } => out.record(&client.get(&format!("/v1/jobs/{job_uuid}")).await?),
        JobCommand::List(a) => list(client, out, a).await?,
        JobCommand::History { job_uuid } => {
            let h = client.get(&format!("/v1/jobs/{job_uuid}/history")).await?;
            out.rows(
                &h,
                h["events"].as_array().map_or(&[], |v| v),
                &["at", "action", "from", "to", "attempt", "actor.type", "actor.key_id", "actor.service", "detail"],
            );
        }
        JobCommand::Retry { job_uuid } => act(client, out, &job_uuid, "retry", json!({})).await?,
        JobCommand::Replay { job_uuid, override_terminal, resume } => {
            act(client, out, &job_uuid, "replay", json!({ "override": override_terminal, "resume": resume })).await?
        }
        JobCommand::Cancel { job_uuid } => act(client, out, &job_uuid, "cancel", json!({})).await?,
    }
    Ok(())
}

async fn act(client: &Client, out: Output, job_uuid: &str, action: &str, body: Value) -> Result<(), CliError> {
    let job = client.post(&format!("/v1/jobs/{job_uuid}/{action}"), body).await?;
    out.done(&job, &format!("{action}: job {job_uuid} is now {}", cell(&job["state"])));
    Ok(())
}

async fn list(client: &Client, out: Output, a: ListArgs) -> Result<(), CliError> {
    let mut query: Vec<(String, String)> = vec![("limit".into(), a.limit.to_string())];
    let filters = [
        ("queue", a.queue),
        ("state", a.state),
        ("kind", a.kind),
        ("user_id", a.user_id),
        ("parked", a.parked.map(|p| p.to_string())),
        ("stuck", a.stuck.map(|s| s.to_string())),
    ];
    query.extend(filters.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v))));
    let mut cursor = a.cursor;
    let mut jobs = Vec::new();
    let next = loop {
        let mut q = query.clone();
        if let Some(c) = cursor {
            q.push(("cursor".into(), c.to_string()));
        }
        let encoded: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect();
        let page = client.get(&format!("/v1/jobs?{}", encoded.join("&"))).await?;
        jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_u64();
        if !a.all || cursor.is_none() {
            break cursor;
        }
    };
    let value = json!({ "jobs": jobs, "next_cursor": next });
    out.rows(&value, &jobs, JOB_COLUMNS);
    if let (false, Some(c)) = (out.json, next) {
        println!("more: --cursor {c}");
    }
    Ok(())
}

/// Percent-encode a query value or path segment.
pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn add_bulk(client: &Client, out: Output, file: &PathBuf, batch: usize) -> Result<(), CliError> {
    if !(1..=1000).contains(&batch) {
        return Err(CliError::Usage("--batch: 1 to 1000".into()));
    }
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).map_err(|e| CliError::Usage(format!("cannot open {}: {e}", file.display())))?,
    );
    let mut jobs = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        jobs.push(json_arg(&format!("{} line {}", file.display(), n + 1), &line)?);
    }
    let bar = if out.json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(jobs.len() as u64) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} jobs {per_sec} eta {eta}")
            .expect("progress template"),
    );
    let (mut accepted, mut refused) = (0u64, Vec::new());
    for (chunk_no, chunk) in jobs.chunks(batch).enumerate() {
        let answer = client.post("/v1/jobs/batch", json!({ "jobs": chunk })).await?;
        accepted += answer["accepted"].as_u64().unwrap_or(0);
        for r in answer["results"].as_array().into_iter().flatten().filter(|r| r["error"].is_object()) {
            let line = chunk_no * batch + r["index"].as_u64().unwrap_or(0) as usize + 1;
            refused.push(json!({ "job": line, "code": r["error"]["code"], "detail": r["error"]["detail"] }));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let summary = json!({ "accepted": accepted, "refused": refused.len(), "refusals": refused });
    if out.json {
        out.record(&summary);
    } else {
        println!("{accepted} jobs added, {} refused", refused.len());
        for r in &refused {
            println!("  job {}: {} {}", r["job"], cell(&r["code"]), cell(&r["detail"]));
        }
    }
    Ok(())
}
