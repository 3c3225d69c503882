//! Errors as RFC 9457 problem+json. Every error the API gives, protocol errors
//! included, goes through [`ApiError`].

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Code, Error};

/// The problem document. `code` is the stable, machine-readable part.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub code: &'static str,
    pub detail: String,
    /// The quota that refused the request, for QUOTA_EXCEEDED, RATE_LIMITED and PAYLOAD_TOO_LARGE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub error: Error,
    /// Overrides the code's usual status (malformed JSON is a 400 VALIDATION).
    pub status: Option<u16>,
}

impl ApiError {
    pub fn problem(&self) -> Problem {
        let status = self.status.unwrap_or(self.error.code.status());
        Problem {
            type_uri: format!("urn:sluice:problem:{}", self.error.code.as_str()),
            title: StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error"),
            status,
            code: self.error.code.as_str(),
            detail: self.error.reason.clone(),
            limit: self.error.limit.clone(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError { error, status: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status >= 500 {
            tracing::error!(target: "sluice::api", code = problem.code, detail = %problem.detail, "request failed");
        }
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, serde_json::to_vec(&problem).unwrap_or_default()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.error.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (code, status) = match &rejection {
            JsonRejection::JsonDataError(_) => (Code::Validation, None),
            JsonRejection::JsonSyntaxError(_) => (Code::Validation, Some(400)),
            JsonRejection::MissingJsonContentType(_) => (Code::UnsupportedMediaType, None),
            JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (Code::PayloadTooLarge, None)
            }
            _ => (Code::Validation, Some(400)),
        };
        ApiError { error: Error::new(code, rejection.body_text()), status }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Error::validation(rejection.body_text()).into()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Error::validation(rejection.body_text()).into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
