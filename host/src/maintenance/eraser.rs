//! The eraser: finishes each right-to-delete without an operator. The request
//! itself removed the user's rows; their bytes may still sit in freed pages of
//! the database file and in the checkpoints. A pass removes the users from every
//! checkpoint (each file written anew), writes the database file anew from its
//! live data, and only then marks the receipts complete. A crash in between
//! leaves the receipts pending, and the next pass (after restart) does it again.

use std::sync::Arc;

use crate::checkpoints::Checkpoints;
use crate::error::Result;
use crate::store::Store;

pub async fn pass(store: Arc<dyn Store>, checkpoints: Arc<Checkpoints>) -> Result<usize> {
    let pending = store.pending_erasures()?;
    if pending.is_empty() {
        return Ok(0);
    }
    let rewritten = checkpoints.scrub(&pending).await?;
    store.rewrite_file().await?;
    let done = pending.len();
    store.complete_erasures(pending, rewritten).await?;
    tracing::info!(target: "sluice::maintenance", service = "eraser", deletions = done, checkpoints_rewritten = rewritten, "erasure complete");
    Ok(done)
}
