//! One request's context on the deployment it was routed to.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use strut_model::capabilities::{Embeddings, RawRoutes, TextGeneration};
use strut_model::{LogSink, RequestContext, RequestMeta};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::admission::Permit;
use crate::deployment::{Deployment, InFlight};
use crate::request::RequestId;
use crate::runner::LoadedModel;
use crate::{ApiError, AppState};

/// How a request waits for a model slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// A client is waiting: 429 at once when the slots and the queue are full.
    Bounded,
    /// Queued async work: it waits as long as it takes (its number is
    /// bounded by the async share instead), never 429.
    Wait,
}

/// One request on one deployment: what every protocol's work and the async
/// worker run with. Cheap to clone, so work can fan out (KServe's instances).
#[derive(Clone)]
pub(crate) struct Call {
    pub state: AppState,
    pub deployment: Arc<Deployment>,
    pub ctx: RequestContext,
    pub arrived: Instant,
    /// The request must answer by then (504 after).
    pub deadline: Instant,
    admit: Admit,
}

/// What a client's request holds until its response is done: its count in
/// the deployment's in-flight requests, and the guard whose drop (the client
/// went away, the stream ended early) cancels the model's work.
pub(crate) struct Held {
    pub(super) on_drop: DropGuard,
    /// Counted until the response is done.
    pub(super) _routed: InFlight,
}

/// One of the deployment's model slots, and when it was taken.
pub(crate) struct Slot {
    pub permit: Permit,
    pub taken: Instant,
}

impl Call {
    /// A client's request routed to `routed`'s deployment, cancelled when
    /// the returned [`Held`] is dropped.
    pub(crate) fn client(state: AppState, routed: InFlight, id: RequestId) -> (Call, Held) {
        let arrived = crate::request::arrived();
        let cancel = state.request_token();
        let on_drop = cancel.clone().drop_guard();
        let deadline = arrived + state.limits().request_timeout;
        let ctx = RequestContext::new(id.0, cancel, Some(state.log_sink().clone()), Some(deadline));
        let call = Call {
            deployment: routed.deployment().clone(),
            state,
            ctx,
            arrived,
            deadline,
            admit: Admit::Bounded,
        };
        (
            call,
            Held {
                on_drop,
                _routed: routed,
            },
        )
    }

    /// Work whose owner keeps its cancellation, in-flight count and log
    /// capture itself: the async queue's runs and Cog's predictions.
    pub(crate) fn owned(
        state: AppState,
        deployment: Arc<Deployment>,
        id: &str,
        cancel: CancellationToken,
        sink: Arc<dyn LogSink>,
        admit: Admit,
    ) -> Call {
        let arrived = Instant::now();
        let deadline = arrived + state.limits().request_timeout;
        let ctx = RequestContext::new(id, cancel, Some(sink), Some(deadline));
        Call {
            state,
            deployment,
            ctx,
            arrived,
            deadline,
            admit,
        }
    }

    /// Hands the model the HTTP request's headers and query (a Truss
    /// `predict(self, model_input, request)`), when there are any.
    pub(crate) fn with_request(mut self, request: Option<RequestMeta>) -> Call {
        if let Some(request) = request {
            self.ctx = self.ctx.with_request(request);
        }
        self
    }

    /// `work` cut off at the request's deadline.
    pub(crate) async fn within_deadline<T>(
        &self,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout_at(self.deadline.into(), work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ApiError::Timeout(
                self.state.limits().request_timeout.as_secs(),
            )),
        }
    }

    /// The deployment's loaded model (503 while it is not).
    pub(crate) fn model(&self) -> Result<Arc<LoadedModel>, ApiError> {
        self.deployment.model()
    }

    /// The model's text generation, or a 4xx naming `capability` (as Truss
    /// names the method the model lacks).
    pub(crate) fn text_generation(
        &self,
        model: &LoadedModel,
        capability: &'static str,
    ) -> Result<Arc<dyn TextGeneration>, ApiError> {
        model
            .text_generation()
            .cloned()
            .ok_or_else(|| self.unsupported(capability))
    }

    /// The model's embeddings, or a 4xx naming the capability.
    pub(crate) fn embeddings(&self, model: &LoadedModel) -> Result<Arc<dyn Embeddings>, ApiError> {
        model
            .embeddings()
            .cloned()
            .ok_or_else(|| self.unsupported("embeddings"))
    }

    /// The model's own answer to `route` from the raw body (Truss's
    /// `chat_completions`, ...), when it has one: it takes precedence over
    /// the protocol's adapter.
    pub(crate) fn raw_route(model: &LoadedModel, route: &str) -> Option<Arc<dyn RawRoutes>> {
        model
            .raw_routes()
            .filter(|routes| routes.answers(route))
            .cloned()
    }

    fn unsupported(&self, capability: &'static str) -> ApiError {
        ApiError::CapabilityNotSupported {
            capability,
            model: self.deployment.model_name().to_owned(),
        }
    }

    /// Takes one of the deployment's model slots, as the call's admission
    /// says, recording how long it waited.
    pub(crate) async fn slot(&self) -> Result<Slot, ApiError> {
        let waited = Instant::now();
        let permit = match self.admit {
            Admit::Bounded => self.deployment.admission().acquire().await?,
            Admit::Wait => self.deployment.admission().acquire_waiting().await?,
        };
        let taken = Instant::now();
        self.deployment
            .series(self.state.metrics())
            .queue_seconds
            .observe((taken - waited).as_secs_f64());
        Ok(Slot { permit, taken })
    }

    /// Records the time the model spent on this request, from `started`.
    pub(crate) fn observe_inference(&self, started: Instant) {
        self.deployment
            .series(self.state.metrics())
            .inference_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}
