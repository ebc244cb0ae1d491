//! Llama-family weights behind one interface. On the CPU, GGUF files and
//! safetensors checkpoints both run our own forward pass (`cpu`), with
//! quantized products from `strut_kernels`; elsewhere candle's
//! `quantized_llama` and `llama` do. The KV cache belongs to each sequence
//! ([`SeqState`]), not to the weights, so the scheduler runs many sequences
//! over one copy of the weights.

mod attention;
mod build;
mod cpu;
mod linear;

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_llama};
use strut_model::ModelError;
use tokenizers::Tokenizer;

use crate::chat_template::{CHATML, ChatTemplate};
use crate::loader;
use crate::tokenizer_gguf::{special_id, tokenizer_from_gguf};
use crate::weights::Resolved;

pub use cpu::KvCache;

pub enum LlamaWeights {
    Cpu(Box<cpu::CpuLlama>),
    /// GGUF on a GPU, and mixtures of experts.
    Quantized(Box<quantized_llama::ModelWeights>),
    /// safetensors on a GPU.
    Full {
        model: Box<llama::Llama>,
        fresh: Box<llama::Cache>,
    },
}

/// What one sequence keeps between passes: its KV cache, in the form the
/// weights that serve it use.
pub struct SeqState {
    cache: SeqCache,
    len: usize,
}

enum SeqCache {
    Cpu(KvCache),
    /// candle's quantized Llama keeps its cache inside the model: a clone
    /// per sequence shares the weights (reference-counted tensors) and owns
    /// its cache.
    Quantized(Box<quantized_llama::ModelWeights>),
    Full(Box<llama::Cache>),
}

impl SeqState {
    /// Positions in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// A copy of the first `len` positions, where the cache can be cut (the
    /// CPU's).
    pub fn copy_prefix(&self, len: usize) -> Option<KvCache> {
        match &self.cache {
            SeqCache::Cpu(cache) => {
                let mut copy = KvCache::default();
                copy.copy_prefix(cache, len);
                Some(copy)
            }
            _ => None,
        }
    }

    /// Starts this (empty) sequence from the first `len` positions of a
    /// cached one; false where the weights keep caches that cannot be cut.
    pub fn reuse_prefix(&mut self, from: &KvCache, len: usize) -> bool {
        match &mut self.cache {
            SeqCache::Cpu(cache) => {
                cache.copy_prefix(from, len);
                self.len = cache.len();
                true
            }
            _ => false,
        }
    }

    /// The CPU cache, cut to `len` positions, for the prefix cache.
    pub fn into_cpu(self, len: usize) -> Option<KvCache> {
        match self.cache {
            SeqCache::Cpu(mut cache) => {
                cache.truncate(len);
                Some(cache)
            }
            _ => None,
        }
    }
}

/// One sequence's tokens in a pass, at positions `state.len()..`.
pub struct Step<'a> {
    pub state: &'a mut SeqState,
    pub tokens: &'a [u32],
    pub logits: bool,
    /// Every row's logits, one after another (prompt logprobs; CPU only).
    pub all_rows: bool,
}

impl LlamaWeights {
    pub fn new_state(&self) -> SeqState {
        let cache = match self {
            LlamaWeights::Cpu(model) => SeqCache::Cpu(model.new_cache()),
            LlamaWeights::Quantized(model) => SeqCache::Quantized(model.clone()),
            LlamaWeights::Full { fresh, .. } => SeqCache::Full(fresh.clone()),
        };
        SeqState { cache, len: 0 }
    }

    /// Whether every row's logits can be had (the CPU forward).
    pub fn all_rows(&self) -> bool {
        matches!(self, LlamaWeights::Cpu(_))
    }

    /// Bytes of KV memory per position, where the weights say.
    pub fn kv_bytes_per_token(&self) -> Option<usize> {
        match self {
            LlamaWeights::Cpu(model) => Some(model.kv_bytes_per_token()),
            _ => None,
        }
    }

