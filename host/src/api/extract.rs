//! Axum's extractors with their rejections turned into problem+json.

use axum::extract::{FromRequest, FromRequestParts};

use super::problem::ApiError;
use crate::error::{Code, Error};

/// A JSON body: `Content-Type: application/json`, within the route's size limit
/// and [`super::bounds::MAX_JSON_DEPTH`] levels deep.
pub struct Json<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type =
            req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if !(mime == "application/json" || mime.ends_with("+json")) {
            return Err(Error::new(Code::UnsupportedMediaType, "send JSON with Content-Type: application/json").into());
        }
        let bytes = body(req, state).await?;
        super::bounds::check_depth(&bytes)?;
        // The plain parse first; only a body it refuses is parsed again by axum's
        // extractor, whose error names the path of the bad field (tracking the path
        // of every field costs a few % of a request).
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Json(value)),
            Err(_) => {
                let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
                Ok(Json(value))
            }
        }
    }
}

/// The whole body, a body over the route's limit being 413 PAYLOAD_TOO_LARGE.
async fn body<S: Send + Sync>(req: axum::extract::Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
        let code = if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            Code::PayloadTooLarge
        } else {
            Code::Validation
        };
        ApiError::from(Error::new(code, rejection.body_text()))
    })
}

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
        let content_type =
            req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type != "application/wasm" {
            return Err(Error::new(
                Code::UnsupportedMediaType,
                "send the component with Content-Type: application/wasm",
            )
            .into());
        }
        Ok(Wasm(body(req, state).await?))
    }
}
