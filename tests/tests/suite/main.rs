//! The black-box suite as one test binary: each module is one capability, run against the real `sluice` binary.
//! One binary, not one per file: each links the host and wasmtime, and 22 of them cost ~8 GB of disk and minutes of linking.

mod alerts;
mod bad_input;
mod cli;
mod crash_restart;
mod erasure;
mod failures;
mod group_commit;
mod hostile_input;
mod isolation;
mod jobs;
mod leases;
mod logs;
mod openapi;
mod operations;
mod plugins;
mod quotas;
mod restore;
mod retention;
mod smoke;
mod state_machine;
mod tenancy;
mod upgrade;
