//! Misbehaving validator: `validate` tries to read `/etc/hostname` and to list
//! `/`, then refuses with code `FILE_RESULT` and a reason telling what
//! happened, so a test can see that the attempt failed inside the plugin
//! (the host grants no preopened directory).

use sluice_sdk::{Action, Job, Rejection, State, validator};

struct FileReader;

impl validator::Validator for FileReader {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        let file = match std::fs::read_to_string("/etc/hostname") {
            Ok(text) => format!("read {} bytes", text.len()),
            Err(e) => format!("error: {e}"),
        };
        let dir = match std::fs::read_dir("/") {
            Ok(entries) => format!("listed {} entries", entries.count()),
            Err(e) => format!("error: {e}"),
        };
        Err(Rejection::new("FILE_RESULT", format!("read_to_string(/etc/hostname): {file}; read_dir(/): {dir}")))
    }
}

sluice_sdk::export_validator!(FileReader);
