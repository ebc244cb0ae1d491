//! The kernels of attention over a KV cache: scores of a query against
//! keys and the weighted sum of values, over f32 or f16 entries, each with
//! the CPU's SIMD where it has it.

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{Kernel, blocks};

/// Attention scores of query `q` against `out.len()` keys, `stride` apart
/// in `keys`: `out[j] = scale * (q · key j)`.
#[inline]
pub fn scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    scores_with(Kernel::detect(), q, keys, stride, scale, out);
}

pub(crate) fn scores_with(
    kernel: Kernel,
    q: &[f32],
    keys: &[f32],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    assert!(out.is_empty() || (out.len() - 1) * stride + q.len() <= keys.len());
    match kernel {
        // SAFETY: both are chosen only when AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Vnni | Kernel::Vnni512 if q.len().is_multiple_of(8) => unsafe {
            x86::scores(q, keys, stride, scale, out)
        },
        _ => blocks::scores(q, keys, stride, scale, out),
    }
}

/// The values, `stride` apart in `values`, weighted by `w` and summed:
/// `out = sum_j w[j] * value j`.
#[inline]
pub fn weighted_sum(w: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    weighted_sum_with(Kernel::detect(), w, values, stride, out);
}

pub(crate) fn weighted_sum_with(
    kernel: Kernel,
    w: &[f32],
    values: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    assert!(w.is_empty() || (w.len() - 1) * stride + out.len() <= values.len());
    match kernel {
        // SAFETY: both are chosen only when AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Vnni | Kernel::Vnni512 if out.len().is_multiple_of(8) => unsafe {
            x86::weighted_sum(w, values, stride, out)
        },
        _ => blocks::weighted_sum(w, values, stride, out),
    }
}

/// Attention scores of the query heads that share one key/value head
/// (`q`: `q.len() / hd` heads of `hd`, one after another) against the keys
/// of that head, stored as f16 one after another: `out[g * n + j] = scale *
/// (query g · key j)` for `n = keys.len() / hd` keys. Each key is read once
/// for every query of its group.
///
/// `values`, the same positions' values (or empty), are fetched into cache
/// as the keys go by, for the weighted sum that reads them next: a decode
/// step's keys and values come from memory, and fetched this way that sum
/// takes a third of the time it took waiting for them (1.0 against 3.0 us
/// a head at 180 positions, eight sequences, on a Zen 5). Nothing else of
/// `values` is read, and the scores do not depend on it.
#[inline]
pub fn scores_f16(q: &[f32], keys: &[f16], values: &[f16], hd: usize, scale: f32, out: &mut [f32]) {
    scores_f16_with(Kernel::detect(), q, keys, values, hd, scale, out);
}

pub(crate) fn scores_f16_with(
    kernel: Kernel,
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    hd: usize,
    scale: f32,
    out: &mut [f32],
) {
    assert!(hd > 0 && q.len().is_multiple_of(hd) && keys.len().is_multiple_of(hd));
    assert_eq!(
        out.len(),
        q.len() / hd * (keys.len() / hd),
        "one score per query and key"
    );
    match kernel {
        // SAFETY: both are chosen only when AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Vnni | Kernel::Vnni512
            if hd.is_multiple_of(8) && !keys.is_empty() =>
        unsafe { x86::scores_f16(q, keys, values, hd, scale, out) },
        _ => blocks::scores_f16(q, keys, hd, scale, out),
    }
}

/// The values of one key/value head (f16, `hd` each, one after another)
/// weighted by each query head's weights (`w`: one row of `n` per query)
/// and summed: `out[g * hd..][..hd] = sum_j w[g * n + j] * value j`.
///
/// `next`, what the caller reads next (another head's keys, or empty), is
/// fetched into cache meanwhile, as `scores_f16` fetches the values: a
/// step of eight sequences took 3% less time on a Zen 5. The sums do not
/// depend on it.
#[inline]
pub fn weighted_sum_f16(w: &[f32], values: &[f16], next: &[f16], hd: usize, out: &mut [f32]) {
    weighted_sum_f16_with(Kernel::detect(), w, values, next, hd, out);
}

pub(crate) fn weighted_sum_f16_with(
    kernel: Kernel,
    w: &[f32],
    values: &[f16],
    next: &[f16],
    hd: usize,
    out: &mut [f32],
) {
    assert!(hd > 0 && out.len().is_multiple_of(hd) && values.len().is_multiple_of(hd));
    assert_eq!(
        w.len(),
        out.len() / hd * (values.len() / hd),
        "one weight per query and value"
    );
    match kernel {
        // SAFETY: both are chosen only when AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Vnni | Kernel::Vnni512
            if hd.is_multiple_of(8) && !values.is_empty() =>
        unsafe { x86::weighted_sum_f16(w, values, next, hd, out) },
        _ => blocks::weighted_sum_f16(w, values, hd, out),
    }
}
