//! The Llama forward pass on the CPU, on f32 buffers that live as long as
//! the model. candle's tensor ops allocate a fresh buffer per op; for a
//! model this small, one decoded token is ~25 ops in each of 30 layers and
//! the allocations (and the page faults behind them) cost more than the
//! matrix products: measured at ~0.45 ms per layer, where llama.cpp spends
//! ~0.3 ms on the whole layer (see the crate README). So the products go
//! through strut-kernels (or candle's matmul for dense weights) and the rest
//! (norms, RoPE, attention, SiLU) is written out here, as llama.cpp does.

use strut_kernels::Activations;

use super::attention::attention;
use super::linear::{Embedding, Linear, Projection};

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// (2i, 2i+1): GGUF files, whose q/k rows the converter permuted back.
    Interleaved,
    /// (i, i + d/2): Hugging Face checkpoints.
    Halves,
}

/// The angle of each rotated pair at a position, computed the way the
/// reference implementation of each format does, to its rounding.
#[derive(Debug, Clone)]
pub enum RopeAngles {
    /// llama.cpp's recurrence: `p`, `p * step`, `p * step * step`, ...
    Recurrence { step: f32, pairs: usize },
    /// candle's `p * inv_freq[i]`.
    Frequencies(Vec<f32>),
}

impl RopeAngles {
    fn pairs(&self) -> usize {
        match self {
            RopeAngles::Recurrence { pairs, .. } => *pairs,
            RopeAngles::Frequencies(f) => f.len(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hparams {
    pub hidden: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub eps: f32,
    /// One angle per rotated pair (the head's first `2 * pairs` dims).
    pub angles: RopeAngles,
    pub rope: RopeStyle,
}

pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub qkv: Projection,
    pub wo: Linear,
    pub ffn_norm: Vec<f32>,
    pub gate_up: Projection,
    pub down: Linear,
}

/// Buffers reused by every forward pass.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    acts: Activations,
}

pub struct CpuLlama {
    hp: Hparams,
    embedding: Embedding,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Linear,
    /// Per layer: keys and values of every position so far, `[pos][kv_dim]`.
    cache: Vec<(Vec<f32>, Vec<f32>)>,
    cached: usize,
    scratch: Scratch,
}

impl CpuLlama {
    /// Checks that every weight has the shape the hyperparameters imply, so
    /// that a malformed file fails here rather than in a request.
    pub fn new(
        hp: Hparams,
        embedding: Embedding,
        layers: Vec<Layer>,
        norm: Vec<f32>,
        output: Linear,
    ) -> candle_core::Result<Self> {
        let (dim, hd) = (hp.hidden, hp.head_dim);
        let (q_dim, kv_dim) = (hp.n_head * hd, hp.n_kv_head * hd);
        let expect = |what: &str, got: (usize, usize), want: (usize, usize)| {
            if got == want {
                Ok(())
            } else {
                Err(candle_core::Error::Msg(format!(
                    "{what} is {} x {}, expected {} x {}",
                    got.0, got.1, want.0, want.1
                )))
            }
        };
        if hp.n_kv_head == 0
            || !hp.n_head.is_multiple_of(hp.n_kv_head)
            || 2 * hp.angles.pairs() > hd
        {
            candle_core::bail!(
                "{} heads of {hd} cannot share {} key/value heads with {} rotated pairs",
                hp.n_head,
                hp.n_kv_head,
                hp.angles.pairs()
            );
        }
        let vocab = embedding.vocab()?;
        expect("the embedding", (vocab, embedding.dim()?), (vocab, dim))?;
        expect("the output projection", output.dims()?, (vocab, dim))?;
        expect("the output norm", (norm.len(), 1), (dim, 1))?;
        for (i, l) in layers.iter().enumerate() {
            let ffn = l.down.dims()?.1;
            let what = |w: &str| format!("layer {i}'s {w}");
            expect(&what("q, k, v"), l.qkv.dims()?, (q_dim + 2 * kv_dim, dim))?;
            expect(&what("output"), l.wo.dims()?, (dim, q_dim))?;
            expect(&what("gate and up"), l.gate_up.dims()?, (2 * ffn, dim))?;
            expect(&what("down"), l.down.dims()?, (dim, ffn))?;
            expect(
                &what("norms"),
                (l.attn_norm.len(), l.ffn_norm.len()),
                (dim, dim),
            )?;
        }
        Ok(Self {
            cache: layers.iter().map(|_| Default::default()).collect(),
            hp,
            embedding,
            layers,
            norm,
            output,
            cached: 0,
            scratch: Scratch::default(),
        })
    }

    /// Logits for the token after `tokens`, which sit at positions `pos..`;
    /// `pos` 0 starts a new sequence, anything else continues the cached one.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        if pos == 0 {
            self.cached = 0;
        }
        if pos != self.cached || tokens.is_empty() {
            candle_core::bail!(
                "{} tokens at position {pos}, but {} positions are cached",
                tokens.len(),
                self.cached
            );
        }
        let hp = &self.hp;
        // Drops what a pass that failed half-way left beyond `cached`.
        let kv_dim = hp.n_kv_head * hp.head_dim;
        for (k, v) in &mut self.cache {
            k.truncate(pos * kv_dim);
            v.truncate(pos * kv_dim);
        }
        let (m, dim) = (tokens.len(), hp.hidden);
        let s = &mut self.scratch;
        s.x.resize(m * dim, 0.0);
        for (row, &token) in s.x.chunks_exact_mut(dim).zip(tokens) {
            self.embedding.lookup(token, row)?;
        }
        rope_tables(hp, pos, m, &mut s.cos, &mut s.sin);
        for (layer, (k_cache, v_cache)) in self.layers.iter_mut().zip(&mut self.cache) {
            s.h.resize(m * dim, 0.0);
            rms_norm(&s.x, &layer.attn_norm, hp.eps, &mut s.h);
            s.qkv.resize(m * layer.qkv.out_dim(), 0.0);
            layer.qkv.forward(&s.h, m, &mut s.acts, &mut s.qkv)?;
            let q_dim = hp.n_head * hp.head_dim;
            for (t, row) in s.qkv.chunks_exact_mut(q_dim + 2 * kv_dim).enumerate() {
                let pairs = hp.angles.pairs();
                let (cos, sin) = (&s.cos[t * pairs..], &s.sin[t * pairs..]);
                let (q, kv) = row.split_at_mut(q_dim);
                let (k, v) = kv.split_at_mut(kv_dim);
                rope(hp, q, cos, sin);
                rope(hp, k, cos, sin);
                k_cache.extend_from_slice(k);
                v_cache.extend_from_slice(v);
            }
            s.attn.resize(m * q_dim, 0.0);
            attention(hp, &s.qkv, k_cache, v_cache, pos, &mut s.attn);
            layer.wo.forward(&s.attn, m, &mut s.acts, &mut s.h)?;
            add(&mut s.x, &s.h);
            rms_norm(&s.x, &layer.ffn_norm, hp.eps, &mut s.h);
            let ffn = layer.gate_up.out_dim() / 2;
            s.gate_up.resize(m * 2 * ffn, 0.0);
            layer
                .gate_up
                .forward(&s.h, m, &mut s.acts, &mut s.gate_up)?;
            s.act.resize(m * ffn, 0.0);
            for (act, gu) in s
                .act
                .chunks_exact_mut(ffn)
                .zip(s.gate_up.chunks_exact(2 * ffn))
            {
                let (gate, up) = gu.split_at(ffn);
                for ((a, &g), &u) in act.iter_mut().zip(gate).zip(up) {
                    *a = g / (1.0 + (-g).exp()) * u;
                }
            }
            layer.down.forward(&s.act, m, &mut s.acts, &mut s.h)?;
            add(&mut s.x, &s.h);
        }
        self.cached = pos + m;
        // Only the last position's logits are wanted: one row, not `m`.
        let last = &s.x[(m - 1) * dim..];
        s.h.resize(dim, 0.0);
        rms_norm(last, &self.norm, hp.eps, &mut s.h);
        let mut logits = vec![0f32; self.embedding.vocab()?];
        self.output.forward(&s.h, 1, &mut s.acts, &mut logits)?;
        Ok(logits)
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// Each row of `x` scaled to unit RMS, then by `weight` (sums in f64, as
/// llama.cpp does).
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    for (x, out) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
        let scale = 1.0 / ((sum / dim as f64 + eps as f64) as f32).sqrt();
        for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
            *o = v * scale * w;
        }
    }
}

