//! Routing only: each protocol lives in its own module and talks to models
//! through the deployment and its loaded model, never through model types.

mod admin;
mod async_api;
mod cog;
mod kserve;
mod openai;
pub(crate) mod predict;
mod truss;

pub use predict::DEPLOYMENT_HEADER;

use axum::Router;
use axum::http::{Method, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;

use crate::runner::panic_message;
use crate::{ApiError, AppState, metrics, request};

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(truss::routes())
        .merge(admin::routes(state.clone()))
        .merge(async_api::routes())
        .merge(cog::routes())
        .merge(openai::routes())
        .merge(kserve::routes())
        .route("/metrics", get(metrics::scrape))
        // A route layer sees the matched route template, which keeps the
        // metrics' label values bounded; unmatched paths are not counted.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .fallback(no_route)
        .layer(CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                ApiError::Internal(format!("handler panicked: {}", panic_message(&*panic)))
                    .into_response()
            },
        ))
        .layer(middleware::from_fn(request::request_id))
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> Response {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
    .into_response()
}
