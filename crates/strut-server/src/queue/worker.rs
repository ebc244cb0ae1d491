//! The dispatcher: takes queued requests in priority-then-age order and runs
//! each through the predict pipeline, holding one of its deployment's async
//! slots; then records how it ended, exactly once, and wakes the webhooks.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use strut_queue::{ErrorEntry, Next, Outcome, Protocol, Record, Status, now_ms};
use tracing::Instrument;

use super::logs::CaptureSink;
use super::{AsyncQueue, Running};
use crate::codec::StreamMode;
use crate::deployment::{Deployment, LoadState};
use crate::pipeline::{Admit, Call};
use crate::target::Target;
use crate::{ApiError, AppState};

/// The longest the dispatcher sleeps without a wake-up: enqueues wake it
/// (this replica's directly, other replicas' by the store's notices) and a
/// retry's due time sets its alarm, so this only bounds what a lost
/// notice can delay.
const IDLE_MAX: Duration = Duration::from_secs(2);
/// After a claim that found nothing (another replica took the head first).
const CONTENDED: Duration = Duration::from_millis(20);
/// After a store error.
const ERROR_WAIT: Duration = Duration::from_millis(500);

pub(crate) async fn dispatch(state: AppState, queue: Arc<AsyncQueue>) {
    while !queue.stop.is_cancelled() {
        let target = match queue.store.next_target(now_ms()).await {
            Ok(Next::Ready(target)) => target,
            Ok(Next::At(at)) => {
                let wait = u64::try_from(at - now_ms()).unwrap_or(0);
                idle(&queue, Duration::from_millis(wait).min(IDLE_MAX)).await;
                continue;
            }
            Ok(Next::Empty) => {
                idle(&queue, IDLE_MAX).await;
                continue;
            }
            Err(err) => {
                tracing::error!("reading the async queue: {err}");
                idle(&queue, ERROR_WAIT).await;
                continue;
            }
        };
        let deployment = match resolve(&state, &target) {
            Ok(d) => d,
            Err(err) => {
                fail_next(&queue, &target, &err).await;
                continue;
            }
        };
        if deployment.state() == LoadState::Loading {
            tokio::select! {
                _ = deployment.loaded() => {}
                () = queue.stop.cancelled() => return,
            }
            continue;
        }
        if let Err(err) = deployment.model() {
            fail_next(&queue, &target, &err).await;
            continue;
        }
        // Wait for one of this deployment's async slots before claiming, so
        // the claim picks the best requests at the moment they can run; then
        // take every other free slot too, so one store write claims as many
        // requests as can start now.
        let share = queue.share_of(&deployment);
        let mut slots = tokio::select! {
            slot = share.clone().acquire_owned() => slot.expect("share semaphore is never closed"),
            () = queue.stop.cancelled() => return,
        };
        while slots.num_permits() < queue.settings.claim_batch {
            match share.clone().try_acquire_owned() {
                Ok(more) => slots.merge(more),
                Err(_) => break,
            }
        }
        let wanted = slots.num_permits();
        // Counted in flight before the claim, so a retirement of this
        // deployment waits for what is about to start on it.
        let mut routed: Vec<_> = (0..wanted).map(|_| deployment.enter()).collect();
        match queue
            .store
            .claim(
                &target,
                deployment.id(),
                now_ms(),
                wanted,
                queue.lease_until(),
            )
            .await
        {
            Ok(records) if records.is_empty() => idle(&queue, CONTENDED).await,
            Ok(records) => {
                for record in records {
                    let slot = slots.split(1).expect("one slot per claimed request");
                    let routed = routed.pop().expect("one guard per claimed request");
                    let running = queue.running(&record.id, &state);
                    let (state, queue, deployment) =
                        (state.clone(), queue.clone(), deployment.clone());
                    tokio::spawn(async move {
                        run(&state, &queue, &deployment, record, running).await;
                        drop((slot, routed));
                    });
                }
                // Slots and guards left over (a shorter batch) are released here.
            }
            Err(err) => {
                tracing::error!("claiming from the async queue: {err}");
                idle(&queue, ERROR_WAIT).await;
            }
        }
    }
}

async fn idle(queue: &AsyncQueue, at_most: Duration) {
    tokio::select! {
        () = queue.wake_dispatch.notified() => {}
        () = tokio::time::sleep(at_most) => {}
        () = queue.stop.cancelled() => {}
    }
}

