//! A loaded model behind one cheap handle. Blocking models run on tokio's
//! blocking pool, async ones are awaited in place; either way a panic fails
//! the request, not the server, and the caller's span follows the work.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use strut_model::capabilities::{Embeddings, RawRoutes, TextGeneration};
use strut_model::{AsyncModel, Model, ModelError, ModelInstance, Output, RequestContext};
use tracing::Span;

use crate::ApiError;

enum Runner {
    Blocking(Arc<dyn Model>),
    Async(Arc<dyn AsyncModel>),
}

pub struct LoadedModel {
    runner: Runner,
    text_generation: Option<Arc<dyn TextGeneration>>,
    embeddings: Option<Arc<dyn Embeddings>>,
    raw_routes: Option<Arc<dyn RawRoutes>>,
    wants_request: bool,
}

impl LoadedModel {
    /// Wraps an instance whose `load` has succeeded.
    pub fn new(instance: ModelInstance) -> Self {
        match instance {
            ModelInstance::Blocking(model) => Self {
                text_generation: model.text_generation(),
                embeddings: model.embeddings(),
                raw_routes: model.raw_routes(),
                wants_request: model.wants_request(),
                runner: Runner::Blocking(Arc::from(model)),
            },
            ModelInstance::Async(model) => Self {
                text_generation: model.text_generation(),
                embeddings: model.embeddings(),
                raw_routes: model.raw_routes(),
                wants_request: model.wants_request(),
                runner: Runner::Async(Arc::from(model)),
            },
        }
    }

    pub fn text_generation(&self) -> Option<&Arc<dyn TextGeneration>> {
        self.text_generation.as_ref()
    }

    pub fn embeddings(&self) -> Option<&Arc<dyn Embeddings>> {
        self.embeddings.as_ref()
    }

    /// The routes the model answers itself from the raw body, if any.
    pub fn raw_routes(&self) -> Option<&Arc<dyn RawRoutes>> {
        self.raw_routes.as_ref()
    }

    /// Whether the model reads the HTTP request (headers, query).
    pub fn wants_request(&self) -> bool {
        self.wants_request
    }

    pub async fn preprocess(&self, input: Value, ctx: &RequestContext) -> Result<Value, ApiError> {
        match &self.runner {
            Runner::Blocking(m) => {
                let (m, ctx) = (m.clone(), ctx.clone());
                blocking(move || m.preprocess(input, &ctx)).await
            }
            Runner::Async(m) => guarded(m.preprocess(input, ctx)).await,
        }
    }

    pub async fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ApiError> {
        match &self.runner {
            Runner::Blocking(m) => {
                let (m, ctx) = (m.clone(), ctx.clone());
                blocking(move || m.predict(input, &ctx)).await
            }
            Runner::Async(m) => guarded(m.predict(input, ctx)).await,
        }
    }

    pub async fn postprocess(
        &self,
        output: Value,
        ctx: &RequestContext,
    ) -> Result<Value, ApiError> {
        match &self.runner {
            Runner::Blocking(m) => {
                let (m, ctx) = (m.clone(), ctx.clone());
                blocking(move || m.postprocess(output, &ctx)).await
            }
            Runner::Async(m) => guarded(m.postprocess(output, ctx)).await,
        }
    }

    /// A health check that panics, errs or hangs past `timeout` counts as unhealthy.
    pub async fn is_healthy(&self, timeout: Duration) -> bool {
        let check = async {
            match &self.runner {
                Runner::Blocking(m) => {
                    let m = m.clone();
                    blocking(move || Ok(m.is_healthy())).await.unwrap_or(false)
                }
                Runner::Async(m) => AssertUnwindSafe(m.is_healthy())
                    .catch_unwind()
                    .await
                    .unwrap_or(false),
            }
        };
        tokio::time::timeout(timeout, check).await.unwrap_or(false)
    }
}

async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ModelError> + Send + 'static,
{
    let span = Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(work)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(err) if err.is_panic() => {
            Err(ApiError::ModelPanicked(panic_message(&*err.into_panic())))
        }
        Err(err) => Err(ApiError::Internal(format!("model task failed: {err}"))),
    }
}

pub(crate) async fn guarded<T>(
    work: impl Future<Output = Result<T, ModelError>>,
) -> Result<T, ApiError> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result.map_err(ApiError::from),
        Err(panic) => Err(ApiError::ModelPanicked(panic_message(&*panic))),
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
