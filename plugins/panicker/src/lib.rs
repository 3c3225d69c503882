//! Misbehaving validator: `validate` panics, which traps the call (the panic
//! message goes to stderr first).

use sluice_sdk::{Action, Job, Rejection, State, validator};

struct Panicker;

impl validator::Validator for Panicker {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        panic!("plugin panicked on purpose");
    }
}

sluice_sdk::export_validator!(Panicker);
