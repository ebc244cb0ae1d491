//! GGML block layouts as they lie in a GGUF file, the 8-bit form that
//! activations are quantized to before a product, and the portable dot
//! products: the reference the SIMD kernels are tested against.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Values per block, for every format here.
pub const QK: usize = 32;

/// 32 weights as 4-bit unsigned `q`, read as `q * d + m`: the low nibbles
/// hold elements 0..16, the high nibbles 16..32.
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; QK / 2],
}

/// 32 weights as signed 8-bit `q`, read as `q * d`.
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK],
}

/// 32 activations as signed 8-bit `q`, read as `q * d`, with `s = d * sum(q)`
/// so that a Q4_1 block's offset `m` costs one multiply per block. The same
/// form serves Q8_0 weights, which ignore `s` (llama.cpp's Q8_1 and Q8_0).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(4))]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; QK],
}

pub fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

fn f16_round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Quantizes `x` (a multiple of 32 long) to one `BlockQ8` per 32 values,
/// rounding exactly as llama.cpp's AVX2 `quantize_row_q8_1` does (scale
/// `127 / max`, ties to even, both scales through f16): with the same
/// integers, our products are the same as its to the last bit, which keeps
/// greedy decoding on its path.
pub fn quantize_activations(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (block, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in block.qs.iter_mut().zip(xs) {
            let r = round_ties_even(v * id);
            *q = r as i8;
            sum += r;
        }
        block.d = f16_round(d);
        block.s = f16_round(d * sum as f32);
    }
}

/// `x` rounded to an integer, ties to even, for |x| <= 2^22: past 1.5 * 2^23
/// an f32 has no fraction bits left, so the addition rounds in the FPU's
/// default (ties-to-even) mode. `f32::round_ties_even` is a libm call on
/// x86-64 without SSE4.1, and showed up in profiles.
fn round_ties_even(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    ((x + MAGIC) - MAGIC) as i32
}

impl BlockQ4_1 {
    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (f16_to_f32(self.d), f16_to_f32(self.m));
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = (q & 0x0F) as f32 * d + m;
            out[j + QK / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

impl BlockQ8_0 {
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }

    /// llama.cpp's `quantize_row_q8_0`.
    pub fn quantize(xs: &[f32]) -> Self {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (v * id).round() as i8;
        }
        Self {
            d: f16::from_f32(d).to_bits(),
            qs,
        }
    }
}

/// One weight row against one activation row, in plain Rust.
pub fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            sumi += (w.qs[j] & 0x0F) as i32 * a.qs[j] as i32
                + (w.qs[j] >> 4) as i32 * a.qs[j + QK / 2] as i32;
        }
        sum += sumi as f32 * f16_to_f32(w.d) * a.d + f16_to_f32(w.m) * a.s;
    }
    sum
}

/// One weight row against one activation row, in plain Rust.
pub fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let sumi: i32 =
            w.qs.iter()
                .zip(&a.qs)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
        sum += sumi as f32 * f16_to_f32(w.d) * a.d;
    }
    sum
}

/// `out[j] = scale * (q · keys[j * stride..][..q.len()])`.
pub fn scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        let k = &keys[j * stride..][..q.len()];
        *o = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
    }
}

/// `out = sum_j w[j] * values[j * stride..][..out.len()]`.
pub fn weighted_sum(w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    out.fill(0.0);
    for (j, &wj) in w.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(&values[j * stride..]) {
            *o += wj * v;
        }
    }
}
