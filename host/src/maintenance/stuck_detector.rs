//! The stuck detector: flags jobs that stayed pending, processing without
//! progress, or parked past their queue's timeout. A job loses the
//! flag as soon as it moves again, or when its queue's timeouts change so that
//! it no longer is stuck.

use std::sync::Arc;

use crate::error::Result;
use crate::model::{Actor, now_ms};
use crate::queue::QueueService;

pub async fn pass(queue: Arc<QueueService>, limit: usize) -> Result<usize> {
    let store = queue.store();
    match store.earliest_stuck()? {
        Some(t) if t <= now_ms() => {}
        _ => return Ok(0),
    }
    let flagged = store.detect_stuck(limit).await?;
    let actor = Actor::host("stuck_detector");
    for change in &flagged {
        queue.after(change, &actor);
    }
    Ok(flagged.len())
}
