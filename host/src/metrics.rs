//! Prometheus metrics: one global recorder (the `metrics` facade), rendered by the
//! `/metrics` route. Labels never carry user ids.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::model::Plugin;
use crate::store::WriterStats;

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

/// One plugin call: counted by outcome, failures by code, latency per plugin.
pub fn plugin_call(tenant: &str, plugin: &Plugin, outcome: &str, failure_code: Option<&str>, duration: Duration) {
    let labels = [
        ("tenant", tenant.to_owned()),
        ("kind", plugin.kind.as_str().to_owned()),
        ("plugin", plugin.digest[..12].to_owned()),
    ];
    let mut with_outcome = labels.to_vec();
    with_outcome.push(("outcome", outcome.to_owned()));
    metrics::counter!("sluice_plugin_calls_total", &with_outcome).increment(1);
    if let Some(code) = failure_code {
        let mut with_code = labels.to_vec();
        with_code.push(("code", code.to_owned()));
        metrics::counter!("sluice_plugin_failures_total", &with_code).increment(1);
    }
    metrics::histogram!("sluice_plugin_call_duration_seconds", &labels).record(duration.as_secs_f64());
}

/// The writer's counters, set just before a scrape.
pub fn writer(stats: &WriterStats) {
    metrics::gauge!("sluice_writer_requests").set(stats.requests as f64);
    metrics::gauge!("sluice_writer_commits").set(stats.commits as f64);
    metrics::gauge!("sluice_writer_largest_batch").set(stats.largest_batch as f64);
    metrics::gauge!("sluice_writer_queued_requests").set(stats.queued as f64);
}
