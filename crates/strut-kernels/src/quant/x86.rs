//! AVX2 versions of the kernels in `blocks`, in the llama.cpp style: 4-bit
//! weights are widened to bytes and multiplied with the 8-bit activations
//! by `maddubs` (u8 x i8 pairs into i16). Weights come in groups of eight
//! interleaved rows, one i32 lane per row: four bytes of an activation row
//! are broadcast to every lane, so a block's sums need no horizontal adds
//! and are scaled once per eight rows. A group's blocks are unpacked once
//! for all `N` activation rows.
//!
//! Each function needs AVX2, FMA and F16C; `available` says whether the CPU
//! has them (never AMX, which these machines advertise but fault on).

use std::arch::x86_64::*;

use half::f16;

use super::blocks::{BlockQ4_1x8, BlockQ8, BlockQ8_0x8, QK, ROWS};

pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Eight f16 scales, one per row of a group, as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn scales(bits: [u16; ROWS]) -> __m256 {
    _mm256_cvtph_ps(bytemuck::cast(bits))
}

/// Four activations starting at column `c` of a block, in every i32 lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn broadcast4(a: &BlockQ8, c: usize) -> __m256i {
    let bytes: [i8; 4] = [a.qs[c], a.qs[c + 1], a.qs[c + 2], a.qs[c + 3]];
    _mm256_set1_epi32(i32::from_le_bytes(bytemuck::cast(bytes)))
}

/// A group of eight Q4_1 rows against `N` activation rows: per block and
/// activation row, eight `maddubs` of 4 columns x 8 rows summed in i16
/// lanes (at most 16 products of 15 x 127 each, which fit), one widening,
/// and one fused multiply-add each for the scale and the offset; no
/// horizontal sums, each lane being a weight row.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_1x8<const N: usize>(w: &[BlockQ4_1x8], a: [&[BlockQ8]; N]) -> [[f32; ROWS]; N] {
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, block) in w.iter().enumerate() {
        let packed: [__m256i; 4] = bytemuck::cast(block.qs);
        let mut sums = [_mm256_setzero_si256(); N];
        for (p, &packed) in packed.iter().enumerate() {
            let lo = _mm256_and_si256(packed, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
            for i in 0..N {
                let act = &a[i][b];
                let plo = _mm256_maddubs_epi16(lo, broadcast4(act, 4 * p));
                let phi = _mm256_maddubs_epi16(hi, broadcast4(act, 16 + 4 * p));
                sums[i] = _mm256_add_epi16(sums[i], _mm256_add_epi16(plo, phi));
            }
        }
        let (d, m) = (scales(block.d), scales(block.m));
        for i in 0..N {
            let act = &a[i][b];
            let sumi = _mm256_cvtepi32_ps(_mm256_madd_epi16(sums[i], ones));
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(act.d));
            acc[i] = _mm256_fmadd_ps(sumi, scale, acc[i]);
            acc[i] = _mm256_fmadd_ps(m, _mm256_set1_ps(act.s), acc[i]);
        }
    }
    acc.map(bytemuck::cast)
}

/// A group of eight Q8_0 rows against `N` activation rows. `maddubs` wants
/// one unsigned operand: |w| against the activations with w's signs; a pair
/// of such products can reach 2 x 128 x 127, so each is widened to i32 at
/// once.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q8_0x8<const N: usize>(w: &[BlockQ8_0x8], a: [&[BlockQ8]; N]) -> [[f32; ROWS]; N] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, block) in w.iter().enumerate() {
        let packed: [__m256i; 8] = bytemuck::cast(block.qs);
        let mut sums = [_mm256_setzero_si256(); N];
        for (j, &qw) in packed.iter().enumerate() {
            let aw = _mm256_sign_epi8(qw, qw);
            for i in 0..N {
                let sy = _mm256_sign_epi8(broadcast4(&a[i][b], 4 * j), qw);
                let products = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sy), ones);
                sums[i] = _mm256_add_epi32(sums[i], products);
            }
        }
        let d = scales(block.d);
        for i in 0..N {
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(a[i][b].d));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[i]), scale, acc[i]);
        }
    }
    acc.map(bytemuck::cast)
}

