//! Records are stored as JSON: readable in a hex dump, tolerant of added fields, and the
//! payload stays the client's bytes (RawValue), never re-serialised.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::model::QueueConfig;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise infallibly")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt record: {e}")))
}

/// Queue configurations decoded lately on this thread, with their stored bytes:
/// nearly every write and every claim reads its queue's configuration, few queues
/// are busy at once, and decoding one was a few % of the writer's time. Equal bytes
/// decode to equal values, so an entry is never stale.
const CONFIGS_KEPT: usize = 16;

thread_local! {
    static DECODED_CONFIGS: RefCell<Vec<(Vec<u8>, QueueConfig)>> = const { RefCell::new(Vec::new()) };
}

/// `decode` for a queue configuration, through the memo above.
pub fn decode_queue_config(bytes: &[u8]) -> Result<QueueConfig> {
    DECODED_CONFIGS.with_borrow_mut(|kept| {
        if let Some((_, config)) = kept.iter().find(|(b, _)| b.as_slice() == bytes) {
            return Ok(config.clone());
        }
        let config: QueueConfig = decode(bytes)?;
        if kept.len() == CONFIGS_KEPT {
            kept.remove(0);
        }
        kept.push((bytes.to_vec(), config.clone()));
        Ok(config)
    })
}
