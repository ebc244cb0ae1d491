//! The interleaved products with AVX-512 VNNI, at 256 bits: `dpbusd`
//! multiplies four unsigned weight bytes by four signed activation bytes and
//! adds them to an i32 lane in one instruction, where AVX2 needs `maddubs`,
//! an i16 add and a widening. The sums are the same integers, so every
//! output is the AVX2 (and portable) kernel's to the last bit.
//!
//! 256-bit registers rather than 512: Zen 4 splits 512-bit operations in
//! two, and a group is eight rows of one i32 lane each, which is one ymm.

use std::arch::x86_64::*;

use super::blocks::{BlockQ4_1x8, BlockQ8, BlockQ8_0x8, ROWS};
use super::x86::{broadcast4, scales};

pub fn available() -> bool {
    super::x86::available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// As `x86::dot_q4_1x8`. The nibbles are unsigned already. With fewer than
/// eight activation rows, each keeps two partial sums (low and high
/// nibbles), so that the chain of dependent `dpbusd`s in a block is four
/// long, not eight; with eight, eight chains keep the units busy and the
/// add that joins the halves is saved (5% on a block of eight rows, Zen 4).
/// The sums are integers: the same either way.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub fn dot_q4_1x8<const N: usize>(w: &[BlockQ4_1x8], a: [&[BlockQ8]; N]) -> [[f32; ROWS]; N] {
    let split = N < 8;
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, block) in w.iter().enumerate() {
        let packed: [__m256i; 4] = bytemuck::cast(block.qs);
        let mut sum_lo = [_mm256_setzero_si256(); N];
        let mut sum_hi = [_mm256_setzero_si256(); N];
        for (p, &packed) in packed.iter().enumerate() {
            let lo = _mm256_and_si256(packed, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
            for i in 0..N {
                let act = &a[i][b];
                sum_lo[i] = _mm256_dpbusd_epi32(sum_lo[i], lo, broadcast4(act, 4 * p));
                let high = if split {
                    &mut sum_hi[i]
                } else {
                    &mut sum_lo[i]
                };
                *high = _mm256_dpbusd_epi32(*high, hi, broadcast4(act, 16 + 4 * p));
            }
        }
        let (d, m) = (scales(block.d), scales(block.m));
        for i in 0..N {
            let act = &a[i][b];
            let sum = match split {
                true => _mm256_add_epi32(sum_lo[i], sum_hi[i]),
                false => sum_lo[i],
            };
            let sumi = _mm256_cvtepi32_ps(sum);
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(act.d));
            acc[i] = _mm256_fmadd_ps(sumi, scale, acc[i]);
            acc[i] = _mm256_fmadd_ps(m, _mm256_set1_ps(act.s), acc[i]);
        }
    }
    acc.map(bytemuck::cast)
}

/// As `x86::dot_q8_0x8`. `dpbusd` wants unsigned weights: flipping the sign
/// bit turns `w` into `w + 128`, so a block's sum is `sum((w + 128) a)`
/// less `128 sum(a)`, the same integer (at most 32 x 255 x 127, no
/// overflow), with one instruction per four columns and activation row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub fn dot_q8_0x8<const N: usize>(w: &[BlockQ8_0x8], a: [&[BlockQ8]; N]) -> [[f32; ROWS]; N] {
    let flip = _mm256_set1_epi8(i8::MIN);
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, block) in w.iter().enumerate() {
        let packed: [__m256i; 8] = bytemuck::cast(block.qs);
        let (mut even, mut odd) = ([_mm256_setzero_si256(); N], [_mm256_setzero_si256(); N]);
        for (j, pair) in packed.chunks_exact(2).enumerate() {
            let (ue, uo) = (
                _mm256_xor_si256(pair[0], flip),
                _mm256_xor_si256(pair[1], flip),
            );
            for i in 0..N {
                let act = &a[i][b];
                even[i] = _mm256_dpbusd_epi32(even[i], ue, broadcast4(act, 8 * j));
                odd[i] = _mm256_dpbusd_epi32(odd[i], uo, broadcast4(act, 8 * j + 4));
            }
        }
        let d = scales(block.d);
        for i in 0..N {
            let act = &a[i][b];
            let shifted = _mm256_add_epi32(even[i], odd[i]);
            let sumi = _mm256_sub_epi32(shifted, _mm256_set1_epi32(128 * act.sum));
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(act.d));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), scale, acc[i]);
        }
    }
    acc.map(bytemuck::cast)
}