    /// One pass over several sequences: on the CPU a single batched
    /// forward; candle's GPU models take the sequences one after another.
    /// Per step, the logits after its last token where asked for, or every
    /// row's (`all_rows`).
    pub fn forward(
        &mut self,
        steps: &mut [Step<'_>],
        device: &Device,
    ) -> candle_core::Result<Vec<Option<Vec<f32>>>> {
        if let LlamaWeights::Cpu(model) = self {
            let mut segments = Vec::with_capacity(steps.len());
            for step in steps.iter_mut() {
                let SeqCache::Cpu(cache) = &mut step.state.cache else {
                    candle_core::bail!("a sequence started on other weights");
                };
                segments.push(cpu::Segment {
                    cache,
                    tokens: step.tokens,
                    logits: step.logits,
                    all_rows: step.all_rows,
                });
            }
            let logits = model.forward(&mut segments)?;
            drop(segments);
            for step in steps.iter_mut() {
                step.state.len += step.tokens.len();
            }
            return Ok(logits);
        }
        let mut out = Vec::with_capacity(steps.len());
        for step in steps.iter_mut() {
            if step.all_rows {
                candle_core::bail!("prompt log probabilities are computed on the CPU only");
            }
            let input = Tensor::new(step.tokens, device)?.unsqueeze(0)?;
            let pos = step.state.len;
            let logits = match (&*self, &mut step.state.cache) {
                (LlamaWeights::Quantized(_), SeqCache::Quantized(model)) => {
                    model.forward(&input, pos)?
                }
                (LlamaWeights::Full { model, .. }, SeqCache::Full(cache)) => {
                    model.forward(&input, pos, cache)?
                }
                _ => candle_core::bail!("a sequence started on other weights"),
            };
            step.state.len += step.tokens.len();
            out.push(match step.logits {
                true => Some(logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?),
                false => None,
            });
        }
        Ok(out)
    }
}

pub struct LoadedLlama {
    pub weights: LlamaWeights,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub eos_ids: BTreeSet<u32>,
    pub context_length: usize,
    pub weights_bytes: u64,
}

/// Tokens that end a turn in common chat formats, besides the declared EOS.
const END_OF_TURN: [&str; 4] = ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>"];

fn end_of_turn_ids(
    tokenizer: &Tokenizer,
    declared: impl IntoIterator<Item = u32>,
) -> BTreeSet<u32> {
    let mut ids: BTreeSet<u32> = declared.into_iter().collect();
    ids.extend(END_OF_TURN.iter().filter_map(|t| tokenizer.token_to_id(t)));
    ids
}

fn token_text(tokenizer: &Tokenizer, id: Option<u32>) -> String {
    id.and_then(|id| tokenizer.id_to_token(id))
        .unwrap_or_default()
}

/// How GGUF weights are kept in memory (on the CPU; a GPU keeps them as
/// stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requantize {
    /// As stored in the file.
    No,
    /// Q4_1 matrices become Q8_0: 1.7x the memory of those tensors and a
    /// slight change in logits, for a kernel with no nibbles to unpack.
    Q8_0,
}

impl Requantize {
    pub fn parse(value: Option<&str>) -> Result<Self, ModelError> {
        match value {
            None | Some("none") => Ok(Self::No),
            Some("q8_0") => Ok(Self::Q8_0),
            Some(other) => Err(ModelError::internal(format!(
                "model_metadata.candle.requantize must be `none` or `q8_0`, got `{other}`"
            ))),
        }
    }
}

pub fn load(
    resolved: &Resolved,
    device: &Device,
    dtype: DType,
    requantize: Requantize,
) -> Result<LoadedLlama, ModelError> {
    match resolved {
        Resolved::Gguf { file, .. } => load_gguf(file, device, requantize),
        Resolved::Safetensors {
            config,
            tokenizer,
            shards,
            ..
        } => load_safetensors(config, tokenizer, shards, device, dtype),
    }
}