/// `env:<name>` or `deployment:<id>`, as the routes wrote it.
fn resolve(state: &AppState, target: &str) -> Result<Arc<Deployment>, ApiError> {
    Target::from_queue_key(target)?.resolve(state)
}

/// A request whose target cannot serve fails rather than blocking the queue.
async fn fail_next(queue: &AsyncQueue, target: &str, err: &ApiError) {
    let claimed = queue
        .store
        .claim(target, "", now_ms(), 1, queue.lease_until())
        .await;
    let Ok(mut claimed) = claimed else {
        return;
    };
    let Some(record) = claimed.pop() else { return };
    let outcome = Outcome {
        status: Status::Failed,
        output: None,
        errors: vec![error_entry(err)],
        logs: Vec::new(),
    };
    finish(queue, &record, outcome).await;
}

async fn run(
    state: &AppState,
    queue: &AsyncQueue,
    deployment: &Arc<Deployment>,
    record: Record,
    running: Arc<Running>,
) {
    let span =
        tracing::info_span!("async_request", request_id = %record.id, attempt = record.attempts);
    let sink = CaptureSink {
        server: state.log_sink().clone(),
        capture: running.capture.clone(),
    };
    let call = Call::owned(
        state.clone(),
        deployment.clone(),
        &record.id,
        running.token.clone(),
        Arc::new(sink),
        Admit::Wait,
    );
    let cog = record.protocol == Protocol::Cog;
    let mut progress = cog.then(|| super::webhook::cog_progress(queue, &record, &running));
    if let Some(progress) = &mut progress {
        progress.started().await;
    }
    let work = call.within_deadline(async {
        let model = call.model()?;
        // Cog lists a stream's chunks; Baseten's async output is one value.
        let mode = if cog {
            StreamMode::Raw
        } else {
            StreamMode::Collect
        };
        let reply = call.predict(&model, record.input.clone(), mode).await?;
        reply.into_value(cog).await
    });
    let result = work.instrument(span.clone()).await;
    let logs = running.capture.lines();
    let outcome = match result {
        // A canceled request ends CANCELED even when the model took the
        // cancellation as the end of its stream and returned what it had:
        // the cancel was accepted, so that is what the caller was told.
        _ if running.was_canceled() => Outcome {
            status: Status::Canceled,
            output: None,
            errors: vec![ErrorEntry::new(
                "CANCELED",
                "the request was canceled while it ran",
            )],
            logs,
        },
        Ok(output) => Outcome {
            status: Status::Succeeded,
            output: Some(output),
            errors: Vec::new(),
            logs,
        },
        Err(ApiError::Cancelled) if queue.stop.is_cancelled() => {
            // Shutdown stopped it: left IN_PROGRESS, so the next start retries it.
            span.in_scope(|| tracing::warn!("async request interrupted by shutdown"));
            queue.done(&record.id);
            return;
        }
        Err(err) => {
            let entry = error_entry(&err);
            if retryable(&err) && record.attempts < record.retry.max_attempts {
                let wait = record.retry.delay_after(record.attempts) as i64;
                span.in_scope(|| tracing::warn!(code = %entry.code, wait_ms = wait, "async attempt failed; retrying"));
                let _ = queue
                    .store
                    .retry_later(&record.id, now_ms() + wait, entry)
                    .await;
                queue.done(&record.id);
                return;
            }
            Outcome {
                status: Status::Failed,
                output: None,
                errors: vec![entry],
                logs,
            }
        }
    };
    if let Some(progress) = progress {
        progress.finished(&outcome).await;
    }
    queue.done(&record.id);
    finish(queue, &record, outcome).await;
}

async fn finish(queue: &AsyncQueue, record: &Record, outcome: Outcome) {
    let status = outcome.status;
    match queue.store.finish(&record.id, outcome, now_ms()).await {
        Ok(true) => {
            tracing::info!(request_id = %record.id, status = status.as_str(), "async request finished");
        }
        Ok(false) => tracing::warn!(request_id = %record.id, "async request had finished already"),
        Err(err) => tracing::error!(request_id = %record.id, "recording an async result: {err}"),
    }
    queue.wake_webhooks.notify_one();
}

