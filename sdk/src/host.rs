//! What the host offers every plugin: the `sluice:plugin/host` import.

use core::fmt;

/// Severity of a [`log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Detail for debugging a plugin.
    Debug,
    /// Normal information.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something went wrong.
    Error,
}

impl Level {
    /// The WIT name of the level (`debug`, `info`, `warn`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes a line to the job's history (the host bounds its size and never
/// copies it into its own log).
///
/// In a component this calls the host import `sluice:plugin/host.log`. On a
/// non-wasm target (a plugin's native unit tests) it prints the line to
/// stderr instead.
pub fn log(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    {
        use crate::validator::bindings::sluice::plugin::host;
        let level = match level {
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }
    #[cfg(not(target_family = "wasm"))]
    {
        eprintln!("[plugin {level}] {message}");
    }
}
