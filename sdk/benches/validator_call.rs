//! What one validator call costs: a fresh Store and instance from the InstancePre,
//! the call, and teardown, in the real host engine with the production limits.
//! The baseline, measured in the same run, is the same check done natively in
//! Rust (parse the payload and tags, look the fields up), so the ratio says what
//! the sandbox adds on this machine, whatever its speed today.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};
use sluice_host::model::{Job, JobState, PluginKind};
use sluice_host::plugins::{Action, Verdict};
use sluice_sdk::testing::{Harness, build_components, job_with_tags};

const CALLS: u32 = 5_000;

fn native_check(job: &Job) -> bool {
    let payload: Value = serde_json::from_str(job.payload.get()).unwrap_or(Value::Null);
    let required = job.tags.get("required_fields").and_then(Value::as_array).cloned().unwrap_or_default();
    required.iter().filter_map(Value::as_str).all(|f| payload.get(f).is_some())
}

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/Cargo.toml");
    let wasm = build_components(&manifest).remove("require_fields").expect("require_fields built");
    let harness = Harness::load(&wasm, PluginKind::Validator);
    let tags = json!({ "required_fields": ["invoice_id"] }).as_object().unwrap().clone();
    let job = job_with_tags("billing", json!({ "invoice_id": 7, "amount": 120, "currency": "EUR" }), tags);

    for _ in 0..200 {
        harness.validate(&job, Action::Complete, JobState::Processing, JobState::Completed);
    }
    let mut fuel = 0;
    let started = Instant::now();
    for _ in 0..CALLS {
        let outcome = harness.validate(&job, Action::Complete, JobState::Processing, JobState::Completed);
        assert!(matches!(outcome.result, Ok(Verdict::Allow)));
        fuel = outcome.fuel;
    }
    let plugin_us = started.elapsed().as_secs_f64() * 1e6 / CALLS as f64;

    let started = Instant::now();
    let mut allowed = 0u32;
    for _ in 0..CALLS * 10 {
        allowed += std::hint::black_box(native_check(std::hint::black_box(&job))) as u32;
    }
    assert_eq!(allowed, CALLS * 10);
    let native_us = started.elapsed().as_secs_f64() * 1e6 / (CALLS * 10) as f64;

    println!("validator call (fresh instance + call, require_fields): {plugin_us:.1} µs per call, {fuel} fuel");
    println!("native baseline (same check in Rust):                   {native_us:.2} µs per check");
    println!("ratio plugin / native: {:.0}x", plugin_us / native_us);
}
