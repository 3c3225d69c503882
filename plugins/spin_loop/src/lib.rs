//! Misbehaving validator: `validate` never returns (a busy loop the optimizer
//! cannot remove). The host's fuel or deadline must stop it.

use std::hint::black_box;

use sluice_sdk::{Action, Job, Rejection, State, validator};

struct SpinLoop;

impl validator::Validator for SpinLoop {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }
}

sluice_sdk::export_validator!(SpinLoop);
