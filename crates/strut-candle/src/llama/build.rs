//! Building the CPU Llama from a GGUF file (blocks read straight into their
//! final buffers, never expanded) or from safetensors tensors.

use std::collections::HashMap;
use std::f32::consts::PI;
use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, TensorInfo};
use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama::{Config, Llama3RopeConfig, Llama3RopeType};

use super::Requantize;
use super::cpu::{CpuLlama, Hparams, Layer, RopeAngles, RopeStyle};
use strut_kernels::{Format, QMatrix};

use super::linear::{Embedding, Linear, Projection};

type Result<T> = candle_core::Result<T>;

/// The block formats that strut's kernels multiply; the rest go through
/// candle's.
fn format_of(dtype: GgmlDType) -> Option<Format> {
    match dtype {
        GgmlDType::Q4_1 => Some(Format::Q4_1),
        GgmlDType::Q8_0 => Some(Format::Q8_0),
        _ => None,
    }
}

/// Reads tensors out of a GGUF file by name.
struct Gguf<'a, R> {
    content: &'a Content,
    reader: &'a mut R,
    requantize: Requantize,
}

enum Loaded {
    Ours(QMatrix),
    Candle(candle_core::quantized::QTensor),
}

impl<'a, R: Read + Seek> Gguf<'a, R> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        let content: &'a Content = self.content;
        content
            .tensor_infos
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("the GGUF file has no `{name}`")))
    }

    fn ours(&self, matrix: QMatrix) -> QMatrix {
        match (self.requantize, matrix.format()) {
            (Requantize::Q8_0, Format::Q4_1) => matrix.to_q8_0(),
            _ => matrix,
        }
    }

    fn tensor(&mut self, name: &str) -> Result<Loaded> {
        let info = self.info(name)?;
        match (format_of(info.ggml_dtype), info.shape.dims()) {
            (Some(format), &[rows, cols]) => {
                let at = self.content.tensor_data_offset + info.offset;
                let matrix = QMatrix::read(self.reader, format, cols, &[(at, rows)])?;
                Ok(Loaded::Ours(self.ours(matrix)))
            }
            _ => Ok(Loaded::Candle(info.read(
                self.reader,
                self.content.tensor_data_offset,
                &Device::Cpu,
            )?)),
        }
    }

    /// Linear layers of one input as one, read straight into one matrix when
    /// they share a format we have a kernel for.
    fn projection(&mut self, names: &[String]) -> Result<Projection> {
        let infos = names
            .iter()
            .map(|n| self.info(n))
            .collect::<Result<Vec<_>>>()?;
        let format = format_of(infos[0].ggml_dtype);
        let cols = infos[0].shape.dims().last().copied();
        let parts: Option<Vec<(u64, usize)>> = infos
            .iter()
            .map(|info| match info.shape.dims() {
                &[rows, c] if Some(c) == cols && format_of(info.ggml_dtype) == format => {
                    Some((self.content.tensor_data_offset + info.offset, rows))
                }
                _ => None,
            })
            .collect();
        if let (Some(format), Some(cols), Some(parts)) = (format, cols, parts) {
            let matrix = QMatrix::read(self.reader, format, cols, &parts)?;
            return Projection::of(vec![Linear::Quantized(Arc::new(self.ours(matrix)))]);
        }
        let linears = names
            .iter()
            .map(|n| self.linear(n))
            .collect::<Result<_>>()?;
        Projection::of(linears)
    }

    fn linear(&mut self, name: &str) -> Result<Linear> {
        Ok(match self.tensor(name)? {
            Loaded::Ours(m) => Linear::Quantized(Arc::new(m)),
            Loaded::Candle(t) => Linear::Candle(QMatMul::from_qtensor(t)?),
        })
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        match self.tensor(name)? {
            Loaded::Candle(t) => t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1(),
            Loaded::Ours(_) => candle_core::bail!("`{name}` is a quantized matrix, not a vector"),
        }
    }

    fn u32(&self, key: &str) -> Result<usize> {
        match self.content.metadata.get(key) {
            Some(v) => Ok(v.to_u32()? as usize),
            None => candle_core::bail!("the GGUF file has no `{key}`"),
        }
    }

    fn f32(&self, key: &str) -> Option<f32> {
        self.content.metadata.get(key).and_then(|v| v.to_f32().ok())
    }
}

