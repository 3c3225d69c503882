//! The shapes shared by all plugin kinds (`sluice:plugin/types`).

use core::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::validator::bindings::sluice::plugin::types as wit;

/// A job's state (the README's "Jobs and their states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by a worker.
    Processing,
    /// Done.
    Completed,
    /// Failed with attempts left: pending again after its backoff.
    Failed,
    /// Given up on: failed with no attempt left or not retryable, or cancelled.
    Abandoned,
}

impl State {
    /// The WIT / API name of the state (`pending`, `processing`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Processing => "processing",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action of a person or a worker; validators judge these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A worker claims a pending job.
    Claim,
    /// A worker completes a job.
    Complete,
    /// A worker fails an attempt.
    Fail,
    /// A worker gives a job back.
    Release,
    /// A failed job is retried.
    Retry,
    /// A finished job is replayed.
    Replay,
    /// A job is cancelled.
    Cancel,
}

impl Action {
    /// The WIT / API name of the action (`claim`, `complete`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Claim => "claim",
            Action::Complete => "complete",
            Action::Fail => "fail",
            Action::Release => "release",
            Action::Retry => "retry",
            Action::Replay => "replay",
            Action::Cancel => "cancel",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a validator refuses an action. The API answers `409 PLUGIN_REJECTED`
/// carrying `code` (the plugin's own) and `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rejection {
    /// A short machine-readable code chosen by the plugin, e.g. `MISSING_FIELD`.
    pub code: String,
    /// A human-readable explanation.
    pub reason: String,
}

impl Rejection {
    /// A rejection with this code and reason.
    pub fn new(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejection { code: code.into(), reason: reason.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

impl std::error::Error for Rejection {}

/// The job as a plugin sees it.
///
/// Payload, tags and progress cross the boundary as JSON text; they are kept
/// here as text (`*_json` fields) and parsed on demand with
/// [`payload`](Job::payload), [`payload_value`](Job::payload_value),
/// [`tags`](Job::tags), [`tag`](Job::tag) and
/// [`progress_value`](Job::progress_value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The job's id.
    pub job_uuid: String,
    /// The queue it is in.
    pub queue: String,
    /// The job's kind (free text chosen by the producer).
    pub kind: String,
    /// The payload, as JSON text.
    pub payload_json: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// Attempts started in the current attempt budget.
    pub attempt: u32,
    /// The attempt budget.
    pub max_attempts: u32,
    /// The job's tags, a JSON object as text.
    pub tags_json: String,
    /// `stable` or `canary`.
    pub stage: String,
    /// Saved progress `{"step": ..., "data": ...}` as JSON text, if any.
    pub progress_json: Option<String>,
}

impl Default for Job {
    /// An empty job: payload and tags `{}`, schema version 1, stage `stable`.
    fn default() -> Self {
        Job {
            job_uuid: String::new(),
            queue: String::new(),
            kind: String::new(),
            payload_json: "{}".to_string(),
            schema_version: 1,
            attempt: 0,
            max_attempts: 1,
            tags_json: "{}".to_string(),
            stage: "stable".to_string(),
            progress_json: None,
        }
    }
}

impl Job {
    /// Deserializes the payload into `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload_json)
    }

    /// The payload as a JSON value (`Value::Null` if the text is not JSON,
    /// which the host never sends).
    pub fn payload_value(&self) -> Value {
        serde_json::from_str(&self.payload_json).unwrap_or(Value::Null)
    }

    /// The job's tags (an empty map if the text is not a JSON object, which
    /// the host never sends).
    pub fn tags(&self) -> Map<String, Value> {
        match serde_json::from_str(&self.tags_json) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// One tag's value, if the job has it.
    pub fn tag(&self, key: &str) -> Option<Value> {
        self.tags().remove(key)
    }

    /// Saved progress as a JSON value, if any.
    pub fn progress_value(&self) -> Option<Value> {
        self.progress_json.as_deref().and_then(|text| serde_json::from_str(text).ok())
    }

    /// Whether the job runs on the canary stage.
    pub fn is_canary(&self) -> bool {
        self.stage == "canary"
    }

    /// Replaces the payload (builder style, for tests).
    pub fn with_payload(mut self, payload: &Value) -> Self {
        self.payload_json = payload.to_string();
        self
    }

    /// Replaces the tags (builder style, for tests).
    pub fn with_tags(mut self, tags: &Value) -> Self {
        self.tags_json = tags.to_string();
        self
    }
}

impl From<wit::Job> for Job {
    fn from(job: wit::Job) -> Self {
        Job {
            job_uuid: job.job_uuid,
            queue: job.queue,
            kind: job.kind,
            payload_json: job.payload,
            schema_version: job.schema_version,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            tags_json: job.tags,
            stage: job.stage,
            progress_json: job.progress,
        }
    }
}

impl From<wit::State> for State {
    fn from(state: wit::State) -> Self {
        match state {
            wit::State::Pending => State::Pending,
            wit::State::Processing => State::Processing,
            wit::State::Completed => State::Completed,
            wit::State::Failed => State::Failed,
            wit::State::Abandoned => State::Abandoned,
        }
    }
}

impl From<wit::Action> for Action {
    fn from(action: wit::Action) -> Self {
        match action {
            wit::Action::Claim => Action::Claim,
            wit::Action::Complete => Action::Complete,
            wit::Action::Fail => Action::Fail,
            wit::Action::Release => Action::Release,
            wit::Action::Retry => Action::Retry,
            wit::Action::Replay => Action::Replay,
            wit::Action::Cancel => Action::Cancel,
        }
    }
}

impl From<Rejection> for wit::Rejection {
    fn from(rejection: Rejection) -> Self {
        wit::Rejection { code: rejection.code, reason: rejection.reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_payload_and_tags() {
        #[derive(serde::Deserialize)]
        struct Mail {
            to: String,
        }
        let job = Job::default()
            .with_payload(&json!({"to": "a@example.com"}))
            .with_tags(&json!({"required_fields": ["to"], "gdpr": true}));
        assert_eq!(job.payload::<Mail>().unwrap().to, "a@example.com");
        assert_eq!(job.payload_value()["to"], "a@example.com");
        assert_eq!(job.tags().len(), 2);
        assert_eq!(job.tag("required_fields"), Some(json!(["to"])));
        assert_eq!(job.tag("absent"), None);
        assert!(!job.is_canary());
    }

    #[test]
    fn tolerates_text_that_is_not_json() {
        let job = Job { payload_json: "not json".into(), tags_json: "[1]".into(), ..Job::default() };
        assert_eq!(job.payload_value(), Value::Null);
        assert!(job.tags().is_empty());
        assert!(job.payload::<Value>().is_err());
    }
}
