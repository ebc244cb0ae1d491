//! The Llama forward pass on the CPU, on f32 buffers that live as long as
//! the model. candle's tensor ops allocate a fresh buffer per op; for a
//! model this small, one decoded token is ~25 ops in each of 30 layers and
//! the allocations (and the page faults behind them) cost more than the
//! matrix products: measured at ~0.45 ms per layer, where llama.cpp spends
//! ~0.3 ms on the whole layer (see the crate README). So the products go
//! through strut-kernels (or candle's matmul for dense weights) and the rest
//! (norms, RoPE, attention, SiLU) is written out here, as llama.cpp does.

use strut_kernels::{Activations, extend_f16, f16};

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
    logits: Vec<f32>,
    acts: Activations,
}

/// One sequence's keys and values: per layer and key/value head,
/// `[position][head_dim]`, so that attention reads one head's keys as one
/// run of memory. In f16, as llama.cpp keeps them by default: a batch's
/// attention reads every sequence's cache at each step, and at a few
/// hundred positions per sequence that is as many bytes as the weights in
/// f32. Owned by the sequence (the scheduler's), not the model, so any
/// number of sequences share one set of weights.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Layer `l`'s head `h` at `l * n_kv_head + h`.
    heads: Vec<(Vec<f16>, Vec<f16>)>,
    head_dim: usize,
    len: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Keeps the first `len` positions (a shared prefix, or what a failed
    /// pass left beyond the last good one).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        for (k, v) in &mut self.heads {
            k.truncate(self.len * self.head_dim);
            v.truncate(self.len * self.head_dim);
        }
    }

    #[cfg(test)]
    pub(crate) fn set_len_for_test(&mut self, len: usize) {
        self.len = len;
    }

    /// The first `len` positions of `other` (same model) in place of this
    /// cache's.
    pub fn copy_prefix(&mut self, other: &KvCache, len: usize) {
        let len = len.min(other.len);
        let n = len * other.head_dim;
        self.head_dim = other.head_dim;
        self.heads.resize_with(other.heads.len(), Default::default);
        for ((k, v), (ok, ov)) in self.heads.iter_mut().zip(&other.heads) {
            k.clear();
            k.extend_from_slice(&ok[..n]);
            v.clear();
            v.extend_from_slice(&ov[..n]);
        }
        self.len = len;
    }
}

/// A run of one sequence's tokens in a batched pass, at positions
/// `cache.len()..`.
pub struct Segment<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    /// Whether the logits after the last token are wanted (a prompt chunk
    /// that does not end the prompt needs none, and the vocabulary-wide
    /// output projection is the largest product of the pass).
    pub logits: bool,
    /// Every row's logits instead, one after another (a prompt's own
    /// log-probabilities need them).
    pub all_rows: bool,
}

