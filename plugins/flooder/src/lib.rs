//! Misbehaving validator: `validate` writes 10 MiB to stdout and calls the
//! host's log 100,000 times with long lines, then allows the action. The host
//! must bound what it keeps of both.

use std::io::Write;

use sluice_sdk::{Action, Job, Level, Rejection, State, log, validator};

const STDOUT_BYTES: usize = 10 << 20;
const LINE: usize = 1024;
const LOG_CALLS: usize = 100_000;

struct Flooder;

impl validator::Validator for Flooder {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        // 1023 characters and a newline: 10,240 lines make 10 MiB.
        let line = "x".repeat(LINE - 1);
        for _ in 0..STDOUT_BYTES / LINE {
            println!("{line}");
        }
        let _ = std::io::stdout().flush();
        for i in 0..LOG_CALLS {
            log(Level::Info, &format!("flood line {i}: {line}"));
        }
        Ok(())
    }
}

sluice_sdk::export_validator!(Flooder);
