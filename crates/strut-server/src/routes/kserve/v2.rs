//! The Open Inference Protocol's health and metadata routes. Readiness is the
//! production deployment's: loaded and, like Truss's readiness route, healthy.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::check_name;
use crate::deployment::name_deployment;
use crate::state::PRODUCTION;
use crate::{ApiError, AppState};

/// What strut calls itself in server metadata and model `platform`.
const PLATFORM: &str = "strut";

/// `GET /v2`: the server's metadata; strut implements no protocol extensions.
pub(super) async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": PLATFORM,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

/// `GET /v2/health/live`: 200 from the moment the process listens.
pub(super) async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

/// `GET /v2/health/ready`: the model behind production is loaded and healthy.
pub(super) async fn server_ready(State(state): State<AppState>) -> Response {
    match ready(&state, None).await {
        Ok(()) => Json(json!({"ready": true})).into_response(),
        Err(err) => not_ready(err, json!({"ready": false})),
    }
}

/// `GET /v2/models/{name}/ready`.
pub(super) async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    match ready(&state, Some(&name)).await {
        Ok(()) => Json(json!({"name": name, "ready": true})).into_response(),
        Err(err @ ApiError::ModelNotFound(_)) => err.into_response(),
        Err(err) => not_ready(err, json!({"name": name, "ready": false})),
    }
}

async fn ready(state: &AppState, name: Option<&str>) -> Result<(), ApiError> {
    let deployment = state.environment(PRODUCTION)?;
    if let Some(name) = name {
        check_name(&deployment, name)?;
    }
    let model = deployment.model()?;
    if model.is_healthy(state.limits().health_check_timeout).await {
        Ok(())
    } else {
        tracing::warn!("health check failed");
        Err(ApiError::Unhealthy(deployment.model_name().to_owned()))
    }
}

/// The error's own response (status, headers, `error` and `code`) with the
/// protocol's readiness fields added to its body.
fn not_ready(err: ApiError, fields: Value) -> Response {
    let mut body = err.body();
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    let (parts, _) = err.into_response().into_parts();
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// `GET /v2/models/{name}`: an embedding model declares its tensors; any
/// other model's are whatever it makes of `inputs`, so none are declared.
pub(super) async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    let metadata = async {
        let deployment = state.environment(PRODUCTION)?;
        check_name(&deployment, &name)?;
        let model = deployment.model()?;
        let (inputs, outputs) = match model.embeddings() {
            Some(embeddings) => (
                json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}]),
                json!([{
                    "name": super::infer::EMBEDDING_OUTPUT,
                    "datatype": "FP32",
                    "shape": [-1, embeddings.dimensions()],
                }]),
            ),
            None => (json!([]), json!([])),
        };
        let body = json!({
            "name": name,
            "versions": [deployment.id()],
            "platform": PLATFORM,
            "inputs": inputs,
            "outputs": outputs,
        });
        let mut response = Json(body).into_response();
        name_deployment(&mut response, &deployment);
        Ok::<_, ApiError>(response)
    };
    metadata.await.unwrap_or_else(IntoResponse::into_response)
}

/// strut serves one version of a model, the deployment an environment points
/// at; KServe's server refuses version paths the same way.
pub(super) async fn versions() -> ApiError {
    ApiError::NotImplemented(
        "model versions are not supported: use /v2/models/{name}/... without /versions/{version}"
            .into(),
    )
}
