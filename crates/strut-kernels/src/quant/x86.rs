//! AVX2 versions of the kernels in `blocks`, in the llama.cpp style: 4-bit
//! weights are widened to bytes, multiplied with the 8-bit activations by
//! `maddubs` (u8 x i8 pairs into i16), summed into i32 lanes and scaled into
//! f32 accumulators once per block. A weight block is unpacked once for all
//! `N` activation rows, which is what makes prompt processing cheaper than
//! `N` separate products.
//!
//! Each function needs AVX2, FMA and F16C; `available` says whether the CPU
//! has them (never AMX, which these machines advertise but fault on).

use std::arch::x86_64::*;

use super::blocks::{BlockQ4_1, BlockQ8, BlockQ8_0};

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

/// Both f16 scales of a Q4_1 block as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales(d: u16, m: u16) -> (f32, f32) {
    let both = _mm_cvtph_ps(_mm_cvtsi32_si128((d as u32 | (m as u32) << 16) as i32));
    (_mm_cvtss_f32(both), _mm_cvtss_f32(_mm_movehdup_ps(both)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn activations(a: &BlockQ8) -> __m256i {
    bytemuck::cast(a.qs)
}

/// Q4_1 weight row `w` against `N` activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_1<const N: usize>(w: &[BlockQ4_1], a: [&[BlockQ8]; N]) -> [f32; N] {
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut offsets = [0f32; N];
    for (b, block) in w.iter().enumerate() {
        let packed: __m128i = bytemuck::cast(block.qs);
        let qx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
        let (d, m) = scales(block.d, block.m);
        for i in 0..N {
            let act = &a[i][b];
            let products = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, activations(act)), ones);
            acc[i] = _mm256_fmadd_ps(
                _mm256_set1_ps(d * act.d),
                _mm256_cvtepi32_ps(products),
                acc[i],
            );
            offsets[i] += m * act.s;
        }
    }
    let mut out = [0f32; N];
    for i in 0..N {
        out[i] = hsum(acc[i]) + offsets[i];
    }
    out
}

/// Q8_0 weight row `w` against `N` activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q8_0<const N: usize>(w: &[BlockQ8_0], a: [&[BlockQ8]; N]) -> [f32; N] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, block) in w.iter().enumerate() {
        let qx: __m256i = bytemuck::cast(block.qs);
        // maddubs wants one unsigned operand: |x| against y with x's sign.
        let ax = _mm256_sign_epi8(qx, qx);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(block.d as i32)));
        for i in 0..N {
            let act = &a[i][b];
            let sy = _mm256_sign_epi8(activations(act), qx);
            let products = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
            acc[i] = _mm256_fmadd_ps(
                _mm256_set1_ps(d * act.d),
                _mm256_cvtepi32_ps(products),
                acc[i],
            );
        }
    }
    let mut out = [0f32; N];
    for i in 0..N {
        out[i] = hsum(acc[i]);
    }
    out
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
