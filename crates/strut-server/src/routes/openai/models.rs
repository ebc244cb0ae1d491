//! `GET /v1/models`: the names the target's model answers to. KServe V1
//! lists models on the same path, so the answer carries both protocols'
//! keys; each client ignores the other's.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;

use axum::response::IntoResponse;

use super::{error, unix_now};
use crate::deployment::name_deployment;
use crate::routes::mount::{Target, route};
use crate::{ApiError, AppState};

#[derive(Serialize)]
struct List {
    object: &'static str,
    data: Vec<Card>,
    /// KServe V1's list of model names.
    models: Vec<String>,
}

#[derive(Serialize)]
struct Card {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

pub(super) async fn list(
    State(state): State<AppState>,
    target: Result<Target, ApiError>,
    headers: HeaderMap,
) -> Response {
    let routed = match target.and_then(|target| route(&target, &state, &headers)) {
        Ok(routed) => routed,
        Err(err) => return error::response(err),
    };
    let deployment = routed.deployment();
    let reply = deployment.model().map(|model| {
        let mut ids: Vec<String> = Vec::new();
        let capabilities = [
            model.text_generation().map(|g| g.model_id().to_owned()),
            model.embeddings().map(|e| e.model_id().to_owned()),
        ];
        for id in capabilities.into_iter().flatten() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            ids.push(deployment.model_name().to_owned());
        }
        // No load time is kept per model, so `created` is now, as vLLM has it.
        let created = unix_now();
        axum::Json(List {
            object: "list",
            data: ids
                .into_iter()
                .map(|id| Card {
                    id,
                    object: "model",
                    created,
                    owned_by: "strut",
                })
                .collect(),
            models: vec![deployment.model_name().to_owned()],
        })
    });
    let mut response = match reply {
        Ok(list) => list.into_response(),
        Err(err) => error::response(err),
    };
    name_deployment(&mut response, deployment);
    response
}
