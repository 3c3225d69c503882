//! Alert policy: `queue-depth` fires as a warning when more than 100 jobs are
//! pending, and as critical above 1000. No alert otherwise.

use sluice_sdk::{Alert, QueueStats, Severity, alert_policy};

const WARNING_ABOVE: u64 = 100;
const CRITICAL_ABOVE: u64 = 1000;

struct DepthAlert;

impl alert_policy::AlertPolicy for DepthAlert {
    fn evaluate(stats: &QueueStats) -> Vec<Alert> {
        let (severity, threshold) = if stats.pending > CRITICAL_ABOVE {
            (Severity::Critical, CRITICAL_ABOVE)
        } else if stats.pending > WARNING_ABOVE {
            (Severity::Warning, WARNING_ABOVE)
        } else {
            return Vec::new();
        };
        let message = format!(
            "queue {}: {} jobs pending (more than {threshold}); oldest waiting {} ms",
            stats.queue, stats.pending, stats.oldest_pending_ms
        );
        vec![Alert::new("queue-depth", severity, message)]
    }
}

sluice_sdk::export_alert_policy!(DepthAlert);
