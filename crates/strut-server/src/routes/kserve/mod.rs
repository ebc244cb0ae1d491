//! KServe's data planes. V1 (`/v1/models/{name}`, `:predict` with
//! `instances`) shares its paths with Truss and is entered from `truss.rs`;
//! V2, the Open Inference Protocol, has its own routes here.

mod infer;
mod tensor;
pub(super) mod v1;
mod v2;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post};
use strut_model::capabilities::Embeddings;

use crate::deployment::Deployment;
use crate::pipeline::Call;
use crate::runner::guarded;
use crate::{ApiError, AppState};

/// The name Truss clients use for the one model a server holds.
const TRUSS_MODEL_NAME: &str = "model";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::server_ready))
        .route("/v2/models/{name}", get(v2::model_metadata))
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/infer", post(infer::infer))
        .route("/v2/models/{name}/versions/{*rest}", any(v2::versions))
}

/// V2 addresses a model by name: the deployment's `model_name`, or Truss's
/// fixed `model` so one client configuration works for both protocols.
fn check_name(deployment: &Deployment, name: &str) -> Result<(), ApiError> {
    if name == deployment.model_name() || name == TRUSS_MODEL_NAME {
        Ok(())
    } else {
        Err(ApiError::ModelNotFound(name.to_owned()))
    }
}

/// Texts embedded in one call (the model batches them) under one model slot,
/// as a predict would hold one.
async fn embed_texts(
    call: &Call,
    embeddings: &Arc<dyn Embeddings>,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let count = texts.len();
    let dimensions = embeddings.dimensions();
    let slot = call.slot().await?;
    let embedded = guarded(embeddings.embed(texts, &call.ctx)).await;
    call.observe_inference(slot.taken);
    drop(slot);
    let vectors = embedded?.embeddings;
    if vectors.len() != count || vectors.iter().any(|v| v.len() != dimensions) {
        return Err(ApiError::InvalidModelOutput(format!(
            "{count} texts of {dimensions} dimensions gave {} vectors of lengths {:?}",
            vectors.len(),
            vectors.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    Ok(vectors)
}
