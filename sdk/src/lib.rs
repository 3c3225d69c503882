//! # sluice-sdk
//!
//! The guest side of Sluice's plugin contract (`wit/plugin.wit`, package
//! `sluice:plugin@0.1.0`). A plugin is a Rust `cdylib` built for
//! `wasm32-wasip2`: implement one trait, then add one macro line.
//!
//! | kind | trait | macro |
//! | --- | --- | --- |
//! | validator | [`validator::Validator`] | [`export_validator!`] |
//! | tagger | [`tagger::Tagger`] | [`export_tagger!`] |
//! | migrator | [`migrator::Migrator`] | [`export_migrator!`] |
//! | alert policy | [`alert_policy::AlertPolicy`] | [`export_alert_policy!`] |
//!
//! ```ignore
//! use sluice_sdk::{validator, Action, Job, Rejection, State};
//!
//! struct NoCancel;
//!
//! impl validator::Validator for NoCancel {
//!     fn validate(_job: &Job, action: Action, _from: State, _to: State) -> Result<(), Rejection> {
//!         match action {
//!             Action::Cancel => Err(Rejection::new("NO_CANCEL", "jobs here cannot be cancelled")),
//!             _ => Ok(()),
//!         }
//!     }
//! }
//!
//! sluice_sdk::export_validator!(NoCancel);
//! ```
//!
//! One crate exports one kind (one macro line): the component's world is
//! the kind's world (`validator-plugin`, `tagger-plugin`, ...), which imports
//! only `sluice:plugin/host` (the [`log`] function).
//!
//! The types here ([`Job`], [`QueueStats`], ...) are plain Rust types: the
//! SDK converts from and to the generated WIT bindings, and parses or writes
//! the JSON text that travels across the boundary. Everything also compiles
//! for the host target, so the trait impls can be unit-tested natively;
//! there [`log`] writes to stderr instead of calling the host.
//!
//! A panic in a plugin traps the call (the host then applies the binding's
//! failure policy); it is never turned into a rejection.
#![warn(missing_docs)]

mod host;
mod job;

pub mod alert_policy;
pub mod migrator;
pub mod tagger;
pub mod validator;

/// Host-side test harness: runs a built component in the real host engine.
#[cfg(not(target_family = "wasm"))]
pub mod testing;

pub use alert_policy::{Alert, QueueStats, Severity};
pub use host::{Level, log};
pub use job::{Action, Job, Rejection, State};

/// Re-exported so plugins can use the same `serde_json` as the SDK's API.
pub use serde_json;
