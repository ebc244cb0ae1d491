//! The predict pipeline shared by every Truss-style route: decode, admit,
//! preprocess, predict, postprocess, encode, with the request's deadline and
//! cancellation around all of it.

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use strut_model::{Output, RequestContext};

use crate::codec::{BodyFormat, StreamMode, read_body};
use crate::deployment::{Deployment, InFlight};
use crate::metrics::Metrics;
use crate::request::RequestId;
use crate::runner::LoadedModel;
use crate::streaming::{self, ByteStream};
use crate::{ApiError, AppState};

pub(crate) enum Reply {
    Json(Value),
    Stream(ByteStream),
    Collected(String),
}

/// Names the deployment that served a request, so clients (and tests) can
/// see where a promotion switched them over.
pub const DEPLOYMENT_HEADER: &str = "x-strut-deployment";

/// Runs a routed request. `routed` counts it in its deployment's in-flight
/// requests until the response, its stream included, is done.
pub async fn predict(
    state: AppState,
    routed: InFlight,
    id: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    let deployment = routed.deployment().clone();
    let format = BodyFormat::of_request(&headers);
    let mode = StreamMode::of_request(&headers);
    let limits = state.limits();
    let cancel = state.request_token();
    // Dropping the handler (the client went away) or the response stream
    // cancels the model's work.
    let on_drop = cancel.clone().drop_guard();
    let deadline = Instant::now() + limits.request_timeout;
    let ctx = RequestContext::new(id.0, cancel, Some(state.log_sink().clone()), Some(deadline));

    let work = run(&state, &deployment, &ctx, format, mode, body, arrived);
    let outcome = match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ApiError::Timeout(limits.request_timeout.as_secs())),
    };
    let mut response = match outcome {
        Ok(Reply::Json(value)) => format.respond(&value),
        Ok(Reply::Collected(text)) => axum::Json(text).into_response(),
        Ok(Reply::Stream(stream)) => {
            let stream = streaming::hold_while_streaming(stream, (on_drop, routed));
            match mode {
                StreamMode::Sse => streaming::sse_response(stream),
                _ => streaming::octet_response(stream),
            }
        }
        Err(err) => {
            // Stop whatever the model still does for this request.
            drop(on_drop);
            err.into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(deployment.id()) {
        response.headers_mut().insert(DEPLOYMENT_HEADER, value);
    }
    response
}

async fn run(
    state: &AppState,
    deployment: &Deployment,
    ctx: &RequestContext,
    format: BodyFormat,
    mode: StreamMode,
    body: Body,
    arrived: Instant,
) -> Result<Reply, ApiError> {
    let model = deployment.model()?;
    let bytes = read_body(body, state.limits().max_body_bytes).await?;
    let input = format.decode(&bytes)?;
    infer(
        state,
        deployment,
        &model,
        ctx,
        input,
        mode,
        arrived,
        Admit::Bounded,
    )
    .await
}

/// How a request waits for a model slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// A client is waiting: 429 at once when the slots and the queue are full.
    Bounded,
    /// Queued async work: it waits as long as it takes (its number is
    /// bounded by the async share instead), never 429.
    Wait,
}

/// The pipeline after decoding, shared by sync routes, the async worker and
/// Cog's predictions: preprocess, admission, predict, postprocess.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn infer(
    state: &AppState,
    deployment: &Deployment,
    model: &LoadedModel,
    ctx: &RequestContext,
    input: Value,
    mode: StreamMode,
    arrived: Instant,
    admit: Admit,
) -> Result<Reply, ApiError> {
    let input = model.preprocess(input, ctx).await?;
    let metrics = state.metrics();
    let labels = Metrics::deployment(deployment.id());
    let waited = Instant::now();
    let permit = match admit {
        Admit::Bounded => deployment.admission().acquire().await?,
        Admit::Wait => deployment.admission().acquire_waiting().await?,
    };
    metrics
        .queue_seconds
        .get_or_create(&labels)
        .observe(waited.elapsed().as_secs_f64());
    let predicted = Instant::now();
    let output = model.predict(input, ctx).await;
    metrics
        .inference_seconds
        .get_or_create(&labels)
        .observe(predicted.elapsed().as_secs_f64());
    match output? {
        Output::Json(value) => {
            drop(permit);
            Ok(Reply::Json(model.postprocess(value, ctx).await?))
        }
        Output::Stream(chunks) => {
            let gap = deployment.spec().stream_read_timeout;
            let stream =
                streaming::hold_while_streaming(streaming::byte_stream(chunks, gap), permit);
            let first_byte = metrics.first_byte_seconds.get_or_create(&labels).clone();
            let stream = crate::metrics::time_first_chunk(stream, first_byte, arrived);
            if mode == StreamMode::Collect {
                Ok(Reply::Collected(streaming::collect(stream).await?))
            } else {
                Ok(Reply::Stream(stream))
            }
        }
    }
}
