//! BERT's encoder on the CPU, on f32 buffers reused from batch to batch.
//! Sequences are not padded: the tokens of every sequence in a batch sit in
//! one matrix for the linear layers (nearly all of the work), and attention
//! runs per sequence over its own tokens, so a batch of mixed lengths costs
//! the sum of its lengths rather than count x longest, and needs no mask.

use std::sync::Mutex;

use strut_kernels::ops::{self, Activation};
use strut_kernels::{Dense, Packed, par_chunks};

use crate::BarrierPool;

pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

pub struct Layer {
    /// Query, key and value side by side: `[q | k | v]` per token.
    pub qkv: Dense,
    pub attn_out: Dense,
    pub attn_norm: Norm,
    pub inter: Dense,
    pub out: Dense,
    pub out_norm: Norm,
}

#[derive(Debug, Clone, Copy)]
pub struct Hparams {
    pub hidden: usize,
    pub heads: usize,
    pub eps: f32,
    pub act: Activation,
    pub max_positions: usize,
}

pub struct Embeddings {
    /// `[vocab, hidden]`.
    pub word: Vec<f32>,
    /// `[max_positions, hidden]`.
    pub position: Vec<f32>,
    /// Token type 0's row: sentence embeddings have one segment.
    pub token_type: Vec<f32>,
    pub norm: Norm,
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    h: Vec<f32>,
    inter: Vec<f32>,
    packed: Packed,
}

pub struct CpuBert {
    hp: Hparams,
    emb: Embeddings,
    layers: Vec<Layer>,
    scratch: Scratch,
}

impl CpuBert {
    /// Checks every shape against the hyperparameters, so that a malformed
    /// checkpoint fails at load rather than in a request.
    pub fn new(hp: Hparams, emb: Embeddings, layers: Vec<Layer>) -> candle_core::Result<Self> {
        let h = hp.hidden;
        if hp.heads == 0 || !h.is_multiple_of(hp.heads) {
            candle_core::bail!("{h} hidden units do not split into {} heads", hp.heads);
        }
        let vectors = [
            (
                "position embeddings",
                emb.position.len(),
                hp.max_positions * h,
            ),
            ("token type embedding", emb.token_type.len(), h),
            ("embedding norm", emb.norm.weight.len(), h),
            ("embedding norm bias", emb.norm.bias.len(), h),
        ];
        for (what, got, want) in vectors {
            if got != want {
                candle_core::bail!("{what}: {got} values, expected {want}");
            }
        }
        if emb.word.is_empty() || !emb.word.len().is_multiple_of(h) {
            candle_core::bail!(
                "word embeddings: {} values, not rows of {h}",
                emb.word.len()
            );
        }
        for (i, l) in layers.iter().enumerate() {
            let i_dim = l.inter.out_features();
            let shapes = [
                ("query/key/value", &l.qkv, (3 * h, h)),
                ("attention output", &l.attn_out, (h, h)),
                ("intermediate", &l.inter, (i_dim, h)),
                ("output", &l.out, (h, i_dim)),
            ];
            for (what, d, want) in shapes {
                if (d.out_features(), d.in_features()) != want {
                    candle_core::bail!(
                        "layer {i} {what} is {} x {}, expected {} x {}",
                        d.out_features(),
                        d.in_features(),
                        want.0,
                        want.1
                    );
                }
            }
            for n in [&l.attn_norm, &l.out_norm] {
                if n.weight.len() != h || n.bias.len() != h {
                    candle_core::bail!("layer {i}: a layer norm is not {h} wide");
                }
            }
        }
        Ok(Self {
            hp,
            emb,
            layers,
            scratch: Scratch::default(),
        })
    }