fn load_gguf(
    path: &Path,
    device: &Device,
    requantize: Requantize,
) -> Result<LoadedLlama, ModelError> {
    let (content, mut reader) = loader::open_gguf(path, device)?;
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_default();
    if arch != "llama" {
        return Err(ModelError::internal(format!(
            "{} holds a `{arch}` model; LlamaGenerator serves `llama` GGUF files",
            path.display()
        )));
    }
    let tokenizer = tokenizer_from_gguf(&content).map_err(ModelError::internal)?;
    let template_src = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_else(|| CHATML.to_owned());
    let bos = special_id(&content, "tokenizer.ggml.bos_token_id");
    let eos = special_id(&content, "tokenizer.ggml.eos_token_id");
    let template = ChatTemplate::new(
        &template_src,
        &token_text(&tokenizer, bos),
        &token_text(&tokenizer, eos),
    )?;
    let declared_context = content
        .metadata
        .get("llama.context_length")
        .and_then(|v| v.to_u32().ok())
        .map_or(quantized_llama::MAX_SEQ_LEN, |n| n as usize);
    let weights_bytes = std::fs::metadata(path)?.len();
    let fail = crate::internal("loading the GGUF weights");
    let cpu = if device.is_cpu() {
        build::from_gguf(&content, &mut reader, requantize).map_err(&fail)?
    } else {
        None
    };
    let (weights, context_length) = match cpu {
        Some(model) => (LlamaWeights::Cpu(Box::new(model)), declared_context),
        None => {
            let model = quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
                .map_err(&fail)?;
            // candle's quantized Llama precomputes RoPE for MAX_SEQ_LEN positions only.
            let context = declared_context.min(quantized_llama::MAX_SEQ_LEN);
            (LlamaWeights::Quantized(Box::new(model)), context)
        }
    };
    Ok(LoadedLlama {
        weights,
        eos_ids: end_of_turn_ids(&tokenizer, eos),
        tokenizer,
        template,
        context_length,
        weights_bytes,
    })
}

fn load_safetensors(
    config_path: &Path,
    tokenizer_path: &Path,
    shards: &[std::path::PathBuf],
    device: &Device,
    dtype: DType,
) -> Result<LoadedLlama, ModelError> {
    let config: llama::LlamaConfig = serde_json::from_slice(&std::fs::read(config_path)?)
        .map_err(|err| ModelError::internal(format!("{}: {err}", config_path.display())))?;
    let config = config.into_config(false);
    let tokenizer = Tokenizer::from_file(tokenizer_path)
        .map_err(|err| ModelError::internal(format!("{}: {err}", tokenizer_path.display())))?;
    let tokenizer_config: serde_json::Value = tokenizer_path
        .parent()
        .map(|dir| dir.join("tokenizer_config.json"))
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let template_src = tokenizer_config
        .get("chat_template")
        .and_then(|v| v.as_str())
        .unwrap_or(CHATML);
    let declared_eos: Vec<u32> = match &config.eos_token_id {
        Some(llama::LlamaEosToks::Single(id)) => vec![*id],
        Some(llama::LlamaEosToks::Multiple(ids)) => ids.clone(),
        None => Vec::new(),
    };
    let template = ChatTemplate::new(
        template_src,
        &token_text(&tokenizer, config.bos_token_id),
        &token_text(&tokenizer, declared_eos.first().copied()),
    )?;
    let tensors = loader::load_safetensors(shards, dtype, device)?;
    let weights_bytes = tensors
        .values()
        .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
        .sum();
    let weights = if device.is_cpu() {
        let model = build::from_safetensors(tensors, &config)
            .map_err(crate::internal("building the Llama model"))?;
        LlamaWeights::Cpu(Box::new(model))
    } else {
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let model =
            llama::Llama::load(vb, &config).map_err(crate::internal("building the Llama model"))?;
        let fresh = llama::Cache::new(true, dtype, &config, device)
            .map_err(crate::internal("allocating the KV cache"))?;
        LlamaWeights::Full {
            model: Box::new(model),
            fresh: Box::new(fresh),
        }
    };
    Ok(LoadedLlama {
        weights,
        eos_ids: end_of_turn_ids(&tokenizer, declared_eos),
        tokenizer,
        template,
        context_length: config.max_position_embeddings,
        weights_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requantize_setting_is_checked() {
        assert_eq!(Requantize::parse(None).unwrap(), Requantize::No);
        assert_eq!(Requantize::parse(Some("q8_0")).unwrap(), Requantize::Q8_0);
        assert!(
            Requantize::parse(Some("q2"))
                .unwrap_err()
                .message()
                .contains("`q2`")
        );
    }
}
