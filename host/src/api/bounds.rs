//! Bounds on hostile input that axum does not set itself: request headers (count
//! and bytes) and JSON nesting depth. Body sizes are `DefaultBodyLimit`s on the
//! routes; string lengths and batch sizes are checked where the fields are read.
//!
//! hyper's own header limits (see `http.rs`) sit above these, so a request over
//! them gets problem+json from here, not a bare error from hyper.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
use crate::error::{Code, Error};

/// Most request headers, and most bytes of request line and headers together.
pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Deepest nesting of arrays and objects in a JSON body (payloads and tags included).
pub const MAX_JSON_DEPTH: usize = 64;
/// Longest a client may take to send a request body.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Refuse oversized headers; and after an error answer to a request that carried
/// a body, close the connection: the body may be unread, so the connection
/// cannot carry another request, and the client must be told so.
pub async fn guard(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    let bytes: usize = request.uri().to_string().len()
        + headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let reason = format!(
            "request headers: {} headers and {bytes} bytes; at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes",
            headers.len()
        );
        return ApiError::from(Error::new(Code::HeadersTooLarge, reason)).into_response();
    }
    let mut response = next.run(request).await;
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Refuse JSON nested deeper than [`MAX_JSON_DEPTH`], before parsing it.
pub fn check_depth(json: &[u8]) -> Result<(), Error> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(Error::validation(format!("JSON nested deeper than {MAX_JSON_DEPTH} levels")));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_depth(deep(MAX_JSON_DEPTH).as_bytes()).is_ok());
        assert!(check_depth(deep(MAX_JSON_DEPTH + 1).as_bytes()).is_err());
        let in_string = format!(r#"{{"a": "{}\" {}"}}"#, "[".repeat(200), "{".repeat(200));
        assert!(check_depth(in_string.as_bytes()).is_ok());
    }
}