/// `blocks::quantize_activations`, to the same bits: the largest magnitude
/// by a tree of `max`, `cvtps` rounding to nearest even as the portable
/// magic-number addition does, and two saturating packs (exact: every value
/// is within +-127) to bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn quantize_activations(x: &[f32], out: &mut [BlockQ8]) {
    let sign = _mm256_set1_ps(-0.0);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (block, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let v = [0, 8, 16, 24].map(|c| load8(&xs[c..]));
        let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
            _mm256_max_ps(m, _mm256_andnot_ps(sign, v))
        });
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
        let sums = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(sums),
            _mm256_extracti128_si256(sums, 1),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01)));
        // packs work within 128-bit halves; the permutation restores order.
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        block.qs = bytemuck::cast(_mm256_permutevar8x32_epi32(bytes, order));
        block.d = f16_round(d);
        block.s = f16_round(d * sum as f32);
        block.sum = sum;
    }
}

/// `blocks::f16_round` with F16C inline: `half`'s own conversion checks the
/// CPU on every call and was as costly as the rest of the quantizer.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_round(x: f32) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
        _mm_set_ss(x),
    )))
}

#[inline(always)]
fn load8(x: &[f32]) -> __m256 {
    bytemuck::cast(<[f32; 8]>::try_from(&x[..8]).unwrap_or_default())
}

/// `out[j] = scale * (q · keys[j * stride..][..q.len()])`; `q.len()` is a
/// multiple of 8. Four keys at a time, for four independent sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    let (hd, n) = (q.len(), out.len());
    let mut quads = out.chunks_exact_mut(4);
    for (jq, o) in (&mut quads).enumerate() {
        let mut acc = [_mm256_setzero_ps(); 4];
        for c in (0..hd).step_by(8) {
            let qv = load8(&q[c..]);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(qv, load8(&keys[(4 * jq + i) * stride + c..]), *a);
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = hsum(a) * scale;
        }
    }
    let tail = quads.into_remainder();
    let done = n - tail.len();
    for (j, o) in (done..n).zip(tail) {
        let mut acc = _mm256_setzero_ps();
        for c in (0..hd).step_by(8) {
            acc = _mm256_fmadd_ps(load8(&q[c..]), load8(&keys[j * stride + c..]), acc);
        }
        *o = hsum(acc) * scale;
    }
}

/// `out = sum_j w[j] * values[j * stride..][..out.len()]`; `out.len()` is a
/// multiple of 8. The sums stay in registers, 32 columns at a time.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn weighted_sum(w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    for (block, o) in out.chunks_mut(32).enumerate() {
        let col = block * 32;
        let mut acc = [_mm256_setzero_ps(); 4];
        let lanes = o.len() / 8;
        for (j, &wj) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wj);
            let row = &values[j * stride + col..];
            for (l, a) in acc.iter_mut().enumerate().take(lanes) {
                *a = _mm256_fmadd_ps(wv, load8(&row[8 * l..]), *a);
            }
        }
        for (l, chunk) in o.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&bytemuck::cast::<__m256, [f32; 8]>(acc[l]));
        }
    }
}

/// Eight f16 values as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load8h(x: &[f16]) -> __m256 {
    let bits: [f16; 8] = x[..8].try_into().unwrap_or([f16::ZERO; 8]);
    _mm256_cvtph_ps(bytemuck::cast(bits))
}

/// Queries of a group that share each converted key or value: three, so
/// that their sums of four keys (twelve registers) fit in AVX2's sixteen.
const SHARED: usize = 3;

/// `scores_f16`: four keys at a time against up to three queries of the
/// group, each eight columns of a key converted from f16 once for all of
/// them (converting them once per query was most of the work). Each
/// (query, key) sum runs in its own register and the four of a query are
/// reduced by a transposing tree of `hadd`s, so a score is
/// `((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))` of its lanes.
/// The first pass over the keys prefetches `values` alongside.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn scores_f16(q: &[f32], keys: &[f16], values: &[f16], hd: usize, scale: f32, out: &mut [f32]) {
    let n = keys.len() / hd;
    let mut values = values;
    for (qs, out) in q.chunks(SHARED * hd).zip(out.chunks_mut(SHARED * n)) {
        match qs.len() / hd {
            3 => scores_f16_shared::<3>(qs, keys, values, hd, scale, out),
            2 => scores_f16_shared::<2>(qs, keys, values, hd, scale, out),
            _ => scores_f16_shared::<1>(qs, keys, values, hd, scale, out),
        }
        values = &[];
    }
}

