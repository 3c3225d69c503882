//! The scheduler: delayed jobs become ready when their run_at comes, and failed jobs
//! go back to pending when their backoff has passed (never while parked).

use std::sync::Arc;

use crate::error::Result;
use crate::model::{Actor, now_ms};
use crate::queue::QueueService;

pub async fn pass(queue: Arc<QueueService>, limit: usize) -> Result<usize> {
    let store = queue.store();
    match store.earliest_due()? {
        Some(t) if t <= now_ms() => {}
        _ => return Ok(0),
    }
    let promoted = store.promote_due(limit).await?;
    let actor = Actor::host("scheduler");
    for change in &promoted.changes {
        queue.after(change, &actor);
    }
    for (tenant, queue_name) in &promoted.ready_queues {
        queue.wake(tenant, queue_name);
    }
    Ok(promoted.moved)
}
