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
/// `sum` is `sum(q)` itself: the VNNI kernel multiplies Q8_0 weights shifted
/// to unsigned bytes and takes `128 * sum` back off, exactly.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(4))]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
    pub sum: i32,
    pub qs: [i8; QK],
}

pub fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

pub fn f16_round(x: f32) -> f32 {
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
        block.sum = sum;
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

/// Weight rows per interleaved group: one AVX2 register of i32 lanes, one
/// lane per row, so a group's products need no horizontal sums.
pub const ROWS: usize = 8;

/// Block `b` of eight consecutive Q4_1 rows, interleaved (llama.cpp's
/// "repacked" layouts): for `p` in 0..4, bytes `32p + 4l..32p + 4l + 4`
/// are row `l`'s `qs[4p..4p + 4]`, so one 32-byte load holds columns
/// `4p..4p + 4` of every row in its low nibbles and `16 + 4p..` in its high.
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1x8 {
    pub d: [u16; ROWS],
    pub m: [u16; ROWS],
    pub qs: [u8; ROWS * QK / 2],
}

/// Block `b` of eight consecutive Q8_0 rows: for `j` in 0..8, bytes
/// `32j + 4l..32j + 4l + 4` are row `l`'s `qs[4j..4j + 4]`.
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0x8 {
    pub d: [u16; ROWS],
    pub qs: [i8; ROWS * QK],
}

/// Rows of `per_row` blocks each, in groups of eight (the last padded with
/// zero blocks, whose products are zero), group after group.
pub fn interleave_q4_1(rows: &[BlockQ4_1], per_row: usize) -> Vec<BlockQ4_1x8> {
    let groups = (rows.len() / per_row).div_ceil(ROWS);
    let mut out = vec![BlockQ4_1x8::zeroed(); groups * per_row];
    for (i, row) in rows.chunks_exact(per_row).enumerate() {
        let (g, l) = (i / ROWS, i % ROWS);
        for (b, block) in row.iter().enumerate() {
            let packed = &mut out[g * per_row + b];
            packed.d[l] = block.d;
            packed.m[l] = block.m;
            for p in 0..4 {
                packed.qs[32 * p + 4 * l..][..4].copy_from_slice(&block.qs[4 * p..][..4]);
            }
        }
    }
    out
}

/// As `interleave_q4_1`, for Q8_0 rows.
pub fn interleave_q8_0(rows: &[BlockQ8_0], per_row: usize) -> Vec<BlockQ8_0x8> {
    let groups = (rows.len() / per_row).div_ceil(ROWS);
    let mut out = vec![BlockQ8_0x8::zeroed(); groups * per_row];
    for (i, row) in rows.chunks_exact(per_row).enumerate() {
        let (g, l) = (i / ROWS, i % ROWS);
        for (b, block) in row.iter().enumerate() {
            let packed = &mut out[g * per_row + b];
            packed.d[l] = block.d;
            for j in 0..8 {
                packed.qs[32 * j + 4 * l..][..4].copy_from_slice(&block.qs[4 * j..][..4]);
            }
        }
    }
    out
}

impl BlockQ4_1x8 {
    /// Row `l`'s block.
    pub fn row(&self, l: usize) -> BlockQ4_1 {
        let mut qs = [0u8; QK / 2];
        for p in 0..4 {
            qs[4 * p..][..4].copy_from_slice(&self.qs[32 * p + 4 * l..][..4]);
        }
        BlockQ4_1 {
            d: self.d[l],
            m: self.m[l],
            qs,
        }
    }
}

impl BlockQ8_0x8 {
    /// Row `l`'s block.
    pub fn row(&self, l: usize) -> BlockQ8_0 {
        let mut qs = [0i8; QK];
        for j in 0..8 {
            qs[4 * j..][..4].copy_from_slice(&self.qs[32 * j + 4 * l..][..4]);
        }
        BlockQ8_0 { d: self.d[l], qs }
    }
}

/// A group of eight Q4_1 rows against one activation row, in plain Rust,
/// with the SIMD kernel's order of operations (exact integer sums, then per
/// block one fused multiply-add for the scale and one for the offset), so
/// that the two agree to the last bit.
pub fn dot_q4_1x8(w: &[BlockQ4_1x8], a: &[BlockQ8]) -> [f32; ROWS] {
    let mut acc = [0f32; ROWS];
    for (w, a) in w.iter().zip(a) {
        for (l, acc) in acc.iter_mut().enumerate() {
            let row = w.row(l);
            let mut sumi = 0i32;
            for j in 0..QK / 2 {
                sumi += (row.qs[j] & 0x0F) as i32 * a.qs[j] as i32
                    + (row.qs[j] >> 4) as i32 * a.qs[j + QK / 2] as i32;
            }
            *acc = (sumi as f32).mul_add(f16_to_f32(row.d) * a.d, *acc);
            *acc = f16_to_f32(row.m).mul_add(a.s, *acc);
        }
    }
    acc
}

/// A group of eight Q8_0 rows against one activation row, in plain Rust, in
/// the SIMD kernel's order of operations.
pub fn dot_q8_0x8(w: &[BlockQ8_0x8], a: &[BlockQ8]) -> [f32; ROWS] {
    let mut acc = [0f32; ROWS];
    for (w, a) in w.iter().zip(a) {
        for (l, acc) in acc.iter_mut().enumerate() {
            let row = w.row(l);
            let sumi: i32 = row
                .qs
                .iter()
                .zip(&a.qs)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            *acc = (sumi as f32).mul_add(f16_to_f32(row.d) * a.d, *acc);
        }
    }
    acc
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

/// `scores_f16` in plain Rust.
pub fn scores_f16(q: &[f32], keys: &[f16], hd: usize, scale: f32, out: &mut [f32]) {
    let n = keys.len() / hd;
    for (qg, out) in q.chunks_exact(hd).zip(out.chunks_exact_mut(n.max(1))) {
        for (o, key) in out.iter_mut().zip(keys.chunks_exact(hd)) {
            *o = qg.iter().zip(key).map(|(a, b)| a * b.to_f32()).sum::<f32>() * scale;
        }
    }
}

/// `weighted_sum_f16` in plain Rust.
pub fn weighted_sum_f16(w: &[f32], values: &[f16], hd: usize, out: &mut [f32]) {
    out.fill(0.0);
    let n = values.len() / hd;
    for (wg, out) in w.chunks_exact(n.max(1)).zip(out.chunks_exact_mut(hd)) {
        for (&wj, value) in wg.iter().zip(values.chunks_exact(hd)) {
            for (o, v) in out.iter_mut().zip(value) {
                *o += wj * v.to_f32();
            }
        }
    }
}
