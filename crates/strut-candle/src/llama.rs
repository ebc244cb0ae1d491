//! Llama-family weights behind one interface: quantized GGUF through
//! `quantized_llama`, safetensors checkpoints through `llama`. Both keep
//! their KV cache inside and restart it at position 0.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_llama};
use strut_model::ModelError;
use tokenizers::Tokenizer;

use crate::chat_template::{CHATML, ChatTemplate};
use crate::loader;
use crate::tokenizer_gguf::{special_id, tokenizer_from_gguf};
use crate::weights::Resolved;

pub enum LlamaWeights {
    Quantized(Box<quantized_llama::ModelWeights>),
    Full {
        model: Box<llama::Llama>,
        fresh: Box<llama::Cache>,
        cache: Box<llama::Cache>,
    },
}

impl LlamaWeights {
    /// Logits for the token after `tokens`, which start at position `pos`
    /// (0 restarts the KV cache).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        pos: usize,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let input = Tensor::new(tokens, device)?.unsqueeze(0)?;
        let logits = match self {
            LlamaWeights::Quantized(model) => model.forward(&input, pos)?,
            LlamaWeights::Full {
                model,
                fresh,
                cache,
            } => {
                if pos == 0 {
                    **cache = (**fresh).clone();
                }
                model.forward(&input, pos, cache)?
            }
        };
        logits.squeeze(0)
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

/// How GGUF weights are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requantize {
    /// As stored in the file.
    No,
    /// Q4_1 tensors become Q8_0. candle 0.11 has no SIMD kernel for Q4_1
    /// (llama.cpp has), but an AVX2 one for Q8_0: several times faster, at
    /// 1.7x the memory of those tensors and a slight change in logits.
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
    let model = match requantize {
        Requantize::No => quantized_llama::ModelWeights::from_gguf(content, &mut reader, device),
        Requantize::Q8_0 => {
            let (content, mut memory) = requantized(content, &mut reader)?;
            quantized_llama::ModelWeights::from_gguf(content, &mut memory, device)
        }
    }
    .map_err(crate::internal("loading the GGUF weights"))?;
    Ok(LoadedLlama {
        weights: LlamaWeights::Quantized(Box::new(model)),
        eos_ids: end_of_turn_ids(&tokenizer, eos),
        tokenizer,
        template,
        // candle's quantized llama precomputes RoPE for MAX_SEQ_LEN positions only.
        context_length: declared_context.min(quantized_llama::MAX_SEQ_LEN),
        weights_bytes,
    })
}

/// The same GGUF with Q4_1 tensors turned into Q8_0, rebuilt in memory so
/// candle's loader reads it like a file.
fn requantized(
    content: Content,
    reader: &mut loader::CountingReader,
) -> Result<(Content, Cursor<Vec<u8>>), ModelError> {
    let fail = crate::internal("requantizing to Q8_0");
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let tensor = content.tensor(reader, name, &Device::Cpu).map_err(&fail)?;
        let tensor = if tensor.dtype() == GgmlDType::Q4_1 {
            QTensor::quantize(
                &tensor.dequantize(&Device::Cpu).map_err(&fail)?,
                GgmlDType::Q8_0,
            )
            .map_err(&fail)?
        } else {
            tensor
        };
        tensors.push((name.as_str(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut memory = Cursor::new(Vec::new());
    gguf_file::write(&mut memory, &metadata, &tensor_refs).map_err(&fail)?;
    memory.set_position(0);
    let content = Content::read(&mut memory).map_err(&fail)?;
    Ok((content, memory))
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
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    let model =
        llama::Llama::load(vb, &config).map_err(crate::internal("building the Llama model"))?;
    let fresh = llama::Cache::new(true, dtype, &config, device)
        .map_err(crate::internal("allocating the KV cache"))?;
    Ok(LoadedLlama {
        weights: LlamaWeights::Full {
            model: Box::new(model),
            cache: Box::new(fresh.clone()),
            fresh: Box::new(fresh),
        },
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
