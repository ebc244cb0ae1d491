//! The element-wise parts of the CPU BERT (layer norm, GELU, softmax) and
//! of the CPU Llama (SwiGLU, RMSNorm, attention's softmax, greedy argmax).
//! Each is written so that LLVM vectorises it (no libm calls in the loops,
//! sums kept in lanes) and compiled again for AVX2 and AVX-512 hosts;
//! libm's scalar `erff` alone was 15% of a batch in candle's forward.

use crate::dense::Kernel;

/// Calls the AVX-512 build of an `*_impl` function on hosts that have it,
/// else the AVX2 build where there is AVX2, else the baseline build. All
/// are the same source, and Rust never fuses a multiply and an add on its
/// own, so they compute the same bits (tested).
macro_rules! dispatch {
    ($f:ident($($arg:expr),*)) => {{
        match Kernel::detect() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kernel::Avx512` is chosen only on hosts with every
            // feature the `avx512` builds enable (`Kernel::detect`).
            Kernel::Avx512 => unsafe { avx512::$f($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: chosen only where AVX2 and FMA (and F16C) were detected.
            Kernel::Portable if avx2() => unsafe { avx2::$f($($arg),*) },
            Kernel::Portable => $f($($arg),*),
        }
    }};
}

macro_rules! kernels {
    ($($vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block)*) => {
        $(#[inline(always)] $vis fn $name($($arg: $ty),*) $(-> $ret)? $body)*

        #[cfg(target_arch = "x86_64")]
        mod avx2 {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[target_feature(enable = "avx2,fma")]
                pub fn $name($($arg: $ty),*) $(-> $ret)? { super::$name($($arg),*) }
            )*
        }

        #[cfg(target_arch = "x86_64")]
        mod avx512 {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,fma")]
                pub fn $name($($arg: $ty),*) $(-> $ret)? { super::$name($($arg),*) }
            )*
        }
    };
}

/// Whether the AVX2 builds can run, as the quantized kernels detected it
/// (AVX2, FMA, F16C): on hosts without AVX-512 (a Zen 3) they took 2 to 3%
/// off a step of eight sequences, where the baseline build's SSE2 ran the
/// main thread's SwiGLU and norms.
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    crate::quant::Kernel::detect() != crate::quant::Kernel::Portable
}

/// `x = LayerNorm(x + residual)` for one row (pass an empty `residual` for
/// none), as PyTorch computes it: biased variance, eps inside the root.
#[inline]
pub fn add_layer_norm(x: &mut [f32], residual: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
    dispatch!(add_layer_norm_impl(x, residual, weight, bias, eps))
}

/// Applies `act` to every value.
#[inline]
pub fn activate(x: &mut [f32], act: Activation) {
    match act {
        Activation::GeluErf => dispatch!(gelu_erf_impl(x)),
        Activation::GeluTanh => dispatch!(gelu_tanh_impl(x)),
        Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// In place, over one row of scores.
#[inline]
pub fn softmax(x: &mut [f32]) {
    dispatch!(softmax_impl(x))
}

/// In place, over one row of attention scores, with the sum in f64 as
/// llama.cpp sums it, in eight lanes (as `rms_norm`), and this module's
/// `exp`: libm's scalar `expf` and one chain of dependent f64 adds made the
/// softmax a third of a decode step's attention (1.9 us of 5.9 a head at
/// 180 positions on a Zen 5).
#[inline]
pub fn softmax_f64(x: &mut [f32]) {
    dispatch!(softmax_f64_impl(x))
}

/// The first index of the largest value, as candle's `argmax` picks it: a
/// NaN never wins, except a leading one, which candle never replaces.
/// `None` for no values. In lanes, as the ops above: greedy decoding runs
/// it over the vocabulary for every sequence of a step, on the thread the
/// model's other threads wait for (a scalar loop was 1.5% of a step of
/// eight).
#[inline]
pub fn argmax(x: &[f32]) -> Option<usize> {
    dispatch!(argmax_impl(x))
}

/// `out = x / rms(x) * weight` for one row, the sum of squares in f64 as
/// llama.cpp sums it, but in eight lanes: one f64 chain of dependent adds
/// was 3% of a batched step's serial time.
#[inline]
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    dispatch!(rms_norm_impl(x, weight, eps, out))
}

/// `out = silu(gate) * up`, element by element: Llama's feed-forward
/// activation, where libm's scalar `expf` cost 3% of a batched step.
#[inline]
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    dispatch!(swiglu_impl(gate, up, out))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// BERT's `gelu`: `x Φ(x)` with the exact error function.
    GeluErf,
    /// `gelu_new` / `gelu_pytorch_tanh`.
    GeluTanh,
    Relu,
}

kernels! {
    fn add_layer_norm_impl(x: &mut [f32], residual: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
        if !residual.is_empty() {
            for (v, r) in x.iter_mut().zip(residual) {
                *v += r;
            }
        }
        let n = x.len() as f32;
        let mean = sum(x) / n;
        let mut sq = [0f32; 16];
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for (s, v) in sq.iter_mut().zip(c) {
                *s += (v - mean) * (v - mean);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
        let var = (sq.iter().sum::<f32>() + tail) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in x.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }

    fn gelu_erf_impl(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }

    fn gelu_tanh_impl(x: &mut [f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2 / pi)
        for v in x.iter_mut() {
            let u = C * (*v + 0.044715 * *v * *v * *v);
            // tanh(u) = 1 - 2 / (exp(2u) + 1)
            let t = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
            *v = 0.5 * *v * (1.0 + t);
        }
    }

    fn rms_norm_impl(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let mut acc = [0f64; 8];
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += (v * v) as f64;
            }
        }
        let tail: f64 = chunks.remainder().iter().map(|&v| (v * v) as f64).sum();
        let sum = acc.iter().sum::<f64>() + tail;
        let scale = 1.0 / ((sum / x.len() as f64 + eps as f64) as f32).sqrt();
        for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
            *o = v * scale * w;
        }
    }

    fn swiglu_impl(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + exp(-g)) * u;
        }
    }

    fn softmax_impl(x: &mut [f32]) {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in x.iter_mut() {
            *v = exp(*v - max);
        }
        let inv = 1.0 / sum(x);
        for v in x.iter_mut() {
            *v *= inv;
        }
    }

    fn argmax_impl(x: &[f32]) -> Option<usize> {
        let first = *x.first()?;
        if first.is_nan() {
            return Some(0);
        }
        let mut lanes = [first; 16];
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for (m, &v) in lanes.iter_mut().zip(c) {
                *m = m.max(v);
            }
        }
        let max = lanes.iter().chain(chunks.remainder()).fold(first, |m, &v| m.max(v));
        // The chunk that holds it first, without an early exit per value.
        let at = x
            .chunks(16)
            .position(|c| c.iter().fold(false, |found, &v| found | (v == max)))?;
        let within = x[at * 16..].iter().position(|&v| v == max)?;
        Some(at * 16 + within)
    }

    fn softmax_f64_impl(x: &mut [f32]) {
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for (m, &v) in lanes.iter_mut().zip(c) {
                *m = m.max(v);
            }
        }
        let max = lanes.iter().chain(chunks.remainder()).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut acc = [0f64; 8];
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *v = exp(*v - max);
                *a += *v as f64;
            }
        }
        let mut tail = 0f64;
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            tail += *v as f64;
        }
        let inv = (1.0 / (acc.iter().sum::<f64>() + tail)) as f32;
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

/// A sum in 16 lanes, so that it vectorises without reassociation flags.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `e^x` to ~2 ulp over f32's range, from arithmetic only: `2^n e^r` with
/// `|r| <= ln2 / 2` and a degree-6 polynomial for `e^r`.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4; // ln2 in two parts
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let scale = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32);
    p * scale
}

/// Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7) where it is
/// accurate in f32; below 1 its `1 - ...` cancels, and the Maclaurin
/// series takes over. Both are computed and
/// one selected, so the loop stays branch-free and vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let far = 1.0 - poly * exp(-z * z);
    let z2 = z * z;
    // c_n = (-1)^n / (n! (2n + 1)); the first term left out is below 1.1e-9.
    const C: [f32; 11] = [
        1.0,
        -1.0 / 3.0,
        1.0 / 10.0,
        -1.0 / 42.0,
        1.0 / 216.0,
        -1.0 / 1320.0,
        1.0 / 9360.0,
        -1.0 / 75600.0,
        1.0 / 685_440.0,
        -1.0 / 6_894_720.0,
        1.0 / 76_204_800.0,
    ];
    let series = C.iter().rev().fold(0.0, |acc, c| acc * z2 + c);
    let near = std::f32::consts::FRAC_2_SQRT_PI * z * series;
    let y = if z < 1.0 { near } else { far };
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_standard_library() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            assert!(rel < 5e-7, "exp({x}): {} vs {want}", exp(x));
            let z = x / 5.0;
            let want = series_erf(z as f64);
            assert!(
                (erf(z) as f64 - want).abs() < 3e-7,
                "erf({z}): {} vs {want}",
                erf(z)
            );
        }
    }

    // erf's Maclaurin series in f64: a reference independent of the
    // approximation, accurate to ~1e-10 for |x| <= 4.
    fn series_erf(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn layer_norm_and_softmax_match_their_definitions() {
        let mut x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let res: Vec<f32> = (0..37).map(|i| i as f32 / 37.0).collect();
        let w: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 / 100.0).collect();
        let b = vec![0.5; 37];
        let h: Vec<f64> = x.iter().zip(&res).map(|(a, r)| (*a + *r) as f64).collect();
        let mean = h.iter().sum::<f64>() / 37.0;
        let var = h.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 37.0;
        add_layer_norm(&mut x, &res, &w, &b, 1e-12);
        for i in 0..37 {
            let want = (h[i] - mean) / var.sqrt() * w[i] as f64 + 0.5;
            assert!((x[i] as f64 - want).abs() < 1e-5, "{i}: {} vs {want}", x[i]);
        }

        let mut s = vec![1.0, 2.0, 3.0, -1e4];
        softmax(&mut s);
        let z: f64 = [1f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        for (i, v) in [1f64, 2.0, 3.0].iter().enumerate() {
            assert!((s[i] as f64 - v.exp() / z).abs() < 1e-6);
        }
        assert!(s[3] < 1e-30, "{}", s[3]);

        // 203 scores: whole lanes of sixteen and of eight, and a tail.
        let mut s: Vec<f32> = (0..203).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
        let max = s.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let e: Vec<f64> = s.iter().map(|&v| (v as f64 - max).exp()).collect();
        let z: f64 = e.iter().sum();
        softmax_f64(&mut s);
        for (got, e) in s.iter().zip(&e) {
            let want = e / z;
            assert!((*got as f64 - want).abs() <= 1e-6 * want, "{got} vs {want}");
        }
    }

    #[test]
    fn argmax_picks_the_first_largest_value_in_every_build() {
        let mut x: Vec<f32> = (0..203).map(|i| (i as f32 * 0.37).sin()).collect();
        x[150] = 3.0;
        x[170] = 3.0;
        x[7] = f32::NAN;
        let cases: [(&[f32], Option<usize>); 5] = [
            (&x, Some(150)),
            (
                &x[..150],
                Some(
                    x[..150]
                        .iter()
                        .enumerate()
                        .fold(0, |b, (i, &v)| if v > x[b] { i } else { b }),
                ),
            ),
            (&[f32::NAN, 1.0, 2.0], Some(0)),
            (&[f32::NEG_INFINITY; 3], Some(0)),
            (&[], None),
        ];
        for (values, want) in cases {
            assert_eq!(argmax(values), want);
            assert_eq!(argmax_impl(values), want);
            #[cfg(target_arch = "x86_64")]
            {
                if avx2() {
                    // SAFETY: AVX2 and FMA were detected.
                    assert_eq!(unsafe { avx2::argmax_impl(values) }, want);
                }
                if Kernel::detect() == Kernel::Avx512 {
                    // SAFETY: every feature of the AVX-512 build was detected.
                    assert_eq!(unsafe { avx512::argmax_impl(values) }, want);
                }
            }
        }
    }

    #[test]
    fn rms_norm_matches_its_definition() {
        // 37 values: four full lanes of eight and a tail.
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.61).cos() * 2.0).collect();
        let w: Vec<f32> = (0..37).map(|i| 0.5 + i as f32 / 50.0).collect();
        let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 37.0;
        let mut out = vec![0.0; 37];
        rms_norm(&x, &w, 1e-6, &mut out);
        for i in 0..37 {
            let want = x[i] as f64 / (ms + 1e-6).sqrt() * w[i] as f64;
            assert!(
                (out[i] as f64 - want).abs() < 1e-6,
                "{i}: {} vs {want}",
                out[i]
            );
        }
        let mut zeros = vec![1.0; 5];
        rms_norm(&[0.0; 5], &[1.0; 5], 1e-6, &mut zeros);
        assert_eq!(zeros, vec![0.0; 5]);
    }

    #[test]
    fn swiglu_matches_its_definition() {
        let gate: Vec<f32> = (-90..=90).map(|i| i as f32 / 10.0).collect();
        let up: Vec<f32> = gate.iter().map(|g| 1.5 - g / 4.0).collect();
        let mut out = vec![f32::NAN; gate.len()];
        swiglu(&gate, &up, &mut out);
        for ((o, &g), &u) in out.iter().zip(&gate).zip(&up) {
            let want = g as f64 / (1.0 + (-g as f64).exp()) * u as f64;
            assert!(
                (*o as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{g}: {o} vs {want}"
            );
        }
    }

    /// Every op of one build (`super` is the baseline) on fixed inputs, as
    /// bits.
    macro_rules! bits_of {
        ($($build:ident)::+) => {{
            let x: Vec<f32> = (0..203).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
            let y: Vec<f32> = (0..203).map(|i| (i as f32 * 0.11).cos() + 0.5).collect();
            let mut out = vec![x.clone(); 6];
            // SAFETY: a SIMD build is only asked for where its features
            // were detected.
            #[allow(unused_unsafe)]
            unsafe {
                $($build::)+swiglu_impl(&x, &y, &mut out[0]);
                $($build::)+rms_norm_impl(&x, &y, 1e-6, &mut out[1]);
                $($build::)+add_layer_norm_impl(&mut out[2], &y, &y, &x, 1e-5);
                $($build::)+gelu_erf_impl(&mut out[3]);
                $($build::)+softmax_impl(&mut out[4]);
                $($build::)+softmax_f64_impl(&mut out[5]);
            }
            out.concat().iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        }};
    }

    #[test]
    fn every_build_computes_the_same_bits() {
        let base = bits_of!(super);
        #[cfg(target_arch = "x86_64")]
        {
            if avx2() {
                assert!(bits_of!(super::avx2) == base, "the AVX2 build differs");
            }
            if Kernel::detect() == Kernel::Avx512 {
                assert!(bits_of!(super::avx512) == base, "the AVX-512 build differs");
            }
        }
    }

    #[test]
    fn gelu_matches_its_definition() {
        let mut x: Vec<f32> = (-60..=60).map(|i| i as f32 / 10.0).collect();
        let want: Vec<f64> = x
            .iter()
            .map(|&v| 0.5 * v as f64 * (1.0 + series_erf(v as f64 / 2f64.sqrt())))
            .collect();
        activate(&mut x, Activation::GeluErf);
        for (got, want) in x.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 2e-6, "{got} vs {want}");
        }
    }
}
