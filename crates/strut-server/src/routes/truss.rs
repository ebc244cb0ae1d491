//! The Truss server's HTTP contract: liveness, readiness and predict under
//! the paths Truss and Baseten use.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use serde_json::json;

use super::predict::{name_deployment, predict};
use crate::deployment::Deployment;
use crate::request;
use crate::state::{DEVELOPMENT, PRODUCTION};
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", any(liveness))
        .route("/v1/models/{*rest}", get(model_get).post(model_post))
        .route("/predict", predict_on(PRODUCTION))
        .route("/production/predict", predict_on(PRODUCTION))
        .route("/development/predict", predict_on(DEVELOPMENT))
        .route("/environments/{env}/predict", post(predict_environment))
        .route("/deployment/{id}/predict", post(predict_deployment))
}

/// 200 from the moment the process listens, loading or not.
async fn liveness() -> axum::Json<bool> {
    axum::Json(true)
}

/// `GET /v1/models/{name}` (readiness, KServe V1's model status too) and
/// `GET /v1/models/{name}/loaded`. The name is ignored, as Truss ignores it:
/// Truss clients call `/v1/models/model`, KServe's the InferenceService name,
/// and both must reach the one model this server holds.
async fn model_get(State(state): State<AppState>, Path(rest): Path<String>) -> Response {
    let deployment = match state.environment(PRODUCTION) {
        Ok(d) => d,
        Err(err) => return err.into_response(),
    };
    // Probes are answered for a deployment like predict is, so the metrics
    // and the client see which one.
    let mut response = readiness(&state, &deployment, &rest).await;
    name_deployment(&mut response, &deployment);
    response
}

async fn readiness(state: &AppState, deployment: &Deployment, rest: &str) -> Response {
    let (name, check_health) = match rest.strip_suffix("/loaded") {
        Some(name) => (name, false),
        None => (rest, true),
    };
    if name.contains('/') || name.contains(':') {
        return ApiError::NoRoute {
            method: "GET".into(),
            path: format!("/v1/models/{rest}"),
        }
        .into_response();
    }
    let model = match deployment.model() {
        Ok(model) => model,
        Err(err) => return err.into_response(),
    };
    if check_health && !model.is_healthy(state.limits().health_check_timeout).await {
        tracing::warn!("health check failed");
        return ApiError::Unhealthy(deployment.model_name().to_owned()).into_response();
    }
    axum::Json(json!({"name": name, "ready": true})).into_response()
}

/// `POST /v1/models/{name}:predict` (and `:predict_binary`, the same handler
/// in Truss): KServe V1's `instances` or Truss's own body. The name is
/// ignored, as for readiness.
async fn model_post(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    request: Request,
) -> Response {
    let (id, headers, body) = match request::into_parts(request) {
        Ok(parts) => parts,
        Err(err) => return err.into_response(),
    };
    let is_predict = rest.rsplit_once(':').is_some_and(|(name, verb)| {
        !name.contains('/') && matches!(verb, "predict" | "predict_binary")
    });
    if !is_predict {
        return ApiError::NoRoute {
            method: "POST".into(),
            path: format!("/v1/models/{rest}"),
        }
        .into_response();
    }
    super::kserve::v1::predict(state, id, headers, body).await
}

/// The predict route of a fixed environment.
fn predict_on(environment: &'static str) -> MethodRouter<AppState> {
    post(move |State(state): State<AppState>, request: Request| {
        predict_in(state, environment, request)
    })
}

async fn predict_environment(
    State(state): State<AppState>,
    Path(env): Path<String>,
    request: Request,
) -> Response {
    predict_in(state, &env, request).await
}

async fn predict_deployment(
    State(state): State<AppState>,
    Path(deployment): Path<String>,
    request: Request,
) -> Response {
    let (id, headers, body) = match request::into_parts(request) {
        Ok(parts) => parts,
        Err(err) => return err.into_response(),
    };
    let routed = authorize_inference(&state, &headers)
        .and_then(|()| state.deployment(&deployment))
        .map(|d| d.enter());
    match routed {
        Ok(routed) => predict(state, routed, id, headers, body).await,
        Err(err) => err.into_response(),
    }
}

async fn predict_in(state: AppState, environment: &str, request: Request) -> Response {
    let (id, headers, body) = match request::into_parts(request) {
        Ok(parts) => parts,
        Err(err) => return err.into_response(),
    };
    let routed = authorize_inference(&state, &headers).and_then(|()| state.route(environment));
    match routed {
        Ok(routed) => predict(state, routed, id, headers, body).await,
        Err(err) => err.into_response(),
    }
}

/// With `--protect-inference`, predict routes take the admin API's keys.
pub(super) fn authorize_inference(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match state.control() {
        Some(control) if control.settings().protect_inference => {
            super::admin::authenticate(state, control, headers).map(drop)
        }
        _ => Ok(()),
    }
}
