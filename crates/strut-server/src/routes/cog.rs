//! Cog's predictions API, so Replicate-style clients work: sync predictions
//! (JSON or SSE), async ones on the durable queue (`Prefer: respond-async`,
//! idempotent `PUT`), cancel, and `/health-check`. Predictions run on the
//! production environment through the same pipeline as every route.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::StreamExt;
use serde_json::{Value, json};
use strut_model::RequestContext;
use strut_queue::{
    Enqueued, ErrorEntry, NewRequest, Protocol, Record, RetryConfig, Status, now_ms,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::async_api::{queue_of, webhook_url};
use super::predict::{Admit, Reply, infer};
use super::truss::authorize_inference;
use crate::codec::{StreamMode, read_body};
use crate::deployment::LoadState;
use crate::queue::logs::CaptureSink;
use crate::queue::{Running, cog_event, cog_snapshot, output_of};
use crate::state::PRODUCTION;
use crate::{ApiError, AppState};

/// Cog keeps async predictions without a queue limit; ours is Baseten's longest.
const COG_MAX_QUEUE_MS: i64 = 259_200 * 1000;
const MAX_ID_LEN: usize = 128;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health-check", get(health_check))
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
    let bad = ApiError::InvalidAsyncRequest;
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?
    };
    let id = match body.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if valid_id(id) => Some(id.clone()),
        Some(other) => {
            return Err(bad(format!(
                "`id` must be 1-{MAX_ID_LEN} printable ASCII characters, got {other}"
            )));
        }
    };
    let input = match body.get("input") {
        None | Some(Value::Null) => json!({}),
        Some(input @ Value::Object(_)) => input.clone(),
        Some(_) => return Err(bad("`input` must be an object".into())),
    };
    let webhook = match body.get("webhook") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => Some(webhook_url(url).map_err(bad)?),
        Some(_) => return Err(bad("`webhook` must be a URL string".into())),
    };
    let events = match body.get("webhook_events_filter") {
        None | Some(Value::Null) => 0b1111,
        Some(Value::Array(names)) => names.iter().try_fold(0u8, |bits, name| {
            name.as_str()
                .and_then(cog_event)
                .map(|bit| bits | bit)
                .ok_or_else(|| {
                    bad(format!(
                        "`webhook_events_filter` takes start, output, logs, completed; got {name}"
                    ))
                })
        })?,
        Some(_) => return Err(bad("`webhook_events_filter` must be a list".into())),
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

async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let request = match read(&state, &headers, body).await {
        Ok(request) => request,
        Err(err) => return err.into_response(),
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
        Err(err) => return err.into_response(),
    };
    if let Some(body_id) = &request.id
        && body_id != &id
    {
        let err = ApiError::PredictionIdMismatch {
            path: id.clone(),
            body: body_id.clone(),
        };
        // Cog answers in pydantic's shape; `code` is ours.
        let detail = json!({"detail": [{"loc": ["body", "id"], "msg": err.to_string(),
                                        "type": "value_error"}], "code": err.code()});
        return (err.status(), axum::Json(detail)).into_response();
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

/// A sync prediction: registered for cancel while it runs, logs captured.
async fn predict_now(state: AppState, id: String, input: Value, sse: bool) -> Response {
    let routed = match state.route(PRODUCTION) {
        Ok(routed) => routed,
        Err(err) => return failed(err),
    };
    let deployment = routed.deployment().clone();
    let model = match deployment.model() {
        Ok(model) => model,
        Err(err) => return failed(err),
    };
    let running = match state.async_queue() {
        Some(queue) => queue.running(&id, &state),
        None => Running::detached(&state),
    };
    let sink = CaptureSink {
        server: state.log_sink().clone(),
        capture: running.capture.clone(),
    };
    let timeout = state.limits().request_timeout;
    let deadline = Instant::now() + timeout;
    let ctx = RequestContext::new(
        id.as_str(),
        running.token.clone(),
        Some(Arc::new(sink)),
        Some(deadline),
    );
    let mut record = sync_record(&id, input.clone());
    if sse {
        return sse_prediction(state, deployment, model, ctx, running, record, routed).await;
    }
    // The client leaving cancels the work.
    let _on_drop = running.token.clone().drop_guard();
    record.started_ms = Some(now_ms());
    let reply = infer(
        &state,
        &deployment,
        &model,
        &ctx,
        input,
        StreamMode::Raw,
        Instant::now(),
        Admit::Bounded,
    );
    let result = match tokio::time::timeout_at(deadline.into(), reply).await {
        Ok(Ok(reply)) => output_of(reply).await,
        Ok(Err(err)) => Err(err),
        Err(_) => Err(ApiError::Timeout(timeout.as_secs())),
    };
    if let Some(queue) = state.async_queue() {
        queue.done(&id);
    }
    record.finished_ms = Some(now_ms());
    record.logs = running.capture.lines();
    let status = match result {
        Ok(output) => {
            record.status = Status::Succeeded;
            record.output = Some(output);
            StatusCode::OK
        }
        Err(_) if running.was_canceled() => {
            record.status = Status::Canceled;
            StatusCode::OK
        }
        Err(err @ (ApiError::Overloaded | ApiError::NotReady(_))) => return failed(err),
        Err(err) => {
            err.log();
            record.status = Status::Failed;
            record.errors = vec![ErrorEntry::new(err.code(), err.public_message())];
            // Bad input is the client's (422, as Cog); a model failure is a
            // failed prediction, answered 200 as Cog does.
            if err.status() == StatusCode::BAD_REQUEST {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            }
        }
    };
    (status, axum::Json(cog_snapshot(&record, None))).into_response()
}

/// Cog's errors before a prediction runs: `{"error", "status": "failed"}`.
fn failed(err: ApiError) -> Response {
    err.log();
    let (status, message) = match &err {
        ApiError::Overloaded => (
            StatusCode::CONFLICT,
            "At capacity - all prediction slots busy".to_owned(),
        ),
        other => (other.status(), other.public_message()),
    };
    let body = json!({"error": message, "status": "failed", "code": err.code()});
    (status, axum::Json(body)).into_response()
}

fn sync_record(id: &str, input: Value) -> Record {
    let now = now_ms();
    Record {
        id: id.to_owned(),
        protocol: Protocol::Cog,
        target: format!("env:{PRODUCTION}"),
        deployment_id: None,
        input,
        webhook: None,
        events: 0,
        priority: 0,
        created_ms: now,
        expires_ms: now,
        retry: RetryConfig::default(),
        attempts: 1,
        status: Status::InProgress,
        started_ms: None,
        finished_ms: None,
        output: None,
        errors: Vec::new(),
        logs: Vec::new(),
        webhook_status: strut_queue::WebhookStatus::NoWebhookProvided,
        webhook_attempts: 0,
    }
}

/// Cog's SSE: `start`, then `output` (`{chunk, index}`) and `log` events as
/// they happen, then `completed` with the final state.
async fn sse_prediction(
    state: AppState,
    deployment: Arc<crate::deployment::Deployment>,
    model: Arc<crate::runner::LoadedModel>,
    ctx: RequestContext,
    running: Arc<Running>,
    mut record: Record,
    routed: crate::deployment::InFlight,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(64);
    let (log_tx, mut log_rx) = mpsc::channel(256);
    running.capture.follow(log_tx);
    tokio::spawn(async move {
        let _routed = routed;
        // A client that leaves (a failed send) cancels the work.
        let _on_drop = running.token.clone().drop_guard();
        let event = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
        record.started_ms = Some(now_ms());
        if tx
            .send(event(
                "start",
                json!({"id": record.id, "status": "processing"}),
            ))
            .await
            .is_err()
        {
            return;
        }
        let log_event = |line: strut_queue::LogLine| {
            event(
                "log",
                json!({"source": "stdout", "data": format!("{}\n", line.message)}),
            )
        };
        let input = record.input.clone();
        let reply = infer(
            &state,
            &deployment,
            &model,
            &ctx,
            input,
            StreamMode::Raw,
            Instant::now(),
            Admit::Bounded,
        )
        .await;
        let mut chunks = Vec::new();
        let mut error = None;
        let mut single = None;
        match reply {
            Ok(Reply::Stream(mut stream)) => loop {
                tokio::select! {
                    chunk = stream.next() => match chunk {
                        Some(Ok(bytes)) => {
                            let chunk = Value::String(String::from_utf8_lossy(&bytes).into_owned());
                            let index = chunks.len();
                            chunks.push(chunk.clone());
                            if tx.send(event("output", json!({"chunk": chunk, "index": index}))).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(err)) => { error = Some(err); break; }
                        None => break,
                    },
                    Some(line) = log_rx.recv() => {
                        if tx.send(log_event(line)).await.is_err() { return; }
                    }
                }
            },
            Ok(Reply::Json(value)) => {
                let _ = tx
                    .send(event("output", json!({"chunk": value, "index": 0})))
                    .await;
                single = Some(value);
            }
            Ok(Reply::Collected(text)) => single = Some(Value::String(text)),
            Err(err) => error = Some(err),
        }
        while let Ok(line) = log_rx.try_recv() {
            let _ = tx.send(log_event(line)).await;
        }
        record.finished_ms = Some(now_ms());
        record.logs = running.capture.lines();
        match error {
            None => {
                record.status = Status::Succeeded;
                record.output = Some(single.unwrap_or(Value::Array(chunks)));
            }
            Some(_) if running.was_canceled() => record.status = Status::Canceled,
            Some(err) => {
                err.log();
                record.status = Status::Failed;
                record.errors = vec![ErrorEntry::new(err.code(), err.public_message())];
            }
        }
        if let Some(queue) = state.async_queue() {
            queue.done(&record.id);
        }
        let _ = tx
            .send(event("completed", cog_snapshot(&record, None)))
            .await;
    });
    let events = ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-cache".parse().expect("static header"),
    );
    response
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
            queue.signal_cancel(&id, &state);
            true
        }
        Ok(strut_queue::Cancel::Finished(_)) => true,
        // A sync prediction is only in memory.
        Ok(strut_queue::Cancel::NotFound) => match queue.find_running(&id) {
            Some(_) => {
                queue.signal_cancel(&id, &state);
                true
            }
            None => false,
        },
        Err(err) => return ApiError::from(err).into_response(),
    };
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    (status, axum::Json(json!({}))).into_response()
}
