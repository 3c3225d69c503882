//! Background services, one file each. Each has a config with documented defaults
//! and runs as a loop that stops when its cancellation token fires. They call the
//! same store and queue service as the API.

pub mod alert_evaluator;
pub mod eraser;
pub mod rescuer;
pub mod retention_cleaner;
pub mod scheduler;
pub mod stuck_detector;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::FutureExt;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::queue::QueueService;

/// Most jobs one pass moves in one writer request.
const PASS_LIMIT: usize = 1000;

#[derive(Clone, Debug)]
pub struct MaintenanceConfig {
    /// How often the rescuer looks for expired leases. Default 250 ms.
    pub rescue_interval: Duration,
    /// How often the scheduler looks for due jobs. Default 100 ms.
    pub schedule_interval: Duration,
    /// How often the stuck detector looks for jobs past their timeouts. Default 1 s.
    pub stuck_interval: Duration,
    /// How often alerts are evaluated. Default 1 s.
    pub alert_interval: Duration,
    /// How often the retention cleaner runs. Default 5 s.
    pub retention_interval: Duration,
    /// The length of a retention day. Default 24 h; shorter only for drills and tests.
    pub retention_day: Duration,
    /// How often the eraser looks for deletions to erase from the files. Default 1 s.
    pub erase_interval: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            rescue_interval: Duration::from_millis(250),
            schedule_interval: Duration::from_millis(100),
            stuck_interval: Duration::from_secs(1),
            alert_interval: Duration::from_secs(1),
            retention_interval: Duration::from_secs(5),
            retention_day: Duration::from_secs(86_400),
            erase_interval: Duration::from_secs(1),
        }
    }
}

/// When each loop last finished a pass, for readiness.
#[derive(Default)]
pub struct LoopHealth(DashMap<&'static str, (Instant, Duration)>);

impl LoopHealth {
    /// Loops that have not finished a pass within ten of their intervals (and 5 s).
    pub fn stalled(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|e| {
                let (last, interval) = *e.value();
                last.elapsed() > (interval * 10).max(Duration::from_secs(5))
            })
            .map(|e| *e.key())
            .collect()
    }

    fn beat(&self, name: &'static str, interval: Duration) {
        self.0.insert(name, (Instant::now(), interval));
    }
}

/// What the loops work on besides the queue service.
pub struct Services {
    pub alerting: Arc<crate::alerts::Alerting>,
    pub checkpoints: Arc<crate::checkpoints::Checkpoints>,
    pub retention: Arc<retention_cleaner::RetentionReports>,
}

/// Start every loop; they stop when `stop` is cancelled.
pub fn start(
    queue: Arc<QueueService>,
    services: Services,
    config: &MaintenanceConfig,
    health: Arc<LoopHealth>,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let Services { alerting, checkpoints, retention } = services;
    let store = queue.store().clone();
    let day_ms = config.retention_day.as_millis() as u64;
    let cleaner = spawn_loop("retention_cleaner", config.retention_interval, stop.clone(), health.clone(), move || {
        retention_cleaner::pass(store.clone(), retention.clone(), day_ms, PASS_LIMIT)
    });
    let store = queue.store().clone();
    let eraser = spawn_loop("eraser", config.erase_interval, stop.clone(), health.clone(), move || {
        eraser::pass(store.clone(), checkpoints.clone())
    });
    let alerts = spawn_loop("alert_evaluator", config.alert_interval, stop.clone(), health.clone(), move || {
        alert_evaluator::pass(alerting.clone())
    });
    let q = queue.clone();
    let rescuer = spawn_loop("rescuer", config.rescue_interval, stop.clone(), health.clone(), move || {
        rescuer::pass(q.clone(), PASS_LIMIT)
    });
    let q = queue.clone();
    let stuck = spawn_loop("stuck_detector", config.stuck_interval, stop.clone(), health.clone(), move || {
        stuck_detector::pass(q.clone(), PASS_LIMIT)
    });
    let scheduler = spawn_loop("scheduler", config.schedule_interval, stop, health, move || {
        scheduler::pass(queue.clone(), PASS_LIMIT)
    });
    vec![rescuer, stuck, scheduler, alerts, cleaner, eraser]
}

/// Run `pass` every `interval` until stopped. A pass returns how many jobs it moved;
/// a full pass runs again at once.
fn spawn_loop<F, Fut>(
    name: &'static str,
    interval: Duration,
    stop: CancellationToken,
    health: Arc<LoopHealth>,
    pass: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = crate::error::Result<usize>> + Send,
{
    tokio::spawn(async move {
        loop {
            // A pass that panics is a bug; the loop logs it and goes on with the next pass.
            let moved = match std::panic::AssertUnwindSafe(pass()).catch_unwind().await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::error!(target: "sluice::maintenance", service = name, error = %e, "pass failed");
                    0
                }
                Err(_) => {
                    tracing::error!(target: "sluice::maintenance", service = name, "pass panicked");
                    0
                }
            };
            health.beat(name, interval);
            if moved >= PASS_LIMIT {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    })
}
