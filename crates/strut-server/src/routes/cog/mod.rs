//! Cog's predictions API, so Replicate-style clients work: sync predictions
//! (JSON or SSE), async ones on the durable queue (`Prefer: respond-async`,
//! idempotent `PUT`), cancel, `/health-check` and `/openapi.json`.
//! Predictions run on the production environment through the same pipeline
//! as every route.

mod openapi;
mod sync;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use strut_queue::{Enqueued, NewRequest, Protocol, Record, RetryConfig, now_ms};

use super::async_api::{queue_of, webhook_url};
use super::mount::authorize_inference;
use crate::codec::{StreamMode, read_body};
use crate::deployment::LoadState;
use crate::queue::{cog_event, cog_snapshot};
use crate::state::PRODUCTION;
use crate::{ApiError, AppState};
use sync::predict_now;

/// Cog keeps async predictions without a queue limit; ours is Baseten's longest.
const COG_MAX_QUEUE_MS: i64 = 259_200 * 1000;
const MAX_ID_LEN: usize = 128;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health-check", get(health_check))
        .route("/openapi.json", get(openapi::document))
        .route("/predictions", post(create))
        .route("/predictions/{id}", put(create_idempotent))
        .route("/predictions/{id}/cancel", post(cancel))
}

/// Always 200; readiness is the `status` field, as in Cog.
async fn health_check(State(state): State<AppState>) -> Response {
    let (status, setup) = match state.environment(PRODUCTION) {
        Err(_) => ("STARTING", "starting"),
        Ok(d) => match d.state() {
            LoadState::Loading | LoadState::Unloaded => ("STARTING", "starting"),
            LoadState::Failed(_) => ("SETUP_FAILED", "failed"),
            LoadState::Ready | LoadState::Draining => {
                let healthy = match d.model() {
                    Ok(model) => model.is_healthy(state.limits().health_check_timeout).await,
                    Err(_) => false,
                };
                let admission = d.admission();
                if !healthy {
                    ("UNHEALTHY", "succeeded")
                } else if admission.in_flight() >= admission.concurrency() {
                    ("BUSY", "succeeded")
                } else {
                    ("READY", "succeeded")
                }
            }
        },
    };
    axum::Json(json!({"status": status, "setup": {"status": setup}})).into_response()
}

/// Cog's request body; everything but `input` is optional.
struct PredictionRequest {
    id: Option<String>,
    input: Value,
    webhook: Option<String>,
    events: u8,
}

fn parse(bytes: &[u8]) -> Result<PredictionRequest, ApiError> {
    let bad = |field, kind, message: String| ApiError::CogInvalidBody {
        field,
        kind,
        message,
    };
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?
    };
    let id = match body.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if valid_id(id) => Some(id.clone()),
        Some(other) => {
            return Err(bad(
                "id",
                "value_error",
                format!("`id` must be 1-{MAX_ID_LEN} printable ASCII characters, got {other}"),
            ));
        }
    };
    let input = match body.get("input") {
        None | Some(Value::Null) => json!({}),
        Some(input @ Value::Object(_)) => input.clone(),
        Some(_) => {
            return Err(bad(
                "input",
                "dict_type",
                "Input should be a valid dictionary".into(),
            ));
        }
    };
    let webhook = match body.get("webhook") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => {
            Some(webhook_url(url).map_err(|msg| bad("webhook", "url_parsing", msg))?)
        }
        Some(_) => {
            return Err(bad(
                "webhook",
                "url_type",
                "`webhook` must be a URL string".into(),
            ));
        }
    };
    let events = match body.get("webhook_events_filter") {
        None | Some(Value::Null) => 0b1111,
        Some(Value::Array(names)) => names.iter().try_fold(0u8, |bits, name| {
            name.as_str()
                .and_then(cog_event)
                .map(|bit| bits | bit)
                .ok_or_else(|| {
                    bad(
                        "webhook_events_filter",
                        "enum",
                        format!(
                            "`webhook_events_filter` takes start, output, logs, completed; got {name}"
                        ),
                    )
                })
        })?,
        Some(_) => {
            return Err(bad(
                "webhook_events_filter",
                "list_type",
                "`webhook_events_filter` must be a list".into(),
            ));
        }
    };
    Ok(PredictionRequest {
        id,
        input,
        webhook,
        events,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

fn new_id() -> String {
    format!("pred_{}", uuid::Uuid::new_v4().simple())
}

fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "respond-async"))
}

fn wants_sse(headers: &HeaderMap) -> bool {
    StreamMode::of_request(headers) == StreamMode::Sse
}

