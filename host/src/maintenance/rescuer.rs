//! The rescuer: a lease that runs out is a failed attempt (`LEASE_EXPIRED`), with
//! backoff and counted by the breaker, so a job that crashes its workers cannot loop.

use std::sync::Arc;

use crate::error::Result;
use crate::model::{Actor, now_ms};
use crate::queue::QueueService;

pub async fn pass(queue: Arc<QueueService>, limit: usize) -> Result<usize> {
    let store = queue.store();
    // Only write when a lease has run out: an idle host commits nothing.
    match store.earliest_lease_expiry()? {
        Some(t) if t <= now_ms() => {}
        _ => return Ok(0),
    }
    let changes = store.expire_leases(limit).await?;
    let actor = Actor::host("rescuer");
    for change in &changes {
        queue.after(change, &actor);
    }
    Ok(changes.len())
}
