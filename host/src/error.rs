//! The one error type of the service: a stable code and a human reason.
//! The API turns it into RFC 9457 problem+json (api/problem.rs).

use serde::Serialize;

/// Stable error codes (the README's "The API"). Clients match on these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    DuplicateJob,
    IllegalTransition,
    LeaseLost,
    ReplayNeedsOverride,
    Validation,
    SchemaUnsupported,
    PayloadTooLarge,
    NotFound,
    Unauthenticated,
    Forbidden,
    QuotaExceeded,
    RateLimited,
    PluginInvalid,
    PluginRejected,
    PluginTimeout,
    PluginTrap,
    PluginLimit,
    PluginInUse,
    /// The job changed while a plugin judged it; the service retries.
    RevisionConflict,
    MethodNotAllowed,
    UnsupportedMediaType,
    HeadersTooLarge,
    Overloaded,
    NotPaused,
    RestoreInProgress,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::DuplicateJob => "DUPLICATE_JOB",
            Code::IllegalTransition => "ILLEGAL_TRANSITION",
            Code::LeaseLost => "LEASE_LOST",
            Code::ReplayNeedsOverride => "REPLAY_NEEDS_OVERRIDE",
            Code::Validation => "VALIDATION",
            Code::SchemaUnsupported => "SCHEMA_UNSUPPORTED",
            Code::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Code::NotFound => "NOT_FOUND",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::QuotaExceeded => "QUOTA_EXCEEDED",
            Code::RateLimited => "RATE_LIMITED",
            Code::PluginInvalid => "PLUGIN_INVALID",
            Code::PluginRejected => "PLUGIN_REJECTED",
            Code::PluginTimeout => "PLUGIN_TIMEOUT",
            Code::PluginTrap => "PLUGIN_TRAP",
            Code::PluginLimit => "PLUGIN_LIMIT",
            Code::PluginInUse => "PLUGIN_IN_USE",
            Code::RevisionConflict => "REVISION_CONFLICT",
            Code::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Code::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Code::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Code::Overloaded => "OVERLOADED",
            Code::NotPaused => "NOT_PAUSED",
            Code::RestoreInProgress => "RESTORE_IN_PROGRESS",
            Code::Internal => "INTERNAL",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Code::DuplicateJob
            | Code::IllegalTransition
            | Code::LeaseLost
            | Code::ReplayNeedsOverride
            | Code::PluginRejected
            | Code::PluginInUse
            | Code::RevisionConflict => 409,
            Code::Validation | Code::SchemaUnsupported | Code::PluginInvalid => 422,
            // The tenant's own plugin failed under a fail-closed binding: a failed dependency.
            Code::PluginTimeout | Code::PluginTrap | Code::PluginLimit => 424,
            Code::PayloadTooLarge => 413,
            Code::NotFound => 404,
            Code::Unauthenticated => 401,
            Code::Forbidden => 403,
            Code::QuotaExceeded | Code::RateLimited => 429,
            Code::MethodNotAllowed => 405,
            Code::UnsupportedMediaType => 415,
            Code::HeadersTooLarge => 431,
            Code::Overloaded | Code::RestoreInProgress => 503,
            Code::NotPaused => 409,
            Code::Internal => 500,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.as_str())]
pub struct Error {
    pub code: Code,
    pub reason: String,
    /// Which quota refused the request (`tenant.max_pending`, `user.insert_rate` ...).
    pub limit: Option<String>,
    /// For RATE_LIMITED: seconds until a retry can succeed (the Retry-After header).
    pub retry_after: Option<u64>,
}

impl Error {
    pub fn new(code: Code, reason: impl Into<String>) -> Error {
        Error { code, reason: reason.into(), limit: None, retry_after: None }
    }

    pub fn with_limit(mut self, limit: String) -> Error {
        self.limit = Some(limit);
        self
    }

    pub fn validation(reason: impl Into<String>) -> Error {
        Error::new(Code::Validation, reason)
    }

    pub fn not_found(what: &str) -> Error {
        Error::new(Code::NotFound, format!("{what} not found"))
    }

    /// A worker's command on a job deleted since its claim (retention, right to delete).
    pub fn lease_of_deleted_job() -> Error {
        Error::new(Code::LeaseLost, "the job was deleted; its lease is revoked")
    }

    pub fn internal(err: impl std::fmt::Display) -> Error {
        Error::new(Code::Internal, err.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
