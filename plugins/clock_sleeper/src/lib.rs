//! Misbehaving validator: `validate` sleeps for an hour, blocked in a WASI
//! clock poll (a host call, where fuel does not run down). The host's
//! deadline must stop it.

use std::time::Duration;

use sluice_sdk::{Action, Job, Rejection, State, validator};

struct ClockSleeper;

impl validator::Validator for ClockSleeper {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        std::thread::sleep(Duration::from_secs(3600));
        Ok(())
    }
}

sluice_sdk::export_validator!(ClockSleeper);
