//! Misbehaving validator: `validate` keeps allocating 1 MiB buffers (filled,
//! so the pages are touched) that it never frees. The host's memory limit
//! must stop it: the failed allocation aborts, which traps.

use std::hint::black_box;

use sluice_sdk::{Action, Job, Rejection, State, validator};

const MIB: usize = 1 << 20;

struct MemoryHog;

impl validator::Validator for MemoryHog {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let chunk = vec![0xA5u8; MIB];
            hoard.push(black_box(chunk));
            black_box(&mut hoard);
        }
    }
}

sluice_sdk::export_validator!(MemoryHog);
