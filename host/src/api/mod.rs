//! The HTTP API: routers assembled from small handlers. Routes are registered
//! through utoipa-axum, so `/openapi.json` is generated from the same list as the
//! router and cannot leave a route out.

mod admin;
mod alerts;
mod audit;
mod auth;
pub mod bounds;
mod checkpoints;
mod config;
mod deletions;
mod extract;
mod health;
mod holds;
mod jobs;
mod limits;
mod metrics;
pub mod overload;
mod plugins;
pub mod problem;
mod queues;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Keyring;
use crate::error::{Code, Error};
use crate::model::Actor;
use crate::queue::QueueService;
use crate::store::Store;
use problem::ApiError;

/// Largest request body for most routes; batches get [`MAX_BATCH_BODY`].
pub const MAX_BODY: usize = 1 << 20;
pub const MAX_BATCH_BODY: usize = 16 << 20;
/// Plugin uploads: the configured upload limit is checked below this.
pub const MAX_PLUGIN_BODY: usize = 64 << 20;

pub struct App {
    pub queue: Arc<QueueService>,
    pub keyring: Keyring,
    pub loops: Arc<crate::maintenance::LoopHealth>,
    pub checkpoints: Arc<crate::checkpoints::Checkpoints>,
    pub alerting: Arc<crate::alerts::Alerting>,
    pub retention: Arc<crate::maintenance::retention_cleaner::RetentionReports>,
}

pub type AppState = Arc<App>;

impl App {
    pub fn store(&self) -> &Arc<dyn Store> {
        self.queue.store()
    }

    /// Record a security-relevant action in the audit log (after it took effect),
    /// and as a log line.
    pub async fn audit(&self, action: &str, actor: &Actor, tenant: Option<&str>, detail: serde_json::Value) {
        tracing::info!(target: "sluice::audit", action, tenant = tenant.unwrap_or("*"), actor = %actor, detail = %detail, "audit");
        let result = self.store().audit(action, actor.clone(), tenant.map(str::to_owned), detail).await;
        if let Err(e) = result {
            tracing::error!(target: "sluice::audit", action, error = %e, "could not record an audit event");
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice", description = "A durable job queue with tenant-supplied WebAssembly policy."),
    components(schemas(problem::Problem))
)]
struct ApiDoc;

/// The routes and their OpenAPI document.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let batch = OpenApiRouter::new()
        .routes(routes!(jobs::insert_batch))
        .routes(routes!(jobs::complete_batch))
        .layer(DefaultBodyLimit::max(MAX_BATCH_BODY));
    let uploads = OpenApiRouter::new()
        .routes(routes!(plugins::upload, plugins::list))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BODY));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(metrics::metrics))
        .routes(routes!(metrics::stats))
        .routes(routes!(admin::create_tenant, admin::list_tenants))
        .routes(routes!(admin::create_key, admin::list_keys))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(queues::get, queues::put))
        .routes(routes!(queues::claim))
        .routes(routes!(queues::reset_breaker))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(queues::pause_host))
        .routes(routes!(queues::resume_host))
        .routes(routes!(checkpoints::create, checkpoints::list))
        .routes(routes!(checkpoints::get, checkpoints::delete))
        .routes(routes!(checkpoints::restore))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::history))
        .routes(routes!(alerts::acknowledge))
        .routes(routes!(jobs::insert, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::history))
        .routes(routes!(jobs::heartbeat))
        .routes(routes!(jobs::complete))
        .routes(routes!(jobs::fail))
        .routes(routes!(jobs::release))
        .routes(routes!(jobs::retry))
        .routes(routes!(jobs::replay))
        .routes(routes!(jobs::cancel))
        .routes(routes!(plugins::get, plugins::delete))
        .routes(routes!(plugins::bindings))
        .routes(routes!(plugins::bind, plugins::unbind))
        .routes(routes!(config::get, config::put))
        .routes(routes!(config::get_user, config::put_user))
        .routes(routes!(limits::get, limits::put))
        .routes(routes!(limits::tenant))
        .routes(routes!(limits::user))
        .routes(routes!(holds::hold_job, holds::release_job))
        .routes(routes!(holds::hold_user, holds::release_user))
        .routes(routes!(holds::report))
        .routes(routes!(deletions::delete_user))
        .routes(routes!(deletions::list))
        .routes(routes!(deletions::get))
        .routes(routes!(audit::list))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .merge(batch)
        .merge(uploads)
        .split_for_parts()
}

/// The whole service: routes, `/openapi.json`, problem+json for unknown routes,
/// wrong methods and panics, and load shedding in front of it all.
pub fn router(app: AppState, in_flight: overload::InFlight) -> Router {
    let (routes, doc) = routes();
    let doc = Arc::new(doc);
    routes
        .route("/openapi.json", axum::routing::get(move || async move { axum::Json(doc.as_ref().clone()) }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(bounds::guard))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(bounds::BODY_TIMEOUT))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::from(Error::new(Code::Internal, "internal error")).into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(in_flight, overload::shed))
        .with_state(app)
}

async fn not_found(uri: Uri) -> ApiError {
    Error::new(Code::NotFound, format!("no route {}", uri.path())).into()
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    Error::new(Code::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path())).into()
}
