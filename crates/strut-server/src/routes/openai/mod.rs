//! OpenAI's API as adapters over the models' capabilities: `GET /v1/models`,
//! `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings`.
//! `/v1/...` serves production; the same routes under Baseten's `sync` paths
//! serve every target, so an OpenAI SDK's base URL can be
//! `http://host/environments/staging/sync/v1`.

mod chat;
mod completions;
mod embeddings;
mod error;
mod fields;
mod generate;
mod models;
mod params;
mod sse;

use std::collections::HashMap;
use std::future::Future;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::predict::{Call, name_deployment, read_input};
use super::truss::authorize_inference;
use crate::codec::{BodyFormat, StreamMode};
use crate::deployment::InFlight;
use crate::request::RequestId;
use crate::state::{DEVELOPMENT, PRODUCTION};
use crate::streaming::{self, ByteStream};
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(v1(Prefix::Fixed(PRODUCTION)))
        .nest("/production/sync", v1(Prefix::Fixed(PRODUCTION)))
        .nest("/development/sync", v1(Prefix::Fixed(DEVELOPMENT)))
        .nest("/environments/{env}/sync", v1(Prefix::Environment))
        .nest("/deployment/{id}/sync", v1(Prefix::Deployment))
}

fn v1(prefix: Prefix) -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .layer(Extension(prefix))
}

/// How the path a route is mounted under names its target.
#[derive(Debug, Clone, Copy)]
enum Prefix {
    Fixed(&'static str),
    /// `{env}` names the environment.
    Environment,
    /// `{id}` names the deployment.
    Deployment,
}

/// Where a request goes.
enum Target {
    Environment(String),
    Deployment(String),
}

impl FromRequestParts<AppState> for Target {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let prefix = parts.extensions.get::<Prefix>().copied().ok_or_else(|| {
            error::response(ApiError::Internal(
                "an OpenAI route without a prefix".into(),
            ))
        })?;
        let (param, named) = match prefix {
            Prefix::Fixed(env) => return Ok(Target::Environment(env.to_owned())),
            Prefix::Environment => ("env", Target::Environment as fn(String) -> Target),
            Prefix::Deployment => ("id", Target::Deployment as fn(String) -> Target),
        };
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| error::response(ApiError::InvalidInput(rejection.body_text())))?;
        params
            .remove(param)
            .map(named)
            .ok_or_else(|| error::response(ApiError::Internal(format!("no `{param}` in the path"))))
    }
}

impl Target {
    /// Counts the request in its deployment's in-flight requests, with
    /// `--protect-inference` honoured as on predict routes.
    fn route(&self, state: &AppState, headers: &HeaderMap) -> Result<InFlight, ApiError> {
        authorize_inference(state, headers)?;
        match self {
            Target::Environment(name) => state.route(name),
            Target::Deployment(id) => Ok(state.deployment(id)?.enter()),
        }
    }
}

/// What an endpoint answers with.
enum Reply {
    /// A serialized JSON document.
    Json(Bytes),
    /// Framed server-sent events, errors included.
    Stream(ByteStream),
}

impl Reply {
    fn json(value: &impl Serialize) -> Result<Reply, ApiError> {
        to_json(value).map(Reply::Json)
    }
}

fn to_json(value: &impl Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|err| ApiError::Internal(format!("encoding a response: {err}")))
}

async fn chat_completions(
    State(state): State<AppState>,
    target: Target,
    id: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve(state, target, id, &headers, body, |call, body| {
        generate::run(call, body, generate::Endpoint::Chat)
    })
    .await
}

async fn completions(
    State(state): State<AppState>,
    target: Target,
    id: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve(state, target, id, &headers, body, |call, body| {
        generate::run(call, body, generate::Endpoint::Completions)
    })
    .await
}

async fn embeddings(
    State(state): State<AppState>,
    target: Target,
    id: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve(state, target, id, &headers, body, embeddings::run).await
}

/// The envelope of every OpenAI POST: routing, the request's context and
/// deadline, the JSON body, and OpenAI's error shape. An open stream holds
/// its deployment's in-flight count and cancel-on-drop guard to its end.
async fn serve<F, Fut>(
    state: AppState,
    target: Target,
    id: RequestId,
    headers: &HeaderMap,
    body: Body,
    work: F,
) -> Response
where
    F: FnOnce(Call, Value) -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let routed = match target.route(&state, headers) {
        Ok(routed) => routed,
        Err(err) => return error::response(err),
    };
    let deployment = routed.deployment().clone();
    let (call, on_drop, deadline) = Call::start(state.clone(), &deployment, id, StreamMode::Sse);
    let work = async {
        let input = read_input(&state, BodyFormat::Json, body).await?;
        work(call, input).await
    };
    let outcome = tokio::time::timeout_at(deadline.into(), work)
        .await
        .unwrap_or_else(|_| Err(ApiError::Timeout(state.limits().request_timeout.as_secs())));
    let mut response = match outcome {
        Ok(Reply::Json(bytes)) => json_response(bytes),
        Ok(Reply::Stream(stream)) => {
            sse::response(streaming::hold_while_streaming(stream, (on_drop, routed)))
        }
        Err(err) => {
            // Stop whatever the model still does for this request.
            drop(on_drop);
            error::response(err)
        }
    };
    name_deployment(&mut response, &deployment);
    response
}

fn json_response(bytes: Bytes) -> Response {
    let mut response = Body::from(bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The name a response reports: the one the client asked for, which must be
/// the capability's model id or the deployment's model name (as vLLM, an
/// unknown name is 404), or the model id when the client named none.
fn served_name(
    requested: Option<String>,
    model_id: &str,
    model_name: &str,
) -> Result<String, ApiError> {
    match requested {
        None => Ok(model_id.to_owned()),
        Some(name) if name == model_id || name == model_name => Ok(name),
        Some(name) => Err(ApiError::ModelNotFound(name)),
    }
}

/// Seconds since the Unix epoch, OpenAI's `created`.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
