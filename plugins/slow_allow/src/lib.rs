//! Validator for the hot-swap tests: takes about 300 ms (spinning on the wall
//! clock), then allows the action. A call in flight while its binding changes
//! must still finish on this version.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sluice_sdk::{Action, Job, Rejection, State, validator};

struct SlowAllow;

impl validator::Validator for SlowAllow {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        let start = Instant::now();
        let mut n: u64 = 0;
        while start.elapsed() < Duration::from_millis(300) {
            n = black_box(n.wrapping_add(1));
        }
        Ok(())
    }
}

sluice_sdk::export_validator!(SlowAllow);
