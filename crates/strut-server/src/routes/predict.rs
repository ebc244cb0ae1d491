//! The predict pipeline shared by every Truss-style route: decode, admit,
//! preprocess, predict, postprocess, encode, with the request's deadline and
//! cancellation around all of it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use strut_model::{Output, RequestContext};
use tokio_util::sync::DropGuard;

use crate::codec::{BodyFormat, StreamMode, read_body};
use crate::deployment::{Deployment, InFlight};
use crate::request::RequestId;
use crate::runner::LoadedModel;
use crate::streaming::{self, ByteStream};
use crate::{ApiError, AppState, Permit};

pub(crate) enum Reply {
    Json(Value),
    Stream(ByteStream),
    Collected(String),
}

/// Names the deployment that served a request, so clients (and tests) can
/// see where a promotion switched them over.
pub const DEPLOYMENT_HEADER: &str = "x-strut-deployment";
pub(crate) const DEPLOYMENT_HEADER_NAME: HeaderName = HeaderName::from_static(DEPLOYMENT_HEADER);

/// Runs a routed request. `routed` counts it in its deployment's in-flight
/// requests until the response, its stream included, is done.
pub async fn predict(
    state: AppState,
    routed: InFlight,
    id: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = BodyFormat::of_request(&headers);
    let mode = StreamMode::of_request(&headers);
    // Not held through the request: the headers share hyper's read buffer.
    drop(headers);
    respond(state, routed, id, format, mode, move |call| {
        run(call, format, body)
    })
    .await
}

/// What the work of an inference route runs with: one request's context on
/// the deployment it was routed to.
pub(crate) struct Call {
    pub state: AppState,
    pub deployment: Arc<Deployment>,
    pub ctx: RequestContext,
    /// How the client wants a streamed output.
    pub mode: StreamMode,
    pub arrived: Instant,
}

impl Call {
    /// Starts a request routed to `deployment`. Dropping the returned guard
    /// (the handler, because the client went away, or the response stream
    /// that holds it) cancels the model's work; the request must answer by
    /// the returned deadline.
    pub fn start(
        state: AppState,
        deployment: &Arc<Deployment>,
        id: RequestId,
        mode: StreamMode,
    ) -> (Call, DropGuard, Instant) {
        let arrived = crate::request::arrived();
        let cancel = state.request_token();
        let on_drop = cancel.clone().drop_guard();
        let deadline = arrived + state.limits().request_timeout;
        let ctx = RequestContext::new(id.0, cancel, Some(state.log_sink().clone()), Some(deadline));
        let call = Call {
            state,
            deployment: deployment.clone(),
            ctx,
            mode,
            arrived,
        };
        (call, on_drop, deadline)
    }

    /// The pipeline after decoding, as a client waiting for it gets it.
    pub async fn infer(
        &self,
        model: &LoadedModel,
        input: Value,
        mode: StreamMode,
    ) -> Result<Reply, ApiError> {
        infer(
            &self.state,
            &self.deployment,
            model,
            &self.ctx,
            input,
            mode,
            self.arrived,
            Admit::Bounded,
        )
        .await
    }
}

/// The envelope every inference route shares: the request's context, its
/// deadline, cancellation when the client goes away, the reply encoded in
/// `format`, and the header naming the deployment.
pub(crate) async fn respond<F, Fut>(
    state: AppState,
    routed: InFlight,
    id: RequestId,
    format: BodyFormat,
    mode: StreamMode,
    work: F,
) -> Response
where
    F: FnOnce(Call) -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let deployment = routed.deployment().clone();
    let timeout = state.limits().request_timeout;
    let (call, on_drop, deadline) = Call::start(state, &deployment, id, mode);
    let outcome = match tokio::time::timeout_at(deadline.into(), work(call)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ApiError::Timeout(timeout.as_secs())),
    };
    let mut response = match outcome {
        // The model's work is done: nothing is left to cancel.
        Ok(Reply::Json(value)) => {
            on_drop.disarm();
            format.respond(&value)
        }
        Ok(Reply::Collected(text)) => {
            on_drop.disarm();
            axum::Json(text).into_response()
        }
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
    name_deployment(&mut response, &deployment);
    response
}

/// Sets [`DEPLOYMENT_HEADER`] on a response.
pub(crate) fn name_deployment(response: &mut Response, deployment: &Deployment) {
    if let Some(value) = deployment.header_value() {
        response
            .headers_mut()
            .insert(DEPLOYMENT_HEADER_NAME, value.clone());
    }
}

async fn run(call: Call, format: BodyFormat, body: Body) -> Result<Reply, ApiError> {
    let model = call.deployment.model()?;
    let input = read_input(&call.state, format, body).await?;
    call.infer(&model, input, call.mode).await
}

/// The request body, size-limited and decoded.
pub(crate) async fn read_input(
    state: &AppState,
    format: BodyFormat,
    body: Body,
) -> Result<Value, ApiError> {
    let bytes = read_body(body, state.limits().max_body_bytes).await?;
    format.decode(&bytes)
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
    let (permit, predicted) = take_slot(state, deployment, admit).await?;
    let output = model.predict(input, ctx).await;
    observe_inference(state, deployment, predicted);
    match output? {
        Output::Json(value) => {
            drop(permit);
            Ok(Reply::Json(model.postprocess(value, ctx).await?))
        }
        Output::Stream(chunks) => {
            let gap = deployment.spec().stream_read_timeout;
            let stream =
                streaming::hold_while_streaming(streaming::byte_stream(chunks, gap), permit);
            let first_byte = deployment
                .series(state.metrics())
                .first_byte_seconds
                .clone();
            let stream = crate::metrics::time_first_chunk(stream, first_byte, arrived);
            if mode == StreamMode::Collect {
                Ok(Reply::Collected(streaming::collect(stream).await?))
            } else {
                Ok(Reply::Stream(stream))
            }
        }
    }
}

/// Takes one of the deployment's model slots, recording how long it took.
/// Returns the slot and when it was taken.
pub(crate) async fn take_slot(
    state: &AppState,
    deployment: &Deployment,
    admit: Admit,
) -> Result<(Permit, Instant), ApiError> {
    let waited = Instant::now();
    let permit = match admit {
        Admit::Bounded => deployment.admission().acquire().await?,
        Admit::Wait => deployment.admission().acquire_waiting().await?,
    };
    let taken = Instant::now();
    deployment
        .series(state.metrics())
        .queue_seconds
        .observe((taken - waited).as_secs_f64());
    Ok((permit, taken))
}

/// Records the time a model spent on one request, from `started`.
pub(crate) fn observe_inference(state: &AppState, deployment: &Deployment, started: Instant) {
    deployment
        .series(state.metrics())
        .inference_seconds
        .observe(started.elapsed().as_secs_f64());
}