/// Baseten's async error codes.
pub(crate) fn error_entry(err: &ApiError) -> ErrorEntry {
    use ApiError::*;
    let code = match err {
        InvalidInput(_) | InvalidJson(_) | InvalidMsgpack(_) | EmptyBody => "MODEL_INVALID_INPUT",
        NotReady(_) | Unhealthy(_) => "MODEL_NOT_READY",
        UnknownEnvironment(_) | UnknownDeployment(_) | EmptyEnvironment(_) => {
            "MODEL_DOES_NOT_EXIST"
        }
        Timeout(_) | StreamStalled(_) => "MODEL_PREDICT_TIMEOUT",
        ModelStatus {
            status: 502..=503, ..
        } => "MODEL_UNAVAILABLE",
        ModelStatus { status: 504, .. } => "MODEL_PREDICT_TIMEOUT",
        ModelStatus {
            status: 400..=499, ..
        } => "MODEL_INVALID_INPUT",
        ModelFailed(_) | ModelPanicked(_) | ModelStatus { .. } | BinaryStream => {
            "MODEL_PREDICT_ERROR"
        }
        _ => "INTERNAL_SERVER_ERROR",
    };
    ErrorEntry::new(code, err.public_message())
}

/// Baseten retries what a retry may cure: 500, 502, 503, 504, not bad input.
fn retryable(err: &ApiError) -> bool {
    matches!(
        error_entry(err).code.as_str(),
        "MODEL_NOT_READY"
            | "MODEL_PREDICT_ERROR"
            | "MODEL_UNAVAILABLE"
            | "MODEL_PREDICT_TIMEOUT"
            | "INTERNAL_SERVER_ERROR"
    )
}

/// Expires requests past their queue limit and purges old results.
pub(crate) async fn housekeeping(queue: Arc<AsyncQueue>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = queue.stop.cancelled() => return,
        }
        ticks += 1;
        // Every other tick: what a dead replica was running runs again.
        if ticks.is_multiple_of(2) {
            match queue.store.reclaim(now_ms()).await {
                Ok(r) if r == strut_queue::Recovered::default() => {}
                Ok(r) => {
                    tracing::warn!(
                        retried = r.retried,
                        failed = r.failed,
                        canceled = r.canceled,
                        "async requests whose replica stopped renewing their lease were taken back"
                    );
                    queue.wake_dispatch.notify_one();
                    queue.wake_webhooks.notify_one();
                }
                Err(err) => tracing::error!("reclaiming lapsed async leases: {err}"),
            }
        }
        match queue.store.expire(now_ms()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(expired = n, "async requests expired in the queue");
                queue.wake_webhooks.notify_one();
            }
            Err(err) => tracing::error!("expiring async requests: {err}"),
        }
        // About once a minute: results past their retention go.
        if ticks.is_multiple_of(120) {
            let before = now_ms() - queue.settings.retention.as_millis() as i64;
            if let Err(err) = queue.store.purge(before).await {
                tracing::error!("purging old async results: {err}");
            }
        }
    }
}

/// Cog's status names.
fn cog_status(status: Status) -> &'static str {
    match status {
        Status::Queued => "starting",
        Status::InProgress => "processing",
        Status::Succeeded | Status::WebhookFailed => "succeeded",
        Status::Failed | Status::Expired => "failed",
        Status::Canceled => "canceled",
    }
}

/// Cog's state snapshot of a stored request (`logs` one string).
pub(crate) fn cog_snapshot(record: &Record, live_logs: Option<&[strut_queue::LogLine]>) -> Value {
    let logs = live_logs.unwrap_or(&record.logs);
    let error = record.errors.first().map(|e| e.message.clone());
    let mut snapshot = json!({
        "id": record.id,
        "status": cog_status(record.status),
        "input": record.input,
        "output": record.output,
        "logs": super::logs::joined(logs),
        "error": if record.status.is_terminal() && record.status != Status::Succeeded { error } else { None },
        "created_at": rfc3339(Some(record.created_ms)),
        "started_at": rfc3339(record.started_ms),
        "completed_at": rfc3339(record.finished_ms),
    });
    if let (Some(started), Some(finished)) = (record.started_ms, record.finished_ms) {
        snapshot["metrics"] = json!({"predict_time": (finished - started) as f64 / 1000.0});
    }
    snapshot
}

pub(crate) fn rfc3339(ms: Option<i64>) -> Option<String> {
    let ms = u64::try_from(ms?).ok()?;
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    Some(humantime::format_rfc3339_millis(time).to_string())
}
