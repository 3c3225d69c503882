//! Sluice: a durable job queue whose policies are tenant-supplied WebAssembly.
//! See ARCHITECTURE.md for the map; data flows api -> queue -> machine -> store.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod checkpoints;
pub mod cli;
pub mod error;
pub mod http;
pub mod judge;
pub mod limits;
pub mod log_sink;
pub mod logging;
pub mod machine;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod plugins;
pub mod pseudonym;
pub mod queue;
pub mod quota;
pub mod reservations;
pub mod restore;
pub mod server;
pub mod signal;
pub mod store;
pub mod tags;
pub mod timestamp;
pub mod webhooks;
