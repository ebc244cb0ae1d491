//! Cog's sync predictions, run in the request: JSON, or SSE with `start`,
//! `output`, `log` and `completed` events.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use strut_queue::{ErrorEntry, Protocol, Record, RetryConfig, Status, now_ms};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::codec::StreamMode;
use crate::deployment::InFlight;
use crate::pipeline::{Admit, Call, Reply};
use crate::queue::logs::CaptureSink;
use crate::queue::{Running, cog_snapshot};
use crate::runner::LoadedModel;
use crate::state::PRODUCTION;
use crate::{ApiError, AppState, sse};

/// A sync prediction: registered for cancel while it runs, logs captured.
pub(super) async fn predict_now(state: AppState, id: String, input: Value, sse: bool) -> Response {
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
    let call = Call::owned(
        state.clone(),
        deployment,
        &id,
        running.token.clone(),
        Arc::new(sink),
        Admit::Bounded,
    );
    let mut record = sync_record(&id, input.clone());
    if sse {
        return sse_prediction(call, model, running, record, routed).await;
    }
    // The client leaving cancels the work.
    let _on_drop = running.token.clone().drop_guard();
    record.started_ms = Some(now_ms());
    let result = call
        .within_deadline(async {
            let reply = call.predict(&model, input, StreamMode::Raw).await?;
            // Cog lists a stream's chunks, as `Iterator` outputs are.
            reply.into_value(true).await
        })
        .await;
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
        webhook_error: None,
    }
}

/// Cog's SSE: `start`, then `output` (`{chunk, index}`) and `log` events as
/// they happen, then `completed` with the final state.
async fn sse_prediction(
    call: Call,
    model: Arc<LoadedModel>,
    running: Arc<Running>,
    mut record: Record,
    routed: InFlight,
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
        let reply = call.predict(&model, input, StreamMode::Raw).await;
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
            Ok(other) => match other.into_value(true).await {
                Ok(value) => single = Some(value),
                Err(err) => error = Some(err),
            },
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
        if let Some(queue) = call.state.async_queue() {
            queue.done(&record.id);
        }
        let _ = tx
            .send(event("completed", cog_snapshot(&record, None)))
            .await;
    });
    sse::response(ReceiverStream::new(rx).boxed())
}
