//! Records are stored as JSON: readable in a hex dump, tolerant of added fields, and the
//! payload stays the client's bytes (RawValue), never re-serialised.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise infallibly")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("corrupt record: {e}")))
}
