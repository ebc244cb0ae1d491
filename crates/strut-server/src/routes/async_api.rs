//! Baseten's async API: submit (201 with a request id once the request is
//! durably queued), read its status, cancel it, and count a deployment's
//! queue.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use strut_queue::{Cancel, NewRequest, Protocol, Record, RetryConfig, now_ms};

use super::mount::{Form, Target, authorize_inference, every_target};
use crate::codec::read_body;
use crate::queue::AsyncQueue;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/async_request/{id}", get(status).delete(cancel))
        .merge(every_target(per_target, Form::Direct))
}

fn per_target() -> Router<AppState> {
    Router::new()
        .route("/async_predict", post(submit))
        .route("/async_queue_status", get(queue_status))
}

pub(super) fn queue_of(state: &AppState) -> Result<&std::sync::Arc<AsyncQueue>, ApiError> {
    state.async_queue().ok_or(ApiError::AsyncDisabled)
}

async fn submit(
    State(state): State<AppState>,
    target: Result<Target, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let submitted = async {
        authorize_inference(&state, &headers)?;
        let target = target?;
        // Unknown targets are refused at submission (404), not after queueing.
        target.resolve(&state)?;
        let target = target.queue_key();
        let queue = queue_of(&state)?;
        let bytes = read_body(body, queue.settings.max_body_bytes).await?;
        let body: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        let request = parse(&body, target)?;
        if queue.store.unfinished() >= queue.settings.max_unfinished {
            return Err(ApiError::AsyncQueueFull(queue.settings.max_unfinished));
        }
        let id = request.id.clone();
        queue.store.enqueue(request).await?;
        queue.wake_dispatch.notify_one();
        Ok(id)
    };
    match submitted.await {
        Ok(id) => (StatusCode::CREATED, axum::Json(json!({"request_id": id}))).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Validates Baseten's request body; every refusal names the field.
fn parse(body: &Value, target: String) -> Result<NewRequest, ApiError> {
    let bad = |msg: String| ApiError::InvalidAsyncRequest(msg);
    let object = body
        .as_object()
        .ok_or_else(|| bad("the body must be a JSON object with `model_input`".into()))?;
    const KNOWN: [&str; 5] = [
        "model_input",
        "webhook_endpoint",
        "priority",
        "max_time_in_queue_seconds",
        "inference_retry_config",
    ];
    if let Some(unknown) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown field `{unknown}`; expected one of {}",
            KNOWN.join(", ")
        )));
    }
    let input = object
        .get("model_input")
        .cloned()
        .ok_or_else(|| bad("`model_input` is required".into()))?;
    let webhook = match object.get("webhook_endpoint") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => Some(webhook_url(url).map_err(bad)?),
        Some(_) => return Err(bad("`webhook_endpoint` must be a URL string".into())),
    };
    let priority = int_in(object.get("priority"), "priority", 0, 2, 0).map_err(bad)? as u8;
    let max_queue = int_in(
        object.get("max_time_in_queue_seconds"),
        "max_time_in_queue_seconds",
        10,
        259_200,
        600,
    )
    .map_err(bad)?;
    let retry = match object.get("inference_retry_config") {
        None | Some(Value::Null) => RetryConfig::default(),
        Some(Value::Object(c)) => {
            let d = RetryConfig::default();
            let field = |name: &str, lo, hi, default| {
                int_in(
                    c.get(name),
                    &format!("inference_retry_config.{name}"),
                    lo,
                    hi,
                    default,
                )
            };
            RetryConfig {
                max_attempts: field("max_attempts", 1, 10, d.max_attempts.into()).map_err(bad)?
                    as u32,
                initial_delay_ms: field("initial_delay_ms", 0, 10_000, d.initial_delay_ms)
                    .map_err(bad)?,
                max_delay_ms: field("max_delay_ms", 0, 60_000, d.max_delay_ms).map_err(bad)?,
            }
        }
        Some(_) => return Err(bad("`inference_retry_config` must be an object".into())),
    };
    let created_ms = now_ms();
    Ok(NewRequest {
        id: uuid::Uuid::new_v4().simple().to_string(),
        protocol: Protocol::Baseten,
        target,
        input,
        webhook,
        events: 0,
        priority,
        created_ms,
        expires_ms: created_ms + max_queue as i64 * 1000,
        retry,
    })
}

fn int_in(
    value: Option<&Value>,
    name: &str,
    lo: u64,
    hi: u64,
    default: u64,
) -> Result<u64, String> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(format!(
                "`{name}` must be an integer from {lo} to {hi}, got {v}"
            )),
        },
    }
}

