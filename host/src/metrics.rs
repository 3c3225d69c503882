//! Prometheus metrics: one global recorder (the `metrics` facade), rendered by the
//! `/metrics` route. Labels never carry user ids.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::model::{JobState, Plugin, now_ms};
use crate::store::{Store, WriterStats};

/// Install the recorder once per process; later calls return the same handle.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets(&[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("one metrics recorder per process")
    })
}

/// The call metrics of one loaded plugin, registered when it is loaded: looking
/// them up by labels on every call showed in the profile.
pub struct PluginMetrics {
    labels: [(&'static str, String); 3],
    /// Calls by outcome, for the outcomes calls have.
    calls: [(&'static str, Counter); 4],
    duration: Histogram,
}

impl PluginMetrics {
    pub fn new(plugin: &Plugin) -> PluginMetrics {
        let labels = [
            ("tenant", plugin.tenant.clone()),
            ("kind", plugin.kind.as_str().to_owned()),
            ("plugin", plugin.digest[..12].to_owned()),
        ];
        let calls = ["allowed", "rejected", "tagged", "failed"].map(|outcome| (outcome, Self::calls(&labels, outcome)));
        let duration = metrics::histogram!("sluice_plugin_call_duration_seconds", &labels);
        PluginMetrics { labels, calls, duration }
    }

    fn calls(labels: &[(&'static str, String); 3], outcome: &str) -> Counter {
        let mut with_outcome = labels.to_vec();
        with_outcome.push(("outcome", outcome.to_owned()));
        metrics::counter!("sluice_plugin_calls_total", &with_outcome)
    }

    /// One call: counted by outcome, failures by code, and its latency.
    pub fn call(&self, outcome: &str, failure_code: Option<&str>, duration: Duration) {
        match self.calls.iter().find(|(o, _)| *o == outcome) {
            Some((_, counter)) => counter.increment(1),
            None => Self::calls(&self.labels, outcome).increment(1),
        }
        if let Some(code) = failure_code {
            let mut with_code = self.labels.to_vec();
            with_code.push(("code", code.to_owned()));
            metrics::counter!("sluice_plugin_failures_total", &with_code).increment(1);
        }
        self.duration.record(duration.as_secs_f64());
    }
}

/// A request refused by a quota (the error names the limit); labelled by tenant
/// and limit, never by user.
pub fn quota_refusal(tenant: &str, error: &crate::error::Error) {
    if let Some(limit) = &error.limit {
        let labels = [("tenant", tenant.to_owned()), ("limit", limit.clone())];
        metrics::counter!("sluice_quota_refusals_total", &labels).increment(1);
    }
}

/// The writer's counters, set just before a scrape.
pub fn writer(stats: &WriterStats) {
    metrics::gauge!("sluice_writer_requests").set(stats.requests as f64);
    metrics::gauge!("sluice_writer_commits").set(stats.commits as f64);
    metrics::gauge!("sluice_writer_folds").set(stats.folds as f64);
    metrics::gauge!("sluice_writer_fsyncs").set(stats.syncs as f64);
    metrics::gauge!("sluice_writer_largest_batch").set(stats.largest_batch as f64);
    metrics::gauge!("sluice_writer_queued_requests").set(stats.queued as f64);
}

/// Gauges read from the store at scrape time (so after a crash and restart they
/// agree with the counts the API reports): jobs by tenant, queue and state,
/// stuck jobs, queue depth, age of the oldest ready job, open breakers.
pub fn refresh_from_store(store: &dyn Store) -> crate::error::Result<()> {
    use std::collections::BTreeMap;
    let now = now_ms();
    // Every state of every queue gets a value, zeros included: a count that fell
    // to zero must not leave its last value standing.
    let mut queues: BTreeMap<(String, String), ([u64; 5], u64)> = BTreeMap::new();
    for row in store.counts()? {
        let entry = queues.entry((row.tenant, row.queue)).or_default();
        match row.state {
            Some(state) => entry.0[state.code() as usize] = row.jobs,
            None => entry.1 = row.jobs,
        }
    }
    for ((tenant, queue), (by_state, stuck)) in queues {
        for state in JobState::ALL {
            let n = by_state[state.code() as usize] as f64;
            metrics::gauge!("sluice_jobs", "tenant" => tenant.clone(), "queue" => queue.clone(), "state" => state.as_str()).set(n);
        }
        let depth = by_state[JobState::Pending.code() as usize] as f64;
        metrics::gauge!("sluice_queue_depth", "tenant" => tenant.clone(), "queue" => queue.clone()).set(depth);
        metrics::gauge!("sluice_jobs_stuck", "tenant" => tenant.clone(), "queue" => queue.clone()).set(stuck as f64);
        let age =
            store.oldest_ready(&tenant, &queue)?.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        metrics::gauge!("sluice_queue_oldest_pending_seconds", "tenant" => tenant, "queue" => queue).set(age);
    }
    for (tenant, queue, breaker) in store.breakers()? {
        let open = if breaker.is_open() { 1.0 } else { 0.0 };
        metrics::gauge!("sluice_breaker_open", "tenant" => tenant, "queue" => queue, "kind" => breaker.kind).set(open);
    }
    Ok(())
}

/// One state change of a job.
pub fn transition(tenant: &str, queue: &str, action: &str, to: JobState) {
    metrics::counter!("sluice_transitions_total", "tenant" => tenant.to_owned(), "queue" => queue.to_owned(), "action" => action.to_owned(), "to" => to.as_str())
        .increment(1);
}

/// One failed attempt, by its error code.
pub fn failure(tenant: &str, queue: &str, code: &str) {
    metrics::counter!("sluice_job_failures_total", "tenant" => tenant.to_owned(), "queue" => queue.to_owned(), "code" => code.to_owned())
        .increment(1);
}

/// One refused request on a job, by code (illegal transitions, lost leases ...).
pub fn refusal(tenant: &str, action: &str, code: &str) {
    metrics::counter!("sluice_refusals_total", "tenant" => tenant.to_owned(), "action" => action.to_owned(), "code" => code.to_owned())
        .increment(1);
}

/// How long an insert or a claim took, end to end in the service.
pub fn latency(operation: &'static str, duration: Duration) {
    metrics::histogram!("sluice_request_duration_seconds", "operation" => operation).record(duration.as_secs_f64());
}

/// Requests in one writer batch.
pub fn batch(size: usize) {
    metrics::histogram!("sluice_writer_batch_size").record(size as f64);
}
