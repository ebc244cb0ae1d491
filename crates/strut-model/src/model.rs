use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::capabilities::{Embeddings, RawRoutes, TextGeneration};
use crate::{ModelError, Output, RequestContext};

/// A model whose methods block: the server calls them on a blocking thread,
/// so they may compute for as long as they need without stalling the server.
///
/// Only `predict` is required. `load` runs exactly once, before the server
/// reports ready; `preprocess` runs before the model's concurrency slot is
/// taken and `postprocess` after it is released, as in Truss, so cheap
/// request shaping never holds a GPU slot. `postprocess` applies to JSON
/// outputs only; a stream goes to the client as the model produced it.
pub trait Model: Send + Sync + 'static {
    fn load(&mut self) -> Result<(), ModelError> {
        Ok(())
    }

    fn preprocess(&self, input: Value, _ctx: &RequestContext) -> Result<Value, ModelError> {
        Ok(input)
    }

    fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError>;

    fn postprocess(&self, output: Value, _ctx: &RequestContext) -> Result<Value, ModelError> {
        Ok(output)
    }

    /// Consulted by the readiness route once `load` has succeeded.
    fn is_healthy(&self) -> bool {
        true
    }

    /// Whether `predict` reads the HTTP request's headers and query
    /// ([`RequestContext::request`]). Asked once, after `load`.
    fn wants_request(&self) -> bool {
        false
    }

    /// Text generation, if the model offers it. Asked once, after `load`.
    /// Routes the model answers itself from the raw body (Truss's OpenAI-style
    /// methods), if any. Asked once, after `load`.
    fn raw_routes(&self) -> Option<Arc<dyn RawRoutes>> {
        None
    }

    fn text_generation(&self) -> Option<Arc<dyn TextGeneration>> {
        None
    }

    /// Embeddings, if the model offers them. Asked once, after `load`.
    fn embeddings(&self) -> Option<Arc<dyn Embeddings>> {
        None
    }
}

/// A model whose methods are async: the server awaits them on its runtime,
/// with no thread hop. They must not block; use [`Model`] for code that does.
///
/// `load` is still synchronous and runs once on a blocking thread: loading
/// weights is blocking work, and Truss runs it the same way.
#[async_trait]
pub trait AsyncModel: Send + Sync + 'static {
    fn load(&mut self) -> Result<(), ModelError> {
        Ok(())
    }

    async fn preprocess(&self, input: Value, _ctx: &RequestContext) -> Result<Value, ModelError> {
        Ok(input)
    }

    async fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError>;

    async fn postprocess(&self, output: Value, _ctx: &RequestContext) -> Result<Value, ModelError> {
        Ok(output)
    }

    async fn is_healthy(&self) -> bool {
        true
    }

    /// Whether `predict` reads the HTTP request's headers and query
    /// ([`RequestContext::request`]). Asked once, after `load`.
    fn wants_request(&self) -> bool {
        false
    }

    /// Text generation, if the model offers it. Asked once, after `load`.
    /// Routes the model answers itself from the raw body (Truss's OpenAI-style
    /// methods), if any. Asked once, after `load`.
    fn raw_routes(&self) -> Option<Arc<dyn RawRoutes>> {
        None
    }

    fn text_generation(&self) -> Option<Arc<dyn TextGeneration>> {
        None
    }

    /// Embeddings, if the model offers them. Asked once, after `load`.
    fn embeddings(&self) -> Option<Arc<dyn Embeddings>> {
        None
    }
}

/// A constructed, not yet loaded, model of either kind.
pub enum ModelInstance {
    Blocking(Box<dyn Model>),
    Async(Box<dyn AsyncModel>),
}

impl ModelInstance {
    pub fn blocking(model: impl Model) -> Self {
        ModelInstance::Blocking(Box::new(model))
    }

    pub fn asynchronous(model: impl AsyncModel) -> Self {
        ModelInstance::Async(Box::new(model))
    }

    /// Runs the model's `load`. Blocking: call it off the async runtime.
    pub fn load(&mut self) -> Result<(), ModelError> {
        match self {
            ModelInstance::Blocking(m) => m.load(),
            ModelInstance::Async(m) => m.load(),
        }
    }
}

impl std::fmt::Debug for ModelInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelInstance::Blocking(_) => "ModelInstance::Blocking(..)",
            ModelInstance::Async(_) => "ModelInstance::Async(..)",
        })
    }
}
