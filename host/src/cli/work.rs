//! `sluice work`: claims jobs of one queue and runs a command once per job.
//!
//! The command gets the payload on stdin and the job's ids in environment
//! variables. It saves progress by appending a line `{"step": "...", "data": ...}`
//! to the file named in `SLUICE_PROGRESS_FILE`; the last full line is sent with the
//! next heartbeat, and a retried job finds it again in `SLUICE_PROGRESS`.
//! Exit 0 completes the job; any other exit fails it with `EXIT_<status>` and the
//! tail of stderr as the traceback; exit [`NO_RETRY_EXIT`] fails it for good.
//! On SIGTERM or Ctrl-C the worker stops claiming, lets running commands finish
//! within the grace period, then kills the rest and releases their jobs.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::output::cell;
use super::{CliError, Client};

/// Exit status with which a command says "do not retry this job".
pub const NO_RETRY_EXIT: i32 = 100;
/// How much of the command's stderr is kept as the traceback.
const STDERR_TAIL: usize = 8 * 1024;

#[derive(Args)]
#[command(
    after_help = "Environment given to COMMAND:\n  SLUICE_JOB_UUID, SLUICE_QUEUE, SLUICE_KIND, SLUICE_TENANT, SLUICE_USER_ID, SLUICE_TRACE_ID,\n  SLUICE_ATTEMPT, SLUICE_PROGRESS (last saved progress as JSON, if any),\n  SLUICE_PROGRESS_FILE (append {\"step\":...,\"data\":...} lines to save progress).\nExit 0 completes the job, 100 fails it without retry, anything else fails it for a retry.\n\nExample: sluice work --queue emails --concurrency 4 -- ./send-email.sh"
)]
pub struct WorkArgs {
    /// The queue to work on.
    #[arg(long)]
    queue: String,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Lease length in ms; heartbeats renew it every third of it.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// On SIGTERM, how long running commands may take to finish before they are
    /// killed and their jobs released.
    #[arg(long, default_value_t = 30_000)]
    grace_ms: u64,
    /// Name shown in leases and history (default: worker-<pid>).
    #[arg(long)]
    worker_id: Option<String>,
    /// Stop after this many jobs (default: run until stopped).
    #[arg(long)]
    max_jobs: Option<u64>,
    /// The command and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

struct Worker {
    client: Client,
    args: WorkArgs,
    worker_id: String,
    progress_dir: PathBuf,
    /// Cancelled when the grace period is over: kill commands, release jobs.
    abort: CancellationToken,
}

pub async fn run(client: Client, args: WorkArgs) -> Result<(), CliError> {
    if args.concurrency == 0 || args.concurrency > 1000 {
        return Err(CliError::Usage("--concurrency: 1 to 1000".into()));
    }
    let progress_dir = std::env::temp_dir().join(format!("sluice-work-{}", std::process::id()));
    std::fs::create_dir_all(&progress_dir)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", progress_dir.display())))?;
    let worker_id = args.worker_id.clone().unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let stop = CancellationToken::new();
    let worker = Arc::new(Worker { client, args, worker_id, progress_dir, abort: CancellationToken::new() });
    tokio::spawn(stop_on_signal(stop.clone(), worker.abort.clone(), Duration::from_millis(worker.args.grace_ms)));

    let slots = Arc::new(Semaphore::new(worker.args.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut started = 0u64;
    let mut backoff = Duration::from_millis(200);
    let result = loop {
        if stop.is_cancelled() || worker.args.max_jobs.is_some_and(|m| started >= m) {
            break Ok(());
        }
        // Wait for a free slot, then claim as many jobs as there are free slots.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore open"),
            _ = stop.cancelled() => break Ok(()),
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let limit = match worker.args.max_jobs {
            Some(m) => permits.len().min((m - started) as usize),
            None => permits.len(),
        };
        let body =
            json!({ "worker": worker.worker_id, "limit": limit, "lease_ms": worker.args.lease_ms, "wait_ms": 5_000 });
        let claim_path = format!("/v1/queues/{}/claim", worker.args.queue);
        let claimed = tokio::select! {
            r = worker.client.post(&claim_path, body) => r,
            _ = stop.cancelled() => break Ok(()),
        };
        let jobs = match claimed {
            Ok(answer) => {
                backoff = Duration::from_millis(200);
                answer["jobs"].as_array().cloned().unwrap_or_default()
            }
            Err(e) if e.is_unreachable() => {
                eprintln!("sluice work: {e}; retrying in {} ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => break Err(e),
        };
        for job in jobs {
            started += 1;
            let permit = permits.pop().expect("one permit per claimed job");
            let worker = worker.clone();
            tasks.spawn(async move {
                worker.run_job(job).await;
                drop(permit);
            });
        }
    };
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_dir_all(&worker.progress_dir);
    result
}

/// First signal: stop claiming. After the grace period (or a second signal): abort.
async fn stop_on_signal(stop: CancellationToken, abort: CancellationToken, grace: Duration) {
    crate::signal::stop_requested().await;
    eprintln!("sluice work: stopping; running jobs get {} ms to finish", grace.as_millis());
    stop.cancel();
    tokio::select! {
        _ = tokio::time::sleep(grace) => {}
        _ = crate::signal::stop_requested() => {}
    }
    abort.cancel();
}

/// How one run of the command ended.
enum Ending {
    Exited(std::process::ExitStatus, String),
    LeaseLost(String),
    Aborted,
}

impl Worker {
    async fn run_job(&self, job: Value) {
        let uuid = cell(&job["job_uuid"]);
        let token = job["lease"]["token"].as_u64().unwrap_or(0);
        let progress_file = self.progress_dir.join(format!("{uuid}.progress"));
        let _ = std::fs::write(&progress_file, b"");
        let ending = self.supervise(&job, token, &progress_file).await;
        let step = last_progress(&progress_file).map(|p| p["step"].clone());
        let _ = std::fs::remove_file(&progress_file);
        let path = |action: &str| format!("/v1/jobs/{uuid}/{action}");
        let outcome = match ending {
            Ending::Exited(status, _) if status.success() => {
                self.deliver(&path("complete"), json!({ "token": token })).await
            }
            Ending::Exited(status, stderr_tail) => {
                let (code, reason, retryable) = describe_exit(status);
                let body = json!({ "token": token, "code": code, "reason": reason, "traceback": stderr_tail, "step": step, "retryable": retryable });
                self.deliver(&path("fail"), body).await
            }
            Ending::Aborted => self.deliver(&path("release"), json!({ "token": token })).await,
            Ending::LeaseLost(detail) => Err(CliError::Problem { status: 409, code: "LEASE_LOST".into(), detail }),
        };
        match outcome {
            Ok(answer) => eprintln!("sluice work: job {uuid} {}", cell(&answer["state"])),
            Err(e) => eprintln!("sluice work: job {uuid}: {e}"),
        }
    }

    /// Run the command, heartbeating (with progress) until it exits.
    async fn supervise(&self, job: &Value, token: u64, progress_file: &PathBuf) -> Ending {
        let mut command = tokio::process::Command::new(&self.args.command[0]);
        command
            .args(&self.args.command[1..])
            .env("SLUICE_JOB_UUID", cell(&job["job_uuid"]))
            .env("SLUICE_QUEUE", cell(&job["queue"]))
            .env("SLUICE_KIND", cell(&job["kind"]))
            .env("SLUICE_TENANT", cell(&job["tenant"]))
            .env("SLUICE_USER_ID", cell(&job["user_id"]))
            .env("SLUICE_TRACE_ID", cell(&job["trace_id"]))
            .env("SLUICE_ATTEMPT", cell(&job["attempt"]))
            .env("SLUICE_PROGRESS_FILE", progress_file)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !job["progress"].is_null() {
            command.env("SLUICE_PROGRESS", job["progress"].to_string());
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Ending::Exited(exit_status_127(), format!("cannot start {}: {e}", self.args.command[0]));
            }
        };
        let payload = job["payload"].to_string();
        let mut stdin = child.stdin.take().expect("piped stdin");
        tokio::spawn(async move {
            let _ = stdin.write_all(payload.as_bytes()).await;
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let tail = tokio::spawn(async move {
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let _ = tokio::io::stderr().write_all(&buf[..n]).await;
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            String::from_utf8_lossy(&tail).into_owned()
        });
        let uuid = cell(&job["job_uuid"]);
        let mut sent_progress: Option<Value> = None;
        let mut beat = tokio::time::interval(Duration::from_millis((self.args.lease_ms / 3).max(200)));
        beat.tick().await;
        loop {
            tokio::select! {
                status = child.wait() => {
                    let status = status.unwrap_or_else(|_| exit_status_127());
                    // Save the last progress before reporting the outcome.
                    if let Some(p) = last_progress(progress_file).filter(|p| Some(p) != sent_progress.as_ref()) {
                        let _ = self.heartbeat(&uuid, token, Some(p)).await;
                    }
                    return Ending::Exited(status, tail.await.unwrap_or_default());
                }
                _ = beat.tick() => {
                    let progress = last_progress(progress_file).filter(|p| Some(p) != sent_progress.as_ref());
                    match self.heartbeat(&uuid, token, progress.clone()).await {
                        Ok(()) => if progress.is_some() { sent_progress = progress },
                        Err(e) if e.code() == Some("LEASE_LOST") => {
                            let _ = child.kill().await;
                            return Ending::LeaseLost(e.to_string());
                        }
                        Err(e) => eprintln!("sluice work: heartbeat for {uuid}: {e}"),
                    }
                }
                _ = self.abort.cancelled() => {
                    let _ = child.kill().await;
                    return Ending::Aborted;
                }
            }
        }
    }

    async fn heartbeat(&self, uuid: &str, token: u64, progress: Option<Value>) -> Result<(), CliError> {
        let mut body = json!({ "token": token, "lease_ms": self.args.lease_ms });
        if let Some(p) = progress {
            body["progress"] = p;
        }
        self.client.post(&format!("/v1/jobs/{uuid}/heartbeat"), body).await.map(|_| ())
    }

    /// Report an outcome, retrying while the server is unreachable (it may be
    /// restarting) until the lease would have run out anyway.
    async fn deliver(&self, path: &str, body: Value) -> Result<Value, CliError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.args.lease_ms);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.client.post(path, body.clone()).await {
                Err(e) if e.is_unreachable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }
}

/// The last complete (newline-ended) line of the progress file, if it is a valid
/// progress object `{"step": "...", "data": ...}`.
fn last_progress(file: &PathBuf) -> Option<Value> {
    let text = std::fs::read_to_string(file).ok()?;
    let complete = &text[..text.rfind('\n')?];
    let line = complete.lines().rev().find(|l| !l.trim().is_empty())?;
    let value: Value = serde_json::from_str(line).ok()?;
    let object = value.as_object()?;
    let well_formed = value["step"].is_string() && object.keys().all(|k| k == "step" || k == "data");
    well_formed.then(|| json!({ "step": value["step"], "data": value.get("data").cloned().unwrap_or(Value::Null) }))
}

/// (code, reason, retryable) for a command that did not exit 0.
fn describe_exit(status: std::process::ExitStatus) -> (String, String, bool) {
    if let Some(code) = status.code() {
        let retryable = code != NO_RETRY_EXIT;
        return (format!("EXIT_{code}"), format!("command exited with status {code}"), retryable);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return (format!("SIGNAL_{signal}"), format!("command killed by signal {signal}"), true);
        }
    }
    ("EXIT_UNKNOWN".into(), "command ended without a status".into(), true)
}

/// The status a shell gives a command it cannot run.
fn exit_status_127() -> std::process::ExitStatus {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        std::process::ExitStatus::from_raw(127 << 8)
    }
    #[cfg(not(unix))]
    {
        std::process::Command::new("cmd").args(["/C", "exit 127"]).status().expect("status")
    }
}
