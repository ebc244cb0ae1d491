//! `SentenceEmbedder`: BERT-family sentence embeddings (sentence-transformers'
//! Transformer → mean Pooling → Normalize), served through the batcher.

use std::sync::Arc;
use std::time::Instant;

use candle_transformers::models::bert::Config as BertConfig;
use serde_json::{Value, json};
use strut_model::capabilities::{EmbedOutput, Embeddings};
use strut_model::{
    AsyncModel, ErrorKind, InitContext, ModelError, Output, RequestContext, async_trait,
};
use tokenizers::Tokenizer;

use crate::batcher::{BatchStats, Batcher, Limits};
use crate::bert::Encoder;
use crate::loader::{self, LoadReport};
use crate::params::CandleParams;
use crate::weights::{Resolved, Sources, Wanted};

pub struct SentenceEmbedder {
    ctx: InitContext,
    params: CandleParams,
    engine: Option<Arc<Engine>>,
    load_report: Option<LoadReport>,
}

struct Engine {
    model_id: String,
    tokenizer: Tokenizer,
    dimensions: usize,
    max_input_tokens: usize,
    batcher: Batcher,
}

impl SentenceEmbedder {
    pub const CLASS_NAME: &'static str = "SentenceEmbedder";

    pub fn new(ctx: InitContext) -> Result<Self, ModelError> {
        let params = CandleParams::from_context(&ctx)?;
        Ok(Self {
            ctx,
            params,
            engine: None,
            load_report: None,
        })
    }

    /// How requests were grouped into forward passes so far.
    pub fn batch_stats(&self) -> Option<BatchStats> {
        self.engine.as_ref().map(|e| e.batcher.stats())
    }

    pub fn load_report(&self) -> Option<LoadReport> {
        self.load_report
    }

    fn engine(&self) -> Result<&Arc<Engine>, ModelError> {
        self.engine
            .as_ref()
            .ok_or_else(|| ModelError::new(ErrorKind::NotReady, "the model is not loaded"))
    }
}

fn read_json(path: &std::path::Path) -> Result<Value, ModelError> {
    serde_json::from_slice(&std::fs::read(path)?)
        .map_err(|err| ModelError::internal(format!("{}: {err}", path.display())))
}

#[async_trait]
impl AsyncModel for SentenceEmbedder {
    fn load(&mut self) -> Result<(), ModelError> {
        let started = Instant::now();
        let placement = crate::device::select(&self.ctx.config, &self.params)?;
        let (sources, _) = Sources::from_context(&self.ctx, &self.params)?;
        let Resolved::Safetensors {
            config,
            tokenizer,
            shards,
            source,
        } = sources.resolve(&Wanted::Safetensors)?
        else {
            unreachable!("a safetensors lookup resolves to safetensors")
        };
        tracing::info!(%source, "loading sentence embedder");
        let bert_config: BertConfig = serde_json::from_value(read_json(&config)?)
            .map_err(|err| ModelError::internal(format!("{}: {err}", config.display())))?;
        // sentence-transformers' own limit beside the weights, if any.
        let st_max = config
            .parent()
            .map(|d| d.join("sentence_bert_config.json"))
            .filter(|p| p.is_file())
            .and_then(|p| read_json(&p).ok())
            .and_then(|v| v.get("max_seq_length").and_then(Value::as_u64))
            .map(|n| n as usize);
        let max_input_tokens = self
            .params
            .max_input_tokens
            .or(st_max)
            .unwrap_or(bert_config.max_position_embeddings)
            .min(bert_config.max_position_embeddings);
        let mut tokenizer = Tokenizer::from_file(&tokenizer)
            .map_err(|err| ModelError::internal(format!("{}: {err}", tokenizer.display())))?;
        // tokenizer.json may carry padding to a fixed length and silent
        // truncation: the batcher pads per batch, and long inputs are refused.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|err| ModelError::internal(format!("disabling truncation: {err}")))?;

        let tensors = loader::load_safetensors(&shards, placement.dtype, &placement.device)?;
        let weights_bytes = tensors
            .values()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum();
        let mut encoder = Encoder::load(tensors, &bert_config, &placement)
            .map_err(crate::internal("building BERT"))?;
        let dimensions = bert_config.hidden_size;
        let model_id = self.params.model_id.clone().unwrap_or_else(|| {
            config
                .parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sentence-embedder".into())
        });
        let limits = Limits {
            max_batch_size: self.params.max_batch_size.unwrap_or(32).max(1),
            max_batch_tokens: self
                .params
                .max_batch_tokens
                .unwrap_or(16384)
                .max(max_input_tokens),
            max_queue: self.params.max_queue.unwrap_or(256).max(1),
        };
        let telemetry = self.ctx.telemetry.clone();
        let batcher = Batcher::spawn(&model_id, limits, move |seqs| {
            telemetry.batch(seqs.len());
            encoder
                .embed(seqs)
                .map_err(crate::internal("embedding forward pass"))
        })?;
        self.load_report = Some(LoadReport::finish(
            &model_id,
            started,
            weights_bytes,
            &placement,
            &self.ctx.telemetry,
        ));
        self.engine = Some(Arc::new(Engine {
            model_id,
            tokenizer,
            dimensions,
            max_input_tokens,
            batcher,
        }));
        Ok(())
    }

    async fn predict(&self, input: Value, ctx: &RequestContext) -> Result<Output, ModelError> {
        let texts = crate::input::embed_texts(&input)?;
        let engine = self.engine()?;
        let out = engine.embed(texts, ctx).await?;
        Ok(Output::Json(json!({
            "embeddings": out.embeddings,
            "dimensions": engine.dimensions,
            "usage": {"prompt_tokens": out.prompt_tokens},
        })))
    }

    fn embeddings(&self) -> Option<Arc<dyn Embeddings>> {
        self.engine.clone().map(|e| e as Arc<dyn Embeddings>)
    }
}

#[async_trait]
impl Embeddings for Engine {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(
        &self,
        texts: Vec<String>,
        _ctx: &RequestContext,
    ) -> Result<EmbedOutput, ModelError> {
        let max_texts = self.batcher.limits().max_batch_size;
        if texts.is_empty() {
            return Err(ModelError::invalid_input("no texts to embed"));
        }
        if texts.len() > max_texts {
            return Err(ModelError::invalid_input(format!(
                "{} texts in one request; at most {max_texts} are accepted",
                texts.len()
            )));
        }
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(ModelError::invalid_input(format!("text {i} is empty")));
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|err| ModelError::internal(format!("tokenizing: {err}")))?;
        let seqs: Vec<Vec<u32>> = encodings.iter().map(|e| e.get_ids().to_vec()).collect();
        if let Some((i, seq)) = seqs
            .iter()
            .enumerate()
            .find(|(_, s)| s.len() > self.max_input_tokens)
        {
            return Err(ModelError::invalid_input(format!(
                "text {i} has {} tokens; the model accepts at most {}",
                seq.len(),
                self.max_input_tokens
            )));
        }
        let prompt_tokens = seqs.iter().map(Vec::len).sum::<usize>() as u32;
        let embeddings = self.batcher.submit(seqs).await?;
        Ok(EmbedOutput {
            embeddings,
            prompt_tokens,
        })
    }
}