/// The Llama in a GGUF file; `None` when it is a mixture of experts, which
/// only candle's implementation serves.
pub fn from_gguf<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
    requantize: Requantize,
) -> Result<Option<CpuLlama>> {
    let mut file = Gguf {
        content,
        reader,
        requantize,
    };
    if file.u32("llama.expert_count").unwrap_or(0) > 1 {
        return Ok(None);
    }
    let n_head = file.u32("llama.attention.head_count")?;
    let hidden = file.u32("llama.embedding_length")?;
    let head_dim = hidden / n_head;
    let rope_dim = file.u32("llama.rope.dimension_count").unwrap_or(head_dim);
    let base = file.f32("llama.rope.freq_base").unwrap_or(10_000.0);
    let hp = Hparams {
        hidden,
        n_head,
        n_kv_head: file.u32("llama.attention.head_count_kv")?,
        head_dim,
        eps: file
            .f32("llama.attention.layer_norm_rms_epsilon")
            .unwrap_or(1e-5),
        angles: RopeAngles::Recurrence {
            step: base.powf(-2.0 / rope_dim as f32),
            pairs: rope_dim / 2,
        },
        rope: RopeStyle::Interleaved,
    };
    let embedding = match file.tensor("token_embd.weight")? {
        Loaded::Ours(m) => Embedding::Quantized(Arc::new(m)),
        Loaded::Candle(t) => Embedding::Dense(t.dequantize(&Device::Cpu)?),
    };
    let mut layers = Vec::new();
    for i in 0..file.u32("llama.block_count")? {
        let name = |part: &str| format!("blk.{i}.{part}.weight");
        layers.push(Layer {
            attn_norm: file.vector(&name("attn_norm"))?,
            qkv: file.projection(&[name("attn_q"), name("attn_k"), name("attn_v")])?,
            wo: file.linear(&name("attn_output"))?,
            ffn_norm: file.vector(&name("ffn_norm"))?,
            gate_up: file.projection(&[name("ffn_gate"), name("ffn_up")])?,
            down: file.linear(&name("ffn_down"))?,
        });
    }
    let norm = file.vector("output_norm.weight")?;
    let output = if file.has("output.weight") {
        file.linear("output.weight")?
    } else {
        embedding.as_linear()
    };
    CpuLlama::new(hp, embedding, layers, norm, output).map(Some)
}

/// A Hugging Face Llama checkpoint, its tensors already loaded in `dtype`.
pub fn from_safetensors(mut tensors: HashMap<String, Tensor>, config: &Config) -> Result<CpuLlama> {
    let mut take = |name: &str| {
        tensors
            .remove(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("the checkpoint has no `{name}`")))
    };
    let vector = |t: Tensor| t.to_dtype(DType::F32)?.to_vec1::<f32>();
    let head_dim = config.hidden_size / config.num_attention_heads;
    let hp = Hparams {
        hidden: config.hidden_size,
        n_head: config.num_attention_heads,
        n_kv_head: config.num_key_value_heads,
        head_dim,
        eps: config.rms_norm_eps as f32,
        angles: RopeAngles::Frequencies(inv_freq(config, head_dim)),
        rope: RopeStyle::Halves,
    };
    let embedding = Embedding::Dense(take("model.embed_tokens.weight")?);
    let mut layers = Vec::new();
    for i in 0..config.num_hidden_layers {
        let mut dense =
            |part: &str| take(&format!("model.layers.{i}.{part}.weight")).map(Linear::Dense);
        layers.push(Layer {
            qkv: Projection::of(vec![
                dense("self_attn.q_proj")?,
                dense("self_attn.k_proj")?,
                dense("self_attn.v_proj")?,
            ])?,
            wo: dense("self_attn.o_proj")?,
            gate_up: Projection::of(vec![dense("mlp.gate_proj")?, dense("mlp.up_proj")?])?,
            down: dense("mlp.down_proj")?,
            attn_norm: vector(take(&format!("model.layers.{i}.input_layernorm.weight"))?)?,
            ffn_norm: vector(take(&format!(
                "model.layers.{i}.post_attention_layernorm.weight"
            ))?)?,
        });
    }
    let norm = vector(take("model.norm.weight")?)?;
    let output = match take("lm_head.weight") {
        Ok(t) if !config.tie_word_embeddings => Linear::Dense(t),
        _ => embedding.as_linear(),
    };
    CpuLlama::new(hp, embedding, layers, norm, output)
}

/// RoPE frequencies as candle's `llama::Cache` computes them, Llama 3
/// scaling included.
fn inv_freq(config: &Config, head_dim: usize) -> Vec<f32> {
    let plain = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / config.rope_theta.powf(i as f32 / head_dim as f32));
    match &config.rope_scaling {
        None
        | Some(Llama3RopeConfig {
            rope_type: Llama3RopeType::Default,
            ..
        }) => plain.collect(),
        Some(s) => {
            let original = s.original_max_position_embeddings as f32;
            let (low, high) = (original / s.low_freq_factor, original / s.high_freq_factor);
            plain
                .map(|freq| {
                    let wavelen = 2. * PI / freq;
                    if wavelen < high {
                        freq
                    } else if wavelen > low {
                        freq / s.factor
                    } else {
                        let smooth = (original / wavelen - s.low_freq_factor)
                            / (s.high_freq_factor - s.low_freq_factor);
                        (1. - smooth) * freq / s.factor + smooth * freq
                    }
                })
                .collect()
        }
    }
}
