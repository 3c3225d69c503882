//! Load shedding: at most `--max-in-flight` requests are served at once; one over
//! that is answered at once with 503 `OVERLOADED` and `Retry-After`, and changes
//! nothing. Without it an overloaded host would queue requests without bound
//! (the writer's queue included) and answer every one of them late.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::problem::ApiError;
use crate::error::{Code, Error};

/// Requests served at once by default. Long-polling claims count while they
/// wait, so this sits well above any expected number of workers.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

/// Seconds a shed client is told to wait before it tries again.
const RETRY_AFTER_S: u64 = 1;

/// The permits of the requests being served.
#[derive(Clone)]
pub struct InFlight(Arc<Semaphore>);

impl InFlight {
    pub fn new(max: usize) -> InFlight {
        InFlight(Arc::new(Semaphore::new(max)))
    }
}

/// Serve the request while it holds a permit; refuse it when none is left.
pub async fn shed(State(in_flight): State<InFlight>, request: Request, next: Next) -> Response {
    let Ok(_permit) = in_flight.0.try_acquire() else {
        let mut error = Error::new(Code::Overloaded, "the server is serving as many requests as it may; retry shortly");
        error.retry_after = Some(RETRY_AFTER_S);
        return ApiError::from(error).into_response();
    };
    next.run(request).await
}
