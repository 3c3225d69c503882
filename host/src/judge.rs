//! Where tenant plugins take part in the queue's work, always outside the single
//! writer: taggers on insert, validators on the actions of people and workers.
//! Each call is logged (never with its output: that goes to the job's history)
//! and its judgement travels with the write it led to.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Code, Error, Result};
use crate::machine::{self, Facts};
use crate::model::{FailurePolicy, Job, JobState, Judgement, PluginKind, now_ms};
use crate::plugins::{self, Action, ActiveBinding, CallReport, PluginHost, Verdict};
use crate::store::{Command, NewJob, ReadJob, Store};
use crate::tags::{self, Sources};

/// What to do after a validator looked at an action.
pub enum Decision {
    /// Go ahead; the judgement (if a plugin judged) goes into the history.
    Proceed(Option<Judgement>),
    /// Refuse with this error, keeping the judgement in the history.
    Refuse(Error, Judgement),
}

fn log_call<T>(binding: &ActiveBinding, tenant: &str, report: &CallReport<T>, outcome: &str) {
    let p = &binding.plugin.plugin;
    let failure_code = report.result.as_ref().err().map(|f| f.code.as_str());
    binding.plugin.metrics.call(outcome, failure_code, report.duration);
    tracing::info!(
        target: "sluice::plugin",
        tenant,
        digest = %p.digest,
        plugin = %p.name,
        kind = p.kind.as_str(),
        outcome,
        code = report.result.as_ref().err().map(|f| f.code.as_str()).unwrap_or("-"),
        duration_us = report.duration.as_micros() as u64,
        fuel = report.fuel,
        "plugin call"
    );
}

/// Map a validator's report to a decision under the binding's failure policy.
fn decide(binding: &ActiveBinding, tenant: &str, report: CallReport<Verdict>) -> Decision {
    let plugin = &binding.plugin.plugin;
    match &report.result {
        Ok(Verdict::Allow) => {
            log_call(binding, tenant, &report, "allowed");
            Decision::Proceed(Some(plugins::judgement(plugin, &report, "allowed", None, None)))
        }
        Ok(Verdict::Reject { code, reason }) => {
            log_call(binding, tenant, &report, "rejected");
            let judgement = plugins::judgement(plugin, &report, "rejected", Some(code.clone()), Some(reason.clone()));
            let error = Error::new(Code::PluginRejected, format!("plugin {} refused: {code}: {reason}", plugin.name));
            Decision::Refuse(error, judgement)
        }
        Err(failure) => {
            log_call(binding, tenant, &report, "failed");
            let judgement = plugins::judgement(
                plugin,
                &report,
                "failed",
                Some(failure.code.as_str().to_owned()),
                Some(failure.reason.clone()),
            );
            match binding.binding.failure_policy {
                FailurePolicy::Open => Decision::Proceed(Some(judgement)),
                FailurePolicy::Closed => {
                    let error = Error::new(failure.code, format!("plugin {} failed: {}", plugin.name, failure.reason));
                    Decision::Refuse(error, judgement)
                }
            }
        }
    }
}

/// The action a validator judges for a command, or `None` for heartbeats.
fn judged_action(command: &Command) -> Option<Action> {
    match command {
        Command::Heartbeat { .. } | Command::Defer { .. } => None,
        Command::Complete { .. } => Some(Action::Complete),
        Command::Fail { .. } => Some(Action::Fail),
        Command::Release { .. } => Some(Action::Release),
        Command::Retry => Some(Action::Retry),
        Command::Replay { .. } => Some(Action::Replay),
        Command::Cancel => Some(Action::Cancel),
    }
}

