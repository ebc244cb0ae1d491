//! BERT-family encoders for sentence embeddings. On the CPU in f32, strut's
//! own forward pass ([`cpu`]): weights packed once for an AVX-512 kernel,
//! no padding, no per-op allocation. On a GPU, or in another dtype,
//! candle's `BertModel`. Both give sentence-transformers' mean-pooled,
//! L2-normalised vectors.

mod cpu;

use std::collections::HashMap;

use candle_core::{D, DType, Device, Storage, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct};
use strut_kernels::Dense;
use strut_kernels::ops::Activation;

use crate::batcher::Vectors;
use crate::device::Placement;
use cpu::{CpuBert, Embeddings, Hparams, Layer, Norm};

// One per loaded model, moved once into its thread: its size is moot.
#[allow(clippy::large_enum_variant)]
pub enum Encoder {
    Cpu(CpuBert),
    Candle(BertModel, Device),
}

impl Encoder {
    /// Builds the encoder from the checkpoint's tensors, which it consumes:
    /// the CPU path repacks them and lets candle's copies go.
    pub fn load(
        tensors: HashMap<String, Tensor>,
        config: &Config,
        placement: &Placement,
    ) -> candle_core::Result<Self> {
        if placement.device.is_cpu() && placement.dtype == DType::F32 {
            return Ok(Encoder::Cpu(cpu_bert(tensors, config)?));
        }
        let vb = VarBuilder::from_tensors(tensors, placement.dtype, &placement.device);
        let model = BertModel::load(vb, config)?;
        Ok(Encoder::Candle(model, placement.device.clone()))
    }

    pub fn embed(&mut self, seqs: &[Vec<u32>]) -> candle_core::Result<Vectors> {
        match self {
            Encoder::Cpu(bert) => bert.embed(seqs),
            Encoder::Candle(model, device) => candle_embed(model, device, seqs),
        }
    }
}

/// The checkpoint's names, with or without a `bert.` (or model type) prefix
/// and with either LayerNorm naming, as candle's loader accepts them.
struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Weights {
    fn tensor(&mut self, name: &str) -> candle_core::Result<Tensor> {
        let key = format!("{}{name}", self.prefix);
        let t = self
            .tensors
            .remove(&key)
            .ok_or_else(|| candle_core::Error::Msg(format!("the checkpoint has no `{key}`")))?;
        t.to_dtype(DType::F32)?.contiguous()
    }

    fn take(&mut self, name: &str) -> candle_core::Result<Vec<f32>> {
        self.tensor(name)?.flatten_all()?.to_vec1()
    }

    fn norm(&mut self, name: &str) -> candle_core::Result<Norm> {
        let modern = format!("{}{name}.weight", self.prefix);
        let (w, b) = if self.tensors.contains_key(&modern) {
            ("weight", "bias")
        } else {
            ("gamma", "beta")
        };
        Ok(Norm {
            weight: self.take(&format!("{name}.{w}"))?,
            bias: self.take(&format!("{name}.{b}"))?,
        })
    }

    /// Packs the named layers' weights, stacked, into one layer, reading
    /// them in place: a copy of each would stay behind as heap that the
    /// allocator does not hand back (measured: +9% resident memory).
    fn dense(&mut self, names: &[&str], inp: usize) -> candle_core::Result<Dense> {
        let mut weights = Vec::new();
        let mut bias = Vec::new();
        for name in names {
            weights.push(self.tensor(&format!("{name}.weight"))?);
            bias.extend(self.take(&format!("{name}.bias"))?);
        }
        let guards: Vec<_> = weights.iter().map(Tensor::storage_and_layout).collect();
        let parts =
            guards
                .iter()
                .map(|(storage, layout)| match &**storage {
                    Storage::Cpu(cpu) => Ok(&cpu.as_slice::<f32>()?[layout.start_offset()..]
                        [..layout.shape().elem_count()]),
                    _ => candle_core::bail!("the CPU encoder got weights off the CPU"),
                })
                .collect::<candle_core::Result<Vec<&[f32]>>>()?;
        Dense::new(&parts, &bias, inp).map_err(candle_core::Error::wrap)
    }
}

fn cpu_bert(tensors: HashMap<String, Tensor>, config: &Config) -> candle_core::Result<CpuBert> {
    let probe = "embeddings.word_embeddings.weight";
    let prefix = ["".to_string(), "bert.".to_string()]
        .into_iter()
        .chain(config.model_type.iter().map(|t| format!("{t}.")))
        .find(|p| tensors.contains_key(&format!("{p}{probe}")))
        .ok_or_else(|| candle_core::Error::Msg(format!("the checkpoint has no `{probe}`")))?;
    let mut w = Weights { tensors, prefix };
    let h = config.hidden_size;
    let hp = Hparams {
        hidden: h,
        heads: config.num_attention_heads,
        eps: config.layer_norm_eps as f32,
        act: match config.hidden_act {
            HiddenAct::Gelu => Activation::GeluErf,
            HiddenAct::GeluApproximate => Activation::GeluTanh,
            HiddenAct::Relu => Activation::Relu,
        },
        max_positions: config.max_position_embeddings,
    };
    let mut token_type = w.take("embeddings.token_type_embeddings.weight")?;
    token_type.truncate(h);
    let emb = Embeddings {
        word: w.take(probe)?,
        position: w.take("embeddings.position_embeddings.weight")?,
        token_type,
        norm: w.norm("embeddings.LayerNorm")?,
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        let qkv = ["query", "key", "value"].map(|n| format!("{p}.attention.self.{n}"));
        layers.push(Layer {
            qkv: w.dense(&qkv.each_ref().map(String::as_str), h)?,
            attn_out: w.dense(&[&format!("{p}.attention.output.dense")], h)?,
            attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"))?,
            inter: w.dense(&[&format!("{p}.intermediate.dense")], h)?,
            out: w.dense(&[&format!("{p}.output.dense")], config.intermediate_size)?,
            out_norm: w.norm(&format!("{p}.output.LayerNorm"))?,
        });
    }
    CpuBert::new(hp, emb, layers)
}

/// candle's forward: one padded batch with an attention mask, then mean
/// pooling over real tokens and L2 normalisation.
fn candle_embed(
    model: &BertModel,
    device: &Device,
    seqs: &[Vec<u32>],
) -> candle_core::Result<Vectors> {
    let longest = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(seqs.len() * longest);
    let mut mask = Vec::with_capacity(seqs.len() * longest);
    for seq in seqs {
        ids.extend(
            seq.iter()
                .copied()
                .chain(std::iter::repeat_n(0, longest - seq.len())),
        );
        mask.extend((0..longest).map(|i| u32::from(i < seq.len())));
    }
    let shape = (seqs.len(), longest);
    let ids = Tensor::from_vec(ids, shape, device)?;
    let mask = Tensor::from_vec(mask, shape, device)?;
    let token_types = ids.zeros_like()?;
    let hidden = model
        .forward(&ids, &token_types, Some(&mask))?
        .to_dtype(DType::F32)?;
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    mean.broadcast_div(&norm)?.to_vec2()
}
