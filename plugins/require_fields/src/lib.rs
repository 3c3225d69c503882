//! Validator: refuses `complete` while the payload lacks a field that the
//! job's `required_fields` tag (a JSON array of strings, usually set in the
//! tenant's default tags) names. Allows every other action.

use sluice_sdk::serde_json::Value;
use sluice_sdk::{Action, Job, Level, Rejection, State, log, validator};

struct RequireFields;

impl validator::Validator for RequireFields {
    fn validate(job: &Job, action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        if action != Action::Complete {
            return Ok(());
        }
        let Some(Value::Array(required)) = job.tag("required_fields") else {
            return Ok(());
        };
        let payload = job.payload_value();
        let missing: Vec<&str> =
            required.iter().filter_map(Value::as_str).filter(|field| payload.get(field).is_none()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let names = missing.iter().map(|field| format!("\"{field}\"")).collect::<Vec<_>>().join(", ");
        let reason = if missing.len() == 1 {
            format!("the payload lacks the required field {names}")
        } else {
            format!("the payload lacks the required fields {names}")
        };
        log(Level::Info, &format!("require_fields: {reason}"));
        Err(Rejection::new("MISSING_FIELD", reason))
    }
}

sluice_sdk::export_validator!(RequireFields);
