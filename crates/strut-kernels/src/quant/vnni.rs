//! The interleaved products with AVX-512 VNNI, at 256 bits: `dpbusd`
//! multiplies four unsigned weight bytes by four signed activation bytes and
//! adds them to an i32 lane in one instruction, where AVX2 needs `maddubs`,
//! an i16 add and a widening. The sums are the same integers, so every
//! output is the AVX2 (and portable) kernel's to the last bit.
//!
//! A group is eight rows of one i32 lane each, one ymm. The 512-bit
//! kernels (`Kernel::Vnni512`, the choice wherever AVX-512BW is there too)
//! put two groups in a zmm: on the 2-core Xeon VM `dpbusd` retires about as
//! many zmm as ymm a cycle, so a zmm does twice the work (Q4_1 at eight
//! activation rows: 118 to 138 against 48 GMAC/s a core, where the AVX2
//! kernel does 65). Zen 4 runs a zmm as two halves, so there it should do the
//! same multiply-adds a cycle with half the instructions for the loads,
//! unpacking and scales (not measured: no Zen 4 since these kernels).

use std::arch::x86_64::*;

use super::blocks::{BlockQ4_1x8, BlockQ8, BlockQ8_0x8, ROWS};
use super::x86::{broadcast4, scales};

pub fn available() -> bool {
    super::x86::available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// What the 512-bit kernels need besides: AVX-512BW for byte-wise `and`s
/// and shifts of a zmm.
pub fn available_512() -> bool {
    available() && is_x86_feature_detected!("avx512bw")
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

/// Four activations starting at column `c` of a block, in every i32 lane
/// of a zmm.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
fn broadcast4x16(a: &BlockQ8, c: usize) -> __m512i {
    let bytes: [i8; 4] = [a.qs[c], a.qs[c + 1], a.qs[c + 2], a.qs[c + 3]];
    _mm512_set1_epi32(i32::from_le_bytes(bytemuck::cast(bytes)))
}

/// Two groups' eight f16 scales as sixteen f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
fn scales16(a: [u16; ROWS], b: [u16; ROWS]) -> __m512 {
    let halves: [__m128i; 2] = [bytemuck::cast(a), bytemuck::cast(b)];
    _mm512_cvtph_ps(bytemuck::cast(halves))
}

/// As `dot_q4_1x8`, for two groups at once, one in each half of a zmm:
/// sixteen rows a `dpbusd`. Each lane goes through the same integer sums
/// and the same f32 operations in the same order as in the 256-bit kernel,
/// so the bits are that kernel's.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub fn dot_q4_1x16<const N: usize>(
    w: [&[BlockQ4_1x8]; 2],
    a: [&[BlockQ8]; N],
) -> [[f32; 2 * ROWS]; N] {
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); N];
    for (b, (w0, w1)) in w[0].iter().zip(w[1]).enumerate() {
        let packed: [[__m256i; 4]; 2] = [bytemuck::cast(w0.qs), bytemuck::cast(w1.qs)];
        let mut sum_lo = [_mm512_setzero_si512(); N];
        let mut sum_hi = [_mm512_setzero_si512(); N];
        // Indexed: iterating over the two halves (or joining them first)
        // made LLVM keep the block on the stack, 5 to 12% slower.
        #[allow(clippy::needless_range_loop)]
        for p in 0..4 {
            let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(packed[0][p]), packed[1][p]);
            let lo = _mm512_and_si512(both, low);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(both), low);
            for i in 0..N {
                let act = &a[i][b];
                sum_lo[i] = _mm512_dpbusd_epi32(sum_lo[i], lo, broadcast4x16(act, 4 * p));
                sum_hi[i] = _mm512_dpbusd_epi32(sum_hi[i], hi, broadcast4x16(act, 16 + 4 * p));
            }
        }
        let (d, m) = (scales16(w0.d, w1.d), scales16(w0.m, w1.m));
        for i in 0..N {
            let act = &a[i][b];
            let sumi = _mm512_cvtepi32_ps(_mm512_add_epi32(sum_lo[i], sum_hi[i]));
            let scale = _mm512_mul_ps(d, _mm512_set1_ps(act.d));
            acc[i] = _mm512_fmadd_ps(sumi, scale, acc[i]);
            acc[i] = _mm512_fmadd_ps(m, _mm512_set1_ps(act.s), acc[i]);
        }
    }
    acc.map(bytemuck::cast)
}

/// As `dot_q8_0x8`, for two groups at once, one in each half of a zmm:
/// the same bits, as `dot_q4_1x16`'s are.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub fn dot_q8_0x16<const N: usize>(
    w: [&[BlockQ8_0x8]; 2],
    a: [&[BlockQ8]; N],
) -> [[f32; 2 * ROWS]; N] {
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut acc = [_mm512_setzero_ps(); N];
    for (b, (w0, w1)) in w[0].iter().zip(w[1]).enumerate() {
        let packed: [[__m256i; 8]; 2] = [bytemuck::cast(w0.qs), bytemuck::cast(w1.qs)];
        let (mut even, mut odd) = ([_mm512_setzero_si512(); N], [_mm512_setzero_si512(); N]);
        for j in 0..4 {
            let both = |k: usize| {
                let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(packed[0][k]), packed[1][k]);
                _mm512_xor_si512(w, flip)
            };
            let (ue, uo) = (both(2 * j), both(2 * j + 1));
            for i in 0..N {
                let act = &a[i][b];
                even[i] = _mm512_dpbusd_epi32(even[i], ue, broadcast4x16(act, 8 * j));
                odd[i] = _mm512_dpbusd_epi32(odd[i], uo, broadcast4x16(act, 8 * j + 4));
            }
        }
        let d = scales16(w0.d, w1.d);
        for i in 0..N {
            let act = &a[i][b];
            let shifted = _mm512_add_epi32(even[i], odd[i]);
            let sumi = _mm512_sub_epi32(shifted, _mm512_set1_epi32(128 * act.sum));
            let scale = _mm512_mul_ps(d, _mm512_set1_ps(act.d));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), scale, acc[i]);
        }
    }
    acc.map(bytemuck::cast)
}
