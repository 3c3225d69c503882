//! Validator for the claim-veto tests: refuses to let a job be claimed while its
//! payload says `"hold": true`; allows everything else.

use sluice_sdk::serde_json::Value;
use sluice_sdk::{Action, Job, Rejection, State, validator};

struct HoldGate;

impl validator::Validator for HoldGate {
    fn validate(job: &Job, action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        if action == Action::Claim && job.payload_value().get("hold") == Some(&Value::Bool(true)) {
            return Err(Rejection::new("ON_HOLD", "the job is on hold"));
        }
        Ok(())
    }
}

sluice_sdk::export_validator!(HoldGate);