    /// Mean-pooled, L2-normalised embeddings of token sequences.
    pub fn embed(&mut self, seqs: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let (h, vocab) = (self.hp.hidden, self.emb.word.len() / self.hp.hidden);
        let mut spans = Vec::with_capacity(seqs.len());
        let mut tokens = Vec::new();
        for (i, seq) in seqs.iter().enumerate() {
            if seq.is_empty() || seq.len() > self.hp.max_positions {
                candle_core::bail!(
                    "sequence {i} has {} tokens; 1 to {} fit",
                    seq.len(),
                    self.hp.max_positions
                );
            }
            if let Some(&id) = seq.iter().find(|&&id| id as usize >= vocab) {
                candle_core::bail!("token id {id} is outside the vocabulary of {vocab}");
            }
            spans.push(tokens.len()..tokens.len() + seq.len());
            tokens.extend(seq.iter().enumerate().map(|(p, &id)| (id as usize, p)));
        }
        let t = tokens.len();
        let mut s = std::mem::take(&mut self.scratch);
        s.x.resize(t * h, 0.0);
        let emb = &self.emb;
        par_chunks(&BarrierPool, &mut s.x, h, |row, x| {
            let (id, pos) = tokens[row];
            let (w, p) = (&emb.word[id * h..][..h], &emb.position[pos * h..][..h]);
            for (((v, w), p), tt) in x.iter_mut().zip(w).zip(p).zip(&emb.token_type) {
                *v = w + p + tt;
            }
            ops::add_layer_norm(x, &[], &emb.norm.weight, &emb.norm.bias, self.hp.eps);
        });
        for layer in &self.layers {
            self.layer(layer, &spans, &mut s);
        }
        let out = spans
            .iter()
            .map(|span| pool(&s.x[span.start * h..span.end * h], h))
            .collect();
        self.scratch = s;
        Ok(out)
    }

    fn layer(&self, l: &Layer, spans: &[std::ops::Range<usize>], s: &mut Scratch) {
        let (h, eps) = (self.hp.hidden, self.hp.eps);
        let t = s.x.len() / h;
        s.qkv.resize(t * 3 * h, 0.0);
        s.ctx.resize(t * h, 0.0);
        s.h.resize(t * h, 0.0);
        s.inter.resize(t * l.inter.out_features(), 0.0);

        s.packed.pack(&BarrierPool, &s.x, t);
        l.qkv.forward(&BarrierPool, &s.packed, &mut s.qkv, None);
        self.attention(&s.qkv, spans, &mut s.ctx);
        s.packed.pack(&BarrierPool, &s.ctx, t);
        l.attn_out.forward(&BarrierPool, &s.packed, &mut s.h, None);
        residual_norm(&mut s.x, &s.h, &l.attn_norm, eps);

        s.packed.pack(&BarrierPool, &s.x, t);
        l.inter
            .forward(&BarrierPool, &s.packed, &mut s.inter, Some(self.hp.act));
        s.packed.pack(&BarrierPool, &s.inter, t);
        l.out.forward(&BarrierPool, &s.packed, &mut s.h, None);
        residual_norm(&mut s.x, &s.h, &l.out_norm, eps);
    }

    /// Scaled dot-product attention of each sequence over itself, one work
    /// item per (sequence, head).
    fn attention(&self, qkv: &[f32], spans: &[std::ops::Range<usize>], ctx: &mut [f32]) {
        let (h, heads) = (self.hp.hidden, self.hp.heads);
        let hd = h / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let slots: Vec<Mutex<&mut [f32]>> = ctx.chunks_exact_mut(hd).map(Mutex::new).collect();
        candle_core::utils::barrier_pool().execute_chunked(spans.len() * heads, |range| {
            let mut weights = Vec::new();
            for item in range {
                let (span, head) = (&spans[item / heads], item % heads);
                let base = span.start * 3 * h + head * hd;
                let (keys, values) = (&qkv[base + h..], &qkv[base + 2 * h..]);
                weights.resize(span.len(), 0.0);
                for (i, tok) in span.clone().enumerate() {
                    let q = &qkv[base + i * 3 * h..][..hd];
                    strut_kernels::scores(q, keys, 3 * h, scale, &mut weights);
                    ops::softmax(&mut weights);
                    let mut out = slots[tok * heads + head]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    strut_kernels::weighted_sum(&weights, values, 3 * h, &mut out);
                }
            }
        });
    }
}

/// `x = LayerNorm(x + res)`, row by row across the pool.
fn residual_norm(x: &mut [f32], res: &[f32], norm: &Norm, eps: f32) {
    let h = norm.weight.len();
    par_chunks(&BarrierPool, x, h, |row, x| {
        ops::add_layer_norm(x, &res[row * h..][..h], &norm.weight, &norm.bias, eps)
    });
}

/// sentence-transformers' mean pooling, then L2 normalisation.
fn pool(rows: &[f32], h: usize) -> Vec<f32> {
    let mut mean = vec![0f32; h];
    for row in rows.chunks_exact(h) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let n = (rows.len() / h) as f32;
    mean.iter_mut().for_each(|m| *m /= n);
    // Normalize divides by max(norm, 1e-12), as torch's F.normalize does.
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    mean.iter_mut().for_each(|m| *m /= norm);
    mean
}
