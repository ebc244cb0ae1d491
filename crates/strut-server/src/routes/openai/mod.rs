//! OpenAI's API as adapters over the models' capabilities: `GET /v1/models`,
//! `POST /v1/chat/completions`, `/v1/completions`, `/v1/responses` and
//! `/v1/embeddings`.
//! `/v1/...` serves production; the same routes under Baseten's `sync` paths
//! serve every target, so an OpenAI SDK's base URL can be
//! `http://host/environments/staging/sync/v1`.

mod chat;
mod completions;
mod embeddings;
mod error;
mod fields;
mod generate;
mod logprobs;
mod models;
mod params;
mod responses;
mod sse;
mod tools;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use serde_json::Value;

use super::mount::{Form, Target, every_target, route};
use crate::codec::{BodyFormat, StreamMode, read_input};
use crate::pipeline::{self, Call, Encoding, Reply};
use crate::request::RequestId;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    every_target(v1, Form::Sync)
}

fn v1() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(models::list))
        .route(
            "/v1/chat/completions",
            posting(|call, body| generate::run(call, body, &chat::Chat)),
        )
        .route(
            "/v1/completions",
            posting(|call, body| generate::run(call, body, &completions::Completions)),
        )
        .route("/v1/embeddings", posting(embeddings::run))
        .route("/v1/responses", posting(responses::run))
}

/// OpenAI's encoding: JSON documents, its own events, its error shape.
const OPENAI: Encoding = Encoding {
    format: BodyFormat::Json,
    mode: StreamMode::Sse,
    error: error::response,
};

/// A POST route whose body `work` turns into a reply: every OpenAI POST is
/// one of these, differing only in its work.
fn posting<F, Fut>(work: F) -> MethodRouter<AppState>
where
    F: Fn(Call, Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Reply, ApiError>> + Send + 'static,
{
    post(
        move |State(state): State<AppState>,
              target: Result<Target, ApiError>,
              id: RequestId,
              uri: Uri,
              headers: HeaderMap,
              body: Body| async move {
            serve(state, target, id, &headers, uri.query(), body, work).await
        },
    )
}

/// Whether a predict body is OpenAI's (it names its `model`, and has
/// `messages` or a `prompt`), as Baseten's clients send to an LLM's predict
/// URL.
///
/// A deployment tagged `openai-compatible` (Truss's `model_metadata.tags`,
/// which Baseten uses to mark a predict route that speaks OpenAI) takes
/// every body with `messages` or a `prompt` as OpenAI's, named or not.
pub(super) fn is_openai_body(input: &Value, openai_compatible: bool) -> bool {
    (openai_compatible || input.get("model").is_some())
        && (input.get("messages").is_some() || input.get("prompt").is_some())
}

/// A generation model's predict route given an OpenAI body: answered as
/// `/v1/chat/completions` (for `messages`) or `/v1/completions` would, the
/// model name checked the same way. On an `openai-compatible` deployment a
/// prompt's answer has chat's shape, as that tag's clients read it.
pub(super) async fn on_predict(call: Call, input: Value) -> Result<Reply, ApiError> {
    if input.get("messages").is_some() {
        generate::run(call, input, &chat::Chat).await
    } else if call.deployment.spec().openai_compatible() {
        generate::run(call, input, &completions::PromptAsChat).await
    } else {
        generate::run(call, input, &completions::Completions).await
    }
}

/// Every OpenAI POST: routed to its target, its JSON body decoded, the work
/// run in the pipeline, errors in OpenAI's shape.
async fn serve<F, Fut>(
    state: AppState,
    target: Result<Target, ApiError>,
    id: RequestId,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
    work: F,
) -> Response
where
    F: FnOnce(Call, Value) -> Fut,
    Fut: std::future::Future<Output = Result<Reply, ApiError>>,
{
    let routed = match target.and_then(|target| route(&target, &state, headers)) {
        Ok(routed) => routed,
        Err(err) => return error::response(err),
    };
    // A model's own method may read the request (Truss's `request`).
    let meta = crate::request::meta_for(routed.deployment(), headers, query);
    pipeline::serve(state, routed, id, OPENAI, move |call| async move {
        let call = call.with_request(meta);
        let input = read_input(call.state.limits(), BodyFormat::Json, body).await?;
        work(call, input).await
    })
    .await
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
