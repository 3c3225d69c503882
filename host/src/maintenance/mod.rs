//! Background services, one file each. Each has a config with documented defaults
//! and runs as a loop that stops when its cancellation token fires. They call the
//! same store and queue service as the API.

pub mod rescuer;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

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
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig { rescue_interval: Duration::from_millis(250), schedule_interval: Duration::from_millis(100) }
    }
}

/// Start every loop; they stop when `stop` is cancelled.
pub fn start(queue: Arc<QueueService>, config: &MaintenanceConfig, stop: CancellationToken) -> Vec<JoinHandle<()>> {
    vec![
        spawn_loop("rescuer", config.rescue_interval, stop.clone(), {
            let queue = queue.clone();
            move || rescuer::pass(queue.clone(), PASS_LIMIT)
        }),
        spawn_loop("scheduler", config.schedule_interval, stop, move || scheduler::pass(queue.clone(), PASS_LIMIT)),
    ]
}

/// Run `pass` every `interval` until stopped. A pass returns how many jobs it moved;
/// a full pass runs again at once.
fn spawn_loop<F, Fut>(name: &'static str, interval: Duration, stop: CancellationToken, pass: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = crate::error::Result<usize>> + Send,
{
    tokio::spawn(async move {
        loop {
            let moved = match pass().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(target: "sluice::maintenance", service = name, error = %e, "pass failed");
                    0
                }
            };
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