pub struct CpuLlama {
    hp: Hparams,
    embedding: Embedding,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Linear,
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
            hp,
            embedding,
            layers,
            norm,
            output,
            scratch: Scratch::default(),
        })
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            heads: vec![Default::default(); self.layers.len() * self.hp.n_kv_head],
            head_dim: self.hp.head_dim,
            len: 0,
        }
    }

    /// Bytes of KV memory per position of a sequence.
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.layers.len() * self.hp.n_kv_head * self.hp.head_dim * size_of::<f16>()
    }

    /// One pass over several sequences at once: every segment's rows go
    /// through each weight matrix together, attention runs per sequence over
    /// its own cache. Returns, per segment, the logits after its last token
    /// where asked for.
    pub fn forward(
        &mut self,
        segments: &mut [Segment<'_>],
    ) -> candle_core::Result<Vec<Option<Vec<f32>>>> {
        let hp = &self.hp;
        let kv_dim = hp.n_kv_head * hp.head_dim;
        let q_dim = hp.n_head * hp.head_dim;
        let (dim, pairs) = (hp.hidden, hp.angles.pairs());
        let m: usize = segments.iter().map(|seg| seg.tokens.len()).sum();
        if segments.iter().any(|seg| seg.tokens.is_empty()) {
            candle_core::bail!("a segment of a forward pass has no tokens");
        }
        let s = &mut self.scratch;
        s.x.resize(m * dim, 0.0);
        s.cos.clear();
        s.sin.clear();
        let mut rows = s.x.chunks_exact_mut(dim);
        for seg in segments.iter_mut() {
            if seg.cache.heads.len() != self.layers.len() * hp.n_kv_head {
                seg.cache
                    .heads
                    .resize_with(self.layers.len() * hp.n_kv_head, Default::default);
                seg.cache.head_dim = hp.head_dim;
            }
            // Drops what a pass that failed half-way left beyond `len`.
            seg.cache.truncate(seg.cache.len);
            for (&token, row) in seg.tokens.iter().zip(&mut rows) {
                self.embedding.lookup(token, row)?;
            }
            rope_tables(hp, seg.cache.len, seg.tokens.len(), &mut s.cos, &mut s.sin);
        }
        for (l, layer) in self.layers.iter_mut().enumerate() {
            s.h.resize(m * dim, 0.0);
            rms_norm(&s.x, &layer.attn_norm, hp.eps, &mut s.h);
            s.qkv.resize(m * layer.qkv.out_dim(), 0.0);
            layer.qkv.forward(&s.h, m, &mut s.acts, &mut s.qkv)?;
            let mut qkv_rows = s.qkv.chunks_exact_mut(q_dim + 2 * kv_dim).enumerate();
            for seg in segments.iter_mut() {
                let heads = &mut seg.cache.heads[l * hp.n_kv_head..][..hp.n_kv_head];
                for (t, row) in (&mut qkv_rows).take(seg.tokens.len()) {
                    let (cos, sin) = (&s.cos[t * pairs..], &s.sin[t * pairs..]);
                    let (q, kv) = row.split_at_mut(q_dim);
                    let (k, v) = kv.split_at_mut(kv_dim);
                    rope(hp, q, cos, sin);
                    rope(hp, k, cos, sin);
                    let kv = k.chunks_exact(hp.head_dim).zip(v.chunks_exact(hp.head_dim));
                    for ((k_cache, v_cache), (k, v)) in heads.iter_mut().zip(kv) {
                        extend_f16(k_cache, k);
                        extend_f16(v_cache, v);
                    }
                }
            }
            s.attn.resize(m * q_dim, 0.0);
            let spans: Vec<Span<'_>> = segments
                .iter()
                .map(|seg| Span {
                    rows: seg.tokens.len(),
                    pos: seg.cache.len,
                    heads: &seg.cache.heads[l * hp.n_kv_head..][..hp.n_kv_head],
                })
                .collect();
            attention(hp, &s.qkv, &spans, &mut s.attn);
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
                strut_kernels::ops::swiglu(gate, up, act);
            }
            layer.down.forward(&s.act, m, &mut s.acts, &mut s.h)?;
            add(&mut s.x, &s.h);
        }
        // Only the last row of each segment that asks for logits goes
        // through the output projection.
        let mut last = 0;
        let mut wanted = Vec::new();
        for seg in segments.iter_mut() {
            seg.cache.len += seg.tokens.len();
            if seg.all_rows {
                wanted.extend(last..last + seg.tokens.len());
            } else if seg.logits {
                wanted.push(last + seg.tokens.len() - 1);
            }
            last += seg.tokens.len();
        }
        let n = wanted.len();
        s.h.resize(n * dim, 0.0);
        for (out, &row) in s.h.chunks_exact_mut(dim).zip(&wanted) {
            rms_norm(&s.x[row * dim..][..dim], &self.norm, hp.eps, out);
        }
        let vocab = self.embedding.vocab()?;
        let mut logits = Vec::with_capacity(segments.len());
        if n > 0 {
            s.logits.resize(n * vocab, 0.0);
            self.output.forward(&s.h, n, &mut s.acts, &mut s.logits)?;
        }
        let mut rows = s.logits.chunks_exact(vocab);
        for seg in segments.iter() {
            logits.push(if seg.all_rows {
                let mut all = Vec::with_capacity(seg.tokens.len() * vocab);
                for row in rows.by_ref().take(seg.tokens.len()) {
                    all.extend_from_slice(row);
                }
                Some(all)
            } else if seg.logits {
                rows.next().map(<[f32]>::to_vec)
            } else {
                None
            });
        }
        Ok(logits)
    }
}