/// http(s) only: a webhook is a POST to a server the operator can reach.
pub(super) fn webhook_url(url: &str) -> Result<String, String> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && url
            .parse::<axum::http::Uri>()
            .is_ok_and(|u| u.host().is_some());
    if ok {
        Ok(url.to_owned())
    } else {
        Err(format!(
            "`webhook_endpoint` must be an http(s) URL, got `{url}`"
        ))
    }
}

async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = async {
        authorize_inference(&state, &headers)?;
        let queue = queue_of(&state)?;
        let record = queue
            .store
            .get(&id)
            .await?
            .ok_or_else(|| ApiError::AsyncRequestNotFound(id.clone()))?;
        Ok::<_, ApiError>(status_json(&state, queue, &record))
    };
    match found.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(err) => err.into_response(),
    }
}

fn status_json(state: &AppState, queue: &AsyncQueue, r: &Record) -> Value {
    use crate::queue::rfc3339;
    // A running request's lines so far; a finished one's are stored.
    let logs = match queue.find_running(&r.id) {
        Some(running) if !r.status.is_terminal() => running.capture.lines(),
        _ => r.logs.clone(),
    };
    let model_id = r
        .deployment_id
        .as_deref()
        .and_then(|d| state.deployment(d).ok())
        .map(|d| d.model_name().to_owned());
    let status_at = r.finished_ms.or(r.started_ms).unwrap_or(r.created_ms);
    let seconds = |from: Option<i64>, to: Option<i64>| Some((to? - from?) as f64 / 1000.0);
    json!({
        "request_id": r.id,
        "model_id": model_id,
        "deployment_id": r.deployment_id,
        "status": r.status.as_str(),
        "webhook_status": r.webhook_status.as_str(),
        // Why the latest delivery attempt failed (strut's addition).
        "webhook_error": r.webhook_error,
        "created_at": rfc3339(Some(r.created_ms)),
        "status_at": rfc3339(Some(status_at)),
        "errors": r.errors,
        "output": r.output,
        "logs": logs.iter().map(|l| json!({
            "time": rfc3339(Some(l.time_ms)), "level": l.level, "message": l.message,
        })).collect::<Vec<_>>(),
        "priority": r.priority,
        "attempts": r.attempts,
        "timings": {
            "started_at": rfc3339(r.started_ms),
            "finished_at": rfc3339(r.finished_ms),
            "queue_seconds": seconds(Some(r.created_ms), r.started_ms),
            "run_seconds": seconds(r.started_ms, r.finished_ms),
        },
    })
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let canceled = async {
        authorize_inference(&state, &headers)?;
        let queue = queue_of(&state)?;
        match queue.store.cancel(&id, now_ms()).await? {
            Cancel::Canceled => {
                queue.wake_webhooks.notify_one();
                Ok((
                    StatusCode::OK,
                    json!({"request_id": id, "status": "CANCELED"}),
                ))
            }
            Cancel::Running => {
                // Elsewhere, the replica running it hears of the cancel.
                queue.signal_cancel(&id);
                Ok((
                    StatusCode::ACCEPTED,
                    json!({"request_id": id, "status": "IN_PROGRESS",
                           "message": "the running request was signalled to stop"}),
                ))
            }
            Cancel::Finished(status) => Err(ApiError::AsyncRequestFinished {
                id: id.clone(),
                status: status.as_str(),
            }),
            Cancel::NotFound => Err(ApiError::AsyncRequestNotFound(id.clone())),
        }
    };
    match canceled.await {
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Baseten's queue status of the deployment a target resolves to now: what
/// is queued for it (by its id, or through an environment that points at
/// it, since queued requests resolve their environment when they start) and
/// what runs on it.
async fn queue_status(
    State(state): State<AppState>,
    target: Result<Target, ApiError>,
    headers: HeaderMap,
) -> Response {
    let counted = async {
        authorize_inference(&state, &headers)?;
        let deployment = target?.resolve(&state)?;
        let queue = queue_of(&state)?;
        let id = deployment.id();
        let mut targets = vec![format!("deployment:{id}")];
        targets.extend(
            state
                .environments_of(id)
                .into_iter()
                .map(|env| format!("env:{env}")),
        );
        let counts = queue.store.counts(&targets, id).await?;
        Ok::<_, ApiError>(json!({
            "model_id": deployment.model_name(),
            "deployment_id": id,
            "num_queued_requests": counts.queued,
            "num_in_progress_requests": counts.in_progress,
        }))
    };
    match counted.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(err) => err.into_response(),
    }
}
