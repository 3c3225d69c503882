//! The server's log: one JSON object per line on stdout. Request threads format
//! a line and append it to the `LogSink`, whose thread writes it out (a write
//! syscall per line was a tenth of the request threads' time).
//!
//! The line is formatted straight into a reused buffer: `timestamp`, `level`, the
//! event's fields in order (`message` first), then `target`. tracing-subscriber's
//! JSON formatter, which gave the same lines, built a map per event first and
//! cost about as much again as the rest of the line's work.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;

use chrono::{SecondsFormat, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::log_sink::{LogSink, SinkGuard};

/// Install the logger (level from `SLUICE_LOG`, default `info`). The returned guard
/// writes out every buffered line when dropped, at shutdown.
pub fn init() -> SinkGuard {
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (sink, guard) = LogSink::start(std::io::stdout());
    tracing_subscriber::registry().with(filter).with(JsonLines { sink }).init();
    guard
}

struct JsonLines {
    sink: LogSink,
}

impl<S: Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            format_line(line, event);
            self.sink.append(line, urgent(event.metadata()));
        });
    }
}

/// Whether a line should reach the file at once rather than at the sink's next
/// tick: everything but the lines written per request and per plugin call, which
/// are the many. So a crash loses no audit, storage or start-up line it did not
/// lose before, and warnings and errors go out at once.
fn urgent(metadata: &tracing::Metadata<'_>) -> bool {
    *metadata.level() <= tracing::Level::WARN || !matches!(metadata.target(), "sluice::job" | "sluice::plugin")
}

fn format_line(line: &mut Vec<u8>, event: &Event<'_>) {
    // Records of dependencies that use the `log` crate carry their real level and
    // target in `log.*` fields; show those, as tracing-subscriber did.
    let normalized = event.normalized_metadata();
    let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    line.extend_from_slice(b"{\"timestamp\":\"");
    line.extend_from_slice(now.as_bytes());
    line.extend_from_slice(b"\",\"level\":\"");
    line.extend_from_slice(metadata.level().as_str().as_bytes());
    line.push(b'"');
    event.record(&mut Fields(line));
    line.extend_from_slice(b",\"target\":");
    string(line, metadata.target());
    line.extend_from_slice(b"}\n");
}

/// Appends each field as `,"name":value`.
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    /// Appends the key; false for the `log.*` fields a normalized record replaces.
    fn key(&mut self, field: &Field) -> bool {
        if field.name().starts_with("log.") {
            return false;
        }
        self.0.push(b',');
        string(self.0, field.name());
        self.0.push(b':');
        true
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.key(field) {
            return;
        }
        string(self.0, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.key(field) {
            return;
        }
        self.0.push(b'"');
        let _ = write!(Escaped(self.0), "{value:?}");
        self.0.push(b'"');
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.key(field) {
            return;
        }
        self.0.push(b'"');
        let _ = write!(Escaped(self.0), "{value}");
        self.0.push(b'"');
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.key(field) {
            return;
        }
        let _ = write!(self.0, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.key(field) {
            return;
        }
        let _ = write!(self.0, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.key(field) {
            return;
        }
        self.0.extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !self.key(field) {
            return;
        }
        // serde_json writes a non-finite number as null, as JSON has none.
        let _ = serde_json::to_writer(&mut *self.0, &value);
    }
}

/// A JSON string, quoted.
fn string(line: &mut Vec<u8>, value: &str) {
    line.push(b'"');
    escape(line, value);
    line.push(b'"');
}

/// Formatted text written into a JSON string as it is produced.
struct Escaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

fn escape(line: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                line.extend_from_slice(&bytes[start..i]);
                let _ = write!(line, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        line.extend_from_slice(&bytes[start..i]);
        line.extend_from_slice(escaped);
        start = i + 1;
    }
    line.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line is one JSON object that reads back to the fields given.
    #[test]
    fn lines_are_json_with_every_field() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let layer = Capture(lines.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let error = std::io::Error::other("disk \"full\"");
            tracing::info!(target: "sluice::test", text = "tab\there \u{1} \\ é", n = 7u64, neg = -3i64, yes = true,
                ratio = 0.5f64, nan = f64::NAN, shown = %"a\nb", debugged = ?Some(1), error = &error as &dyn std::error::Error,
                "hello {}", "world");
        });
        let bytes = lines.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.first(), Some(&"timestamp"));
        assert_eq!(keys.last(), Some(&"target"));
        assert!(chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "sluice::test");
        assert_eq!(line["message"], "hello world");
        assert_eq!(line["text"], "tab\there \u{1} \\ é");
        assert_eq!(line["n"], 7);
        assert_eq!(line["neg"], -3);
        assert_eq!(line["yes"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["nan"], serde_json::Value::Null);
        assert_eq!(line["shown"], "a\nb");
        assert_eq!(line["debugged"], "Some(1)");
        assert_eq!(line["error"], "disk \"full\"");
    }

    /// A record of the `log` crate shows its own level and target, not `log.*` fields.
    #[test]
    fn log_crate_records_keep_their_target() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let logger = tracing_log::LogTracer::new();
            let record = log::Record::builder()
                .level(log::Level::Warn)
                .target("some_dependency::module")
                .args(format_args!("from log"))
                .build();
            log::Log::log(&logger, &record);
        });
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["target"], "some_dependency::module");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "from log");
        assert!(line.as_object().unwrap().keys().all(|k| !k.starts_with("log.")), "{text}");
    }

    /// The layer's formatting, into a buffer instead of the logging thread.
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            format_line(&mut self.0.lock().unwrap(), event);
        }
    }
}
