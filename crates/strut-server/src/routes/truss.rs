//! The Truss server's HTTP contract: liveness, readiness and predict under
//! the paths Truss and Baseten use.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use super::mount::{Form, Target, every_target, route};
use crate::codec::read_input;
use crate::deployment::{Deployment, name_deployment};
use crate::pipeline::{self, Encoding};
use crate::request;
use crate::state::PRODUCTION;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", any(liveness))
        .route("/v1/models/{*rest}", get(model_get).post(model_post))
        .merge(every_target(predict_routes, Form::Direct))
}

fn predict_routes() -> Router<AppState> {
    Router::new().route("/predict", post(predict))
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
    let query = request.uri().query().map(str::to_owned);
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
    super::kserve::v1::predict(state, id, headers, query, body).await
}

/// `POST {target}/predict`: Truss's predict, the body in JSON or msgpack,
/// a stream as raw chunks, SSE or collected JSON.
async fn predict(State(state): State<AppState>, target: Target, request: Request) -> Response {
    let query = request.uri().query().map(str::to_owned);
    let (id, headers, body) = match request::into_parts(request) {
        Ok(parts) => parts,
        Err(err) => return err.into_response(),
    };
    let routed = match route(&target, &state, &headers) {
        Ok(routed) => routed,
        Err(err) => return err.into_response(),
    };
    let encoding = Encoding::of_request(&headers);
    let meta = request::meta_for(routed.deployment(), &headers, query.as_deref());
    // Not held through the request: the headers share hyper's read buffer.
    drop(headers);
    pipeline::serve(state, routed, id, encoding, move |call| async move {
        let call = call.with_request(meta);
        let model = call.model()?;
        let input = read_input(call.state.limits(), encoding.format, body).await?;
        let openai_compatible = call.deployment.spec().openai_compatible();
        if model.text_generation().is_some()
            && super::openai::is_openai_body(&input, openai_compatible)
        {
            return super::openai::on_predict(call, input).await;
        }
        call.predict(&model, input, encoding.mode).await
    })
    .await
}