/// Cog answers a malformed body as FastAPI does, in pydantic's shape
/// (`detail[].loc` names the field); `code` is ours. Other errors keep the
/// common shape.
fn rejected(err: ApiError) -> Response {
    let field = match &err {
        ApiError::CogInvalidBody { field, .. } => *field,
        ApiError::PredictionIdMismatch { .. } => "id",
        _ => return err.into_response(),
    };
    let kind = match &err {
        ApiError::CogInvalidBody { kind, .. } => *kind,
        _ => "value_error",
    };
    let detail = json!({"detail": [{"loc": ["body", field], "msg": err.to_string(), "type": kind}],
                        "code": err.code()});
    (err.status(), axum::Json(detail)).into_response()
}

async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let request = match read(&state, &headers, body).await {
        Ok(request) => request,
        Err(err) => return rejected(err),
    };
    let id = request.id.clone().unwrap_or_else(new_id);
    respond(state, headers, id, request).await
}

async fn create_idempotent(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = match read(&state, &headers, body).await {
        Ok(request) => request,
        Err(err) => return rejected(err),
    };
    if let Some(body_id) = &request.id
        && body_id != &id
    {
        return rejected(ApiError::PredictionIdMismatch {
            path: id.clone(),
            body: body_id.clone(),
        });
    }
    // A prediction already known under this id is answered, never run twice.
    if let Some(queue) = state.async_queue() {
        match queue.store.get(&id).await {
            Ok(Some(record)) => return snapshot_response(queue, &record),
            Ok(None) => {}
            Err(err) => return ApiError::from(err).into_response(),
        }
    }
    respond(state, headers, id, request).await
}

async fn read(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<PredictionRequest, ApiError> {
    authorize_inference(state, headers)?;
    let bytes = read_body(body, state.limits().max_body_bytes).await?;
    parse(&bytes)
}

async fn respond(
    state: AppState,
    headers: HeaderMap,
    id: String,
    request: PredictionRequest,
) -> Response {
    if wants_async(&headers) {
        return match submit(&state, id, request).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
    }
    predict_now(state, id, request.input, wants_sse(&headers)).await
}

fn snapshot_response(queue: &crate::queue::AsyncQueue, record: &Record) -> Response {
    let live = queue.find_running(&record.id).map(|r| r.capture.lines());
    let snapshot = cog_snapshot(record, live.as_deref());
    (StatusCode::ACCEPTED, axum::Json(snapshot)).into_response()
}

async fn submit(
    state: &AppState,
    id: String,
    request: PredictionRequest,
) -> Result<Response, ApiError> {
    let queue = queue_of(state)?;
    state.environment(PRODUCTION)?;
    if queue.store.unfinished() >= queue.settings.max_unfinished {
        return Err(ApiError::AsyncQueueFull(queue.settings.max_unfinished));
    }
    let created_ms = now_ms();
    let new = NewRequest {
        id: id.clone(),
        protocol: Protocol::Cog,
        target: format!("env:{PRODUCTION}"),
        input: request.input,
        webhook: request.webhook,
        events: request.events,
        priority: 0,
        created_ms,
        expires_ms: created_ms + COG_MAX_QUEUE_MS,
        // Cog never re-runs a prediction; one interrupted by a crash fails.
        retry: RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        },
    };
    match queue.store.enqueue(new).await? {
        Enqueued::Exists(record) => Ok(snapshot_response(queue, &record)),
        Enqueued::Created => {
            queue.wake_dispatch.notify_one();
            let record = queue.store.get(&id).await?.ok_or_else(|| {
                ApiError::Internal(format!("prediction {id} vanished after enqueue"))
            })?;
            Ok(snapshot_response(queue, &record))
        }
    }
}

/// `200 {}` when found (queued: canceled; running: signalled), `404 {}` if not.
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(err) = authorize_inference(&state, &headers) {
        return err.into_response();
    }
    let Some(queue) = state.async_queue() else {
        return (StatusCode::NOT_FOUND, axum::Json(json!({}))).into_response();
    };
    let found = match queue.store.cancel(&id, now_ms()).await {
        Ok(strut_queue::Cancel::Canceled) => {
            queue.wake_webhooks.notify_one();
            true
        }
        Ok(strut_queue::Cancel::Running) => {
            // Elsewhere, the replica running it hears of the cancel.
            queue.signal_cancel(&id);
            true
        }
        Ok(strut_queue::Cancel::Finished(_)) => true,
        // A sync prediction is only in memory.
        Ok(strut_queue::Cancel::NotFound) => queue.signal_cancel(&id),
        Err(err) => return ApiError::from(err).into_response(),
    };
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    (status, axum::Json(json!({}))).into_response()
}
