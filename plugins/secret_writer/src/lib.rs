//! Misbehaving validator: `validate` leaves the marker `SLUICE-SECRET-7f3a9c`
//! in a heap buffer it leaks, then allows the action. With `secret_reader`
//! it checks that no instance's memory outlives its call.

use std::hint::black_box;

use sluice_sdk::{Action, Job, Rejection, State, validator};

const MARKER: &str = "SLUICE-SECRET-7f3a9c";

struct SecretWriter;

impl validator::Validator for SecretWriter {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        let leaked: &'static mut [u8] = Box::leak(MARKER.as_bytes().to_vec().into_boxed_slice());
        black_box(leaked);
        Ok(())
    }
}

sluice_sdk::export_validator!(SecretWriter);
