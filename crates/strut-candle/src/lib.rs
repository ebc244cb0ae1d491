//! The candle backend of strut: built-in models whose weights are loaded once
//! in `load`, kept on the device, and served from a model thread.
//!
//! Two classes are registered (see [`register`]):
//! - `SentenceEmbedder`: BERT-family sentence embeddings (mean pooling + L2),
//!   with a dynamic batcher in front of the model thread.
//! - `LlamaGenerator`: Llama-family text generation from a GGUF file
//!   (quantized) or a safetensors checkpoint, streamed token by token.
//!
//! Both read their parameters from `model_metadata.candle` in config.yaml;
//! [`params::CandleParams`] documents every key.

mod batcher;
mod bert;
mod chat_template;
mod constraint;
pub mod device;
mod embedder;
mod export;
mod generator;
pub mod hub;
mod input;
mod llama;
pub mod loader;
mod logprobs;
pub mod params;
pub mod probe;
mod sampling;
mod scheduler;
pub mod text_stream;
mod tokenizer_gguf;
pub mod weights;

pub use batcher::BatchStats;
pub use embedder::SentenceEmbedder;
pub use generator::LlamaGenerator;
pub use tokenizer_gguf::tokenizer_from_gguf;

/// Registers the built-in candle model classes.
pub fn register(registry: &mut strut_model::Registry) {
    registry.register_async(SentenceEmbedder::CLASS_NAME, SentenceEmbedder::new);
    registry.register_async(LlamaGenerator::CLASS_NAME, LlamaGenerator::new);
}

/// candle's barrier pool, the one its quantized matmul uses: strut's
/// kernels spread their work over it, so that their threads and candle's
/// never compete for the cores.
pub(crate) struct BarrierPool;

impl strut_kernels::Pool for BarrierPool {
    fn threads(&self) -> usize {
        candle_core::utils::barrier_pool().n_workers() + 1
    }

    fn execute_chunked(&self, n_items: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        candle_core::utils::barrier_pool().execute_chunked(n_items, f);
    }
}

/// Maps any displayable failure inside a model to an internal error, keeping
/// the detail for the log only.
pub(crate) fn internal(what: &str) -> impl Fn(candle_core::Error) -> strut_model::ModelError + '_ {
    move |err| strut_model::ModelError::internal(format!("{what}: {err}"))
}