/// Judge a command on a job, after the lease and the state table allow it (so a
/// plugin never sees an action the store would refuse anyway).
pub async fn judge_command(plugins: &PluginHost, job: &Job, command: &Command) -> Result<Decision> {
    let Some(action) = judged_action(command) else { return Ok(Decision::Proceed(None)) };
    let Some(binding) = plugins.bound(&job.tenant, &job.queue, PluginKind::Validator, job.stage) else {
        return Ok(Decision::Proceed(None));
    };
    if let Some(token) = command.token() {
        job.check_lease(token, now_ms())?;
    }
    let facts = Facts { attempts_left: job.attempt < job.max_attempts, breaker_open: false, parked: job.parked };
    let machine_action = command.action();
    let to = machine::decide(machine_action, job.state, facts).map_err(|r| r.error(machine_action, job.state))?.to;
    let report = plugins.validate(&binding.plugin, job, action, job.state, to).await;
    Ok(decide(&binding, &job.tenant, report))
}

/// Judge ready jobs about to be claimed: (job, decision) each.
pub async fn judge_claims(
    plugins: &PluginHost,
    binding: &Arc<ActiveBinding>,
    jobs: Vec<ReadJob>,
) -> Vec<(ReadJob, Decision)> {
    let calls = jobs.into_iter().map(|read| async move {
        let job = &read.job;
        let report =
            plugins.validate(&binding.plugin, job, Action::Claim, JobState::Pending, JobState::Processing).await;
        let decision = decide(binding, &job.tenant, report);
        (read, decision)
    });
    futures::future::join_all(calls).await
}

/// Merge each job's tags (tenant defaults, user configuration, tagger plugin,
/// request) and run the tagger. A refused job gets its error; the rest go on.
/// `users` holds the configuration of every user of `jobs`.
pub async fn tag_jobs(
    plugins: &PluginHost,
    store: &Arc<dyn Store>,
    tenant: &str,
    jobs: Vec<NewJob>,
    users: &crate::quota::UserConfigs,
) -> Result<Vec<Result<NewJob>>> {
    let config = store.tenant_config(tenant)?;
    let calls = jobs.into_iter().map(|mut new| {
        let config = &config;
        async move {
            let user = users.get(&new.user_id).cloned().flatten();
            let request = std::mem::take(&mut new.tags);
            let merge = |plugin_tags: &[Map<String, Value>]| {
                tags::merge(&Sources { tenant: config, user: user.as_ref(), plugins: plugin_tags, request: &request })
            };
            new.tags = merge(&[])?;
            let Some(binding) = plugins.bound(tenant, &new.queue, PluginKind::Tagger, new.stage) else {
                return Ok(new);
            };
            let report = plugins.tag(&binding.plugin, &preview(tenant, &new)).await;
            let plugin = &binding.plugin.plugin;
            match &report.result {
                Ok(Ok(added)) => {
                    log_call(&binding, tenant, &report, "tagged");
                    let added: Map<String, Value> = added.iter().cloned().collect();
                    new.tags = merge(&[added])?;
                    new.judgement = Some(plugins::judgement(plugin, &report, "tagged", None, None));
                    Ok(new)
                }
                Ok(Err(reason)) => {
                    log_call(&binding, tenant, &report, "rejected");
                    Err(Error::new(Code::PluginRejected, format!("tagger {} refused the job: {reason}", plugin.name)))
                }
                Err(failure) => {
                    log_call(&binding, tenant, &report, "failed");
                    match binding.binding.failure_policy {
                        FailurePolicy::Closed => {
                            Err(Error::new(failure.code, format!("tagger {} failed: {}", plugin.name, failure.reason)))
                        }
                        FailurePolicy::Open => {
                            let (code, reason) = (Some(failure.code.as_str().to_owned()), Some(failure.reason.clone()));
                            new.judgement = Some(plugins::judgement(plugin, &report, "failed", code, reason));
                            Ok(new)
                        }
                    }
                }
            }
        }
    });
    Ok(futures::future::join_all(calls).await)
}

/// The job a tagger sees: what the insert will store, before it is stored.
fn preview(tenant: &str, new: &NewJob) -> Job {
    new.clone().into_job(tenant, 0, 0, now_ms())
}
