//! Routing only: each protocol lives in its own module and talks to models
//! through the deployment and its loaded model, never through model types.

mod admin;
mod async_api;
mod cog;
mod kserve;
mod mount;
mod openai;
mod truss;

use axum::Router;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::request::RequestLayer;
use crate::{ApiError, AppState, metrics};

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(truss::routes())
        .merge(admin::routes(state.clone()))
        .merge(async_api::routes())
        .merge(cog::routes())
        .merge(openai::routes())
        .merge(kserve::routes())
        .route("/metrics", get(metrics::scrape))
        .fallback(no_route)
        // axum adds `Allow` to what this answers.
        .method_not_allowed_fallback(wrong_method)
        // Request ids, panics and request metrics, in one layer: see
        // `RequestLayer`. Metrics count routed requests only, by route
        // template, which keeps the label values bounded.
        .layer(RequestLayer::new(state.clone()))
        .with_state(state)
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
    .into_response()
}

async fn no_route(method: Method, uri: Uri) -> Response {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
    .into_response()
}
