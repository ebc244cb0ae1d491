//! The strut model contract.
//!
//! A model mirrors Truss's lifecycle: it is constructed from an [`InitContext`]
//! (the parsed config, its data directory, secrets and the environment it
//! serves), [`Model::load`] runs exactly once before the server reports ready,
//! and `predict` takes JSON and returns JSON or a stream of chunks.
//!
//! Two traits, because both kinds of model are first-class: [`Model`] is for
//! blocking code (the server runs it on a blocking thread so it never stalls
//! the runtime) and [`AsyncModel`] is for models that await (the server polls
//! them on the runtime, never through a thread pool). A factory registered in
//! a [`Registry`] under a `model_class_name` builds either kind.

pub mod capabilities;
mod context;
mod error;
mod init;
mod model;
mod output;
mod registry;
mod telemetry;
mod tools;

pub use context::{LogLevel, LogSink, RequestContext, RequestLogger, RequestMeta};
pub use error::{ErrorKind, ModelError};
pub use init::{Environment, InitContext, Secrets};
pub use model::{AsyncModel, Model, ModelInstance};
pub use output::{Chunk, ChunkIter, ChunkStream, Output, Response, ResponseBody};
pub use registry::{Registry, RegistryError};
pub use telemetry::{GenerationStats, SchedulerStep, Telemetry, TelemetrySink};
pub use tokio_util::sync::CancellationToken;

/// Re-exported so model crates implement [`AsyncModel`] without naming the
/// macro crate themselves.
pub use async_trait::async_trait;
/// JSON values are the currency of `predict`.
pub use serde_json::{Value, json};