/// One sequence's rows in a pass, and its cache (its own rows included).
pub struct Span<'a> {
    pub rows: usize,
    /// The position of the first row.
    pub pos: usize,
    /// Keys and values of each key/value head.
    pub heads: &'a [(Vec<f16>, Vec<f16>)],
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// Each row of `x` scaled to unit RMS, then by `weight`.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    for (x, out) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        strut_kernels::ops::rms_norm(x, weight, eps, out);
    }
}

/// Appends the angles of positions `pos..pos + m`.
fn rope_tables(hp: &Hparams, pos: usize, m: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
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

    fn run(model: &mut CpuLlama, cache: &mut KvCache, tokens: &[u32]) -> Vec<f32> {
        let mut segments = [Segment {
            cache,
            tokens,
            logits: true,
            all_rows: false,
        }];
        model
            .forward(&mut segments)
            .unwrap()
            .pop()
            .flatten()
            .unwrap()
    }

    /// The cache is f16: where candle's dense product gives a row other
    /// last bits for another row count (on AVX-512 hosts it does, for most
    /// outputs), a key can round to the neighbouring f16, half a part in a
    /// thousand, which moved these logits by up to 5e-4 on a Zen 4. A wrong
    /// position or cache would move them far more. (The quantized kernels of the
    /// GGUF path give a row the same bits whatever the batch.)
    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(b) {
            assert!((a - b).abs() < 2e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn a_cached_prefix_gives_the_logits_of_the_whole_prompt() {
        let mut model = tiny(32).unwrap();
        let tokens = [3, 14, 15, 9, 26];
        let whole = run(&mut model, &mut KvCache::default(), &tokens);
        let mut cache = model.new_cache();
        run(&mut model, &mut cache, &tokens[..2]);
        run(&mut model, &mut cache, &tokens[2..4]);
        let stepped = run(&mut model, &mut cache, &tokens[4..]);
        assert_eq!(whole.len(), 50);
        close(&whole, &stepped);
        // A copied prefix serves as well as a computed one.
        let mut copy = model.new_cache();
        copy.copy_prefix(&cache, 3);
        assert_eq!(copy.len(), 3);
        close(&whole, &run(&mut model, &mut copy, &tokens[3..]));
        // A token outside the vocabulary is an error, and the cache is
        // left as it was.
        let mut segments = [Segment {
            cache: &mut cache,
            tokens: &[50],
            logits: true,
            all_rows: false,
        }];
        assert!(model.forward(&mut segments).is_err());
        assert_eq!(cache.len(), 5);
    }

    #[test]
    fn sequences_in_one_pass_get_the_logits_each_gets_alone() {
        let mut model = tiny(32).unwrap();
        let prompts: [&[u32]; 3] = [&[3, 14, 15, 9], &[2, 7], &[1, 8, 2, 8, 1, 8]];
        let alone: Vec<Vec<f32>> = prompts
            .iter()
            .map(|p| run(&mut model, &mut KvCache::default(), p))
            .collect();
        // The first two decode their last token, the third prefills in one
        // go, beside a chunk that wants no logits.
        let mut caches: Vec<KvCache> = (0..4).map(|_| model.new_cache()).collect();
        run(&mut model, &mut caches[0], &prompts[0][..3]);
        run(&mut model, &mut caches[1], &prompts[1][..1]);
        let [a, b, c, d] = &mut caches[..] else {
            unreachable!()
        };
        let mut segments = [
            Segment {
                cache: a,
                tokens: &prompts[0][3..],
                logits: true,
                all_rows: false,
            },
            Segment {
                cache: b,
                tokens: &prompts[1][1..],
                logits: true,
                all_rows: false,
            },
            Segment {
                cache: d,
                tokens: &[5, 6, 7],
                logits: false,
                all_rows: false,
            },
            Segment {
                cache: c,
                tokens: prompts[2],
                logits: true,
                all_rows: false,
            },
        ];
        let batched = model.forward(&mut segments).unwrap();
        assert!(batched[2].is_none());
        close(&alone[0], batched[0].as_ref().unwrap());
        close(&alone[1], batched[1].as_ref().unwrap());
        close(&alone[2], batched[3].as_ref().unwrap());
        assert_eq!(caches[3].len(), 3);
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
