//! Axum's extractors with their rejections turned into problem+json.

use axum::extract::{FromRequest, FromRequestParts};

use super::problem::ApiError;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// A WebAssembly component upload: `Content-Type: application/wasm`, raw bytes.
pub struct Wasm(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Wasm {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use crate::error::{Code, Error};
        let content_type =
            req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type != "application/wasm" {
            return Err(Error::new(
                Code::UnsupportedMediaType,
                "send the component with Content-Type: application/wasm",
            )
            .into());
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
            let code = if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Code::PayloadTooLarge
            } else {
                Code::Validation
            };
            ApiError::from(Error::new(code, rejection.body_text()))
        })?;
        Ok(Wasm(bytes))
    }
}