/// Brings the cache lines of `x[range]` (clamped to `x`) towards L1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch(x: &[f16], range: std::ops::Range<usize>) {
    let part = &x[range.start.min(x.len())..range.end.min(x.len())];
    let bytes = part.as_ptr().cast::<i8>();
    for offset in (0..size_of_val(part)).step_by(64) {
        // A prefetch only hints: it reads nothing and cannot fault, and
        // the address lies inside `x`.
        _mm_prefetch::<_MM_HINT_T0>(bytes.wrapping_add(offset));
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scores_f16_shared<const G: usize>(
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    hd: usize,
    scale: f32,
    out: &mut [f32],
) {
    let n = keys.len() / hd;
    // Keys past the last whole eight get a horizontal sum each, as before
    // the quads: the same bits as that kernel for every key.
    let full = n - n % 8;
    let scale_v = _mm_set1_ps(scale);
    for j0 in (0..full).step_by(4) {
        let quad = &keys[j0 * hd..(j0 + 4) * hd];
        prefetch(values, j0 * hd..(j0 + 4) * hd);
        let mut acc = [[_mm256_setzero_ps(); 4]; G];
        for c in (0..hd).step_by(8) {
            for k in 0..4 {
                let kc = load8h(&quad[k * hd + c..]);
                for (g, acc) in acc.iter_mut().enumerate() {
                    acc[k] = _mm256_fmadd_ps(load8(&q[g * hd + c..]), kc, acc[k]);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            let t0 = _mm256_hadd_ps(acc[0], acc[1]);
            let t1 = _mm256_hadd_ps(acc[2], acc[3]);
            let u = _mm256_hadd_ps(t0, t1);
            let sums = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
            let v: [f32; 4] = bytemuck::cast(_mm_mul_ps(sums, scale_v));
            out[g * n + j0..][..4].copy_from_slice(&v);
        }
    }
    prefetch(values, full * hd..n * hd);
    for (j, key) in keys.chunks_exact(hd).enumerate().skip(full) {
        for (g, qg) in q.chunks_exact(hd).enumerate() {
            let mut acc = _mm256_setzero_ps();
            for (qc, kc) in qg.chunks_exact(8).zip(key.chunks_exact(8)) {
                acc = _mm256_fmadd_ps(load8(qc), load8h(kc), acc);
            }
            out[g * n + j] = hsum(acc) * scale;
        }
    }
}

/// `weighted_sum_f16`: sixteen columns at a time for up to three queries,
/// each value's columns converted once for all of them; every column sums
/// its values in order, in a register. The first pass prefetches `next`.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn weighted_sum_f16(w: &[f32], values: &[f16], next: &[f16], hd: usize, out: &mut [f32]) {
    let n = values.len() / hd;
    let mut next = next;
    for (ws, outs) in w.chunks(SHARED * n).zip(out.chunks_mut(SHARED * hd)) {
        match outs.len() / hd {
            3 => weighted_sum_f16_shared::<3>(ws, values, next, hd, outs),
            2 => weighted_sum_f16_shared::<2>(ws, values, next, hd, outs),
            _ => weighted_sum_f16_shared::<1>(ws, values, next, hd, outs),
        }
        next = &[];
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_sum_f16_shared<const G: usize>(
    w: &[f32],
    values: &[f16],
    next: &[f16],
    hd: usize,
    out: &mut [f32],
) {
    let n = values.len() / hd;
    for c0 in (0..hd).step_by(16) {
        let lanes = ((hd - c0) / 8).min(2);
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for (j, value) in values.chunks_exact(hd).enumerate() {
            if c0 == 0 {
                prefetch(next, j * hd..(j + 1) * hd);
            }
            let cols = &value[c0..];
            let vc = [load8h(cols), load8h(&cols[8 * (lanes - 1)..])];
            for (g, acc) in acc.iter_mut().enumerate() {
                let wv = _mm256_set1_ps(w[g * n + j]);
                for (a, &v) in acc.iter_mut().zip(&vc).take(lanes) {
                    *a = _mm256_fmadd_ps(wv, v, *a);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            for (l, a) in acc.iter().enumerate().take(lanes) {
                let lane: [f32; 8] = bytemuck::cast(*a);
                out[g * hd + c0 + 8 * l..][..8].copy_from_slice(&lane);
            }
        }
    }
}