fn rope_tables(hp: &Hparams, pos: usize, m: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
    cos.clear();
    sin.clear();
    for p in pos..pos + m {
        match &hp.angles {
            RopeAngles::Recurrence { step, pairs } => {
                let mut angle = p as f32;
                for _ in 0..*pairs {
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                    angle *= step;
                }
            }
            RopeAngles::Frequencies(freqs) => {
                for &f in freqs {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
    }
}

/// Rotates every head of `x` (one position) by the angles in `cos`/`sin`.
fn rope(hp: &Hparams, x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let pairs = hp.angles.pairs();
    for head in x.chunks_exact_mut(hp.head_dim) {
        for i in 0..pairs {
            let (a, b) = match hp.rope {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Halves => (i, i + pairs),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos[i] - x1 * sin[i];
            head[b] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn dense(rows: usize, cols: usize, seed: usize) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 + seed * 13) as f32 * 0.618).sin() * 0.3)
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    /// A two-layer model with random dense weights: 4 heads of 8 sharing 2
    /// key/value heads, hidden 32, ffn 48, vocabulary 50.
    fn tiny(wo_cols: usize) -> candle_core::Result<CpuLlama> {
        let hp = Hparams {
            hidden: 32,
            n_head: 4,
            n_kv_head: 2,
            head_dim: 8,
            eps: 1e-5,
            angles: RopeAngles::Recurrence {
                step: 10_000f32.powf(-2.0 / 8.0),
                pairs: 4,
            },
            rope: RopeStyle::Interleaved,
        };
        let layers = (0..2)
            .map(|l| {
                Ok(Layer {
                    attn_norm: vec![1.0; 32],
                    qkv: Projection::of(vec![Linear::Dense(dense(64, 32, l))])?,
                    wo: Linear::Dense(dense(32, wo_cols, l + 10)),
                    ffn_norm: vec![1.0; 32],
                    gate_up: Projection::of(vec![
                        Linear::Dense(dense(48, 32, l + 20)),
                        Linear::Dense(dense(48, 32, l + 30)),
                    ])?,
                    down: Linear::Dense(dense(32, 48, l + 40)),
                })
            })
            .collect::<candle_core::Result<_>>()?;
        let embedding = Embedding::Dense(dense(50, 32, 99));
        let output = embedding.as_linear();
        CpuLlama::new(hp, embedding, layers, vec![1.0; 32], output)
    }

    #[test]
    fn a_cached_prefix_gives_the_logits_of_the_whole_prompt() {
        let mut model = tiny(32).unwrap();
        let tokens = [3, 14, 15, 9, 26];
        let whole = model.forward(&tokens, 0).unwrap();
        model.forward(&tokens[..2], 0).unwrap();
        model.forward(&tokens[2..4], 2).unwrap();
        let stepped = model.forward(&tokens[4..], 4).unwrap();
        assert_eq!(whole.len(), 50);
        for (a, b) in whole.iter().zip(&stepped) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // A gap in positions, or a token outside the vocabulary, is an error.
        let err = model.forward(&[1], 9).unwrap_err();
        assert!(err.to_string().contains("5 positions are cached"), "{err}");
        assert!(model.forward(&[50], 0).is_err());
    }

    #[test]
    fn weights_of_the_wrong_shape_are_refused_at_load() {
        let err = tiny(16).err().unwrap();
        assert!(
            err.to_string()
                .contains("layer 0's output is 32 x 16, expected 32 x 32"),
            "{err}"
        );
    }
}
